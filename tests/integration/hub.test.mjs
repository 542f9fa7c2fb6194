// The Hub client, cache and mirror end to end: a host serves ../shared/fixtures/models as
// Hub repos (--mirror) and is the Hub for `moonspace pull` and for the official JS client
// @huggingface/hub; a fault server in this process (and a second "CDN" port) covers
// resume, redirects, retries and every error path. Loopback only.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, CI, assert, assertEq, requirePackage, skip, sleep, startHost, suite, tempDir } from "../lib/host.mjs";

const FIX = process.env.MOONSPACE_FIXTURES || join(process.cwd(), "../shared/fixtures");
const MODELS = join(FIX, "models");
const s = suite("hub");
console.debug = () => {}; // @huggingface/hub logs each download with console.debug

const TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by huggingface_hub.\n# For information about cache directory tags, see:\n#\thttps://bford.info/cachedir/\n";

const sha256 = (b) => createHash("sha256").update(b).digest("hex");
const gitBlob = (b) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");

// Runs `moonspace ARGS` without blocking this process's event loop (the fault server
// lives here). Resolves {code, stdout, stderr}.
function run(args, env = {}, timeoutMs = 30000, argv = [join(BIN, "moonspace"), ...args], extraEnv = {}) {
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { env: { ...process.env, MOONSPACE_HUB_RETRY_MS: "20", ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code, sig) => { clearTimeout(t); resolve({ code: sig ? 128 : code, stdout, stderr }); });
  });
}
const pull = (spec, env, extra = []) => run(["pull", spec, ...extra], env);

function listTree(dir, base = "") {
  const out = [];
  for (const name of readdirSync(join(dir, base)).sort()) {
    const rel = base ? `${base}/${name}` : name;
    const st = lstatSync(join(dir, rel));
    if (st.isDirectory()) out.push(...listTree(dir, rel));
    else out.push(rel);
  }
  return out;
}

// Checks repo folder `folder` of cache against the files of `src` (a plain directory):
// blobs named by git sha1 / sha256, relative symlinks, refs/main, CACHEDIR.TAG.
function checkLayout(cache, folder, src, commit, files, ref = "main") {
  assertEq(readFileSync(join(cache, "CACHEDIR.TAG"), "utf8"), TAG, "CACHEDIR.TAG bytes");
  const repo = join(cache, folder);
  assertEq(readFileSync(join(repo, "refs", ref), "utf8"), commit, `refs/${ref} holds the commit, no newline`);
  for (const f of files) {
    const data = readFileSync(join(src, f));
    const lfs = f.endsWith(".safetensors") || data.length >= 10 << 20;
    const etag = lfs ? sha256(data) : gitBlob(data);
    const link = join(repo, "snapshots", commit, f);
    assert(lstatSync(link).isSymbolicLink(), f + " is a symlink");
    const depth = f.split("/").length - 1;
    assertEq(readlinkSync(link), "../".repeat(depth + 2) + "blobs/" + etag, f + " link target");
    assert(readFileSync(join(repo, "blobs", etag)).equals(data), f + " blob bytes");
    assert(existsSync(join(cache, ".locks", folder, etag + ".lock")), f + " lock file");
  }
  const blobs = readdirSync(join(repo, "blobs"));
  assert(!blobs.some((b) => b.includes(".incomplete")), "no .incomplete left: " + blobs);
}

