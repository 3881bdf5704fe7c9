/**
 * The live dashboard: one self-contained HTML page (inline CSS and JS, canvas charts, no external
 * resource) that polls /api/sessions and shows totals, drops and rejections, every session, and each
 * stripe's rate and RTT as small live charts. Served by the process itself, so it works offline.
 *
 * Every figure shown carries its raw number in `data-v` and a stable key in `data-k` (t:… totals,
 * s:ID:… sessions, s:ID:INDEX:… stripes), and <body data-polls> counts successful polls: the browser
 * test compares them with /api/sessions. Data is written with textContent only, never as HTML.
 */

const CSS = `
:root { --bg:#0f1419; --panel:#161d24; --line:#263240; --text:#d6dde4; --dim:#8a98a8; --up:#4aa3ff; --down:#7bd88f; --rtt:#ffb454; --bad:#ff6b6b; }
* { box-sizing: border-box; }
body { margin:0; font:13px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text); }
header { display:flex; gap:12px; align-items:baseline; padding:10px 16px; border-bottom:1px solid var(--line); }
header h1 { font-size:16px; margin:0; }
.badge { padding:1px 8px; border-radius:9px; font-weight:600; background:#1f3b2a; color:var(--down); }
.badge.draining, .badge.stopped { background:#3b1f1f; color:var(--bad); }
.dim { color:var(--dim); }
#error { color:var(--bad); }
main { padding:12px 16px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(150px, 1fr)); gap:8px; margin-bottom:12px; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:8px 10px; }
.card .v { font-size:18px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .l { color:var(--dim); font-size:11px; text-transform:uppercase; letter-spacing:.04em; }
.reasons { font-size:11px; color:var(--dim); }
.wide { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:8px 10px; margin-bottom:12px; }
.session { background:var(--panel); border:1px solid var(--line); border-radius:6px; margin-bottom:10px; }
.session h2 { font-size:13px; margin:0; padding:6px 10px; border-bottom:1px solid var(--line); font-weight:600; }
.session h2 span { margin-right:14px; font-variant-numeric:tabular-nums; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:right; padding:3px 8px; font-variant-numeric:tabular-nums; white-space:nowrap; }
th { color:var(--dim); font-weight:500; font-size:11px; }
td:first-child, th:first-child { text-align:left; }
td.down { color:var(--bad); }
canvas { display:block; width:240px; height:28px; margin-left:auto; }
.legend i { display:inline-block; width:10px; height:3px; margin:0 4px 2px 10px; vertical-align:middle; }
`;

