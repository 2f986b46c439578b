'use strict';
// An express web server that shows how many visitors are online and pushes
// messages to every open page. It used to run socket.io in-process; now the
// browsers connect to Switchboard and this server calls Switchboard's gRPC API.

const express = require('express');
const crypto = require('node:crypto');
const { connect, mintToken, status } = require('switchboard-client');
const QUOTES = require('./quotes');

const MAX_TEXT = 2000; // characters
const QUOTE_TIMEOUT_MS = 3000;
const DEFAULT_PUBLIC_URLS = 'ws://localhost:8080/ws';
// Each Switchboard call's deadline: an emit retries UNAVAILABLE (a
// fail-over in progress) within it, with one idempotency key, so it is
// delivered once however many attempts it takes.
const SWITCHBOARD_DEADLINE_MS = 2000;

function httpError(status, message) {
  const err = new Error(message);
  err.status = status;
  return err;
}

// fromSwitchboard maps a failed Switchboard call to the HTTP error a
// caller of this web server can act on.
function fromSwitchboard(err, target) {
  const e = httpError(502, `Switchboard call failed (${err.codeName}): ${err.details}`);
  e.grpcCode = err.code;
  switch (err.code) {
    case status.UNAVAILABLE:
      e.status = 503;
      e.message = `Switchboard at ${target} is unavailable: ${err.details}`;
      break;
    case status.DEADLINE_EXCEEDED:
      e.status = 503;
      e.message = `Switchboard at ${target} did not answer within ${SWITCHBOARD_DEADLINE_MS / 1000} s`;
      break;
    case status.INVALID_ARGUMENT:
      e.status = 400;
      e.message = `Switchboard rejected the message: ${err.details}`;
      break;
    case status.UNAUTHENTICATED:
      e.message = 'Switchboard refused this web server\'s API token: check SWITCHBOARD_API_TOKEN on the web server';
      break;
  }
  return e;
}

