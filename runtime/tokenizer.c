/* runtime/tokenizer.c: loading tokenizer.json / tokenizer_config.json, the encode
 * pipeline (added tokens, normalizer, pre-tokenizer, model, template) and the public API.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "runtime/tokenizer_internal.h"


#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static char *dupn(const char *s, size_t n) {
	char *d = malloc(n + 1);
	if (d) memcpy(d, s, n), d[n] = 0;
	return d;
}
static char *dup(const char *s) { return s ? dupn(s, strlen(s)) : NULL; }

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }
static int jbool(json_t *o, const char *k, int def) {
	json_t *v = json_object_get(o, k);
	return json_is_boolean(v) ? json_is_true(v) : def;
}
static long long jint(json_t *o, const char *k, long long def) {
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) ? json_integer_value(v) : def;
}

/* A pattern object {"String": s} or {"Regex": r}. */
static pcre2_code *parse_pattern(json_t *p, char *err, size_t errlen) {
	const char *s;
	if ((s = jstr(p, "String"))) return tk_regex_compile(s, 1, err, errlen);
	if ((s = jstr(p, "Regex"))) return tk_regex_compile(s, 0, err, errlen);
	if ((s = json_string_value(p))) return tk_regex_compile(s, 1, err, errlen);
	ms_errf(err, errlen, MS_EFORMAT, "pattern is neither String nor Regex");
	return NULL;
}

/* ---- normalizers ---- */

static int b64val(int c) {
	return c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52 :
	       c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 (padding optional); *out is malloc'd (also on failure: NULL). */
static int base64_decode(const char *s, unsigned char **out, size_t *n) {
	size_t len = strlen(s);
	*out = malloc(len / 4 * 3 + 4);
	*n = 0;
	if (!*out) return MS_ENOMEM;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '=') break;
		int v = b64val((unsigned char)s[i]);
		if (v < 0) { free(*out); *out = NULL; return MS_EFORMAT; }
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			(*out)[(*n)++] = (unsigned char)(acc >> bits);
		}
	}
	return 0;
}

static int parse_normalizer(json_t *j, tk_normalizer *n, char *err, size_t errlen) {
	memset(n, 0, sizeof *n);
	const char *t = jstr(j, "type");
	if (!t) return ms_errf(err, errlen, MS_EFORMAT, "normalizer without a type");
	if (!strcmp(t, "Sequence")) {
		json_t *a = json_object_get(j, "normalizers");
		n->type = TKN_SEQUENCE;
		n->n_kids = json_array_size(a);
		if (n->n_kids && !(n->kids = calloc(n->n_kids, sizeof *n->kids))) return MS_ENOMEM;
		for (size_t i = 0; i < n->n_kids; i++) {
			int rc = parse_normalizer(json_array_get(a, i), &n->kids[i], err, errlen);
			if (rc) return rc;
		}
		return 0;
	}
	if (!strcmp(t, "BertNormalizer")) {
		n->type = TKN_BERT;
		n->clean_text = jbool(j, "clean_text", 1);
		n->chinese = jbool(j, "handle_chinese_chars", 1);
		n->lowercase = jbool(j, "lowercase", 1);
		json_t *sa = json_object_get(j, "strip_accents");
		n->strip_accents = json_is_boolean(sa) ? json_is_true(sa) : n->lowercase;
		return 0;
	}
	static const struct { const char *name; int type; } simple[] = {
		{"Lowercase", TKN_LOWERCASE}, {"StripAccents", TKN_STRIP_ACCENTS}, {"NFC", TKN_NFC},
		{"NFD", TKN_NFD}, {"NFKC", TKN_NFKC}, {"NFKD", TKN_NFKD},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(simple); i++)
		if (!strcmp(t, simple[i].name)) { n->type = simple[i].type; return 0; }
	if (!strcmp(t, "Strip")) {
		n->type = TKN_STRIP;
		n->left = jbool(j, "strip_left", 1), n->right = jbool(j, "strip_right", 1);
		return 0;
	}
	if (!strcmp(t, "Prepend")) {
		n->type = TKN_PREPEND;
		return (n->content = dup(jstr(j, "prepend") ? jstr(j, "prepend") : "")) ? 0 : MS_ENOMEM;
	}
	if (!strcmp(t, "Replace")) {
		n->type = TKN_REPLACE;
		if (!(n->re = parse_pattern(json_object_get(j, "pattern"), err, errlen))) return MS_EFORMAT;
		return (n->content = dup(jstr(j, "content") ? jstr(j, "content") : "")) ? 0 : MS_ENOMEM;
	}
	if (!strcmp(t, "Precompiled")) {
		n->type = TKN_PRECOMPILED;
		const char *b64 = jstr(j, "precompiled_charsmap");
		if (!b64 || !*b64) return 0; /* no charsmap: identity */
		unsigned char *bytes;
		size_t nb;
		int rc = base64_decode(b64, &bytes, &nb);
		if (!rc) rc = tk_precompiled_init(n, bytes, nb);
		free(bytes);
		return rc ? ms_errf(err, errlen, rc, "Precompiled: malformed precompiled_charsmap") : 0;
	}
	return ms_errf(err, errlen, MS_EUNSUPPORTED, "normalizer %s is not supported", t);
}

/* ---- pre-tokenizers ---- */

