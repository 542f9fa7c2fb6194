// The app lifecycle around model downloads, through the Hub client: live BUILDING progress
// (the JSON API and its SSE stream) while other apps keep serving, preload_from_hub file
// lists, pinned revisions (org/name@<commit>) honoured from download to model call, and an
// unreachable Hub with nothing cached. Hubs: a mirror of fixtures, and a slow Hub in this
// process. Loopback only.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { existsSync, readdirSync, rmSync, symlinkSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { BIN, FIXTURES, assert, assertEq, fixtureMirror, readSSE, sleep, startHost, suite, tempDir, waitFor, writeApp } from "../lib/host.mjs";

const s = suite("hub-apps");
const post = (url, body) => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const run = async (host, id, data) => {
  const r = await post(`${host.url}/spaces/${id}/gradio_api/run/predict`, { data });
  return { status: r.status, body: await r.json() };
};
const info = async (host, id) => (await fetch(`${host.url}/api/spaces/${id}`)).json();
const gitBlob = (b) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");
const sha256 = (b) => createHash("sha256").update(b).digest("hex");

const PLAIN = `app.interface{fn=function(t) return "plain " .. t end, inputs={"text"}, outputs="text"}`;
const TOKENIZE = (repo) => `local m = model("${repo}")
app.interface{fn=function(t) return m:tokenize(t) end, inputs={"text"}, outputs="json"}`;

// A Hub that serves one repo, slow/model, in small timed pieces: a build lasts ~2 s.
function slowHub() {
  const big = randomBytes(3 << 20);
  const small = Buffer.from('{"model_type": "llama"}\n');
  const commit = "89abcdef0123456789abcdef0123456789abcdef";
  const files = { "config.json": small, "model.safetensors": big };
  const srv = http.createServer((req, res) => {
    const u = new URL(req.url, "http://x");
    if (/^\/api\/models\/slow\/model(\/revision\/main)?$/.test(u.pathname)) {
      const siblings = Object.entries(files).map(([n, d]) => ({ rfilename: n, size: d.length }));
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ id: "slow/model", sha: commit, siblings }));
    }
    const m = u.pathname.match(/^\/slow\/model\/resolve\/[0-9a-f]{40}\/(.+)$/);
    const data = m && files[m[1]];
    if (!data) { res.writeHead(404, { "X-Error-Code": "RepoNotFound" }); return res.end("{}"); }
    const lfs = m[1].endsWith(".safetensors");
    const h = { "X-Repo-Commit": commit, ETag: `"${lfs ? sha256(data) : gitBlob(data)}"`, "Content-Length": data.length };
    if (lfs) Object.assign(h, { "X-Linked-Etag": `"${sha256(data)}"`, "X-Linked-Size": String(data.length) });
    res.writeHead(200, h);
    if (req.method === "HEAD") return res.end();
    let off = 0;
    const tick = () => {
      if (res.destroyed) return;
      if (off >= data.length) return res.end();
      const e = Math.min(data.length, off + (128 << 10));
      res.write(data.subarray(off, e));
      off = e;
      setTimeout(tick, 80);
    };
    tick();
  });
  return {
    total: big.length + small.length,
    start: () => new Promise((r) => srv.listen(0, "127.0.0.1", () => r(`http://127.0.0.1:${srv.address().port}`))),
    close() { srv.closeAllConnections?.(); srv.close(); },
  };
}

