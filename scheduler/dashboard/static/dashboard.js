// raftcron dashboard: live updates and actions. Plain JavaScript, no build step, no library.
//
// Pages are rendered by the server; this script only (1) follows /api/v1/events (server-sent
// events fed from the store's watches, changes only) and re-renders the rows that changed,
// (2) counts lock TTLs down between events, and (3) sends the job actions. Every value is
// set with textContent, never as HTML.
"use strict";

(function () {
  const body = document.body;

  // ---- formatting (the same as the server's Jinja filters in pages.py)
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function duration(s) {
    if (s === null || s === undefined || s === "") return "";
    return Number(s).toFixed(1) + "s";
  }
  function ttl(s) {
    if (s === null || s === undefined || Number(s) < 0) return "";
    return Math.max(0, Math.round(Number(s))) + "s";
  }
  function tags(t) {
    if (!t || typeof t !== "object") return t ? String(t) : "";
    return Object.keys(t).sort().map((k) => k + "=" + t[k]).join(",");
  }

  // ---- building cells (mirrors templates/macros.html)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === "") continue;
      node.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  const enc = encodeURIComponent;
  const badge = (s) => el("span", { class: "badge " + s, text: s });
  const jobLink = (n) => el("a", { href: "/jobs/" + enc(n), text: n });
  const runLink = (j, o) => el("a", { class: "mono", href: "/runs/" + enc(j) + "/" + enc(o), text: o });
  const td = (attrs, ...c) => el("td", attrs, ...c);

  const rows = {
    lock(l) {
      return el("tr", { "data-key": l.job },
        td({}, jobLink(l.job)), td({ text: l.worker || "" }), td({ text: l.host || "" }),
        td({ class: "num", text: l.pid ?? "" }),
        td({}, l.occurrence ? runLink(l.job, l.occurrence) : ""),
        td({ class: "mono", text: when(l.since) }),
        td({ class: "num", "data-ttl": l.ttl_left ?? -1, text: ttl(l.ttl_left) }),
        td({ class: "num mono", text: l.fencing_token ?? "" }));
    },
    job(j) {
      const last = j.last_run;
      return el("tr", { "data-key": j.name },
        td({}, jobLink(j.name)), td({ class: "mono", text: j.schedule }),
        td({ text: j.timezone || "" }), td({ text: j.concurrency || "" }),
        td({ class: "mono", text: tags(j.tags) }),
        td({}, j.suspended ? el("span", { class: "badge suspended", title: j.reason || "", text: "suspended" }) : ""),
        td({ class: "mono", "data-next-fire": j.next_fire || null, text: when(j.next_fire) }),
        td({}, ...(last ? [badge(last.outcome), " ", runLink(j.name, last.occurrence)]
                        : [el("span", { class: "empty", text: "never" })])),
        td({ class: "num", text: last ? duration(last.duration_s) : "" }));
    },
    running(r) {
      return el("tr", { "data-key": r.job + "/" + r.occurrence },
        td({}, jobLink(r.job)), td({}, runLink(r.job, r.occurrence)), td({}, badge(r.status)),
        td({ text: r.worker || "" }), td({ class: "num", text: r.attempt ?? "" }),
        td({ class: "mono", text: when(r.started_at) }));
    },
    worker(w) {
      return el("tr", { "data-key": w.worker },
        td({ text: w.worker }), td({ text: w.host || "" }), td({ class: "num", text: w.pid ?? "" }),
        td({ class: "mono", text: tags(w.tags) }), td({ text: w.version || "" }),
        td({ class: "mono", text: when(w.started_at) }),
        td({ class: "num", "data-ttl": w.lease_ttl ?? -1, text: ttl(w.lease_ttl) }));
    },
    run(r) {
      return el("tr", { "data-key": r.occurrence },
        td({}, runLink(r.job, r.occurrence)), td({}, badge(r.status)),
        td({ text: r.worker || "" }), td({ class: "num", text: r.attempt || "" }),
        td({ class: "mono", text: when(r.started_at) }),
        td({ class: "num", text: duration(r.duration) }),
        td({ class: "num", text: r.exit_code ?? "" }), td({ text: r.note || "" }));
    },
  };

  // ---- replacing, adding and removing rows of the live tables
  function flash(tr) { tr.classList.add("flash"); setTimeout(() => tr.classList.remove("flash"), 1300); }
  function findRow(table, key) {
    for (const tr of table.tBodies[0].rows) if (tr.dataset.key === key) return tr;
    return null;
  }
  function syncEmpty(table) {
    const note = document.querySelector(`[data-empty-for="${table.id}"]`);
    if (note) note.hidden = table.tBodies[0].rows.length > 0;
  }
  // upsert: "replace" only touches a row already shown; "insert" also adds it (at the top).
  function upsert(table, key, render, mode) {
    const old = findRow(table, key);
    if (!old && mode !== "insert") return;
    const tr = render();
    if (old) old.replaceWith(tr); else table.tBodies[0].prepend(tr);
    startTtl(tr);
    flash(tr);
    syncEmpty(table);
  }
  function remove(table, key) {
    const old = findRow(table, key);
    if (old) { old.remove(); syncEmpty(table); }
  }
  const liveTables = (kind) => document.querySelectorAll(`table[data-live="${kind}"]`);

  // ---- TTL countdown between events: each TTL cell counts down from when it was rendered.
  // A lease is renewed by its holder's keepalives (no store event says so): when a shown
  // TTL runs out, the table's list is read once from the API (one request for every row,
  // not one per job) and the cells start again from what the store says.
  function startTtl(root) {
    for (const cell of root.querySelectorAll("[data-ttl]")) {
      const left = Number(cell.dataset.ttl);
      cell.dataset.expires = left >= 0 ? String(Date.now() + left * 1000) : "";
    }
  }
  const TTL_LISTS = { "/api/v1/locks": ["locks", "job", "ttl_left"],
                      "/api/v1/workers": ["workers", "worker", "lease_ttl"] };
  let resyncing = false, lastResync = 0;
  async function resyncTtl(table) {
    const source = table.dataset.ttlSource;
    const spec = TTL_LISTS[source];
    if (!spec || resyncing || Date.now() - lastResync < 2000) return;
    resyncing = true; lastResync = Date.now();
    try {
      const res = await fetch(source, { headers: { "Accept": "application/json" } });
      if (!res.ok) return;
      const data = await res.json();
      const [list, key, field] = spec;
      for (const item of data[list] || []) {
        const tr = findRow(table, item[key]);
        const cell = tr && tr.querySelector("[data-ttl]");
        if (!cell) continue;
        cell.dataset.ttl = item[field] ?? -1;
        startTtl(tr);
      }
      tickTtl(false);
    } catch (e) {
      /* the next expiry tries again */
    } finally {
      resyncing = false;
    }
  }
  function tickTtl(resync) {
    const now = Date.now();
    for (const cell of document.querySelectorAll("[data-expires]")) {
      if (!cell.dataset.expires) continue;
      const left = (Number(cell.dataset.expires) - now) / 1000;
      cell.textContent = ttl(left);
      const table = cell.closest("table[data-ttl-source]");
      if (resync !== false && left <= 0 && table) resyncTtl(table);
    }
  }

  // ---- what each event changes on the page
  const currentJob = body.dataset.job || null;
  const currentOccurrence = body.dataset.occurrence || null;
  const ACTIVE = new Set(["claimed", "running", "retrying"]);
  function onLock(item) {
    if (currentJob && item.job !== currentJob) return;
    for (const table of liveTables("lock")) {
      if (item.held === false || !item.worker) remove(table, item.job);
      else upsert(table, item.job, () => rows.lock(item), "insert");
    }
  }
  function suspensionText(item) {
    const s = item.suspension || {};
    let text = "Suspended";
    if (s.by) text += " by " + s.by;
    if (s.at) text += " at " + when(s.at);
    if (s.by_spec) text += " (its spec says suspend: true)";
    const why = s.reason || item.reason;
    return text + (why ? ": " + why : "");
  }
  function onJob(item) {
    for (const table of liveTables("job")) {
      if (item.deleted) remove(table, item.name);
      else upsert(table, item.name, () => rows.job(item), "replace");
    }
    if (currentJob && item.name === currentJob && document.getElementById("job-state")) {
      document.getElementById("job-state").replaceChildren(
        ...(item.suspended ? [el("span", { class: "badge suspended", text: "suspended" })] : []),
        ...(item.deleted ? [" ", el("span", { class: "badge failed", text: "deleted" })] : []));
      const reason = document.getElementById("job-reason");
      reason.hidden = !item.suspended;
      reason.textContent = item.suspended ? suspensionText(item) : "";
    }
  }
  function onRun(item) {
    if (currentJob && item.job !== currentJob) return;
    for (const table of liveTables("run")) upsert(table, item.occurrence, () => rows.run(item), "insert");
    if (body.dataset.page === "overview" && !ACTIVE.has(item.status)) scheduleRefresh();
    for (const table of liveTables("running")) {
      const key = item.job + "/" + item.occurrence;
      if (ACTIVE.has(item.status)) upsert(table, key, () => rows.running(item), "insert");
      else remove(table, key);
      const count = document.getElementById("running-count");
      if (count) count.textContent = String(table.tBodies[0].rows.length);
    }
    // The jobs page: the job's last run, if its row is shown and this run is its latest.
    for (const table of liveTables("job")) {
      const tr = findRow(table, item.job);
      if (!tr) continue;
      const cell = tr.cells[7], took = tr.cells[8];
      const shown = cell.querySelector("a.mono");
      if (shown && shown.textContent > item.occurrence) continue;
      cell.replaceChildren(badge(item.status), " ", runLink(item.job, item.occurrence));
      took.textContent = duration(item.duration);
      flash(tr);
    }
    const status = document.getElementById("run-status");
    if (status && currentOccurrence === item.occurrence) {
      status.dataset.status = item.status;
      status.replaceChildren(badge(item.status));
      for (const dd of document.querySelectorAll("#run-record [data-field]")) {
        const v = item[dd.dataset.field];
        if (v !== undefined) dd.textContent = /_at$/.test(dd.dataset.field) ? when(v) : (v ?? "");
      }
      if (!ACTIVE.has(item.status)) {
        document.getElementById("output").textContent = item.output_tail || "";
        const st = document.getElementById("output-state");
        if (st) st.textContent = "(finished: the last 4 KiB the worker stored)";
        refreshInPlace();  // the attempts table (each attempt's end, exit code, log path)
      }
    }
  }
  function onOutput(item) {
    const pre = document.getElementById("output");
    if (!pre || item.job !== currentJob || item.occurrence !== currentOccurrence) return;
    const status = document.getElementById("run-status");
    if (status && !ACTIVE.has(status.dataset.status)) return;  // the record's tail is final
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = item.tail || "";
    const st = document.getElementById("output-state");
    if (st) st.textContent = "(live, attempt " + (item.attempt ?? "?") + ")";
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
  function onWorker(item) {
    if (body.dataset.page === "overview") scheduleRefresh();
    for (const table of liveTables("worker")) {
      if (item.alive === false) remove(table, item.worker);
      else {
        upsert(table, item.worker, () => rows.worker(item), "insert");
        if (item.lease_ttl === undefined) resyncTtl(table);  // the event has no TTL
      }
    }
  }

  // ---- catching up: a page is rendered at one store revision and its event stream starts
  // at a later one (and starts again after a reconnect, or after the dashboard dropped a
  // stream that fell behind). When the stream's "ready" revision is newer than the page's,
  // the page is fetched again and its live regions ([data-refresh]) swapped in place —
  // no reload: typed text and messages stay. Events arriving meanwhile are held and
  // applied after the swap (each carries its whole item, so applying one twice is harmless).
  let held = null;
  async function refreshInPlace() {
    held = held || [];
    try {
      const res = await fetch(location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
      if (res.ok) {
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        for (const fresh of doc.querySelectorAll("[data-refresh][id]")) {
          const old = document.getElementById(fresh.id);
          if (old) old.replaceWith(document.importNode(fresh, true));
        }
        body.dataset.revision = doc.body.dataset.revision || body.dataset.revision;
        for (const table of document.querySelectorAll("table[data-live]")) syncEmpty(table);
        startTtl(document);
      }
    } catch (e) {
      /* the next ready event tries again */
    } finally {
      const pending = held;
      held = null;
      for (const [fn, item] of pending) fn(item);
    }
  }
  // A change that moves a page's summaries (the overview's counts and lists), or the time
  // passing a shown job's next fire, is caught up the same way: one fetch of the page, at
  // most every REFRESH_GAP ms however many changes come (never one request per job).
  const REFRESH_GAP = 5000;
  let refreshTimer = null, lastRefresh = 0;
  function scheduleRefresh() {
    if (refreshTimer) return;
    const wait = Math.max(0, lastRefresh + REFRESH_GAP - Date.now());
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      lastRefresh = Date.now();
      refreshInPlace();
    }, wait);
  }
  function nextFiresPassed() {
    const now = Date.now();
    for (const cell of document.querySelectorAll("[data-next-fire]")) {
      const at = Date.parse(cell.dataset.nextFire);
      if (!isNaN(at) && at < now) { scheduleRefresh(); return; }
    }
  }
  function dispatch(fn, item) {
    if (held) held.push([fn, item]); else fn(item);
  }

  function follow() {
    const topics = body.dataset.topics;
    if (!topics || !window.EventSource) return;
    let url = "/api/v1/events?topics=" + enc(topics);
    if (currentJob) url += "&job=" + enc(currentJob);
    const live = document.getElementById("live");
    const source = new EventSource(url);
    const handlers = { lock: onLock, job: onJob, run: onRun, output: onOutput, worker: onWorker };
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => {
        let item;
        try { item = JSON.parse(ev.data); } catch (e) { return; }
        dispatch(fn, item);
      });
    }
    source.addEventListener("ready", (ev) => {
      let info = {};
      try { info = JSON.parse(ev.data); } catch (e) { /* keep {} */ }
      if (live) { live.dataset.state = "open"; live.textContent = "live"; }
      if (Number(info.revision) > Number(body.dataset.revision || 0)) refreshInPlace();
    });
    // EventSource reconnects by itself; the indicator says so meanwhile.
    source.addEventListener("error", () => { if (live) { live.dataset.state = "error"; live.textContent = "reconnecting"; } });
    window.raftcronEvents = source;
  }

  // ---- actions (POST /api/v1/jobs/<name>/<action>, with the CSRF token when the page has one)
  async function act(button) {
    const box = button.closest("[data-job]");
    const job = box.dataset.job, action = button.dataset.action;
    const msg = document.getElementById("action-message");
    const payload = {};
    if (action === "suspend") {
      const reason = box.querySelector('input[name="reason"]').value.trim();
      if (reason) payload.reason = reason;
    }
    // Killing is the one action that cannot be taken back: ask first.
    if (action === "kill" && !window.confirm("Kill the running run(s) of " + job + "?")) return;
    const headers = { "Content-Type": "application/json", "Accept": "application/json" };
    const token = document.querySelector('meta[name="csrf-token"]');
    if (token) headers["X-CSRF-Token"] = token.content;
    button.disabled = true;
    msg.className = "message"; msg.textContent = "";
    try {
      const res = await fetch("/api/v1/jobs/" + enc(job) + "/" + action, {
        method: "POST", headers, body: JSON.stringify(payload), credentials: "same-origin",
      });
      let data = {};
      try { data = await res.json(); } catch (e) { /* not JSON: the status says enough */ }
      if (res.ok) {
        msg.className = "message ok";
        msg.textContent = describe(action, data);
      } else {
        msg.className = "message error";
        msg.textContent = (data.error && data.error.message) || (res.status + " " + res.statusText);
      }
    } catch (e) {
      msg.className = "message error";
      msg.textContent = "the dashboard did not answer: " + e;
    } finally {
      button.disabled = false;
    }
  }
  function describe(action, data) {
    switch (action) {
      case "trigger": return "Triggered" + (data.occurrence ? ": occurrence " + data.occurrence : "") + ".";
      case "kill": return "Asked to kill" + (data.killed ? ": " + data.killed.join(", ") : "") + ".";
      case "suspend": return data.changed === false ? "Already suspended." : "Suspended.";
      case "resume": return data.changed === false ? "Was not suspended." : "Resumed.";
      default: return "Done.";
    }
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button) act(button);
  });
  startTtl(document);
  setInterval(() => { tickTtl(); nextFiresPassed(); }, 1000);
  follow();
})();