static int parse_behavior(const char *b) {
	if (!b) return TK_ISOLATED;
	if (!strcmp(b, "Removed")) return TK_REMOVED;
	if (!strcmp(b, "MergedWithPrevious")) return TK_MERGED_PREV;
	if (!strcmp(b, "MergedWithNext")) return TK_MERGED_NEXT;
	if (!strcmp(b, "Contiguous")) return TK_CONTIGUOUS;
	return TK_ISOLATED;
}

static int parse_prepend_scheme(json_t *j) {
	const char *s = jstr(j, "prepend_scheme");
	if (s) return !strcmp(s, "first") ? TK_PREPEND_FIRST : !strcmp(s, "never") ? TK_PREPEND_NEVER : TK_PREPEND_ALWAYS;
	return jbool(j, "add_prefix_space", 1) ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
}

static int parse_pretok(json_t *j, tk_pretok *p, char *err, size_t errlen) {
	memset(p, 0, sizeof *p);
	const char *t = jstr(j, "type");
	if (!t) return ms_errf(err, errlen, MS_EFORMAT, "pre_tokenizer without a type");
	if (!strcmp(t, "Sequence")) {
		json_t *a = json_object_get(j, "pretokenizers");
		p->type = TKP_SEQUENCE;
		p->n_kids = json_array_size(a);
		if (p->n_kids && !(p->kids = calloc(p->n_kids, sizeof *p->kids))) return MS_ENOMEM;
		for (size_t i = 0; i < p->n_kids; i++) {
			int rc = parse_pretok(json_array_get(a, i), &p->kids[i], err, errlen);
			if (rc) return rc;
		}
		return 0;
	}
	if (!strcmp(t, "ByteLevel")) {
		p->type = TKP_BYTELEVEL;
		p->add_prefix_space = jbool(j, "add_prefix_space", 1);
		p->use_regex = jbool(j, "use_regex", 1);
		if (p->use_regex && !(p->re = tk_regex_compile(GPT2_PATTERN, 0, err, errlen))) return MS_EFORMAT;
		return 0;
	}
	if (!strcmp(t, "BertPreTokenizer")) { p->type = TKP_BERT; return 0; }
	if (!strcmp(t, "WhitespaceSplit")) { p->type = TKP_WHITESPACE_SPLIT; return 0; }
	if (!strcmp(t, "Whitespace")) {
		p->type = TKP_WHITESPACE;
		p->behavior = TK_REMOVED, p->invert = 1; /* keep the matches */
		return (p->re = tk_regex_compile("\\w+|[^\\w\\s]+", 0, err, errlen)) ? 0 : MS_EFORMAT;
	}
	if (!strcmp(t, "Punctuation")) {
		p->type = TKP_PUNCT;
		p->behavior = parse_behavior(jstr(j, "behavior"));
		return 0;
	}
	if (!strcmp(t, "Digits")) {
		p->type = TKP_DIGITS;
		p->individual_digits = jbool(j, "individual_digits", 0);
		return 0;
	}
	if (!strcmp(t, "Split")) {
		p->type = TKP_SPLIT;
		p->behavior = parse_behavior(jstr(j, "behavior"));
		p->invert = jbool(j, "invert", 0);
		return (p->re = parse_pattern(json_object_get(j, "pattern"), err, errlen)) ? 0 : MS_EFORMAT;
	}
	if (!strcmp(t, "Metaspace")) {
		p->type = TKP_METASPACE;
		p->replacement = dup(jstr(j, "replacement") ? jstr(j, "replacement") : "\xE2\x96\x81");
		p->prepend_scheme = parse_prepend_scheme(j);
		p->split = jbool(j, "split", 1);
		return p->replacement ? 0 : MS_ENOMEM;
	}
	return ms_errf(err, errlen, MS_EUNSUPPORTED, "pre_tokenizer %s is not supported", t);
}

/* ---- vocabulary and model ---- */

static int set_token(ms_tokenizer *tok, int32_t id, const char *s, size_t len) {
	if (id < 0 || (size_t)id >= tok->n_ids) return MS_ERANGE;
	if (tok->id_to_tok[id]) return 0;
	return (tok->id_to_tok[id] = dupn(s, len)) ? 0 : MS_ENOMEM;
}

static int32_t token_id(const ms_tokenizer *tok, const char *s) {
	for (size_t i = 0; i < tok->n_added; i++)
		if (!strcmp(tok->added[i].content, s)) return tok->added[i].id;
	return tk_strmap_get(&tok->model.vocab, s, strlen(s));
}

