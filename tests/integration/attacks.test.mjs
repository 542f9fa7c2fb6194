// The sandbox's attack apps (tests/sandbox/attacks/*), installed in a real host: each call
// (or the app's loading) must end within the card's timeout + 2 s, after which the host's
// API still answers and another app returns its exact expected value. The worker-level
// suite (tests/sandbox/test_sandbox_attacks.c) checks the same apps' errors and memory.
import { cpSync, readdirSync, rmSync, existsSync } from "node:fs";
import { join } from "node:path";
import { ROOT, assert, assertEq, sleep, startHost, suite, tempDir, writeApp } from "../lib/host.mjs";

const ATTACKS = join(ROOT, "tests/sandbox/attacks");
const s = suite("attacks");
const post = (url, body) => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const names = existsSync(ATTACKS) ? readdirSync(ATTACKS, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort() : [];
let contained = 0;

async function attack(host, name) {
  const id = "attack/" + name.replace(/_/g, "-");
  const t0 = Date.now();
  const limit = 2000 + 2000 + 1500; // card timeout 2 s + 2 s, + slack for a loaded CI machine
  // wait for the app to start (or fail to start: a load-time attack); the host starts a
  // few workers at a time, so an app may wait for its turn first
  let info;
  while (Date.now() - t0 < 60000) {
    info = await (await fetch(`${host.url}/api/spaces/${id}`)).json();
    if (info.runtime && info.runtime.stage !== "BUILDING") break;
    await sleep(50);
  }
  const stage = info.runtime.stage;
  let outcome;
  if (stage === "RUNNING") {
    const c0 = Date.now();
    const r = await post(`${host.url}/spaces/${id}/gradio_api/run/predict`, { data: ["x"] });
    const body = await r.json();
    const took = Date.now() - c0;
    assert(took < limit, `${name}: answered in ${took} ms`);
    outcome = r.status === 200 ? "completed" : "error: " + String(body.error).slice(0, 100);
    if (r.status !== 200) assert(typeof body.error === "string" && body.error.length > 0, `${name}: a clear error`);
  } else {
    assert(/ERROR/.test(stage), `${name}: stage ${stage} after ${Date.now() - t0} ms`);
    assert(info.runtime.errorMessage, `${name}: says why`);
    outcome = `${stage}: ${info.runtime.errorMessage.slice(0, 100)}`;
  }
  // the host and another app are unaffected
  const h = await fetch(host.url + "/healthz");
  assertEq(h.status, 200, `${name}: healthz`);
  const ctl = await post(`${host.url}/spaces/control/echo/gradio_api/run/predict`, { data: [name] });
  assertEq((await ctl.json()).data, ["echo: " + name], `${name}: the control app`);
  return outcome;
}

s.test("every attack is contained", async ({ host }) => {
  if (!names.length) throw new Error("no attack apps under " + ATTACKS);
  const failures = [];
  const queue = [...names];
  const workers = Array.from({ length: 3 }, async () => {
    while (queue.length) {
      const name = queue.shift();
      try {
        const outcome = await attack(host, name);
        contained++;
        console.log(`  contained ${name}: ${outcome}`);
      } catch (e) {
        failures.push(`${name}: ${e.message}`);
      }
    }
  });
  await Promise.all(workers);
  console.log(`attacks: ${names.length} run, ${contained} contained`);
  assert(failures.length === 0, failures.join("; "));
}, { timeoutMs: 400000 });

await s.run(async () => {
  const apps = tempDir("ms-attacks-");
  for (const n of names) cpSync(join(ATTACKS, n), join(apps, "attack", n.replace(/_/g, "-")), { recursive: true });
  writeApp(apps, "control/echo", { title: "Control" }, {
    "app.lua": `app.interface{fn=function(x) return "echo: " .. x end, inputs={"text"}, outputs="text"}`,
  });
  return { host: await startHost({ apps: [apps], timeoutMs: 60000 }), apps };
}, async ({ host, apps }) => {
  await host.stop();
  rmSync(apps, { recursive: true, force: true });
});
