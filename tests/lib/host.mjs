// tests/lib/host.mjs: start a real moonspace host on an ephemeral loopback port for a test,
// and report results as the runner counts them (PASS / FAIL / SKIP lines).
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.MS_BIN || join(ROOT, "bin");
export const CI = process.env.CI === "true";
export const FIXTURES = process.env.MOONSPACE_FIXTURES || join(ROOT, "../shared/fixtures");

export function tempDir(prefix = "ms-test-") {
  return mkdtempSync(join(tmpdir(), prefix));
}

// Writes an app OWNER/NAME under root: card fields (object → YAML lines) and files.
export function writeApp(root, id, card, files) {
  const dir = join(root, id);
  mkdirSync(dir, { recursive: true });
  const yaml = Object.entries({ sdk: "lua", app_file: "app.lua", ...card })
    .map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join("\n");
  writeFileSync(join(dir, "README.md"), `---\n${yaml}\n---\n\n# ${card.title || id}\n`);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

export function copyExampleApps(root) {
  cpSync(join(ROOT, "apps"), root, { recursive: true });
}

// Starts `moonspace serve`; resolves when /healthz answers. Options: apps (array of dirs),
// args (extra flags), env.
// wrap: a command that execs the host (e.g. ["taskset", "-c", "0"]), so child.pid stays the host's
export async function startHost({ apps = [], args = [], env = {}, timeoutMs = 15000, wrap = [] } = {}) {
  const data = tempDir("ms-data-");
  const argv = ["serve", "--host", "127.0.0.1", "--port", "0", "--data", data, "--rescan-ms", "200", ...apps.flatMap((a) => ["--apps", a]), ...args];
  const [cmd, ...pre] = [...wrap, join(BIN, "moonspace")];
  const child = spawn(cmd, [...pre, ...argv], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const exited = new Promise((res) => child.on("exit", (code, sig) => res({ code, sig })));
  const deadline = Date.now() + timeoutMs;
  let port = 0;
  while (Date.now() < deadline) {
    const m = log.match(/serving \d+ apps on http:\/\/127\.0\.0\.1:(\d+)/);
    if (m) { port = Number(m[1]); break; }
    if (child.exitCode !== null) break;
    await sleep(20);
  }
  if (!port) {
    child.kill("SIGKILL");
    throw new Error("the host did not start:\n" + log);
  }
  const url = `http://127.0.0.1:${port}`;
  const host = {
    url, port, data, child,
    log: () => log,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 15000);
      const r = await exited;
      clearTimeout(t);
      rmSync(data, { recursive: true, force: true });
      return r;
    },
  };
  // wait until every app has left BUILDING (or a bounded time passed)
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url + "/api/spaces");
      const list = await r.json();
      if (Array.isArray(list) && list.every((a) => a.runtime.stage !== "BUILDING")) break;
    } catch { /* not yet */ }
    await sleep(30);
  }
  return host;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Waits until fn() returns a truthy value (polling), or throws after timeoutMs.
export async function waitFor(fn, timeoutMs = 10000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

// Reads a server-sent-events response into an array of {event, data} until it ends or
// `until(events)` is true; bounded by timeoutMs.
export async function readSSE(response, { until = () => false, timeoutMs = 15000 } = {}) {
  const events = [];
  const reader = response.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      const left = deadline - Date.now();
      const r = await Promise.race([reader.read(), sleep(left).then(() => ({ timeout: true }))]);
      if (r.timeout) throw new Error("SSE read timed out; got " + JSON.stringify(events).slice(0, 500));
      if (r.done) break;
      buf += dec.decode(r.value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = { event: "message", data: "", raw: block };
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) ev.event = line.slice(7);
          else if (line.startsWith("data: ")) ev.data += line.slice(6);
        }
        try { ev.json = JSON.parse(ev.data); } catch { /* plain data */ }
        events.push(ev);
        if (until(events)) return events;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return events;
}

