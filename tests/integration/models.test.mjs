// Apps calling models: the host relays model("org/name") calls from app workers to one
// model worker per checkpoint (from the Hugging Face cache), streams pieces back, enforces
// the card's allow-list, cancels with the call, and unloads idle models.
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { availableParallelism } from "node:os";
import { FIXTURES, assert, assertEq, fixtureHubCache, readSSE, sleep, startHost, suite, tempDir, waitFor, writeApp } from "../lib/host.mjs";

const s = suite("models");
const post = (url, body) => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const run = async (host, id, api, data) => {
  const r = await post(`${host.url}/spaces/${id}/gradio_api/run/${api}`, { data });
  return { status: r.status, body: await r.json() };
};

s.test("generate streams pieces from the model into the app", async ({ host }) => {
  const base = host.url + "/spaces/test/story/gradio_api/call/predict";
  const { event_id } = await (await post(base, { data: ["Once upon a time", 40] })).json();
  const events = await readSSE(await fetch(base + "/" + event_id));
  const gen = events.filter((e) => e.event === "generating").map((e) => e.json[0]);
  const done = events.at(-1);
  assertEq(done.event, "complete", JSON.stringify(events.at(-1)));
  assert(done.json[0].startsWith("Once upon a time, there was a little girl named Lily."), done.json[0]);
  assert(gen.length >= 1, "pieces streamed");
});

s.test("greedy generation matches llama2.c through the whole stack", async ({ host }) => {
  const r = await run(host, "test/story", "predict", ["Once upon a time", 60]);
  assertEq(r.status, 200, JSON.stringify(r.body));
  const expected = readFileSync(FIXTURES + "/models/stories260K/expected_t0_n64_prompt_once_upon_a_time.txt", "utf8").trimEnd();
  assertEq(r.body.data[0], expected);
});

s.test("raw logits match transformers'", async ({ host }) => {
  const ref = JSON.parse(readFileSync(FIXTURES + "/models/stories260K/reference_logits.json", "utf8"));
  const r = await run(host, "test/story", "logits", [ref.input_ids]);
  assertEq(r.status, 200, JSON.stringify(r.body));
  const got = r.body.data[0], want = ref.logits_all_positions.at(-1);
  assertEq(got.length, want.length);
  const worst = Math.max(...got.map((x, i) => Math.abs(x - want[i])));
  assert(worst < 1e-4, "max difference " + worst);
});

// Llama's byte token <0x00> decodes to U+0000, which a random model may well sample: the
// model worker, the host and the app worker must carry it (a frame holding "\u0000" once
// failed to parse, and the host killed the model worker for a protocol violation).
s.test("text holding U+0000 travels from the model to the client", async ({ host }) => {
  const r = await run(host, "test/story", "detok", [[3, 72, 3]]); // <0x00> <0x45>... as ids
  assertEq(r.status, 200, JSON.stringify(r.body));
  assert(r.body.data[0].includes("\u0000"), JSON.stringify(r.body.data[0]));
  assertEq((await run(host, "test/story", "predict", ["Once upon a time", 3])).status, 200, "the model worker still serves");
});

s.test("classify, embed and tokenize", async ({ host }) => {
  const c = await run(host, "test/nlp", "classify", ["I love this!"]);
  assertEq(c.status, 200, JSON.stringify(c.body));
  const label = c.body.data[0];
  assert(["NEGATIVE", "POSITIVE"].includes(label.label), JSON.stringify(label));
  assertEq(label.confidences.length, 2);
  const sum = label.confidences.reduce((a, x) => a + x.confidence, 0);
  assert(Math.abs(sum - 1) < 1e-4, "probabilities sum to 1: " + sum);
  const e = await run(host, "test/nlp", "embed", ["hello world"]);
  const v = e.body.data[0];
  assertEq(v.length, 16, "vector of the hidden size");
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  assert(Math.abs(norm - 1) < 1e-4, "L2-normalised: " + norm);
  const t = await run(host, "test/nlp", "tokenize", ["hello world"]);
  assertEq(t.body.data[0], [101, 7592, 2088, 102]);
});

