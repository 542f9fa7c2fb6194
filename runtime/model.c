/* runtime/model.c: see model.h. Loading, sessions, generation, classify, embed. */
#include "runtime/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/model_internal.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

/* ---- weights ---- */

/* Weights live in one anonymous arena, 2 MiB-aligned with transparent huge pages, not in
 * the file mapping: on the VMs this runs on, streaming weights through 4 KiB file-backed
 * pages measured 5x slower per token than huge anonymous pages (TLB misses), and the copy is
 * also where F16/BF16 are upcast and GPT-2's Conv1D weights transposed. */
#define ARENA_ALIGN ((size_t)2 << 20)

static int arena_init(ms_model *m) {
	size_t total = 0;
	for (size_t i = 0; i < m->st.n_tensors; i++) total += (m->st.tensors[i].numel * sizeof(float) + 63) & ~(size_t)63;
	total = (total + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
	if (total == 0) total = ARENA_ALIGN;
	/* over-allocate by one huge page to align the start */
	void *p = mmap(NULL, total + ARENA_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) return MS_ENOMEM;
	uintptr_t a = ((uintptr_t)p + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
	if (a > (uintptr_t)p) munmap(p, a - (uintptr_t)p);
	size_t tail = (uintptr_t)p + total + ARENA_ALIGN - (a + total);
	if (tail) munmap((void *)(a + total), tail);
	madvise((void *)a, total, MADV_HUGEPAGE);
	m->arena = (void *)a;
	m->arena_size = total;
	m->arena_used = 0;
	return 0;
}

static float *arena_take(ms_model *m, size_t n) {
	size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
	if (bytes > m->arena_size - m->arena_used) return NULL;
	float *p = (float *)((char *)m->arena + m->arena_used);
	m->arena_used += bytes;
	return p;
}

static int check_shape(ms_model *m, const ms_st_tensor *t, int64_t d0, int64_t d1, char *err, size_t errlen) {
	int want = d1 > 0 ? 2 : 1;
	if (t->ndim != want || t->shape[0] != d0 || (want == 2 && t->shape[1] != d1))
		return ms_errf(err, errlen, MS_EFORMAT, "%s: tensor '%s' has shape [%lld%s%lld] but config.json implies [%lld%s%lld]",
			       m->st.files[t->file].path, t->name, (long long)t->shape[0], t->ndim > 1 ? ", " : "",
			       t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)d0, want == 2 ? ", " : "",
			       want == 2 ? (long long)d1 : 0LL);
	return 0;
}

static const ms_st_tensor *need(ms_model *m, const char *name, char *err, size_t errlen, int *rc) {
	const ms_st_tensor *t = ms_st_find(&m->st, name);
	if (!t) *rc = ms_errf(err, errlen, MS_ENOENT, "%s: checkpoint has no tensor '%s'", m->dir, name);
	return t;
}

int ms_w_get(ms_model *m, const char *name, int64_t d0, int64_t d1, const float **out, char *err, size_t errlen) {
	int rc = 0;
	const ms_st_tensor *t = need(m, name, err, errlen, &rc);
	if (!t) return rc;
	if ((rc = check_shape(m, t, d0, d1, err, errlen)) != 0) return rc;
	float *f = arena_take(m, t->numel);
	if (!f) return ms_errf(err, errlen, MS_ENOMEM, "%s: weights larger than the checkpoint's tensors", m->dir);
	ms_st_read_f32(t, f, t->numel);
	*out = f;
	return 0;
}

int ms_w_get_t(ms_model *m, const char *name, int64_t d0, int64_t d1, const float **out, char *err, size_t errlen) {
	int rc = 0;
	const ms_st_tensor *t = need(m, name, err, errlen, &rc);
	if (!t) return rc;
	if ((rc = check_shape(m, t, d1, d0, err, errlen)) != 0) return rc;
	float *tmp = malloc((t->numel ? t->numel : 1) * sizeof *tmp), *f = arena_take(m, t->numel);
	if (!tmp || !f) {
		free(tmp);
		return MS_ENOMEM;
	}
	ms_st_read_f32(t, tmp, t->numel);
	for (int64_t i = 0; i < d1; i++)
		for (int64_t j = 0; j < d0; j++) f[j * d1 + i] = tmp[i * d0 + j];
	free(tmp);
	*out = f;
	return 0;
}

/* ---- load / free ---- */

/* Without a linked tokenizer (a tree where runtime/tokenizer.c has not landed) the text
 * calls report MS_EUNSUPPORTED instead of failing to link. */
#pragma weak ms_tokenizer_load
#pragma weak ms_tokenizer_free
#pragma weak ms_tokenizer_encode
#pragma weak ms_tokenizer_eos_id
#pragma weak ms_detok_stream_init
#pragma weak ms_detok_stream_push
#pragma weak ms_detok_stream_finish
#pragma weak ms_detok_stream_free

int ms_model_load(const char *dir, const ms_model_opts *opts, ms_model **out, char *err, size_t errlen) {
	*out = NULL;
	ms_model *m = calloc(1, sizeof *m);
	if (!m) return MS_ENOMEM;
	int rc;
	if (!(m->dir = strdup(dir))) {
		free(m);
		return MS_ENOMEM;
	}
	if ((rc = ms_config_load(&m->cfg, dir, err, errlen)) != 0) {
		free(m->dir);
		free(m);
		return rc;
	}
	if ((rc = ms_pool_init(&m->pool, opts ? opts->n_threads : 0)) != 0) goto fail_pool;
	if ((rc = ms_st_open(&m->st, dir, err, errlen)) != 0) goto fail;
	if ((rc = arena_init(m)) != 0) goto fail;
	if (m->cfg.arch == MS_ARCH_LLAMA || m->cfg.arch == MS_ARCH_GPT2) {
		if ((rc = ms_dec_load(m, err, errlen)) == 0) rc = ms_dec_ws_alloc(m);
	} else {
		rc = ms_enc_load(m, err, errlen);
	}
	if (rc != 0) goto fail;
	ms_st_close(&m->st); /* every weight is in the arena now */
	char tp[4096];
	snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
	if (ms_tokenizer_load && access(tp, F_OK) == 0 && (rc = ms_tokenizer_load(dir, &m->tok, err, errlen)) != 0)
		goto fail;
	*out = m;
	return 0;
fail:
	ms_model_free(m);
	return rc;
fail_pool:
	ms_config_free(&m->cfg);
	free(m->dir);
	free(m);
	return rc;
}

void ms_model_free(ms_model *m) {
	if (!m) return;
	if (m->tok && ms_tokenizer_free) ms_tokenizer_free(m->tok);
	if (m->arena) munmap(m->arena, m->arena_size);
	ms_dec_ws_free(m);
	free(m->dec.layers);
	free(m->enc.layers);
	ms_st_close(&m->st);
	ms_pool_free(&m->pool);
	ms_config_free(&m->cfg);
	free(m->dir);
	free(m);
}

const ms_config *ms_model_config(const ms_model *m) { return &m->cfg; }
struct ms_tokenizer *ms_model_tokenizer(const ms_model *m) { return m->tok; }

/* ---- sessions ---- */

int ms_session_new(ms_model *m, int max_seq, ms_session **out) {
	const ms_config *c = &m->cfg;
	*out = NULL;
	if (c->arch != MS_ARCH_LLAMA && c->arch != MS_ARCH_GPT2) return MS_EUNSUPPORTED;
	/* the default context is capped: a 128k-position model would otherwise reserve a
	 * KV cache for all of it per sequence */
	if (max_seq <= 0) max_seq = c->max_pos < 4096 ? c->max_pos : 4096;
	if (max_seq > c->max_pos) max_seq = c->max_pos;
	ms_session *s = calloc(1, sizeof *s);
	if (!s) return MS_ENOMEM;
	s->m = m;
	s->max_seq = max_seq;
	size_t kv = (size_t)c->n_layers * max_seq * c->n_kv_heads * c->head_dim;
	s->key_cache = calloc(kv, sizeof(float));
	s->value_cache = calloc(kv, sizeof(float));
	if (!s->key_cache || !s->value_cache) {
		ms_session_free(s);
		return MS_ENOMEM;
	}
	*out = s;
	return 0;
}

void ms_session_free(ms_session *s) {
	if (!s) return;
	free(s->key_cache);
	free(s->value_cache);
	free(s);
}

void ms_session_reset(ms_session *s) { s->pos = 0; }
int ms_session_pos(const ms_session *s) { return s->pos; }

int ms_session_forward(ms_session *s, const int32_t *ids, size_t n, float *logits_last, float *logits_all,
		       const atomic_int *cancel) {
	ms_model *m = s->m;
	int vocab = m->cfg.vocab_size;
	ms_session *rows[MS_CHUNK];
	for (int i = 0; i < MS_CHUNK; i++) rows[i] = s;
	if (n == 0) return MS_EINVAL;
	if (n > (size_t)(s->max_seq - s->pos)) return MS_ERANGE;
	for (size_t i = 0; i < n; i += MS_CHUNK) {
		int c = (int)(n - i < MS_CHUNK ? n - i : MS_CHUNK);
		int rc = ms_dec_forward(m, rows, ids + i, c, logits_all != NULL, cancel);
		if (rc != 0) return rc;
		if (logits_all) memcpy(logits_all + i * vocab, m->ws->logits, (size_t)c * vocab * sizeof(float));
		if (logits_last && i + c == n)
			memcpy(logits_last, m->ws->logits + (size_t)(logits_all ? c - 1 : 0) * vocab, (size_t)vocab * sizeof(float));
	}
	return 0;
}

int ms_session_step_batch(ms_session *const *sess, const int32_t *ids, size_t n, float *logits,
			  const atomic_int *cancel) {
	if (n == 0) return 0;
	ms_model *m = sess[0]->m;
	int vocab = m->cfg.vocab_size;
	for (size_t i = 0; i < n; i++) {
		if (sess[i]->m != m) return MS_EINVAL;
		for (size_t k = 0; k < i; k++)
			if (sess[k] == sess[i]) return MS_EINVAL;
		if (sess[i]->pos >= sess[i]->max_seq) return MS_ERANGE;
	}
	for (size_t i = 0; i < n; i += MS_CHUNK) {
		int c = (int)(n - i < MS_CHUNK ? n - i : MS_CHUNK);
		int rc = ms_dec_forward(m, sess + i, ids + i, c, 1, cancel);
		if (rc != 0) return rc;
		memcpy(logits + i * vocab, m->ws->logits, (size_t)c * vocab * sizeof(float));
	}
	return 0;
}

int ms_model_logits(ms_model *m, const int32_t *ids, size_t n, float *out) {
	ms_session *s;
	int rc = ms_session_new(m, (int)(n < (size_t)m->cfg.max_pos ? n : (size_t)m->cfg.max_pos), &s);
	if (rc != 0) return rc;
	rc = ms_session_forward(s, ids, n, NULL, out, NULL);
	ms_session_free(s);
	return rc;
}

/* ---- generation ---- */

void ms_gen_opts_init(ms_gen_opts *o) {
	memset(o, 0, sizeof *o);
	o->max_new_tokens = 256;
	o->temperature = 1.0f;
	o->top_p = 1.0f;
	o->repetition_penalty = 1.0f;
	o->add_bos = 1;
	o->stop_on_eos = 1;
}

int ms_model_generate_ids(ms_model *m, const int32_t *prompt, size_t n_prompt, const ms_gen_opts *o,
			  ms_token_cb cb, void *ud, int32_t **out_ids, size_t *n_out, ms_gen_stats *stats) {
	const ms_config *c = &m->cfg;
	ms_gen_stats st = {0};
	if (out_ids) *out_ids = NULL;
	if (n_out) *n_out = 0;
	if (n_prompt == 0 || n_prompt > (size_t)c->max_pos) return MS_ERANGE;
	size_t total = n_prompt + (size_t)(o->max_new_tokens > 0 ? o->max_new_tokens : 0);
	if (total > (size_t)c->max_pos) total = (size_t)c->max_pos;
	ms_session *s;
	int rc = ms_session_new(m, (int)total, &s);
	if (rc != 0) return rc;
	int32_t *hist = malloc((total + 1) * sizeof *hist);
	float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
	ms_sampler smp = {0};
	if (!hist || !logits || (rc = ms_sampler_init(&smp, c->vocab_size, o->temperature, o->top_k, o->top_p,
						       o->repetition_penalty, o->seed)) != 0) {
		rc = rc ? rc : MS_ENOMEM;
		goto out;
	}
	memcpy(hist, prompt, n_prompt * sizeof *hist);
	size_t nh = n_prompt;
	int eos = c->eos_id;
	if (m->tok && ms_tokenizer_eos_id && ms_tokenizer_eos_id(m->tok) >= 0) eos = ms_tokenizer_eos_id(m->tok);
	double t0 = ms_now_ms();
	rc = ms_session_forward(s, prompt, n_prompt, logits, NULL, o->cancel);
	st.prompt_tokens = n_prompt;
	st.prompt_ms = ms_now_ms() - t0;
	t0 = ms_now_ms();
	for (int i = 0; rc == 0 && i < o->max_new_tokens; i++) {
		int32_t next = ms_sampler_sample(&smp, logits, hist, nh);
		if (o->stop_on_eos && next == eos) {
			st.stopped = 1;
			break;
		}
		hist[nh++] = next;
		st.gen_tokens++;
		if (cb && cb(ud, next) != 0) {
			st.stopped = 2;
			break;
		}
		if (i + 1 == o->max_new_tokens) break;
		if (s->pos >= s->max_seq) {
			st.stopped = 4;
			break;
		}
		rc = ms_session_forward(s, &next, 1, logits, NULL, o->cancel);
	}
	st.gen_ms = ms_now_ms() - t0;
	if (rc == MS_ECANCELED) st.stopped = 3;
	if (out_ids && (rc == 0 || rc == MS_ECANCELED)) {
		*out_ids = malloc((st.gen_tokens + 1) * sizeof **out_ids);
		if (*out_ids) memcpy(*out_ids, hist + n_prompt, st.gen_tokens * sizeof **out_ids);
		if (n_out) *n_out = st.gen_tokens;
	}
out:
	if (stats) *stats = st;
	ms_sampler_free(&smp);
	free(hist);
	free(logits);
	ms_session_free(s);
	return rc;
}

typedef struct {
	ms_detok_stream ds;
	ms_buf text;    /* all text generated so far (for stop strings) */
	size_t sent;    /* bytes of text handed to the callback */
	const ms_gen_opts *o;
	ms_text_cb cb;
	void *ud;
	int stop_hit, err;
} text_ctx;

/* Longest stop-string prefix that the text ends with: held back until it resolves. */
static size_t held_back(const text_ctx *t) {
	size_t hold = 0;
	for (const char *const *sp = t->o->stop; sp && *sp; sp++) {
		size_t sl = strlen(*sp);
		for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
			if (k <= t->text.len && memcmp(t->text.data + t->text.len - k, *sp, k) == 0) {
				hold = k;
				break;
			}
	}
	return hold;
}

static int flush_text(text_ctx *t, int final) {
	size_t end = t->text.len;
	for (const char *const *sp = t->o->stop; sp && *sp; sp++) {
		if (!**sp) continue;
		char *hit = memmem(t->text.data + (t->sent > strlen(*sp) ? t->sent - strlen(*sp) : 0),
				   t->text.len - (t->sent > strlen(*sp) ? t->sent - strlen(*sp) : 0), *sp, strlen(*sp));
		if (hit && (size_t)(hit - t->text.data) < end) {
			end = (size_t)(hit - t->text.data);
			t->stop_hit = 1;
		}
	}
	if (!t->stop_hit && !final) {
		size_t h = held_back(t);
		end = t->text.len - h;
	}
	if (end > t->sent) {
		int r = t->cb ? t->cb(t->ud, t->text.data + t->sent, end - t->sent) : 0;
		t->sent = end;
		if (r) return 1;
	}
	return t->stop_hit;
}

static int on_token(void *ud, int32_t id) {
	text_ctx *t = ud;
	if (ms_detok_stream_push(&t->ds, id, &t->text) != 0) {
		t->err = MS_ENOMEM;
		return 1;
	}
	return flush_text(t, 0);
}

int ms_model_generate(ms_model *m, const char *prompt, const ms_gen_opts *o, ms_text_cb cb, void *ud,
		      ms_gen_stats *stats, char *err, size_t errlen) {
	if (!m->tok || !ms_tokenizer_encode || !ms_detok_stream_init)
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: no tokenizer for text generation", m->dir);
	int32_t *ids = NULL;
	size_t n = 0;
	int rc = ms_tokenizer_encode(m->tok, prompt, strlen(prompt), o->add_bos, &ids, &n);
	if (rc != 0) return ms_errf(err, errlen, rc, "%s: tokenizing the prompt failed", m->dir);
	if (n == 0) { /* an empty prompt without a BOS: start from BOS as llama2.c does */
		free(ids);
		int32_t bos = m->cfg.bos_id >= 0 ? m->cfg.bos_id : 0;
		ids = malloc(sizeof *ids);
		if (!ids) return MS_ENOMEM;
		ids[0] = bos;
		n = 1;
	}
	text_ctx t = {.o = o, .cb = cb, .ud = ud};
	ms_buf_init(&t.text);
	ms_detok_stream_init(&t.ds, m->tok, 1);
	/* the prompt goes through the stream first (its text dropped) so that the continuation
	 * is decoded in context: decoders such as Strip act on the start of the whole text */
	for (size_t i = 0; i < n; i++)
		if (ms_detok_stream_push(&t.ds, ids[i], &t.text) != 0) t.err = MS_ENOMEM;
	ms_buf_reset(&t.text);
	if (!t.err) rc = ms_model_generate_ids(m, ids, n, o, on_token, &t, NULL, NULL, stats);
	if (rc == 0 && !t.stop_hit && t.err == 0) {
		if (ms_detok_stream_finish(&t.ds, &t.text) == 0) flush_text(&t, 1);
	}
	if (t.err) rc = t.err;
	if (rc != 0 && rc != MS_ECANCELED) ms_errf(err, errlen, rc, "%s: generation failed: %s", m->dir, ms_strerror(rc));
	if (rc == MS_ECANCELED) ms_errf(err, errlen, rc, "cancelled");
	ms_detok_stream_free(&t.ds);
	ms_buf_free(&t.text);
	free(ids);
	return rc;
}

/* ---- encoders ---- */

int ms_model_encode(ms_model *m, const int32_t *ids, const int32_t *type_ids, size_t n, float *hidden,
		    float *pooled, float *logits) {
	if (m->cfg.arch != MS_ARCH_BERT && m->cfg.arch != MS_ARCH_BERT_CLS && m->cfg.arch != MS_ARCH_DISTILBERT)
		return MS_EUNSUPPORTED;
	if (n == 0 || n > (size_t)m->cfg.max_pos) return MS_ERANGE;
	return ms_enc_forward(m, ids, type_ids, (int)n, hidden, pooled, logits, NULL);
}

static int cmp_score(const void *a, const void *b) {
	float x = ((const ms_label_score *)a)->score, y = ((const ms_label_score *)b)->score;
	return x > y ? -1 : x < y;
}

int ms_model_classify_ids(ms_model *m, const int32_t *ids, size_t n, ms_label_score **out, size_t *n_out) {
	const ms_config *c = &m->cfg;
	*out = NULL;
	*n_out = 0;
	if (!c->has_classifier || !m->enc.cls_w) return MS_EUNSUPPORTED;
	if (n == 0 || n > (size_t)c->max_pos) return MS_ERANGE;
	float *hidden = malloc(n * c->dim * sizeof *hidden), *logits = malloc((size_t)c->n_labels * sizeof *logits);
	ms_label_score *r = malloc((size_t)c->n_labels * sizeof *r);
	int rc = MS_ENOMEM;
	if (hidden && logits && r && (rc = ms_model_encode(m, ids, NULL, n, hidden, NULL, logits)) == 0) {
		ms_softmax(logits, c->n_labels);
		for (int i = 0; i < c->n_labels; i++) r[i] = (ms_label_score){c->id2label[i], logits[i]};
		qsort(r, (size_t)c->n_labels, sizeof *r, cmp_score);
		*out = r, *n_out = (size_t)c->n_labels, r = NULL;
	}
	free(hidden);
	free(logits);
	free(r);
	return rc;
}

int ms_model_embed_ids(ms_model *m, const int32_t *ids, size_t n, float *vec) {
	const ms_config *c = &m->cfg;
	if (n == 0 || n > (size_t)c->max_pos) return MS_ERANGE;
	float *hidden = malloc(n * c->dim * sizeof *hidden);
	if (!hidden) return MS_ENOMEM;
	int rc = ms_model_encode(m, ids, NULL, n, hidden, NULL, NULL);
	if (rc == 0) {
		double norm = 0.0;
		for (int e = 0; e < c->dim; e++) {
			float s = 0.0f;
			for (size_t i = 0; i < n; i++) s += hidden[i * c->dim + e];
			vec[e] = s / (float)n;
			norm += (double)vec[e] * vec[e];
		}
		/* sentence-transformers' Normalize: x / max(||x||, 1e-12) */
		float inv = 1.0f / (float)fmax(sqrt(norm), 1e-12);
		for (int e = 0; e < c->dim; e++) vec[e] *= inv;
	}
	free(hidden);
	return rc;
}

static int encode_text(ms_model *m, const char *text, int32_t **ids, size_t *n, char *err, size_t errlen) {
	if (!m->tok || !ms_tokenizer_encode)
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: no tokenizer", m->dir);
	int rc = ms_tokenizer_encode(m->tok, text, strlen(text), 1, ids, n);
	if (rc != 0) return ms_errf(err, errlen, rc, "%s: tokenizing failed", m->dir);
	if (*n > (size_t)m->cfg.max_pos) { /* truncate as transformers' pipelines do, keeping [SEP] */
		(*ids)[m->cfg.max_pos - 1] = (*ids)[*n - 1];
		*n = (size_t)m->cfg.max_pos;
	}
	return 0;
}

int ms_model_classify(ms_model *m, const char *text, ms_label_score **out, size_t *n_out, char *err,
		      size_t errlen) {
	int32_t *ids = NULL;
	size_t n = 0;
	int rc = encode_text(m, text, &ids, &n, err, errlen);
	if (rc == 0 && (rc = ms_model_classify_ids(m, ids, n, out, n_out)) != 0)
		ms_errf(err, errlen, rc, "%s: classify: %s", m->dir, ms_strerror(rc));
	free(ids);
	return rc;
}

int ms_model_embed(ms_model *m, const char *text, float **vec, size_t *dim, char *err, size_t errlen) {
	int32_t *ids = NULL;
	size_t n = 0;
	*vec = NULL;
	int rc = encode_text(m, text, &ids, &n, err, errlen);
	if (rc == 0) {
		*vec = malloc((size_t)m->cfg.dim * sizeof **vec);
		rc = *vec ? ms_model_embed_ids(m, ids, n, *vec) : MS_ENOMEM;
		if (rc != 0) {
			free(*vec);
			*vec = NULL;
			ms_errf(err, errlen, rc, "%s: embed: %s", m->dir, ms_strerror(rc));
		} else {
			*dim = (size_t)m->cfg.dim;
		}
	}
	free(ids);
	return rc;
}
