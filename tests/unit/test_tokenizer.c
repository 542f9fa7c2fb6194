/* tests/unit/test_tokenizer.c: runtime/tokenizer.h against the shared fixtures (the
 * swift-transformers cases for bert-base-uncased, GPT-2 and Llama-2, their long French
 * text, stories260K's own tokenizer), streaming decode, invalid UTF-8, speed, the CLI. */
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>

#include "runtime/tokenizer.h"
#include "tests/testlib.h"

TEST_SUITE("tokenizer")

static ms_tokenizer *load(const char *rel) {
	ms_tokenizer *tok = NULL;
	char err[512] = "";
	const char *dir = fixture_path(rel);
	int rc = ms_tokenizer_load(dir, &tok, err, sizeof err);
	CHECK_MSG(rc == 0 && tok, "load %.200s: %.300s (%s)", dir, err, ms_strerror(rc));
	return tok;
}

static json_t *load_json(const char *rel) {
	json_error_t je;
	json_t *j = json_load_file(fixture_path(rel), 0, &je);
	CHECK_MSG(j != NULL, "%s: %s", rel, je.text);
	return j;
}

/* Formats ids for messages. */
static const char *fmt_ids(const int32_t *ids, size_t n) {
	static char buf[2048];
	size_t o = 0;
	buf[0] = 0;
	for (size_t i = 0; i < n && o < sizeof buf - 16; i++) o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%d", i ? "," : "", ids[i]);
	return buf;
}

static void check_ids(const int32_t *got, size_t n, json_t *want, const char *what) {
	size_t wn = json_array_size(want);
	int same = n == wn;
	for (size_t i = 0; same && i < n; i++) same = got[i] == json_integer_value(json_array_get(want, i));
	if (!same) {
		char w[2048];
		size_t o = 0;
		for (size_t i = 0; i < wn && o < sizeof w - 16; i++) o += (size_t)snprintf(w + o, sizeof w - o, "%s%lld", i ? "," : "", (long long)json_integer_value(json_array_get(want, i)));
		TEST_FAILF("%s: got [%.700s], want [%.700s]", what, fmt_ids(got, n), w);
	}
}

static int valid_utf8(const char *s) {
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 ? 4 : 0;
		if (!n || (n == 2 && *p < 0xC2)) return 0;
		for (int i = 1; i < n; i++)
			if ((p[i] & 0xC0) != 0x80) return 0;
		p += n;
	}
	return 1;
}

/* Every case of tokenizer_tests.json for one model: ids with special tokens, decoded with
 * and without them. */
static void swift_cases(const char *key, const char *tokdir) {
	ms_tokenizer *tok = load(tokdir);
	json_t *all = load_json("tokenizer-tests/swift-transformers/tokenizer_tests.json");
	json_t *cases = json_object_get(all, key);
	CHECK(json_array_size(cases) >= 18);
	for (size_t i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i);
		const char *in = json_string_value(json_object_get(c, "input"));
		json_t *enc = json_object_get(c, "encoded");
		int32_t *ids;
		size_t n;
		CHECK_INT(ms_tokenizer_encode(tok, in, strlen(in), 1, &ids, &n), 0);
		char what[256];
		snprintf(what, sizeof what, "%s case %zu \"%.60s\"", key, i, in);
		check_ids(ids, n, json_object_get(enc, "input_ids"), what);
		char *text;
		CHECK_INT(ms_tokenizer_decode(tok, ids, n, 0, &text), 0);
		CHECK_MSG(strcmp(text, json_string_value(json_object_get(c, "decoded_with_special"))) == 0,
			  "%s: decoded \"%s\", want \"%s\"", what, text, json_string_value(json_object_get(c, "decoded_with_special")));
		free(text);
		CHECK_INT(ms_tokenizer_decode(tok, ids, n, 1, &text), 0);
		CHECK_MSG(strcmp(text, json_string_value(json_object_get(c, "decoded_without_special"))) == 0,
			  "%s: decoded (skip special) \"%s\", want \"%s\"", what, text,
			  json_string_value(json_object_get(c, "decoded_without_special")));
		free(text);
		json_t *tt = json_object_get(enc, "token_type_ids");
		if (tt) { /* a single sequence: type ids all 0 */
			int32_t *pids, *types;
			size_t pn;
			CHECK_INT(ms_tokenizer_encode_pair(tok, in, strlen(in), "", 0, &pids, &pn, &types), 0);
			CHECK(pn >= n);
			for (size_t k = 0; k < n; k++) CHECK_INT(types[k], json_integer_value(json_array_get(tt, k)));
			free(pids), free(types);
		}
		free(ids);
	}
	json_decref(all);
	ms_tokenizer_free(tok);
}

TEST(swift_bert_base_uncased) { swift_cases("bert-base-uncased", "tokenizers/bert-base-uncased"); }
TEST(swift_gpt2) { swift_cases("distilgpt2", "tokenizers/gpt2"); }
TEST(swift_llama2) { swift_cases("coreml-projects/Llama-2-7b-chat-coreml", "tokenizers/llama2"); }

