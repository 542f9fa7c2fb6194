/* tests/unit/test_runtime_models.c: every fixture model's outputs against the references
 * computed by transformers / llama2.c / numpy (../shared/fixtures/models). */
#include <jansson.h>
#include <stdatomic.h>

#include "runtime/kernels.h"
#include "runtime/model.h"
#include "tests/testlib.h"

TEST_SUITE("runtime_models")

static json_t *load_json(const char *rel) {
	json_error_t e;
	json_t *j = json_load_file(fixture_path(rel), 0, &e);
	CHECK_MSG(j != NULL, "%s: %s", rel, e.text);
	return j;
}

static ms_model *load_model_q(const char *rel, int threads, int q8) {
	char err[512] = "";
	ms_model *m = NULL;
	ms_model_opts o = {.n_threads = threads, .q8 = q8};
	int rc = ms_model_load(fixture_path(rel), &o, &m, err, sizeof err);
	CHECK_MSG(rc == 0, "load %s: %s (%s)", rel, err, ms_strerror(rc));
	return m;
}

static ms_model *load_model(const char *rel, int threads) { return load_model_q(rel, threads, 0); }

static int32_t *ids_of(json_t *arr, size_t *n) {
	*n = json_array_size(arr);
	int32_t *ids = malloc((*n + 1) * sizeof *ids);
	CHECK(ids);
	for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
	return ids;
}

/* max |a - ref| over a JSON array of numbers (ref) */
static double max_diff(const float *a, json_t *ref, size_t n) {
	CHECK_INT(json_array_size(ref), n);
	double md = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs(a[i] - json_number_value(json_array_get(ref, i)));
		if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
	}
	return md;
}

/* Logits at every position against rows of reference logits [n][vocab]. */
static void check_all_logits(ms_model *m, const int32_t *ids, size_t n, json_t *ref, double tol) {
	int vocab = ms_model_config(m)->vocab_size;
	float *lg = malloc(n * vocab * sizeof *lg);
	CHECK(lg);
	CHECK_INT(ms_model_logits(m, ids, n, lg), 0);
	CHECK_INT(json_array_size(ref), n);
	for (size_t p = 0; p < n; p++) {
		double d = max_diff(lg + p * vocab, json_array_get(ref, p), (size_t)vocab);
		CHECK_MSG(d <= tol, "position %zu: max |logit diff| %g > %g", p, d, tol);
	}
	free(lg);
}

static void check_greedy(ms_model *m, const int32_t *prompt, size_t n, json_t *want_new, int stop_on_eos) {
	ms_gen_opts o;
	ms_gen_opts_init(&o);
	o.temperature = 0;
	o.max_new_tokens = (int)json_array_size(want_new);
	o.stop_on_eos = stop_on_eos;
	int32_t *out = NULL;
	size_t n_out = 0;
	CHECK_INT(ms_model_generate_ids(m, prompt, n, &o, NULL, NULL, &out, &n_out, NULL), 0);
	CHECK_INT(n_out, json_array_size(want_new));
	for (size_t i = 0; i < n_out; i++)
		CHECK_MSG(out[i] == json_integer_value(json_array_get(want_new, i)), "greedy token %zu: %d, expected %lld",
			  i, out[i], (long long)json_integer_value(json_array_get(want_new, i)));
	free(out);
}

TEST(stories260k_logits) {
	json_t *ref = load_json("models/stories260K/reference_logits.json");
	ms_model *m = load_model("models/stories260K", 1);
	size_t n;
	int32_t *ids = ids_of(json_object_get(ref, "input_ids"), &n);
	check_all_logits(m, ids, n, json_object_get(ref, "logits_all_positions"), 1e-4);
	free(ids);
	ms_model_free(m);
	json_decref(ref);
}

/* the same through lesser kernels than the CPU's best (the default path is tested above) */
static void stories260k_logits_at(int level) {
	ms_kernels_cap(level);
	json_t *ref = load_json("models/stories260K/reference_logits.json");
	ms_model *m = load_model("models/stories260K", 2);
	size_t n;
	int32_t *ids = ids_of(json_object_get(ref, "input_ids"), &n);
	check_all_logits(m, ids, n, json_object_get(ref, "logits_all_positions"), 1e-4);
	free(ids);
	ms_model_free(m);
	json_decref(ref);
	ms_kernels_cap(MS_KERNELS_AVX512);
}

