/* host/card.c: README.md front matter (libyaml -> jansson) and body (cmark-gfm). */
#include "host/card.h"

#include <cmark-gfm-core-extensions.h>
#include <cmark-gfm.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

const char *const ms_card_colors[] = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray", NULL};

/* Guards against alias bombs ("billion laughs") and deep nesting in front matter. */
#define CARD_MAX_NODES 20000
#define CARD_MAX_DEPTH 32

void ms_card_init(ms_card *c) {
	memset(c, 0, sizeof *c);
	c->timeout_s = MS_CARD_DEFAULT_TIMEOUT_S;
	c->memory_mb = MS_CARD_DEFAULT_MEMORY_MB;
	c->concurrency = MS_CARD_DEFAULT_CONCURRENCY;
	c->max_queue = MS_CARD_DEFAULT_MAX_QUEUE;
}

static void free_list(char **l, size_t n) {
	for (size_t i = 0; i < n; i++) free(l[i]);
	free(l);
}

void ms_card_free(ms_card *c) {
	free(c->title);
	free(c->emoji);
	free(c->color_from);
	free(c->color_to);
	free(c->sdk);
	free(c->app_file);
	free(c->short_description);
	free(c->license);
	free_list(c->models, c->nmodels);
	free_list(c->preload_from_hub, c->npreload);
	free_list(c->tags, c->ntags);
	json_decref(c->data);
	free(c->body_md);
	free(c->html);
	ms_card_init(c);
}

int ms_card_color_valid(const char *s) {
	for (size_t i = 0; s && ms_card_colors[i]; i++)
		if (strcmp(s, ms_card_colors[i]) == 0) return 1;
	return 0;
}

/* ---------------------------------------------------------------- markdown */

static void attach_ext(cmark_parser *p, const char *name) {
	cmark_syntax_extension *e = cmark_find_syntax_extension(name);
	if (e) cmark_parser_attach_syntax_extension(p, e);
}

char *ms_markdown_to_html(const char *md, size_t len) {
	/* Without CMARK_OPT_UNSAFE cmark-gfm replaces raw HTML with a comment and blanks
	 * javascript:/vbscript:/file:/data: (non-image) URLs; tagfilter is a second fence in
	 * case a future default changes. VALIDATE_UTF8 stops invalid bytes reaching the page. */
	int opts = CMARK_OPT_DEFAULT | CMARK_OPT_VALIDATE_UTF8 | CMARK_OPT_GITHUB_PRE_LANG;
	cmark_gfm_core_extensions_ensure_registered();
	cmark_parser *p = cmark_parser_new(opts);
	if (!p) return NULL;
	attach_ext(p, "table");
	attach_ext(p, "strikethrough");
	attach_ext(p, "autolink");
	attach_ext(p, "tasklist");
	attach_ext(p, "tagfilter");
	cmark_parser_feed(p, md ? md : "", md ? len : 0);
	cmark_node *doc = cmark_parser_finish(p);
	char *html = doc ? cmark_render_html(doc, opts, cmark_parser_get_syntax_extensions(p)) : NULL;
	if (doc) cmark_node_free(doc);
	cmark_parser_free(p);
	if (!html) return NULL;
	/* cmark allocates with its default allocator (malloc), so the caller can free() it */
	return html;
}

/* ---------------------------------------------------------------- YAML -> JSON */

typedef struct conv {
	yaml_document_t *doc;
	int line0;     /* README line of the YAML text's first line, minus 1 */
	size_t nodes;
	char *err;
	size_t errlen;
	int failed;
} conv;

static int node_line(const conv *cv, const yaml_node_t *n) { return (int)n->start_mark.line + cv->line0 + 1; }

static int plain_is(const char *s, const char *const *words) {
	for (size_t i = 0; words[i]; i++)
		if (strcmp(s, words[i]) == 0) return 1;
	return 0;
}

/* YAML 1.2 core schema for plain scalars; quoted scalars stay strings. (libyaml's document
 * loader gives every untagged scalar the !!str tag, so explicit tags cannot be told apart
 * and are ignored.) */
