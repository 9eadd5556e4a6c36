// kafkajs TLS and SASL options from the environment, for nest-app.js and nest-client.js
// (Nest hands `options.client` to kafkajs as is):
//   KAFKA_SSL_CA=PEM              TLS (SSL / SASL_SSL listeners), trusting that CA
//   KAFKA_SASL_MECHANISM=plain|scram-sha-256|scram-sha-512, with KAFKA_USERNAME and
//   KAFKA_PASSWORD                SASL (SASL_PLAINTEXT, or SASL_SSL with KAFKA_SSL_CA)
// Unset: plaintext without SASL, as before.
'use strict';

const fs = require('fs');

function kafkaSecurityFromEnv(env = process.env) {
  const security = {};
  if (env.KAFKA_SSL_CA) security.ssl = { ca: [fs.readFileSync(env.KAFKA_SSL_CA, 'utf8')] };
  if (env.KAFKA_SASL_MECHANISM) {
    if (!env.KAFKA_USERNAME || env.KAFKA_PASSWORD === undefined) {
      throw new Error('KAFKA_SASL_MECHANISM needs KAFKA_USERNAME and KAFKA_PASSWORD');
    }
    security.sasl = { mechanism: env.KAFKA_SASL_MECHANISM, username: env.KAFKA_USERNAME,
      password: env.KAFKA_PASSWORD };
  }
  return security;
}

module.exports = { kafkaSecurityFromEnv };
