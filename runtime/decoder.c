/* runtime/decoder.c: causal LMs. LlamaForCausalLM (RMSNorm, RoPE with rope_theta in
 * transformers' rotate_half layout, grouped-query attention, SwiGLU, tied or separate head)
 * and GPT2LMHeadModel (learned positions, LayerNorm, fused QKV, gelu_new, tied head). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/model_internal.h"

/* Tries "prefix" + name for each prefix: real gpt2 files have no "transformer." prefix. */
static int get_pref(ms_model *m, const char *const *prefixes, const char *name, int64_t d0, int64_t d1, int transpose,
		    const float **out, char *err, size_t errlen) {
	char full[256];
	for (const char *const *p = prefixes; *p; p++) {
		snprintf(full, sizeof full, "%s%s", *p, name);
		if (ms_st_find(&m->st, full))
			return transpose ? ms_w_get_t(m, full, d0, d1, out, err, errlen)
					 : ms_w_get(m, full, d0, d1, out, err, errlen);
	}
	snprintf(full, sizeof full, "%s%s", prefixes[0], name);
	return ms_w_get(m, full, d0, d1, out, err, errlen); /* reports the missing tensor */
}

static int load_llama(ms_model *m, char *err, size_t errlen) {
	const ms_config *c = &m->cfg;
	ms_dec_weights *w = &m->dec;
	int kv_dim = c->n_kv_heads * c->head_dim, rc;
	char n[160];
#define GET(name, d0, d1, dst) if ((rc = ms_w_get(m, name, d0, d1, dst, err, errlen)) != 0) return rc
	GET("model.embed_tokens.weight", c->vocab_size, c->dim, &w->tok_emb);
	GET("model.norm.weight", c->dim, 0, &w->lnf_w);
	for (int l = 0; l < c->n_layers; l++) {
		ms_dec_layer *L = &w->layers[l];
#define LGET(suffix, d0, d1, dst) snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix); GET(n, d0, d1, dst)
		LGET("input_layernorm.weight", c->dim, 0, &L->ln1_w);
		LGET("self_attn.q_proj.weight", c->dim, c->dim, &L->wq);
		LGET("self_attn.k_proj.weight", kv_dim, c->dim, &L->wk);
		LGET("self_attn.v_proj.weight", kv_dim, c->dim, &L->wv);
		LGET("self_attn.o_proj.weight", c->dim, c->dim, &L->wo);
		LGET("post_attention_layernorm.weight", c->dim, 0, &L->ln2_w);
		LGET("mlp.gate_proj.weight", c->hidden_dim, c->dim, &L->w1);
		LGET("mlp.down_proj.weight", c->dim, c->hidden_dim, &L->w2);
		LGET("mlp.up_proj.weight", c->hidden_dim, c->dim, &L->w3);
#undef LGET
	}
	/* a tied checkpoint may still store lm_head.weight; an untied one must */
	if (!c->tie_word_embeddings || ms_st_find(&m->st, "lm_head.weight")) {
		GET("lm_head.weight", c->vocab_size, c->dim, &w->head);
	} else {
		w->head = w->tok_emb;
	}
#undef GET
	return 0;
}

