/* sandbox/sdk.c: the app SDK and the call loop (see sdk.h). */
#include "sandbox/sdk.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <utf8proc.h>

#include "sandbox/frame.h"

#define OUT_BUDGET ((size_t)8 << 20) /* bytes of JSON one call may return per message */
#define MAX_DEPTH 64
#define LOG_LINE_MAX 8192
#define LOG_LINES_PER_CALL 1000
#define PROGRESS_MIN_NS (20 * 1000000ull)

static char K_SDK;

static ms_sdk *sdk_from(lua_State *L) {
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_SDK);
	ms_sdk *k = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return k;
}

/* ---- frames to the host ---- */

static int send_json(ms_sdk *k, json_t *msg) {
	k->writing = 1;
	int rc = msg ? ms_frame_write_json_fd_buf(k->fd, msg, &k->out) : MS_ENOMEM;
	k->writing = 0;
	json_decref(msg);
	return rc;
}

/* The frame a hard stop writes is put together in the signal handler itself, by hand
 * (snprintf is not async-signal-safe), so the per-call preparation is only the id. */
void ms_sdk_prepare_hard_stop(ms_sdk *k, long long id) { k->hard_id = id; }

static size_t put(char *p, size_t at, size_t cap, const char *s) {
	while (*s && at < cap) p[at++] = *s++;
	return at;
}

void ms_sdk_hard_stop(ms_sdk *k) {
	static const char *const kinds[] = {"internal", "timeout", "cancelled", "memory"};
	static const char *const msgs[] = {"stopped", "the call took longer than the app's time limit",
					   "cancelled", "out of memory: the app went over its memory limit"};
	int kind = k->lua->tripped;
	if (kind < 0 || kind > 3) kind = 0;
	if (k->writing) return; /* a frame is half written: the host sees EOF instead */
	char f[320];
	size_t n = 4, cap = sizeof f;
	long long id = k->hard_id;
	if (id < 0) {
		n = put(f, n, cap, "{\"t\":\"init_error\",\"message\":\"app.lua: ");
	} else {
		char digits[24];
		int nd = 0;
		unsigned long long u = (unsigned long long)id;
		do digits[nd++] = (char)('0' + u % 10); while ((u /= 10) && nd < 23);
		n = put(f, n, cap, "{\"t\":\"error\",\"id\":");
		while (nd && n < cap) f[n++] = digits[--nd];
		n = put(f, n, cap, ",\"kind\":\"");
		n = put(f, n, cap, kinds[kind]);
		n = put(f, n, cap, "\",\"message\":\"");
	}
	n = put(f, n, cap, msgs[kind]);
	n = put(f, n, cap, "\"}");
	size_t len = n - 4;
	f[0] = (char)len, f[1] = (char)(len >> 8), f[2] = (char)(len >> 16), f[3] = (char)(len >> 24);
	const char *p = f;
	while (n) {
		ssize_t w = write(k->fd, p, n);
		if (w <= 0) break;
		p += w, n -= (size_t)w;
	}
}

/* ---- Lua -> JSON, raw access only, no Lua allocation ---- */

typedef struct conv {
	size_t budget;
	char err[256];
} conv;

static json_t *conv_fail(conv *c, const char *fmt, const char *a) {
	if (!c->err[0]) snprintf(c->err, sizeof c->err, fmt, a);
	return NULL;
}

/* Bytes at s that an invalid sequence spans (WHATWG / Python's "maximal subpart", as the
 * runtime's tokenizers count it): a truncated character is one U+FFFD, not one per byte. */
static size_t invalid_subpart(const unsigned char *s, size_t n) {
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t need, i = 1;
	if (c >= 0xC2 && c <= 0xDF) need = 2;
	else if (c >= 0xE0 && c <= 0xEF) need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
	else if (c >= 0xF0 && c <= 0xF4) need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
	else return 1;
	for (; i < need && i < n; i++)
		if (i == 1 ? (s[i] < lo || s[i] > hi) : (s[i] & 0xC0) != 0x80) break;
	return i;
}

/* A JSON string from bytes that are not valid UTF-8: bad sequences become U+FFFD. */
static json_t *json_sanitized(const char *p, size_t len) {
	ms_buf b;
	ms_buf_init(&b);
	size_t i = 0;
	while (i < len) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)p + i, (utf8proc_ssize_t)(len - i), &cp);
		if (n < 1) {
			if (ms_buf_append(&b, "\xEF\xBF\xBD", 3)) break;
			i += invalid_subpart((const unsigned char *)p + i, len - i);
			continue;
		}
		if (ms_buf_append(&b, p + i, (size_t)n)) break;
		i += (size_t)n;
	}
	json_t *j = json_stringn(b.data ? b.data : "", b.len);
	ms_buf_free(&b);
	return j;
}

static json_t *num_json(lua_State *L, int idx, conv *c) {
	if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
	double d = lua_tonumber(L, idx);
	if (!isfinite(d)) return conv_fail(c, "%s: a number that JSON cannot hold (nan or inf)", "value");
	return json_real(d);
}

static json_t *str_json(lua_State *L, int idx, conv *c) {
	size_t len;
	const char *p = lua_tolstring(L, idx, &len);
	if (len > c->budget) return conv_fail(c, "%s is too large", "the returned value");
	c->budget -= len;
	json_t *j = json_stringn(p, len);
	if (!j) j = json_sanitized(p, len); /* invalid UTF-8: replaced, not refused */
	return j;
}

static json_t *to_json(lua_State *L, int idx, int depth, conv *c);

/* 0 when not a sequence; else its length (an empty table counts as a sequence of 0) */
static long long seq_len(lua_State *L, int idx, int *is_seq) {
	long long n = (long long)lua_rawlen(L, idx), count = 0;
	*is_seq = 1;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		count++;
		if (!lua_isinteger(L, -1)) *is_seq = 0;
		else {
			lua_Integer i = lua_tointeger(L, -1);
			if (i < 1 || i > n) *is_seq = 0;
		}
	}
	if (count != n) *is_seq = 0;
	return n;
}

