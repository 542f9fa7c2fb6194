/* tests/unit/test_runtime_safetensors.c: the safetensors loader on real fixtures, on
 * thousands of truncated and mutated copies of one (each must load or fail with an error
 * naming the file, never crash; run under ASan too), and on hand-made hostile headers. */
#include <stdint.h>

#include "runtime/safetensors.h"
#include "tests/testlib.h"

TEST_SUITE("runtime_safetensors")

static char tmpdir[256];

static void make_tmpdir(void) {
	snprintf(tmpdir, sizeof tmpdir, "/tmp/ms-st-XXXXXX");
	CHECK(mkdtemp(tmpdir));
}
static void rm_tmpdir(void) {
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	CHECK(system(cmd) == 0);
}

static void write_bytes(const char *path, const void *data, size_t len) {
	FILE *f = fopen(path, "wb");
	CHECK(f);
	CHECK(len == 0 || fwrite(data, 1, len, f) == len);
	CHECK(fclose(f) == 0);
}

/* Opens path; on failure checks the message names the file. Returns the rc. */
static int try_open(const char *path, const char *name_in_err) {
	ms_st st;
	char err[1024] = "";
	int rc = ms_st_open(&st, path, err, sizeof err);
	if (rc == 0) {
		/* whatever was accepted must be readable in full */
		for (size_t i = 0; i < st.n_tensors; i++) {
			const ms_st_tensor *t = &st.tensors[i];
			CHECK(t->data >= (const uint8_t *)st.files[t->file].map);
			CHECK(t->data + t->nbytes <= (const uint8_t *)st.files[t->file].map + st.files[t->file].size);
			float *f = malloc((t->numel ? t->numel : 1) * sizeof *f);
			CHECK(f);
			CHECK_INT(ms_st_read_f32(t, f, t->numel), 0);
			free(f);
		}
		ms_st_close(&st);
	} else {
		CHECK(rc < 0);
		CHECK_MSG(strstr(err, name_in_err) != NULL, "error does not name the file: %.400s", err);
		CHECK_INT(st.n_tensors, 0);
	}
	return rc;
}

TEST(fixtures_load) {
	struct { const char *dir; size_t n; ms_st_dtype dt; } cases[] = {
		{"models/stories260K", 47, MS_ST_F32},
		{"models/tiny-llama-gqa", 30, MS_ST_BF16},
		{"models/tiny-llama-gqa-sharded-f16", 30, MS_ST_F16},
		{"models/tiny-gpt2-f16", 28, MS_ST_F16},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(cases); i++) {
		ms_st st;
		char err[512];
		CHECK_MSG(ms_st_open(&st, fixture_path(cases[i].dir), err, sizeof err) == 0, "%s", err);
		CHECK_INT(st.n_tensors, cases[i].n);
		const ms_st_tensor *t = ms_st_find(&st, st.tensors[0].name);
		CHECK(t == &st.tensors[0]);
		CHECK_INT(t->dtype, cases[i].dt);
		CHECK(ms_st_find(&st, "no.such.tensor") == NULL);
		ms_st_close(&st);
	}
	/* the sharded checkpoint spans two files; one layer is split across them */
	ms_st st;
	char err[512];
	CHECK_INT(ms_st_open(&st, fixture_path("models/tiny-llama-gqa-sharded-f16"), err, sizeof err), 0);
	CHECK_INT(st.n_files, 2);
	const ms_st_tensor *e = ms_st_find(&st, "model.embed_tokens.weight"), *h = ms_st_find(&st, "lm_head.weight");
	CHECK(e && h && e->file != h->file);
	CHECK_INT(e->shape[0], 512);
	CHECK_INT(e->shape[1], 64);
	ms_st_close(&st);
}

