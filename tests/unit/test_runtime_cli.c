/* tests/unit/test_runtime_cli.c: `moonspace generate / embed / classify` end to end against
 * the fixtures (llama2.c's expected stories260K output, transformers' classifier and
 * embedding references), and MODEL resolution through a Hub cache layout. */
/* messages and paths are bounded by snprintf; truncating a diagnostic is fine */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include <jansson.h>

#include "runtime/modeldir.h"
#include "tests/testlib.h"

TEST_SUITE("runtime_cli")

static void strip_newline(char *s);
/* Runs bin/moonspace with args (already shell-quoted); returns stdout, exit code in *rc and
 * stderr in errbuf. */
static char *run(const char *args, int *rc, char *errbuf, size_t errlen) {
	char errpath[] = "/tmp/ms-cli-err-XXXXXX";
	int fd = mkstemp(errpath);
	CHECK(fd >= 0);
	close(fd);
	char cmd[8192];
	snprintf(cmd, sizeof cmd, "%s/moonspace %s 2>%s", test_bin_dir(), args, errpath);
	FILE *p = popen(cmd, "r");
	CHECK(p);
	size_t cap = 1 << 16, n = 0;
	char *out = malloc(cap + 1);
	size_t got;
	while ((got = fread(out + n, 1, cap - n, p)) > 0) {
		n += got;
		if (n == cap) out = realloc(out, (cap *= 2) + 1);
	}
	out[n] = 0;
	int st = pclose(p);
	*rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
	size_t el = 0;
	char *e = test_read_file(errpath, &el);
	snprintf(errbuf, errlen, "%s", e ? e : "");
	strip_newline(errbuf);
	free(e);
	unlink(errpath);
	return out;
}

/* The tokenizer is a separate module; until it is linked, text commands say so. */
static void skip_without_tokenizer(const char *err) {
	if (strstr(err, "no tokenizer")) SKIP("runtime built without runtime/tokenizer.c: %s", err);
}

static void strip_newline(char *s) {
	size_t n = strlen(s);
	if (n && s[n - 1] == '\n') s[n - 1] = 0;
}

static void check_generate(const char *args, const char *expected_rel) {
	char *want = test_read_file(fixture_path(expected_rel), NULL);
	CHECK(want);
	int rc;
	char err[4096];
	char *out = run(args, &rc, err, sizeof err);
	skip_without_tokenizer(err);
	CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
	strip_newline(out);
	strip_newline(want);
	CHECK_STR(out, want);
	CHECK_MSG(strstr(err, "tok/s") && strstr(err, "prompt") && strstr(err, "generation"), "stderr: %s", err);
	free(out);
	free(want);
}

TEST(generate_stories260k_t0_n200) {
	char args[4096];
	snprintf(args, sizeof args, "generate '%s' -n 200 -t 0", fixture_path("models/stories260K"));
	check_generate(args, "models/stories260K/expected_t0_n200.txt");
}

TEST(generate_stories260k_prompt) {
	char args[4096];
	snprintf(args, sizeof args, "generate '%s' -p 'Once upon a time' -n 60 -t 0 --threads 2",
		 fixture_path("models/stories260K"));
	check_generate(args, "models/stories260K/expected_t0_n64_prompt_once_upon_a_time.txt");
}

TEST(generate_stop_string) {
	char args[4096];
	snprintf(args, sizeof args, "generate '%s' -n 200 -t 0 --stop Lily", fixture_path("models/stories260K"));
	int rc;
	char err[4096];
	char *out = run(args, &rc, err, sizeof err);
	skip_without_tokenizer(err);
	CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
	/* expected_t0_n200 starts "Once upon a time, there was a little girl named Lily." */
	CHECK_STR(out, "Once upon a time, there was a little girl named \n");
	free(out);
}

TEST(generate_usage) {
	int rc;
	char err[4096];
	char *out = run("generate --help", &rc, err, sizeof err);
	CHECK_INT(rc, 0);
	CHECK(strstr(out, "usage: moonspace generate"));
	free(out);
	out = run("generate", &rc, err, sizeof err);
	CHECK_INT(rc, 2);
	free(out);
	char args[4096];
	snprintf(args, sizeof args, "generate '%s' -n lots", fixture_path("models/stories260K"));
	out = run(args, &rc, err, sizeof err);
	CHECK_INT(rc, 2);
	CHECK(strstr(err, "-n"));
	free(out);
	out = run("generate /nonexistent/dir", &rc, err, sizeof err);
	CHECK_INT(rc, 1);
	CHECK(strstr(err, "/nonexistent/dir"));
	free(out);
	out = run("classify --help", &rc, err, sizeof err);
	CHECK_INT(rc, 0);
	free(out);
	out = run("embed --help", &rc, err, sizeof err);
	CHECK_INT(rc, 0);
	free(out);
}