static int load_gpt2(ms_model *m, char *err, size_t errlen) {
	static const char *const pre[] = {"transformer.", "", NULL};
	const ms_config *c = &m->cfg;
	ms_dec_weights *w = &m->dec;
	int d = c->dim, h = c->hidden_dim, rc;
	char n[160];
#define GET(name, d0, d1, t, dst) if ((rc = get_pref(m, pre, name, d0, d1, t, dst, err, errlen)) != 0) return rc
	GET("wte.weight", c->vocab_size, d, 0, &w->tok_emb);
	GET("wpe.weight", c->max_pos, d, 0, &w->pos_emb);
	GET("ln_f.weight", d, 0, 0, &w->lnf_w);
	GET("ln_f.bias", d, 0, 0, &w->lnf_b);
	for (int l = 0; l < c->n_layers; l++) {
		ms_dec_layer *L = &w->layers[l];
		const float *qkv, *qkv_b;
#define LGET(suffix, d0, d1, t, dst) snprintf(n, sizeof n, "h.%d.%s", l, suffix); GET(n, d0, d1, t, dst)
		LGET("ln_1.weight", d, 0, 0, &L->ln1_w);
		LGET("ln_1.bias", d, 0, 0, &L->ln1_b);
		LGET("attn.c_attn.weight", 3 * d, d, 1, &qkv); /* Conv1D [d][3d] -> [3d][d] */
		LGET("attn.c_attn.bias", 3 * d, 0, 0, &qkv_b);
		L->wq = qkv, L->wk = qkv + (size_t)d * d, L->wv = qkv + 2 * (size_t)d * d;
		L->bq = qkv_b, L->bk = qkv_b + d, L->bv = qkv_b + 2 * d;
		LGET("attn.c_proj.weight", d, d, 1, &L->wo);
		LGET("attn.c_proj.bias", d, 0, 0, &L->bo);
		LGET("ln_2.weight", d, 0, 0, &L->ln2_w);
		LGET("ln_2.bias", d, 0, 0, &L->ln2_b);
		LGET("mlp.c_fc.weight", h, d, 1, &L->w1);
		LGET("mlp.c_fc.bias", h, 0, 0, &L->b1);
		LGET("mlp.c_proj.weight", d, h, 1, &L->w2);
		LGET("mlp.c_proj.bias", d, 0, 0, &L->b2);
#undef LGET
	}
#undef GET
	if (ms_st_find(&m->st, "lm_head.weight")) {
		if ((rc = ms_w_get(m, "lm_head.weight", c->vocab_size, d, &w->head, err, errlen)) != 0) return rc;
	} else {
		w->head = w->tok_emb;
	}
	return 0;
}

int ms_dec_load(ms_model *m, char *err, size_t errlen) {
	m->dec.layers = calloc((size_t)m->cfg.n_layers, sizeof *m->dec.layers);
	if (!m->dec.layers) return MS_ENOMEM;
	return m->cfg.arch == MS_ARCH_LLAMA ? load_llama(m, err, errlen) : load_gpt2(m, err, errlen);
}

/* RoPE angles of one position: cs[i] = cos, cs[half + i] = sin of pos * inv_freq[i], with
 * inv_freq as transformers computes it (float32). The same for every layer and for q and
 * k, so computed once per row and forward pass. */
static void rope_angles(float *cs, int hd, int pos, float theta) {
	int half = hd / 2;
	for (int i = 0; i < half; i++) {
		float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
		float ang = (float)pos * inv_freq;
		cs[i] = cosf(ang);
		cs[half + i] = sinf(ang);
	}
}

/* RoPE, transformers' rotate_half layout: dimension i pairs with i + head_dim/2.
 * vec: [n_heads][head_dim] of one token; cs from rope_angles. */
static void rope(float *vec, int n_heads, int hd, const float *cs) {
	int half = hd / 2;
	for (int h = 0; h < n_heads; h++) {
		float *v = vec + h * hd;
		for (int i = 0; i < half; i++) {
			float a = v[i], b = v[i + half];
			v[i] = a * cs[i] - b * cs[half + i];
			v[i + half] = b * cs[i] + a * cs[half + i];
		}
	}
}

typedef struct {
	ms_model *m;
	int layer, n;
} attn_job;

/* One (row, head) pair per unit of work, split across the pool. Row i attends over its
 * own session's cache, positions 0..pos[i]. */
static void attn_task(void *ctx, int t, int nt) {
	const attn_job *j = ctx;
	ms_dec_ws *ws = j->m->ws;
	const ms_config *c = &j->m->cfg;
	int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
	int units = j->n * c->n_heads;
	int u0 = (int)((long)units * t / nt), u1 = (int)((long)units * (t + 1) / nt);
	float scale = 1.0f / sqrtf((float)hd);
	for (int u = u0; u < u1; u++) {
		int i = u / c->n_heads, h = u % c->n_heads, pos = ws->pos[i];
		const ms_seq *s = ws->sess[i];
		/* this head's keys and values: [max_seq][hd], contiguous */
		size_t hoff = ((size_t)j->layer * c->n_kv_heads + h / group) * s->max_seq * hd;
		const float *q = ws->q + (size_t)i * c->dim + h * hd;
		float *att = ws->att + ((size_t)i * c->n_heads + h) * ws->att_len;
		ms_dots(att, q, s->key_cache + hoff, pos + 1, hd, (size_t)hd, scale);
		ms_softmax(att, pos + 1);
		ms_weighted_sum(ws->xb + (size_t)i * c->dim + h * hd, att, s->value_cache + hoff, pos + 1, hd, (size_t)hd);
	}
}

