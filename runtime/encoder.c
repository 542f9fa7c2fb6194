/* runtime/encoder.c: bidirectional encoders. BertModel (+ pooler, + classifier for
 * BertForSequenceClassification) and DistilBertModel (+ pre_classifier → ReLU → classifier).
 * Both are post-LN transformers; they differ in key names, token types and the head. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/model_internal.h"

/* "bert." / "distilbert." prefixed (task models) or bare (BertModel) names. */
static int getp(ms_model *m, const char *prefix, const char *name, int64_t d0, int64_t d1, const float **out,
		char *err, size_t errlen) {
	char full[256];
	snprintf(full, sizeof full, "%s%s", prefix, name);
	if (!ms_st_find(&m->st, full) && ms_st_find(&m->st, name)) return ms_w_get(m, name, d0, d1, out, err, errlen);
	return ms_w_get(m, full, d0, d1, out, err, errlen);
}

static int load_bert(ms_model *m, char *err, size_t errlen) {
	const ms_config *c = &m->cfg;
	ms_enc_weights *w = &m->enc;
	int d = c->dim, h = c->hidden_dim, rc;
	char n[192];
#define GET(name, d0, d1, dst) if ((rc = getp(m, "bert.", name, d0, d1, dst, err, errlen)) != 0) return rc
	GET("embeddings.word_embeddings.weight", c->vocab_size, d, &w->word);
	GET("embeddings.position_embeddings.weight", c->max_pos, d, &w->pos);
	GET("embeddings.token_type_embeddings.weight", c->type_vocab_size, d, &w->type);
	GET("embeddings.LayerNorm.weight", d, 0, &w->emb_ln_w);
	GET("embeddings.LayerNorm.bias", d, 0, &w->emb_ln_b);
	for (int l = 0; l < c->n_layers; l++) {
		ms_enc_layer *L = &w->layers[l];
#define LGET(suffix, d0, d1, dst) snprintf(n, sizeof n, "encoder.layer.%d.%s", l, suffix); GET(n, d0, d1, dst)
		LGET("attention.self.query.weight", d, d, &L->wq);
		LGET("attention.self.query.bias", d, 0, &L->bq);
		LGET("attention.self.key.weight", d, d, &L->wk);
		LGET("attention.self.key.bias", d, 0, &L->bk);
		LGET("attention.self.value.weight", d, d, &L->wv);
		LGET("attention.self.value.bias", d, 0, &L->bv);
		LGET("attention.output.dense.weight", d, d, &L->wo);
		LGET("attention.output.dense.bias", d, 0, &L->bo);
		LGET("attention.output.LayerNorm.weight", d, 0, &L->ln1_w);
		LGET("attention.output.LayerNorm.bias", d, 0, &L->ln1_b);
		LGET("intermediate.dense.weight", h, d, &L->w1);
		LGET("intermediate.dense.bias", h, 0, &L->b1);
		LGET("output.dense.weight", d, h, &L->w2);
		LGET("output.dense.bias", d, 0, &L->b2);
		LGET("output.LayerNorm.weight", d, 0, &L->ln2_w);
		LGET("output.LayerNorm.bias", d, 0, &L->ln2_b);
#undef LGET
	}
	/* the pooler is optional (sentence-transformers exports drop it) */
	if (ms_st_find(&m->st, "bert.pooler.dense.weight") || ms_st_find(&m->st, "pooler.dense.weight")) {
		GET("pooler.dense.weight", d, d, &w->pool_w);
		GET("pooler.dense.bias", d, 0, &w->pool_b);
	}
#undef GET
	if (c->has_classifier) {
		if (!w->pool_w) return ms_errf(err, errlen, MS_EFORMAT, "%s: classifier without a pooler", m->dir);
		if ((rc = ms_w_get(m, "classifier.weight", c->n_labels, d, &w->cls_w, err, errlen)) != 0) return rc;
		if ((rc = ms_w_get(m, "classifier.bias", c->n_labels, 0, &w->cls_b, err, errlen)) != 0) return rc;
	}
	return 0;
}