static json_t *table_json(lua_State *L, int idx, int depth, conv *c) {
	if (depth > MAX_DEPTH) return conv_fail(c, "%s is nested too deeply (a cycle?)", "the returned value");
	if (!lua_checkstack(L, 4)) return conv_fail(c, "%s: out of stack", "the returned value");
	if (c->budget < 16) return conv_fail(c, "%s is too large", "the returned value");
	c->budget -= 16;
	int is_seq;
	long long n = seq_len(L, idx, &is_seq);
	if (is_seq) {
		json_t *a = json_array();
		for (long long i = 1; a && i <= n; i++) {
			lua_rawgeti(L, idx, i);
			json_t *v = to_json(L, lua_gettop(L), depth + 1, c);
			lua_pop(L, 1);
			if (!v || json_array_append_new(a, v)) { json_decref(a); return NULL; }
		}
		return a;
	}
	json_t *o = json_object();
	lua_pushnil(L);
	while (o && lua_next(L, idx)) {
		char kbuf[64];
		const char *key;
		if (lua_type(L, -2) == LUA_TSTRING) key = lua_tostring(L, -2);
		else if (lua_isinteger(L, -2)) snprintf(kbuf, sizeof kbuf, "%lld", (long long)lua_tointeger(L, -2)), key = kbuf;
		else if (lua_type(L, -2) == LUA_TNUMBER) snprintf(kbuf, sizeof kbuf, "%.14g", lua_tonumber(L, -2)), key = kbuf;
		else if (lua_type(L, -2) == LUA_TBOOLEAN) key = lua_toboolean(L, -2) ? "true" : "false";
		else {
			lua_pop(L, 2);
			json_decref(o);
			return conv_fail(c, "a table key of type %s cannot become JSON", luaL_typename(L, -1));
		}
		json_t *v = to_json(L, lua_gettop(L), depth + 1, c);
		lua_pop(L, 1);
		if (!v || json_object_set_new(o, key, v)) {
			lua_pop(L, 1);
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static json_t *to_json(lua_State *L, int idx, int depth, conv *c) {
	switch (lua_type(L, idx)) {
	case LUA_TNIL: return json_null();
	case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
	case LUA_TNUMBER: return num_json(L, idx, c);
	case LUA_TSTRING: return str_json(L, idx, c);
	case LUA_TTABLE: return table_json(L, idx, depth, c);
	default: return conv_fail(c, "a %s cannot become JSON", luaL_typename(L, idx));
	}
}

/* ---- outputs: one Lua value -> the component's wire format ---- */

static int rawfield(lua_State *L, int idx, const char *k) {
	/* field names used here are interned already (SDK literals), so no allocation */
	lua_pushstring(L, k);
	return lua_rawget(L, idx);
}

static json_t *out_string(lua_State *L, int idx, conv *c, const char *what) {
	switch (lua_type(L, idx)) {
	case LUA_TNIL: return json_null();
	case LUA_TSTRING: return str_json(L, idx, c);
	case LUA_TNUMBER: {
		char b[64];
		if (lua_isinteger(L, idx)) snprintf(b, sizeof b, "%lld", (long long)lua_tointeger(L, idx));
		else snprintf(b, sizeof b, "%.14g", lua_tonumber(L, idx));
		return json_string(b);
	}
	case LUA_TBOOLEAN: return json_string(lua_toboolean(L, idx) ? "true" : "false");
	default: return conv_fail(c, "%s must be a string", what);
	}
}

typedef struct conf { char *label; double score; } conf;

static int conf_cmp(const void *a, const void *b) {
	double x = ((const conf *)a)->score, y = ((const conf *)b)->score;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* label: "cat" | {cat = 0.9, dog = 0.1} | {{label=, score=|confidence=}, ...} |
 * {label = "cat", confidences = {...}} */
static json_t *out_label(lua_State *L, int idx, conv *c) {
	int t = lua_type(L, idx);
	if (t == LUA_TNIL) return json_null();
	if (t == LUA_TSTRING || t == LUA_TNUMBER) {
		json_t *s = out_string(L, idx, c, "a label");
		return s ? json_pack("{s:o}", "label", s) : NULL;
	}
	if (t != LUA_TTABLE) return conv_fail(c, "%s must be a string or a table", "a label");
	if (!lua_checkstack(L, 8)) return conv_fail(c, "%s: out of stack", "a label");
	int base = lua_gettop(L);
	json_t *top = NULL;
	int src = idx;
	if (rawfield(L, idx, "confidences") == LUA_TTABLE) src = lua_gettop(L);
	if (rawfield(L, idx, "label") != LUA_TNIL) top = out_string(L, lua_gettop(L), c, "label.label");
	lua_pop(L, 1);
	size_t n = 0, cap = 16;
	conf *v = malloc(cap * sizeof *v);
	int ok = v != NULL;
	lua_pushnil(L);
	while (ok && lua_next(L, src)) {
		int vi = lua_gettop(L);
		const char *lab = NULL;
		double sc = 0;
		if (lua_type(L, vi) == LUA_TTABLE && lua_isinteger(L, vi - 1)) { /* {label=, score=} */
			if (rawfield(L, vi, "label") == LUA_TSTRING) lab = lua_tostring(L, -1);
			if (rawfield(L, vi, "score") == LUA_TNUMBER || (lua_pop(L, 1), rawfield(L, vi, "confidence") == LUA_TNUMBER))
				sc = lua_tonumber(L, -1);
			lua_pop(L, 2);
		} else if (lua_type(L, vi - 1) == LUA_TSTRING && lua_type(L, vi) == LUA_TNUMBER) {
			if (src == idx && (strcmp(lua_tostring(L, vi - 1), "label") == 0)) { lua_pop(L, 1); continue; }
			lab = lua_tostring(L, vi - 1);
			sc = lua_tonumber(L, vi);
		} else if (src == idx && lua_type(L, vi - 1) == LUA_TSTRING &&
			   (strcmp(lua_tostring(L, vi - 1), "label") == 0 || strcmp(lua_tostring(L, vi - 1), "confidences") == 0)) {
			lua_pop(L, 1);
			continue;
		}
		lua_pop(L, 1);
		if (!lab || !isfinite(sc)) { ok = 0; break; }
		if (n == cap) {
			conf *nv = realloc(v, 2 * cap * sizeof *nv);
			if (!nv) { ok = 0; break; }
			v = nv, cap *= 2;
		}
		v[n].label = strdup(lab);
		v[n++].score = sc;
		if (!v[n - 1].label) ok = 0;
	}
	lua_settop(L, base); /* a failed lua_next walk leaves its key behind */
	json_t *res = NULL;
	if (ok) {
		qsort(v, n, sizeof *v, conf_cmp);
		json_t *arr = json_array();
		for (size_t i = 0; arr && i < n; i++)
			json_array_append_new(arr, json_pack("{s:s,s:f}", "label", v[i].label, "confidence", v[i].score));
		if (!top) top = n ? json_string(v[0].label) : json_null();
		res = json_pack("{s:o,s:o}", "label", top, "confidences", arr);
		top = NULL;
	} else {
		conv_fail(c, "%s: use {name = score, ...} or {{label=..., score=...}, ...}", "a label");
	}
	json_decref(top);
	for (size_t i = 0; v && i < n; i++) free(v[i].label);
	free(v);
	return res;
}

/* highlightedtext: {{"text", "CLASS"|score|nil}, {token=, class_or_confidence=}, "plain"} */
static json_t *out_highlighted(lua_State *L, int idx, conv *c) {
	if (lua_isnil(L, idx)) return json_null();
	if (lua_type(L, idx) == LUA_TSTRING) {
		json_t *s = str_json(L, idx, c);
		return s ? json_pack("[{s:o,s:n}]", "token", s, "class_or_confidence") : NULL;
	}
	if (lua_type(L, idx) != LUA_TTABLE || !lua_checkstack(L, 6))
		return conv_fail(c, "%s must be a list of {text, class} pairs", "highlightedtext");
	json_t *a = json_array();
	size_t n = lua_rawlen(L, idx);
	for (size_t i = 1; a && i <= n; i++) {
		int top = lua_gettop(L);
		lua_rawgeti(L, idx, (lua_Integer)i);
		int e = lua_gettop(L);
		json_t *tok = NULL, *cls = NULL;
		if (lua_type(L, e) == LUA_TSTRING) {
			tok = str_json(L, e, c), cls = json_null();
		} else if (lua_type(L, e) == LUA_TTABLE) {
			if (rawfield(L, e, "token") != LUA_TNIL) {
				tok = out_string(L, lua_gettop(L), c, "a token");
				rawfield(L, e, "class_or_confidence");
			} else {
				lua_rawgeti(L, e, 1);
				tok = out_string(L, lua_gettop(L), c, "a token");
				lua_rawgeti(L, e, 2);
			}
			cls = lua_type(L, -1) == LUA_TNUMBER ? num_json(L, lua_gettop(L), c)
							       : out_string(L, lua_gettop(L), c, "a class");
		}
		lua_settop(L, top);
		if (!tok || !cls) {
			json_decref(tok), json_decref(cls), json_decref(a);
			return conv_fail(c, "%s must be a list of {text, class} pairs", "highlightedtext");
		}
		json_array_append_new(a, json_pack("{s:o,s:o}", "token", tok, "class_or_confidence", cls));
	}
	return a;
}

/* chatbot (messages): {{role=, content=}, ...}; {user, bot} pairs become two messages */
static json_t *out_chatbot(lua_State *L, int idx, conv *c) {
	if (lua_isnil(L, idx)) return json_array();
	if (lua_type(L, idx) != LUA_TTABLE || !lua_checkstack(L, 6))
		return conv_fail(c, "%s must be a list of {role=, content=} messages", "chatbot");
	json_t *a = json_array();
	size_t n = lua_rawlen(L, idx);
	for (size_t i = 1; a && i <= n; i++) {
		int top = lua_gettop(L);
		lua_rawgeti(L, idx, (lua_Integer)i);
		int e = lua_gettop(L);
		int ok = lua_type(L, e) == LUA_TTABLE;
		if (ok && rawfield(L, e, "role") == LUA_TSTRING) {
			const char *role = lua_tostring(L, -1);
			ok = !strcmp(role, "user") || !strcmp(role, "assistant") || !strcmp(role, "system");
			json_t *content = NULL, *meta = NULL;
			if (ok) {
				rawfield(L, e, "content");
				content = lua_type(L, -1) == LUA_TSTRING ? str_json(L, lua_gettop(L), c)
									  : to_json(L, lua_gettop(L), 1, c);
				if (rawfield(L, e, "metadata") == LUA_TTABLE) meta = to_json(L, lua_gettop(L), 1, c);
			}
			json_t *m = ok && content ? json_pack("{s:s,s:o}", "role", role, "content", content) : NULL;
			if (!m) json_decref(content);
			if (m && meta) json_object_set_new(m, "metadata", meta);
			else json_decref(meta);
			ok = m && !json_array_append_new(a, m);
		} else if (ok) { /* a {user, bot} pair */
			lua_settop(L, e);
			for (int k = 1; ok && k <= 2; k++) {
				lua_rawgeti(L, e, k);
				if (!lua_isnil(L, -1)) {
					json_t *s = out_string(L, lua_gettop(L), c, "a chat message");
					ok = s && !json_array_append_new(a, json_pack("{s:s,s:o}", "role", k == 1 ? "user" : "assistant", "content", s));
				}
				lua_pop(L, 1);
			}
		}
		lua_settop(L, top);
		if (!ok) {
			json_decref(a);
			return conv_fail(c, "%s must be a list of {role=\"user\"|\"assistant\"|\"system\", content=...} messages", "chatbot");
		}
	}
	return a;
}

static json_t *out_value(lua_State *L, int idx, const char *type, conv *c) {
	if (!strcmp(type, "textbox") || !strcmp(type, "markdown") || !strcmp(type, "html") ||
	    !strcmp(type, "code") || !strcmp(type, "radio"))
		return out_string(L, idx, c, type);
	if (!strcmp(type, "number") || !strcmp(type, "slider")) {
		if (lua_isnil(L, idx)) return json_null();
		if (lua_type(L, idx) == LUA_TNUMBER) return num_json(L, idx, c);
		if (lua_type(L, idx) == LUA_TSTRING && lua_checkstack(L, 1) &&
		    lua_stringtonumber(L, lua_tostring(L, idx))) {
			json_t *j = num_json(L, lua_gettop(L), c);
			lua_pop(L, 1);
			return j;
		}
		return conv_fail(c, "%s must be a number", type);
	}
	if (!strcmp(type, "checkbox")) {
		if (lua_isnil(L, idx)) return json_null();
		if (lua_type(L, idx) == LUA_TBOOLEAN) return json_boolean(lua_toboolean(L, idx));
		return conv_fail(c, "%s must be a boolean", type);
	}
	if (!strcmp(type, "label")) return out_label(L, idx, c);
	if (!strcmp(type, "highlightedtext")) return out_highlighted(L, idx, c);
	if (!strcmp(type, "chatbot")) return out_chatbot(L, idx, c);
	return to_json(L, idx, 0, c); /* json, state, dropdown, ... */
}

/* ---- JSON -> Lua (under a protected call: these allocate) ---- */

static void push_json(lua_State *L, json_t *j, int depth) {
	luaL_checkstack(L, 4, "input too deeply nested");
	if (depth > MAX_DEPTH) luaL_error(L, "input too deeply nested");
	switch (json_typeof(j)) {
	case JSON_STRING: lua_pushlstring(L, json_string_value(j), json_string_length(j)); break;
	case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(j)); break;
	case JSON_REAL: lua_pushnumber(L, json_real_value(j)); break;
	case JSON_TRUE: lua_pushboolean(L, 1); break;
	case JSON_FALSE: lua_pushboolean(L, 0); break;
	case JSON_ARRAY: {
		size_t n = json_array_size(j);
		lua_createtable(L, n > 1024 ? 1024 : (int)n, 0);
		for (size_t i = 0; i < n; i++) {
			push_json(L, json_array_get(j, i), depth + 1);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	}
	case JSON_OBJECT: {
		const char *key;
		json_t *v;
		lua_newtable(L);
		json_object_foreach(j, key, v) {
			push_json(L, v, depth + 1);
			lua_setfield(L, -2, key);
		}
		break;
	}
	default: lua_pushnil(L);
	}
}

/* ---- print and progress ---- */

static int l_print(lua_State *L) {
	ms_sdk *k = sdk_from(L);
	int n = lua_gettop(L);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		if (i > 1) luaL_addchar(&b, '\t');
		ms_lua_tostring(L, i, 1);
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	size_t len;
	const char *line = lua_tolstring(L, -1, &len);
	if (len > LOG_LINE_MAX) len = LOG_LINE_MAX;
	if (!k->in_call) { /* load time: stderr is the app's log too */
		fprintf(stderr, "%.*s\n", (int)len, line);
		return 0;
	}
	if (k->log_lines > LOG_LINES_PER_CALL) return 0;
	json_t *m;
	if (++k->log_lines > LOG_LINES_PER_CALL)
		m = json_pack("{s:s,s:I,s:s,s:s}", "t", "log", "id", (json_int_t)k->call_id, "level", "warn", "line",
			      "(more log lines in this call were dropped)");
	else {
		json_t *s = json_stringn(line, len);
		if (!s) s = json_sanitized(line, len);
		m = json_pack("{s:s,s:I,s:s,s:o}", "t", "log", "id", (json_int_t)k->call_id, "level", "info", "line", s);
	}
	if (send_json(k, m) != 0) k->broken = 1;
	return 0;
}

/* progress(fraction) | progress(i, total [, desc]) | progress(fraction, nil, desc) */
static int l_progress(lua_State *L) {
	ms_sdk *k = sdk_from(L);
	double a = luaL_checknumber(L, 1);
	int has_total = !lua_isnoneornil(L, 2);
	double total = has_total ? luaL_checknumber(L, 2) : 0;
	const char *desc = luaL_optstring(L, 3, NULL);
	if (!k->in_call) return 0;
	int final = has_total ? a >= total : a >= 1.0;
	uint64_t now = ms_now_ns();
	if (!final && now - k->last_progress_ns < PROGRESS_MIN_NS) return 0; /* a flood is thinned */
	k->last_progress_ns = now;
	json_t *m = json_pack("{s:s,s:I,s:s}", "t", "progress", "id", (json_int_t)k->call_id, "unit", "steps");
	if (!m) return 0;
	if (has_total && total > 0) {
		json_object_set_new(m, "progress", json_real(a / total > 1 ? 1 : a / total));
		json_object_set_new(m, "index", json_real(a));
		json_object_set_new(m, "length", json_real(total));
	} else {
		json_object_set_new(m, "progress", json_real(a < 0 ? 0 : a > 1 ? 1 : a));
		json_object_set_new(m, "index", json_null());
		json_object_set_new(m, "length", json_null());
	}
	json_object_set_new(m, "desc", desc ? json_string(desc) : json_null());
	if (!json_object_get(m, "desc")) json_object_set_new(m, "desc", json_null());
	if (send_json(k, m) != 0) k->broken = 1;
	return 0;
}

/* ---- components ---- */

static const struct { const char *alias, *type; } comp_names[] = {
	{"text", "textbox"}, {"textbox", "textbox"}, {"textarea", "textbox"}, {"number", "number"},
	{"slider", "slider"}, {"checkbox", "checkbox"}, {"dropdown", "dropdown"}, {"radio", "radio"},
	{"label", "label"}, {"json", "json"}, {"markdown", "markdown"}, {"highlightedtext", "highlightedtext"},
	{"highlight", "highlightedtext"}, {"chatbot", "chatbot"}, {"state", "state"}, {"html", "html"},
	{"code", "code"}};

static const char *comp_type(const char *name) {
	for (size_t i = 0; i < MS_ARRAY_LEN(comp_names); i++)
		if (!strcasecmp(name, comp_names[i].alias)) return comp_names[i].type;
	return NULL;
}

static char K_COMP; /* metatable of ui.* results */

/* ui.NAME{...}: returns {type = NAME, props = {...}} */
static int l_ui_make(lua_State *L) {
	const char *type = lua_tostring(L, lua_upvalueindex(1));
	if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
	lua_createtable(L, 0, 2);
	lua_pushstring(L, type);
	lua_setfield(L, -2, "type");
	lua_newtable(L);
	if (lua_istable(L, 1)) {
		lua_pushnil(L);
		while (lua_next(L, 1)) {
			if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "ui.%s: arguments are named fields (label = ...)", type);
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -4);
		}
	}
	if (!strcmp(lua_tostring(L, lua_upvalueindex(2)), "textarea")) {
		lua_pushinteger(L, 7);
		lua_setfield(L, -2, "lines");
	}
	lua_setfield(L, -2, "props");
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_COMP);
	lua_setmetatable(L, -2);
	return 1;
}

/* Component at idx (a ui.* table or a bare string) -> {"type", "props"} JSON. */
static json_t *comp_json(lua_State *L, int idx, const char *what) {
	json_t *props = NULL;
	const char *type = NULL;
	conv c = {OUT_BUDGET, ""};
	if (lua_type(L, idx) == LUA_TSTRING) {
		type = comp_type(lua_tostring(L, idx));
		if (!type) luaL_error(L, "%s: unknown component \"%s\"", what, lua_tostring(L, idx));
		props = json_object();
		if (!strcasecmp(lua_tostring(L, idx), "textarea")) json_object_set_new(props, "lines", json_integer(7));
	} else if (lua_type(L, idx) == LUA_TTABLE && lua_getmetatable(L, idx)) {
		lua_rawgetp(L, LUA_REGISTRYINDEX, &K_COMP);
		int is_comp = lua_rawequal(L, -1, -2);
		lua_pop(L, 2);
		if (!is_comp) luaL_error(L, "%s: expected a ui.* component or a name like \"text\"", what);
		rawfield(L, idx, "type");
		type = comp_type(lua_tostring(L, -1));
		lua_pop(L, 1);
		rawfield(L, idx, "props");
		props = to_json(L, lua_gettop(L), 0, &c);
		lua_pop(L, 1);
		if (!props) luaL_error(L, "%s: %s", what, c.err);
		if (!json_is_object(props)) { json_decref(props); props = json_object(); }
	} else {
		luaL_error(L, "%s: expected a ui.* component or a name like \"text\"", what);
	}
	return json_pack("{s:s,s:o}", "type", type, "props", props);
}

/* ---- JSON held across calls that can raise: boxed in a userdata with __gc ---- */

static char K_JBOX;
static int jbox_gc(lua_State *L) {
	json_t **b = lua_touserdata(L, 1);
	json_decref(*b);
	*b = NULL;
	return 0;
}
static json_t **jbox_new(lua_State *L, json_t *j) {
	json_t **b = lua_newuserdatauv(L, sizeof *b, 0);
	*b = NULL;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_JBOX);
	lua_setmetatable(L, -2);
	*b = j;
	if (!j) luaL_error(L, "out of memory");
	return b;
}

