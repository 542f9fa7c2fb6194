/* runtime/tokenizer_text.c: UTF-8 helpers, regexes, normalizers and pre-tokenizers.
 *
 * Character classes follow Rust's definitions as used by Hugging Face tokenizers
 * (char::is_whitespace = Unicode White_Space, punctuation = P* or ASCII punctuation),
 * with categories from utf8proc.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "runtime/tokenizer_internal.h"

/* ---- pieces ---- */

void tk_pieces_init(tk_pieces *p) { p->v = NULL, p->n = 0, p->cap = 0; }

void tk_pieces_free(tk_pieces *p) {
	for (size_t i = 0; i < p->n; i++) free(p->v[i].s);
	free(p->v);
	tk_pieces_init(p);
}

int tk_pieces_push_owned(tk_pieces *p, char *s, size_t len) {
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		tk_piece *v = realloc(p->v, cap * sizeof *v);
		if (!v) { free(s); return MS_ENOMEM; }
		p->v = v, p->cap = cap;
	}
	p->v[p->n++] = (tk_piece){s, len};
	return 0;
}

int tk_pieces_push(tk_pieces *p, const char *s, size_t len) {
	char *c = malloc(len + 1);
	if (!c) return MS_ENOMEM;
	memcpy(c, s, len);
	c[len] = 0;
	return tk_pieces_push_owned(p, c, len);
}

/* ---- UTF-8 ---- */

size_t tk_utf8_decode(const unsigned char *s, size_t n, int32_t *cp) {
	if (n == 0) return 0;
	unsigned char c = s[0];
	if (c < 0x80) { *cp = c; return 1; }
	size_t len;
	int32_t v, min;
	if (c >= 0xC2 && c <= 0xDF) len = 2, v = c & 0x1F, min = 0x80;
	else if (c >= 0xE0 && c <= 0xEF) len = 3, v = c & 0x0F, min = 0x800;
	else if (c >= 0xF0 && c <= 0xF4) len = 4, v = c & 0x07, min = 0x10000;
	else return 0;
	if (n < len) return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80) return 0;
		v = (v << 6) | (s[i] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
	*cp = v;
	return len;
}

size_t tk_utf8_encode(int32_t cp, char out[4]) {
	if (cp < 0x80) { out[0] = (char)cp; return 1; }
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12)), out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18)), out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

size_t tk_utf8_step(const char *s, size_t n) {
	int32_t cp;
	size_t l = tk_utf8_decode((const unsigned char *)s, n, &cp);
	return l ? l : 1;
}

/* Length of the maximal prefix of an invalid sequence at s that could start a character
 * (WHATWG / Python "maximal subpart"): at least 1. */
static size_t invalid_subpart(const unsigned char *s, size_t n) {
	unsigned char c = s[0];
	size_t need;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF) need = 2;
	else if (c >= 0xE0 && c <= 0xEF) need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
	else if (c >= 0xF0 && c <= 0xF4) need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
	else return 1;
	size_t i = 1;
	for (; i < need && i < n; i++) {
		unsigned char b = s[i];
		if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) break;
	}
	return i;
}

int tk_utf8_sanitize(const char *s, size_t len, char **out, size_t *out_len) {
	ms_buf b;
	ms_buf_init(&b);
	if (ms_buf_reserve(&b, len)) return MS_ENOMEM;
	size_t i = 0;
	while (i < len) {
		size_t j = i;
		int32_t cp;
		size_t l;
		while (j < len && (l = tk_utf8_decode((const unsigned char *)s + j, len - j, &cp)) > 0) j += l;
		if (ms_buf_append(&b, s + i, j - i)) goto nomem;
		if (j == len) break;
		if (ms_buf_append(&b, "\xEF\xBF\xBD", 3)) goto nomem;
		i = j + invalid_subpart((const unsigned char *)s + j, len - j);
	}
	if (ms_buf_reserve(&b, 0)) goto nomem;
	b.data[b.len] = 0;
	*out_len = b.len;
	*out = ms_buf_steal(&b);
	return 0;
nomem:
	ms_buf_free(&b);
	return MS_ENOMEM;
}