static int parse_merges(ms_tokenizer *tok, json_t *merges, char *err, size_t errlen) {
	tk_model *m = &tok->model;
	size_t pl = m->cont_prefix ? strlen(m->cont_prefix) : 0;
	ms_buf b;
	ms_buf_init(&b);
	int rc = 0;
	for (size_t i = 0; i < json_array_size(merges) && !rc; i++) {
		json_t *e = json_array_get(merges, i);
		const char *a, *c;
		size_t al, cl;
		if (json_is_string(e)) {
			const char *s = json_string_value(e), *sp = strchr(s, ' ');
			if (!sp) { rc = ms_errf(err, errlen, MS_EFORMAT, "merge %zu (\"%.40s\") has no space", i, s); break; }
			a = s, al = (size_t)(sp - s), c = sp + 1, cl = strlen(c);
		} else if (json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
			a = json_string_value(json_array_get(e, 0)), al = json_string_length(json_array_get(e, 0));
			c = json_string_value(json_array_get(e, 1)), cl = json_string_length(json_array_get(e, 1));
		} else {
			rc = ms_errf(err, errlen, MS_EFORMAT, "merge %zu is neither \"a b\" nor [a, b]", i);
			break;
		}
		int32_t ia = tk_strmap_get(&m->vocab, a, al), ic = tk_strmap_get(&m->vocab, c, cl);
		if (pl && cl >= pl && !memcmp(c, m->cont_prefix, pl)) c += pl, cl -= pl;
		ms_buf_reset(&b);
		if (ms_buf_append(&b, a, al) || ms_buf_append(&b, c, cl)) { rc = MS_ENOMEM; break; }
		int32_t im = tk_strmap_get(&m->vocab, b.data, b.len);
		if (ia < 0 || ic < 0 || im < 0) continue; /* a merge outside the vocab can never apply */
		rc = tk_pairmap_put(&m->merges, ia, ic, (int32_t)i, im);
	}
	ms_buf_free(&b);
	return rc;
}

/* Unigram: "vocab": [[piece, log prob], ...] (the id is the index), "unk_id". */
static int parse_unigram(ms_tokenizer *tok, json_t *j, char *err, size_t errlen) {
	tk_model *m = &tok->model;
	json_t *vocab = json_object_get(j, "vocab");
	m->type = TKM_UNIGRAM;
	m->fuse_unk = 1;
	m->byte_fallback = jbool(j, "byte_fallback", 0);
	if (!json_is_array(vocab) || json_array_size(vocab) > tok->n_ids)
		return ms_errf(err, errlen, MS_EFORMAT, "Unigram vocab is not an array of [piece, score]");
	if (!(m->scores = calloc(tok->n_ids, sizeof *m->scores))) return MS_ENOMEM;
	m->min_score = 0;
	for (size_t i = 0; i < json_array_size(vocab); i++) {
		json_t *e = json_array_get(vocab, i), *p = json_array_get(e, 0), *sc = json_array_get(e, 1);
		if (!json_is_string(p) || !json_is_number(sc))
			return ms_errf(err, errlen, MS_EFORMAT, "Unigram vocab[%zu] is not [piece, score]", i);
		size_t pl = json_string_length(p);
		int rc = set_token(tok, (int32_t)i, json_string_value(p), pl);
		if (!rc && tk_strmap_get(&m->vocab, json_string_value(p), pl) < 0)
			rc = tk_strmap_put(&m->vocab, json_string_value(p), pl, (int32_t)i);
		if (rc) return rc;
		m->scores[i] = json_number_value(sc);
		if (i == 0 || m->scores[i] < m->min_score) m->min_score = m->scores[i];
		if (pl > m->max_tok_len) m->max_tok_len = pl;
	}
	json_int_t unk = jint(j, "unk_id", -1);
	if (unk < 0 || (size_t)unk >= json_array_size(vocab)) return ms_errf(err, errlen, MS_EFORMAT, "Unigram without a valid unk_id");
	m->unk_id = (int32_t)unk;
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof name, "<0x%02X>", b);
		m->byte_ids[b] = tk_strmap_get(&m->vocab, name, 6);
	}
	return 0;
}

static int parse_model(ms_tokenizer *tok, json_t *j, char *err, size_t errlen) {
	tk_model *m = &tok->model;
	const char *t = jstr(j, "type");
	json_t *vocab = json_object_get(j, "vocab");
	if (!t) t = json_object_get(j, "merges") ? "BPE" : json_object_get(j, "continuing_subword_prefix") ? "WordPiece" : "";
	if (!strcmp(t, "Unigram")) return parse_unigram(tok, j, err, errlen);
	if (!strcmp(t, "BPE")) m->type = TKM_BPE;
	else if (!strcmp(t, "WordPiece")) m->type = TKM_WORDPIECE;
	else if (!strcmp(t, "WordLevel")) m->type = TKM_WORDLEVEL;
	else return ms_errf(err, errlen, MS_EUNSUPPORTED, "model type %s is not supported", *t ? t : "(none)");
	if (!json_is_object(vocab)) return ms_errf(err, errlen, MS_EFORMAT, "model.vocab is not an object");
	const char *key;
	size_t klen;
	json_t *v;
	json_object_keylen_foreach(vocab, key, klen, v) {
		json_int_t id = json_integer_value(v);
		if (!json_is_integer(v) || id < 0 || (size_t)id >= tok->n_ids)
			return ms_errf(err, errlen, MS_EFORMAT, "vocab entry \"%.40s\" has a bad id", key);
		int rc = set_token(tok, (int32_t)id, key, klen);
		if (!rc) rc = tk_strmap_put(&m->vocab, key, klen, (int32_t)id);
		if (rc) return rc;
	}
	const char *unk = jstr(j, "unk_token");
	m->unk_id = unk ? tk_strmap_get(&m->vocab, unk, strlen(unk)) : -1;
	const char *pre = jstr(j, "continuing_subword_prefix"), *suf = jstr(j, "end_of_word_suffix");
	if (pre && *pre && !(m->cont_prefix = dup(pre))) return MS_ENOMEM;
	if (suf && *suf && !(m->eow_suffix = dup(suf))) return MS_ENOMEM;
	m->max_chars = (int)jint(j, "max_input_chars_per_word", 100);
	if (m->type != TKM_BPE) return 0;
	m->byte_fallback = jbool(j, "byte_fallback", 0);
	m->fuse_unk = jbool(j, "fuse_unk", 0);
	m->ignore_merges = jbool(j, "ignore_merges", 0);
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof name, "<0x%02X>", b);
		m->byte_ids[b] = tk_strmap_get(&m->vocab, name, 6);
	}
	return parse_merges(tok, json_object_get(j, "merges"), err, errlen);
}

