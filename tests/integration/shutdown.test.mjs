// Graceful shutdown: on SIGTERM the host stops accepting, lets calls in flight finish up to
// --shutdown-grace, stops its workers, closes the store and exits 0.
import { rmSync } from "node:fs";
import { assert, assertEq, sleep, startHost, suite, tempDir, waitFor, writeApp } from "../lib/host.mjs";

const s = suite("shutdown");
const post = (url, body) => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const slowApp = `app.interface{fn=function(n) local stop = os.time() + n  -- wall clock: os.clock counts CPU time, which a loaded machine stretches
     
  while os.time() < stop do end return ("slept %g s"):format(n) end, inputs={"number"}, outputs="text"}`;

s.test("a call in flight finishes before the host exits", async ({ apps }) => {
  const host = await startHost({ apps: [apps] });
  const call = post(host.url + "/spaces/test/slow/gradio_api/run/predict", { data: [2] });
  await sleep(400);
  host.child.kill("SIGTERM");
  const r = await call;
  assertEq(r.status, 200);
  assertEq((await r.json()).data, ["slept 2 s"]);
  const { code } = await host.stop();
  assertEq(code, 0);
  assert(/stopped cleanly/.test(host.log()), "logs a clean stop");
});

s.test("new connections are refused while draining", async ({ apps }) => {
  const host = await startHost({ apps: [apps] });
  const call = post(host.url + "/spaces/test/slow/gradio_api/run/predict", { data: [2] });
  await sleep(400);
  host.child.kill("SIGTERM");
  await sleep(200);
  let refused = false;
  try {
    await fetch(host.url + "/healthz", { signal: AbortSignal.timeout(2000) });
  } catch {
    refused = true;
  }
  assert(refused, "no new connections after SIGTERM");
  await call;
  assertEq((await host.stop()).code, 0);
});

s.test("past the grace period, calls still running end with an error", async ({ apps }) => {
  const host = await startHost({ apps: [apps], args: ["--shutdown-grace", "1"] });
  const t0 = Date.now();
  const call = post(host.url + "/spaces/test/slow/gradio_api/run/predict", { data: [20] }).then(
    async (r) => ({ status: r.status, body: await r.json() }), (e) => ({ error: e }));
  await sleep(400);
  host.child.kill("SIGTERM");
  const r = await call;
  assert(r.error || r.status !== 200, "the call did not complete: " + JSON.stringify(r));
  await waitFor(() => host.child.exitCode !== null, 10000, "the exit");
  assertEq(host.child.exitCode, 0);
  assert(Date.now() - t0 < 8000, "stopped within the grace period");
  await host.stop();
});

await s.run(async () => {
  const apps = tempDir("ms-apps-");
  writeApp(apps, "test/slow", { title: "Slow", timeout: 60 }, { "app.lua": slowApp });
  return { apps };
}, async ({ apps }) => rmSync(apps, { recursive: true, force: true }));