// ---- the fault server: a Hub on one port, its CDN on another ----
function faultServers() {
  const big = randomBytes(6 << 20); // above the size whose sha256 is computed on a thread
  const bigSha = sha256(big);
  const small = Buffer.from('{"model_type": "llama"}\n');
  const commit = "0123456789abcdef0123456789abcdef01234567";
  const stats = { cdnGets: {}, cdnAuth: [], ranges: [], heads: {}, apiAuth: [], attempts: {}, active: {}, maxActive: {}, headEncodings: new Set() };
  const count = (o, k) => (o[k] = (o[k] || 0) + 1);
  let cdnPort = 0;
  const files = (repo) => {
    if (repo === "fault/entry") return [["config.json", small], ["missing.json", small]];
    if (repo === "fault/badsha") return [["model.safetensors", big]];
    if (repo.startsWith("fault/many")) return [0, 1, 2, 3, 4, 5].map((i) => [`f${i}.json`, Buffer.alloc(64 << 10, 48 + i)]);
    return [["config.json", small], ["model.safetensors", big]];
  };
  const hub = http.createServer((req, res) => {
    const u = new URL(req.url, "http://x");
    const api = u.pathname.match(/^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/);
    const send = (code, headers = {}, body = "") => { res.writeHead(code, { "content-type": "application/json", ...headers }); res.end(body); };
    if (api) {
      const repo = api[1];
      stats.apiAuth.push(req.headers.authorization || "");
      if (repo === "fault/missing") return send(401, { "X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found" }, '{"error":"Repository not found"}');
      if (repo === "fault/badtoken") return send(401, { "X-Error-Message": "Invalid credentials in Authorization header" }, "{}");
      if (decodeURIComponent(api[2]) === "nope") return send(404, { "X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id: nope" }, "{}");
      if (repo === "fault/down") return send(503, {}, "{}");
      // fault/nosize: a listing without sizes (no ?blobs=true support), as older servers answer
      const sib = files(repo).map(([n, d]) => (repo === "fault/nosize" ? { rfilename: n } : { rfilename: n, size: d.length }));
      return send(200, {}, JSON.stringify({ id: repo, sha: commit, siblings: sib }));
    }
    const m = u.pathname.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    if (!m) return send(404, {}, "{}");
    let [, repo, , file] = m;
    if (req.method === "HEAD") count(stats.heads, repo + "/" + file), stats.headEncodings.add(req.headers["accept-encoding"] || "-");
    const key = repo + "/" + file + "/" + req.method;
    const attempt = count(stats.attempts, key);
    if (repo === "fault/renamed") { res.writeHead(307, { Location: u.pathname.replace("fault/renamed", "fault/drop") }); return res.end(); }
    if (repo === "fault/gated") return send(401, { "X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is restricted" }, "{}");
    if (repo === "fault/forbidden") return send(403, { "X-Error-Message": "Forbidden" }, "{}");
    if (repo === "fault/ratelimit") return send(429, {}, "{}");
    if (repo === "fault/retry" && attempt <= 2) return send(503, {}, "{}");
    const entry = files(repo).find(([n]) => n === file);
    if (!entry || file === "missing.json") return send(404, { "X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit, "X-Error-Message": "Entry not found" }, "{}");
    const data = entry[1];
    const lfs = file.endsWith(".safetensors");
    const etag = lfs ? (repo === "fault/badsha" ? sha256(Buffer.from("other")) : bigSha) : gitBlob(data);
    const h = { "X-Repo-Commit": commit, ETag: `"${gitBlob(data)}"` };
    if (lfs) {
      // fault/protorel: a scheme-relative Location, absolute all the same (another host)
      const cdn = repo === "fault/protorel" ? `//127.0.0.1:${cdnPort}` : `http://127.0.0.1:${cdnPort}`;
      Object.assign(h, { "X-Linked-Etag": `W/"${etag}"`, "X-Linked-Size": String(data.length), Location: `${cdn}/${repo}/${etag}?sig=1` });
      res.writeHead(302, h);
      return res.end();
    }
    res.writeHead(200, { ...h, "Content-Length": data.length });
    if (repo.startsWith("fault/many") && req.method === "GET") { // slowly, counting the GETs at once
      const k = repo;
      stats.active[k] = (stats.active[k] || 0) + 1;
      stats.maxActive[k] = Math.max(stats.maxActive[k] || 0, stats.active[k]);
      let off = 0;
      const tick = () => {
        if (off >= data.length) { stats.active[k]--; return res.end(); }
        res.write(data.subarray(off, off += 16 << 10));
        setTimeout(tick, 60);
      };
      return tick();
    }
    res.end(req.method === "HEAD" ? undefined : data);
  });
  const cdn = http.createServer((req, res) => {
    const u = new URL(req.url, "http://x");
    const repo = u.pathname.split("/").slice(1, 3).join("/");
    const n = count(stats.cdnGets, repo);
    stats.cdnAuth.push(req.headers.authorization || "");
    const range = req.headers.range;
    stats.ranges.push(repo + " " + (range || "-"));
    let from = 0;
    const rm = range && range.match(/^bytes=(\d+)-$/);
    if (rm && repo !== "fault/norange") from = Number(rm[1]);
    if (repo === "fault/retry" && n === 1) { res.writeHead(429); return res.end(); }
    if (repo === "fault/short") { // a whole answer, shorter than the X-Linked-Size announced
      res.writeHead(200, { "Content-Length": big.length - 100 });
      return res.end(big.subarray(0, big.length - 100));
    }
    // fault/badrange: after the drop, a 206 from the wrong place (bytes 1-...), then one from 0
    if (repo === "fault/badrange" && n === 2) {
      res.writeHead(206, { "Content-Length": big.length - from, "Content-Range": `bytes 1-${big.length - from}/${big.length}` });
      return res.end(big.subarray(1, big.length - from + 1));
    }
    if (repo === "fault/badrange" && n === 3) {
      res.writeHead(206, { "Content-Length": big.length, "Content-Range": `bytes 0-${big.length - 1}/${big.length}` });
      return res.end(big);
    }
    const headers = { "Content-Length": big.length - from, "Content-Type": "application/octet-stream" };
    if (from) headers["Content-Range"] = `bytes ${from}-${big.length - 1}/${big.length}`;
    res.writeHead(from ? 206 : 200, headers);
    const drop = (repo === "fault/drop" || repo === "fault/norange" || repo === "fault/badrange") && n === 1;
    if (drop) { res.write(big.subarray(0, 1 << 20)); setTimeout(() => res.socket.destroy(), 50); return; }
    if (repo === "fault/stall") { res.write(big.subarray(0, 1 << 20)); return; } // then nothing, never
    if (repo === "fault/slow" || repo === "fault/slowtty") { // in pieces, so that two clients overlap
      let off = from;
      const tick = () => { if (off >= big.length) return res.end(); const e = Math.min(big.length, off + (256 << 10)); res.write(big.subarray(off, e)); off = e; setTimeout(tick, 40); };
      return tick();
    }
    res.end(big.subarray(from));
  });
  return {
    big, bigSha, small, commit, stats,
    async start() {
      await new Promise((r) => cdn.listen(0, "127.0.0.1", r));
      cdnPort = cdn.address().port;
      await new Promise((r) => hub.listen(0, "127.0.0.1", r));
      this.url = `http://127.0.0.1:${hub.address().port}`;
    },
    close() { hub.closeAllConnections?.(); cdn.closeAllConnections?.(); hub.close(); cdn.close(); },
  };
}

// ---- setup ----
async function setup() {
  if (!existsSync(join(MODELS, "stories260K"))) {
    if (CI) throw new Error("fixtures missing: " + MODELS);
    throw skip("fixtures missing: " + MODELS);
  }
  const root = tempDir("ms-hub-");
  const mirror = join(root, "mirror");
  mkdirSync(join(mirror, "nickypro"), { recursive: true });
  mkdirSync(join(mirror, "test/nested/sub/deeper"), { recursive: true });
  symlinkSync(join(MODELS, "stories260K"), join(mirror, "nickypro/tinyllama-15M"));
  mkdirSync(join(mirror, "test"), { recursive: true });
  symlinkSync(join(MODELS, "tiny-llama-gqa-sharded-f16"), join(mirror, "test/sharded"));
  writeFileSync(join(mirror, "test/nested/config.json"), '{"a": 1}\n');
  writeFileSync(join(mirror, "test/nested/sub/deeper/notes.txt"), "deep\n");
  writeFileSync(join(mirror, "test/nested/big.bin"), Buffer.alloc(10 << 20, 7)); // >= 10 MiB: LFS-like
  const hostCache = join(root, "host-cache");
  const host = await startHost({ args: ["--mirror", mirror], env: { HF_HUB_CACHE: hostCache, HF_HUB_OFFLINE: "" } });
  const fault = faultServers();
  await fault.start();
  return { root, mirror, host, fault, hostCache, env: { HF_ENDPOINT: host.url, HF_HUB_OFFLINE: "", HF_TOKEN: "" } };
}

async function teardown(ctx) {
  ctx.fault.close();
  const log = ctx.host.log();
  const r = await ctx.host.stop();
  if (r.code !== 0 || /AddressSanitizer|LeakSanitizer|runtime error/.test(ctx.host.log())) {
    console.log(`FAIL hub/host exits cleanly: code ${r.code}: ${ctx.host.log().slice(log.length - 200).slice(-3000)}`);
    process.exitCode = 1;
  } else console.log("PASS hub/host exits cleanly");
  rmSync(ctx.root, { recursive: true, force: true });
}

// ---- the mirror over HTTP ----
s.test("mirror: HEAD resolve answers etag, commit, linked size; Range 0-0 is a 206", async ({ host }) => {
  const data = readFileSync(join(MODELS, "stories260K/model.safetensors"));
  const r = await fetch(host.url + "/nickypro/tinyllama-15M/resolve/main/model.safetensors", { method: "HEAD" });
  assertEq(r.status, 200);
  assertEq(r.headers.get("x-linked-etag"), `"${sha256(data)}"`);
  assertEq(r.headers.get("x-linked-size"), String(data.length));
  assert(/^[0-9a-f]{40}$/.test(r.headers.get("x-repo-commit")), "commit");
  const cfg = readFileSync(join(MODELS, "stories260K/config.json"));
  const g = await fetch(host.url + "/nickypro/tinyllama-15M/resolve/main/config.json", { headers: { Range: "bytes=0-0" } });
  assertEq(g.status, 206);
  assertEq(g.headers.get("content-range"), `bytes 0-0/${cfg.length}`);
  assertEq(g.headers.get("etag"), `"${gitBlob(cfg)}"`);
  assertEq(Buffer.from(await g.arrayBuffer()).toString(), cfg.subarray(0, 1).toString());
  const mid = await fetch(host.url + "/nickypro/tinyllama-15M/resolve/main/model.safetensors", { headers: { Range: "bytes=1000-" } });
  assertEq(mid.status, 206);
  assert(Buffer.from(await mid.arrayBuffer()).equals(data.subarray(1000)), "ranged body");
  const bad = await fetch(host.url + "/nickypro/tinyllama-15M/resolve/main/config.json", { headers: { Range: "bytes=99999-" } });
  assertEq(bad.status, 416);
});

s.test("mirror: error codes for a missing repo, revision and file", async ({ host }) => {
  const a = await fetch(host.url + "/nobody/nothing/resolve/main/config.json", { method: "HEAD" });
  assertEq([a.status, a.headers.get("x-error-code")], [404, "RepoNotFound"]);
  const b = await fetch(host.url + "/api/models/nickypro/tinyllama-15M/revision/nope");
  assertEq([b.status, b.headers.get("x-error-code")], [404, "RevisionNotFound"]);
  const c = await fetch(host.url + "/nickypro/tinyllama-15M/resolve/main/nope.bin");
  assertEq([c.status, c.headers.get("x-error-code")], [404, "EntryNotFound"]);
  assert(/^[0-9a-f]{40}$/.test(c.headers.get("x-repo-commit")), "EntryNotFound carries the commit");
});

s.test("mirror: the commit is stable, and a pinned commit resolves", async ({ host }) => {
  const i1 = await (await fetch(host.url + "/api/models/nickypro/tinyllama-15M")).json();
  const i2 = await (await fetch(host.url + "/api/models/nickypro/tinyllama-15M/revision/main")).json();
  assertEq(i1.sha, i2.sha);
  assertEq(i1.siblings.map((x) => x.rfilename), readdirSync(join(MODELS, "stories260K")).sort());
  const r = await fetch(`${host.url}/nickypro/tinyllama-15M/resolve/${i1.sha}/tokenizer.json`);
  assertEq(r.status, 200);
  assert(Buffer.from(await r.arrayBuffer()).equals(readFileSync(join(MODELS, "stories260K/tokenizer.json"))), "bytes");
});

s.test("mirror: tree listing, recursive and per folder, with LFS entries", async ({ host }) => {
  const top = await (await fetch(host.url + "/api/models/test/nested/tree/main")).json();
  assertEq(top.map((e) => [e.type, e.path]), [["file", "big.bin"], ["file", "config.json"], ["directory", "sub"]]);
  assertEq(top[0].lfs.oid, sha256(Buffer.alloc(10 << 20, 7)));
  const rec = await (await fetch(host.url + "/api/models/test/nested/tree/main?recursive=true")).json();
  assert(rec.some((e) => e.path === "sub/deeper/notes.txt" && e.oid === gitBlob(Buffer.from("deep\n"))), "recursive file with git oid");
  const sub = await (await fetch(host.url + "/api/models/test/nested/tree/main/sub")).json();
  assertEq(sub.map((e) => [e.type, e.path]), [["directory", "sub/deeper"]]);
  const none = await fetch(host.url + "/api/models/test/nested/tree/main/zzz");
  assertEq(none.status, 404);
});

// ---- moonspace pull through the mirror ----
s.test("pull: every file, byte for byte in huggingface_hub's layout", async (ctx) => {
  const cache = join(ctx.root, "c-pull");
  const r = await pull("nickypro/tinyllama-15M", { ...ctx.env, HF_HUB_CACHE: cache });
  assertEq(r.code, 0, r.stderr);
  const info = await (await fetch(ctx.host.url + "/api/models/nickypro/tinyllama-15M")).json();
  const snap = join(cache, "models--nickypro--tinyllama-15M/snapshots", info.sha);
  assertEq(r.stdout.trim(), snap, "prints the snapshot");
  const files = readdirSync(join(MODELS, "stories260K")).sort();
  checkLayout(cache, "models--nickypro--tinyllama-15M", join(MODELS, "stories260K"), info.sha, files);
  assertEq(listTree(snap), files, "exactly the repo's files");
  // cache ls and rm
  const ls = await run(["cache", "ls"], { HF_HUB_CACHE: cache });
  assert(ls.stdout.includes("nickypro/tinyllama-15M") && ls.stdout.includes(info.sha) && ls.stdout.includes("refs [main]"), ls.stdout);
  const rm = await run(["cache", "rm", "nickypro/tinyllama-15M"], { HF_HUB_CACHE: cache });
  assertEq(rm.code, 0, rm.stderr);
  assert(!existsSync(join(cache, "models--nickypro--tinyllama-15M")), "removed");
  assertEq((await run(["cache", "rm", "nickypro/tinyllama-15M"], { HF_HUB_CACHE: cache })).code, 1);
});

s.test("pull: subfolders get deeper relative links; files of 10 MiB are LFS; --include filters", async (ctx) => {
  const cache = join(ctx.root, "c-nested");
  const r = await pull("test/nested", { ...ctx.env, HF_HUB_CACHE: cache });
  assertEq(r.code, 0, r.stderr);
  const commit = readFileSync(join(cache, "models--test--nested/refs/main"), "utf8");
  checkLayout(cache, "models--test--nested", join(ctx.mirror, "test/nested"), commit, ["config.json", "big.bin", "sub/deeper/notes.txt"]);
  const c2 = join(ctx.root, "c-include");
  const r2 = await pull("test/sharded", { ...ctx.env, HF_HUB_CACHE: c2 }, ["--include", "*.json"]);
  assertEq(r2.code, 0, r2.stderr);
  const snap = r2.stdout.trim();
  assertEq(listTree(snap), readdirSync(join(MODELS, "tiny-llama-gqa-sharded-f16")).filter((f) => f.endsWith(".json")).sort());
});

s.test("pull: progress bars on a terminal (bytes, rate, ETA per file and in total), log lines otherwise", async (ctx) => {
  const plain = await pull("test/nested", { ...ctx.env, HF_HUB_CACHE: join(ctx.root, "c-log") });
  assertEq(plain.code, 0, plain.stderr);
  assert(!plain.stderr.includes("\x1b["), "no terminal codes in a log");
  assert(/^pull: big\.bin \(10\.0 MiB\) done \[\d\/3 files, [\d.]+ s, [\d.]+ [KMG]?i?B\/s\]$/m.test(plain.stderr), plain.stderr);
  assert(/^pull: test\/nested@main is commit [0-9a-f]{40}: 3 files \(10\.0 MiB\)$/m.test(plain.stderr), plain.stderr);
  // script(1) gives the pull a terminal; what it drew comes out on stdout
  const cmd = `${join(BIN, "moonspace")} pull test/nested`;
  const tty = await run([], {}, 30000, ["script", "-qec", cmd, "/dev/null"], { ...ctx.env, HF_HUB_CACHE: join(ctx.root, "c-tty"), TERM: "xterm" });
  assertEq(tty.code, 0, tty.stdout + tty.stderr);
  const out = tty.stdout.replace(/\r/g, "");
  assert(/\x1b\[2Ktotal \(0\/3 files\) +\[\.{20}\] +0% +0 B \/ +10\.0 MiB +\S+ B\/s ETA --:--/.test(out), "the total bar: " + JSON.stringify(out));
  assert(/\x1b\[2Ktotal \(3\/3 files\) +\[#{20}\] 100% +10\.0 MiB \/ 10\.0 MiB +[\d.]+ [KMG]?i?B\/s ETA/.test(out), "the total at the end: " + JSON.stringify(out));
  assert(/\x1b\[2Kbig\.bin \(10\.0 MiB\) done/.test(out), "a finished file scrolls up: " + JSON.stringify(out));
  assert(!/^pull: big\.bin/m.test(out), "no log lines on a terminal");
  // a slow file (1 s) is drawn in flight, with its own rate and ETA
  const slow = await run([], {}, 30000, ["script", "-qec", `${join(BIN, "moonspace")} pull fault/slowtty`, "/dev/null"],
    { HF_ENDPOINT: ctx.fault.url, HF_HUB_CACHE: join(ctx.root, "c-tty-slow"), TERM: "xterm" });
  assertEq(slow.code, 0, slow.stdout + slow.stderr);
  assert(/\x1b\[2Kmodel\.safetensors +\[#*\.+\] +\d+% +[\d.]+ [KM]iB \/ 6\.0 MiB +[\d.]+ [KM]iB\/s ETA 00:0\d/.test(slow.stdout),
    "a file's bar in flight: " + JSON.stringify(slow.stdout));
});

s.test("pull: cached files are not fetched again; offline and pinned commits need no network", async (ctx) => {
  const cache = join(ctx.root, "c-offline");
  const env = { ...ctx.env, HF_HUB_CACHE: cache };
  assertEq((await pull("nickypro/tinyllama-15M", env, ["--include", "*.json"])).code, 0);
  const commit = readFileSync(join(cache, "models--nickypro--tinyllama-15M/refs/main"), "utf8");
  const blob = join(cache, "models--nickypro--tinyllama-15M/blobs", gitBlob(readFileSync(join(MODELS, "stories260K/config.json"))));
  const m0 = statSync(blob).mtimeMs;
  const again = await pull("nickypro/tinyllama-15M", env, ["--include", "*.json"]);
  assertEq(again.code, 0, again.stderr);
  assertEq(statSync(blob).mtimeMs, m0, "not rewritten");
  const dead = { ...env, HF_ENDPOINT: "http://127.0.0.1:9" }; // nothing listens
  const off = await pull("nickypro/tinyllama-15M", { ...dead, HF_HUB_OFFLINE: "1" }, ["--include", "config.json"]);
  assertEq(off.code, 0, off.stderr);
  assert(/without the network/.test(off.stderr), off.stderr);
  const pinned = await pull("nickypro/tinyllama-15M@" + commit, dead, ["--include", "*.json"]);
  assertEq(pinned.code, 0, pinned.stderr);
  assertEq(pinned.stdout.trim(), join(cache, "models--nickypro--tinyllama-15M/snapshots", commit));
  const fallback = await pull("nickypro/tinyllama-15M", dead, ["--include", "*.json"]);
  assertEq(fallback.code, 0, "an unreachable Hub falls back to the cached main: " + fallback.stderr);
  const missing = await pull("test/sharded", { ...dead, HF_HUB_OFFLINE: "1" });
  assertEq(missing.code, 1);
  assert(/HF_HUB_OFFLINE is set and test\/sharded@main is not in the cache/.test(missing.stderr), missing.stderr);
  const unreachable = await pull("test/sharded", dead);
  assertEq(unreachable.code, 1);
  assert(/cannot reach http:\/\/127\.0\.0\.1:9/.test(unreachable.stderr), unreachable.stderr);
});

s.test("pull: a pinned commit cached only in part fetches the rest; unreachable, it answers what it has", async (ctx) => {
  const cache = join(ctx.root, "c-part");
  const env = { ...ctx.env, HF_HUB_CACHE: cache };
  const { sha } = await (await fetch(ctx.host.url + "/api/models/nickypro/tinyllama-15M")).json();
  const spec = "nickypro/tinyllama-15M@" + sha;
  assertEq((await pull(spec, env, ["--include", "*.json"])).code, 0);
  const all = await pull(spec, env);
  assertEq(all.code, 0, all.stderr);
  assertEq(listTree(all.stdout.trim()), readdirSync(join(MODELS, "stories260K")).sort(), "every file, not only the cached ones");
  const dead = { ...env, HF_ENDPOINT: "http://127.0.0.1:9" };
  const again = await pull(spec, dead);
  assertEq(again.code, 0, again.stderr);
  assert(/without the network/.test(again.stderr), again.stderr);
  // only the tokenizer cached: an unreachable Hub falls back to it, and says so
  const c2 = join(ctx.root, "c-part2");
  assertEq((await pull(spec, { ...env, HF_HUB_CACHE: c2 }, ["--include", "tokenizer.json"])).code, 0);
  const one = await pull(spec, { ...dead, HF_HUB_CACHE: c2 }, ["--include", "tokenizer.json"]);
  assertEq(one.code, 0, one.stderr);
  const rest = await pull(spec, { ...dead, HF_HUB_CACHE: c2 });
  assertEq(rest.code, 0, rest.stderr);
  assert(/cannot reach http:\/\/127\.0\.0\.1:9.*using the cached snapshot/.test(rest.stderr), rest.stderr);
});

s.test("mirror: serves the host's HF cache too (refs, revisions, LFS)", async (ctx) => {
  // fill the host's own cache through itself, then fetch that repo from it by its cache path
  const r = await pull("test/sharded", { ...ctx.env, HF_HUB_CACHE: ctx.hostCache });
  assertEq(r.code, 0, r.stderr);
  const commit = readFileSync(join(ctx.hostCache, "models--test--sharded/refs/main"), "utf8");
  // a repo only in the cache: copy the folder under another name, with a PR ref
  const alias = join(ctx.hostCache, "models--cached--only");
  await run(["cache", "ls"], { HF_HUB_CACHE: ctx.hostCache });
  const cp = spawn("cp", ["-a", join(ctx.hostCache, "models--test--sharded"), alias]);
  await new Promise((res) => cp.on("exit", res));
  mkdirSync(join(alias, "refs/refs/pr"), { recursive: true }); // huggingface_hub: refs/<revision>
  writeFileSync(join(alias, "refs/refs/pr/1"), commit);
  const out = join(ctx.root, "c-from-cache");
  const p = await pull("cached/only@refs/pr/1", { ...ctx.env, HF_HUB_CACHE: out });
  assertEq(p.code, 0, p.stderr);
  const files = readdirSync(join(MODELS, "tiny-llama-gqa-sharded-f16")).sort();
  checkLayout(out, "models--cached--only", join(MODELS, "tiny-llama-gqa-sharded-f16"), commit, files, "refs/pr/1");
  assertEq(listTree(p.stdout.trim()), files);
  for (const f of files) assert(readFileSync(join(p.stdout.trim(), f)).equals(readFileSync(join(MODELS, "tiny-llama-gqa-sharded-f16", f))), f);
});

// ---- faults ----
s.test("fault: a dropped connection resumes with Range; the CDN never sees the token", async (ctx) => {
  const cache = join(ctx.root, "c-drop");
  const r = await pull("fault/drop", { HF_ENDPOINT: ctx.fault.url, HF_HUB_CACHE: cache, HF_TOKEN: "hf_secret" });
  assertEq(r.code, 0, r.stderr);
  assert(readFileSync(join(r.stdout.trim(), "model.safetensors")).equals(ctx.fault.big), "bytes");
  assert(ctx.fault.stats.ranges.includes(`fault/drop bytes=${1 << 20}-`), "resumed from 1 MiB: " + ctx.fault.stats.ranges);
  assert(ctx.fault.stats.cdnAuth.every((a) => a === ""), "no Authorization to the CDN");
  assert(ctx.fault.stats.apiAuth.includes("Bearer hf_secret"), "token sent to the Hub");
  assertEq([...ctx.fault.stats.headEncodings], ["identity"], "HEADs ask for the bytes as stored (Accept-Encoding: identity)");
});

s.test("fault: Range ignored restarts; relative redirects are followed; 503/429 are retried", async (ctx) => {
  const base = { HF_ENDPOINT: ctx.fault.url };
  const a = await pull("fault/norange", { ...base, HF_HUB_CACHE: join(ctx.root, "c-nr") });
  assertEq(a.code, 0, a.stderr);
  assert(readFileSync(join(a.stdout.trim(), "model.safetensors")).equals(ctx.fault.big), "restarted cleanly");
  const b = await pull("fault/renamed", { ...base, HF_HUB_CACHE: join(ctx.root, "c-ren") });
  assertEq(b.code, 0, b.stderr);
  assert(readFileSync(join(b.stdout.trim(), "config.json")).equals(ctx.fault.small), "followed to the new name");
  const br = await pull("fault/badrange", { ...base, HF_HUB_CACHE: join(ctx.root, "c-br") });
  assertEq(br.code, 0, br.stderr);
  assert(readFileSync(join(br.stdout.trim(), "model.safetensors")).equals(ctx.fault.big), "a 206 from another offset is not appended");
  assertEq(ctx.fault.stats.cdnGets["fault/badrange"], 3, "dropped, refused the misplaced 206, took the one from byte 0");
  const n = await pull("fault/nosize", { ...base, HF_HUB_CACHE: join(ctx.root, "c-nosize") });
  assertEq(n.code, 0, n.stderr);
  const mib = ((ctx.fault.big.length + ctx.fault.small.length) / (1 << 20)).toFixed(1);
  assert(n.stderr.includes(`2 files (${mib} MiB)`), "the total counts the sizes the HEADs told: " + n.stderr);
  const pr = await pull("fault/protorel", { ...base, HF_HUB_CACHE: join(ctx.root, "c-pr"), HF_TOKEN: "hf_secret" });
  assertEq(pr.code, 0, pr.stderr);
  assert(readFileSync(join(pr.stdout.trim(), "model.safetensors")).equals(ctx.fault.big), "a //host Location is the CDN, not a path");
  assertEq(ctx.fault.stats.cdnGets["fault/protorel"], 1, "one GET on the CDN");
  assert(ctx.fault.stats.cdnAuth.every((a) => a === ""), "no Authorization to the CDN");
  const c = await pull("fault/retry", { ...base, HF_HUB_CACHE: join(ctx.root, "c-retry") });
  assertEq(c.code, 0, c.stderr);
  assert(ctx.fault.stats.attempts["fault/retry/config.json/HEAD"] >= 3, "HEAD retried after 503s");
});

s.test("fault: every error says what to do", async (ctx) => {
  const env = { HF_ENDPOINT: ctx.fault.url, HF_HUB_CACHE: join(ctx.root, "c-err") };
  const cases = [
    ["fault/missing", /repository fault\/missing not found.*HF_TOKEN/],
    ["fault/x@nope", /revision 'nope' not found/],
    ["fault/gated", /gated: accept its conditions/],
    ["fault/forbidden", /forbidden \(403\)/],
    ["fault/ratelimit", /rate limited.*429/],
    ["fault/badtoken", /token was refused/],
    ["fault/badsha", /sha256 mismatch/],
    ["fault/down", /answered HTTP 503.*not in the cache/],
    ["fault/short", /model\.safetensors: consistency check failed: got \d+ bytes, expected 6291456/],
  ];
  for (const [spec, re] of cases) {
    const r = await pull(spec, env);
    assertEq(r.code, 1, spec);
    assert(re.test(r.stderr), `${spec}: ${r.stderr}`);
  }
  const withToken = await pull("fault/missing", { ...env, HF_TOKEN: "hf_secret" });
  assert(/not found.*the token given \(HF_TOKEN or \$HF_HOME\/token\) has no access/.test(withToken.stderr), withToken.stderr);
  // a stalled transfer times out after HF_HUB_DOWNLOAD_TIMEOUT, resumes, and finally says so
  const st = await run(["pull", "fault/stall"], { ...env, HF_HUB_DOWNLOAD_TIMEOUT: "1", MOONSPACE_HUB_RETRIES: "1" });
  assertEq(st.code, 1);
  assert(/HF_HUB_DOWNLOAD_TIMEOUT raises the time limit/.test(st.stderr), st.stderr);
  assert(ctx.fault.stats.ranges.includes(`fault/stall bytes=${1 << 20}-`), "the retry resumed: " + ctx.fault.stats.ranges);
  // a full disk (here: a file size limit) is named, with what to do
  const full = await new Promise((resolve) => {
    const child = spawn("bash", ["-c", `trap '' XFSZ; ulimit -f 2048; exec "${join(BIN, "moonspace")}" pull fault/drop`],
      { env: { ...process.env, ...env, HF_HUB_CACHE: join(ctx.root, "c-full"), MOONSPACE_HUB_RETRY_MS: "20" } });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    child.on("exit", (code) => resolve({ code, err }));
  });
  assertEq(full.code, 1, full.err);
  assert(/cannot write .*blobs: File too large \(free some space/.test(full.err), full.err);
  const e = await pull("fault/entry", env);
  assertEq(e.code, 1);
  assert(/missing\.json not found in fault\/entry/.test(e.stderr), e.stderr);
  assert(existsSync(join(env.HF_HUB_CACHE, "models--fault--entry/.no_exist", ctx.fault.commit, "missing.json")), ".no_exist marker");
});

s.test("fault: two processes asking for the same file download it once; the one waiting shows the other's progress", async (ctx) => {
  const env = { HF_ENDPOINT: ctx.fault.url, HF_HUB_CACHE: join(ctx.root, "c-two") };
  const first = pull("fault/slow", env);
  // the second starts once the first is fetching the blob, on a terminal (script(1)) that
  // draws the bytes it waits on
  for (let i = 0; i < 200 && !ctx.fault.stats.cdnGets["fault/slow"]; i++) await sleep(10);
  const second = run([], {}, 30000, ["script", "-qec", `${join(BIN, "moonspace")} pull fault/slow`, "/dev/null"], { ...env, TERM: "xterm" });
  const [a, b] = await Promise.all([first, second]);
  assertEq([a.code, b.code], [0, 0], a.stderr + b.stdout + b.stderr);
  assertEq(ctx.fault.stats.cdnGets["fault/slow"], 1, "one GET of the blob");
  assert(readFileSync(join(a.stdout.trim(), "model.safetensors")).equals(ctx.fault.big), "bytes");
  const pcts = [...b.stdout.matchAll(/\x1b\[2Kmodel\.safetensors +\[[#.]+\] +(\d+)%/g)].map((m) => Number(m[1]));
  assert(pcts.some((p) => p > 0 && p < 100), "the waiting process drew the download in flight: " + JSON.stringify(b.stdout.slice(0, 3000)));
});

s.test("fault: files download in parallel, at most --parallel at once", async (ctx) => {
  const env = { HF_ENDPOINT: ctx.fault.url };
  const two = await pull("fault/many2", { ...env, HF_HUB_CACHE: join(ctx.root, "c-many2") }, ["--parallel", "2"]);
  assertEq(two.code, 0, two.stderr);
  assertEq(ctx.fault.stats.maxActive["fault/many2"], 2, "--parallel 2");
  assertEq(listTree(two.stdout.trim()).length, 6);
  const all = await pull("fault/many", { ...env, HF_HUB_CACHE: join(ctx.root, "c-many") });
  assertEq(all.code, 0, all.stderr);
  assertEq(ctx.fault.stats.maxActive["fault/many"], 6, "6 files under the default limit of 8: all at once");
});

s.test("fault: the sha256 check holds however the hasher gets the bytes (memory, paused, read back)", async (ctx) => {
  // MOONSPACE_HUB_HASH_PIECES bounds the pieces the hash thread digests from memory, and the
  // transfer pauses while it holds them all (with 1 or 2, over and over); -1: none, it reads
  // every byte back from the .incomplete file; unset: the default
  const data = randomBytes(40 << 20);
  mkdirSync(join(ctx.mirror, "test/hashing"), { recursive: true });
  writeFileSync(join(ctx.mirror, "test/hashing/model.safetensors"), data);
  for (const pieces of ["-1", "1", "2", ""]) {
    const m = await pull("test/hashing", { ...ctx.env, HF_HUB_CACHE: join(ctx.root, `c-hashm${pieces}`), MOONSPACE_HUB_HASH_PIECES: pieces });
    assertEq(m.code, 0, `pieces=${pieces}: ${m.stderr}`);
    assert(readFileSync(join(m.stdout.trim(), "model.safetensors")).equals(data), `pieces=${pieces}: mirror bytes`);
    const env = { HF_ENDPOINT: ctx.fault.url, HF_HUB_CACHE: join(ctx.root, `c-hash${pieces}`), MOONSPACE_HUB_HASH_PIECES: pieces };
    const ok = await pull("fault/drop", env); // resumed after 1 MiB: the digest spans both GETs
    assertEq(ok.code, 0, `pieces=${pieces}: ${ok.stderr}`);
    assert(readFileSync(join(ok.stdout.trim(), "model.safetensors")).equals(ctx.fault.big), `pieces=${pieces}: bytes`);
    const bad = await pull("fault/badsha", env);
    assertEq(bad.code, 1, `pieces=${pieces}`);
    assert(/sha256 mismatch \(got [0-9a-f]{64}, expected/.test(bad.stderr), `pieces=${pieces}: ${bad.stderr}`);
    assert(bad.stderr.includes(ctx.fault.bigSha), `pieces=${pieces}: the digest of the bytes received: ${bad.stderr}`);
    assertEq(readdirSync(join(env.HF_HUB_CACHE, "models--fault--badsha/blobs")), [], `pieces=${pieces}: neither the blob nor the partial file kept`);
  }
});

// ---- the official JS client, and the cache interchange ----
s.test("@huggingface/hub: listFiles, downloadFile and snapshotDownload against the mirror", async (ctx) => {
  const hub = await requirePackage("@huggingface/hub");
  const hubUrl = ctx.host.url;
  const names = [];
  for await (const f of hub.listFiles({ repo: "test/nested", recursive: true, hubUrl })) if (f.type === "file") names.push(f.path);
  assertEq(names.sort(), ["big.bin", "config.json", "sub/deeper/notes.txt"]);
  const blob = await hub.downloadFile({ repo: "nickypro/tinyllama-15M", path: "tokenizer.json", hubUrl });
  assert(Buffer.from(await blob.arrayBuffer()).equals(readFileSync(join(MODELS, "stories260K/tokenizer.json"))), "downloadFile bytes");
  // JS fills a cache, moonspace uses it offline
  const jsCache = join(ctx.root, "c-js");
  const snap = await hub.snapshotDownload({ repo: "test/sharded", cacheDir: jsCache, hubUrl });
  const r = await pull("test/sharded", { HF_HUB_CACHE: jsCache, HF_HUB_OFFLINE: "1", HF_ENDPOINT: "http://127.0.0.1:9" });
  assertEq(r.code, 0, r.stderr);
  assertEq(r.stdout.trim(), snap);
  // moonspace fills a cache, JS finds every file in place (nothing re-downloaded)
  const msCache = join(ctx.root, "c-ms");
  const p = await pull("nickypro/tinyllama-15M", { ...ctx.env, HF_HUB_CACHE: msCache });
  assertEq(p.code, 0, p.stderr);
  const blobs = join(msCache, "models--nickypro--tinyllama-15M/blobs");
  const before = readdirSync(blobs).map((b) => [b, statSync(join(blobs, b)).mtimeMs]);
  const snap2 = await hub.snapshotDownload({ repo: "nickypro/tinyllama-15M", cacheDir: msCache, hubUrl });
  assertEq(snap2, p.stdout.trim());
  assertEq(readdirSync(blobs).map((b) => [b, statSync(join(blobs, b)).mtimeMs]), before, "no blob rewritten");
});

s.run(setup, teardown);