/* The long French text: ids, the token strings, and the decoded text. */
static void long_text(const char *file, const char *tokdir, int add_special, int skip_special) {
	ms_tokenizer *tok = load(tokdir);
	json_t *j = load_json(file);
	const char *text = json_string_value(json_object_get(j, "text"));
	int32_t *ids;
	size_t n;
	CHECK_INT(ms_tokenizer_encode(tok, text, strlen(text), add_special, &ids, &n), 0);
	check_ids(ids, n, json_object_get(j, "token_ids"), file);
	json_t *toks = json_object_get(j, "bpe_tokens");
	size_t off = n - json_array_size(toks) > 0 && add_special && ms_tokenizer_is_special(tok, ids[0]) ? 1 : 0;
	for (size_t i = 0; i < json_array_size(toks); i++)
		CHECK_STR(ms_tokenizer_id_to_token(tok, ids[i + off]), json_string_value(json_array_get(toks, i)));
	char *dec;
	CHECK_INT(ms_tokenizer_decode(tok, ids, n, skip_special, &dec), 0);
	CHECK_STR(dec, json_string_value(json_object_get(j, "decoded_text")));
	free(dec);
	free(ids);
	json_decref(j);
	ms_tokenizer_free(tok);
}

TEST(long_text_gpt2) { long_text("tokenizer-tests/swift-transformers/gpt2_encoded_tokens.json", "tokenizers/gpt2", 0, 0); }
TEST(long_text_llama2) { long_text("tokenizer-tests/swift-transformers/llama_encoded.json", "tokenizers/llama2", 1, 0); }
TEST(long_text_bert) { long_text("tokenizer-tests/swift-transformers/bert_uncased_encoded.json", "tokenizers/bert-base-uncased", 1, 0); }

/* Reads "key: 1 2 3" from a greedy_ids file. */
static size_t read_ids_line(const char *path, const char *key, int32_t *out, size_t max) {
	char *s = test_read_file(path, NULL);
	CHECK_MSG(s != NULL, "read %s", path);
	char *p = strstr(s, key);
	CHECK_MSG(p != NULL, "%s: no %s", path, key);
	p += strlen(key);
	size_t n = 0;
	while (n < max) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p) break;
		out[n++] = (int32_t)v;
		p = end;
		if (*p == '\n') break;
	}
	free(s);
	return n;
}

TEST(stories260k_prompt_and_text) {
	ms_tokenizer *tok = load("models/stories260K");
	CHECK_INT(ms_tokenizer_vocab_size(tok), 512);
	CHECK_INT(ms_tokenizer_bos_id(tok), 1);
	CHECK_INT(ms_tokenizer_eos_id(tok), 2);
	CHECK_STR(ms_tokenizer_bos_token(tok), "<s>");
	int32_t want[16], all[512];
	size_t nw = read_ids_line(fixture_path("models/stories260K/greedy_ids_n64_prompt_once_upon_a_time.txt"), "prompt_ids:", want, 16);
	CHECK_INT(nw, 5);
	int32_t *ids;
	size_t n;
	CHECK_INT(ms_tokenizer_encode(tok, "Once upon a time", 16, 1, &ids, &n), 0);
	CHECK_MSG(n == nw && memcmp(ids, want, n * sizeof *ids) == 0, "got [%s]", fmt_ids(ids, n));
	free(ids);
	/* the greedy continuation decodes to llama2.c's printed text */
	size_t na = read_ids_line(fixture_path("models/stories260K/greedy_ids_n64_prompt_once_upon_a_time.txt"), "\nids:", all, 512);
	char *text, *expect = test_read_file(fixture_path("models/stories260K/expected_t0_n64_prompt_once_upon_a_time.txt"), NULL);
	CHECK_INT(ms_tokenizer_decode(tok, all, na, 1, &text), 0);
	size_t el = strlen(expect);
	if (el && expect[el - 1] == '\n') expect[--el] = 0; /* run.c's final newline */
	CHECK_STR(text, expect);
	free(text), free(expect);
	na = read_ids_line(fixture_path("models/stories260K/greedy_ids_n200_bos.txt"), "\nids:", all, 512);
	expect = test_read_file(fixture_path("models/stories260K/expected_t0_n200.txt"), NULL);
	CHECK_INT(ms_tokenizer_decode(tok, all, na, 1, &text), 0);
	CHECK_STR(text, expect);
	free(text), free(expect);
	ms_tokenizer_free(tok);
}

/* Streaming decode: concatenated pieces equal the full decode, and every piece is whole
 * UTF-8 characters. */
static void stream_equals(const ms_tokenizer *tok, const int32_t *ids, size_t n, size_t prime) {
	ms_detok_stream s;
	ms_detok_stream_init(&s, tok, 1);
	ms_buf out, piece;
	ms_buf_init(&out), ms_buf_init(&piece);
	CHECK_INT(ms_detok_stream_prime(&s, ids, prime), 0);
	for (size_t i = prime; i < n; i++) {
		ms_buf_reset(&piece);
		CHECK_INT(ms_detok_stream_push(&s, ids[i], &piece), 0);
		CHECK_MSG(valid_utf8(piece.data ? piece.data : ""), "piece %zu is not whole UTF-8", i);
		CHECK_MSG(!piece.data || !strstr(piece.data, "\xEF\xBF\xBD"), "piece %zu has U+FFFD", i);
		ms_buf_append(&out, piece.data ? piece.data : "", piece.len);
	}
	ms_buf_reset(&piece);
	CHECK_INT(ms_detok_stream_finish(&s, &piece), 0);
	ms_buf_append(&out, piece.data ? piece.data : "", piece.len);
	char *full, *head;
	CHECK_INT(ms_tokenizer_decode(tok, ids, n, 1, &full), 0);
	CHECK_INT(ms_tokenizer_decode(tok, ids, prime, 1, &head), 0);
	CHECK_MSG(strncmp(full, head, strlen(head)) == 0, "prefix decode differs");
	CHECK_STR(out.data ? out.data : "", full + (prime ? strlen(head) : 0));
	free(full), free(head);
	ms_buf_free(&out), ms_buf_free(&piece);
	ms_detok_stream_free(&s);
}

