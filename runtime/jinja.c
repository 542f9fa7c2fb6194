/* runtime/jinja.c: lexer, parser and evaluator of the Jinja subset used by chat templates.
 *
 * Memory: every value and AST node lives in one arena freed when rendering ends, so the
 * evaluator never counts references; the arena's size is capped by opts.max_memory.
 * Errors: a longjmp back to ms_jinja_render (nothing but arena memory is held across the
 * evaluator, so unwinding leaks nothing). Step and depth counters bound the work.
 */
#include "runtime/jinja.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "common/ms.h"

/* ---------------------------------------------------------------- arena, errors */

typedef struct chunk {
	struct chunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
} chunk;

typedef struct jx {
	ms_jinja_opts o;
	chunk *chunks;
	size_t mem;
	uint64_t steps;
	int depth;  /* macro calls */
	int line;   /* template line being evaluated, for errors raised deep in helpers */
	int edepth; /* evaluator recursion: a flat chain "1 + 1 + ..." nests without parser recursion */
	jmp_buf jb;
	int rc;
	char msg[512];
	ms_buf out;
	struct frame *globals;
	struct tmpbuf *tmps; /* heap buffers to free if rendering unwinds */
} jx;

typedef struct tmpbuf {
	ms_buf b;
	struct tmpbuf *next;
} tmpbuf;

static void __attribute__((noreturn, format(printf, 4, 5)))
jfail(jx *J, int rc, int line, const char *fmt, ...) {
	va_list ap;
	int n = 0;
	if (line <= 0) line = J->line;
	if (line > 0) n = snprintf(J->msg, sizeof J->msg, "line %d: ", line);
	va_start(ap, fmt);
	vsnprintf(J->msg + n, sizeof J->msg - (size_t)n, fmt, ap);
	va_end(ap);
	J->rc = rc;
	longjmp(J->jb, 1);
}

static void *jalloc(jx *J, size_t n) {
	n = (n + 15) & ~(size_t)15;
	if (n > J->o.max_memory || J->mem > J->o.max_memory - n)
		jfail(J, MS_ETOOBIG, 0, "template uses more than %zu bytes of memory", J->o.max_memory);
	chunk *c = J->chunks;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > 65536 ? n : 65536;
		c = malloc(sizeof *c + cap);
		if (!c) jfail(J, MS_ENOMEM, 0, "out of memory");
		c->cap = cap;
		c->used = 0;
		if (n > 65536 && J->chunks) { /* a big block: keep the current chunk on top */
			c->next = J->chunks->next;
			J->chunks->next = c;
		} else {
			c->next = J->chunks;
			J->chunks = c;
		}
		J->mem += sizeof *c + cap;
	}
	void *p = c->data + c->used;
	c->used += n;
	memset(p, 0, n);
	return p;
}

/* A scratch buffer whose heap memory is released even when an error unwinds past it. */
static ms_buf *tbuf(jx *J) {
	tmpbuf *t = jalloc(J, sizeof *t);
	ms_buf_init(&t->b);
	t->next = J->tmps;
	J->tmps = t;
	return &t->b;
}

static void step(jx *J, uint64_t n, int line) {
	J->steps += n;
	if (J->steps > J->o.max_steps)
		jfail(J, MS_ETOOBIG, line, "template exceeds %llu evaluation steps", (unsigned long long)J->o.max_steps);
}

/* ---------------------------------------------------------------- values */

enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_FUNC, V_MACRO, V_LOOP };

typedef struct val val;
typedef struct dent { val *k, *v; } dent;
struct val {
	int t;
	int tuple; /* a V_LIST that prints as a Python tuple */
	union {
		int b;
		long long i;
		double f;
		struct { const char *p; size_t n; } s;
		struct { val **v; size_t n, cap; } l;
		struct { dent *e; size_t n, cap; } d; /* V_DICT and V_NS */
		struct { int id; const char *name; val *self; } fn;
		struct node *mac;
		struct { val *items; size_t i; } lp; /* loop.*, computed on access */
	};
};

static val V_undef = {.t = V_UNDEF}, V_none = {.t = V_NONE};
static val V_true = {.t = V_BOOL, .b = 1}, V_false = {.t = V_BOOL, .b = 0};

static val *mkv(jx *J, int t) {
	val *v = jalloc(J, sizeof *v);
	v->t = t;
	return v;
}
static val *mkbool(int b) { return b ? &V_true : &V_false; }
static val *mkint(jx *J, long long i) { val *v = mkv(J, V_INT); v->i = i; return v; }
static val *mkfloat(jx *J, double f) { val *v = mkv(J, V_FLOAT); v->f = f; return v; }
static val *mkstr(jx *J, const char *p, size_t n) {
	if (n > J->o.max_output * 2 + 1024) jfail(J, MS_ETOOBIG, 0, "string of %zu bytes is too large", n);
	step(J, n / 64, 0);
	val *v = mkv(J, V_STR);
	char *c = jalloc(J, n + 1);
	if (n) memcpy(c, p, n);
	c[n] = 0;
	v->s.p = c;
	v->s.n = n;
	return v;
}
static val *mkcstr(jx *J, const char *s) { return mkstr(J, s, strlen(s)); }
static val *mklist(jx *J, size_t cap) {
	val *v = mkv(J, V_LIST);
	v->l.cap = cap ? cap : 4;
	v->l.v = jalloc(J, v->l.cap * sizeof(val *));
	return v;
}
static void lpush(jx *J, val *l, val *x) {
	if (l->l.n == l->l.cap) {
		val **nv = jalloc(J, l->l.cap * 2 * sizeof(val *));
		memcpy(nv, l->l.v, l->l.n * sizeof(val *));
		l->l.v = nv;
		l->l.cap *= 2;
	}
	l->l.v[l->l.n++] = x;
}
static val *mkdict(jx *J, int t) {
	val *v = mkv(J, t);
	v->d.cap = 4;
	v->d.e = jalloc(J, v->d.cap * sizeof(dent));
	return v;
}
static int streq(const val *a, const char *p, size_t n) { return a->t == V_STR && a->s.n == n && !memcmp(a->s.p, p, n); }
static dent *dfind(jx *J, val *d, const char *k, size_t n) {
	step(J, d->d.n / 16, 0);
	for (size_t i = 0; i < d->d.n; i++)
		if (streq(d->d.e[i].k, k, n)) return &d->d.e[i];
	return NULL;
}
static void dset(jx *J, val *d, val *k, val *v) {
	dent *e = dfind(J, d, k->s.p, k->s.n);
	if (e) { e->v = v; return; }
	if (d->d.n == d->d.cap) {
		dent *ne = jalloc(J, d->d.cap * 2 * sizeof(dent));
		memcpy(ne, d->d.e, d->d.n * sizeof(dent));
		d->d.e = ne;
		d->d.cap *= 2;
	}
	d->d.e[d->d.n++] = (dent){k, v};
}
static void dsetc(jx *J, val *d, const char *k, val *v) { dset(J, d, mkcstr(J, k), v); }

static val *from_json(jx *J, const json_t *j, int depth) {
	if (depth > 512) jfail(J, MS_ETOOBIG, 0, "input JSON nested too deeply");
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		val *d = mkdict(J, V_DICT);
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)j, k, x) dset(J, d, mkcstr(J, k), from_json(J, x, depth + 1));
		return d;
	}
	case JSON_ARRAY: {
		val *l = mklist(J, json_array_size(j));
		size_t i;
		json_t *x;
		json_array_foreach(j, i, x) lpush(J, l, from_json(J, x, depth + 1));
		return l;
	}
	case JSON_STRING: return mkstr(J, json_string_value(j), json_string_length(j));
	case JSON_INTEGER: return mkint(J, (long long)json_integer_value(j));
	case JSON_REAL: return mkfloat(J, json_real_value(j));
	case JSON_TRUE: return &V_true;
	case JSON_FALSE: return &V_false;
	default: return &V_none;
	}
}

static int truthy(const val *v) {
	switch (v->t) {
	case V_UNDEF: case V_NONE: return 0;
	case V_BOOL: return v->b;
	case V_INT: return v->i != 0;
	case V_FLOAT: return v->f != 0.0;
	case V_STR: return v->s.n != 0;
	case V_LIST: return v->l.n != 0;
	case V_DICT: return v->d.n != 0;
	default: return 1;
	}
}

static const char *tname(int t) {
	static const char *n[] = {"undefined", "none", "boolean", "integer", "float", "string",
	                          "list", "dict", "namespace", "function", "macro", "loop"};
	return n[t];
}

/* Python's repr of a float: the shortest digits that read back the same, in fixed
 * notation for exponents -4..15 and scientific otherwise. */
static void fmt_float(ms_buf *b, double f) {
	if (isnan(f)) { ms_buf_puts(b, "nan"); return; }
	if (isinf(f)) { ms_buf_puts(b, f < 0 ? "-inf" : "inf"); return; }
	char s[64];
	int p;
	for (p = 1; p <= 17; p++) {
		snprintf(s, sizeof s, "%.*e", p - 1, f);
		if (strtod(s, NULL) == f) break;
	}
	/* s = [-]d[.ddd]e[+-]XX */
	char digits[32];
	int nd = 0, neg = s[0] == '-';
	char *e = strchr(s, 'e');
	for (char *q = s + neg; q < e; q++)
		if (isdigit((unsigned char)*q)) digits[nd++] = *q;
	while (nd > 1 && digits[nd - 1] == '0') nd--;
	int exp = atoi(e + 1);
	if (neg) ms_buf_puts(b, "-");
	if (exp >= -4 && exp < 16) {
		if (exp < 0) {
			ms_buf_puts(b, "0.");
			for (int i = 0; i < -exp - 1; i++) ms_buf_puts(b, "0");
			ms_buf_append(b, digits, (size_t)nd);
		} else {
			for (int i = 0; i <= exp; i++) ms_buf_append(b, i < nd ? &digits[i] : "0", 1);
			ms_buf_puts(b, ".");
			if (nd > exp + 1) ms_buf_append(b, digits + exp + 1, (size_t)(nd - exp - 1));
			else ms_buf_puts(b, "0");
		}
	} else {
		ms_buf_append(b, digits, 1);
		if (nd > 1) { ms_buf_puts(b, "."); ms_buf_append(b, digits + 1, (size_t)(nd - 1)); }
		ms_buf_printf(b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
	}
}

static void to_str(jx *J, ms_buf *b, const val *v, int repr);
static void repr_str(ms_buf *b, const char *p, size_t n) {
	char q = memchr(p, '\'', n) && !memchr(p, '"', n) ? '"' : '\'';
	ms_buf_append(b, &q, 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\\') ms_buf_puts(b, "\\\\");
		else if (c == '\n') ms_buf_puts(b, "\\n");
		else if (c == '\r') ms_buf_puts(b, "\\r");
		else if (c == '\t') ms_buf_puts(b, "\\t");
		else if (c == (unsigned char)q) { ms_buf_puts(b, "\\"); ms_buf_append(b, &q, 1); }
		else if (c < 0x20 || c == 0x7f) ms_buf_printf(b, "\\x%02x", c);
		else ms_buf_append(b, p + i, 1);
	}
	ms_buf_append(b, &q, 1);
}

static void to_str(jx *J, ms_buf *b, const val *v, int repr) {
	if (b->len > J->o.max_output * 2) jfail(J, MS_ETOOBIG, 0, "value too large to print");
	switch (v->t) {
	case V_UNDEF: break;
	case V_NONE: ms_buf_puts(b, "None"); break;
	case V_BOOL: ms_buf_puts(b, v->b ? "True" : "False"); break;
	case V_INT: ms_buf_printf(b, "%lld", v->i); break;
	case V_FLOAT: fmt_float(b, v->f); break;
	case V_STR:
		if (repr) repr_str(b, v->s.p, v->s.n);
		else ms_buf_append(b, v->s.p, v->s.n);
		break;
	case V_LIST:
		ms_buf_puts(b, v->tuple ? "(" : "[");
		for (size_t i = 0; i < v->l.n; i++) {
			if (i) ms_buf_puts(b, ", ");
			to_str(J, b, v->l.v[i], 1);
		}
		ms_buf_puts(b, v->tuple ? (v->l.n == 1 ? ",)" : ")") : "]");
		break;
	case V_DICT:
		ms_buf_puts(b, "{");
		for (size_t i = 0; i < v->d.n; i++) {
			if (i) ms_buf_puts(b, ", ");
			to_str(J, b, v->d.e[i].k, 1);
			ms_buf_puts(b, ": ");
			to_str(J, b, v->d.e[i].v, 1);
		}
		ms_buf_puts(b, "}");
		break;
	case V_NS: ms_buf_puts(b, "<Namespace>"); break;
	case V_LOOP: ms_buf_puts(b, "<LoopContext>"); break;
	default: ms_buf_puts(b, "<function>"); break;
	}
}

/* str(v) as a string value (shares v when it already is one) */
static val *vstr(jx *J, val *v) {
	if (v->t == V_STR) return v;
	ms_buf *b = tbuf(J);
	to_str(J, b, v, 0);
	val *r = mkstr(J, b->data ? b->data : "", b->len);
	ms_buf_free(b);
	return r;
}

/* ---------------------------------------------------------------- lexer */

enum { T_TEXT, T_VSTART, T_VEND, T_BSTART, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct tok {
	int t, line;
	const char *p;
	size_t n;
	long long i;
	double f;
} tok;

typedef struct lexer {
	jx *J;
	const char *src;
	size_t len, pos;
	int line;
	tok *toks;
	size_t nt, cap;
} lexer;

static tok *addtok(lexer *L, int t, const char *p, size_t n, int line) {
	if (L->nt == L->cap) {
		size_t nc = L->cap ? L->cap * 2 : 256;
		tok *nt = jalloc(L->J, nc * sizeof(tok));
		if (L->nt) memcpy(nt, L->toks, L->nt * sizeof(tok));
		L->toks = nt;
		L->cap = nc;
	}
	tok *k = &L->toks[L->nt++];
	*k = (tok){.t = t, .line = line, .p = p, .n = n};
	return k;
}

/* Text with Jinja's newline normalisation: \r\n and \r become \n */
static void add_text(lexer *L, const char *p, size_t n, int line) {
	if (!memchr(p, '\r', n)) { addtok(L, T_TEXT, p, n, line); return; }
	char *c = jalloc(L->J, n + 1);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r') {
			c[m++] = '\n';
			if (i + 1 < n && p[i + 1] == '\n') i++;
		} else {
			c[m++] = p[i];
		}
	}
	addtok(L, T_TEXT, c, m, line);
}

static int count_nl(const char *p, size_t n) {
	int c = 0;
	for (size_t i = 0; i < n; i++) c += p[i] == '\n';
	return c;
}

static void put_utf8(ms_buf *b, uint32_t cp) {
	utf8proc_uint8_t s[4];
	utf8proc_ssize_t n = utf8proc_encode_char((utf8proc_int32_t)cp, s);
	if (n > 0) ms_buf_append(b, s, (size_t)n);
}

