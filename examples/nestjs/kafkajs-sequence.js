#!/usr/bin/env node
// Produce a numbered sequence with kafkajs, one message per request (acks -1), and report each
// acknowledgement: a way to watch a Kafka client ride through a broker failure.
//
//   node kafkajs-sequence.js --brokers 127.0.0.1:9092 --topic seq --count 300 --interval-ms 10
//
// For every number n in 0..count-1 it sends the value "n" (key "n") to --partition, waits for
// the acknowledgement, and prints {"n":n,"partition":p,"offset":o}; a send that fails after
// kafkajs's own retries prints {"n":n,"error":"..."} instead and the sequence goes on. Kill
// the partition's leader meanwhile: kafkajs refreshes its metadata and retries on
// NOT_LEADER_OR_FOLLOWER and on connection errors by itself. The last line is a summary
// {"done":true,"acked":A,"failed":F}. Exit status 0 when every number was acknowledged.
//
// Options: --brokers LIST (default 127.0.0.1:9092), --topic NAME (default kafkajs-sequence),
// --partition P (default 0), --count N (default 300), --interval-ms MS (pause between sends,
// default 10), --retries R (kafkajs retries per send, default 10).
'use strict';

const { Kafka, logLevel } = require('kafkajs');

function parseArgs(argv) {
  const options = {
    brokers: '127.0.0.1:9092',
    topic: 'kafkajs-sequence',
    partition: 0,
    count: 300,
    intervalMs: 10,
    retries: 10,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    if (name === '--brokers') options.brokers = value;
    else if (name === '--topic') options.topic = value;
    else if (name === '--partition') options.partition = Number.parseInt(value, 10);
    else if (name === '--count') options.count = Number.parseInt(value, 10);
    else if (name === '--interval-ms') options.intervalMs = Number.parseInt(value, 10);
    else if (name === '--retries') options.retries = Number.parseInt(value, 10);
    else throw new Error(`unknown option ${name}`);
  }
  return options;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function printJson(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const kafka = new Kafka({
    clientId: 'raftka-kafkajs-sequence',
    brokers: options.brokers.split(',').map((b) => b.trim()).filter(Boolean),
    logLevel: logLevel.ERROR,
    connectionTimeout: 1000,
    requestTimeout: 10000,
    retry: { initialRetryTime: 100, maxRetryTime: 2000, retries: options.retries },
  });
  // Not idempotent: a retried send may store a number twice, never lose an acknowledged one.
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  let acked = 0;
  let failed = 0;
  for (let n = 0; n < options.count; n += 1) {
    try {
      const [result] = await producer.send({
        topic: options.topic,
        acks: -1,
        messages: [{ key: String(n), value: String(n), partition: options.partition }],
      });
      acked += 1;
      printJson({ n, partition: result.partition, offset: Number(result.baseOffset) });
    } catch (err) {
      failed += 1;
      printJson({ n, error: String(err && err.message ? err.message : err) });
    }
    if (options.intervalMs > 0) await sleep(options.intervalMs);
  }
  await producer.disconnect();
  printJson({ done: true, acked, failed });
  return failed === 0;
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (err) => {
    console.error(`error: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
