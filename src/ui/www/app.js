// ferry dashboard (docs/dashboard.md). Plain JS, no dependencies: the page
// polls /api/state every poll_ms and updates the DOM in place (rows are
// kept by key and only changed text is written), so 50 hosts and 500 VMs
// stay cheap. Every text from a host goes in with textContent, never as
// HTML.
"use strict";

const MiB = 1024 * 1024;
const $ = (sel) => document.querySelector(sel);
let state = null;
let view = "overview";
let vmPage = null;           // {host, name} on the VM page
const stats = { polls: 0, errors: 0, fetchMs: 0, renderMs: 0, maxRenderMs: 0, bytes: 0, renders: [] };
window.ferryStats = stats;   // read by the browser tests

// ------------------------------------------------------------------ helpers

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
function setText(e, t) { t = t == null ? "" : String(t); if (e.textContent !== t) e.textContent = t; }
function setClass(e, c) { if (e.className !== c) e.className = c; }
function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }
function fmtMiB(m) {
  m = num(m); if (m === null) return "–";
  return m >= 1024 ? (m / 1024).toFixed(1) + " GiB" : Math.round(m) + " MiB";
}
function fmtRate(m) { m = num(m); return m === null ? "–" : m.toFixed(1) + " MiB/s"; }
function fmtDur(s) {
  s = num(s); if (s === null) return "–";
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
}
function fmtTime(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–"; }
function stateClass(s) {
  if (s === "running") return "s-ok";
  if (s === "unresolved" || s === "unknown" || s === "failed") return "s-bad";
  if (s === "paused" || s === "incoming" || s === "starting" || s === "stopping") return "s-warn";
  return "";
}
function bar(pct, wide) {
  const fill = el("span");
  const b = el("span", { class: wide ? "bar wide" : "bar" }, fill);
  b.set = (p) => { const w = Math.max(0, Math.min(100, p || 0)).toFixed(1) + "%"; if (fill.style.width !== w) fill.style.width = w; };
  b.set(pct);
  return b;
}
const SVGNS = "http://www.w3.org/2000/svg";
function spark() {
  const s = document.createElementNS(SVGNS, "svg");
  s.setAttribute("class", "spark"); s.setAttribute("viewBox", "0 0 140 24"); s.setAttribute("preserveAspectRatio", "none");
  const base = document.createElementNS(SVGNS, "line");
  base.setAttribute("x1", 0); base.setAttribute("x2", 140); base.setAttribute("y1", 23.5); base.setAttribute("y2", 23.5);
  const line = document.createElementNS(SVGNS, "polyline");
  s.append(base, line);
  s.set = (vals, max) => {
    const n = vals.length;
    if (!n) return;
    const top = Math.max(max || 0, ...vals, 1e-9);
    let pts = "";
    for (let i = 0; i < n; i++)
      pts += (n === 1 ? 140 : i * 140 / (n - 1)).toFixed(1) + "," + (23 - 22 * (vals[i] || 0) / top).toFixed(1) + " ";
    if (line.getAttribute("points") !== pts) line.setAttribute("points", pts);
  };
  return s;
}

// Keep tbody's rows in the order of items, one per key: make(item) builds
// a row, fill(tr, item) updates it.
function sync(tbody, items, key, make, fill, emptyText) {
  const old = tbody._rows || new Map();
  const rows = new Map();
  let prev = null;
  for (const it of items) {
    const k = key(it);
    let tr = old.get(k);
    if (!tr) tr = make(it);
    tr.dataset.key = k;
    fill(tr, it);
    rows.set(k, tr);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const [k, tr] of old) if (!rows.has(k)) tr.remove();
  tbody._rows = rows;
  if (tbody._empty) { tbody._empty.remove(); tbody._empty = null; }
  if (!items.length && emptyText) {
    const cols = tbody.parentElement.querySelectorAll("thead th").length;
    tbody._empty = el("tr", { class: "empty" }, el("td", { colspan: cols, text: emptyText }));
    tbody.append(tbody._empty);
  }
}
function cells(tr, n) { while (tr.cells.length < n) tr.append(el("td")); return tr.cells; }

// ------------------------------------------------------------------ API

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  let j = null;
  try { j = await r.json(); } catch (e) { j = null; }
  if (!r.ok) {
    const m = j && j.error && j.error.message ? j.error.message : "HTTP " + r.status;
    const err = new Error(m); err.status = r.status; err.code = j && j.error ? j.error.code : ""; throw err;
  }
  return j;
}

