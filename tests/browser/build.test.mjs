// tests/browser/build.test.mjs: an app downloading its model, as the browser shows it. A slow
// Hub in this process serves one repo; the host builds an app that names it. The gallery
// card's badge shows "Building N%" moving, the app page a progress bar with bytes and files
// moving, then both turn to Running without a reload. Both get those updates from the app's
// /events stream (under the host's --root-path), not by polling the JSON API; a page whose
// stream never answers (a proxy that buffers) polls instead; a private app's page follows its
// stream with the visitor's token. Debian's chromium through
// playwright-core, as ui.test.mjs; SKIP (FAIL under CI=true) when either is missing.
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MS_BIN = path.resolve(process.env.MS_BIN || path.join(ROOT, "bin"));
const CHROMIUM = "/usr/bin/chromium";
const CI = process.env.CI === "true";
let failures = 0;
const pass = (name) => console.log(`PASS build_ui/${name}`);
const fail = (name, why) => { failures++; console.log(`FAIL build_ui/${name}: ${String(why).replace(/\s+/g, " ").slice(0, 500)}`); };
const skipAll = (why) => {
  console.log(`${CI ? "FAIL" : "SKIP"} build_ui: ${why}`);
  process.exit(CI ? 1 : 0);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (!fs.existsSync(CHROMIUM)) skipAll(`${CHROMIUM} not installed`);
let chromium;
try {
  chromium = createRequire(path.join(ROOT, "tests/package.json"))("playwright-core").chromium;
} catch {
  skipAll("playwright-core missing (cd tests && npm ci)");
}
if (!fs.existsSync(path.join(MS_BIN, "moonspace"))) skipAll("the host is not built (make)");

// ---- a slow Hub: slow/model, its weights in 64 KiB pieces every 200 ms (~20 s) ----
const weights = randomBytes(6 << 20);
const config = Buffer.from('{"model_type": "llama"}\n');
const COMMIT = "fedcba9876543210fedcba9876543210fedcba98";
const FILES = { "config.json": config, "model.safetensors": weights };
const sha256 = (b) => createHash("sha256").update(b).digest("hex");
const gitBlob = (b) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");
const hub = http.createServer((req, res) => {
  const u = new URL(req.url, "http://x");
  if (/^\/api\/models\/slow\/model\/revision\/main$/.test(u.pathname)) {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify({ id: "slow/model", sha: COMMIT,
      siblings: Object.entries(FILES).map(([n, d]) => ({ rfilename: n, size: d.length })) }));
  }
  const m = u.pathname.match(/^\/slow\/model\/resolve\/[0-9a-f]{40}\/(.+)$/);
  const data = m && FILES[m[1]];
  if (!data) { res.writeHead(404, { "X-Error-Code": "EntryNotFound" }); return res.end(); }
  const lfs = m[1].endsWith(".safetensors");
  const etag = lfs ? sha256(data) : gitBlob(data);
  res.writeHead(200, { "X-Repo-Commit": COMMIT, ETag: `"${etag}"`, "Content-Length": data.length,
    ...(lfs ? { "X-Linked-Etag": `"${etag}"`, "X-Linked-Size": String(data.length) } : {}) });
  if (req.method === "HEAD") return res.end();
  let off = 0;
  const tick = () => {
    if (res.destroyed) return;
    if (off >= data.length) return res.end();
    res.write(data.subarray(off, off += 64 << 10));
    setTimeout(tick, 200);
  };
  tick();
});
await new Promise((r) => hub.listen(0, "127.0.0.1", r));