TEST(dtype_conversions) {
	CHECK(ms_f16_to_f32(0x3c00) == 1.0f);
	CHECK(ms_f16_to_f32(0xc000) == -2.0f);
	CHECK(ms_f16_to_f32(0x7bff) == 65504.0f);
	CHECK(ms_f16_to_f32(0x0001) == 5.9604644775390625e-08f); /* smallest subnormal */
	CHECK(ms_f16_to_f32(0x03ff) == 6.0975551605224609375e-05f);
	CHECK(isinf(ms_f16_to_f32(0x7c00)));
	CHECK(isnan(ms_f16_to_f32(0x7e00)));
	CHECK(ms_bf16_to_f32(0x3f80) == 1.0f);
	CHECK(ms_bf16_to_f32(0xc0a0) == -5.0f);
	/* BF16 vs F16 copies of the same weights agree (the F16 file was cast from the BF16 one) */
	ms_st a, b;
	char err[512];
	CHECK_INT(ms_st_open(&a, fixture_path("models/tiny-llama-gqa"), err, sizeof err), 0);
	CHECK_INT(ms_st_open(&b, fixture_path("models/tiny-llama-gqa-sharded-f16"), err, sizeof err), 0);
	const ms_st_tensor *ta = ms_st_find(&a, "model.layers.1.mlp.up_proj.weight"),
			   *tb = ms_st_find(&b, "model.layers.1.mlp.up_proj.weight");
	CHECK(ta && tb && ta->numel == tb->numel);
	float *fa = malloc(ta->numel * 4), *fb = malloc(tb->numel * 4);
	CHECK_INT(ms_st_read_f32(ta, fa, ta->numel), 0);
	CHECK_INT(ms_st_read_f32(tb, fb, tb->numel), 0);
	CHECK_INT(ms_st_read_f32(ta, fa, ta->numel - 1), MS_EINVAL);
	for (size_t i = 0; i < ta->numel; i++) CHECK_NEAR(fa[i], fb[i], 1e-3 * fabs(fa[i]) + 1e-6);
	free(fa);
	free(fb);
	ms_st_close(&a);
	ms_st_close(&b);
}

TEST_T(truncated_copies, 120) {
	size_t len;
	char *src = test_read_file(fixture_path("models/stories260K/model.safetensors"), &len);
	CHECK(src);
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (uint8_t)src[i];
	make_tmpdir();
	char path[512];
	snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
	size_t n_err = 0, n_tried = 0;
	/* every length through the header, then a spread over the data area */
	for (size_t l = 0; l < len; l += l < 8 + hlen + 16 ? 1 : len / 97) {
		write_bytes(path, src, l);
		CHECK_MSG(try_open(path, tmpdir) != 0, "truncated to %zu of %zu bytes but accepted", l, len);
		n_err++, n_tried++;
	}
	write_bytes(path, src, len);
	CHECK_INT(try_open(path, tmpdir), 0);
	CHECK(n_tried > hlen);
	/* the directory form reports the file inside it */
	write_bytes(path, src, len / 2);
	CHECK(try_open(tmpdir, "model.safetensors") != 0);
	rm_tmpdir();
	free(src);
}

TEST_T(mutated_copies, 120) {
	size_t len;
	char *src = test_read_file(fixture_path("models/stories260K/model.safetensors"), &len);
	CHECK(src);
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (uint8_t)src[i];
	make_tmpdir();
	char path[512];
	snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
	char *mut = malloc(len);
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	int rejected = 0;
	for (int iter = 0; iter < 1500; iter++) {
		memcpy(mut, src, len);
		int flips = 1 + iter % 4;
		for (int f = 0; f < flips; f++) {
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			size_t at = (size_t)(rng % (8 + hlen)); /* the header and its length field */
			static const char repl[] = "0123456789[]{},:\"-eE.9FBLI";
			mut[at] = (rng >> 32) & 1 ? repl[(rng >> 40) % (sizeof repl - 1)] : (char)(rng >> 48);
		}
		write_bytes(path, mut, len);
		rejected += try_open(path, tmpdir) != 0;
	}
	CHECK(rejected > 500); /* most mutations must be caught */
	free(mut);
	rm_tmpdir();
	free(src);
}

