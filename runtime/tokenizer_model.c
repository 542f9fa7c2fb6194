/* runtime/tokenizer_model.c: the tokenizer models (BPE, WordPiece, WordLevel) and their
 * hash maps.
 *
 * BPE merges with a binary heap of candidate pairs ordered by (rank, position), exactly as
 * tokenizers' `Word::merge_all`, so a piece of n characters costs O(n log n) whatever the
 * vocabulary; SentencePiece-style tokenizers (no pre-tokenizer) feed whole texts here.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer_internal.h"

/* ---- hash maps ---- */

static uint64_t hash_bytes(const char *s, size_t len) {
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
	x += 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

static void strmap_release(tk_strmap *m);

static int strmap_grow(tk_strmap *m) {
	size_t cap = m->cap ? m->cap * 2 : 1024;
	tk_strmap n = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(size_t)), calloc(cap, sizeof(int32_t)), cap, 0};
	if (!n.keys || !n.lens || !n.vals) { strmap_release(&n); return MS_ENOMEM; }
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->keys[i]) continue;
		size_t j = hash_bytes(m->keys[i], m->lens[i]) & (cap - 1);
		while (n.keys[j]) j = (j + 1) & (cap - 1);
		n.keys[j] = m->keys[i], n.lens[j] = m->lens[i], n.vals[j] = m->vals[i];
		n.n++;
	}
	strmap_release(m); /* the keys moved to n */
	*m = n;
	return 0;
}

int tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val) {
	if ((m->n + 1) * 2 > m->cap && strmap_grow(m)) return MS_ENOMEM;
	size_t j = hash_bytes(key, len) & (m->cap - 1);
	while (m->keys[j]) {
		if (m->lens[j] == len && memcmp(m->keys[j], key, len) == 0) { m->vals[j] = val; return 0; }
		j = (j + 1) & (m->cap - 1);
	}
	char *k = malloc(len + 1);
	if (!k) return MS_ENOMEM;
	memcpy(k, key, len);
	k[len] = 0;
	m->keys[j] = k, m->lens[j] = len, m->vals[j] = val;
	m->n++;
	return 0;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *key, size_t len) {
	if (!m->cap) return -1;
	size_t j = hash_bytes(key, len) & (m->cap - 1);
	while (m->keys[j]) {
		if (m->lens[j] == len && memcmp(m->keys[j], key, len) == 0) return m->vals[j];
		j = (j + 1) & (m->cap - 1);
	}
	return -1;
}

static void strmap_release(tk_strmap *m) {
	free(m->keys), free(m->lens), free(m->vals);
	memset(m, 0, sizeof *m);
}

void tk_strmap_free(tk_strmap *m) {
	for (size_t i = 0; i < m->cap; i++) free((char *)m->keys[i]);
	free(m->keys), free(m->lens), free(m->vals);
	memset(m, 0, sizeof *m);
}

static int pairmap_init(tk_pairmap *m, size_t n) {
	size_t cap = 16;
	while (cap < n * 2 + 2) cap *= 2;
	m->keys = malloc(cap * sizeof *m->keys);
	m->rank = malloc(cap * sizeof *m->rank);
	m->merged = malloc(cap * sizeof *m->merged);
	m->cap = cap, m->n = 0;
	if (!m->keys || !m->rank || !m->merged) return MS_ENOMEM;
	memset(m->keys, 0xFF, cap * sizeof *m->keys); /* UINT64_MAX: empty */
	return 0;
}