/* ---- character classes ---- */

static int is_ws(int32_t c) {
	return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
	       c == 0x205F || c == 0x3000;
}

static int is_punct(int32_t c) {
	if (c < 0x80)
		return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
	switch (utf8proc_category(c)) {
	case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
	case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
	case UTF8PROC_CATEGORY_PO: return 1;
	default: return 0;
	}
}

static int is_numeric(int32_t c) {
	utf8proc_category_t k = utf8proc_category(c);
	return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static int is_other(int32_t c) {
	utf8proc_category_t k = utf8proc_category(c);
	return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CN ||
	       k == UTF8PROC_CATEGORY_CO || k == UTF8PROC_CATEGORY_CS;
}

static int is_chinese(int32_t c) {
	return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
	       (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
	       (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
	       (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* ---- regex ---- */

pcre2_code *tk_regex_compile(const char *pattern, int literal, char *err, size_t errlen) {
	int ec;
	PCRE2_SIZE off;
	uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &ec, &off, NULL);
	if (!re) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(ec, msg, sizeof msg);
		ms_errf(err, errlen, MS_EFORMAT, "regex /%.80s/ at %zu: %s", pattern, (size_t)off, (char *)msg);
		return NULL;
	}
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter also works */
	return re;
}

static int spans_push(tk_span **v, size_t *n, size_t *cap, size_t a, size_t b, int match) {
	if (a == b) return 0;
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		tk_span *nv = realloc(*v, c * sizeof *nv);
		if (!nv) return MS_ENOMEM;
		*v = nv, *cap = c;
	}
	(*v)[(*n)++] = (tk_span){a, b, match};
	return 0;
}

int tk_regex_spans(const pcre2_code *re, const char *s, size_t len, tk_span **spans, size_t *n) {
	size_t cap = 0, prev = 0, pos = 0;
	*spans = NULL, *n = 0;
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
	if (!md) return MS_ENOMEM;
	int rc = 0;
	while (pos <= len) {
		/* input is valid UTF-8 (sanitized on entry): skip PCRE2's re-check */
		int r = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
		if (r < 0) {
			if (r != PCRE2_ERROR_NOMATCH) rc = MS_EFORMAT;
			break;
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		size_t a = ov[0], b = ov[1];
		if (b == a) { /* empty match: step over one character */
			if (a >= len) break;
			pos = a + tk_utf8_step(s + a, len - a);
			continue;
		}
		if ((rc = spans_push(spans, n, &cap, prev, a, 0)) || (rc = spans_push(spans, n, &cap, a, b, 1))) break;
		prev = pos = b;
	}
	if (!rc) rc = spans_push(spans, n, &cap, prev, len, 0);
	pcre2_match_data_free(md);
	if (rc) { free(*spans); *spans = NULL, *n = 0; }
	return rc;
}

/* Spans of characters matching pred: each matching char alone, runs of others merged. */
static int pred_spans(int (*pred)(int32_t), const char *s, size_t len, tk_span **spans, size_t *n) {
	size_t cap = 0, prev = 0, i = 0;
	*spans = NULL, *n = 0;
	int rc = 0;
	while (i < len) {
		int32_t cp = 0xFFFD;
		size_t l = tk_utf8_decode((const unsigned char *)s + i, len - i, &cp);
		if (!l) l = 1;
		if (pred(cp)) {
			if ((rc = spans_push(spans, n, &cap, prev, i, 0)) || (rc = spans_push(spans, n, &cap, i, i + l, 1))) break;
			prev = i + l;
		}
		i += l;
	}
	if (!rc) rc = spans_push(spans, n, &cap, prev, len, 0);
	if (rc) { free(*spans); *spans = NULL, *n = 0; }
	return rc;
}

/* Applies a split behaviour to spans (as tokenizers' NormalizedString::split) and pushes
 * the resulting non-empty pieces of s. */
static int split_apply(const char *s, tk_span *sp, size_t n, int behavior, int invert, tk_pieces *out) {
	if (invert)
		for (size_t i = 0; i < n; i++) sp[i].match = !sp[i].match;
	size_t m = 0;
	switch (behavior) {
	case TK_REMOVED:
		for (size_t i = 0; i < n; i++)
			if (!sp[i].match) sp[m++] = sp[i];
		break;
	case TK_ISOLATED: m = n; break;
	case TK_CONTIGUOUS:
		for (size_t i = 0; i < n; i++) {
			if (m && sp[i].match && sp[m - 1].match) sp[m - 1].end = sp[i].end;
			else sp[m++] = sp[i];
		}
		break;
	case TK_MERGED_PREV: {
		int prev_match = 0;
		for (size_t i = 0; i < n; i++) {
			int is = sp[i].match;
			if (is && !prev_match && m) sp[m - 1].end = sp[i].end;
			else sp[m++] = sp[i];
			prev_match = is;
		}
		break;
	}
	case TK_MERGED_NEXT: {
		/* walk backwards, merging a match into the span after it */
		int next_match = 0;
		size_t w = n;
		for (size_t i = n; i-- > 0;) {
			int is = sp[i].match;
			if (is && !next_match && w < n) sp[w].start = sp[i].start;
			else sp[--w] = sp[i];
			next_match = is;
		}
		memmove(sp, sp + w, (n - w) * sizeof *sp);
		m = n - w;
		break;
	}
	}
	for (size_t i = 0; i < m; i++)
		if (sp[i].end > sp[i].start) {
			int rc = tk_pieces_push(out, s + sp[i].start, sp[i].end - sp[i].start);
			if (rc) return rc;
		}
	return 0;
}

/* ---- GPT-2 byte table ---- */

static char byte_chars[256][3];
static int16_t char_bytes[324]; /* code point (< 324) -> byte */
static pthread_once_t byte_once = PTHREAD_ONCE_INIT;

static void byte_table_init(void) {
	int extra = 0;
	for (int i = 0; i < 324; i++) char_bytes[i] = -1;
	for (int b = 0; b < 256; b++) {
		int cp = ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) ? b : 256 + extra++;
		char enc[4];
		size_t l = tk_utf8_encode(cp, enc);
		memcpy(byte_chars[b], enc, l);
		if (l < 3) byte_chars[b][l] = 0;
		char_bytes[cp] = (int16_t)b;
	}
}

const char *tk_byte_char(unsigned char b) {
	pthread_once(&byte_once, byte_table_init);
	return byte_chars[b];
}

int tk_char_byte(int32_t cp) {
	pthread_once(&byte_once, byte_table_init);
	return cp >= 0 && cp < 324 ? char_bytes[cp] : -1;
}

/* ---- normalizers ---- */

static int map_chars(const char *s, size_t len, ms_buf *b, int (*fn)(int32_t cp, ms_buf *b, void *u), void *u) {
	size_t i = 0;
	while (i < len) {
		int32_t cp;
		size_t l = tk_utf8_decode((const unsigned char *)s + i, len - i, &cp);
		if (!l) cp = 0xFFFD, l = 1;
		int rc = fn(cp, b, u);
		if (rc) return rc;
		i += l;
	}
	return 0;
}

static int put_cp(ms_buf *b, int32_t cp) {
	char e[4];
	return ms_buf_append(b, e, tk_utf8_encode(cp, e));
}

static int bert_clean_chinese(int32_t cp, ms_buf *b, void *u) {
	const tk_normalizer *n = u;
	if (n->clean_text) {
		if (cp == 0 || cp == 0xFFFD || (cp != '\t' && cp != '\n' && cp != '\r' && is_other(cp))) return 0;
		if (is_ws(cp)) cp = ' ';
	}
	if (n->chinese && is_chinese(cp)) {
		int rc = ms_buf_append(b, " ", 1);
		if (!rc) rc = put_cp(b, cp);
		if (!rc) rc = ms_buf_append(b, " ", 1);
		return rc;
	}
	return put_cp(b, cp);
}

static int drop_mn(int32_t cp, ms_buf *b, void *u) {
	(void)u;
	if (utf8proc_category(cp) == UTF8PROC_CATEGORY_MN) return 0;
	return put_cp(b, cp);
}

static int lower_cp(int32_t cp, ms_buf *b, void *u) {
	(void)u;
	return put_cp(b, utf8proc_tolower(cp));
}

static int unicode_form(const char *s, size_t len, int opts, ms_buf *b) {
	utf8proc_uint8_t *dst = NULL;
	utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
					  (utf8proc_option_t)(UTF8PROC_STABLE | opts));
	if (r < 0) return r == UTF8PROC_ERROR_NOMEM ? MS_ENOMEM : MS_EFORMAT;
	int rc = ms_buf_append(b, dst, (size_t)r);
	free(dst);
	return rc;
}

/* ---- Precompiled: SentencePiece's normalization charsmap ----
 * The blob is a little-endian u32 trie size, a darts-clone double array of that many
 * bytes, then NUL-terminated replacement strings. As tokenizers (spm_precompiled): each
 * grapheme shorter than 6 bytes is looked up whole, else (or when absent) each character;
 * a lookup takes the first (shortest) prefix match of the chunk. */

int tk_precompiled_init(tk_normalizer *n, const unsigned char *data, size_t len) {
	if (len < 4) return MS_EFORMAT;
	uint32_t size = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
	if (size % 4 || size > len - 4) return MS_EFORMAT;
	n->trie_n = size / 4;
	n->blob_len = len - 4 - size;
	const unsigned char *blob = data + 4 + size;
	for (size_t i = 0; i < n->blob_len;) { /* the replacements must be valid UTF-8 */
		int32_t cp;
		size_t l = tk_utf8_decode(blob + i, n->blob_len - i, &cp);
		if (!l) return MS_EFORMAT;
		i += l;
	}
	if (!(n->trie = malloc(size + 4)) || !(n->blob = malloc(n->blob_len + 1))) return MS_ENOMEM;
	for (size_t i = 0; i < n->trie_n; i++) {
		const unsigned char *u = data + 4 + 4 * i;
		n->trie[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
	}
	memcpy(n->blob, blob, n->blob_len);
	n->blob[n->blob_len] = 0;
	return 0;
}

static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

/* The replacement for the shortest prefix of key found in the trie. */
static int pc_transform(const tk_normalizer *n, const char *key, size_t len, const char **out, size_t *ol) {
	if (!n->trie_n) return 0;
	size_t pos = unit_offset(n->trie[0]);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)key[i];
		if (!c) return 0;
		pos ^= c;
		if (pos >= n->trie_n) return 0;
		uint32_t u = n->trie[pos];
		if ((u & ((1u << 31) | 0xFF)) != c) return 0;
		pos ^= unit_offset(u);
		if (pos >= n->trie_n) return 0;
		if ((u >> 8) & 1) {
			size_t v = n->trie[pos] & ((1u << 31) - 1);
			if (v >= n->blob_len) return 0;
			*out = n->blob + v;
			*ol = strnlen(n->blob + v, n->blob_len - v);
			return 1;
		}
	}
	return 0;
}

