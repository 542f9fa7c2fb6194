// common.js: what the gallery and the app page share: the root path, the token, JSON
// fetches, DOM building, the theme toggle, the login dialog, badges and a tiny, safe
// Markdown renderer. Plain ES module, no dependencies.

// The host replaces {{root}} in the page; a page opened some other way falls back to "".
const rawRoot = document.documentElement.dataset.root || "";
export const ROOT = rawRoot.includes("{{") ? "" : rawRoot.replace(/\/+$/, "");

const TOKEN_KEY = "moonspace-token";
const THEME_KEY = "moonspace-theme";

function store(key, value) {
  try {
    if (value == null || value === "") localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch (e) { /* storage can be disabled; the session still works */ }
}
function load(key) {
  try { return localStorage.getItem(key); } catch (e) { return null; }
}

export const getToken = () => load(TOKEN_KEY) || "";
export const setToken = (t) => store(TOKEN_KEY, (t || "").trim());

export function authHeaders(extra = {}) {
  const t = getToken();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : { ...extra };
}

/** An error from the JSON API, with the HTTP status and the host's machine-readable code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** fetch + JSON with the token; throws ApiError with the host's message on a non-2xx. */
export async function api(path, opts = {}) {
  const res = await fetch(ROOT + path, {
    ...opts,
    headers: authHeaders({ Accept: "application/json", ...(opts.headers || {}) }),
  });
  let body = null;
  const text = await res.text();
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!res.ok) {
    const err = body && body.error;
    const msg = (err && (err.message || (typeof err === "string" ? err : ""))) ||
      (body && typeof body.detail === "string" ? body.detail : "") || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, (err && err.code) || "http_" + res.status, msg);
  }
  return body;
}

/** el("div#id.card.big", {href, onclick, dataset}, child, "text", [more]) */
export function el(spec, attrs, ...children) {
  const id = (spec.match(/#([\w-]+)/) || [])[1];
  const [tag, ...classes] = spec.replace(/#[\w-]+/, "").split(".");
  const node = document.createElement(tag || "div");
  if (id) node.id = id;
  if (classes.length) node.className = classes.join(" ");
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style" && typeof v === "object") {
      for (const [sk, sv] of Object.entries(v)) {
        if (sk.startsWith("--")) node.style.setProperty(sk, sv);
        else node.style[sk] = sv;
      }
    } else if (k === "innerHTML" || k === "textContent") node[k] = v;
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}
function append(node, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// The Hub's card colours (colorFrom / colorTo): a light and a dark stop for each.
const PALETTE = {
  red: ["#f87171", "#dc2626"], yellow: ["#fcd34d", "#d97706"], green: ["#4ade80", "#16a34a"],
  blue: ["#60a5fa", "#2563eb"], indigo: ["#818cf8", "#4f46e5"], purple: ["#c084fc", "#9333ea"],
  pink: ["#f472b6", "#db2777"], gray: ["#9ca3af", "#4b5563"],
};
export function gradient(from, to) {
  const a = PALETTE[String(from || "").toLowerCase()] || PALETTE.gray;
  const b = PALETTE[String(to || "").toLowerCase()] || PALETTE[String(from || "").toLowerCase()] || PALETTE.gray;
  return `linear-gradient(135deg, ${a[0]} 0%, ${b[1]} 100%)`;
}

const STAGES = {
  RUNNING: ["ok", "Running"], BUILDING: ["busy", "Building"], SLEEPING: ["idle", "Sleeping"],
  RUNTIME_ERROR: ["bad", "Runtime error"], BUILD_ERROR: ["bad", "Build error"],
  CONFIG_ERROR: ["bad", "Config error"], NO_APP_FILE: ["bad", "No app file"],
};
/** "12.3 MB" */
export function fmtBytes(n) {
  if (!n) return "0 B";
  const u = ["B", "kB", "MB", "GB", "TB"];
  const i = Math.min(u.length - 1, Math.floor(Math.log10(n) / 3));
  return `${(n / 10 ** (3 * i)).toFixed(i ? 1 : 0)} ${u[i]}`;
}

/** Download progress of a BUILDING app (runtime.build), or null. */
export function buildProgress(build) {
  if (!build) return null;
  const pct = build.total ? Math.min(100, Math.round((100 * build.bytes) / build.total)) : 0;
  const text = `Downloading models: ${fmtBytes(build.bytes)} of ${fmtBytes(build.total)} · ` +
    `${build.files_done}/${build.files_total} files` + (build.rate ? ` · ${fmtBytes(build.rate)}/s` : "");
  return el("div.progress.build-progress", { role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 },
    el("div.bar", { style: `width:${pct}%` }), el("span.ptext", text));
}

export function stageBadge(runtime) {
  const stage = (runtime && runtime.stage) || "UNKNOWN";
  let [kind, text] = STAGES[stage] || ["idle", stage.replace(/_/g, " ").toLowerCase()];
  const b = runtime && runtime.build;
  if (stage === "BUILDING" && b && b.total) text += ` ${Math.min(100, Math.round((100 * b.bytes) / b.total))}%`;
  return el(`span.badge.badge-${kind}`, { title: (runtime && runtime.errorMessage) || text, dataset: { stage } },
    el("span.dot"), text);
}
export const isErrorStage = (stage) => /ERROR|NO_APP_FILE/.test(stage || "");

/**
 * Reads a text/event-stream body, calling onData(data) with each event's data lines joined;
 * onData returning false stops reading. Resolves when the stream ends or is stopped.
 */
export async function readEvents(body, onData) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const chunk = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = chunk.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data && onData(data) === false) {
        reader.cancel().catch(() => {});
        return;
      }
    }
  }
}

