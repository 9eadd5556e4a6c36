#!/usr/bin/env node
'use strict';
// Produce plain records to one partition of a Raftka topic.
//
//   node producer.js --bootstrap 127.0.0.1:9090 --topic greetings [--partition 0] [--key K] hi there
//   printf 'a\nb\n' | node producer.js --bootstrap 127.0.0.1:9090 --topic greetings
//
// Each value (or each stdin line) is one Produce request with acks=-1 (all in-sync replicas),
// sent in order; each reply prints one JSON line {"partition":P,"base_offset":N}. A reply with
// an error_code other than NONE ends the program with exit status 1 and a line on stderr.

const readline = require('readline');
const { parseArgs } = require('util');
const { connect, parseBootstrap, bootstrapMetadata, brokerAddress } = require('./raftka');

// Errors worth another try after a short pause (the leader moves or is being elected; a
// topic that was just auto-created needs a moment before its leader takes writes).
const RETRIABLE = new Set([
  'LEADER_NOT_AVAILABLE',
  'NOT_LEADER_OR_FOLLOWER',
  'BROKER_NOT_AVAILABLE',
  'UNKNOWN_LEADER_EPOCH',
  'NOT_CONTROLLER',
]);
const RETRY_DEADLINE_MS = 10000;
const RETRY_BACKOFF_MS = 200;

const USAGE =
  'usage: node producer.js --bootstrap HOST:PORT --topic TOPIC [--partition P] [--key KEY] ' +
  '[VALUE ...]\n(without values, every line of stdin is one record)';

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function parseCommandLine() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        bootstrap: { type: 'string' },
        topic: { type: 'string' },
        partition: { type: 'string', default: '0' },
        key: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
    });
  } catch (err) {
    fail(`error: ${err.message}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (!values.bootstrap || values.topic === undefined) {
    fail(`error: --bootstrap and --topic are required\n${USAGE}`);
  }
  const partition = Number(values.partition);
  if (!Number.isInteger(partition) || partition < 0) {
    fail(`error: --partition must be a non-negative integer, got ${values.partition}`);
  }
  return { ...values, partition, values: positionals };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class PartitionProducer {
  constructor(bootstrap, topic, partition) {
    this.bootstrap = bootstrap;
    this.topic = topic;
    this.partition = partition;
    // Start with the first bootstrap broker; move to the leader when told to.
    this.client = connect(parseBootstrap(bootstrap)[0]);
  }

  // Send one record; resolves to the PartitionProduceResponse, retrying retriable errors.
  async send(record) {
    const request = {
      acks: -1,
      timeout_ms: 10000,
      partitions: [{ topic: this.topic, partition: this.partition, records: [record] }],
    };
    const deadline = Date.now() + RETRY_DEADLINE_MS;
    for (;;) {
      const reply = await this.client.broker.Produce(request);
      const result = reply.partitions[0];
      if (!result) {
        throw new Error('the broker sent an empty ProduceResponse');
      }
      if (result.error_code === 'NONE' || !RETRIABLE.has(result.error_code)) {
        return result;
      }
      if (Date.now() >= deadline) {
        return result;
      }
      await sleep(RETRY_BACKOFF_MS);
      await this.findLeader(result.leader_id);
    }
  }

  // Reconnect to the partition leader named by a reply, or else by Metadata.
  async findLeader(leaderId) {
    const { client, metadata } = await bootstrapMetadata(this.bootstrap, { topics: [this.topic] });
    client.close();
    if (leaderId === undefined || leaderId < 0) {
      const topic = metadata.topics.find((t) => t.name === this.topic);
      const partition = topic && topic.partitions.find((p) => p.partition === this.partition);
      leaderId = partition ? partition.leader_id : -1;
    }
    const address = brokerAddress(metadata, leaderId);
    if (address && address !== this.client.address) {
      this.client.close();
      this.client = connect(address);
    }
  }

  close() {
    this.client.close();
  }
}

async function* stdinLines() {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    yield line;
  }
}

async function* fromArray(values) {
  yield* values;
}

async function main() {
  const options = parseCommandLine();
  const producer = new PartitionProducer(options.bootstrap, options.topic, options.partition);
  const key = options.key === undefined ? undefined : Buffer.from(options.key, 'utf8');
  const source = options.values.length > 0 ? fromArray(options.values) : stdinLines();
  try {
    for await (const value of source) {
      const record = { value: Buffer.from(value, 'utf8') };
      if (key !== undefined) {
        record.key = key;
      }
      const result = await producer.send(record);
      if (result.error_code !== 'NONE') {
        process.stderr.write(
          `error: produce to ${options.topic}-${options.partition} failed: ` +
            `${result.error_code}: ${result.error_message}\n`,
        );
        process.exitCode = 1;
        return;
      }
      process.stdout.write(
        `${JSON.stringify({ partition: result.partition, base_offset: Number(result.base_offset) })}\n`,
      );
    }
  } finally {
    producer.close();
  }
}

main().catch((err) => {
  process.stderr.write(`error: ${String(err.message).replace(/\s*\n\s*/g, ' ')}\n`);
  process.exitCode = 1;
});