function notice(kind, text) {
  const n = $("#notice");
  n.replaceChildren(el("button", { class: "close", text: "×", onclick: () => { n.hidden = true; } }),
                    el("span", { class: kind === "error" ? "refusal" : "", text }));
  n.className = kind; n.hidden = false;
}

// Ask before a disruptive action; fields: [{label, el}] extra inputs.
// ok() runs the action and may throw: the refusal is shown in the dialog.
function confirmDialog(title, text, fields, okLabel, ok) {
  const m = $("#modal"), body = $("#modal-body");
  $("#modal-title").textContent = title;
  const msg = el("div", { class: "refusal" });
  body.replaceChildren(el("p", { text }), ...(fields || []).map((f) => el("label", {}, f.label + " ", f.el)), msg);
  $("#modal-ok").textContent = okLabel || "OK";
  $("#modal-ok").disabled = false;
  m.hidden = false;
  const form = $("#modal-box");
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    $("#modal-ok").disabled = true;
    msg.textContent = "";
    try { await ok(); m.hidden = true; } catch (e) { msg.textContent = e.message; $("#modal-ok").disabled = false; }
  };
  $("#modal-cancel").onclick = () => { m.hidden = true; };
}

// Run an action now (not disruptive): a refusal goes to the notice bar.
async function act(label, fn) {
  try { await fn(); notice("info", label + ": done"); } catch (e) { notice("error", e.message); }
}

const vmPath = (h, v) => "/api/hosts/" + encodeURIComponent(h) + "/vms/" + encodeURIComponent(v);

function vmAction(vm, verb) {
  const run = () => api("POST", vmPath(vm.host, vm.name) + "/" + verb, verb === "stop" ? { force: false } : undefined);
  if (verb === "start" || verb === "resume") return act(verb + " " + vm.name, run);
  confirmDialog(verb + " VM " + vm.name, verb === "stop"
    ? "Shut down " + vm.name + " on " + vm.host + " (ACPI power button, then forced after 30 s)?"
    : "Pause " + vm.name + " on " + vm.host + "? The guest stops running until resumed.", [], verb, run);
}

function migrateDialog(vm) {
  const to = el("select", { id: "migrate-to" });
  for (const h of state.hosts) if (h.name !== vm.host) to.append(el("option", { value: h.name, text: h.name + (h.draining ? " (draining)" : "") }));
  const mode = el("select", { id: "migrate-mode" },
    el("option", { value: "live", text: "live (pre-copy)" }), el("option", { value: "postcopy", text: "post-copy" }),
    el("option", { value: "offline", text: "offline" }));
  const bw = el("input", { id: "migrate-bandwidth", type: "number", min: "1", placeholder: "no limit", size: "8" });
  confirmDialog("Migrate " + vm.name, "Move " + vm.name + " (" + fmtMiB(vm.memory_mib) + ") from " + vm.host + " to:",
    [{ label: "destination", el: to }, { label: "mode", el: mode }, { label: "bandwidth limit (MiB/s)", el: bw }], "Migrate",
    async () => {
      const body = { to: to.value, mode: mode.value };
      if (bw.value) body.bandwidth_mibps = +bw.value;
      await api("POST", vmPath(vm.host, vm.name) + "/migrate", body);
      location.hash = "#migrations";
    });
}

function vmButtons(vm) {
  const b = (verb, cls) => el("button", { class: cls || "", "data-action": verb, text: verb,
                                          onclick: (ev) => { ev.stopPropagation(); verb === "migrate" ? migrateDialog(vm) : vmAction(vm, verb); } });
  switch (vm.state) {
    case "shutoff": return [b("start")];
    case "running": return [b("migrate"), b("pause"), b("stop", "danger")];
    case "paused": return [b("resume"), b("stop", "danger")];
    default: return [];
  }
}

// ------------------------------------------------------------------ views

