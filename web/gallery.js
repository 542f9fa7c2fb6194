// gallery.js: the app gallery. Loads /api/spaces once per sort order and filters on the
// client (search over id, title, description and tags; one tag at a time), so typing is
// instant. The search and tag live in the URL (?q=&tag=) so that a filtered view can be shared.
import {
  ROOT, api, el, icon, gradient, stageBadge, isErrorStage, followStatus, themeToggle, loginButton, loginDialog,
  siteHeader, fmtCount, timeAgo,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { apps: [], q: params.get("q") || "", tag: params.get("tag") || "", sort: params.get("sort") || "likes" };

$("header").replaceWith(siteHeader([loginButton(() => load()), themeToggle()]));
$("q").value = state.q;
$("sort").value = state.sort;

function syncUrl() {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.tag) p.set("tag", state.tag);
  if (state.sort !== "likes") p.set("sort", state.sort);
  const qs = p.toString();
  history.replaceState(null, "", location.pathname + (qs ? "?" + qs : ""));
}

const card = (a) => a.cardData || {};
const title = (a) => card(a).title || a.id.split("/")[1] || a.id;
const tagsOf = (a) => [...new Set([...(a.tags || []), ...(card(a).tags || [])].map(String))];

function matches(a) {
  if (state.tag && !tagsOf(a).includes(state.tag)) return false;
  if (!state.q) return true;
  const hay = [a.id, title(a), card(a).short_description || "", ...tagsOf(a), ...(card(a).models || [])].join(" ").toLowerCase();
  return state.q.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w));
}

const encId = (id) => id.split("/").map(encodeURIComponent).join("/"); // "owner/name" in a URL path

function renderCard(a) {
  const c = card(a);
  const stage = (a.runtime && a.runtime.stage) || "";
  const msg = a.runtime && a.runtime.errorMessage;
  const href = `${ROOT}/spaces/${encId(a.id)}`;
  return el("a.card", { href, dataset: { id: a.id, stage }, style: { background: gradient(c.colorFrom, c.colorTo) } },
    el("div.card-top",
      stageBadge(a.runtime),
      el("span.likes", { title: `${a.likes || 0} likes` }, "♥ ", fmtCount(a.likes)),
    ),
    el("div.card-body",
      el("div.emoji", { "aria-hidden": "true" }, c.emoji || "🚀"),
      el("h2.card-title", title(a)),
      c.short_description ? el("p.card-desc", c.short_description) : null,
      msg && (isErrorStage(stage) || stage === "BUILDING") ? el("p.card-error", msg) : null,
    ),
    el("div.card-foot",
      el("span.card-id", c.pinned ? el("span.pin", { title: "Pinned" }, icon("pin")) : null, a.id),
      a.lastModified ? el("span.card-time", timeAgo(a.lastModified)) : null,
    ),
    tagsOf(a).length ? el("div.card-tags", tagsOf(a).slice(0, 4).map((t) => el("span.chip", t))) : null,
  );
}

function renderTags() {
  const counts = new Map();
  for (const a of state.apps) for (const t of tagsOf(a)) counts.set(t, (counts.get(t) || 0) + 1);
  const tags = [...counts].sort((x, y) => y[1] - x[1] || x[0].localeCompare(y[0])).slice(0, 24);
  const box = $("tags");
  box.replaceChildren(...tags.map(([t, n]) =>
    el("button.chip.toggle", {
      type: "button", "aria-pressed": String(state.tag === t), dataset: { tag: t },
      onclick: () => { state.tag = state.tag === t ? "" : t; syncUrl(); render(); },
    }, t, el("span.n", String(n)))));
  box.hidden = !tags.length;
}

function render() {
  renderTags();
  const grid = $("grid");
  // The host already puts pinned apps first; a stable sort keeps its order otherwise.
  const shown = state.apps.filter(matches).sort((x, y) => (!!card(y).pinned) - (!!card(x).pinned));
  grid.setAttribute("aria-busy", "false");
  $("count").textContent = state.apps.length
    ? `${shown.length} of ${state.apps.length} app${state.apps.length === 1 ? "" : "s"}` +
      (state.q ? ` matching “${state.q}”` : "") + (state.tag ? ` tagged ${state.tag}` : "")
    : "";
  if (!state.apps.length) {
    grid.replaceChildren(el("div.empty", el("div.emoji", "🌙"), el("h2", "No apps yet"),
      el("p.muted", "Add an app directory (README.md + app.lua) under one of the host's --apps directories; it appears here without a restart.")));
    return;
  }
  if (!shown.length) {
    grid.replaceChildren(el("div.empty", el("div.emoji", "🔭"), el("h2", "No app matches"),
      el("button.btn", { type: "button", onclick: () => { state.q = ""; state.tag = ""; $("q").value = ""; syncUrl(); render(); } }, "Clear filters")));
    return;
  }
  grid.replaceChildren(...shown.map(renderCard));
}

