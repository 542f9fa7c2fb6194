/* runtime/kernels.h: the runtime's compute kernels and its thread pool.
 *
 * Matrix products use AVX2/FMA when the CPU has them (AVX-512 for several tokens' F32 tiles;
 * picked once at run time through __builtin_cpu_supports) and a portable loop otherwise;
 * nothing relies on -ffast-math, so results are deterministic for a given path.
 */
#ifndef MS_KERNELS_H
#define MS_KERNELS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ms.h"

typedef void (*ms_pool_fn)(void *ctx, int task, int n_tasks);

/* A fixed set of worker threads. ms_pool_run_n runs fn(ctx, i, n) once for each task i in
 * [0, n), the calling thread included, and returns when all are done; tasks are claimed one
 * at a time, so a worker that the OS has not scheduled (2 shared cores) delays nothing: the
 * caller runs the remaining tasks itself and a worker joins a run only while it is open.
 * Waiting threads spin briefly before sleeping: a decoder step is ~100 dispatches a few
 * microseconds apart, and waking a sleeping thread cost ~24 us per dispatch on the 2-core VM.
 * One caller at a time. */
typedef struct ms_pool {
	int n_threads;
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t cv_start, cv_done;
	atomic_ullong state; /* run generation << 32 | open << 31 | workers inside the run */
	atomic_ullong span;  /* the run's unclaimed tasks [lo, hi): lo | hi << 32 */
	atomic_int stop;
	int n_tasks;
	ms_pool_fn fn;
	void *ctx;
	void *scratch; /* kernels' scratch (the calling thread's), see ms_pool_scratch */
	size_t scratch_size;
} ms_pool;

int ms_pool_init(ms_pool *p, int n_threads);
void ms_pool_free(ms_pool *p);
/* p may be NULL: the caller runs every task. */
void ms_pool_run_n(ms_pool *p, ms_pool_fn fn, void *ctx, int n_tasks);
/* One task per thread. */
void ms_pool_run(ms_pool *p, ms_pool_fn fn, void *ctx);
/* A buffer of at least `bytes` owned by the pool, reused across calls (NULL: no memory). */
void *ms_pool_scratch(ms_pool *p, size_t bytes);
/* Cores available to this process. */
int ms_ncpu(void);

/* 8-bit weights with a scale per block of 32 along k (like llama.cpp's Q8_0), made at load
 * time from the F32 weights: w ≈ q * s[block]. k must be a multiple of MS_Q8_BLOCK. Products
 * with them quantise x to int16 per token and block of 32 (ms_q8_quantize_acts) and sum
 * exact integer block dots times both scales. */
#define MS_Q8_BLOCK 32
typedef struct ms_q8 {
	const int8_t *q; /* [d][k] */
	const float *s;  /* [d][k / MS_Q8_BLOCK] */
} ms_q8;
void ms_q8_quantize(const float *w, size_t d, int k, int8_t *q, float *s);
/* x [n][k] ≈ q * s[block]: q [n][k] in int16 (scale amax / 32767), s [n][k / 32]. */
void ms_q8_quantize_acts(const float *x, size_t n, int k, int16_t *q, float *s);

/* out[n][d] = x[n][k] · W[d][k]ᵀ (+ bias[d]); rows of W split across the pool (pool may be
 * NULL: single-threaded). */
void ms_matmul(ms_pool *pool, float *out, const float *x, const float *w, const float *bias, int n, int d,
	       int k);
/* out[n][d] = x[n][k] · dequant(W)[d][k]ᵀ (+ bias[d]) with x quantised as above. */
int ms_matmul_q8(ms_pool *pool, float *out, const float *x, const ms_q8 *w, const float *bias, int n, int d, int k);
float ms_dot(const float *a, const float *b, int n);
/* out[p] = (q · k[p * ldk ..]) * scale for p < n (attention's scores) */
void ms_dots(float *out, const float *q, const float *k, int n, int dim, size_t ldk, float scale);
/* out[e] = sum over i < n of w[i] * v[i * ldv + e], e < dim (attention's weighted values) */
void ms_weighted_sum(float *out, const float *w, const float *v, int n, int dim, size_t ldv);

/* One of several products of the same x in one pool dispatch (q/k/v, gate/up): W is w8 when
 * that is set, else w. */
typedef struct ms_mat {
	float *out; /* [n][d] */
	const float *w;
	const ms_q8 *w8;
	const float *bias;
	int d;
} ms_mat;
/* 0, MS_ENOMEM (8-bit: no memory to quantise x into) or MS_EINVAL (8-bit with k % 32). */
int ms_matmul_many(ms_pool *pool, const float *x, int n, int k, const ms_mat *mats, int count);
/* Bytes of pool scratch an 8-bit product of n tokens by k uses: reserve them up front with
 * ms_pool_scratch so that products never allocate. */
size_t ms_matmul_scratch(int n, int k);

/* The kernels in use: the best the CPU has (AVX-512 only adds the several-token F32 tiles),
 * capped by ms_kernels_cap (tests). */
enum { MS_KERNELS_PORTABLE, MS_KERNELS_AVX2, MS_KERNELS_AVX512 };
int ms_kernels_level(void);
void ms_kernels_cap(int level);
/* ms_kernels_level() >= MS_KERNELS_AVX2; ms_kernels_force_portable(1) caps at portable, (0) lifts the cap. */
int ms_kernels_avx2(void);
void ms_kernels_force_portable(int on);

void ms_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
void ms_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);
void ms_softmax(float *x, int n);
float ms_gelu(float x);     /* exact, erf-based (BERT's "gelu") */
float ms_gelu_new(float x); /* tanh approximation (GPT-2's "gelu_new") */
float ms_silu(float x);
/* h[i] = silu(h[i]) * g[i] (SwiGLU) */
void ms_silu_mul(float *h, const float *g, size_t n);

#endif
