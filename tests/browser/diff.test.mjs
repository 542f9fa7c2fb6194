// tests/browser/diff.test.mjs: web/diff.js applies Gradio's streaming diffs the way
// @gradio/client does (utils/stream.ts): the edits a host sends for text tokens, chatbot
// messages and JSON values rebuild the full value. Plain Node, no browser.
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { isDeepStrictEqual } from "node:util";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { applyDiff } = await import(pathToFileURL(path.join(ROOT, "web/diff.js")).href);

let failed = 0;
function check(name, got, want) {
  if (isDeepStrictEqual(got, want)) console.log(`PASS ${name}`);
  else { failed++; console.log(`FAIL ${name}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`); }
}
function throws(name, fn) {
  try { fn(); failed++; console.log(`FAIL ${name}: no error`); } catch (e) { console.log(`PASS ${name}`); }
}

// Text streaming: append to the root, several tokens in one message.
let v = "Hello";
for (const d of [[["append", [], " from"]], [["append", [], " a"], ["append", [], " C server"]]]) v = applyDiff(v, d);
check("diff_text_append", v, "Hello from a C server");
check("diff_replace_root", applyDiff("old", [["replace", [], { a: 1 }]]), { a: 1 });

// Chatbot (messages): a new message is added, then its content grows token by token.
let chat = [{ role: "user", content: "hi" }];
chat = applyDiff(chat, [["add", [1], { role: "assistant", content: "" }]]);
for (const tok of ["Hel", "lo", "!"]) chat = applyDiff(chat, [["append", [1, "content"], tok]]);
check("diff_chatbot_stream", chat, [{ role: "user", content: "hi" }, { role: "assistant", content: "Hello!" }]);

// Nested JSON: replace a key, add a key, delete from a list and from an object.
let j = { scores: [1, 2, 3], meta: { a: 1, b: 2 } };
j = applyDiff(j, [["replace", ["meta", "a"], 10], ["add", ["meta", "c"], 3], ["delete", ["scores", 0]], ["delete", ["meta", "b"]]]);
check("diff_json_edits", j, { scores: [2, 3], meta: { a: 10, c: 3 } });
check("diff_add_middle_of_list", applyDiff([1, 3], [["add", [1], 2]]), [1, 2, 3]);
check("diff_append_to_list_at_root", applyDiff([1], [["append", [], [2, 3]]]), [1, 2, 3]);
check("diff_empty_edit_list_keeps_value", applyDiff("same", []), "same");

// Full values instead of diffs are taken as they are.
check("diff_full_value_passthrough", applyDiff([{ role: "user", content: "a" }], [{ role: "user", content: "b" }]), [{ role: "user", content: "b" }]);
check("diff_full_string_passthrough", applyDiff("Hel", "Hello"), "Hello");

// Errors a broken host could cause are reported, not silently ignored.
throws("diff_bad_path_throws", () => applyDiff({ a: 1 }, [["replace", ["x", "y"], 1]]));
throws("diff_append_to_object_root_throws", () => applyDiff({ a: 1 }, [["add", [], 1]]));

process.exit(failed ? 1 : 0);
