// Fabric dashboard: polls /api/overview and draws the summary, the agents table and the
// sparklines (core.js and detail.js are loaded first).
"use strict";

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
  // Before the first successful sample there is nothing to count: dashes, not zeros.
  const never = !o.redis.last_sample_ms;
  const show = (text) => (never ? "–" : text);
  $("stat-agents").textContent = show(fmtNum(agents.length));
  $("stat-workers").textContent = show(plural(live, "live worker"));
  $("stat-depth").textContent = show(fmtNum(totalDepth));
  $("stat-dead").textContent = show(fmtNum(totalDead));
  const lm = o.total.last_minute;
  $("stat-rate").textContent = show(fmtRate(rateOf(lm)));
  $("stat-fail").textContent = show(fmtPct(failureOf(lm)));
  sparkline($("spark-processed"), perSecond(o.total.series, "processed"), { title: "processed per second" });
  sparkline($("spark-failed"), perSecond(o.total.series, "failed"), { bad: true, min: 0.5, title: "dead-lettered per second" });
  const ts = o.total.series;
  const spanMs = ts.t_ms.length ? ts.t_ms[ts.t_ms.length - 1] - (ts.start_ms || ts.t_ms[0]) : 0;
  const mins = Math.round(spanMs / 60000);
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
  $("agents-nodata").hidden = !never || !o.redis.error;
  if (!state.hashRead && o.redis.last_sample_ms) {
    state.hashRead = true;
    const m = /^#agent=(.+)$/.exec(location.hash);
    const wanted = m && decodeURIComponent(m[1]);
    if (wanted && agents.some((a) => a.agent === wanted)) select(wanted);
  }
  if (state.selected && !agents.some((a) => a.agent === state.selected)) closeDetail();
  if (state.selected) renderDetailHeader();
}

// ---------- polling ----------
async function poll() {
  clearTimeout(state.timer);
  try {
    const o = await api("api/overview");
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