/* ---- app.interface ---- */

static int is_component(lua_State *L, int idx) {
	if (lua_type(L, idx) == LUA_TSTRING) return 1;
	if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_COMP);
	int r = lua_rawequal(L, -1, -2);
	lua_pop(L, 2);
	return r;
}

/* Pushes field `name` of the spec as a list of components ({} when nil). */
static void push_comp_list(lua_State *L, int spec, const char *name) {
	lua_getfield(L, spec, name);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);
	} else if (is_component(L, -1)) {
		lua_createtable(L, 1, 0);
		lua_insert(L, -2);
		lua_rawseti(L, -2, 1);
	} else if (!lua_istable(L, -1)) {
		luaL_error(L, "app.interface: %s must be a component or a list of components", name);
	}
}

/* Does the function's own source text mention yield (a generator, as Gradio says)? */
static int looks_streaming(ms_sdk *k, lua_Debug *ar) {
	if (ar->source[0] != '@') return 0;
	json_t *f = json_object_get(k->files, ar->source + 1);
	const char *p = json_string_value(f);
	if (!p) return 0;
	int line = 1;
	for (; *p && line < ar->linedefined; p++) line += *p == '\n';
	const char *end = p;
	for (; *end && line <= ar->lastlinedefined; end++) line += *end == '\n';
	return memmem(p, (size_t)(end - p), "yield", 5) != NULL;
}

