// diff.js: applies Gradio's streaming diffs (sse_v2 and later) to one output's value.
// A diff is a list of [action, path, value] edits; actions are replace, append, add and
// delete; path is a list of keys and indices, [] meaning the whole value. This follows
// @gradio/client's utils/stream.ts, so a host that streams diffs renders the same here.

const ACTIONS = new Set(["replace", "append", "add", "delete"]);

/** True when x has the shape of an edit list; anything else is a full value. */
export function isEditList(x) {
  return Array.isArray(x) && x.every((e) => Array.isArray(e) && ACTIONS.has(e[0]) && Array.isArray(e[1]));
}

export function applyDiff(value, edits) {
  // A host may also send full values in every message (both clients accept that).
  if (!isEditList(edits)) return edits;
  for (const e of edits) {
    if (!Array.isArray(e) || e.length < 2) continue;
    value = applyEdit(value, e[1] || [], e[0], e[2]);
  }
  return value;
}

function applyEdit(target, path, action, value) {
  if (!path.length) {
    if (action === "replace") return value;
    if (action === "append") {
      if (Array.isArray(target)) return target.concat(value);
      return (target == null ? "" : target) + value;
    }
    throw new Error(`unsupported diff action at the root: ${action}`);
  }
  let cur = target;
  for (let i = 0; i < path.length - 1; i++) {
    if (cur == null) throw new Error(`diff path ${JSON.stringify(path)} does not exist`);
    cur = cur[path[i]];
  }
  if (cur == null || typeof cur !== "object") throw new Error(`diff path ${JSON.stringify(path)} does not exist`);
  const key = path[path.length - 1];
  switch (action) {
  case "replace": cur[key] = value; break;
  case "append": cur[key] = Array.isArray(cur[key]) ? cur[key].concat(value) : (cur[key] == null ? "" : cur[key]) + value; break;
  case "add":
    if (Array.isArray(cur)) cur.splice(Number(key), 0, value);
    else cur[key] = value;
    break;
  case "delete":
    if (Array.isArray(cur)) cur.splice(Number(key), 1);
    else delete cur[key];
    break;
  default: throw new Error(`unsupported diff action: ${action}`);
  }
  return target;
}