static int load_distilbert(ms_model *m, char *err, size_t errlen) {
	const ms_config *c = &m->cfg;
	ms_enc_weights *w = &m->enc;
	int d = c->dim, h = c->hidden_dim, rc;
	char n[192];
#define GET(name, d0, d1, dst) if ((rc = getp(m, "distilbert.", name, d0, d1, dst, err, errlen)) != 0) return rc
	GET("embeddings.word_embeddings.weight", c->vocab_size, d, &w->word);
	GET("embeddings.position_embeddings.weight", c->max_pos, d, &w->pos);
	GET("embeddings.LayerNorm.weight", d, 0, &w->emb_ln_w);
	GET("embeddings.LayerNorm.bias", d, 0, &w->emb_ln_b);
	for (int l = 0; l < c->n_layers; l++) {
		ms_enc_layer *L = &w->layers[l];
#define LGET(suffix, d0, d1, dst) snprintf(n, sizeof n, "transformer.layer.%d.%s", l, suffix); GET(n, d0, d1, dst)
		LGET("attention.q_lin.weight", d, d, &L->wq);
		LGET("attention.q_lin.bias", d, 0, &L->bq);
		LGET("attention.k_lin.weight", d, d, &L->wk);
		LGET("attention.k_lin.bias", d, 0, &L->bk);
		LGET("attention.v_lin.weight", d, d, &L->wv);
		LGET("attention.v_lin.bias", d, 0, &L->bv);
		LGET("attention.out_lin.weight", d, d, &L->wo);
		LGET("attention.out_lin.bias", d, 0, &L->bo);
		LGET("sa_layer_norm.weight", d, 0, &L->ln1_w);
		LGET("sa_layer_norm.bias", d, 0, &L->ln1_b);
		LGET("ffn.lin1.weight", h, d, &L->w1);
		LGET("ffn.lin1.bias", h, 0, &L->b1);
		LGET("ffn.lin2.weight", d, h, &L->w2);
		LGET("ffn.lin2.bias", d, 0, &L->b2);
		LGET("output_layer_norm.weight", d, 0, &L->ln2_w);
		LGET("output_layer_norm.bias", d, 0, &L->ln2_b);
#undef LGET
	}
#undef GET
	if (c->has_classifier) {
		if ((rc = ms_w_get(m, "pre_classifier.weight", d, d, &w->pre_w, err, errlen)) != 0) return rc;
		if ((rc = ms_w_get(m, "pre_classifier.bias", d, 0, &w->pre_b, err, errlen)) != 0) return rc;
		if ((rc = ms_w_get(m, "classifier.weight", c->n_labels, d, &w->cls_w, err, errlen)) != 0) return rc;
		if ((rc = ms_w_get(m, "classifier.bias", c->n_labels, 0, &w->cls_b, err, errlen)) != 0) return rc;
	}
	return 0;
}

int ms_enc_load(ms_model *m, char *err, size_t errlen) {
	if (m->cfg.has_classifier && m->cfg.n_labels <= 0)
		return ms_errf(err, errlen, MS_EFORMAT, "%s/config.json: a classifier needs id2label or num_labels", m->dir);
	m->enc.layers = calloc((size_t)m->cfg.n_layers, sizeof *m->enc.layers);
	if (!m->enc.layers) return MS_ENOMEM;
	return m->cfg.arch == MS_ARCH_DISTILBERT ? load_distilbert(m, err, errlen) : load_bert(m, err, errlen);
}

/* Full (unmasked) self-attention of one head for every query position. */
static void attention(const ms_config *c, const float *q, const float *k, const float *v, float *out, float *att,
		      int n) {
	int d = c->dim, hd = c->head_dim;
	float scale = 1.0f / sqrtf((float)hd);
	for (int h = 0; h < c->n_heads; h++)
		for (int i = 0; i < n; i++) {
			const float *qi = q + (size_t)i * d + h * hd;
			for (int j = 0; j < n; j++) att[j] = ms_dot(qi, k + (size_t)j * d + h * hd, hd) * scale;
			ms_softmax(att, n);
			float *o = out + (size_t)i * d + h * hd;
			memset(o, 0, (size_t)hd * sizeof *o);
			for (int j = 0; j < n; j++)
				for (int e = 0; e < hd; e++) o[e] += att[j] * v[(size_t)j * d + h * hd + e];
		}
}

