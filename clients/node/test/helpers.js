'use strict';
// Helpers of the package's tests: a real Switchboard binary on free
// loopback ports, and a WebSocket client standing in for a browser.

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const WebSocket = require('ws');

const REPO_ROOT = path.resolve(__dirname, '../../..');

const children = new Set();
const cleanups = []; // run by cleanup(), last first

function killChildren() {
  for (const c of children) try { c.kill('SIGKILL'); } catch { /* gone */ }
}
process.on('exit', killChildren);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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

// cleanEnv is this process's environment without SWITCHBOARD_ settings,
// plus extra.
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SWITCHBOARD_')) env[k] = v;
  return { ...env, ...extra };
}

// On Linux, children get SIGKILL when this process dies, however it dies.
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

async function waitHTTP(url, proc, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
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
  throw new Error(`${url} not ready within ${timeoutMs} ms (${last}):\n${proc.output}`);
}

// waitHealthcheck waits for a node serving TLS to be ready, as its
// container health check would ask it: the binary's own healthcheck,
// which does not verify a loopback node's certificate.
async function waitHealthcheck(bin, http, proc, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`process exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${proc.output}`);
    }
    try {
      await promisify(execFile)(bin, ['healthcheck', '--ready', '--tls', `--http-addr=${http}`, '--timeout=1s']);
      return;
    } catch (err) {
      last = err.stderr || err.message;
    }
    await sleep(50);
  }
  throw new Error(`https://${http}/readyz not ready within ${timeoutMs} ms (${last}):\n${proc.output}`);
}

let binary;

// switchboardBin returns SWITCHBOARD_BIN, or a binary built from the
// repository once per run.
async function switchboardBin() {
  if (process.env.SWITCHBOARD_BIN) return path.resolve(process.env.SWITCHBOARD_BIN);
  if (!binary) {
    binary = (async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-node-client-'));
      cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
      const bin = path.join(dir, 'switchboard');
      try {
        await promisify(execFile)('go', ['build', '-o', bin, './cmd/switchboard'], { cwd: REPO_ROOT, timeout: 180000 });
      } catch (err) {
        throw new Error(`go build ./cmd/switchboard failed in ${REPO_ROOT}:\n${err.stderr || err.message}`);
      }
      return bin;
    })();
  }
  return binary;
}

// startSwitchboard runs a node on free loopback ports (or on the given
// addresses) and waits for /readyz.
async function startSwitchboard(env = {}, addrs) {
  const bin = await switchboardBin();
  for (let attempt = 1; ; attempt++) {
    const http = addrs ? addrs.http : `127.0.0.1:${await freePort()}`;
    const grpc = addrs ? addrs.grpc : `127.0.0.1:${await freePort()}`;
    const proc = startChild(bin, [], cleanEnv({
      SWITCHBOARD_HTTP_ADDR: http,
      SWITCHBOARD_GRPC_ADDR: grpc,
      SWITCHBOARD_LOG_LEVEL: 'warn',
      ...env,
    }));
    cleanups.push(() => stopChild(proc));
    try {
      if (env.SWITCHBOARD_TLS_CERT) await waitHealthcheck(bin, http, proc);
      else await waitHTTP(`http://${http}/readyz`, proc);
      return { proc, http, grpc };
    } catch (err) {
      await stopChild(proc);
      if (addrs || attempt >= 3 || !/address already in use/.test(err.message)) throw err;
    }
  }
}

// Browser is a WebSocket client standing in for a page: it records every
// frame the node sends.
class Browser {
  static async open(addr, channels = []) {
    const b = new Browser(new WebSocket(`ws://${addr}/ws`));
    cleanups.push(async () => b.close());
    await b.next((f) => f.type === 'count', 5000);
    for (const channel of channels) b.ws.send(JSON.stringify({ type: 'subscribe', channel }));
    return b;
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.waiters = [];
    this.closed = false;
    ws.on('message', (data) => { this.frames.push(JSON.parse(data.toString())); this.wake(); });
    ws.on('close', () => { this.closed = true; this.wake(); });
    ws.on('error', (err) => { this.error = err; this.wake(); });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  async next(pred, timeoutMs = 5000) {
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

  messages() {
    return this.frames.filter((f) => f.type === 'message');
  }

  async close() {
    if (this.closed) return;
    const closed = new Promise((r) => this.ws.once('close', r));
    this.ws.close();
    await Promise.race([closed, sleep(1000)]);
    this.ws.terminate();
  }
}

// eventually polls fn until it returns true.
async function eventually(what, fn, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(20);
  }
}

async function cleanup() {
  for (const fn of cleanups.splice(0).reverse()) {
    try { await fn(); } catch { /* keep cleaning */ }
  }
  await Promise.all([...children].map((c) => stopChild(c)));
}

module.exports = {
  REPO_ROOT, sleep, freePort, startChild, stopChild, startSwitchboard, switchboardBin, Browser, eventually, cleanup, cleanups,
};