// ---- the host and the app ----
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ms-build-ui-"));
const appDir = path.join(tmp, "apps/buildtest/slow");
fs.mkdirSync(appDir, { recursive: true });
fs.writeFileSync(path.join(appDir, "README.md"), "---\ntitle: Slow download\nsdk: lua\napp_file: app.lua\nmodels: [slow/model]\n---\n\n# Slow\n");
fs.writeFileSync(path.join(appDir, "app.lua"), 'app.interface{fn=function(t) return t end, inputs={"text"}, outputs="text"}\n');
// A private app naming the same model (one download for both): its stream needs the token.
const secretDir = path.join(tmp, "apps/buildtest/secret");
fs.mkdirSync(secretDir, { recursive: true });
fs.writeFileSync(path.join(secretDir, "README.md"), "---\ntitle: Private download\nsdk: lua\napp_file: app.lua\nprivate: true\nmodels: [slow/model]\n---\n\n# Private\n");
fs.writeFileSync(path.join(secretDir, "app.lua"), 'app.interface{fn=function(t) return t end, inputs={"text"}, outputs="text"}\n');
const add = spawnSync(path.join(MS_BIN, "moonspace"), ["token", "add", "buildtest", "--data", path.join(tmp, "data")], { encoding: "utf8", timeout: 10000 });
const token = (add.stdout || "").trim();
let log = "";
const ROOT_PATH = "/demo";
const EVENTS = `${ROOT_PATH}/api/spaces/buildtest/slow/events`;
const host = spawn(path.join(MS_BIN, "moonspace"), ["serve", "--host", "127.0.0.1", "--port", "0", "--root-path", ROOT_PATH,
  "--apps", path.join(tmp, "apps"),
  "--data", path.join(tmp, "data"), "--web", path.join(ROOT, "web")], {
  cwd: tmp, stdio: ["ignore", "pipe", "pipe"],
  env: { ...process.env, HF_ENDPOINT: `http://127.0.0.1:${hub.address().port}`, HF_HUB_CACHE: path.join(tmp, "cache"), HF_HUB_OFFLINE: "", HF_TOKEN: "" },
});
host.stdout.on("data", (d) => (log += d));
host.stderr.on("data", (d) => (log += d));
let base = "";
for (let i = 0; i < 300 && !base; i++) {
  const m = log.match(/serving \d+ apps on (http:\/\/127\.0\.0\.1:\d+)/);
  if (m) base = m[1] + ROOT_PATH;
  else await sleep(20);
}

// What a page asks the host for: JSON API requests (what polling makes) and /events streams.
const pageErrors = [];
function track(page) {
  const t = { json: 0, events: [], ended: [] };
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (/^\/(demo\/)?api\/spaces(\/buildtest\/(slow|secret))?$/.test(u.pathname)) t.json++;
    if (u.pathname.endsWith("/events")) t.events.push(u.pathname);
  });
  const ended = (r) => { if (r.url().endsWith("/events")) t.ended.push(new URL(r.url()).pathname); };
  page.on("requestfinished", ended);
  page.on("requestfailed", ended);
  page.on("pageerror", (e) => pageErrors.push(e.message));
  return t;
}

// Samples text() until it has shown `want` different values matching re (or the page moved on).
async function distinct(text, re, want, strip = (t) => t) {
  const seen = new Set();
  for (let i = 0; i < 80 && seen.size < want; i++) {
    const t = await text().catch(() => "");
    if (!t) break;
    if (!re.test(t)) throw new Error(`unexpected text ${JSON.stringify(t)}`);
    seen.add(strip(t));
    await sleep(200);
  }
  if (seen.size < want) throw new Error(`did not move: ${[...seen]}`);
  return [...seen];
}

const PROGRESS = /^Downloading models: [\d.]+ [kM]?B of 6\.3 MB · [01]\/2 files/;
const noRate = (t) => t.replace(/ · [\d.]+ [kM]?B\/s$/, "");

// Opens app `id`'s page (tracked by t) and checks its progress bar moves with the app's
// /events stream, with no JSON request in the meantime.
async function progressFromStream(page, t, id) {
  await page.goto(`${base}/spaces/${id}`);
  await page.waitForSelector(".build-progress .ptext");
  const json = t.json;
  const seen = await distinct(() => page.textContent(".build-progress .ptext"), PROGRESS, 3, noRate);
  if (t.json !== json) throw new Error(`${id}'s page moved by polling: ${t.json - json} JSON requests while it showed ${seen}`);
  const stream = `${ROOT_PATH}/api/spaces/${id}/events`;
  if (!t.events.includes(stream)) throw new Error(`no ${stream} stream: ${t.events}`);
}

