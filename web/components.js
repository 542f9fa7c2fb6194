// components.js: Gradio-style components for the app page, built from the specs the host
// returns ({type, props}; props are Gradio's constructor arguments, `value` the default).
// Inputs expose get/set/reset/defaultValue; outputs expose set(value, partial). Values use
// Gradio's wire formats (label {label, confidences}, highlightedtext [{token,
// class_or_confidence}], chatbot [{role, content}]). App output is untrusted: it is only
// ever put in the page as text, or through the escaping Markdown renderer.
import { el, renderMarkdown } from "./common.js";

let seq = 0;
const uid = (t) => `c${++seq}-${t}`;

const TYPE_ALIASES = { text: "textbox", textarea: "textbox", highlight: "highlightedtext" };
const norm = (t) => TYPE_ALIASES[String(t || "").toLowerCase()] || String(t || "json").toLowerCase();

/** choices may be strings or [label, value] pairs, as in Gradio. */
function choicesOf(props) {
  return (props.choices || []).map((c) => (Array.isArray(c) ? { label: String(c[0]), value: c[1] } : { label: String(c), value: c }));
}

function field(type, label, props, control, extra) {
  const id = control.id || (control.id = uid(type));
  return el(`div.field.field-${type}`, { dataset: { type } },
    el("label.field-label", { for: id, class: props.show_label === false ? "field-label sr-only" : "field-label" }, label),
    props.info ? el("div.field-info.small.muted", props.info) : null,
    control, extra);
}

export function inputComponent(spec, param) {
  const type = norm(spec && spec.type);
  const props = (spec && spec.props) || {};
  const label = props.label || param || type;
  const make = INPUTS[type] || INPUTS.json;
  const c = make(props, label, type);
  c.type = type;
  c.label = label;
  c.props = props;
  c.defaultValue ||= () => (props.value === undefined ? null : props.value);
  c.reset ||= () => c.set(c.defaultValue());
  c.link ||= () => {};
  c.reset();
  return c;
}

