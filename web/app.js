// app.js: the app page (/spaces/OWNER/NAME) and its bare /embed view. It reads the app from
// /api/spaces/OWNER/NAME, builds one form per endpoint from the declared components, and
// runs calls through the Gradio queue protocol (queue/join + the queue/data event stream,
// one session_hash per page load) exactly as @gradio/client does, so the page exercises the
// same path as every API client.
import {
  ROOT, api, el, gradient, stageBadge, isErrorStage, buildProgress, followStatus, readEvents, themeToggle, loginButton,
  loginDialog, siteHeader, fmtCount, fmtMs, renderMarkdown, authHeaders, getToken, ApiError,
} from "./common.js";
import { inputComponent, outputComponent } from "./components.js";
import { applyDiff } from "./diff.js";

const path = location.pathname.slice(ROOT.length);
const route = path.match(/^\/spaces\/([^/]+)\/([^/]+)(\/embed)?\/?$/);
const EMBED = !!(route && route[3]);
const OWNER = route ? decodeURIComponent(route[1]) : "";
const NAME = route ? decodeURIComponent(route[2]) : "";
const ID = `${OWNER}/${NAME}`;
const ENC_ID = `${encodeURIComponent(OWNER)}/${encodeURIComponent(NAME)}`;
const BASE = `${ROOT}/spaces/${ENC_ID}/`; // the app's Gradio root, same origin
// One session per page load, random base-36 like @gradio/client: `state` components and the
// chatbot's conversation live on the host under it.
const newSession = () => Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2, 6);
let SESSION = newSession();
let heartbeatAbort = null;
// "Clear" on an endpoint with session state starts a new session: the host forgets the old
// one (its heartbeat drops), so a chat really starts over.
function restartSession() {
  SESSION = newSession();
  if (heartbeatAbort) heartbeatAbort.abort();
}

const main = document.getElementById("main");
if (EMBED) document.body.classList.add("embed");

let info = null;          // the last /api/spaces/OWNER/NAME answer
let built = null;         // {stage, sig} of what is on screen
let pollTimer = null;
let unfollow = null;      // closes the app's /events stream while the page follows it
let polling = false;      // that stream never delivered: poll instead

// ---------------------------------------------------------------------------------------
// The queue: one event stream per session, shared by every call on the page.
// ---------------------------------------------------------------------------------------
class Queue {
  constructor() {
    this.handlers = new Map();
    this.open = false;
    this.retries = 0;
  }

  async join(fnIndex, data, handler) {
    const res = await fetch(BASE + "gradio_api/queue/join", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ data, event_data: null, fn_index: fnIndex, trigger_id: null, session_hash: SESSION }),
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw joinError(res.status, body);
    if (!body || !body.event_id) throw new Error("The host did not return an event id.");
    this.handlers.set(body.event_id, handler);
    this.ensureStream();
    return body.event_id;
  }

  async ensureStream() {
    if (this.open) return;
    this.open = true;
    let closed = false, failed = null;
    try {
      const res = await fetch(`${BASE}gradio_api/queue/data?session_hash=${encodeURIComponent(SESSION)}`,
        { headers: authHeaders({ Accept: "text/event-stream" }), cache: "no-store" });
      if (!res.ok) {
        const b = await res.json().catch(() => null);
        throw new ApiError(res.status, "stream", errorText(b) || `event stream answered ${res.status}`);
      }
      await readEvents(res.body, (data) => {
        let msg;
        try { msg = JSON.parse(data); } catch (e) { return true; } // e.g. "ALIVE"
        this.retries = 0;
        if (msg.msg === "close_stream") { closed = true; return false; }
        this.dispatch(msg);
        return true;
      });
    } catch (e) {
      failed = e;
    } finally {
      this.open = false;
    }
    if (!this.handlers.size) return;
    // Events still pending: a join raced the close, or the connection dropped. Reopen (the
    // host buffers per session), a few times, then give up on them with a clear message.
    if (failed && failed.status) return this.failAll(failed.message, failed.status);
    if (!closed && ++this.retries > 3) return this.failAll("Lost the connection to the host.");
    setTimeout(() => this.ensureStream(), closed ? 0 : 400 * this.retries);
  }

  dispatch(msg) {
    if (msg.event_id == null) {
      if (msg.msg === "unexpected_error") this.failAll(msg.message || "Unexpected error on the host.");
      return; // heartbeats
    }
    const h = this.handlers.get(msg.event_id);
    if (!h) return;
    if (msg.msg === "process_completed") this.handlers.delete(msg.event_id);
    try { h(msg); } catch (e) { console.error(e); }
  }

  failAll(message, status) {
    for (const [id, h] of this.handlers) h({ msg: "process_completed", event_id: id, success: false, output: { error: message, status } });
    this.handlers.clear();
  }

  async cancel(eventId, fnIndex) {
    const post = (p, body) => fetch(BASE + "gradio_api/" + p, {
      method: "POST", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body),
    }).catch(() => null);
    await post("cancel", { event_id: eventId, session_hash: SESSION, fn_index: fnIndex });
    await post("reset", { event_id: eventId });
  }
}
const queue = new Queue();