static int l_interface(lua_State *L) {
	ms_sdk *k = sdk_from(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	json_t *ep = *jbox_new(L, json_object()); /* 2 */
	lua_getfield(L, 1, "fn");                 /* 3 */
	if (!lua_isfunction(L, 3)) return luaL_error(L, "app.interface: fn must be a function");
	lua_Debug ar;
	lua_pushvalue(L, 3);
	lua_getinfo(L, ">uS", &ar);
	push_comp_list(L, 1, "inputs");  /* 4 */
	push_comp_list(L, 1, "outputs"); /* 5 */
	json_t *inputs = json_array(), *outputs = json_array(), *params = json_array();
	json_object_set_new(ep, "params", params);
	json_object_set_new(ep, "inputs", inputs);
	json_object_set_new(ep, "outputs", outputs);
	size_t nin = lua_rawlen(L, 4), nout = lua_rawlen(L, 5);
	for (size_t i = 1; i <= nin; i++) {
		char name[32];
		const char *pname = NULL;
		lua_pushvalue(L, 3);
		if (!ar.isvararg || (int)i <= ar.nparams) pname = (int)i <= ar.nparams ? lua_getlocal(L, NULL, (int)i) : NULL;
		lua_pop(L, 1);
		if (!pname) snprintf(name, sizeof name, "arg%zu", i), pname = name;
		json_array_append_new(params, json_string(pname));
		lua_rawgeti(L, 4, (lua_Integer)i);
		json_t *c = comp_json(L, lua_gettop(L), "app.interface inputs");
		lua_pop(L, 1);
		json_t *props = json_object_get(c, "props");
		if (!json_object_get(props, "label")) json_object_set_new(props, "label", json_string(pname));
		json_array_append_new(inputs, c);
	}
	for (size_t i = 1; i <= nout; i++) {
		lua_rawgeti(L, 5, (lua_Integer)i);
		json_t *c = comp_json(L, lua_gettop(L), "app.interface outputs");
		lua_pop(L, 1);
		json_t *props = json_object_get(c, "props");
		char label[32];
		if (nout == 1) snprintf(label, sizeof label, "output");
		else snprintf(label, sizeof label, "output %zu", i - 1);
		if (!json_object_get(props, "label")) json_object_set_new(props, "label", json_string(label));
		json_array_append_new(outputs, c);
	}
	/* examples: rows of input values; a single input may list bare values */
	json_t *ex = json_array();
	json_object_set_new(ep, "examples", ex);
	lua_getfield(L, 1, "examples");
	if (lua_istable(L, -1)) {
		int exi = lua_gettop(L);
		size_t n = lua_rawlen(L, exi);
		for (size_t i = 1; i <= n; i++) {
			conv c = {OUT_BUDGET, ""};
			lua_rawgeti(L, exi, (lua_Integer)i);
			json_t *row = to_json(L, lua_gettop(L), 0, &c);
			lua_pop(L, 1);
			if (!row) return luaL_error(L, "app.interface: example %d: %s", (int)i, c.err);
			if (!json_is_array(row)) row = json_pack("[o]", row);
			json_array_append_new(ex, row);
		}
	} else if (!lua_isnil(L, -1)) {
		return luaL_error(L, "app.interface: examples must be a list of rows");
	}
	lua_pop(L, 1);
	static const char *const texts[] = {"title", "description", "article"};
	for (size_t i = 0; i < MS_ARRAY_LEN(texts); i++) {
		lua_getfield(L, 1, texts[i]);
		if (!lua_isnil(L, -1) && !lua_isstring(L, -1)) return luaL_error(L, "app.interface: %s must be a string", texts[i]);
		json_object_set_new(ep, texts[i], lua_isnil(L, -1) ? json_null() : json_string(lua_tostring(L, -1)));
		lua_pop(L, 1);
	}
	lua_getfield(L, 1, "api_name");
	const char *api = luaL_optstring(L, -1, "predict");
	char apiname[128];
	snprintf(apiname, sizeof apiname, "%s", api);
	for (int dup = 1;; dup++) { /* like Gradio: predict, predict_1, ... */
		int taken = 0;
		size_t i;
		json_t *e;
		json_array_foreach(k->endpoints, i, e) taken |= !strcmp(json_string_value(json_object_get(e, "api_name")), apiname);
		if (!taken) break;
		snprintf(apiname, sizeof apiname, "%.100s_%d", api, dup);
	}
	lua_pop(L, 1);
	json_object_set_new(ep, "api_name", json_string(apiname));
	lua_getfield(L, 1, "stream");
	int stream = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : looks_streaming(k, &ar);
	lua_pop(L, 1);
	json_object_set_new(ep, "stream", json_boolean(stream));
	lua_rawgeti(L, LUA_REGISTRYINDEX, k->fns_ref);
	lua_pushvalue(L, 3);
	lua_rawseti(L, -2, (lua_Integer)json_array_size(k->endpoints) + 1);
	json_array_append(k->endpoints, ep);
	return 0;
}

/* ---- model calls ---- */

static char K_MODEL, K_GEN;

/* Waits for the next host frame about request req; *out is a new reference. The reads
 * share the worker's buffered reader, so a stop while a frame is half read leaves the
 * stream aligned (the rest of it is read, and dropped, later). */
static int wait_model(ms_sdk *k, int req, json_t **out) {
	*out = NULL;
	for (;;) {
		json_t *m = NULL;
		int rc = ms_frame_read_next_json(k->fd, &k->in, &k->lua->tripped, &m);
		if (rc == MS_ECANCELED) return rc;
		if (rc) return k->broken = 1, rc;
		const char *t = json_string_value(json_object_get(m, "t"));
		if (t && !strcmp(t, "call")) { /* sent ahead (pipelining): it runs after this one */
			if (json_array_size(k->ahead) >= MS_SDK_MAX_AHEAD || json_array_append_new(k->ahead, m))
				return k->broken = 1, MS_EPROTO;
			continue;
		}
		json_t *r = json_object_get(m, "req");
		if (json_is_integer(r) && json_integer_value(r) == req) {
			*out = m;
			return 0;
		}
		json_decref(m); /* a stale answer to an abandoned request */
	}
}

static int model_fail(lua_State *L, ms_sdk *k, int rc) {
	if (rc == MS_ECANCELED) return luaL_error(L, "stopped while waiting for the model");
	k->broken = 1;
	return luaL_error(L, "lost the connection to the host (%s)", ms_strerror(rc));
}

static int send_model(lua_State *L, ms_sdk *k, const char *model, const char *op, json_t *args) {
	if (!args) return luaL_error(L, "out of memory");
	if (!k->in_call) {
		json_decref(args);
		return luaL_error(L, "model calls can only be made while the app handles a call");
	}
	int req = ++k->next_req;
	json_t *m = json_pack("{s:s,s:I,s:i,s:s,s:s,s:o}", "t", "model", "id", (json_int_t)k->call_id, "req", req,
			      "model", model, "op", op, "args", args);
	if (send_json(k, m) != 0) return model_fail(L, k, MS_ECLOSED);
	return req;
}

/* {opts} merged into args (raw, JSON-able values only) */
static json_t *args_with_opts(lua_State *L, int opts, json_t *args, const char *fn) {
	if (lua_isnoneornil(L, opts)) return args;
	if (!lua_istable(L, opts)) {
		json_decref(args);
		luaL_error(L, "%s: options must be a table", fn);
	}
	conv c = {OUT_BUDGET, ""};
	json_t *o = to_json(L, opts, 0, &c);
	if (!json_is_object(o)) {
		json_decref(o);
		if (json_array_size(o) == 0 && !c.err[0]) return args; /* {} */
		json_decref(args);
		luaL_error(L, "%s: options must be named fields", fn);
	}
	json_object_update_missing(args, o);
	json_decref(o);
	return args;
}

static const char *model_name(lua_State *L) {
	luaL_checktype(L, 1, LUA_TTABLE);
	if (rawfield(L, 1, "name") != LUA_TSTRING) luaL_error(L, "call model methods with ':' (m:generate(...))");
	const char *s = lua_tostring(L, -1);
	lua_pop(L, 1);
	return s;
}

typedef struct gen { int req, done; } gen;

static int gen_close(lua_State *L) {
	ms_sdk *k = sdk_from(L);
	gen *g = luaL_checkudata(L, 1, "ms.gen");
	if (!g->done && k->in_call) {
		g->done = 1;
		send_json(k, json_pack("{s:s,s:I,s:i}", "t", "model_cancel", "id", (json_int_t)k->call_id, "req", g->req));
	}
	g->done = 1;
	return 0;
}

static int gen_next(lua_State *L) {
	ms_sdk *k = sdk_from(L);
	gen *g = lua_touserdata(L, lua_upvalueindex(1));
	if (g->done) return 0;
	json_t *m;
	int rc = wait_model(k, g->req, &m);
	if (rc) return model_fail(L, k, rc);
	const char *t = json_string_value(json_object_get(m, "t"));
	if (t && !strcmp(t, "model_piece")) {
		json_t *s = json_object_get(m, "text");
		lua_pushlstring(L, json_string_value(s) ? json_string_value(s) : "", json_string_length(s));
		json_decref(m);
		return 1;
	}
	g->done = 1;
	if (t && !strcmp(t, "model_result")) {
		json_decref(m);
		return 0;
	}
	char msg[512];
	snprintf(msg, sizeof msg, "%s", json_string_value(json_object_get(m, "message")) ? json_string_value(json_object_get(m, "message")) : "model call failed");
	json_decref(m);
	return luaL_error(L, "model error: %s", msg);
}

/* m:generate(prompt, opts) / m:chat(messages, opts): an iterator over text pieces */
static int start_gen(lua_State *L, const char *op, json_t *args) {
	ms_sdk *k = sdk_from(L);
	const char *name = model_name(L);
	args = args_with_opts(L, 3, args, op);
	int req = send_model(L, k, name, op, args);
	gen *g = lua_newuserdatauv(L, sizeof *g, 0);
	g->req = req, g->done = 0;
	luaL_setmetatable(L, "ms.gen");
	lua_pushvalue(L, -1);
	lua_pushcclosure(L, gen_next, 1);
	lua_insert(L, -2);
	lua_pushnil(L);
	lua_insert(L, -2);
	lua_pushnil(L);
	lua_insert(L, -2);
	return 4; /* next, nil, nil, closing value: a `break` cancels the generation */
}

/* Argument idx as a JSON string; invalid UTF-8 (a string built byte by byte) becomes U+FFFD
 * as the runtime's tokenizers would read it, instead of failing json_pack. */
static json_t *text_arg(lua_State *L, int idx) {
	size_t len;
	const char *p = luaL_checklstring(L, idx, &len);
	json_t *j = json_stringn(p, len);
	return j ? j : json_sanitized(p, len);
}

static int m_generate(lua_State *L) {
	model_name(L);
	json_t *t = text_arg(L, 2);
	return start_gen(L, "generate", json_pack("{s:o}", "prompt", t));
}

static int m_chat(lua_State *L) {
	model_name(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	conv c = {OUT_BUDGET, ""};
	json_t *msgs = out_chatbot(L, 2, &c);
	if (!msgs) return luaL_error(L, "chat: %s", c.err);
	return start_gen(L, "chat", json_pack("{s:o}", "messages", msgs));
}

/* on_by_default (a boolean option, true unless given) goes in after the caller's options,
 * so that {special = false} overrides it */
static int simple_op(lua_State *L, const char *op, json_t *args, const char *on_by_default) {
	ms_sdk *k = sdk_from(L);
	const char *name = model_name(L);
	args = args_with_opts(L, 3, args, op);
	if (on_by_default && !json_object_get(args, on_by_default)) json_object_set_new(args, on_by_default, json_true());
	int req = send_model(L, k, name, op, args);
	json_t *m;
	int rc = wait_model(k, req, &m);
	if (rc) return model_fail(L, k, rc);
	const char *t = json_string_value(json_object_get(m, "t"));
	if (t && !strcmp(t, "model_result")) {
		json_t **box = jbox_new(L, m);
		push_json(L, json_object_get(*box, "result"), 0);
		return 1;
	}
	char msg[512];
	snprintf(msg, sizeof msg, "%s", json_string_value(json_object_get(m, "message")) ? json_string_value(json_object_get(m, "message")) : "model call failed");
	json_decref(m);
	return luaL_error(L, "model error: %s", msg);
}

static int m_classify(lua_State *L) {
	model_name(L);
	return simple_op(L, "classify", json_pack("{s:o}", "text", text_arg(L, 2)), NULL);
}
static int m_embed(lua_State *L) {
	model_name(L);
	return simple_op(L, "embed", json_pack("{s:o}", "text", text_arg(L, 2)), "normalize");
}
static int m_tokenize(lua_State *L) {
	model_name(L);
	return simple_op(L, "tokenize", json_pack("{s:o}", "text", text_arg(L, 2)), "special");
}
static int m_detokenize(lua_State *L) {
	model_name(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	conv c = {OUT_BUDGET, ""};
	json_t *ids = to_json(L, 2, 0, &c);
	if (!json_is_array(ids)) {
		json_decref(ids);
		return luaL_error(L, "detokenize: ids must be a list of integers");
	}
	lua_settop(L, 3); /* ids converted; the options stay */
	return simple_op(L, "detokenize", json_pack("{s:o}", "ids", ids), NULL);
}

/* m:logits(text or {ids}): the next-token logits, a list of vocab numbers */
static int m_logits(lua_State *L) {
	model_name(L);
	if (lua_istable(L, 2)) {
		conv c = {OUT_BUDGET, ""};
		json_t *ids = to_json(L, 2, 0, &c);
		if (!json_is_array(ids)) {
			json_decref(ids);
			return luaL_error(L, "logits: pass a text or a list of token ids");
		}
		lua_settop(L, 2);
		return simple_op(L, "logits", json_pack("{s:o}", "ids", ids), NULL);
	}
	return simple_op(L, "logits", json_pack("{s:o}", "text", text_arg(L, 2)), "special");
}

static int m_tostring(lua_State *L) {
	lua_pushfstring(L, "model(\"%s\")", model_name(L));
	return 1;
}

static int model_allowed(ms_sdk *k, const char *name) {
	size_t i, n = strlen(name);
	json_t *m;
	json_array_foreach(k->models, i, m) {
		const char *s = json_string_value(m);
		if (!s) continue;
		const char *at = strchr(s, '@');
		size_t len = at ? (size_t)(at - s) : strlen(s);
		if (!strcmp(s, name) || (len == n && !strncmp(s, name, n))) return 1;
	}
	return 0;
}

static int l_model(lua_State *L) {
	ms_sdk *k = sdk_from(L);
	const char *name = luaL_checkstring(L, 1);
	if (!model_allowed(k, name))
		return luaL_error(L, "model \"%s\" is not declared in the card's `models` list (README.md front matter)", name);
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "name");
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_MODEL);
	lua_setmetatable(L, -2);
	return 1;
}

/* ---- setup ---- */

static int setup(lua_State *L) {
	ms_sdk *k = lua_touserdata(L, 1);
	json_t *space = lua_touserdata(L, 2);
	lua_pushlightuserdata(L, k);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &K_SDK);
	lua_newtable(L);
	k->fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_newtable(L);
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_rawsetp(L, LUA_REGISTRYINDEX, &K_COMP);
	lua_newtable(L);
	lua_pushcfunction(L, jbox_gc);
	lua_setfield(L, -2, "__gc");
	lua_rawsetp(L, LUA_REGISTRYINDEX, &K_JBOX);

	static const luaL_Reg methods[] = {{"generate", m_generate}, {"chat", m_chat}, {"classify", m_classify},
					   {"embed", m_embed}, {"tokenize", m_tokenize}, {"detokenize", m_detokenize},
					   {"logits", m_logits},
					   {NULL, NULL}};
	lua_newtable(L);
	luaL_newlib(L, methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, m_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_rawsetp(L, LUA_REGISTRYINDEX, &K_MODEL);
	luaL_newmetatable(L, "ms.gen");
	lua_pushcfunction(L, gen_close);
	lua_setfield(L, -2, "__close");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
	(void)K_GEN;

	ms_lua *s = ms_lua_from(L);
	lua_pushcfunction(L, l_print);
	ms_lua_define(s, "print");
	lua_pushcfunction(L, l_progress);
	ms_lua_define(s, "progress");
	lua_pushcfunction(L, l_model);
	ms_lua_define(s, "model");
	lua_newtable(L); /* app */
	lua_pushcfunction(L, l_interface);
	lua_setfield(L, -2, "interface");
	ms_lua_define(s, "app");
	lua_newtable(L); /* ui */
	for (size_t i = 0; i < MS_ARRAY_LEN(comp_names); i++) {
		lua_pushstring(L, comp_names[i].type);
		lua_pushstring(L, comp_names[i].alias);
		lua_pushcclosure(L, l_ui_make, 2);
		lua_setfield(L, -2, comp_names[i].alias);
	}
	ms_lua_define(s, "ui");
	push_json(L, json_is_object(space) ? space : NULL, 0);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);
	}
	ms_lua_define(s, "space");
	return 0;
}

