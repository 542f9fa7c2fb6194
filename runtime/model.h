/* runtime/model.h: the runtime's public API. Load a Hugging Face checkpoint directory
 * (config.json + *.safetensors [+ tokenizer.json]) and run it: generate, classify, embed,
 * raw logits. No knowledge of HTTP or Lua.
 *
 *   ms_model *m;
 *   char err[512];
 *   if (ms_model_load(dir, NULL, &m, err, sizeof err) != 0) fprintf(stderr, "%s\n", err);
 *   ms_gen_opts o; ms_gen_opts_init(&o); o.max_new_tokens = 64;
 *   ms_model_generate(m, "Once upon a time", &o, on_piece, ud, &stats, err, sizeof err);
 *   ms_model_free(m);
 *
 * A model is read-only after load; sequences (ms_seq: a KV cache each) are per generation. Calls on one
 * model must not overlap (one thread pool per model).
 */
#ifndef MS_MODEL_H
#define MS_MODEL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ms.h"
#include "runtime/config.h"

typedef struct ms_model ms_model;
typedef struct ms_seq ms_seq;
struct ms_tokenizer;

typedef struct ms_model_opts {
	int n_threads; /* 0: every available core */
	int q8;        /* causal LMs: 8-bit weights with per-block scales (faster, approximate) */
} ms_model_opts;

/* dir: a checkpoint directory. Detects the family from config.json (architectures,
 * model_type); loads tokenizer.json when present. */
int ms_model_load(const char *dir, const ms_model_opts *opts, ms_model **out, char *err, size_t errlen);
void ms_model_free(ms_model *m);
const ms_config *ms_model_config(const ms_model *m);
/* The threads its products run on (the pool's size, opts->n_threads resolved). */
int ms_model_threads(const ms_model *m);
/* NULL when the checkpoint has no tokenizer (or the runtime was built without one). */
struct ms_tokenizer *ms_model_tokenizer(const ms_model *m);

/* ---- causal LMs (llama, gpt2) ---- */

/* A sequence with its KV cache (max_seq 0: the model's max_position_embeddings). */
int ms_seq_new(ms_model *m, int max_seq, ms_seq **out);
void ms_seq_free(ms_seq *s);
void ms_seq_reset(ms_seq *s);
int ms_seq_pos(const ms_seq *s);
/* Feeds n ids at the current position. logits_last (vocab floats, may be NULL) gets the
 * last position's logits; logits_all (n*vocab, may be NULL) every position's.
 * cancel: checked before each layer; MS_ECANCELED when set. */
int ms_seq_forward(ms_seq *s, const int32_t *ids, size_t n, float *logits_last, float *logits_all,
		       const atomic_int *cancel);

/* One decode step for n distinct sequences of one model at once (batched generation: the
 * weights are read once for all rows): ids[i] is fed to sess[i] at its position, and
 * logits[i*vocab ...] receives its next-token logits. */
int ms_seq_step_batch(ms_seq *const *sess, const int32_t *ids, size_t n, float *logits,
			  const atomic_int *cancel);

/* Logits at every position of a fresh sequence: out[n][vocab]. */
int ms_model_logits(ms_model *m, const int32_t *ids, size_t n, float *out);

typedef struct ms_gen_opts {
	int max_new_tokens;       /* default 256; < 0: up to max_length */
	int max_length;           /* prompt + new tokens, when max_new_tokens < 0 (transformers' max_length) */
	float temperature;        /* 0: greedy. default 1 */
	int top_k;                /* 0: off */
	float top_p;              /* 1: off */
	float repetition_penalty; /* 1: off (transformers' semantics) */
	uint64_t seed;            /* 0: from the clock */
	int add_bos;              /* text prompts: apply the tokenizer's template (BOS). default 1 */
	int stop_on_eos;          /* default 1 */
	const char *const *stop;  /* NULL-terminated stop strings (text generation only) */
	const atomic_int *cancel;
} ms_gen_opts;
void ms_gen_opts_init(ms_gen_opts *o);
/* Applies the checkpoint's generation_config.json defaults to o, as transformers'
 * generate() applies them when the caller leaves an option unset: do_sample false makes
 * temperature 0 (greedy), temperature / top_k / top_p / repetition_penalty /
 * max_new_tokens are taken as given, and max_length (prompt + new tokens) is used when the
 * file has no max_new_tokens. Fields the file leaves out keep o's values. The order for a
 * caller is: ms_gen_opts_init, its own defaults, this, then the options its user gave. */