/* ---- post-processor: everything becomes a template ---- */

static int tmpl_add(tk_template *t, int is_seq, int seq, int type_id, const int32_t *ids, size_t n) {
	tk_tmpl_item *v = realloc(t->items, (t->n + 1) * sizeof *v);
	if (!v) return MS_ENOMEM;
	t->items = v;
	tk_tmpl_item *it = &v[t->n++];
	*it = (tk_tmpl_item){is_seq, seq, type_id, NULL, n};
	if (n && !(it->ids = malloc(n * sizeof *ids))) return MS_ENOMEM;
	if (n) memcpy(it->ids, ids, n * sizeof *ids);
	return 0;
}

static void tmpl_free(tk_template *t) {
	for (size_t i = 0; i < t->n; i++) free(t->items[i].ids);
	free(t->items);
	t->items = NULL, t->n = 0;
}

static int parse_template(ms_tokenizer *tok, json_t *arr, json_t *specials, tk_template *t, char *err, size_t errlen) {
	for (size_t i = 0; i < json_array_size(arr); i++) {
		json_t *e = json_array_get(arr, i), *s;
		int rc;
		if ((s = json_object_get(e, "Sequence"))) {
			const char *id = jstr(s, "id");
			rc = tmpl_add(t, 1, id && !strcmp(id, "B"), (int)jint(s, "type_id", 0), NULL, 0);
		} else if ((s = json_object_get(e, "SpecialToken"))) {
			const char *name = jstr(s, "id");
			json_t *sp = json_object_get(specials, name ? name : ""), *ids = json_object_get(sp, "ids");
			int32_t buf[16];
			size_t n = 0;
			if (ids) {
				for (size_t k = 0; k < json_array_size(ids) && n < 16; k++) buf[n++] = (int32_t)json_integer_value(json_array_get(ids, k));
			} else if (name && (buf[0] = token_id(tok, name)) >= 0) {
				n = 1;
			} else {
				return ms_errf(err, errlen, MS_EFORMAT, "template token %s is unknown", name ? name : "?");
			}
			rc = tmpl_add(t, 0, 0, (int)jint(s, "type_id", 0), buf, n);
		} else {
			return ms_errf(err, errlen, MS_EFORMAT, "template item %zu is not Sequence/SpecialToken", i);
		}
		if (rc) return rc;
	}
	return 0;
}

/* BertProcessing / RobertaProcessing: {"sep": ["[SEP]", 102], "cls": ["[CLS]", 101]} */
static int cls_sep_template(ms_tokenizer *tok, json_t *j, int roberta) {
	int32_t sep = (int32_t)json_integer_value(json_array_get(json_object_get(j, "sep"), 1));
	int32_t cls = (int32_t)json_integer_value(json_array_get(json_object_get(j, "cls"), 1));
	int tb = roberta ? 0 : 1, rc = 0;
	rc |= tmpl_add(&tok->single, 0, 0, 0, &cls, 1) | tmpl_add(&tok->single, 1, 0, 0, NULL, 0) | tmpl_add(&tok->single, 0, 0, 0, &sep, 1);
	rc |= tmpl_add(&tok->pair, 0, 0, 0, &cls, 1) | tmpl_add(&tok->pair, 1, 0, 0, NULL, 0) | tmpl_add(&tok->pair, 0, 0, 0, &sep, 1);
	if (roberta) rc |= tmpl_add(&tok->pair, 0, 0, 0, &sep, 1);
	rc |= tmpl_add(&tok->pair, 1, 1, tb, NULL, 0) | tmpl_add(&tok->pair, 0, 0, tb, &sep, 1);
	return rc ? MS_ENOMEM : 0;
}

static int parse_post(ms_tokenizer *tok, json_t *j, char *err, size_t errlen) {
	const char *t = jstr(j, "type");
	if (!t) return 0;
	if (!strcmp(t, "TemplateProcessing")) {
		json_t *sp = json_object_get(j, "special_tokens");
		int rc = parse_template(tok, json_object_get(j, "single"), sp, &tok->single, err, errlen);
		if (!rc) rc = parse_template(tok, json_object_get(j, "pair"), sp, &tok->pair, err, errlen);
		tok->has_post = !rc;
		return rc;
	}
	if (!strcmp(t, "BertProcessing") || !strcmp(t, "RobertaProcessing")) {
		tok->has_post = 1;
		return cls_sep_template(tok, j, t[0] == 'R');
	}
	if (!strcmp(t, "ByteLevel")) return 0; /* offsets only */
	if (!strcmp(t, "Sequence")) {
		json_t *a = json_object_get(j, "processors");
		for (size_t i = 0; i < json_array_size(a) && !tok->has_post; i++) {
			int rc = parse_post(tok, json_array_get(a, i), err, errlen);
			if (rc) return rc;
		}
		return 0;
	}
	return ms_errf(err, errlen, MS_EUNSUPPORTED, "post_processor %s is not supported", t);
}