function errorText(b) {
  if (!b) return "";
  if (typeof b.error === "string") return b.error;
  if (b.error && b.error.message) return b.error.message;
  if (typeof b.detail === "string") return b.detail;
  return "";
}
function joinError(status, body) {
  let msg = errorText(body);
  if (status === 503) msg = msg || "The app's queue is full. Try again in a moment.";
  if (status === 422 && body && Array.isArray(body.detail)) {
    msg = body.detail.map((d) => (d.parameter_name ? `${d.parameter_name}: ` : "") + (d.message || d.msg || JSON.stringify(d))).join("\n");
  }
  return new ApiError(status, "join", msg || `The host refused the call (${status}).`);
}

// Keeps the session alive on the host (Gradio releases session state when this drops).
async function heartbeat() {
  let delay = 1000;
  for (;;) {
    heartbeatAbort = new AbortController();
    try {
      const res = await fetch(`${BASE}gradio_api/heartbeat/${encodeURIComponent(SESSION)}`,
        { headers: authHeaders(), cache: "no-store", signal: heartbeatAbort.signal });
      if (res.status === 404 || res.status === 405) return; // host without heartbeats
      if (res.ok && res.body) {
        const r = res.body.getReader();
        while (!(await r.read()).done) delay = 1000;
      }
    } catch (e) {
      if (e.name === "AbortError") { delay = 1000; continue; } // a new session: reconnect at once
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 30000);
  }
}

// ---------------------------------------------------------------------------------------
// Page
// ---------------------------------------------------------------------------------------
const likeBtn = el("button.btn.like", { type: "button", "aria-pressed": "false", title: "Like this app" });
likeBtn.addEventListener("click", toggleLike);

document.getElementById("header").replaceWith(EMBED ? el("span") : siteHeader([
  loginButton(() => refresh(true)), themeToggle(),
]));

async function toggleLike() {
  if (!getToken() && !(await loginDialog("Likes are counted per token. Sign in to like this app."))) return;
  const liked = likeBtn.getAttribute("aria-pressed") === "true";
  likeBtn.disabled = true;
  try {
    const r = await api(`/api/spaces/${ENC_ID}/like`, { method: liked ? "DELETE" : "POST" });
    paintLike(r.likes, r.liked);
  } catch (e) {
    if (e.status === 401 && (await loginDialog(e.message))) return toggleLike();
    toast(e.message, "error");
  } finally {
    likeBtn.disabled = false;
  }
}
function paintLike(likes, liked) {
  likeBtn.setAttribute("aria-pressed", String(!!liked));
  likeBtn.replaceChildren(el("span.heart", liked ? "♥" : "♡"), el("span.n", fmtCount(likes)));
}

function toast(text, level = "info") {
  let box = document.querySelector(".toasts");
  if (!box) document.body.append(box = el("div.toasts", { role: "status", "aria-live": "polite" }));
  const t = el(`div.toast.toast-${level}`, text);
  box.append(t);
  while (box.children.length > 4) box.firstChild.remove(); // a print flood stays readable
  setTimeout(() => t.remove(), level === "error" ? 8000 : 4000);
}

function statsText(s) {
  if (!s) return "";
  const parts = [`${fmtCount(s.runs || 0)} run${s.runs === 1 ? "" : "s"}`];
  if (s.errors) parts.push(`${fmtCount(s.errors)} error${s.errors === 1 ? "" : "s"}`);
  if (s.runs) parts.push(`avg ${fmtMs(s.avg_ms)}`, `p95 ${fmtMs(s.p95_ms)}`);
  return parts.join(" · ");
}