static json_t *load_json(const char *rel) {
	json_error_t e;
	json_t *j = json_load_file(fixture_path(rel), 0, &e);
	CHECK_MSG(j != NULL, "%s: %s", rel, e.text);
	return j;
}

static void shell_quote(char *dst, size_t len, const char *s) {
	size_t n = 0;
	dst[n++] = '\'';
	for (; *s && n + 5 < len; s++) {
		if (*s == '\'') memcpy(dst + n, "'\\''", 4), n += 4;
		else dst[n++] = *s;
	}
	dst[n++] = '\'';
	dst[n] = 0;
}

static void classify_and_embed(const char *dir) {
	char rel[256];
	snprintf(rel, sizeof rel, "%s/reference.json", dir);
	json_t *ref = load_json(rel);
	json_t *sents = json_object_get(ref, "sentences");
	for (size_t i = 0; i < json_array_size(sents); i++) {
		json_t *s = json_array_get(sents, i);
		char q[2048], args[8192], err[4096];
		shell_quote(q, sizeof q, json_string_value(json_object_get(s, "text")));
		snprintf(args, sizeof args, "classify '%s' %s", fixture_path(dir), q);
		int rc;
		char *out = run(args, &rc, err, sizeof err);
		skip_without_tokenizer(err);
		CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
		json_error_t je;
		json_t *res = json_loads(out, 0, &je);
		CHECK_MSG(json_is_array(res), "not a JSON array: %s", out);
		CHECK_STR(json_string_value(json_object_get(json_array_get(res, 0), "label")),
			  json_string_value(json_object_get(s, "predicted_label")));
		double prev = 2;
		for (size_t k = 0; k < json_array_size(res); k++) {
			double sc = json_number_value(json_object_get(json_array_get(res, k), "score"));
			CHECK(sc <= prev);
			prev = sc;
		}
		json_decref(res);
		free(out);

		snprintf(args, sizeof args, "embed '%s' %s", fixture_path(dir), q);
		out = run(args, &rc, err, sizeof err);
		CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
		res = json_loads(out, 0, &je);
		json_t *want = json_object_get(s, "embedding_mean_pooled_l2");
		CHECK(json_is_array(res) && json_array_size(res) == json_array_size(want));
		for (size_t k = 0; k < json_array_size(want); k++)
			CHECK_NEAR(json_number_value(json_array_get(res, k)), json_number_value(json_array_get(want, k)), 1e-4);
		json_decref(res);
		free(out);
	}
	json_decref(ref);
}

TEST(classify_embed_bert) { classify_and_embed("models/tiny-bert-cls"); }
TEST(classify_embed_distilbert) { classify_and_embed("models/tiny-distilbert-cls"); }

