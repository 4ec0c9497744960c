// Fabric dashboard: an agent's details (dead letters, waiting, pending, consumers and
// workers), the actions on them, and the message drawer.
"use strict";

// ---------- agent detail ----------
function selectedRow() {
  return state.overview && state.overview.agents.find((a) => a.agent === state.selected);
}

function select(agent) {
  state.selected = agent;
  // The address names the agent: a reload or a shared link opens it again.
  history.replaceState(null, "", `#agent=${encodeURIComponent(agent)}`);
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
  history.replaceState(null, "", location.pathname + location.search);
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
      api(`api/agents/${enc}`),
      api(`api/agents/${enc}/dead-letters?count=200`),
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
    const r = await api(`api/agents/${encodeURIComponent(agent)}/dead-letters/requeue`, { body });
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
        const r = await api(`api/agents/${encodeURIComponent(agent)}/dead-letters/purge`, { body: { confirm: agent } });
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
    await api(`api/agents/${encodeURIComponent(a.agent)}/${verb}`, { body: {} });
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
    const d = await api(`api/agents/${encodeURIComponent(agent)}/message?id=${encodeURIComponent(id)}`);
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