int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
	if (!m->cap && pairmap_init(m, 1024)) return MS_ENOMEM;
	if ((m->n + 1) * 2 > m->cap) {
		tk_pairmap n = {0};
		if (pairmap_init(&n, m->cap)) { free(n.keys), free(n.rank), free(n.merged); return MS_ENOMEM; }
		for (size_t i = 0; i < m->cap; i++) {
			if (m->keys[i] == UINT64_MAX) continue;
			size_t j = hash_u64(m->keys[i]) & (n.cap - 1);
			while (n.keys[j] != UINT64_MAX) j = (j + 1) & (n.cap - 1);
			n.keys[j] = m->keys[i], n.rank[j] = m->rank[i], n.merged[j] = m->merged[i];
			n.n++;
		}
		free(m->keys), free(m->rank), free(m->merged);
		*m = n;
	}
	uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t j = hash_u64(k) & (m->cap - 1);
	while (m->keys[j] != UINT64_MAX) {
		if (m->keys[j] == k) return 0;
		j = (j + 1) & (m->cap - 1);
	}
	m->keys[j] = k, m->rank[j] = rank, m->merged[j] = merged;
	m->n++;
	return 0;
}

static int pairmap_get(const tk_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
	if (!m->cap) return 0;
	uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t j = hash_u64(k) & (m->cap - 1);
	while (m->keys[j] != UINT64_MAX) {
		if (m->keys[j] == k) { *rank = m->rank[j], *merged = m->merged[j]; return 1; }
		j = (j + 1) & (m->cap - 1);
	}
	return 0;
}

int tk_ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id) {
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 32;
		int32_t *v = realloc(*ids, c * sizeof *v);
		if (!v) return MS_ENOMEM;
		*ids = v, *cap = c;
	}
	(*ids)[(*n)++] = id;
	return 0;
}

/* ---- BPE ---- */

typedef struct sym { int32_t id; int prev, next; int alive; } sym;

/* A candidate merge packed as rank << 32 | position: one integer compare orders by rank,
 * then leftmost position (tokenizers' order), and 8-byte entries keep the heap small. */
typedef struct heap { uint64_t *v; size_t n, cap; } heap;

static int heap_push(heap *h, int32_t rank, int pos) {
	if (h->n == h->cap) {
		size_t c = h->cap ? h->cap * 2 : 64;
		uint64_t *v = realloc(h->v, c * sizeof *v);
		if (!v) return MS_ENOMEM;
		h->v = v, h->cap = c;
	}
	uint64_t m = (uint64_t)(uint32_t)rank << 32 | (uint32_t)pos;
	size_t i = h->n++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (m >= h->v[p]) break;
		h->v[i] = h->v[p];
		i = p;
	}
	h->v[i] = m;
	return 0;
}

static uint64_t heap_pop(heap *h) {
	uint64_t top = h->v[0], last = h->v[--h->n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n) break;
		if (c + 1 < h->n && h->v[c + 1] < h->v[c]) c++;
		if (h->v[c] >= last) break;
		h->v[i] = h->v[c];
		i = c;
	}
	if (h->n) h->v[i] = last;
	return top;
}

static int syms_push(sym **v, size_t *n, size_t *cap, int32_t id) {
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 32;
		sym *nv = realloc(*v, c * sizeof *nv);
		if (!nv) return MS_ENOMEM;
		*v = nv, *cap = c;
	}
	(*v)[*n] = (sym){id, (int)*n - 1, (int)*n + 1, 1};
	(*n)++;
	return 0;
}

/* The initial symbols of a word: one per character (with the continuing prefix / end
 * suffix), unknown characters through byte fallback or the (fused) unk token. */
static int bpe_symbols(const tk_model *m, const char *s, size_t len, sym **v, size_t *n) {
	size_t cap = 0, pl = m->cont_prefix ? strlen(m->cont_prefix) : 0, sl = m->eow_suffix ? strlen(m->eow_suffix) : 0;
	char *buf = malloc(len + pl + sl + 8);
	if (!buf) return MS_ENOMEM;
	int rc = 0, last_unk = 0;
	for (size_t i = 0; i < len && !rc;) {
		size_t l = tk_utf8_step(s + i, len - i), bl = 0;
		if (i > 0 && pl) memcpy(buf, m->cont_prefix, pl), bl = pl;
		memcpy(buf + bl, s + i, l), bl += l;
		if (i + l == len && sl) memcpy(buf + bl, m->eow_suffix, sl), bl += sl;
		int32_t id = tk_strmap_get(&m->vocab, buf, bl);
		if (id >= 0) {
			rc = syms_push(v, n, &cap, id);
			last_unk = 0;
		} else {
			int all = m->byte_fallback;
			for (size_t k = 0; all && k < l; k++) all = m->byte_ids[(unsigned char)s[i + k]] >= 0;
			if (all) {
				for (size_t k = 0; k < l && !rc; k++) rc = syms_push(v, n, &cap, m->byte_ids[(unsigned char)s[i + k]]);
				last_unk = 0;
			} else if (m->unk_id >= 0 && !(m->fuse_unk && last_unk)) {
				rc = syms_push(v, n, &cap, m->unk_id);
				last_unk = 1;
			}
		}
		i += l;
	}
	free(buf);
	if (*n) (*v)[*n - 1].next = -1;
	return rc;
}