TEST(stories260k_logits_portable_kernels) { stories260k_logits_at(MS_KERNELS_PORTABLE); }
TEST(stories260k_logits_avx2_kernels) { stories260k_logits_at(MS_KERNELS_AVX2); }

/* greedy_ids_*.txt: "prompt_ids: ..." and "ids: ..." lines; generation stops on BOS (=1),
 * as llama2.c does */
static int32_t *read_ids_line(const char *text, const char *key, size_t *n) {
	const char *p = strstr(text, key);
	CHECK(p);
	p += strlen(key);
	int32_t *ids = malloc(4096 * sizeof *ids);
	*n = 0;
	char *end;
	for (;;) {
		while (*p == ' ') p++;
		if (*p == '\n' || !*p) break;
		long v = strtol(p, &end, 10);
		CHECK(end != p && *n < 4096);
		ids[(*n)++] = (int32_t)v;
		p = end;
	}
	return ids;
}

TEST(stories260k_greedy_ids) {
	const char *files[] = {"models/stories260K/greedy_ids_n200_bos.txt",
			       "models/stories260K/greedy_ids_n64_prompt_once_upon_a_time.txt"};
	ms_model *m = load_model("models/stories260K", 0);
	for (int f = 0; f < 2; f++) {
		char *text = test_read_file(fixture_path(files[f]), NULL);
		CHECK(text);
		size_t np, na;
		int32_t *prompt = read_ids_line(text, "prompt_ids:", &np);
		int32_t *all = read_ids_line(text, "\nids:", &na);
		CHECK(na > np);
		json_t *want = json_array();
		for (size_t i = np; i < na; i++) json_array_append_new(want, json_integer(all[i]));
		check_greedy(m, prompt, np, want, 0);
		json_decref(want);
		free(prompt);
		free(all);
		free(text);
	}
	ms_model_free(m);
}

static void llama_gqa(const char *dir) {
	char rel[256];
	snprintf(rel, sizeof rel, "%s/reference.json", dir);
	json_t *ref = load_json(rel);
	ms_model *m = load_model(dir, 2);
	CHECK(ms_model_config(m)->rope_theta == 500000.0f);
	CHECK(!ms_model_config(m)->tie_word_embeddings);
	json_t *prompts = json_object_get(ref, "prompts");
	CHECK(json_array_size(prompts) > 0);
	for (size_t i = 0; i < json_array_size(prompts); i++) {
		json_t *p = json_array_get(prompts, i);
		size_t n;
		int32_t *ids = ids_of(json_object_get(p, "input_ids"), &n);
		check_all_logits(m, ids, n, json_object_get(p, "logits"), 1e-4);
		check_greedy(m, ids, n, json_object_get(json_object_get(p, "greedy"), "new_ids"), 0);
		free(ids);
	}
	ms_model_free(m);
	json_decref(ref);
}

TEST(tiny_llama_gqa_bf16) { llama_gqa("models/tiny-llama-gqa"); }
TEST(tiny_llama_gqa_sharded_f16) { llama_gqa("models/tiny-llama-gqa-sharded-f16"); }

TEST(tiny_random_gpt2) {
	json_t *ref = load_json("models/tiny-random-gpt2/reference_logits.json");
	ms_model *m = load_model("models/tiny-random-gpt2", 2);
	json_t *cases = json_object_get(ref, "cases");
	CHECK(json_object_size(cases) > 0);
	const char *key;
	json_t *c;
	json_object_foreach(cases, key, c) {
		int32_t ids[64];
		size_t n = 0;
		for (const char *p = key; *p && n < 64;) {
			ids[n++] = (int32_t)strtol(p, (char **)&p, 10);
			if (*p == ',') p++;
		}
		check_all_logits(m, ids, n, json_object_get(c, "logits_all_positions"), 1e-4);
		/* greedy_to_len10: the whole sequence, prompt included; no EOS stop */
		json_t *full = json_object_get(c, "greedy_to_len10"), *want = json_array();
		for (size_t i = n; i < json_array_size(full); i++) json_array_append(want, json_array_get(full, i));
		check_greedy(m, ids, n, want, 0);
		json_decref(want);
	}
	ms_model_free(m);
	json_decref(ref);
}

