/* tests/unit/test_runtime_kernels.c: matmul (portable, AVX2 and AVX-512 paths, 1 to 3
 * threads, ragged sizes) against a double-precision reference; 8-bit products; elementwise
 * kernels; the sampler. */
#include "runtime/kernels.h"
#include "runtime/sampler.h"
#include "tests/testlib.h"

TEST_SUITE("runtime_kernels")

static uint64_t rng = 88172645463325252ull;
static float rnd(void) {
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}

/* Caps the kernels at level; skips when the CPU has less. */
static void use_level(int level) {
	ms_kernels_cap(MS_KERNELS_AVX512);
	if (ms_kernels_level() < level) SKIP("this CPU has no kernels of level %d", level);
	ms_kernels_cap(level);
}

static void check_matmul(int level, int threads) {
	use_level(level);
	ms_pool pool;
	CHECK_INT(ms_pool_init(&pool, threads), 0);
	/* one token (rows one at a time); 2 to 8 (each tile shape and remainder); k not a
	 * multiple of 8 or 16, and k past one 2048-column slice */
	int sizes[][3] = {{1, 1, 1},     {1, 7, 13},   {3, 9, 33},   {4, 12, 40},  {5, 64, 64},   {2, 131, 257},
			  {6, 8, 17},    {7, 20, 100}, {8, 9, 48},   {33, 67, 200}, {1, 1000, 96}, {5, 13, 2100}};
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
	ms_kernels_cap(MS_KERNELS_AVX512);
}

TEST(matmul_avx512_1_thread) { check_matmul(MS_KERNELS_AVX512, 1); }
TEST(matmul_avx512_2_threads) { check_matmul(MS_KERNELS_AVX512, 2); }
TEST(matmul_avx2_1_thread) { check_matmul(MS_KERNELS_AVX2, 1); }
TEST(matmul_avx2_2_threads) { check_matmul(MS_KERNELS_AVX2, 2); }
TEST(matmul_portable_1_thread) { check_matmul(MS_KERNELS_PORTABLE, 1); }
TEST(matmul_portable_3_threads) { check_matmul(MS_KERNELS_PORTABLE, 3); }

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

/* The vectorised softmax and SwiGLU against double precision, across the range (both ends
 * clamped) and with lengths off the vector width, on each path. */
static void check_softmax_silu(int level) {
	use_level(level);
	enum { N = 203 };
	float x[N], h[N], g[N];
	for (int i = 0; i < N; i++) x[i] = (float)(i - 150) * 0.6f + rnd(); /* -90 .. 32 */
	x[7] = 0.0f, x[8] = -1e-8f;
	for (int n = N; n > N - 9; n -= 4) { /* a tail of 3, 7 and 11 */
		float y[N];
		memcpy(y, x, sizeof y);
		double m = -1e30, s = 0;
		for (int i = 0; i < n; i++) m = fmax(m, x[i]);
		for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
		ms_softmax(y, n);
		for (int i = 0; i < n; i++) {
			double want = exp((double)x[i] - m) / s;
			CHECK_MSG(fabs(y[i] - want) <= 1e-5 * want + 1e-8, "softmax[%d] of %d: %g, want %g", i, n, y[i], want);
		}
	}
	for (int i = 0; i < N; i++) h[i] = (float)(i - 101) * 1.0f + rnd(), g[i] = rnd() * 4; /* -101 .. 101 */
	h[0] = -1000.0f, h[1] = 1000.0f, h[2] = 0.0f;
	float hs[N];
	memcpy(hs, h, sizeof hs);
	ms_silu_mul(h, g, N);
	for (int i = 0; i < N; i++) {
		double want = (double)hs[i] / (1.0 + exp(-(double)hs[i])) * g[i];
		CHECK_MSG(fabs(h[i] - want) <= 1e-6 * fabs(want) + 1e-30, "silu(%g) * %g = %g, want %g", hs[i], g[i], h[i], want);
	}
	ms_kernels_cap(MS_KERNELS_AVX512);
}

