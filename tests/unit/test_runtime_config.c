/* tests/unit/test_runtime_config.c: config.json of every family, real fixtures and
 * hand-written variants (field spellings, defaults, rejected features). */
#include "runtime/config.h"
#include "tests/testlib.h"

TEST_SUITE("runtime_config")

TEST(fixture_configs) {
	ms_config c;
	char err[512];
	CHECK_INT(ms_config_load(&c, fixture_path("models/tiny-llama-gqa"), err, sizeof err), 0);
	CHECK_INT(c.arch, MS_ARCH_LLAMA);
	CHECK_INT(c.n_kv_heads, 2);
	CHECK_INT(c.n_heads, 8);
	CHECK_INT(c.head_dim, 8);
	CHECK(c.rope_theta == 500000.0f);
	CHECK(!c.tie_word_embeddings);
	CHECK(fabs(c.norm_eps - 1e-5) < 1e-12);
	ms_config_free(&c);
	CHECK_INT(ms_config_load(&c, fixture_path("models/tiny-random-gpt2"), err, sizeof err), 0);
	CHECK_INT(c.arch, MS_ARCH_GPT2);
	CHECK_INT(c.hidden_dim, 4 * 32); /* n_inner null: 4 * n_embd, not the stray intermediate_size */
	CHECK_INT(c.act, MS_ACT_GELU_NEW);
	CHECK_INT(c.max_pos, 512);
	ms_config_free(&c);
	CHECK_INT(ms_config_load(&c, fixture_path("models/tiny-distilbert-cls"), err, sizeof err), 0);
	CHECK_INT(c.arch, MS_ARCH_DISTILBERT);
	CHECK(c.has_classifier);
	CHECK_INT(c.n_labels, 2);
	CHECK_STR(c.id2label[1], "POSITIVE");
	CHECK_INT(c.hidden_dim, 64);
	CHECK(fabs(c.norm_eps - 1e-12) < 1e-15);
	ms_config_free(&c);
	CHECK_INT(ms_config_load(&c, fixture_path("models/tiny-bert-cls"), err, sizeof err), 0);
	CHECK_INT(c.arch, MS_ARCH_BERT_CLS);
	CHECK_INT(c.n_labels, 3);
	CHECK_STR(c.id2label[0], "negative");
	ms_config_free(&c);
}

static void write_text(const char *dir, const char *name, const char *text) {
	char path[256];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	CHECK(f);
	fputs(text, f);
	fclose(f);
}

/* config.json from json and, when gen is not NULL, generation_config.json from gen. */
static int load_texts(const char *json, const char *gen, ms_config *c, char *err, size_t errlen) {
	char dir[] = "/tmp/ms-cfg-XXXXXX", path[256];
	CHECK(mkdtemp(dir));
	write_text(dir, "config.json", json);
	if (gen) write_text(dir, "generation_config.json", gen);
	int rc = ms_config_load(c, dir, err, errlen);
	snprintf(path, sizeof path, "%s/config.json", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/generation_config.json", dir);
	unlink(path);
	rmdir(dir);
	return rc;
}

static int load_text(const char *json, ms_config *c, char *err, size_t errlen) {
	return load_texts(json, NULL, c, err, errlen);
}

TEST(variants) {
	ms_config c;
	char err[512];
	/* model_type only; eos as a list; default labels */
	CHECK_INT(load_text("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
			    "\"intermediate_size\":128,\"vocab_size\":100,\"eos_token_id\":[7,8]}", &c, err, sizeof err), 0);
	CHECK_INT(c.arch, MS_ARCH_LLAMA);
	CHECK_INT(c.n_kv_heads, 4);
	CHECK_INT(c.eos_id, 7);
	CHECK(c.tie_word_embeddings);
	CHECK(c.rope_theta == 10000.0f);
	ms_config_free(&c);
	CHECK_INT(load_text("{\"architectures\":[\"BertForSequenceClassification\"],\"hidden_size\":8,\"num_hidden_layers\":1,"
			    "\"num_attention_heads\":2,\"intermediate_size\":16,\"vocab_size\":10,\"num_labels\":3}", &c, err, sizeof err), 0);
	CHECK_INT(c.n_labels, 3);
	CHECK_STR(c.id2label[2], "LABEL_2");
	ms_config_free(&c);
	const char *bad[][2] = {
		{"{\"architectures\":[\"MambaForCausalLM\"]}", "unsupported architecture"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":5,\"vocab_size\":10}", "divisible"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":3,\"vocab_size\":10}", "divisible"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,\"rope_scaling\":{\"type\":\"linear\"}}", "rope_scaling"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,\"head_dim\":32}", "head_dim"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,\"attention_bias\":true}", "bias"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,\"hidden_act\":\"sigmoid\"}", "activation"},
		{"{\"model_type\":\"llama\",\"hidden_size\":-64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10}", "sizes"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2000000,\"num_attention_heads\":4,\"vocab_size\":10}", "range"},
		{"{\"model_type\":\"bert\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"vocab_size\":10,\"id2label\":{\"x\":\"a\"}}", "id2label"},
		/* 2^32 + 64 and 2^32 + 4: a size that wraps to a valid int must not pass as 64 */
		{"{\"model_type\":\"llama\",\"hidden_size\":4294967360,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10}", "sizes"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4294967300,\"vocab_size\":10}", "sizes"},
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,\"eos_token_id\":4294967298}", "eos_token_id 4294967298 is not a token id"},
		{"[1]", "object"},
		{"{", "config.json"},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(bad); i++) {
		int rc = load_text(bad[i][0], &c, err, sizeof err);
		CHECK_MSG(rc < 0, "case %zu accepted", i);
		CHECK_MSG(strstr(err, bad[i][1]) && strstr(err, "config.json"), "case %zu: '%s' lacks '%s'", i, err, bad[i][1]);
	}
}