TEST(stream_decode) {
	const char *text = "Héllo wörld! 生活的真谛是 😀👍 ₣7 done";
	const char *dirs[] = {"tokenizers/gpt2", "tokenizers/llama2", "models/stories260K"};
	for (size_t d = 0; d < 3; d++) {
		ms_tokenizer *tok = load(dirs[d]);
		int32_t *ids;
		size_t n;
		CHECK_INT(ms_tokenizer_encode(tok, text, strlen(text), 1, &ids, &n), 0);
		stream_equals(tok, ids, n, 0);
		stream_equals(tok, ids, n, 3); /* prompt as context: the continuation keeps its space */
		free(ids);
		ms_tokenizer_free(tok);
	}
}

TEST(stream_incomplete_tail) {
	ms_tokenizer *tok = load("tokenizers/llama2");
	/* <0xE8> <0xB0> are the first two bytes of 谛 (E8 B0 9B): nothing until the third */
	int32_t e8 = ms_tokenizer_token_to_id(tok, "<0xE8>"), b0 = ms_tokenizer_token_to_id(tok, "<0xB0>"),
		x9b = ms_tokenizer_token_to_id(tok, "<0x9B>");
	CHECK(e8 > 0 && b0 > 0 && x9b > 0);
	ms_detok_stream s;
	ms_detok_stream_init(&s, tok, 1);
	ms_buf out;
	ms_buf_init(&out);
	CHECK_INT(ms_detok_stream_push(&s, e8, &out), 0);
	CHECK_INT(ms_detok_stream_push(&s, b0, &out), 0);
	CHECK_INT(out.len, 0);
	CHECK_INT(ms_detok_stream_push(&s, x9b, &out), 0);
	CHECK_STR(out.data, "谛");
	/* an unfinished character at the end flushes as U+FFFD */
	CHECK_INT(ms_detok_stream_push(&s, e8, &out), 0);
	CHECK_STR(out.data, "谛");
	CHECK_INT(ms_detok_stream_finish(&s, &out), 0);
	CHECK_STR(out.data, "谛\xEF\xBF\xBD");
	ms_buf_free(&out);
	ms_detok_stream_free(&s);
	ms_tokenizer_free(tok);
}

TEST(added_tokens_split_first) {
	ms_tokenizer *tok = load("tokenizers/gpt2");
	int32_t *ids;
	size_t n;
	const char *t = "a<|endoftext|>b";
	CHECK_INT(ms_tokenizer_encode(tok, t, strlen(t), 1, &ids, &n), 0);
	CHECK_MSG(n == 3 && ids[1] == 50256, "got [%s]", fmt_ids(ids, n));
	char *s;
	CHECK_INT(ms_tokenizer_decode(tok, ids, n, 1, &s), 0);
	CHECK_STR(s, "ab");
	free(s);
	free(ids);
	CHECK_INT(ms_tokenizer_is_special(tok, 50256), 1);
	CHECK_INT(ms_tokenizer_is_special(tok, 50255), 0);
	CHECK_STR(ms_tokenizer_id_to_token(tok, 31373), "hello");
	CHECK_INT(ms_tokenizer_token_to_id(tok, "hello"), 31373);
	CHECK(ms_tokenizer_id_to_token(tok, 50257) == NULL);
	CHECK(ms_tokenizer_id_to_token(tok, -1) == NULL);
	ms_tokenizer_free(tok);
	tok = load("tokenizers/llama2");
	t = "hello</s>world";
	CHECK_INT(ms_tokenizer_encode(tok, t, strlen(t), 0, &ids, &n), 0);
	int found = 0;
	for (size_t i = 0; i < n; i++) found += ids[i] == 2;
	CHECK_MSG(found == 1, "got [%s]", fmt_ids(ids, n));
	free(ids);
	ms_tokenizer_free(tok);
}

TEST(bert_pair_template) {
	ms_tokenizer *tok = load("tokenizers/bert-base-uncased");
	int32_t *ids, *types;
	size_t n;
	CHECK_INT(ms_tokenizer_encode_pair(tok, "hello", 5, "world", 5, &ids, &n, &types), 0);
	int32_t want[] = {101, 7592, 102, 2088, 102}, wt[] = {0, 0, 0, 1, 1};
	CHECK_INT(n, 5);
	for (size_t i = 0; i < 5; i++) {
		CHECK_INT(ids[i], want[i]);
		CHECK_INT(types[i], wt[i]);
	}
	free(ids), free(types);
	/* accents stripped through NFD, Chinese characters split, [UNK] for unknown words */
	const char *t = "Ça VA été";
	CHECK_INT(ms_tokenizer_encode(tok, t, strlen(t), 0, &ids, &n), 0);
	char *s;
	CHECK_INT(ms_tokenizer_decode(tok, ids, n, 1, &s), 0);
	CHECK_STR(s, "ca va ete");
	free(s), free(ids);
	ms_tokenizer_free(tok);
}

