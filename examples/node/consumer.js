#!/usr/bin/env node
'use strict';
// Read records from a Raftka topic and print them as JSON lines.
//
//   node consumer.js --bootstrap 127.0.0.1:9090 --topic greetings [--partition P]
//                    [--from-beginning] [--max-messages N] [--timeout-ms T]
//
// Finds the topic's partitions and their leaders with Metadata, the start offset with
// ListOffsets (earliest with --from-beginning, else latest), then long-polls Fetch with
// decode_records and prints {"partition":P,"offset":N,"key":...,"value":...} per record (key
// and value as UTF-8 strings, null when absent). Exits 0 after N records (--max-messages) or
// when no record arrived for T ms (--timeout-ms); without either it runs until interrupted.

const { parseArgs } = require('util');
const { connect, bootstrapMetadata, brokerAddress } = require('./raftka');

const EARLIEST = -2;
const LATEST = -1;
const MAX_WAIT_MS = 500;
const MAX_BYTES = 1024 * 1024;
// Errors after which the partition leaders are looked up again.
const REFRESH_METADATA = new Set([
  'NOT_LEADER_OR_FOLLOWER',
  'LEADER_NOT_AVAILABLE',
  'UNKNOWN_LEADER_EPOCH',
  'FENCED_LEADER_EPOCH',
  'BROKER_NOT_AVAILABLE',
  'UNKNOWN_TOPIC_OR_PARTITION',
]);

const USAGE =
  'usage: node consumer.js --bootstrap HOST:PORT --topic TOPIC [--partition P] ' +
  '[--from-beginning] [--max-messages N] [--timeout-ms T]';

class FatalError extends Error {}

function oneLine(message) {
  return String(message).replace(/\s*\n\s*/g, ' ');
}

function parseCommandLine() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        bootstrap: { type: 'string' },
        topic: { type: 'string' },
        partition: { type: 'string' },
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
  if (!values.bootstrap || values.topic === undefined) {
    throw new FatalError(`--bootstrap and --topic are required\n${USAGE}`);
  }
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
    partition: integer('partition', 0),
    fromBeginning: values['from-beginning'],
    maxMessages: integer('max-messages', 1),
    timeoutMs: integer('timeout-ms', 0),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function text(buffer) {
  return buffer === undefined || buffer === null ? null : Buffer.from(buffer).toString('utf8');
}