/**
 * Follows an app's status stream (/events: {stage, errorMessage, build} at once and on every
 * change); returns the function that closes it. Read with fetch rather than EventSource, so
 * that it carries the token (private apps, --require-token hosts). onFail(heard) runs once if
 * the stream ends or breaks; heard=false means it never delivered (a proxy that buffers, a
 * refused token): the caller's cue to poll.
 */
export function followStatus(encId, onStatus, onFail) {
  const ctl = new AbortController();
  let heard = false, over = false;
  const close = () => { over = true; clearTimeout(silence); ctl.abort(); };
  const fail = () => { if (!over) { close(); onFail(heard); } };
  // The host answers at once, so silence means something in between holds the stream back.
  const silence = setTimeout(fail, 4000);
  fetch(`${ROOT}/api/spaces/${encId}/events`,
    { headers: authHeaders({ Accept: "text/event-stream" }), cache: "no-store", signal: ctl.signal })
    .then((res) => {
      if (!res.ok || !res.body) throw new Error(`events answered ${res.status}`);
      return readEvents(res.body, (data) => {
        if (over) return false;
        let s;
        try { s = JSON.parse(data); } catch (err) { return true; }
        heard = true;
        clearTimeout(silence);
        onStatus(s);
        return !over;
      });
    })
    .then(fail, fail);
  return close;
}

// ---- icons: inline SVG, so the chrome never depends on an emoji font ----------------------
const ICONS = {
  sun: '<circle cx="12" cy="12" r="4"/><path d="M12 2v2M12 20v2M4.9 4.9l1.4 1.4M17.7 17.7l1.4 1.4M2 12h2M20 12h2M4.9 19.1l1.4-1.4M17.7 6.3l1.4-1.4"/>',
  moon: '<path d="M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8z"/>',
  key: '<circle cx="7.5" cy="15.5" r="4.5"/><path d="M10.7 12.3 21 2M16 7l3 3M18.5 4.5l2 2"/>',
  user: '<circle cx="12" cy="8" r="4"/><path d="M4 21a8 8 0 0 1 16 0"/>',
  pin: '<path d="M9 4h6l-1 6 4 3v2H6v-2l4-3z"/><path d="M12 15v6"/>',
  search: '<circle cx="11" cy="11" r="7"/><path d="m20 20-3.5-3.5"/>',
};
export function icon(name) {
  const span = document.createElement("span");
  span.className = "icon";
  span.innerHTML = `<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${ICONS[name] || ""}</svg>`;
  return span;
}

// ---- theme --------------------------------------------------------------------------
export function themeToggle() {
  const btn = el("button.icon-btn", { type: "button", title: "Toggle light / dark theme", "aria-label": "Toggle theme" });
  const paint = () => { btn.replaceChildren(icon(document.documentElement.dataset.theme === "dark" ? "sun" : "moon")); };
  btn.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    store(THEME_KEY, next);
    paint();
  });
  // Follow the system while the user has not chosen.
  const mq = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)");
  if (mq && mq.addEventListener) mq.addEventListener("change", (e) => {
    if (!load(THEME_KEY)) { document.documentElement.dataset.theme = e.matches ? "dark" : "light"; paint(); }
  });
  paint();
  return btn;
}

// ---- login ----------------------------------------------------------------------------
/** Shows the token dialog; resolves true when a token was saved, false when dismissed. */
let openDialog = null; // one dialog at a time, however many requests answered 401
export function loginDialog(reason) {
  if (openDialog) return openDialog;
  return (openDialog = new Promise((resolve) => {
    const input = el("input.input", { type: "password", placeholder: "paste your token", autocomplete: "off",
      "aria-label": "Access token", value: getToken() });
    const dlg = el("dialog.login",
      el("form", { method: "dialog" },
        el("h2", icon("key"), " Sign in"),
        el("p.muted", reason || "This host needs an access token."),
        el("p.muted.small", "Ask an admin for one (", el("code", "moonspace token add NAME"),
          "). It is kept in this browser only and sent as ", el("code", "Authorization: Bearer"), "."),
        input,
        el("div.row.end",
          getToken() ? el("button.btn.ghost", { type: "button", onclick: () => { setToken(""); dlg.close("signout"); } }, "Sign out") : null,
          el("button.btn.ghost", { type: "button", onclick: () => dlg.close("cancel") }, "Cancel"),
          el("button.btn.primary", { type: "submit", value: "ok" }, "Save token"))));
    dlg.addEventListener("close", () => {
      if (dlg.returnValue === "ok" && input.value.trim()) setToken(input.value);
      dlg.remove();
      openDialog = null;
      resolve(dlg.returnValue === "ok" || dlg.returnValue === "signout");
    });
    document.body.append(dlg);
    dlg.showModal();
    input.focus();
  }));
}

