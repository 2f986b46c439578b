'use strict';
// switchboard-client: the Node.js client web servers use to reach a
// Switchboard node over gRPC (switchboard.v1.SwitchboardService): emit
// events to the connected browsers, count them, and watch the count.

const crypto = require('node:crypto');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_PATH = path.join(__dirname, 'proto', 'switchboard', 'v1', 'switchboard.proto');
const DEFAULT_DEADLINE_MS = 5000;

// The delays between two attempts of one emit, and between two attempts
// to reopen a watch stream: doubling from the first to the last, with
// equal jitter, as the Go client does.
const EMIT_MIN_DELAY_MS = 50;
const EMIT_MAX_DELAY_MS = 2000;
const WATCH_MIN_DELAY_MS = 100;
const WATCH_MAX_DELAY_MS = 5000;

// The deepest nesting toValue follows; the node refuses data deeper than
// 32 levels itself, with a message naming its limit.
const MAX_DEPTH = 64;

// Codes a watch does not retry: retrying cannot help.
const PERMANENT = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNIMPLEMENTED,
]);

let serviceCache;
function loadService() {
  if (!serviceCache) {
    const def = protoLoader.loadSync(PROTO_PATH, {
      keepCase: true,
      longs: Number, // int64 recipients and connections, uint64 offsets arrive as numbers
      enums: String,
      defaults: true, // recipients: 0 is present rather than missing
      oneofs: true,
    });
    serviceCache = grpc.loadPackageDefinition(def).switchboard.v1.SwitchboardService;
  }
  return serviceCache;
}

// SwitchboardError is every failure of this client. code is the gRPC
// status code (compare with status.UNAVAILABLE and so on), codeName its
// name, details the node's message; cause is the gRPC error, if any.
class SwitchboardError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = 'SwitchboardError';
    this.code = code;
    this.codeName = grpc.status[code] || String(code);
    this.details = options && options.details !== undefined ? options.details : message;
  }
}

function fromGrpc(err, what) {
  const code = typeof err.code === 'number' ? err.code : grpc.status.UNKNOWN;
  const details = err.details || err.message;
  return new SwitchboardError(code, `failed to ${what}: ${grpc.status[code] || code}: ${details}`, { cause: err, details });
}

// toValue converts a JSON value to the object form proto-loader takes for
// google.protobuf.Value. A plain object such as {text: "hi"} passed as a
// Value would be encoded as an empty one, so browsers would receive null.
// It follows JSON.stringify: toJSON() is honoured, undefined, functions
// and symbols are dropped from objects and become null in arrays, and
// bigints become numbers; NaN and infinities are refused, as JSON cannot
// hold them.
function toValue(v, depth = 0) {
  if (depth > MAX_DEPTH) throw new TypeError(`data nests deeper than ${MAX_DEPTH} levels (or is circular)`);
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
      if (!Number.isFinite(v)) throw new TypeError(`data holds ${v}, which JSON cannot represent`);
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

// fromValue converts a google.protobuf.Value, as proto-loader decodes it,
// back to a JSON value.
function fromValue(v) {
  if (!v) return null;
  switch (v.kind) {
    case 'stringValue': return v.stringValue;
    case 'numberValue': return v.numberValue;
    case 'boolValue': return v.boolValue;
    case 'listValue': return ((v.listValue && v.listValue.values) || []).map(fromValue);
    case 'structValue': {
      const out = {};
      for (const [k, x] of Object.entries((v.structValue && v.structValue.fields) || {})) out[k] = fromValue(x);
      return out;
    }
    default: return null;
  }
}

// jittered returns a delay of d with equal jitter: between d/2 and d.
function jittered(d) {
  return d / 2 + Math.random() * (d / 2);
}

function backoff(min, max, failures) {
  return jittered(Math.min(max, min * 2 ** Math.min(failures, 16)));
}

// newKey returns a random 128-bit idempotency key.
function newKey() {
  return crypto.randomBytes(16).toString('base64url');
}

// sleep waits ms, or until signal aborts; it reports whether it slept.
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve(false);
    const done = (slept) => {
      clearTimeout(t);
      if (signal) signal.removeEventListener('abort', onAbort);
      resolve(slept);
    };
    const onAbort = () => done(false);
    const t = setTimeout(() => done(true), ms);
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
  });
}