TEST(modeldir_hub_cache) {
	const char *fx = fixture_path("models/tiny-bert-cls");
	char fxabs[4096];
	CHECK(realpath(fx, fxabs));
	char tmp[] = "/tmp/ms-hub-XXXXXX";
	CHECK(mkdtemp(tmp));
	const char *commit = "0123456789abcdef0123456789abcdef01234567";
	char cmd[8192];
	snprintf(cmd, sizeof cmd,
		 "mkdir -p %s/hub/models--org--tiny-cls/refs %s/hub/models--org--tiny-cls/snapshots && "
		 "printf '%s\\n' > %s/hub/models--org--tiny-cls/refs/main && "
		 "ln -s %s %s/hub/models--org--tiny-cls/snapshots/%s",
		 tmp, tmp, commit, tmp, fxabs, tmp, commit);
	CHECK_INT(system(cmd), 0);
	char hub[512], out[4096], err[1024], want[4096];
	snprintf(hub, sizeof hub, "%s/hub", tmp);
	setenv("HF_HUB_CACHE", hub, 1);
	snprintf(want, sizeof want, "%s/models--org--tiny-cls/snapshots/%s", hub, commit);
	CHECK_INT(ms_modeldir_resolve("org/tiny-cls", out, sizeof out, err, sizeof err), 0);
	CHECK_STR(out, want);
	CHECK_INT(ms_modeldir_resolve("org/tiny-cls@main", out, sizeof out, err, sizeof err), 0);
	CHECK_STR(out, want);
	char spec[128];
	snprintf(spec, sizeof spec, "org/tiny-cls@%s", commit);
	CHECK_INT(ms_modeldir_resolve(spec, out, sizeof out, err, sizeof err), 0);
	CHECK_STR(out, want);
	CHECK_INT(ms_modeldir_resolve("org/tiny-cls@v2", out, sizeof out, err, sizeof err), MS_ENOENT);
	CHECK(strstr(err, "refs/v2"));
	CHECK_INT(ms_modeldir_resolve("org/other", out, sizeof out, err, sizeof err), MS_ENOENT);
	CHECK_INT(ms_modeldir_resolve("../etc/x", out, sizeof out, err, sizeof err), MS_ENOENT);
	CHECK_INT(ms_modeldir_resolve("org/x@../../y", out, sizeof out, err, sizeof err), MS_ENOENT);
	/* HF_HOME/hub when HF_HUB_CACHE is unset */
	unsetenv("HF_HUB_CACHE");
	setenv("HF_HOME", tmp, 1);
	CHECK_INT(ms_modeldir_resolve("org/tiny-cls", out, sizeof out, err, sizeof err), 0);
	CHECK_STR(out, want);
	/* a local directory wins */
	CHECK_INT(ms_modeldir_resolve(fx, out, sizeof out, err, sizeof err), 0);
	CHECK_STR(out, fx);
	/* and the CLI resolves the same way */
	int rc;
	char *o = run("classify org/tiny-cls 'I absolutely loved this movie!'", &rc, err, sizeof err);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	CHECK_INT(system(cmd), 0);
	skip_without_tokenizer(err);
	CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
	CHECK(strstr(o, "\"label\""));
	free(o);
}

/* Text generation with GPT-2's byte-level tokenizer: tiny-gpt2-f16 paired with
 * tokenizers/gpt2 in a scratch checkpoint dir. Every streamed piece is whole UTF-8, and the
 * pieces join to transformers' decoded continuation (one ends in a partial byte: U+FFFD). */
#include "runtime/model.h"
#include <utf8proc.h>

static int collect(void *ud, const char *text, size_t len) {
	ms_buf *b = ud;
	utf8proc_int32_t cp;
	for (size_t i = 0; i < len;) {
		utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &cp);
		CHECK_MSG(n > 0, "piece splits a UTF-8 character at byte %zu", i);
		i += (size_t)n;
	}
	CHECK(ms_buf_append(b, text, len) == 0);
	ms_buf_puts(b, "\x01"); /* piece boundary marker, stripped below */
	return 0;
}

TEST(generate_text_gpt2_streaming) {
	const char *mdir = fixture_path("models/tiny-gpt2-f16");
	char mabs[4096], tabs[4096];
	CHECK(realpath(mdir, mabs));
	CHECK(realpath(fixture_path("tokenizers/gpt2"), tabs));
	char tmp[] = "/tmp/ms-gpt2-XXXXXX", cmd[16384];
	CHECK(mkdtemp(tmp));
	snprintf(cmd, sizeof cmd, "ln -s %s/config.json %s/model.safetensors %s/tokenizer.json %s/tokenizer_config.json %s/",
		 mabs, mabs, tabs, tabs, tmp);
	CHECK_INT(system(cmd), 0);
	json_t *ref = load_json("models/tiny-gpt2-f16/reference.json");
	ms_model *m;
	char err[512];
	int rc = ms_model_load(tmp, NULL, &m, err, sizeof err);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	CHECK_MSG(rc == 0, "%s", err);
	CHECK(ms_model_tokenizer(m));
	json_t *prompts = json_object_get(ref, "prompts");
	for (size_t i = 0; i < json_array_size(prompts); i++) {
		json_t *p = json_array_get(prompts, i);
		ms_gen_opts o;
		ms_gen_opts_init(&o);
		o.temperature = 0, o.max_new_tokens = 16, o.stop_on_eos = 0;
		ms_buf b;
		ms_buf_init(&b);
		ms_gen_stats st;
		CHECK_INT(ms_model_generate(m, json_string_value(json_object_get(p, "text")), &o, collect, &b, &st, err, sizeof err), 0);
		CHECK_INT(st.prompt_tokens, json_array_size(json_object_get(p, "input_ids")));
		CHECK_INT(st.gen_tokens, 16);
		CHECK(b.len > 0);
		size_t w = 0;
		for (size_t k = 0; k < b.len; k++)
			if (b.data[k] != '\x01') b.data[w++] = b.data[k];
		b.data[w] = 0;
		CHECK_STR(b.data, json_string_value(json_object_get(json_object_get(p, "greedy"), "new_text_decoded")));
		ms_buf_free(&b);
	}
	ms_model_free(m);
	json_decref(ref);
	CHECK_INT(system(cmd), 0);
}