let browser, profile;
try {
  if (!base) throw new Error("the host did not start: " + log.slice(-1000));
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "ms-build-chrome-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  // The gallery stays open in its own tab until the app runs.
  const gallery = browser.pages()[0] || await browser.newPage();
  gallery.setDefaultTimeout(15000);
  const gt = track(gallery);
  const card = '.card[data-id="buildtest/slow"] .badge';
  try {
    await gallery.goto(base + "/");
    await gallery.waitForFunction((sel) => /^Building \d+%$/.test(document.querySelector(sel)?.textContent || ""), card);
    const json = gt.json;
    const seen = await distinct(() => gallery.textContent(card), /^Building \d+%$/, 3);
    if (gt.json !== json) throw new Error(`the card moved by polling: ${gt.json - json} /api/spaces requests while it showed ${seen}`);
    if (!gt.events.includes(EVENTS)) throw new Error(`no ${EVENTS} stream: ${gt.events}`);
    pass(`gallery card, from ${EVENTS}: ${seen.join(", ")}`);
  } catch (e) {
    fail("gallery card", e.message);
  }

  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  const pt = track(page);
  try {
    await progressFromStream(page, pt, "buildtest/slow");
    const stage = await page.textContent("#stage");
    if (!/^Building \d+%$/.test(stage)) throw new Error(`page badge ${JSON.stringify(stage)}`);
    pass("app page: the progress bar moves with the stream");
  } catch (e) {
    fail("app page", e.message);
  }

  // A private app's page: its stream carries the token (EventSource could not send one, and
  // the page polled).
  const secret = await browser.newPage();
  secret.setDefaultTimeout(15000);
  const xt = track(secret);
  try {
    if (!/^\S{16,}$/.test(token)) throw new Error(`moonspace token add failed (${add.status}): ${add.stderr}`);
    await secret.addInitScript((t) => localStorage.setItem("moonspace-token", t), token);
    await progressFromStream(secret, xt, "buildtest/secret");
    pass("private app page: the stream carries the token");
  } catch (e) {
    fail("private app page", e.message);
  } finally {
    await secret.close().catch(() => {});
  }

  // A stream that never answers (a proxy that buffers it): the page polls instead.
  const stuck = await browser.newPage();
  stuck.setDefaultTimeout(15000);
  const st = track(stuck);
  try {
    await stuck.route("**/events", () => {}); // never answered
    await stuck.goto(base + "/spaces/buildtest/slow");
    await stuck.waitForSelector(".build-progress .ptext");
    const json = st.json;
    const seen = await distinct(() => stuck.textContent(".build-progress .ptext"), PROGRESS, 2, noRate);
    if (st.json - json < 1) throw new Error(`progress moved without a JSON request: ${seen}`);
    pass(`stuck stream: the page polls (${st.json} JSON requests)`);
  } catch (e) {
    fail("stuck stream", e.message);
  }

  try {
    await page.waitForFunction(() => document.querySelector("#stage")?.textContent === "Running", null, { timeout: 30000 });
    await page.waitForSelector("section.endpoint form");
    // A running app's page polls slowly: its stream would hold one of the tab's connections.
    for (let i = 0; i < 25 && !pt.ended.includes(EVENTS); i++) await sleep(200);
    if (!pt.ended.includes(EVENTS)) throw new Error("the page's stream is still open");
    pass("app page: Running without a reload, stream closed");
  } catch (e) {
    fail("app page running", e.message);
  }
  try {
    await stuck.waitForFunction(() => document.querySelector("#stage")?.textContent === "Running", null, { timeout: 10000 });
    await stuck.waitForSelector("section.endpoint form");
    pass("stuck stream: Running without a reload");
  } catch (e) {
    fail("stuck stream running", e.message);
  }
  try {
    await gallery.waitForFunction((sel) => document.querySelector(sel)?.textContent === "Running", card, { timeout: 10000 });
    // Once the app runs, the card has nothing more to follow: its stream is closed.
    for (let i = 0; i < 25 && !gt.ended.includes(EVENTS); i++) await sleep(200);
    if (!gt.ended.includes(EVENTS)) throw new Error("the gallery's stream is still open");
    pass("gallery card: Running, stream closed");
  } catch (e) {
    fail("gallery card running", e.message);
  }
  if (pageErrors.length) fail("page_errors", pageErrors.slice(0, 3).join(" | "));
  else pass("page_errors");
} catch (e) {
  fail("setup", e.message);
} finally {
  if (browser) await browser.close().catch(() => {});
  hub.closeAllConnections?.();
  hub.close();
  const exited = new Promise((r) => host.on("exit", (code, sig) => r({ code, sig })));
  if (host.exitCode === null) host.kill("SIGTERM");
  const t = setTimeout(() => host.kill("SIGKILL"), 15000);
  const r = await exited;
  clearTimeout(t);
  if (r.code !== 0 || /AddressSanitizer|LeakSanitizer|runtime error:/.test(log)) fail("host_clean", `exit ${r.code} ${r.sig}: ${log.slice(-1500)}`);
  else pass("host_clean");
  fs.rmSync(tmp, { recursive: true, force: true });
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(failures ? 1 : 0);
