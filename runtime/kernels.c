/* runtime/kernels.c: see kernels.h. */
#include "runtime/kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- thread pool ---- */

typedef struct { ms_pool *p; int idx; } worker_arg;

static void *worker(void *arg) {
	worker_arg wa = *(worker_arg *)arg;
	free(arg);
	ms_pool *p = wa.p;
	unsigned long seen = 0;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->stop && p->generation == seen) pthread_cond_wait(&p->cv_start, &p->mu);
		if (p->stop) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		seen = p->generation;
		ms_pool_fn fn = p->fn;
		void *ctx = p->ctx;
		pthread_mutex_unlock(&p->mu);
		fn(ctx, wa.idx, p->n_threads);
		pthread_mutex_lock(&p->mu);
		if (--p->pending == 0) pthread_cond_signal(&p->cv_done);
		pthread_mutex_unlock(&p->mu);
	}
}

int ms_ncpu(void) {
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int ms_pool_init(ms_pool *p, int n_threads) {
	memset(p, 0, sizeof *p);
	if (n_threads <= 0) n_threads = ms_ncpu();
	if (n_threads > 256) n_threads = 256;
	p->n_threads = n_threads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv_start, NULL);
	pthread_cond_init(&p->cv_done, NULL);
	if (n_threads == 1) return 0;
	p->threads = calloc((size_t)n_threads, sizeof *p->threads);
	if (!p->threads) return MS_ENOMEM;
	for (int i = 1; i < n_threads; i++) {
		worker_arg *a = malloc(sizeof *a);
		if (!a || pthread_create(&p->threads[i], NULL, worker, (*a = (worker_arg){p, i}, a)) != 0) {
			free(a);
			p->n_threads = i; /* the ones started are joined by free */
			ms_pool_free(p);
			return MS_ENOMEM;
		}
	}
	return 0;
}

void ms_pool_free(ms_pool *p) {
	if (p->threads) {
		pthread_mutex_lock(&p->mu);
		p->stop = 1;
		pthread_cond_broadcast(&p->cv_start);
		pthread_mutex_unlock(&p->mu);
		for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
		free(p->threads);
		p->threads = NULL;
	}
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv_start);
	pthread_cond_destroy(&p->cv_done);
}

void ms_pool_run(ms_pool *p, ms_pool_fn fn, void *ctx) {
	if (!p || p->n_threads <= 1 || !p->threads) {
		fn(ctx, 0, 1);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->ctx = ctx;
	p->pending = p->n_threads - 1;
	p->generation++;
	pthread_cond_broadcast(&p->cv_start);
	pthread_mutex_unlock(&p->mu);
	fn(ctx, 0, p->n_threads);
	pthread_mutex_lock(&p->mu);
	while (p->pending > 0) pthread_cond_wait(&p->cv_done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

/* ---- dot products ---- */

static float dot_portable(const float *a, const float *b, int n) {
	/* eight independent partial sums: lets the compiler use SSE lanes without reassociating */
	float s[8] = {0};
	int i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
	float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
	for (; i < n; i++) t += a[i] * b[i];
	return t;
}

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
	__m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
	lo = _mm_add_ps(lo, hi);
	__m128 sh = _mm_movehdup_ps(lo);
	__m128 s = _mm_add_ps(lo, sh);
	sh = _mm_movehl_ps(sh, s);
	s = _mm_add_ss(s, sh);
	return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n) {
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
	       s3 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
		s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
	float t = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
	for (; i < n; i++) t += a[i] * b[i];
	return t;
}

/* Four rows of W against one x: x is loaded once per four rows. */
__attribute__((target("avx2,fma"))) static void dot4_avx2(const float *x, const float *w, int k, float *out) {
	const float *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k;
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
	       s3 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 8 <= k; i += 8) {
		__m256 xv = _mm256_loadu_ps(x + i);
		s0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w0 + i), s0);
		s1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w1 + i), s1);
		s2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w2 + i), s2);
		s3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w3 + i), s3);
	}
	float t0 = hsum256(s0), t1 = hsum256(s1), t2 = hsum256(s2), t3 = hsum256(s3);
	for (; i < k; i++) {
		t0 += x[i] * w0[i];
		t1 += x[i] * w1[i];
		t2 += x[i] * w2[i];
		t3 += x[i] * w3[i];
	}
	out[0] = t0, out[1] = t1, out[2] = t2, out[3] = t3;
}

