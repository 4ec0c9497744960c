// Fabric dashboard: polls /api/overview, draws the agents table and sparklines, and shows an
// agent's dead letters, waiting and pending messages, consumers and workers.
// Everything from Redis is untrusted text: it is put in the page with textContent only.
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
  busy: false,
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

// ---------- overview ----------
function agentState(a) {
  if (a.paused) return el("span", { class: "pill warn", text: "Paused", title: "An operator paused it: its workers start no new messages until resumed" });
  if (a.live_workers > 0) return el("span", { class: "pill ok", text: `Running · ${a.live_workers}`, title: `${plural(a.live_workers, "live worker process")}` });
  if (a.workers.length > 0) return el("span", { class: "pill bad", text: "Workers gone", title: "Its worker processes stopped or stopped refreshing their presence" });
  if (a.consumers.length > 0) return el("span", { class: "pill idle", text: "Consumers", title: "Read by consumers that did not register as workers (e.g. MCP sessions)" });
  return el("span", { class: "pill idle", text: "No workers", title: "No worker has ever run for this agent: messages wait until one starts" });
}

function numCell(field, n, hotClass) {
  const cls = ["num"];
  if (!n) cls.push("zero");
  else if (hotClass) cls.push(hotClass);
  return el("td", { class: cls.join(" "), "data-field": field, text: fmtNum(n) });
}

function consumersCell(a) {
  if (a.consumers.length === 0) {
    return el("td", { class: "muted small", text: a.group_exists ? "none" : "no group yet" });
  }
  const chips = a.consumers.slice(0, 6).map((c) =>
    el("span", {
      class: c.state === "gone" ? "chip gone" : "chip",
      title: `${c.name}: ${c.pending} pending, idle ${fmtDuration(c.idle_ms)}${c.host ? ` · ${c.host} pid ${c.pid} (${c.state})` : ""}`,
    }, `${c.host ? `${c.host}:${c.pid}` : c.name.slice(0, 18)} · ${fmtDuration(c.idle_ms)}`));
  if (a.consumers.length > 6) chips.push(el("span", { class: "chip", text: `+${a.consumers.length - 6}` }));
  return el("td", {}, el("div", { class: "consumers" }, chips));
}

function fillAgentRow(tr, a) {
  const rate = rateOf(a.last_minute);
  const fail = failureOf(a.last_minute);
  tr.replaceChildren(
    el("td", {}, el("span", { class: "agent-name", "data-field": "agent", text: a.agent })),
    el("td", { "data-field": "state" }, agentState(a)),
    numCell("depth", a.depth, a.depth > 0 ? "hot" : null),
    numCell("pending", a.pending),
    numCell("lag", a.lag),
    numCell("dead", a.dead_letters, "dead-hot"),
    el("td", {}, el("div", { class: "rate" },
      sparkline(newSpark("spark"), perSecond(a.series, "processed"), { title: "processed per second" }),
      el("span", { class: "n", "data-field": "rate", text: `${fmtRate(rate)}/s` }))),
    el("td", {}, el("div", { class: "rate" },
      sparkline(newSpark("spark"), perSecond(a.series, "failed"), { bad: true, min: 0.5, title: "dead-lettered per second" }),
      el("span", { class: "n", "data-field": "failure", text: fmtPct(fail) }))),
    consumersCell(a),
  );
}

