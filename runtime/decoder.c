/* runtime/decoder.c: causal LMs. LlamaForCausalLM (RMSNorm, RoPE with rope_theta in
 * transformers' rotate_half layout, grouped-query attention, SwiGLU, tied or separate head)
 * and GPT2LMHeadModel (learned positions, LayerNorm, fused QKV, gelu_new, tied head). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* RoPE, transformers' rotate_half layout: dimension i pairs with i + head_dim/2.
 * vec: [n_heads][head_dim] of one token at position pos. */
static void rope(float *vec, int n_heads, int hd, int pos, float theta) {
	int half = hd / 2;
	for (int i = 0; i < half; i++) {
		/* inv_freq as transformers computes it (float32), the angle in double */
		float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
		float ang = (float)pos * inv_freq;
		float cs = cosf(ang), sn = sinf(ang);
		for (int h = 0; h < n_heads; h++) {
			float *v = vec + h * hd;
			float a = v[i], b = v[i + half];
			v[i] = a * cs - b * sn;
			v[i + half] = b * cs + a * sn;
		}
	}
}

typedef struct {
	ms_session *s;
	int layer, n, pos0;
} attn_job;

/* One (token, head) pair per unit of work, split across the pool. */
static void attn_task(void *ctx, int t, int nt) {
	const attn_job *j = ctx;
	ms_session *s = j->s;
	const ms_config *c = &s->m->cfg;
	int hd = c->head_dim, kv_dim = c->n_kv_heads * hd, group = c->n_heads / c->n_kv_heads;
	int units = j->n * c->n_heads;
	int u0 = (int)((long)units * t / nt), u1 = (int)((long)units * (t + 1) / nt);
	float scale = 1.0f / sqrtf((float)hd);
	size_t loff = (size_t)j->layer * s->max_seq * kv_dim;
	for (int u = u0; u < u1; u++) {
		int i = u / c->n_heads, h = u % c->n_heads, pos = j->pos0 + i;
		const float *q = s->q + (size_t)i * c->dim + h * hd;
		float *att = s->att + ((size_t)i * c->n_heads + h) * s->max_seq;
		int kvh = h / group;
		for (int p = 0; p <= pos; p++) {
			const float *k = s->key_cache + loff + (size_t)p * kv_dim + kvh * hd;
			att[p] = ms_dot(q, k, hd) * scale;
		}
		ms_softmax(att, pos + 1);
		float *out = s->xb + (size_t)i * c->dim + h * hd;
		memset(out, 0, (size_t)hd * sizeof *out);
		for (int p = 0; p <= pos; p++) {
			const float *v = s->value_cache + loff + (size_t)p * kv_dim + kvh * hd;
			float a = att[p];
			for (int e = 0; e < hd; e++) out[e] += a * v[e];
		}
	}
}

