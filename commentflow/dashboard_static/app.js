// commentflow live dashboard. Every value from Redis is hostile input: it is only ever inserted
// with textContent (never parsed as HTML), and the server's Content-Security-Policy allows no inline
// script. Data: GET /api/snapshot once, then server-sent events from /api/events.
"use strict";

const LABELS = ["negative", "neutral", "positive"];
const FEED_MAX = 40;
const fmt = new Intl.NumberFormat("en-US");
const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setText(id, value) {
  $(id).textContent = typeof value === "number" ? fmt.format(value) : String(value);
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function timeOf(iso) {
  const d = new Date(iso);
  return isNaN(d) ? "" : d.toLocaleTimeString("en-GB");
}

function userLink(userId) {
  const b = el("button", "link", userId);
  b.type = "button";
  b.addEventListener("click", () => showUser(userId));
  return b;
}

function feedItem(item, withUser) {
  const li = el("li");
  const label = LABELS.includes(item.label) ? item.label : "neutral";
  li.appendChild(el("span", "badge " + label, item.label));
  li.appendChild(el("span", "text", item.text));
  const meta = el("div", "meta");
  if (withUser) meta.appendChild(userLink(item.user_id));
  for (const m of Array.isArray(item.modalities) ? item.modalities : []) {
    meta.appendChild(el("span", "mod", m));
  }
  meta.appendChild(el("span", "", timeOf(item.processed_at)));
  li.appendChild(meta);
  li.dataset.commentId = String(item.comment_id);
  return li;
}

// -- the feed: filled from snapshots, then prepended live from "feed" events
const shown = new Set();
function addFeed(item, atTop) {
  const key = String(item.comment_id);
  if (shown.has(key)) return;
  shown.add(key);
  const list = $("feed");
  const li = feedItem(item, true);
  if (atTop) list.insertBefore(li, list.firstChild); else list.appendChild(li);
  while (list.children.length > FEED_MAX) {
    shown.delete(list.lastChild.dataset.commentId);
    list.removeChild(list.lastChild);
  }
}

function renderSnapshot(s) {
  const g = s.global;
  setText("total", g.total);
  setText("hour-total", s.last_hour.total);
  const minutes = s.minutes;
  const lastComplete = minutes.length > 1 ? minutes[minutes.length - 2].total : 0;
  setText("per-minute", lastComplete);
  setText("this-minute", minutes.length ? minutes[minutes.length - 1].total : 0);
  setText("dead", g.dead_letters);
  setText("users", s.users.known);
  setText("active", s.users.active_last_hour);
  $("media").textContent = fmt.format(g.with_image) + " / " + fmt.format(g.with_audio);

  // label distribution over the last hour
  const dist = $("dist"), legend = $("dist-legend");
  clear(dist); clear(legend);
  const hourTotal = LABELS.reduce((a, l) => a + s.last_hour[l], 0);
  for (const l of LABELS) {
    const n = s.last_hour[l];
    const share = hourTotal ? n / hourTotal : 0;
    const seg = el("div", l);
    seg.style.width = (share * 100).toFixed(2) + "%";
    seg.title = l + ": " + n;
    dist.appendChild(seg);
    const li = el("li", l, l + " " + fmt.format(n) + " (" + (share * 100).toFixed(1) + "%)");
    li.id = "dist-" + l;
    legend.appendChild(li);
  }

  // comments per minute, stacked by label
  const chart = $("chart");
  clear(chart);
  const peak = Math.max(1, ...minutes.map((m) => m.total));
  for (const m of minutes) {
    const bar = el("div", "bar");
    bar.title = new Date(m.minute * 60000).toLocaleTimeString("en-GB") + ": " + m.total;
    for (const l of LABELS) {
      const part = el("div", l);
      part.style.height = ((m[l] / peak) * 140).toFixed(1) + "px";
      bar.appendChild(part);
    }
    chart.appendChild(bar);
  }

  // most negative users
  const body = $("top").tBodies[0];
  clear(body);
  for (const u of s.top_negative) {
    const tr = el("tr");
    const who = el("td");
    who.appendChild(userLink(u.user_id));
    tr.appendChild(who);
    tr.appendChild(el("td", "n", fmt.format(u.negative)));
    tr.appendChild(el("td", "n", fmt.format(u.total)));
    body.appendChild(tr);
  }

  renderEntities(s.entities || { by_volume: [], by_negative_share: [] });

  for (const item of s.feed.slice().reverse()) addFeed(item, true);
  setText("updated", "updated " + new Date(s.now_ms).toLocaleTimeString("en-GB"));
  if (currentUser !== null) refreshUser();
  if (currentEntity !== null) refreshEntity();
}

// -- "what people are talking about": entity names are user text (textContent only)
function entityRow(e, rank) {
  const li = el("li");
  li.dataset.key = String(e.key);
  li.appendChild(el("span", "rank muted", rank));
  const name = el("button", "link ent-name", e.name);
  name.type = "button";
  name.title = e.key;
  name.addEventListener("click", () => showEntity(String(e.key)));
  li.appendChild(name);
  const share = Number(e.negative_share) || 0;
  const bar = el("span", "ent-bar");
  const neg = el("span", "negative");
  neg.style.width = (share * 100).toFixed(1) + "%";
  bar.appendChild(neg);
  bar.title = fmt.format(e.negative) + " of " + fmt.format(e.total) + " negative";
  li.appendChild(bar);
  li.appendChild(el("span", "n", fmt.format(e.total)));
  li.appendChild(el("span", "n muted", (share * 100).toFixed(0) + "% neg"));
  return li;
}

function renderEntities(ents) {
  const lists = [["ent-volume", ents.by_volume || []], ["ent-negative", ents.by_negative_share || []]];
  for (const [id, rows] of lists) {
    const list = $(id);
    clear(list);
    rows.forEach((e, i) => list.appendChild(entityRow(e, i + 1)));
  }
  $("ent-empty").classList.toggle("hidden", (ents.by_volume || []).length > 0);
}

let currentEntity = null;
let entityBusy = false;
async function showEntity(key) {
  currentEntity = key;
  await refreshEntity();
}

async function refreshEntity() {
  if (entityBusy || currentEntity === null) return;
  entityBusy = true;
  try {
    const resp = await fetch("/api/entity?key=" + encodeURIComponent(currentEntity),
                             { credentials: "same-origin" });
    const view = $("entity-view");
    if (!resp.ok) {
      view.classList.add("hidden");
      $("entity-error").textContent = resp.status === 404 ? "unknown entity" : "error " + resp.status;
      return;
    }
    const e = await resp.json();
    $("entity-error").textContent = "";
    view.classList.remove("hidden");
    $("ev-name").textContent = e.name;
    const c = e.counts || {};
    const counts = $("ev-counts");
    clear(counts);
    counts.appendChild(el("span", "", "comments " + fmt.format(c.total || 0)));
    for (const l of LABELS) counts.appendChild(el("span", "", l + " " + fmt.format(c[l] || 0)));
    const part = (prefix) => Object.keys(c).filter((k) => k.startsWith(prefix))
      .map((k) => k.slice(prefix.length) + " " + fmt.format(c[k])).join(", ");
    $("ev-detail").textContent = "as " + (part("label:") || "-") + "; read in " + (part("mod:") || "-");
    const list = $("ev-mentions");
    clear(list);
    for (const item of e.mentions || []) list.appendChild(feedItem(item, true));
  } catch (err) {
    $("entity-error").textContent = "connection error";
  } finally {
    entityBusy = false;
  }
}

// -- the per-user view
let currentUser = null;
let userBusy = false;
async function showUser(userId) {
  currentUser = userId;
  $("user-id").value = userId;
  await refreshUser();
}

async function refreshUser() {
  if (userBusy || currentUser === null) return;
  userBusy = true;
  try {
    const resp = await fetch("/api/user?id=" + encodeURIComponent(currentUser),
                             { credentials: "same-origin" });
    const view = $("user-view");
    if (!resp.ok) {
      view.classList.add("hidden");
      $("user-error").textContent = resp.status === 404 ? "unknown user" : "error " + resp.status;
      return;
    }
    const u = await resp.json();
    $("user-error").textContent = "";
    view.classList.remove("hidden");
    $("uv-id").textContent = u.user_id;
    const counts = $("uv-counts");
    clear(counts);
    counts.appendChild(el("span", "", "total " + fmt.format(u.counts.total)));
    for (const l of LABELS) counts.appendChild(el("span", "", l + " " + fmt.format(u.counts[l])));
    const t = u.trend;
    const pct = (x) => (x === null ? "-" : (x * 100).toFixed(0) + "%");
    $("uv-trend-text").textContent =
      "negative: " + pct(t.negative_share_overall) + " overall, " + pct(t.negative_share_older) +
      " → " + pct(t.negative_share_newer) + " in the recent comments" +
      (u.negative_rank ? ", #" + u.negative_rank + " most negative" : "");
    const trend = $("uv-trend");
    clear(trend);
    for (const l of t.labels) {
      const sq = el("span", LABELS.includes(l) ? l : "neutral");
      sq.title = l;
      trend.appendChild(sq);
    }
    const named = Array.isArray(u.entities) ? u.entities : [];
    $("uv-entities").textContent = named.length
      ? "talks about: " + named.map((e) => e.key + " (" + fmt.format(e.comments) + ")").join(", ")
      : "";
    const recent = $("uv-recent");
    clear(recent);
    for (const item of u.recent) recent.appendChild(feedItem(item, false));
  } catch (e) {
    $("user-error").textContent = "connection error";
  } finally {
    userBusy = false;
  }
}

$("user-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("user-id").value.trim();
  if (id) showUser(id);
});

// -- live updates
function connected(on, text) {
  $("conn").className = "dot " + (on ? "on" : "off");
  $("conn-text").textContent = text;
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => connected(true, "live"));
  source.addEventListener("error", () => connected(false, "reconnecting"));
  source.addEventListener("snapshot", (ev) => {
    connected(true, "live");
    renderSnapshot(JSON.parse(ev.data));
  });
  source.addEventListener("feed", (ev) => addFeed(JSON.parse(ev.data), true));
  source.addEventListener("status", () => connected(false, "redis unavailable"));
}

fetch("/api/snapshot", { credentials: "same-origin" })
  .then((r) => (r.ok ? r.json() : null))
  .then((s) => { if (s) renderSnapshot(s); })
  .catch(() => {})
  .finally(connect);