/* ---- added tokens ---- */

/* Indexes the added tokens for matching: a map per `normalized` flag, the distinct
 * lengths to try (longest first) and the bytes that can start a token. */
static int index_added(ms_tokenizer *tok) {
	for (int f = 0; f < 2; f++) {
		if (!(tok->alens[f] = malloc((tok->n_added + 1) * sizeof(size_t)))) return MS_ENOMEM;
		for (size_t i = 0; i < tok->n_added; i++) {
			const tk_added *a = &tok->added[i];
			if (a->normalized != f || !a->len || tk_strmap_get(&tok->amap[f], a->content, a->len) >= 0) continue;
			if (tk_strmap_put(&tok->amap[f], a->content, a->len, (int32_t)i)) return MS_ENOMEM;
			tok->afirst[f][(unsigned char)a->content[0]] = 1;
			size_t k = 0;
			while (k < tok->n_alens[f] && tok->alens[f][k] > a->len) k++;
			if (k < tok->n_alens[f] && tok->alens[f][k] == a->len) continue;
			memmove(tok->alens[f] + k + 1, tok->alens[f] + k, (tok->n_alens[f] - k) * sizeof(size_t));
			tok->alens[f][k] = a->len;
			tok->n_alens[f]++;
		}
	}
	return 0;
}

static int parse_added(ms_tokenizer *tok, json_t *arr, char *err, size_t errlen) {
	size_t n = json_array_size(arr);
	if (n && !(tok->added = calloc(n, sizeof *tok->added))) return MS_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(arr, i);
		json_t *c = json_object_get(e, "content");
		json_int_t id = jint(e, "id", -1);
		if (!json_is_string(c) || id < 0 || (size_t)id >= tok->n_ids)
			return ms_errf(err, errlen, MS_EFORMAT, "added_tokens[%zu] is malformed", i);
		tk_added *a = &tok->added[tok->n_added++];
		a->len = json_string_length(c);
		if (!(a->content = dupn(json_string_value(c), a->len))) return MS_ENOMEM;
		a->id = (int32_t)id;
		a->special = jbool(e, "special", 0);
		a->lstrip = jbool(e, "lstrip", 0), a->rstrip = jbool(e, "rstrip", 0);
		a->single_word = jbool(e, "single_word", 0);
		a->normalized = jbool(e, "normalized", !a->special);
		int rc = set_token(tok, a->id, a->content, a->len);
		if (rc) return rc;
		if (a->special) tok->special[id] = 1;
	}
	return index_added(tok);
}

/* The highest id any part of the file uses, so that id_to_tok can be sized once. */
static size_t max_id(json_t *root) {
	json_int_t mx = -1;
	const char *k;
	json_t *v;
	json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
	json_object_foreach(vocab, k, v)
		if (json_integer_value(v) > mx) mx = json_integer_value(v);
	if (json_is_array(vocab)) mx = (json_int_t)json_array_size(vocab) - 1; /* Unigram */
	json_t *added = json_object_get(root, "added_tokens");
	for (size_t i = 0; i < json_array_size(added); i++) {
		json_int_t id = jint(json_array_get(added, i), "id", -1);
		if (id > mx) mx = id;
	}
	return mx < 0 || mx > 50000000 ? 0 : (size_t)mx + 1;
}

/* ---- tokenizer_config.json ---- */

static const char *token_content(json_t *v) {
	return json_is_string(v) ? json_string_value(v) : jstr(v, "content");
}

/* LlamaTokenizerFast rebuilds its template from add_bos_token / add_eos_token. */
static int llama_template(ms_tokenizer *tok, json_t *cfg) {
	json_t *ab = json_object_get(cfg, "add_bos_token"), *ae = json_object_get(cfg, "add_eos_token");
	if (!json_is_boolean(ab) && !json_is_boolean(ae)) return 0;
	int add_bos = json_is_boolean(ab) ? json_is_true(ab) : 1, add_eos = json_is_true(ae);
	if ((add_bos && tok->bos_id < 0) || (add_eos && tok->eos_id < 0)) return 0;
	tmpl_free(&tok->single);
	tmpl_free(&tok->pair);
	int rc = 0;
	for (int seq = 0; seq < 2 && !rc; seq++) {
		if (add_bos) rc |= tmpl_add(&tok->pair, 0, 0, seq, &tok->bos_id, 1);
		rc |= tmpl_add(&tok->pair, 1, seq, seq, NULL, 0);
		if (add_eos) rc |= tmpl_add(&tok->pair, 0, 0, seq, &tok->eos_id, 1);
		if (seq == 0) {
			if (add_bos) rc |= tmpl_add(&tok->single, 0, 0, 0, &tok->bos_id, 1);
			rc |= tmpl_add(&tok->single, 1, 0, 0, NULL, 0);
			if (add_eos) rc |= tmpl_add(&tok->single, 0, 0, 0, &tok->eos_id, 1);
		}
	}
	tok->has_post = 1;
	return rc ? MS_ENOMEM : 0;
}

