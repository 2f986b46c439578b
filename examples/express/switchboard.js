'use strict';
// The gRPC client this web server uses instead of an in-process socket.io
// server: EmitMessage to push to browsers, GetOnlineCount to count them.

const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_PROTO = path.resolve(__dirname, '../../proto/switchboard/v1/switchboard.proto');
const DEADLINE_MS = 5000;
// An emit that finds Switchboard unavailable (a fail-over in progress) is
// retried for this long, with the same idempotency key, so it is delivered
// once however many attempts it takes.
const RETRY_MS = 2000;

function loadService(protoPath) {
  const def = protoLoader.loadSync(protoPath, {
    keepCase: true,
    longs: Number, // int64 recipients/connections arrive as plain numbers
    enums: String,
    defaults: true, // recipients: 0 is present rather than missing
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def).switchboard.v1.SwitchboardService;
}

// toValue converts a JSON-able JS value into the object form proto-loader
// expects for google.protobuf.Value. Passing a plain object such as
// {text: "hi"} as a Value does NOT work: protobufjs ignores the unknown key
// and the browser receives data: null. Conversion follows JSON.stringify:
// toJSON() is honoured, undefined and functions are dropped from objects and
// become null in arrays, and non-finite numbers are rejected.
function toValue(v, depth = 0) {
  if (depth > 64) throw new TypeError('data nests too deeply (or is circular)');
  if (v !== null && typeof v === 'object' && typeof v.toJSON === 'function') v = v.toJSON();
  if (v === null || v === undefined || typeof v === 'function' || typeof v === 'symbol') {
    return { nullValue: 'NULL_VALUE' };
  }
  switch (typeof v) {
    case 'string':
      return { stringValue: v };
    case 'boolean':
      return { boolValue: v };
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError('data holds a number JSON cannot represent: ' + v);
      return { numberValue: v };
    case 'bigint':
      return { numberValue: Number(v) };
  }
  if (Array.isArray(v)) return { listValue: { values: v.map((x) => toValue(x, depth + 1)) } };
  const fields = {};
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined || typeof x === 'function' || typeof x === 'symbol') continue;
    fields[k] = toValue(x, depth + 1);
  }
  return { structValue: { fields } };
}

// fromValue is the inverse, for completeness and tests.
function fromValue(v) {
  if (!v) return null;
  switch (v.kind) {
    case 'stringValue': return v.stringValue;
    case 'numberValue': return v.numberValue;
    case 'boolValue': return v.boolValue;
    case 'listValue': return (v.listValue.values || []).map(fromValue);
    case 'structValue': {
      const out = {};
      for (const [k, x] of Object.entries(v.structValue.fields || {})) out[k] = fromValue(x);
      return out;
    }
    default: return null;
  }
}

// SwitchboardError carries the HTTP status a route should answer with.
class SwitchboardError extends Error {
  constructor(status, message, grpcCode) {
    super(message);
    this.status = status;
    this.grpcCode = grpcCode;
  }
}

// httpError maps a gRPC failure to an HTTP status and a message a caller of
// this web server can act on.
function httpError(err, target) {
  const C = grpc.status;
  const detail = err.details || err.message;
  switch (err.code) {
    case C.UNAVAILABLE:
      return new SwitchboardError(503, `Switchboard at ${target} is unavailable: ${detail}`, err.code);
    case C.DEADLINE_EXCEEDED:
      return new SwitchboardError(503, `Switchboard at ${target} did not answer within ${DEADLINE_MS / 1000} s`, err.code);
    case C.INVALID_ARGUMENT:
      return new SwitchboardError(400, `Switchboard rejected the message: ${detail}`, err.code);
    case C.UNAUTHENTICATED:
      return new SwitchboardError(502, 'Switchboard refused this web server\'s API token: check SWITCHBOARD_API_TOKEN on the web server', err.code);
    default:
      return new SwitchboardError(502, `Switchboard call failed (${C[err.code] || err.code}): ${detail}`, err.code);
  }
}

// createClient returns {emit, count, close} bound to one Switchboard.
function createClient({ target = '127.0.0.1:9090', token = '', protoPath = DEFAULT_PROTO } = {}) {
  const Service = loadService(protoPath);
  const stub = new Service(target, grpc.credentials.createInsecure(), {
    // grpc-js backs off up to 120 s between reconnects by default, so a
    // restarted Switchboard would stay "unavailable" to this server for
    // minutes. Retry at least every 5 s instead.
    'grpc.initial_reconnect_backoff_ms': 500,
    'grpc.max_reconnect_backoff_ms': 5000,
  });

  function attempt(method, req, deadline) {
    const md = new grpc.Metadata();
    if (token) md.set('authorization', `Bearer ${token}`);
    return new Promise((resolve, reject) => {
      stub[method](req, md, { deadline }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  async function call(method, req) {
    try {
      return await attempt(method, req, new Date(Date.now() + DEADLINE_MS));
    } catch (err) {
      throw httpError(err, target);
    }
  }

  return {
    // emit sends event with data (any JSON value) to every browser, or to
    // the subscribers of channel. It retries UNAVAILABLE for RETRY_MS with
    // one idempotency key (opts.key, or a random one), so a retry is never
    // a second delivery. Resolves to {id, recipients, duplicate}.
    async emit(event, data, channel = '', opts = {}) {
      const req = { event, data: toValue(data), channel, idempotency_key: opts.key || crypto.randomUUID() };
      const deadline = new Date(Date.now() + DEADLINE_MS);
      const giveUp = Date.now() + RETRY_MS;
      for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
        try {
          const res = await attempt('EmitMessage', req, deadline);
          return { id: res.id, recipients: Number(res.recipients), duplicate: Boolean(res.duplicate) };
        } catch (err) {
          if (err.code !== grpc.status.UNAVAILABLE || Date.now() + delay > giveUp) throw httpError(err, target);
          await new Promise((r) => setTimeout(r, delay / 2 + Math.random() * delay / 2));
        }
      }
    },
    // count resolves to the number of open browser connections.
    async count(channel = '') {
      const res = await call('GetOnlineCount', { channel });
      return Number(res.connections);
    },
    close() {
      stub.close();
    },
  };
}

module.exports = { createClient, toValue, fromValue, SwitchboardError, DEFAULT_PROTO };
