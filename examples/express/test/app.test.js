'use strict';
// End-to-end test of the express example against a real Switchboard binary:
// node --test (from examples/express). SWITCHBOARD_BIN skips the go build.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const vm = require('node:vm');
const WebSocket = require('ws');

const { createApp } = require('../app');
const { Chromium, chromiumBin } = require('./chromium');

const REPO_ROOT = path.resolve(__dirname, '../../..');
const SERVER_JS = path.resolve(__dirname, '../server.js');

// ---- process and port helpers ------------------------------------------

const children = new Set();
const cleanups = []; // async functions run by the suite's after hook, last first

// Backstops for when the after hook cannot run: the runner or a closed
// output pipe ending this process must not leave Switchboards behind.
function killChildren() {
  for (const c of children) try { c.kill('SIGKILL'); } catch { /* gone */ }
}
process.on('exit', killChildren);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killChildren();
    process.kill(process.pid, sig);
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// cleanEnv is the parent's environment without SWITCHBOARD_* settings that
// would change what the child does.
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('SWITCHBOARD_') && k !== 'QUOTES_URL' && k !== 'PORT' && k !== 'LISTEN_ADDR') env[k] = v;
  }
  return { ...env, ...extra };
}

// On Linux, children get SIGKILL when this process dies, even by a signal
// no handler sees (a closed output pipe can take node --test down that way).
const SETPRIV = process.platform === 'linux' && ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

function startChild(cmd, args, env) {
  if (SETPRIV) [cmd, args] = [SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args]];
  const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  proc.output = '';
  proc.stdout.on('data', (d) => { proc.output += d; });
  proc.stderr.on('data', (d) => { proc.output += d; });
  proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
    children.delete(proc);
    resolve({ code, signal });
  }));
  return proc;
}

async function stopChild(proc, signal = 'SIGKILL') {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill(signal);
  await proc.exited;
}

// waitHTTP polls url until it answers 200, failing early if proc exits.
async function waitHTTP(url, proc, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (proc && (proc.exitCode !== null || proc.signalCode !== null)) {
      throw new Error(`process exited (${proc.exitCode ?? proc.signalCode}) before ${url} was ready:\n${proc.output}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err.message;
    }
    await sleep(50);
  }
  throw new Error(`${url} not ready within ${timeoutMs} ms (${last})${proc ? `:\n${proc.output}` : ''}`);
}

let switchboardBin;

async function buildSwitchboard() {
  if (process.env.SWITCHBOARD_BIN) return path.resolve(process.env.SWITCHBOARD_BIN);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-express-'));
  cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'switchboard');
  try {
    await promisify(execFile)('go', ['build', '-o', bin, './cmd/switchboard'], { cwd: REPO_ROOT, timeout: 120000 });
  } catch (err) {
    throw new Error(`go build ./cmd/switchboard failed in ${REPO_ROOT}:\n${err.stderr || err.message}`);
  }
  return bin;
}

// startSwitchboard runs the binary on free loopback ports and waits for
// /readyz. It retries when a port was taken between probe and bind.
async function startSwitchboard(extraEnv = {}) {
  for (let attempt = 1; ; attempt++) {
    const httpPort = await freePort();
    const grpcPort = await freePort();
    const proc = startChild(switchboardBin, [], cleanEnv({
      SWITCHBOARD_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      SWITCHBOARD_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      SWITCHBOARD_LOG_LEVEL: 'warn',
      ...extraEnv,
    }));
    try {
      await waitHTTP(`http://127.0.0.1:${httpPort}/readyz`, proc);
      return { proc, http: `127.0.0.1:${httpPort}`, grpc: `127.0.0.1:${grpcPort}` };
    } catch (err) {
      await stopChild(proc);
      if (attempt >= 3 || !/address already in use/.test(err.message)) throw err;
    }
  }
}

// listen serves an in-process express app on a free port.
async function listen(app, port = 0) {
  const server = await new Promise((resolve, reject) => {
    const s = http.createServer(app);
    s.on('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    app.locals.switchboard.close();
  });
  return `http://127.0.0.1:${server.address().port}`;
}

async function post(base, p, body, headers = { 'content-type': 'application/json' }) {
  const res = await fetch(base + p, {
    method: 'POST',
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body ?? {}),
    signal: AbortSignal.timeout(15000),
  });
  return { status: res.status, body: await res.json() };
}