function header(a) {
  const c = a.cardData || {};
  document.title = `${c.emoji || "🚀"} ${c.title || NAME} · moonspace`;
  paintLike(a.likes, a.liked);
  return el("section.app-head", { style: { "--card-bg": gradient(c.colorFrom, c.colorTo) } },
    el("div.app-banner",
      el("div.app-emoji", { "aria-hidden": "true" }, c.emoji || "🚀"),
      el("div.app-titles",
        el("h1.app-title", c.title || NAME),
        el("div.app-sub",
          el("a", { href: `${ROOT}/?q=${encodeURIComponent(OWNER)}` }, OWNER), " / ", el("span", NAME),
          a.private ? el("span.chip", "🔒 private") : null),
        c.short_description ? el("p.app-desc", c.short_description) : null),
      el("div.app-side",
        el("span#stage", stageBadge(a.runtime)),
        EMBED ? null : likeBtn)),
    el("div.app-meta",
      (a.tags || c.tags || []).map((t) => el("a.chip", { href: `${ROOT}/?tag=${encodeURIComponent(t)}` }, t)),
      (c.models || []).map((m) => el("span.chip.model", { title: "model" }, "🧠 ", m)),
      c.license ? el("span.chip.license", "⚖️ ", c.license) : null,
      el("span#stats.stats.muted.small", statsText(a.stats))));
}

function logsBox(lines, open) {
  if (!lines || !lines.length) return null;
  return el("details.logs", { open },
    el("summary", `App log (last ${lines.length} line${lines.length === 1 ? "" : "s"})`),
    el("pre.log-lines", lines.join("\n")));
}

function stagePanel(a) {
  const rt = a.runtime || {};
  const stage = rt.stage || "UNKNOWN";
  if (isErrorStage(stage)) {
    return el("section.panel.stage-panel",
      el("h2", "⚠️ This app is not running"),
      el("p.error-box", { role: "alert" }, rt.errorMessage || stage.replace(/_/g, " ").toLowerCase()),
      logsBox(a.logs, true),
      /RUNTIME_ERROR|BUILD_ERROR/.test(stage) ? el("p", el("button.btn.primary#restart", {
        onclick: async (ev) => {
          ev.target.disabled = true;
          try { await api(`/api/spaces/${ENC_ID}/restart`, { method: "POST" }); } catch (e) { ev.target.disabled = false; }
        },
      }, "Restart the app")) : null,
      el("p.muted.small", "The page follows the app's state; fix the app on disk and it reloads by itself."));
  }
  const msg = stage === "BUILDING" ? "Building: fetching models and starting the app…"
    : stage === "SLEEPING" ? "The app is asleep; it wakes on the next visit." : "Starting…";
  return el("section.panel.stage-panel",
    el("h2", el("span.spinner", { "aria-hidden": "true" }), " ", msg),
    buildProgress(rt.build),
    rt.errorMessage ? el("p.muted", rt.errorMessage) : null,
    logsBox(a.logs, false));
}

function build(a) {
  const iface = a.interface;
  const stage = (a.runtime && a.runtime.stage) || "";
  const parts = [header(a)];
  if (!iface || !iface.endpoints || !iface.endpoints.length) {
    parts.push(stagePanel(a));
  } else {
    // With several endpoints, titles and descriptions belong to each tab, not the page.
    const perEndpoint = iface.endpoints.length > 1 && iface.endpoints.some((e) => e.title === iface.title);
    if (!perEndpoint && (iface.title || iface.description)) {
      parts.push(el("section.iface-intro",
        iface.title ? el("h2", iface.title) : null,
        iface.description ? el("div.md", { innerHTML: renderMarkdown(iface.description) }) : null));
    }
    parts.push(endpointsView(a, iface.endpoints));
    if (isErrorStage(stage)) parts.push(el("p.error-box", a.runtime.errorMessage || stage));
    const logs = logsBox(a.logs, false);
    if (logs && !EMBED) parts.push(el("section.panel", logs));
  }
  if (!EMBED && a.readme_html) parts.push(el("article.readme.md", { innerHTML: a.readme_html }));
  if (EMBED) parts.push(el("p.embed-foot.small", el("a", { href: `${ROOT}/spaces/${ENC_ID}`, target: "_blank", rel: "noopener" }, "Open in moonspace ↗")));
  main.replaceChildren(...parts);
  main.setAttribute("aria-busy", "false");
  built = { stage, sig: pageSig(a) };
}