static int load_config(ms_tokenizer *tok, const char *dir, char *err, size_t errlen) {
	char path[4096];
	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	tok->cleanup_spaces = 1; /* transformers' default */
	json_error_t je;
	json_t *cfg = json_load_file(path, 0, &je);
	if (!cfg) {
		FILE *f = fopen(path, "rb");
		if (!f) return 0; /* optional */
		fclose(f);
		return ms_errf(err, errlen, MS_EFORMAT, "%s:%d: %s", path, je.line, je.text);
	}
	int rc = 0;
	const char *s;
	if ((s = token_content(json_object_get(cfg, "bos_token"))) && !(tok->bos_token = dup(s))) rc = MS_ENOMEM;
	if ((s = token_content(json_object_get(cfg, "eos_token"))) && !(tok->eos_token = dup(s))) rc = MS_ENOMEM;
	tok->cleanup_spaces = jbool(cfg, "clean_up_tokenization_spaces", 1);
	json_t *ct = json_object_get(cfg, "chat_template");
	if (json_is_string(ct)) {
		s = json_string_value(ct);
	} else {
		s = NULL;
		for (size_t i = 0; i < json_array_size(ct); i++) {
			const char *name = jstr(json_array_get(ct, i), "name");
			if (!s || (name && !strcmp(name, "default"))) s = jstr(json_array_get(ct, i), "template");
		}
	}
	if (s && !(tok->chat_template = dup(s))) rc = MS_ENOMEM;
	if (tok->bos_token) tok->bos_id = token_id(tok, tok->bos_token);
	if (tok->eos_token) tok->eos_id = token_id(tok, tok->eos_token);
	const char *cls = jstr(cfg, "tokenizer_class");
	if (!rc && cls && !strncmp(cls, "Llama", 5)) rc = llama_template(tok, cfg);
	json_decref(cfg);
	return rc;
}

/* ---- load ---- */

static int load_json(ms_tokenizer *tok, json_t *root, const char *path, char *err, size_t errlen) {
	char msg[512] = "";
	int rc;
	tok->n_ids = max_id(root);
	if (!tok->n_ids) return ms_errf(err, errlen, MS_EFORMAT, "%s: no vocabulary", path);
	if (!(tok->id_to_tok = calloc(tok->n_ids, sizeof *tok->id_to_tok)) || !(tok->special = calloc(tok->n_ids, 1)))
		return MS_ENOMEM;
	json_t *j;
	if ((rc = parse_model(tok, json_object_get(root, "model"), msg, sizeof msg))) goto fail;
	if ((rc = parse_added(tok, json_object_get(root, "added_tokens"), msg, sizeof msg))) goto fail;
	if ((j = json_object_get(root, "normalizer")) && !json_is_null(j)) {
		if ((rc = parse_normalizer(j, &tok->norm, msg, sizeof msg))) goto fail;
		tok->has_normalizer = 1;
	}
	if ((j = json_object_get(root, "pre_tokenizer")) && !json_is_null(j)) {
		if ((rc = parse_pretok(j, &tok->pretok, msg, sizeof msg))) goto fail;
		tok->has_pretok = 1;
	}
	if ((j = json_object_get(root, "post_processor")) && !json_is_null(j) && (rc = parse_post(tok, j, msg, sizeof msg))) goto fail;
	if ((j = json_object_get(root, "decoder")) && !json_is_null(j)) {
		if ((rc = tk_parse_decoder(tok, j, msg, sizeof msg))) goto fail;
		tok->has_decoder = 1;
	}
	return 0;
fail:
	return ms_errf(err, errlen, rc, "%s: %s", path, *msg ? msg : ms_strerror(rc));
}

int ms_tokenizer_load(const char *dir, ms_tokenizer **out, char *err, size_t errlen) {
	*out = NULL;
	char path[4096];
	if (!dir || snprintf(path, sizeof path, "%s/tokenizer.json", dir) >= (int)sizeof path)
		return ms_errf(err, errlen, MS_EINVAL, "bad tokenizer directory");
	json_error_t je;
	json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
	if (!root) {
		FILE *f = fopen(path, "rb");
		if (!f) return ms_errf(err, errlen, MS_ENOENT, "%s: no such file", path);
		fclose(f);
		return ms_errf(err, errlen, MS_EFORMAT, "%s:%d: %s", path, je.line, je.text);
	}
	ms_tokenizer *tok = calloc(1, sizeof *tok);
	if (!tok) { json_decref(root); return MS_ENOMEM; }
	tok->bos_id = tok->eos_id = -1;
	int rc = json_is_object(root) ? load_json(tok, root, path, err, errlen)
				       : ms_errf(err, errlen, MS_EFORMAT, "%s: not a JSON object", path);
	json_decref(root);
	if (!rc) rc = load_config(tok, dir, err, errlen);
	if (!rc && tok->bos_id < 0 && tok->has_post) {
		/* no config: a template that starts with a special token names the BOS */
		for (size_t i = 0; i < tok->single.n; i++) {
			if (tok->single.items[i].is_seq) break;
			int32_t id0 = tok->single.items[i].n_ids ? tok->single.items[i].ids[0] : -1;
			if (id0 >= 0 && (size_t)id0 < tok->n_ids && tok->id_to_tok[id0]) {
				tok->bos_id = id0;
				break;
			}
		}
	}
	if (rc) {
		if (rc == MS_ENOMEM && err && !*err) ms_errf(err, errlen, rc, "%s: out of memory", path);
		ms_tokenizer_free(tok);
		return rc;
	}
	*out = tok;
	return 0;
}