static int precompiled(const tk_normalizer *n, const char *s, size_t len, ms_buf *b) {
	size_t i = 0;
	while (i < len) {
		/* one extended grapheme cluster: s[i..e) */
		int32_t state = 0, cp, next;
		size_t e = i + tk_utf8_step(s + i, len - i);
		if (!tk_utf8_decode((const unsigned char *)s + i, len - i, &cp)) cp = 0xFFFD;
		while (e < len) {
			size_t l = tk_utf8_decode((const unsigned char *)s + e, len - e, &next);
			if (!l || utf8proc_grapheme_break_stateful(cp, next, &state)) break;
			cp = next;
			e += l;
		}
		const char *r;
		size_t rl;
		if (e - i < 6 && pc_transform(n, s + i, e - i, &r, &rl)) {
			if (ms_buf_append(b, r, rl)) return MS_ENOMEM;
		} else {
			for (size_t k = i; k < e;) {
				size_t l = tk_utf8_step(s + k, e - k);
				int rc = pc_transform(n, s + k, l, &r, &rl) ? ms_buf_append(b, r, rl) : ms_buf_append(b, s + k, l);
				if (rc) return rc;
				k += l;
			}
		}
		i = e;
	}
	return 0;
}

/* One normalizer step: s -> b (b starts empty). */
static int normalize_one(const tk_normalizer *n, const char *s, size_t len, ms_buf *b) {
	switch (n->type) {
	case TKN_BERT: {
		ms_buf t;
		ms_buf_init(&t);
		int rc = map_chars(s, len, &t, bert_clean_chinese, (void *)n);
		if (!rc && n->strip_accents) {
			ms_buf d;
			ms_buf_init(&d);
			rc = unicode_form(t.data ? t.data : "", t.len, UTF8PROC_DECOMPOSE, &d);
			ms_buf_reset(&t);
			if (!rc) rc = map_chars(d.data, d.len, &t, drop_mn, NULL);
			ms_buf_free(&d);
		}
		if (!rc) rc = n->lowercase ? map_chars(t.data, t.len, b, lower_cp, NULL) : ms_buf_append(b, t.data, t.len);
		ms_buf_free(&t);
		return rc;
	}
	case TKN_PRECOMPILED: return precompiled(n, s, len, b);
	case TKN_LOWERCASE: return map_chars(s, len, b, lower_cp, NULL);
	case TKN_STRIP_ACCENTS: return map_chars(s, len, b, drop_mn, NULL);
	case TKN_NFC: return unicode_form(s, len, UTF8PROC_COMPOSE, b);
	case TKN_NFD: return unicode_form(s, len, UTF8PROC_DECOMPOSE, b);
	case TKN_NFKC: return unicode_form(s, len, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, b);
	case TKN_NFKD: return unicode_form(s, len, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, b);
	case TKN_STRIP: {
		size_t a = 0, e = len;
		int32_t cp;
		size_t l;
		while (n->left && a < e && (l = tk_utf8_decode((const unsigned char *)s + a, e - a, &cp)) && is_ws(cp)) a += l;
		while (n->right && e > a) {
			size_t k = e - 1;
			while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
			if (!(l = tk_utf8_decode((const unsigned char *)s + k, e - k, &cp)) || !is_ws(cp)) break;
			e = k;
		}
		return ms_buf_append(b, s + a, e - a);
	}
	case TKN_PREPEND:
		if (len == 0) return 0;
		if (ms_buf_puts(b, n->content)) return MS_ENOMEM;
		return ms_buf_append(b, s, len);
	case TKN_REPLACE: {
		tk_span *sp;
		size_t ns;
		int rc = tk_regex_spans(n->re, s, len, &sp, &ns);
		for (size_t i = 0; !rc && i < ns; i++)
			rc = sp[i].match ? ms_buf_puts(b, n->content) : ms_buf_append(b, s + sp[i].start, sp[i].end - sp[i].start);
		free(sp);
		return rc;
	}
	case TKN_SEQUENCE: {
		char *cur = NULL;
		size_t cl = 0;
		int rc = 0;
		for (size_t i = 0; i < n->n_kids && !rc; i++) {
			ms_buf t;
			ms_buf_init(&t);
			rc = normalize_one(&n->kids[i], cur ? cur : s, cur ? cl : len, &t);
			free(cur);
			cl = t.len;
			cur = ms_buf_steal(&t);
		}
		if (!rc) rc = cur ? ms_buf_append(b, cur, cl) : ms_buf_append(b, s, len);
		free(cur);
		return rc;
	}
	}
	return MS_EUNSUPPORTED;
}