const INPUTS = {
  textbox(props, label) {
    const lines = Math.max(1, Number(props.lines) || 1);
    const multi = lines > 1;
    const ctl = multi
      ? el("textarea.input", { rows: Math.min(lines, 20), placeholder: props.placeholder || "" })
      : el("input.input", { type: props.type === "password" ? "password" : props.type === "email" ? "email" : "text", placeholder: props.placeholder || "" });
    if (props.max_length) ctl.maxLength = props.max_length;
    if (!multi) ctl.addEventListener("keydown", (e) => {
      // Enter in a one-line box submits, as in Gradio.
      if (e.key === "Enter" && !e.isComposing) { e.preventDefault(); ctl.form?.requestSubmit(); }
    });
    if (multi) ctl.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); ctl.form?.requestSubmit(); }
    });
    return {
      node: field("textbox", label, props, ctl),
      get: () => ctl.value,
      set: (v) => { ctl.value = v == null ? "" : typeof v === "string" ? v : JSON.stringify(v); },
      defaultValue: () => (props.value == null ? "" : String(props.value)),
    };
  },

  number(props, label) {
    const ctl = el("input.input", { type: "number", inputmode: "decimal", step: props.step ?? (props.precision === 0 ? 1 : "any") });
    if (props.minimum != null) ctl.min = props.minimum;
    if (props.maximum != null) ctl.max = props.maximum;
    return {
      node: field("number", label, props, ctl),
      get: () => {
        if (ctl.value.trim() === "") return null;
        const n = Number(ctl.value);
        if (!Number.isFinite(n)) throw new Error(`${label}: not a number`);
        return n;
      },
      set: (v) => { ctl.value = v == null || v === "" ? "" : String(v); },
      defaultValue: () => (props.value == null ? null : Number(props.value)),
    };
  },

  slider(props, label) {
    const min = Number(props.minimum ?? 0), max = Number(props.maximum ?? 100);
    const step = props.step ?? 1;
    const ctl = el("input.range", { type: "range", min, max, step });
    const num = el("input.input.range-num", { type: "number", min, max, step, "aria-label": `${label} value` });
    const paint = () => {
      const f = max > min ? (Number(ctl.value) - min) / (max - min) : 0;
      ctl.style.setProperty("--fill", `${f * 100}%`);
    };
    ctl.addEventListener("input", () => { num.value = ctl.value; paint(); });
    num.addEventListener("input", () => { if (num.value !== "") { ctl.value = num.value; paint(); } });
    const node = field("slider", label, props, ctl);
    node.querySelector(".field-label").after(num);
    node.classList.add("has-aside");
    return {
      node,
      get: () => Number(num.value === "" ? ctl.value : num.value),
      set: (v) => { const x = v == null ? min : Number(v); ctl.value = x; num.value = x; paint(); },
      defaultValue: () => (props.value == null ? min : Number(props.value)),
    };
  },

  checkbox(props, label) {
    const ctl = el("input", { type: "checkbox", id: uid("checkbox") });
    const node = el("div.field.field-checkbox", { dataset: { type: "checkbox" } },
      props.info ? el("div.field-info.small.muted", props.info) : null,
      el("label.check", ctl, el("span", label)));
    return {
      node,
      get: () => ctl.checked,
      set: (v) => { ctl.checked = !!v; },
      defaultValue: () => !!props.value,
    };
  },

  dropdown(props, label) {
    const choices = choicesOf(props);
    const multi = !!props.multiselect;
    if (multi) {
      const boxes = choices.map((c) => el("input", { type: "checkbox", value: String(c.label) }));
      const ctl = el("div.chips-select", { role: "group", "aria-label": label, id: uid("multi") },
        choices.map((c, i) => el("label.chip.toggle-chip", boxes[i], el("span", c.label))));
      return {
        node: field("dropdown", label, props, ctl),
        get: () => choices.filter((_, i) => boxes[i].checked).map((c) => c.value),
        set: (v) => {
          const want = (Array.isArray(v) ? v : v == null ? [] : [v]).map((x) => JSON.stringify(x));
          choices.forEach((c, i) => { boxes[i].checked = want.includes(JSON.stringify(c.value)) || want.includes(JSON.stringify(c.label)); });
        },
        defaultValue: () => (props.value == null ? [] : Array.isArray(props.value) ? props.value : [props.value]),
      };
    }
    const ctl = el("select.input", choices.map((c, i) => el("option", { value: String(i) }, c.label)));
    if (props.value == null && choices.length) ctl.prepend(el("option", { value: "" }, "—"));
    return {
      node: field("dropdown", label, props, ctl),
      get: () => (ctl.value === "" ? null : choices[Number(ctl.value)]?.value ?? null),
      set: (v) => {
        const i = choices.findIndex((c) => JSON.stringify(c.value) === JSON.stringify(v) || c.label === String(v));
        ctl.value = i >= 0 ? String(i) : (ctl.querySelector('option[value=""]') ? "" : "0");
      },
    };
  },

  radio(props, label) {
    const choices = choicesOf(props);
    const name = uid("radio");
    const radios = choices.map(() => el("input", { type: "radio", name }));
    const ctl = el("div.radio-group", { role: "radiogroup", "aria-label": label, id: name },
      choices.map((c, i) => el("label.chip.toggle-chip", radios[i], el("span", c.label))));
    return {
      node: field("radio", label, props, ctl),
      get: () => { const i = radios.findIndex((r) => r.checked); return i >= 0 ? choices[i].value : null; },
      set: (v) => { radios.forEach((r, i) => { r.checked = JSON.stringify(choices[i].value) === JSON.stringify(v) || choices[i].label === String(v); }); },
    };
  },

  json(props, label, type) {
    const ctl = el("textarea.input.mono", { rows: 4, spellcheck: false, placeholder: "JSON value" });
    return {
      node: field(type, label, props, ctl),
      get: () => {
        const t = ctl.value.trim();
        if (!t) return null;
        try { return JSON.parse(t); } catch (e) { throw new Error(`${label}: not valid JSON (${e.message})`); }
      },
      set: (v) => { ctl.value = v == null ? "" : JSON.stringify(v, null, 2); },
    };
  },

  // Held by the host per session; never shown, always sent as null (the host fills it in).
  state() {
    return { node: el("span", { hidden: true }), hidden: true, get: () => null, set: () => {}, defaultValue: () => null };
  },

  // A chatbot as an input carries the conversation shown by its output twin.
  chatbot(props, label) {
    let linked = null, value = props.value ?? [];
    const node = el("div", { hidden: true });
    const c = {
      node,
      get: () => (linked ? linked.get() : value) ?? [],
      set: (v) => { value = v ?? []; if (linked) linked.set(value); },
      defaultValue: () => props.value ?? [],
      link: (out) => { linked = out; c.hidden = true; },
    };
    return c;
  },

  markdown(props, label) { return INPUTS.textbox({ ...props, lines: 4 }, label); },
};
INPUTS.checkboxgroup = (props, label) => INPUTS.dropdown({ ...props, multiselect: true }, label);
INPUTS.label = INPUTS.json;
INPUTS.highlightedtext = INPUTS.json;