// ---------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------
function endpointsView(a, endpoints) {
  const wanted = decodeURIComponent(location.hash.slice(1));
  const views = endpoints.map((ep, i) => endpointView(a, ep, ep.fn_index ?? i));
  let current = Math.max(0, endpoints.findIndex((e) => e.api_name === wanted));
  const tabs = endpoints.length > 1 ? el("div.tabs", { role: "tablist" }, endpoints.map((ep, i) =>
    el("button.tab", {
      type: "button", role: "tab", dataset: { api: ep.api_name },
      onclick: () => select(i, true),
    }, ep.title || "/" + ep.api_name))) : null;
  function select(i, push) {
    current = i;
    views.forEach((v, j) => { v.hidden = j !== i; });
    if (tabs) [...tabs.children].forEach((b, j) => b.setAttribute("aria-selected", String(j === i)));
    if (push) history.replaceState(null, "", "#" + encodeURIComponent(endpoints[i].api_name));
  }
  select(current, false);
  return el("section.endpoints", tabs, views);
}

const NON_API = new Set(["state"]);

function exampleRow(ep, inputs, row) {
  // Examples list every input, or only the visible ones (state inputs left out).
  const targets = row.length === inputs.length ? inputs : inputs.filter((c) => !NON_API.has(c.type));
  return targets.map((c, i) => [c, row[i]]);
}

