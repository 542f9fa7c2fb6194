/* tests/unit/test_runtime_kernels.c: matmul (AVX2 and portable paths, 1 and 2 threads,
 * ragged sizes) against a double-precision reference; elementwise kernels; the sampler. */
#include "runtime/kernels.h"
#include "runtime/sampler.h"
#include "tests/testlib.h"

TEST_SUITE("runtime_kernels")

static uint64_t rng = 88172645463325252ull;
static float rnd(void) {
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}

static void check_matmul(int portable, int threads) {
	ms_kernels_force_portable(portable);
	ms_pool pool;
	CHECK_INT(ms_pool_init(&pool, threads), 0);
	int sizes[][3] = {{1, 1, 1}, {1, 7, 13}, {3, 9, 33}, {5, 64, 64}, {2, 131, 257}, {33, 67, 200}, {1, 1000, 96}};
	for (size_t s = 0; s < MS_ARRAY_LEN(sizes); s++) {
		int n = sizes[s][0], d = sizes[s][1], k = sizes[s][2];
		float *x = malloc((size_t)n * k * 4), *w = malloc((size_t)d * k * 4), *b = malloc((size_t)d * 4),
		      *o = malloc((size_t)n * d * 4);
		for (int i = 0; i < n * k; i++) x[i] = rnd();
		for (int i = 0; i < d * k; i++) w[i] = rnd();
		for (int i = 0; i < d; i++) b[i] = rnd();
		ms_matmul(&pool, o, x, w, s % 2 ? b : NULL, n, d, k);
		for (int i = 0; i < n; i++)
			for (int r = 0; r < d; r++) {
				double ref = s % 2 ? b[r] : 0;
				for (int e = 0; e < k; e++) ref += (double)x[i * k + e] * w[r * k + e];
				CHECK_MSG(fabs(o[i * d + r] - ref) < 1e-5 * (1 + sqrt(k)), "n=%d d=%d k=%d [%d][%d]: %g vs %g", n, d,
					  k, i, r, o[i * d + r], ref);
			}
		free(x), free(w), free(b), free(o);
	}
	ms_pool_free(&pool);
	ms_kernels_force_portable(0);
}

TEST(matmul_avx2_1_thread) { check_matmul(0, 1); }
TEST(matmul_avx2_2_threads) { check_matmul(0, 2); }
TEST(matmul_portable_1_thread) { check_matmul(1, 1); }
TEST(matmul_portable_3_threads) { check_matmul(1, 3); }

TEST(elementwise) {
	float x[5] = {1, 2, 3, 4, 1000}, o[5], w[5] = {1, 1, 1, 1, 1}, b[5] = {0};
	ms_softmax(x, 5);
	CHECK_NEAR(x[4], 1.0, 1e-6);
	CHECK(x[0] >= 0 && !isnan(x[0]));
	float y[4] = {3, 4, 0, 0};
	ms_rmsnorm(o, y, w, 4, 0);
	CHECK_NEAR(o[0], 3 / sqrt(25.0 / 4), 1e-6);
	ms_layernorm(o, y, w, b, 4, 0);
	CHECK_NEAR(o[0] + o[1] + o[2] + o[3], 0, 1e-5);
	CHECK_NEAR(ms_gelu(1.0f), 0.8413447460685429, 1e-6);
	CHECK_NEAR(ms_gelu_new(1.0f), 0.8411919906082768, 1e-6);
	CHECK_NEAR(ms_silu(1.0f), 0.7310585786300049, 1e-6);
}

TEST(sampler) {
	ms_sampler s;
	float l[6] = {1, 5, 2, 5, 0, -1};
	CHECK_INT(ms_argmax(l, 6), 1); /* first of a tie */
	CHECK_INT(ms_sampler_init(&s, 6, 0, 0, 1, 1, 1), 0);
	CHECK_INT(ms_sampler_sample(&s, l, NULL, 0), 1);
	ms_sampler_free(&s);
	/* repetition penalty 2 on id 1: 5 -> 2.5, so id 3 wins greedily */
	float l2[6] = {1, 5, 2, 5, 0, -1};
	int32_t hist[] = {1, 1, 4};
	CHECK_INT(ms_sampler_init(&s, 6, 0, 0, 1, 2, 1), 0);
	CHECK_INT(ms_sampler_sample(&s, l2, hist, 3), 3);
	CHECK_NEAR(l2[1], 2.5, 1e-6);
	CHECK_NEAR(l2[4], 0, 1e-6);
	ms_sampler_free(&s);
	/* top-k 2: only ids 1 and 3 are ever drawn; top-p 0.5 of a peaked distribution: only the top */
	int counts[6] = {0};
	CHECK_INT(ms_sampler_init(&s, 6, 1, 2, 1, 1, 42), 0);
	for (int i = 0; i < 2000; i++) {
		float t[6] = {1, 5, 2, 5, 0, -1};
		counts[ms_sampler_sample(&s, t, NULL, 0)]++;
	}
	ms_sampler_free(&s);
	CHECK(counts[0] == 0 && counts[2] == 0 && counts[4] == 0 && counts[5] == 0);
	CHECK(counts[1] > 800 && counts[3] > 800);
	CHECK_INT(ms_sampler_init(&s, 6, 1, 0, 0.5f, 1, 42), 0);
	for (int i = 0; i < 200; i++) {
		float t[6] = {0, 9, 0, 0, 0, 0};
		CHECK_INT(ms_sampler_sample(&s, t, NULL, 0), 1);
	}
	ms_sampler_free(&s);
}

TEST(matmul_q8) {
	for (int it = 0; it < 4; it++) { /* AVX2 / portable x 3 rows / 5 rows (dequantised tiles) */
		int portable = it & 1, n = it < 2 ? 3 : 5;
		ms_kernels_force_portable(portable);
		ms_pool pool;
		CHECK_INT(ms_pool_init(&pool, 2), 0);
		int d = 37, k = 96 * 4;
		float *x = malloc((size_t)n * k * 4), *w = malloc((size_t)d * k * 4), *o = malloc((size_t)n * d * 4);
		int8_t *q = malloc((size_t)d * k);
		float *s = malloc((size_t)d * (k / MS_Q8_BLOCK) * 4);
		for (int i = 0; i < n * k; i++) x[i] = rnd();
		for (int i = 0; i < d * k; i++) w[i] = rnd();
		ms_q8_quantize(w, (size_t)d, k, q, s);
		ms_q8 wq = {q, s};
		ms_matmul_q8(&pool, o, x, &wq, NULL, n, d, k);
		for (int i = 0; i < n; i++)
			for (int r = 0; r < d; r++) {
				double deq = 0, exact = 0;
				for (int e = 0; e < k; e++) {
					deq += (double)x[i * k + e] * q[r * k + e] * s[r * (k / MS_Q8_BLOCK) + e / MS_Q8_BLOCK];
					exact += (double)x[i * k + e] * w[r * k + e];
				}
				CHECK_NEAR(o[i * d + r], deq, 1e-4);
				CHECK_NEAR(o[i * d + r], exact, 0.045); /* quantisation error: ~6 sigma over 384 terms */
			}
		free(x), free(w), free(o), free(q), free(s);
		ms_pool_free(&pool);
	}
	ms_kernels_force_portable(0);
}