static json_t *scalar_to_json(const yaml_node_t *n) {
	const char *s = (const char *)n->data.scalar.value;
	size_t len = n->data.scalar.length;
	int plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	if (!plain || strlen(s) != len) return json_stringn(s, len);
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
	static const char *const trues[] = {"true", "True", "TRUE", NULL};
	static const char *const falses[] = {"false", "False", "FALSE", NULL};
	if (plain_is(s, nulls)) return json_null();
	if (plain_is(s, trues)) return json_true();
	if (plain_is(s, falses)) return json_false();
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (*s && *end == 0 && errno == 0 && (isdigit((unsigned char)s[0]) || ((s[0] == '-' || s[0] == '+') && isdigit((unsigned char)s[1]))))
		return json_integer(v);
	int numeric = 1;
	for (const char *q = s; *q; q++)
		if (!strchr("0123456789+-.eE", *q)) numeric = 0;
	if (numeric && (isdigit((unsigned char)s[0]) || s[0] == '.' || s[0] == '-' || s[0] == '+')) {
		errno = 0;
		double d = strtod(s, &end);
		if (*end == 0 && errno == 0 && end != s) return json_real(d);
	}
	return json_stringn(s, len);
}

static json_t *node_to_json(conv *cv, yaml_node_t *n, int depth) {
	if (!n) return json_null();
	if (++cv->nodes > CARD_MAX_NODES || depth > CARD_MAX_DEPTH) {
		if (!cv->failed)
			ms_errf(cv->err, cv->errlen, MS_EFORMAT, "README.md line %d: front matter too large or too deeply nested (aliases?)",
				node_line(cv, n));
		cv->failed = 1;
		return NULL;
	}
	switch (n->type) {
	case YAML_SCALAR_NODE: return scalar_to_json(n);
	case YAML_SEQUENCE_NODE: {
		json_t *a = json_array();
		for (yaml_node_item_t *it = n->data.sequence.items.start; a && it < n->data.sequence.items.top; it++) {
			json_t *v = node_to_json(cv, yaml_document_get_node(cv->doc, *it), depth + 1);
			if (!v || json_array_append_new(a, v)) { json_decref(a); return NULL; }
		}
		return a;
	}
	case YAML_MAPPING_NODE: {
		json_t *o = json_object();
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start; o && p < n->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(cv->doc, p->key);
			if (!k || k->type != YAML_SCALAR_NODE) {
				if (!cv->failed)
					ms_errf(cv->err, cv->errlen, MS_EFORMAT, "README.md line %d: keys must be plain text",
						k ? node_line(cv, k) : cv->line0 + 1);
				cv->failed = 1;
				json_decref(o);
				return NULL;
			}
			json_t *v = node_to_json(cv, yaml_document_get_node(cv->doc, p->value), depth + 1);
			if (!v || json_object_setn_new(o, (const char *)k->data.scalar.value, k->data.scalar.length, v)) {
				json_decref(o);
				return NULL;
			}
		}
		return o;
	}
	default: return json_null();
	}
}

/* ---------------------------------------------------------------- fields */

typedef struct field_ctx {
	ms_card *c;
	conv *cv;
	char *err;
	size_t errlen;
} field_ctx;

#define FIELD_ERR(fc, n, ...) field_err((fc), (n), __VA_ARGS__)

