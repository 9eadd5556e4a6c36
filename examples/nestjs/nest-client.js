#!/usr/bin/env node
// A NestJS ClientKafka talking to nest-app.js through Raftka's Kafka listeners.
//
//   node nest-client.js --brokers 127.0.0.1:9092
//
// It emits one event to `events.created` (fire and forget) and sends one request to
// `math.sum` with [1, 2, 3]. Nest's request/response over Kafka works like this: the client
// subscribes (with its own consumer group) to the reply topic `math.sum.reply`, and stamps each
// request with kafka_correlationId, kafka_replyTopic and kafka_replyPartition headers; the
// server answers on that topic and partition. Prints one JSON line per step, for example
//   {"emitted":"events.created","payload":{"id":"...","name":"widget"}}
//   {"pattern":"math.sum","request":[1,2,3],"reply":6}
// and exits 0 (1 on error or when no reply came within --timeout-ms).
//
// Options: --brokers LIST (default 127.0.0.1:9092 or $KAFKA_BROKERS), --client-id ID
// (default raftka-nest), --group-id ID (default raftka-nest; Nest appends "-client"),
// --numbers 1,2,3 (what to sum), --timeout-ms MS (default 30000), --sasl-mechanism
// plain|scram-sha-256|scram-sha-512 (SASL_PLAINTEXT listeners, e.g. deploy/docker-compose.yml;
// the user and password come from $KAFKA_USERNAME and $KAFKA_PASSWORD).
// TLS and SASL also from $KAFKA_SSL_CA, $KAFKA_SASL_MECHANISM, $KAFKA_USERNAME,
// $KAFKA_PASSWORD (kafka-security.js).
'use strict';

require('reflect-metadata');
const { kafkaSecurityFromEnv } = require('./kafka-security');

function parseArgs(argv) {
  const options = {
    brokers: process.env.KAFKA_BROKERS || '127.0.0.1:9092',
    clientId: 'raftka-nest',
    groupId: 'raftka-nest',
    numbers: [1, 2, 3],
    timeoutMs: 30000,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    if (name === '--brokers') options.brokers = value;
    else if (name === '--client-id') options.clientId = value;
    else if (name === '--group-id') options.groupId = value;
    else if (name === '--numbers') options.numbers = value.split(',').map(Number);
    else if (name === '--timeout-ms') options.timeoutMs = Number.parseInt(value, 10);
    else if (name === '--sasl-mechanism') options.saslMechanism = value;
    else throw new Error(`unknown option ${name}`);
  }
  return options;
}

function printJson(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function decodeScalar(value) {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  // Nest 11+ ships as ES modules: import() them from this CommonJS file.
  const { Logger } = await import('@nestjs/common');
  const { ClientProxyFactory, Transport } = await import('@nestjs/microservices');
  const { lastValueFrom, timeout } = await import('rxjs');
  const { Partitioners } = require('kafkajs');
  Logger.overrideLogger(['error', 'warn']);

  const client = ClientProxyFactory.create({
    transport: Transport.KAFKA,
    options: {
      client: {
        clientId: options.clientId,
        brokers: options.brokers.split(',').map((b) => b.trim()).filter(Boolean),
        // TLS / SASL from $KAFKA_SSL_CA, $KAFKA_SASL_MECHANISM (or --sasl-mechanism)
        ...kafkaSecurityFromEnv(options.saslMechanism
          ? { ...process.env, KAFKA_SASL_MECHANISM: options.saslMechanism } : process.env),
      },
      // maxWaitTimeInMs: how long the broker may hold a fetch when there is nothing to read
      // (kafkajs waits for the fetch in flight when it disconnects; its default is 5 s).
      consumer: { groupId: options.groupId, maxWaitTimeInMs: 1000 },
      producer: { allowAutoTopicCreation: true, createPartitioner: Partitioners.DefaultPartitioner },
      send: { acks: -1 },
    },
  });
  // Before connect(): the client's consumer subscribes to math.sum.reply when it connects.
  client.subscribeToResponseOf('math.sum');

  try {
    await client.connect();

    const event = { id: `evt-${process.pid}-${Date.now()}`, name: 'widget', createdAt: new Date().toISOString() };
    await lastValueFrom(client.emit('events.created', event));
    printJson({ emitted: 'events.created', payload: event });

    const raw = await lastValueFrom(
      client.send('math.sum', options.numbers).pipe(timeout(options.timeoutMs)));
    // Nest's Kafka parser JSON-decodes only objects and arrays: a scalar reply such as 6
    // arrives as the string "6". Decode it here.
    printJson({ pattern: 'math.sum', request: options.numbers, reply: decodeScalar(raw) });
  } finally {
    await client.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`error: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