/* Four rows of W against two x rows: each loaded W vector feeds two FMAs, which keeps the
 * FMA units rather than the loads the bottleneck when several tokens share the weights
 * (prompt chunks, batched streams). out0/out1: 4 results each. */
__attribute__((target("avx2,fma"))) static void dot4x2_avx2(const float *x0, const float *x1, const float *w, int k,
							    float *out0, float *out1) {
	const float *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k;
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
	int i = 0;
	for (; i + 8 <= k; i += 8) {
		__m256 xa = _mm256_loadu_ps(x0 + i), xb = _mm256_loadu_ps(x1 + i);
		__m256 v0 = _mm256_loadu_ps(w0 + i), v1 = _mm256_loadu_ps(w1 + i);
		a0 = _mm256_fmadd_ps(xa, v0, a0);
		b0 = _mm256_fmadd_ps(xb, v0, b0);
		a1 = _mm256_fmadd_ps(xa, v1, a1);
		b1 = _mm256_fmadd_ps(xb, v1, b1);
		__m256 v2 = _mm256_loadu_ps(w2 + i), v3 = _mm256_loadu_ps(w3 + i);
		a2 = _mm256_fmadd_ps(xa, v2, a2);
		b2 = _mm256_fmadd_ps(xb, v2, b2);
		a3 = _mm256_fmadd_ps(xa, v3, a3);
		b3 = _mm256_fmadd_ps(xb, v3, b3);
	}
	float ta[4] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
	float tb[4] = {hsum256(b0), hsum256(b1), hsum256(b2), hsum256(b3)};
	const float *ws[4] = {w0, w1, w2, w3};
	for (; i < k; i++)
		for (int q = 0; q < 4; q++) {
			ta[q] += x0[i] * ws[q][i];
			tb[q] += x1[i] * ws[q][i];
		}
	memcpy(out0, ta, sizeof ta);
	memcpy(out1, tb, sizeof tb);
}

static int use_avx2 = -1;

int ms_kernels_avx2(void) {
	if (use_avx2 < 0) {
		__builtin_cpu_init();
		use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	}
	return use_avx2;
}

void ms_kernels_force_portable(int on) { use_avx2 = on ? 0 : -1; }

float ms_dot(const float *a, const float *b, int n) {
	return ms_kernels_avx2() ? dot_avx2(a, b, n) : dot_portable(a, b, n);
}

typedef struct {
	float *out;
	const float *x, *w, *bias;
	int n, d, k, avx2;
} mm_job;

static void mm_task(void *ctx, int t, int nt) {
	const mm_job *j = ctx;
	/* split rows in blocks of 4 so that each thread can use the 4-row kernel */
	int blocks = (j->d + 3) / 4;
	int b0 = (int)((long)blocks * t / nt), b1 = (int)((long)blocks * (t + 1) / nt);
	int r0 = b0 * 4, r1 = b1 * 4 < j->d ? b1 * 4 : j->d;
	for (int r = r0; r < r1;) {
		const float *wr = j->w + (size_t)r * j->k;
		if (j->avx2 && r + 4 <= r1) {
			int i = 0;
			for (; i + 2 <= j->n; i += 2) {
				float o0[4], o1[4];
				dot4x2_avx2(j->x + (size_t)i * j->k, j->x + (size_t)(i + 1) * j->k, wr, j->k, o0, o1);
				for (int q = 0; q < 4; q++) {
					float b = j->bias ? j->bias[r + q] : 0.0f;
					j->out[(size_t)i * j->d + r + q] = o0[q] + b;
					j->out[(size_t)(i + 1) * j->d + r + q] = o1[q] + b;
				}
			}
			for (; i < j->n; i++) {
				float o[4];
				dot4_avx2(j->x + (size_t)i * j->k, wr, j->k, o);
				for (int q = 0; q < 4; q++)
					j->out[(size_t)i * j->d + r + q] = o[q] + (j->bias ? j->bias[r + q] : 0.0f);
			}
			r += 4;
		} else {
			for (int i = 0; i < j->n; i++) {
				float v = j->avx2 ? dot_avx2(j->x + (size_t)i * j->k, wr, j->k)
						  : dot_portable(j->x + (size_t)i * j->k, wr, j->k);
				j->out[(size_t)i * j->d + r] = v + (j->bias ? j->bias[r] : 0.0f);
			}
			r++;
		}
	}
}

