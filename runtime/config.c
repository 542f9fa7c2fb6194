/* runtime/config.c: see config.h. */
#include "runtime/config.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *ms_arch_name(ms_arch a) {
	switch (a) {
	case MS_ARCH_LLAMA: return "LlamaForCausalLM";
	case MS_ARCH_GPT2: return "GPT2LMHeadModel";
	case MS_ARCH_BERT: return "BertModel";
	case MS_ARCH_BERT_CLS: return "BertForSequenceClassification";
	case MS_ARCH_DISTILBERT: return "DistilBertModel";
	default: return "unknown";
	}
}

/* First of several spellings present as an integer, else def. Clamped to int: the fields
 * are stored as int, and a value that wrapped (2^32 + 64 -> 64) would pass the range checks;
 * INT_MIN / INT_MAX fail them instead. */
static long get_int(json_t *o, const char *const *names, long def) {
	for (; *names; names++) {
		json_t *v = json_object_get(o, *names);
		if (!json_is_integer(v)) continue;
		json_int_t i = json_integer_value(v);
		return i < INT_MIN ? INT_MIN : i > INT_MAX ? INT_MAX : (long)i;
	}
	return def;
}
static int bad_token_id(int id) { return id == INT_MIN || id == INT_MAX; }
static double get_num(json_t *o, const char *const *names, double def) {
	for (; *names; names++) {
		json_t *v = json_object_get(o, *names);
		if (json_is_number(v)) return json_number_value(v);
	}
	return def;
}
#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})

static ms_arch detect(json_t *root, int *has_cls, char *mt, size_t mtlen) {
	json_t *archs = json_object_get(root, "architectures");
	const char *a0 = json_is_array(archs) ? json_string_value(json_array_get(archs, 0)) : NULL;
	const char *m = json_string_value(json_object_get(root, "model_type"));
	snprintf(mt, mtlen, "%s", m ? m : "");
	*has_cls = 0;
	if (a0) {
		if (strcmp(a0, "LlamaForCausalLM") == 0) return MS_ARCH_LLAMA;
		if (strcmp(a0, "GPT2LMHeadModel") == 0 || strcmp(a0, "GPT2Model") == 0) return MS_ARCH_GPT2;
		if (strcmp(a0, "BertForSequenceClassification") == 0) return *has_cls = 1, MS_ARCH_BERT_CLS;
		if (strncmp(a0, "Bert", 4) == 0) return MS_ARCH_BERT;
		if (strcmp(a0, "DistilBertForSequenceClassification") == 0) return *has_cls = 1, MS_ARCH_DISTILBERT;
		if (strncmp(a0, "DistilBert", 10) == 0) return MS_ARCH_DISTILBERT;
	}
	if (m) {
		if (strcmp(m, "llama") == 0) return MS_ARCH_LLAMA;
		if (strcmp(m, "gpt2") == 0) return MS_ARCH_GPT2;
		if (strcmp(m, "bert") == 0) return MS_ARCH_BERT;
		if (strcmp(m, "distilbert") == 0) return MS_ARCH_DISTILBERT;
	}
	return MS_ARCH_UNKNOWN;
}

static int parse_act(const char *s, ms_act *a) {
	if (!s) return -1;
	if (strcmp(s, "silu") == 0 || strcmp(s, "swish") == 0) *a = MS_ACT_SILU;
	else if (strcmp(s, "gelu") == 0) *a = MS_ACT_GELU;
	else if (strcmp(s, "gelu_new") == 0 || strcmp(s, "gelu_pytorch_tanh") == 0) *a = MS_ACT_GELU_NEW;
	else if (strcmp(s, "relu") == 0) *a = MS_ACT_RELU;
	else return -1;
	return 0;
}