/* Random bytes (mostly invalid UTF-8) never crash the encoder, and decode gives valid
 * UTF-8; an invalid byte encodes as U+FFFD would. */
TEST(invalid_utf8_fuzz) {
	const char *dirs[] = {"tokenizers/gpt2", "tokenizers/llama2", "tokenizers/bert-base-uncased", "models/stories260K"};
	unsigned seed = 12345;
	for (size_t d = 0; d < 4; d++) {
		ms_tokenizer *tok = load(dirs[d]);
		for (int iter = 0; iter < 300; iter++) {
			char buf[64];
			size_t len = (size_t)(iter % 63) + 1;
			for (size_t i = 0; i < len; i++) {
				seed = seed * 1103515245u + 12345u;
				buf[i] = (char)(iter % 3 == 0 ? (0x80 | (seed >> 16)) : (seed >> 16));
			}
			int32_t *ids;
			size_t n;
			CHECK_INT(ms_tokenizer_encode(tok, buf, len, iter & 1, &ids, &n), 0);
			char *s;
			CHECK_INT(ms_tokenizer_decode(tok, ids, n, iter & 2, &s), 0);
			CHECK_MSG(valid_utf8(s), "%s: invalid UTF-8 out of decode", dirs[d]);
			free(s), free(ids);
		}
		/* random ids (also out of range) decode to valid UTF-8 */
		int32_t rid[40];
		for (int iter = 0; iter < 100; iter++) {
			for (int i = 0; i < 40; i++) {
				seed = seed * 1103515245u + 12345u;
				rid[i] = (int32_t)((seed >> 8) % (ms_tokenizer_vocab_size(tok) + 10)) - 5;
			}
			char *s;
			CHECK_INT(ms_tokenizer_decode(tok, rid, 40, iter & 1, &s), 0);
			CHECK_MSG(valid_utf8(s), "%s: invalid UTF-8 out of decode", dirs[d]);
			free(s);
		}
		ms_tokenizer_free(tok);
	}
	ms_tokenizer *tok = load("tokenizers/gpt2");
	int32_t *a, *b;
	size_t na, nb;
	CHECK_INT(ms_tokenizer_encode(tok, "x\xFFy", 3, 0, &a, &na), 0);
	CHECK_INT(ms_tokenizer_encode(tok, "x\xEF\xBF\xBDy", 5, 0, &b, &nb), 0);
	CHECK_MSG(na == nb && memcmp(a, b, na * sizeof *a) == 0, "[%s]", fmt_ids(a, na));
	free(a), free(b);
	ms_tokenizer_free(tok);
}

/* A long text tokenizes as the sum of its parts (its speed is a benchmark's business, not
 * a test's: no timed assertions here). */
TEST(long_input) {
	json_t *j = load_json("tokenizer-tests/swift-transformers/llama_encoded.json");
	const char *para = json_string_value(json_object_get(j, "text"));
	ms_buf big;
	ms_buf_init(&big);
	while (big.len < 400000) ms_buf_puts(&big, para);
	const char *dirs[] = {"tokenizers/llama2", "tokenizers/gpt2", "tokenizers/bert-base-uncased"};
	for (size_t d = 0; d < 3; d++) {
		ms_tokenizer *tok = load(dirs[d]);
		int32_t *ids, *one;
		size_t n, n1;
		CHECK_INT(ms_tokenizer_encode(tok, big.data, big.len, 0, &ids, &n), 0);
		CHECK_INT(ms_tokenizer_encode(tok, para, strlen(para), 0, &one, &n1), 0);
		CHECK(n > 600 * n1 / 2);
		free(ids), free(one);
		ms_tokenizer_free(tok);
	}
	ms_buf_free(&big);
	json_decref(j);
}

/* ---- a small hand-written tokenizer.json for the parts the fixtures don't use ---- */

static char tmpdir[256];

static void write_file(const char *name, const char *content) {
	char p[512];
	snprintf(p, sizeof p, "%s/%s", tmpdir, name);
	FILE *f = fopen(p, "wb");
	CHECK(f != NULL);
	fputs(content, f);
	fclose(f);
}

static ms_tokenizer *load_tmp(const char *json) {
	snprintf(tmpdir, sizeof tmpdir, "/tmp/ms-tok-XXXXXX");
	CHECK(mkdtemp(tmpdir) != NULL);
	write_file("tokenizer.json", json);
	ms_tokenizer *tok = NULL;
	char err[256];
	int rc = ms_tokenizer_load(tmpdir, &tok, err, sizeof err);
	char p[512];
	snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
	unlink(p);
	rmdir(tmpdir);
	CHECK_MSG(rc == 0, "load: %s", err);
	return tok;
}