TEST(tiny_gpt2_f16) {
	json_t *ref = load_json("models/tiny-gpt2-f16/reference.json");
	size_t bin_len = 0;
	float *last = (float *)test_read_file(fixture_path("models/tiny-gpt2-f16/last_logits_f32.bin"), &bin_len);
	CHECK(last);
	ms_model *m = load_model("models/tiny-gpt2-f16", 2);
	int vocab = ms_model_config(m)->vocab_size;
	CHECK_INT(vocab, 50257);
	json_t *fixed = json_object_get(ref, "fixed_vocab_indices"), *prompts = json_object_get(ref, "prompts");
	CHECK_INT(bin_len, json_array_size(prompts) * vocab * sizeof(float));
	for (size_t pi = 0; pi < json_array_size(prompts); pi++) {
		json_t *p = json_array_get(prompts, pi);
		size_t n;
		int32_t *ids = ids_of(json_object_get(p, "input_ids"), &n);
		float *lg = malloc(n * vocab * sizeof *lg);
		CHECK_INT(ms_model_logits(m, ids, n, lg), 0);
		json_t *allpos = json_object_get(p, "logits_at_fixed_indices_all_positions");
		for (size_t pos = 0; pos < n; pos++)
			for (size_t k = 0; k < json_array_size(fixed); k++) {
				json_int_t v = json_integer_value(json_array_get(fixed, k));
				CHECK_NEAR(lg[pos * vocab + v], json_number_value(json_array_get(json_array_get(allpos, pos), k)), 1e-4);
			}
		double md = 0;
		for (int v = 0; v < vocab; v++) md = fmax(md, fabs(lg[(n - 1) * vocab + v] - last[pi * vocab + v]));
		CHECK_MSG(md <= 1e-4, "prompt %zu: last-position logits differ by %g", pi, md);
		check_greedy(m, ids, n, json_object_get(json_object_get(p, "greedy"), "new_ids"), 0);
		free(lg);
		free(ids);
	}
	ms_model_free(m);
	free(last);
	json_decref(ref);
}

TEST(tiny_random_bert) {
	json_t *ref = load_json("models/tiny-random-bert/reference_outputs.json");
	ms_model *m = load_model("models/tiny-random-bert", 1);
	int dim = ms_model_config(m)->dim;
	json_t *cases = json_object_get(ref, "cases");
	CHECK(json_array_size(cases) > 0);
	for (size_t ci = 0; ci < json_array_size(cases); ci++) {
		json_t *c = json_array_get(cases, ci);
		size_t n;
		int32_t *ids = ids_of(json_object_get(c, "input_ids"), &n);
		float *hidden = malloc(n * dim * sizeof *hidden), pooled[64], mean[64];
		CHECK_INT(ms_model_encode(m, ids, NULL, n, hidden, pooled, NULL), 0);
		json_t *lh = json_object_get(c, "last_hidden_state");
		for (size_t i = 0; i < n; i++) {
			double d = max_diff(hidden + i * dim, json_array_get(lh, i), (size_t)dim);
			CHECK_MSG(d <= 1e-4, "case %zu position %zu: hidden differs by %g", ci, i, d);
		}
		CHECK(max_diff(pooled, json_object_get(c, "pooler_output"), (size_t)dim) <= 1e-4);
		for (int e = 0; e < dim; e++) {
			float s = 0;
			for (size_t i = 0; i < n; i++) s += hidden[i * dim + e];
			mean[e] = s / (float)n;
		}
		CHECK(max_diff(mean, json_object_get(c, "mean_pooled"), (size_t)dim) <= 1e-4);
		free(hidden);
		free(ids);
	}
	ms_model_free(m);
	json_decref(ref);
}

