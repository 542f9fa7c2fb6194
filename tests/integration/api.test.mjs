// The host end to end over HTTP: the JSON API, the Gradio-compatible routes (config, info,
// queue, call, run, cancel), validation, errors, hot reload, tokens, likes, proxies.
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, assert, assertEq, copyExampleApps, readSSE, sleep, startHost, suite, tempDir, waitFor, writeApp } from "../lib/host.mjs";

const s = suite("api");
const post = (url, body, headers = {}) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

s.test("gallery page is served with the root path filled in", async ({ host }) => {
  const r = await fetch(host.url + "/");
  assertEq(r.status, 200);
  assert(r.headers.get("content-type").startsWith("text/html"), "html");
  const html = await r.text();
  assert(!html.includes("{{root}}"), "template filled");
});

s.test("/api/spaces lists the apps as the Hub does, pinned first", async ({ host }) => {
  const list = await (await fetch(host.url + "/api/spaces")).json();
  const ids = list.map((a) => a.id);
  for (const id of ["moonspace/hello", "moonspace/text-toolkit", "moonspace/streaming-demo", "moonspace/eliza-chat", "test/slow", "test/broken"])
    assert(ids.includes(id), "lists " + id + " in " + ids);
  assertEq(list[0].id, "moonspace/hello", "pinned first");
  const hello = list.find((a) => a.id === "moonspace/hello");
  assertEq(hello.author, "moonspace");
  assertEq(hello.cardData.emoji, "👋");
  assertEq(hello.runtime.stage, "RUNNING");
  const broken = list.find((a) => a.id === "test/broken");
  assertEq(broken.runtime.stage, "CONFIG_ERROR");
  assert(/colorFrom/.test(broken.runtime.errorMessage), "says what to fix: " + broken.runtime.errorMessage);
});

s.test("/api/spaces searches, filters by tag, sorts and pages", async ({ host }) => {
  const q = async (qs) => (await (await fetch(host.url + "/api/spaces?" + qs)).json()).map((a) => a.id);
  assertEq(await q("search=eliza"), ["moonspace/eliza-chat"]);
  assertEq(await q("tag=state"), ["moonspace/eliza-chat"]);
  const byName = await q("sort=name");
  assertEq(byName[0], "moonspace/hello", "pinned first even by name");
  assertEq((await q("sort=name&limit=2")).length, 2);
  assertEq((await q("sort=name&limit=2&offset=1"))[0], byName[1]);
  const bad = await fetch(host.url + "/api/spaces?sort=nope");
  assertEq(bad.status, 400);
  const err = await bad.json();
  assert(err.error && err.error.code && err.error.message, "JSON error with code and message");
});

s.test("/api/spaces/{owner}/{name} has the card, stage, interface, stats and README", async ({ host }) => {
  const a = await (await fetch(host.url + "/api/spaces/moonspace/hello")).json();
  assertEq(a.runtime.stage, "RUNNING");
  assert(a.readme_html.includes("<h1>Hello</h1>"), "README rendered");
  const ep = a.interface.endpoints[0];
  assertEq(ep.api_name, "predict");
  assertEq(ep.params, ["name", "intensity"]);
  assertEq(ep.inputs[1].type, "slider");
  assertEq(ep.examples, [["World", 3]]);
  assert(typeof a.stats.runs === "number", "stats");
  const missing = await fetch(host.url + "/api/spaces/nobody/nothing");
  assertEq(missing.status, 404);
});

