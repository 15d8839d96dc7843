// The web console: alerts queue with review, event detail with audit trail, statistics, live wall.
// Plain JS; the login's bearer token lives only as long as the tab (sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const REVIEWERS = new Set(["admin", "regulator"]);
const RECTIFIERS = new Set(["admin", "site_manager"]);
const READERS = new Set(["admin", "regulator", "site_manager"]);
const STATES = ["pending", "confirmed", "false_positive", "rectified"];

const app = {
  token: sessionStorage.getItem("bk_token"),
  me: null,
  cameras: [],          // /api/v1/cameras (the analysis streams), for readers
  rules: new Map(),     // rule -> title, from what has been seen
  cards: new Map(),     // event id -> article
  cursor: null,
  source: null,
  timers: [],
  players: new Map(),   // camera id -> LivePlayer on the wall
};

function authHeaders() {
  return app.token ? {Authorization: `Bearer ${app.token}`} : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, {...options, headers: {...authHeaders(), ...(options.headers || {})}});
  if (response.status === 401) {
    showLogin();
    throw new Error("login required");
  }
  return response;
}

async function apiJson(path, options = {}) {
  const r = await api(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const detail = body.detail;
    throw new Error(typeof detail === "string" ? detail : (detail && detail.message) || JSON.stringify(detail) || r.status);
  }
  return body;
}

// <img> cannot send the token: fetch pictures and show their bytes.
async function showImage(img, url) {
  if (!app.token) {
    img.src = url;
    return;
  }
  const r = await api(url);
  if (r.ok) img.src = URL.createObjectURL(await r.blob());
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function toast(text, bad = false) {
  const note = el("div", {class: bad ? "toast bad" : "toast"}, text);
  document.body.append(note);
  setTimeout(() => note.remove(), 3000);
}

// -- login ---------------------------------------------------------------------------------------

function stopAll() {
  if (app.source) app.source.close();
  app.source = null;
  app.timers.forEach(clearInterval);
  app.timers = [];
  for (const p of app.players.values()) p.stop();
  app.players.clear();
}

function showLogin() {
  stopAll();
  app.token = null;
  app.me = null;
  sessionStorage.removeItem("bk_token");
  document.querySelectorAll(".view").forEach((v) => { v.hidden = true; });
  $("nav").hidden = true;
  $("who").textContent = "";
  $("cameras").textContent = "";
  $("logout").hidden = true;
  $("login").hidden = false;
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const body = JSON.stringify({username: form.username.value, password: form.password.value});
  const r = await fetch("/api/v1/auth/login", {method: "POST", headers: {"Content-Type": "application/json"}, body});
  form.password.value = "";
  if (!r.ok) {
    $("login-error").textContent = t(r.status === 429 ? "login_many" : "login_wrong");
    return;
  }
  app.token = (await r.json()).token;
  sessionStorage.setItem("bk_token", app.token);
  $("login-error").textContent = "";
  form.hidden = true;
  start();
});

$("logout").addEventListener("click", async () => {
  await fetch("/api/v1/auth/logout", {method: "POST", headers: authHeaders()});
  showLogin();
});

$("lang").addEventListener("click", () => {
  setLang(LANG === "zh" ? "en" : "zh");
  translatePage();
  $("lang").textContent = t("lang");
  if (app.me) {
    showWho();
    fillFilters();
    route();
  }
});

// -- routing ---------------------------------------------------------------------------------------

function routes() {
  if (!app.me) return [];
  return READERS.has(app.me.role) ? ["alerts", "event", "stats", "wall"] : ["wall"];
}