// publicURLs returns the socket server URLs browsers connect to, read from
// the environment on every request so a changed deployment needs no rebuild.
function publicURLs(env) {
  return (env.SWITCHBOARD_PUBLIC_URLS || DEFAULT_PUBLIC_URLS)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

// clientScriptURL is where Switchboard serves its browser library: the
// http(s) origin of the first public URL. A relative URL (Switchboard behind
// the same host) keeps it relative.
function clientScriptURL(urls) {
  try {
    const u = new URL(urls[0]);
    if (u.protocol === 'ws:') u.protocol = 'http:';
    if (u.protocol === 'wss:') u.protocol = 'https:';
    return `${u.origin}/client.js`;
  } catch {
    return '/client.js';
  }
}

// jsonForScript renders v as JSON that is safe inside <script>: no "<"
// (so no "</script>" or "<!--"), no "&" or ">" and no JS line separators.
function jsonForScript(v) {
  return JSON.stringify(v)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

function escapeAttr(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// visitorOf returns the id the browser's cookie names, or a new one with
// the cookie that names it from now on.
function visitorOf(req, res) {
  const m = /(?:^|;\s*)visitor=([0-9a-f]{24})(?:;|$)/.exec(req.headers.cookie || '');
  if (m) return m[1];
  const id = crypto.randomBytes(12).toString('hex');
  res.cookie('visitor', id, { httpOnly: true, sameSite: 'lax', maxAge: 365 * 24 * 3600 * 1000 });
  return id;
}

function renderPage(urls, token) {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Online now</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  [data-testid=state] { font-size: .8rem; padding: .1rem .4rem; border-radius: .3rem; background: #fde68a; }
  [data-testid=state].open { background: #bbf7d0; }
  [data-testid=online-count].stale { opacity: .35; }
  ul { padding: 0; list-style: none; }
  li { border-bottom: 1px solid #ddd; padding: .4rem 0; }
  #error { color: #b91c1c; }
</style>
</head>
<body>
<h1>Online now: <span data-testid="visitor-count" class="stale">…</span> visitors,
  <span data-testid="online-count" class="stale">…</span> tabs</h1>
<p>Connection: <span data-testid="state">connecting</span></p>
<form id="send">
  <input name="text" maxlength="${MAX_TEXT}" required placeholder="A message for every open page" autocomplete="off">
  <button>Send</button>
  <button type="button" id="quote">Send a quotation</button>
</form>
<p id="error" role="alert"></p>
<ul id="messages"></ul>
<template id="message"><li data-testid="message"></li></template>
<script id="switchboard-config" type="application/json">${jsonForScript(token ? { urls, token } : { urls })}</script>
<script src="${escapeAttr(clientScriptURL(urls))}"></script>
<script>
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("switchboard-config").textContent);
  var countEl = document.querySelector("[data-testid=online-count]");
  var visitorsEl = document.querySelector("[data-testid=visitor-count]");
  var stateEl = document.querySelector("[data-testid=state]");
  var list = document.getElementById("messages");
  var errorEl = document.getElementById("error");

  function show(text) {
    var li = document.getElementById("message").content.firstElementChild.cloneNode(true);
    li.textContent = text;
    list.insertBefore(li, list.firstChild); // newest first
  }

  if (typeof Switchboard === "undefined") {
    errorEl.textContent = "Could not load the Switchboard client from " + config.urls[0] + ".";
  } else {
    // Each browser is one visitor: this server vouches for it with an
    // identity token, fetched again before every connect.
    var sb = Switchboard.connect(config.urls, config.token ? { token: function () {
      return fetch("/api/token").then(function (r) { return r.ok ? r.text() : Promise.reject(new Error("token: " + r.status)); });
    } } : {});
    sb.onState(function (s) {
      stateEl.textContent = s;
      stateEl.className = s;
      countEl.classList.toggle("stale", s !== "open"); // a count from before the connection dropped
      visitorsEl.classList.toggle("stale", s !== "open");
    });
    sb.onCount(function (n, v) { countEl.textContent = n; visitorsEl.textContent = v; });
    sb.on("ShowMessage", function (data) { show(data && data.text); });
    sb.on("Quote", function (data, msg) {
      if (msg.channel === "quotes" && data) show("\\u201c" + data.text + "\\u201d \\u2014 " + data.author);
    });
    if (new URLSearchParams(location.search).get("quotes") !== "0") sb.subscribe("quotes");
  }

  function post(path, body) {
    errorEl.textContent = "";
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {})
    }).then(function (res) {
      return res.json().then(function (j) { if (!res.ok) throw new Error(j.error || res.statusText); return j; });
    }).catch(function (err) { errorEl.textContent = err.message; });
  }
  document.getElementById("send").addEventListener("submit", function (e) {
    e.preventDefault();
    var input = e.target.elements.text;
    post("/api/messages", { text: input.value }).then(function (r) { if (r) input.value = ""; });
  });
  document.getElementById("quote").addEventListener("click", function () { post("/api/quote"); });
})();
</script>
</body>
</html>
`;
}

// fetchQuote gets {text, author} from url within QUOTE_TIMEOUT_MS.
async function fetchQuote(url) {
  let q;
  try {
    const res = await fetch(url, {
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(QUOTE_TIMEOUT_MS),
    });
    if (!res.ok) throw new Error(`it answered HTTP ${res.status}`);
    q = await res.json();
  } catch (err) {
    const why = err.name === 'TimeoutError' ? `no answer within ${QUOTE_TIMEOUT_MS / 1000} s` : err.message;
    throw httpError(502, `could not fetch a quotation from QUOTES_URL: ${why}`);
  }
  if (!q || typeof q.text !== 'string' || !q.text.trim() || [...q.text].length > MAX_TEXT) {
    throw httpError(502, 'the quotation service did not answer {"text":"...","author":"..."}');
  }
  return { text: q.text, author: typeof q.author === 'string' && q.author.trim() ? q.author : 'Unknown' };
}

function randomQuote() {
  return QUOTES[Math.floor(Math.random() * QUOTES.length)];
}

// createApp builds the express app. env is read for the Switchboard
// connection once, and for the public URLs and QUOTES_URL on every request.
// app.locals.switchboard is the switchboard-client (close it on shutdown).
function createApp({ env = process.env } = {}) {
  const target = env.SWITCHBOARD_ADDR || '127.0.0.1:9090';
  const switchboard = connect(target, { token: env.SWITCHBOARD_API_TOKEN || '', deadlineMs: SWITCHBOARD_DEADLINE_MS });
  const emit = (event, data, options) => switchboard.emit(event, data, options).catch((err) => { throw fromSwitchboard(err, target); });

  const app = express();
  app.disable('x-powered-by');
  app.locals.switchboard = switchboard;
  const json = express.json({ limit: '64kb' });

  app.get('/', (req, res) => {
    res.set('Cache-Control', 'no-store');
    res.type('html').send(renderPage(publicURLs(env), Boolean(env.SWITCHBOARD_TOKEN_SECRET)));
  });

  app.get('/config.json', (req, res) => {
    res.set('Cache-Control', 'no-store');
    res.json({ urls: publicURLs(env) });
  });

  app.post('/api/messages', json, async (req, res) => {
    if (req.body === undefined) {
      throw httpError(400, 'send a JSON body {"text":"..."} with Content-Type: application/json');
    }
    const text = req.body && req.body.text;
    if (typeof text !== 'string' || !text.trim()) throw httpError(400, 'text is required');
    if ([...text].length > MAX_TEXT) throw httpError(400, `text is longer than ${MAX_TEXT} characters`);
    const { id, recipients } = await emit('ShowMessage', { text });
    res.json({ id, recipients });
  });

  app.post('/api/quote', async (req, res) => {
    const quote = env.QUOTES_URL ? await fetchQuote(env.QUOTES_URL) : randomQuote();
    const { id, recipients } = await emit('Quote', { text: quote.text, author: quote.author }, { channel: 'quotes' });
    res.json({ id, recipients, text: quote.text, author: quote.author });
  });

  app.get('/api/online', async (req, res) => {
    const connections = await switchboard.count().catch((err) => { throw fromSwitchboard(err, target); });
    res.json({ connections });
  });

  // An identity token for the browser's visitor, signed with the secret
  // the nodes verify (SWITCHBOARD_TOKEN_SECRET); a real site names its
  // signed-in user instead of a cookie's id.
  app.get('/api/token', (req, res) => {
    if (!env.SWITCHBOARD_TOKEN_SECRET) throw httpError(404, 'this site gives no identity tokens: set SWITCHBOARD_TOKEN_SECRET');
    res.set('Cache-Control', 'no-store');
    res.type('text').send(mintToken(env.SWITCHBOARD_TOKEN_SECRET, `visitor-${visitorOf(req, res)}`, 300));
  });

  app.get('/healthz', (req, res) => {
    res.type('text').send('ok\n');
  });

  // Errors become JSON {"error": "..."}: bad request bodies from
  // express.json (400, 413, 415), ours, and Switchboard's (fromSwitchboard).
  app.use((err, req, res, next) => { // eslint-disable-line no-unused-vars
    let status = Number(err.status || err.statusCode) || 500;
    let message = err.message;
    if (err.type === 'entity.parse.failed') message = 'the body is not valid JSON';
    if (status >= 500 || status < 400) {
      if (!err.grpcCode && status === 500) message = 'internal error';
      if (status < 400) status = 500;
      console.error(`${req.method} ${req.path}: ${status} ${err.status ? err.message : err.stack || err}`);
    }
    res.status(status).json({ error: message });
  });

  return app;
}

module.exports = { createApp, renderPage, publicURLs, clientScriptURL, jsonForScript };