async function get(base, p) {
  const res = await fetch(base + p, { signal: AbortSignal.timeout(15000) });
  const text = await res.text();
  let body = text;
  try { body = JSON.parse(text); } catch { /* html or text */ }
  return { status: res.status, body, type: res.headers.get('content-type') };
}

// ---- a WebSocket client standing in for a browser ----------------------

// Like a browser, it sends the Origin of the page it was loaded from
// (browserOrigin), which Switchboard must be told to allow.
let browserOrigin;

class Browser {
  static async open(addr, channels = []) {
    const b = new Browser(new WebSocket(`ws://${addr}/ws`, { origin: browserOrigin }));
    cleanups.push(async () => b.close());
    await b.next((f) => f.type === 'count', 5000); // registered by now
    for (const channel of channels) b.ws.send(JSON.stringify({ type: 'subscribe', channel }));
    return b;
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.waiters = [];
    this.closed = false;
    ws.on('message', (data) => {
      this.frames.push(JSON.parse(data.toString()));
      this.wake();
    });
    ws.on('close', () => { this.closed = true; this.wake(); });
    ws.on('error', (err) => { this.error = err; this.wake(); });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  // next removes and returns the first frame matching pred, failing after
  // timeoutMs.
  async next(pred, timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (this.error) throw this.error;
      if (this.closed) throw new Error('WebSocket closed while waiting for a frame');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames)}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  // nextMessage returns the next message frame, whatever its event,
  // without its offset, which it checks: an integer that grows.
  async nextMessage(timeoutMs) {
    const { offset, ...frame } = await this.next((f) => f.type === 'message', timeoutMs);
    assert.ok(Number.isInteger(offset) && offset > (this.lastOffset || 0), `offset ${offset} after ${this.lastOffset}`);
    this.lastOffset = offset;
    return frame;
  }

  async close() {
    if (this.closed) return;
    const closed = new Promise((r) => this.ws.once('close', r));
    this.ws.close();
    await Promise.race([closed, sleep(1000)]);
    this.ws.terminate();
  }
}

// ---- the tests ---------------------------------------------------------