function renderAlarms() {
  const box = $("#alarms");
  const items = state.alarms || [];
  sync(box, items, (a) => a.source + "|" + a.title, (a) => el("div"), (d, a) => {
    setClass(d, "alarm " + a.severity);
    if (!d.firstChild) d.append(el("b"), el("span"), el("span", { class: "muted" }));
    setText(d.children[0], a.severity === "critical" ? "ALARM" : "warning");
    setText(d.children[1], a.title);
    setText(d.children[2], a.detail || "");
  });
}

function renderOverview() {
  sync($("#hosts-table tbody"), state.hosts, (h) => h.name, (h) => {
    const tr = el("tr");
    const c = cells(tr, 10);
    c[2].append(bar(0), el("span", { class: "pct" }));
    c[3].append(spark());
    c[4].append(bar(0), el("span", { class: "memtext" }));
    c[5].className = "num";
    c[6].append(spark());
    c[7].className = "num";
    c[9].className = "actions";
    return tr;
  }, (tr, h) => {
    const c = tr.cells;
    setText(c[0], h.name);
    const st = !h.answered && !h.error ? ["", "connecting"] : !h.reachable ? ["s-bad", "unreachable"]
      : h.draining ? ["s-warn", "draining"] : ["s-ok", "up"];
    setClass(c[1], st[0]);
    if (!c[1].firstChild) c[1].append(el("span", { class: "dot" }), el("span"));
    setText(c[1].children[1], st[1]);
    c[1].title = h.error || Object.values(h.errors || {}).join("; ");
    const cpu = num(h.cpu_util);
    c[2].children[0].set(cpu === null ? 0 : cpu * 100);
    setText(c[2].children[1], cpu === null ? "–" : (cpu * 100).toFixed(0) + "%");
    c[3].firstChild.set(h.series.cpu, 1);
    const memPct = h.memory_total_mib ? 100 * (h.memory_committed_mib || 0) / h.memory_total_mib : 0;
    c[4].children[0].set(memPct);
    setText(c[4].children[1], fmtMiB(h.memory_committed_mib) + " / " + fmtMiB(h.memory_total_mib));
    setText(c[5], fmtRate(h.dirty_mibps));
    c[6].firstChild.set(h.series.dirty_mibps, 1);
    setText(c[7], (h.vms_running || 0) + " / " + (h.vms_total || 0));
    setText(c[8], h.attestation == null ? "–" : typeof h.attestation === "string" ? h.attestation : JSON.stringify(h.attestation));
    const want = h.draining ? "undrain" : "drain";
    if (c[9].dataset.want !== want) {
      c[9].dataset.want = want;
      c[9].replaceChildren(el("button", { "data-action": want, class: want === "drain" ? "danger" : "", text: want, onclick: () => drainHost(h.name, want) }));
    }
  }, "no hosts");
}

function drainHost(name, verb) {
  const run = () => api("POST", "/api/hosts/" + encodeURIComponent(name) + "/" + verb);
  if (verb === "undrain") return act("undrain " + name, run);
  confirmDialog("Drain " + name, state.balance
    ? "The controller " + state.balance.controller + " will move every VM off " + name + " and it will accept none."
    : "Host " + name + " will accept no incoming migration (no controller is configured to move its VMs).", [], "Drain", run);
}

function vmMatches(vm, f) {
  if (!f) return true;
  const labels = Object.entries(vm.labels || {}).map(([k, v]) => k + "=" + v).join(" ");
  return (vm.host + " " + vm.name + " " + vm.state + " " + labels).toLowerCase().includes(f);
}

