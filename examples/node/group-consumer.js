#!/usr/bin/env node
'use strict';
// A consumer-group member: share a topic's partitions with the other members of a group and
// print the records of the partitions this member is given, as JSON lines.
//
//   node group-consumer.js --bootstrap HOST:PORT[,...] --topic T --group G
//                          [--from-beginning] [--max-messages N] [--timeout-ms T]
//
// Only the gRPC API is used (raftka.v1.GroupService and BrokerService):
//
// - FindCoordinator on a bootstrap broker gives the group's coordinator.
// - A heartbeat loop sends ConsumerGroupHeartbeat to it every heartbeat_interval_ms: the first
//   one joins (member_epoch 0, subscribed_topic_names [T]); later ones send the member id and
//   epoch of the last reply and the partitions consumed now (owned_partitions). A reply with
//   has_assignment lists the partitions to own: revoked ones are committed, then dropped; new
//   ones start at the group's committed offset (OffsetFetch), or, when none is committed, at
//   the earliest (--from-beginning) or latest offset (ListOffsets -2 / -1).
// - A fetch loop long-polls Fetch on each partition's leader (from Metadata) and prints
//   {"partition":P,"offset":N,"key":...,"value":...} per record.
// - Positions are committed (OffsetCommit) every second, before revoked partitions are dropped
//   and at exit; then a heartbeat with member_epoch -1 leaves the group.
//
// Exits 0 after N records (--max-messages), when no record arrived for T ms (--timeout-ms), or
// on SIGINT/SIGTERM; exits 1 with a one-line error on stderr when something fatal happens.

const { parseArgs } = require('util');
const { connect, parseBootstrap, bootstrapMetadata, brokerAddress } = require('./raftka');

const EARLIEST = -2;
const LATEST = -1;
const MAX_WAIT_MS = 500;
const MAX_BYTES = 1024 * 1024;
const COMMIT_INTERVAL_MS = 1000;
// How long retriable failures (coordinator missing or moving, broker unreachable) are retried.
const RETRY_BUDGET_MS = 30000;
// How long one commit is retried before it is given up with a warning.
const COMMIT_BUDGET_MS = 10000;
const BACKOFF_MS = 100;
const RPC_DEADLINE_MS = 10000;
const CLIENT_ID = 'raftka-node-group-consumer';

// Fetch/ListOffsets errors after which the partition leaders are looked up again.
const REFRESH_METADATA = new Set([
  'NOT_LEADER_OR_FOLLOWER',
  'LEADER_NOT_AVAILABLE',
  'UNKNOWN_LEADER_EPOCH',
  'FENCED_LEADER_EPOCH',
  'BROKER_NOT_AVAILABLE',
  'UNKNOWN_TOPIC_OR_PARTITION',
]);
// Group errors after which the coordinator is looked up again.
const REFIND_COORDINATOR = new Set([
  'NOT_COORDINATOR',
  'COORDINATOR_NOT_AVAILABLE',
  'COORDINATOR_LOAD_IN_PROGRESS',
]);
// Group errors after which the member joins again (member_epoch 0, same member id).
const REJOIN = new Set(['UNKNOWN_MEMBER_ID', 'FENCED_MEMBER_EPOCH']);
// Other group errors worth retrying.
const TRANSIENT = new Set(['REQUEST_TIMED_OUT', 'BROKER_NOT_AVAILABLE', 'NOT_ENOUGH_REPLICAS']);

const USAGE =
  'usage: node group-consumer.js --bootstrap HOST:PORT[,...] --topic TOPIC --group GROUP ' +
  '[--from-beginning] [--max-messages N] [--timeout-ms T]';

class FatalError extends Error {}
// A failure worth retrying (the caller decides for how long).
class RetriableError extends Error {}
// The coordinator does not count this member (any more): it has to join again.
class NotMemberError extends RetriableError {}