static int load_labels(ms_config *c, json_t *root, const char *path, char *err, size_t errlen) {
	json_t *m = json_object_get(root, "id2label");
	long n = get_int(root, NAMES("num_labels"), 0);
	if (json_is_object(m) && (long)json_object_size(m) > n) n = (long)json_object_size(m);
	if (n <= 0) return 0;
	if (n > 100000) return ms_errf(err, errlen, MS_ERANGE, "%s: %ld labels", path, n);
	c->id2label = calloc((size_t)n, sizeof *c->id2label);
	if (!c->id2label) return MS_ENOMEM;
	c->n_labels = (int)n;
	const char *k;
	json_t *v;
	if (json_is_object(m)) json_object_foreach(m, k, v) {
		char *end;
		long i = strtol(k, &end, 10);
		if (*end || i < 0 || i >= n || !json_is_string(v))
			return ms_errf(err, errlen, MS_EFORMAT, "%s: id2label key '%s' is not a label index", path, k);
		free(c->id2label[i]);
		if (!(c->id2label[i] = strdup(json_string_value(v)))) return MS_ENOMEM;
	}
	for (long i = 0; i < n; i++)
		if (!c->id2label[i]) {
			char b[32];
			snprintf(b, sizeof b, "LABEL_%ld", i);
			if (!(c->id2label[i] = strdup(b))) return MS_ENOMEM;
		}
	return 0;
}

/* eos_token_id: an integer or a list of integers (Llama 3.x: [128001, 128008, 128009]);
 * absent or null leaves c's list as it is. Every id is checked: a stray id would make
 * generation stop on a token the model never emits, or never stop. */
static int parse_eos(ms_config *c, json_t *v, const char *path, char *err, size_t errlen) {
	if (!v || json_is_null(v)) return 0;
	size_t n = json_is_array(v) ? json_array_size(v) : 1;
	if (!json_is_array(v) && !json_is_integer(v))
		return ms_errf(err, errlen, MS_EFORMAT, "%s: eos_token_id must be an integer or a list of integers", path);
	if (n == 0 || n > MS_MAX_EOS)
		return ms_errf(err, errlen, MS_ERANGE, "%s: eos_token_id lists %zu ids (1 to %d allowed)", path, n,
			       MS_MAX_EOS);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
		if (!json_is_integer(e))
			return ms_errf(err, errlen, MS_EFORMAT, "%s: eos_token_id[%zu] is not an integer", path, i);
		json_int_t id = json_integer_value(e);
		if (id < 0 || id >= c->vocab_size)
			return ms_errf(err, errlen, MS_ERANGE, "%s: eos_token_id %lld is not a token id (vocab_size %d)",
				       path, (long long)id, c->vocab_size);
		c->eos_ids[i] = (int)id;
	}
	c->n_eos = (int)n;
	c->eos_id = c->eos_ids[0];
	return 0;
}