static void classifier(const char *dir, int has_pooler) {
	char rel[256];
	snprintf(rel, sizeof rel, "%s/reference.json", dir);
	json_t *ref = load_json(rel);
	ms_model *m = load_model(dir, 1);
	const ms_config *cfg = ms_model_config(m);
	int dim = cfg->dim;
	json_t *sents = json_object_get(ref, "sentences");
	CHECK(json_array_size(sents) > 0);
	for (size_t si = 0; si < json_array_size(sents); si++) {
		json_t *s = json_array_get(sents, si);
		size_t n;
		int32_t *ids = ids_of(json_object_get(s, "input_ids"), &n);
		float *hidden = malloc(n * dim * sizeof *hidden), pooled[64], logits[16], emb[64];
		CHECK_INT(ms_model_encode(m, ids, NULL, n, hidden, has_pooler ? pooled : NULL, logits), 0);
		CHECK(max_diff(logits, json_object_get(s, "logits"), (size_t)cfg->n_labels) <= 1e-4);
		if (has_pooler) {
			CHECK(max_diff(pooled, json_object_get(s, "pooler_output"), (size_t)dim) <= 1e-4);
			CHECK(max_diff(hidden, json_object_get(s, "last_hidden_state_cls"), (size_t)dim) <= 1e-4);
		}
		CHECK_INT(ms_model_embed_ids(m, ids, n, emb), 0);
		CHECK(max_diff(emb, json_object_get(s, "embedding_mean_pooled_l2"), (size_t)dim) <= 1e-4);
		ms_label_score *ls;
		size_t nl;
		CHECK_INT(ms_model_classify_ids(m, ids, n, &ls, &nl), 0);
		CHECK_INT(nl, cfg->n_labels);
		CHECK_STR(ls[0].label, json_string_value(json_object_get(s, "predicted_label")));
		for (size_t i = 1; i < nl; i++) CHECK(ls[i - 1].score >= ls[i].score);
		json_t *probs = json_object_get(s, "probabilities");
		for (size_t i = 0; i < nl; i++)
			for (int l = 0; l < cfg->n_labels; l++)
				if (strcmp(cfg->id2label[l], ls[i].label) == 0)
					CHECK_NEAR(ls[i].score, json_number_value(json_array_get(probs, l)), 1e-5);
		free(ls);
		free(hidden);
		free(ids);
	}
	ms_model_free(m);
	json_decref(ref);
}

TEST(tiny_bert_cls) { classifier("models/tiny-bert-cls", 1); }
TEST(tiny_distilbert_cls) { classifier("models/tiny-distilbert-cls", 0); }

/* Cancelling from another thread stops generation within a layer: the call returns
 * MS_ECANCELED with fewer tokens than asked. */
static atomic_int cancel_flag;
static int cancel_after(void *ud, int32_t id) {
	int *count = ud;
	if (++*count == 5) atomic_store(&cancel_flag, 1);
	return 0;
}

TEST(cancel_stops_generation) {
	ms_model *m = load_model("models/stories260K", 1);
	ms_gen_opts o;
	ms_gen_opts_init(&o);
	o.temperature = 0;
	o.max_new_tokens = 200;
	o.stop_on_eos = 0;
	o.cancel = &cancel_flag;
	int count = 0;
	int32_t bos = 1, *out = NULL;
	size_t n_out = 0;
	ms_gen_stats st;
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, &o, cancel_after, &count, &out, &n_out, &st), MS_ECANCELED);
	CHECK_INT(n_out, 5);
	CHECK_INT(st.stopped, 3);
	free(out);
	/* a set flag stops a forward pass before its first layer */
	ms_seq *s;
	CHECK_INT(ms_seq_new(m, 16, &s), 0);
	float logits[512];
	CHECK_INT(ms_seq_forward(s, &bos, 1, logits, NULL, &cancel_flag), MS_ECANCELED);
	atomic_store(&cancel_flag, 0);
	ms_seq_reset(s);
	CHECK_INT(ms_seq_forward(s, &bos, 1, logits, NULL, &cancel_flag), 0);
	ms_seq_free(s);
	ms_model_free(m);
}

TEST(sampling_seeded_reproducible) {
	ms_model *m = load_model("models/stories260K", 1);
	ms_gen_opts o;
	ms_gen_opts_init(&o);
	o.temperature = 0.9f;
	o.top_p = 0.9f;
	o.top_k = 40;
	o.repetition_penalty = 1.1f;
	o.seed = 42;
	o.max_new_tokens = 40;
	o.stop_on_eos = 0;
	int32_t bos = 1, *a, *b, *g;
	size_t na, nb, ng;
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, &o, NULL, NULL, &a, &na, NULL), 0);
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, &o, NULL, NULL, &b, &nb, NULL), 0);
	CHECK_INT(na, 40);
	CHECK_INT(nb, 40);
	CHECK(memcmp(a, b, na * sizeof *a) == 0);
	o.temperature = 0;
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, &o, NULL, NULL, &g, &ng, NULL), 0);
	CHECK(memcmp(a, g, na * sizeof *a) != 0); /* sampling differs from greedy */
	for (size_t i = 0; i < na; i++) CHECK(a[i] >= 0 && a[i] < 512);
	free(a);
	free(b);
	free(g);
	ms_model_free(m);
}

/* Generation stops on the EOS id of config.json (checkpoint without a tokenizer): with EOS
 * set to the 4th greedy token after BOS (1 403 407 261 378 ...), three tokens come out and
 * EOS itself is not one of them. Without the stop, the same run goes on. */
