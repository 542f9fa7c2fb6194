/* runtime/tokenizer_decode.c: decoders (ids -> text) and the streaming detokenizer.
 *
 * As in tokenizers, each decoder maps the list of token strings to a new list; the result
 * is their concatenation. transformers then applies clean_up_tokenization when
 * tokenizer_config.json asks for it (its default).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer_internal.h"


static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int add_decoder(ms_tokenizer *tok, tk_decoder d) {
	tk_decoder *v = realloc(tok->dec, (tok->n_dec + 1) * sizeof *v);
	if (!v) { tk_decoder_free(&d); return MS_ENOMEM; }
	tok->dec = v;
	tok->dec[tok->n_dec++] = d;
	return 0;
}

static char *dup(const char *s) {
	size_t n = strlen(s);
	char *d = malloc(n + 1);
	if (d) memcpy(d, s, n + 1);
	return d;
}

int tk_parse_decoder(ms_tokenizer *tok, json_t *j, char *err, size_t errlen) {
	const char *t = jstr(j, "type");
	tk_decoder d = {0};
	if (!t) return ms_errf(err, errlen, MS_EFORMAT, "decoder without a type");
	if (!strcmp(t, "Sequence")) {
		json_t *a = json_object_get(j, "decoders");
		for (size_t i = 0; i < json_array_size(a); i++) {
			int rc = tk_parse_decoder(tok, json_array_get(a, i), err, errlen);
			if (rc) return rc;
		}
		return 0;
	}
	if (!strcmp(t, "ByteLevel")) d.type = TKD_BYTELEVEL;
	else if (!strcmp(t, "ByteFallback")) d.type = TKD_BYTEFALLBACK;
	else if (!strcmp(t, "Fuse")) d.type = TKD_FUSE;
	else if (!strcmp(t, "Metaspace")) {
		d.type = TKD_METASPACE;
		const char *r = jstr(j, "replacement"), *ps = jstr(j, "prepend_scheme");
		json_t *ap = json_object_get(j, "add_prefix_space");
		d.prepend = ps ? strcmp(ps, "never") != 0 : !json_is_false(ap);
		if (!(d.a = dup(r ? r : "\xE2\x96\x81"))) return MS_ENOMEM;
	} else if (!strcmp(t, "Replace")) {
		d.type = TKD_REPLACE;
		json_t *p = json_object_get(j, "pattern");
		const char *s = jstr(p, "String"), *r = jstr(p, "Regex");
		if (!(d.re = tk_regex_compile(s ? s : r ? r : "", s != NULL, err, errlen))) return MS_EFORMAT;
		if (!(d.a = dup(jstr(j, "content") ? jstr(j, "content") : ""))) { tk_decoder_free(&d); return MS_ENOMEM; }
	} else if (!strcmp(t, "Strip")) {
		d.type = TKD_STRIP;
		if (!(d.a = dup(jstr(j, "content") ? jstr(j, "content") : " "))) return MS_ENOMEM;
		d.start = (int)json_integer_value(json_object_get(j, "start"));
		d.stop = (int)json_integer_value(json_object_get(j, "stop"));
	} else if (!strcmp(t, "WordPiece")) {
		d.type = TKD_WORDPIECE;
		if (!(d.a = dup(jstr(j, "prefix") ? jstr(j, "prefix") : "##"))) return MS_ENOMEM;
		d.cleanup = !json_is_false(json_object_get(j, "cleanup"));
	} else if (!strcmp(t, "BPEDecoder")) {
		d.type = TKD_BPE;
		if (!(d.a = dup(jstr(j, "suffix") ? jstr(j, "suffix") : "</w>"))) return MS_ENOMEM;
	} else {
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "decoder %s is not supported", t);
	}
	return add_decoder(tok, d);
}

void tk_decoder_free(tk_decoder *d) {
	free(d->a);
	if (d->re) pcre2_code_free(d->re);
	memset(d, 0, sizeof *d);
}

/* ---- the decoders ---- */

static int replace_all(const char *s, size_t len, const char *from, const char *to, ms_buf *b) {
	size_t fl = strlen(from);
	const char *p = s, *end = s + len, *q;
	while ((q = memmem(p, (size_t)(end - p), from, fl))) {
		if (ms_buf_append(b, p, (size_t)(q - p)) || ms_buf_puts(b, to)) return MS_ENOMEM;
		p = q + fl;
	}
	return ms_buf_append(b, p, (size_t)(end - p));
}