TEST(softmax_silu_avx2) { check_softmax_silu(MS_KERNELS_AVX2); }
TEST(softmax_silu_portable) { check_softmax_silu(MS_KERNELS_PORTABLE); }

/* Attention's scores and weighted values against double precision: widths of a full 64,
 * a multiple of 8 and neither, 1 to 13 positions (groups of eight, of four, and the rest). */
static void check_attention_kernels(int level) {
	use_level(level);
	int dims[] = {64, 128, 24, 13};
	for (size_t di = 0; di < MS_ARRAY_LEN(dims); di++)
		for (int n = 1; n <= 13; n++) {
			int dim = dims[di];
			size_t ld = (size_t)dim + 3; /* rows apart, as in a cache */
			float q[128], kv[13 * 131], w[13], out[131];
			for (int e = 0; e < dim; e++) q[e] = rnd();
			for (size_t e = 0; e < (size_t)n * ld; e++) kv[e] = rnd();
			for (int p = 0; p < n; p++) w[p] = rnd();
			ms_dots(out, q, kv, n, dim, ld, 0.125f);
			for (int p = 0; p < n; p++) {
				double ref = 0;
				for (int e = 0; e < dim; e++) ref += (double)q[e] * kv[(size_t)p * ld + e];
				CHECK_MSG(fabs(out[p] - ref * 0.125) < 1e-6, "dots dim=%d n=%d [%d]: %g vs %g", dim, n, p, out[p], ref * 0.125);
			}
			ms_weighted_sum(out, w, kv, n, dim, ld);
			for (int e = 0; e < dim; e++) {
				double ref = 0;
				for (int p = 0; p < n; p++) ref += (double)w[p] * kv[(size_t)p * ld + e];
				CHECK_MSG(fabs(out[e] - ref) < 1e-6, "weighted sum dim=%d n=%d [%d]: %g vs %g", dim, n, e, out[e], ref);
			}
		}
	ms_kernels_cap(MS_KERNELS_AVX512);
}

TEST(attention_kernels_avx2) { check_attention_kernels(MS_KERNELS_AVX2); }
TEST(attention_kernels_portable) { check_attention_kernels(MS_KERNELS_PORTABLE); }

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

/* Draw frequencies against the distribution transformers' warpers define: softmax(l / T),
 * then top-k, then the smallest head whose mass reaches top-p, renormalised. */
static void check_draws(float temp, int top_k, float top_p, const double *want) {
	const double p[4] = {0.5, 0.3, 0.15, 0.05};
	enum { DRAWS = 40000 };
	int counts[4] = {0};
	ms_sampler s;
	CHECK_INT(ms_sampler_init(&s, 4, temp, top_k, top_p, 1, 7), 0);
	for (int i = 0; i < DRAWS; i++) {
		float l[4];
		for (int k = 0; k < 4; k++) l[k] = (float)log(p[k]) + 3.0f; /* an offset softmax ignores */
		counts[ms_sampler_sample(&s, l, NULL, 0)]++;
	}
	ms_sampler_free(&s);
	for (int k = 0; k < 4; k++)
		CHECK_MSG(fabs(counts[k] / (double)DRAWS - want[k]) < 0.01, "T %g top-k %d top-p %g: id %d drawn %.4f, want %.4f",
			  temp, top_k, top_p, k, counts[k] / (double)DRAWS, want[k]);
}