void ms_matmul(ms_pool *pool, float *out, const float *x, const float *w, const float *bias, int n, int d,
	       int k) {
	mm_job j = {out, x, w, bias, n, d, k, ms_kernels_avx2()};
	/* tiny products are not worth waking the pool */
	if (!pool || (size_t)n * d * k < 32768) mm_task(&j, 0, 1);
	else ms_pool_run(pool, mm_task, &j);
}

/* ---- 8-bit weights ---- */

void ms_q8_quantize(const float *w, size_t d, int k, int8_t *q, float *s) {
	size_t nb = (size_t)k / MS_Q8_BLOCK;
	for (size_t r = 0; r < d; r++)
		for (size_t b = 0; b < nb; b++) {
			const float *src = w + r * k + b * MS_Q8_BLOCK;
			float amax = 0.0f;
			for (int i = 0; i < MS_Q8_BLOCK; i++) amax = fmaxf(amax, fabsf(src[i]));
			float scale = amax / 127.0f, inv = scale > 0 ? 1.0f / scale : 0.0f;
			s[r * nb + b] = scale;
			for (int i = 0; i < MS_Q8_BLOCK; i++) q[r * k + b * MS_Q8_BLOCK + i] = (int8_t)lrintf(src[i] * inv);
		}
}

static float dot_q8_portable(const float *x, const int8_t *q, const float *s, int k) {
	float t = 0.0f;
	for (int b = 0; b < k / MS_Q8_BLOCK; b++) {
		float acc[8] = {0};
		for (int i = 0; i < MS_Q8_BLOCK; i += 8)
			for (int j = 0; j < 8; j++) acc[j] += x[b * MS_Q8_BLOCK + i + j] * (float)q[b * MS_Q8_BLOCK + i + j];
		t += s[b] * (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
	}
	return t;
}

__attribute__((target("avx2,fma"))) static inline __m256 q8_load8(const int8_t *p) {
	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p)));
}

/* Two x rows against one q8 row: the dequantised weights are reused for both. */
__attribute__((target("avx2,fma"))) static void dot_q8x2_avx2(const float *x0, const float *x1, const int8_t *q,
							     const float *s, int k, float *o0, float *o1) {
	__m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
	for (int b = 0; b < k / MS_Q8_BLOCK; b++) {
		const int8_t *qb = q + b * MS_Q8_BLOCK;
		const float *xa = x0 + b * MS_Q8_BLOCK, *xb = x1 + b * MS_Q8_BLOCK;
		__m256 w0 = q8_load8(qb), w1 = q8_load8(qb + 8), w2 = q8_load8(qb + 16), w3 = q8_load8(qb + 24);
		__m256 a = _mm256_mul_ps(_mm256_loadu_ps(xa), w0);
		a = _mm256_fmadd_ps(_mm256_loadu_ps(xa + 8), w1, a);
		a = _mm256_fmadd_ps(_mm256_loadu_ps(xa + 16), w2, a);
		a = _mm256_fmadd_ps(_mm256_loadu_ps(xa + 24), w3, a);
		__m256 sc = _mm256_broadcast_ss(s + b);
		t0 = _mm256_fmadd_ps(a, sc, t0);
		if (x1) {
			__m256 c = _mm256_mul_ps(_mm256_loadu_ps(xb), w0);
			c = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8), w1, c);
			c = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 16), w2, c);
			c = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 24), w3, c);
			t1 = _mm256_fmadd_ps(c, sc, t1);
		}
	}
	*o0 = hsum256(t0);
	if (x1) *o1 = hsum256(t1);
}

typedef struct {
	float *out;
	const float *x;
	const ms_q8 *w;
	const float *bias;
	int n, d, k, avx2;
} mmq_job;

static void mm_task(void *ctx, int t, int nt);

__attribute__((target("avx2,fma"))) static void dequant_row_avx2(const int8_t *q, const float *sc, int k, float *out) {
	for (int b = 0; b < k / MS_Q8_BLOCK; b++) {
		__m256 s8 = _mm256_broadcast_ss(sc + b);
		for (int i = 0; i < MS_Q8_BLOCK; i += 8)
			_mm256_storeu_ps(out + b * MS_Q8_BLOCK + i, _mm256_mul_ps(q8_load8(q + b * MS_Q8_BLOCK + i), s8));
	}
}

/* Many rows of x (prompt chunks, batched streams): dequantise four weight rows at a time
 * into scratch and run the F32 tile on them, instead of dequantising per x row. */