static const char *enc_str(ms_tokenizer *tok, const char *text, int special) {
	int32_t *ids;
	size_t n;
	CHECK_INT(ms_tokenizer_encode(tok, text, strlen(text), special, &ids, &n), 0);
	static char buf[512];
	snprintf(buf, sizeof buf, "%s", fmt_ids(ids, n));
	free(ids);
	return buf;
}

TEST(metaspace_pair_merges_roberta) {
	/* Metaspace pre-tokenizer, merges as [a, b] pairs, RobertaProcessing, Metaspace decoder */
	ms_tokenizer *tok = load_tmp(
		"{\"added_tokens\":[{\"id\":0,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
		"{\"id\":1,\"content\":\"</s>\",\"special\":true,\"normalized\":false},"
		"{\"id\":9,\"content\":\"[X]\",\"special\":false,\"normalized\":false,\"lstrip\":true,\"rstrip\":true}],"
		"\"normalizer\":{\"type\":\"Lowercase\"},"
		"\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\",\"split\":true},"
		"\"post_processor\":{\"type\":\"RobertaProcessing\",\"sep\":[\"</s>\",1],\"cls\":[\"<s>\",0]},"
		"\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\"},"
		"\"model\":{\"type\":\"BPE\",\"unk_token\":\"u\",\"vocab\":{\"u\":2,\"\\u2581\":3,\"a\":4,\"b\":5,\"\\u2581a\":6,\"\\u2581ab\":7,\"ab\":8},"
		"\"merges\":[[\"\\u2581\",\"a\"],[\"\\u2581a\",\"b\"],[\"a\",\"b\"]]}}");
	CHECK_STR(enc_str(tok, "AB ab", 1), "0,7,7,1");
	CHECK_STR(enc_str(tok, "ab  [X]  ab c", 0), "7,9,7,3,2");
	int32_t *ids, *types;
	size_t n;
	CHECK_INT(ms_tokenizer_encode_pair(tok, "a", 1, "b", 1, &ids, &n, &types), 0);
	CHECK_STR(fmt_ids(ids, n), "0,6,1,1,3,5,1");
	free(ids), free(types);
	int32_t d[] = {0, 7, 7, 9, 6};
	char *s;
	CHECK_INT(ms_tokenizer_decode(tok, d, 5, 1, &s), 0);
	CHECK_STR(s, "ab ab[X] a");
	free(s);
	ms_tokenizer_free(tok);
}

TEST(split_digits_wordlevel_bpe_decoder) {
	ms_tokenizer *tok = load_tmp(
		"{\"added_tokens\":[],"
		"\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},{\"type\":\"Strip\"}]},"
		"\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"WhitespaceSplit\"},"
		"{\"type\":\"Digits\",\"individual_digits\":true},{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Removed\"}]},"
		"\"post_processor\":null,\"decoder\":{\"type\":\"BPEDecoder\",\"suffix\":\"</w>\"},"
		"\"model\":{\"type\":\"WordLevel\",\"unk_token\":\"?\",\"vocab\":{\"?\":0,\"x</w>\":1,\"1\":2,\"2\":3,\"fi\":4}}}");
	/* NFKC turns the ligature into "fi"; digits split one by one; "-" removed */
	CHECK_STR(enc_str(tok, "  \xEF\xAC\x81 12-1 zz ", 1), "4,2,3,2,0");
	int32_t d[] = {1, 1};
	char *s;
	CHECK_INT(ms_tokenizer_decode(tok, d, 2, 0, &s), 0);
	CHECK_STR(s, "x x");
	free(s);
	ms_tokenizer_free(tok);
}

TEST(load_errors) {
	ms_tokenizer *tok = NULL;
	char err[512] = "";
	CHECK_INT(ms_tokenizer_load("/nonexistent-dir", &tok, err, sizeof err), MS_ENOENT);
	CHECK(tok == NULL && strstr(err, "/nonexistent-dir/tokenizer.json"));
	const char *bad[] = {"{\"model\":", "[1,2]", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}",
			     "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}",
			     "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"nospace\"]}}",
			     "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"}}}"};
	for (size_t i = 0; i < MS_ARRAY_LEN(bad); i++) {
		snprintf(tmpdir, sizeof tmpdir, "/tmp/ms-tok-XXXXXX");
		CHECK(mkdtemp(tmpdir) != NULL);
		write_file("tokenizer.json", bad[i]);
		err[0] = 0;
		int rc = ms_tokenizer_load(tmpdir, &tok, err, sizeof err);
		char p[512];
		snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
		unlink(p);
		rmdir(tmpdir);
		CHECK_MSG(rc < 0 && tok == NULL, "case %zu loaded", i);
		CHECK_MSG(strstr(err, "tokenizer.json") != NULL, "case %zu: message \"%s\" names no file", i, err);
	}
}

/* ---- the CLI through bin/moonspace ---- */

