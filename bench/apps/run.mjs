#!/usr/bin/env node
// bench/apps/run.mjs: cold start of a model app and time to first token, each next to a
// baseline measured in the same run (a benchmark, not a test).
//
//   node bench/apps/run.mjs [--model DIR] [--runs N]
//
// MODEL (default: the stories260K fixture) is installed in a fresh Hugging Face cache as
// nickypro/tinyllama-15M, so the story writer app finds it cached (HF_HUB_OFFLINE=1).
//  - cold start: `moonspace serve` started → the app RUNNING (card read, model present in
//    the cache, worker started), against the same for the hello app, which needs no model;
//  - time to first token: queue/join → the first streamed piece, for the first call (the
//    model worker starts and loads the weights) and a warm one, against `moonspace generate
//    MODEL -n 1` run as a process (start, load, one token) in the same run.
import { execFileSync } from "node:child_process";
import { cpSync, rmSync } from "node:fs";
import { join } from "node:path";
import { BIN, FIXTURES, copyExampleApps, fixtureHubCache, readSSE, startHost, tempDir } from "../../tests/lib/host.mjs";

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const model = opt("--model", join(FIXTURES, "models/stories260K"));
const runs = Number(opt("--runs", 5));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const post = (url, body) => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

async function coldStart(app, env) {
  const t0 = performance.now();
  const host = await startHost({ apps: [app.dir], env, timeoutMs: 120000 }); // returns once nothing is BUILDING
  try {
    for (;;) {
      const a = await (await fetch(`${host.url}/api/spaces/${app.id}`)).json();
      if (a.runtime.stage === "RUNNING") break;
      if (/ERROR/.test(a.runtime.stage)) throw new Error(`${app.id}: ${a.runtime.errorMessage}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  } catch (e) {
    await host.stop(); // never leave a host behind
    throw e;
  }
  return { ms: performance.now() - t0, host };
}

async function firstToken(host) {
  const base = host.url + "/spaces/moonspace/story-writer/gradio_api";
  const session_hash = "b" + Math.random().toString(36).slice(2);
  const t0 = performance.now();
  await post(base + "/queue/join", { data: ["Once upon a time", 0, 1, 16], fn_index: 0, session_hash });
  let ttft = 0;
  await readSSE(await fetch(`${base}/queue/data?session_hash=${session_hash}`), {
    until: (ev) => {
      if (!ttft && ev.some((e) => e.json && e.json.msg === "process_generating")) ttft = performance.now() - t0;
      return ev.some((e) => e.json && e.json.msg === "close_stream");
    },
  });
  return ttft;
}

const cache = fixtureHubCache({ "nickypro/tinyllama-15M": { dirs: [model] } });
const env = { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" };
const apps = tempDir("ms-bench-apps-");
copyExampleApps(apps);
const only = (id) => { // an apps directory holding one app
  const d = tempDir("ms-bench-one-");
  cpSync(join(apps, id), join(d, id), { recursive: true });
  return { dir: d, id };
};
const hello = only("moonspace/hello"), story = only("moonspace/story-writer");

const plain = [], withModel = [], cold = [], warm = [], cli = [];
for (let i = 0; i < runs; i++) {
  const p = await coldStart(hello, env);
  plain.push(p.ms);
  await p.host.stop();
  const s = await coldStart(story, env);
  withModel.push(s.ms);
  cold.push(await firstToken(s.host));
  warm.push(await firstToken(s.host));
  await s.host.stop();
  const t0 = performance.now();
  execFileSync(join(BIN, "moonspace"), ["generate", model, "-p", "Once upon a time", "-n", "1", "-t", "0"], { stdio: "ignore" });
  cli.push(performance.now() - t0);
}
const row = (name, ms, base) => console.log(`${name.padEnd(52)} ${ms.toFixed(1).padStart(8)} ms ${base ? (ms / base).toFixed(2).padStart(7) + "x" : ""}`);
console.log(`# model: ${model}; median of ${runs} runs; load ${(await import("node:os")).loadavg().map((x) => x.toFixed(1)).join(" ")}`);
row("cold start, app without a model (baseline)", median(plain));
row("cold start, story writer (checkpoint cached)", median(withModel), median(plain));
row("moonspace generate -n 1 as a process (baseline)", median(cli));
row("time to first token, first call (loads the model)", median(cold), median(cli));
row("time to first token, warm", median(warm), median(cli));
for (const d of [cache, apps, hello.dir, story.dir]) rmSync(d, { recursive: true, force: true });