static int parse(ms_config *c, json_t *root, const char *path, char *err, size_t errlen) {
	c->arch = detect(root, &c->has_classifier, c->model_type, sizeof c->model_type);
	if (c->arch == MS_ARCH_UNKNOWN)
		return ms_errf(err, errlen, MS_EUNSUPPORTED,
			       "%s: unsupported architecture (supported: llama, gpt2, bert, distilbert)", path);
	c->dim = (int)get_int(root, NAMES("hidden_size", "n_embd", "dim"), 0);
	c->n_layers = (int)get_int(root, NAMES("num_hidden_layers", "n_layer", "n_layers"), 0);
	c->n_heads = (int)get_int(root, NAMES("num_attention_heads", "n_head", "n_heads"), 0);
	c->n_kv_heads = (int)get_int(root, NAMES("num_key_value_heads"), c->n_heads);
	c->vocab_size = (int)get_int(root, NAMES("vocab_size"), 0);
	c->max_pos = (int)get_int(root, NAMES("max_position_embeddings", "n_positions", "n_ctx"), 2048);
	c->type_vocab_size = (int)get_int(root, NAMES("type_vocab_size"), 2);
	long hd = get_int(root, NAMES("intermediate_size", "n_inner", "hidden_dim"), -1);
	c->hidden_dim = (int)(hd > 0 ? hd : 4L * c->dim); /* gpt2's n_inner: null means 4*n_embd */
	if (c->arch == MS_ARCH_GPT2) { /* gpt2 configs may carry a stray intermediate_size */
		long ni = get_int(root, NAMES("n_inner"), -1);
		c->hidden_dim = (int)(ni > 0 ? ni : 4L * c->dim);
	}
	c->norm_eps = (float)get_num(root, NAMES("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"),
				     c->arch == MS_ARCH_LLAMA ? 1e-6 : 1e-12);
	if (c->arch == MS_ARCH_GPT2 && !json_object_get(root, "layer_norm_epsilon")) c->norm_eps = 1e-5f;
	c->rope_theta = (float)get_num(root, NAMES("rope_theta"), 10000.0);
	json_t *tie = json_object_get(root, "tie_word_embeddings");
	c->tie_word_embeddings = json_is_boolean(tie) ? json_is_true(tie) : 1; /* transformers' default */
	c->bos_id = (int)get_int(root, NAMES("bos_token_id"), -1);
	c->eos_id = -1;
	c->pad_id = (int)get_int(root, NAMES("pad_token_id"), -1);

	const char *act = json_string_value(json_object_get(root, "hidden_act"));
	if (!act) act = json_string_value(json_object_get(root, "activation_function"));
	if (!act) act = json_string_value(json_object_get(root, "activation"));
	if (c->arch == MS_ARCH_GPT2) act = json_string_value(json_object_get(root, "activation_function"));
	if (!act) act = c->arch == MS_ARCH_LLAMA ? "silu" : c->arch == MS_ARCH_GPT2 ? "gelu_new" : "gelu";
	if (parse_act(act, &c->act) != 0)
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: unsupported activation '%s'", path, act);

	if (json_is_true(json_object_get(root, "attention_bias")) || json_is_true(json_object_get(root, "mlp_bias")))
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: attention_bias / mlp_bias are not supported", path);
	json_t *hdv = json_object_get(root, "head_dim");
	if (c->arch == MS_ARCH_LLAMA && json_is_integer(hdv) && c->n_heads > 0 &&
	    json_integer_value(hdv) * c->n_heads != c->dim)
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: head_dim %lld != hidden_size / num_attention_heads", path,
			       (long long)json_integer_value(hdv));
	if (json_is_object(json_object_get(root, "rope_scaling")))
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: rope_scaling is not supported", path);
	if (c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->vocab_size <= 0 ||
	    c->hidden_dim <= 0 || c->max_pos <= 0)
		return ms_errf(err, errlen, MS_EFORMAT, "%s: missing or non-positive sizes (hidden, layers, heads, vocab)", path);
	if (c->dim > (1 << 16) || c->n_heads > (1 << 16) || c->n_kv_heads > (1 << 16) || c->n_layers > 1024 ||
	    c->vocab_size > (1 << 22) || c->hidden_dim > (1 << 18) ||
	    c->max_pos > (1 << 20) || c->type_vocab_size < 0 || c->type_vocab_size > 1024)
		return ms_errf(err, errlen, MS_ERANGE, "%s: sizes out of the supported range", path);
	if (c->dim % c->n_heads != 0 || c->n_heads % c->n_kv_heads != 0)
		return ms_errf(err, errlen, MS_EFORMAT,
			       "%s: hidden size %d not divisible by %d heads, or heads not a multiple of %d KV heads",
			       path, c->dim, c->n_heads, c->n_kv_heads);
	if (bad_token_id(c->bos_id) || bad_token_id(c->pad_id))
		return ms_errf(err, errlen, MS_ERANGE, "%s: bos/pad token id out of range", path);
	int rc = parse_eos(c, json_object_get(root, "eos_token_id"), path, err, errlen);
	if (rc != 0) return rc;
	c->head_dim = c->dim / c->n_heads;
	if (c->arch == MS_ARCH_LLAMA && c->head_dim % 2)
		return ms_errf(err, errlen, MS_EFORMAT, "%s: odd head dimension %d for RoPE", path, c->head_dim);
	return load_labels(c, root, path, err, errlen);
}

static const ms_gen_option gen_options[] = {
	{"temperature", 0, 100, 0},
	{"top_p", 0, 1, 0},
	{"top_k", 0, 1 << 24, 1},
	{"repetition_penalty", 0.01, 100, 0},
	{"max_new_tokens", 0, 1 << 20, 1},
	{"max_length", 1, 1 << 24, 1},
	{"seed", 0, 9007199254740991.0, 1}, /* 2^53 - 1: every integer a JSON number holds exactly */
};

const ms_gen_option *ms_gen_option_find(const char *key) {
	for (size_t i = 0; i < MS_ARRAY_LEN(gen_options); i++)
		if (!strcmp(gen_options[i].key, key)) return &gen_options[i];
	return NULL;
}