static int hexval(int c) {
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* A quoted literal with Python's escapes; returns the index after the closing quote. */
static size_t lex_string(lexer *L, size_t i, tok *k) {
	const char *s = L->src;
	char q = s[i++];
	ms_buf *b = tbuf(L->J);
	int line = L->line;
	while (i < L->len && s[i] != q) {
		if (s[i] == '\n') line++;
		if (s[i] == '\r') { /* raw newlines in literals are normalised too */
			ms_buf_puts(b, "\n");
			i += 1 + (i + 1 < L->len && s[i + 1] == '\n');
			continue;
		}
		if (s[i] != '\\' || i + 1 >= L->len) { ms_buf_append(b, s + i, 1); i++; continue; }
		char c = s[i + 1];
		i += 2;
		switch (c) {
		case 'n': ms_buf_puts(b, "\n"); break;
		case 't': ms_buf_puts(b, "\t"); break;
		case 'r': ms_buf_puts(b, "\r"); break;
		case 'a': ms_buf_puts(b, "\a"); break;
		case 'b': ms_buf_puts(b, "\b"); break;
		case 'f': ms_buf_puts(b, "\f"); break;
		case 'v': ms_buf_puts(b, "\v"); break;
		case '\\': ms_buf_puts(b, "\\"); break;
		case '\'': ms_buf_puts(b, "'"); break;
		case '"': ms_buf_puts(b, "\""); break;
		case '\n': line++; break;
		case 'x': case 'u': case 'U': {
			int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
			uint32_t cp = 0;
			for (int d = 0; d < nd; d++) {
				int h = i < L->len ? hexval((unsigned char)s[i]) : -1;
				if (h < 0) { ms_buf_free(b); jfail(L->J, MS_EFORMAT, line, "bad \\%c escape in string", c); }
				cp = cp * 16 + (uint32_t)h;
				i++;
			}
			if (cp > 0x10FFFF) { ms_buf_free(b); jfail(L->J, MS_EFORMAT, line, "bad \\%c escape in string", c); }
			put_utf8(b, cp);
			break;
		}
		default:
			if (c >= '0' && c <= '7') {
				uint32_t cp = (uint32_t)(c - '0');
				for (int d = 0; d < 2 && i < L->len && s[i] >= '0' && s[i] <= '7'; d++) cp = cp * 8 + (uint32_t)(s[i++] - '0');
				put_utf8(b, cp);
			} else { /* unknown escapes stay as written, like Python */
				ms_buf_puts(b, "\\");
				ms_buf_append(b, &c, 1);
			}
		}
	}
	if (i >= L->len) { ms_buf_free(b); jfail(L->J, MS_EFORMAT, L->line, "unterminated string"); }
	val *v = mkstr(L->J, b->data ? b->data : "", b->len);
	ms_buf_free(b);
	k->p = v->s.p;
	k->n = v->s.n;
	L->line = line;
	return i + 1;
}

static const char *ops2[] = {"//", "**", "==", "!=", "<=", ">="};

/* Tokens of one {{ }} or {% %} tag; returns 1 when it ended with '-' (strip after). */
static int lex_tag(lexer *L, int block) {
	const char *s = L->src;
	size_t i = L->pos;
	int depth = 0;
	for (;;) {
		while (i < L->len && isspace((unsigned char)s[i])) { if (s[i] == '\n') L->line++; i++; }
		if (i >= L->len) jfail(L->J, MS_EFORMAT, L->line, "unclosed %s tag", block ? "{%" : "{{");
		char c = s[i];
		char e1 = block ? '%' : '}';
		if (c == '-' && i + 2 < L->len && s[i + 1] == e1 && s[i + 2] == '}' && depth == 0) {
			addtok(L, block ? T_BEND : T_VEND, s + i, 3, L->line);
			L->pos = i + 3;
			return 1;
		}
		if (c == '+' && block && i + 2 < L->len && s[i + 1] == '%' && s[i + 2] == '}' && depth == 0) {
			addtok(L, T_BEND, s + i, 3, L->line);
			L->pos = i + 3;
			return 2; /* "+%}": keep the newline even with trim_blocks */
		}
		if (c == e1 && i + 1 < L->len && s[i + 1] == '}' && depth == 0) {
			addtok(L, block ? T_BEND : T_VEND, s + i, 2, L->line);
			L->pos = i + 2;
			return 0;
		}
		if (isalpha((unsigned char)c) || c == '_') {
			size_t j = i;
			while (j < L->len && (isalnum((unsigned char)s[j]) || s[j] == '_')) j++;
			addtok(L, T_NAME, s + i, j - i, L->line);
			i = j;
		} else if (isdigit((unsigned char)c)) {
			size_t j = i;
			int isf = 0;
			while (j < L->len && (isdigit((unsigned char)s[j]) || s[j] == '_')) j++;
			if (j + 1 < L->len && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
				isf = 1;
				j++;
				while (j < L->len && (isdigit((unsigned char)s[j]) || s[j] == '_')) j++;
			}
			if (j < L->len && (s[j] == 'e' || s[j] == 'E')) {
				size_t k = j + 1;
				if (k < L->len && (s[k] == '+' || s[k] == '-')) k++;
				if (k < L->len && isdigit((unsigned char)s[k])) {
					isf = 1;
					j = k;
					while (j < L->len && isdigit((unsigned char)s[j])) j++;
				}
			}
			char num[64];
			size_t m = 0;
			for (size_t k = i; k < j && m < sizeof num - 1; k++)
				if (s[k] != '_') num[m++] = s[k];
			num[m] = 0;
			tok *k = addtok(L, isf ? T_FLOAT : T_INT, s + i, j - i, L->line);
			errno = 0;
			if (isf) k->f = strtod(num, NULL);
			else k->i = strtoll(num, NULL, 10);
			if (errno == ERANGE && !isf) jfail(L->J, MS_EFORMAT, L->line, "integer literal out of range");
			i = j;
		} else if (c == '\'' || c == '"') {
			tok *k = addtok(L, T_STR, NULL, 0, L->line);
			i = lex_string(L, i, k);
		} else {
			size_t n = 1;
			for (size_t o = 0; o < MS_ARRAY_LEN(ops2); o++)
				if (i + 1 < L->len && s[i] == ops2[o][0] && s[i + 1] == ops2[o][1]) n = 2;
			if (n == 1 && !strchr("+-*/%~<>()[]{}.,:|=!", c))
				jfail(L->J, MS_EFORMAT, L->line, "unexpected character '%c'", c);
			if (c == '{' || c == '(' || c == '[') depth++;
			if ((c == '}' || c == ')' || c == ']') && depth > 0) depth--;
			addtok(L, T_OP, s + i, n, L->line);
			i += n;
		}
	}
}

/* Matches "{%[-+]? *name *[-]?%}" at i; returns its length or 0. */
static size_t match_tag(const char *s, size_t len, size_t i, const char *name) {
	size_t j = i;
	if (j + 2 > len || s[j] != '{' || s[j + 1] != '%') return 0;
	j += 2;
	if (j < len && (s[j] == '-' || s[j] == '+')) j++;
	while (j < len && isspace((unsigned char)s[j])) j++;
	size_t nl = strlen(name);
	if (j + nl > len || memcmp(s + j, name, nl)) return 0;
	j += nl;
	while (j < len && isspace((unsigned char)s[j])) j++;
	if (j < len && s[j] == '-') j++;
	if (j + 2 > len || s[j] != '%' || s[j + 1] != '}') return 0;
	return j + 2 - i;
}

static void lex(lexer *L) {
	const char *s = L->src;
	int strip_next = 0, trim_nl = 0;
	while (L->pos <= L->len) {
		size_t start = L->pos, tag = L->len;
		for (size_t i = start; i + 1 < L->len; i++)
			if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')) { tag = i; break; }
		size_t ts = start, te = tag;
		if (strip_next) while (ts < te && isspace((unsigned char)s[ts])) ts++;
		else if (trim_nl) {
			if (ts < te && s[ts] == '\n') ts++;
			else if (ts + 1 < te && s[ts] == '\r' && s[ts + 1] == '\n') ts += 2;
		}
		strip_next = trim_nl = 0;
		char kind = tag < L->len ? s[tag + 1] : 0;
		char mod = tag + 2 < L->len ? s[tag + 2] : 0;
		if (kind && mod == '-') {
			while (te > ts && isspace((unsigned char)s[te - 1])) te--;
		} else if ((kind == '%' || kind == '#') && mod != '+' && L->J->o.lstrip_blocks) {
			size_t j = te;
			while (j > ts && (s[j - 1] == ' ' || s[j - 1] == '\t')) j--;
			if (j == 0 || s[j - 1] == '\n') te = j;
		}
		if (te > ts) add_text(L, s + ts, te - ts, L->line);
		L->line += count_nl(s + start, tag - start);
		if (!kind) break;
		L->pos = tag + 2 + (mod == '-' || mod == '+');
		int end_strip;
		if (kind == '#') {
			const char *e = NULL;
			for (size_t i = L->pos; i + 1 < L->len; i++)
				if (s[i] == '#' && s[i + 1] == '}') { e = s + i; break; }
			if (!e) jfail(L->J, MS_EFORMAT, L->line, "unclosed comment");
			end_strip = e > s + L->pos && e[-1] == '-';
			L->line += count_nl(s + L->pos, (size_t)(e - s) - L->pos);
			L->pos = (size_t)(e - s) + 2;
			if (end_strip) strip_next = 1;
			else trim_nl = L->J->o.trim_blocks;
			continue;
		}
		int line0 = L->line;
		addtok(L, kind == '{' ? T_VSTART : T_BSTART, s + tag, 2, line0);
		size_t first = L->nt;
		end_strip = lex_tag(L, kind == '%');
		if (end_strip == 2) end_strip = 0;
		else if (end_strip) strip_next = 1;
		else if (kind == '%') trim_nl = L->J->o.trim_blocks;
		/* {% raw %}: everything up to {% endraw %} is text */
		if (kind == '%' && L->nt == first + 2 && L->toks[first].t == T_NAME && L->toks[first].n == 3 &&
		    !memcmp(L->toks[first].p, "raw", 3)) {
			L->nt = first - 1;
			size_t i = L->pos, m = 0;
			for (; i < L->len; i++)
				if ((m = match_tag(s, L->len, i, "endraw"))) break;
			if (!m) jfail(L->J, MS_EFORMAT, line0, "unclosed raw block");
			size_t rs = L->pos, re = i;
			if (strip_next) while (rs < re && isspace((unsigned char)s[rs])) rs++;
			else if (trim_nl && rs < re && s[rs] == '\n') rs++;
			if (s[i + 2] == '-') while (re > rs && isspace((unsigned char)s[re - 1])) re--;
			if (re > rs) add_text(L, s + rs, re - rs, line0);
			L->line += count_nl(s + L->pos, i + m - L->pos);
			strip_next = s[i + m - 3] == '-';
			trim_nl = !strip_next && L->J->o.trim_blocks;
			L->pos = i + m;
		}
	}
	addtok(L, T_EOF, NULL, 0, L->line);
}

/* ---------------------------------------------------------------- AST */

enum {
	N_LIST, N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_BREAK, N_CONTINUE, N_MACRO, N_FILTERBLOCK,
	E_LIT, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NOT, E_NEG, E_POS,
	E_BIN, E_AND, E_OR, E_COND, E_LISTLIT, E_DICTLIT, E_TUPLE,
};

typedef struct node node;
struct node {
	int k, line;
	const char *name; /* names, attributes, filters, tests, operators */
	size_t nlen;
	val *lit;
	node *a, *b, *c, *d;
	node *body;       /* N_FOR's body (a..d hold target, iterable, else, filter) */
	node **kids;      /* positional args, items, statements, targets */
	size_t nk, kcap;
	const char **kwn; /* keyword args (names) */
	node **kwv;
	size_t nkw, kwcap;
	int neg;
};

typedef struct parser {
	jx *J;
	tok *t;
	size_t i, n;
	int depth;
} parser;

static node *mknode(parser *P, int k, int line) {
	node *n = jalloc(P->J, sizeof *n);
	n->k = k;
	n->line = line;
	return n;
}
static void addkid(parser *P, node *n, node *kid) {
	if (n->nk == n->kcap) {
		size_t nc = n->kcap ? n->kcap * 2 : 4;
		node **nk = jalloc(P->J, nc * sizeof(node *));
		if (n->nk) memcpy(nk, n->kids, n->nk * sizeof(node *));
		n->kids = nk;
		n->kcap = nc;
	}
	n->kids[n->nk++] = kid;
}
static void addkw(parser *P, node *n, const char *name, node *v) {
	if (n->nkw == n->kwcap) {
		size_t nc = n->kwcap ? n->kwcap * 2 : 4;
		const char **nn = jalloc(P->J, nc * sizeof(char *));
		node **nv = jalloc(P->J, nc * sizeof(node *));
		if (n->nkw) { memcpy(nn, n->kwn, n->nkw * sizeof(char *)); memcpy(nv, n->kwv, n->nkw * sizeof(node *)); }
		n->kwn = nn;
		n->kwv = nv;
		n->kwcap = nc;
	}
	n->kwn[n->nkw] = name;
	n->kwv[n->nkw++] = v;
}

static tok *cur(parser *P) { return &P->t[P->i]; }
static int is_op(tok *t, const char *op) { return t->t == T_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n); }
static int is_name(tok *t, const char *nm) { return t->t == T_NAME && t->n == strlen(nm) && !memcmp(t->p, nm, t->n); }
static const char *tokdesc(parser *P, tok *t) {
	char *b = jalloc(P->J, 64);
	switch (t->t) {
	case T_EOF: return "end of template";
	case T_VEND: case T_BEND: return "end of tag";
	case T_TEXT: return "text";
	default: snprintf(b, 64, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p ? t->p : ""); return b;
	}
}
static void __attribute__((noreturn)) unexpected(parser *P, const char *want) {
	tok *t = cur(P);
	jfail(P->J, MS_EFORMAT, t->line, "expected %s, got %s", want, tokdesc(P, t));
}
static void expect_op(parser *P, const char *op) {
	if (!is_op(cur(P), op)) { char w[16]; snprintf(w, sizeof w, "'%s'", op); unexpected(P, w); }
	P->i++;
}
static int accept_op(parser *P, const char *op) {
	if (is_op(cur(P), op)) { P->i++; return 1; }
	return 0;
}
static int accept_name(parser *P, const char *nm) {
	if (is_name(cur(P), nm)) { P->i++; return 1; }
	return 0;
}
static const char *tokstr(parser *P, tok *t) {
	char *s = jalloc(P->J, t->n + 1);
	memcpy(s, t->p, t->n);
	return s;
}
static const char *expect_name(parser *P) {
	if (cur(P)->t != T_NAME) unexpected(P, "a name");
	return tokstr(P, &P->t[P->i++]);
}
static void enter(parser *P) {
	if (++P->depth > P->J->o.max_depth) jfail(P->J, MS_ETOOBIG, cur(P)->line, "template nested too deeply");
}