void ms_gen_opts_apply_model(ms_gen_opts *o, const ms_model *m);
/* The generation of n_prompt ids with o fits max_length (transformers refuses a prompt
 * that already fills it); MS_ERANGE with a message otherwise. */
int ms_gen_check_length(const ms_gen_opts *o, size_t n_prompt, char *err, size_t errlen);

typedef struct ms_gen_stats {
	size_t prompt_tokens, gen_tokens;
	double prompt_ms, gen_ms;
	int stopped; /* 0 max tokens, 1 eos, 2 stop string, 3 cancelled, 4 context full */
} ms_gen_stats;

/* Called for each generated id (ids API) or each piece of final text (text API: whole UTF-8
 * characters only). Return non-zero to stop. */
typedef int (*ms_token_cb)(void *ud, int32_t id);
typedef int (*ms_text_cb)(void *ud, const char *text, size_t len);

/* Generation stops on any end-of-sequence id: generation_config.json's eos_token_id
 * (an integer or a list) when given, else config.json's, plus the tokenizer's eos_token. */

/* Generation from prompt ids. out_ids (optional) gets the generated ids, malloc'd. */
int ms_model_generate_ids(ms_model *m, const int32_t *prompt, size_t n_prompt, const ms_gen_opts *o,
			  ms_token_cb cb, void *ud, int32_t **out_ids, size_t *n_out, ms_gen_stats *stats);
/* Generation from text through the model's tokenizer; streams text pieces to cb. */
int ms_model_generate(ms_model *m, const char *prompt, const ms_gen_opts *o, ms_text_cb cb, void *ud,
		      ms_gen_stats *stats, char *err, size_t errlen);

/* Generation step by step, for serving many sequences at once (the model worker): create
 * each with ms_gen_new (text mode when xcb is given: pieces never split a UTF-8 character,
 * stop strings never partly streamed), run its prompt with ms_gen_prefill, then advance
 * every unfinished one together with ms_gen_step_batch (one batched forward pass) until
 * ms_gen_done. o->stop must stay valid for the generation's life. A cancelled step
 * (MS_ECANCELED) leaves every generation as it was: it can be stepped again. */
typedef struct ms_gen ms_gen;
int ms_gen_new(ms_model *m, const int32_t *prompt, size_t n_prompt, const ms_gen_opts *o, ms_token_cb tcb,
	       ms_text_cb xcb, void *ud, ms_gen **out);
int ms_gen_prefill(ms_gen *g);
int ms_gen_step_batch(ms_gen *const *gens, size_t n, const atomic_int *cancel);
int ms_gen_done(const ms_gen *g);
int ms_gen_error(const ms_gen *g);
void ms_gen_cancel(ms_gen *g);
const ms_gen_stats *ms_gen_stats_of(const ms_gen *g);
const int32_t *ms_gen_ids(const ms_gen *g, size_t *n);
void ms_gen_free(ms_gen *g);
/* Prompt text to ids through the model's tokenizer (add_special: BOS etc.); an empty
 * result becomes [BOS]. */
int ms_model_encode_prompt(ms_model *m, const char *prompt, int add_special, int32_t **ids, size_t *n, char *err,
			   size_t errlen);

/* ---- encoders (bert, distilbert) ---- */

/* hidden[n][dim] last hidden state, pooled[dim] (bert pooler; may be NULL), logits[n_labels]
 * (classifier models; may be NULL). type_ids may be NULL (all 0). */
int ms_model_encode(ms_model *m, const int32_t *ids, const int32_t *type_ids, size_t n, float *hidden,
		    float *pooled, float *logits);

typedef struct ms_label_score {
	const char *label; /* owned by the model's config */
	float score;
} ms_label_score;
/* An encoder's input cut to the model's positions as transformers' pipelines cut it (the
 * last id, [SEP], kept at the end); returns the new length. */
size_t ms_model_fit_ids(const ms_model *m, int32_t *ids, size_t n);
/* Softmax over the classifier's logits, sorted by score, highest first; *out malloc'd
 * (n_labels entries). */
int ms_model_classify_ids(ms_model *m, const int32_t *ids, size_t n, ms_label_score **out, size_t *n_out);
int ms_model_classify(ms_model *m, const char *text, ms_label_score **out, size_t *n_out, char *err,
		      size_t errlen);
/* Sentence embedding: mean over all positions of the last hidden state, L2-normalised
 * (sentence-transformers). vec: dim floats. */
int ms_model_embed_ids(ms_model *m, const int32_t *ids, size_t n, float *vec);
int ms_model_embed(ms_model *m, const char *text, float **vec, size_t *dim, char *err, size_t errlen);

#endif
