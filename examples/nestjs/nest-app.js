#!/usr/bin/env node
// A NestJS microservice on Raftka's Kafka listeners (Transport.KAFKA, kafkajs underneath).
//
//   node nest-app.js --brokers 127.0.0.1:9092
//
// It handles two patterns:
//   @EventPattern('events.created')  an event (no reply): prints {"event":"events.created",...}
//   @MessagePattern('math.sum')      a request: replies with the sum of the array it is sent,
//                                    on the reply topic the caller named (math.sum.reply)
// and prints {"ready":true,...} once its consumer has joined its group and subscribed.
//
// Plain JavaScript, no TypeScript build: Nest's decorators are applied by hand below, with
// Reflect.decorate, exactly as the TypeScript compiler would apply @Controller(),
// @EventPattern(...), @MessagePattern(...) and @Payload().
//
// Options: --brokers LIST (comma-separated Kafka listeners, default 127.0.0.1:9092 or
// $KAFKA_BROKERS), --client-id ID (default raftka-nest), --group-id ID (default
// raftka-nest; Nest appends "-server"), --sasl-mechanism plain|scram-sha-256|scram-sha-512
// (SASL_PLAINTEXT listeners, e.g. deploy/docker-compose.yml; the user and password come from
// $KAFKA_USERNAME and $KAFKA_PASSWORD). Nest's own log lines go to the console logger at
// warn/error level only, so stdout stays one JSON object per line for the handlers.
// TLS and SASL: $KAFKA_SSL_CA, $KAFKA_SASL_MECHANISM, $KAFKA_USERNAME, $KAFKA_PASSWORD
// (kafka-security.js).
'use strict';

require('reflect-metadata');
const { kafkaSecurityFromEnv } = require('./kafka-security');

function parseArgs(argv) {
  const options = {
    brokers: process.env.KAFKA_BROKERS || '127.0.0.1:9092',
    clientId: 'raftka-nest',
    groupId: 'raftka-nest',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    if (name === '--brokers') options.brokers = value;
    else if (name === '--client-id') options.clientId = value;
    else if (name === '--group-id') options.groupId = value;
    else if (name === '--sasl-mechanism') options.saslMechanism = value;
    else throw new Error(`unknown option ${name}`);
  }
  return options;
}

function printJson(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  // Nest 11+ ships as ES modules: import() them from this CommonJS file.
  const { Controller, Module } = await import('@nestjs/common');
  const { NestFactory } = await import('@nestjs/core');
  const { EventPattern, MessagePattern, Payload, Transport } = await import('@nestjs/microservices');
  const { Partitioners } = require('kafkajs');

  class AppController {
    // @EventPattern('events.created')
    onEventCreated(payload) {
      printJson({ event: 'events.created', payload });
    }

    // @MessagePattern('math.sum')
    sum(numbers) {
      if (!Array.isArray(numbers)) throw new Error('math.sum wants an array of numbers');
      const result = numbers.reduce((total, n) => total + Number(n), 0);
      printJson({ request: 'math.sum', payload: numbers, result });
      return result;
    }
  }

  // What `@Controller() class AppController { @EventPattern(...) onEventCreated(@Payload() p) }`
  // compiles to. A parameter decorator is applied as a method decorator with its index bound.
  const param = (index, decorator) => (target, key) => decorator(target, key, index);
  const method = (name, decorators) => Reflect.decorate(
    decorators, AppController.prototype, name,
    Object.getOwnPropertyDescriptor(AppController.prototype, name));
  method('onEventCreated', [EventPattern('events.created'), param(0, Payload())]);
  method('sum', [MessagePattern('math.sum'), param(0, Payload())]);
  Reflect.decorate([Controller()], AppController);

  class AppModule {}
  Reflect.decorate([Module({ controllers: [AppController] })], AppModule);

  const app = await NestFactory.createMicroservice(AppModule, {
    logger: ['error', 'warn'],
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
      subscribe: { fromBeginning: true },
      run: { autoCommit: true },
      // kafkajs 2's default partitioner, chosen explicitly (silences its warning).
      producer: { allowAutoTopicCreation: true, createPartitioner: Partitioners.DefaultPartitioner },
      send: { acks: -1 }, // replies are acknowledged by every in-sync replica
    },
  });

  let closing = false;
  const shutdown = async (signal) => {
    if (closing) return;
    closing = true;
    try {
      await app.close();
    } finally {
      printJson({ stopped: true, signal });
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  await app.listen();
  printJson({
    ready: true,
    brokers: options.brokers,
    group: `${options.groupId}-server`,
    patterns: ['events.created', 'math.sum'],
  });
}

main().catch((err) => {
  console.error(`error: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