function endpointView(a, ep, fnIndex) {
  const inputs = (ep.inputs || []).map((spec, i) => inputComponent(spec, ep.params && ep.params[i]));
  const outputs = (ep.outputs || []).map((spec) => outputComponent(spec));
  const chatOut = outputs.findIndex((o) => o.type === "chatbot");
  const chatIn = inputs.findIndex((c) => c.type === "chatbot");
  // A chatbot that is both input and output is one view: the input takes the shown conversation.
  if (chatOut >= 0 && chatIn >= 0) inputs[chatIn].link(outputs[chatOut]);
  const chat = chatOut >= 0;
  // Gradio apps return a value into an input (e.g. "" to empty the message box) by listing
  // the same component as an output; here that is an output of the same type and label.
  outputs.forEach((o) => {
    if (o.type === "state" || o.type === "chatbot" || !o.props.label) return;
    const twin = inputs.find((c) => c.type === o.type && c.label === o.props.label && !c.hidden);
    if (twin) o.bind(twin);
  });

  const errorBox = el("div.error-box", { role: "alert", hidden: true });
  const progress = el("div.progress", { hidden: true }, el("div.bar"), el("span.ptext"));
  const statusLine = el("div.run-status.small.muted", { "aria-live": "polite" });
  const submit = el("button.btn.primary.submit", { type: "submit" }, chat ? "Send" : "Submit");
  const cancel = el("button.btn.cancel", { type: "button", disabled: true }, "Cancel");
  const clear = el("button.btn.ghost", { type: "button" }, "Clear");
  let run = null; // the call in flight

  const form = el("form.inputs.panel", { novalidate: true },
    inputs.map((c) => c.node),
    el("div.row.buttons", clear, cancel, submit));
  const outBox = el("div.outputs.panel", outputs.map((o) => o.node), progress, statusLine, errorBox);

  const apiPanel = EMBED ? null : apiView(a, ep, inputs);

  let examples = null;
  if (ep.examples && ep.examples.length) {
    const vis = inputs.filter((c) => !NON_API.has(c.type) && !c.hidden);
    examples = el("section.examples",
      el("h3", "Examples"),
      el("div.table-wrap", el("table",
        el("thead", el("tr", vis.map((c) => el("th", c.label)))),
        el("tbody", ep.examples.map((row) => {
          const pairs = exampleRow(ep, inputs, row);
          return el("tr.example", {
            tabindex: 0, title: "Click to fill the form",
            onclick: () => fill(pairs),
            onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fill(pairs); } },
          }, pairs.filter(([c]) => !NON_API.has(c.type) && !c.hidden).map(([, v]) => el("td", exampleText(v))));
        })))));
  }
  function fill(pairs) {
    for (const [c, v] of pairs) if (!NON_API.has(c.type) && v !== undefined) c.set(v);
    apiPanel && apiPanel.update();
    form.querySelector("input,textarea,select")?.focus({ preventScroll: true });
  }

  form.addEventListener("input", () => apiPanel && apiPanel.update());
  form.addEventListener("change", () => apiPanel && apiPanel.update());
  form.addEventListener("submit", (e) => { e.preventDefault(); start(); });
  cancel.addEventListener("click", () => {
    if (!run) return;
    run.cancelled = true;
    statusLine.textContent = "Cancelling…";
    if (run.eventId) queue.cancel(run.eventId, fnIndex);
  });
  clear.addEventListener("click", () => {
    if (run) return;
    if (inputs.some((c) => c.type === "state")) restartSession();
    inputs.forEach((c) => c.reset());
    outputs.forEach((o) => o.set(null));
    errorBox.hidden = true;
    statusLine.textContent = "";
    apiPanel && apiPanel.update();
  });

  function setBusy(b) {
    submit.disabled = b;
    cancel.disabled = !b;
    view.classList.toggle("busy", b);
    submit.replaceChildren(b ? el("span.spinner", { "aria-hidden": "true" }) : "", b ? " Running" : chat ? "Send" : "Submit");
  }
  function showError(text, title) {
    errorBox.replaceChildren(el("strong", title || "Error"), el("div.msg", text));
    errorBox.hidden = false;
  }
  function showProgress(p) {
    const d = Array.isArray(p) ? p[p.length - 1] : p;
    if (!d) return;
    let frac = d.progress;
    if (frac == null && d.index != null && d.length) frac = d.index / d.length;
    progress.hidden = false;
    progress.classList.toggle("indeterminate", frac == null);
    progress.querySelector(".bar").style.width = frac == null ? "" : `${Math.max(0, Math.min(1, frac)) * 100}%`;
    const count = d.index != null ? `${d.index}${d.length ? "/" + d.length : ""}${d.unit ? " " + d.unit : ""}` : "";
    progress.querySelector(".ptext").textContent = [d.desc, count, frac != null ? Math.round(frac * 100) + "%" : ""].filter(Boolean).join(" · ");
  }

  async function start() {
    if (run) return;
    let data;
    try {
      data = inputs.map((c) => c.get());
    } catch (e) {
      return showError(e.message, "Check the form");
    }
    errorBox.hidden = true;
    progress.hidden = true;
    const r = run = { eventId: null, cancelled: false, t0: performance.now(), values: null, partials: 0 };
    setBusy(true);
    statusLine.textContent = "Joining the queue…";
    // Chat: show the user's message at once and clear the box, as chat apps do.
    let message = null;
    if (chat) {
      const tb = inputs.find((c) => c.type === "textbox");
      if (tb) {
        message = tb.get();
        tb.set("");
        if (message) outputs[chatOut].pending(message);
      }
    }
    const tick = setInterval(() => {
      if (r.started) statusLine.dataset.elapsed = ((performance.now() - r.started) / 1000).toFixed(1) + " s";
      paintStatus();
    }, 100);
    function paintStatus() {
      if (r.queueText && !r.started) statusLine.textContent = r.queueText;
      else if (r.started) statusLine.textContent = `Running · ${statusLine.dataset.elapsed || "0.0 s"}` + (r.partials ? ` · ${r.partials} update${r.partials === 1 ? "" : "s"}` : "");
    }
    const finish = () => {
      clearInterval(tick);
      setBusy(false);
      run = null;
      progress.hidden = true;
      if (message != null && outputs[chatOut]) outputs[chatOut].pending(null);
      setTimeout(() => refresh(false), 300); // stats changed
    };
    const handler = (msg) => {
      switch (msg.msg) {
      case "estimation": {
        const pos = (msg.rank ?? 0) + 1;
        r.queueText = `In queue: position ${pos}${msg.queue_size ? " of " + msg.queue_size : ""}` +
          (msg.rank_eta != null ? ` · about ${Math.max(0, msg.rank_eta).toFixed(1)} s` : "");
        paintStatus();
        break;
      }
      case "process_starts":
        r.started = performance.now();
        paintStatus();
        break;
      case "progress":
        if (!r.started) r.started = performance.now();
        showProgress(msg.progress_data);
        break;
      case "log":
        if (msg.log) toast(msg.log, msg.level === "error" ? "error" : msg.level === "warning" ? "warning" : "info");
        break;
      case "process_generating": {
        if (!r.started) r.started = performance.now();
        const out = msg.output || {};
        if (!msg.success) break;
        const d = out.data || [];
        // The first message of an event has full values; later ones are per-output diffs.
        r.values = r.values == null ? d.map(clone) : r.values.map((v, i) => applyDiff(v, d[i]));
        r.partials++;
        outputs.forEach((o, i) => o.set(r.values[i], true));
        if (message != null) outputs[chatOut].pending(null);
        paintStatus();
        break;
      }
      case "process_completed": {
        const out = msg.output || {};
        const secs = ((performance.now() - r.t0) / 1000).toFixed(2);
        finish();
        if (msg.success && Array.isArray(out.data)) {
          outputs.forEach((o, i) => o.set(out.data[i], false));
          statusLine.textContent = `Done in ${secs} s` + (r.partials ? ` · ${r.partials} streamed update${r.partials === 1 ? "" : "s"}` : "");
        } else if (r.cancelled) {
          if (r.values) outputs.forEach((o, i) => o.set(r.values[i], false));
          statusLine.textContent = `Cancelled after ${secs} s`;
        } else if (msg.success) {
          statusLine.textContent = `Finished in ${secs} s (no output)`;
        } else {
          if (r.values) outputs.forEach((o, i) => o.set(r.values[i], false));
          const text = out.error == null ? "The app failed; it hides the error message." : String(out.error);
          showError(text, out.title || "Error");
          statusLine.textContent = `Failed after ${secs} s`;
          if (out.status === 401) loginDialog("This app needs an access token.");
        }
        break;
      }
      }
    };
    try {
      r.eventId = await queue.join(fnIndex, data, handler);
      if (r.cancelled) queue.cancel(r.eventId, fnIndex);
    } catch (e) {
      finish();
      if (message != null) inputs.find((c) => c.type === "textbox")?.set(message);
      showError(e.message, e.status === 422 ? "Invalid input" : e.status === 503 ? "Queue full" : "Could not start the call");
      statusLine.textContent = "";
      if (e.status === 401 && (await loginDialog(e.message))) start();
    }
  }

  const multi = ((a.interface && a.interface.endpoints) || []).length > 1;
  const view = el(`section.endpoint${chat ? ".chat-layout" : ""}`, { dataset: { api: ep.api_name }, role: "tabpanel" },
    multi && ep.description ? el("div.md.ep-intro", { innerHTML: renderMarkdown(ep.description) }) : null,
    el("div.io", form, outBox),
    examples,
    apiPanel && apiPanel.node);
  return view;
}