static int run_cli(char *const argv[], char *out, size_t outlen) {
	int fds[2];
	CHECK(pipe(fds) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0) dup2(devnull, 2);
		char path[1024];
		snprintf(path, sizeof path, "%s/moonspace", test_bin_dir());
		execv(path, argv);
		_exit(127);
	}
	close(fds[1]);
	size_t n = 0;
	ssize_t r;
	while (n < outlen - 1 && (r = read(fds[0], out + n, outlen - 1 - n)) > 0) n += (size_t)r;
	out[n] = 0;
	close(fds[0]);
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(cli_tokenize) {
	char bin[1024];
	snprintf(bin, sizeof bin, "%s/moonspace", test_bin_dir());
	if (access(bin, X_OK) != 0) TEST_FAILF("%s is not built", bin);
	char llama[4200], bert[4200], out[4096];
	snprintf(llama, sizeof llama, "%s", fixture_path("tokenizers/llama2"));
	snprintf(bert, sizeof bert, "%s", fixture_path("tokenizers/bert-base-uncased"));
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", llama, "hello world", NULL}, out, sizeof out), 0);
	CHECK_STR(out, "[1, 22172, 3186]\n");
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", llama, "hello world", "--no-special", NULL}, out, sizeof out), 0);
	CHECK_STR(out, "[22172, 3186]\n");
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", bert, "", "--no-special", NULL}, out, sizeof out), 0);
	CHECK_STR(out, "[]\n");
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", bert, "", NULL}, out, sizeof out), 0);
	CHECK_STR(out, "[101, 102]\n");
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", bert, "--decode", "[101, 7592, 2088, 102]", NULL}, out, sizeof out), 0);
	CHECK_STR(out, "[CLS] hello world [SEP]\n");
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", bert, "--decode", "101 7592 2088 102", "--no-special", NULL}, out, sizeof out), 0);
	CHECK_STR(out, "hello world\n");
	/* Llama's byte tokens <0x00> <0x45> <0x00>: "\0E\0", not cut short at the first NUL */
	memset(out, 'x', 8);
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", llama, "--decode", "[3, 72, 3]", NULL}, out, sizeof out), 0);
	CHECK(!memcmp(out, "\0E\0\n", 5));
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", "--help", NULL}, out, sizeof out), 0);
	CHECK(strstr(out, "usage: moonspace tokenize") != NULL);
	CHECK(run_cli((char *[]){"moonspace", "tokenize", "/nonexistent", "x", NULL}, out, sizeof out) != 0);
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", bert, "--no-spec", "x", NULL}, out, sizeof out), 2);
	CHECK_INT(run_cli((char *[]){"moonspace", "tokenize", bert, "--no-special", "--", "--help", NULL}, out, sizeof out), 0);
	CHECK_STR(out, "[1011, 1011, 2393]\n");
	/* a Hub repo id, resolved in a Hugging Face cache laid out as huggingface_hub does */
	char hub[256], p[4600];
	snprintf(hub, sizeof hub, "/tmp/ms-tok-hub-XXXXXX");
	CHECK(mkdtemp(hub) != NULL);
	const char *dirs[] = {"models--test-org--tok", "models--test-org--tok/refs", "models--test-org--tok/snapshots",
			      "models--test-org--tok/snapshots/0123456789abcdef0123456789abcdef01234567"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof p, "%s/%s", hub, dirs[i]);
		CHECK(mkdir(p, 0755) == 0);
	}
	snprintf(p, sizeof p, "%s/models--test-org--tok/refs/main", hub);
	FILE *f = fopen(p, "w");
	CHECK(f != NULL);
	fputs("0123456789abcdef0123456789abcdef01234567", f);
	fclose(f);
	char target[4300], abs[PATH_MAX];
	CHECK(realpath(llama, abs) != NULL); /* the fixtures path may be relative */
	snprintf(target, sizeof target, "%s/tokenizer.json", abs);
	snprintf(p, sizeof p, "%s/models--test-org--tok/snapshots/0123456789abcdef0123456789abcdef01234567/tokenizer.json", hub);
	CHECK(symlink(target, p) == 0);
	setenv("HF_HUB_CACHE", hub, 1);
	int rc = run_cli((char *[]){"moonspace", "tokenize", "test-org/tok", "hello world", NULL}, out, sizeof out);
	unlink(p);
	const char *rm[] = {"models--test-org--tok/refs/main", "models--test-org--tok/snapshots/0123456789abcdef0123456789abcdef01234567",
			    "models--test-org--tok/snapshots", "models--test-org--tok/refs", "models--test-org--tok", ""};
	for (size_t i = 0; i < 6; i++) {
		snprintf(p, sizeof p, "%s/%s", hub, rm[i]);
		if (i == 0) unlink(p);
		else rmdir(p);
	}
	CHECK_INT(rc, 0);
	/* no tokenizer_config.json here: the template's BOS still applies */
	CHECK_STR(out, "[1, 22172, 3186]\n");
	CHECK(run_cli((char *[]){"moonspace", "tokenize", "test-org/missing", "x", NULL}, out, sizeof out) != 0);
	CHECK(run_cli((char *[]){"moonspace", "tokenize", bert, "--decode", "[1, \"x\"]", NULL}, out, sizeof out) != 0);
}

/* A truncated or corrupted tokenizer.json fails to load (or loads) but never crashes, and
 * whatever loads still encodes and decodes. */