function renderOverview(o) {
  state.overview = o;
  state.interval = Math.max(500, o.sample_interval_ms || 2000);
  $("redis-url").textContent = o.redis.url;
  const dot = $("conn-dot");
  if (o.redis.ok) {
    dot.className = "dot ok";
    $("conn-text").textContent = "Connected";
    banner(null);
  } else if (o.redis.error) {
    dot.className = "dot bad";
    $("conn-text").textContent = "Redis unreachable";
    const since = o.redis.error_since_ms ? ` since ${fmtTime(o.redis.error_since_ms)}` : "";
    const stale = o.redis.last_sample_ms ? ` The figures below are from ${fmtTime(o.redis.last_sample_ms)}.` : "";
    banner(`Cannot read Redis at ${o.redis.url}${since}`,
      `${o.redis.error}. Check that redis-server runs and that --redis-url / REDIS_URL is right; this page retries every ${fmtDuration(state.interval)}.${stale}`);
  } else {
    dot.className = "dot";
    $("conn-text").textContent = "Connecting…";
  }
  $("updated").textContent = o.redis.last_sample_ms ? `updated ${fmtTime(o.redis.last_sample_ms)}` : "";

  const agents = o.agents;
  const totalDepth = agents.reduce((s, a) => s + a.depth, 0);
  const totalDead = agents.reduce((s, a) => s + a.dead_letters, 0);
  const live = agents.reduce((s, a) => s + a.live_workers, 0);
  $("stat-agents").textContent = fmtNum(agents.length);
  $("stat-workers").textContent = `${plural(live, "live worker")}`;
  $("stat-depth").textContent = fmtNum(totalDepth);
  $("stat-dead").textContent = fmtNum(totalDead);
  const lm = o.total.last_minute;
  $("stat-rate").textContent = fmtRate(rateOf(lm));
  $("stat-fail").textContent = fmtPct(failureOf(lm));
  sparkline($("spark-processed"), perSecond(o.total.series, "processed"), { title: "processed per second" });
  sparkline($("spark-failed"), perSecond(o.total.series, "failed"), { bad: true, min: 0.5, title: "dead-lettered per second" });
  const mins = Math.round((o.total.series.t_ms.length * state.interval) / 60000);
  $("legend-window").textContent = mins >= 1 ? `${mins} min` : "few seconds";

  syncRows($("agents-body"), agents, (a) => a.agent, (a) => el("tr", {
    "data-agent": a.agent,
    tabindex: "0",
    title: "Click for dead letters, messages and workers",
    onclick: () => select(a.agent),
    onkeydown: (ev) => { if (ev.key === "Enter") select(a.agent); },
  }), fillAgentRow);
  for (const tr of $("agents-body").children) tr.classList.toggle("selected", tr.dataset.key === state.selected);
  $("agents-table").hidden = agents.length === 0;
  $("agents-empty").hidden = agents.length !== 0 || !o.redis.ok;
  if (state.selected && !agents.some((a) => a.agent === state.selected)) closeDetail();
  if (state.selected) renderDetailHeader();
}

// ---------- agent detail ----------
function selectedRow() {
  return state.overview && state.overview.agents.find((a) => a.agent === state.selected);
}

