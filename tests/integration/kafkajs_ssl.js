// kafkajs over SSL (and mutual TLS) against Raftka's Kafka listener, for test_tls_kafkajs.py.
// Usage: node kafkajs_ssl.js BROKERS CA_PEM TOPIC COUNT [CERT_PEM KEY_PEM]
// Produces COUNT records, reads them back with a consumer group, prints one JSON line.
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [brokers, caPath, topic, countText, certPath, keyPath] = process.argv.slice(2);
  const count = Number(countText);
  const ssl = { ca: [fs.readFileSync(caPath, 'utf8')] };
  if (certPath) {
    ssl.cert = fs.readFileSync(certPath, 'utf8');
    ssl.key = fs.readFileSync(keyPath, 'utf8');
  }
  const kafka = new Kafka({ clientId: 'kafkajs-ssl', brokers: brokers.split(','), ssl,
    logLevel: logLevel.ERROR, retry: { retries: Number(process.env.RETRIES || 10) } });
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const messages = Array.from({ length: count }, (_, i) => ({ value: `js-${i}` }));
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: `g-${topic}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${seen.size} of ${count}`)), 40000);
    consumer.run({ eachMessage: async ({ message }) => {
      seen.add(message.value.toString());
      if (seen.size >= count) { clearTimeout(timer); resolve(); }
    } }).catch(reject);
  });
  await consumer.disconnect();
  console.log(JSON.stringify({ produced: count, consumed: seen.size }));
}

main().catch((err) => { console.error(err); process.exit(1); });