async function load() {
  const grid = $("grid");
  grid.setAttribute("aria-busy", "true");
  if (!state.apps.length) grid.replaceChildren(...Array.from({ length: 6 }, () => el("div.card.skeleton")));
  try {
    state.apps = (await api(`/api/spaces?sort=${encodeURIComponent(state.sort)}&limit=500`)) || [];
    render();
    followBuilding();
  } catch (e) {
    grid.setAttribute("aria-busy", "false");
    if (e.status === 401) {
      grid.replaceChildren(el("div.empty", el("div.emoji", "🔒"), el("h2", "Sign in to see the apps"),
        el("p.muted", e.message),
        el("button.btn.primary", { type: "button", onclick: async () => { if (await loginDialog(e.message)) load(); } }, "Enter token")));
      loginDialog(e.message).then((ok) => ok && load());
      return;
    }
    grid.replaceChildren(el("div.empty", el("div.emoji", "⚠️"), el("h2", "Could not load the apps"),
      el("p.error-box", e.message), el("button.btn", { type: "button", onclick: load }, "Retry")));
  }
}

let typing;
$("q").addEventListener("input", (e) => {
  state.q = e.target.value.trim();
  clearTimeout(typing);
  typing = setTimeout(syncUrl, 250);
  render();
});
$("sort").addEventListener("change", (e) => { state.sort = e.target.value; syncUrl(); load(); });
document.addEventListener("keydown", (e) => {
  if (e.key === "/" && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName)) { e.preventDefault(); $("q").focus(); }
  if (e.key === "Escape" && document.activeElement === $("q")) { $("q").value = ""; state.q = ""; syncUrl(); render(); }
});
// A building app's card follows its /events stream: live download progress, then the new
// stage. Only a few at once, as each stream holds one of the browser's six connections to
// the host; the rest, and those whose stream never delivers, are polled instead.
const MAX_STREAMS = 3;
const streams = new Map();   // app id → close()
const noStream = new Set();  // app ids whose stream never delivered (a 401, a buffering proxy)
const building = (a) => a.runtime && a.runtime.stage === "BUILDING";

function followBuilding() {
  for (const [id, close] of streams) {
    if (!state.apps.some((a) => a.id === id && building(a))) unfollow(id, close);
  }
  for (const a of state.apps) {
    if (streams.size >= MAX_STREAMS) return;
    if (!building(a) || streams.has(a.id) || noStream.has(a.id)) continue;
    streams.set(a.id, followStatus(encId(a.id), (s) => onStatus(a.id, s), (heard) => {
      streams.delete(a.id);
      if (!heard) noStream.add(a.id);
      schedulePoll(2000);
    }));
  }
}

function unfollow(id, close) {
  close();
  streams.delete(id);
}

function onStatus(id, s) {
  const a = state.apps.find((x) => x.id === id);
  if (!a) return;
  a.runtime = { ...a.runtime, ...s };
  const old = [...$("grid").children].find((n) => n.dataset.id === id);
  if (old) old.replaceWith(renderCard(a));
  if (!building(a)) unfollow(id, streams.get(id));
}

// Refresh statuses now and then (apps appear, crash and come back) while the tab is visible;
// often while a building app is not followed, so its download progress moves.
let pollTimer;
function schedulePoll(ms) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, ms);
}
async function poll() {
  clearTimeout(pollTimer);
  if (!document.hidden) await load();
  schedulePoll(state.apps.some((a) => building(a) && !streams.has(a.id)) ? 2000 : 15000);
}
// Leaving the page ends the streams; coming back to it (the back/forward cache) reopens them.
addEventListener("pagehide", () => { for (const [id, close] of streams) unfollow(id, close); clearTimeout(pollTimer); });
addEventListener("pageshow", (e) => { if (e.persisted) poll(); });
poll();