function renderVMs() {
  const f = $("#vm-filter").value.trim().toLowerCase();
  const vms = state.vms.filter((v) => vmMatches(v, f));
  setText($("#vm-count"), vms.length + " of " + state.vms.length + " VMs");
  sync($("#vms-table tbody"), vms, (v) => v.host + "/" + v.name, (v) => {
    const tr = el("tr");
    const c = cells(tr, 10);
    c[1].append(el("a"));
    c[2].append(el("span", { class: "dot" }), el("span"));
    for (const i of [3, 4, 5, 6, 7]) c[i].className = "num";
    c[9].className = "actions";
    return tr;
  }, (tr, v) => {
    const c = tr.cells;
    setText(c[0], v.host);
    const a = c[1].firstChild;
    const href = "#vm/" + encodeURIComponent(v.host) + "/" + encodeURIComponent(v.name);
    if (a.getAttribute("href") !== href) a.setAttribute("href", href);
    setText(a, v.name);
    setClass(c[2], stateClass(v.state));
    setText(c[2].children[1], v.state + (v.active_migration ? " (migrating)" : ""));
    c[2].title = v.last_error || "";
    setText(c[3], fmtMiB(v.memory_mib));
    setText(c[4], v.vcpus);
    setText(c[5], fmtDur(v.uptime_s));
    setText(c[6], num(v.cpu_cores) === null ? "–" : v.cpu_cores.toFixed(2));
    setText(c[7], fmtRate(v.dirty_mibps));
    setText(c[8], Object.entries(v.labels || {}).map(([k, val]) => k + "=" + val).join(" "));
    const key = v.state + "|" + (v.active_migration || "");
    if (c[9].dataset.key !== key) { c[9].dataset.key = key; c[9].replaceChildren(...(v.active_migration ? [] : vmButtons(v))); }
  }, "no VMs");
}

// The VM page: facts, actions and the live serial console.
let consoleOffset = 0, consoleBusy = false;
const CONSOLE_KEEP = 200000;
function renderVM() {
  const vm = state.vms.find((v) => v.host === vmPage.host && v.name === vmPage.name);
  setText($("#vm-title"), vmPage.name + " on " + vmPage.host);
  const facts = $("#vm-facts");
  if (!vm) { facts.replaceChildren(el("dt", { text: "state" }), el("dd", { text: "not on this host (moved or deleted)" })); $("#vm-actions").replaceChildren(); return; }
  const kv = [["state", vm.state], ["memory", fmtMiB(vm.memory_mib)], ["vCPUs", vm.vcpus], ["uptime", fmtDur(vm.uptime_s)],
              ["CPU", num(vm.cpu_cores) === null ? "–" : vm.cpu_cores.toFixed(2) + " cores"], ["dirty rate", fmtRate(vm.dirty_mibps)],
              ["uuid", vm.uuid], ["labels", Object.entries(vm.labels || {}).map(([k, v]) => k + "=" + v).join(" ") || "–"],
              ["migration", vm.active_migration || "–"], ["last error", vm.last_error || "–"]];
  if (facts.children.length !== kv.length * 2) facts.replaceChildren(...kv.flatMap(() => [el("dt"), el("dd")]));
  kv.forEach(([k, v], i) => { setText(facts.children[2 * i], k); setText(facts.children[2 * i + 1], v); });
  const key = vm.state + "|" + (vm.active_migration || "");
  const box = $("#vm-actions");
  if (box.dataset.key !== key) { box.dataset.key = key; box.replaceChildren(...(vm.active_migration ? [] : vmButtons(vm))); }
  pollConsole();
}
async function pollConsole() {
  if (consoleBusy || !vmPage) return;
  consoleBusy = true;
  const page = vmPage;
  try {
    const r = await api("GET", vmPath(page.host, page.name) + "/console?offset=" + consoleOffset);
    if (page !== vmPage) return;
    const pre = $("#console");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (r.data) {
      let t = pre.textContent + r.data;
      if (t.length > CONSOLE_KEEP) t = t.slice(t.length - CONSOLE_KEEP);
      pre.textContent = t;
    }
    consoleOffset = r.next;
    setText($("#console-status"), "(" + r.size + " bytes, live)");
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  } catch (e) {
    setText($("#console-status"), "(" + e.message + ")");
  } finally { consoleBusy = false; }
}

