// Pipelining (host/apps.c): when an app's calls are short and its workers are busy, the
// host hands calls to a worker ahead of the one it runs. Each call must still get its own
// answer, a cancel must reach a call sent ahead, and calls sent ahead to a worker that
// stops must run on the next worker instead of failing.
import { rmSync } from "node:fs";
import { assert, assertEq, startHost, suite, tempDir, waitFor, writeApp } from "../lib/host.mjs";

const s = suite("pipeline");

const APP = `
app.interface{fn=function(x) return "echo:" .. x end, inputs={"text"}, outputs="text", api_name="echo"}
app.interface{fn=function(ms)
  local t = os.clock()
  while os.clock() - t < ms / 1000 do end
  return "slept"
end, inputs={"number"}, outputs="text", api_name="busy"}
app.interface{fn=function(x)
  return (("a"):rep(1e5)):find(".-.-.-.-b$") -- C code: only the worker's hard stop ends it
end, inputs={"text"}, outputs="text", api_name="stuck"}
app.interface{fn=function(x)
  local t, t0 = {}, os.clock()
  while os.clock() - t0 < 0.8 do end -- long enough for the calls behind it to be sent ahead
  for i = 1, 1e6 do t[i] = ("x"):rep(1e6) .. i end
  return "never"
end, inputs={"text"}, outputs="text", api_name="hog"}
`;

function addApp(apps) {
  writeApp(apps, "test/pipe", { title: "Pipe", timeout: 2, memory: 16, max_queue: 1000 }, { "app.lua": APP });
}

async function run(host, api, value) {
  const r = await fetch(`${host.url}/spaces/test/pipe/gradio_api/run/${api}`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ data: [value] }),
  });
  return { status: r.status, body: await r.json() };
}

const queue = async (host) => (await (await fetch(`${host.url}/api/spaces/test/pipe`)).json()).queue;

async function ready(host) {
  await waitFor(async () => (await run(host, "echo", "up")).status === 200, 20000, "the app to run");
  // short calls on average: pipelining on (the average follows recent calls)
  for (let i = 0; i < 30; i++) await run(host, "echo", "warm");
}

// Calls that wait behind a running one are handed to its worker ahead of time: waits until
// the host reports n of them sent ahead.
async function sentAhead(host, n) {
  await waitFor(async () => (await queue(host)).sent_ahead >= n, 10000, `${n} calls sent ahead`);
}

s.test("hundreds of concurrent calls each get their own answer", async ({ apps }) => {
  const host = await startHost({ apps: [apps] });
  try {
    await ready(host);
    const n = 400;
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => run(host, "echo", `call ${i}`)));
    answers.forEach((a, i) => {
      assertEq(a.status, 200, `call ${i}`);
      assertEq(a.body.data[0], `echo:call ${i}`, `call ${i} got another call's answer`);
    });
    const q = await queue(host);
    assertEq(q.sent_ahead, 0, "nothing left sent ahead");
    assertEq(q.running, 0, "nothing left running");
  } finally {
    await host.stop();
  }
});

s.test("a cancelled call sent ahead ends cancelled and the others complete", async ({ apps }) => {
  const host = await startHost({ apps: [apps] });
  try {
    await ready(host);
    const busy = run(host, "busy", 600);
    await waitFor(async () => (await queue(host)).running === 1, 5000, "the busy call to run");
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${host.url}/spaces/test/pipe/gradio_api/call/echo`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ data: [`e${i}`] }),
      });
      ids.push((await r.json()).event_id);
    }
    await sentAhead(host, 3);
    const c = await fetch(`${host.url}/spaces/test/pipe/gradio_api/cancel`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ event_id: ids[1] }),
    });
    assertEq(c.status, 200, "cancel");
    assertEq((await busy).body.data[0], "slept");
    const results = await Promise.all(ids.map(async (id) => {
      const r = await fetch(`${host.url}/spaces/test/pipe/gradio_api/call/echo/${id}`);
      return r.text();
    }));
    assert(/event: complete\ndata: \["echo:e0"\]/.test(results[0]), results[0]);
    assert(/event: error\ndata: .*cancelled/.test(results[1]), results[1]);
    assert(/event: complete\ndata: \["echo:e2"\]/.test(results[2]), results[2]);
  } finally {
    await host.stop();
  }
});

s.test("calls sent ahead of a call that ends its worker run on the next worker", async ({ apps }) => {
  const host = await startHost({ apps: [apps] });
  try {
    await ready(host);
    // the hard stop: the worker answers the stuck call itself and exits (status 3)
    const stuck = run(host, "stuck", "x");
    await waitFor(async () => (await queue(host)).running === 1, 5000, "the stuck call to run");
    const after = Array.from({ length: 6 }, (_, i) => run(host, "echo", `after ${i}`));
    await sentAhead(host, 6);
    const st = await stuck;
    assert(st.status !== 200, "the stuck call fails");
    assert(/time limit/.test(st.body.error), st.body.error);
    (await Promise.all(after)).forEach((a, i) => {
      assertEq(a.status, 200, `call ${i} after the stuck one: ${JSON.stringify(a.body)}`);
      assertEq(a.body.data[0], `echo:after ${i}`);
    });
    // a memory error: the host restarts the worker for a fresh state
    await ready(host);
    const hog = run(host, "hog", "x");
    await waitFor(async () => (await queue(host)).running === 1, 5000, "the hog call to run");
    const after2 = Array.from({ length: 4 }, (_, i) => run(host, "echo", `then ${i}`));
    await sentAhead(host, 4);
    const h = await hog;
    assert(/memory/.test(h.body.error), JSON.stringify(h.body));
    (await Promise.all(after2)).forEach((a, i) => {
      assertEq(a.status, 200, `call ${i} after the hog: ${JSON.stringify(a.body)}`);
      assertEq(a.body.data[0], `echo:then ${i}`);
    });
    assert(/calls sent ahead to a stopped worker go back to the queue/.test(host.log()), "the host says so");
    const info = await (await fetch(`${host.url}/api/spaces/test/pipe`)).json();
    assertEq(info.runtime.stage, "RUNNING", "not counted as a crash loop");
  } finally {
    await host.stop();
  }
});

await s.run(async () => {
  const apps = tempDir("ms-apps-");
  addApp(apps);
  return { apps };
}, async ({ apps }) => rmSync(apps, { recursive: true, force: true }));