static int bpe_encode(const tk_model *m, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap) {
	if (m->ignore_merges) {
		int32_t id = tk_strmap_get(&m->vocab, s, len);
		if (id >= 0) return tk_ids_push(ids, n, cap, id);
	}
	sym *v = NULL;
	size_t ns = 0;
	heap h = {0};
	int rc = bpe_symbols(m, s, len, &v, &ns);
	int32_t rank, merged;
	for (size_t i = 0; !rc && i + 1 < ns; i++)
		if (pairmap_get(&m->merges, v[i].id, v[i + 1].id, &rank, &merged)) rc = heap_push(&h, rank, (int)i);
	while (!rc && h.n) {
		uint64_t top = heap_pop(&h);
		int pos = (int)(uint32_t)top;
		sym *a = &v[pos];
		if (!a->alive || a->next < 0) continue;
		sym *b = &v[a->next];
		/* stale entry: the pair changed since it was queued (a pair has one rank) */
		if (!pairmap_get(&m->merges, a->id, b->id, &rank, &merged) || (uint32_t)rank != (uint32_t)(top >> 32)) continue;
		a->id = merged;
		b->alive = 0;
		a->next = b->next;
		if (b->next >= 0) v[b->next].prev = pos;
		if (a->prev >= 0 && pairmap_get(&m->merges, v[a->prev].id, a->id, &rank, &merged)) rc = heap_push(&h, rank, a->prev);
		if (!rc && a->next >= 0 && pairmap_get(&m->merges, a->id, v[a->next].id, &rank, &merged)) rc = heap_push(&h, rank, pos);
	}
	for (int i = ns ? 0 : -1; !rc && i >= 0; i = v[i].next) rc = tk_ids_push(ids, n, cap, v[i].id);
	free(v);
	free(h.v);
	return rc;
}

/* ---- WordPiece: greedy longest match first ---- */

static int wordpiece_encode(const tk_model *m, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap) {
	size_t chars = 0;
	for (size_t i = 0; i < len; i += tk_utf8_step(s + i, len - i)) chars++;
	if (m->max_chars > 0 && chars > (size_t)m->max_chars) return m->unk_id >= 0 ? tk_ids_push(ids, n, cap, m->unk_id) : 0;
	size_t pl = m->cont_prefix ? strlen(m->cont_prefix) : 0, start = 0, n0 = *n;
	char *buf = malloc(len + pl + 1);
	if (!buf) return MS_ENOMEM;
	int rc = 0;
	while (start < len && !rc) {
		size_t end = len;
		int32_t found = -1;
		while (end > start) {
			size_t bl = 0;
			if (start > 0) memcpy(buf, m->cont_prefix, pl), bl = pl;
			memcpy(buf + bl, s + start, end - start);
			bl += end - start;
			if ((found = tk_strmap_get(&m->vocab, buf, bl)) >= 0) break;
			do end--; while (end > start && ((unsigned char)s[end] & 0xC0) == 0x80);
		}
		if (found < 0) { /* the whole word is unknown */
			*n = n0;
			rc = m->unk_id >= 0 ? tk_ids_push(ids, n, cap, m->unk_id) : 0;
			break;
		}
		rc = tk_ids_push(ids, n, cap, found);
		start = end;
	}
	free(buf);
	return rc;
}