function progressOf(m) {
  if (m.outcome === "completed") return Object.assign({}, m.progress, { percent: 100, ram_remaining: 0 });
  return m.progress || {};
}
// A migration that ended in the last RECENT_MS stays in the running table
// with its outcome, so its end is seen even between two polls.
const RECENT_MS = 15000;
function renderMigrations() {
  const run = state.migrations.running.concat(state.migrations.history.filter((m) =>
    m.ended_at && state.now - m.ended_at < RECENT_MS && m.role === "source"));
  sync($("#running-table tbody"), run, (m) => m.id, (m) => {
    const tr = el("tr");
    const c = cells(tr, 12);
    c[3].append(bar(0, true), el("span", { class: "pct" }));
    for (const i of [4, 5, 6, 7, 8, 9, 10]) c[i].className = "num";
    c[11].className = "actions";
    c[11].append(el("button", { class: "danger", "data-action": "cancel", text: "cancel", onclick: () => cancelMigration(tr._m) }));
    return tr;
  }, (tr, m) => {
    tr._m = m;
    const c = tr.cells, p = progressOf(m);
    setText(c[0], m.vm);
    setText(c[1], m.source + " → " + m.destination);
    setText(c[2], m.outcome === "running" ? m.phase : m.outcome);
    setClass(c[2], m.outcome === "running" ? "" : m.outcome === "completed" ? "s-ok" : "s-bad");
    c[11].firstChild.disabled = m.outcome !== "running";
    c[3].children[0].set(p.percent);
    setText(c[3].children[1], (num(p.percent) || 0).toFixed(1) + "%");
    // the same numbers as `ferry migrate`'s bar (src/cli/cmd_migrate.c)
    setText(c[4], fmtMiB((p.ram_transferred || 0) / MiB));
    setText(c[5], fmtRate((p.mbps || 0) / 8 * 1e6 / MiB));
    setText(c[6], Math.round(p.dirty_pages_rate || 0) + " pages/s");
    setText(c[7], ((p.ram_remaining || 0) / MiB).toFixed(1) + " MiB");
    setText(c[8], Math.round(p.expected_downtime_ms || 0) + " ms");
    setText(c[9], p.iteration || 0);
    setText(c[10], ((p.elapsed_ms || 0) / 1000).toFixed(1) + " s");
  }, "no migration is running");
  sync($("#history-table tbody"), state.migrations.history, (m) => m.id, () => {
    const tr = el("tr");
    const c = cells(tr, 11);
    for (const i of [6, 7, 8]) c[i].className = "num";
    c[1].className = "mono";
    c[10].className = "wrap";
    return tr;
  }, (tr, m) => {
    const c = tr.cells;
    setText(c[0], fmtTime(m.started_at));
    setText(c[1], (m.id || "").slice(0, 8)); c[1].title = m.id;
    setText(c[2], m.vm);
    setText(c[3], m.source + " → " + m.destination);
    setText(c[4], m.mode);
    setText(c[5], m.outcome);
    setClass(c[5], m.outcome === "completed" ? "s-ok" : m.outcome === "failed" ? "s-bad" : "s-warn");
    setText(c[6], num(m.total_ms) === null ? "–" : (m.total_ms / 1000).toFixed(2) + " s");
    setText(c[7], num(m.downtime_ms) === null ? "–" : m.downtime_ms + " ms");
    setText(c[8], num(m.ram_bytes) === null ? "–" : fmtMiB(m.ram_bytes / MiB));
    setText(c[9], m.requester || "");
    setText(c[10], m.error || "");
  }, "no migration yet");
}

function cancelMigration(m) {
  confirmDialog("Cancel migration", "Cancel the migration of " + m.vm + " from " + m.source + " to " + m.destination +
    "? The VM keeps running on " + m.source + ".", [], "Cancel migration",
    () => api("POST", "/api/hosts/" + encodeURIComponent(m.source) + "/migrations/" + encodeURIComponent(m.id) + "/cancel"));
}

