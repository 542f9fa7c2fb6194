// The official JS client, @gradio/client from npm, unmodified, against example apps:
// positional and keyword predict, a streamed call, an error, a cancel.
import { rmSync } from "node:fs";
import { assert, assertEq, copyExampleApps, requirePackage, sleep, startHost, suite, tempDir, writeApp } from "../lib/host.mjs";

const s = suite("gradio-client");
let Client;

s.test("predict with positional arguments", async ({ host }) => {
  const client = await Client.connect(host.url + "/spaces/moonspace/hello/");
  const r = await client.predict("/predict", ["World", 3]);
  assertEq(r.data, ["Hello, World!!!"]);
});

s.test("predict with keyword arguments and defaults", async ({ host }) => {
  const client = await Client.connect(host.url + "/spaces/moonspace/hello/");
  assertEq((await client.predict("/predict", { name: "Moon", intensity: 1 })).data, ["Hello, Moon!"]);
  assertEq((await client.predict("/predict", { name: "Moon" })).data, ["Hello, Moon!!"], "intensity defaults to 2");
});

s.test("a streamed call delivers partial results, then the final one", async ({ host }) => {
  const client = await Client.connect(host.url + "/spaces/moonspace/streaming-demo/");
  // all_events: status messages (progress, completion) as well as data
  const job = client.submit("/typewriter", { text: "one two three four five", delay_ms: 0 }, undefined, undefined, true);
  const partial = [];
  let final, sawProgress = false;
  for await (const msg of job) {
    if (msg.type === "data") partial.push(msg.data[0]);
    if (msg.type === "status" && msg.progress_data) sawProgress = true;
    if (msg.type === "status" && msg.stage === "complete") { final = partial.at(-1); break; }
    if (msg.type === "status" && msg.stage === "error") throw new Error(msg.message);
  }
  assert(partial.length >= 4, "partial results: " + JSON.stringify(partial));
  assertEq(partial[0], "one ");
  assertEq(final, "one two three four five");
  assert(sawProgress, "progress reported");
});

s.test("an app error rejects with the app's message", async ({ host }) => {
  const client = await Client.connect(host.url + "/spaces/moonspace/streaming-demo/");
  let err;
  try {
    await client.predict("/countdown", [1]);
  } catch (e) {
    err = e;
  }
  assert(err, "predict rejected");
  const text = err.message || (err.error || JSON.stringify(err));
  assert(/Liftoff failed/.test(text), "message: " + text);
});

s.test("cancel stops a running call", async ({ host }) => {
  const client = await Client.connect(host.url + "/spaces/test/slow/");
  const job = client.submit("/predict", [20], undefined, undefined, true);
  const seen = [];
  const reader = (async () => {
    for await (const msg of job) {
      seen.push(msg.type === "status" ? msg.stage : msg.type);
      if (msg.type === "status" && (msg.stage === "complete" || msg.stage === "error")) break;
    }
  })();
  await sleep(500);
  const t0 = Date.now();
  await job.cancel();
  await Promise.race([reader, sleep(8000)]);
  assert(seen.includes("generating") || seen.includes("pending"), "the call had started: " + seen);
  // the worker was interrupted: the next call runs at once
  const r = await client.predict("/predict", [0]);
  assertEq(r.data, ["slept 0 s"]);
  assert(Date.now() - t0 < 8000, "the app was free again quickly");
});

await s.run(async () => {
  ({ Client } = await requirePackage("@gradio/client"));
  const apps = tempDir("ms-apps-");
  copyExampleApps(apps);
  writeApp(apps, "test/slow", { title: "Slow", timeout: 30 }, {
    "app.lua": `app.interface{fn=function(n) local stop = os.time() + n  -- wall clock: os.clock counts CPU time, which a loaded machine stretches
     
      while os.time() < stop do end return ("slept %d s"):format(n) end, inputs={"number"}, outputs="text"}`,
  });
  return { host: await startHost({ apps: [apps] }), apps };
}, async ({ host, apps }) => {
  await host.stop();
  rmSync(apps, { recursive: true, force: true });
});