int ms_dec_ws_alloc(ms_model *m) {
	const ms_config *c = &m->cfg;
	if (m->ws) return 0;
	ms_dec_ws *ws = calloc(1, sizeof *ws);
	if (!ws) return MS_ENOMEM;
	ws->x = malloc((size_t)MS_CHUNK * c->dim * sizeof(float));
	ws->xb = malloc((size_t)MS_CHUNK * c->dim * sizeof(float));
	ws->xb2 = malloc((size_t)MS_CHUNK * c->dim * sizeof(float));
	ws->q = malloc((size_t)MS_CHUNK * c->dim * sizeof(float));
	ws->hb = malloc((size_t)MS_CHUNK * c->hidden_dim * sizeof(float));
	ws->hb2 = malloc((size_t)MS_CHUNK * c->hidden_dim * sizeof(float));
	ws->logits = malloc((size_t)MS_CHUNK * c->vocab_size * sizeof(float));
	ws->rope = malloc((size_t)MS_CHUNK * c->head_dim * sizeof(float));
	m->ws = ws;
	if (!ws->x || !ws->xb || !ws->xb2 || !ws->q || !ws->hb || !ws->hb2 || !ws->logits || !ws->rope) return MS_ENOMEM;
	return 0;
}

void ms_dec_ws_free(ms_model *m) {
	ms_dec_ws *ws = m->ws;
	if (!ws) return;
	free(ws->x);
	free(ws->xb);
	free(ws->xb2);
	free(ws->q);
	free(ws->hb);
	free(ws->hb2);
	free(ws->att);
	free(ws->logits);
	free(ws->rope);
	free(ws);
	m->ws = NULL;
}

static const ms_q8 *q8_of(const ms_q8 *w) { return w->q ? w : NULL; }

/* out[n][d] = x[n][k] · W (+ bias) with W's 8-bit copy when it has one. */
static int mm(ms_model *m, float *out, const float *x, const float *w, const ms_q8 *w8, const float *bias, int n, int d,
	      int k) {
	ms_mat mat = {out, w, q8_of(w8), bias, d};
	return ms_matmul_many(&m->pool, x, n, k, &mat, 1);
}

/* K and V of row i go into its session's cache, which is head-major ([layer][kv_head][pos][hd]:
 * attention reads each head's positions as one contiguous stream), so they are computed into
 * scratch and copied. */