describe('express example against a real Switchboard', () => {
  let sb; // the Switchboard the in-process app talks to
  let web; // base URL of the in-process app

  before(async () => {
    switchboardBin = await buildSwitchboard();
    // The page is served by the app, so browsers send its origin; the app's
    // port is chosen first so Switchboard can allow it, as in production.
    const webPort = await freePort();
    browserOrigin = `http://127.0.0.1:${webPort}`;
    sb = await startSwitchboard({ SWITCHBOARD_ALLOWED_ORIGINS: browserOrigin });
    // The app reads process.env: SWITCHBOARD_ADDR once, the public URLs and
    // QUOTES_URL on every request.
    for (const k of ['SWITCHBOARD_API_TOKEN', 'QUOTES_URL']) delete process.env[k];
    process.env.SWITCHBOARD_ADDR = sb.grpc;
    process.env.SWITCHBOARD_PUBLIC_URLS = `ws://${sb.http}/ws`;
    web = await listen(createApp(), webPort);
    assert.equal(web, browserOrigin);
  });

  after(async () => {
    for (const fn of cleanups.reverse()) {
      try { await fn(); } catch { /* keep cleaning */ }
    }
    await Promise.all([...children].map((c) => stopChild(c)));
  });

  it('gives each browser an identity token for the visitor its cookie names', async () => {
    const secret = 'express-test-secret';
    const app = await listen(createApp({ env: { SWITCHBOARD_ADDR: sb.grpc, SWITCHBOARD_TOKEN_SECRET: secret } }));
    const token = async (cookie) => {
      const res = await fetch(`${app}/api/token`, { headers: cookie ? { cookie } : {}, signal: AbortSignal.timeout(15000) });
      assert.equal(res.status, 200);
      const tok = await res.text();
      const [head, body, sig] = tok.split('.');
      const want = require('node:crypto').createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
      assert.equal(sig, want, 'signed with HS256 and the secret');
      const claims = JSON.parse(Buffer.from(body, 'base64url'));
      assert.ok(claims.exp > Date.now() / 1000, 'not expired');
      return { sub: claims.sub, cookie: (res.headers.get('set-cookie') || '').split(';')[0] };
    };
    const first = await token();
    assert.match(first.sub, /^visitor-[0-9a-f]{24}$/);
    assert.match(first.cookie, /^visitor=/);
    assert.equal((await token(first.cookie)).sub, first.sub, 'the same browser, the same visitor');
    assert.notEqual((await token()).sub, first.sub, 'another browser, another visitor');
    const page = await get(app, '/');
    assert.ok(page.body.includes('"token":true'), 'the page asks for its token');
    assert.equal((await get(web, '/api/token')).status, 404, 'no secret, no tokens');
  });

  it('serves /healthz', async () => {
    const res = await get(web, '/healthz');
    assert.equal(res.status, 200);
  });

  it('renders the public URLs from the environment at request time', async (t) => {
    process.env.SWITCHBOARD_PUBLIC_URLS = 'wss://rt1.example.com/ws, wss://rt2.example.com/ws';
    let page = await get(web, '/');
    assert.equal(page.status, 200);
    assert.match(page.type, /text\/html/);
    assert.ok(page.body.includes('{"urls":["wss://rt1.example.com/ws","wss://rt2.example.com/ws"]}'), page.body);
    assert.ok(page.body.includes('<script src="https://rt1.example.com/client.js"></script>'));
    for (const id of ['online-count', 'state', 'message']) assert.ok(page.body.includes(`data-testid="${id}"`), id);
    // The inline script at least parses.
    const inline = [...page.body.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
    assert.equal(inline.length, 1);
    new vm.Script(inline[0]); // eslint-disable-line no-new
    assert.deepEqual((await get(web, '/config.json')).body, { urls: ['wss://rt1.example.com/ws', 'wss://rt2.example.com/ws'] });

    // A second request sees the changed environment, escaped for HTML.
    process.env.SWITCHBOARD_PUBLIC_URLS = 'ws://other.test:8080/ws?x=</script><b>';
    page = await get(web, '/');
    assert.ok(page.body.includes('{"urls":["ws://other.test:8080/ws?x=\\u003c/script\\u003e\\u003cb\\u003e"]}'), page.body);
    assert.ok(!page.body.includes('x=</script>'));
    assert.ok(!page.body.includes('rt1.example.com'));
    assert.ok(page.body.includes('<script src="http://other.test:8080/client.js"></script>'));
    assert.deepEqual((await get(web, '/config.json')).body, { urls: ['ws://other.test:8080/ws?x=</script><b>'] });

    // Pointed at the real node, the page's script is Switchboard's client.
    process.env.SWITCHBOARD_PUBLIC_URLS = `ws://${sb.http}/ws`;
    page = await get(web, '/');
    const src = page.body.match(/<script src="([^"]+)">/)[1];
    assert.equal(src, `http://${sb.http}/client.js`);
    const script = await get(src, '');
    if (script.status === 404) {
      t.diagnostic(`${src} is 404: this Switchboard build does not serve client.js yet`);
    } else {
      assert.equal(script.status, 200);
      assert.match(script.body, /Switchboard/);
    }
  });

  it('delivers POST /api/messages to a browser and counts it online', async () => {
    const browser = await Browser.open(sb.http);
    assert.deepEqual((await get(web, '/api/online')).body, { connections: 1 });

    const res = await post(web, '/api/messages', { text: 'hello' });
    assert.equal(res.status, 200);
    assert.equal(res.body.recipients, 1);
    assert.equal(typeof res.body.id, 'string');
    const frame = await browser.nextMessage();
    assert.deepEqual(frame, { type: 'message', id: res.body.id, event: 'ShowMessage', channel: '', data: { text: 'hello' } });

    // Text survives the trip through google.protobuf.Value unchanged.
    const text = 'héllo 👋 "quoted" <b>&amp;</b>\n\\ ' + 'x'.repeat(1900);
    const res2 = await post(web, '/api/messages', { text });
    assert.equal(res2.status, 200);
    assert.deepEqual((await browser.nextMessage()).data, { text });

    await browser.close();
    const deadline = Date.now() + 3000;
    while ((await get(web, '/api/online')).body.connections !== 0) {
      assert.ok(Date.now() < deadline, 'count did not return to 0 after the browser left');
      await sleep(50);
    }
  });

  it('converts any JSON value to google.protobuf.Value', async () => {
    const browser = await Browser.open(sb.http);
    const data = { s: 'x', n: -1.5, i: 42, t: true, f: false, z: null, list: [1, 'two', [3], { four: 4 }, null], nested: { a: { b: {} } }, empty: [] };
    for (const v of [data, 'plain string', 7, false, null, [1, 2]]) {
      const { id } = await appClient().emit('Test', v);
      const frame = await browser.nextMessage();
      assert.equal(frame.id, id);
      assert.deepEqual(frame.data, v);
    }
    // undefined members are dropped, as JSON.stringify does.
    await appClient().emit('Test', { a: undefined, b: 1 });
    assert.deepEqual((await browser.nextMessage()).data, { b: 1 });
    await browser.close();
  });

  it('retries an emit with one idempotency key: a repeat is not a second delivery', async () => {
    const browser = await Browser.open(sb.http);
    const first = await appClient().emit('Test', 'once', { key: 'express-test-key-1' });
    assert.equal(first.id, 'express-test-key-1');
    assert.equal(first.duplicate, false);
    const again = await appClient().emit('Test', 'once', { key: 'express-test-key-1' });
    assert.deepEqual(again, { ...first, duplicate: true });
    await appClient().emit('Test', 'marker');
    assert.equal((await browser.nextMessage()).data, 'once');
    assert.equal((await browser.nextMessage()).data, 'marker');
    await browser.close();
  });

  it('sends POST /api/quote only to the "quotes" channel', async () => {
    const subscribed = await Browser.open(sb.http, ['quotes']);
    const other = await Browser.open(sb.http);
    // Subscriptions have no acknowledgement: wait until Switchboard counts it.
    const client = appClient();
    const deadline = Date.now() + 3000;
    while (await client.count('quotes') !== 1) {
      assert.ok(Date.now() < deadline, 'subscription never counted');
      await sleep(20);
    }
    assert.deepEqual((await get(web, '/api/online')).body, { connections: 2 });

    const q = await post(web, '/api/quote');
    assert.equal(q.status, 200);
    assert.equal(q.body.recipients, 1);
    assert.ok(q.body.text && q.body.author, JSON.stringify(q.body));
    const m = await post(web, '/api/messages', { text: 'after the quote' });
    assert.equal(m.body.recipients, 2);

    assert.deepEqual(await subscribed.nextMessage(), {
      type: 'message', id: q.body.id, event: 'Quote', channel: 'quotes', data: { text: q.body.text, author: q.body.author },
    });
    assert.equal((await subscribed.nextMessage()).id, m.body.id);
    // The unsubscribed browser's first message is the later ShowMessage.
    assert.deepEqual(await other.nextMessage(), {
      type: 'message', id: m.body.id, event: 'ShowMessage', channel: '', data: { text: 'after the quote' },
    });
    await sleep(100);
    assert.deepEqual(other.frames.filter((f) => f.type === 'message'), []);
    await Promise.all([subscribed.close(), other.close()]);
  });

  it('fetches quotations from QUOTES_URL, with a 3 s timeout', async () => {
    let mode = 'ok';
    const quotes = http.createServer((req, res) => {
      if (mode === 'ok') res.end(JSON.stringify({ text: 'Eppur si muove.', author: 'Galileo Galilei' }));
      else if (mode === 'fail') { res.statusCode = 500; res.end('boom'); }
      else if (mode === 'bad') res.end('{"quote":1}');
      // mode "slow": never answers
    });
    await new Promise((r) => quotes.listen(0, '127.0.0.1', r));
    cleanups.push(async () => { quotes.closeAllConnections(); await new Promise((r) => quotes.close(r)); });
    process.env.QUOTES_URL = `http://127.0.0.1:${quotes.address().port}/random`;
    try {
      const browser = await Browser.open(sb.http, ['quotes']);
      const client = appClient();
      while (await client.count('quotes') !== 1) await sleep(20);
      const ok = await post(web, '/api/quote');
      assert.equal(ok.status, 200);
      assert.equal(ok.body.text, 'Eppur si muove.');
      assert.equal(ok.body.author, 'Galileo Galilei');
      assert.deepEqual((await browser.nextMessage()).data, { text: 'Eppur si muove.', author: 'Galileo Galilei' });

      for (mode of ['fail', 'bad']) {
        const res = await post(web, '/api/quote');
        assert.equal(res.status, 502, mode);
        assert.match(res.body.error, /quotation/);
      }
      mode = 'slow';
      const start = Date.now();
      const slow = await post(web, '/api/quote');
      const took = Date.now() - start;
      assert.equal(slow.status, 502);
      assert.ok(took >= 2900 && took < 4500, `took ${took} ms`);
      await sleep(100);
      assert.deepEqual(browser.frames.filter((f) => f.type === 'message'), []);
      await browser.close();
    } finally {
      delete process.env.QUOTES_URL;
    }
  });

  it('rejects bad messages with 400', async () => {
    const cases = [
      [{ text: '' }, /text is required/],
      [{ text: '   ' }, /text is required/],
      [{}, /text is required/],
      [{ text: 42 }, /text is required/],
      [{ text: 'x'.repeat(2001) }, /longer than 2000/],
      ['{"text": ', /not valid JSON/],
    ];
    for (const [body, re] of cases) {
      const res = await post(web, '/api/messages', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match(res.body.error, re);
    }
    const form = await post(web, '/api/messages', 'text=hi', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(form.status, 400);
    // 2000 characters (not UTF-16 units) is still fine.
    assert.equal((await post(web, '/api/messages', { text: '👋'.repeat(2000) })).status, 200);
  });

  it('answers 502 when Switchboard refuses the web server\'s token', async () => {
    const secured = await startSwitchboard({ SWITCHBOARD_API_TOKEN: 'right-token' });
    cleanups.push(() => stopChild(secured.proc));

    // The entry point as a child process, with a wrong token.
    const port = await freePort();
    const wrong = startChild(process.execPath, [SERVER_JS], cleanEnv({
      LISTEN_ADDR: `127.0.0.1:${port}`,
      SWITCHBOARD_ADDR: secured.grpc,
      SWITCHBOARD_API_TOKEN: 'wrong-token',
    }));
    await waitHTTP(`http://127.0.0.1:${port}/healthz`, wrong);
    let res = await post(`http://127.0.0.1:${port}`, '/api/messages', { text: 'hi' });
    assert.equal(res.status, 502);
    assert.match(res.body.error, /token/);
    res = await get(`http://127.0.0.1:${port}`, '/api/online');
    assert.equal(res.status, 502);
    await stopChild(wrong, 'SIGTERM');
    assert.equal(wrong.exitCode, 0, wrong.output);

    // No token at all is refused the same way; the right one works.
    const none = await listen(createApp({ env: { SWITCHBOARD_ADDR: secured.grpc } }));
    assert.equal((await post(none, '/api/messages', { text: 'hi' })).status, 502);
    const right = await listen(createApp({ env: { SWITCHBOARD_ADDR: secured.grpc, SWITCHBOARD_API_TOKEN: 'right-token' } }));
    res = await post(right, '/api/messages', { text: 'hi' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.recipients, 0);
  });

  it('answers 503 within the deadline when Switchboard does not answer', async () => {
    // A TCP server that accepts and never speaks HTTP/2: only the 5 s
    // deadline ends the call.
    const sockets = new Set();
    const mute = net.createServer((s) => { sockets.add(s); s.on('error', () => {}); });
    await new Promise((r) => mute.listen(0, '127.0.0.1', r));
    cleanups.push(async () => { for (const s of sockets) s.destroy(); await new Promise((r) => mute.close(r)); });
    const app = await listen(createApp({ env: { SWITCHBOARD_ADDR: `127.0.0.1:${mute.address().port}` } }));
    const start = Date.now();
    const res = await post(app, '/api/messages', { text: 'hi' });
    const took = Date.now() - start;
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.ok(took < 6000, `took ${took} ms`);
  });

  it('shows the count in Chromium, dimmed while the page reconnects', async (t) => {
    const bin = chromiumBin();
    if (!bin) {
      const why = 'no Chromium found: install chromium (apt-get install chromium) or set CHROME_BIN';
      if (process.env.SWITCHBOARD_REQUIRE_TEST_TOOLS || process.env.CI) assert.fail(`${why} (tests may not skip here)`);
      t.skip(why);
      return;
    }
    // A node and an app of their own: the test stops this node.
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    const node = await startSwitchboard({ SWITCHBOARD_ALLOWED_ORIGINS: origin });
    cleanups.push(() => stopChild(node.proc));
    const page = await listen(createApp({ env: { SWITCHBOARD_ADDR: node.grpc, SWITCHBOARD_PUBLIC_URLS: `ws://${node.http}/ws` } }), port);
    const chromium = await Chromium.launch(bin);
    cleanups.push(() => chromium.close());
    const tab = await chromium.open(page);
    const count = 'document.querySelector("[data-testid=online-count]")';
    const state = 'document.querySelector("[data-testid=state]").textContent';
    const opacity = `Number(getComputedStyle(${count}).opacity)`;

    await tab.waitFor('connected', `${state} === "open" && ${count}.textContent === "1" && ${opacity} === 1`);
    await stopChild(node.proc, 'SIGKILL');
    await tab.waitFor('reconnecting, count dimmed', `${state} === "reconnecting" && ${count}.textContent === "1" && ${opacity} < 0.5`);
    const back = startChild(switchboardBin, [], cleanEnv({
      SWITCHBOARD_HTTP_ADDR: node.http, SWITCHBOARD_GRPC_ADDR: node.grpc, SWITCHBOARD_ALLOWED_ORIGINS: origin, SWITCHBOARD_LOG_LEVEL: 'warn',
    }));
    cleanups.push(() => stopChild(back));
    await waitHTTP(`http://${node.http}/readyz`, back);
    await tab.waitFor('back, count at full strength', `${state} === "open" && ${count}.textContent === "1" && ${opacity} === 1`, 20000);
  });

  it('answers 503, not a hang, once Switchboard is killed, and recovers', async () => {
    await stopChild(sb.proc, 'SIGKILL');
    const start = Date.now();
    const res = await post(web, '/api/messages', { text: 'anyone there?' });
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.match(res.body.error, /unavailable/i);
    assert.equal((await get(web, '/api/online')).status, 503);
    assert.equal((await post(web, '/api/quote')).status, 503);
    assert.ok(Date.now() - start < 6000, `took ${Date.now() - start} ms`);

    // A Switchboard restarted on the same address is used again within
    // the client's capped reconnect backoff, without restarting express.
    const back = startChild(switchboardBin, [], cleanEnv({
      SWITCHBOARD_HTTP_ADDR: sb.http,
      SWITCHBOARD_GRPC_ADDR: sb.grpc,
      SWITCHBOARD_ALLOWED_ORIGINS: browserOrigin,
      SWITCHBOARD_LOG_LEVEL: 'warn',
    }));
    await waitHTTP(`http://${sb.http}/readyz`, back);
    const browser = await Browser.open(sb.http);
    const restarted = Date.now();
    let res2;
    do {
      res2 = await post(web, '/api/messages', { text: 'back again' });
      if (res2.status !== 200) await sleep(200);
    } while (res2.status !== 200 && Date.now() - restarted < 8000);
    assert.equal(res2.status, 200, JSON.stringify(res2.body));
    assert.equal((await browser.nextMessage()).data.text, 'back again');
  });

  // appClient is a gRPC client built the way the app builds its own, for
  // calls the HTTP routes do not offer.
  let client;
  function appClient() {
    if (!client) {
      client = createApp().locals.switchboard;
      cleanups.push(async () => client.close());
    }
    return client;
  }
});
