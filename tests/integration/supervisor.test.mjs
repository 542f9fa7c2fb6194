// The host's supervision of app workers: a worker that keeps dying puts its app in
// RUNTIME_ERROR with its last log lines; the restart endpoint starts it again.
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { assert, assertEq, startHost, suite, tempDir, waitFor, writeApp } from "../lib/host.mjs";

const s = suite("supervisor");
const info = async (host, id) => (await fetch(`${host.url}/api/spaces/${id}`)).json();

s.test("a crash loop ends in RUNTIME_ERROR with the worker's last log lines", async ({ apps }) => {
  const bin = tempDir("ms-bin-");
  chmodSync(bin, 0o755); // the worker runs as nobody when the tests run as root
  const fake = join(bin, "crashing-worker");
  writeFileSync(fake, "#!/bin/sh\necho 'fake worker: giving up at once' >&2\nexit 3\n");
  chmodSync(fake, 0o755);
  const host = await startHost({ apps: [apps], args: ["--appworker", fake] });
  try {
    const a = await waitFor(async () => {
      const x = await info(host, "test/ok");
      return x.runtime.stage === "RUNTIME_ERROR" ? x : null;
    }, 30000, "RUNTIME_ERROR");
    assert(/crashed 5 times/.test(a.runtime.errorMessage), a.runtime.errorMessage);
    assert(a.logs.some((l) => l.includes("fake worker: giving up at once")), JSON.stringify(a.logs));
    assert(a.logs.some((l) => /exited with status 3/.test(l)), "the exit is logged");
    const h = await fetch(host.url + "/healthz");
    assertEq(h.status, 200, "the host is fine");
  } finally {
    await host.stop();
    rmSync(bin, { recursive: true, force: true });
  }
});

// A worker that starts fine and dies on every call: the crash loop must not strand the calls
// still waiting (nothing serves them until a restart), and new calls are refused at once.
const CRASH_ON_CALL = `#!/usr/bin/env node
const net = require("node:net");
const sock = new net.Socket({ fd: 3, readable: true, writable: true });
const send = (o) => { const b = Buffer.from(JSON.stringify(o)); const h = Buffer.alloc(4); h.writeUInt32LE(b.length); sock.write(Buffer.concat([h, b])); };
let buf = Buffer.alloc(0);
sock.on("data", (d) => {
  buf = Buffer.concat([buf, d]);
  while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
    const m = JSON.parse(buf.subarray(4, 4 + buf.readUInt32LE(0)));
    buf = buf.subarray(4 + buf.readUInt32LE(0));
    if (m.t === "init") send({ t: "ready", title: null, description: null, endpoints: [{ api_name: "predict", params: ["x"],
      inputs: [{ type: "textbox", props: { label: "x" } }], outputs: [{ type: "textbox", props: { label: "out" } }], examples: [], stream: false }] });
    else if (m.t === "call") { console.error("fake worker: crashing on call " + m.id); process.exit(1); }
  }
});
`;

s.test("a crash loop fails the calls still waiting, and refuses new ones", async ({ apps }) => {
  const bin = tempDir("ms-bin-");
  chmodSync(bin, 0o755);
  const fake = join(bin, "crash-on-call");
  writeFileSync(fake, CRASH_ON_CALL);
  chmodSync(fake, 0o755);
  const host = await startHost({ apps: [apps], args: ["--appworker", fake] });
  try {
    await waitFor(async () => (await info(host, "test/ok")).runtime.stage === "RUNNING", 15000, "RUNNING");
    const url = `${host.url}/spaces/test/ok/gradio_api/run/predict`;
    const call = async () => {
      const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ data: ["x"] }) });
      return { status: r.status, body: await r.json() };
    };
    const answers = await Promise.all(Array.from({ length: 10 }, call)); // more calls than crashes allowed
    answers.forEach((a) => assert(a.status >= 500 && typeof a.body.error === "string", JSON.stringify(a)));
    assert(answers.some((a) => /The app stopped \(RUNTIME_ERROR\)/.test(a.body.error)), JSON.stringify(answers));
    const later = await call();
    assertEq(later.status, 503, "a new call is refused at once");
    assert(/RUNTIME_ERROR/.test(later.body.detail || later.body.error), JSON.stringify(later.body));
  } finally {
    await host.stop();
    rmSync(bin, { recursive: true, force: true });
  }
});

s.test("restart brings an app back after a runtime error", async ({ apps }) => {
  const host = await startHost({ apps: [apps] });
  try {
    // fails to load until a moment passes: the first start fails, a restart succeeds
    const until = Math.floor(Date.now() / 1000) + 2;
    writeApp(apps, "test/flaky", { title: "Flaky" }, {
      "app.lua": `if os.time() < ${until} then error("not yet") end
app.interface{fn=function(x) return "up: " .. x end, inputs={"text"}, outputs="text"}`,
    });
    const failed = await waitFor(async () => {
      const x = await info(host, "test/flaky");
      return x.runtime && x.runtime.stage === "RUNTIME_ERROR" ? x : null;
    }, 20000, "the failed start");
    assert(/not yet/.test(failed.runtime.errorMessage), failed.runtime.errorMessage);
    await waitFor(() => Date.now() / 1000 > until + 0.2, 5000, "time to pass");
    const running = await fetch(`${host.url}/api/spaces/test/ok/restart`, { method: "POST" });
    assertEq(running.status, 409, "a running app is not restarted from outside");
    const r = await fetch(`${host.url}/api/spaces/test/flaky/restart`, { method: "POST" });
    assertEq(r.status, 200);
    await waitFor(async () => (await info(host, "test/flaky")).runtime.stage === "RUNNING", 20000, "RUNNING");
    const call = await fetch(`${host.url}/spaces/test/flaky/gradio_api/run/predict`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ data: ["x"] }),
    });
    assertEq((await call.json()).data, ["up: x"]);
  } finally {
    await host.stop();
  }
});

await s.run(async () => {
  const apps = tempDir("ms-apps-");
  writeApp(apps, "test/ok", { title: "OK" }, { "app.lua": `app.interface{fn=function(x) return x end, inputs={"text"}, outputs="text"}` });
  return { apps };
}, async ({ apps }) => rmSync(apps, { recursive: true, force: true }));