int ms_dec_forward(ms_model *m, ms_seq *const *sess, const int32_t *ids, int n, int all,
		   const atomic_int *cancel) {
	const ms_config *c = &m->cfg;
	const ms_dec_weights *w = &m->dec;
	ms_dec_ws *ws = m->ws;
	int llama = c->arch == MS_ARCH_LLAMA;
	int dim = c->dim, hd = c->head_dim, kv_dim = c->n_kv_heads * hd, hid = c->hidden_dim, rc;
	if (n <= 0 || n > MS_CHUNK || !ws) return MS_EINVAL;
	for (int i = 0; i < n; i++) {
		int before = 0;
		for (int k = 0; k < i; k++) before += sess[k] == sess[i];
		ws->sess[i] = sess[i];
		ws->pos[i] = sess[i]->pos + before;
		if (ws->pos[i] >= sess[i]->max_seq || ws->pos[i] >= c->max_pos) return MS_ERANGE;
		if (ids[i] < 0 || ids[i] >= c->vocab_size) return MS_ERANGE;
	}

	int need = 0;
	for (int i = 0; i < n; i++) need = ws->pos[i] + 1 > need ? ws->pos[i] + 1 : need;
	if (need > ws->att_len) { /* scores for up to `need` positions per (row, head) */
		int len = need < 256 ? 256 : need;
		if (len < 2 * ws->att_len && 2 * ws->att_len <= c->max_pos) len = 2 * ws->att_len;
		float *na = realloc(ws->att, (size_t)MS_CHUNK * c->n_heads * len * sizeof(float));
		if (!na) return MS_ENOMEM;
		ws->att = na, ws->att_len = len;
	}

	if (llama)
		for (int i = 0; i < n; i++) rope_angles(ws->rope + (size_t)i * hd, hd, ws->pos[i], c->rope_theta);
	/* x[n][dim]: token (+ position) embeddings */
	for (int i = 0; i < n; i++) {
		float *x = ws->x + (size_t)i * dim;
		memcpy(x, w->tok_emb + (size_t)ids[i] * dim, (size_t)dim * sizeof *x);
		if (!llama)
			for (int e = 0; e < dim; e++) x[e] += w->pos_emb[(size_t)ws->pos[i] * dim + e];
	}
	for (int l = 0; l < c->n_layers; l++) {
		if (cancel && atomic_load(cancel)) return MS_ECANCELED;
		const ms_dec_layer *L = &w->layers[l];
		for (int i = 0; i < n; i++) {
			const float *x = ws->x + (size_t)i * dim;
			float *xb = ws->xb + (size_t)i * dim;
			if (llama) ms_rmsnorm(xb, x, L->ln1_w, dim, c->norm_eps);
			else ms_layernorm(xb, x, L->ln1_w, L->ln1_b, dim, c->norm_eps);
		}
		/* q[n][dim]; k, v [n][kv_dim] into hb / hb2 (free until the FFN), then the caches;
		 * one pool dispatch for the three */
		ms_mat qkv[3] = {{ws->q, L->wq, q8_of(&L->wq8), L->bq, dim},
				 {ws->hb, L->wk, q8_of(&L->wk8), L->bk, kv_dim},
				 {ws->hb2, L->wv, q8_of(&L->wv8), L->bv, kv_dim}};
		if ((rc = ms_matmul_many(&m->pool, ws->xb, n, dim, qkv, 3)) != 0) return rc;
		for (int i = 0; i < n; i++) {
			ms_seq *s = sess[i];
			float *k = ws->hb + (size_t)i * kv_dim;
			if (llama) {
				rope(ws->q + (size_t)i * dim, c->n_heads, hd, ws->rope + (size_t)i * hd);
				rope(k, c->n_kv_heads, hd, ws->rope + (size_t)i * hd);
			}
			for (int h = 0; h < c->n_kv_heads; h++) {
				size_t off = (((size_t)l * c->n_kv_heads + h) * s->max_seq + ws->pos[i]) * hd;
				memcpy(s->key_cache + off, k + h * hd, (size_t)hd * sizeof(float));
				memcpy(s->value_cache + off, ws->hb2 + (size_t)i * kv_dim + h * hd, (size_t)hd * sizeof(float));
			}
		}
		attn_job aj = {m, l, n};
		if ((size_t)n * c->n_heads * (ws->pos[n - 1] + 1) * hd < 16384) attn_task(&aj, 0, 1);
		else ms_pool_run_n(&m->pool, attn_task, &aj, n * c->n_heads < 4 * m->pool.n_threads ? n * c->n_heads : 4 * m->pool.n_threads);
		if ((rc = mm(m, ws->xb2, ws->xb, L->wo, &L->wo8, L->bo, n, dim, dim)) != 0) return rc;
		for (size_t e = 0; e < (size_t)n * dim; e++) ws->x[e] += ws->xb2[e];

		for (int i = 0; i < n; i++) {
			const float *x = ws->x + (size_t)i * dim;
			float *xb = ws->xb + (size_t)i * dim;
			if (llama) ms_rmsnorm(xb, x, L->ln2_w, dim, c->norm_eps);
			else ms_layernorm(xb, x, L->ln2_w, L->ln2_b, dim, c->norm_eps);
		}
		/* gate and up in one dispatch */
		ms_mat ffn[2] = {{ws->hb, L->w1, q8_of(&L->w18), L->b1, hid}, {ws->hb2, L->w3, q8_of(&L->w38), NULL, hid}};
		if ((rc = ms_matmul_many(&m->pool, ws->xb, n, dim, ffn, llama ? 2 : 1)) != 0) return rc;
		if (llama) {
			ms_silu_mul(ws->hb, ws->hb2, (size_t)n * hid);
		} else {
			for (size_t e = 0; e < (size_t)n * hid; e++)
				ws->hb[e] = c->act == MS_ACT_GELU ? ms_gelu(ws->hb[e]) : ms_gelu_new(ws->hb[e]);
		}
		if ((rc = mm(m, ws->xb2, ws->hb, L->w2, &L->w28, L->b2, n, dim, hid)) != 0) return rc;
		for (size_t e = 0; e < (size_t)n * dim; e++) ws->x[e] += ws->xb2[e];
	}
	if (cancel && atomic_load(cancel)) return MS_ECANCELED;
	int n_out = 0;
	for (int i = 0; i < n; i++) {
		int last = 1;
		for (int k = i + 1; k < n && last; k++) last = sess[k] != sess[i];
		if (!all && !last) continue;
		const float *x = ws->x + (size_t)i * dim;
		float *xb = ws->xb + (size_t)n_out++ * dim;
		if (llama) ms_rmsnorm(xb, x, w->lnf_w, dim, c->norm_eps);
		else ms_layernorm(xb, x, w->lnf_w, w->lnf_b, dim, c->norm_eps);
	}
	if ((rc = mm(m, ws->logits, ws->xb, w->head, &w->head8, NULL, n_out, c->vocab_size, dim)) != 0) return rc;
	for (int i = 0; i < n; i++) sess[i]->pos = ws->pos[i] + 1 > sess[i]->pos ? ws->pos[i] + 1 : sess[i]->pos;
	return 0;
}