static node *parse_expr(parser *P);
static node *parse_unary(parser *P, int with_filter);
static node *parse_or(parser *P);

static void parse_args(parser *P, node *call) {
	/* after '(' */
	while (!accept_op(P, ")")) {
		if (call->nk || call->nkw) expect_op(P, ",");
		if (accept_op(P, ")")) break;
		if (cur(P)->t == T_NAME && is_op(&P->t[P->i + 1], "=")) {
			const char *nm = expect_name(P);
			P->i++;
			addkw(P, call, nm, parse_expr(P));
		} else {
			if (call->nkw) jfail(P->J, MS_EFORMAT, cur(P)->line, "positional argument after keyword argument");
			addkid(P, call, parse_expr(P));
		}
	}
}

static node *lit(parser *P, val *v, int line) {
	node *n = mknode(P, E_LIT, line);
	n->lit = v;
	return n;
}

static node *parse_primary(parser *P) {
	tok *t = cur(P);
	int line = t->line;
	enter(P);
	node *n;
	if (t->t == T_STR) {
		/* adjacent literals concatenate, as in Python */
		ms_buf *b = tbuf(P->J);
		while (cur(P)->t == T_STR) { ms_buf_append(b, cur(P)->p, cur(P)->n); P->i++; }
		n = lit(P, mkstr(P->J, b->data ? b->data : "", b->len), line);
		ms_buf_free(b);
	} else if (t->t == T_INT) {
		n = lit(P, mkint(P->J, t->i), line);
		P->i++;
	} else if (t->t == T_FLOAT) {
		n = lit(P, mkfloat(P->J, t->f), line);
		P->i++;
	} else if (t->t == T_NAME) {
		P->i++;
		if (is_name(t, "true") || is_name(t, "True")) n = lit(P, &V_true, line);
		else if (is_name(t, "false") || is_name(t, "False")) n = lit(P, &V_false, line);
		else if (is_name(t, "none") || is_name(t, "None")) n = lit(P, &V_none, line);
		else {
			n = mknode(P, E_NAME, line);
			n->name = tokstr(P, t);
			n->nlen = t->n;
		}
	} else if (accept_op(P, "(")) {
		if (accept_op(P, ")")) n = mknode(P, E_TUPLE, line);
		else {
			n = parse_expr(P);
			if (is_op(cur(P), ",")) {
				node *tu = mknode(P, E_TUPLE, line);
				addkid(P, tu, n);
				while (accept_op(P, ",")) {
					if (is_op(cur(P), ")")) break;
					addkid(P, tu, parse_expr(P));
				}
				n = tu;
			}
			expect_op(P, ")");
		}
	} else if (accept_op(P, "[")) {
		n = mknode(P, E_LISTLIT, line);
		while (!accept_op(P, "]")) {
			if (n->nk) expect_op(P, ",");
			if (accept_op(P, "]")) break;
			addkid(P, n, parse_expr(P));
		}
	} else if (accept_op(P, "{")) {
		n = mknode(P, E_DICTLIT, line);
		while (!accept_op(P, "}")) {
			if (n->nk) expect_op(P, ",");
			if (accept_op(P, "}")) break;
			addkid(P, n, parse_expr(P));
			expect_op(P, ":");
			addkid(P, n, parse_expr(P));
		}
	} else {
		unexpected(P, "an expression");
	}
	P->depth--;
	return n;
}

static node *parse_postfix(parser *P, node *n) {
	for (;;) {
		tok *t = cur(P);
		if (accept_op(P, ".")) {
			node *a = mknode(P, E_ATTR, t->line);
			a->a = n;
			if (cur(P)->t == T_INT) { /* x.0 is x[0] */
				a->k = E_ITEM;
				a->b = lit(P, mkint(P->J, cur(P)->i), t->line);
				P->i++;
			} else {
				a->name = expect_name(P);
				a->nlen = strlen(a->name);
			}
			n = a;
		} else if (accept_op(P, "[")) {
			node *idx[3] = {NULL, NULL, NULL};
			int colons = 0;
			for (;;) {
				if (is_op(cur(P), "]")) break;
				if (accept_op(P, ":")) { if (++colons > 2) unexpected(P, "']'"); continue; }
				if (idx[colons]) unexpected(P, "':' or ']'");
				idx[colons] = parse_expr(P);
			}
			expect_op(P, "]");
			node *s = mknode(P, colons ? E_SLICE : E_ITEM, t->line);
			s->a = n;
			if (colons) { s->b = idx[0]; s->c = idx[1]; s->d = idx[2]; }
			else if (!idx[0]) unexpected(P, "an index");
			else s->b = idx[0];
			n = s;
		} else if (accept_op(P, "(")) {
			node *c = mknode(P, E_CALL, t->line);
			c->a = n;
			parse_args(P, c);
			n = c;
		} else {
			return n;
		}
	}
}

static int starts_primary(tok *t) {
	if (t->t == T_STR || t->t == T_INT || t->t == T_FLOAT) return 1;
	if (t->t == T_NAME)
		return !(is_name(t, "and") || is_name(t, "or") || is_name(t, "else") || is_name(t, "if") ||
		         is_name(t, "in") || is_name(t, "is") || is_name(t, "not"));
	return is_op(t, "[") || is_op(t, "{");
}

static node *parse_filters(parser *P, node *n) {
	for (;;) {
		tok *t = cur(P);
		if (accept_op(P, "|")) {
			node *f = mknode(P, E_FILTER, t->line);
			f->a = n;
			f->name = expect_name(P);
			if (accept_op(P, "(")) parse_args(P, f);
			n = f;
		} else if (accept_name(P, "is")) {
			node *f = mknode(P, E_TEST, t->line);
			f->a = n;
			f->neg = accept_name(P, "not");
			if (accept_name(P, "none")) f->name = "none";
			else if (accept_name(P, "true")) f->name = "true";
			else if (accept_name(P, "false")) f->name = "false";
			else f->name = expect_name(P);
			if (accept_op(P, "(")) parse_args(P, f);
			else if (starts_primary(cur(P))) addkid(P, f, parse_unary(P, 0));
			n = f;
		} else {
			return n;
		}
	}
}

static node *parse_unary(parser *P, int with_filter) {
	tok *t = cur(P);
	node *n;
	enter(P);
	if (accept_op(P, "-") || accept_op(P, "+")) {
		n = mknode(P, t->p[0] == '-' ? E_NEG : E_POS, t->line);
		n->a = parse_unary(P, 0);
	} else {
		n = parse_postfix(P, parse_primary(P));
	}
	if (with_filter) n = parse_filters(P, n);
	P->depth--;
	return n;
}

static node *bin(parser *P, const char *op, node *a, node *b, int line) {
	node *n = mknode(P, E_BIN, line);
	n->name = op;
	n->a = a;
	n->b = b;
	return n;
}

static node *parse_pow(parser *P) {
	node *n = parse_unary(P, 1);
	while (is_op(cur(P), "**")) { int l = cur(P)->line; P->i++; n = bin(P, "**", n, parse_unary(P, 1), l); }
	return n;
}
static node *parse_mul(parser *P) {
	node *n = parse_pow(P);
	for (;;) {
		tok *t = cur(P);
		const char *op = is_op(t, "*") ? "*" : is_op(t, "/") ? "/" : is_op(t, "//") ? "//" : is_op(t, "%") ? "%" : NULL;
		if (!op) return n;
		P->i++;
		n = bin(P, op, n, parse_pow(P), t->line);
	}
}
static node *parse_concat(parser *P) {
	node *n = parse_mul(P);
	while (is_op(cur(P), "~")) { int l = cur(P)->line; P->i++; n = bin(P, "~", n, parse_mul(P), l); }
	return n;
}
static node *parse_add(parser *P) {
	node *n = parse_concat(P);
	for (;;) {
		tok *t = cur(P);
		const char *op = is_op(t, "+") ? "+" : is_op(t, "-") ? "-" : NULL;
		if (!op) return n;
		P->i++;
		n = bin(P, op, n, parse_concat(P), t->line);
	}
}
static node *parse_cmp(parser *P) {
	node *n = parse_add(P);
	for (;;) {
		tok *t = cur(P);
		const char *op = NULL;
		static const char *ops[] = {"==", "!=", "<=", ">=", "<", ">"};
		for (size_t i = 0; i < MS_ARRAY_LEN(ops); i++)
			if (is_op(t, ops[i])) op = ops[i];
		if (op) P->i++;
		else if (accept_name(P, "in")) op = "in";
		else if (is_name(t, "not") && is_name(&P->t[P->i + 1], "in")) { P->i += 2; op = "notin"; }
		else return n;
		n = bin(P, op, n, parse_add(P), t->line);
	}
}
static node *parse_not(parser *P) {
	tok *t = cur(P);
	if (accept_name(P, "not")) {
		enter(P);
		node *n = mknode(P, E_NOT, t->line);
		n->a = parse_not(P);
		P->depth--;
		return n;
	}
	return parse_cmp(P);
}
static node *parse_and(parser *P) {
	node *n = parse_not(P);
	while (is_name(cur(P), "and")) {
		node *a = mknode(P, E_AND, cur(P)->line);
		P->i++;
		a->a = n;
		a->b = parse_not(P);
		n = a;
	}
	return n;
}
static node *parse_or(parser *P) {
	node *n = parse_and(P);
	while (is_name(cur(P), "or")) {
		node *a = mknode(P, E_OR, cur(P)->line);
		P->i++;
		a->a = n;
		a->b = parse_and(P);
		n = a;
	}
	return n;
}
static node *parse_expr(parser *P) {
	enter(P);
	node *n = parse_or(P);
	while (is_name(cur(P), "if")) {
		node *c = mknode(P, E_COND, cur(P)->line);
		P->i++;
		c->a = parse_or(P); /* condition */
		c->b = n;           /* then */
		if (accept_name(P, "else")) c->c = parse_expr(P);
		n = c;
	}
	P->depth--;
	return n;
}

/* an expression or a bare tuple "a, b" (for {% set a, b = ... %} and for-targets) */
static node *parse_tuple(parser *P, int names_only) {
	int line = cur(P)->line;
	node *n;
	if (names_only) {
		n = mknode(P, E_NAME, line);
		n->name = expect_name(P);
		n->nlen = strlen(n->name);
	} else {
		n = parse_expr(P);
	}
	if (!is_op(cur(P), ",")) return n;
	node *t = mknode(P, E_TUPLE, line);
	addkid(P, t, n);
	while (accept_op(P, ",")) {
		node *x;
		if (names_only) {
			x = mknode(P, E_NAME, line);
			x->name = expect_name(P);
			x->nlen = strlen(x->name);
		} else {
			x = parse_expr(P);
		}
		addkid(P, t, x);
	}
	return t;
}

/* an assignment target: name, ns.attr, or a tuple of names */
static node *parse_target(parser *P) {
	node *t = NULL;
	do {
		int line = cur(P)->line;
		node *n = mknode(P, E_NAME, line);
		n->name = expect_name(P);
		n->nlen = strlen(n->name);
		if (accept_op(P, ".")) {
			node *a = mknode(P, E_ATTR, line);
			a->a = n;
			a->name = expect_name(P);
			a->nlen = strlen(a->name);
			n = a;
		}
		if (!t && !is_op(cur(P), ",")) return n;
		if (!t) t = mknode(P, E_TUPLE, line);
		addkid(P, t, n);
	} while (accept_op(P, ","));
	return t;
}

static void expect_end(parser *P) {
	if (cur(P)->t != T_BEND) unexpected(P, "'%}'");
	P->i++;
}

/* Parses statements until a {% name %} whose name is in `ends` (NULL-terminated);
 * leaves P at that name token and returns the body. */
static node *parse_body(parser *P, const char *const *ends, const char **which);

static node *parse_stmt(parser *P) {
	tok *t = cur(P);
	int line = t->line;
	static const char *const if_ends[] = {"elif", "else", "endif", NULL};
	static const char *const for_ends[] = {"else", "endfor", NULL};
	if (accept_name(P, "if") || accept_name(P, "elif")) {
		node *n = mknode(P, N_IF, line);
		n->a = parse_expr(P);
		expect_end(P);
		const char *w;
		n->b = parse_body(P, if_ends, &w);
		if (!strcmp(w, "elif")) {
			n->c = parse_stmt(P);
			return n;
		}
		P->i++;
		expect_end(P);
		if (!strcmp(w, "else")) {
			static const char *const e[] = {"endif", NULL};
			n->c = parse_body(P, e, &w);
			P->i++;
			expect_end(P);
		}
		return n;
	}
	if (accept_name(P, "for")) {
		node *n = mknode(P, N_FOR, line);
		n->a = parse_tuple(P, 1);
		if (!accept_name(P, "in")) unexpected(P, "'in'");
		n->b = parse_or(P);
		if (accept_name(P, "if")) n->d = parse_expr(P);
		accept_name(P, "recursive");
		expect_end(P);
		const char *w;
		n->body = parse_body(P, for_ends, &w);
		P->i++;
		expect_end(P);
		if (!strcmp(w, "else")) {
			static const char *const e[] = {"endfor", NULL};
			n->c = parse_body(P, e, &w);
			P->i++;
			expect_end(P);
		}
		return n;
	}
	if (accept_name(P, "set")) {
		node *target = parse_target(P);
		if (accept_op(P, "=")) {
			node *n = mknode(P, N_SET, line);
			n->a = target;
			n->b = parse_tuple(P, 0);
			expect_end(P);
			return n;
		}
		node *n = mknode(P, N_SETBLOCK, line);
		n->a = target;
		if (accept_op(P, "|")) { /* {% set x | filter %} */
			node *f = mknode(P, E_FILTER, line);
			f->name = expect_name(P);
			if (accept_op(P, "(")) parse_args(P, f);
			n->c = f;
		}
		expect_end(P);
		static const char *const e[] = {"endset", NULL};
		const char *w;
		n->b = parse_body(P, e, &w);
		P->i++;
		expect_end(P);
		return n;
	}
	if (accept_name(P, "break") || accept_name(P, "continue")) {
		node *n = mknode(P, t->p[0] == 'b' ? N_BREAK : N_CONTINUE, line);
		expect_end(P);
		return n;
	}
	if (accept_name(P, "macro")) {
		node *n = mknode(P, N_MACRO, line);
		n->name = expect_name(P);
		expect_op(P, "(");
		while (!accept_op(P, ")")) {
			if (n->nk) expect_op(P, ",");
			node *p = mknode(P, E_NAME, cur(P)->line);
			p->name = expect_name(P);
			if (accept_op(P, "=")) p->a = parse_expr(P);
			addkid(P, n, p);
		}
		expect_end(P);
		static const char *const e[] = {"endmacro", NULL};
		const char *w;
		n->b = parse_body(P, e, &w);
		P->i++;
		expect_end(P);
		return n;
	}
	if (accept_name(P, "filter")) {
		node *n = mknode(P, N_FILTERBLOCK, line);
		node *f = mknode(P, E_FILTER, line);
		f->name = expect_name(P);
		if (accept_op(P, "(")) parse_args(P, f);
		n->c = f;
		expect_end(P);
		static const char *const e[] = {"endfilter", NULL};
		const char *w;
		n->b = parse_body(P, e, &w);
		P->i++;
		expect_end(P);
		return n;
	}
	if (accept_name(P, "generation")) { /* transformers' assistant-mask marker: render the body */
		expect_end(P);
		static const char *const e[] = {"endgeneration", NULL};
		const char *w;
		node *b = parse_body(P, e, &w);
		P->i++;
		expect_end(P);
		return b;
	}
	if (t->t == T_NAME) jfail(P->J, MS_EFORMAT, line, "unknown tag '%.*s'", (int)t->n, t->p);
	unexpected(P, "a tag name");
}