function select(agent) {
  state.selected = agent;
  state.detail = null;
  state.dead = null;
  $("detail").hidden = false;
  document.querySelectorAll("#agents-body tr").forEach((tr) =>
    tr.classList.toggle("selected", tr.dataset.agent === agent));
  renderDetailHeader();
  refreshDetail();
  $("detail").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function closeDetail() {
  state.selected = null;
  $("detail").hidden = true;
  document.querySelectorAll("#agents-body tr.selected").forEach((tr) => tr.classList.remove("selected"));
}
$("close-detail").addEventListener("click", closeDetail);

function renderDetailHeader() {
  const a = selectedRow();
  if (!a) return;
  $("detail-title").replaceChildren(el("span", { text: a.agent }), " ", agentState(a));
  $("pause-btn").textContent = a.paused ? "Resume" : "Pause";
  $("pause-btn").title = a.paused ? "Let its workers read again (within a second)" : "Stop its workers from starting new messages (within a second); messages keep arriving and wait";
  $("group-name").textContent = a.group;
  renderWorkers(a);
}

document.querySelectorAll(".tab").forEach((t) =>
  t.addEventListener("click", () => {
    state.tab = t.dataset.tab;
    document.querySelectorAll(".tab").forEach((x) => x.classList.toggle("active", x === t));
    for (const name of ["dead", "waiting", "pending", "workers"]) $(`tab-${name}`).hidden = name !== state.tab;
  }));

async function refreshDetail() {
  const agent = state.selected;
  if (!agent) return;
  const enc = encodeURIComponent(agent);
  try {
    const [detail, dead] = await Promise.all([
      api(`/api/agents/${enc}`),
      api(`/api/agents/${enc}/dead-letters?count=200`),
    ]);
    if (state.selected !== agent) return;
    state.detail = detail;
    state.dead = dead;
    renderDead(dead);
    renderWaiting(detail);
    renderPending(detail);
  } catch (e) {
    if (e.status !== 401 && !e.unreachable) toast(e.message, true);
  }
}

function clickable(tr, agent, id) {
  tr.classList.add("clickable");
  tr.title = "Click for the message's details";
  tr.addEventListener("click", () => openMessage(agent, id));
  return tr;
}

function renderDead(d) {
  $("tab-dead-count").textContent = fmtNum(d.total);
  $("dead-summary").textContent = d.total === 0 ? "" : d.total > d.items.length
    ? `Showing the oldest ${fmtNum(d.items.length)} of ${fmtNum(d.total)}`
    : `${plural(d.total, "dead letter")}, oldest first`;
  $("requeue-all").disabled = d.total === 0;
  $("purge-all").disabled = d.total === 0;
  // A dead letter never changes: its row is kept as long as it is there.
  syncRows($("dead-body"), d.items, (x) => x.dead_id, (x) => {
    const m = x.message || {};
    const tr = el("tr", { "data-dead-id": x.dead_id },
      el("td", { class: "mono", text: x.dead_at ? x.dead_at.replace("T", " ").slice(0, 19) : "–" }),
      el("td", {}, el("span", { class: "pill bad", text: x.reason })),
      el("td", { text: m.message_type || "–" }),
      el("td", { text: m.from_agent || "–" }),
      el("td", { class: "num", text: fmtNum(x.attempts) }),
      el("td", { class: "error-cell", title: x.error, text: x.error || "–" }),
      el("td", { class: "num" }, el("button", {
        class: "btn small",
        type: "button",
        "data-action": "requeue",
        "data-dead-id": x.dead_id,
        title: "Put it back into the inbox as a fresh first attempt",
        onclick: (ev) => { ev.stopPropagation(); requeue([x.dead_id]); },
        text: "Requeue",
      })));
    return clickable(tr, d.agent, x.dead_id);
  });
  $("dead-table").hidden = d.items.length === 0;
  $("dead-empty").hidden = d.items.length !== 0;
}

function renderWaiting(d) {
  syncRows($("waiting-body"), d.waiting, (w) => w.stream_id, (w) => {
    const m = w.message || {};
    return clickable(el("tr", {},
      el("td", { class: "mono", text: w.stream_id }),
      el("td", { text: m.message_type || "(not a valid message)" }),
      el("td", { text: m.from_agent || "–" }),
      el("td", { text: fmtTime(idTime(w.stream_id)) }),
      el("td", { class: "num", text: w.attempt }),
      el("td", { class: "payload-cell", text: m.payload !== undefined ? preview(m.payload, 120) : preview(w.raw_data || "", 120) })), d.agent, w.stream_id);
  });
  $("waiting-empty").hidden = d.waiting.length !== 0;
}

function renderPending(d) {
  syncRows($("pending-body"), d.pending, (p) => p.stream_id, (p) => clickable(el("tr", {}), d.agent, p.stream_id),
    (tr, p) => tr.replaceChildren(
      el("td", { class: "mono", text: p.stream_id }),
      el("td", { class: "mono", text: p.consumer }),
      el("td", { class: "num", text: fmtDuration(p.idle_ms) }),
      el("td", { class: "num", text: p.deliveries }),
      el("td", { class: "num", text: fmtDuration(p.age_ms) })));
  $("pending-empty").hidden = d.pending.length !== 0;
}

function renderWorkers(a) {
  const now = state.overview ? state.overview.now_ms : Date.now();
  const pill = (s) => el("span", { class: `pill ${s === "live" ? "ok" : s === "gone" ? "bad" : "idle"}`, text: s || "unregistered" });
  $("consumers-body").replaceChildren(...a.consumers.map((c) => el("tr", {},
    el("td", { class: "mono", text: c.name }),
    el("td", { text: c.host ? `${c.host} (pid ${c.pid})` : "–" }),
    el("td", {}, pill(c.state)),
    el("td", { class: "num", text: fmtNum(c.pending) }),
    el("td", { class: "num", text: fmtDuration(c.idle_ms) }))));
  $("consumers-empty").hidden = a.consumers.length !== 0;
  $("workers-body").replaceChildren(...a.workers.map((w) => el("tr", {},
    el("td", { text: w.host }),
    el("td", { class: "num", text: w.pid }),
    el("td", {}, pill(w.state)),
    el("td", { text: fmtTime(w.started_ms) }),
    el("td", { text: `${fmtDuration(Math.max(0, now - w.seen_ms))} ago` }),
    el("td", { class: "small", text: (w.message_types || []).join(", ") || "–" }),
    el("td", { class: "muted small", text: w.version || "–" }))));
  $("workers-empty").hidden = a.workers.length !== 0;
}

// ---------- actions ----------
async function requeue(ids) {
  const agent = state.selected;
  const body = ids ? { ids } : { all: true };
  try {
    const r = await api(`/api/agents/${encodeURIComponent(agent)}/dead-letters/requeue`, { body });
    toast(`Requeued ${plural(r.requeued, "message")} into ${r.stream}${r.not_found ? ` (${r.not_found} no longer there)` : ""}`);
  } catch (e) {
    toast(`Requeue failed: ${e.message}`, true);
  }
  refreshDetail();
  poll();
}
$("requeue-all").addEventListener("click", () => {
  const d = state.dead;
  confirmAction("Requeue all dead letters?",
    `${plural(d ? d.total : 0, "dead letter")} of ${state.selected} go back into its inbox as fresh first attempts.`,
    "Requeue all", false, () => requeue(null));
});
$("purge-all").addEventListener("click", () => {
  const agent = state.selected;
  const d = state.dead;
  confirmAction(`Purge ${agent}'s dead letters?`,
    `This deletes ${plural(d ? d.total : 0, "dead letter")} for good. They cannot be requeued or inspected afterwards.`,
    "Delete for good", true, async () => {
      try {
        const r = await api(`/api/agents/${encodeURIComponent(agent)}/dead-letters/purge`, { body: { confirm: agent } });
        toast(`Purged ${plural(r.purged, "dead letter")} of ${agent}`);
      } catch (e) {
        toast(`Purge failed: ${e.message}`, true);
      }
      refreshDetail();
      poll();
    });
});
$("pause-btn").addEventListener("click", async () => {
  const a = selectedRow();
  if (!a) return;
  const verb = a.paused ? "resume" : "pause";
  try {
    await api(`/api/agents/${encodeURIComponent(a.agent)}/${verb}`, { body: {} });
    toast(a.paused ? `${a.agent} resumed: its workers read again` : `${a.agent} paused: its workers start no new messages`);
  } catch (e) {
    toast(`Could not ${verb}: ${e.message}`, true);
  }
  poll();
});

// ---------- confirmation ----------
let pendingConfirm = null;
function confirmAction(title, text, okText, danger, fn) {
  $("modal-title").textContent = title;
  $("modal-text").textContent = text;
  $("modal-ok").textContent = okText;
  $("modal-ok").className = danger ? "btn danger" : "btn primary";
  pendingConfirm = fn;
  $("modal").hidden = false;
  $("modal-cancel").focus();
}
function closeModal() { $("modal").hidden = true; pendingConfirm = null; }
$("modal-cancel").addEventListener("click", closeModal);
$("modal-ok").addEventListener("click", () => { const fn = pendingConfirm; closeModal(); if (fn) fn(); });
$("modal").addEventListener("click", (ev) => { if (ev.target === $("modal")) closeModal(); });

// ---------- message drawer ----------
function kv(pairs) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    dl.append(el("dt", { text: k }), el("dd", { class: "mono", text: typeof v === "string" ? v : JSON.stringify(v) }));
  }
  return dl;
}
function locationText(loc) {
  switch (loc.state) {
    case "queued": return `Waiting in the ${loc.lane ? `${loc.lane} lane` : "inbox"}, not yet delivered`;
    case "pending": return `Being handled by ${loc.consumer} (delivered ${loc.deliveries}×, idle ${fmtDuration(loc.idle_ms)})`;
    case "acknowledged": return "Handled (acknowledged); kept in the stream until trimmed";
    case "retry": return `Failed; retried in ${fmtDuration(loc.due_in_ms)}`;
    case "scheduled": return `Scheduled; delivered in ${fmtDuration(loc.due_in_ms)}`;
    case "dead_letter": return `Dead letter (${loc.reason}): ${loc.error}`;
    default: return loc.state;
  }
}
async function openMessage(agent, id) {
  $("drawer").hidden = false;
  $("drawer-backdrop").hidden = false;
  const body = $("drawer-body");
  body.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    const d = await api(`/api/agents/${encodeURIComponent(agent)}/message?id=${encodeURIComponent(id)}`);
    const m = d.message || {};
    const loc = d.location || {};
    const parts = [
      el("div", { class: `location pill ${loc.state === "dead_letter" ? "bad" : loc.state === "pending" ? "warn" : "ok"}`, "data-field": "location", text: locationText(loc) }),
      el("h3", { text: "Envelope" }),
      kv([["id", m.id], ["type", m.message_type], ["from", m.from_agent], ["to", m.to_agent], ["sender (verified)", m.sender], ["sent", m.timestamp], ["priority", m.priority], ["ttl (s)", m.ttl_seconds], ["reply to", m.reply_to], ["correlation id", m.correlation_id]]),
      el("h3", { text: "Payload" }),
      el("pre", { class: "json", "data-field": "payload", text: d.message ? JSON.stringify(m.payload, null, 2) : (d.raw_data || "(none)") }),
      el("h3", { text: "Headers" }),
      m.headers && Object.keys(m.headers).length ? kv(Object.entries(m.headers)) : el("p", { class: "muted", text: "No headers." }),
      el("h3", { text: "Delivery" }),
      kv([["stored in", d.key], ["entry id", d.id], ["attempt", d.attempt], ["last error", d.last_error], ["decode error", d.decode_error]]),
    ];
    if (d.groups && d.groups.length) {
      parts.push(el("h3", { text: "Consumer groups" }), kv(d.groups.map((g) => [g.group, g.consumer ? `${g.state} by ${g.consumer} (${g.deliveries}×, idle ${fmtDuration(g.idle_ms)})` : g.state])));
    }
    if (d.fields && Object.keys(d.fields).length) parts.push(el("h3", { text: "Other fields" }), kv(Object.entries(d.fields)));
    if (loc.state === "dead_letter") {
      parts.push(el("div", { class: "toolbar" }, el("button", {
        class: "btn primary", type: "button", text: "Requeue this message",
        onclick: () => { closeDrawer(); requeue([id]); },
      })));
    }
    body.replaceChildren(...parts);
  } catch (e) {
    body.replaceChildren(el("p", { class: "error-text", text: e.message }));
  }
}
function closeDrawer() { $("drawer").hidden = true; $("drawer-backdrop").hidden = true; }
$("close-drawer").addEventListener("click", closeDrawer);
$("drawer-backdrop").addEventListener("click", closeDrawer);
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") { closeModal(); closeDrawer(); }
});

// ---------- polling ----------
async function poll() {
  clearTimeout(state.timer);
  try {
    const o = await api("/api/overview");
    renderOverview(o);
    if (state.selected && o.redis.ok) await refreshDetail();
  } catch (e) {
    // Signed out: polling starts again when a token is entered.
    if (e.status === 401) return;
    $("conn-dot").className = "dot bad";
    $("conn-text").textContent = "Dashboard unreachable";
    banner("The dashboard does not answer", e.message);
  }
  state.timer = setTimeout(poll, state.interval);
}

poll();