static int field_err(field_ctx *fc, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int field_err(field_ctx *fc, const yaml_node_t *n, const char *fmt, ...) {
	char msg[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return ms_errf(fc->err, fc->errlen, MS_EFORMAT, "README.md line %d: %s", node_line(fc->cv, n), msg);
}

static int dup_text(field_ctx *fc, const char *key, const yaml_node_t *n, char **out) {
	if (n->type != YAML_SCALAR_NODE) return FIELD_ERR(fc, n, "%s must be text, not a list or mapping", key);
	free(*out);
	*out = strndup((const char *)n->data.scalar.value, n->data.scalar.length);
	return *out ? 0 : MS_ENOMEM;
}

static int parse_bool(field_ctx *fc, const char *key, const yaml_node_t *n, int *out) {
	json_t *j = n->type == YAML_SCALAR_NODE ? scalar_to_json(n) : NULL;
	int ok = j && json_is_boolean(j);
	if (ok) *out = json_is_true(j);
	json_decref(j);
	return ok ? 0 : FIELD_ERR(fc, n, "%s must be true or false", key);
}

/* Integers, optionally with a unit suffix from units (each "suffix=multiplier"). */
static int parse_int(field_ctx *fc, const char *key, const yaml_node_t *n, long lo, long hi, const char *unit_help,
		     const char *const *units, int *out) {
	if (n->type != YAML_SCALAR_NODE) goto bad;
	const char *s = (const char *)n->data.scalar.value;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || errno) goto bad;
	while (*end == ' ') end++;
	if (*end) {
		long mult = 0;
		for (size_t i = 0; units && units[i]; i++) {
			const char *eq = strchr(units[i], '=');
			if ((size_t)(eq - units[i]) == strlen(end) && strncasecmp(end, units[i], (size_t)(eq - units[i])) == 0)
				mult = atol(eq + 1);
		}
		if (!mult || v > LONG_MAX / mult) goto bad;
		v *= mult;
	}
	if (v < lo || v > hi) return FIELD_ERR(fc, n, "%s must be between %ld and %ld%s", key, lo, hi, unit_help);
	*out = (int)v;
	return 0;
bad:
	return FIELD_ERR(fc, n, "%s must be a whole number%s", key, unit_help);
}

/* A list of text items; a single text value counts as a one-item list. */
static int parse_list(field_ctx *fc, const char *key, const yaml_node_t *n, char ***out, size_t *nout) {
	free_list(*out, *nout);
	*out = NULL;
	*nout = 0;
	if (n->type == YAML_SCALAR_NODE) {
		if (n->data.scalar.length == 0 && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) return 0; /* "key:" = empty */
		*out = calloc(1, sizeof(char *));
		if (!*out || !((*out)[0] = strndup((const char *)n->data.scalar.value, n->data.scalar.length))) return MS_ENOMEM;
		*nout = 1;
		return 0;
	}
	if (n->type != YAML_SEQUENCE_NODE) return FIELD_ERR(fc, n, "%s must be a list (- item)", key);
	size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	*out = calloc(cnt ? cnt : 1, sizeof(char *));
	if (!*out) return MS_ENOMEM;
	for (size_t i = 0; i < cnt; i++) {
		yaml_node_t *it = yaml_document_get_node(fc->cv->doc, n->data.sequence.items.start[i]);
		if (!it || it->type != YAML_SCALAR_NODE)
			return FIELD_ERR(fc, it ? it : n, "each item of %s must be text", key);
		if (!((*out)[i] = strndup((const char *)it->data.scalar.value, it->data.scalar.length))) return MS_ENOMEM;
		*nout = i + 1;
	}
	return 0;
}

static int id_part_ok(const char *s, size_t n) {
	if (n == 0 || n > 96) return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i])) return 0;
	return s[0] != '.' && s[0] != '-';
}

int ms_card_model_split(const char *entry, char *repo, size_t repolen, char *rev, size_t revlen) {
	if (!entry) return MS_EINVAL;
	const char *slash = strchr(entry, '/');
	const char *at = strchr(entry, '@');
	size_t rlen = at ? (size_t)(at - entry) : strlen(entry);
	if (!slash || slash > entry + rlen) return MS_EINVAL;
	if (!id_part_ok(entry, (size_t)(slash - entry)) || !id_part_ok(slash + 1, rlen - (size_t)(slash + 1 - entry)))
		return MS_EINVAL;
	const char *r = at ? at + 1 : "";
	if (at && !*r) return MS_EINVAL;
	for (const char *q = r; *q; q++)
		if (!isalnum((unsigned char)*q) && !strchr("._-/", *q)) return MS_EINVAL;
	if (strstr(r, "..") || rlen >= repolen || strlen(r) >= revlen) return MS_EINVAL;
	if (repo) { memcpy(repo, entry, rlen); repo[rlen] = 0; }
	if (rev) strcpy(rev, r);
	return 0;
}