void ms_tokenizer_free(ms_tokenizer *tok) {
	if (!tok) return;
	tk_model_free(&tok->model);
	for (size_t i = 0; i < tok->n_ids; i++) free(tok->id_to_tok[i]);
	free(tok->id_to_tok);
	free(tok->special);
	for (size_t i = 0; i < tok->n_added; i++) free(tok->added[i].content);
	free(tok->added);
	for (int f = 0; f < 2; f++) tk_strmap_free(&tok->amap[f]), free(tok->alens[f]);
	tk_normalizer_free(&tok->norm);
	tk_pretok_free(&tok->pretok);
	tmpl_free(&tok->single);
	tmpl_free(&tok->pair);
	for (size_t i = 0; i < tok->n_dec; i++) tk_decoder_free(&tok->dec[i]);
	free(tok->dec);
	free(tok->bos_token), free(tok->eos_token), free(tok->chat_template);
	free(tok);
}

/* ---- encode ---- */

static int is_word_cp(int32_t c) {
	if (c == '_') return 1;
	utf8proc_category_t k = utf8proc_category(c);
	return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

static int32_t cp_at(const char *s, size_t len, size_t i) {
	int32_t cp = -1;
	tk_utf8_decode((const unsigned char *)s + i, len - i, &cp);
	return cp;
}
static int32_t cp_before(const char *s, size_t i) {
	size_t k = i;
	if (!k) return -1;
	do k--; while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80);
	return cp_at(s, i, k);
}
static int is_space_cp(int32_t c) { return c >= 0 && c < 0x110000 && utf8proc_category(c) == UTF8PROC_CATEGORY_ZS ? 1 : (c >= 9 && c <= 13) || c == 0x85; }

/* A segment of input: text (id < 0) or an added token. */
typedef struct seg { size_t start, end; int32_t id; } seg;

/* Splits s[0..len) on the added tokens whose `normalized` flag is `normalized`, leftmost
 * longest first (as tokenizers' Aho-Corasick), honouring lstrip/rstrip/single_word. */