/* --seed makes a sampled run repeatable, whatever --threads; another seed gives another
 * text; --top-p and -t reach the sampler (a tiny top-p is greedy). */
static char *generate_out(const char *opts) {
	char args[4096], err[4096];
	snprintf(args, sizeof args, "generate '%s' -p 'Once upon a time' %s", fixture_path("models/stories260K"), opts);
	int rc;
	char *out = run(args, &rc, err, sizeof err);
	skip_without_tokenizer(err);
	CHECK_MSG(rc == 0, "%s: exit %d: %s", opts, rc, err);
	CHECK_MSG(strncmp(out, "Once upon a time", 16) == 0, "%s: the prompt is not echoed: %s", opts, out);
	return out;
}

TEST(generate_seed_top_p_threads) {
	char *a = generate_out("-n 60 -t 1 --top-p 0.95 --seed 42 --threads 1");
	char *b = generate_out("-n 60 -t 1 --top-p 0.95 --seed 42 --threads 2");
	CHECK_STR(a, b);
	int differ = 0;
	for (int seed = 1; seed <= 3 && !differ; seed++) {
		char opts[128];
		snprintf(opts, sizeof opts, "-n 60 -t 1 --top-p 0.95 --seed %d", seed);
		char *c = generate_out(opts);
		differ = strcmp(a, c) != 0;
		free(c);
	}
	CHECK_MSG(differ, "seeds 1, 2, 3 and 42 all gave: %s", a);
	char *g = generate_out("-n 60 -t 0");
	char *p = generate_out("-n 60 -t 1.5 --top-p 0.0001 --seed 5");
	CHECK_STR(p, g);
	free(a), free(b), free(g), free(p);
}

/* An empty TEXT is handled like any text: [CLS] [SEP] through the model. */
TEST(classify_embed_empty_text) {
	char args[4096], err[4096];
	int rc;
	snprintf(args, sizeof args, "classify '%s' ''", fixture_path("models/tiny-bert-cls"));
	char *out = run(args, &rc, err, sizeof err);
	skip_without_tokenizer(err);
	CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
	json_error_t je;
	json_t *res = json_loads(out, 0, &je);
	CHECK_MSG(json_array_size(res) == 3, "classify '': %s", out);
	double sum = 0;
	for (size_t k = 0; k < 3; k++) sum += json_number_value(json_object_get(json_array_get(res, k), "score"));
	CHECK_NEAR(sum, 1, 1e-5);
	json_decref(res);
	free(out);
	snprintf(args, sizeof args, "embed '%s' ''", fixture_path("models/tiny-distilbert-cls"));
	out = run(args, &rc, err, sizeof err);
	CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
	res = json_loads(out, 0, &je);
	CHECK_MSG(json_array_size(res) == 16, "embed '': %s", out);
	double norm = 0;
	for (size_t k = 0; k < 16; k++) norm += pow(json_number_value(json_array_get(res, k)), 2);
	CHECK_NEAR(norm, 1, 1e-5);
	json_decref(res);
	free(out);
}

/* A task the checkpoint's family cannot do says which family it is and what is needed,
 * and generate prints nothing on stdout (no echoed prompt before the failure). */
