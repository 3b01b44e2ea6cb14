// durably's web view. Every stored string is put in the page with
// textContent (or as a text node): nothing read from the database is ever
// parsed as HTML. The server's Content-Security-Policy allows no inline code.
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`).getAttribute("content");
const CSRF = meta("durably-csrf");
const ACTIONS = meta("durably-actions") === "on";
const INTERVAL = Math.max(200, parseInt(meta("durably-interval"), 10) || 1000);
const main = document.getElementById("main");
let timer = null;
let generation = 0; // bumped at each route change: a late answer for an old page is dropped

function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "className") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(ts) {
  if (ts === null || ts === undefined) return "";
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(2)} s`;
  return `${(s / 60).toFixed(1)} min`;
}

const json = (v) => JSON.stringify(v, null, 2);
const status = (s) => h("span", { className: `status s-${s}`, text: s });
const wfLink = (id) => h("a", { href: `#/wf/${encodeURIComponent(id)}`, text: id });

function setLive(ok, text) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.classList.toggle("stale", !ok);
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const doc = await response.json();
  if (!response.ok) throw new Error(doc.error || response.statusText);
  return doc;
}

// Poll `load` every INTERVAL ms while this page is shown (and the tab visible).
function poll(load) {
  const mine = generation;
  const tick = async () => {
    if (mine !== generation) return;
    if (!document.hidden) {
      try {
        await load(mine);
        setLive(true, `live · ${new Date().toLocaleTimeString()}`);
      } catch (err) {
        setLive(false, `stale: ${err.message}`);
      }
    }
    if (mine === generation) timer = setTimeout(tick, INTERVAL);
  };
  tick();
}

function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { text: t })))), h("tbody", {}, rows));
}

// -- workflows ------------------------------------------------------------------------------

const FILTERS = ["status", "name", "id_prefix", "queue", "parent", "since", "until", "limit", "offset", "oldest_first"];

function hashQuery() {
  const at = location.hash.indexOf("?");
  return new URLSearchParams(at < 0 ? "" : location.hash.slice(at + 1));
}

function setFilters(params) {
  for (const [k, v] of [...params.entries()]) if (!v) params.delete(k);
  const text = params.toString();
  location.hash = text ? `#/?${text}` : "#/";
}

function filterForm(params, statuses) {
  const field = (name, label, attrs) =>
    h("label", {}, label, h("input", { name, value: params.get(name) || "", ...attrs }));
  const select = h("select", { name: "status" }, h("option", { value: "", text: "any" }),
    statuses.map((s) => h("option", { value: s, text: s, selected: params.get("status") === s ? "selected" : null })));
  const form = h("form", { className: "filters", id: "filters" },
    h("label", {}, "status", select),
    field("id_prefix", "id prefix", { placeholder: "order-", size: 14 }),
    field("name", "name", { size: 12 }),
    field("queue", "queue", { size: 10 }),
    field("parent", "parent id", { size: 14 }),
    field("since", "since", { placeholder: "15m, 2026-01-31", size: 14 }),
    field("until", "until", { size: 12 }),
    h("label", {}, "oldest first", h("input", { type: "checkbox", name: "oldest_first", checked: params.get("oldest_first") ? "checked" : null })),
    h("button", { type: "submit", text: "Filter" }),
    h("button", { type: "button", text: "Clear", onclick: () => setFilters(new URLSearchParams()) }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) next.set(k, k === "oldest_first" ? "1" : String(v));
    setFilters(next);
  });
  select.addEventListener("change", () => form.requestSubmit());
  return form;
}