// ---------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------
export function outputComponent(spec) {
  const type = norm(spec && spec.type);
  const props = (spec && spec.props) || {};
  const label = props.label || (type === "textbox" ? "output" : type);
  const make = OUTPUTS[type] || OUTPUTS.json;
  const body = el("div.out-body");
  const o = make(props, body, label);
  o.type = type;
  o.node = type === "state" ? el("span", { hidden: true }) : el(`div.field.output.out-${type}`, { dataset: { type } },
    props.show_label === false ? null : el("div.field-label", label), body);
  o.pending ||= () => {};
  o.props = props;
  let current = null, boundTo = null;
  const set = o.set;
  // A bound output shows its final value in its input twin and has no view of its own.
  o.bind = (input) => { boundTo = input; o.node.hidden = true; };
  o.set = (v, partial) => {
    current = v;
    if (boundTo) { if (!partial && v !== undefined) boundTo.set(v); return; }
    o.node.classList.toggle("streaming", !!partial);
    o.node.classList.toggle("is-empty", v == null);
    set(v, partial);
  };
  o.get = () => current;
  o.set(props.value ?? null, false);
  return o;
}

function jsonText(v) {
  try { return JSON.stringify(v, null, 2); } catch (e) { return String(v); }
}

const OUTPUTS = {
  textbox(props, body) {
    const pre = el("div.out-text", { "aria-live": "polite" });
    body.append(pre);
    return { set: (v) => { pre.textContent = v == null ? "" : typeof v === "string" ? v : jsonText(v); } };
  },

  number(props, body) {
    const n = el("div.out-number");
    body.append(n);
    return { set: (v) => { n.textContent = v == null ? "" : String(v); } };
  },

  label(props, body) {
    return {
      set: (v) => {
        if (v == null) return body.replaceChildren();
        if (typeof v !== "object") v = { label: String(v) };
        const confs = Array.isArray(v.confidences) ? [...v.confidences].sort((a, b) => (b.confidence ?? 0) - (a.confidence ?? 0)) : [];
        const top = props.num_top_classes ? confs.slice(0, props.num_top_classes) : confs;
        body.replaceChildren(
          el("div.label-top", v.label != null ? String(v.label) : confs[0] ? String(confs[0].label) : ""),
          el("div.conf-list", top.map((c, i) => {
            const p = Math.max(0, Math.min(1, Number(c.confidence) || 0));
            return el(`div.conf${i === 0 ? ".best" : ""}`,
              el("div.conf-head", el("span.conf-name", String(c.label)), el("span.conf-val", (p * 100).toFixed(p < 0.1 ? 1 : 0) + "%")),
              el("div.conf-bar", el("div.conf-fill", { style: { width: `${p * 100}%` } })));
          })));
      },
    };
  },

  json(props, body) {
    const pre = el("pre.out-json");
    body.append(pre);
    return { set: (v) => { pre.textContent = v === undefined ? "" : v === null ? "" : jsonText(v); } };
  },

  markdown(props, body) {
    const div = el("div.md.out-md");
    body.append(div);
    return { set: (v) => { div.innerHTML = v == null ? "" : renderMarkdown(String(v)); } };
  },

  highlightedtext(props, body) {
    const colorMap = props.color_map || {};
    return {
      set: (v) => {
        if (v == null) return body.replaceChildren();
        // Also accept Gradio's {text, entities} input form.
        if (!Array.isArray(v) && v && typeof v.text === "string") v = entitiesToSpans(v);
        if (!Array.isArray(v)) v = [{ token: jsonText(v), class_or_confidence: null }];
        const classes = [];
        for (const s of v) {
          const k = s && (s.class_or_confidence ?? (Array.isArray(s) ? s[1] : null));
          if (typeof k === "string" && !classes.includes(k)) classes.push(k);
        }
        const colour = (k) => colorMap[k] || `hsl(${(classes.indexOf(k) * 67 + 200) % 360} 85% 55%)`;
        const text = el("div.hl-text", v.map((s) => {
          const token = Array.isArray(s) ? s[0] : s && s.token;
          const k = Array.isArray(s) ? s[1] : s && s.class_or_confidence;
          if (k == null || k === "") return el("span.hl-plain", String(token ?? ""));
          if (typeof k === "number") {
            const a = Math.min(1, Math.abs(k));
            return el("span.hl", { title: String(k), style: { background: k >= 0 ? `rgba(239,68,68,${a * 0.6})` : `rgba(59,130,246,${a * 0.6})` } }, String(token ?? ""));
          }
          return el("span.hl", { title: k, dataset: { class: k }, style: { "--hl": colour(k) } },
            String(token ?? ""), props.show_inline_category === false ? null : el("span.hl-class", k));
        }));
        const legend = props.show_legend === false || !classes.length ? null
          : el("div.hl-legend", classes.map((k) => el("span.hl-key", { style: { "--hl": colour(k) } }, k)));
        body.replaceChildren(legend || "", text);
      },
    };
  },

  chatbot(props, body) {
    const list = el("div.chat", { role: "log", "aria-live": "polite" });
    body.append(list);
    let value = null, pendingMsg = null;
    const paint = (streaming) => {
      const near = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
      const msgs = toMessages(value);
      if (pendingMsg != null) msgs.push({ role: "user", content: pendingMsg }, { role: "assistant", content: null, typing: true });
      if (!msgs.length) {
        list.replaceChildren(el("div.chat-empty.muted", props.placeholder || "Say something to start the conversation."));
        return;
      }
      list.replaceChildren(...msgs.map((m, i) => {
        const role = m.role === "user" ? "user" : m.role === "system" ? "system" : "assistant";
        const last = i === msgs.length - 1;
        const bubble = el(`div.bubble.${role}`, { dataset: { role } });
        if (m.typing) bubble.append(el("span.typing", el("i"), el("i"), el("i")));
        else if (typeof m.content === "string") {
          if (role === "user") bubble.textContent = m.content; else bubble.innerHTML = renderMarkdown(m.content);
        } else bubble.append(el("pre.out-json", jsonText(m.content)));
        if (m.metadata && m.metadata.title) bubble.prepend(el("div.bubble-title.small", String(m.metadata.title)));
        if (last && streaming && role === "assistant") bubble.classList.add("cursor");
        return el(`div.msg-row.${role}`, bubble);
      }));
      if (near || streaming) list.scrollTop = list.scrollHeight;
    };
    return {
      set: (v, partial) => { value = v; paint(partial); },
      pending: (m) => { pendingMsg = m; paint(false); },
    };
  },

  state() { return { set: () => {} }; },
};
OUTPUTS.slider = OUTPUTS.number;
OUTPUTS.checkbox = (props, body) => {
  const d = el("div.out-number");
  body.append(d);
  return { set: (v) => { d.textContent = v == null ? "" : v ? "✔ true" : "✘ false"; } };
};
OUTPUTS.dropdown = OUTPUTS.radio = OUTPUTS.checkboxgroup = (props, body) => {
  const d = el("div.out-text");
  body.append(d);
  return { set: (v) => { d.textContent = v == null ? "" : Array.isArray(v) ? v.join(", ") : typeof v === "object" ? jsonText(v) : String(v); } };
};

function toMessages(v) {
  if (!Array.isArray(v)) return [];
  const out = [];
  for (const m of v) {
    if (Array.isArray(m)) { // the older tuples format [[user, bot], ...]
      if (m[0] != null) out.push({ role: "user", content: m[0] });
      if (m[1] != null) out.push({ role: "assistant", content: m[1] });
    } else if (m && typeof m === "object") out.push(m);
  }
  return out;
}

function entitiesToSpans(v) {
  const ents = [...(v.entities || [])].sort((a, b) => a.start - b.start);
  const out = [];
  let at = 0;
  for (const e of ents) {
    if (e.start > at) out.push({ token: v.text.slice(at, e.start), class_or_confidence: null });
    out.push({ token: v.text.slice(e.start, e.end), class_or_confidence: e.entity ?? e.entity_group ?? null });
    at = e.end;
  }
  if (at < v.text.length) out.push({ token: v.text.slice(at), class_or_confidence: null });
  return out;
}