s.test("m:tokenize with options, m:detokenize and m:generate's stop option", async ({ host }) => {
  const t = await run(host, "test/nlp", "tokenize_plain", ["hello world"]);
  assertEq(t.status, 200, JSON.stringify(t.body));
  assertEq(t.body.data[0], [7592, 2088]);
  const d = await run(host, "test/nlp", "detokenize", [[101, 7592, 2088, 102]]);
  assertEq(d.status, 200, JSON.stringify(d.body));
  assertEq(d.body.data[0], "hello world");
  const k = await run(host, "test/nlp", "detokenize_special", [[101, 7592, 2088, 102]]);
  assertEq(k.body.data[0], "[CLS] hello world [SEP]", JSON.stringify(k.body));
  const bad = await run(host, "test/nlp", "detokenize", ["not ids"]);
  assertEq(bad.status, 500);
  assert(/detokenize/.test(bad.body.error), bad.body.error);
  // expected_t0_n64 goes on "... a little girl named Lily."
  const s = await run(host, "test/story", "stop", ["Once upon a time", 60]);
  assertEq(s.status, 200, JSON.stringify(s.body));
  assertEq(s.body.data[0], "Once upon a time, there was a little girl named ");
});

s.test("two apps using one model share its worker", async ({ host }) => {
  const readies = () => (host.log().match(/nickypro\/tinyllama-15M ready/g) || []).length;
  const base = host.url + "/spaces/test/story-loop/gradio_api";
  const session_hash = "s" + Date.now();
  const { event_id } = await (await post(base + "/queue/join", { data: [2000], fn_index: 0, session_hash })).json();
  const stream = fetch(base + "/queue/data?session_hash=" + session_hash).then((r) =>
    readSSE(r, { until: (ev) => ev.some((e) => e.json && e.json.msg === "close_stream"), timeoutMs: 30000 }));
  await waitFor(() => /tinyllama-15M ready/.test(host.log()) && readies(), 10000, "the model worker");
  await sleep(300);
  const before = readies();
  const r = await run(host, "test/story", "predict", ["Once upon a time", 20]);
  assertEq(r.status, 200, JSON.stringify(r.body));
  assert(r.body.data[0].startsWith("Once upon a time, there was a little girl"), r.body.data[0]);
  assertEq(readies(), before, "the second app started no model worker of its own");
  await post(base + "/cancel", { event_id, session_hash, fn_index: 0 });
  await stream;
});

s.test("an undeclared model is refused with a message that says what to do", async ({ host }) => {
  const r = await run(host, "test/sneaky", "predict", ["x"]);
  assertEq(r.status, 500);
  assert(/not declared|models/.test(r.body.error), r.body.error);
});

s.test("an app whose model cannot be had is a BUILD_ERROR that says why", async ({ host }) => {
  const a = await waitFor(async () => {
    const x = await (await fetch(host.url + "/api/spaces/test/missing")).json();
    return x.runtime.stage !== "BUILDING" ? x : null;
  }, 20000, "the build to end");
  assertEq(a.runtime.stage, "BUILD_ERROR");
  assert(/nobody\/nothing/.test(a.runtime.errorMessage), a.runtime.errorMessage);
  const r = await run(host, "test/missing", "predict", ["x"]);
  assertEq(r.status, 503);
  // the apps that have their models keep working
  assertEq((await run(host, "test/story", "predict", ["Once upon a time", 3])).status, 200);
});

s.test("cancelling a call stops its generation", async ({ host }) => {
  const base = host.url + "/spaces/test/story/gradio_api";
  const session_hash = "c" + Date.now();
  const { event_id } = await (await post(base + "/queue/join", { data: ["Once", 100000], fn_index: 0, session_hash })).json();
  const stream = fetch(base + "/queue/data?session_hash=" + session_hash).then((r) =>
    readSSE(r, { until: (ev) => ev.some((e) => e.json && e.json.msg === "close_stream"), timeoutMs: 20000 }));
  await sleep(400);
  await post(base + "/cancel", { event_id, session_hash, fn_index: 0 });
  const events = await stream;
  assert(events.some((e) => e.json.msg === "process_completed"), "completed");
  const r = await run(host, "test/story", "predict", ["Once upon a time", 5]);
  assertEq(r.status, 200, "the model still serves");
});