/* ---- 8-bit weights ---- */

typedef struct {
	const float **f;
	ms_q8 *q;
	size_t d;
	int k;
} qmat;

int ms_dec_quantize(ms_model *m) {
	const ms_config *c = &m->cfg;
	ms_dec_weights *w = &m->dec;
	int kv_dim = c->n_kv_heads * c->head_dim;
	size_t nm = (size_t)c->n_layers * 7 + 1, n = 0;
	qmat *mats = calloc(nm, sizeof *mats);
	if (!mats) return MS_ENOMEM;
	for (int l = 0; l < c->n_layers; l++) {
		ms_dec_layer *L = &w->layers[l];
		mats[n++] = (qmat){&L->wq, &L->wq8, (size_t)c->dim, c->dim};
		mats[n++] = (qmat){&L->wk, &L->wk8, (size_t)kv_dim, c->dim};
		mats[n++] = (qmat){&L->wv, &L->wv8, (size_t)kv_dim, c->dim};
		mats[n++] = (qmat){&L->wo, &L->wo8, (size_t)c->dim, c->dim};
		mats[n++] = (qmat){&L->w1, &L->w18, (size_t)c->hidden_dim, c->dim};
		mats[n++] = (qmat){&L->w2, &L->w28, (size_t)c->dim, c->hidden_dim};
		if (L->w3) mats[n++] = (qmat){&L->w3, &L->w38, (size_t)c->hidden_dim, c->dim};
	}
	mats[n++] = (qmat){&w->head, &w->head8, (size_t)c->vocab_size, c->dim};
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		if (mats[i].k % MS_Q8_BLOCK == 0)
			total += ((mats[i].d * mats[i].k + 63) & ~(size_t)63) +
				 ((mats[i].d * (mats[i].k / MS_Q8_BLOCK) * sizeof(float) + 63) & ~(size_t)63);
	if (total == 0) {
		free(mats);
		return 0;
	}
	void *arena = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED) {
		free(mats);
		return MS_ENOMEM;
	}
	madvise(arena, total, MADV_HUGEPAGE);
	m->q8_arena = arena, m->q8_size = total;
	/* the products' scratch for quantised activations, reserved now so that a forward
	 * pass never allocates */
	int kmax = c->hidden_dim > c->dim ? c->hidden_dim : c->dim;
	if (!ms_pool_scratch(&m->pool, ms_matmul_scratch(MS_CHUNK, kmax))) {
		free(mats);
		return MS_ENOMEM;
	}
	char *p = arena;
	long page = sysconf(_SC_PAGESIZE);
	for (size_t i = 0; i < n; i++) {
		qmat *q = &mats[i];
		if (q->k % MS_Q8_BLOCK) continue;
		int8_t *qs = (int8_t *)p;
		p += (q->d * q->k + 63) & ~(size_t)63;
		float *sc = (float *)(void *)p;
		p += (q->d * (q->k / MS_Q8_BLOCK) * sizeof(float) + 63) & ~(size_t)63;
		ms_q8_quantize(*q->f, q->d, q->k, qs, sc);
		q->q->q = qs, q->q->s = sc;
		/* the F32 copy is no longer read: give its whole pages back (the tied head's
		 * F32 rows are still the embedding table) */
		if (*q->f != w->tok_emb) {
			uintptr_t a = ((uintptr_t)*q->f + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
			uintptr_t e = ((uintptr_t)(*q->f + q->d * q->k)) & ~(uintptr_t)(page - 1);
			if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
			*q->f = NULL;
		}
	}
	free(mats);
	return 0;
}