// A minimal test runner printing PASS/FAIL/SKIP lines; one failing test does not stop the
// others. `suite` names the lines.
export function suite(name) {
  const tests = [];
  const api = {
    test: (title, fn, { timeoutMs = 60000 } = {}) => tests.push({ title, fn, timeoutMs }),
    async run(setup, teardown) {
      let ctx;
      try {
        ctx = setup ? await setup() : undefined;
      } catch (e) {
        if (e && e.skip) {
          console.log(`SKIP ${name}/setup: ${e.message}`);
          return;
        }
        console.log(`FAIL ${name}/setup: ${e && e.stack || e}`);
        process.exitCode = 1;
        return;
      }
      const only = process.env.MS_TEST_ONLY ? new RegExp(process.env.MS_TEST_ONLY) : null; // run a subset by hand
      for (const t of tests) {
        const label = `${name}/${t.title}`;
        if (only && !only.test(label)) continue;
        try {
          let timer;
          await Promise.race([t.fn(ctx), new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timeout after ${t.timeoutMs} ms`)), t.timeoutMs); })]);
          clearTimeout(timer);
          console.log(`PASS ${label}`);
        } catch (e) {
          if (e && e.skip) console.log(`SKIP ${label}: ${e.message}`);
          else { console.log(`FAIL ${label}: ${(e && e.stack || String(e)).split("\n").slice(0, 6).join(" | ")}`); process.exitCode = 1; }
        }
      }
      if (teardown) await teardown(ctx);
    },
  };
  return api;
}

export function skip(message) {
  const e = new Error(message);
  e.skip = true;
  return e;
}

// Skips (or fails under CI=true) when an npm package is missing.
export async function requirePackage(name) {
  try {
    return await import(name);
  } catch {
    if (CI) throw new Error(`npm package ${name} is missing (run scripts/install-deps)`);
    throw skip(`npm package ${name} is missing (run scripts/install-deps)`);
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error("assertion failed: " + message);
}

export function assertEq(actual, expected, message = "") {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message} expected ${e.slice(0, 400)}, got ${a.slice(0, 400)}`);
}

// Fills dir with a repo's files: symlinks to the files of fixture folders (a later folder
// wins) and files written from text. spec: "models/x", or { dirs: [...], files: { name: text } }.
function layRepo(dir, spec) {
  const dirs = typeof spec === "string" ? [spec] : spec.dirs;
  const files = (typeof spec === "object" && spec.files) || {};
  mkdirSync(dir, { recursive: true });
  for (const rel of dirs) {
    const src = resolve(FIXTURES, rel);
    if (!existsSync(src)) {
      if (CI) throw new Error(`fixture ${src} missing (CI=true)`);
      throw skip(`fixture ${src} missing`);
    }
    for (const f of readdirSync(src)) {
      rmSync(join(dir, f), { force: true });
      symlinkSync(join(src, f), join(dir, f));
    }
  }
  for (const [name, text] of Object.entries(files)) {
    rmSync(join(dir, name), { force: true });
    writeFileSync(join(dir, name), text);
  }
}

// A Hugging Face cache (the layout huggingface_hub writes) holding fixture checkpoints under
// the repo ids given: { "org/name": spec } (see layRepo). Returns the cache directory (use
// as HF_HUB_CACHE).
export function fixtureHubCache(repos) {
  const cache = tempDir("ms-hub-");
  for (const [id, spec] of Object.entries(repos)) {
    const commit = createHash("sha1").update(id + JSON.stringify(spec)).digest("hex");
    const repo = join(cache, "models--" + id.replace("/", "--"));
    layRepo(join(repo, "snapshots", commit), spec);
    mkdirSync(join(repo, "refs"), { recursive: true });
    writeFileSync(join(repo, "refs", "main"), commit);
  }
  return cache;
}

// A directory of model repos laid out org/name/<files> for `moonspace serve --mirror`,
// holding fixture folders under the repo ids given (same spec as fixtureHubCache).
export function fixtureMirror(repos) {
  const root = tempDir("ms-mirror-");
  for (const [id, spec] of Object.entries(repos)) layRepo(join(root, id), spec);
  return root;
}