function credentialsFor(options) {
  if (options.credentials) return options.credentials;
  const tls = options.tls;
  if (!tls) return grpc.credentials.createInsecure();
  if (tls === true) return grpc.credentials.createSsl();
  const buf = (x) => (x === undefined || x === null ? null : Buffer.from(x));
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TypeError('tls.cert and tls.key go together: a client certificate needs its key');
  }
  return grpc.credentials.createSsl(buf(tls.ca), buf(tls.key), buf(tls.cert));
}

// Client talks to one Switchboard target. Create it with connect.
class Client {
  constructor(target, options = {}) {
    if (typeof target !== 'string' || target === '') throw new TypeError('target must be a gRPC target such as "switchboard:9090"');
    this.target = target;
    this._token = options.token || '';
    this._deadlineMs = options.deadlineMs > 0 ? options.deadlineMs : DEFAULT_DEADLINE_MS;
    const channelOptions = {
      // grpc-js waits up to 120 s between reconnects by default: a node
      // restarted in seconds would stay unreachable for minutes.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 5000,
      ...(options.tls && options.tls.servername ? { 'grpc.ssl_target_name_override': options.tls.servername } : {}),
      ...options.channelOptions,
    };
    const Service = loadService();
    this._stub = new Service(target, credentialsFor(options), channelOptions);
    this._closed = new AbortController();
  }

  _metadata() {
    const md = new grpc.Metadata();
    if (this._token) md.set('authorization', `Bearer ${this._token}`);
    return md;
  }

  // _unary makes one call, cancelled when signal aborts or the client
  // closes.
  _unary(method, req, deadline, signal) {
    return new Promise((resolve, reject) => {
      const signals = [this._closed.signal, signal].filter(Boolean);
      let call;
      const cancel = () => call.cancel();
      call = this._stub[method](req, this._metadata(), { deadline }, (err, res) => {
        for (const s of signals) s.removeEventListener('abort', cancel);
        if (err) reject(err);
        else resolve(res);
      });
      for (const s of signals) s.addEventListener('abort', cancel, { once: true });
    });
  }

  _check(what, signal) {
    if (this._closed.signal.aborted) throw new SwitchboardError(grpc.status.CANCELLED, `failed to ${what}: client closed`);
    if (signal && signal.aborted) throw new SwitchboardError(grpc.status.CANCELLED, `failed to ${what}: aborted`, { cause: signal.reason });
  }

  // emit sends event with data to every browser, or to one channel's
  // subscribers. It retries UNAVAILABLE until the deadline, with one
  // idempotency key for every attempt.
  async emit(event, data, options = {}) {
    let value;
    try {
      value = toValue(data);
    } catch (err) {
      throw new SwitchboardError(grpc.status.INVALID_ARGUMENT, `failed to emit: invalid data: ${err.message}`, { cause: err });
    }
    const { channel = '', key = newKey(), signal } = options;
    const deadlineMs = options.deadlineMs > 0 ? options.deadlineMs : this._deadlineMs;
    const deadline = Date.now() + deadlineMs;
    const req = { event, data: value, channel, idempotency_key: key };
    for (let attempt = 0; ; attempt++) {
      this._check('emit', signal);
      let err;
      try {
        const res = await this._unary('EmitMessage', req, new Date(deadline), signal);
        return { id: res.id, recipients: Number(res.recipients), duplicate: Boolean(res.duplicate), offset: Number(res.offset) };
      } catch (e) {
        err = e;
      }
      this._check('emit', signal);
      if (err.code !== grpc.status.UNAVAILABLE) throw fromGrpc(err, 'emit');
      const delay = backoff(EMIT_MIN_DELAY_MS, EMIT_MAX_DELAY_MS, attempt);
      if (Date.now() + delay >= deadline) {
        const e = fromGrpc(err, 'emit');
        e.message += ` (still unavailable after ${deadlineMs} ms of retries)`;
        throw e;
      }
      await sleep(delay, anySignal(this._closed.signal, signal));
    }
  }

  // count resolves to the number of open browser connections, or to the
  // number of subscribers of channel.
  async count(channel = '', options = {}) {
    this._check('count', options.signal);
    const deadlineMs = options.deadlineMs > 0 ? options.deadlineMs : this._deadlineMs;
    try {
      const res = await this._unary('GetOnlineCount', { channel }, new Date(Date.now() + deadlineMs), options.signal);
      return Number(res.connections);
    } catch (err) {
      this._check('count', options.signal);
      throw fromGrpc(err, 'count');
    }
  }