int ms_enc_forward(ms_model *m, const int32_t *ids, const int32_t *type_ids, int n, float *hidden, float *pooled,
		   float *logits, const atomic_int *cancel) {
	const ms_config *c = &m->cfg;
	const ms_enc_weights *w = &m->enc;
	int d = c->dim, h = c->hidden_dim, rc = 0;
	if (n <= 0 || n > c->max_pos) return MS_ERANGE;
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= c->vocab_size || (type_ids && (type_ids[i] < 0 || type_ids[i] >= c->type_vocab_size)))
			return MS_ERANGE;
	if ((logits && !w->cls_w) || (pooled && !w->pool_w)) return MS_EUNSUPPORTED;
	/* scratch: q,k,v,a,t [n][d], ff [n][h], att [n] */
	float *buf = malloc(((size_t)5 * n * d + (size_t)n * h + (size_t)n + 2 * (size_t)d) * sizeof *buf);
	if (!buf) return MS_ENOMEM;
	float *q = buf, *k = q + (size_t)n * d, *v = k + (size_t)n * d, *a = v + (size_t)n * d, *t = a + (size_t)n * d;
	float *ff = t + (size_t)n * d, *att = ff + (size_t)n * h, *p1 = att + n, *p2 = p1 + d;
	float *x = hidden; /* [n][d], the residual stream */
	for (int i = 0; i < n; i++) {
		float *xi = x + (size_t)i * d;
		for (int e = 0; e < d; e++) {
			float s = w->word[(size_t)ids[i] * d + e] + w->pos[(size_t)i * d + e];
			if (w->type) s += w->type[(size_t)(type_ids ? type_ids[i] : 0) * d + e];
			xi[e] = s;
		}
		ms_layernorm(xi, xi, w->emb_ln_w, w->emb_ln_b, d, c->norm_eps);
	}
	for (int l = 0; l < c->n_layers; l++) {
		if (cancel && atomic_load(cancel)) { rc = MS_ECANCELED; goto out; }
		const ms_enc_layer *L = &w->layers[l];
		ms_matmul(&m->pool, q, x, L->wq, L->bq, n, d, d);
		ms_matmul(&m->pool, k, x, L->wk, L->bk, n, d, d);
		ms_matmul(&m->pool, v, x, L->wv, L->bv, n, d, d);
		attention(c, q, k, v, a, att, n);
		ms_matmul(&m->pool, t, a, L->wo, L->bo, n, d, d);
		for (size_t e = 0; e < (size_t)n * d; e++) t[e] += x[e];
		for (int i = 0; i < n; i++) ms_layernorm(x + (size_t)i * d, t + (size_t)i * d, L->ln1_w, L->ln1_b, d, c->norm_eps);
		ms_matmul(&m->pool, ff, x, L->w1, L->b1, n, h, d);
		for (size_t e = 0; e < (size_t)n * h; e++)
			ff[e] = c->act == MS_ACT_RELU ? (ff[e] > 0 ? ff[e] : 0)
				: c->act == MS_ACT_GELU_NEW ? ms_gelu_new(ff[e]) : ms_gelu(ff[e]);
		ms_matmul(&m->pool, t, ff, L->w2, L->b2, n, d, h);
		for (size_t e = 0; e < (size_t)n * d; e++) t[e] += x[e];
		for (int i = 0; i < n; i++) ms_layernorm(x + (size_t)i * d, t + (size_t)i * d, L->ln2_w, L->ln2_b, d, c->norm_eps);
	}
	/* heads read h[CLS] = x[0] */
	if (w->pool_w && (pooled || logits)) {
		ms_matmul(NULL, p1, x, w->pool_w, w->pool_b, 1, d, d);
		for (int e = 0; e < d; e++) p1[e] = tanhf(p1[e]);
		if (pooled) memcpy(pooled, p1, (size_t)d * sizeof *p1);
	}
	if (logits) {
		if (w->pre_w) { /* distilbert */
			ms_matmul(NULL, p1, x, w->pre_w, w->pre_b, 1, d, d);
			for (int e = 0; e < d; e++) p1[e] = p1[e] > 0 ? p1[e] : 0;
		}
		ms_matmul(NULL, logits, p1, w->cls_w, w->cls_b, 1, c->n_labels, d);
	}
	(void)p2;
out:
	free(buf);
	return rc;
}