int ms_dec_forward(ms_session *s, const int32_t *ids, int n, int all, const atomic_int *cancel) {
	ms_model *m = s->m;
	const ms_config *c = &m->cfg;
	const ms_dec_weights *w = &m->dec;
	int llama = c->arch == MS_ARCH_LLAMA;
	int dim = c->dim, hd = c->head_dim, kv_dim = c->n_kv_heads * hd, hid = c->hidden_dim;
	int pos0 = s->pos;
	if (n <= 0 || n > MS_CHUNK) return MS_EINVAL;
	if (pos0 + n > s->max_seq || (!llama && pos0 + n > c->max_pos)) return MS_ERANGE;
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= c->vocab_size) return MS_ERANGE;

	/* x[n][dim]: token (+ position) embeddings */
	for (int i = 0; i < n; i++) {
		float *x = s->x + (size_t)i * dim;
		memcpy(x, w->tok_emb + (size_t)ids[i] * dim, (size_t)dim * sizeof *x);
		if (!llama)
			for (int e = 0; e < dim; e++) x[e] += w->pos_emb[(size_t)(pos0 + i) * dim + e];
	}
	for (int l = 0; l < c->n_layers; l++) {
		if (cancel && atomic_load(cancel)) return MS_ECANCELED;
		const ms_dec_layer *L = &w->layers[l];
		size_t loff = (size_t)l * s->max_seq * kv_dim;
		float *kc = s->key_cache + loff + (size_t)pos0 * kv_dim, *vc = s->value_cache + loff + (size_t)pos0 * kv_dim;
		for (int i = 0; i < n; i++) {
			const float *x = s->x + (size_t)i * dim;
			float *xb = s->xb + (size_t)i * dim;
			if (llama) ms_rmsnorm(xb, x, L->ln1_w, dim, c->norm_eps);
			else ms_layernorm(xb, x, L->ln1_w, L->ln1_b, dim, c->norm_eps);
		}
		/* q[n][dim]; k, v written straight into the cache rows pos0..pos0+n-1 */
		ms_matmul(&m->pool, s->q, s->xb, L->wq, L->bq, n, dim, dim);
		ms_matmul(&m->pool, kc, s->xb, L->wk, L->bk, n, kv_dim, dim);
		ms_matmul(&m->pool, vc, s->xb, L->wv, L->bv, n, kv_dim, dim);
		if (llama)
			for (int i = 0; i < n; i++) {
				rope(s->q + (size_t)i * dim, c->n_heads, hd, pos0 + i, c->rope_theta);
				rope(kc + (size_t)i * kv_dim, c->n_kv_heads, hd, pos0 + i, c->rope_theta);
			}
		attn_job aj = {s, l, n, pos0};
		if ((size_t)n * c->n_heads * (pos0 + n) * hd < 16384) attn_task(&aj, 0, 1);
		else ms_pool_run(&m->pool, attn_task, &aj);
		ms_matmul(&m->pool, s->xb2, s->xb, L->wo, L->bo, n, dim, dim);
		for (size_t e = 0; e < (size_t)n * dim; e++) s->x[e] += s->xb2[e];

		for (int i = 0; i < n; i++) {
			const float *x = s->x + (size_t)i * dim;
			float *xb = s->xb + (size_t)i * dim;
			if (llama) ms_rmsnorm(xb, x, L->ln2_w, dim, c->norm_eps);
			else ms_layernorm(xb, x, L->ln2_w, L->ln2_b, dim, c->norm_eps);
		}
		ms_matmul(&m->pool, s->hb, s->xb, L->w1, L->b1, n, hid, dim);
		if (llama) {
			ms_matmul(&m->pool, s->hb2, s->xb, L->w3, NULL, n, hid, dim);
			for (size_t e = 0; e < (size_t)n * hid; e++) s->hb[e] = ms_silu(s->hb[e]) * s->hb2[e];
		} else {
			for (size_t e = 0; e < (size_t)n * hid; e++)
				s->hb[e] = c->act == MS_ACT_GELU ? ms_gelu(s->hb[e]) : ms_gelu_new(s->hb[e]);
		}
		ms_matmul(&m->pool, s->xb2, s->hb, L->w2, L->b2, n, dim, hid);
		for (size_t e = 0; e < (size_t)n * dim; e++) s->x[e] += s->xb2[e];
	}
	if (cancel && atomic_load(cancel)) return MS_ECANCELED;
	int first = all ? 0 : n - 1;
	for (int i = first; i < n; i++) {
		const float *x = s->x + (size_t)i * dim;
		float *xb = s->xb + (size_t)(i - first) * dim;
		if (llama) ms_rmsnorm(xb, x, w->lnf_w, dim, c->norm_eps);
		else ms_layernorm(xb, x, w->lnf_w, w->lnf_b, dim, c->norm_eps);
	}
	ms_matmul(&m->pool, s->logits, s->xb, w->head, NULL, n - first, c->vocab_size, dim);
	s->pos += n;
	return 0;
}