function route() {
  if (!app.me) return;
  const [name, arg] = location.hash.replace(/^#\//, "").split("/");
  const allowed = routes();
  const view = allowed.includes(name) ? name : allowed[0];
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${view}`; });
  document.querySelectorAll("#nav a").forEach((a) => {
    a.hidden = !allowed.includes(a.dataset.route);
    a.classList.toggle("active", a.dataset.route === view || (view === "event" && a.dataset.route === "alerts"));
  });
  if (view !== "wall") stopWall();
  if (view === "alerts") loadAlerts();
  else if (view === "event") showEvent(decodeURIComponent(arg || ""));
  else if (view === "stats") loadStats();
  else if (view === "wall") showWall();
}

window.addEventListener("hashchange", route);

function showWho() {
  const me = app.me;
  $("who").textContent = me.auth_enabled ? `${me.name} · ${t(`role_${me.role}`)}` : "";
}

async function start() {
  app.me = await apiJson("/api/v1/auth/me");
  showWho();
  $("logout").hidden = !app.me.auth_enabled;
  $("nav").hidden = false;
  if (READERS.has(app.me.role)) {
    await refreshCameras();
    app.timers.push(setInterval(() => refreshCameras().catch(() => {}), 5000));
    await loadRules();
    fillFilters();
    listen();
  }
  route();
}

async function refreshCameras() {
  app.cameras = await apiJson("/api/v1/cameras");
  const online = app.cameras.filter((c) => c.connected).length;
  $("cameras").textContent = `${t("camera")} ${online}/${app.cameras.length} ${t("connected")}`;
  $("cameras").title = app.cameras.map((c) => `${c.name}: ${t(c.connected ? "connected" : "disconnected_cam")}`).join("\n");
}

async function loadRules() {
  // The rules that have events, with the title their newest event carries.
  const stats = await apiJson("/api/v1/stats");
  const rules = [...new Set(stats.rows.map((row) => row.rule))];
  await Promise.all(rules.map(async (rule) => {
    const page = await apiJson(`/api/v1/events?rule=${encodeURIComponent(rule)}&limit=1`).catch(() => ({items: []}));
    app.rules.set(rule, (page.items[0] && page.items[0].rule_title) || rule);
  }));
}

function options(select, values, current) {
  select.innerHTML = "";
  select.append(el("option", {value: ""}, t("all")));
  for (const [value, label] of values) select.append(el("option", {value}, label));
  select.value = current || "";
}

function fillFilters() {
  const sites = [...new Set(app.cameras.map((c) => c.site))].sort();
  for (const form of [$("filters"), $("stats-filters")]) options(form.site, sites.map((s) => [s, s]), form.site.value);
  const f = $("filters");
  options(f.camera, app.cameras.map((c) => [c.id, c.name || c.id]), f.camera.value);
  options(f.rule, [...app.rules].map(([r, title]) => [r, title]), f.rule.value);
  options(f.state, STATES.map((s) => [s, t(s)]), f.state.value);
}

// -- alerts ------------------------------------------------------------------------------------------

function dayStart(value) { return value ? new Date(`${value}T00:00:00`).toISOString() : null; }
function dayEnd(value) {
  if (!value) return null;
  const d = new Date(`${value}T00:00:00`);
  d.setDate(d.getDate() + 1);
  return d.toISOString();
}

function filterValues() {
  const f = $("filters");
  return {site: f.site.value, camera: f.camera.value, rule: f.rule.value, state: f.state.value,
          since: dayStart(f.since.value), until: dayEnd(f.until.value)};
}

function matches(ev, q) {
  return (!q.site || ev.site === q.site) && (!q.camera || ev.camera === q.camera) && (!q.rule || ev.rule === q.rule)
    && (!q.state || ev.review_state === q.state);
}

$("filters").addEventListener("submit", (e) => {
  e.preventDefault();
  loadAlerts();
});

$("more").addEventListener("click", () => loadPage(false));

async function loadAlerts() {
  $("events").innerHTML = "";
  app.cards.clear();
  app.cursor = null;
  await loadPage(true);
}

async function loadPage(first) {
  const q = filterValues();
  // The review state is filtered here; the API filters the rest. Read on until a screenful matches.
  let shown = 0;
  for (let pages = 0; pages < 10 && shown < 30; pages++) {
    const params = new URLSearchParams({limit: "100"});
    for (const k of ["site", "camera", "rule", "since", "until"]) if (q[k]) params.set(k, q[k]);
    if (!first || pages > 0) {
      if (!app.cursor) break;
      params.set("cursor", app.cursor);
    }
    const page = await apiJson(`/api/v1/events?${params}`);
    app.cursor = page.next_cursor;
    for (const ev of page.items) {
      if (!matches(ev, q)) continue;
      renderCard(ev, false);
      shown += 1;
    }
    if (!app.cursor) break;
  }
  $("more").hidden = !app.cursor;
  $("empty").hidden = app.cards.size > 0;
  $("empty").textContent = t("no_events");
}

function badge(kind, value) {
  return el("span", {class: `badge ${kind} ${value}`, dataset: {[kind]: value}}, t(value));
}

function reviewButtons(ev, onDone) {
  if (!REVIEWERS.has(app.me.role) || ev.review_state !== "pending") return null;
  const box = el("div", {class: "actions"});
  for (const [decision, label, cls] of [["confirmed", "confirm", "danger"], ["false_positive", "dismiss", ""]]) {
    box.append(el("button", {type: "button", class: `review ${cls}`, dataset: {decision}, onclick: async (e) => {
      e.preventDefault();
      e.stopPropagation();
      box.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      try {
        const updated = await apiJson(`/api/v1/events/${ev.id}/review`, {
          method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({decision}),
        });
        onDone(updated);
      } catch (err) {
        toast(t("failed", {msg: err.message}), true);
        box.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      }
    }}, t(label)));
  }
  return box;
}

function renderCard(ev, live) {
  app.rules.set(ev.rule, ev.rule_title || ev.rule);
  let card = app.cards.get(ev.id);
  const isNew = !card;
  if (isNew) {
    card = el("article", {class: "event", dataset: {id: ev.id}});
    app.cards.set(ev.id, card);
    if (live) $("events").prepend(card);
    else $("events").append(card);
  }
  const old = card.querySelector("img");
  if (old && old.src.startsWith("blob:")) URL.revokeObjectURL(old.src);
  card.innerHTML = "";
  card.dataset.state = ev.review_state;
  const img = el("img", {alt: ev.rule_title || ev.rule, loading: "lazy"});
  if (ev.snapshot) showImage(img, `/api/v1/events/${ev.id}/snapshot.jpg`).catch(() => {});
  const link = el("a", {href: `#/event/${ev.id}`, class: "shot"}, img);
  const camera = ev.camera_name || ev.camera;
  const meta = el("div", {class: "meta"},
    el("div", {class: "badges"}, badge("phase", ev.phase), badge("state", ev.review_state)),
    el("a", {href: `#/event/${ev.id}`, class: "rule"}, ev.rule_title || ev.rule),
    el("div", {class: "where"}, `${ev.site} / ${camera}`),
    el("div", {class: "when"}, `${formatTime(ev.started_at)} · ${ev.class_name} ${ev.score.toFixed(2)}`),
    reviewButtons(ev, (updated) => renderCard(updated, false)));
  card.append(link, meta);
  $("empty").hidden = app.cards.size > 0;
}

function listen() {
  // EventSource cannot send headers: the stream takes the token from the query.
  const query = app.token ? `?access_token=${encodeURIComponent(app.token)}` : "";
  app.source = new EventSource(`/api/v1/events/stream${query}`);
  const onChange = (m) => {
    if (!m.data) return;  // "open" is also EventSource's own connection event, which carries no data
    const ev = JSON.parse(m.data);
    if (!$("view-alerts").hidden && (app.cards.has(ev.id) || matches(ev, filterValues()))) renderCard(ev, true);
    if (!$("view-event").hidden && $("view-event").dataset.id === ev.id) fillEvent(ev);
  };
  for (const phase of ["open", "updated", "closed"]) app.source.addEventListener(phase, onChange);
  app.source.onerror = () => api("/api/v1/auth/me").catch(() => {});  // an expired token shows the login
}

// -- one event ----------------------------------------------------------------------------------------

async function showEvent(id) {
  const view = $("view-event");
  view.dataset.id = id;
  let ev;
  try {
    ev = await apiJson(`/api/v1/events/${encodeURIComponent(id)}`);
  } catch (err) {
    $("detail-rule").textContent = err.message;
    $("detail-fields").innerHTML = "";
    $("detail-actions").innerHTML = "";
    $("audit").innerHTML = "";
    $("rectify").hidden = true;
    return;
  }
  const img = $("detail-snapshot");
  img.removeAttribute("src");
  if (ev.snapshot) showImage(img, `/api/v1/events/${ev.id}/snapshot.jpg`).catch(() => {});
  fillEvent(ev);
}

function fillEvent(ev) {
  $("detail-rule").textContent = ev.rule_title || ev.rule;
  const fields = $("detail-fields");
  fields.innerHTML = "";
  const rows = [
    ["site", ev.site], ["camera", ev.camera_name || ev.camera], ["time", formatTime(ev.started_at)],
    ["phase", t(ev.phase)], ["state", t(ev.review_state)],
  ];
  for (const [k, v] of rows) fields.append(el("dt", {}, t(k)), el("dd", {dataset: {field: k}}, v));
  const actions = $("detail-actions");
  actions.innerHTML = "";
  const buttons = reviewButtons(ev, (updated) => { fillEvent(updated); loadAudit(updated.id); });
  if (buttons) actions.append(buttons);
  const form = $("rectify");
  form.hidden = !(RECTIFIERS.has(app.me.role) && ev.review_state === "confirmed");
  form.dataset.id = ev.id;
  loadAudit(ev.id);
}

$("rectify").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  if (!form.note.value.trim()) {
    $("rectify-error").textContent = t("rectify_note_needed");
    return;
  }
  const data = new FormData();
  data.append("note", form.note.value.trim());
  if (form.photo.files.length) data.append("photo", form.photo.files[0]);
  form.querySelector("button").disabled = true;
  try {
    const updated = await apiJson(`/api/v1/events/${form.dataset.id}/rectification`, {method: "POST", body: data});
    form.reset();
    $("rectify-error").textContent = "";
    toast(t("saved"));
    fillEvent(updated);
  } catch (err) {
    $("rectify-error").textContent = t("failed", {msg: err.message});
  } finally {
    form.querySelector("button").disabled = false;
  }
});