TEST(sampler_distributions) {
	check_draws(1, 0, 1, (const double[]){0.5, 0.3, 0.15, 0.05});
	check_draws(1, 0, 0.7f, (const double[]){0.625, 0.375, 0, 0});     /* 0.5 + 0.3 reaches 0.7 */
	check_draws(1, 0, 0.9f, (const double[]){0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
	check_draws(1, 3, 1, (const double[]){0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
	check_draws(1, 3, 0.5f, (const double[]){1, 0, 0, 0});
	/* T = 2: p^(1/2), normalised */
	double r[4] = {sqrt(0.5), sqrt(0.3), sqrt(0.15), sqrt(0.05)}, z = r[0] + r[1] + r[2] + r[3];
	check_draws(2, 0, 1, (const double[]){r[0] / z, r[1] / z, r[2] / z, r[3] / z});
	/* T = 0.5: p^2 */
	double q[4] = {0.25, 0.09, 0.0225, 0.0025}, y = q[0] + q[1] + q[2] + q[3];
	check_draws(0.5f, 0, 1, (const double[]){q[0] / y, q[1] / y, q[2] / y, q[3] / y});
}

/* 8-bit products: x is quantised to int16 per token and block of 32, and the kernels sum
 * exact integer block dots times both scales; against that reference (double) within float
 * rounding, against x · dequantised W as before activations were quantised, and against the
 * exact F32 product within the weights' quantisation error. */
static void check_matmul_q8(int level, int threads, int n, int d, int k) {
	ms_kernels_cap(level);
	ms_pool pool;
	CHECK_INT(ms_pool_init(&pool, threads), 0);
	int nb = k / MS_Q8_BLOCK;
	float *x = malloc((size_t)n * k * 4), *w = malloc((size_t)d * k * 4), *o = malloc((size_t)n * d * 4);
	float *bias = malloc((size_t)d * 4), *s = malloc((size_t)d * nb * 4), *sx = malloc((size_t)n * nb * 4);
	int8_t *q = malloc((size_t)d * k);
	int16_t *qx = malloc((size_t)n * k * 2);
	for (int i = 0; i < n * k; i++) x[i] = rnd();
	for (int i = 0; i < d * k; i++) w[i] = rnd();
	for (int i = 0; i < d; i++) bias[i] = rnd();
	if (n > 1) memset(x + k, 0, MS_Q8_BLOCK * sizeof *x); /* an all-zero block: scale 0 */
	ms_q8_quantize(w, (size_t)d, k, q, s);
	ms_q8_quantize_acts(x, (size_t)n, k, qx, sx);
	ms_q8 wq = {q, s};
	CHECK_INT(ms_matmul_q8(&pool, o, x, &wq, bias, n, d, k), 0);
	for (int i = 0; i < n; i++)
		for (int r = 0; r < d; r++) {
			double ints = bias[r], deq = bias[r], exact = bias[r];
			for (int e = 0; e < k; e++) {
				double wd = (double)q[r * k + e] * s[r * nb + e / MS_Q8_BLOCK];
				ints += (double)qx[i * k + e] * sx[i * nb + e / MS_Q8_BLOCK] * wd;
				deq += (double)x[i * k + e] * wd;
				exact += (double)x[i * k + e] * w[r * k + e];
			}
			CHECK_MSG(fabs(o[i * d + r] - ints) < 2e-5 * sqrt(k), "n=%d d=%d k=%d [%d][%d]: %g vs %g", n, d, k, i, r,
				  o[i * d + r], ints);
			CHECK_MSG(fabs(o[i * d + r] - deq) < 1e-4 * sqrt(k / 384.0), "[%d][%d]: %g vs x · deq(W) %g", i, r, o[i * d + r], deq);
			/* the weights' quantisation error: ~6 sigma at k=384 */
			CHECK_MSG(fabs(o[i * d + r] - exact) < 0.045 * sqrt(k / 384.0), "[%d][%d]: %g vs exact %g", i, r,
				  o[i * d + r], exact);
		}
	free(x), free(w), free(o), free(bias), free(s), free(sx), free(q), free(qx);
	ms_pool_free(&pool);
}

/* one token, integer tiles (2 to 15 tokens), dequantised tiles (16 and more), rows past a
 * multiple of 4, k past one 1024-column dequantised slice */
static void matmul_q8_at(int level) {
	use_level(level);
	int sizes[][3] = {{1, 37, 384}, {2, 5, 32}, {3, 37, 384}, {5, 64, 96}, {9, 131, 256}, {32, 67, 64}, {17, 12, 1088}};
	for (size_t i = 0; i < MS_ARRAY_LEN(sizes); i++)
		check_matmul_q8(level, 1 + (int)(i % 2), sizes[i][0], sizes[i][1], sizes[i][2]);
	ms_kernels_cap(MS_KERNELS_AVX512);
}

TEST(matmul_q8_avx512) { matmul_q8_at(MS_KERNELS_AVX512); }
TEST(matmul_q8_avx2) { matmul_q8_at(MS_KERNELS_AVX2); }
TEST(matmul_q8_portable) { matmul_q8_at(MS_KERNELS_PORTABLE); }

/* The AVX2 activation quantiser gives the portable one's integers and scales (the kernels'
 * results must not depend on which path quantised), rounding halves to even. */
TEST(q8_quantize_acts_paths_agree) {
	enum { N = 7, K = 96 };
	float x[N * K];
	for (int i = 0; i < N * K; i++) x[i] = rnd() * (i % 5 ? 1.0f : 100.0f);
	for (int i = 0; i < 32; i++) x[i] = (float)(i - 16) * 2.0f; /* amax 32: scale 32/32767 */
	x[5] = 0.5f * 32.0f / 32767.0f; /* exactly half a step: rounds to even (0) */
	x[6] = 1.5f * 32.0f / 32767.0f; /* 1.5 steps: rounds to 2 */
	memset(x + K, 0, 32 * sizeof *x); /* an all-zero block: scale 0, no division by it */
	int16_t qa[N * K], qp[N * K];
	float sa[N * K / 32], sp[N * K / 32];
	ms_q8_quantize_acts(x, N, K, qa, sa);
	ms_kernels_force_portable(1);
	ms_q8_quantize_acts(x, N, K, qp, sp);
	ms_kernels_force_portable(0);
	CHECK(memcmp(qa, qp, sizeof qa) == 0);
	CHECK(memcmp(sa, sp, sizeof sa) == 0);
	CHECK_INT(qp[0], -32767);
	CHECK_INT(qp[31], 30 * 32767 / 32);
	CHECK(sp[3] == 0.0f);
	for (int i = K; i < K + 32; i++) CHECK_INT(qp[i], 0);
}

/* A token's 8-bit result alone (integer kernels) is close to its result among several
 * (dequantised F32 tiles), and fused products equal separate ones exactly. */
TEST(matmul_q8_batched_and_fused) {
	enum { N = 7, D = 45, K = 160 };
	ms_pool pool;
	CHECK_INT(ms_pool_init(&pool, 2), 0);
	float *x = malloc(N * K * 4), *w = malloc(D * K * 4), *wf = malloc(D * K * 4);
	float *all = malloc(N * D * 4), *one = malloc(D * 4), *f1 = malloc(N * D * 4), *f2 = malloc(N * 9 * 4);
	int8_t *q = malloc(D * K);
	float *s = malloc(D * K / 32 * 4);
	for (int i = 0; i < N * K; i++) x[i] = rnd();
	for (int i = 0; i < D * K; i++) w[i] = rnd(), wf[i] = rnd();
	ms_q8_quantize(w, D, K, q, s);
	ms_q8 wq = {q, s};
	CHECK_INT(ms_matmul_q8(&pool, all, x, &wq, NULL, N, D, K), 0);
	for (int i = 0; i < N; i++) {
		CHECK_INT(ms_matmul_q8(&pool, one, x + i * K, &wq, NULL, 1, D, K), 0);
		for (int r = 0; r < D; r++) CHECK_NEAR(one[r], all[i * D + r], 1e-4);
	}
	ms_mat mats[2] = {{f1, NULL, &wq, NULL, D}, {f2, wf, NULL, NULL, 9}};
	CHECK_INT(ms_matmul_many(&pool, x, N, K, mats, 2), 0);
	CHECK(memcmp(f1, all, N * D * 4) == 0);
	float *ref = malloc(N * 9 * 4);
	ms_matmul(&pool, ref, x, wf, NULL, N, 9, K);
	CHECK(memcmp(f2, ref, N * 9 * 4) == 0);
	ms_q8 bad = {q, s};
	mats[0].w8 = &bad;
	CHECK_INT(ms_matmul_many(&pool, x, N, K - 1, mats, 1), MS_EINVAL);
	free(ref), free(x), free(w), free(wf), free(all), free(one), free(f1), free(f2), free(q), free(s);
	ms_pool_free(&pool);
}