int ms_sdk_init(ms_sdk *k, ms_lua *s, int fd, json_t *files, json_t *models, json_t *space) {
	memset(k, 0, sizeof *k);
	ms_frame_reader_init(&k->in, 0);
	ms_buf_init(&k->out);
	k->lua = s, k->fd = fd, k->files = files;
	k->models = json_is_array(models) ? models : NULL;
	k->endpoints = json_array();
	k->ahead = json_array();
	if (!k->endpoints || !k->ahead) return MS_ENOMEM;
	lua_State *L = s->L;
	lua_pushcfunction(L, setup);
	lua_pushlightuserdata(L, k);
	lua_pushlightuserdata(L, space);
	if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
		lua_pop(L, 1);
		return MS_ENOMEM;
	}
	return 0;
}

void ms_sdk_free(ms_sdk *k) {
	json_decref(k->endpoints);
	json_decref(k->ahead);
	k->endpoints = k->ahead = NULL;
	ms_frame_reader_free(&k->in);
	ms_buf_free(&k->out);
}

int ms_sdk_read(ms_sdk *k, json_t **msg) {
	if (json_array_size(k->ahead)) {
		*msg = json_incref(json_array_get(k->ahead, 0));
		json_array_remove(k->ahead, 0);
		return 0;
	}
	return ms_frame_read_next_json(k->fd, &k->in, NULL, msg);
}

