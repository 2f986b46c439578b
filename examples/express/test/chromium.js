'use strict';
// A headless Chromium driven over the DevTools protocol, for the tests
// that need a real browser: open a page, evaluate expressions in it.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');

// chromiumBin returns $CHROME_BIN or the first Chromium-like browser on
// the PATH, or undefined.
function chromiumBin() {
  if (process.env.CHROME_BIN) return process.env.CHROME_BIN;
  for (const name of ['chromium', 'chromium-browser', 'google-chrome', 'headless-shell']) {
    for (const dir of (process.env.PATH || '').split(path.delimiter)) {
      const p = path.join(dir, name);
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return p;
      } catch { /* next */ }
    }
  }
  return undefined;
}

// The flags the Go tests start Chromium with (internal/browsertest).
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--remote-debugging-port=0'];

class Chromium {
  // launch starts a browser with an empty profile.
  static async launch(bin) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-chromium-'));
    const proc = spawn(bin, [...FLAGS, `--user-data-dir=${dir}`, 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d) => { stderr += d; });
    const portFile = path.join(dir, 'DevToolsActivePort');
    const deadline = Date.now() + 20000;
    while (!fs.existsSync(portFile) || fs.readFileSync(portFile, 'utf8').split('\n').length < 2) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`Chromium did not start: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const [port, wsPath] = fs.readFileSync(portFile, 'utf8').split('\n');
    const ws = new WebSocket(`ws://127.0.0.1:${port}${wsPath}`);
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    return new Chromium(proc, ws, dir);
  }

  constructor(proc, ws, dir) {
    this.proc = proc;
    this.ws = ws;
    this.dir = dir;
    this.nextId = 1;
    this.pending = new Map();
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
      else p.resolve(msg.result);
    });
  }

  send(method, params = {}, sessionId) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  // open opens a tab at url.
  async open(url) {
    const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    await this.send('Page.navigate', { url }, sessionId);
    return new Tab(this, sessionId);
  }

  async close() {
    try { await this.send('Browser.close'); } catch { /* gone */ }
    this.ws.terminate();
    if (this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      setTimeout(() => this.proc.kill('SIGKILL'), 2000).unref();
      await exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

class Tab {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
  }

  // evaluate returns the value of a JavaScript expression in the page.
  async evaluate(expression) {
    const res = await this.browser.send('Runtime.evaluate', { expression, returnByValue: true }, this.sessionId);
    if (res.exceptionDetails) throw new Error(`${expression}: ${res.exceptionDetails.text}`);
    return res.result.value;
  }

  // waitFor polls a predicate in the page until it is true.
  async waitFor(what, expression, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
      try {
        if (await this.evaluate(expression)) return;
      } catch (err) {
        last = err.message; // the page may be loading
      }
      if (Date.now() > deadline) {
        const state = await this.evaluate('document.body ? document.body.innerText.slice(0, 300) : ""').catch(() => '');
        throw new Error(`${what}: ${expression} not true within ${timeoutMs} ms (${last || 'false'}); page: ${state}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

module.exports = { Chromium, chromiumBin };