int ms_gen_option_check(const ms_gen_option *o, double d, int integral, const char *what, char *err, size_t errlen) {
	if (!o) return ms_errf(err, errlen, MS_EINVAL, "%s: not a sampling option", what);
	if ((o->integer && !integral) || !(d >= o->lo && d <= o->hi))
		return ms_errf(err, errlen, MS_ERANGE, "%s: %s must be %s in [%g, %g]", what, o->key,
			       o->integer ? "an integer" : "a number", o->lo, o->hi);
	return 0;
}

/* generation_config.json's sampling defaults, each with the bit that says it was given */
static const struct gen_field {
	const char *key;
	unsigned bit;
} gen_fields[] = {
	{"temperature", MS_GD_TEMPERATURE},
	{"top_p", MS_GD_TOP_P},
	{"top_k", MS_GD_TOP_K},
	{"repetition_penalty", MS_GD_REPETITION_PENALTY},
	{"max_new_tokens", MS_GD_MAX_NEW_TOKENS},
	{"max_length", MS_GD_MAX_LENGTH},
};

static void set_gen_field(ms_gen_defaults *g, unsigned bit, double d) {
	g->set |= bit;
	switch (bit) {
	case MS_GD_TEMPERATURE: g->temperature = (float)d; break;
	case MS_GD_TOP_P: g->top_p = (float)d; break;
	case MS_GD_TOP_K: g->top_k = (int)d; break;
	case MS_GD_REPETITION_PENALTY: g->repetition_penalty = (float)d; break;
	case MS_GD_MAX_NEW_TOKENS: g->max_new_tokens = (int)d; break;
	default: g->max_length = (int)d; break;
	}
}

/* A wrong type or range is an error rather than a default silently dropped: the file is
 * what the model's authors meant generation to use. */
static int parse_gen(ms_config *c, json_t *root, const char *path, char *err, size_t errlen) {
	int rc = parse_eos(c, json_object_get(root, "eos_token_id"), path, err, errlen);
	if (rc != 0) return rc;
	json_t *ds = json_object_get(root, "do_sample");
	if (ds && !json_is_null(ds)) {
		if (!json_is_boolean(ds)) return ms_errf(err, errlen, MS_EFORMAT, "%s: do_sample must be true or false", path);
		c->gen.set |= MS_GD_DO_SAMPLE;
		c->gen.do_sample = json_is_true(ds);
	}
	for (size_t i = 0; i < MS_ARRAY_LEN(gen_fields); i++) {
		const struct gen_field *f = &gen_fields[i];
		json_t *v = json_object_get(root, f->key);
		if (!v || json_is_null(v)) continue;
		const ms_gen_option *o = ms_gen_option_find(f->key);
		double d = json_is_number(v) ? json_number_value(v) : NAN; /* NaN: in no range */
		if ((rc = ms_gen_option_check(o, d, json_is_integer(v), path, err, errlen)) != 0) return rc;
		set_gen_field(&c->gen, f->bit, d);
	}
	return 0;
}

/* Reads path as a JSON object and hands it to parse: config.json and
 * generation_config.json are read alike. */
static int load_object(ms_config *c, const char *path,
		       int (*fn)(ms_config *, json_t *, const char *, char *, size_t), char *err, size_t errlen) {
	json_error_t jerr;
	json_t *root = json_load_file(path, 0, &jerr);
	if (!root) return ms_errf(err, errlen, MS_EFORMAT, "%s: %s", path, jerr.text);
	int rc = json_is_object(root) ? fn(c, root, path, err, errlen)
				      : ms_errf(err, errlen, MS_EFORMAT, "%s: not a JSON object", path);
	json_decref(root);
	return rc;
}

int ms_config_load(ms_config *c, const char *dir, char *err, size_t errlen) {
	memset(c, 0, sizeof *c);
	char path[4096];
	snprintf(path, sizeof path, "%s/config.json", dir);
	int rc = load_object(c, path, parse, err, errlen);
	/* generation_config.json, when the checkpoint has one: its eos_token_id replaces
	 * config.json's, as transformers' GenerationConfig does */
	snprintf(path, sizeof path, "%s/generation_config.json", dir);
	if (rc == 0 && access(path, F_OK) == 0) rc = load_object(c, path, parse_gen, err, errlen);
	if (rc != 0) ms_config_free(c);
	return rc;
}

void ms_config_free(ms_config *c) {
	for (int i = 0; i < c->n_labels; i++) free(c->id2label[i]);
	free(c->id2label);
	c->id2label = NULL;
	c->n_labels = 0;
}