static int mmq_task_wide(const mmq_job *j, int t, int nt) {
	int blocks = (j->d + 3) / 4;
	int b0 = (int)((long)blocks * t / nt), b1 = (int)((long)blocks * (t + 1) / nt);
	size_t nb = (size_t)j->k / MS_Q8_BLOCK;
	float *wf = malloc((size_t)4 * j->k * sizeof *wf), *o = malloc((size_t)j->n * 4 * sizeof *o);
	if (!wf || !o) {
		free(wf);
		free(o);
		return -1;
	}
	for (int b = b0; b < b1; b++) {
		int r0 = b * 4, rows = j->d - r0 < 4 ? j->d - r0 : 4;
		for (int r = 0; r < rows; r++) {
			const int8_t *q = j->w->q + (size_t)(r0 + r) * j->k;
			const float *sc = j->w->s + (size_t)(r0 + r) * nb;
			if (j->avx2) dequant_row_avx2(q, sc, j->k, wf + (size_t)r * j->k);
			else
				for (int e = 0; e < j->k; e++) wf[(size_t)r * j->k + e] = (float)q[e] * sc[e / MS_Q8_BLOCK];
		}
		mm_job mj = {o, j->x, wf, NULL, j->n, rows, j->k, j->avx2};
		mm_task(&mj, 0, 1);
		for (int i = 0; i < j->n; i++)
			for (int r = 0; r < rows; r++)
				j->out[(size_t)i * j->d + r0 + r] = o[(size_t)i * rows + r] + (j->bias ? j->bias[r0 + r] : 0.0f);
	}
	free(wf);
	free(o);
	return 0;
}

static void mmq_task(void *ctx, int t, int nt) {
	const mmq_job *j = ctx;
	if (j->n >= 4 && mmq_task_wide(j, t, nt) == 0) return;
	int r0 = (int)((long)j->d * t / nt), r1 = (int)((long)j->d * (t + 1) / nt);
	size_t nb = (size_t)j->k / MS_Q8_BLOCK;
	for (int r = r0; r < r1; r++) {
		const int8_t *q = j->w->q + (size_t)r * j->k;
		const float *s = j->w->s + (size_t)r * nb;
		float b = j->bias ? j->bias[r] : 0.0f;
		int i = 0;
		if (j->avx2)
			for (; i < j->n; i += 2) {
				float o0, o1 = 0;
				int two = i + 1 < j->n;
				dot_q8x2_avx2(j->x + (size_t)i * j->k, two ? j->x + (size_t)(i + 1) * j->k : NULL, q, s, j->k, &o0, &o1);
				j->out[(size_t)i * j->d + r] = o0 + b;
				if (two) j->out[(size_t)(i + 1) * j->d + r] = o1 + b;
			}
		for (; i < j->n; i++) j->out[(size_t)i * j->d + r] = dot_q8_portable(j->x + (size_t)i * j->k, q, s, j->k) + b;
	}
}

void ms_matmul_q8(ms_pool *pool, float *out, const float *x, const ms_q8 *w, const float *bias, int n, int d, int k) {
	mmq_job j = {out, x, w, bias, n, d, k, ms_kernels_avx2()};
	if (!pool || (size_t)n * d * k < 32768) mmq_task(&j, 0, 1);
	else ms_pool_run(pool, mmq_task, &j);
}

/* ---- elementwise ---- */

void ms_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
	float ss = 0.0f;
	for (int i = 0; i < n; i++) ss += x[i] * x[i];
	ss = 1.0f / sqrtf(ss / (float)n + eps);
	for (int i = 0; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

void ms_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
	float mean = 0.0f, var = 0.0f;
	for (int i = 0; i < n; i++) mean += x[i];
	mean /= (float)n;
	for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
	var /= (float)n;
	float inv = 1.0f / sqrtf(var + eps);
	for (int i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}

void ms_softmax(float *x, int n) {
	float max = x[0];
	for (int i = 1; i < n; i++)
		if (x[i] > max) max = x[i];
	float sum = 0.0f;
	for (int i = 0; i < n; i++) {
		x[i] = expf(x[i] - max);
		sum += x[i];
	}
	for (int i = 0; i < n; i++) x[i] /= sum;
}

float ms_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
float ms_gelu_new(float x) {
	return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
float ms_silu(float x) { return x / (1.0f + expf(-x)); }
