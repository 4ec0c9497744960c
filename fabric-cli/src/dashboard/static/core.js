// Fabric dashboard, shared parts: state, DOM helpers, formatting, the API client, the
// banner and notices, sparklines. (detail.js: an agent's details and actions; app.js: the
// overview and polling.) Everything from Redis is untrusted text: it goes into the page
// with textContent only.
"use strict";

const state = {
  token: sessionStorage.getItem("fabric-dashboard-token") || "",
  overview: null,
  selected: null,
  tab: "dead",
  detail: null,
  dead: null,
  timer: null,
  interval: 2000,
  hashRead: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Keeps one row per key in `tbody`, in the order of `items`: a row whose key stays is kept
// (so a click or focus on it is never lost to a refresh); new keys get a row from `make`;
// `fill`, if given, (re)fills every row's cells; rows of keys gone are removed.
function syncRows(tbody, items, key, make, fill) {
  const old = new Map();
  for (const tr of tbody.children) old.set(tr.dataset.key, tr);
  const rows = items.map((item) => {
    const k = key(item);
    let tr = old.get(k);
    if (tr) {
      old.delete(k);
    } else {
      tr = make(item);
      tr.dataset.key = k;
    }
    if (fill) fill(tr, item);
    return tr;
  });
  for (const tr of old.values()) tr.remove();
  rows.forEach((tr, i) => {
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
}

// ---------- formatting ----------
function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
}
function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}
function fmtRate(perSec) {
  if (!perSec) return "0";
  if (perSec >= 100) return perSec.toFixed(0);
  if (perSec >= 1) return perSec.toFixed(1);
  return perSec.toFixed(2);
}
function fmtPct(x) {
  if (x === null) return "–";
  if (x === 0) return "0%";
  if (x < 0.001) return "<0.1%";
  return `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;
}
function fmtTime(ms) {
  if (!ms) return "–";
  return new Date(ms).toLocaleTimeString();
}
function idTime(streamId) {
  const ms = Number(String(streamId).split("/").pop().split("-")[0]);
  return Number.isFinite(ms) && ms > 0 ? ms : null;
}
function preview(v, n) {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}
function plural(n, word) {
  return `${fmtNum(n)} ${word}${n === 1 ? "" : "s"}`;
}
function rateOf(lm) {
  return lm && lm.covered_ms > 0 ? lm.processed / (lm.covered_ms / 1000) : 0;
}
function failureOf(lm) {
  if (!lm || lm.covered_ms === 0) return null;
  if (lm.processed === 0) return lm.failed > 0 ? 1 : 0;
  return Math.min(1, lm.failed / lm.processed);
}

// ---------- API ----------
class ApiError extends Error {
  constructor(status, message, unreachable) {
    super(message);
    this.status = status;
    this.unreachable = unreachable;
  }
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  if (state.token) opts.headers["Authorization"] = `Bearer ${state.token}`;
  if (opts.body !== undefined) {
    opts.method = opts.method || "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, "The dashboard server does not answer (was `fabric dashboard` stopped?). Retrying…", false);
  }
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401) {
    showLogin(data && (data.error_description || data.error));
    throw new ApiError(401, "Sign in to see the dashboard.", false);
  }
  if (!resp.ok) {
    const msg = (data && (data.error_description || data.error)) || `HTTP ${resp.status}`;
    throw new ApiError(resp.status, msg, !!(data && data.redis_unreachable));
  }
  return data;
}

// ---------- login ----------
function showLogin(why) {
  $("login").hidden = false;
  $("main").hidden = true;
  $("login-error").textContent = state.token && why ? why : "";
}
$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("fabric-dashboard-token", state.token);
  $("login").hidden = true;
  $("main").hidden = false;
  poll();
});

// ---------- banner and toasts ----------
function banner(title, text) {
  const b = $("banner");
  if (!title) { b.hidden = true; b.replaceChildren(); return; }
  b.replaceChildren(el("strong", { text: title }), el("span", { text }));
  b.hidden = false;
}
function toast(text, bad) {
  const t = el("div", { class: bad ? "toast bad" : "toast", text });
  $("toasts").append(t);
  setTimeout(() => t.remove(), bad ? 7000 : 4000);
}

// ---------- sparklines ----------
function sparkline(svg, values, opts) {
  const w = 200, h = 36, pad = 2;
  const o = opts || {};
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const n = values.length;
  if (n === 0) return svg;
  const max = Math.max(o.min || 1, ...values);
  const x = (i) => (n === 1 ? w : (i / (n - 1)) * w);
  const y = (v) => h - pad - (v / max) * (h - 2 * pad);
  const pts = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `0,${h} ${pts.join(" ")} ${w},${h}`);
  area.setAttribute("class", o.bad ? "area bad" : "area");
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("class", o.bad ? "line bad" : "line");
  svg.append(area, line);
  if (o.title) {
    const t = document.createElementNS(ns, "title");
    t.textContent = o.title;
    svg.append(t);
  }
  return svg;
}
function newSpark(cls) {
  const s = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  s.setAttribute("class", cls);
  return s;
}
// Per second at each sample, averaged over the trailing few seconds (at least 5 s or three
// samples): a handful of events per sample would otherwise draw a comb.
function perSecond(series, key) {
  const t = series.t_ms, v = series[key];
  const window = Math.max(5000, 3 * state.interval);
  const out = [];
  let lo = 0, sum = 0;
  for (let i = 0; i < t.length; i++) {
    sum += v[i];
    while (lo < i && t[i] - t[lo] >= window) { sum -= v[lo]; lo++; }
    const start = lo > 0 ? t[lo - 1] : (series.start_ms || t[0] - state.interval);
    const dt = (t[i] - start) / 1000;
    out.push(dt > 0 ? sum / dt : 0);
  }
  return out;
}