static int app_file_ok(const char *s) {
	if (!*s || s[0] == '/' || strlen(s) > 255) return 0;
	for (const char *q = s; *q; q++)
		if ((unsigned char)*q < 0x20 || *q == '\\') return 0;
	/* no "..", "." or empty path segments */
	const char *seg = s;
	for (;;) {
		const char *e = strchr(seg, '/');
		size_t n = e ? (size_t)(e - seg) : strlen(seg);
		if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.')) return 0;
		if (!e) return 1;
		seg = e + 1;
	}
}

static const char *const mem_units[] = {"m=1", "mb=1", "mib=1", "g=1024", "gb=1024", "gib=1024", NULL};
static const char *const time_units[] = {"s=1", "sec=1", "m=60", "min=60", "h=3600", NULL};

static int apply_field(field_ctx *fc, const char *key, yaml_node_t *v) {
	ms_card *c = fc->c;
	int rc;
	if (!strcmp(key, "title")) return dup_text(fc, key, v, &c->title);
	if (!strcmp(key, "emoji")) return dup_text(fc, key, v, &c->emoji);
	if (!strcmp(key, "short_description")) return dup_text(fc, key, v, &c->short_description);
	if (!strcmp(key, "license")) return dup_text(fc, key, v, &c->license);
	if (!strcmp(key, "colorFrom") || !strcmp(key, "colorTo")) {
		char **dst = key[5] == 'F' ? &c->color_from : &c->color_to;
		if ((rc = dup_text(fc, key, v, dst))) return rc;
		for (char *q = *dst; *q; q++) *q = (char)tolower((unsigned char)*q);
		if (!ms_card_color_valid(*dst))
			return FIELD_ERR(fc, v, "%s must be one of red, yellow, green, blue, indigo, purple, pink, gray (not \"%s\")", key, *dst);
		return 0;
	}
	if (!strcmp(key, "sdk")) {
		if ((rc = dup_text(fc, key, v, &c->sdk))) return rc;
		if (strcmp(c->sdk, "lua") && strcmp(c->sdk, "static"))
			return FIELD_ERR(fc, v, "sdk must be lua (or static), not \"%s\": moonspace runs Lua apps", c->sdk);
		return 0;
	}
	if (!strcmp(key, "app_file")) {
		if ((rc = dup_text(fc, key, v, &c->app_file))) return rc;
		if (!app_file_ok(c->app_file))
			return FIELD_ERR(fc, v, "app_file must be a relative path inside the app (no \"..\"), e.g. app.lua");
		return 0;
	}
	if (!strcmp(key, "models")) {
		if ((rc = parse_list(fc, key, v, &c->models, &c->nmodels))) return rc;
		for (size_t i = 0; i < c->nmodels; i++) {
			char repo[256], rev[256];
			yaml_node_t *at = v->type == YAML_SEQUENCE_NODE ? yaml_document_get_node(fc->cv->doc, v->data.sequence.items.start[i]) : v;
			if (ms_card_model_split(c->models[i], repo, sizeof repo, rev, sizeof rev))
				return FIELD_ERR(fc, at ? at : v, "models: \"%s\" is not a model id: write org/name or org/name@revision (e.g. openai-community/gpt2)",
						 c->models[i]);
		}
		return 0;
	}
	if (!strcmp(key, "preload_from_hub")) return parse_list(fc, key, v, &c->preload_from_hub, &c->npreload);
	if (!strcmp(key, "tags")) return parse_list(fc, key, v, &c->tags, &c->ntags);
	if (!strcmp(key, "pinned")) return parse_bool(fc, key, v, &c->pinned);
	if (!strcmp(key, "private")) return parse_bool(fc, key, v, &c->private_);
	if (!strcmp(key, "timeout"))
		return parse_int(fc, key, v, 1, 3600, " seconds (e.g. 60, 90s, 5m)", time_units, &c->timeout_s);
	if (!strcmp(key, "memory"))
		return parse_int(fc, key, v, 16, 65536, " MiB (e.g. 256, 512MB, 1GB)", mem_units, &c->memory_mb);
	if (!strcmp(key, "concurrency")) return parse_int(fc, key, v, 1, 64, "", NULL, &c->concurrency);
	if (!strcmp(key, "max_queue")) return parse_int(fc, key, v, 0, 100000, "", NULL, &c->max_queue);
	return 0; /* unknown fields live on in c->data */
}