int tk_normalize(const tk_normalizer *n, const char *s, size_t len, char **out, size_t *out_len) {
	ms_buf b;
	ms_buf_init(&b);
	int rc = normalize_one(n, s, len, &b);
	if (!rc) rc = ms_buf_reserve(&b, 0);
	if (rc) { ms_buf_free(&b); return rc; }
	b.data[b.len] = 0;
	*out_len = b.len;
	*out = ms_buf_steal(&b);
	return 0;
}

void tk_normalizer_free(tk_normalizer *n) {
	for (size_t i = 0; i < n->n_kids; i++) tk_normalizer_free(&n->kids[i]);
	free(n->kids);
	if (n->re) pcre2_code_free(n->re);
	free(n->content);
	free(n->trie);
	free(n->blob);
	memset(n, 0, sizeof *n);
}

/* ---- pre-tokenizers ---- */

/* Replaces every ' ' in s with rep (and prepends rep when asked). */
static int metaspace(const tk_pretok *pt, const char *s, size_t len, int first, char **out, size_t *ol) {
	ms_buf b;
	ms_buf_init(&b);
	size_t rl = strlen(pt->replacement);
	int starts = len >= rl && memcmp(s, pt->replacement, rl) == 0;
	int rc = 0;
	if ((pt->prepend_scheme == TK_PREPEND_ALWAYS || (pt->prepend_scheme == TK_PREPEND_FIRST && first)) &&
	    !starts && !(len && s[0] == ' '))
		rc = ms_buf_puts(&b, pt->replacement);
	for (size_t i = 0; i < len && !rc; i++)
		rc = s[i] == ' ' ? ms_buf_puts(&b, pt->replacement) : ms_buf_append(&b, s + i, 1);
	if (!rc) rc = ms_buf_reserve(&b, 0);
	if (rc) { ms_buf_free(&b); return rc; }
	b.data[b.len] = 0;
	*ol = b.len;
	*out = ms_buf_steal(&b);
	return 0;
}