s.test("config and info describe the app for the Gradio clients", async ({ host }) => {
  const base = host.url + "/spaces/moonspace/hello/";
  const cfg = await (await fetch(base + "config")).json();
  assertEq(cfg.protocol, "sse_v3");
  assertEq(cfg.api_prefix, "/gradio_api");
  assert(Number(cfg.version.split(".")[0]) >= 5, "version >= 5");
  assertEq(cfg.root, host.url + "/spaces/moonspace/hello");
  const dep = cfg.dependencies[0];
  assertEq(dep.api_name, "predict");
  assertEq(dep.queue, true);
  const ids = new Set(cfg.components.map((c) => c.id));
  for (const id of [...dep.inputs, ...dep.outputs]) assert(ids.has(id), "component " + id + " exists");
  const info = await (await fetch(base + "gradio_api/info")).json();
  assert(info.unnamed_endpoints && info.named_endpoints["/predict"], "named endpoints");
  const params = info.named_endpoints["/predict"].parameters;
  assertEq(params.map((p) => p.parameter_name), ["name", "intensity"]);
  assertEq(params[1].parameter_has_default, true);
  assertEq(params[1].parameter_default, 2);
  assertEq(params[0].type.type, "string");
  assertEq(params[1].component, "Slider");
  // state components are hidden from the API
  const chat = await (await fetch(host.url + "/spaces/moonspace/eliza-chat/gradio_api/info")).json();
  assertEq(chat.named_endpoints["/chat"].parameters.map((p) => p.component), ["Textbox", "Chatbot"]);
});

s.test("run/predict answers synchronously", async ({ host }) => {
  const r = await post(host.url + "/spaces/moonspace/hello/gradio_api/run/predict", { data: ["World", 3] });
  assertEq(r.status, 200);
  assertEq((await r.json()).data, ["Hello, World!!!"]);
});

s.test("invalid inputs get 422 with the parameter named", async ({ host }) => {
  const r = await post(host.url + "/spaces/moonspace/hello/gradio_api/run/predict", { data: ["World", 99] });
  assertEq(r.status, 422);
  const body = await r.json();
  assertEq(body.detail[0].parameter_name, "intensity");
  assert(/between 1 and 10/.test(body.detail[0].message), body.detail[0].message);
  const r2 = await post(host.url + "/spaces/moonspace/hello/gradio_api/queue/join", { data: [5, 2], fn_index: 0, session_hash: "v1" });
  assertEq(r2.status, 422);
  const r3 = await fetch(host.url + "/spaces/moonspace/hello/gradio_api/run/predict", { method: "POST", body: "{not json" });
  assertEq(r3.status, 400);
  const b3 = await r3.json();
  assert(/not valid JSON: .* \(line 1, column \d+\)/.test(b3.detail), "says where it broke: " + b3.detail);
  // a JSON string may hold U+0000; it reaches the app and comes back whole
  const r4 = await post(host.url + "/spaces/moonspace/hello/gradio_api/run/predict", { data: ["Wor\u0000ld", 1] });
  assertEq(r4.status, 200, JSON.stringify(await r4.clone().json()));
  assertEq((await r4.json()).data, ["Hello, Wor\u0000ld!"]);
});

s.test("call/{api} then GET the curl-style event stream", async ({ host }) => {
  const base = host.url + "/spaces/moonspace/streaming-demo/gradio_api/call/typewriter";
  const { event_id } = await (await post(base, { data: ["one two three four", 150] })).json();
  assert(event_id, "event id");
  const events = await readSSE(await fetch(base + "/" + event_id));
  const gen = events.filter((e) => e.event === "generating").map((e) => e.json[0]);
  assert(gen.length >= 3, "several generating events: " + JSON.stringify(gen));
  assertEq(events.at(-1).event, "complete");
  assertEq(events.at(-1).json, ["one two three four"]);
  // the result can still be read after the call finished
  const again = await readSSE(await fetch(base + "/" + event_id));
  assertEq(again.at(-1).json, ["one two three four"]);
});