static node *parse_body(parser *P, const char *const *ends, const char **which) {
	node *body = mknode(P, N_LIST, cur(P)->line);
	enter(P);
	for (;;) {
		tok *t = cur(P);
		if (t->t == T_EOF) {
			if (ends) jfail(P->J, MS_EFORMAT, t->line, "unexpected end of template, expected '%s'", ends[0]);
			break;
		}
		if (t->t == T_TEXT) {
			node *n = mknode(P, N_TEXT, t->line);
			n->name = t->p;
			n->nlen = t->n;
			addkid(P, body, n);
			P->i++;
		} else if (t->t == T_VSTART) {
			P->i++;
			node *n = mknode(P, N_OUT, t->line);
			n->a = parse_tuple(P, 0);
			if (cur(P)->t != T_VEND) unexpected(P, "'}}'");
			P->i++;
			addkid(P, body, n);
		} else if (t->t == T_BSTART) {
			P->i++;
			tok *k = cur(P);
			if (ends && k->t == T_NAME)
				for (const char *const *e = ends; *e; e++)
					if (is_name(k, *e)) { *which = *e; P->depth--; return body; }
			if (k->t == T_NAME && k->n > 3 && (!memcmp(k->p, "end", 3) || is_name(k, "elif") || is_name(k, "else")))
				jfail(P->J, MS_EFORMAT, k->line, "unexpected '%.*s'", (int)k->n, k->p);
			addkid(P, body, parse_stmt(P));
		} else {
			unexpected(P, "text or a tag");
		}
	}
	P->depth--;
	return body;
}

/* ---------------------------------------------------------------- evaluation */

typedef struct frame {
	struct frame *parent;
	val *vars; /* a V_DICT */
} frame;

static val *lookup(jx *J, frame *f, const char *name, size_t n) {
	for (; f; f = f->parent) {
		dent *e = dfind(J, f->vars, name, n);
		if (e) return e->v;
	}
	return NULL;
}

static frame *push_frame(jx *J, frame *parent) {
	frame *f = jalloc(J, sizeof *f);
	f->parent = parent;
	f->vars = mkdict(J, V_DICT);
	return f;
}

static val *eval(jx *J, frame *f, node *n);
static int exec(jx *J, frame *f, node *n, ms_buf *out);
static void enter_eval(jx *J, int line);

enum { F_RANGE = 1, F_RAISE, F_NAMESPACE, F_DICT, F_STRFTIME, F_METHOD, F_CYCLE };

static const struct { const char *name; int id; } builtins[] = {
	{"range", F_RANGE}, {"raise_exception", F_RAISE}, {"namespace", F_NAMESPACE}, {"dict", F_DICT},
	{"strftime_now", F_STRFTIME},
};

/* UTF-8 helpers: strings index by code point, like Python */
static size_t u8len(const char *p, size_t n) {
	size_t c = 0;
	for (size_t i = 0; i < n; i++) c += ((unsigned char)p[i] & 0xC0) != 0x80;
	return c;
}
static size_t u8off(const char *p, size_t n, size_t cp) { /* byte offset of code point cp */
	size_t i = 0, c = 0;
	while (i < n) {
		if (((unsigned char)p[i] & 0xC0) != 0x80) { if (c == cp) return i; c++; }
		i++;
	}
	return n;
}

static long long vlen(jx *J, val *v, int line) {
	switch (v->t) {
	case V_STR: return (long long)u8len(v->s.p, v->s.n);
	case V_LIST: return (long long)v->l.n;
	case V_DICT: case V_NS: return (long long)v->d.n;
	case V_UNDEF: return 0;
	default: jfail(J, MS_EFORMAT, line, "object of type %s has no length", tname(v->t));
	}
}

/* an iterable as a list value: lists, dict keys, string characters */
static val *as_list(jx *J, val *v, int line) {
	if (v->t == V_LIST) return v;
	if (v->t == V_DICT) {
		val *l = mklist(J, v->d.n);
		for (size_t i = 0; i < v->d.n; i++) lpush(J, l, v->d.e[i].k);
		return l;
	}
	if (v->t == V_STR) {
		val *l = mklist(J, v->s.n);
		for (size_t i = 0; i < v->s.n;) {
			size_t j = i + 1;
			while (j < v->s.n && ((unsigned char)v->s.p[j] & 0xC0) == 0x80) j++;
			lpush(J, l, mkstr(J, v->s.p + i, j - i));
			i = j;
		}
		return l;
	}
	if (v->t == V_UNDEF) return mklist(J, 1);
	jfail(J, MS_EFORMAT, line, "%s is not iterable", tname(v->t));
}

static int isnum(const val *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double numf(const val *v) { return v->t == V_FLOAT ? v->f : v->t == V_INT ? (double)v->i : (double)v->b; }
static long long numi(const val *v) { return v->t == V_INT ? v->i : v->b; }

static int veq(jx *J, val *a, val *b) {
	if (isnum(a) && isnum(b)) {
		if (a->t == V_FLOAT || b->t == V_FLOAT) return numf(a) == numf(b);
		return numi(a) == numi(b);
	}
	if (a->t != b->t) return 0;
	switch (a->t) {
	case V_UNDEF: case V_NONE: return 1;
	case V_STR: return a->s.n == b->s.n && !memcmp(a->s.p, b->s.p, a->s.n);
	case V_LIST:
		if (a->l.n != b->l.n) return 0;
		step(J, a->l.n / 16, 0);
		for (size_t i = 0; i < a->l.n; i++)
			if (!veq(J, a->l.v[i], b->l.v[i])) return 0;
		return 1;
	case V_DICT:
		if (a->d.n != b->d.n) return 0;
		for (size_t i = 0; i < a->d.n; i++) {
			dent *e = dfind(J, b, a->d.e[i].k->s.p, a->d.e[i].k->s.n);
			if (!e || !veq(J, a->d.e[i].v, e->v)) return 0;
		}
		return 1;
	default: return a == b;
	}
}

/* <0, 0, >0; errors on incomparable types */
static int vcmp(jx *J, val *a, val *b, int line) {
	if (isnum(a) && isnum(b)) {
		if (a->t == V_FLOAT || b->t == V_FLOAT) { double x = numf(a), y = numf(b); return (x > y) - (x < y); }
		long long x = numi(a), y = numi(b);
		return (x > y) - (x < y);
	}
	if (a->t == V_STR && b->t == V_STR) {
		size_t m = a->s.n < b->s.n ? a->s.n : b->s.n;
		int c = memcmp(a->s.p, b->s.p, m);
		return c ? c : (a->s.n > b->s.n) - (a->s.n < b->s.n);
	}
	if (a->t == V_LIST && b->t == V_LIST) {
		for (size_t i = 0; i < a->l.n && i < b->l.n; i++) {
			int c = vcmp(J, a->l.v[i], b->l.v[i], line);
			if (c) return c;
		}
		return (a->l.n > b->l.n) - (a->l.n < b->l.n);
	}
	jfail(J, MS_EFORMAT, line, "cannot compare %s with %s", tname(a->t), tname(b->t));
}

static int contains(jx *J, val *hay, val *needle, int line) {
	switch (hay->t) {
	case V_STR:
		if (needle->t != V_STR) jfail(J, MS_EFORMAT, line, "'in <string>' requires a string");
		step(J, hay->s.n / 64, line);
		return needle->s.n == 0 || memmem(hay->s.p, hay->s.n, needle->s.p, needle->s.n) != NULL;
	case V_LIST:
		step(J, hay->l.n / 16, line);
		for (size_t i = 0; i < hay->l.n; i++)
			if (veq(J, hay->l.v[i], needle)) return 1;
		return 0;
	case V_DICT: case V_NS:
		return needle->t == V_STR && dfind(J, hay, needle->s.p, needle->s.n) != NULL;
	case V_UNDEF: return 0;
	default: jfail(J, MS_EFORMAT, line, "argument of type %s is not iterable", tname(hay->t));
	}
}

static val *concat(jx *J, val *a, val *b) {
	size_t n = a->s.n + b->s.n;
	if (n > J->o.max_output * 2 + 1024) jfail(J, MS_ETOOBIG, 0, "string of %zu bytes is too large", n);
	step(J, n / 64, 0);
	val *v = mkv(J, V_STR);
	char *c = jalloc(J, n + 1);
	memcpy(c, a->s.p, a->s.n);
	memcpy(c + a->s.n, b->s.p, b->s.n);
	v->s.p = c;
	v->s.n = n;
	return v;
}

/* Python's "fmt % args" for %s %r %d %i %f %%; args is one value or a tuple/list */
static val *str_format(jx *J, val *fmt, val *args_, int line) {
	ms_buf *b = tbuf(J);
	size_t ai = 0;
	int seq = args_->t == V_LIST;
	for (size_t i = 0; i < fmt->s.n; i++) {
		char c = fmt->s.p[i];
		if (c != '%') { ms_buf_append(b, &c, 1); continue; }
		if (++i >= fmt->s.n) jfail(J, MS_EFORMAT, line, "incomplete format");
		char k = fmt->s.p[i];
		if (k == '%') { ms_buf_puts(b, "%"); continue; }
		val *x = seq ? (ai < args_->l.n ? args_->l.v[ai] : NULL) : (ai == 0 ? args_ : NULL);
		ai++;
		if (!x) jfail(J, MS_EFORMAT, line, "not enough arguments for format string");
		if (k == 's' || k == 'r') to_str(J, b, x, k == 'r');
		else if ((k == 'd' || k == 'i') && isnum(x)) ms_buf_printf(b, "%lld", x->t == V_FLOAT ? (long long)x->f : numi(x));
		else if (k == 'f' && isnum(x)) ms_buf_printf(b, "%f", numf(x));
		else jfail(J, MS_EFORMAT, line, "unsupported format '%%%c'", k);
	}
	if (seq ? ai < args_->l.n : (ai == 0 && args_->t != V_DICT))
		jfail(J, MS_EFORMAT, line, "not all arguments converted during string formatting");
	val *r = mkstr(J, b->data ? b->data : "", b->len);
	ms_buf_free(b);
	return r;
}

static val *arith(jx *J, const char *op, val *a, val *b, int line) {
	if (!strcmp(op, "~")) return concat(J, vstr(J, a), vstr(J, b));
	if (a->t == V_UNDEF || b->t == V_UNDEF)
		jfail(J, MS_EFORMAT, line, "undefined value in '%s' expression", op);
	if (!strcmp(op, "+")) {
		if (a->t == V_STR && b->t == V_STR) return concat(J, a, b);
		if (a->t == V_LIST && b->t == V_LIST) {
			val *l = mklist(J, a->l.n + b->l.n + 1);
			for (size_t i = 0; i < a->l.n; i++) lpush(J, l, a->l.v[i]);
			for (size_t i = 0; i < b->l.n; i++) lpush(J, l, b->l.v[i]);
			step(J, l->l.n / 16, line);
			return l;
		}
	}
	if (!strcmp(op, "%") && a->t == V_STR) return str_format(J, a, b, line);
	int aint = a->t == V_INT || a->t == V_BOOL, bint = b->t == V_INT || b->t == V_BOOL;
	if (!strcmp(op, "*") && ((a->t == V_LIST && bint) || (aint && b->t == V_LIST))) {
		val *s = a->t == V_LIST ? a : b;
		long long k = numi(aint ? a : b);
		val *l = mklist(J, 4);
		l->tuple = s->tuple;
		if (k > 0 && s->l.n && (unsigned long long)k > J->o.max_steps / s->l.n) jfail(J, MS_ETOOBIG, line, "repeated list too large");
		for (long long i = 0; i < k; i++)
			for (size_t j = 0; j < s->l.n; j++) lpush(J, l, s->l.v[j]);
		step(J, l->l.n, line);
		return l;
	}
	if (!strcmp(op, "*") && ((a->t == V_STR && bint) || (aint && b->t == V_STR))) {
		val *s = a->t == V_STR ? a : b;
		long long k = numi(aint ? a : b);
		if (k <= 0 || s->s.n == 0) return mkstr(J, "", 0);
		if ((unsigned long long)k > (J->o.max_output * 2 + 1024) / s->s.n) jfail(J, MS_ETOOBIG, line, "repeated string too large");
		ms_buf *bb = tbuf(J);
		for (long long i = 0; i < k; i++) ms_buf_append(bb, s->s.p, s->s.n);
		val *r = mkstr(J, bb->data ? bb->data : "", bb->len);
		ms_buf_free(bb);
		return r;
	}
	if (!isnum(a) || !isnum(b))
		jfail(J, MS_EFORMAT, line, "unsupported operand types for %s: %s and %s", op, tname(a->t), tname(b->t));
	int fl = a->t == V_FLOAT || b->t == V_FLOAT;
	if (!strcmp(op, "/")) {
		if (numf(b) == 0) jfail(J, MS_EFORMAT, line, "division by zero");
		return mkfloat(J, numf(a) / numf(b));
	}
	if (fl) {
		double x = numf(a), y = numf(b), r;
		switch (op[0]) {
		case '+': r = x + y; break;
		case '-': r = x - y; break;
		case '*': r = op[1] ? pow(x, y) : x * y; break;
		default:
			if (y == 0) jfail(J, MS_EFORMAT, line, "division by zero");
			if (op[0] == '%') { r = fmod(x, y); if (r != 0 && ((r < 0) != (y < 0))) r += y; }
			else r = floor(x / y);
		}
		return mkfloat(J, r);
	}
	long long x = numi(a), y = numi(b), r;
	int ovf = 0;
	switch (op[0]) {
	case '+': ovf = __builtin_add_overflow(x, y, &r); break;
	case '-': ovf = __builtin_sub_overflow(x, y, &r); break;
	case '*':
		if (op[1]) {
			if (y < 0) return mkfloat(J, pow((double)x, (double)y));
			r = 1;
			for (long long i = 0; i < y && !ovf; i++) ovf = __builtin_mul_overflow(r, x, &r);
		} else {
			ovf = __builtin_mul_overflow(x, y, &r);
		}
		break;
	default:
		if (y == 0) jfail(J, MS_EFORMAT, line, "division by zero");
		if (x == LLONG_MIN && y == -1) { ovf = 1; r = 0; break; }
		if (op[0] == '%') { r = x % y; if (r != 0 && ((r < 0) != (y < 0))) r += y; }
		else { r = x / y; if ((x % y != 0) && ((x < 0) != (y < 0))) r--; }
	}
	if (ovf) jfail(J, MS_EFORMAT, line, "integer overflow in '%s'", op);
	return mkint(J, r);
}

/* Python's slice.indices */
static void slice_idx(long long len, val *s0, val *s1, val *s2, long long *start, long long *stop, long long *stepv, jx *J, int line) {
	long long st = 1;
	if (s2 && s2->t != V_NONE && s2->t != V_UNDEF) {
		if (s2->t != V_INT) jfail(J, MS_EFORMAT, line, "slice step must be an integer");
		st = s2->i;
		if (st == 0) jfail(J, MS_EFORMAT, line, "slice step cannot be zero");
	}
	long long lo = st < 0 ? -1 : 0, hi = st < 0 ? len - 1 : len;
	long long b = st < 0 ? hi : lo, e = st < 0 ? lo : hi;
	val *in[2] = {s0, s1};
	long long *outp[2] = {&b, &e};
	for (int k = 0; k < 2; k++) {
		val *x = in[k];
		if (!x || x->t == V_NONE || x->t == V_UNDEF) continue;
		if (x->t != V_INT) jfail(J, MS_EFORMAT, line, "slice indices must be integers");
		long long v = x->i;
		if (v < 0) { v += len; if (v < lo) v = lo; }
		else if (v > hi) v = hi;
		*outp[k] = v;
	}
	*start = b;
	*stop = e;
	*stepv = st;
}

static val *do_slice(jx *J, val *o, val *s0, val *s1, val *s2, int line) {
	long long b, e, st;
	if (o->t == V_LIST) {
		slice_idx((long long)o->l.n, s0, s1, s2, &b, &e, &st, J, line);
		val *l = mklist(J, 4);
		for (long long i = b; st > 0 ? i < e : i > e; i += st) lpush(J, l, o->l.v[i]);
		step(J, l->l.n / 16, line);
		return l;
	}
	if (o->t == V_STR) {
		val *chars = as_list(J, o, line);
		slice_idx((long long)chars->l.n, s0, s1, s2, &b, &e, &st, J, line);
		ms_buf *bb = tbuf(J);
		for (long long i = b; st > 0 ? i < e : i > e; i += st) ms_buf_append(bb, chars->l.v[i]->s.p, chars->l.v[i]->s.n);
		val *r = mkstr(J, bb->data ? bb->data : "", bb->len);
		ms_buf_free(bb);
		return r;
	}
	if (o->t == V_UNDEF) return &V_undef;
	jfail(J, MS_EFORMAT, line, "%s cannot be sliced", tname(o->t));
}


static val *loop_attr(jx *J, val *o, const char *name, size_t n) {
	size_t i = o->lp.i, len = o->lp.items->l.n;
	val **v = o->lp.items->l.v;
#define A(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))
	if (A("index")) return mkint(J, (long long)i + 1);
	if (A("index0")) return mkint(J, (long long)i);
	if (A("revindex")) return mkint(J, (long long)(len - i));
	if (A("revindex0")) return mkint(J, (long long)(len - i - 1));
	if (A("first")) return mkbool(i == 0);
	if (A("last")) return mkbool(i + 1 == len);
	if (A("length")) return mkint(J, (long long)len);
	if (A("previtem")) return i ? v[i - 1] : &V_undef;
	if (A("nextitem")) return i + 1 < len ? v[i + 1] : &V_undef;
	if (A("depth")) return mkint(J, 1);
	if (A("depth0")) return mkint(J, 0);
	if (A("cycle")) {
		val *fn = mkv(J, V_FUNC);
		fn->fn.id = F_CYCLE;
		fn->fn.self = o;
		return fn;
	}
#undef A
	return &V_undef;
}

static val *getattr_(jx *J, val *o, const char *name, size_t n) {
	if (o->t == V_LOOP) return loop_attr(J, o, name, n);
	if (o->t == V_DICT || o->t == V_NS) {
		dent *e = dfind(J, o, name, n);
		if (e) return e->v;
	}
	return &V_undef;
}

static val *getitem(jx *J, val *o, val *k, int line) {
	if (o->t == V_LOOP && k->t == V_STR) return loop_attr(J, o, k->s.p, k->s.n);
	if (o->t == V_DICT || o->t == V_NS) {
		if (k->t == V_STR) return getattr_(J, o, k->s.p, k->s.n);
		val *ks = vstr(J, k); /* JSON keys are strings: d[1] finds "1" */
		return getattr_(J, o, ks->s.p, ks->s.n);
	}
	if (o->t == V_LIST || o->t == V_STR) {
		if (k->t != V_INT && k->t != V_BOOL) {
			if (k->t == V_STR) return &V_undef;
			jfail(J, MS_EFORMAT, line, "indices must be integers, not %s", tname(k->t));
		}
		long long i = numi(k);
		if (o->t == V_LIST) {
			if (i < 0) i += (long long)o->l.n;
			if (i < 0 || i >= (long long)o->l.n) return &V_undef;
			return o->l.v[i];
		}
		long long len = (long long)u8len(o->s.p, o->s.n);
		if (i < 0) i += len;
		if (i < 0 || i >= len) return &V_undef;
		size_t b = u8off(o->s.p, o->s.n, (size_t)i), e = u8off(o->s.p, o->s.n, (size_t)i + 1);
		return mkstr(J, o->s.p + b, e - b);
	}
	return &V_undef;
}

/* ---- call arguments */

typedef struct args {
	val **pos;
	size_t np;
	const char **kwn;
	val **kwv;
	size_t nkw;
	int line;
} args;

static args eval_args(jx *J, frame *f, node *call, val *first) {
	args a = {.line = call->line};
	size_t np = call->nk + (first != NULL);
	a.pos = jalloc(J, (np + 1) * sizeof(val *));
	if (first) a.pos[a.np++] = first;
	for (size_t i = 0; i < call->nk; i++) a.pos[a.np++] = eval(J, f, call->kids[i]);
	a.nkw = call->nkw;
	a.kwn = call->kwn;
	a.kwv = jalloc(J, (call->nkw + 1) * sizeof(val *));
	for (size_t i = 0; i < call->nkw; i++) a.kwv[i] = eval(J, f, call->kwv[i]);
	return a;
}

/* argument i (positional) or the keyword `name`, else NULL */
static val *arg(args *a, size_t i, const char *name) {
	if (i < a->np) return a->pos[i];
	for (size_t k = 0; name && k < a->nkw; k++)
		if (!strcmp(a->kwn[k], name)) return a->kwv[k];
	return NULL;
}
static val *str_arg(jx *J, args *a, size_t i, const char *name, const char *what) {
	val *v = arg(a, i, name);
	if (!v) return NULL;
	if (v->t == V_NONE) return NULL;
	if (v->t != V_STR) jfail(J, MS_EFORMAT, a->line, "%s expects a string argument, got %s", what, tname(v->t));
	return v;
}

/* ---- string helpers */

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static val *strip(jx *J, val *s, val *chars, int left, int right) {
	size_t b = 0, e = s->s.n;
	const char *set = chars ? chars->s.p : NULL;
	size_t setn = chars ? chars->s.n : 0;
#define STRIPPABLE(c) (set ? memchr(set, (c), setn) != NULL : is_ws((unsigned char)(c)))
	if (left) while (b < e && STRIPPABLE(s->s.p[b])) b++;
	if (right) while (e > b && STRIPPABLE(s->s.p[e - 1])) e--;
#undef STRIPPABLE
	return mkstr(J, s->s.p + b, e - b);
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAP };
static val *recase(jx *J, val *s, int mode) {
	ms_buf *b = tbuf(J);
	const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s->s.p;
	utf8proc_ssize_t i = 0, n = (utf8proc_ssize_t)s->s.n;
	int prev_cased = 0, first = 1;
	while (i < n) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t k = utf8proc_iterate(p + i, n - i, &cp);
		if (k <= 0) { ms_buf_append(b, p + i, 1); i++; continue; }
		utf8proc_int32_t o = cp;
		int cased = utf8proc_tolower(cp) != cp || utf8proc_toupper(cp) != cp;
		switch (mode) {
		case CASE_UPPER: o = utf8proc_toupper(cp); break;
		case CASE_LOWER: o = utf8proc_tolower(cp); break;
		case CASE_TITLE: o = prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp); break;
		case CASE_CAP: o = first ? utf8proc_totitle(cp) : utf8proc_tolower(cp); break;
		}
		prev_cased = cased;
		first = 0;
		put_utf8(b, (uint32_t)o);
		i += k;
	}
	val *r = mkstr(J, b->data ? b->data : "", b->len);
	ms_buf_free(b);
	return r;
}

