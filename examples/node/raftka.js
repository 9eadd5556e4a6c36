'use strict';
// A tiny promise-based client for Raftka's gRPC API (raftka.v1.BrokerService,
// raftka.v1.AdminService and raftka.v1.GroupService), loaded at run time from the repository's
// .proto files.
//
//   const { connect } = require('./raftka');
//   const client = connect('127.0.0.1:9090');
//   const reply = await client.broker.Produce({ acks: -1, partitions: [...] });
//   client.close();
//
// Messages are plain objects with the proto field names (keepCase). int64 fields come back as
// decimal strings (longs: String), enums as their names (error_code: 'NONE'), bytes as
// Buffers; proto3 `optional` fields (Record.key, Record.value) are undefined when absent.

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// The protos import each other as "proto/raftka/v1/common.proto", so the include directory
// is the repository root.
const REPO_ROOT = path.resolve(__dirname, '..', '..');
const PROTO_DIR = path.join('proto', 'raftka', 'v1');

const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [REPO_ROOT],
};

const BROKER_METHODS = ['Produce', 'Fetch', 'ListOffsets', 'Metadata'];
const ADMIN_METHODS = ['CreateTopics', 'ListTopics', 'DescribeTopics'];
const GROUP_METHODS = [
  'FindCoordinator',
  'ConsumerGroupHeartbeat',
  'OffsetCommit',
  'OffsetFetch',
  'ListGroups',
  'DescribeGroup',
  'DeleteGroup',
];

// Default deadline of one call. Fetch long-polls for up to max_wait_ms, which stays well below.
const DEFAULT_DEADLINE_MS = 30000;

let cachedPackage = null;

function loadPackage() {
  if (cachedPackage === null) {
    const files = fs
      .readdirSync(path.join(REPO_ROOT, PROTO_DIR))
      .filter((name) => name.endsWith('.proto'))
      .sort()
      .map((name) => path.posix.join('proto', 'raftka', 'v1', name));
    const definition = protoLoader.loadSync(files, LOADER_OPTIONS);
    cachedPackage = grpc.loadPackageDefinition(definition).raftka.v1;
  }
  return cachedPackage;
}

// Wrap the callback-style unary methods of a grpc-js stub as functions returning promises:
// wrapper.Method(request, { deadlineMs }) -> Promise<reply>.
function promisify(stub, methods) {
  const wrapper = {};
  for (const method of methods) {
    wrapper[method] = (request = {}, options = {}) =>
      new Promise((resolve, reject) => {
        const deadline = new Date(Date.now() + (options.deadlineMs || DEFAULT_DEADLINE_MS));
        stub[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
      });
  }
  return wrapper;
}

// Connect to one broker at "HOST:PORT". The channel is created lazily by grpc-js, so this
// never fails; the first call reports an unreachable broker (gRPC status UNAVAILABLE).
function connect(address) {
  const pkg = loadPackage();
  const credentials = grpc.credentials.createInsecure();
  const brokerStub = new pkg.BrokerService(address, credentials);
  // Share the broker stub's channel so that one connection serves every service.
  const shared = { channelOverride: brokerStub.getChannel() };
  const adminStub = new pkg.AdminService(address, credentials, shared);
  const groupStub = new pkg.GroupService(address, credentials, shared);
  return {
    address,
    broker: promisify(brokerStub, BROKER_METHODS),
    admin: promisify(adminStub, ADMIN_METHODS),
    group: promisify(groupStub, GROUP_METHODS),
    close() {
      brokerStub.close();
    },
  };
}

// Split a bootstrap list "h1:p1,h2:p2" into addresses.
function parseBootstrap(bootstrap) {
  const addresses = String(bootstrap || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (addresses.length === 0) {
    throw new Error('--bootstrap needs at least one HOST:PORT');
  }
  return addresses;
}

// Metadata from the first bootstrap broker that answers; returns { client, metadata }.
// The caller closes the client.
async function bootstrapMetadata(bootstrap, request = {}) {
  let lastError = null;
  for (const address of parseBootstrap(bootstrap)) {
    const client = connect(address);
    try {
      const metadata = await client.broker.Metadata(request, { deadlineMs: 10000 });
      return { client, metadata };
    } catch (err) {
      lastError = err;
      client.close();
    }
  }
  throw new Error(`no bootstrap broker answered Metadata: ${lastError && lastError.message}`);
}

// "HOST:PORT" of a broker id in a MetadataResponse, or null when it is not listed.
function brokerAddress(metadata, brokerId) {
  const broker = (metadata.brokers || []).find((b) => b.broker_id === brokerId);
  return broker ? `${broker.host}:${broker.port}` : null;
}

module.exports = { connect, parseBootstrap, bootstrapMetadata, brokerAddress, loadPackage };