static const char *error_text(lua_State *L, int idx, char *buf, size_t len) {
	if (lua_type(L, idx) == LUA_TSTRING) return lua_tostring(L, idx);
	if (lua_type(L, idx) == LUA_TNUMBER) {
		snprintf(buf, len, "%.14g", lua_tonumber(L, idx));
		return buf;
	}
	snprintf(buf, len, "(error object is a %s value)", luaL_typename(L, idx));
	return buf;
}

int ms_sdk_load(ms_sdk *k, const char *entry, char *err, size_t errlen) {
	lua_State *L = k->lua->L;
	const char *key;
	json_t *v;
	json_object_foreach(k->files, key, v) {
		if (!json_is_string(v)) return ms_errf(err, errlen, MS_EFORMAT, "files[\"%s\"] is not text", key);
		if (ms_lua_add_file(k->lua, key, json_string_value(v), json_string_length(v)))
			return ms_errf(err, errlen, MS_ENOMEM, "out of memory adding %s", key);
	}
	json_t *src = json_object_get(k->files, entry);
	if (!json_is_string(src)) return ms_errf(err, errlen, MS_ENOENT, "the app file %s was not sent", entry);
	char chunk[256], eb[128];
	snprintf(chunk, sizeof chunk, "@%s", entry);
	if (ms_lua_load(L, json_string_value(src), json_string_length(src), chunk) != 0) {
		ms_errf(err, errlen, MS_EFORMAT, "%s", error_text(L, -1, eb, sizeof eb));
		lua_pop(L, 1);
		return MS_EFORMAT;
	}
	k->lua->trip_on_oom = 1;
	k->lua->running = L;
	int rc = lua_pcall(L, 0, 0, 0);
	k->lua->trip_on_oom = 0;
	if (rc != LUA_OK) {
		int tripped = k->lua->tripped;
		ms_lua_untrip(k->lua);
		if (tripped == MS_TRIP_TIMEOUT) ms_errf(err, errlen, MS_ETIMEOUT, "%s: loading took longer than the app's time limit", entry);
		else if (tripped == MS_TRIP_MEMORY || rc == LUA_ERRMEM) ms_errf(err, errlen, MS_ENOMEM, "%s: out of memory while loading (the card's memory limit)", entry);
		else ms_errf(err, errlen, MS_EFORMAT, "%s", error_text(L, -1, eb, sizeof eb));
		lua_settop(L, 0);
		return MS_EFORMAT;
	}
	lua_settop(L, 0);
	if (json_array_size(k->endpoints) == 0)
		return ms_errf(err, errlen, MS_EFORMAT, "%s declares no interface: call app.interface{fn = ..., inputs = ..., outputs = ...}", entry);
	return 0;
}

