/* runtime/config.h: a checkpoint's config.json, normalised across model families.
 *
 * Each family spells its fields differently (llama: hidden_size, num_attention_heads;
 * gpt2: n_embd, n_head; distilbert: dim, n_heads); ms_config_load maps them all into one
 * struct and checks that the shapes are consistent before any weight is read.
 */
#ifndef MS_CONFIG_H
#define MS_CONFIG_H

#include <stddef.h>

#include "common/ms.h"

typedef enum {
	MS_ARCH_UNKNOWN = 0,
	MS_ARCH_LLAMA,      /* LlamaForCausalLM */
	MS_ARCH_GPT2,       /* GPT2LMHeadModel */
	MS_ARCH_BERT,       /* BertModel (embeddings / hidden states) */
	MS_ARCH_BERT_CLS,   /* BertForSequenceClassification */
	MS_ARCH_DISTILBERT, /* DistilBertModel / DistilBertForSequenceClassification */
} ms_arch;

typedef enum { MS_ACT_SILU, MS_ACT_GELU, MS_ACT_GELU_NEW, MS_ACT_RELU } ms_act;

/* At most this many end-of-sequence ids per file (Llama 3.x lists 3). */
#define MS_MAX_EOS 32

/* generation_config.json's sampling defaults; `set` says which fields the file gives (a
 * field it leaves out keeps the caller's default). */
enum {
	MS_GD_DO_SAMPLE = 1 << 0,
	MS_GD_TEMPERATURE = 1 << 1,
	MS_GD_TOP_K = 1 << 2,
	MS_GD_TOP_P = 1 << 3,
	MS_GD_REPETITION_PENALTY = 1 << 4,
	MS_GD_MAX_NEW_TOKENS = 1 << 5,
	MS_GD_MAX_LENGTH = 1 << 6,
};
/* The one table of sampling options' names and ranges, checked by generation_config.json's
 * reader and by the model worker for its callers' options. */
typedef struct ms_gen_option {
	const char *key;
	double lo, hi;
	int integer; /* a whole number */
} ms_gen_option;
/* NULL when key is not a sampling option (temperature, top_p, top_k, repetition_penalty,
 * max_new_tokens, max_length, seed). */
const ms_gen_option *ms_gen_option_find(const char *key);
/* 0 when d (integral: the JSON value was an integer) is a value of o; else MS_ERANGE with
 * "<what>: <key> must be ... in [lo, hi]" in err. */
int ms_gen_option_check(const ms_gen_option *o, double d, int integral, const char *what, char *err, size_t errlen);

typedef struct ms_gen_defaults {
	unsigned set;
	int do_sample, top_k, max_new_tokens, max_length;
	float temperature, top_p, repetition_penalty;
} ms_gen_defaults;

typedef struct ms_config {
	ms_arch arch;
	char model_type[32];
	int has_classifier; /* distilbert: ...ForSequenceClassification */
	int dim;            /* hidden_size / n_embd / dim */
	int hidden_dim;     /* intermediate_size / n_inner (4*dim) / hidden_dim */
	int n_layers;
	int n_heads;
	int n_kv_heads; /* num_key_value_heads, = n_heads without GQA */
	int head_dim;
	int vocab_size;
	int max_pos;       /* max_position_embeddings / n_positions */
	int type_vocab_size;
	float norm_eps;    /* rms_norm_eps / layer_norm_eps / layer_norm_epsilon */
	float rope_theta;
	int tie_word_embeddings;
	ms_act act;
	int bos_id, eos_id, pad_id; /* -1 when absent; eos_id: eos_ids[0] */
	/* eos_token_id as an integer or a list, from generation_config.json when it has one
	 * (transformers' GenerationConfig), else from config.json */
	int eos_ids[MS_MAX_EOS], n_eos;
	ms_gen_defaults gen; /* generation_config.json */
	int n_labels;
	char **id2label; /* n_labels strings, "LABEL_i" when config.json has none */
} ms_config;

/* Reads dir/config.json and, when present, dir/generation_config.json. */
int ms_config_load(ms_config *c, const char *dir, char *err, size_t errlen);
void ms_config_free(ms_config *c);
const char *ms_arch_name(ms_arch a);

#endif