static void mutate_loads(const char *orig, size_t len, unsigned seed) {
	for (int iter = 0; iter < 160; iter++) {
		char *m = malloc(len + 1);
		memcpy(m, orig, len + 1);
		size_t ml = len;
		if (iter < 60) {
			ml = (size_t)iter * (len / 60);
		} else {
			for (int k = 0; k < 4; k++) {
				seed = seed * 1103515245u + 12345u;
				size_t at = (seed >> 8) % len;
				const char subst[] = "{}[]\",:0-9e\\ ";
				m[at] = subst[(seed >> 4) % (sizeof subst - 1)];
			}
		}
		snprintf(tmpdir, sizeof tmpdir, "/tmp/ms-tok-XXXXXX");
		CHECK(mkdtemp(tmpdir) != NULL);
		char p[512];
		snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
		FILE *f = fopen(p, "wb");
		CHECK(f != NULL);
		fwrite(m, 1, ml, f);
		fclose(f);
		ms_tokenizer *tok = NULL;
		char err[256];
		int rc = ms_tokenizer_load(tmpdir, &tok, err, sizeof err);
		unlink(p);
		rmdir(tmpdir);
		if (rc == 0) {
			int32_t *ids;
			size_t n;
			CHECK_INT(ms_tokenizer_encode(tok, "Once upon a time \xFF", 18, 1, &ids, &n), 0);
			char *s;
			CHECK_INT(ms_tokenizer_decode(tok, ids, n, 0, &s), 0);
			CHECK(valid_utf8(s));
			free(s), free(ids);
			ms_tokenizer_free(tok);
		} else {
			CHECK(tok == NULL);
		}
		free(m);
	}
}

static const char rich_json[] =
	"{\"added_tokens\":[{\"id\":0,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
	"{\"id\":1,\"content\":\"</s>\",\"special\":true,\"normalized\":true,\"single_word\":true},"
	"{\"id\":9,\"content\":\"[X]\",\"special\":false,\"normalized\":false,\"lstrip\":true,\"rstrip\":true}],"
	"\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKD\"},{\"type\":\"StripAccents\"},"
	"{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"content\":\" \"},{\"type\":\"Prepend\",\"prepend\":\"x\"}]},"
	"\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Punctuation\",\"behavior\":\"MergedWithPrevious\"},"
	"{\"type\":\"Split\",\"pattern\":{\"String\":\"b\"},\"behavior\":\"MergedWithNext\",\"invert\":false},"
	"{\"type\":\"Split\",\"pattern\":{\"String\":\"a\"},\"behavior\":\"Contiguous\"},"
	"{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":false}]},"
	"\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
	"{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},"
	"{\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[0],\"tokens\":[\"<s>\"]}}},"
	"\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteLevel\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"},"
	"\"content\":\"b\"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":1},"
	"{\"type\":\"WordPiece\",\"prefix\":\"##\",\"cleanup\":true}]},"
	"\"model\":{\"type\":\"BPE\",\"unk_token\":\"u\",\"byte_fallback\":true,\"fuse_unk\":true,\"continuing_subword_prefix\":\"##\","
	"\"end_of_word_suffix\":\"</w>\",\"vocab\":{\"u\":2,\"\\u0120\":3,\"a\":4,\"##b\":5,\"ab\":6,\"<0x41>\":7,\"##a</w>\":8},"
	"\"merges\":[\"a ##b\",[\"\\u0120\",\"a\"]]}}";

TEST(load_mutated_files) {
	size_t len;
	char *orig = test_read_file(fixture_path("models/stories260K/tokenizer.json"), &len);
	CHECK(orig != NULL && len > 1000);
	mutate_loads(orig, len, 777);
	free(orig);
	/* the feature-rich file loads as it is, then mutated */
	ms_tokenizer *tok = load_tmp(rich_json);
	const char *t = "  ab\tÁ [X] </s> </s>x  ";
	int32_t *ids;
	size_t n;
	CHECK_INT(ms_tokenizer_encode(tok, t, strlen(t), 1, &ids, &n), 0);
	CHECK_MSG(n > 4 && ids[0] == 0, "[%s]", fmt_ids(ids, n));
	int has_x = 0;
	for (size_t i = 0; i < n; i++) has_x |= ids[i] == 9;
	CHECK_MSG(has_x, "[X] not split off: [%s]", fmt_ids(ids, n));
	char *s;
	CHECK_INT(ms_tokenizer_decode(tok, ids, n, 0, &s), 0);
	CHECK(valid_utf8(s));
	free(s), free(ids);
	ms_tokenizer_free(tok);
	mutate_loads(rich_json, strlen(rich_json), 4242);
}

/* Thousands of added tokens (Whisper has ~1600) all match, longest first. */
TEST(many_added_tokens) {
	ms_buf j;
	ms_buf_init(&j);
	ms_buf_puts(&j, "{\"added_tokens\":[");
	for (int i = 0; i < 3000; i++)
		ms_buf_printf(&j, "%s{\"id\":%d,\"content\":\"<|%d.%02d|>\",\"special\":true,\"normalized\":false}", i ? "," : "", 100 + i, i / 100, i % 100);
	ms_buf_puts(&j, "],\"model\":{\"type\":\"WordLevel\",\"unk_token\":\"?\",\"vocab\":{\"?\":0,\"a\":1}},"
			"\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"}}");
	ms_tokenizer *tok = load_tmp(j.data);
	ms_buf_free(&j);
	ms_buf text;
	ms_buf_init(&text);
	while (text.len < 300000) ms_buf_puts(&text, "a <<|a <|12.34|>a|> <|29.99|><|0.00|> ");
	int32_t *ids;
	size_t n;
	CHECK_INT(ms_tokenizer_encode(tok, text.data, text.len, 0, &ids, &n), 0);
	/* "a" "<<|a" (unknown) "<|12.34|>" "a|>" (unknown) "<|29.99|>" "<|0.00|>" */
	int32_t want[] = {1, 0, 100 + 1234, 0, 100 + 2999, 100, 1};
	CHECK_MSG(n > 7 && memcmp(ids, want, sizeof want) == 0, "[%.200s]", fmt_ids(ids, n));
	free(ids);
	ms_buf_free(&text);
	ms_tokenizer_free(tok);
}