function exampleText(v) {
  if (v == null) return "";
  if (typeof v === "string") return v.length > 120 ? v.slice(0, 117) + "…" : v;
  if (Array.isArray(v) && v.every((x) => typeof x !== "object")) return v.join(", ");
  const s = JSON.stringify(v);
  return s.length > 120 ? s.slice(0, 117) + "…" : s;
}
const clone = (v) => (v == null || typeof v !== "object" ? v : JSON.parse(JSON.stringify(v)));

// ---------------------------------------------------------------------------------------
// "Use via API"
// ---------------------------------------------------------------------------------------
function pyRepr(v, ind = "") {
  if (v == null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : "None";
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map((x) => pyRepr(x, ind)).join(", ") + "]";
  return "{" + Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyRepr(x, ind)}`).join(", ") + "}";
}
const jsKey = (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k));
const shq = (s) => "'" + String(s).replace(/'/g, "'\\''") + "'";

function apiView(a, ep, inputs) {
  const url = a.api_url || `${location.origin}${BASE}`;
  const needsToken = !!(a.private || getToken());
  const langs = ["Python", "JavaScript", "curl"];
  let lang = localStorage.getItem?.("moonspace-api-lang") || "Python";
  if (!langs.includes(lang)) lang = "Python";
  const code = el("code");
  const pre = el("pre.snippet", code);
  const copy = el("button.btn.small.copy", { type: "button", onclick: doCopy }, "Copy");
  const tabs = el("div.tabs.small", { role: "tablist" }, langs.map((l) =>
    el("button.tab", { type: "button", role: "tab", dataset: { lang: l }, onclick: () => { lang = l; try { localStorage.setItem("moonspace-api-lang", l); } catch (e) { /* ok */ } update(); } }, l)));
  const params = el("ul.params.small");
  const node = el("details.api.panel",
    el("summary", el("span", "⚡ Use via API"), el("code.small.muted", " /" + ep.api_name)),
    el("p.muted.small", "This app speaks Gradio's API: the official clients work unmodified. Endpoint ",
      el("code", "/" + ep.api_name), " at ", el("code", url)),
    tabs, el("div.snippet-wrap", pre, copy), el("h4", "Parameters"), params,
    el("p.muted.small", "Returns ", (ep.outputs || []).filter((o) => o.type !== "state").length, " value(s): ",
      (ep.outputs || []).filter((o) => o.type !== "state").map((o, i) => `[${i}] ${o.type}${o.props && o.props.label ? " (" + o.props.label + ")" : ""}`).join(", ") || "none"));

  function values() {
    return inputs.map((c, i) => {
      let v;
      try { v = c.get(); } catch (e) { v = c.defaultValue(); }
      return { c, name: (ep.params && ep.params[i]) || c.label || `arg${i}`, v };
    }).filter((x) => !NON_API.has(x.c.type));
  }
  function update() {
    const vals = values();
    const api = "/" + ep.api_name;
    let text;
    if (lang === "Python") {
      text = `from gradio_client import Client\n\n` +
        `client = Client(${JSON.stringify(url)}${needsToken ? ', headers={"Authorization": "Bearer <your token>"}' : ""})\n` +
        `result = client.predict(\n${vals.map((x) => `    ${x.name}=${pyRepr(x.v)},\n`).join("")}    api_name=${JSON.stringify(api)},\n)\nprint(result)\n`;
    } else if (lang === "JavaScript") {
      text = `import { Client } from "@gradio/client";\n\n` +
        `const client = await Client.connect(${JSON.stringify(url)}${needsToken ? ', { token: "<your token>" }' : ""});\n` +
        `const result = await client.predict(${JSON.stringify(api)}, {\n${vals.map((x) => `  ${jsKey(x.name)}: ${JSON.stringify(x.v)},\n`).join("")}});\n` +
        `console.log(result.data);\n`;
    } else {
      const auth = needsToken ? ` \\\n  -H "Authorization: Bearer $MOONSPACE_TOKEN"` : "";
      text = `EVENT_ID=$(curl -s -X POST ${url}gradio_api/call/${ep.api_name}${auth} \\\n` +
        `  -H "Content-Type: application/json" \\\n` +
        `  -d ${shq(JSON.stringify({ data: vals.map((x) => x.v) }))} \\\n` +
        `  | sed -E 's/.*"event_id" *: *"([^"]+)".*/\\1/')\n` +
        `curl -N ${url}gradio_api/call/${ep.api_name}/$EVENT_ID${auth}\n`;
    }
    code.textContent = text;
    [...tabs.children].forEach((b) => b.setAttribute("aria-selected", String(b.dataset.lang === lang)));
    params.replaceChildren(...vals.map((x) => el("li", el("code", x.name), " ", el("span.muted", x.c.type),
      x.c.label && x.c.label !== x.name ? ` · ${x.c.label}` : "", " · default ", el("code", JSON.stringify(x.c.defaultValue()) ?? "null"))));
  }
  async function doCopy() {
    const text = code.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) { // http on a non-localhost origin has no clipboard API
      const ta = el("textarea", { style: { position: "fixed", opacity: "0" } });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    copy.textContent = "Copied ✓";
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  }
  node.addEventListener("toggle", update);
  update();
  return { node, update };
}

// ---------------------------------------------------------------------------------------
// Loading, the live status stream, and polling when the stream cannot be had
// ---------------------------------------------------------------------------------------
function schedule(ms) {
  clearTimeout(pollTimer); // never two polling chains, whoever called refresh
  pollTimer = ms ? setTimeout(() => refresh(false), ms) : null;
}

function follow() {
  if (unfollow || polling) return;
  unfollow = followStatus(ENC_ID, onStatus, (heard) => {
    unfollow = null;
    polling = !heard;
    schedule(heard ? 1500 : 1); // a stream that worked is opened again by the next refresh
  });
}

function stopFollowing() {
  if (unfollow) unfollow();
  unfollow = null;
}

function onStatus(s) {
  if (!info) return;
  const rt = info.runtime || {};
  const moved = rt.stage !== s.stage || (rt.errorMessage || null) !== (s.errorMessage || null);
  info.runtime = { ...rt, ...s };
  // A new stage brings more than the stream says: the form once RUNNING, the log on an error.
  if (moved) refresh(false);
  else paintStatus(info.runtime);
}

function paintStatus(rt) {
  const st = document.getElementById("stage");
  if (st) st.replaceChildren(stageBadge(rt));
  const bar = document.querySelector(".build-progress"), nbar = buildProgress(rt && rt.build);
  if (bar) bar.replaceWith(...(nbar ? [nbar] : []));
  else if (nbar) document.querySelector(".stage-panel h2")?.after(nbar);
}

function lockScreen(message) {
  main.replaceChildren(el("section.panel.empty",
    el("div.emoji", "🔒"), el("h2", "This app needs an access token"), el("p.muted", message),
    el("button.btn.primary", { type: "button", onclick: async () => { if (await loginDialog(message)) refresh(true); } }, "Enter token")));
  main.setAttribute("aria-busy", "false");
}

const pageSig = (a) => JSON.stringify([a.interface, a.cardData, a.readme_html]);
const usesState = (i) => (i.endpoints || []).some((ep) => [...(ep.inputs || []), ...(ep.outputs || [])].some((c) => c && c.type === "state"));

async function refresh(force) {
  schedule(0);
  if (!route) {
    main.replaceChildren(el("section.panel.empty", el("div.emoji", "🧭"), el("h2", "Not an app address"),
      el("p", el("a", { href: ROOT + "/" }, "Back to the gallery"))));
    return;
  }
  let a;
  try {
    a = await api(`/api/spaces/${ENC_ID}`);
  } catch (e) {
    if (e.status === 401) {
      lockScreen(e.message);
      if (force !== "quiet") loginDialog(e.message).then((ok) => ok && refresh(true));
      return;
    }
    if (e.status === 404) {
      main.replaceChildren(el("section.panel.empty", el("div.emoji", "🔭"), el("h2", `No app ${ID}`),
        el("p.muted", e.message), el("p", el("a.btn", { href: ROOT + "/" }, "Back to the gallery"))));
      main.setAttribute("aria-busy", "false");
      return;
    }
    if (!info) {
      main.replaceChildren(el("section.panel.empty", el("div.emoji", "⚠️"), el("h2", "Could not load the app"),
        el("p.error-box", e.message), el("button.btn", { type: "button", onclick: () => refresh(true) }, "Retry")));
      main.setAttribute("aria-busy", "false");
    }
    schedule(5000);
    return;
  }
  info = a;
  const stage = (a.runtime && a.runtime.stage) || "";
  // Rebuild only when what the page shows changes shape; keep the forms' values otherwise.
  // (A changed interface, card or README means the app was edited on disk and reloaded.)
  if (force || !built || built.stage !== stage || built.sig !== pageSig(a)) {
    if (!document.querySelector(".endpoint.busy")) build(a);
  } else {
    const s = document.getElementById("stats");
    if (s) s.textContent = statsText(a.stats);
    paintStatus(a.runtime);
    const logs = document.querySelector(".logs .log-lines");
    if (logs && a.logs) logs.textContent = a.logs.join("\n");
    paintLike(a.likes, a.liked);
  }
  // Only apps with session state need the heartbeat (as Gradio's connect_heartbeat): each
  // open stream holds one of the browser's six connections to this host.
  if (a.interface && !heartbeat.started && usesState(a.interface)) { heartbeat.started = true; heartbeat(); }
  // The stream brings every new stage and the download progress until the app runs. A running
  // app's page polls slowly instead (stats, log, a crash): an open stream would hold one of
  // the browser's six connections to the host for as long as the tab stays open.
  if (stage === "RUNNING") stopFollowing();
  else follow();
  if (unfollow) schedule(0);
  else schedule(stage === "BUILDING" ? 1500 : stage === "RUNNING" && a.interface ? 10000 : 4000);
}

// Leaving the page ends the stream; coming back to it (the back/forward cache) opens it again.
addEventListener("pagehide", () => { stopFollowing(); schedule(0); });
addEventListener("pageshow", (e) => { if (e.persisted) refresh(false); });
refresh(true);