/* Jinja's title filter (not str.title): words start after - ( { [ < or whitespace;
 * each word is capitalised and the rest lowered */
static val *title_filter(jx *J, val *s) {
	ms_buf *b = tbuf(J);
	size_t i = 0;
	while (i < s->s.n) {
		size_t j = i;
		while (j < s->s.n && (strchr("-({[<", s->s.p[j]) || is_ws((unsigned char)s->s.p[j]))) j++;
		ms_buf_append(b, s->s.p + i, j - i);
		if (j >= s->s.n) break;
		size_t k = j;
		while (k < s->s.n && !strchr("-({[<", s->s.p[k]) && !is_ws((unsigned char)s->s.p[k])) k++;
		size_t c1 = j + 1;
		while (c1 < k && ((unsigned char)s->s.p[c1] & 0xC0) == 0x80) c1++;
		val *first = recase(J, mkstr(J, s->s.p + j, c1 - j), CASE_UPPER);
		val *rest = recase(J, mkstr(J, s->s.p + c1, k - c1), CASE_LOWER);
		ms_buf_append(b, first->s.p, first->s.n);
		ms_buf_append(b, rest->s.p, rest->s.n);
		i = k;
	}
	val *r = mkstr(J, b->data ? b->data : "", b->len);
	ms_buf_free(b);
	return r;
}

static val *replace(jx *J, val *s, val *old, val *new_, long long count) {
	ms_buf *b = tbuf(J);
	size_t i = 0;
	long long done = 0;
	if (old->s.n == 0) { /* Python inserts between every character */
		val *chars = as_list(J, s, 0);
		for (size_t k = 0; k < chars->l.n; k++) {
			if (count < 0 || done < count) { ms_buf_append(b, new_->s.p, new_->s.n); done++; }
			ms_buf_append(b, chars->l.v[k]->s.p, chars->l.v[k]->s.n);
			if (b->len > J->o.max_output * 2) break;
		}
		if (count < 0 || done < count) ms_buf_append(b, new_->s.p, new_->s.n);
	} else {
		while (i < s->s.n) {
			const char *m = (count < 0 || done < count) ? memmem(s->s.p + i, s->s.n - i, old->s.p, old->s.n) : NULL;
			if (!m) { ms_buf_append(b, s->s.p + i, s->s.n - i); break; }
			ms_buf_append(b, s->s.p + i, (size_t)(m - s->s.p) - i);
			ms_buf_append(b, new_->s.p, new_->s.n);
			i = (size_t)(m - s->s.p) + old->s.n;
			done++;
			if (b->len > J->o.max_output * 2) break;
		}
	}
	if (b->len > J->o.max_output * 2) { ms_buf_free(b); jfail(J, MS_ETOOBIG, 0, "replace result too large"); }
	val *r = mkstr(J, b->data ? b->data : "", b->len);
	ms_buf_free(b);
	return r;
}

static val *split(jx *J, val *s, val *sep, long long maxsplit) {
	val *l = mklist(J, 4);
	const char *p = s->s.p;
	size_t n = s->s.n, i = 0;
	if (!sep) {
		for (;;) {
			while (i < n && is_ws((unsigned char)p[i])) i++;
			if (i >= n) break;
			if (maxsplit >= 0 && (long long)l->l.n >= maxsplit) {
				size_t e = n;
				while (e > i && is_ws((unsigned char)p[e - 1])) e--;
				lpush(J, l, mkstr(J, p + i, e - i));
				break;
			}
			size_t j = i;
			while (j < n && !is_ws((unsigned char)p[j])) j++;
			lpush(J, l, mkstr(J, p + i, j - i));
			i = j;
		}
		return l;
	}
	if (sep->s.n == 0) jfail(J, MS_EFORMAT, 0, "empty separator");
	for (;;) {
		const char *m = (maxsplit < 0 || (long long)l->l.n < maxsplit) ? memmem(p + i, n - i, sep->s.p, sep->s.n) : NULL;
		if (!m) { lpush(J, l, mkstr(J, p + i, n - i)); break; }
		lpush(J, l, mkstr(J, p + i, (size_t)(m - p) - i));
		i = (size_t)(m - p) + sep->s.n;
	}
	return l;
}

static int affix(val *s, val *x, int end) {
	if (x->s.n > s->s.n) return 0;
	return !memcmp(s->s.p + (end ? s->s.n - x->s.n : 0), x->s.p, x->s.n);
}

/* ---- JSON output in Python's json.dumps style (as transformers' tojson) */

static void json_str(ms_buf *b, const char *p, size_t n) {
	ms_buf_puts(b, "\"");
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		switch (c) {
		case '"': ms_buf_puts(b, "\\\""); break;
		case '\\': ms_buf_puts(b, "\\\\"); break;
		case '\n': ms_buf_puts(b, "\\n"); break;
		case '\r': ms_buf_puts(b, "\\r"); break;
		case '\t': ms_buf_puts(b, "\\t"); break;
		case '\b': ms_buf_puts(b, "\\b"); break;
		case '\f': ms_buf_puts(b, "\\f"); break;
		default:
			if (c < 0x20) ms_buf_printf(b, "\\u%04x", c);
			else ms_buf_append(b, p + i, 1);
		}
	}
	ms_buf_puts(b, "\"");
}