function renderBalancer() {
  const box = $("#balancer");
  const b = state.balance;
  const key = JSON.stringify(b);
  if (box._key === key) return;
  box._key = key;
  if (!b) { box.replaceChildren(el("p", { class: "muted", text: "The client config names no controller (\"controller\" in client.json): no balancer to show." })); return; }
  const s = b.status || {}, plan = b.plan || {}, drains = (b.drains || {}).drains || [];
  const modes = el("span", {}, ...["off", "recommend", "auto"].map((m) =>
    el("button", { "data-mode": m, class: s.mode === m ? "active" : "", text: m, disabled: s.mode === m ? "" : null, onclick: () => setMode(m) })));
  const errs = Object.entries(b.errors || {}).map(([k, v]) => k + ": " + v).join("; ");
  const table = (heads, rows) => el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...(rows.length ? rows.map((r) => el("tr", {}, ...r.map((v) => el("td", { text: v == null ? "–" : String(v) }))))
                                    : [el("tr", { class: "empty" }, el("td", { colspan: heads.length, text: "none" }))])));
  box.replaceChildren(
    el("div", { class: "toolbar" }, el("span", { class: "kv" }, "controller ", el("b", { text: b.controller })),
       el("span", { class: "kv" }, "mode ", el("b", { id: "bal-mode", text: s.mode || "?" })), modes,
       el("span", { class: "kv" }, "round ", el("b", { text: s.round })), el("span", { class: "kv" }, "imbalance ", el("b", { text: num(s.imbalance) === null ? "–" : s.imbalance.toFixed(3) })),
       el("span", { class: "kv" }, "moves so far ", el("b", { text: s.moves_total }))),
    errs ? el("p", { class: "s-bad", text: errs }) : null,
    el("h3", { text: "Current plan" + (plan.note ? " — " + plan.note : "") }),
    table(["VM", "From", "To", "Trigger", "CPU", "Memory", "From load", "To load", "Improvement"], (plan.moves || []).map((m) =>
      [m.vm, m.from, m.to, m.trigger, num(m.cpu) === null ? null : m.cpu.toFixed(2), fmtMiB(m.mem_mib),
       (m.from_load_before || 0).toFixed(2) + " → " + (m.from_load_after || 0).toFixed(2),
       (m.to_load_before || 0).toFixed(2) + " → " + (m.to_load_after || 0).toFixed(2), num(m.improvement) === null ? null : m.improvement.toFixed(3)])),
    el("h3", { text: "Blocked" }),
    table(["VM", "Host", "Code", "Reason"], (plan.blocked || []).map((x) => [x.vm, x.host, x.code, x.reason])),
    el("h3", { text: "Moves in flight" }),
    table(["VM", "From", "To", "Started", "ID"], (s.inflight || []).map((x) => [x.vm, x.from, x.to, fmtTime(x.started_at), x.id])),
    el("h3", { text: "Drains" }),
    table(["Host", "State", "Started", "Remaining", "Moved", "Blocked"], drains.map((d) =>
      [d.host, d.state, fmtTime(d.started_at), d.remaining, (d.moved || []).map((x) => x.vm + "→" + x.to).join(" "),
       (d.blocked || []).map((x) => x.vm + ": " + x.reason).join("; ")])));
}

function setMode(m) {
  const run = () => api("POST", "/api/balance/mode", { mode: m });
  if (m !== "auto") return act("balancer mode " + m, run);
  confirmDialog("Balancer mode auto", "The controller will start migrations on its own.", [], "Set auto", run);
}

// Audit: records per host (merged, newest first) and verification.
async function loadAudit() {
  const hosts = $("#audit-host").value ? [$("#audit-host").value] : state.hosts.map((h) => h.name);
  const q = [];
  for (const [id, k] of [["#audit-vm", "vm"], ["#audit-actor", "actor"], ["#audit-action", "action"]]) {
    const v = $(id).value.trim(); if (v) q.push(k + "=" + encodeURIComponent(v));
  }
  const mins = +$("#audit-since").value;
  if (mins) q.push("since=" + (Date.now() - mins * 60000));
  q.push("limit=200");
  const rows = [], errs = [];
  await Promise.all(hosts.map(async (h) => {
    try {
      const r = await api("GET", "/api/hosts/" + encodeURIComponent(h) + "/audit?" + q.join("&"));
      for (const rec of r.records || []) rows.push(Object.assign({ _host: h }, rec));
    } catch (e) { errs.push(h + ": " + e.message); }
  }));
  rows.sort((a, b) => (b.ts || 0) - (a.ts || 0));
  setText($("#audit-count"), rows.length + " records" + (errs.length ? "; " + errs.join("; ") : ""));
  sync($("#audit-table tbody"), rows, (r) => r._host + "/" + r.seq, () => {
    const tr = el("tr"); const c = cells(tr, 8); c[2].className = "num"; c[7].className = "wrap mono"; return tr;
  }, (tr, r) => {
    const c = tr.cells;
    setText(c[0], fmtTime(r.ts)); setText(c[1], r._host); setText(c[2], r.seq); setText(c[3], r.actor);
    setText(c[4], r.action); setText(c[5], r.target); setText(c[6], r.outcome);
    setClass(c[6], r.outcome === "ok" ? "" : "s-bad");
    setText(c[7], r.detail ? JSON.stringify(r.detail) : "");
  }, "no records");
}