json_t *ms_sdk_ready(ms_sdk *k) {
	json_t *title = json_null(), *desc = json_null();
	size_t i;
	json_t *e;
	json_array_foreach(k->endpoints, i, e) {
		if (json_is_null(title) && json_is_string(json_object_get(e, "title"))) title = json_object_get(e, "title");
		if (json_is_null(desc) && json_is_string(json_object_get(e, "description"))) desc = json_object_get(e, "description");
	}
	return json_pack("{s:s,s:O,s:O,s:O}", "t", "ready", "title", title, "description", desc, "endpoints", k->endpoints);
}

/* ---- one call ---- */

typedef struct prep { ms_sdk *k; size_t ep; json_t *data; } prep;

/* Builds the call's coroutine with the function and its converted inputs (may raise). */
static int prepare_call(lua_State *L) {
	prep *p = lua_touserdata(L, 1);
	json_t *ep = json_array_get(p->k->endpoints, p->ep), *inputs = json_object_get(ep, "inputs");
	lua_State *co = lua_newthread(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->k->fns_ref);
	lua_rawgeti(L, -1, (lua_Integer)p->ep + 1);
	lua_xmove(L, co, 1);
	lua_pop(L, 1);
	size_t n = json_array_size(inputs);
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_array_get(p->data, i);
		json_t *in = json_array_get(inputs, i);
		if ((!v || json_is_null(v)) && !strcmp(json_string_value(json_object_get(in, "type")), "state"))
			v = json_object_get(json_object_get(in, "props"), "value"); /* a session's first call */
		if (v) push_json(L, v, 0);
		else lua_pushnil(L);
		lua_xmove(L, co, 1);
	}
	return 1;
}

/* The outputs on top of co (n values) as the endpoint's wire values; NULL + c->err. */
static json_t *convert_outputs(lua_State *co, int n, json_t *ep, conv *c) {
	json_t *outs = json_object_get(ep, "outputs");
	size_t nout = json_array_size(outs);
	if ((size_t)n > nout && !(nout == 0 && n == 1 && lua_isnil(co, -1))) {
		snprintf(c->err, sizeof c->err, "the function returned %d values for %zu outputs", n, nout);
		return NULL;
	}
	json_t *data = json_array();
	int base = lua_gettop(co) - n + 1;
	for (size_t i = 0; data && i < nout; i++) {
		const char *type = json_string_value(json_object_get(json_array_get(outs, i), "type"));
		json_t *v = (int)i < n ? out_value(co, base + (int)i, type, c) : json_null();
		if (!v) {
			char m[sizeof c->err + 64];
			snprintf(m, sizeof m, "output %zu (%.20s): %s", i + 1, type, c->err);
			snprintf(c->err, sizeof c->err, "%.200s", m);
			json_decref(data);
			return NULL;
		}
		json_array_append_new(data, v);
	}
	return data;
}

/* "app.lua:12: message" -> "message": the user sees what the app said (the log keeps all) */
static const char *strip_position(ms_sdk *k, const char *msg) {
	const char *colon = strchr(msg, ':');
	if (!colon || colon == msg) return msg;
	char name[256];
	size_t n = (size_t)(colon - msg);
	if (n >= sizeof name) return msg;
	memcpy(name, msg, n);
	name[n] = 0;
	if (!json_object_get(k->files, name)) return msg;
	const char *p = colon + 1;
	if (*p < '0' || *p > '9') return msg;
	while (*p >= '0' && *p <= '9') p++;
	if (p[0] != ':' || p[1] != ' ') return msg;
	return p + 2;
}

/* The budget's watchdog. Arming and disarming ITIMER_REAL around every call cost two
 * syscalls per call (expensive in a VM), so the timer is armed lazily: a budget only sets
 * a deadline, and the timer is set only when none is pending or the pending one would fire
 * too late. When it fires early (the call it was armed for ended, a later one runs), the
 * SIGALRM handler re-arms it for what is left (ms_sdk_alarm_due). So a worker serving
 * short calls back to back makes no timer syscall at all; an idle worker takes at most one
 * stray SIGALRM per budget (ignored; the blocking reads retry on EINTR). */
static volatile int64_t g_deadline_ns; /* 0: no budget running */
static volatile int64_t g_fire_ns;     /* when the pending timer fires */
static volatile sig_atomic_t g_pending;

static int64_t mono_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO, async-signal-safe */
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_itimer(int64_t ns) {
	if (ns < 1000) ns = 1000; /* 0 would disarm */
	struct itimerval it = {{0, 0}, {(time_t)(ns / 1000000000), (suseconds_t)(ns % 1000000000 / 1000)}};
	setitimer(ITIMER_REAL, &it, NULL);
}

void ms_sdk_arm_timer(double seconds) {
	if (seconds <= 0) {
		g_deadline_ns = 0; /* a pending timer finds no budget and stays quiet */
		return;
	}
	int64_t now = mono_ns(), d = now + (int64_t)(seconds * 1e9);
	g_deadline_ns = d;
	if (!g_pending || g_fire_ns > d) {
		g_pending = 1;
		g_fire_ns = d;
		set_itimer(d - now);
	}
}

int ms_sdk_alarm_due(void) {
	int64_t d = g_deadline_ns;
	if (!d) {
		g_pending = 0;
		return 0;
	}
	int64_t now = mono_ns();
	if (now >= d) {
		g_pending = 0;
		return 1;
	}
	g_pending = 1; /* fired early: armed for an earlier budget */
	g_fire_ns = d;
	set_itimer(d - now);
	return 0;
}