TEST(generation_stops_on_eos) {
	char fx[4096], tmp[] = "/tmp/ms-eos-XXXXXX", cmd[16384];
	CHECK(realpath(fixture_path("models/stories260K"), fx));
	CHECK(mkdtemp(tmp));
	snprintf(cmd, sizeof cmd,
		 "ln -s %s/model.safetensors %s/ && sed 's/\"eos_token_id\": *2/\"eos_token_id\": 378/' %s/config.json > %s/config.json"
		 " && grep -q '\"eos_token_id\": 378' %s/config.json",
		 fx, tmp, fx, tmp, tmp);
	CHECK_INT(system(cmd), 0);
	ms_model *m;
	char err[512];
	int rc = ms_model_load(tmp, NULL, &m, err, sizeof err);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	CHECK_INT(system(cmd), 0);
	CHECK_MSG(rc == 0, "%s", err);
	ms_gen_opts o;
	ms_gen_opts_init(&o);
	o.temperature = 0, o.max_new_tokens = 20;
	int32_t bos = 1, *out;
	size_t n;
	ms_gen_stats st;
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, &o, NULL, NULL, &out, &n, &st), 0);
	CHECK_INT(st.stopped, 1);
	CHECK_INT(n, 3);
	CHECK(out[0] == 403 && out[1] == 407 && out[2] == 261);
	free(out);
	o.stop_on_eos = 0;
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, &o, NULL, NULL, &out, &n, &st), 0);
	CHECK_INT(st.stopped, 0);
	CHECK_INT(n, 20);
	CHECK_INT(out[3], 378);
	free(out);
	ms_model_free(m);
}

/* stories260K's greedy continuation of BOS: 403 407 261 378 432 383 286 261 ... */
static const int32_t greedy_bos[] = {403, 407, 261, 378, 432, 383, 286, 261};

static ms_model *load_ckpt(const char *eos, const char *gen) {
	char dir[64], err[512] = "";
	test_stories_ckpt(dir, eos, gen);
	ms_model *m = NULL;
	int rc = ms_model_load(dir, NULL, &m, err, sizeof err);
	test_rm_rf(dir);
	CHECK_MSG(rc == 0, "%s", err);
	return m;
}

/* Greedy from BOS with o (NULL: the checkpoint's defaults, nothing set by the caller);
 * returns how many ids came out, checked against the greedy ones up to want_greedy. */
static size_t run_bos(ms_model *m, const ms_gen_opts *o, int *stopped) {
	ms_gen_opts d;
	ms_gen_opts_init(&d);
	ms_gen_opts_apply_model(&d, m);
	int32_t bos = 1, *out;
	size_t n;
	ms_gen_stats st;
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, o ? o : &d, NULL, NULL, &out, &n, &st), 0);
	for (size_t i = 0; i < n && i < MS_ARRAY_LEN(greedy_bos) && (o ? o : &d)->temperature == 0; i++)
		CHECK_MSG(out[i] == greedy_bos[i], "id %zu: %d, greedy %d", i, out[i], greedy_bos[i]);
	free(out);
	*stopped = st.stopped;
	return n;
}

/* eos_token_id as a list (Llama 3.x ends a chat turn with its third id, <|eot_id|>):
 * generation stops on any of them, not only the first; generation_config.json's list
 * replaces config.json's; the tokenizer's eos_token stops it too. */
TEST(generation_stops_on_any_eos_of_a_list) {
	ms_gen_opts o;
	ms_gen_opts_init(&o);
	o.temperature = 0, o.max_new_tokens = 20;
	int stopped;
	ms_model *m = load_ckpt("[2, 500, 378]", NULL); /* third id: the 4th greedy token */
	CHECK_INT(ms_model_config(m)->n_eos, 3);
	CHECK_INT(ms_model_config(m)->eos_id, 2); /* the single-id view: the first */
	CHECK_INT(run_bos(m, &o, &stopped), 3);
	CHECK_INT(stopped, 1);
	ms_model_free(m);
	m = load_ckpt("[2, 500, 378]", "{\"eos_token_id\": [2, 407]}"); /* second id, 2nd token */
	CHECK_INT(run_bos(m, &o, &stopped), 1);
	CHECK_INT(stopped, 1);
	o.stop_on_eos = 0;
	CHECK_INT(run_bos(m, &o, &stopped), 20);
	CHECK_INT(stopped, 0);
	ms_model_free(m);
	/* the tokenizer's eos_token (</s> = 2) joins the list rather than replacing it */
	o.stop_on_eos = 1;
	m = load_ckpt("[432]", "{\"eos_token_id\": 383}");
	CHECK_INT(ms_model_config(m)->eos_id, 383);
	CHECK_INT(run_bos(m, &o, &stopped), 5);
	CHECK_INT(stopped, 1);
	ms_model_free(m);
}