/* Runs s through a list of (from, to) replacements in order. */
static int replace_chain(tk_piece *pc, const char *const (*pairs)[2], size_t n) {
	for (size_t i = 0; i < n; i++) {
		if (!memmem(pc->s, pc->len, pairs[i][0], strlen(pairs[i][0]))) continue;
		ms_buf b;
		ms_buf_init(&b);
		if (replace_all(pc->s, pc->len, pairs[i][0], pairs[i][1], &b) || ms_buf_reserve(&b, 0)) { ms_buf_free(&b); return MS_ENOMEM; }
		free(pc->s);
		pc->len = b.len;
		pc->s = ms_buf_steal(&b);
	}
	return 0;
}

static const char *const wp_cleanup[][2] = {
	{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
	{" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
};
/* transformers' PreTrainedTokenizerBase.clean_up_tokenization */
static const char *const tf_cleanup[][2] = {
	{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
	{" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
};

static int set_piece(tk_piece *pc, ms_buf *b) {
	if (ms_buf_reserve(b, 0)) { ms_buf_free(b); return MS_ENOMEM; }
	free(pc->s);
	pc->len = b->len;
	pc->s = ms_buf_steal(b);
	return 0;
}

static int fuse(tk_pieces *p) {
	ms_buf b;
	ms_buf_init(&b);
	for (size_t i = 0; i < p->n; i++)
		if (ms_buf_append(&b, p->v[i].s, p->v[i].len)) { ms_buf_free(&b); return MS_ENOMEM; }
	if (ms_buf_reserve(&b, 0)) { ms_buf_free(&b); return MS_ENOMEM; }
	tk_pieces_free(p);
	return tk_pieces_push_owned(p, ms_buf_steal(&b), b.len);
}

/* GPT-2 bytes: each character maps back to a byte; the bytes are read as UTF-8 with
 * invalid sequences replaced. */
static int dec_bytelevel(tk_pieces *p) {
	ms_buf b;
	ms_buf_init(&b);
	int rc = 0;
	for (size_t i = 0; i < p->n && !rc; i++) {
		size_t start = b.len;
		int ok = 1;
		for (size_t k = 0; k < p->v[i].len && !rc;) {
			int32_t cp;
			size_t l = tk_utf8_decode((const unsigned char *)p->v[i].s + k, p->v[i].len - k, &cp);
			int byte = l ? tk_char_byte(cp) : -1;
			if (byte < 0) { ok = 0; break; }
			char c = (char)byte;
			rc = ms_buf_append(&b, &c, 1);
			k += l;
		}
		if (!ok && !rc) { /* not a byte-level token: keep its text */
			b.len = start;
			rc = ms_buf_append(&b, p->v[i].s, p->v[i].len);
		}
	}
	char *s = NULL;
	size_t sl = 0;
	if (!rc) rc = tk_utf8_sanitize(b.data ? b.data : "", b.len, &s, &sl);
	ms_buf_free(&b);
	if (rc) return rc;
	tk_pieces_free(p);
	return tk_pieces_push_owned(p, s, sl);
}

static int hexval(char c) {
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Runs of <0xXX> tokens become their bytes when those are valid UTF-8, else one U+FFFD
 * per byte (as tokenizers' ByteFallback). */
static int dec_bytefallback(tk_pieces *p) {
	tk_pieces out;
	tk_pieces_init(&out);
	ms_buf bytes;
	ms_buf_init(&bytes);
	int rc = 0;
	for (size_t i = 0; i <= p->n && !rc; i++) {
		const tk_piece *t = i < p->n ? &p->v[i] : NULL;
		if (t && t->len == 6 && !memcmp(t->s, "<0x", 3) && t->s[5] == '>' && hexval(t->s[3]) >= 0 && hexval(t->s[4]) >= 0) {
			char c = (char)(hexval(t->s[3]) * 16 + hexval(t->s[4]));
			rc = ms_buf_append(&bytes, &c, 1);
			continue;
		}
		if (bytes.len) {
			char *s;
			size_t sl;
			if (!(rc = tk_utf8_sanitize(bytes.data, bytes.len, &s, &sl))) {
				if (sl == bytes.len && !memcmp(s, bytes.data, sl)) {
					rc = tk_pieces_push_owned(&out, s, sl);
				} else {
					free(s);
					for (size_t k = 0; k < bytes.len && !rc; k++) rc = tk_pieces_push(&out, "\xEF\xBF\xBD", 3);
				}
			}
			ms_buf_reset(&bytes);
		}
		if (t && !rc) rc = tk_pieces_push(&out, t->s, t->len);
	}
	ms_buf_free(&bytes);
	if (rc) { tk_pieces_free(&out); return rc; }
	tk_pieces_free(p);
	*p = out;
	return 0;
}

static int dec_strip(const tk_decoder *d, tk_piece *pc) {
	size_t cl = strlen(d->a), a = 0, e = pc->len;
	for (int i = 0; i < d->start && cl && e - a >= cl && !memcmp(pc->s + a, d->a, cl); i++) a += cl;
	for (int i = 0; i < d->stop && cl && e - a >= cl && !memcmp(pc->s + e - cl, d->a, cl); i++) e -= cl;
	memmove(pc->s, pc->s + a, e - a);
	pc->len = e - a;
	pc->s[pc->len] = 0;
	return 0;
}

static int dec_one(const tk_decoder *d, tk_pieces *p) {
	int rc = 0;
	switch (d->type) {
	case TKD_BYTELEVEL: return dec_bytelevel(p);
	case TKD_BYTEFALLBACK: return dec_bytefallback(p);
	case TKD_FUSE: return fuse(p);
	case TKD_STRIP:
		for (size_t i = 0; i < p->n; i++) dec_strip(d, &p->v[i]);
		return 0;
	case TKD_METASPACE:
		for (size_t i = 0; i < p->n && !rc; i++) {
			ms_buf b;
			ms_buf_init(&b);
			/* the first token loses its replacement characters (the prepended space) */
			rc = replace_all(p->v[i].s, p->v[i].len, d->a, i == 0 && d->prepend ? "" : " ", &b);
			rc = rc ? rc : set_piece(&p->v[i], &b);
		}
		return rc;
	case TKD_REPLACE:
		for (size_t i = 0; i < p->n && !rc; i++) {
			tk_span *sp;
			size_t ns;
			ms_buf b;
			ms_buf_init(&b);
			if ((rc = tk_regex_spans(d->re, p->v[i].s, p->v[i].len, &sp, &ns))) break;
			for (size_t k = 0; k < ns && !rc; k++)
				rc = sp[k].match ? ms_buf_puts(&b, d->a) : ms_buf_append(&b, p->v[i].s + sp[k].start, sp[k].end - sp[k].start);
			free(sp);
			rc = rc ? (ms_buf_free(&b), rc) : set_piece(&p->v[i], &b);
		}
		return rc;
	case TKD_WORDPIECE:
		for (size_t i = 0; i < p->n && !rc; i++) {
			ms_buf b;
			ms_buf_init(&b);
			size_t pl = strlen(d->a);
			if (i == 0) rc = ms_buf_append(&b, p->v[i].s, p->v[i].len);
			else if (p->v[i].len >= pl && !memcmp(p->v[i].s, d->a, pl)) rc = ms_buf_append(&b, p->v[i].s + pl, p->v[i].len - pl);
			else rc = ms_buf_append(&b, " ", 1) ? MS_ENOMEM : ms_buf_append(&b, p->v[i].s, p->v[i].len);
			rc = rc ? (ms_buf_free(&b), rc) : set_piece(&p->v[i], &b);
			if (!rc && d->cleanup) rc = replace_chain(&p->v[i], wp_cleanup, MS_ARRAY_LEN(wp_cleanup));
		}
		return rc;
	case TKD_BPE:
		for (size_t i = 0; i < p->n && !rc; i++) {
			ms_buf b;
			ms_buf_init(&b);
			rc = replace_all(p->v[i].s, p->v[i].len, d->a, i + 1 == p->n ? "" : " ", &b);
			rc = rc ? (ms_buf_free(&b), rc) : set_piece(&p->v[i], &b);
		}
		return rc;
	}
	return MS_EUNSUPPORTED;
}

int tk_decode_tokens(const ms_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, ms_buf *out) {
	tk_pieces p;
	tk_pieces_init(&p);
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		int32_t id = ids[i];
		if (id < 0 || (size_t)id >= tok->n_ids || !tok->id_to_tok[id]) continue;
		if (skip_special && tok->special[id]) continue;
		rc = tk_pieces_push(&p, tok->id_to_tok[id], strlen(tok->id_to_tok[id]));
	}
	if (!tok->has_decoder) { /* tokenizers joins with spaces when there is no decoder */
		for (size_t i = 1; i < p.n && !rc; i++) {
			ms_buf b;
			ms_buf_init(&b);
			rc = ms_buf_append(&b, " ", 1) ? MS_ENOMEM : ms_buf_append(&b, p.v[i].s, p.v[i].len);
			rc = rc ? (ms_buf_free(&b), rc) : set_piece(&p.v[i], &b);
		}
	}
	for (size_t i = 0; i < tok->n_dec && !rc; i++) rc = dec_one(&tok->dec[i], &p);
	if (!rc) rc = fuse(&p);
	if (!rc && tok->cleanup_spaces) rc = replace_chain(&p.v[0], tf_cleanup, MS_ARRAY_LEN(tf_cleanup));
	if (!rc) {
		char *s;
		size_t sl;
		if (!(rc = tk_utf8_sanitize(p.v[0].s, p.v[0].len, &s, &sl))) {
			rc = ms_buf_append(out, s, sl);
			free(s);
		}
	}
	tk_pieces_free(&p);
	return rc;
}

int ms_tokenizer_decode_buf(const ms_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special,
			    ms_buf *out) {
	if (!tok || !out || (!ids && n_ids)) return MS_EINVAL;
	return tk_decode_tokens(tok, ids, n_ids, skip_special, out);
}

int ms_tokenizer_decode(const ms_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special, char **text) {
	if (!text) return MS_EINVAL;
	ms_buf b;
	ms_buf_init(&b);
	int rc = ms_tokenizer_decode_buf(tok, ids, n_ids, skip_special, &b);
	if (rc) { ms_buf_free(&b); return rc; }
	*text = ms_buf_steal(&b);
	return 0;
}

/* ---- streaming ----
 * The text-generation-inference scheme: decode a short window ids[prefix..n) and the part
 * already shown ids[prefix..read); the difference is new text once it no longer ends in
 * U+FFFD (an incomplete character). The window keeps one earlier token as context so that
 * decoders that strip a leading space see the same situation as in a full decode. */

void ms_detok_stream_init(ms_detok_stream *s, const ms_tokenizer *tok, int skip_special) {
	memset(s, 0, sizeof *s);
	s->tok = tok;
	s->skip_special = skip_special;
}

void ms_detok_stream_free(ms_detok_stream *s) {
	free(s->ids);
	s->ids = NULL;
	s->n = s->cap = 0;
}

static int stream_add(ms_detok_stream *s, int32_t id) {
	if (s->n == s->cap) {
		size_t c = s->cap ? s->cap * 2 : 64;
		int32_t *v = realloc(s->ids, c * sizeof *v);
		if (!v) return MS_ENOMEM;
		s->ids = v, s->cap = c;
	}
	s->ids[s->n++] = id;
	return 0;
}

int ms_detok_stream_prime(ms_detok_stream *s, const int32_t *ids, size_t n) {
	for (size_t i = 0; i < n; i++)
		if (stream_add(s, ids[i])) return MS_ENOMEM;
	s->read = s->n;
	s->prefix = s->n > 5 ? s->n - 5 : 0;
	return 0;
}

static int ends_incomplete(const ms_buf *b) {
	return b->len >= 3 && !memcmp(b->data + b->len - 3, "\xEF\xBF\xBD", 3);
}

static int stream_step(ms_detok_stream *s, ms_buf *out, int final) {
	ms_buf all, before;
	ms_buf_init(&all);
	ms_buf_init(&before);
	int rc = tk_decode_tokens(s->tok, s->ids + s->prefix, s->n - s->prefix, s->skip_special, &all);
	if (!rc) rc = tk_decode_tokens(s->tok, s->ids + s->prefix, s->read - s->prefix, s->skip_special, &before);
	if (!rc && (all.len < before.len || (before.len && memcmp(all.data, before.data, before.len) != 0))) {
		/* the shown text would change (ByteFallback turns a whole run of byte tokens into
		 * U+FFFDs when the run is invalid, e.g. a complete character followed by a stray
		 * byte): decode the new ids on their own instead */
		ms_buf_reset(&all);
		ms_buf_reset(&before);
		rc = tk_decode_tokens(s->tok, s->ids + s->read, s->n - s->read, s->skip_special, &all);
	}
	if (!rc && all.len > before.len && (final || !ends_incomplete(&all))) {
		rc = ms_buf_append(out, all.data + before.len, all.len - before.len);
		s->emitted += all.len - before.len;
		s->prefix = s->read;
		s->read = s->n;
	} else if (!rc && final) {
		s->prefix = s->read = s->n;
	}
	ms_buf_free(&all);
	ms_buf_free(&before);
	return rc;
}

int ms_detok_stream_push(ms_detok_stream *s, int32_t id, ms_buf *out) {
	if (!s || !s->tok || !out) return MS_EINVAL;
	if (stream_add(s, id)) return MS_ENOMEM;
	return stream_step(s, out, 0);
}

int ms_detok_stream_finish(ms_detok_stream *s, ms_buf *out) {
	if (!s || !s->tok || !out) return MS_EINVAL;
	return stream_step(s, out, 1);
}
