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

static int load_text(const char *json, ms_config *c, char *err, size_t errlen) {
	char dir[] = "/tmp/ms-cfg-XXXXXX", path[256];
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/config.json", dir);
	FILE *f = fopen(path, "w");
	CHECK(f);
	fputs(json, f);
	fclose(f);
	int rc = ms_config_load(c, dir, err, errlen);
	unlink(path);
	rmdir(dir);
	return rc;
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
		{"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,\"eos_token_id\":4294967298}", "range"},
		{"[1]", "object"},
		{"{", "config.json"},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(bad); i++) {
		int rc = load_text(bad[i][0], &c, err, sizeof err);
		CHECK_MSG(rc < 0, "case %zu accepted", i);
		CHECK_MSG(strstr(err, bad[i][1]) && strstr(err, "config.json"), "case %zu: '%s' lacks '%s'", i, err, bad[i][1]);
	}
}