/* generation_config.json's defaults apply when the caller sets nothing, and every option
 * the caller sets wins. */
TEST(generation_config_defaults_and_overrides) {
	ms_model *m = load_ckpt(NULL, "{\"do_sample\": false, \"max_new_tokens\": 5, \"top_p\": 0.5, "
				      "\"top_k\": 7, \"repetition_penalty\": 1.25}");
	ms_gen_opts o;
	ms_gen_opts_init(&o);
	ms_gen_opts_apply_model(&o, m);
	CHECK(o.temperature == 0 && o.max_new_tokens == 5 && o.top_p == 0.5f && o.top_k == 7 &&
	      o.repetition_penalty == 1.25f);
	ms_model_free(m);
	int stopped;
	m = load_ckpt(NULL, "{\"do_sample\": false, \"max_new_tokens\": 5}");
	CHECK_INT(run_bos(m, NULL, &stopped), 5); /* greedy (checked in run_bos), 5 tokens */
	CHECK_INT(stopped, 0);
	ms_gen_opts_init(&o);
	ms_gen_opts_apply_model(&o, m);
	o.max_new_tokens = 8; /* the caller's */
	CHECK_INT(run_bos(m, &o, &stopped), 8);
	o.temperature = 1.5f, o.seed = 3; /* sampling, as the caller asks, not greedy */
	int32_t bos = 1, *a;
	size_t n;
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, &o, NULL, NULL, &a, &n, NULL), 0);
	CHECK(n == 8 && memcmp(a, greedy_bos, sizeof greedy_bos) != 0);
	free(a);
	ms_model_free(m);
	/* do_sample true with top_k 1: sampling that can only pick the greedy token */
	m = load_ckpt(NULL, "{\"do_sample\": true, \"temperature\": 2.0, \"top_k\": 1, \"max_new_tokens\": 8}");
	ms_gen_opts_init(&o);
	ms_gen_opts_apply_model(&o, m);
	CHECK(o.temperature == 2.0f && o.top_k == 1);
	o.seed = 11;
	CHECK_INT(ms_model_generate_ids(m, &bos, 1, &o, NULL, NULL, &a, &n, NULL), 0);
	CHECK(n == 8 && memcmp(a, greedy_bos, sizeof greedy_bos) == 0);
	free(a);
	ms_model_free(m);
}

/* max_length counts the prompt (transformers); max_new_tokens, the file's or the
 * caller's, takes precedence; a prompt that fills max_length is refused, as transformers
 * refuses it. */
TEST(generation_config_max_length) {
	ms_model *m = load_ckpt(NULL, "{\"do_sample\": false, \"max_length\": 6}");
	int stopped;
	CHECK_INT(run_bos(m, NULL, &stopped), 5);
	ms_gen_opts o;
	ms_gen_opts_init(&o);
	ms_gen_opts_apply_model(&o, m);
	int32_t prompt[6] = {1, 403, 407, 261, 378, 432}, *out;
	size_t n;
	CHECK_INT(ms_model_generate_ids(m, prompt, 4, &o, NULL, NULL, &out, &n, NULL), 0);
	CHECK_INT(n, 2);
	free(out);
	CHECK_INT(ms_model_generate_ids(m, prompt, 6, &o, NULL, NULL, &out, &n, NULL), MS_ERANGE);
	char err[256] = "";
	CHECK_INT(ms_gen_check_length(&o, 6, err, sizeof err), MS_ERANGE);
	CHECK_MSG(strstr(err, "max_length 6"), "%s", err);
	o.max_new_tokens = 3;
	CHECK_INT(ms_model_generate_ids(m, prompt, 6, &o, NULL, NULL, &out, &n, NULL), 0);
	CHECK_INT(n, 3);
	free(out);
	ms_model_free(m);
	m = load_ckpt(NULL, "{\"do_sample\": false, \"max_length\": 6, \"max_new_tokens\": 2}");
	CHECK_INT(run_bos(m, NULL, &stopped), 2);
	ms_model_free(m);
}