  // watch calls fn with the count at once and then with every change,
  // reopening its stream whenever it breaks, until close().
  watch(channel, fn, options = {}) {
    if (typeof fn !== 'function') throw new TypeError('watch needs a function to call with each count');
    return new Watch(this, channel || '', fn, options);
  }

  // close closes the connection: calls in flight fail with CANCELLED and
  // every watch ends. Calling it again does nothing.
  close() {
    if (this._closed.signal.aborted) return;
    this._closed.abort();
    this._stub.close();
  }
}

// anySignal returns a signal that aborts when any of signals does.
function anySignal(...signals) {
  signals = signals.filter(Boolean);
  if (signals.length === 1) return signals[0];
  return AbortSignal.any(signals);
}

// Watch is one watched count; see Client.watch.
class Watch {
  constructor(client, channel, fn, options) {
    this._client = client;
    this._channel = channel;
    this._fn = fn;
    this._onError = options.onError;
    this._stop = new AbortController();
    this._signal = anySignal(this._stop.signal, client._closed.signal, options.signal);
    this._last = -1;
    this.done = this._run();
    this.done.catch(() => {}); // a permanent error is for whoever awaits done
  }

  // close stops the watch; done then resolves.
  close() {
    this._stop.abort();
  }

  async _run() {
    let failures = 0;
    while (!this._signal.aborted) {
      const { err, values } = await this._once();
      if (values > 0) failures = 0;
      if (this._signal.aborted) return;
      const e = fromGrpc(err, 'watch');
      if (PERMANENT.has(err.code)) throw e;
      const delay = backoff(WATCH_MIN_DELAY_MS, WATCH_MAX_DELAY_MS, failures);
      failures++;
      if (this._onError) {
        try { this._onError(e, { retryInMs: Math.round(delay) }); } catch { /* the watch goes on */ }
      }
      await sleep(delay, this._signal);
    }
  }

  // _once opens one stream and passes its values on until it breaks. It
  // resolves with the error that ended it and how many values it gave.
  _once() {
    return new Promise((resolve) => {
      let values = 0;
      let settled = false;
      const call = this._client._stub.WatchCount({ channel: this._channel }, this._client._metadata());
      const finish = (err) => {
        if (settled) return;
        settled = true;
        this._signal.removeEventListener('abort', cancel);
        call.cancel();
        resolve({ err, values });
      };
      const cancel = () => finish({ code: grpc.status.CANCELLED, details: 'watch closed' });
      this._signal.addEventListener('abort', cancel, { once: true });
      call.on('data', (res) => {
        values++;
        const n = Number(res.connections);
        if (n !== this._last) {
          this._last = n;
          try { this._fn(n); } catch (err) { process.nextTick(() => { throw err; }); }
        }
      });
      call.on('error', (err) => finish(err));
      call.on('end', () => finish({ code: grpc.status.UNAVAILABLE, details: 'the node ended the stream' }));
    });
  }
}

// mintToken returns an identity token for the browser of sub, a signed-in
// user: a JWT signed with HS256 and secret (the nodes'
// SWITCHBOARD_TOKEN_SECRET), valid for ttlSeconds. The page connects with
// it (Switchboard.connect(urls, {token})) and counts as sub on every node.
function mintToken(secret, sub, ttlSeconds = 300) {
  if (typeof secret !== 'string' && !(secret instanceof Uint8Array)) throw new TypeError('mintToken needs the secret as a string or bytes');
  if (secret.length === 0) throw new TypeError('mintToken needs a secret: set SWITCHBOARD_TOKEN_SECRET');
  const n = typeof sub === 'string' ? Buffer.byteLength(sub) : 0;
  if (n < 1 || n > 128) throw new TypeError('mintToken needs sub: 1 to 128 bytes');
  if (!(ttlSeconds > 0) || !Number.isFinite(ttlSeconds)) throw new TypeError('mintToken needs a positive ttlSeconds');
  const now = Math.floor(Date.now() / 1000);
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const data = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, iat: now, exp: now + Math.ceil(ttlSeconds) })}`;
  return `${data}.${crypto.createHmac('sha256', secret).update(data).digest('base64url')}`;
}

// connect returns a Client for target, a gRPC target such as
// "switchboard:9090" or "dns:///switchboard:9090". Like gRPC it does not
// connect at once: the first call does.
function connect(target, options) {
  return new Client(target, options);
}

module.exports = {
  connect,
  mintToken,
  Client,
  Watch,
  SwitchboardError,
  status: grpc.status,
  toValue,
  fromValue,
  PROTO_PATH,
};