TEST(wrong_family_is_a_clear_error) {
	static const struct { const char *cmd, *model, *want; } cases[] = {
		{"generate", "models/tiny-bert-cls", "causal language model"},
		{"classify", "models/stories260K", "sequence classification"},
		{"embed", "models/stories260K", "encoder"},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(cases); i++) {
		char args[4096], err[4096];
		int rc;
		snprintf(args, sizeof args, "%s '%s' %s 'hello'", cases[i].cmd, fixture_path(cases[i].model),
			 strcmp(cases[i].cmd, "generate") ? "" : "-p");
		char *out = run(args, &rc, err, sizeof err);
		CHECK_INT(rc, 1);
		CHECK_MSG(strstr(err, cases[i].want) && strstr(err, cases[i].model + 7), "%s: %s", cases[i].cmd, err);
		CHECK_STR(out, "");
		free(out);
	}
	/* a prompt longer than the model's 512 positions: the same, before any output */
	char args[8192], err[4096];
	int rc, n = snprintf(args, sizeof args, "generate '%s' -p '", fixture_path("models/stories260K"));
	for (int i = 0; i < 600; i++) n += snprintf(args + n, sizeof args - (size_t)n, "a ");
	snprintf(args + n, sizeof args - (size_t)n, "'");
	char *out = run(args, &rc, err, sizeof err);
	CHECK_INT(rc, 1);
	CHECK_MSG(strstr(err, "512 positions"), "%s", err);
	CHECK_STR(out, "");
	free(out);
}

/* `generate DIR OPTS` with the prompt "Once upon a time": stdout; stderr in err. */
static char *generate_in(const char *dir, const char *opts, char *err, size_t errlen) {
	char args[4096];
	snprintf(args, sizeof args, "generate '%s' -p 'Once upon a time' %s", dir, opts);
	int rc;
	char *out = run(args, &rc, err, errlen);
	skip_without_tokenizer(err);
	CHECK_MSG(rc == 0, "%s: exit %d: %s", opts, rc, err);
	return out;
}

/* The checkpoint's generation_config.json decides what no flag sets (greedy, 10 tokens
 * here, as the fixture with -t 0 -n 10 gives); each flag given wins over it. */
TEST(generate_generation_config_defaults) {
	char dir[64], err[4096], fx[4096];
	snprintf(fx, sizeof fx, "%s", fixture_path("models/stories260K"));
	test_stories_ckpt(dir, NULL, "{\"do_sample\": false, \"max_new_tokens\": 10}");
	char *a = generate_in(dir, "", err, sizeof err), *want = generate_in(fx, "-t 0 -n 10", err, sizeof err);
	CHECK_MSG(strstr(err, "generation: 10 tokens"), "%s", err);
	CHECK_STR(a, want);
	free(a), free(want);
	a = generate_in(dir, "-n 4", err, sizeof err), want = generate_in(fx, "-t 0 -n 4", err, sizeof err);
	CHECK_STR(a, want);
	free(a), free(want);
	a = generate_in(dir, "-t 1.5 --top-p 1 --seed 5", err, sizeof err),
	want = generate_in(fx, "-t 1.5 --top-p 1 --seed 5 -n 10", err, sizeof err);
	char *greedy = generate_in(fx, "-t 0 -n 10", err, sizeof err);
	test_rm_rf(dir);
	CHECK_STR(a, want);
	CHECK(strcmp(a, greedy) != 0);
	free(a), free(want), free(greedy);
}

/* A list of EOS ids: generation stops on its third one (the 4th greedy token after BOS). */
TEST(generate_stops_on_eos_list) {
	char dir[64], err[4096];
	test_stories_ckpt(dir, "[2, 500, 378]", NULL);
	char args[4096];
	snprintf(args, sizeof args, "generate '%s' -t 0 -n 20", dir);
	int rc;
	char *out = run(args, &rc, err, sizeof err);
	test_rm_rf(dir);
	skip_without_tokenizer(err);
	CHECK_MSG(rc == 0, "exit %d: %s", rc, err);
	CHECK_MSG(strstr(err, "generation: 3 tokens"), "%s", err);
	free(out);
}

/* A malformed generation_config.json is a load error naming the file and the field. */
TEST(generate_bad_generation_config) {
	char dir[64], err[4096], args[4096];
	test_stories_ckpt(dir, NULL, "{\"eos_token_id\": [2, 9999]}");
	snprintf(args, sizeof args, "generate '%s' -n 2", dir);
	int rc;
	char *out = run(args, &rc, err, sizeof err);
	test_rm_rf(dir);
	CHECK_INT(rc, 1);
	CHECK_MSG(strstr(err, "generation_config.json: eos_token_id 9999 is not a token id"), "%s", err);
	free(out);
}