static int byte_map(const char *s, size_t len, char **out, size_t *ol) {
	ms_buf b;
	ms_buf_init(&b);
	int rc = ms_buf_reserve(&b, len * 2);
	for (size_t i = 0; i < len && !rc; i++) rc = ms_buf_puts(&b, tk_byte_char((unsigned char)s[i]));
	if (!rc) rc = ms_buf_reserve(&b, 0);
	if (rc) { ms_buf_free(&b); return rc; }
	b.data[b.len] = 0;
	*ol = b.len;
	*out = ms_buf_steal(&b);
	return 0;
}

static int not_ws_pred(int32_t c) { return is_ws(c); }

/* Pre-tokenizes one piece into out. */
static int pretok_piece(const tk_pretok *pt, const char *s, size_t len, int first, tk_pieces *out) {
	tk_span *sp = NULL;
	size_t ns = 0;
	int rc = 0;
	switch (pt->type) {
	case TKP_BYTELEVEL: {
		char *pre = NULL;
		if (pt->add_prefix_space && !(len && s[0] == ' ')) {
			if (!(pre = malloc(len + 2))) return MS_ENOMEM;
			pre[0] = ' ';
			memcpy(pre + 1, s, len);
			s = pre, len++;
		}
		tk_pieces tmp;
		tk_pieces_init(&tmp);
		if (pt->use_regex) {
			rc = tk_regex_spans(pt->re, s, len, &sp, &ns);
			if (!rc) rc = split_apply(s, sp, ns, TK_ISOLATED, 0, &tmp);
		} else if (len) {
			rc = tk_pieces_push(&tmp, s, len);
		}
		for (size_t i = 0; i < tmp.n && !rc; i++) {
			char *m;
			size_t ml;
			if (!(rc = byte_map(tmp.v[i].s, tmp.v[i].len, &m, &ml))) rc = tk_pieces_push_owned(out, m, ml);
		}
		tk_pieces_free(&tmp);
		free(pre);
		break;
	}
	case TKP_BERT: {
		tk_pieces tmp;
		tk_pieces_init(&tmp);
		rc = pred_spans(not_ws_pred, s, len, &sp, &ns);
		if (!rc) rc = split_apply(s, sp, ns, TK_REMOVED, 0, &tmp);
		for (size_t i = 0; i < tmp.n && !rc; i++) {
			free(sp);
			sp = NULL;
			rc = pred_spans(is_punct, tmp.v[i].s, tmp.v[i].len, &sp, &ns);
			if (!rc) rc = split_apply(tmp.v[i].s, sp, ns, TK_ISOLATED, 0, out);
		}
		tk_pieces_free(&tmp);
		break;
	}
	case TKP_WHITESPACE_SPLIT:
		rc = pred_spans(not_ws_pred, s, len, &sp, &ns);
		if (!rc) rc = split_apply(s, sp, ns, TK_REMOVED, 0, out);
		break;
	case TKP_PUNCT:
		rc = pred_spans(is_punct, s, len, &sp, &ns);
		if (!rc) rc = split_apply(s, sp, ns, pt->behavior, 0, out);
		break;
	case TKP_DIGITS:
		rc = pred_spans(is_numeric, s, len, &sp, &ns);
		if (!rc) rc = split_apply(s, sp, ns, pt->individual_digits ? TK_ISOLATED : TK_CONTIGUOUS, 0, out);
		break;
	case TKP_WHITESPACE:
	case TKP_SPLIT:
		rc = tk_regex_spans(pt->re, s, len, &sp, &ns);
		if (!rc) rc = split_apply(s, sp, ns, pt->behavior, pt->invert, out);
		break;
	case TKP_METASPACE: {
		char *m;
		size_t ml;
		if ((rc = metaspace(pt, s, len, first, &m, &ml))) break;
		if (!pt->split) { rc = tk_pieces_push_owned(out, m, ml); break; }
		pcre2_code *re = tk_regex_compile(pt->replacement, 1, NULL, 0);
		if (!re) { free(m); rc = MS_ENOMEM; break; }
		rc = tk_regex_spans(re, m, ml, &sp, &ns);
		if (!rc) rc = split_apply(m, sp, ns, TK_MERGED_NEXT, 0, out);
		pcre2_code_free(re);
		free(m);
		break;
	}
	case TKP_SEQUENCE: {
		rc = tk_pieces_push(out, s, len);
		break;
	}
	}
	free(sp);
	return rc;
}

int tk_pretokenize(const tk_pretok *pt, tk_pieces *p, int first) {
	if (pt->type == TKP_SEQUENCE) {
		for (size_t k = 0; k < pt->n_kids; k++) {
			int rc = tk_pretokenize(&pt->kids[k], p, first);
			if (rc) return rc;
		}
		return 0;
	}
	tk_pieces out;
	tk_pieces_init(&out);
	for (size_t i = 0; i < p->n; i++) {
		int rc = pretok_piece(pt, p->v[i].s, p->v[i].len, first && i == 0, &out);
		if (rc) { tk_pieces_free(&out); return rc; }
	}
	tk_pieces_free(p);
	*p = out;
	return 0;
}

void tk_pretok_free(tk_pretok *p) {
	for (size_t i = 0; i < p->n_kids; i++) tk_pretok_free(&p->kids[i]);
	free(p->kids);
	if (p->re) pcre2_code_free(p->re);
	free(p->replacement);
	memset(p, 0, sizeof *p);
}