#define LLAMA_CFG(extra) \
	"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4," \
	"\"vocab_size\":100" extra "}"

/* eos_token_id as an integer or a list in either file, generation_config.json's winning;
 * its sampling defaults read with which ones it sets. */
TEST(eos_lists_and_generation_config) {
	ms_config c;
	char err[512];
	CHECK_INT(load_texts(LLAMA_CFG(",\"eos_token_id\":[7,8,99]"), NULL, &c, err, sizeof err), 0);
	CHECK(c.n_eos == 3 && c.eos_ids[0] == 7 && c.eos_ids[1] == 8 && c.eos_ids[2] == 99 && c.eos_id == 7);
	CHECK_INT(c.gen.set, 0);
	ms_config_free(&c);
	CHECK_INT(load_texts(LLAMA_CFG(",\"eos_token_id\":[7,8]"), "{\"eos_token_id\":[9,10,11],\"do_sample\":true,"
			     "\"temperature\":0.6,\"top_p\":0.9,\"top_k\":null}", &c, err, sizeof err), 0);
	CHECK(c.n_eos == 3 && c.eos_ids[0] == 9 && c.eos_ids[2] == 11 && c.eos_id == 9);
	CHECK_INT(c.gen.set, MS_GD_DO_SAMPLE | MS_GD_TEMPERATURE | MS_GD_TOP_P);
	CHECK(c.gen.do_sample && c.gen.temperature == 0.6f && c.gen.top_p == 0.9f);
	ms_config_free(&c);
	/* generation_config.json without eos_token_id (or null) keeps config.json's */
	CHECK_INT(load_texts(LLAMA_CFG(",\"eos_token_id\":5"), "{\"eos_token_id\":null,\"max_length\":64}", &c, err,
			     sizeof err), 0);
	CHECK(c.n_eos == 1 && c.eos_id == 5 && c.gen.set == MS_GD_MAX_LENGTH && c.gen.max_length == 64);
	ms_config_free(&c);
	CHECK_INT(load_texts(LLAMA_CFG(""), NULL, &c, err, sizeof err), 0);
	CHECK(c.n_eos == 0 && c.eos_id == -1);
	ms_config_free(&c);
}

/* A malformed id or value is an error naming the file and the field, not a default used
 * silently. */
TEST(malformed_eos_and_generation_config) {
	static const char *const bad_cfg[][2] = {
		{LLAMA_CFG(",\"eos_token_id\":[7,\"8\"]"), "eos_token_id[1] is not an integer"},
		{LLAMA_CFG(",\"eos_token_id\":[7,8.0]"), "eos_token_id[1] is not an integer"},
		{LLAMA_CFG(",\"eos_token_id\":[7,100]"), "eos_token_id 100 is not a token id (vocab_size 100)"},
		{LLAMA_CFG(",\"eos_token_id\":-1"), "eos_token_id -1 is not a token id"},
		{LLAMA_CFG(",\"eos_token_id\":[]"), "eos_token_id lists 0 ids"},
		{LLAMA_CFG(",\"eos_token_id\":\"</s>\""), "eos_token_id must be an integer or a list"},
		{LLAMA_CFG(",\"eos_token_id\":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,"
			   "29,30,31,32]"), "eos_token_id lists 33 ids (1 to 32 allowed)"},
	};
	ms_config c;
	char err[512];
	for (size_t i = 0; i < MS_ARRAY_LEN(bad_cfg); i++) {
		CHECK_MSG(load_texts(bad_cfg[i][0], NULL, &c, err, sizeof err) < 0, "config case %zu accepted", i);
		CHECK_MSG(strstr(err, bad_cfg[i][1]) && strstr(err, "/config.json:"), "config case %zu: '%s'", i, err);
	}
	static const char *const bad_gen[][2] = {
		{"{\"eos_token_id\":[2,128]}", "eos_token_id 128 is not a token id"},
		{"{\"eos_token_id\":[2,true]}", "eos_token_id[1] is not an integer"},
		{"{\"do_sample\":\"yes\"}", "do_sample must be true or false"},
		{"{\"temperature\":-0.5}", "temperature must be a number in [0, 100]"},
		{"{\"temperature\":\"0.7\"}", "temperature must be a number"},
		{"{\"top_p\":1.5}", "top_p must be a number in [0, 1]"},
		{"{\"top_k\":2.5}", "top_k must be an integer"},
		{"{\"repetition_penalty\":0}", "repetition_penalty must be a number"},
		{"{\"max_new_tokens\":\"64\"}", "max_new_tokens must be an integer"},
		{"{\"max_length\":0}", "max_length must be an integer in [1, "},
		{"[2]", "not a JSON object"},
		{"{\"eos_token_id\": 2", "generation_config.json"},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(bad_gen); i++) {
		CHECK_MSG(load_texts(LLAMA_CFG(",\"eos_token_id\":2"), bad_gen[i][0], &c, err, sizeof err) < 0,
			  "generation_config case %zu accepted", i);
		CHECK_MSG(strstr(err, bad_gen[i][1]) && strstr(err, "/generation_config.json:"), "generation_config case %zu: '%s'",
			  i, err);
	}
}