s.test("a killed model worker fails the call in flight; the next call starts a new one", async ({ host }) => {
  const base = host.url + "/spaces/test/story-loop/gradio_api";
  const session_hash = "k" + Date.now();
  await post(base + "/queue/join", { data: [2000], fn_index: 0, session_hash });
  const stream = fetch(base + "/queue/data?session_hash=" + session_hash).then((r) =>
    readSSE(r, { until: (ev) => ev.some((e) => e.json && e.json.msg === "close_stream"), timeoutMs: 20000 }));
  // the model worker is a child of the host
  const pid = await waitFor(() => {
    const out = spawnSync("pgrep", ["-P", String(host.child.pid), "-f", "moonspace-modelworker"], { encoding: "utf8" }).stdout.trim();
    return out ? Number(out.split("\n")[0]) : null;
  }, 10000, "the model worker");
  await sleep(300);
  process.kill(pid, "SIGKILL");
  const events = await stream;
  const done = events.find((e) => e.json.msg === "process_completed");
  assertEq(done.json.success, false);
  assert(/model worker/.test(done.json.output.error), done.json.output.error);
  assertEq((await fetch(host.url + "/healthz")).status, 200);
  const r = await run(host, "test/story", "predict", ["Once upon a time", 5]);
  assertEq(r.status, 200, "a new model worker serves");
});

s.test("a broken checkpoint is a clear error for the call, not a crash", async ({ host }) => {
  const r = await run(host, "test/broken", "predict", ["Once upon a time", 3]);
  assertEq(r.status, 500);
  assert(/could not be loaded/.test(r.body.error) && /model\.safetensors/.test(r.body.error), r.body.error);
  assertEq((await fetch(host.url + "/healthz")).status, 200);
  assertEq((await run(host, "test/story", "predict", ["Once upon a time", 3])).status, 200, "other models still serve");
});

s.test("an idle model is unloaded and starts again on the next call", async ({ host }) => {
  await run(host, "test/story", "predict", ["Once", 3]);
  await waitFor(() => /unloaded after/.test(host.log()), 10000, "the unload");
  const r = await run(host, "test/story", "predict", ["Once upon a time", 5]);
  assertEq(r.status, 200);
  assert(r.body.data[0].startsWith("Once upon a time,"), r.body.data[0]);
});