static int split_added(const ms_tokenizer *tok, const char *s, size_t len, int normalized, seg **out, size_t *n) {
	size_t cap = 0, prev = 0, i = 0;
	*out = NULL, *n = 0;
	while (i <= len) {
		const tk_added *best = NULL;
		size_t bs = 0, be = 0;
		for (; i < len && !best; i += tk_utf8_step(s + i, len - i)) {
			if (!tok->afirst[normalized][(unsigned char)s[i]]) continue;
			for (size_t k = 0; k < tok->n_alens[normalized] && !best; k++) {
				size_t al = tok->alens[normalized][k];
				int32_t idx = al <= len - i ? tk_strmap_get(&tok->amap[normalized], s + i, al) : -1;
				if (idx < 0) continue;
				const tk_added *a = &tok->added[idx];
				if (a->single_word && ((i > 0 && is_word_cp(cp_before(s, i))) || (i + a->len < len && is_word_cp(cp_at(s, len, i + a->len)))))
					continue;
				best = a;
			}
			if (best) bs = i, be = i + best->len;
		}
		if (!best) break;
		if (best->lstrip)
			while (bs > prev && is_space_cp(cp_before(s, bs))) {
				size_t k = bs - 1;
				while (k > prev && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
				bs = k;
			}
		if (best->rstrip)
			while (be < len && is_space_cp(cp_at(s, len, be))) be += tk_utf8_step(s + be, len - be);
		seg add[2] = {{prev, bs, -1}, {bs, be, best->id}};
		for (int k = 0; k < 2; k++) {
			if (k == 0 && bs == prev) continue;
			if (*n == cap) {
				size_t c = cap ? cap * 2 : 8;
				seg *v = realloc(*out, c * sizeof *v);
				if (!v) { free(*out); *out = NULL; return MS_ENOMEM; }
				*out = v, cap = c;
			}
			(*out)[(*n)++] = add[k];
		}
		prev = i = be;
	}
	if (prev < len || *n == 0) {
		seg *v = realloc(*out, (*n + 1) * sizeof *v);
		if (!v) { free(*out); *out = NULL; return MS_ENOMEM; }
		*out = v;
		(*out)[(*n)++] = (seg){prev, len, -1};
	}
	return 0;
}

/* Pre-tokenizes and models one stretch of normalized text. */
static int encode_words(const ms_tokenizer *tok, const char *s, size_t len, int first, int32_t **ids, size_t *n, size_t *cap) {
	tk_pieces p;
	tk_pieces_init(&p);
	int rc = len ? tk_pieces_push(&p, s, len) : 0;
	if (!rc && tok->has_pretok) rc = tk_pretokenize(&tok->pretok, &p, first);
	for (size_t i = 0; i < p.n && !rc; i++) rc = tk_model_encode(&tok->model, p.v[i].s, p.v[i].len, ids, n, cap);
	tk_pieces_free(&p);
	return rc;
}

static int encode_raw(const ms_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n) {
	char *s;
	size_t sl, cap = 0;
	*ids = NULL, *n = 0;
	int rc = tk_utf8_sanitize(text ? text : "", text ? len : 0, &s, &sl);
	if (rc) return rc;
	seg *segs = NULL;
	size_t ns = 0;
	rc = split_added(tok, s, sl, 0, &segs, &ns);
	for (size_t i = 0; i < ns && !rc; i++) {
		if (segs[i].id >= 0) { rc = tk_ids_push(ids, n, &cap, segs[i].id); continue; }
		const char *t = s + segs[i].start;
		size_t tl = segs[i].end - segs[i].start;
		char *norm = NULL;
		if (tok->has_normalizer && (rc = tk_normalize(&tok->norm, t, tl, &norm, &tl))) break;
		if (norm) t = norm;
		seg *sub = NULL;
		size_t nsub = 0;
		rc = split_added(tok, t, tl, 1, &sub, &nsub);
		for (size_t k = 0; k < nsub && !rc; k++)
			rc = sub[k].id >= 0 ? tk_ids_push(ids, n, &cap, sub[k].id)
					    : encode_words(tok, t + sub[k].start, sub[k].end - sub[k].start,
							   segs[i].start == 0 && k == 0, ids, n, &cap);
		free(sub);
		free(norm);
	}
	free(segs);
	free(s);
	if (rc) { free(*ids); *ids = NULL, *n = 0; }
	return rc;
}

/* Applies template t to A (and B); type ids to *types when non-NULL. */
static int apply_template(const tk_template *t, const int32_t *a, size_t na, const int32_t *b, size_t nb,
			  int32_t **ids, size_t *n, int32_t **types) {
	size_t total = 0;
	for (size_t i = 0; i < t->n; i++) total += t->items[i].is_seq ? (t->items[i].seq ? nb : na) : t->items[i].n_ids;
	*ids = malloc((total + 1) * sizeof **ids);
	if (types) *types = malloc((total + 1) * sizeof **types);
	if (!*ids || (types && !*types)) {
		free(*ids), *ids = NULL;
		if (types) free(*types), *types = NULL;
		return MS_ENOMEM;
	}
	*n = 0;
	for (size_t i = 0; i < t->n; i++) {
		const tk_tmpl_item *it = &t->items[i];
		const int32_t *src = it->is_seq ? (it->seq ? b : a) : it->ids;
		size_t cnt = it->is_seq ? (it->seq ? nb : na) : it->n_ids;
		for (size_t k = 0; k < cnt; k++) {
			if (types) (*types)[*n] = it->type_id;
			(*ids)[(*n)++] = src[k];
		}
	}
	return 0;
}

int ms_tokenizer_encode(const ms_tokenizer *tok, const char *text, size_t len, int add_special, int32_t **ids, size_t *n_ids) {
	if (!tok || !ids || !n_ids) return MS_EINVAL;
	int32_t *raw;
	size_t n;
	int rc = encode_raw(tok, text, len, &raw, &n);
	if (rc) return rc;
	if (!add_special || !tok->has_post) {
		*ids = raw ? raw : malloc(sizeof **ids);
		*n_ids = n;
		return *ids ? 0 : MS_ENOMEM;
	}
	rc = apply_template(&tok->single, raw, n, NULL, 0, ids, n_ids, NULL);
	free(raw);
	return rc;
}

int ms_tokenizer_encode_pair(const ms_tokenizer *tok, const char *a, size_t alen, const char *b, size_t blen,
			     int32_t **ids, size_t *n_ids, int32_t **type_ids) {
	if (!tok || !ids || !n_ids) return MS_EINVAL;
	int32_t *ia, *ib;
	size_t na, nb;
	int rc = encode_raw(tok, a, alen, &ia, &na);
	if (rc) return rc;
	if ((rc = encode_raw(tok, b, blen, &ib, &nb))) { free(ia); return rc; }
	if (tok->has_post) {
		rc = apply_template(&tok->pair, ia, na, ib, nb, ids, n_ids, type_ids);
	} else {
		tk_template t = {(tk_tmpl_item[]){{1, 0, 0, NULL, 0}, {1, 1, 1, NULL, 0}}, 2};
		rc = apply_template(&t, ia, na, ib, nb, ids, n_ids, type_ids);
	}
	free(ia), free(ib);
	return rc;
}

/* ---- lookups ---- */

size_t ms_tokenizer_vocab_size(const ms_tokenizer *tok) { return tok ? tok->n_ids : 0; }
int32_t ms_tokenizer_bos_id(const ms_tokenizer *tok) { return tok ? tok->bos_id : -1; }
int32_t ms_tokenizer_eos_id(const ms_tokenizer *tok) { return tok ? tok->eos_id : -1; }
int32_t ms_tokenizer_token_to_id(const ms_tokenizer *tok, const char *token) {
	return tok && token ? token_id(tok, token) : -1;
}
const char *ms_tokenizer_id_to_token(const ms_tokenizer *tok, int32_t id) {
	return tok && id >= 0 && (size_t)id < tok->n_ids ? tok->id_to_tok[id] : NULL;
}
int ms_tokenizer_is_special(const ms_tokenizer *tok, int32_t id) {
	return tok && id >= 0 && (size_t)id < tok->n_ids && tok->special[id];
}
const char *ms_tokenizer_bos_token(const ms_tokenizer *tok) { return tok ? tok->bos_token : NULL; }
const char *ms_tokenizer_eos_token(const ms_tokenizer *tok) { return tok ? tok->eos_token : NULL; }
const char *ms_tokenizer_chat_template(const ms_tokenizer *tok) { return tok ? tok->chat_template : NULL; }
