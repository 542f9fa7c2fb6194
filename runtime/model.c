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

/* bytes (a multiple of ARENA_ALIGN) of zeroed anonymous memory, 2 MiB-aligned, with
 * transparent huge pages; NULL when out of memory. Freed with munmap(p, bytes). */
static void *huge_map(size_t bytes) {
	if (bytes % ARENA_ALIGN) return NULL;
	/* over-allocate by one huge page to align the start */
	void *p = mmap(NULL, bytes + ARENA_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) return NULL;
	uintptr_t a = ((uintptr_t)p + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
	if (a > (uintptr_t)p) munmap(p, a - (uintptr_t)p);
	size_t tail = (uintptr_t)p + bytes + ARENA_ALIGN - (a + bytes);
	if (tail) munmap((void *)(a + bytes), tail);
	madvise((void *)a, bytes, MADV_HUGEPAGE);
	return (void *)a;
}

static int arena_init(ms_model *m) {
	size_t total = 0;
	for (size_t i = 0; i < m->st.n_tensors; i++) total += (m->st.tensors[i].numel * sizeof(float) + 63) & ~(size_t)63;
	total = (total + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
	if (total == 0) total = ARENA_ALIGN;
	if (!(m->arena = huge_map(total))) return MS_ENOMEM;
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
		if (rc == 0 && opts && opts->q8) rc = ms_dec_quantize(m);
		m->q8 = opts && opts->q8;
	} else {
		rc = ms_enc_load(m, err, errlen);
	}
	if (rc != 0) goto fail;
	ms_st_close(&m->st); /* every weight is in the arena now */
	char tp[4096];
	snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
	if (access(tp, F_OK) == 0 && (rc = ms_tokenizer_load(dir, &m->tok, err, errlen)) != 0)
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
	if (m->tok) ms_tokenizer_free(m->tok);
	if (m->arena) munmap(m->arena, m->arena_size);
	if (m->q8_arena) munmap(m->q8_arena, m->q8_size);
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
int ms_model_threads(const ms_model *m) { return m->pool.n_threads; }
struct ms_tokenizer *ms_model_tokenizer(const ms_model *m) { return m->tok; }

/* ---- sessions ---- */

int ms_seq_new(ms_model *m, int max_seq, ms_seq **out) {
	const ms_config *c = &m->cfg;
	*out = NULL;
	if (c->arch != MS_ARCH_LLAMA && c->arch != MS_ARCH_GPT2) return MS_EUNSUPPORTED;
	/* the default context is capped: a 128k-position model would otherwise reserve a
	 * KV cache for all of it per sequence */
	if (max_seq <= 0) max_seq = c->max_pos < 4096 ? c->max_pos : 4096;
	if (max_seq > c->max_pos) max_seq = c->max_pos;
	ms_seq *s = calloc(1, sizeof *s);
	if (!s) return MS_ENOMEM;
	s->m = m;
	s->max_seq = max_seq;
	/* K and V in one mapping on huge pages: attention reads every head's positions each
	 * step, and through 4 KiB pages those reads were TLB misses (16 batched streams at the
	 * 110M shape read ~85 MB of cache per step, next to 440 MB of weights) */
	size_t kv = (size_t)c->n_layers * max_seq * c->n_kv_heads * c->head_dim, half = kv * sizeof(float);
	half = (half + 63) & ~(size_t)63;
	char *kvm;
	if (2 * half >= ARENA_ALIGN) { /* smaller caches stay on small pages: no 2 MiB each */
		s->kv_size = (2 * half + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
		kvm = huge_map(s->kv_size);
	} else {
		s->kv_size = 2 * half;
		kvm = mmap(NULL, s->kv_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (kvm == MAP_FAILED) kvm = NULL;
	}
	if (!kvm) s->kv_size = 0;
	s->key_cache = (float *)(void *)kvm;
	s->value_cache = kvm ? (float *)(void *)(kvm + half) : NULL;
	if (!s->key_cache) {
		ms_seq_free(s);
		return MS_ENOMEM;
	}
	*out = s;
	return 0;
}

void ms_seq_free(ms_seq *s) {
	if (!s) return;
	if (s->key_cache) munmap(s->key_cache, s->kv_size);
	free(s);
}

void ms_seq_reset(ms_seq *s) { s->pos = 0; }
int ms_seq_pos(const ms_seq *s) { return s->pos; }

int ms_seq_forward(ms_seq *s, const int32_t *ids, size_t n, float *logits_last, float *logits_all,
		       const atomic_int *cancel) {
	ms_model *m = s->m;
	int vocab = m->cfg.vocab_size;
	ms_seq *rows[MS_CHUNK];
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

/* One step of several sessions: each of the model, once, with room for a token. */
static int check_step(ms_model *m, ms_seq *const *sess, size_t n) {
	for (size_t i = 0; i < n; i++) {
		if (sess[i]->m != m) return MS_EINVAL;
		for (size_t k = 0; k < i; k++)
			if (sess[k] == sess[i]) return MS_EINVAL;
		if (sess[i]->pos >= sess[i]->max_seq) return MS_ERANGE;
	}
	return 0;
}

int ms_seq_step_batch(ms_seq *const *sess, const int32_t *ids, size_t n, float *logits,
			  const atomic_int *cancel) {
	if (n == 0) return 0;
	ms_model *m = sess[0]->m;
	int vocab = m->cfg.vocab_size;
	int rc = check_step(m, sess, n);
	if (rc != 0) return rc;
	for (size_t i = 0; i < n; i += MS_CHUNK) {
		int c = (int)(n - i < MS_CHUNK ? n - i : MS_CHUNK);
		rc = ms_dec_forward(m, sess + i, ids + i, c, 1, cancel);
		if (rc != 0) return rc;
		memcpy(logits + i * vocab, m->ws->logits, (size_t)c * vocab * sizeof(float));
	}
	return 0;
}

int ms_model_logits(ms_model *m, const int32_t *ids, size_t n, float *out) {
	ms_seq *s;
	int rc = ms_seq_new(m, (int)(n < (size_t)m->cfg.max_pos ? n : (size_t)m->cfg.max_pos), &s);
	if (rc != 0) return rc;
	rc = ms_seq_forward(s, ids, n, NULL, out, NULL);
	ms_seq_free(s);
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

void ms_gen_opts_apply_model(ms_gen_opts *o, const ms_model *m) {
	const ms_gen_defaults *d = &m->cfg.gen;
	if (d->set & MS_GD_TEMPERATURE) o->temperature = d->temperature;
	if ((d->set & MS_GD_DO_SAMPLE) && !d->do_sample) o->temperature = 0;
	if (d->set & MS_GD_TOP_K) o->top_k = d->top_k;
	if (d->set & MS_GD_TOP_P) o->top_p = d->top_p;
	if (d->set & MS_GD_REPETITION_PENALTY) o->repetition_penalty = d->repetition_penalty;
	if (d->set & MS_GD_MAX_NEW_TOKENS) {
		o->max_new_tokens = d->max_new_tokens;
	} else if (d->set & MS_GD_MAX_LENGTH) {
		o->max_new_tokens = -1;
		o->max_length = d->max_length;
	}
}

int ms_gen_check_length(const ms_gen_opts *o, size_t n_prompt, char *err, size_t errlen) {
	if (o->max_new_tokens >= 0) return 0;
	if (o->max_length <= 0 || n_prompt >= (size_t)o->max_length)
		return ms_errf(err, errlen, MS_ERANGE,
			       "prompt of %zu tokens leaves no room under max_length %d (generation_config.json); "
			       "set max_new_tokens", n_prompt, o->max_length);
	return 0;
}

/* The ids that end a generation: the checkpoint's list, and the tokenizer's eos_token
 * (the chat templates end a turn with it) when it is not among them. */
static int eos_set(const ms_model *m, int32_t *ids) {
	int n = 0;
	for (int i = 0; i < m->cfg.n_eos; i++) ids[n++] = m->cfg.eos_ids[i];
	int32_t t = m->tok ? ms_tokenizer_eos_id(m->tok) : -1;
	for (int i = 0; i < n && t >= 0; i++)
		if (ids[i] == t) t = -1;
	if (t >= 0) ids[n++] = t;
	return n;
}

/* A generation in progress: its session, sampler, history and (text mode) streaming
 * detokenizer with stop-string hold-back. Stepped alone or batched with others. */
struct ms_gen {
	ms_model *m;
	ms_seq *s;
	ms_sampler smp;
	ms_gen_opts o;
	int32_t *hist;
	size_t nh, n_prompt;
	int32_t pending; /* sampled, not yet fed to the model */
	int32_t eos[MS_MAX_EOS + 1];
	int n_eos, done, rc;
	ms_token_cb tcb;
	ms_text_cb xcb;
	void *ud;
	int text_mode;
	ms_detok_stream ds;
	ms_buf text; /* text generated so far (for stop strings) */
	size_t sent; /* bytes of text handed to the callback */
	int stop_hit;
	ms_gen_stats st;
	double t_gen0;
};

/* Length of the longest proper prefix of a stop string that the text ends with: held
 * back until it resolves, so a stop string is never partly streamed. */
static size_t held_back(const ms_gen *g) {
	size_t hold = 0;
	for (const char *const *sp = g->o.stop; sp && *sp; sp++) {
		size_t sl = strlen(*sp);
		for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
			if (k <= g->text.len && memcmp(g->text.data + g->text.len - k, *sp, k) == 0) {
				hold = k;
				break;
			}
	}
	return hold;
}

/* Hands out the text that is final; returns non-zero when generation must stop. */
static int flush_text(ms_gen *g, int final) {
	size_t end = g->text.len;
	for (const char *const *sp = g->o.stop; sp && *sp; sp++) {
		size_t sl = strlen(*sp);
		if (!sl) continue;
		size_t from = g->sent > sl ? g->sent - sl : 0;
		char *hit = g->text.len > from ? memmem(g->text.data + from, g->text.len - from, *sp, sl) : NULL;
		if (hit && (size_t)(hit - g->text.data) < end) {
			end = (size_t)(hit - g->text.data);
			g->stop_hit = 1;
		}
	}
	if (!g->stop_hit && !final) end = g->text.len - held_back(g);
	if (end > g->sent) {
		int r = g->xcb ? g->xcb(g->ud, g->text.data + g->sent, end - g->sent) : 0;
		g->sent = end;
		if (r) return 1;
	}
	return g->stop_hit;
}

static void finish(ms_gen *g, int reason) {
	if (g->done) return;
	g->done = 1;
	g->st.stopped = reason;
	g->st.gen_ms = ms_now_ms() - g->t_gen0;
	if (g->text_mode && !g->stop_hit && g->rc == 0 && ms_detok_stream_finish(&g->ds, &g->text) == 0)
		flush_text(g, 1);
}

/* A sampled token: stop, or emit it and keep it pending for the next step. */
static void accept(ms_gen *g, int32_t next) {
	for (int i = 0; g->o.stop_on_eos && i < g->n_eos; i++)
		if (next == g->eos[i]) {
			finish(g, 1);
			return;
		}
	g->hist[g->nh++] = next;
	g->st.gen_tokens++;
	int stop = g->tcb ? g->tcb(g->ud, next) != 0 : 0;
	if (!stop && g->text_mode) {
		if (ms_detok_stream_push(&g->ds, next, &g->text) != 0) {
			g->rc = MS_ENOMEM;
			finish(g, 2);
			return;
		}
		stop = flush_text(g, 0);
	}
	if (stop) finish(g, 2);
	else if ((int)g->st.gen_tokens >= g->o.max_new_tokens) finish(g, 0);
	else if (g->s->pos >= g->s->max_seq) finish(g, 4);
	else g->pending = next;
}

int ms_gen_new(ms_model *m, const int32_t *prompt, size_t n_prompt, const ms_gen_opts *o, ms_token_cb tcb,
	       ms_text_cb xcb, void *ud, ms_gen **out) {
	const ms_config *c = &m->cfg;
	*out = NULL;
	if (n_prompt == 0 || n_prompt > (size_t)c->max_pos) return MS_ERANGE;
	for (size_t i = 0; i < n_prompt; i++)
		if (prompt[i] < 0 || prompt[i] >= c->vocab_size) return MS_ERANGE;
	if (xcb && !m->tok) return MS_EUNSUPPORTED;
	if (ms_gen_check_length(o, n_prompt, NULL, 0) != 0) return MS_ERANGE;
	ms_gen *g = calloc(1, sizeof *g);
	if (!g) return MS_ENOMEM;
	g->m = m, g->o = *o, g->tcb = tcb, g->xcb = xcb, g->ud = ud, g->text_mode = xcb != NULL;
	g->n_prompt = n_prompt;
	ms_buf_init(&g->text);
	if (o->max_new_tokens < 0) g->o.max_new_tokens = o->max_length - (int)n_prompt;
	size_t total = n_prompt + (size_t)(g->o.max_new_tokens > 0 ? g->o.max_new_tokens : 0);
	if (total > (size_t)c->max_pos) total = (size_t)c->max_pos;
	int rc = ms_seq_new(m, (int)total, &g->s);
	if (rc == 0 && !(g->hist = malloc((total + 1) * sizeof *g->hist))) rc = MS_ENOMEM;
	if (rc == 0)
		rc = ms_sampler_init(&g->smp, c->vocab_size, o->temperature, o->top_k, o->top_p, o->repetition_penalty,
				     o->seed);
	if (rc != 0) {
		ms_gen_free(g);
		return rc;
	}
	memcpy(g->hist, prompt, n_prompt * sizeof *g->hist);
	g->nh = n_prompt;
	g->n_eos = eos_set(m, g->eos);
	if (g->text_mode) {
		ms_detok_stream_init(&g->ds, m->tok, 1);
		/* the prompt goes through the stream first (its text dropped) so that the
		 * continuation is decoded in context: decoders such as Strip act on the start of
		 * the whole text */
		for (size_t i = 0; i < n_prompt && rc == 0; i++) rc = ms_detok_stream_push(&g->ds, prompt[i], &g->text);
		ms_buf_reset(&g->text);
	}
	*out = g;
	return rc;
}

int ms_gen_prefill(ms_gen *g) {
	if (g->done || g->st.prompt_tokens) return MS_ESTATE;
	float *logits = malloc((size_t)g->m->cfg.vocab_size * sizeof *logits);
	if (!logits) return MS_ENOMEM;
	double t0 = ms_now_ms();
	int rc = ms_seq_forward(g->s, g->hist, g->n_prompt, logits, NULL, g->o.cancel);
	g->st.prompt_tokens = g->n_prompt;
	g->st.prompt_ms = ms_now_ms() - t0;
	g->t_gen0 = ms_now_ms();
	if (rc == 0 && g->o.max_new_tokens <= 0) finish(g, 0);
	else if (rc == 0) accept(g, ms_sampler_sample(&g->smp, logits, g->hist, g->nh));
	free(logits);
	if (rc != 0) {
		g->rc = rc;
		finish(g, rc == MS_ECANCELED ? 3 : 2);
	}
	return rc;
}

int ms_gen_step_batch(ms_gen *const *gens, size_t n, const atomic_int *cancel) {
	if (n == 0) return 0;
	ms_model *m = gens[0]->m;
	int vocab = m->cfg.vocab_size;
	ms_seq **sess = malloc(n * sizeof *sess);
	int32_t *ids = malloc(n * sizeof *ids);
	size_t *which = malloc(n * sizeof *which), k = 0;
	int rc = 0;
	if (!sess || !ids || !which) {
		rc = MS_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (gens[i]->m != m) {
			rc = MS_EINVAL;
			goto out;
		}
		if (gens[i]->done || !gens[i]->st.prompt_tokens) continue;
		sess[k] = gens[i]->s, ids[k] = gens[i]->pending, which[k++] = i;
	}
	rc = check_step(m, sess, k);
	/* chunk by chunk, sampling straight from the model's logits scratch: copying them out
	 * cost a fresh 2 MiB (page faults and all) per step at 16 streams */
	for (size_t i = 0; rc == 0 && i < k; i += MS_CHUNK) {
		int c = (int)(k - i < MS_CHUNK ? k - i : MS_CHUNK);
		rc = ms_dec_forward(m, sess + i, ids + i, c, 1, cancel);
		int32_t next[MS_CHUNK];
		/* sampled before any is accepted: accepting runs the caller's callbacks */
		for (int j = 0; rc == 0 && j < c; j++) {
			ms_gen *g = gens[which[i + j]];
			next[j] = ms_sampler_sample(&g->smp, m->ws->logits + (size_t)j * vocab, g->hist, g->nh);
		}
		for (int j = 0; rc == 0 && j < c; j++) accept(gens[which[i + j]], next[j]);
	}
out:
	free(sess);
	free(ids);
	free(which);
	return rc;
}

int ms_gen_done(const ms_gen *g) { return g->done; }
int ms_gen_error(const ms_gen *g) { return g->rc; }
void ms_gen_cancel(ms_gen *g) {
	g->rc = MS_ECANCELED;
	finish(g, 3);
}
const ms_gen_stats *ms_gen_stats_of(const ms_gen *g) { return &g->st; }
const int32_t *ms_gen_ids(const ms_gen *g, size_t *n) {
	*n = g->nh - g->n_prompt;
	return g->hist + g->n_prompt;
}

void ms_gen_free(ms_gen *g) {
	if (!g) return;
	if (g->text_mode) ms_detok_stream_free(&g->ds);
	ms_buf_free(&g->text);
	ms_sampler_free(&g->smp);
	free(g->hist);
	ms_seq_free(g->s);
	free(g);
}

/* One sequence: prefill, then steps; each step checks the caller's cancel flag. */
static int run_alone(ms_gen *g, ms_gen_stats *stats) {
	int rc = ms_gen_prefill(g);
	while (rc == 0 && !g->done) {
		rc = ms_gen_step_batch(&g, 1, g->o.cancel);
		if (rc != 0) {
			g->rc = rc;
			finish(g, rc == MS_ECANCELED ? 3 : 2);
		}
	}
	if (rc == 0) rc = g->rc;
	if (stats) *stats = g->st;
	return rc;
}

int ms_model_generate_ids(ms_model *m, const int32_t *prompt, size_t n_prompt, const ms_gen_opts *o,
			  ms_token_cb cb, void *ud, int32_t **out_ids, size_t *n_out, ms_gen_stats *stats) {
	ms_gen *g;
	if (out_ids) *out_ids = NULL;
	if (n_out) *n_out = 0;
	int rc = ms_gen_new(m, prompt, n_prompt, o, cb, NULL, ud, &g);
	if (rc != 0) return rc;
	rc = run_alone(g, stats);
	if (out_ids && (rc == 0 || rc == MS_ECANCELED)) {
		size_t n;
		const int32_t *ids = ms_gen_ids(g, &n);
		*out_ids = malloc((n + 1) * sizeof **out_ids);
		if (*out_ids) memcpy(*out_ids, ids, n * sizeof **out_ids);
		if (n_out) *n_out = *out_ids ? n : 0;
	}
	ms_gen_free(g);
	return rc;
}

/* A task asked of a checkpoint whose family cannot do it: say what it is and what is needed. */
static int wrong_family(const ms_model *m, const char *task, const char *needs, char *err, size_t errlen) {
	return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s is a %s (%s): %s needs %s", m->dir, ms_arch_name(m->cfg.arch),
		       m->cfg.model_type[0] ? m->cfg.model_type : "no model_type", task, needs);
}

int ms_model_encode_prompt(ms_model *m, const char *prompt, int add_special, int32_t **ids, size_t *n, char *err,
			   size_t errlen) {
	*ids = NULL;
	*n = 0;
	if (m->cfg.arch != MS_ARCH_LLAMA && m->cfg.arch != MS_ARCH_GPT2)
		return wrong_family(m, "generation", "a causal language model (LlamaForCausalLM, GPT2LMHeadModel)", err,
				    errlen);
	if (!m->tok)
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: no tokenizer for text generation", m->dir);
	int rc = ms_tokenizer_encode(m->tok, prompt, strlen(prompt), add_special, ids, n);
	if (rc != 0) return ms_errf(err, errlen, rc, "%s: tokenizing the prompt failed", m->dir);
	if (*n == 0) { /* an empty prompt without a BOS: start from BOS as llama2.c does */
		free(*ids);
		if (!(*ids = malloc(sizeof **ids))) return MS_ENOMEM;
		(*ids)[0] = m->cfg.bos_id >= 0 ? m->cfg.bos_id : 0;
		*n = 1;
	}
	if (*n > (size_t)m->cfg.max_pos) {
		free(*ids);
		*ids = NULL;
		return ms_errf(err, errlen, MS_ERANGE, "prompt of %zu tokens exceeds the model's %d positions", *n,
			       m->cfg.max_pos);
	}
	return 0;
}

int ms_model_generate(ms_model *m, const char *prompt, const ms_gen_opts *o, ms_text_cb cb, void *ud,
		      ms_gen_stats *stats, char *err, size_t errlen) {
	int32_t *ids;
	size_t n;
	int rc = ms_model_encode_prompt(m, prompt, o->add_bos, &ids, &n, err, errlen);
	if (rc != 0) return rc;
	if ((rc = ms_gen_check_length(o, n, err, errlen)) != 0) {
		free(ids);
		return rc;
	}
	ms_gen *g = NULL;
	if ((rc = ms_gen_new(m, ids, n, o, NULL, cb, ud, &g)) == 0) rc = run_alone(g, stats);
	if (rc == MS_ECANCELED) ms_errf(err, errlen, rc, "cancelled");
	else if (rc != 0) ms_errf(err, errlen, rc, "%s: generation failed: %s", m->dir, ms_strerror(rc));
	ms_gen_free(g);
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

size_t ms_model_fit_ids(const ms_model *m, int32_t *ids, size_t n) {
	if (n <= (size_t)m->cfg.max_pos) return n;
	ids[m->cfg.max_pos - 1] = ids[n - 1];
	return (size_t)m->cfg.max_pos;
}

static int encode_text(ms_model *m, const char *text, int32_t **ids, size_t *n, char *err, size_t errlen) {
	if (!m->tok)
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: no tokenizer", m->dir);
	int rc = ms_tokenizer_encode(m->tok, text, strlen(text), 1, ids, n);
	if (rc != 0) return ms_errf(err, errlen, rc, "%s: tokenizing failed", m->dir);
	*n = ms_model_fit_ids(m, *ids, *n);
	return 0;
}

int ms_model_classify(ms_model *m, const char *text, ms_label_score **out, size_t *n_out, char *err,
		      size_t errlen) {
	int32_t *ids = NULL;
	size_t n = 0;
	if (!m->cfg.has_classifier)
		return wrong_family(m, "classify", "a sequence classification checkpoint (BertForSequenceClassification, "
				    "DistilBertForSequenceClassification)", err, errlen);
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
	if (m->cfg.arch != MS_ARCH_BERT && m->cfg.arch != MS_ARCH_BERT_CLS && m->cfg.arch != MS_ARCH_DISTILBERT)
		return wrong_family(m, "embed", "an encoder (BERT, DistilBERT)", err, errlen);
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
