/* runtime/model_internal.h: the model families' weights and forward passes, shared by
 * runtime/model.c (the public API) and runtime/{decoder,encoder}.c. Not a public header.
 *
 * As in llama2.c: a Config (ms_config), Weights (read-only after load, F32, either views
 * into the safetensors mapping or upcast copies), and RunState (per-sequence scratch and
 * KV cache, ms_seq). Every weight matrix is stored [out][in], row-major, so one
 * kernel (ms_matmul) serves every family; GPT-2's Conv1D weights ([in][out] on disk) are
 * transposed at load.
 */
#ifndef MS_MODEL_INTERNAL_H
#define MS_MODEL_INTERNAL_H

#include <stdatomic.h>

#include "runtime/config.h"
#include "runtime/kernels.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"

typedef struct {
	/* llama: attention_norm (RMSNorm, no bias); gpt2: ln_1 */
	const float *ln1_w, *ln1_b;
	const float *wq, *wk, *wv, *wo; /* [dim][dim], [kv_dim][dim] x2, [dim][dim] */
	const float *bq, *bk, *bv, *bo; /* gpt2 only */
	const float *ln2_w, *ln2_b;     /* llama: ffn_norm; gpt2: ln_2 */
	const float *w1, *w2, *w3;      /* llama: gate [hidden][dim], down [dim][hidden], up [hidden][dim] */
	const float *b1, *b2;           /* gpt2: c_fc [hidden][dim] + bias, c_proj [dim][hidden] + bias */
	ms_q8 wq8, wk8, wv8, wo8, w18, w28, w38; /* 8-bit copies (ms_model_opts.q8), used when .q is set */
} ms_dec_layer;

typedef struct {
	const float *tok_emb; /* [vocab][dim] */
	const float *pos_emb; /* gpt2: [max_pos][dim] */
	ms_dec_layer *layers;
	const float *lnf_w, *lnf_b; /* final norm */
	const float *head;          /* [vocab][dim]; = tok_emb when tied */
	ms_q8 head8;
} ms_dec_weights;

typedef struct {
	const float *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo; /* [dim][dim] + [dim] */
	const float *ln1_w, *ln1_b;                         /* after attention (post-LN) */
	const float *w1, *b1, *w2, *b2;                     /* [hidden][dim], [dim][hidden] */
	const float *ln2_w, *ln2_b;                         /* after the FFN */
} ms_enc_layer;

typedef struct {
	const float *word, *pos, *type; /* [vocab][dim], [max_pos][dim], [types][dim] (type NULL: distilbert) */
	const float *emb_ln_w, *emb_ln_b;
	ms_enc_layer *layers;
	const float *pool_w, *pool_b; /* bert pooler [dim][dim] (NULL when absent) */
	const float *pre_w, *pre_b;   /* distilbert pre_classifier [dim][dim] */
	const float *cls_w, *cls_b;   /* classifier [n_labels][dim] (NULL when absent) */
} ms_enc_weights;

struct ms_model {
	ms_config cfg;
	ms_st st;
	char *dir;
	ms_dec_weights dec;
	ms_enc_weights enc;
	ms_pool pool;
	struct ms_tokenizer *tok; /* NULL when the checkpoint has no tokenizer */
	void *arena;              /* weights copied out of the mapping (see ms_w_get) */
	size_t arena_size, arena_used;
	void *q8_arena;           /* 8-bit weights when opts.q8 */
	size_t q8_size;
	int q8;
	struct ms_dec_ws *ws;     /* decoders: forward-pass scratch */
};

/* Per-sequence state of a decoder: its KV cache. */
struct ms_seq {
	struct ms_model *m;
	int max_seq, pos;
	float *key_cache, *value_cache; /* [layers][kv_heads][max_seq][head_dim], one mapping */
	size_t kv_size;                 /* bytes mapped at key_cache */
};

/* Scratch for one forward pass of up to MS_CHUNK rows (tokens of one or several
 * sessions), owned by the model: calls on one model do not overlap. */
#define MS_CHUNK 32
typedef struct ms_dec_ws {
	float *x, *xb, *xb2, *q, *hb, *hb2; /* [MS_CHUNK][dim or hidden] */
	float *att;                          /* [MS_CHUNK][heads][att_len] */
	int att_len;                         /* grown to the longest context seen */
	float *logits;                       /* [MS_CHUNK][vocab] */
	float *rope;                         /* [MS_CHUNK][head_dim]: each row's RoPE cos, sin */
	struct ms_seq *sess[MS_CHUNK];   /* the session and position of each row */
	int pos[MS_CHUNK];
} ms_dec_ws;

/* Weight loading helpers (model.c): a tensor by name with its expected shape, as F32. */
int ms_w_get(struct ms_model *m, const char *name, int64_t d0, int64_t d1, const float **out, char *err,
	     size_t errlen);
/* GPT-2 Conv1D: stored [d1][d0], returned transposed as [d0][d1]. */
int ms_w_get_t(struct ms_model *m, const char *name, int64_t d0, int64_t d1, const float **out, char *err,
	       size_t errlen);

int ms_dec_load(struct ms_model *m, char *err, size_t errlen);
/* Makes 8-bit copies of the decoder's matrices (those with k % 32 == 0) and releases the
 * F32 pages they no longer need. */
int ms_dec_quantize(struct ms_model *m);
/* One forward pass over n <= MS_CHUNK rows: row i feeds ids[i] to sess[i] at that session's
 * next position (rows of one session in order). Logits go to m->ws->logits, one row of
 * vocab floats per output row: every row (all=1) or, for each session, its last row in the
 * batch (all=0), in row order. Advances each session's pos. */
int ms_dec_forward(struct ms_model *m, struct ms_seq *const *sess, const int32_t *ids, int n, int all,
		   const atomic_int *cancel);
int ms_dec_ws_alloc(struct ms_model *m);
void ms_dec_ws_free(struct ms_model *m);

int ms_enc_load(struct ms_model *m, char *err, size_t errlen);
/* hidden: [n][dim] last hidden state; pooled (optional): [dim] pooler output (bert);
 * logits (optional): [n_labels]. */
int ms_enc_forward(struct ms_model *m, const int32_t *ids, const int32_t *type_ids, int n, float *hidden,
		   float *pooled, float *logits, const atomic_int *cancel);

#endif
