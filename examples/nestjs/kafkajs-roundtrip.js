#!/usr/bin/env node
// Plain kafkajs against Raftka's Kafka listeners: produce N messages (acks -1), read them back
// with a consumer group from the beginning, commit, and print one JSON summary line.
//
//   node kafkajs-roundtrip.js --brokers 127.0.0.1:9092 --topic roundtrip --count 100
//
// Options: --brokers LIST (comma-separated Kafka listeners, default 127.0.0.1:9092),
// --topic NAME (default kafkajs-roundtrip), --count N (default 100), --group ID (default
// <topic>-group), --timeout-ms MS (give up reading after this long, default 30000),
// --sasl-mechanism plain|scram-sha-256|scram-sha-512 (SASL_PLAINTEXT listeners; the user and
// password come from $KAFKA_USERNAME and $KAFKA_PASSWORD), --ssl-ca PEM (TLS to SSL / SASL_SSL
// listeners, trusting that CA; with --sasl-mechanism: SASL_SSL).
// Exit status 0 when every message came back and the offsets were committed, 1 otherwise.
'use strict';

const fs = require('fs');
const { Kafka, Partitioners, logLevel } = require('kafkajs');

function parseArgs(argv) {
  const options = {
    brokers: '127.0.0.1:9092',
    topic: 'kafkajs-roundtrip',
    count: 100,
    group: null,
    timeoutMs: 30000,
    saslMechanism: null,
    sslCa: null,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const name = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`${name} needs a value`);
    i += 1;
    if (name === '--brokers') options.brokers = value;
    else if (name === '--topic') options.topic = value;
    else if (name === '--count') options.count = Number.parseInt(value, 10);
    else if (name === '--group') options.group = value;
    else if (name === '--timeout-ms') options.timeoutMs = Number.parseInt(value, 10);
    else if (name === '--sasl-mechanism') options.saslMechanism = value;
    else if (name === '--ssl-ca') options.sslCa = value;
    else throw new Error(`unknown option ${name}`);
  }
  if (!Number.isInteger(options.count) || options.count < 1) throw new Error('--count must be >= 1');
  options.group = options.group || `${options.topic}-group`;
  return options;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const kafka = new Kafka({
    clientId: 'raftka-kafkajs-roundtrip',
    brokers: options.brokers.split(',').map((b) => b.trim()).filter(Boolean),
    logLevel: logLevel.WARN,
    ...(options.sslCa ? { ssl: { ca: [fs.readFileSync(options.sslCa, 'utf8')] } } : {}),
    ...(options.saslMechanism ? {
      sasl: {
        mechanism: options.saslMechanism,
        username: process.env.KAFKA_USERNAME,
        password: process.env.KAFKA_PASSWORD,
      },
    } : {}),
  });

  // Produce: one batch of `count` messages, acks -1 (every in-sync replica has them).
  const producer = kafka.producer({
    allowAutoTopicCreation: true,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  // Every value names this run, so messages an earlier run left in the topic are told apart.
  const run = `${process.pid}-${Date.now()}`;
  const sent = [];
  for (let i = 0; i < options.count; i += 1) {
    sent.push({ key: `key-${i}`, value: JSON.stringify({ run, n: i }) });
  }
  const produced = await producer.send({ topic: options.topic, acks: -1, messages: sent });
  await producer.disconnect();

  // Consume with a group, from the beginning; stop once every message has arrived.
  // A short fetch wait: disconnect() waits for the fetch in flight, which the broker may hold
  // this long when there is nothing new to read.
  const consumer = kafka.consumer({ groupId: options.group, maxWaitTimeInMs: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [options.topic], fromBeginning: true });
  const received = new Map(); // n -> {partition, offset}, for this run's messages
  let earlier = 0; // messages of earlier runs, read (and committed) too
  const nextOffsets = new Map(); // partition -> offset after the last message seen
  let resolveDone;
  const done = new Promise((resolve) => { resolveDone = resolve; });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      const value = JSON.parse(message.value.toString());
      if (value.run === run) received.set(value.n, { partition, offset: message.offset });
      else earlier += 1;
      nextOffsets.set(partition, { topic, partition, offset: (BigInt(message.offset) + 1n).toString() });
      if (received.size >= options.count) resolveDone();
    },
  });
  let timer;
  const timedOut = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(
      `timed out after ${options.timeoutMs} ms: received ${received.size} of ${options.count}`)),
    options.timeoutMs);
  });
  try {
    await Promise.race([done, timedOut]);
  } finally {
    clearTimeout(timer);
  }
  const commits = [...nextOffsets.values()];
  await consumer.commitOffsets(commits);
  await consumer.disconnect();

  // Read the committed offsets back through the admin client.
  const admin = kafka.admin();
  await admin.connect();
  const committed = await admin.fetchOffsets({ groupId: options.group, topics: [options.topic] });
  await admin.disconnect();
  const committedOffsets = {};
  for (const { partition, offset } of committed[0].partitions) committedOffsets[partition] = Number(offset);
  for (const { partition, offset } of commits) {
    if (committedOffsets[partition] !== Number(offset)) {
      throw new Error(`partition ${partition}: committed ${committedOffsets[partition]}, expected ${offset}`);
    }
  }

  const missing = [];
  for (let i = 0; i < options.count; i += 1) if (!received.has(i)) missing.push(i);
  const summary = {
    topic: options.topic,
    group: options.group,
    produced: sent.length,
    produced_partitions: produced.map((r) => r.partition).sort((a, b) => a - b),
    consumed: received.size,
    earlier_runs: earlier,
    missing,
    committed: committedOffsets,
  };
  console.log(JSON.stringify(summary));
  if (missing.length > 0) throw new Error(`${missing.length} messages did not come back`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`error: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