TEST(wrong_family_calls_rejected) {
	ms_model *m = load_model("models/tiny-random-bert", 1);
	ms_seq *s;
	CHECK_INT(ms_seq_new(m, 8, &s), MS_EUNSUPPORTED);
	ms_label_score *ls;
	size_t nl;
	int32_t ids[] = {101, 102};
	CHECK_INT(ms_model_classify_ids(m, ids, 2, &ls, &nl), MS_EUNSUPPORTED);
	int32_t bad[] = {101, 999999};
	float h[64];
	CHECK_INT(ms_model_encode(m, bad, NULL, 2, h, NULL, NULL), MS_ERANGE);
	ms_model_free(m);
}

/* Batched decoding (the model worker's path) gives each sequence the same tokens and
 * logits as running it alone. */
static void batch_matches_single(const char *dir, int threads) {
	ms_model *m = load_model(dir, threads);
	int vocab = ms_model_config(m)->vocab_size;
	int32_t prompts[3][4] = {{1, 403, 407, 261}, {1, 300, 0, 0}, {1, 42, 43, 44}};
	size_t plen[3] = {4, 2, 4};
	enum { STEPS = 12 };
	int32_t want[3][STEPS];
	for (int s = 0; s < 3; s++) {
		ms_gen_opts o;
		ms_gen_opts_init(&o);
		o.temperature = 0, o.max_new_tokens = STEPS, o.stop_on_eos = 0;
		int32_t *out;
		size_t n;
		CHECK_INT(ms_model_generate_ids(m, prompts[s], plen[s], &o, NULL, NULL, &out, &n, NULL), 0);
		CHECK_INT(n, STEPS);
		memcpy(want[s], out, sizeof want[s]);
		free(out);
	}
	ms_seq *sess[3];
	int32_t next[3];
	float *lg = malloc(3 * (size_t)vocab * sizeof *lg), *single = malloc((size_t)vocab * sizeof *single);
	for (int s = 0; s < 3; s++) {
		CHECK_INT(ms_seq_new(m, 64, &sess[s]), 0);
		CHECK_INT(ms_seq_forward(sess[s], prompts[s], plen[s], lg, NULL, NULL), 0);
		next[s] = 0;
		for (int v = 1; v < vocab; v++) if (lg[v] > lg[next[s]]) next[s] = v;
	}
	for (int step = 0; step < STEPS; step++) {
		for (int s = 0; s < 3; s++) CHECK_INT(next[s], want[s][step]);
		CHECK_INT(ms_seq_step_batch(sess, next, 3, lg, NULL), 0);
		for (int s = 0; s < 3; s++) {
			int best = 0;
			for (int v = 1; v < vocab; v++) if (lg[s * vocab + v] > lg[s * vocab + best]) best = v;
			next[s] = best;
			CHECK_INT(ms_seq_pos(sess[s]), (int)plen[s] + step + 1);
		}
	}
	/* a session must not appear twice in one step */
	ms_seq *dup[2] = {sess[0], sess[0]};
	CHECK_INT(ms_seq_step_batch(dup, next, 2, lg, NULL), MS_EINVAL);
	for (int s = 0; s < 3; s++) ms_seq_free(sess[s]);
	free(lg);
	free(single);
	ms_model_free(m);
}

TEST(batched_steps_match_single_llama) { batch_matches_single("models/stories260K", 2); }
TEST(batched_steps_match_single_gpt2) { batch_matches_single("models/tiny-random-gpt2", 1); }

/* Real gpt2 files store keys without the "transformer." prefix and carry attn.bias /
 * attn.masked_bias buffers: rewrite tiny-random-gpt2 that way and expect the same logits. */
#include "runtime/safetensors.h"