static void to_json(jx *J, ms_buf *b, val *v, int indent, int level, int line) {
	if (level > J->o.max_depth * 4) jfail(J, MS_ETOOBIG, line, "tojson: value nested too deeply");
	if (b->len > J->o.max_output * 2) jfail(J, MS_ETOOBIG, line, "tojson: value too large");
	switch (v->t) {
	case V_UNDEF: jfail(J, MS_EFORMAT, line, "tojson: value is undefined");
	case V_NONE: ms_buf_puts(b, "null"); break;
	case V_BOOL: ms_buf_puts(b, v->b ? "true" : "false"); break;
	case V_INT: ms_buf_printf(b, "%lld", v->i); break;
	case V_FLOAT:
		if (isnan(v->f)) ms_buf_puts(b, "NaN");
		else if (isinf(v->f)) ms_buf_puts(b, v->f < 0 ? "-Infinity" : "Infinity");
		else fmt_float(b, v->f);
		break;
	case V_STR: json_str(b, v->s.p, v->s.n); break;
	case V_LIST: case V_DICT: case V_NS: {
		int isl = v->t == V_LIST;
		size_t n = isl ? v->l.n : v->d.n;
		ms_buf_puts(b, isl ? "[" : "{");
		if (n == 0) { ms_buf_puts(b, isl ? "]" : "}"); break; }
		for (size_t i = 0; i < n; i++) {
			if (i) ms_buf_puts(b, indent >= 0 ? "," : ", ");
			if (indent >= 0) {
				ms_buf_puts(b, "\n");
				for (int k = 0; k < indent * (level + 1); k++) ms_buf_puts(b, " ");
			}
			if (isl) to_json(J, b, v->l.v[i], indent, level + 1, line);
			else {
				json_str(b, v->d.e[i].k->s.p, v->d.e[i].k->s.n);
				ms_buf_puts(b, ": ");
				to_json(J, b, v->d.e[i].v, indent, level + 1, line);
			}
		}
		if (indent >= 0) {
			ms_buf_puts(b, "\n");
			for (int k = 0; k < indent * level; k++) ms_buf_puts(b, " ");
		}
		ms_buf_puts(b, isl ? "]" : "}");
		break;
	}
	default: jfail(J, MS_EFORMAT, line, "tojson: cannot serialise a %s", tname(v->t));
	}
}

static val *buf_val(jx *J, ms_buf *b) {
	val *r = mkstr(J, b->data ? b->data : "", b->len);
	ms_buf_free(b);
	return r;
}

/* ---- tests */

static int run_test(jx *J, const char *name, val *v, args *a) {
	val *x = arg(a, 1, NULL);
	int line = a->line;
#define IS(n) (!strcmp(name, n))
	if (IS("defined")) return v->t != V_UNDEF;
	if (IS("undefined")) return v->t == V_UNDEF;
	if (IS("none")) return v->t == V_NONE;
	if (IS("string")) return v->t == V_STR;
	if (IS("number")) return isnum(v); /* Python's bool is a number */
	if (IS("integer")) return v->t == V_INT;
	if (IS("float")) return v->t == V_FLOAT;
	if (IS("boolean")) return v->t == V_BOOL;
	if (IS("mapping")) return v->t == V_DICT;
	/* Jinja's Undefined iterates as empty, so it passes both */
	if (IS("iterable")) return v->t == V_LIST || v->t == V_DICT || v->t == V_STR || v->t == V_UNDEF;
	if (IS("sequence")) return v->t == V_LIST || v->t == V_DICT || v->t == V_STR || v->t == V_UNDEF;
	if (IS("callable")) return v->t == V_FUNC || v->t == V_MACRO;
	if (IS("true")) return v->t == V_BOOL && v->b;
	if (IS("false")) return v->t == V_BOOL && !v->b;
	if (IS("odd") || IS("even")) { /* value % 2 == 1, as Jinja computes it */
		val *m = arith(J, "%", v, mkint(J, 2), line);
		return numf(m) == (IS("odd") ? 1.0 : 0.0);
	}
	if (IS("divisibleby")) {
		if (v->t != V_INT || !x || x->t != V_INT || x->i == 0) jfail(J, MS_EFORMAT, line, "'divisibleby' needs non-zero integers");
		return x->i == -1 || v->i % x->i == 0;
	}
	if (IS("lower") || IS("upper")) {
		if (v->t != V_STR) return 0;
		val *r = recase(J, v, IS("lower") ? CASE_LOWER : CASE_UPPER);
		return r->s.n == v->s.n && !memcmp(r->s.p, v->s.p, v->s.n);
	}
	if (!x) x = &V_undef;
	if (IS("eq") || IS("equalto") || IS("==")) return veq(J, v, x);
	if (IS("ne") || IS("!=")) return !veq(J, v, x);
	if (IS("sameas")) return v == x || (v->t == x->t && (v->t == V_NONE || v->t == V_UNDEF || (v->t == V_BOOL && v->b == x->b)));
	if (IS("lt") || IS("lessthan") || IS("<")) return vcmp(J, v, x, line) < 0;
	if (IS("le") || IS("<=")) return vcmp(J, v, x, line) <= 0;
	if (IS("gt") || IS("greaterthan") || IS(">")) return vcmp(J, v, x, line) > 0;
	if (IS("ge") || IS(">=")) return vcmp(J, v, x, line) >= 0;
	if (IS("in")) return contains(J, x, v, line);
#undef IS
	jfail(J, MS_EFORMAT, line, "unknown test '%s'", name);
}

/* ---- filters */

static val *apply_filter(jx *J, const char *name, args *a);

static val *attr_path(jx *J, val *v, val *attr) {
	/* "a.b" and "0" like Jinja's make_attrgetter */
	if (attr->t == V_INT) return getitem(J, v, attr, 0);
	const char *p = attr->s.p, *end = p + attr->s.n;
	while (p <= end) {
		const char *dot = memchr(p, '.', (size_t)(end - p));
		if (!dot) dot = end;
		int digits = dot > p;
		for (const char *q = p; q < dot; q++) digits &= isdigit((unsigned char)*q) != 0;
		if (digits && v->t == V_LIST) v = getitem(J, v, mkint(J, strtoll(p, NULL, 10)), 0);
		else v = getattr_(J, v, p, (size_t)(dot - p));
		p = dot + 1;
	}
	return v;
}

/* ordering for sort/dictsort; never fails (incomparable values group by type) */
static int sort_cmp(jx *J, val *a, val *b, int ci) {
	if (a->t == V_STR && b->t == V_STR && ci) {
		size_t m = a->s.n < b->s.n ? a->s.n : b->s.n;
		for (size_t i = 0; i < m; i++) {
			int c = tolower((unsigned char)a->s.p[i]) - tolower((unsigned char)b->s.p[i]);
			if (c) return c;
		}
		return (a->s.n > b->s.n) - (a->s.n < b->s.n);
	}
	if ((isnum(a) && isnum(b)) || (a->t == V_STR && b->t == V_STR)) return vcmp(J, a, b, 0);
	return a->t - b->t;
}

/* stable sort of l by key(l[i]) */
static val *sort_list(jx *J, val *l, val **keys, int reverse, int ci) {
	size_t n = l->l.n;
	step(J, n, 0);
	/* bottom-up merge sort on indices: stable, like Python's sort */
	size_t *idx = jalloc(J, (n + 1) * sizeof(size_t)), *tmp = jalloc(J, (n + 1) * sizeof(size_t));
	for (size_t i = 0; i < n; i++) idx[i] = i;
	for (size_t w = 1; w < n; w *= 2) {
		for (size_t lo = 0; lo < n; lo += 2 * w) {
			size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
			size_t i = lo, j = mid, k = lo;
			while (i < mid && j < hi) {
				int c = sort_cmp(J, keys[idx[j]], keys[idx[i]], ci);
				if (reverse) c = -c;
				tmp[k++] = c < 0 ? idx[j++] : idx[i++];
			}
			while (i < mid) tmp[k++] = idx[i++];
			while (j < hi) tmp[k++] = idx[j++];
		}
		memcpy(idx, tmp, n * sizeof(size_t));
	}
	val *r = mklist(J, n + 1);
	for (size_t i = 0; i < n; i++) lpush(J, r, l->l.v[idx[i]]);
	return r;
}

static val *items_of(jx *J, val *d, int line) {
	if (d->t == V_UNDEF) return mklist(J, 1);
	if (d->t != V_DICT && d->t != V_NS) jfail(J, MS_EFORMAT, line, "items() needs a mapping, got %s", tname(d->t));
	val *l = mklist(J, d->d.n + 1);
	for (size_t i = 0; i < d->d.n; i++) {
		val *p = mklist(J, 2);
		p->tuple = 1;
		lpush(J, p, d->d.e[i].k);
		lpush(J, p, d->d.e[i].v);
		lpush(J, l, p);
	}
	return l;
}

static val *apply_filter(jx *J, const char *name, args *a) {
	val *v = a->pos[0];
	int line = a->line;
#define IS(n) (!strcmp(name, n))
	if (IS("safe")) return v;
	if (IS("default") || IS("d")) {
		val *dflt = arg(a, 1, "default_value");
		val *boolean = arg(a, 2, "boolean");
		if (v->t == V_UNDEF || (boolean && truthy(boolean) && !truthy(v))) return dflt ? dflt : mkstr(J, "", 0);
		return v;
	}
	if (IS("length") || IS("count")) return mkint(J, vlen(J, v, line));
	if (IS("string")) return vstr(J, v);
	if (IS("tojson")) {
		val *ind = arg(a, 1, "indent");
		ms_buf *b = tbuf(J);
		to_json(J, b, v, ind && ind->t == V_INT ? (int)(ind->i > 64 ? 64 : ind->i < 0 ? 0 : ind->i) : -1, 0, line);
		return buf_val(J, b);
	}
	if (IS("list")) return as_list(J, v, line);
	if (IS("items")) return items_of(J, v, line);
	if (IS("first") || IS("last")) {
		val *l = as_list(J, v, line);
		if (!l->l.n) return &V_undef;
		return l->l.v[IS("first") ? 0 : l->l.n - 1];
	}
	if (IS("reverse")) {
		if (v->t == V_STR) return do_slice(J, v, NULL, NULL, mkint(J, -1), line);
		val *l = as_list(J, v, line), *r = mklist(J, l->l.n + 1);
		for (size_t i = l->l.n; i > 0; i--) lpush(J, r, l->l.v[i - 1]);
		return r;
	}
	if (IS("int")) {
		val *dflt = arg(a, 1, "default");
		if (v->t == V_INT) return v;
		if (v->t == V_BOOL) return mkint(J, v->b);
		if (v->t == V_FLOAT && isfinite(v->f) && fabs(v->f) < 9e18) return mkint(J, (long long)v->f);
		if (v->t == V_STR) {
			char *e;
			errno = 0;
			long long i = strtoll(v->s.p, &e, 10);
			if (e != v->s.p && !errno) { while (is_ws((unsigned char)*e)) e++; if (!*e) return mkint(J, i); }
			double d = strtod(v->s.p, &e);
			if (e != v->s.p && !*e && isfinite(d) && fabs(d) < 9e18) return mkint(J, (long long)d);
		}
		return dflt ? dflt : mkint(J, 0);
	}
	if (IS("float")) {
		if (v->t == V_FLOAT) return v;
		if (isnum(v)) return mkfloat(J, numf(v));
		if (v->t == V_STR) { char *e; double d = strtod(v->s.p, &e); if (e != v->s.p) return mkfloat(J, d); }
		val *dflt = arg(a, 1, "default");
		return dflt ? dflt : mkfloat(J, 0);
	}
	if (IS("abs")) {
		if (v->t == V_INT) { if (v->i == LLONG_MIN) jfail(J, MS_EFORMAT, line, "integer overflow"); return mkint(J, v->i < 0 ? -v->i : v->i); }
		if (v->t == V_FLOAT) return mkfloat(J, fabs(v->f));
		if (v->t == V_BOOL) return mkint(J, v->b);
		jfail(J, MS_EFORMAT, line, "abs needs a number");
	}
	if (IS("round")) {
		val *p = arg(a, 1, "precision");
		long long pr = p && p->t == V_INT ? p->i : 0;
		if (pr < 0 || pr > 15) pr = 0;
		double m = pow(10, (double)pr);
		return mkfloat(J, round(numf(isnum(v) ? v : &V_false) * m) / m);
	}
	if (IS("dictsort")) {
		val *l = items_of(J, v, line);
		val *cs = arg(a, 1, "case_sensitive"), *by = arg(a, 2, "by"), *rev = arg(a, 3, "reverse");
		int byval = by && by->t == V_STR && streq(by, "value", 5);
		val **keys = jalloc(J, (l->l.n + 1) * sizeof(val *));
		for (size_t i = 0; i < l->l.n; i++) keys[i] = l->l.v[i]->l.v[byval];
		return sort_list(J, l, keys, rev && truthy(rev), !(cs && truthy(cs)));
	}
	if (IS("sort")) {
		val *l = as_list(J, v, line);
		val *rev = arg(a, 1, "reverse"), *cs = arg(a, 2, "case_sensitive"), *at = arg(a, 3, "attribute");
		val **keys = jalloc(J, (l->l.n + 1) * sizeof(val *));
		for (size_t i = 0; i < l->l.n; i++) keys[i] = at && (at->t == V_STR || at->t == V_INT) ? attr_path(J, l->l.v[i], at) : l->l.v[i];
		return sort_list(J, l, keys, rev && truthy(rev), !(cs && truthy(cs)));
	}
	if (IS("unique")) {
		val *l = as_list(J, v, line), *r = mklist(J, 4);
		for (size_t i = 0; i < l->l.n; i++)
			if (!contains(J, r, l->l.v[i], line)) lpush(J, r, l->l.v[i]);
		return r;
	}
	if (IS("join")) {
		val *l = as_list(J, v, line);
		val *sep = str_arg(J, a, 1, "d", "join");
		val *at = arg(a, 2, "attribute");
		ms_buf *b = tbuf(J);
		for (size_t i = 0; i < l->l.n; i++) {
			if (i && sep) ms_buf_append(b, sep->s.p, sep->s.n);
			to_str(J, b, at ? attr_path(J, l->l.v[i], at) : l->l.v[i], 0);
			if (b->len > J->o.max_output * 2) { ms_buf_free(b); jfail(J, MS_ETOOBIG, line, "join result too large"); }
		}
		step(J, l->l.n / 16, line);
		return buf_val(J, b);
	}
	if (IS("map")) {
		val *l = as_list(J, v, line), *r = mklist(J, l->l.n + 1);
		val *at = arg(a, 99, "attribute");
		val *fname = a->np > 1 ? a->pos[1] : NULL;
		if (!at && (!fname || fname->t != V_STR)) jfail(J, MS_EFORMAT, line, "map needs a filter name or attribute=");
		for (size_t i = 0; i < l->l.n; i++) {
			if (at) {
				val *x = attr_path(J, l->l.v[i], at);
				val *dflt = arg(a, 99, "default");
				lpush(J, r, x->t == V_UNDEF && dflt ? dflt : x);
			} else {
				args sub = *a;
				sub.pos = jalloc(J, (a->np + 1) * sizeof(val *));
				sub.pos[0] = l->l.v[i];
				for (size_t k = 2; k < a->np; k++) sub.pos[k - 1] = a->pos[k];
				sub.np = a->np - 1;
				lpush(J, r, apply_filter(J, fname->s.p, &sub));
			}
		}
		return r;
	}
	if (IS("selectattr") || IS("rejectattr") || IS("select") || IS("reject")) {
		int isattr = name[strlen(name) - 4] == 'a', keep = name[0] == 's';
		size_t ti = isattr ? 2 : 1;
		val *at = isattr ? arg(a, 1, NULL) : NULL;
		if (isattr && (!at || (at->t != V_STR && at->t != V_INT))) jfail(J, MS_EFORMAT, line, "%s needs an attribute name", name);
		val *tn = arg(a, ti, NULL);
		if (tn && tn->t != V_STR) jfail(J, MS_EFORMAT, line, "%s: test name must be a string", name);
		val *l = as_list(J, v, line), *r = mklist(J, 4);
		for (size_t i = 0; i < l->l.n; i++) {
			val *x = at ? attr_path(J, l->l.v[i], at) : l->l.v[i];
			int ok;
			if (!tn) ok = truthy(x);
			else {
				args ta = {.line = line};
				ta.pos = jalloc(J, (a->np + 2) * sizeof(val *));
				ta.pos[ta.np++] = x;
				for (size_t k = ti + 1; k < a->np; k++) ta.pos[ta.np++] = a->pos[k];
				ok = run_test(J, tn->s.p, x, &ta);
			}
			if (ok == keep) lpush(J, r, l->l.v[i]);
		}
		step(J, l->l.n, line);
		return r;
	}
	if (IS("batch") || IS("slice")) jfail(J, MS_EFORMAT, line, "filter '%s' is not supported", name);
	/* string filters */
	if (v->t == V_UNDEF) v = mkstr(J, "", 0);
	if (IS("trim")) return strip(J, vstr(J, v), str_arg(J, a, 1, "chars", "trim"), 1, 1);
	if (IS("upper")) return recase(J, vstr(J, v), CASE_UPPER);
	if (IS("lower")) return recase(J, vstr(J, v), CASE_LOWER);
	if (IS("title")) return title_filter(J, vstr(J, v));
	if (IS("capitalize")) return recase(J, vstr(J, v), CASE_CAP);
	if (IS("replace")) {
		val *o = str_arg(J, a, 1, "old", "replace"), *nw = str_arg(J, a, 2, "new", "replace");
		val *c = arg(a, 3, "count");
		if (!o || !nw) jfail(J, MS_EFORMAT, line, "replace needs two strings");
		return replace(J, vstr(J, v), o, nw, c && c->t == V_INT ? c->i : -1);
	}
	if (IS("indent")) {
		val *w = arg(a, 1, "width"), *first = arg(a, 2, "first"), *blank = arg(a, 3, "blank");
		long long wn = w && w->t == V_INT ? w->i : 4;
		if (wn < 0 || wn > 256) wn = 4;
		val *s = vstr(J, v);
		ms_buf *b = tbuf(J);
		int at_start = 1, first_line = 1;
		for (size_t i = 0; i < s->s.n; i++) {
			if (at_start) {
				int blank_line = s->s.p[i] == '\n';
				if ((!first_line || (first && truthy(first))) && (!blank_line || (blank && truthy(blank))))
					for (long long k = 0; k < wn; k++) ms_buf_puts(b, " ");
				at_start = 0;
			}
			ms_buf_append(b, s->s.p + i, 1);
			if (s->s.p[i] == '\n') { at_start = 1; first_line = 0; }
			if (b->len > J->o.max_output * 2) { ms_buf_free(b); jfail(J, MS_ETOOBIG, line, "indent result too large"); }
		}
		return buf_val(J, b);
	}
	if (IS("wordcount")) return mkint(J, (long long)split(J, vstr(J, v), NULL, -1)->l.n);
#undef IS
	jfail(J, MS_EFORMAT, line, "unknown filter '%s'", name);
}

