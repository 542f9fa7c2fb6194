/* host/components.c: the component table, schemas, validation and diffs. */
#include "host/components.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum value_kind { V_STRING, V_NUMBER, V_BOOL, V_CHOICE, V_ANY, V_LIST, V_OBJECT };

struct component_type {
	const char *type;     /* as declared by the SDK */
	const char *cls;      /* Gradio's class name */
	enum value_kind kind; /* what an input value must be */
	const char *schema;   /* JSON schema for /info (choices are added at run time) */
	const char *py;       /* python_type.type */
	const char *empty;    /* the value when there is no default */
};

static const struct component_type types[] = {
	{"textbox", "Textbox", V_STRING, "{\"type\":\"string\"}", "str", "\"\""},
	{"number", "Number", V_NUMBER, "{\"type\":\"number\"}", "float", "0"},
	{"slider", "Slider", V_NUMBER, "{\"type\":\"number\"}", "float", "0"},
	{"checkbox", "Checkbox", V_BOOL, "{\"type\":\"boolean\"}", "bool", "false"},
	{"dropdown", "Dropdown", V_CHOICE, "{\"type\":\"string\"}", "str", "null"},
	{"radio", "Radio", V_CHOICE, "{\"type\":\"string\"}", "str", "null"},
	{"json", "Json", V_ANY, "{\"type\":{},\"description\":\"any valid json\"}", "Dict[Any, Any] | List[Any]", "null"},
	{"markdown", "Markdown", V_STRING, "{\"type\":\"string\"}", "str", "\"\""},
	{"label", "Label", V_ANY,
	 "{\"type\":\"object\",\"properties\":{\"label\":{\"type\":\"string\"},\"confidences\":{\"type\":\"array\","
	 "\"items\":{\"type\":\"object\",\"properties\":{\"label\":{\"type\":\"string\"},\"confidence\":{\"type\":\"number\"}}}}}}",
	 "Dict(label: str | int | float | None, confidences: List[Dict(label: str | int | float | None, confidence: float | None)] | None)",
	 "null"},
	{"highlightedtext", "Highlightedtext", V_LIST,
	 "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"token\":{\"type\":\"string\"},"
	 "\"class_or_confidence\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"number\"},{\"type\":\"null\"}]}}}}",
	 "List[Dict(token: str, class_or_confidence: str | float | None)]", "[]"},
	{"chatbot", "Chatbot", V_LIST,
	 "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"role\":{\"enum\":[\"user\",\"assistant\",\"system\"],"
	 "\"type\":\"string\"},\"content\":{\"type\":\"string\"}},\"required\":[\"role\",\"content\"]}}",
	 "List[Dict(role: Literal['user', 'assistant', 'system'], content: str)]", "[]"},
	{"state", "State", V_ANY, "{}", "Any", "null"},
};

static const struct component_type *find_type(const json_t *comp) {
	const char *t = json_string_value(json_object_get(comp, "type"));
	if (!t) return NULL;
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (!strcmp(types[i].type, t)) return &types[i];
	return NULL;
}

static const json_t *prop(const json_t *comp, const char *name) {
	return json_object_get(json_object_get(comp, "props"), name);
}

const char *ms_component_class(const char *type) {
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (!strcmp(types[i].type, type)) return types[i].cls;
	return type;
}

int ms_component_skip_api(const json_t *comp) {
	const char *t = json_string_value(json_object_get(comp, "type"));
	return (t && !strcmp(t, "state")) || json_is_true(prop(comp, "skip_api"));
}

/* Choice values: a choice is a string or a [label, value] pair; the value is sent. */
static json_t *choice_values(const json_t *comp) {
	json_t *out = json_array();
	size_t i;
	json_t *c;
	json_array_foreach(prop(comp, "choices"), i, c) {
		if (json_is_array(c) && json_array_size(c) == 2) json_array_append(out, json_array_get(c, 1));
		else json_array_append(out, c);
	}
	return out;
}