/* The model fixtures' own references (ids from tokenizers.js / transformers): input ids,
 * token strings, and decoded greedy continuations where given. */
static void model_refs(const char *ref, const char *list, const char *tokdir) {
	ms_tokenizer *tok = load(tokdir);
	json_t *j = load_json(ref);
	json_t *arr = json_object_get(j, list);
	CHECK_MSG(json_array_size(arr) > 0, "%s: no %s", ref, list);
	for (size_t i = 0; i < json_array_size(arr); i++) {
		json_t *c = json_array_get(arr, i);
		const char *text = json_string_value(json_object_get(c, "text"));
		int32_t *ids;
		size_t n;
		CHECK_INT(ms_tokenizer_encode(tok, text, strlen(text), 1, &ids, &n), 0);
		char what[256];
		snprintf(what, sizeof what, "%s %s[%zu] \"%.60s\"", ref, list, i, text);
		check_ids(ids, n, json_object_get(c, "input_ids"), what);
		json_t *toks = json_object_get(c, "tokens");
		for (size_t k = 0; k < json_array_size(toks) && k < n; k++)
			CHECK_STR(ms_tokenizer_id_to_token(tok, ids[k]), json_string_value(json_array_get(toks, k)));
		json_t *tt = json_object_get(c, "token_type_ids");
		if (tt) {
			int32_t *pids, *types;
			size_t pn;
			CHECK_INT(ms_tokenizer_encode_pair(tok, text, strlen(text), "", 0, &pids, &pn, &types), 0);
			for (size_t k = 0; k < json_array_size(tt) && k < pn; k++) CHECK_INT(types[k], json_integer_value(json_array_get(tt, k)));
			free(pids), free(types);
		}
		json_t *g = json_object_get(c, "greedy"), *want = json_object_get(g, "new_text_decoded");
		if (want) {
			json_t *nid = json_object_get(g, "new_ids");
			int32_t gen[256];
			size_t gn = 0;
			for (size_t k = 0; k < json_array_size(nid) && gn < 256; k++) gen[gn++] = (int32_t)json_integer_value(json_array_get(nid, k));
			char *s;
			CHECK_INT(ms_tokenizer_decode(tok, gen, gn, 1, &s), 0);
			CHECK_STR(s, json_string_value(want));
			free(s);
		}
		free(ids);
	}
	json_decref(j);
	ms_tokenizer_free(tok);
}

TEST(model_fixture_ids) {
	model_refs("models/tiny-bert-cls/reference.json", "sentences", "models/tiny-bert-cls");
	model_refs("models/tiny-distilbert-cls/reference.json", "sentences", "models/tiny-distilbert-cls");
	model_refs("models/tiny-llama-gqa/reference.json", "prompts", "models/tiny-llama-gqa");
	model_refs("models/tiny-llama-gqa-sharded-f16/reference.json", "prompts", "models/tiny-llama-gqa-sharded-f16");
	model_refs("models/tiny-gpt2-f16/reference.json", "prompts", "tokenizers/gpt2");
	model_refs("models/tiny-random-bert/reference_outputs.json", "cases", "tokenizers/bert-base-uncased");
}

/* Unigram (Viterbi by piece scores, unknowns fused) behind a Precompiled charsmap: a
 * hand-built darts-clone trie mapping "A" to "a". */
TEST(unigram_precompiled) {
	ms_tokenizer *tok = load_tmp(
		"{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false}],"
		"\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"DAEAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABBCQAAAAAAAAAAAIBhAA==\"},"
		"\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\",\"split\":true},"
		"\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\"},"
		"\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0.0],[\"\\u2581\",-1.0],[\"\\u2581a\",-2.0],"
		"[\"b\",-2.5],[\"ab\",-3.0],[\"\\u2581ab\",-6.0],[\"a\",-1.5],[\"c\",-4.0]]}}");
	/* "Ab" -> "ab" -> "\u2581ab": best path \u2581 + ab (-4) over \u2581a + b (-4.5), \u2581ab (-6) */
	CHECK_STR(enc_str(tok, "Ab", 0), "1,4");
	/* unknown "xx" fuses into one <unk>; "cA" -> "ca" */
	CHECK_STR(enc_str(tok, "Ab xx cA", 0), "1,4,1,0,1,7,6");
	int32_t d[] = {1, 4, 2, 3};
	char *s;
	CHECK_INT(ms_tokenizer_decode(tok, d, 4, 0, &s), 0);
	CHECK_STR(s, "ab ab");
	free(s);
	CHECK_INT(ms_tokenizer_vocab_size(tok), 8);
	ms_tokenizer_free(tok);
}