export function loginButton(onChange) {
  const btn = el("button.icon-btn", { type: "button", "aria-label": "Access token" });
  const paint = () => {
    btn.replaceChildren(icon(getToken() ? "user" : "key"));
    btn.classList.toggle("signed-in", !!getToken());
    btn.title = getToken() ? "Signed in with a token (click to change)" : "Sign in with a token";
  };
  btn.addEventListener("click", async () => { if (await loginDialog()) { paint(); onChange && onChange(); } });
  paint();
  return btn;
}

// ---- formatting ---------------------------------------------------------------------------
export function fmtCount(n) {
  n = Number(n) || 0;
  return n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? Math.round(n / 1e3) + "k" : n >= 1e3 ? (n / 1e3).toFixed(1) + "k" : String(n);
}
export function fmtMs(ms) {
  if (ms == null || !isFinite(ms)) return "–";
  return ms < 1 ? ms.toFixed(2) + " ms" : ms < 1000 ? (ms < 10 ? ms.toFixed(1) : Math.round(ms)) + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}
export function timeAgo(iso) {
  const t = Date.parse(iso);
  if (!t) return "";
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return "just now";
  const units = [[60, "minute"], [3600, "hour"], [86400, "day"], [2592000, "month"], [31536000, "year"]];
  let u = units[0];
  for (const x of units) if (s >= x[0]) u = x;
  const n = Math.floor(s / u[0]);
  return `${n} ${u[1]}${n > 1 ? "s" : ""} ago`;
}

// ---- minimal Markdown -----------------------------------------------------------------------
// Outputs of apps are untrusted: everything is escaped first, then a small set of constructs
// (headings, emphasis, code, fenced blocks, lists, quotes, http(s) links) become tags.
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
export { esc as escapeHtml };

function inline(s) {
  const codes = [];
  s = s.replace(/`([^`\n]+)`/g, (_, c) => { codes.push(c); return `\u0000${codes.length - 1}\u0000`; });
  s = esc(s)
    .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+|\/[^\s)]*)\)/g, (_, t, u) => `<a href="${u}" target="_blank" rel="noopener noreferrer">${t}</a>`)
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/__([^_\n]+)__/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~([^~\n]+)~~/g, "<del>$1</del>");
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${esc(codes[+i])}</code>`);
}

export function renderMarkdown(src) {
  const lines = String(src ?? "").replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = line.match(/^\s*(```|~~~)\s*([\w+-]*)/))) {
      const fence = m[1], body = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence); i++) body.push(lines[i]);
      i++;
      out.push(`<pre><code>${esc(body.join("\n"))}</code></pre>`);
    } else if ((m = line.match(/^(#{1,6})\s+(.*)$/))) {
      out.push(`<h${m[1].length}>${inline(m[2])}</h${m[1].length}>`);
      i++;
    } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      out.push("<hr>");
      i++;
    } else if (/^\s*>/.test(line)) {
      const body = [];
      for (; i < lines.length && /^\s*>/.test(lines[i]); i++) body.push(lines[i].replace(/^\s*>\s?/, ""));
      out.push(`<blockquote>${renderMarkdown(body.join("\n"))}</blockquote>`);
    } else if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      const ordered = /^\s*\d/.test(line), items = [];
      for (; i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i]); i++) items.push(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""));
      const tag = ordered ? "ol" : "ul";
      out.push(`<${tag}>${items.map((t) => `<li>${inline(t)}</li>`).join("")}</${tag}>`);
    } else if (!line.trim()) {
      i++;
    } else {
      const para = [];
      for (; i < lines.length && lines[i].trim() && !/^(#{1,6}\s|\s*```|\s*~~~|\s*>|\s*([-*+]|\d+[.)])\s+)/.test(lines[i]); i++) para.push(lines[i]);
      if (!para.length) { para.push(lines[i]); i++; }
      out.push(`<p>${para.map(inline).join("<br>")}</p>`);
    }
  }
  return out.join("\n");
}

/** The header shared by both pages. */
export function siteHeader(extra = []) {
  return el("header.site",
    el("a.brand", { href: ROOT + "/" },
      el("img", { src: ROOT + "/static/favicon.svg", alt: "", width: 28, height: 28 }),
      el("span", "moonspace")),
    el("nav.actions", extra));
}