function showWorkflows() {
  const params = hashQuery();
  const query = new URLSearchParams();
  for (const k of FILTERS) if (params.get(k)) query.set(k, params.get(k));
  const counts = h("div", { className: "counts", id: "counts" });
  const body = h("tbody", { id: "workflow-rows" });
  const pager = h("div", { className: "pager" });
  const error = h("div", { className: "error", id: "list-error" });
  let formShown = false;
  const seen = new Set();
  let first = true;
  main.replaceChildren(h("h1", { text: "Workflows" }), counts, error,
    table(["id", "status", "name", "created (UTC)", "updated (UTC)", "queue", "parked"], []), pager);
  main.querySelector("table").replaceChild(body, main.querySelector("tbody"));
  poll(async (mine) => {
    let doc;
    try {
      doc = await getJSON(`/api/workflows?${query}`);
      error.textContent = "";
    } catch (err) {
      error.textContent = err.message;
      throw err;
    }
    if (mine !== generation) return;
    if (!formShown) {
      main.insertBefore(filterForm(params, doc.statuses), counts);
      formShown = true;
    }
    counts.replaceChildren(...doc.statuses.map((s) => h("span", {
      className: `chip${params.get("status") === s ? " on" : ""}`, "data-status": s, text: `${s} ${doc.counts[s] ?? 0}`,
      onclick: () => { const p = hashQuery(); p.set("status", p.get("status") === s ? "" : s); p.delete("offset"); setFilters(p); },
    })));
    body.replaceChildren(...doc.workflows.map((w) => h("tr", { className: !first && !seen.has(w.workflow_id) ? "new" : null, "data-id": w.workflow_id },
      h("td", { className: "id" }, wfLink(w.workflow_id)), h("td", {}, status(w.status)), h("td", { text: w.name }),
      h("td", { text: when(w.created_at) }), h("td", { text: when(w.updated_at) }), h("td", { text: w.queue || "" }),
      h("td", { text: w.parked || "" }))));
    doc.workflows.forEach((w) => seen.add(w.workflow_id));
    first = false;
    if (!doc.workflows.length) body.append(h("tr", {}, h("td", { colspan: 7, className: "muted", text: "no workflows match" })));
    const offset = parseInt(params.get("offset") || "0", 10);
    const limit = parseInt(params.get("limit") || "50", 10);
    const page = (to) => () => { const p = hashQuery(); p.set("offset", String(Math.max(0, to))); setFilters(p); };
    pager.replaceChildren(
      offset > 0 ? h("button", { type: "button", text: "← newer", onclick: page(offset - limit) }) : "",
      h("span", { className: "muted", text: `rows ${offset + 1}–${offset + doc.workflows.length}` }),
      doc.more ? h("button", { type: "button", text: "older →", onclick: page(offset + limit) }) : "");
  });
}

// -- one workflow ---------------------------------------------------------------------------

function timeline(steps, created) {
  if (!steps.length) return h("p", { className: "muted", text: "no steps recorded" });
  const t0 = Math.min(created, ...steps.map((s) => s.started_at ?? s.recorded_at));
  const end = Math.max(...steps.map((s) => s.recorded_at));
  const span = Math.max(end - t0, 1e-6);
  return table(["#", "step", "started (+ from start)", "duration", "", "outcome"], steps.map((s) => {
    const start = s.started_at ?? s.recorded_at;
    const bar = h("span", { className: s.error ? "failed" : null });
    bar.style.left = `${((start - t0) / span) * 100}%`;
    bar.style.width = `${((s.recorded_at - start) / span) * 100}%`;
    const outcome = s.error ? h("span", { className: "error", text: `${s.error.type}: ${s.error.message}` }) : JSON.stringify(s.output);
    return h("tr", { className: "step" }, h("td", { className: "num", text: s.position }), h("td", { text: s.name }),
      h("td", { text: `+${seconds(start - t0)}` }), h("td", { className: "num", text: seconds(s.duration) }),
      h("td", {}, h("div", { className: "bar" }, bar)), h("td", {}, outcome));
  }));
}

function tree(nodes) {
  if (!nodes.length) return h("p", { className: "muted", text: "no children" });
  return h("ul", { className: "tree" }, nodes.map((n) => h("li", {}, wfLink(n.workflow_id), " ", status(n.status), " ",
    h("span", { className: "muted", text: n.name }), n.children.length ? tree(n.children) : null)));
}

// The last action's outcome, kept across the page's re-renders (the poll
// redraws the workflow as the action changes it).
const lastAction = { id: null, text: "" };

function note(workflowId, out, text) {
  lastAction.id = workflowId;
  lastAction.text = text;
  const shown = document.getElementById("action-result") || out;
  shown.textContent = text;
}