class TopicConsumer {
  constructor(options) {
    this.options = options;
    this.clients = new Map(); // "HOST:PORT" -> client
    this.leaders = new Map(); // partition -> "HOST:PORT"
    this.offsets = new Map(); // partition -> next offset to fetch
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

  // Look up the partitions (the first time) and their leaders.
  async refreshMetadata() {
    const { topic, partition } = this.options;
    const { client, metadata } = await bootstrapMetadata(this.options.bootstrap, {
      topics: [topic],
    });
    client.close();
    const info = metadata.topics.find((t) => t.name === topic);
    if (!info) {
      throw new FatalError(`topic ${topic} is missing from the Metadata reply`);
    }
    if (info.error_code !== 'NONE') {
      throw new FatalError(`topic ${topic}: ${info.error_code}: ${info.error_message}`);
    }
    let partitions = info.partitions.slice().sort((a, b) => a.partition - b.partition);
    if (partition !== undefined) {
      partitions = partitions.filter((p) => p.partition === partition);
      if (partitions.length === 0) {
        throw new FatalError(
          `topic ${topic} has no partition ${partition} (it has ${info.partitions.length})`,
        );
      }
    }
    this.leaders.clear();
    for (const p of partitions) {
      const address = brokerAddress(metadata, p.leader_id);
      if (address) {
        this.leaders.set(p.partition, address);
      }
    }
    if (this.partitions === undefined) {
      this.partitions = partitions.map((p) => p.partition);
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

  // Set the fetch offsets of the given partitions from ListOffsets (earliest or latest).
  async resetOffsets(partitions) {
    const timestamp = this.options.fromBeginning ? EARLIEST : LATEST;
    for (const [address, group] of this.byLeader(partitions)) {
      const reply = await this.client(address).broker.ListOffsets({
        partitions: group.map((p) => ({
          topic: this.options.topic,
          partition: p,
          timestamp_ms: timestamp,
        })),
      });
      for (const result of reply.partitions) {
        if (result.error_code === 'NONE') {
          this.offsets.set(result.partition, Number(result.offset));
        } else if (!REFRESH_METADATA.has(result.error_code)) {
          throw new FatalError(
            `ListOffsets ${result.topic}-${result.partition}: ` +
              `${result.error_code}: ${result.error_message}`,
          );
        }
      }
    }
  }

  // One round of long-polling Fetch calls (one per leader, concurrently). Returns the records
  // in partition order and whether metadata should be refreshed.
  async fetchOnce() {
    const ready = this.partitions.filter((p) => this.offsets.has(p));
    const groups = [...this.byLeader(ready)];
    let refresh = ready.length < this.partitions.length || groups.length === 0;
    const replies = await Promise.all(
      groups.map(([address, group]) =>
        this.client(address)
          .broker.Fetch({
            replica_id: -1,
            max_wait_ms: MAX_WAIT_MS,
            min_bytes: 1,
            max_bytes: MAX_BYTES,
            decode_records: true,
            partitions: group.map((p) => ({
              topic: this.options.topic,
              partition: p,
              fetch_offset: this.offsets.get(p),
              partition_max_bytes: MAX_BYTES,
              current_leader_epoch: -1,
              last_fetched_epoch: -1,
            })),
          })
          .catch((err) => {
            // The leader may be gone (failover): look the leaders up again.
            process.stderr.write(`warning: Fetch from ${address}: ${oneLine(err.message)}\n`);
            refresh = true;
            return { partitions: [] };
          }),
      ),
    );
    const records = [];
    const outOfRange = [];
    for (const reply of replies) {
      for (const result of reply.partitions) {
        if (result.error_code === 'OFFSET_OUT_OF_RANGE') {
          outOfRange.push(result.partition);
          continue;
        }
        if (REFRESH_METADATA.has(result.error_code)) {
          refresh = true;
          continue;
        }
        if (result.error_code !== 'NONE') {
          throw new FatalError(
            `Fetch ${result.topic}-${result.partition}: ` +
              `${result.error_code}: ${result.error_message}`,
          );
        }
        const from = this.offsets.get(result.partition);
        for (const record of result.records) {
          const offset = Number(record.offset);
          // A reply may start with a batch that begins before the fetch offset.
          if (offset >= from) {
            records.push({ partition: result.partition, offset, record });
          }
        }
      }
    }
    if (outOfRange.length > 0) {
      await this.resetOffsets(outOfRange);
    }
    records.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
    return { records, refresh };
  }

  async run() {
    const { maxMessages, timeoutMs } = this.options;
    await this.refreshMetadata();
    await this.resetOffsets(this.partitions);
    let printed = 0;
    let lastRecordAt = Date.now();
    for (;;) {
      const { records, refresh } = await this.fetchOnce();
      for (const { partition, offset, record } of records) {
        process.stdout.write(
          `${JSON.stringify({
            partition,
            offset,
            key: text(record.key),
            value: text(record.value),
          })}\n`,
        );
        this.offsets.set(partition, offset + 1);
        lastRecordAt = Date.now();
        printed += 1;
        if (maxMessages !== undefined && printed >= maxMessages) {
          return;
        }
      }
      if (timeoutMs !== undefined && Date.now() - lastRecordAt >= timeoutMs) {
        return;
      }
      if (refresh) {
        await sleep(200);
        await this.refreshMetadata();
        const missing = this.partitions.filter((p) => !this.offsets.has(p));
        if (missing.length > 0) {
          await this.resetOffsets(missing);
        }
      }
    }
  }
}

async function main() {
  let consumer;
  try {
    consumer = new TopicConsumer(parseCommandLine());
    await consumer.run();
  } catch (err) {
    process.stderr.write(`error: ${oneLine(err.message)}\n`);
    process.exitCode = 1;
  } finally {
    if (consumer) consumer.close();
  }
}

main();
