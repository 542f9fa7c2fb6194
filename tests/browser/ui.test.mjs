// tests/browser/ui.test.mjs: the web UI end to end in headless Chromium (Debian's
// /usr/bin/chromium driven by npm playwright-core). Starts the real host on a free loopback
// port with two apps this test writes (a streaming one and one that raises an error), plus
// the repo's example apps when present, then: opens the gallery, searches, opens an app,
// runs an example and watches at least three distinct partial outputs arrive before the
// final one, checks the "Use via API" panel and the /embed view, sees an error rendered, and
// saves screenshots under build/test-output/.
//
// Prints PASS/FAIL/SKIP lines. SKIP when chromium, node_modules or the host binary are
// missing, except under CI=true, where that is a FAIL.
//
// Env: MS_BIN (default bin/), UI_TEST_URL=http://host:port to drive an already running host
// instead (it must serve the same uitest/* apps; used while developing the UI).
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const MS_BIN = path.resolve(process.env.MS_BIN || path.join(ROOT, "bin")); // the host runs in a temp cwd
const OUT = path.join(ROOT, "build/test-output");
const CHROMIUM = "/usr/bin/chromium";
const CI = process.env.CI === "true";
const DEADLINE = Date.now() + 100_000;

let failures = 0;
const T0 = Date.now();
const pass = (name) => console.log(`PASS ${name}` + (process.env.UI_TEST_TIMES ? ` [${((Date.now() - T0) / 1000).toFixed(1)} s]` : ""));
const fail = (name, why) => { failures++; console.log(`FAIL ${name}: ${String(why).replace(/\s+/g, " ").slice(0, 500)}`); };
const skipAll = (why) => {
  if (CI) { console.log(`FAIL browser_ui: ${why} (CI=true)`); process.exit(1); }
  console.log(`SKIP browser_ui: ${why}`);
  process.exit(0);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- preconditions --------------------------------------------------------------------
if (!fs.existsSync(CHROMIUM)) skipAll(`${CHROMIUM} not installed (apt-get install chromium)`);
let chromium;
try {
  chromium = createRequire(path.join(ROOT, "tests/package.json"))("playwright-core").chromium;
} catch (e) {
  skipAll("playwright-core missing (cd tests && npm ci)");
}
const EXTERNAL = process.env.UI_TEST_URL || "";
const HOST_BIN = path.join(MS_BIN, "moonspace");
if (!EXTERNAL && !fs.existsSync(HOST_BIN)) skipAll(`${HOST_BIN} not built (make)`);

// ---- the apps this test serves --------------------------------------------------------
const WORDS = 6;
const EXPECTED_FINAL = Array.from({ length: WORDS }, (_, i) => `w${i + 1}`).join(" ") + " done";
const APPS = {
  "uitest/stream": {
    readme: `---
title: Stream probe
emoji: 🌊
colorFrom: green
colorTo: blue
sdk: lua
app_file: app.lua
short_description: Streams one word at a time
tags: [streaming, uitest]
pinned: true
---
# Stream probe

Written by the browser test: yields ${WORDS} partial values, then a final one.
`,
    lua: `-- os.clock busy-waits spread the pieces in time (there is no sleep in the sandbox)
local function busy(s) local t = os.clock(); while os.clock() - t < s do end end
app.interface{
  fn = function(text, words)
    local out = ""
    for i = 1, words do
      busy(0.12)
      progress(i, words, "writing")
      out = out .. (i > 1 and " " or "") .. text .. i
      coroutine.yield(out)
    end
    return out .. " done"
  end,
  inputs = { ui.textbox{label = "prefix", placeholder = "a word"}, ui.number{value = 2, label = "words", precision = 0} },
  outputs = ui.textbox{label = "stream"},
  examples = { {"w", ${WORDS}} },
}
`,
  },
  "uitest/chat": {
    readme: `---
title: Chat probe
emoji: 💬
colorFrom: pink
colorTo: indigo
sdk: lua
app_file: app.lua
short_description: Echoes, word by word, and remembers the session
tags: [chat, uitest]
---
# Chat probe
`,
    // Gradio's chat pattern: the chatbot is input and output, the message box is emptied by
    // returning "" into it, and a state counts turns on the host, per session.
    lua: `local function busy(s) local t = os.clock(); while os.clock() - t < s do end end
app.interface{
  api_name = "chat",
  fn = function(message, history, turns)
    history = history or {}
    turns = (turns or 0) + 1
    history[#history + 1] = {role = "user", content = message}
    history[#history + 1] = {role = "assistant", content = ""}
    local reply = "echo " .. message .. " (turn " .. turns .. ")"
    for w in reply:gmatch("%S+%s*") do
      busy(0.06)
      history[#history].content = history[#history].content .. w
      coroutine.yield("", history, turns)
    end
    return "", history, turns
  end,
  inputs = { ui.textbox{label = "message", placeholder = "Say something"}, ui.chatbot{label = "Chat"}, ui.state{} },
  outputs = { ui.textbox{label = "message"}, ui.chatbot{label = "Chat"}, ui.state{} },
}
`,
  },
  "uitest/secret": {
    readme: `---
title: Secret probe
emoji: 🔒
colorFrom: gray
colorTo: purple
sdk: lua
app_file: app.lua
short_description: Private; needs a token
tags: [uitest]
private: true
---
# Secret probe
`,
    lua: `app.interface{ fn = function(x) return "secret " .. x end, inputs = { "text" }, outputs = "text" }
`,
  },
  "uitest/boom": {
    readme: `---
title: Boom probe
emoji: 💥
colorFrom: red
colorTo: yellow
sdk: lua
app_file: app.lua
short_description: Always raises an error
tags: [uitest]
---
# Boom probe

Every call ends with error("boom").
`,
    lua: `app.interface{
  fn = function(x) error("boom: " .. x) end,
  inputs = { "text" },
  outputs = "text",
  examples = { {"on purpose"} },
}
`,
  },
};

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function getJson(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function waitFor(what, fn, ms) {
  const end = Math.min(Date.now() + ms, DEADLINE);
  let last;
  while (Date.now() < end) {
    try { if ((last = await fn())) return last; } catch (e) { if (e.fatal) throw e; last = e; }
    await sleep(150);
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? ` (${last.message})` : ""}`);
}

let host = null, tmp = null, browser = null, profile = null, hostLog = "", sanitizerReport = "", hostExit = null, token = process.env.UI_TEST_TOKEN || "";
async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  if (host && host.exitCode == null) {
    host.kill("SIGTERM");
    const t = setTimeout(() => host.kill("SIGKILL"), 5000);
    hostExit = await new Promise((r) => host.once("exit", (code, sig) => r({ code, sig })));
    clearTimeout(t);
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
}
const watchdog = setTimeout(async () => {
  fail("browser_ui", "the test ran out of time");
  await cleanup();
  process.exit(1);
}, DEADLINE - Date.now() + 5000);

async function startHost() {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ms-ui-"));
  for (const [id, app] of Object.entries(APPS)) {
    const dir = path.join(tmp, "apps", id);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "README.md"), app.readme);
    fs.writeFileSync(path.join(dir, "app.lua"), app.lua);
  }
  // A token for the private app and the like button (stdout holds only the token).
  const add = spawnSync(HOST_BIN, ["token", "add", "uitest", "--data", path.join(tmp, "data")], { encoding: "utf8", timeout: 10000 });
  token = (add.stdout || "").trim();
  if (add.status !== 0 || !/^\S{16,}$/.test(token)) throw new Error(`moonspace token add failed (${add.status}): ${add.stderr}`);
  const port = await freePort();
  const args = ["serve", "--host", "127.0.0.1", "--port", String(port), "--apps", path.join(tmp, "apps"),
    "--data", path.join(tmp, "data"), "--web", path.join(ROOT, "web")];
  // The shipped example apps make the gallery screenshot realistic; models are never fetched
  // from the internet in tests, so model apps just show their state.
  if (fs.existsSync(path.join(ROOT, "apps"))) args.push("--apps", path.join(ROOT, "apps"));
  host = spawn(HOST_BIN, args, { cwd: tmp, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HF_HUB_OFFLINE: "1" } });
  host.on("error", (e) => { hostLog += `\nspawn failed: ${e.message}`; });
  const keep = (d) => {
    const t = String(d);
    if (/AddressSanitizer|LeakSanitizer|runtime error:/.test(t)) sanitizerReport += t.slice(0, 2000);
    hostLog = (hostLog + t).slice(-8000);
  };
  host.stdout.on("data", keep);
  host.stderr.on("data", keep);
  const base = `http://127.0.0.1:${port}`;
  await waitFor("/healthz", async () => {
    if (host.exitCode != null) throw new Error(`host exited with ${host.exitCode}: ${hostLog.slice(-400)}`);
    return (await getJson(`${base}/healthz`)).status === 200;
  }, 15000);
  return base;
}

async function main() {
  const base = EXTERNAL ? EXTERNAL.replace(/\/+$/, "") : await startHost();
  fs.mkdirSync(OUT, { recursive: true });

  // The stream app must be up before its page can run it; the boom app just needs to list.
  let streamReady = true, badSince = 0;
  try {
    await waitFor("uitest/stream to be RUNNING", async () => {
      const r = await getJson(`${base}/api/spaces/uitest/stream`);
      const st = r.body && r.body.runtime && r.body.runtime.stage;
      if (st && /ERROR|NO_APP_FILE/.test(st)) {
        // A worker may crash while starting and recover; an error that lasts is final.
        badSince ||= Date.now();
        const e = new Error(`${st}: ${r.body.runtime.errorMessage} | log: ${(r.body.logs || []).slice(-3).join(" / ")}`);
        e.fatal = Date.now() - badSince > 3000;
        throw e;
      }
      badSince = 0;
      return st === "RUNNING" && r.body.interface;
    }, 20000);
  } catch (e) {
    streamReady = false;
    fail("app_running", e.message);
  }

  // A persistent context is how playwright takes a fresh --user-data-dir of our own.
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "ms-ui-chrome-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, viewport: { width: 1280, height: 900 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const page = browser.pages()[0] || await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error" && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text()); });
  // Nothing may be loaded from outside the host.
  const outside = [];
  page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith("data:")) outside.push(r.url()); });
  page.setDefaultTimeout(10000);

  // ---- gallery ----
  try {
    await page.goto(base + "/");
    await page.waitForSelector('.card[data-id="uitest/stream"]');
    await page.waitForSelector('.card[data-id="uitest/boom"]');
    const cards = await page.$$eval(".card[data-id]", (els) => els.map((e) => ({
      id: e.dataset.id, bg: getComputedStyle(e).backgroundImage, title: e.querySelector(".card-title")?.textContent,
      badge: e.querySelector(".badge")?.textContent, pinned: !!e.querySelector(".card-id .pin"),
    })));
    const s = cards.find((c) => c.id === "uitest/stream");
    if (s.title !== "Stream probe") throw new Error(`card title ${JSON.stringify(s.title)}`);
    if (!/linear-gradient/.test(s.bg)) throw new Error(`card background ${s.bg}`);
    if (!s.badge) throw new Error("no status badge");
    if (!s.pinned || cards.findIndex((c) => c.pinned) !== 0 || cards.findIndex((c) => !c.pinned) < cards.findIndex((c) => c.id === "uitest/stream"))
      throw new Error(`pinned app not first: ${cards.map((c) => c.id).join(", ")}`);
    await page.screenshot({ path: path.join(OUT, "ui-gallery.png"), fullPage: true });
    pass("gallery");
  } catch (e) {
    fail("gallery", e.message);
  }

  // ---- a model app whose model cannot be had (HF_HUB_OFFLINE=1, nothing cached) ----
  if (!EXTERNAL && fs.existsSync(path.join(ROOT, "apps/moonspace/story-writer"))) {
    try {
      const card = '.card[data-id="moonspace/story-writer"]';
      await page.waitForFunction((sel) => /not in the cache/.test(document.querySelector(sel)?.querySelector(".card-error")?.textContent || ""), card);
      const badge = await page.textContent(`${card} .badge`);
      if (!/Build error/i.test(badge)) throw new Error(`badge ${JSON.stringify(badge)}`);
      await page.goto(base + "/spaces/moonspace/story-writer");
      await page.waitForSelector(".stage-panel .error-box");
      const why = await page.textContent(".stage-panel .error-box");
      if (!/nickypro\/tinyllama-15M.*HF_HUB_OFFLINE.*not in the cache/.test(why)) throw new Error(`page says ${JSON.stringify(why)}`);
      // "tag#id.class" specs (web/common.js el) once made an element named "span#stage"
      if (!await page.isVisible("button.btn.primary#restart")) throw new Error("no retry button");
      if (!/Build error/i.test(await page.textContent("#stage"))) throw new Error("no #stage badge for the page's updates");
      if (!await page.$("span#stats.stats")) throw new Error("no #stats for the page's updates");
      pass("model app without its model: card and page say why, with a retry");
    } catch (e) {
      fail("model app without its model", e.message);
    }
    await page.goto(base + "/");
    await page.waitForSelector('.card[data-id="uitest/stream"]');
  }

  try {
    await page.fill("#q", "stream probe");
    await page.waitForFunction(() => !document.querySelector('.card[data-id="uitest/boom"]'));
    const shown = await page.$$eval(".card[data-id]", (els) => els.map((e) => e.dataset.id));
    if (!shown.includes("uitest/stream")) throw new Error(`search shows ${shown.join(", ")}`);
    await page.fill("#q", "zzz-no-such-app");
    await page.waitForSelector(".grid .empty");
    await page.fill("#q", "");
    await page.click('.chip.toggle[data-tag="uitest"]');
    await page.waitForFunction(() => document.querySelectorAll(".card[data-id]").length === 3);
    if (!/tag=uitest/.test(page.url())) throw new Error(`tag not in the URL: ${page.url()}`);
    pass("search");
  } catch (e) {
    fail("search", e.message);
  }

  // ---- app page ----
  let pageOk = false;
  try {
    await page.click('.card[data-id="uitest/stream"]');
    await page.waitForURL(/\/spaces\/uitest\/stream$/);
    await page.waitForSelector(".app-title");
    const title = await page.textContent(".app-title");
    if (title !== "Stream probe") throw new Error(`title ${JSON.stringify(title)}`);
    const readme = await page.textContent(".readme");
    if (!/Written by the browser test/.test(readme || "")) throw new Error("README body not shown");
    pass("app_page");
    pageOk = true;
  } catch (e) {
    fail("app_page", e.message);
  }

  if (pageOk && streamReady) {
    try {
      await page.waitForSelector("section.endpoint form");
      await page.click("tr.example");
      const filled = await page.$$eval("section.endpoint form input.input", (els) => els.map((e) => e.value));
      if (filled[0] !== "w" || filled[1] !== String(WORDS)) throw new Error(`example filled ${JSON.stringify(filled)}`);
      // Record every text the output shows, as it is put in the page.
      await page.evaluate(() => {
        const out = document.querySelector("section.endpoint .out-text");
        const prog = document.querySelector("section.endpoint .progress");
        window.__seen = [];
        window.__progress = [];
        new MutationObserver((recs) => {
          for (const r of recs) for (const n of r.addedNodes) window.__seen.push(n.textContent);
        }).observe(out, { childList: true, subtree: true, characterData: true });
        new MutationObserver(() => {
          if (!prog.hidden) window.__progress.push(prog.querySelector(".ptext").textContent);
        }).observe(prog, { childList: true, subtree: true, characterData: true, attributes: true });
      });
      await page.click("section.endpoint button.submit");
      await page.waitForFunction(() => /^Done|^Failed/.test(document.querySelector("section.endpoint .run-status")?.textContent || ""), null, { timeout: 20000 });
      const status = await page.textContent("section.endpoint .run-status");
      const final = await page.textContent("section.endpoint .out-text");
      const seen = await page.evaluate(() => window.__seen);
      if (final !== EXPECTED_FINAL) throw new Error(`final ${JSON.stringify(final)} (status ${status})`);
      const partials = [...new Set(seen.filter((t) => t && t !== EXPECTED_FINAL))];
      const ordered = partials.every((t, i) => EXPECTED_FINAL.startsWith(t) && (i === 0 || t.length > partials[i - 1].length));
      if (partials.length < 3 || !ordered) throw new Error(`partials ${JSON.stringify(partials)}`);
      if (seen.lastIndexOf(EXPECTED_FINAL) < seen.indexOf(partials[partials.length - 1])) throw new Error("final shown before the partials");
      await page.screenshot({ path: path.join(OUT, "ui-app.png"), fullPage: true });
      pass(`streaming (${partials.length} partial outputs before the final)`);
      const prog = [...new Set(await page.evaluate(() => window.__progress))];
      if (!prog.some((t) => /writing · \d\/6 steps/.test(t))) fail("progress", `progress bar texts ${JSON.stringify(prog)}`);
      else pass(`progress (${prog.length} states)`);
    } catch (e) {
      fail("streaming", e.message);
      await page.screenshot({ path: path.join(OUT, "ui-app.png"), fullPage: true }).catch(() => {});
    }

    try {
      await page.click("details.api summary");
      await page.click('details.api .tab[data-lang="JavaScript"]');
      const js = await page.textContent("details.api .snippet");
      const url = `${base}/spaces/uitest/stream/`;
      if (!js.includes(`Client.connect(${JSON.stringify(url)})`)) throw new Error(`JS snippet: ${js}`);
      if (!/predict\("\/predict", \{\s*text: "w",\s*words: 6,/.test(js)) throw new Error(`JS snippet args: ${js}`);
      await page.click('details.api .tab[data-lang="Python"]');
      const py = await page.textContent("details.api .snippet");
      if (!py.includes(`Client(${JSON.stringify(url)})`) || !/text="w",\s*words=6,\s*api_name="\/predict"/.test(py)) throw new Error(`Python snippet: ${py}`);
      await page.click('details.api .tab[data-lang="curl"]');
      const sh = await page.textContent("details.api .snippet");
      if (!sh.includes(`${url}gradio_api/call/predict`) || !sh.includes('{"data":["w",6]}')) throw new Error(`curl snippet: ${sh}`);
      pass("api_panel");
      // The snippets run as shown: the JS one with the real @gradio/client, the curl one in bash.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ms-ui-snip-"));
      try {
        const client = createRequire(path.join(ROOT, "tests/package.json")).resolve("@gradio/client");
        const jsFile = path.join(dir, "snippet.mjs");
        fs.writeFileSync(jsFile, js.replace('"@gradio/client"', JSON.stringify(pathToFileURL(client).href)));
        const rj = spawnSync(process.execPath, [jsFile], { encoding: "utf8", timeout: 20000 });
        if (!rj.stdout.includes(EXPECTED_FINAL)) throw new Error(`JS snippet printed ${JSON.stringify(rj.stdout)} ${rj.stderr.slice(0, 300)}`);
        let ran = "JS";
        if (fs.existsSync("/usr/bin/curl")) {
          const rc = spawnSync("bash", ["-c", sh], { encoding: "utf8", timeout: 20000 });
          if (!/event: complete\ndata: \["w1 w2 w3 w4 w5 w6 done"\]/.test(rc.stdout)) throw new Error(`curl snippet printed ${JSON.stringify(rc.stdout)}`);
          ran += " and curl";
        }
        pass(`api_snippets_run (${ran})`);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    } catch (e) {
      fail("api_panel", e.message);
    }
  }

  // ---- app output is untrusted: the Markdown renderer escapes it ----
  try {
    const html = await page.evaluate(async () => {
      const m = await import(document.documentElement.dataset.root + "/static/common.js");
      return m.renderMarkdown("# T\n<img src=x onerror=alert(1)> **b** [x](javascript:alert(1)) [ok](https://e.x/)\n```\n<script>x</script>\n```\n- <b>li</b>");
    });
    const bad = [/<img/i, /<script/i, /href="javascript/i, /<b>/].filter((re) => re.test(html));
    if (bad.length || !html.includes("<strong>b</strong>") || !html.includes('href="https://e.x/"') || !html.includes("&lt;img"))
      throw new Error(html);
    pass("markdown_escaped");
  } catch (e) {
    fail("markdown_escaped", e.message);
  }

  // ---- cancel ----
  if (pageOk && streamReady) {
    try {
      await page.fill("section.endpoint form input[type=number]", "60");
      await page.click("section.endpoint button.submit");
      // The previous call's final value stays until the first partial of this one replaces it.
      await page.waitForFunction(() => /^w1( w\d+)*$/.test(document.querySelector("section.endpoint .out-text")?.textContent || ""), null, { timeout: 15000 });
      // A second page (its own session) queues behind the running call: concurrency is 1.
      const page2 = await browser.newPage();
      await page2.goto(base + "/spaces/uitest/stream");
      await page2.waitForSelector("section.endpoint form");
      await page2.fill("section.endpoint form input.input", "q");
      await page2.fill("section.endpoint form input[type=number]", "2");
      await page2.click("section.endpoint button.submit");
      await page2.waitForFunction(() => /^In queue: position \d+/.test(document.querySelector("section.endpoint .run-status")?.textContent || ""), null, { timeout: 10000 });
      const queued = await page2.textContent("section.endpoint .run-status");
      await page.click("section.endpoint button.cancel");
      await page2.waitForFunction(() => document.querySelector("section.endpoint .out-text")?.textContent === "q1 q2 done", null, { timeout: 15000 });
      await page2.close();
      pass(`queue_position (${queued})`);
      await page.waitForFunction(() => /^Cancelled/.test(document.querySelector("section.endpoint .run-status")?.textContent || ""), null, { timeout: 10000 });
      const shown = await page.textContent("section.endpoint .out-text");
      if (/done$/.test(shown)) throw new Error(`the call ran to its end: ${shown}`);
      if (await page.isDisabled("section.endpoint button.submit")) throw new Error("submit still disabled");
      // The app serves the next call.
      await page.fill("section.endpoint form input[type=number]", "3");
      await page.click("section.endpoint button.submit");
      await page.waitForFunction(() => document.querySelector("section.endpoint .out-text")?.textContent === "w1 w2 w3 done", null, { timeout: 15000 });
      pass("cancel");
    } catch (e) {
      fail("cancel", e.message);
    }
  }

  // ---- chatbot: streamed reply, conversation kept per session ----
  try {
    await page.goto(base + "/spaces/uitest/chat");
    await page.waitForSelector("section.endpoint form", { timeout: 15000 });
    await page.evaluate(() => {
      window.__replies = [];
      const chat = document.querySelector("section.endpoint .chat");
      new MutationObserver(() => {
        const b = [...chat.querySelectorAll(".bubble.assistant")].pop();
        if (b && b.textContent) window.__replies.push(b.textContent);
      }).observe(chat, { childList: true, subtree: true, characterData: true });
    });
    const input = "section.endpoint form input.input";
    await page.fill(input, "hello");
    await page.press(input, "Enter");
    await page.waitForFunction(() => /^Done/.test(document.querySelector("section.endpoint .run-status")?.textContent || ""), null, { timeout: 15000 });
    if ((await page.inputValue(input)) !== "") throw new Error("message box not cleared");
    if (await page.isVisible("section.endpoint .outputs .out-textbox")) throw new Error("the message box's output twin is shown as an output");
    const replies = [...new Set(await page.evaluate(() => window.__replies))];
    if (replies.length < 3 || replies[replies.length - 1] !== "echo hello (turn 1)") throw new Error(`streamed replies ${JSON.stringify(replies)}`);
    await page.fill(input, "again");
    await page.press(input, "Enter");
    await page.waitForFunction(() => /^Done/.test(document.querySelector("section.endpoint .run-status")?.textContent || "") &&
      document.querySelectorAll("section.endpoint .bubble").length === 4, null, { timeout: 15000 });
    const bubbles = await page.$$eval("section.endpoint .bubble", (els) => els.map((e) => `${e.dataset.role}:${e.textContent}`));
    const want = ["user:hello", "assistant:echo hello (turn 1)", "user:again", "assistant:echo again (turn 2)"];
    if (JSON.stringify(bubbles) !== JSON.stringify(want)) throw new Error(`bubbles ${JSON.stringify(bubbles)}`);
    await page.screenshot({ path: path.join(OUT, "ui-chat.png"), fullPage: true });
    // Clear starts a new session: the host's state for the chat starts over.
    await page.click("section.endpoint button.ghost");
    await page.fill(input, "anew");
    await page.press(input, "Enter");
    await page.waitForFunction(() => /^Done/.test(document.querySelector("section.endpoint .run-status")?.textContent || "") &&
      document.querySelectorAll("section.endpoint .bubble").length === 2, null, { timeout: 15000 });
    const after = await page.$$eval("section.endpoint .bubble", (els) => els.map((e) => e.textContent));
    if (after[1] !== "echo anew (turn 1)") throw new Error(`after Clear: ${JSON.stringify(after)}`);
    pass(`chatbot (${replies.length} streamed states, session kept)`);
  } catch (e) {
    fail("chatbot", e.message);
  }

  // ---- a private app: login prompt, token, like ----
  if (token) {
    try {
      await page.goto(base + "/spaces/uitest/secret");
      await page.waitForSelector("dialog.login[open] input");
      await page.fill("dialog.login input", token);
      await page.click("dialog.login button[type=submit]");
      await page.waitForSelector(".app-title");
      if ((await page.textContent(".app-title")) !== "Secret probe") throw new Error("private app not shown after sign-in");
      await page.click("button.like");
      await page.waitForFunction(() => document.querySelector("button.like")?.getAttribute("aria-pressed") === "true");
      const likes = await page.textContent("button.like .n");
      if (likes !== "1") throw new Error(`likes ${likes}`);
      const r = await fetch(`${base}/api/spaces/uitest/secret`, { headers: { Authorization: `Bearer ${token}` } });
      const body = await r.json();
      if (body.likes !== 1 || body.liked !== true) throw new Error(`API says likes=${body.likes} liked=${body.liked}`);
      pass("login_and_like");
    } catch (e) {
      fail("login_and_like", e.message);
    }
  }

  // ---- phone size, dark theme ----
  try {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.emulateMedia({ colorScheme: "dark" });
    await page.goto(base + "/");
    await page.waitForSelector(".card[data-id]");
    const st = await page.evaluate(() => ({
      theme: document.documentElement.dataset.theme,
      overflow: document.documentElement.scrollWidth > window.innerWidth + 1,
      bg: getComputedStyle(document.body).backgroundColor,
    }));
    if (st.theme !== "dark" || st.overflow) throw new Error(JSON.stringify(st));
    await page.screenshot({ path: path.join(OUT, "ui-gallery-phone-dark.png"), fullPage: true });
    await page.goto(base + "/spaces/uitest/stream");
    await page.waitForSelector(".app-title");
    if (await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1)) throw new Error("app page scrolls sideways on a phone");
    await page.screenshot({ path: path.join(OUT, "ui-app-phone-dark.png"), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.emulateMedia({ colorScheme: "light" });
    pass("phone_dark");
  } catch (e) {
    fail("phone_dark", e.message);
  }

  // ---- embed view ----
  try {
    await page.goto(base + "/spaces/uitest/stream/embed");
    await page.waitForSelector(".app-title");
    const embed = await page.evaluate(() => ({
      cls: document.body.classList.contains("embed"), header: !!document.querySelector("header.site"), readme: !!document.querySelector(".readme"),
    }));
    if (!embed.cls || embed.header || embed.readme) throw new Error(JSON.stringify(embed));
    pass("embed");
  } catch (e) {
    fail("embed", e.message);
  }

  // ---- an error, rendered ----
  try {
    await page.goto(base + "/spaces/uitest/boom");
    await page.waitForSelector(".app-title");
    const r = await getJson(`${base}/api/spaces/uitest/boom`);
    const stage = r.body && r.body.runtime && r.body.runtime.stage;
    if (stage === "RUNNING") {
      await page.click("tr.example");
      await page.click("section.endpoint button.submit");
      await page.waitForSelector("section.endpoint .error-box:not([hidden])", { timeout: 20000 });
      const text = await page.textContent("section.endpoint .error-box");
      if (!/boom: on purpose/.test(text)) throw new Error(`error box says ${JSON.stringify(text)}`);
      const colour = await page.$eval("section.endpoint .error-box", (e) => getComputedStyle(e).color);
      const [rr, gg, bb] = colour.match(/\d+/g).map(Number);
      if (!(rr > 150 && gg < 120 && bb < 120)) throw new Error(`error box colour ${colour} is not red`);
      pass("error_rendered");
    } else {
      // A host that cannot run apps yet still has to say so on the page.
      await page.waitForSelector(".stage-panel .error-box");
      fail("error_rendered", `uitest/boom is ${stage}, not RUNNING: the call error could not be exercised`);
    }
  } catch (e) {
    fail("error_rendered", e.message);
  }

  if (outside.length) fail("same_origin", `requests outside the host: ${outside.slice(0, 3).join(", ")}`);
  else pass("same_origin");
  if (pageErrors.length) fail("page_errors", pageErrors.slice(0, 3).join(" | "));
  else pass("page_errors");
}

try {
  await main();
} catch (e) {
  fail("browser_ui", e.stack || e.message);
}
if (failures && hostLog) console.log("--- host log (tail) ---\n" + hostLog.slice(-2000));
clearTimeout(watchdog);
await cleanup();
// The host must stop cleanly on SIGTERM, with nothing from the sanitizers (ASan builds).
if (host) {
  if (sanitizerReport) fail("host_clean", sanitizerReport);
  else if (!hostExit || hostExit.code !== 0) fail("host_clean", `host exit ${JSON.stringify(hostExit)}: ${hostLog.slice(-600)}`);
  else pass("host_clean");
}
process.exit(failures ? 1 : 0);