/* ---------------------------------------------------------------- front matter */

/* Length of the line at p (without its terminator) and where the next line starts. */
static size_t line_at(const char *p, const char *end, const char **next) {
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	const char *e = nl ? nl : end;
	*next = nl ? nl + 1 : end;
	if (e > p && e[-1] == '\r') e--;
	return (size_t)(e - p);
}

static int is_fence(const char *p, size_t n, int closing) {
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
	return (n == 3 && memcmp(p, "---", 3) == 0) || (closing && n == 3 && memcmp(p, "...", 3) == 0);
}

static int load_yaml(ms_card *c, const char *y, size_t ylen, int line0, char *err, size_t errlen) {
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser)) return ms_errf(err, errlen, MS_ENOMEM, "README.md: out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)y, ylen);
	if (!yaml_parser_load(&parser, &doc)) {
		int line = (int)(parser.problem_mark.line) + line0 + 1;
		int rc = ms_errf(err, errlen, MS_EFORMAT, "README.md line %d: YAML error: %s%s%s", line,
				 parser.problem ? parser.problem : "malformed", parser.context ? " " : "",
				 parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return rc;
	}
	yaml_parser_delete(&parser);
	conv cv = {.doc = &doc, .line0 = line0, .err = err, .errlen = errlen};
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	int rc = 0;
	if (!root || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0)) {
		c->data = json_object(); /* empty front matter: all defaults */
		if (!c->data) rc = MS_ENOMEM;
		goto out;
	}
	if (root->type != YAML_MAPPING_NODE) {
		rc = ms_errf(err, errlen, MS_EFORMAT, "README.md line %d: the front matter must be a list of key: value lines",
			     node_line(&cv, root));
		goto out;
	}
	c->data = node_to_json(&cv, root, 0);
	if (!c->data) {
		rc = cv.failed ? MS_EFORMAT : ms_errf(err, errlen, MS_ENOMEM, "README.md: out of memory");
		goto out;
	}
	field_ctx fc = {c, &cv, err, errlen};
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(&doc, p->key);
		yaml_node_t *v = yaml_document_get_node(&doc, p->value);
		if (!k || !v) continue;
		if ((rc = apply_field(&fc, (const char *)k->data.scalar.value, v))) {
			if (rc == MS_ENOMEM) ms_errf(err, errlen, MS_ENOMEM, "README.md: out of memory");
			goto out;
		}
	}
out:
	yaml_document_delete(&doc);
	return rc;
}

static int fill_defaults(ms_card *c, char *err, size_t errlen) {
	if (!c->sdk && !(c->sdk = strdup("lua"))) return MS_ENOMEM;
	if (!c->app_file && !(c->app_file = strdup(strcmp(c->sdk, "static") ? "app.lua" : "index.html"))) return MS_ENOMEM;
	if (!strcmp(c->sdk, "lua")) {
		size_t n = strlen(c->app_file);
		if (n < 5 || strcmp(c->app_file + n - 4, ".lua"))
			return ms_errf(err, errlen, MS_EFORMAT, "README.md: app_file must name a .lua file for sdk: lua (got \"%s\")",
				       c->app_file);
	}
	return 0;
}