const SCRIPT = `
"use strict";
const params = new URLSearchParams(location.search);
const INTERVAL = Math.max(100, Number(params.get("interval")) || 1000);
const HISTORY = 120;
const hist = new Map();      // key -> array of numbers (bounded)
let polls = 0, last = null;

function bytes(n) {
  if (n < 1024) return n + " B";
  const u = ["KiB","MiB","GiB","TiB"]; let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return n.toFixed(n < 10 ? 2 : 1) + " " + u[i];
}
function rate(n) { return (n / 1e6).toFixed(2) + " MB/s"; }
function ms(s) { return (s * 1000).toFixed(1) + " ms"; }
function int(n) { return String(Math.round(n)); }
function dur(s) { s = Math.floor(s); const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60; return (h ? h + "h" : "") + (h || m ? m + "m" : "") + (s % 60) + "s"; }

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
/** Sets a figure: shown text plus raw value and key for readers and tests. */
function fig(e, key, value, fmt) {
  e.dataset.k = key;
  e.dataset.v = String(value);
  e.textContent = value === undefined || value === null ? "\\u2014" : fmt(value);
}
function push(key, v) {
  let a = hist.get(key);
  if (!a) hist.set(key, (a = []));
  a.push(v);
  if (a.length > HISTORY) a.shift();
  return a;
}
/** Draws each series as a line, newest at the right edge; one scale for all when \`shared\`. */
function spark(canvas, series, shared) {
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const c = canvas.getContext("2d");
  c.setTransform(dpr, 0, 0, dpr, 0, 0);
  c.clearRect(0, 0, w, h);
  const top = Math.max(...series.map(([d]) => Math.max(0, ...d))) || 1;
  const step = w / (HISTORY - 1);
  for (const [data, color] of series) {
    if (data.length < 2) continue;
    const max = shared ? top : Math.max(...data) || 1;
    c.strokeStyle = color; c.lineWidth = 1.5; c.beginPath();
    data.forEach((v, i) => {
      const x = w - (data.length - 1 - i) * step, y = h - 2 - (v / max) * (h - 4);
      i ? c.lineTo(x, y) : c.moveTo(x, y);
    });
    c.stroke();
  }
}
function reasons(e, key, m) {
  e.textContent = "";
  if (!m) return;
  for (const [r, n] of Object.entries(m)) { const s = el("span", {}, r + " " + n + "  "); fig(s, key + ":" + r, n, (x) => r + " " + x + "  "); e.appendChild(s); }
}
const sum = (m) => (m ? Object.values(m).reduce((a, b) => a + b, 0) : undefined);

const CARDS = [
  ["sessionsOpen", "sessions open", int], ["stripesOpen", "stripes open", int], ["sessionsTotal", "sessions total", int],
  ["bytesUp", "bytes up", bytes], ["bytesDown", "bytes down", bytes], ["rateUp", "rate up", rate], ["rateDown", "rate down", rate],
  ["resentBytes", "re-sent", bytes], ["ackBytes", "ack bytes", bytes], ["redials", "re-dials", int],
  ["stripeDeaths", "stripe deaths", int], ["sessionsRefused", "sessions refused", int], ["handshakeRejections", "handshakes rejected", int],
  ["budget", "buffer budget", bytes], ["rss", "memory (RSS)", bytes],
];
function cards() {
  const box = document.getElementById("cards");
  for (const [k, label] of CARDS) {
    const c = el("div", { class: "card" });
    c.appendChild(el("div", { class: "v", id: "t-" + k }, "\\u2014"));
    c.appendChild(el("div", { class: "l" }, label));
    c.appendChild(el("div", { class: "reasons", id: "r-" + k }));
    box.appendChild(c);
  }
}

function render(d) {
  const t = d.totals;
  document.getElementById("title").textContent = "tcp-striper " + d.mode;
  document.getElementById("version").textContent = d.version;
  const badge = document.getElementById("state");
  badge.textContent = d.state; badge.className = "badge " + d.state;
  document.getElementById("uptime").textContent = "up " + dur(d.uptimeSeconds);
  const dt = last ? (d.time - last.time) / 1000 : 0;
  const rUp = last && dt > 0 && t.bytesUp !== undefined ? Math.max(0, (t.bytesUp - last.totals.bytesUp) / dt) : undefined;
  const rDown = last && dt > 0 && t.bytesDown !== undefined ? Math.max(0, (t.bytesDown - last.totals.bytesDown) / dt) : undefined;
  const values = {
    sessionsOpen: d.statsAvailable ? t.sessionsOpen : undefined, stripesOpen: d.statsAvailable ? t.stripesOpen : undefined, sessionsTotal: t.sessionsTotal, bytesUp: t.bytesUp, bytesDown: t.bytesDown,
    rateUp: rUp, rateDown: rDown, resentBytes: t.resentBytes, ackBytes: t.ackBytes, redials: t.redials,
    stripeDeaths: sum(t.stripeDeaths), sessionsRefused: sum(t.sessionsRefused), handshakeRejections: sum(t.handshakeRejections),
    budget: d.budget ? d.budget.usedBytes : undefined, rss: d.memory.rssBytes,
  };
  for (const [k, , fmt] of CARDS) fig(document.getElementById("t-" + k), "t:" + k, values[k], fmt);
  document.getElementById("r-budget").textContent = d.budget ? "of " + bytes(d.budget.limitBytes) : "";
  for (const k of ["stripeDeaths", "sessionsRefused", "handshakeRejections"]) reasons(document.getElementById("r-" + k), "t:" + k, t[k]);
  if (rUp !== undefined) { push("total:up", rUp); push("total:down", rDown || 0); }
  spark(document.getElementById("total-chart"), [[hist.get("total:up") || [], "#4aa3ff"], [hist.get("total:down") || [], "#7bd88f"]], true);

  const list = document.getElementById("sessions");
  const seen = new Set();
  for (const s of d.sessions) {
    seen.add(s.id);
    let box = document.getElementById("sess-" + s.id);
    if (!box) {
      box = el("section", { class: "session", id: "sess-" + s.id });
      const h = el("h2");
      for (const k of ["id", "remote", "age", "up", "down", "stripes", "buffer"]) h.appendChild(el("span", { class: "h-" + k }));
      box.appendChild(h);
      const table = el("table");
      const head = el("tr");
      for (const c of ["stripe", "rate", "in flight", "cap", "RTT", "stalls", "re-sent", "sent", "received", "rate / RTT"]) head.appendChild(el("th", {}, c));
      table.appendChild(head);
      box.appendChild(table);
      list.appendChild(box);
    }
    const h = box.querySelector("h2");
    h.querySelector(".h-id").textContent = "session " + s.id;
    h.querySelector(".h-remote").textContent = s.remote + (s.target ? " \u2192 " + s.target : "");
    h.querySelector(".h-age").textContent = dur(s.ageSeconds);
    fig(h.querySelector(".h-up"), "s:" + s.id + ":bytesUp", s.bytesUp, (v) => "up " + bytes(v));
    fig(h.querySelector(".h-down"), "s:" + s.id + ":bytesDown", s.bytesDown, (v) => "down " + bytes(v));
    fig(h.querySelector(".h-stripes"), "s:" + s.id + ":usableStripes", s.usableStripes, (v) => v + "/" + s.stripes.length + " stripes");
    fig(h.querySelector(".h-buffer"), "s:" + s.id + ":sendBufferBytes", s.sendBufferBytes, (v) => "store " + bytes(v));
    const table = box.querySelector("table");
    for (const st of s.stripes) {
      const key = "s:" + s.id + ":" + st.index;
      let row = table.querySelector('tr[data-stripe="' + st.index + '"]');
      if (!row) {
        row = el("tr", { "data-stripe": String(st.index) });
        for (let i = 0; i < 9; i++) row.appendChild(el("td"));
        const cell = el("td"); cell.appendChild(el("canvas")); row.appendChild(cell);
        table.appendChild(row);
      }
      const td = row.children;
      td[0].textContent = "#" + st.index; td[0].className = st.usable ? "" : "down";
      fig(td[1], key + ":rate", st.rateBytesPerSecond, rate);
      fig(td[2], key + ":inflight", st.inflightBytes, bytes);
      // The scheduler's in-flight cap, when it reports one (issue 11); "\u2014" otherwise.
      fig(td[3], key + ":cap", st.capBytes, bytes);
      fig(td[4], key + ":rtt", st.rttSeconds, ms);
      fig(td[5], key + ":stalls", st.stalls, int);
      fig(td[6], key + ":resent", st.resentBytes, bytes);
      fig(td[7], key + ":sent", st.sentBytes, bytes);
      fig(td[8], key + ":received", st.receivedBytes, bytes);
      spark(row.querySelector("canvas"), [[push(key + ":rate", st.rateBytesPerSecond), "#4aa3ff"], [push(key + ":rtt", st.rttSeconds), "#ffb454"]], false);
    }
  }
  for (const box of [...list.children]) {
    const id = box.id.slice(5);
    if (seen.has(id)) continue;
    box.remove();
    for (const k of [...hist.keys()]) if (k.startsWith("s:" + id + ":")) hist.delete(k);
  }
  document.getElementById("more").textContent = d.truncated ? "showing " + d.sessions.length + " of " + d.sessionCount + " sessions" : "";
  const empty = document.getElementById("empty");
  empty.textContent = d.statsAvailable ? "no live sessions" : "this proxy does not report session statistics";
  empty.style.display = d.sessions.length ? "none" : "";
  last = d;
}

async function poll() {
  try {
    const r = await fetch("api/sessions", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    polls++;
    document.body.dataset.polls = String(polls);
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot reach the process: " + e.message;
  }
  setTimeout(poll, INTERVAL);
}
cards();
poll();
`;

/** The dashboard page. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tcp-striper</title><style>${CSS}</style></head>
<body data-polls="0">
<header><h1 id="title">tcp-striper</h1><span class="dim" id="version"></span><span class="badge" id="state">…</span>
<span class="dim" id="uptime"></span><span id="error"></span></header>
<main>
<div class="cards" id="cards"></div>
<div class="wide"><span class="dim">total rate</span><span class="legend"><i style="background:var(--up)"></i>up<i style="background:var(--down)"></i>down</span>
<canvas id="total-chart" style="width:100%;height:60px"></canvas></div>
<div class="legend dim">per stripe: <i style="background:var(--up)"></i>rate<i style="background:var(--rtt)"></i>RTT</div>
<p class="dim" id="more"></p>
<div id="sessions"></div>
<p class="dim" id="empty">no live sessions</p>
</main>
<script>${SCRIPT}</script>
</body></html>
`;