async function loadAudit(id) {
  const list = $("audit");
  const entries = await apiJson(`/api/v1/events/${id}/audit`).catch(() => []);
  list.innerHTML = "";
  if (!entries.length) list.append(el("li", {class: "none"}, t("no_audit")));
  for (const a of entries) {
    const item = el("li", {dataset: {to: a.to_state}},
      el("strong", {}, t("from_to", {from: t(a.from_state), to: t(a.to_state)})),
      el("span", {class: "by"}, t("by", {actor: a.actor, role: t(`role_${a.role}`)})),
      el("time", {}, formatTime(a.at)),
      a.note ? el("p", {class: "note"}, a.note) : null);
    if (a.photo_url) {
      const photo = el("img", {class: "photo", alt: t("photo")});
      showImage(photo, a.photo_url).catch(() => {});
      item.append(photo);
    }
    list.append(item);
  }
}

// -- statistics ---------------------------------------------------------------------------------------

$("stats-filters").addEventListener("submit", (e) => {
  e.preventDefault();
  loadStats();
});

function percent(v) { return v === null || v === undefined ? "—" : `${Math.round(v * 100)}%`; }

function sumBy(rows, key) {
  const groups = new Map();
  for (const r of rows) {
    const g = groups.get(r[key]) || {label: r[key], counts: {}};
    for (const s of STATES) g.counts[s] = (g.counts[s] || 0) + r[s];
    groups.set(r[key], g);
  }
  return [...groups.values()];
}