int ms_card_parse(ms_card *c, const char *text, size_t len, char *err, size_t errlen) {
	const char *p = text, *end = text + len, *next;
	if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3; /* editors on Windows add a BOM */
	size_t n = line_at(p, end, &next);
	if (!is_fence(p, n, 0))
		return ms_errf(err, errlen, MS_EFORMAT,
			       "README.md: no YAML front matter (--- ... ---) at the top of the file: start it with a line \"---\", "
			       "the card fields (title: ..., sdk: lua), and another \"---\"");
	const char *ystart = next;
	int line = 2;
	for (p = next; p < end; p = next, line++) {
		n = line_at(p, end, &next);
		if (is_fence(p, n, 1)) break;
	}
	if (p >= end)
		return ms_errf(err, errlen, MS_EFORMAT, "README.md: the front matter that starts on line 1 has no closing \"---\" line");
	int rc = load_yaml(c, ystart, (size_t)(p - ystart), 1, err, errlen);
	if (!rc) rc = fill_defaults(c, err, errlen);
	if (!rc) {
		c->body_line = line + 1;
		c->body_md = strndup(next, (size_t)(end - next));
		c->html = c->body_md ? ms_markdown_to_html(c->body_md, strlen(c->body_md)) : NULL;
		if (!c->html) rc = ms_errf(err, errlen, MS_ENOMEM, "README.md: out of memory");
	}
	if (rc) {
		/* keep the raw front matter when the YAML itself was fine, so that a card with a
		 * bad field can still be honoured where it matters (private: true) */
		json_t *data = rc == MS_EFORMAT ? json_incref(c->data) : NULL;
		ms_card_free(c);
		c->data = data;
	}
	return rc;
}

int ms_card_load(ms_card *c, const char *path, char *err, size_t errlen) {
	char *text;
	size_t len;
	int rc = ms_read_file(path, &text, &len, MS_CARD_MAX_BYTES);
	if (rc == MS_ENOENT) return ms_errf(err, errlen, rc, "README.md: not found: create it with the card (--- title: ... ---)");
	if (rc == MS_ETOOBIG) return ms_errf(err, errlen, rc, "README.md: larger than %u bytes", MS_CARD_MAX_BYTES);
	if (rc) return ms_errf(err, errlen, rc, "README.md: cannot read %s: %s", path, ms_strerror(rc));
	rc = ms_card_parse(c, text, len, err, errlen);
	free(text);
	return rc;
}

/* ---------------------------------------------------------------- JSON */

static int set_str(json_t *o, const char *k, const char *v) {
	return json_object_set_new(o, k, v ? json_string(v) : json_null());
}

static int set_list(json_t *o, const char *k, char **l, size_t n) {
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_string(l[i]))) { json_decref(a); return -1; }
	return json_object_set_new(o, k, a);
}

json_t *ms_card_to_json(const ms_card *c) {
	json_t *o = c->data ? json_deep_copy(c->data) : json_object();
	if (!o) return NULL;
	int bad = 0;
	if (c->title) bad |= set_str(o, "title", c->title);
	if (c->emoji) bad |= set_str(o, "emoji", c->emoji);
	if (c->color_from) bad |= set_str(o, "colorFrom", c->color_from);
	if (c->color_to) bad |= set_str(o, "colorTo", c->color_to);
	bad |= set_str(o, "sdk", c->sdk ? c->sdk : "lua");
	bad |= set_str(o, "app_file", c->app_file ? c->app_file : "app.lua");
	if (c->short_description) bad |= set_str(o, "short_description", c->short_description);
	if (c->license) bad |= set_str(o, "license", c->license);
	bad |= set_list(o, "models", c->models, c->nmodels);
	bad |= set_list(o, "tags", c->tags, c->ntags);
	if (c->npreload) bad |= set_list(o, "preload_from_hub", c->preload_from_hub, c->npreload);
	bad |= json_object_set_new(o, "pinned", json_boolean(c->pinned));
	bad |= json_object_set_new(o, "private", json_boolean(c->private_));
	bad |= json_object_set_new(o, "timeout", json_integer(c->timeout_s));
	bad |= json_object_set_new(o, "memory", json_integer(c->memory_mb));
	bad |= json_object_set_new(o, "concurrency", json_integer(c->concurrency));
	bad |= json_object_set_new(o, "max_queue", json_integer(c->max_queue));
	if (bad) { json_decref(o); return NULL; }
	return o;
}