/* ---- Unigram: Viterbi over the pieces, as tokenizers' encode_optimized ---- */

typedef struct uni_node { double score; int start; int32_t id; } uni_node;

static int unigram_encode(const tk_model *m, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap) {
	uni_node *best = malloc((len + 1) * sizeof *best);
	if (!best) return MS_ENOMEM;
	for (size_t i = 0; i <= len; i++) best[i] = (uni_node){0, -1, -1};
	double unk_score = m->min_score - 10.0;
	for (size_t at = 0; at < len;) {
		double base = best[at].score;
		size_t mblen = tk_utf8_step(s + at, len - at);
		int single = 0;
		for (size_t l = 1; l <= m->max_tok_len && at + l <= len; l++) {
			int32_t id = tk_strmap_get(&m->vocab, s + at, l);
			if (id < 0) continue;
			double sc = base + m->scores[id];
			uni_node *t = &best[at + l];
			if (t->start < 0 || sc > t->score) *t = (uni_node){sc, (int)at, id};
			if (l == mblen) single = 1;
		}
		if (!single) {
			uni_node *t = &best[at + mblen];
			double sc = base + unk_score;
			if (t->start < 0 || sc > t->score) *t = (uni_node){sc, (int)at, m->unk_id};
		}
		at += mblen;
	}
	/* backtrack: pieces come out last first; consecutive unknowns fuse into one */
	size_t np = 0;
	int32_t *pid = malloc((len + 1) * sizeof *pid);
	size_t *pstart = malloc((len + 1) * sizeof *pstart), *pend = malloc((len + 1) * sizeof *pend);
	int rc = pid && pstart && pend ? 0 : MS_ENOMEM;
	for (size_t end = len; !rc && end > 0;) {
		uni_node *nd = &best[end];
		if (nd->start < 0) break; /* unreachable: every character has a path */
		if (nd->id == m->unk_id && np && pid[np - 1] == m->unk_id) pstart[np - 1] = (size_t)nd->start;
		else pid[np] = nd->id, pstart[np] = (size_t)nd->start, pend[np] = end, np++;
		end = (size_t)nd->start;
	}
	for (size_t k = np; !rc && k-- > 0;) {
		if (pid[k] != m->unk_id) { rc = tk_ids_push(ids, n, cap, pid[k]); continue; }
		int all = m->byte_fallback;
		for (size_t b = pstart[k]; all && b < pend[k]; b++) all = m->byte_ids[(unsigned char)s[b]] >= 0;
		if (!all) { rc = tk_ids_push(ids, n, cap, m->unk_id); continue; }
		for (size_t b = pstart[k]; !rc && b < pend[k]; b++) rc = tk_ids_push(ids, n, cap, m->byte_ids[(unsigned char)s[b]]);
	}
	free(pid), free(pstart), free(pend);
	free(best);
	return rc;
}

int tk_model_encode(const tk_model *m, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap) {
	if (len == 0) return 0;
	switch (m->type) {
	case TKM_BPE: return bpe_encode(m, s, len, ids, n, cap);
	case TKM_WORDPIECE: return wordpiece_encode(m, s, len, ids, n, cap);
	case TKM_UNIGRAM: return unigram_encode(m, s, len, ids, n, cap);
	case TKM_WORDLEVEL: {
		int32_t id = tk_strmap_get(&m->vocab, s, len);
		if (id < 0) id = m->unk_id;
		return id >= 0 ? tk_ids_push(ids, n, cap, id) : 0;
	}
	}
	return MS_EUNSUPPORTED;
}

void tk_model_free(tk_model *m) {
	tk_strmap_free(&m->vocab);
	free(m->merges.keys), free(m->merges.rank), free(m->merges.merged);
	free(m->cont_prefix);
	free(m->eow_suffix);
	free(m->scores);
	memset(m, 0, sizeof *m);
}