/* ---- methods on values: "abc".strip(), d.items(), l.append(x) */

static val *call_method(jx *J, val *self, const char *m, args *a, int *found) {
	int line = a->line;
	*found = 1;
#define IS(n) (!strcmp(m, n))
	if (self->t == V_STR) {
		if (IS("strip") || IS("lstrip") || IS("rstrip"))
			return strip(J, self, str_arg(J, a, 0, "chars", m), m[0] != 'r', m[0] != 'l');
		if (IS("upper")) return recase(J, self, CASE_UPPER);
		if (IS("lower")) return recase(J, self, CASE_LOWER);
		if (IS("title")) return recase(J, self, CASE_TITLE);
		if (IS("capitalize")) return recase(J, self, CASE_CAP);
		if (IS("startswith") || IS("endswith")) {
			val *x = arg(a, 0, NULL);
			if (x && x->t == V_LIST) {
				for (size_t i = 0; i < x->l.n; i++)
					if (x->l.v[i]->t == V_STR && affix(self, x->l.v[i], m[0] == 'e')) return &V_true;
				return &V_false;
			}
			x = str_arg(J, a, 0, NULL, m);
			if (!x) jfail(J, MS_EFORMAT, line, "%s needs an argument", m);
			return mkbool(affix(self, x, m[0] == 'e'));
		}
		if (IS("split") || IS("rsplit")) {
			val *ms = arg(a, 1, "maxsplit");
			return split(J, self, str_arg(J, a, 0, "sep", "split"), IS("split") && ms && ms->t == V_INT ? ms->i : -1);
		}
		if (IS("replace")) {
			val *o = str_arg(J, a, 0, NULL, m), *nw = str_arg(J, a, 1, NULL, m), *c = arg(a, 2, "count");
			if (!o || !nw) jfail(J, MS_EFORMAT, line, "replace needs two strings");
			return replace(J, self, o, nw, c && c->t == V_INT ? c->i : -1);
		}
		if (IS("find") || IS("count")) {
			val *x = str_arg(J, a, 0, NULL, m);
			if (!x) jfail(J, MS_EFORMAT, line, "%s needs a string", m);
			if (IS("find")) {
				const char *p = x->s.n ? memmem(self->s.p, self->s.n, x->s.p, x->s.n) : self->s.p;
				return mkint(J, p ? (long long)u8len(self->s.p, (size_t)(p - self->s.p)) : -1);
			}
			if (!x->s.n) return mkint(J, (long long)u8len(self->s.p, self->s.n) + 1);
			long long c = 0;
			for (const char *p = self->s.p; (p = memmem(p, self->s.n - (size_t)(p - self->s.p), x->s.p, x->s.n)); p += x->s.n) c++;
			return mkint(J, c);
		}
		if (IS("join")) {
			val *l = as_list(J, arg(a, 0, NULL) ? arg(a, 0, NULL) : &V_undef, line);
			ms_buf *b = tbuf(J);
			for (size_t i = 0; i < l->l.n; i++) {
				if (i) ms_buf_append(b, self->s.p, self->s.n);
				to_str(J, b, l->l.v[i], 0);
				if (b->len > J->o.max_output * 2) { ms_buf_free(b); jfail(J, MS_ETOOBIG, line, "join result too large"); }
			}
			return buf_val(J, b);
		}
		if (IS("isdigit") || IS("isspace") || IS("isalpha") || IS("isupper") || IS("islower")) {
			if (!self->s.n) return &V_false;
			if (IS("isupper") || IS("islower")) {
				val *r = recase(J, self, IS("isupper") ? CASE_UPPER : CASE_LOWER);
				return mkbool(r->s.n == self->s.n && !memcmp(r->s.p, self->s.p, r->s.n) && !streq(recase(J, self, IS("isupper") ? CASE_LOWER : CASE_UPPER), self->s.p, self->s.n));
			}
			for (size_t i = 0; i < self->s.n; i++) {
				int c = (unsigned char)self->s.p[i];
				if (IS("isdigit") ? !isdigit(c) : IS("isspace") ? !is_ws((unsigned char)c) : !isalpha(c)) return &V_false;
			}
			return &V_true;
		}
	}
	if (self->t == V_DICT || self->t == V_NS) {
		if (IS("items")) return items_of(J, self, line);
		if (IS("keys") || IS("values")) {
			val *l = mklist(J, self->d.n + 1);
			for (size_t i = 0; i < self->d.n; i++) lpush(J, l, IS("keys") ? self->d.e[i].k : self->d.e[i].v);
			return l;
		}
		if (IS("get")) {
			val *k = arg(a, 0, NULL), *d = arg(a, 1, NULL);
			if (!k) jfail(J, MS_EFORMAT, line, "get needs a key");
			val *r = getitem(J, self, k, line);
			return r->t == V_UNDEF ? (d ? d : &V_none) : r;
		}
	}
	if (self->t == V_LIST) {
		if (IS("append")) {
			val *x = arg(a, 0, NULL);
			if (!x) jfail(J, MS_EFORMAT, line, "append needs an argument");
			lpush(J, self, x);
			return &V_none;
		}
		if (IS("index")) {
			val *x = arg(a, 0, NULL);
			for (size_t i = 0; x && i < self->l.n; i++)
				if (veq(J, self->l.v[i], x)) return mkint(J, (long long)i);
			jfail(J, MS_EFORMAT, line, "value not in list");
		}
	}
#undef IS
	*found = 0;
	return NULL;
}

static val *call_macro(jx *J, val *mac, args *a);

static val *call_func(jx *J, val *fn, args *a) {
	int line = a->line;
	if (fn->t == V_MACRO) return call_macro(J, fn, a);
	if (fn->t != V_FUNC) jfail(J, MS_EFORMAT, line, "%s is not callable", fn->t == V_UNDEF ? "undefined value" : tname(fn->t));
	switch (fn->fn.id) {
	case F_RAISE: {
		val *m = arg(a, 0, "message");
		ms_buf *b = tbuf(J);
		if (m) to_str(J, b, m, 0);
		snprintf(J->msg, sizeof J->msg, "%s", b->data ? b->data : "");
		ms_buf_free(b);
		J->rc = MS_EINVAL;
		longjmp(J->jb, 1);
	}
	case F_RANGE: {
		long long r[3] = {0, 0, 1};
		if (a->np < 1 || a->np > 3) jfail(J, MS_EFORMAT, line, "range expects 1 to 3 arguments");
		for (size_t i = 0; i < a->np; i++) {
			if (a->pos[i]->t != V_INT) jfail(J, MS_EFORMAT, line, "range arguments must be integers");
			r[a->np == 1 ? 1 : i] = a->pos[i]->i;
		}
		if (r[2] == 0) jfail(J, MS_EFORMAT, line, "range step must not be zero");
		double cnt = ((double)r[1] - (double)r[0]) / (double)r[2];
		if (cnt > (double)(J->o.max_steps)) jfail(J, MS_ETOOBIG, line, "range too large");
		val *l = mklist(J, 4);
		for (long long i = r[0]; r[2] > 0 ? i < r[1] : i > r[1]; i += r[2]) {
			lpush(J, l, mkint(J, i));
			step(J, 1, line);
			if (__builtin_add_overflow(i, r[2], &(long long){0})) break;
		}
		return l;
	}
	case F_NAMESPACE: case F_DICT: {
		val *d = mkdict(J, fn->fn.id == F_NAMESPACE ? V_NS : V_DICT);
		if (a->np == 1 && (a->pos[0]->t == V_DICT || a->pos[0]->t == V_NS))
			for (size_t i = 0; i < a->pos[0]->d.n; i++) dset(J, d, a->pos[0]->d.e[i].k, a->pos[0]->d.e[i].v);
		for (size_t i = 0; i < a->nkw; i++) dsetc(J, d, a->kwn[i], a->kwv[i]);
		return d;
	}
	case F_STRFTIME: {
		val *f = str_arg(J, a, 0, NULL, "strftime_now");
		if (!f) jfail(J, MS_EFORMAT, line, "strftime_now needs a format");
		time_t now = time(NULL);
		struct tm tm;
		localtime_r(&now, &tm);
		char out[256];
		size_t n = strftime(out, sizeof out, f->s.p, &tm);
		return mkstr(J, out, n);
	}
	case F_CYCLE:
		if (!a->np) jfail(J, MS_EFORMAT, line, "loop.cycle needs arguments");
		return a->pos[fn->fn.self->lp.i % a->np];
	case F_METHOD: {
		int found;
		val *r = call_method(J, fn->fn.self, fn->fn.name, a, &found);
		if (!found) jfail(J, MS_EFORMAT, line, "%s has no method '%s'", tname(fn->fn.self->t), fn->fn.name);
		return r;
	}
	}
	jfail(J, MS_EFORMAT, line, "bad function");
}

static val *call_macro(jx *J, val *mac, args *a) {
	node *m = mac->mac;
	if (++J->depth > J->o.max_depth) jfail(J, MS_ETOOBIG, a->line, "macro calls nested too deeply");
	frame *f = push_frame(J, J->globals);
	if (a->np > m->nk) jfail(J, MS_EFORMAT, a->line, "macro '%s' takes %zu arguments", m->name, m->nk);
	for (size_t i = 0; i < m->nk; i++) {
		node *p = m->kids[i];
		val *v = arg(a, i, p->name);
		if (!v) v = p->a ? eval(J, f, p->a) : &V_undef;
		dsetc(J, f->vars, p->name, v);
	}
	ms_buf *b = tbuf(J);
	/* the body's output goes to b; on error the longjmp leaks b's heap: keep it in the arena */
	exec(J, f, m->b, b);
	val *r = buf_val(J, b);
	J->depth--;
	return r;
}

static void assign(jx *J, frame *f, node *target, val *v, int line) {
	/* the target's name as a string value is made once and kept in the node */
	if ((target->k == E_NAME || target->k == E_ATTR) && !target->lit) target->lit = mkcstr(J, target->name);
	if (target->k == E_NAME) { dset(J, f->vars, target->lit, v); return; }
	if (target->k == E_ATTR) {
		val *o = eval(J, f, target->a);
		if (o->t != V_NS) jfail(J, MS_EFORMAT, line, "can only assign attributes of a namespace");
		dset(J, o, target->lit, v);
		return;
	}
	if (target->k == E_TUPLE) {
		val *l = as_list(J, v, line);
		if (l->l.n != target->nk) jfail(J, MS_EFORMAT, line, "cannot unpack %zu values into %zu names", l->l.n, target->nk);
		for (size_t i = 0; i < target->nk; i++) assign(J, f, target->kids[i], l->l.v[i], line);
		return;
	}
	jfail(J, MS_EFORMAT, line, "cannot assign to this expression");
}

static val *eval_(jx *J, frame *f, node *n);

static void enter_eval(jx *J, int line) {
	if (++J->edepth > J->o.max_depth * 16) jfail(J, MS_ETOOBIG, line, "expression nested too deeply");
}

static val *eval(jx *J, frame *f, node *n) {
	enter_eval(J, n->line);
	val *v = eval_(J, f, n);
	J->edepth--;
	return v;
}