// "while the host serves, the default leaves a core for the loop": cores - 1 of the cores the
// host may run on (its affinity mask), at least 1; --threads overrides it
s.test("model workers run on every core but one by default, or on --threads", async ({ host, apps, cache }) => {
  const readyThreads = (h) => {
    const m = h.log().match(/nickypro\/tinyllama-15M ready \(llama, (\d+) threads?\)/);
    return m ? Number(m[1]) : null;
  };
  assertEq((await run(host, "test/story", "predict", ["Once", 3])).status, 200);
  assertEq(await waitFor(() => readyThreads(host), 10000, "the ready line"), Math.max(1, availableParallelism() - 1));
  const env = { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" };
  for (const [opts, want] of [[{ wrap: ["taskset", "-c", "0"] }, 1], [{ args: ["--threads", "3"] }, 3]]) {
    const h = await startHost({ apps: [apps], env, ...opts });
    try {
      assertEq((await run(h, "test/story", "predict", ["Once", 3])).status, 200);
      assertEq(await waitFor(() => readyThreads(h), 10000, "the ready line"), want, JSON.stringify(opts));
      // the pool's threads exist: want - 1 workers, the main thread and the frame reader
      const pid = spawnSync("pgrep", ["-P", String(h.child.pid), "-f", "moonspace-modelworker"], { encoding: "utf8" }).stdout.trim();
      const status = readFileSync(`/proc/${Number(pid.split("\n")[0])}/status`, "utf8");
      assert(Number(status.match(/^Threads:\s+(\d+)/m)[1]) >= want + 1, status.match(/^Threads:.*$/m)[0]);
    } finally {
      await h.stop();
    }
  }
});

await s.run(async () => {
  const cache = fixtureHubCache({
    "nickypro/tinyllama-15M": "models/stories260K",
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english": "models/tiny-distilbert-cls",
    // a header that promises more bytes than the file holds
    "test/broken": { dirs: ["models/stories260K"], files: { "model.safetensors": "\u0040\u0000\u0000\u0000\u0000\u0000\u0000\u0000{\"x\":{\"dtype\":\"F32\",\"shape\":[1000],\"data_offsets\":[0,4000]}}" } },
  });
  const apps = tempDir("ms-apps-");
  writeApp(apps, "test/story", { models: ["nickypro/tinyllama-15M"] }, {
    "app.lua": `local m = model("nickypro/tinyllama-15M")
app.interface{fn=function(prompt, n)
  local out = prompt
  for piece in m:generate(prompt, {max_new_tokens=n, temperature=0}) do out = out .. piece; coroutine.yield(out) end
  return out end, inputs={"text", "number"}, outputs="text"}
app.interface{api_name="logits", fn=function(ids) return m:logits(ids) end, inputs={"json"}, outputs="json"}
app.interface{api_name="detok", fn=function(ids) return m:detokenize(ids) end, inputs={"json"}, outputs="text"}
app.interface{api_name="stop", fn=function(prompt, n)
  local out = prompt
  for piece in m:generate(prompt, {max_new_tokens=n, temperature=0, stop={"Lily"}}) do out = out .. piece end
  return out end, inputs={"text", "number"}, outputs="text"}`,
  });
  // generates again and again (one generation of the tiny model is over in milliseconds)
  writeApp(apps, "test/story-loop", { models: ["nickypro/tinyllama-15M"], timeout: 120 }, {
    "app.lua": `local m = model("nickypro/tinyllama-15M")
app.interface{fn=function(n)
  local last = ""
  for i = 1, n do
    for piece in m:generate("Once", {max_new_tokens=400, temperature=0}) do last = piece end
    coroutine.yield(tostring(i))
  end
  return last end, inputs={"number"}, outputs="text"}`,
  });
  writeApp(apps, "test/broken", { models: ["test/broken"] }, {
    "app.lua": `local m = model("test/broken")
app.interface{fn=function(p, n) local out = p for piece in m:generate(p, {max_new_tokens=n}) do out = out .. piece end return out end,
  inputs={"text", "number"}, outputs="text"}`,
  });
  writeApp(apps, "test/nlp", { models: ["distilbert/distilbert-base-uncased-finetuned-sst-2-english"] }, {
    "app.lua": `local m = model("distilbert/distilbert-base-uncased-finetuned-sst-2-english")
app.interface{api_name="classify", fn=function(t)
  local r = m:classify(t)
  local conf = {}
  for i, x in ipairs(r) do conf[i] = {label = x.label, confidence = x.score} end
  return {label = r[1].label, confidences = conf} end, inputs={"text"}, outputs="label"}
app.interface{api_name="embed", fn=function(t) return m:embed(t) end, inputs={"text"}, outputs="json"}
app.interface{api_name="tokenize", fn=function(t) return m:tokenize(t) end, inputs={"text"}, outputs="json"}
app.interface{api_name="tokenize_plain", fn=function(t) return m:tokenize(t, {special=false}) end, inputs={"text"}, outputs="json"}
app.interface{api_name="detokenize", fn=function(ids) return m:detokenize(ids) end, inputs={"json"}, outputs="text"}
app.interface{api_name="detokenize_special", fn=function(ids) return m:detokenize(ids, {special=true}) end, inputs={"json"}, outputs="text"}`,
  });
  writeApp(apps, "test/sneaky", { models: [] }, {
    "app.lua": `app.interface{fn=function(x) return model("nickypro/tinyllama-15M"):generate(x)() end, inputs={"text"}, outputs="text"}`,
  });
  writeApp(apps, "test/missing", { models: ["nobody/nothing"] }, {
    "app.lua": `app.interface{fn=function(x) return model("nobody/nothing"):classify(x) end, inputs={"text"}, outputs="json"}`,
  });
  const host = await startHost({ apps: [apps], args: ["--model-idle", "2"], env: { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" } });
  return { host, apps, cache };
}, async ({ host, apps, cache }) => {
  await host.stop();
  rmSync(apps, { recursive: true, force: true });
  rmSync(cache, { recursive: true, force: true });
});
