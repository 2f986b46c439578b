'use strict';
// The package against a real Switchboard binary (built from the
// repository, or SWITCHBOARD_BIN): node --test, from clients/node.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const { connect, mintToken, status, SwitchboardError, PROTO_PATH } = require('..');
const h = require('./helpers');

// certificates makes a CA, a certificate for 127.0.0.1 and localhost that
// serves and authenticates clients, both signed by it, with openssl.
async function certificates() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-node-tls-'));
  h.cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
  const f = (name) => path.join(dir, name);
  const openssl = (...args) => promisify(execFile)('openssl', args, { cwd: dir });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=test-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  fs.writeFileSync(f('leaf.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n');
  await openssl('req', '-new', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=switchboard');
  await openssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1',
    '-out', 'leaf.pem', '-extfile', 'leaf.ext');
  return { dir, ca: f('ca.pem'), cert: f('leaf.pem'), key: f('leaf.key') };
}

// recordingServer is a gRPC server of the same service that answers
// EmitMessage from answers, in turn, recording every request: it shows
// what the client sends across its retries, which a real node cannot.
async function recordingServer(answers) {
  const def = protoLoader.loadSync(PROTO_PATH, { keepCase: true, longs: Number, defaults: true, oneofs: true });
  const { SwitchboardService } = grpc.loadPackageDefinition(def).switchboard.v1;
  const server = new grpc.Server();
  const requests = [];
  server.addService(SwitchboardService.service, {
    EmitMessage(call, cb) {
      requests.push({ req: call.request, at: Date.now(), auth: call.metadata.get('authorization') });
      const a = answers[Math.min(requests.length, answers.length) - 1];
      if (a.code) cb({ code: a.code, details: a.details || 'recorded' });
      else cb(null, { id: call.request.idempotency_key, recipients: 1, duplicate: false });
    },
  });
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
    (err, p) => (err ? reject(err) : resolve(p))));
  h.cleanups.push(() => new Promise((r) => server.tryShutdown(r)));
  return { target: `127.0.0.1:${port}`, requests };
}