static void set_timer(double s) { ms_sdk_arm_timer(s); }

static int dump_to_buf(const char *buf, size_t size, void *data) {
	return ms_buf_append(data, buf, size) ? -1 : 0;
}

/* {"t":"done","id":N,"data":...} put together around the data (no wrapping object, no
 * printf: this is every call's answer); takes the reference to data. */
static int send_done(ms_sdk *k, json_t *data) {
	ms_buf *b = &k->out;
	char num[24];
	int nd = 0;
	unsigned long long u = (unsigned long long)(k->call_id < 0 ? -k->call_id : k->call_id);
	do num[sizeof num - 1 - nd++] = (char)('0' + u % 10); while ((u /= 10) && nd < 22);
	if (k->call_id < 0) num[sizeof num - 1 - nd++] = '-';
	ms_buf_reset(b);
	static const char head[] = "\0\0\0\0{\"t\":\"done\",\"id\":";
	int rc = ms_buf_append(b, head, sizeof head - 1);
	if (!rc) rc = ms_buf_append(b, num + sizeof num - nd, (size_t)nd);
	if (!rc) rc = ms_buf_append(b, ",\"data\":", 8);
	if (!rc && json_dump_callback(data, dump_to_buf, b, JSON_COMPACT | JSON_ENCODE_ANY)) rc = MS_ENOMEM;
	if (!rc) rc = ms_buf_append(b, "}", 1);
	json_decref(data);
	if (rc) return rc;
	size_t n = b->len - 4;
	if (n > UINT32_MAX) return MS_ETOOBIG;
	unsigned char *h = (unsigned char *)b->data;
	h[0] = (unsigned char)n, h[1] = (unsigned char)(n >> 8), h[2] = (unsigned char)(n >> 16), h[3] = (unsigned char)(n >> 24);
	k->writing = 1;
	const char *p = b->data;
	size_t left = b->len;
	while (left) {
		ssize_t w = write(k->fd, p, left);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) {
			rc = MS_ECLOSED;
			break;
		}
		p += w, left -= (size_t)w;
	}
	k->writing = 0;
	return rc;
}

static int send_error(ms_sdk *k, const char *kind, const char *msg) {
	json_t *s = json_string(msg);
	if (!s) s = json_sanitized(msg, strlen(msg));
	return send_json(k, json_pack("{s:s,s:I,s:s,s:o}", "t", "error", "id", (json_int_t)k->call_id, "kind", kind, "message", s));
}

void ms_sdk_note_early_cancel(ms_sdk *k, int id) {
	k->early_cancel[k->n_early_cancels % MS_SDK_EARLY_CANCELS] = id;
	k->n_early_cancels = (k->n_early_cancels + 1) % (MS_SDK_EARLY_CANCELS * 1024);
}

/* 1 when the call was cancelled before it started (and forgets that cancel). */
static int take_early_cancel(ms_sdk *k, long long id) {
	for (int i = 0; i < MS_SDK_EARLY_CANCELS; i++)
		if (k->early_cancel[i] == (sig_atomic_t)id) {
			k->early_cancel[i] = 0;
			return 1;
		}
	return 0;
}

static int run_call(ms_sdk *k, size_t epi, json_t *data, double timeout_s) {
	ms_lua *s = k->lua;
	lua_State *L = s->L;
	json_t *ep = json_array_get(k->endpoints, epi);
	prep p = {k, epi, data};
	lua_settop(L, 0);
	lua_pushcfunction(L, prepare_call);
	lua_pushlightuserdata(L, &p);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK)
		return send_error(k, "internal", "out of memory converting the inputs");
	lua_State *co = lua_tothread(L, 1);
	int nargs = (int)json_array_size(json_object_get(ep, "inputs"));
	json_t *last = NULL;
	const char *kind = NULL;
	char msg[1024];
	int rc = 0;
	set_timer(timeout_s); /* before in_call: a cancel's 0.5 s hard stop then overrides it */
	k->in_call = 1;
	s->trip_on_oom = 1;
	s->running = co;
	if (take_early_cancel(k, k->call_id)) ms_lua_trip(s, MS_TRIP_CANCEL);
	for (;;) {
		int nres = 0;
		int st = lua_resume(co, L, nargs, &nres);
		nargs = 0;
		if (st == LUA_YIELD || st == LUA_OK) {
			conv c = {OUT_BUDGET, ""};
			json_t *out = (st == LUA_OK && nres == 0 && last) ? json_incref(last) : convert_outputs(co, nres, ep, &c);
			lua_pop(co, nres);
			if (!out) {
				kind = "output";
				snprintf(msg, sizeof msg, "%s", c.err[0] ? c.err : "out of memory");
				break;
			}
			if (st == LUA_OK) {
				set_timer(0);
				rc = send_done(k, out);
				break;
			}
			json_decref(last);
			last = out;
			if (!s->tripped && send_json(k, json_pack("{s:s,s:I,s:O}", "t", "yield", "id", (json_int_t)k->call_id, "data", out))) {
				rc = MS_ECLOSED;
				break;
			}
			continue;
		}
		set_timer(0);
		char eb[128];
		const char *full = error_text(co, -1, eb, sizeof eb);
		int tripped = s->tripped;
		kind = tripped == MS_TRIP_TIMEOUT ? "timeout" : tripped == MS_TRIP_CANCEL ? "cancelled"
			: (tripped == MS_TRIP_MEMORY || st == LUA_ERRMEM) ? "memory" : "app";
		if (!strcmp(kind, "timeout")) snprintf(msg, sizeof msg, "the call took longer than the app's time limit");
		else if (!strcmp(kind, "cancelled")) snprintf(msg, sizeof msg, "cancelled");
		else if (!strcmp(kind, "memory")) snprintf(msg, sizeof msg, "out of memory: the app went over its memory limit (%zu MiB)", s->mem_limit >> 20);
		else {
			json_t *s2 = json_string(full);
			if (!s2) s2 = json_sanitized(full, strlen(full));
			send_json(k, json_pack("{s:s,s:I,s:s,s:o}", "t", "log", "id", (json_int_t)k->call_id, "level", "error", "line", s2));
			snprintf(msg, sizeof msg, "%s", strip_position(k, full));
		}
		break;
	}
	set_timer(0);
	k->in_call = 0;
	s->trip_on_oom = 0;
	ms_lua_untrip(s);
	s->running = L;
	json_decref(last);
	if (kind) rc = send_error(k, kind, msg);
	lua_settop(L, 0);
	if (s->mem_used > s->mem_limit / 2) lua_gc(L, LUA_GCCOLLECT);
	return rc;
}

int ms_sdk_call(ms_sdk *k, json_t *call, double timeout_s) {
	json_t *id = json_object_get(call, "id");
	const char *api = json_string_value(json_object_get(call, "api_name"));
	json_t *data = json_object_get(call, "data");
	if (!json_is_integer(id) || !api || !json_is_array(data)) return MS_EPROTO;
	k->call_id = json_integer_value(id);
	k->log_lines = 0;
	k->last_progress_ns = 0;
	ms_sdk_prepare_hard_stop(k, k->call_id);
	json_t *seed = json_object_get(call, "seed");
	ms_lua_seed(k->lua, json_is_integer(seed) ? (long long)json_integer_value(seed) : (long long)k->call_id);
	size_t i;
	json_t *e;
	json_array_foreach(k->endpoints, i, e) {
		if (strcmp(json_string_value(json_object_get(e, "api_name")), api) != 0) continue;
		int rc = run_call(k, i, data, timeout_s);
		if (rc) return rc;
		return k->broken ? MS_EPROTO : 0;
	}
	char m[256];
	snprintf(m, sizeof m, "this app has no endpoint named \"%.100s\"", api);
	return send_error(k, "internal", m);
}