async function loadStats() {
  const f = $("stats-filters");
  const params = new URLSearchParams();
  if (f.site.value) params.set("site", f.site.value);
  if (f.since.value) params.set("since", dayStart(f.since.value));
  if (f.until.value) params.set("until", dayEnd(f.until.value));
  const report = await apiJson(`/api/v1/stats?${params}`);
  const tot = report.totals;
  const totals = $("totals");
  totals.innerHTML = "";
  const mean = tot.mean_time_to_rectify_s === null ? "—" : t("hours", {n: (tot.mean_time_to_rectify_s / 3600).toFixed(1)});
  for (const [k, v] of [["events", tot.events], ["pending", tot.pending], ["confirm_rate", percent(tot.confirmation_rate)],
    ["fp_rate", percent(tot.false_positive_rate)], ["rectify_rate", percent(tot.rectification_rate)], ["mean_rectify", mean]]) {
    totals.append(el("div", {class: "total", dataset: {total: k}}, el("b", {}, String(v)), el("span", {}, t(k))));
  }
  const days = sumBy(report.rows, "day").sort((a, b) => a.label.localeCompare(b.label));
  days.forEach((d) => { d.label = d.label.slice(5); });
  stackedBars($("chart-day"), days);
  const rules = sumBy(report.rows, "rule");
  rules.forEach((r) => { r.label = app.rules.get(r.label) || r.label; });
  stackedBars($("chart-rule"), rules, {horizontal: true});
  stackedBars($("chart-site"), sumBy(report.rows, "site"), {horizontal: true});
  const table = $("stats-table");
  table.innerHTML = "";
  table.append(el("tr", {}, ...["site", "rule", "events", "pending", "confirm_rate", "fp_rate", "rectify_rate"]
    .map((k) => el("th", {}, t(k)))));
  for (const s of report.sites) {
    for (const r of sumBy(report.rows.filter((row) => row.site === s.site), "rule")) {
      const c = r.counts, reviewed = c.confirmed + c.false_positive + c.rectified;
      const events = STATES.reduce((n, k) => n + c[k], 0);
      table.append(el("tr", {}, el("td", {}, s.site), el("td", {}, app.rules.get(r.label) || r.label),
        el("td", {}, String(events)), el("td", {}, String(c.pending)),
        el("td", {}, percent(reviewed ? (c.confirmed + c.rectified) / reviewed : null)),
        el("td", {}, percent(reviewed ? c.false_positive / reviewed : null)),
        el("td", {}, percent(c.confirmed + c.rectified ? c.rectified / (c.confirmed + c.rectified) : null))));
    }
  }
}