// `moonspace pull` with the given environment; resolves {code, stdout, stderr}.
function pull(args, env) {
  return new Promise((resolve) => {
    const child = spawn(join(BIN, "moonspace"), ["pull", ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

s.test("BUILDING shows live download progress on the API and its SSE stream; other apps keep serving", async (ctx) => {
  const hub = slowHub();
  ctx.closers.push(() => hub.close());
  const url = await hub.start();
  const apps = tempDir("ms-apps-");
  writeApp(apps, "test/plain", { title: "Plain" }, { "app.lua": PLAIN });
  const host = await startHost({ apps: [apps], env: { HF_ENDPOINT: url, HF_HUB_CACHE: tempDir("ms-cache-"), HF_HUB_OFFLINE: "", HF_TOKEN: "" } });
  ctx.hosts.push(host);
  // added once the host runs (startHost waits for builds to end)
  writeApp(apps, "test/slow", { title: "Slow", models: ["slow/model"] }, { "app.lua": PLAIN });
  const stream = await waitFor(async () => {
    const r = await fetch(host.url + "/api/spaces/test/slow/events");
    return r.status === 200 ? r : (await r.body?.cancel(), null);
  }, 10000, "the app to appear");
  const events = readSSE(stream, {
    until: (ev) => ev.some((e) => e.json && e.json.stage === "RUNNING"), timeoutMs: 30000,
  });
  // while the download runs: the JSON API shows it, and the other app answers at once
  const mid = await waitFor(async () => {
    const a = await info(host, "test/slow");
    return a.runtime.stage === "BUILDING" && a.runtime.build && a.runtime.build.bytes > 0 ? a : null;
  }, 10000, "download progress on /api/spaces");
  assertEq(mid.runtime.build.total, hub.total, "the total is known from the listing");
  assert(mid.runtime.build.bytes < hub.total, "caught mid-download");
  const t0 = Date.now();
  const p = await run(host, "test/plain", ["x"]);
  assertEq([p.status, p.body.data], [200, ["plain x"]]);
  assert(Date.now() - t0 < 1500, "not blocked by the download: " + (Date.now() - t0) + " ms");
  assertEq((await info(host, "test/slow")).runtime.stage, "BUILDING", "still downloading after the other app answered");
  const ev = (await events).map((e) => e.json).filter(Boolean);
  const building = ev.filter((e) => e.stage === "BUILDING" && e.build);
  const seen = new Set(building.map((e) => e.build.bytes));
  assert(seen.size >= 3, "several progress updates streamed: " + JSON.stringify([...seen]));
  for (let i = 1; i < building.length; i++) assert(building[i].build.bytes >= building[i - 1].build.bytes, "bytes only grow");
  assertEq(ev.at(-1).stage, "RUNNING");
  assertEq((await run(host, "test/slow", ["y"])).body.data, ["plain y"]);
});

s.test("preload_from_hub fetches the files it names; models: alone fetches what a model needs", async (ctx) => {
  const apps = tempDir("ms-apps-");
  writeApp(apps, "test/pre", { title: "Pre", models: ["test/tok"], preload_from_hub: ["test/tok tokenizer.json,tokenizer_config.json"] },
    { "app.lua": TOKENIZE("test/tok") });
  writeApp(apps, "test/full", { title: "Full", models: ["test/llm"] }, { "app.lua": PLAIN });
  const cache = tempDir("ms-cache-");
  const host = await startHost({ apps: [apps], env: { HF_ENDPOINT: ctx.mirrorHost.url, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "", HF_TOKEN: "" } });
  ctx.hosts.push(host);
  for (const id of ["test/pre", "test/full"])
    await waitFor(async () => (await info(host, id)).runtime.stage === "RUNNING", 20000, id + " RUNNING");
  const snapFiles = (folder) => {
    const snaps = join(cache, folder, "snapshots");
    const commits = readdirSync(snaps);
    assertEq(commits.length, 1, folder);
    return readdirSync(join(snaps, commits[0])).sort();
  };
  assertEq(snapFiles("models--test--tok"), ["tokenizer.json", "tokenizer_config.json"], "only the named files (not vocab.txt)");
  assertEq(snapFiles("models--test--llm"), ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
    "configs, tokenizer and safetensors; not .bin, ONNX, Flax or TF weights, nor other files");
  assertEq((await run(host, "test/pre", ["Hello world"])).body.data, [[101, 7592, 2088, 102]]);
  // the same commit pinned, with what a model needs: the files the preload left out come too
  const { sha } = await (await fetch(ctx.mirrorHost.url + "/api/models/test/tok")).json();
  writeApp(apps, "test/pinned-tok", { title: "Pinned tok", models: [`test/tok@${sha}`] }, { "app.lua": TOKENIZE("test/tok") });
  await waitFor(async () => {
    const r = await fetch(`${host.url}/api/spaces/test/pinned-tok`);
    return r.status === 200 && (await r.json()).runtime.stage === "RUNNING";
  }, 20000, "test/pinned-tok RUNNING");
  assertEq(snapFiles("models--test--tok"), ["tokenizer.json", "tokenizer_config.json", "vocab.txt"], "vocab.txt fetched");
  assert(existsSync(join(cache, "models--test--tok/.no_exist", sha, "generation_config.json")), "absent files are marked");
  // now complete: another app pinning it needs no request to the Hub
  const asked = () => (ctx.mirrorHost.log().match(/\/api\/models\/test\/tok\/revision/g) || []).length;
  await sleep(300); // the mirror's access log reaches this process a little later
  const before = asked();
  writeApp(apps, "test/pinned-tok2", { title: "Pinned tok 2", models: [`test/tok@${sha}`] }, { "app.lua": TOKENIZE("test/tok") });
  const second = await waitFor(async () => {
    const r = await fetch(`${host.url}/api/spaces/test/pinned-tok2`);
    const a = r.status === 200 && await r.json();
    return a && a.runtime.stage === "RUNNING" ? a : null;
  }, 20000, "test/pinned-tok2 RUNNING");
  assert(second.logs.some((l) => /found in the cache/.test(l)), JSON.stringify(second.logs));
  await sleep(300);
  assertEq(asked(), before, "no listing asked for");
});

s.test("a pinned revision is honoured from download to model call, with no network once cached", async (ctx) => {
  // the repo's main moves from a BERT tokenizer (pinned) to GPT-2's
  const cache = tempDir("ms-cache-");
  const env = { HF_ENDPOINT: ctx.mirrorHost.url, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "", HF_TOKEN: "" };
  const repoDir = join(ctx.mirror, "test/moving");
  const old = await (await fetch(ctx.mirrorHost.url + "/api/models/test/moving")).json();
  const filled = await pull([`test/moving@${old.sha}`], env);
  assertEq(filled.code, 0, filled.stderr);
  for (const f of readdirSync(repoDir)) unlinkSync(join(repoDir, f));
  for (const f of readdirSync(join(FIXTURES, "tokenizers/gpt2"))) symlinkSync(join(FIXTURES, "tokenizers/gpt2", f), join(repoDir, f));
  const now = await (await fetch(ctx.mirrorHost.url + "/api/models/test/moving")).json();
  assert(now.sha !== old.sha, "main moved");
  assert(!existsSync(join(cache, "models--test--moving/refs/main")), "a commit writes no ref");
  const apps = tempDir("ms-apps-");
  writeApp(apps, "test/pinned", { title: "Pinned", models: [`test/moving@${old.sha}`] }, { "app.lua": TOKENIZE("test/moving") });
  writeApp(apps, "test/latest", { title: "Latest", models: ["test/moving"] }, { "app.lua": TOKENIZE("test/moving") });
  writeApp(apps, "test/nosuch", { title: "No such", models: ["test/moving@" + "0".repeat(40)] }, { "app.lua": PLAIN });
  const host = await startHost({ apps: [apps], env });
  ctx.hosts.push(host);
  for (const id of ["test/pinned", "test/latest"])
    await waitFor(async () => (await info(host, id)).runtime.stage === "RUNNING", 20000, id + " RUNNING");
  assertEq((await run(host, "test/pinned", ["Hello world"])).body.data, [[101, 7592, 2088, 102]], "the pinned commit's tokenizer");
  assertEq((await run(host, "test/latest", ["Hello world"])).body.data, [[15496, 995]], "main's tokenizer");
  const pinnedLogs = (await info(host, "test/pinned")).logs.join("\n");
  assert(/found in the cache.*no network/.test(pinnedLogs), pinnedLogs);
  const bad = await waitFor(async () => {
    const a = await info(host, "test/nosuch");
    return a.runtime.stage === "BUILD_ERROR" ? a : null;
  }, 20000, "BUILD_ERROR for an unknown commit");
  assert(/revision '0{40}' not found/.test(bad.runtime.errorMessage), bad.runtime.errorMessage);
});

s.test("SIGTERM stops a host whose model workers are loaded and idle at once", async (ctx) => {
  // an app worker whose exit came after the model worker's re-armed the model's idle timer
  // (300 s), and the host lived on. Which exits first is a race: several app workers make
  // one of them likely to come last.
  for (let round = 0; round < 5; round++) {
    const apps = tempDir("ms-apps-");
    writeApp(apps, "test/tok", { title: "Tok", models: ["test/tok"] }, { "app.lua": TOKENIZE("test/tok") });
    for (let i = 0; i < 6; i++) writeApp(apps, `test/plain${i}`, { title: "Plain" }, { "app.lua": PLAIN });
    const host = await startHost({ apps: [apps], env: { HF_ENDPOINT: ctx.mirrorHost.url, HF_HUB_CACHE: tempDir("ms-cache-"), HF_HUB_OFFLINE: "", HF_TOKEN: "" } });
    ctx.hosts.push(host);
    // the answer left unread: the connection stays open, as a browser's keep-alive one does
    assertEq((await post(`${host.url}/spaces/test/tok/gradio_api/run/predict`, { data: ["Hello world"] })).status, 200);
    await sleep(600);
    ctx.hosts.pop();
    const t0 = Date.now();
    const r = await host.stop();
    assertEq([r.code, r.sig], [0, null], `round ${round}: exit status after ${Date.now() - t0} ms`);
  }
}, { timeoutMs: 120000 });

s.test("Hub unreachable and nothing cached: model apps say so, with a retry; apps without models keep working", async (ctx) => {
  const apps = tempDir("ms-apps-");
  writeApp(apps, "test/plain", { title: "Plain" }, { "app.lua": PLAIN });
  writeApp(apps, "test/needs", { title: "Needs", models: ["nickypro/tinyllama-15M"] }, { "app.lua": TOKENIZE("nickypro/tinyllama-15M") });
  const host = await startHost({ apps: [apps], env: { HF_ENDPOINT: "http://127.0.0.1:9", HF_HUB_CACHE: tempDir("ms-cache-"), HF_HUB_OFFLINE: "", HF_TOKEN: "" } });
  ctx.hosts.push(host);
  const a = await waitFor(async () => {
    const x = await info(host, "test/needs");
    return x.runtime.stage === "BUILD_ERROR" ? x : null;
  }, 20000, "BUILD_ERROR");
  assert(/cannot reach http:\/\/127\.0\.0\.1:9.*not in the cache/.test(a.runtime.errorMessage), a.runtime.errorMessage);
  const list = await (await fetch(host.url + "/api/spaces")).json();
  const card = list.find((x) => x.id === "test/needs");
  assertEq(card.runtime.errorMessage, a.runtime.errorMessage, "the gallery's data carries the reason");
  const ev = await readSSE(await fetch(host.url + "/api/spaces/test/needs/events"), { until: (e) => e.length >= 1 });
  assertEq(ev[0].json.stage, "BUILD_ERROR");
  assertEq((await run(host, "test/needs", ["x"])).status, 503);
  assertEq((await run(host, "test/plain", ["x"])).body.data, ["plain x"]);
  const r = await fetch(host.url + "/api/spaces/test/needs/restart", { method: "POST" });
  assertEq(r.status, 200, "the retry button's call");
  const again = await waitFor(async () => {
    const x = await info(host, "test/needs");
    return x.runtime.stage === "BUILD_ERROR" ? x : null;
  }, 20000, "BUILD_ERROR again");
  assert(/cannot reach/.test(again.runtime.errorMessage), again.runtime.errorMessage);
});

await s.run(async () => {
  const mirror = fixtureMirror({
    "test/tok": "tokenizers/bert-base-uncased",
    "test/moving": "tokenizers/bert-base-uncased",
    "test/llm": { dirs: ["models/stories260K"], files: { "pytorch_model.bin": "x", "model.onnx": "x", "flax_model.msgpack": "x", "tf_model.h5": "x", "notes.txt": "x" } },
  });
  const mirrorHost = await startHost({ args: ["--mirror", mirror], env: { HF_HUB_CACHE: tempDir("ms-hubcache-") } });
  return { mirror, mirrorHost, hosts: [], closers: [] };
}, async (ctx) => {
  for (const c of ctx.closers) c();
  let bad = "";
  for (const h of [...ctx.hosts, ctx.mirrorHost]) {
    const r = await h.stop();
    if (r.code !== 0 || r.sig || /AddressSanitizer|LeakSanitizer|runtime error/.test(h.log())) bad += `code ${r.code} ${r.sig}: ${h.log().slice(-2000)}\n`;
  }
  if (bad) { console.log("FAIL hub-apps/hosts exit cleanly: " + bad); process.exitCode = 1; } else console.log("PASS hub-apps/hosts exit cleanly");
  rmSync(ctx.mirror, { recursive: true, force: true });
});