static void put_entry(ms_buf *h, const char *name, const char *dtype, const int64_t *shape, int ndim, size_t *off,
		      size_t bytes) {
	ms_buf_printf(h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", h->len > 1 ? "," : "", name, dtype);
	for (int i = 0; i < ndim; i++) ms_buf_printf(h, "%s%lld", i ? "," : "", (long long)shape[i]);
	ms_buf_printf(h, "],\"data_offsets\":[%zu,%zu]}", *off, *off + bytes);
	*off += bytes;
}

TEST(gpt2_unprefixed_keys_with_bias_buffers) {
	ms_st st;
	char err[512];
	CHECK_INT(ms_st_open(&st, fixture_path("models/tiny-random-gpt2"), err, sizeof err), 0);
	char tmp[] = "/tmp/ms-gpt2raw-XXXXXX";
	CHECK(mkdtemp(tmp));
	ms_buf h, data;
	ms_buf_init(&h);
	ms_buf_init(&data);
	ms_buf_puts(&h, "{");
	size_t off = 0;
	for (size_t i = 0; i < st.n_tensors; i++) {
		const ms_st_tensor *t = &st.tensors[i];
		const char *name = strncmp(t->name, "transformer.", 12) == 0 ? t->name + 12 : t->name;
		put_entry(&h, name, "F32", t->shape, t->ndim, &off, t->nbytes);
		ms_buf_append(&data, t->data, t->nbytes);
		if (strstr(name, ".attn.c_attn.weight")) { /* the causal-mask buffers */
			char bn[128];
			int layer = atoi(name + 2);
			int64_t shp[4] = {1, 1, 8, 8};
			float ones[64];
			for (int k = 0; k < 64; k++) ones[k] = 1.0f;
			snprintf(bn, sizeof bn, "h.%d.attn.bias", layer);
			put_entry(&h, bn, "F32", shp, 4, &off, sizeof ones);
			ms_buf_append(&data, ones, sizeof ones);
			snprintf(bn, sizeof bn, "h.%d.attn.masked_bias", layer);
			put_entry(&h, bn, "F32", shp, 0, &off, 4);
			ms_buf_append(&data, ones, 4);
		}
	}
	ms_buf_puts(&h, "}");
	while (h.len % 8) ms_buf_puts(&h, " ");
	char path[512];
	snprintf(path, sizeof path, "%s/model.safetensors", tmp);
	FILE *f = fopen(path, "wb");
	CHECK(f);
	uint8_t len8[8];
	for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
	CHECK(fwrite(len8, 1, 8, f) == 8 && fwrite(h.data, 1, h.len, f) == h.len && fwrite(data.data, 1, data.len, f) == data.len);
	fclose(f);
	ms_st_close(&st);
	char cmd[8192];
	snprintf(cmd, sizeof cmd, "cp %s/config.json %s/", fixture_path("models/tiny-random-gpt2"), tmp);
	CHECK_INT(system(cmd), 0);
	ms_model *m;
	int rc = ms_model_load(tmp, NULL, &m, err, sizeof err);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	CHECK_INT(system(cmd), 0);
	CHECK_MSG(rc == 0, "%s", err);
	json_t *ref = load_json("models/tiny-random-gpt2/reference_logits.json");
	json_t *c = json_object_get(json_object_get(ref, "cases"), "1,2,3,5,8");
	int32_t ids[] = {1, 2, 3, 5, 8};
	check_all_logits(m, ids, 5, json_object_get(c, "logits_all_positions"), 1e-4);
	ms_model_free(m);
	json_decref(ref);
	ms_buf_free(&h);
	ms_buf_free(&data);
}

/* 8-bit weights: close to the F32 reference (an approximation, so a looser bound), and a
 * real speed path, so the same greedy text on a pretrained model for a while. */
TEST(q8_weights_close_to_f32) {
	json_t *ref = load_json("models/stories260K/reference_logits.json");
	ms_model *m = load_model_q("models/stories260K", 2, 1);
	size_t n;
	int32_t *ids = ids_of(json_object_get(ref, "input_ids"), &n);
	float *lg = malloc(n * 512 * sizeof *lg);
	CHECK_INT(ms_model_logits(m, ids, n, lg), 0);
	json_t *all = json_object_get(ref, "logits_all_positions");
	double worst = 0;
	for (size_t p = 0; p < n; p++) {
		worst = fmax(worst, max_diff(lg + p * 512, json_array_get(all, p), 512));
		/* the F32 argmax stays the argmax */
		json_t *row = json_array_get(all, p);
		int best = 0;
		for (int v = 1; v < 512; v++)
			if (json_number_value(json_array_get(row, v)) > json_number_value(json_array_get(row, best))) best = v;
		int mine = 0;
		for (int v = 1; v < 512; v++)
			if (lg[p * 512 + v] > lg[p * 512 + mine]) mine = v;
		CHECK_INT(mine, best);
	}
	CHECK_MSG(worst < 0.3 && worst > 0, "q8 max |logit diff| %g", worst);
	free(lg);
	free(ids);
	ms_model_free(m);
	json_decref(ref);
}