s.test("queue/join + queue/data stream estimation, progress, diffs and completion", async ({ host }) => {
  const base = host.url + "/spaces/moonspace/streaming-demo/gradio_api";
  const session_hash = "sess" + Date.now();
  const join = await post(base + "/queue/join", { data: ["alpha beta gamma delta", 0], fn_index: 0, session_hash, event_data: null, trigger_id: null });
  assertEq(join.status, 200);
  const { event_id } = await join.json();
  const events = await readSSE(await fetch(base + "/queue/data?session_hash=" + session_hash), {
    until: (ev) => ev.some((e) => e.json && e.json.msg === "close_stream"),
  });
  for (const e of events) assert(/^data: /.test(e.raw) && !e.raw.includes("\nevent:"), "only data lines: " + e.raw);
  const msgs = events.map((e) => e.json.msg);
  assert(msgs.includes("estimation") && msgs.includes("process_starts") && msgs.includes("progress"), msgs.join(","));
  const gen = events.filter((e) => e.json.msg === "process_generating");
  assertEq(gen[0].json.output.data, ["alpha "], "the first generating value is full");
  assertEq(gen[1].json.output.data, [[["append", [], "beta "]]], "later ones are diffs");
  const done = events.find((e) => e.json.msg === "process_completed");
  assertEq(done.json.event_id, event_id);
  assertEq(done.json.success, true);
  assertEq(done.json.output.data, ["alpha beta gamma delta"]);
  assertEq(msgs.at(-1), "close_stream");
});

s.test("an app error completes with Gradio's error payload", async ({ host }) => {
  const base = host.url + "/spaces/moonspace/streaming-demo/gradio_api";
  const session_hash = "err" + Date.now();
  await post(base + "/queue/join", { data: [1], fn_index: 2, session_hash });
  const events = await readSSE(await fetch(base + "/queue/data?session_hash=" + session_hash), {
    until: (ev) => ev.some((e) => e.json && e.json.msg === "close_stream"),
  });
  const done = events.find((e) => e.json.msg === "process_completed");
  assertEq(done.json.success, false);
  assertEq(Object.keys(done.json.output).sort(), ["duration", "error", "title", "visible"]);
  assert(/Liftoff failed/.test(done.json.output.error), done.json.output.error);
  const r = await post(base + "/run/countdown", { data: [1] });
  assertEq(r.status, 500);
  assert(/Liftoff failed/.test((await r.json()).error), "run/ error");
});

s.test("cancel stops a running call and the stream still completes", async ({ host }) => {
  const base = host.url + "/spaces/test/slow/gradio_api";
  const session_hash = "cancel" + Date.now();
  const { event_id } = await (await post(base + "/queue/join", { data: [30], fn_index: 0, session_hash })).json();
  const stream = fetch(base + "/queue/data?session_hash=" + session_hash).then((r) =>
    readSSE(r, { until: (ev) => ev.some((e) => e.json && e.json.msg === "close_stream") }));
  await sleep(300);
  const t0 = Date.now();
  const c = await post(base + "/cancel", { event_id, session_hash, fn_index: 0 });
  assertEq((await c.json()).success, true);
  const events = await stream;
  const done = events.find((e) => e.json.msg === "process_completed");
  assert(done, "completed after cancel");
  assert(Date.now() - t0 < 5000, "stopped quickly");
  // the app still serves
  const r = await post(base + "/run/predict", { data: [0] });
  assertEq((await r.json()).data, ["slept 0 s"]);
});

s.test("a full queue answers 503", async ({ host }) => {
  const base = host.url + "/spaces/test/slow/gradio_api";
  const calls = [];
  for (let i = 0; i < 4; i++) calls.push(post(base + "/queue/join", { data: [1], fn_index: 0, session_hash: "full" + i }));
  const statuses = (await Promise.all(calls)).map((r) => r.status);
  assert(statuses.includes(503), "some 503: " + statuses);
  assert(statuses.includes(200), "some accepted: " + statuses);
  await waitFor(async () => {
    const q = (await (await fetch(host.url + "/api/spaces/test/slow")).json()).queue;
    return q.waiting === 0 && q.running === 0;
  }, 20000, "the queue to drain");
});

s.test("state is kept per session", async ({ host }) => {
  const base = host.url + "/spaces/moonspace/eliza-chat/gradio_api";
  const say = async (session_hash, text, history) => {
    await post(base + "/queue/join", { data: [text, history, null], fn_index: 0, session_hash });
    const ev = await readSSE(await fetch(base + "/queue/data?session_hash=" + session_hash), {
      until: (e) => e.some((x) => x.json && x.json.msg === "close_stream"),
    });
    return ev.find((e) => e.json.msg === "process_completed").json.output.data;
  };
  const a1 = await say("sa", "Hello, my name is Ada", []);
  assertEq(a1[2], null, "state never travels to the client");
  const a2 = await say("sa", "what is my name", a1[1]);
  assert(a2[1].at(-1).content.includes("Ada"), JSON.stringify(a2[1]));
  const b = await say("sb", "what is my name", []);
  assert(b[1].at(-1).content.includes("not told"), "another session knows nothing: " + JSON.stringify(b[1]));
});