/* A file with the given JSON header and data bytes. */
static void write_st(const char *path, const char *json, size_t data_len) {
	size_t hl = strlen(json);
	uint8_t *b = calloc(1, 8 + hl + data_len + 1);
	for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	memcpy(b + 8, json, hl);
	write_bytes(path, b, 8 + hl + data_len);
	free(b);
}

TEST(hostile_headers) {
	struct { const char *json; size_t data; int ok; const char *msg; } cases[] = {
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, 1, NULL},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 15, 0, "outside"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16, 0, "need"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,16]}}", 16, 0, "overflow"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,16]}}", 16, 0, "overflow"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,18446744073709551615]}}", 16, 0, "JSON"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[9223372036854775800,9223372036854775807]}}", 16, 0, "outside"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,4]}}", 16, 0, "outside"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16, 0, "shape"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,16]}}", 16, 0, "shape"},
		{"{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, 0, "dtype"},
		{"{\"a\":{\"shape\":[2],\"data_offsets\":[0,16]}}", 16, 0, "dtype"},
		{"{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
		 "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[4,12]}}", 16, 0, "overlap"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0, "JSON"},
		{"[1,2,3]", 0, 0, "object"},
		{"{\"a\":", 0, 0, "JSON"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0, "dims"},
		{"{\"__metadata__\":{\"format\":\"pt\"},\"z\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,2]}}", 2, 1, NULL},
	};
	make_tmpdir();
	char path[512];
	snprintf(path, sizeof path, "%s/x.safetensors", tmpdir);
	for (size_t i = 0; i < MS_ARRAY_LEN(cases); i++) {
		write_st(path, cases[i].json, cases[i].data);
		ms_st st;
		char err[1024] = "";
		int rc = ms_st_open(&st, path, err, sizeof err);
		if (cases[i].ok) {
			CHECK_MSG(rc == 0, "case %zu rejected: %.400s", i, err);
			ms_st_close(&st);
		} else {
			CHECK_MSG(rc < 0, "case %zu accepted", i);
			CHECK_MSG(strstr(err, path) && strstr(err, cases[i].msg), "case %zu: message %.400s lacks %s", i, err,
				  cases[i].msg);
		}
	}
	/* a header length far past the end */
	uint8_t b[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
	write_bytes(path, b, sizeof b);
	CHECK(try_open(path, path) == MS_EFORMAT);
	/* a missing file */
	snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
	CHECK(try_open(path, path) == MS_ENOENT);
	rm_tmpdir();
}

TEST(hostile_index) {
	make_tmpdir();
	char path[512];
	snprintf(path, sizeof path, "%s/model-1.safetensors", tmpdir);
	write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmpdir);
	const char *bad[] = {
		"{\"weight_map\":{\"a\":\"../model-1.safetensors\"}}",
		"{\"weight_map\":{\"a\":\"model-2.safetensors\"}}",
		"{\"weight_map\":{\"b\":\"model-1.safetensors\"}}",
		"{\"weight_map\":{}}",
		"{\"weight_map\":{\"a\":7}}",
		"not json",
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(bad); i++) {
		write_bytes(path, bad[i], strlen(bad[i]));
		CHECK_MSG(try_open(tmpdir, tmpdir) != 0, "index %zu accepted", i);
	}
	const char *good = "{\"metadata\":{},\"weight_map\":{\"a\":\"model-1.safetensors\"}}";
	write_bytes(path, good, strlen(good));
	CHECK_INT(try_open(tmpdir, tmpdir), 0);
	rm_tmpdir();
}

TEST(fuzz_tool_runs) {
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "%s/tests/tool_fuzz_safetensors %s/models/stories260K > /dev/null", test_bin_dir(),
		 fixtures_dir());
	fixture_path("models/stories260K");
	CHECK_INT(system(cmd), 0);
}