const verified = new Map();
async function verifyAll() {
  await Promise.all(state.hosts.map(async (h) => {
    try { verified.set(h.name, await api("GET", "/api/hosts/" + encodeURIComponent(h.name) + "/audit/verify")); }
    catch (e) { verified.set(h.name, { host: h.name, error: e.message }); }
  }));
  renderVerify();
}
function renderVerify() {
  sync($("#verify-table tbody"), [...verified.values()], (r) => r.host, () => {
    const tr = el("tr"); const c = cells(tr, 7); c[2].className = c[3].className = "num"; c[4].className = "mono"; c[6].className = "wrap"; return tr;
  }, (tr, r) => {
    const c = tr.cells;
    setText(c[0], r.host);
    setText(c[1], r.error ? "error" : r.ok ? "verified" : "TAMPERED: " + r.kind);
    setClass(c[1], r.ok ? "s-ok" : "s-bad");
    setText(c[2], r.records); setText(c[3], r.last_seq);
    setText(c[4], r.head ? r.head.slice(0, 16) + "…" : ""); c[4].title = r.head || "";
    setText(c[5], fmtTime(r.checked_at)); setText(c[6], r.error || r.message || "");
  }, "press “Verify all hosts”");
}

// ------------------------------------------------------------------ loop

function route() {
  const h = decodeURIComponent(location.hash.slice(1) || "overview");
  const parts = location.hash.slice(1).split("/");
  if (parts[0] === "vm" && parts.length === 3) {
    const page = { host: decodeURIComponent(parts[1]), name: decodeURIComponent(parts[2]) };
    if (!vmPage || vmPage.host !== page.host || vmPage.name !== page.name) { consoleOffset = 0; $("#console").textContent = ""; }
    vmPage = page; view = "vm";
  } else { vmPage = null; view = ["overview", "vms", "migrations", "balancer", "audit"].includes(h) ? h : "overview"; }
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === (view === "vm" ? "vms" : view));
  if (view === "audit") {
    const sel = $("#audit-host");
    if (state && sel.options.length !== state.hosts.length + 1)
      sel.replaceChildren(el("option", { value: "", text: "all hosts" }), ...state.hosts.map((x) => el("option", { value: x.name, text: x.name })));
    if (state && !verified.size) { verifyAll(); loadAudit(); }
  }
  render();
}

function render() {
  if (!state) return;
  const t0 = performance.now();
  renderAlarms();
  if (view === "overview") renderOverview();
  else if (view === "vms") renderVMs();
  else if (view === "vm") renderVM();
  else if (view === "migrations") renderMigrations();
  else if (view === "balancer") renderBalancer();
  const dt = performance.now() - t0;
  stats.renderMs = dt;
  stats.maxRenderMs = Math.max(stats.maxRenderMs, dt);
  stats.renders.push(dt);
  if (stats.renders.length > 600) stats.renders.shift();
}

async function poll() {
  const t0 = performance.now();
  let wait = 1000;
  try {
    const r = await fetch("/api/state", { credentials: "same-origin" });
    const text = await r.text();
    if (!r.ok) throw new Error("HTTP " + r.status + ": " + text.slice(0, 200));
    state = JSON.parse(text);
    stats.bytes = text.length;
    stats.fetchMs = performance.now() - t0;
    stats.polls++;
    wait = state.poll_ms || 1000;
    setText($("#identity"), "as " + state.identity);
    const down = state.hosts.filter((h) => !h.reachable && (h.answered || h.error)).length;
    setText($("#status"), state.hosts.length + " hosts" + (down ? ", " + down + " unreachable" : "") + ", " + state.vms.length + " VMs · updated " + new Date(state.now).toLocaleTimeString());
    if (view === "audit" && $("#audit-host").options.length !== state.hosts.length + 1) route();
    render();
  } catch (e) {
    stats.errors++;
    setText($("#status"), "dashboard server: " + e.message);
  }
  setTimeout(poll, Math.max(100, wait - (performance.now() - t0)));
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  $("#vm-filter").addEventListener("input", render);
  $("#verify-all").addEventListener("click", verifyAll);
  $("#audit-load").addEventListener("click", loadAudit);
  route();
  poll();
});