s.test("apps added, changed and removed on disk are picked up without a restart", async ({ host, apps }) => {
  const src = (n) => `app.interface{fn=function(x) return x .. "${n}" end, inputs={"text"}, outputs="text"}`;
  writeApp(apps, "live/reload", { title: "Reload" }, { "app.lua": src("-v1") });
  const call = async () => {
    const r = await post(host.url + "/spaces/live/reload/gradio_api/run/predict", { data: ["x"] });
    return r.status === 200 ? (await r.json()).data[0] : null;
  };
  await waitFor(async () => (await call()) === "x-v1", 10000, "the new app");
  writeFileSync(join(apps, "live/reload/app.lua"), src("-v2"));
  await waitFor(async () => (await call()) === "x-v2", 10000, "the changed app");
  rmSync(join(apps, "live"), { recursive: true });
  await waitFor(async () => (await fetch(host.url + "/api/spaces/live/reload")).status === 404, 10000, "removal");
});

s.test("a call in flight finishes on the old version while new calls get the new one", async ({ host, apps }) => {
  const src = (tag) => `app.interface{fn=function(n) local stop = os.time() + n
    while os.time() < stop do end return "${tag}" end, inputs={"number"}, outputs="text"}`;
  writeApp(apps, "live/versions", { title: "Versions", concurrency: 2 }, { "app.lua": src("v1") });
  const url = host.url + "/spaces/live/versions/gradio_api/run/predict";
  await waitFor(async () => (await post(url, { data: [0] })).status === 200, 10000, "v1 running");
  const inflight = post(url, { data: [2] }).then((r) => r.json());
  await sleep(300);
  writeFileSync(join(apps, "live/versions/app.lua"), src("v2"));
  await waitFor(async () => (await (await post(url, { data: [0] })).json()).data?.[0] === "v2", 10000, "v2 serving");
  assertEq((await inflight).data, ["v1"], "the call that started on v1 ends on v1");
  rmSync(join(apps, "live/versions"), { recursive: true });
});

s.test("a client that goes away cancels its synchronous call", async ({ host }) => {
  const ctl = new AbortController();
  const url = host.url + "/spaces/test/slow/gradio_api/run/predict";
  const p = fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ data: [30] }),
    signal: ctl.signal }).catch(() => null);
  await waitFor(async () => (await (await fetch(host.url + "/api/spaces/test/slow")).json()).queue.running === 1, 10000, "the call to run");
  ctl.abort();
  await p;
  // the worker is freed long before the 30 s the call asked for
  await waitFor(async () => (await (await fetch(host.url + "/api/spaces/test/slow")).json()).queue.running === 0, 8000,
    "the abandoned call to stop");
  assertEq((await (await post(url, { data: [0] })).json()).data, ["slept 0 s"]);
});

s.test("a worker crash fails only that call; the app and others keep serving", async ({ host }) => {
  const r = await post(host.url + "/spaces/test/slow/gradio_api/run/predict", { data: [-1] });
  const err = (await r.json()).error;
  assertEq(r.status, 500, err);
  assert(/stopped|killed|time limit|memory|error/i.test(err), err);
  const ok = await post(host.url + "/spaces/moonspace/hello/gradio_api/run/predict", { data: ["A", 1] });
  assertEq((await ok.json()).data, ["Hello, A!"]);
  const again = await waitFor(async () => {
    const x = await post(host.url + "/spaces/test/slow/gradio_api/run/predict", { data: [0] });
    return x.status === 200 && (await x.json()).data[0] === "slept 0 s";
  }, 10000, "the worker restarted");
  assert(again, "restarted");
});

