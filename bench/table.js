// Prints compare.sh's markdown table from the swbench JSON results in
// $OUT: one file per target, scenario and run ($OUT/<target>-<sc>-<run>.json).
// Each cell is the median over the runs; n/a where a metric does not apply.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const out = process.env.OUT;
const scenarios = (process.env.SCENARIOS || "a b c d e").split(/\s+/).filter(Boolean);
const runs = Number(process.env.RUNS || 1);
const targets = (process.env.TARGETS || "socketio switchboard").split(/\s+/);

function load(target, sc) {
  const rs = [];
  for (let i = 1; i <= runs; i++) {
    const f = path.join(out, `${target}-${sc}-${i}.json`);
    try {
      rs.push(JSON.parse(fs.readFileSync(f, "utf8")));
    } catch {
      rs.push({});
    }
  }
  return rs;
}

function median(xs) {
  xs = xs.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const m = xs.length >> 1;
  return xs.length % 2 ? xs[m] : (xs[m - 1] + xs[m]) / 2;
}

const titles = {
  a: "(a) 1,000 clients, 200 emits sequential, 128 B",
  b: "(b) 2,000 clients, 500 emits, 8 in flight",
  c: "(c) 10,000 clients, 2 emits/s for 10 s",
  d: "(d) 10,000 idle clients",
  e: "(e) 10,000 clients connecting at once (500 dialers)",
};

// metric: [label, getter, decimals]. ↑ higher is better, ↓ lower is better.
const emitRows = [
  ["deliveries/s ↑", (r) => r.deliveries_per_s, 0],
  ["latency p50 (ms) ↓", (r) => r.latency_us && r.latency_us.p50 / 1000, 2],
  ["latency p90 (ms) ↓", (r) => r.latency_us && r.latency_us.p90 / 1000, 2],
  ["latency p99 (ms) ↓", (r) => r.latency_us && r.latency_us.p99 / 1000, 2],
  ["latency max (ms) ↓", (r) => r.latency_us && r.latency_us.max / 1000, 2],
  ["EmitMessage call p50 (ms) ↓", (r) => r.emit_call_us && r.emit_call_us.p50 / 1000, 2],
  ["EmitMessage call p99 (ms) ↓", (r) => r.emit_call_us && r.emit_call_us.p99 / 1000, 2],
  ["server CPU per delivery (µs) ↓", (r) => r.cpu_per_delivery_us, 2],
  ["server CPU in emit phase (s) ↓", (r) => r.server_cpu_s, 2],
  ["server RSS at the end (MiB) ↓", (r) => r.server_rss_after_kb && r.server_rss_after_kb / 1024, 1],
  ["NATS servers' CPU over the run (s) ↓", (r) => r.nats_cpu_s, 2],
  ["swbench CPU (s)", (r) => r.load_cpu_s, 2],
];
const rows = {
  a: emitRows,
  b: emitRows,
  c: emitRows.filter(([l]) => !l.startsWith("deliveries/s")),
  d: [
    ["server RSS per connection (KiB) ↓", (r) => r.rss_per_conn_bytes && r.rss_per_conn_bytes / 1024, 1],
    ["server RSS, 10,000 idle (MiB) ↓", (r) => r.server_rss_connected_kb && r.server_rss_connected_kb / 1024, 1],
    ["server RSS, no client (MiB) ↓", (r) => r.server_rss_before_kb && r.server_rss_before_kb / 1024, 1],
  ],
  e: [
    ["connect all (s) ↓", (r) => r.connect_s, 2],
    ["connect and count all (s) ↓", (r) => r.count_all_s, 2],
    ["every count right after the last connect (s) ↓", (r) => r.count_all_s != null && r.connect_s != null ? r.count_all_s - r.connect_s : null, 2],
    ["count frames per client, max", (r) => r.count_frames_max, 0],
    ["count frames per client, mean", (r) => r.count_frames_mean, 1],
    ["dial retries", (r) => r.dial_retries, 0],
    ["server RSS per connection (KiB) ↓", (r) => r.rss_per_conn_bytes && r.rss_per_conn_bytes / 1024, 1],
  ],
};

function fmt(v, d) {
  if (v === null || v === undefined) return "n/a";
  return v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

function status(target, rs) {
  if (!targets.includes(target)) return "not run";
  const bad = rs.filter((r) => !r.target || r.failure);
  if (bad.length === 0) {
    const r = rs[0];
    return r.emits > 0 ? `ok: ${fmt(r.delivered, 0)}/${fmt(r.expected, 0)}` : "ok";
  }
  return "**FAILED**: " + bad.map((r) => r.failure || "no result").join("; ");
}

// One column per target, in TARGETS order, then each later target's
// ratio to the first.
const names = {
  socketio: "socket.io",
  switchboard: "Switchboard",
  "switchboard-nohistory": "Switchboard, history off",
  "switchboard-pair": "Switchboard, standby following",
  "switchboard-cluster": "Switchboard, 3-node cluster",
};
const name = (t) => names[t] || t;
const [first, ...rest] = targets;
const lines = [
  `| metric | ${targets.map(name).join(" | ")} | ${rest.map((t) => `${name(t)} ÷ ${name(first)}`).join(" | ")} |`,
  `| --- |${" ---: |".repeat(targets.length + rest.length)}`,
];
for (const sc of scenarios) {
  if (!rows[sc]) continue;
  const results = targets.map((t) => load(t, sc));
  lines.push(`| **${titles[sc]}** | ${targets.map((t, i) => status(t, results[i])).join(" | ")} |${" |".repeat(rest.length)}`);
  for (const [label, get, d] of rows[sc]) {
    const vals = results.map((rs) => median(rs.map((r) => (r.target ? get(r) : null))));
    const ratios = vals.slice(1).map((v) => (vals[0] && v !== null ? fmt(v / vals[0], 2) : "n/a"));
    lines.push(`| ${label} | ${vals.map((v) => fmt(v, d)).join(" | ")} | ${ratios.join(" | ")} |`);
  }
}
console.log(lines.join("\n"));