json_t *ms_component_schema(const json_t *comp) {
	const struct component_type *ct = find_type(comp);
	if (!ct) return json_object();
	json_t *s = json_loads(ct->schema, 0, NULL);
	if (ct->kind == V_CHOICE) {
		json_t *vals = choice_values(comp);
		if (json_is_true(prop(comp, "multiselect"))) {
			json_decref(s);
			s = json_pack("{s:s,s:{s:s,s:o}}", "type", "array", "items", "type", "string", "enum", vals);
		} else {
			json_object_set_new(s, "enum", vals);
		}
	} else if (!strcmp(ct->type, "slider")) {
		char d[160];
		snprintf(d, sizeof d, "numeric value between %g and %g", json_number_value(prop(comp, "minimum")),
			 json_is_number(prop(comp, "maximum")) ? json_number_value(prop(comp, "maximum")) : 100.0);
		json_object_set_new(s, "description", json_string(d));
	}
	return s;
}

json_t *ms_component_python_type(const json_t *comp) {
	const struct component_type *ct = find_type(comp);
	const char *desc = "";
	if (ct && !strcmp(ct->type, "slider")) desc = "numeric value between minimum and maximum";
	if (ct && ct->kind == V_CHOICE) {
		json_t *vals = choice_values(comp);
		char *list = json_dumps(vals, JSON_COMPACT);
		json_decref(vals);
		char buf[1024];
		snprintf(buf, sizeof buf, "%sLiteral%s", json_is_true(prop(comp, "multiselect")) ? "List[" : "", list ? list : "[]");
		free(list);
		return json_pack("{s:s,s:s}", "type", buf, "description", "");
	}
	return json_pack("{s:s,s:s}", "type", ct ? ct->py : "Any", "description", desc);
}

json_t *ms_component_default(const json_t *comp) {
	const json_t *v = prop(comp, "value");
	if (v) return json_deep_copy(v);
	const struct component_type *ct = find_type(comp);
	if (ct && !strcmp(ct->type, "slider") && json_is_number(prop(comp, "minimum")))
		return json_deep_copy(prop(comp, "minimum"));
	return json_loads(ct ? ct->empty : "null", JSON_DECODE_ANY, NULL);
}

json_t *ms_component_example(const json_t *comp) {
	const struct component_type *ct = find_type(comp);
	const json_t *v = prop(comp, "value");
	if (v && !json_is_null(v)) return json_deep_copy(v);
	if (ct && ct->kind == V_STRING) return json_string("Hello!!");
	if (ct && ct->kind == V_NUMBER) return json_real(3);
	if (ct && ct->kind == V_CHOICE) {
		json_t *vals = choice_values(comp);
		json_t *first = json_incref(json_array_get(vals, 0));
		json_decref(vals);
		return first ? first : json_null();
	}
	return ms_component_default(comp);
}

static int in_choices(const json_t *comp, const json_t *v) {
	json_t *vals = choice_values(comp);
	size_t i;
	json_t *c;
	int found = 0;
	json_array_foreach(vals, i, c) found |= json_equal(c, v);
	json_decref(vals);
	return found;
}

static const char *label_of(const json_t *comp) {
	const char *l = json_string_value(prop(comp, "label"));
	return l ? l : json_string_value(json_object_get(comp, "type"));
}