describe('switchboard-client against a real node', () => {
  let node;
  let sb;

  before(async () => {
    node = await h.startSwitchboard();
    sb = connect(node.grpc);
    h.cleanups.push(async () => sb.close());
  });
  after(h.cleanup);

  it('mints tokens a node with the same secret takes, and one with another refuses', async () => {
    const node = await h.startSwitchboard({ SWITCHBOARD_TOKEN_SECRET: 'site-secret', SWITCHBOARD_REQUIRE_TOKEN: 'true' });
    const sb = connect(node.grpc);
    h.cleanups.push(async () => sb.close());
    const tok = mintToken('site-secret', 'user-1', 60);
    assert.equal(await upgrade(`http://${node.http}/ws?token=${tok}`), 101);
    assert.equal(await upgrade(`http://${node.http}/ws?token=${mintToken('another', 'user-1', 60)}`), 401);
    assert.equal(await upgrade(`http://${node.http}/ws?visitor=user-1`), 401, 'tokens are required');
    await h.eventually('the node to count the one with a token', async () => (await sb.count()) === 1);
  });

  it('refuses what no node could take', () => {
    assert.throws(() => mintToken('', 'u'), TypeError);
    assert.throws(() => mintToken('s', ''), TypeError);
    assert.throws(() => mintToken('s', 'x'.repeat(129)), TypeError);
    assert.throws(() => mintToken('s', 'u', 0), TypeError);
    const [head, body] = mintToken('s', 'u', 60).split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url')));
    assert.deepEqual(head, { alg: 'HS256', typ: 'JWT' });
    assert.equal(body.sub, 'u');
    assert.ok(body.exp - body.iat === 60);
  });

  it('emits to every browser and counts them', async () => {
    const a = await h.Browser.open(node.http);
    const b = await h.Browser.open(node.http);
    assert.equal(await sb.count(), 2);
    const res = await sb.emit('ShowMessage', { text: 'hi' });
    assert.equal(res.recipients, 2);
    assert.equal(res.duplicate, false);
    assert.match(res.id, /^[A-Za-z0-9_-]{22}$/, 'a random 128-bit key is the id');
    assert.ok(Number.isSafeInteger(res.offset) && res.offset > 0, `offset ${res.offset}: a position in the log`);
    for (const browser of [a, b]) {
      const { type, id, offset, event, channel, data } = await browser.next((f) => f.type === 'message');
      assert.deepEqual({ type, id, offset, event, channel, data },
        { type: 'message', id: res.id, offset: res.offset, event: 'ShowMessage', channel: '', data: { text: 'hi' } });
    }
    assert.equal((await sb.emit('ShowMessage', 'next')).offset, res.offset + 1, 'offsets grow by one per message');
    await Promise.all([a.close(), b.close()]);
    await h.eventually('count back to 0', async () => (await sb.count()) === 0);
  });

  it('emits to one channel and counts its subscribers', async () => {
    const quotes = await h.Browser.open(node.http, ['quotes']);
    const other = await h.Browser.open(node.http);
    await h.eventually('subscription counted', async () => (await sb.count('quotes')) === 1);
    const res = await sb.emit('Quote', { text: 'Eppur si muove.' }, { channel: 'quotes' });
    assert.equal(res.recipients, 1);
    assert.deepEqual((await quotes.next((f) => f.type === 'message')).channel, 'quotes');
    await sb.emit('ShowMessage', 'marker');
    assert.equal((await other.next((f) => f.type === 'message')).data, 'marker');
    assert.deepEqual(other.messages(), []);
    await Promise.all([quotes.close(), other.close()]);
  });

  it('sends any JSON value as data, as JSON.stringify would', async () => {
    const browser = await h.Browser.open(node.http);
    const values = [{ s: 'x', n: -1.5, t: true, z: null, list: [1, 'two', [3], { four: 4 }], nested: { a: { b: {} } } },
      'plain', 7, false, null, [], 'héllo 👋 "quoted" </script>\u2028'];
    for (const v of values) {
      const { id } = await sb.emit('Test', v);
      const f = await browser.next((x) => x.type === 'message');
      assert.equal(f.id, id);
      assert.deepEqual(f.data, v);
    }
    await sb.emit('Test', { a: undefined, b: 1n, d: new Date(0), f() {} });
    assert.deepEqual((await browser.next((x) => x.type === 'message')).data, { b: 1, d: '1970-01-01T00:00:00.000Z' });
    await sb.emit('Test');
    assert.equal((await browser.next((x) => x.type === 'message')).data, null);
    await browser.close();
  });

  it('refuses data JSON cannot hold, locally, with INVALID_ARGUMENT', async () => {
    const circular = {};
    circular.self = circular;
    for (const data of [NaN, { x: Infinity }, circular]) {
      await assert.rejects(sb.emit('Test', data), (err) => err instanceof SwitchboardError && err.code === status.INVALID_ARGUMENT);
    }
  });

  it('passes the node\'s INVALID_ARGUMENT on, without retrying', async () => {
    const start = Date.now();
    await assert.rejects(sb.emit('', 'x'), (err) => err.code === status.INVALID_ARGUMENT && err.codeName === 'INVALID_ARGUMENT' && /event is required/.test(err.details));
    await assert.rejects(sb.emit('E', 'x', { channel: 'a b' }), (err) => err.code === status.INVALID_ARGUMENT && /invalid channel/.test(err.message));
    await assert.rejects(sb.count('a b'), (err) => err.code === status.INVALID_ARGUMENT);
    assert.ok(Date.now() - start < 2000);
  });

  it('makes a repeated idempotency key a duplicate, not a second delivery', async () => {
    const browser = await h.Browser.open(node.http);
    const first = await sb.emit('Test', 'once', { key: 'node-client-key-1' });
    assert.deepEqual(first, { id: 'node-client-key-1', recipients: 1, duplicate: false, offset: first.offset });
    assert.ok(first.offset > 0);
    assert.deepEqual(await sb.emit('Test', 'once', { key: 'node-client-key-1' }), { ...first, duplicate: true }, 'the first emit\'s id and offset');
    await sb.emit('Test', 'marker');
    assert.equal((await browser.next((f) => f.type === 'message')).data, 'once');
    assert.equal((await browser.next((f) => f.type === 'message')).data, 'marker');
    await browser.close();
  });

  it('watches the count through a restart of the node', async () => {
    const addrs = { http: `127.0.0.1:${await h.freePort()}`, grpc: `127.0.0.1:${await h.freePort()}` };
    let restartable = await h.startSwitchboard({}, addrs);
    const client = connect(addrs.grpc);
    h.cleanups.push(async () => client.close());
    const seen = [];
    const errors = [];
    const w = client.watch('', (n) => seen.push(n), { onError: (err, info) => errors.push({ code: err.code, ...info }) });
    await h.eventually('the first value', () => seen.length === 1);
    assert.deepEqual(seen, [0]);
    await h.Browser.open(addrs.http);
    await h.eventually('the browser counted', () => seen.at(-1) === 1);

    await h.stopChild(restartable.proc, 'SIGKILL');
    restartable = await h.startSwitchboard({}, addrs);
    await h.eventually('a value from the new node', () => seen.at(-1) === 0, 15000);
    await h.Browser.open(addrs.http);
    await h.eventually('the browser on the new node counted', () => seen.at(-1) === 1);
    assert.deepEqual(seen, [0, 1, 0, 1]);
    assert.ok(errors.length >= 1 && errors.every((e) => e.code === status.UNAVAILABLE && e.retryInMs >= 0), JSON.stringify(errors));

    w.close();
    await w.done;
    const before = seen.length;
    await h.Browser.open(addrs.http);
    await h.sleep(300);
    assert.equal(seen.length, before, 'no value after close');
  });

  it('watches one channel, and ends a watch retrying cannot help', async () => {
    const seen = [];
    const w = sb.watch('news', (n) => seen.push(n));
    await h.eventually('the first value', () => seen.length === 1);
    const b = await h.Browser.open(node.http, ['news']);
    await h.eventually('the subscriber counted', () => seen.at(-1) === 1);
    await b.close();
    await h.eventually('the subscriber gone', () => seen.at(-1) === 0);
    w.close();
    await w.done;

    const bad = sb.watch('a b', () => assert.fail('no value for an invalid channel'));
    await assert.rejects(bad.done, (err) => err.code === status.INVALID_ARGUMENT);
  });

  it('retries an emit while the node is down, until it is up', async () => {
    const addrs = { http: `127.0.0.1:${await h.freePort()}`, grpc: `127.0.0.1:${await h.freePort()}` };
    const client = connect(addrs.grpc);
    h.cleanups.push(async () => client.close());
    const start = Date.now();
    const pending = client.emit('Test', 'late', { deadlineMs: 20000 });
    await h.sleep(700);
    await h.startSwitchboard({}, addrs);
    const res = await pending;
    assert.equal(res.duplicate, false);
    assert.ok(Date.now() - start >= 700, 'resolved only once the node was up');
  });

  it('gives up at the deadline, and on a node that does not answer', async () => {
    const port = await h.freePort(); // nobody listens
    const down = connect(`127.0.0.1:${port}`, { deadlineMs: 800 });
    h.cleanups.push(async () => down.close());
    let start = Date.now();
    await assert.rejects(down.emit('Test', 1), (err) => err.code === status.UNAVAILABLE && /still unavailable after 800 ms/.test(err.message));
    let took = Date.now() - start;
    assert.ok(took >= 400 && took < 3000, `emit took ${took} ms`);

    // A TCP server that accepts and never speaks HTTP/2.
    const sockets = new Set();
    const mute = net.createServer((s) => { sockets.add(s); s.on('error', () => {}); });
    await new Promise((r) => mute.listen(0, '127.0.0.1', r));
    h.cleanups.push(async () => { for (const s of sockets) s.destroy(); await new Promise((r) => mute.close(r)); });
    const silent = connect(`127.0.0.1:${mute.address().port}`);
    h.cleanups.push(async () => silent.close());
    start = Date.now();
    await assert.rejects(silent.count('', { deadlineMs: 700 }), (err) => err.code === status.DEADLINE_EXCEEDED);
    took = Date.now() - start;
    assert.ok(took >= 600 && took < 3000, `count took ${took} ms`);
  });

  it('cancels a call when its signal aborts, and every call once closed', async () => {
    const port = await h.freePort();
    const down = connect(`127.0.0.1:${port}`);
    const ac = new AbortController();
    const pending = down.emit('Test', 1, { signal: ac.signal, deadlineMs: 30000 });
    setTimeout(() => ac.abort(), 200);
    const start = Date.now();
    await assert.rejects(pending, (err) => err.code === status.CANCELLED);
    assert.ok(Date.now() - start < 2000);

    const w = down.watch('', () => {});
    const late = down.emit('Test', 1, { deadlineMs: 30000 });
    setTimeout(() => down.close(), 200);
    await assert.rejects(late, (err) => err.code === status.CANCELLED && /client closed/.test(err.message));
    await w.done; // resolves: closed, not failed
    await assert.rejects(down.count(), (err) => err.code === status.CANCELLED);
  });

  it('sends one idempotency key across the retries of one emit', async () => {
    const srv = await recordingServer([{ code: status.UNAVAILABLE }, { code: status.UNAVAILABLE }, {}]);
    const client = connect(srv.target, { token: 't0ken' });
    h.cleanups.push(async () => client.close());
    const res = await client.emit('E', 1);
    assert.equal(srv.requests.length, 3);
    const keys = new Set(srv.requests.map((r) => r.req.idempotency_key));
    assert.equal(keys.size, 1, `keys: ${[...keys]}`);
    assert.equal(res.id, [...keys][0]);
    assert.deepEqual(srv.requests.map((r) => r.auth), [['Bearer t0ken'], ['Bearer t0ken'], ['Bearer t0ken']]);
    assert.ok(srv.requests[1].at - srv.requests[0].at >= 25, 'waits between attempts');

    // A second emit has a key of its own; a refusal other than
    // UNAVAILABLE is not retried.
    const refusing = await recordingServer([{ code: status.RESOURCE_EXHAUSTED, details: 'emit rate limit exceeded' }]);
    const c2 = connect(refusing.target);
    h.cleanups.push(async () => c2.close());
    await assert.rejects(c2.emit('E', 1), (err) => err.code === status.RESOURCE_EXHAUSTED && err.details === 'emit rate limit exceeded');
    await assert.rejects(c2.emit('E', 1), (err) => err.code === status.RESOURCE_EXHAUSTED);
    assert.equal(refusing.requests.length, 2);
    assert.notEqual(refusing.requests[0].req.idempotency_key, refusing.requests[1].req.idempotency_key);
  });

  it('sends the token a node requires', async () => {
    const secured = await h.startSwitchboard({ SWITCHBOARD_API_TOKEN: 'right-token' });
    for (const token of [undefined, 'wrong-token']) {
      const c = connect(secured.grpc, { token });
      const start = Date.now();
      await assert.rejects(c.emit('E', 1), (err) => err.code === status.UNAUTHENTICATED);
      await assert.rejects(c.count(), (err) => err.code === status.UNAUTHENTICATED);
      await assert.rejects(c.watch('', () => {}).done, (err) => err.code === status.UNAUTHENTICATED);
      assert.ok(Date.now() - start < 3000, 'UNAUTHENTICATED is not retried');
      c.close();
    }
    const c = connect(secured.grpc, { token: 'right-token' });
    h.cleanups.push(async () => c.close());
    assert.equal((await c.emit('E', 1)).recipients, 0);
    assert.equal(await c.count(), 0);
  });

  it('speaks TLS, with a client certificate where the node asks for one', async () => {
    const certs = await certificates();
    const tlsEnv = { SWITCHBOARD_TLS_CERT: certs.cert, SWITCHBOARD_TLS_KEY: certs.key, SWITCHBOARD_API_TOKEN: 'tls-token' };
    const secure = await h.startSwitchboard(tlsEnv);
    const ca = fs.readFileSync(certs.ca);

    const good = connect(secure.grpc, { tls: { ca }, token: 'tls-token' });
    h.cleanups.push(async () => good.close());
    assert.equal(await good.count(), 0);
    const byName = connect(`localhost:${secure.grpc.split(':')[1]}`, { tls: { ca: certs.ca && fs.readFileSync(certs.ca, 'utf8') }, token: 'tls-token' });
    h.cleanups.push(async () => byName.close());
    assert.equal((await byName.emit('E', 1)).recipients, 0);
    for (const opts of [{}, { tls: true }]) { // plaintext; system roots, which do not hold the test CA
      const bad = connect(secure.grpc, { ...opts, token: 'tls-token', deadlineMs: 1000 });
      await assert.rejects(bad.count(), (err) => err.code === status.UNAVAILABLE, JSON.stringify(opts));
      bad.close();
    }

    const mutual = await h.startSwitchboard({ ...tlsEnv, SWITCHBOARD_GRPC_CLIENT_CA: certs.ca });
    const withCert = connect(mutual.grpc, { tls: { ca, cert: fs.readFileSync(certs.cert), key: fs.readFileSync(certs.key) }, token: 'tls-token' });
    h.cleanups.push(async () => withCert.close());
    assert.equal(await withCert.count(), 0);
    const withoutCert = connect(mutual.grpc, { tls: { ca }, token: 'tls-token', deadlineMs: 1000 });
    await assert.rejects(withoutCert.count(), (err) => err.code === status.UNAVAILABLE);
    withoutCert.close();
    assert.throws(() => connect(mutual.grpc, { tls: { ca, cert: fs.readFileSync(certs.cert) } }), /tls.cert and tls.key go together/);
  });

  it('refuses a bad target or watch callback at once', () => {
    assert.throws(() => connect(''), TypeError);
    assert.throws(() => sb.watch('', null), TypeError);
  });
});

// upgrade opens a WebSocket upgrade to url by hand and resolves to the
// HTTP status: 101 when the node took it (the socket then stays open
// until the test ends).
function upgrade(url) {
  const http = require('node:http');
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: {
      Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
      'Sec-WebSocket-Key': require('node:crypto').randomBytes(16).toString('base64'),
    } });
    req.on('upgrade', (res, socket) => {
      h.cleanups.push(async () => socket.destroy());
      resolve(res.statusCode);
    });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', reject);
  });
}
