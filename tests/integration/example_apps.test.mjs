// The example apps that call models, end to end, with no internet: a second moonspace is
// the Hub (a mirror serving fixture checkpoints of the same architectures under the real
// repo ids the cards name); the host under test starts with an empty cache, downloads every
// app's models through its Hub client (BUILDING, then RUNNING), and each app runs through
// the host, its worker, the model workers and back.
import { mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { FIXTURES, assert, assertEq, copyExampleApps, fixtureMirror, readSSE, startHost, suite, tempDir, waitFor, writeApp } from "../lib/host.mjs";

const s = suite("example-apps");
const post = (url, body) => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const run = async (host, id, api, data) => {
  const r = await post(`${host.url}/spaces/${id}/gradio_api/run/${api}`, { data });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`${id} /${api}: ${r.status} ${JSON.stringify(body)}`);
  return body.data;
};

s.test("story writer: greedy continuation equals llama2.c's", async ({ host }) => {
  const [story] = await run(host, "moonspace/story-writer", "predict", ["Once upon a time", 0, 1, 60]);
  const expected = readFileSync(join(FIXTURES, "models/stories260K/expected_t0_n64_prompt_once_upon_a_time.txt"), "utf8").trimEnd();
  assertEq(story, expected);
});

s.test("story writer streams through the queue", async ({ host }) => {
  const base = host.url + "/spaces/moonspace/story-writer/gradio_api";
  const session_hash = "story" + Date.now();
  await post(base + "/queue/join", { data: ["Once upon a time", 0.8, 0.9, 40], fn_index: 0, session_hash });
  const events = await readSSE(await fetch(base + "/queue/data?session_hash=" + session_hash), {
    until: (ev) => ev.some((e) => e.json && e.json.msg === "close_stream"),
  });
  const gens = events.filter((e) => e.json.msg === "process_generating");
  assert(gens.length >= 10, "streamed token by token: " + gens.length);
  assert(events.some((e) => e.json.msg === "progress"), "progress");
  const done = events.find((e) => e.json.msg === "process_completed");
  assertEq(done.json.success, true, JSON.stringify(done.json));
  assert(done.json.output.data[0].startsWith("Once upon a time"), done.json.output.data[0]);
});

s.test("sentiment: labels and probabilities as transformers computes them", async ({ host }) => {
  const ref = JSON.parse(readFileSync(join(FIXTURES, "models/tiny-distilbert-cls/reference.json"), "utf8"));
  for (const c of ref.sentences) {
    const [label] = await run(host, "moonspace/sentiment", "predict", [c.text]);
    assertEq(label.label, c.predicted_label, c.text);
    const p = Object.fromEntries(label.confidences.map((x) => [x.label, x.confidence]));
    assert(Math.abs(p.NEGATIVE - c.probabilities[0]) < 1e-4 && Math.abs(p.POSITIVE - c.probabilities[1]) < 1e-4,
      `${c.text}: ${JSON.stringify(p)} vs ${c.probabilities}`);
  }
});

s.test("sentence similarity: candidates ranked by cosine similarity", async ({ host }) => {
  const [label] = await run(host, "moonspace/sentence-similarity", "predict",
    ["A man is playing a guitar.", "A man is playing a guitar.\nThe weather is cold.\nSomeone reads."]);
  assertEq(label.confidences.length, 3);
  assertEq(label.label, "A man is playing a guitar.", "the same sentence is the closest");
  assert(Math.abs(label.confidences[0].confidence - 1) < 1e-4, "cosine of a sentence with itself is 1");
  for (let i = 1; i < 3; i++) assert(label.confidences[i].confidence <= label.confidences[i - 1].confidence, "sorted");
});

s.test("tokenizer playground: GPT-2, BERT and Llama split the text", async ({ host }) => {
  const [spans, info] = await run(host, "moonspace/tokenizer-playground", "predict", ["Hello world", "GPT-2"]);
  assertEq(info.ids, [15496, 995]);
  assertEq(spans.map((x) => x.token), ["Hello", " world"]);
  const [, bert] = await run(host, "moonspace/tokenizer-playground", "predict", ["Hello world", "BERT"]);
  assertEq(bert.ids, [101, 7592, 2088, 102]);
  const [, llama] = await run(host, "moonspace/tokenizer-playground", "predict", ["Hello world", "Llama"]);
  assertEq(llama.ids, [1, 15043, 3186]);
});

s.test("chat: the reply streams into the chatbot, formatted by the checkpoint's template", async ({ host }) => {
  const [box, history] = await run(host, "moonspace/chat", "chat", ["Hi there", [], "Be brief.", 0]);
  assertEq(box, "");
  assertEq(history.length, 2);
  assertEq(history[0], { role: "user", content: "Hi there" });
  assertEq(history[1].role, "assistant");
  assert(history[1].content.length > 0, "a reply");
});