int ms_component_validate(const json_t *comp, const json_t *value, json_t **out, char *msg, size_t msglen) {
	const struct component_type *ct = find_type(comp);
	*out = NULL;
	if (!value || json_is_null(value)) {
		*out = ms_component_default(comp);
		return 0;
	}
	if (!ct) {
		*out = json_deep_copy(value);
		return 0;
	}
	switch (ct->kind) {
	case V_STRING:
		if (!json_is_string(value)) {
			snprintf(msg, msglen, "%s expects a string", label_of(comp));
			return -1;
		}
		break;
	case V_NUMBER: {
		if (!json_is_number(value)) {
			snprintf(msg, msglen, "%s expects a number", label_of(comp));
			return -1;
		}
		double x = json_number_value(value);
		const json_t *lo = prop(comp, "minimum"), *hi = prop(comp, "maximum");
		if (!isfinite(x) || (json_is_number(lo) && x < json_number_value(lo)) || (json_is_number(hi) && x > json_number_value(hi))) {
			snprintf(msg, msglen, "%s must be between %g and %g, got %g", label_of(comp),
				 json_is_number(lo) ? json_number_value(lo) : -INFINITY,
				 json_is_number(hi) ? json_number_value(hi) : INFINITY, x);
			return -1;
		}
		if (json_is_integer(prop(comp, "precision")) && json_integer_value(prop(comp, "precision")) == 0) {
			*out = json_integer((json_int_t)llround(x));
			return 0;
		}
		break;
	}
	case V_BOOL:
		if (!json_is_boolean(value)) {
			snprintf(msg, msglen, "%s expects true or false", label_of(comp));
			return -1;
		}
		break;
	case V_CHOICE: {
		int custom = json_is_true(prop(comp, "allow_custom_value"));
		if (json_is_true(prop(comp, "multiselect"))) {
			size_t i;
			json_t *v;
			if (!json_is_array(value)) {
				snprintf(msg, msglen, "%s expects a list of choices", label_of(comp));
				return -1;
			}
			json_array_foreach(value, i, v) if (!custom && !in_choices(comp, v)) {
				snprintf(msg, msglen, "%s: %s is not one of the choices", label_of(comp),
					 json_is_string(v) ? json_string_value(v) : "a value");
				return -1;
			}
		} else if (!custom && !in_choices(comp, value)) {
			snprintf(msg, msglen, "%s: %s is not one of the choices", label_of(comp),
				 json_is_string(value) ? json_string_value(value) : "the value");
			return -1;
		}
		break;
	}
	case V_LIST:
		if (!json_is_array(value)) {
			snprintf(msg, msglen, "%s expects a list", label_of(comp));
			return -1;
		}
		break;
	case V_OBJECT:
	case V_ANY: break;
	}
	*out = json_deep_copy(value);
	return 0;
}

/* ---- diffs, as gradio.utils.diff computes them ---- */

static void add_edit(json_t *edits, const char *action, const json_t *path, json_t *value) {
	json_array_append_new(edits, json_pack("[s,O,o]", action, path, value ? value : json_null()));
}

static void diff_into(json_t *edits, const json_t *a, const json_t *b, json_t *path) {
	if (json_equal(a, b)) return;
	if (json_typeof(a) != json_typeof(b) && !(json_is_number(a) && json_is_number(b))) {
		add_edit(edits, "replace", path, json_deep_copy(b));
		return;
	}
	if (json_is_string(a)) {
		size_t la = json_string_length(a), lb = json_string_length(b);
		if (lb >= la && !memcmp(json_string_value(a), json_string_value(b), la))
			add_edit(edits, "append", path, json_stringn(json_string_value(b) + la, lb - la));
		else
			add_edit(edits, "replace", path, json_deep_copy(b));
		return;
	}
	if (json_is_array(a)) {
		size_t na = json_array_size(a), nb = json_array_size(b);
		if (nb < na) { /* deletes shift indices on the client: send the whole list */
			add_edit(edits, "replace", path, json_deep_copy(b));
			return;
		}
		for (size_t i = 0; i < na; i++) {
			json_t *p = json_copy(path);
			json_array_append_new(p, json_integer((json_int_t)i));
			diff_into(edits, json_array_get(a, i), json_array_get(b, i), p);
			json_decref(p);
		}
		for (size_t i = na; i < nb; i++) {
			json_t *p = json_copy(path);
			json_array_append_new(p, json_integer((json_int_t)i));
			add_edit(edits, "add", p, json_deep_copy(json_array_get(b, i)));
			json_decref(p);
		}
		return;
	}
	if (json_is_object(a)) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)a, k, v) {
			json_t *p = json_copy(path);
			json_array_append_new(p, json_string(k));
			json_t *bv = json_object_get(b, k);
			if (bv) diff_into(edits, v, bv, p);
			else add_edit(edits, "delete", p, NULL);
			json_decref(p);
		}
		json_object_foreach((json_t *)b, k, v) {
			if (json_object_get(a, k)) continue;
			json_t *p = json_copy(path);
			json_array_append_new(p, json_string(k));
			add_edit(edits, "add", p, json_deep_copy(v));
			json_decref(p);
		}
		return;
	}
	add_edit(edits, "replace", path, json_deep_copy(b));
}

json_t *ms_value_diff(const json_t *old_value, const json_t *new_value) {
	json_t *edits = json_array(), *path = json_array();
	diff_into(edits, old_value ? old_value : json_null(), new_value ? new_value : json_null(), path);
	json_decref(path);
	return edits;
}