static val *eval_(jx *J, frame *f, node *n) {
	J->line = n->line;
	step(J, 1, n->line);
	switch (n->k) {
	case E_LIT: return n->lit;
	case E_NAME: {
		val *v = lookup(J, f, n->name, n->nlen);
		if (v) return v;
		for (size_t i = 0; i < MS_ARRAY_LEN(builtins); i++)
			if (!strcmp(builtins[i].name, n->name)) {
				val *fn = mkv(J, V_FUNC);
				fn->fn.id = builtins[i].id;
				return fn;
			}
		return &V_undef;
	}
	case E_ATTR: {
		val *o = eval(J, f, n->a);
		val *v = getattr_(J, o, n->name, n->nlen);
		if (v->t == V_UNDEF && o->t != V_UNDEF && o->t != V_NONE) { /* a method used as a value: o.items */
			val *fn = mkv(J, V_FUNC);
			fn->fn.id = F_METHOD;
			fn->fn.name = n->name;
			fn->fn.self = o;
			static const char *const known[] = {"items", "keys", "values", "get", "strip", "lstrip", "rstrip", "split",
			                                    "startswith", "endswith", "upper", "lower", "title", "replace", "append",
			                                    "capitalize", "find", "count", "join", "index", "rsplit", NULL};
			for (const char *const *k = known; *k; k++)
				if (!strcmp(*k, n->name)) return fn;
		}
		return v;
	}
	case E_ITEM: return getitem(J, eval(J, f, n->a), eval(J, f, n->b), n->line);
	case E_SLICE: {
		val *o = eval(J, f, n->a);
		return do_slice(J, o, n->b ? eval(J, f, n->b) : NULL, n->c ? eval(J, f, n->c) : NULL,
		                n->d ? eval(J, f, n->d) : NULL, n->line);
	}
	case E_CALL: {
		if (n->a->k == E_ATTR) { /* method call: the object's method wins over a same-named key */
			val *self = eval(J, f, n->a->a);
			args a = eval_args(J, f, n, NULL);
			int found;
			val *r = call_method(J, self, n->a->name, &a, &found);
			if (found) return r;
			val *fn = getattr_(J, self, n->a->name, n->a->nlen);
			if (fn->t == V_UNDEF)
				jfail(J, MS_EFORMAT, n->line, "%s has no method '%s'", tname(self->t), n->a->name);
			return call_func(J, fn, &a);
		}
		val *fn = eval(J, f, n->a);
		if (fn->t == V_UNDEF && n->a->k == E_NAME) jfail(J, MS_EFORMAT, n->line, "'%s' is undefined", n->a->name);
		args a = eval_args(J, f, n, NULL);
		return call_func(J, fn, &a);
	}
	case E_FILTER: {
		args a = eval_args(J, f, n, eval(J, f, n->a));
		return apply_filter(J, n->name, &a);
	}
	case E_TEST: {
		args a = eval_args(J, f, n, eval(J, f, n->a));
		int r = run_test(J, n->name, a.pos[0], &a);
		return mkbool(n->neg ? !r : r);
	}
	case E_NOT: return mkbool(!truthy(eval(J, f, n->a)));
	case E_NEG: case E_POS: {
		val *v = eval(J, f, n->a);
		if (n->k == E_POS && isnum(v)) return v;
		if (v->t == V_INT || v->t == V_BOOL) {
			if (numi(v) == LLONG_MIN) jfail(J, MS_EFORMAT, n->line, "integer overflow");
			return mkint(J, -numi(v));
		}
		if (v->t == V_FLOAT) return mkfloat(J, -v->f);
		jfail(J, MS_EFORMAT, n->line, "bad operand type for unary -: %s", tname(v->t));
	}
	case E_AND: { val *a = eval(J, f, n->a); return truthy(a) ? eval(J, f, n->b) : a; }
	case E_OR: { val *a = eval(J, f, n->a); return truthy(a) ? a : eval(J, f, n->b); }
	case E_COND:
		if (truthy(eval(J, f, n->a))) return eval(J, f, n->b);
		return n->c ? eval(J, f, n->c) : &V_undef;
	case E_BIN: {
		val *a = eval(J, f, n->a), *b = eval(J, f, n->b);
		const char *op = n->name;
		if (!strcmp(op, "==")) return mkbool(veq(J, a, b));
		if (!strcmp(op, "!=")) return mkbool(!veq(J, a, b));
		if (!strcmp(op, "in")) return mkbool(contains(J, b, a, n->line));
		if (!strcmp(op, "notin")) return mkbool(!contains(J, b, a, n->line));
		if (op[0] == '<' || op[0] == '>') {
			int c = vcmp(J, a, b, n->line);
			if (!strcmp(op, "<")) return mkbool(c < 0);
			if (!strcmp(op, "<=")) return mkbool(c <= 0);
			if (!strcmp(op, ">")) return mkbool(c > 0);
			return mkbool(c >= 0);
		}
		if (strcmp(op, "~") && (a->t == V_UNDEF || b->t == V_UNDEF)) {
			node *u = a->t == V_UNDEF ? n->a : n->b;
			if (u->k == E_NAME) jfail(J, MS_EFORMAT, n->line, "'%s' is undefined", u->name);
			if (u->k == E_ATTR) jfail(J, MS_EFORMAT, n->line, "attribute '%s' is undefined", u->name);
		}
		return arith(J, op, a, b, n->line);
	}
	case E_LISTLIT: case E_TUPLE: {
		val *l = mklist(J, n->nk + 1);
		l->tuple = n->k == E_TUPLE;
		for (size_t i = 0; i < n->nk; i++) lpush(J, l, eval(J, f, n->kids[i]));
		return l;
	}
	case E_DICTLIT: {
		val *d = mkdict(J, V_DICT);
		for (size_t i = 0; i + 1 < n->nk; i += 2) {
			val *k = eval(J, f, n->kids[i]);
			dset(J, d, vstr(J, k), eval(J, f, n->kids[i + 1]));
		}
		return d;
	}
	}
	jfail(J, MS_EFORMAT, n->line, "bad expression");
}

enum { X_OK, X_BREAK, X_CONTINUE };

static void emit(jx *J, ms_buf *out, const char *p, size_t n, int line) {
	if (out->len + n > J->o.max_output)
		jfail(J, MS_ETOOBIG, line, "output exceeds %zu bytes", J->o.max_output);
	if (ms_buf_append(out, p, n)) jfail(J, MS_ENOMEM, line, "out of memory");
}

static int exec_for(jx *J, frame *f, node *n, ms_buf *out) {
	val *seq = eval(J, f, n->b);
	val *items = seq->t == V_DICT ? as_list(J, seq, n->line) : seq->t == V_UNDEF ? mklist(J, 1) : as_list(J, seq, n->line);
	node *body = n->body;
	if (n->d) { /* {% for x in xs if cond %}: filter first so loop.* counts the kept items */
		val *kept = mklist(J, items->l.n + 1);
		for (size_t i = 0; i < items->l.n; i++) {
			frame *tf = push_frame(J, f);
			assign(J, tf, n->a, items->l.v[i], n->line);
			if (truthy(eval(J, tf, n->d))) lpush(J, kept, items->l.v[i]);
		}
		items = kept;
	}
	size_t len = items->l.n;
	/* one frame for the body, emptied per iteration: names set in an iteration do not leak */
	frame *lf = push_frame(J, f);
	val *loopkey = mkcstr(J, "loop");
	for (size_t i = 0; i < len; i++) {
		step(J, 1, n->line);
		lf->vars->d.n = 0;
		val *loop = mkv(J, V_LOOP); /* fresh: a body may keep a reference */
		loop->lp.items = items;
		loop->lp.i = i;
		dset(J, lf->vars, loopkey, loop);
		assign(J, lf, n->a, items->l.v[i], n->line);
		int r = exec(J, lf, body, out);
		if (r == X_BREAK) break;
	}
	if (len == 0 && n->c) return exec(J, f, n->c, out);
	return X_OK;
}

static int exec_(jx *J, frame *f, node *n, ms_buf *out);

static int exec(jx *J, frame *f, node *n, ms_buf *out) {
	enter_eval(J, n->line);
	int r = exec_(J, f, n, out);
	J->edepth--;
	return r;
}

static int exec_(jx *J, frame *f, node *n, ms_buf *out) {
	J->line = n->line;
	step(J, 1, n->line);
	switch (n->k) {
	case N_LIST:
		for (size_t i = 0; i < n->nk; i++) {
			int r = exec(J, f, n->kids[i], out);
			if (r != X_OK) return r;
		}
		return X_OK;
	case N_TEXT: emit(J, out, n->name, n->nlen, n->line); return X_OK;
	case N_OUT: {
		val *v = eval(J, f, n->a);
		if (v->t == V_STR) emit(J, out, v->s.p, v->s.n, n->line);
		else {
			val *s = vstr(J, v);
			emit(J, out, s->s.p, s->s.n, n->line);
		}
		return X_OK;
	}
	case N_IF:
		if (truthy(eval(J, f, n->a))) return exec(J, f, n->b, out);
		return n->c ? exec(J, f, n->c, out) : X_OK;
	case N_FOR: return exec_for(J, f, n, out);
	case N_SET: assign(J, f, n->a, eval(J, f, n->b), n->line); return X_OK;
	case N_SETBLOCK: case N_FILTERBLOCK: {
		ms_buf *b = tbuf(J);
		int r = exec(J, f, n->b, b); /* break inside a set block is a syntax oddity; ignore it */
		(void)r;
		val *v = buf_val(J, b);
		if (n->c) {
			args a = eval_args(J, f, n->c, v);
			v = apply_filter(J, n->c->name, &a);
		}
		if (n->k == N_SETBLOCK) assign(J, f, n->a, v, n->line);
		else emit(J, out, vstr(J, v)->s.p, vstr(J, v)->s.n, n->line);
		return X_OK;
	}
	case N_BREAK: return X_BREAK;
	case N_CONTINUE: return X_CONTINUE;
	case N_MACRO: {
		val *m = mkv(J, V_MACRO);
		m->mac = n;
		dsetc(J, f->vars, n->name, m);
		return X_OK;
	}
	}
	jfail(J, MS_EFORMAT, n->line, "bad statement");
}

/* ---------------------------------------------------------------- API */

void ms_jinja_opts_default(ms_jinja_opts *o) {
	o->trim_blocks = 1;
	o->lstrip_blocks = 1;
	o->max_output = 16u << 20;
	o->max_memory = 128u << 20;
	o->max_steps = 20000000;
	o->max_depth = 64;
}

int ms_jinja_render(const char *tmpl, const json_t *context, const ms_jinja_opts *opts,
                    char **out, char *err, size_t errlen) {
	*out = NULL;
	if (!tmpl) return ms_errf(err, errlen, MS_EINVAL, "no template");
	if (context && !json_is_object(context)) return ms_errf(err, errlen, MS_EINVAL, "context must be a JSON object");
	jx *J = calloc(1, sizeof *J);
	if (!J) return ms_errf(err, errlen, MS_ENOMEM, "out of memory");
	if (opts) J->o = *opts;
	else ms_jinja_opts_default(&J->o);
	if (J->o.max_depth <= 0) J->o.max_depth = 64;
	ms_buf_init(&J->out);
	/* setjmp-surviving locals live in J (the only state written after setjmp) */
	int rc;
	if (setjmp(J->jb) == 0) {
		lexer L = {.J = J, .src = tmpl, .len = strlen(tmpl), .line = 1};
		/* Jinja's keep_trailing_newline=False: one final newline of the source is dropped */
		if (L.len && tmpl[L.len - 1] == '\n') L.len -= 1 + (L.len > 1 && tmpl[L.len - 2] == '\r');
		lex(&L);
		parser P = {.J = J, .t = L.toks, .n = L.nt};
		node *root = parse_body(&P, NULL, NULL);
		frame *g = push_frame(J, NULL); /* the context; top-level sets and macros go above it */
		J->globals = push_frame(J, g);
		if (context) {
			const char *k;
			json_t *x;
			json_object_foreach((json_t *)context, k, x) dsetc(J, g->vars, k, from_json(J, x, 0));
		}
		exec(J, J->globals, root, &J->out);
		rc = 0;
	} else {
		rc = J->rc ? J->rc : MS_EFORMAT;
	}
	if (rc == 0) {
		*out = J->out.data ? ms_buf_steal(&J->out) : strdup("");
		if (!*out) rc = MS_ENOMEM;
	} else if (err && errlen) {
		snprintf(err, errlen, "%s", J->msg);
	}
	ms_buf_free(&J->out);
	for (tmpbuf *t = J->tmps; t; t = t->next) ms_buf_free(&t->b);
	while (J->chunks) {
		chunk *c = J->chunks;
		J->chunks = c->next;
		free(c);
	}
	free(J);
	return rc;
}

int ms_chat_template_render(const char *tmpl, const json_t *messages, const char *bos_token,
                            const char *eos_token, int add_generation_prompt,
                            const json_t *extra_vars, char **out, char *err, size_t errlen) {
	*out = NULL;
	json_t *ctx = json_object();
	if (!ctx) return ms_errf(err, errlen, MS_ENOMEM, "out of memory");
	if (extra_vars && json_is_object(extra_vars)) json_object_update(ctx, (json_t *)extra_vars);
	json_object_set(ctx, "messages", messages ? (json_t *)messages : json_array());
	if (!messages) json_decref(json_object_get(ctx, "messages")); /* set took its own ref */
	if (bos_token) json_object_set_new(ctx, "bos_token", json_string(bos_token));
	if (eos_token) json_object_set_new(ctx, "eos_token", json_string(eos_token));
	json_object_set_new(ctx, "add_generation_prompt", json_boolean(add_generation_prompt));
	int rc = ms_jinja_render(tmpl, ctx, NULL, out, err, errlen);
	json_decref(ctx);
	return rc;
}

static const char *token_text(const json_t *t) {
	if (json_is_string(t)) return json_string_value(t);
	if (json_is_object(t) && json_is_string(json_object_get(t, "content")))
		return json_string_value(json_object_get(t, "content"));
	return NULL;
}

int ms_chat_template_from_config(const json_t *config, const char **tmpl, const char **bos,
                                 const char **eos) {
	*tmpl = NULL;
	if (bos) *bos = token_text(json_object_get(config, "bos_token"));
	if (eos) *eos = token_text(json_object_get(config, "eos_token"));
	json_t *ct = json_object_get(config, "chat_template");
	if (json_is_string(ct)) *tmpl = json_string_value(ct);
	else if (json_is_array(ct)) {
		size_t i;
		json_t *e;
		json_array_foreach(ct, i, e) {
			const char *name = json_string_value(json_object_get(e, "name"));
			const char *t = json_string_value(json_object_get(e, "template"));
			if (!t) continue;
			if (!*tmpl) *tmpl = t;
			if (name && !strcmp(name, "default")) { *tmpl = t; break; }
		}
	}
	return *tmpl ? 0 : MS_ENOENT;
}