s.test("every example of every app runs (inputs an example leaves out take their defaults)", async ({ host }) => {
  const list = await (await fetch(host.url + "/api/spaces")).json();
  let n = 0;
  for (const { id } of list) {
    const a = await (await fetch(`${host.url}/api/spaces/${id}`)).json();
    assert(a.readme_html && a.readme_html.length > 100, id + ": a README page");
    for (const ep of a.interface.endpoints) {
      if (/streaming-demo/.test(id) && ep.api_name !== "predict") continue; // the long-running demos of cancel
      for (const ex of ep.examples || []) {
        const data = ep.inputs.map((inp, i) => (i < ex.length ? ex[i] : inp.props && inp.props.value !== undefined ? inp.props.value : null));
        const r = await post(`${host.url}/spaces/${id}/gradio_api/run/${ep.api_name}`, { data });
        const body = await r.json();
        assertEq(r.status, 200, `${id} /${ep.api_name} ${JSON.stringify(ex)}: ${JSON.stringify(body).slice(0, 300)}`);
        n++;
      }
    }
    if (a.cardData.models && a.cardData.models.length) assert((a.interface.endpoints[0].examples || []).length > 0, id + " has examples");
  }
  assert(n >= 15, "examples run: " + n);
}, { timeoutMs: 180000 });

s.test("every app was BUILDING while its models downloaded, then RUNNING; the cache holds them", async ({ host, cache }) => {
  const list = await (await fetch(host.url + "/api/spaces")).json();
  for (const a of list.filter((x) => x.cardData.models && x.cardData.models.length))
    assertEq(a.runtime.stage, "RUNNING", a.id + " " + a.runtime.errorMessage);
  const snap = join(cache, "models--nickypro--tinyllama-15M", "snapshots");
  const commits = readdirSync(snap);
  assertEq(commits.length, 1);
  const files = readdirSync(join(snap, commits[0])).sort();
  assertEq(files, ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"], "only what a model app needs");
  const info = await (await fetch(host.url + "/api/spaces/moonspace/story-writer")).json();
  assert(info.logs.some((l) => /nickypro\/tinyllama-15M fetched/.test(l)), JSON.stringify(info.logs));
});

s.test("a model the Hub does not have is a BUILD_ERROR; retry after it appears", async ({ host, mirror, apps }) => {
  writeApp(apps, "test/later", { title: "Later", models: ["test/later-model"] }, {
    "app.lua": `local m = model("test/later-model")
app.interface{fn=function(t) return m:tokenize(t) end, inputs={"text"}, outputs="json"}`,
  });
  const failed = await waitFor(async () => {
    const x = await fetch(host.url + "/api/spaces/test/later");
    if (x.status !== 200) return null;
    const j = await x.json();
    return j.runtime.stage === "BUILD_ERROR" ? j : null;
  }, 30000, "BUILD_ERROR");
  assert(/test\/later-model/.test(failed.runtime.errorMessage), failed.runtime.errorMessage);
  // the status stream says so too
  const ev = await readSSE(await fetch(host.url + "/api/spaces/test/later/events"), { until: (e) => e.length >= 1 });
  assertEq(ev[0].json.stage, "BUILD_ERROR");
  mkdirSync(join(mirror, "test"), { recursive: true });
  symlinkSync(join(FIXTURES, "tokenizers/gpt2"), join(mirror, "test/later-model"));
  const r = await fetch(host.url + "/api/spaces/test/later/restart", { method: "POST" });
  assertEq(r.status, 200);
  await waitFor(async () => (await (await fetch(host.url + "/api/spaces/test/later")).json()).runtime.stage === "RUNNING", 30000, "RUNNING");
  const [ids] = await run(host, "test/later", "predict", ["Hello world"]);
  assertEq(ids, [15496, 995]);
});

await s.run(async () => {
  const chatml = JSON.parse(readFileSync(join(FIXTURES, "chat-templates/qwen2-chatml.json"), "utf8"));
  const mirror = fixtureMirror({
    "nickypro/tinyllama-15M": "models/stories260K",
    "HuggingFaceTB/SmolLM2-135M-Instruct": {
      dirs: ["models/tiny-llama-gqa"],
      files: { "tokenizer_config.json": JSON.stringify({ chat_template: chatml.template, bos_token: "<s>", eos_token: "</s>" }) },
    },
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english": "models/tiny-distilbert-cls",
    "sentence-transformers/all-MiniLM-L6-v2": { dirs: ["models/tiny-random-bert", "tokenizers/bert-base-uncased"] },
    "openai-community/gpt2": "tokenizers/gpt2",
    "google-bert/bert-base-uncased": "tokenizers/bert-base-uncased",
    "hf-internal-testing/llama-tokenizer": "tokenizers/llama2",
  });
  const empty = tempDir("ms-noapps-");
  const hub = await startHost({ apps: [empty], args: ["--mirror", mirror], env: { HF_HUB_CACHE: tempDir("ms-hubcache-") } });
  const apps = tempDir("ms-apps-");
  copyExampleApps(apps);
  const cache = tempDir("ms-cache-");
  const host = await startHost({ apps: [apps], env: { HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: "", HF_TOKEN: "" },
    timeoutMs: 60000 });
  return { host, hub, apps, cache, mirror, empty };
}, async ({ host, hub, apps, cache, mirror, empty }) => {
  await host.stop();
  await hub.stop();
  for (const d of [apps, cache, mirror, empty]) rmSync(d, { recursive: true, force: true });
});
