/*! Switchboard browser client. No dependencies. Served at /client.js.
 *
 *   const sb = Switchboard.connect(["wss://rt.example.com/ws", "wss://rt2.example.com/ws"]);
 *   sb.onCount((n, v) => el.textContent = v + " visitors, " + n + " tabs");
 *   sb.on("ShowMessage", data => show(data.text));
 *   sb.subscribe("quotes", {last: 1});               // and the newest quote at once
 *   sb.onState(s => banner.hidden = s === "open");   // "connecting" | "open" | "reconnecting" | "closed"
 *   sb.onReconnect(ok => ok || reloadState());        // false: messages were missed
 *
 * It reconnects with capped, jittered exponential backoff, moving to the next
 * URL after each failure, and resumes where it left off: the node sends what
 * it missed, then live messages. It drops a message whose id it has seen
 * among the last 1000, so that a message a retried emit delivers again after
 * a fail-over shows once. A browser is one visitor: the subject of
 * opts.token (a string, or a function giving one or its promise, called
 * before every connect), else an id kept in localStorage.
 */
(function (root) {
  "use strict";

  var DEFAULTS = {
    minDelay: 250,    // ms before the first reconnect
    maxDelay: 10000,  // ms cap of the backoff
    factor: 2         // backoff growth per failed attempt
  };
  var SEEN_IDS = 1000; // message ids remembered to drop duplicates
  var VISITOR_KEY = "switchboard.visitor", memoryVisitor;

  // visitorID: this browser's anonymous id, in localStorage (or memory).
  function visitorID() {
    var id;
    try { id = localStorage.getItem(VISITOR_KEY); } catch (e) {}
    if (id && /^[\w-]{1,64}$/.test(id)) return id;
    if (!memoryVisitor) {
      var a = crypto.getRandomValues(new Uint8Array(16));
      memoryVisitor = "";
      for (var j = 0; j < 16; j++) memoryVisitor += (a[j] + 256).toString(16).slice(1);
    }
    try { localStorage.setItem(VISITOR_KEY, memoryVisitor); } catch (e) {}
    return memoryVisitor;
  }

  // toWS turns "/ws", "https://host/ws" or "wss://host/ws" into a WebSocket URL.
  function toWS(u, base) {
    var url = new URL(u, base);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    return url.href;
  }

  function scriptBase() {
    var s = typeof document !== "undefined" && document.currentScript;
    if (s && s.src) return s.src;
    return typeof location !== "undefined" ? location.href : undefined;
  }
  var base = scriptBase();

  function Client(urls, opts) {
    if (urls == null || urls === "") urls = ["/ws"];
    if (!Array.isArray(urls)) urls = String(urls).split(",");
    opts = opts || {};
    this._urls = urls.map(function (u) { return toWS(u.trim(), base); });
    this._opts = {};
    for (var k in DEFAULTS) this._opts[k] = opts[k] != null ? opts[k] : DEFAULTS[k];
    this._token = opts.token;
    this._handlers = {};      // event -> [fn]
    this._countFns = [];
    this._stateFns = [];
    this._channels = {};      // subscribed channel -> {last: K}
    this._epoch = null;       // the log's epoch and the newest offset seen
    this._offset = 0;
    this._reconnectFns = [];
    this._i = 0;              // index of the URL in use
    this._attempt = 0;        // failed attempts since the last success
    this._ws = null;
    this._timer = null;
    this._closed = false;
    this.state = "";
    this.count = null;        // last count received
    this.visitors = null;     // and its distinct visitors
    this._seen = {};          // message ids received recently, as keys
    this._seenRing = [];      // the same ids, oldest first from _seenAt
    this._seenAt = 0;
    this._connect();
  }

  Client.prototype._setState = function (s) {
    if (this.state === s) return;
    this.state = s;
    for (var i = 0; i < this._stateFns.length; i++) call(this._stateFns[i], s);
  };

  // _connect gets the token, if any, then opens the socket.
  Client.prototype._connect = function () {
    var self = this, tok = this._token;
    this._setState(this._attempt === 0 && this.count === null ? "connecting" : "reconnecting");
    if (typeof tok !== "function") return this._open(tok);
    Promise.resolve().then(tok).then(function (t) {
      if (!self._closed) self._open(t);
    }, function () { self._retry(0); });
  };

  Client.prototype._open = function (tok) {
    var self = this;
    var ws, ch, inURL = {};
    try {
      // The channels and the position ride on the upgrade: the node joins
      // them and replays what was missed before any live message.
      var url = new URL(this._urls[this._i]);
      if (tok) url.searchParams.set("token", tok);
      else url.searchParams.set("visitor", visitorID());
      for (ch in this._channels) { url.searchParams.append("channel", ch); inURL[ch] = 1; }
      if (this._epoch !== null) {
        url.searchParams.set("epoch", this._epoch);
        url.searchParams.set("offset", String(this._offset));
      }
      ws = new WebSocket(url.href);
    } catch (e) {
      this._retry(0);
      return;
    }
    this._ws = ws;
    var opened = false;
    ws.onopen = function () {
      opened = true;
      for (var c in self._channels) if (!inURL[c]) self._sub(c);
    };
    ws.onmessage = function (e) {
      var f;
      try { f = JSON.parse(e.data); } catch (err) { return; }
      if (f.type === "welcome") {
        // The node serves us: reset the backoff. Its offset is the log's
        // head, our position only when nothing was replayed.
        self._attempt = 0;
        self._setState("open");
        var again = self._epoch !== null;
        if (f.recovered !== true) self._offset = f.offset;
        self._epoch = f.epoch;
        // Without a replay, channels joined in the URL ask for their last.
        if (!f.recovered) for (var c in self._channels) if (inURL[c] && self._channels[c].last) self._sub(c);
        if (again) for (var k = 0; k < self._reconnectFns.length; k++) call(self._reconnectFns[k], f.recovered === true);
      } else if (f.type === "count") {
        self.count = f.connections;
        self.visitors = f.visitors;
        for (var i = 0; i < self._countFns.length; i++) call(self._countFns[i], f.connections, f.visitors);
      } else if (f.type === "message") {
        if (f.offset > self._offset) self._offset = f.offset;
        if (self._dup(f.id)) return;
        var fns = (self._handlers[f.event] || []).concat(self._handlers["*"] || []);
        for (var j = 0; j < fns.length; j++) call(fns[j], f.data, f);
      }
    };
    ws.onclose = function (e) {
      if (self._ws !== ws) return;
      self._ws = null;
      if (self._closed) return;
      // 1012: the node hands us to another, come back at once (the server
      // already spreads these); anything else backs off.
      var soon = opened && e.code === 1012;
      self._retry(soon ? 1 : 0);
    };
  };

  // _retry schedules the next attempt on the next URL. A quick retry (a
  // hand-back, which the node spreads itself) goes at once: the page is
  // counted nowhere until it is back.
  Client.prototype._retry = function (quick) {
    if (this._closed) return;
    this._setState("reconnecting");
    this._i = (this._i + 1) % this._urls.length;
    var o = this._opts;
    var delay = 0;
    if (!quick) {
      var cap = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, this._attempt));
      delay = cap / 2 + Math.random() * cap / 2; // "equal jitter"
      this._attempt++;
    }
    var self = this;
    this._timer = setTimeout(function () { self._timer = null; self._connect(); }, delay);
  };

  // _dup reports whether message id was seen recently, and remembers it.
  Client.prototype._dup = function (id) {
    if (typeof id !== "string" || id === "") return false;
    var key = "#" + id; // never clashes with Object.prototype's names
    if (this._seen[key]) return true;
    var ring = this._seenRing;
    if (ring.length < SEEN_IDS) {
      ring.push(key);
    } else {
      delete this._seen[ring[this._seenAt]];
      ring[this._seenAt] = key;
      this._seenAt = (this._seenAt + 1) % SEEN_IDS;
    }
    this._seen[key] = true;
    return false;
  };

  Client.prototype._send = function (f) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(f));
  };

  Client.prototype._sub = function (ch) {
    var f = { type: "subscribe", channel: ch }, last = this._channels[ch].last;
    if (last) f.last = last;
    this._send(f);
  };

  // on calls fn(data, message) for every message of event ("*": all events).
  // It returns a function that removes fn.
  Client.prototype.on = function (event, fn) {
    var list = this._handlers[event] || (this._handlers[event] = []);
    list.push(fn);
    return function () { var i = list.indexOf(fn); if (i >= 0) list.splice(i, 1); };
  };

  // onCount calls fn(n, v) with the online count and its distinct
  // visitors, at once if they are known.
  Client.prototype.onCount = function (fn) {
    var list = this._countFns;
    list.push(fn);
    if (this.count !== null) call(fn, this.count, this.visitors);
    return function () { var i = list.indexOf(fn); if (i >= 0) list.splice(i, 1); };
  };

  // onState calls fn(state) on every change of the connection state:
  // "connecting", "open", "reconnecting" or "closed"; at once with the current one.
  Client.prototype.onState = function (fn) {
    var list = this._stateFns;
    list.push(fn);
    if (this.state) call(fn, this.state);
    return function () { var i = list.indexOf(fn); if (i >= 0) list.splice(i, 1); };
  };

  // onReconnect calls fn(recovered) each time the client is back after a
  // disconnect: recovered is true when every message missed meanwhile has
  // been delivered, false when some may be lost (the page should reload
  // what it shows).
  Client.prototype.onReconnect = function (fn) {
    var list = this._reconnectFns;
    list.push(fn);
    return function () { var i = list.indexOf(fn); if (i >= 0) list.splice(i, 1); };
  };

  // subscribe joins channel, now and after every reconnect. With
  // {last: K} (1 to 100) the node first sends the channel's newest K
  // messages, such as the current quotation, and again after a reconnect
  // that could not recover.
  Client.prototype.subscribe = function (channel, opts) {
    var last = opts && opts.last, had = this._channels[channel];
    if (had && had.last === last) return;
    this._channels[channel] = { last: last };
    this._sub(channel);
  };

  // unsubscribe leaves channel.
  Client.prototype.unsubscribe = function (channel) {
    if (!this._channels[channel]) return;
    delete this._channels[channel];
    this._send({ type: "unsubscribe", channel: channel });
  };

  // close disconnects for good.
  Client.prototype.close = function () {
    this._closed = true;
    if (this._timer) clearTimeout(this._timer);
    if (this._ws) this._ws.close(1000, "client closed");
    this._ws = null;
    this._setState("closed");
  };

  function call(fn, a, b) {
    try { fn(a, b); } catch (e) { setTimeout(function () { throw e; }); }
  }

  var Switchboard = {
    // connect opens a client to one or more socket server URLs (an array,
    // or a comma-separated string; default: /ws next to this script).
    // opts: minDelay, maxDelay, factor (the backoff), token.
    connect: function (urls, opts) { return new Client(urls, opts); },
    Client: Client
  };
  if (typeof module === "object" && module.exports) module.exports = Switchboard;
  else root.Switchboard = Switchboard;
})(typeof self !== "undefined" ? self : this);