function oneLine(message) {
  return String(message)
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

function warn(message) {
  process.stderr.write(`warning: ${oneLine(message)}\n`);
}

function parseCommandLine() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        bootstrap: { type: 'string' },
        topic: { type: 'string' },
        group: { type: 'string' },
        'from-beginning': { type: 'boolean', default: false },
        'max-messages': { type: 'string' },
        'timeout-ms': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new FatalError(`${err.message}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (!values.bootstrap || !values.topic || !values.group) {
    throw new FatalError(`--bootstrap, --topic and --group are required\n${USAGE}`);
  }
  parseBootstrap(values.bootstrap); // fails early on an empty list
  const integer = (name, min) => {
    if (values[name] === undefined) return undefined;
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min) {
      throw new FatalError(`--${name} must be an integer >= ${min}, got ${values[name]}`);
    }
    return n;
  };
  return {
    bootstrap: values.bootstrap,
    topic: values.topic,
    group: values.group,
    fromBeginning: values['from-beginning'],
    maxMessages: integer('max-messages', 1),
    timeoutMs: integer('timeout-ms', 0),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function text(buffer) {
  return buffer === undefined || buffer === null ? null : Buffer.from(buffer).toString('utf8');
}

class GroupConsumer {
  constructor(options) {
    this.options = options;
    this.clients = new Map(); // "HOST:PORT" -> client
    this.leaders = new Map(); // partition -> "HOST:PORT" of its leader
    // The partitions consumed now: partition -> next offset to fetch, or null while the start
    // offset is still to be looked up with ListOffsets (nothing committed yet).
    this.positions = new Map();
    this.committed = new Map(); // partition -> last offset committed (or fetched) for it
    this.coordinator = null; // "HOST:PORT"
    this.memberId = '';
    this.memberEpoch = 0;
    this.sendSubscription = true;
    this.heartbeatIntervalMs = 1000;
    this.stopping = false;
    this.fatal = null;
    this.wakeHeartbeat = null;
    this.commitQueue = Promise.resolve();
  }

  client(address) {
    if (!this.clients.has(address)) {
      this.clients.set(address, connect(address));
    }
    return this.clients.get(address);
  }

  close() {
    for (const client of this.clients.values()) {
      client.close();
    }
    this.clients.clear();
  }

  // Stop everything because of err; the fetch loop raises it.
  fail(err) {
    if (this.fatal === null) {
      this.fatal = err instanceof FatalError ? err : new FatalError(err.message);
    }
    this.stopping = true;
  }

  // ------------------------------------------------------------------ coordinator
  async findCoordinator() {
    if (this.coordinator !== null) return this.coordinator;
    const started = Date.now();
    let problem = 'no broker answered';
    for (;;) {
      for (const address of parseBootstrap(this.options.bootstrap)) {
        let reply;
        try {
          reply = await this.client(address).group.FindCoordinator(
            { group_id: this.options.group },
            { deadlineMs: RPC_DEADLINE_MS },
          );
        } catch (err) {
          problem = `${address}: ${err.message}`;
          continue;
        }
        if (reply.error_code === 'NONE') {
          const { host, port } = reply.coordinator;
          this.coordinator = `${host}:${port}`;
          return this.coordinator;
        }
        problem = `${reply.error_code}: ${reply.error_message}`;
        if (!REFIND_COORDINATOR.has(reply.error_code) && !TRANSIENT.has(reply.error_code)) {
          throw new FatalError(`FindCoordinator(${this.options.group}): ${problem}`);
        }
      }
      if (Date.now() - started > RETRY_BUDGET_MS || this.fatal) {
        throw new FatalError(
          `no coordinator found for group ${this.options.group} in ` +
            `${RETRY_BUDGET_MS / 1000} s: ${problem}`,
        );
      }
      await sleep(200);
    }
  }

  // Call GroupService.method on the coordinator; a gRPC failure forgets the coordinator.
  async atCoordinator(method, request, deadlineMs = RPC_DEADLINE_MS) {
    const address = await this.findCoordinator();
    try {
      return await this.client(address).group[method](request, { deadlineMs });
    } catch (err) {
      this.coordinator = null;
      throw new RetriableError(`${method} to ${address}: ${err.message}`);
    }
  }

  // Raise for a group-level error code of a reply (after noting what to do about it).
  checkGroupError(method, reply) {
    const code = reply.error_code;
    if (code === 'NONE') return;
    const message = `${method}: ${code}: ${reply.error_message}`;
    if (REFIND_COORDINATOR.has(code)) {
      this.coordinator = null;
      throw new RetriableError(message);
    }
    if (REJOIN.has(code)) {
      this.rejoin();
      throw new NotMemberError(message);
    }
    if (code === 'STALE_MEMBER_EPOCH') {
      // A heartbeat brings the current epoch.
      if (this.wakeHeartbeat) this.wakeHeartbeat();
      throw new RetriableError(message);
    }
    if (TRANSIENT.has(code)) {
      throw new RetriableError(message);
    }
    throw new FatalError(`group ${this.options.group}: ${message}`);
  }

  rejoin() {
    // Keep the member id; join again with epoch 0 and the subscription.
    if (this.memberEpoch !== 0 || !this.sendSubscription) {
      this.memberEpoch = 0;
      this.sendSubscription = true;
      if (this.wakeHeartbeat) this.wakeHeartbeat();
    }
  }

  // ------------------------------------------------------------------ heartbeats
  ownedPartitions() {
    const partitions = [...this.positions.keys()].sort((a, b) => a - b);
    return partitions.length ? [{ topic: this.options.topic, partitions }] : [];
  }

  // Sleep up to ms; wakeHeartbeat() ends it early.
  pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wakeHeartbeat = null;
        resolve();
      }
      this.wakeHeartbeat = done;
    });
  }

  // One heartbeat; returns true when the assignment changed (then the next one goes at once
  // to tell the coordinator what this member owns now).
  async heartbeatOnce() {
    const subscribing = this.sendSubscription;
    const reply = await this.atCoordinator('ConsumerGroupHeartbeat', {
      group_id: this.options.group,
      member_id: this.memberId,
      member_epoch: this.memberEpoch,
      subscribed_topic_names: subscribing ? [this.options.topic] : [],
      has_subscription: subscribing,
      owned_partitions: this.ownedPartitions(),
      client_id: CLIENT_ID,
    });
    this.checkGroupError('ConsumerGroupHeartbeat', reply);
    this.memberId = reply.member_id;
    this.memberEpoch = reply.member_epoch;
    this.sendSubscription = false;
    if (reply.heartbeat_interval_ms > 0) {
      this.heartbeatIntervalMs = reply.heartbeat_interval_ms;
    }
    if (!reply.has_assignment || this.stopping) return false;
    const target = new Set();
    for (const tps of reply.assignment) {
      if (tps.topic === this.options.topic) {
        for (const p of tps.partitions) target.add(p);
      }
    }
    return this.applyAssignment(target);
  }

  async heartbeatLoop() {
    let failingSince = null;
    while (!this.stopping) {
      let wait = this.heartbeatIntervalMs;
      try {
        if (await this.heartbeatOnce()) wait = 0;
        failingSince = null;
      } catch (err) {
        if (err instanceof FatalError) {
          this.fail(err);
          return;
        }
        failingSince = failingSince === null ? Date.now() : failingSince;
        if (Date.now() - failingSince > RETRY_BUDGET_MS) {
          this.fail(new FatalError(`heartbeats failed for 30 s: ${err.message}`));
          return;
        }
        wait = BACKOFF_MS;
      }
      if (!this.stopping && wait > 0) await this.pause(wait);
    }
  }

  async leave() {
    if (!this.memberId || this.coordinator === null) return;
    try {
      const reply = await this.client(this.coordinator).group.ConsumerGroupHeartbeat(
        { group_id: this.options.group, member_id: this.memberId, member_epoch: -1 },
        { deadlineMs: 5000 },
      );
      if (reply.error_code !== 'NONE') {
        warn(`leaving group ${this.options.group}: ${reply.error_code}: ${reply.error_message}`);
      }
    } catch (err) {
      warn(`leaving group ${this.options.group}: ${err.message}`);
    }
  }

  // Take a new assignment: commit and drop revoked partitions, then add the new ones at their
  // committed offsets. Returns whether anything changed.
  async applyAssignment(target) {
    const revoked = [...this.positions.keys()].filter((p) => !target.has(p));
    const added = [...target].filter((p) => !this.positions.has(p)).sort((a, b) => a - b);
    if (revoked.length === 0 && added.length === 0) return false;
    if (revoked.length > 0) {
      // Stop consuming them now (fetch replies for them are dropped), then commit.
      const final = new Map();
      for (const p of revoked) {
        final.set(p, this.positions.get(p));
        this.positions.delete(p);
      }
      await this.commit(final);
      for (const p of revoked) this.committed.delete(p);
    }
    if (added.length > 0) {
      const committed = await this.fetchCommitted(added);
      for (const p of added) {
        const offset = committed.has(p) ? committed.get(p) : -1;
        this.committed.set(p, offset);
        this.positions.set(p, offset >= 0 ? offset : null);
      }
    }
    return true;
  }

  // ------------------------------------------------------------------- offsets
  async fetchCommitted(partitions) {
    const started = Date.now();
    for (;;) {
      try {
        const reply = await this.atCoordinator('OffsetFetch', {
          group_id: this.options.group,
          partitions: [{ topic: this.options.topic, partitions }],
        });
        this.checkGroupError('OffsetFetch', reply);
        const offsets = new Map();
        for (const o of reply.offsets) {
          if (o.topic === this.options.topic) offsets.set(o.partition, Number(o.offset));
        }
        return offsets;
      } catch (err) {
        if (!(err instanceof RetriableError) || Date.now() - started > RETRY_BUDGET_MS) {
          throw new FatalError(`OffsetFetch for group ${this.options.group}: ${err.message}`);
        }
        await sleep(BACKOFF_MS);
      }
    }
  }

  // Commit positions (partition -> offset; null and unchanged ones are skipped). Commits run
  // one after the other, so an older position never overwrites a newer one. A commit that
  // keeps failing is given up with a warning.
  commit(offsets, budgetMs = COMMIT_BUDGET_MS) {
    const run = async () => {
      const chosen = [...offsets].filter(
        ([p, offset]) => offset !== null && offset !== undefined && offset !== this.committed.get(p),
      );
      if (chosen.length === 0) return;
      const started = Date.now();
      for (;;) {
        try {
          const reply = await this.atCoordinator('OffsetCommit', {
            group_id: this.options.group,
            member_id: this.memberId,
            member_epoch: this.memberEpoch,
            partitions: chosen.map(([p, offset]) => ({
              topic: this.options.topic,
              partition: p,
              offset: String(offset),
            })),
          });
          this.checkGroupError('OffsetCommit', reply);
          for (const item of reply.partitions) {
            if (item.error_code !== 'NONE') {
              warn(
                `commit of ${item.topic}-${item.partition}: ` +
                  `${item.error_code}: ${item.error_message}`,
              );
            }
          }
          for (const [p, offset] of chosen) {
            if (this.committed.has(p) || this.positions.has(p)) this.committed.set(p, offset);
          }
          return;
        } catch (err) {
          // Not a member any more (session expired, fenced): the heartbeat loop joins again
          // and a later commit stores these positions if the partitions are still ours.
          const retry =
            err instanceof RetriableError &&
            !(err instanceof NotMemberError) &&
            Date.now() - started < budgetMs;
          if (!retry) {
            warn(`commit for group ${this.options.group} failed: ${err.message}`);
            return;
          }
          await sleep(BACKOFF_MS);
        }
      }
    };
    this.commitQueue = this.commitQueue.then(run, run);
    return this.commitQueue;
  }

  // Commit every current position (read when the commit's turn comes).
  commitPositions(budgetMs) {
    return this.commit({ [Symbol.iterator]: () => this.positions.entries() }, budgetMs);
  }

  // ------------------------------------------------------------------- fetching
  async refreshMetadata() {
    const { topic } = this.options;
    let reply;
    try {
      reply = await bootstrapMetadata(this.options.bootstrap, { topics: [topic] });
    } catch (err) {
      warn(err.message);
      return;
    }
    reply.client.close();
    const { metadata } = reply;
    const info = metadata.topics.find((t) => t.name === topic);
    this.leaders.clear();
    if (!info || info.error_code !== 'NONE') return; // no partitions to fetch (yet)
    for (const p of info.partitions) {
      const address = brokerAddress(metadata, p.leader_id);
      if (address) this.leaders.set(p.partition, address);
    }
  }

  // partition list -> Map(address -> partitions led there), for partitions with a leader.
  byLeader(partitions) {
    const groups = new Map();
    for (const p of partitions) {
      const address = this.leaders.get(p);
      if (address) {
        if (!groups.has(address)) groups.set(address, []);
        groups.get(address).push(p);
      }
    }
    return groups;
  }

  // Look up start offsets (earliest or latest) of owned partitions with nothing committed.
  // Returns whether metadata should be refreshed.
  async resetPositions() {
    const missing = [...this.positions].filter(([, o]) => o === null).map(([p]) => p);
    if (missing.length === 0) return false;
    const timestamp = this.options.fromBeginning ? EARLIEST : LATEST;
    let refresh = false;
    for (const [address, group] of this.byLeader(missing)) {
      let reply;
      try {
        reply = await this.client(address).broker.ListOffsets(
          {
            partitions: group.map((p) => ({
              topic: this.options.topic,
              partition: p,
              timestamp_ms: timestamp,
            })),
          },
          { deadlineMs: RPC_DEADLINE_MS },
        );
      } catch (err) {
        warn(`ListOffsets from ${address}: ${err.message}`);
        refresh = true;
        continue;
      }
      for (const result of reply.partitions) {
        if (result.error_code === 'NONE') {
          // Only if still owned and still waiting for its start.
          if (this.positions.get(result.partition) === null) {
            this.positions.set(result.partition, Number(result.offset));
          }
        } else if (REFRESH_METADATA.has(result.error_code)) {
          refresh = true;
        } else {
          throw new FatalError(
            `ListOffsets ${result.topic}-${result.partition}: ` +
              `${result.error_code}: ${result.error_message}`,
          );
        }
      }
    }
    return refresh || missing.some((p) => !this.leaders.has(p));
  }

  // One round of long-polling Fetch calls (one per leader, concurrently). Returns the records
  // still wanted, in partition order, and whether metadata should be refreshed.
  async fetchOnce() {
    const ready = [...this.positions].filter(([, o]) => o !== null).map(([p]) => p);
    const sent = new Map(ready.map((p) => [p, this.positions.get(p)]));
    const groups = [...this.byLeader(ready)];
    let refresh = groups.reduce((n, [, g]) => n + g.length, 0) < ready.length;
    if (groups.length === 0) {
      await sleep(100); // nothing to fetch (yet): wait for an assignment or a leader
      return { records: [], refresh };
    }
    const replies = await Promise.all(
      groups.map(([address, group]) =>
        this.client(address)
          .broker.Fetch(
            {
              replica_id: -1,
              max_wait_ms: MAX_WAIT_MS,
              min_bytes: 1,
              max_bytes: MAX_BYTES,
              decode_records: true,
              partitions: group.map((p) => ({
                topic: this.options.topic,
                partition: p,
                fetch_offset: String(sent.get(p)),
                partition_max_bytes: MAX_BYTES,
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
              })),
            },
            { deadlineMs: RPC_DEADLINE_MS },
          )
          .catch((err) => {
            warn(`Fetch from ${address}: ${err.message}`);
            refresh = true;
            return { partitions: [] };
          }),
      ),
    );
    const records = [];
    for (const reply of replies) {
      for (const result of reply.partitions) {
        const p = result.partition;
        // Revoked, or moved (revoked and assigned again) while the fetch was in flight.
        if (this.positions.get(p) !== sent.get(p)) continue;
        if (result.error_code === 'OFFSET_OUT_OF_RANGE') {
          this.positions.set(p, null); // start again at the earliest or latest offset
          continue;
        }
        if (REFRESH_METADATA.has(result.error_code)) {
          refresh = true;
          continue;
        }
        if (result.error_code !== 'NONE') {
          throw new FatalError(
            `Fetch ${result.topic}-${p}: ${result.error_code}: ${result.error_message}`,
          );
        }
        for (const record of result.records) {
          const offset = Number(record.offset);
          // A reply may start with a batch that begins before the fetch offset.
          if (offset >= sent.get(p)) records.push({ partition: p, offset, record });
        }
      }
    }
    records.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
    return { records, refresh };
  }

  async consume() {
    const { maxMessages, timeoutMs } = this.options;
    let printed = 0;
    let lastRecordAt = Date.now();
    let lastCommitAt = Date.now();
    while (!this.stopping) {
      let refresh = await this.resetPositions();
      if (this.stopping) break;
      const round = await this.fetchOnce();
      refresh = refresh || round.refresh;
      // No await from here to the end of the loop over records: the assignment cannot change.
      for (const { partition, offset, record } of round.records) {
        const position = this.positions.get(partition);
        if (position === undefined || position === null || offset < position) continue;
        process.stdout.write(
          `${JSON.stringify({
            partition,
            offset,
            key: text(record.key),
            value: text(record.value),
          })}\n`,
        );
        this.positions.set(partition, offset + 1);
        lastRecordAt = Date.now();
        printed += 1;
        if (maxMessages !== undefined && printed >= maxMessages) return;
      }
      if (timeoutMs !== undefined && Date.now() - lastRecordAt >= timeoutMs) return;
      if (Date.now() - lastCommitAt >= COMMIT_INTERVAL_MS && !this.stopping) {
        lastCommitAt = Date.now();
        await this.commitPositions();
      }
      if (refresh && !this.stopping) {
        await sleep(200);
        await this.refreshMetadata();
      }
    }
  }

  async run() {
    await this.findCoordinator();
    await this.refreshMetadata();
    const heartbeats = this.heartbeatLoop();
    let failure = null;
    try {
      await this.consume();
    } catch (err) {
      failure = err;
    }
    failure = failure || this.fatal;
    // Stop the heartbeats (waiting for one in flight), commit the positions, leave.
    this.stopping = true;
    if (this.wakeHeartbeat) this.wakeHeartbeat();
    await heartbeats;
    await this.commitPositions(failure ? 3000 : COMMIT_BUDGET_MS);
    await this.leave();
    if (failure) throw failure;
  }
}

async function main() {
  let consumer;
  let signals = 0;
  const onSignal = () => {
    signals += 1;
    if (signals > 1 || !consumer) process.exit(130);
    consumer.stopping = true; // commit, leave and exit 0
    if (consumer.wakeHeartbeat) consumer.wakeHeartbeat();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    consumer = new GroupConsumer(parseCommandLine());
    await consumer.run();
  } catch (err) {
    process.stderr.write(`error: ${oneLine(err.message)}\n`);
    process.exitCode = 1;
  } finally {
    if (consumer) consumer.close();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

main();