// -- live wall -----------------------------------------------------------------------------------------

function stopWall() {
  for (const p of app.players.values()) p.stop();
  app.players.clear();
  clearInterval(app.wallTimer);
}

async function showWall() {
  const wall = $("wall");
  const cams = await apiJson("/api/v1/live/cameras").catch((err) => { toast(err.message, true); return []; });
  stopWall();
  wall.innerHTML = "";
  $("wall-empty").hidden = cams.length > 0;
  $("wall-empty").textContent = t("status_no_camera");
  for (const cam of cams) {
    const video = el("video", {muted: "", playsinline: "", autoplay: ""});
    const overlay = el("div", {class: "overlay"});
    const status = el("span", {class: "badge live-state"});
    const tile = el("article", {class: "tile", dataset: {camera: cam.id}},
      el("div", {class: "player"}, video, overlay,
        cam.privacy ? el("span", {class: "badge privacy"}, t("privacy_on")) : null),
      el("div", {class: "meta"},
        el("a", {class: "name", href: `/live/${encodeURIComponent(cam.id)}`}, cam.name),
        el("span", {class: "site"}, cam.site), status, el("span", {class: "viewers"})));
    wall.append(tile);
    updateTile(tile, cam);
    const show = (code) => {
      tile.dataset.status = code;
      overlay.hidden = code === "live";
      overlay.textContent = t(`status_${code}`) === `status_${code}` ? t("status_error") : t(`status_${code}`);
    };
    if (!cam.watchable) {
      show(cam.reason || "forbidden");
      continue;
    }
    const player = new LivePlayer(video, cam.id, {token: () => app.token, onStatus: show});
    app.players.set(cam.id, player);
    player.start();
  }
  app.wallTimer = setInterval(refreshWall, 5000);
}

function updateTile(tile, cam) {
  const status = tile.querySelector(".live-state");
  const analysis = app.cameras.find((c) => c.id === cam.id);
  const up = analysis ? analysis.connected : cam.state === "live";
  status.className = `badge live-state ${up ? "up" : "down"}`;
  status.textContent = t(up ? "connected" : "disconnected_cam");
  status.title = cam.last_error || "";
  tile.querySelector(".viewers").textContent = t("viewers", {n: cam.viewers, max: cam.max_viewers});
}

async function refreshWall() {
  const cams = await apiJson("/api/v1/live/cameras").catch(() => null);
  if (!cams) return;
  for (const cam of cams) {
    const tile = document.querySelector(`.tile[data-camera="${CSS.escape(cam.id)}"]`);
    if (tile) updateTile(tile, cam);
  }
}

window.consoleApp = app;  // for tests
setLang(LANG);
translatePage();
$("lang").textContent = t("lang");
start().catch(() => {});