async function act(action, workflowId, extra, out) {
  note(workflowId, out, "…");
  try {
    const response = await fetch(`/api/actions/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify({ workflow_id: workflowId, ...extra }),
    });
    const doc = await response.json();
    if (!response.ok) throw new Error(doc.error || response.statusText);
    note(workflowId, out, `${action}: ${doc.workflow_id} is ${doc.status}`);
    if (action === "fork") location.hash = `#/wf/${encodeURIComponent(doc.workflow_id)}`;
  } catch (err) {
    note(workflowId, out, `${action} refused: ${err.message}`);
  }
}

function actions(w) {
  if (!ACTIONS) return null;
  const out = h("span", { className: "muted", id: "action-result", text: lastAction.id === w.workflow_id ? lastAction.text : "" });
  const from = h("input", { type: "number", min: 0, value: 0, size: 4, id: "fork-from" });
  return h("div", { className: "actions" },
    h("button", { type: "button", className: "danger", id: "do-cancel", text: "Cancel", disabled: w.terminal ? "disabled" : null,
      onclick: () => act("cancel", w.workflow_id, {}, out) }),
    h("button", { type: "button", id: "do-resume", text: "Resume", onclick: () => act("resume", w.workflow_id, {}, out) }),
    h("button", { type: "button", id: "do-fork", text: "Fork from step", onclick: () => act("fork", w.workflow_id, { from_step: parseInt(from.value, 10) || 0 }, out) }),
    from, out);
}

function errorBlock(w) {
  if (!w.error) return null;
  const d = w.error_detail || w.error;
  return h("div", {}, h("h2", { text: "Error" }), h("pre", { className: "error", id: "wf-error", text: `${d.type}: ${d.message}` }),
    d.traceback ? h("pre", { text: d.traceback }) : h("p", { className: "muted", text: "no traceback stored (the exception's type, message and attributes are)" }),
    d.args || d.fields || d.state ? h("pre", { text: json({ args: d.args, fields: d.fields, state: d.state }) }) : null);
}

function renderWorkflow(doc) {
  const w = doc.workflow;
  const facts = [["status", status(w.status)], ["name", w.name], ["parent", w.parent_id ? wfLink(w.parent_id) : ""],
    ["parked", w.parked || ""], ["queue", w.queue || ""], ["priority", w.priority ?? ""], ["executor", w.executor || ""],
    ["created (UTC)", when(w.created_at)], ["updated (UTC)", when(w.updated_at)], ["deadline (UTC)", when(w.deadline)],
    ["recovery attempts", w.recovery_attempts],
    ["trace id", w.trace_id ? h("code", { id: "trace-id", text: w.trace_id }) : h("span", { className: "muted", id: "trace-id", text: "not recorded (tracing off)" })]];
  return [
    h("h1", {}, "Workflow ", h("code", { id: "wf-id", text: w.workflow_id })),
    w.parked ? h("div", { className: "notice", id: "parked", text: `Parked: ${w.parked}` }) : null,
    actions(w),
    h("table", { className: "facts" }, h("tbody", {}, facts.map(([k, v]) => h("tr", {}, h("td", { text: k }), h("td", {}, v))))),
    h("h2", { text: "Input" }), h("pre", { id: "wf-input", text: json(w.input) }),
    w.status === "SUCCESS" ? [h("h2", { text: "Output" }), h("pre", { id: "wf-output", text: json(w.output) })] : null,
    errorBlock(w),
    h("h2", { text: `Steps (${doc.steps.length})` }), h("div", { id: "timeline" }, timeline(doc.steps, w.created_at)),
    h("h2", { text: "Children" }), h("div", { id: "children" }, tree(doc.children)),
    h("h2", { text: "Events" }), Object.keys(doc.events).length
      ? table(["key", "value"], Object.entries(doc.events).map(([k, v]) => h("tr", {}, h("td", { text: k }), h("td", {}, h("code", { text: JSON.stringify(v) })))))
      : h("p", { className: "muted", text: "no events" }),
    h("h2", { text: "Messages waiting" }), doc.messages.length
      ? table(["id", "topic", "payload", "sent (UTC)"], doc.messages.map((m) => h("tr", {}, h("td", { text: m.id }), h("td", { text: m.topic ?? "" }),
        h("td", {}, h("code", { text: JSON.stringify(m.payload) })), h("td", { text: when(m.created_at) }))))
      : h("p", { className: "muted", text: "none waiting" }),
  ];
}

function showWorkflow(id) {
  let last = "";
  poll(async (mine) => {
    let doc;
    try {
      doc = await getJSON(`/api/workflow?id=${encodeURIComponent(id)}`);
    } catch (err) {
      main.replaceChildren(h("h1", { text: "Workflow" }), h("p", { className: "error", text: err.message }));
      throw err;
    }
    if (mine !== generation) return;
    const key = JSON.stringify({ ...doc, at: 0 });
    if (key === last) return; // unchanged: keep the page (and the fork input) as it is
    last = key;
    main.replaceChildren(...renderWorkflow(doc).flat().filter((n) => n));
  });
}

// -- queues and schedules --------------------------------------------------------------------

function showQueues() {
  const body = h("tbody", { id: "queue-rows" });
  main.replaceChildren(h("h1", { text: "Queues" }), h("table", {},
    h("thead", {}, h("tr", {}, ["queue", "enqueued", "running", "concurrency", "rate limit", "declared (UTC)"].map((t) => h("th", { text: t })))), body));
  poll(async (mine) => {
    const doc = await getJSON("/api/queues");
    if (mine !== generation) return;
    body.replaceChildren(...doc.queues.map((q) => h("tr", {}, h("td", { text: q.queue }), h("td", { className: "num", text: q.enqueued }),
      h("td", { className: "num", text: q.running }),
      h("td", { text: q.declared_at === null ? "" : q.concurrency ?? "none" }),
      h("td", { text: q.rate_limit ? `${q.rate_limit.starts} per ${q.rate_limit.seconds} s` : "" }), h("td", { text: when(q.declared_at) }))));
    if (!doc.queues.length) body.append(h("tr", {}, h("td", { colspan: 6, className: "muted", text: "no queues" })));
  });
}

function showSchedules() {
  const body = h("tbody", { id: "schedule-rows" });
  main.replaceChildren(h("h1", { text: "Schedules" }), h("table", {},
    h("thead", {}, h("tr", {}, ["schedule", "cron", "workflow", "zone", "paused", "missed slots", "last slot", "next fire"].map((t) => h("th", { text: t })))), body));
  poll(async (mine) => {
    const doc = await getJSON("/api/schedules");
    if (mine !== generation) return;
    body.replaceChildren(...doc.schedules.map((s) => h("tr", {}, h("td", { text: s.name }), h("td", {}, h("code", { text: s.cron })),
      h("td", { text: s.workflow }), h("td", { text: s.tz || "UTC" }), h("td", { text: s.paused ? "paused" : "" }),
      h("td", { text: s.missed }), h("td", { text: s.last_slot }), h("td", { text: s.paused ? "(paused)" : s.next_slot || "" }))));
    if (!doc.schedules.length) body.append(h("tr", {}, h("td", { colspan: 8, className: "muted", text: "no schedules" })));
  });
}

// -- routing ----------------------------------------------------------------------------------

function route() {
  generation += 1;
  clearTimeout(timer);
  const hash = location.hash || "#/";
  for (const id of ["nav-workflows", "nav-queues", "nav-schedules"]) document.getElementById(id).classList.remove("current");
  if (hash.startsWith("#/wf/")) {
    showWorkflow(decodeURIComponent(hash.slice(5)));
  } else if (hash === "#/queues") {
    document.getElementById("nav-queues").classList.add("current");
    showQueues();
  } else if (hash === "#/schedules") {
    document.getElementById("nav-schedules").classList.add("current");
    showSchedules();
  } else {
    document.getElementById("nav-workflows").classList.add("current");
    showWorkflows();
  }
}

document.getElementById("mode").textContent = ACTIONS ? "actions on" : "read-only";
window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => { if (!document.hidden) route(); });
route();