s.test("tokens: private apps need one, likes count one per token", async ({ host }) => {
  const tok = execFileSync(join(BIN, "moonspace"), ["token", "add", "alice", "--data", host.data], { encoding: "utf8" }).trim();
  assert(/^ms_[0-9a-f]{64}$/.test(tok), "token printed once: " + tok);
  const list = await (await fetch(host.url + "/api/spaces")).json();
  assert(!list.some((a) => a.id === "test/private"), "private app missing from anonymous listings");
  const anon = await fetch(host.url + "/spaces/test/private/config");
  assertEq(anon.status, 401);
  const auth = { authorization: "Bearer " + tok };
  const withTok = await fetch(host.url + "/spaces/test/private/config", { headers: auth });
  assertEq(withTok.status, 200);
  const hf = await fetch(host.url + "/spaces/test/private/config", { headers: { "x-hf-authorization": "Bearer " + tok } });
  assertEq(hf.status, 200);
  const listed = await (await fetch(host.url + "/api/spaces", { headers: auth })).json();
  assert(listed.some((a) => a.id === "test/private"), "listed with a token");
  const like = async (method) => (await fetch(host.url + "/api/spaces/moonspace/hello/like", { method, headers: auth })).json();
  assertEq((await like("POST")).likes, 1);
  assertEq((await like("POST")).likes, 1, "one like per token");
  const sorted = await (await fetch(host.url + "/api/spaces?sort=likes")).json();
  assertEq(sorted[0].id, "moonspace/hello");
  assertEq((await like("DELETE")).likes, 0);
  const noTok = await fetch(host.url + "/api/spaces/moonspace/hello/like", { method: "POST" });
  assertEq(noTok.status, 401);
});

s.test("behind a proxy, URLs follow X-Forwarded-* and the root path", async ({ host }) => {
  const cfg = await (await fetch(host.url + "/spaces/moonspace/hello/config", {
    headers: { "x-forwarded-proto": "https", "x-forwarded-host": "demos.example.org" },
  })).json();
  assertEq(cfg.root, "https://demos.example.org/spaces/moonspace/hello");
});

s.test("CORS preflight for browser callers", async ({ host }) => {
  const r = await fetch(host.url + "/spaces/moonspace/hello/gradio_api/queue/join", {
    method: "OPTIONS", headers: { origin: "http://elsewhere.test", "access-control-request-method": "POST" },
  });
  assertEq(r.status, 204);
  assertEq(r.headers.get("access-control-allow-origin"), "*");
  assert(/x-gradio-user/.test(r.headers.get("access-control-allow-headers")), "allows x-gradio-user");
});

s.test("healthz", async ({ host }) => {
  const r = await fetch(host.url + "/healthz");
  assertEq(r.status, 200);
  assertEq((await r.json()).status, "ok");
});

await s.run(async () => {
  const apps = tempDir("ms-apps-");
  copyExampleApps(apps);
  writeApp(apps, "test/slow", { title: "Slow", max_queue: 1, timeout: 5 }, {
    "app.lua": `app.interface{fn=function(n)
      if n < 0 then local t = {} while true do t[#t+1] = ("x"):rep(1000) end end
      local stop = os.time() + n  -- wall clock: os.clock counts CPU time, which a loaded machine stretches
     
      while os.time() < stop do end
      return ("slept %d s"):format(n) end, inputs={"number"}, outputs="text"}`,
  });
  writeApp(apps, "test/private", { title: "Private", private: true }, {
    "app.lua": `app.interface{fn=function(x) return x end, inputs={"text"}, outputs="text"}`,
  });
  writeApp(apps, "test/broken", { title: "Broken", colorFrom: "chartreuse" }, { "app.lua": "" });
  const host = await startHost({ apps: [apps] });
  return { host, apps };
}, async ({ host, apps }) => {
  const r = await host.stop();
  rmSync(apps, { recursive: true, force: true });
  if (r.code !== 0) {
    console.log(`FAIL api/clean shutdown: exit ${r.code} ${r.sig}\n${host.log().slice(-3000)}`);
    process.exitCode = 1;
  } else console.log("PASS api/clean shutdown");
});
