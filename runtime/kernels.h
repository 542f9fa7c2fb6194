/* runtime/kernels.h: the runtime's F32 compute kernels and its thread pool.
 *
 * Matrix products use AVX2/FMA when the CPU has them (picked once at run time through
 * __builtin_cpu_supports) and a portable loop otherwise; nothing relies on -ffast-math,
 * so results are deterministic for a given path and thread count.
 */
#ifndef MS_KERNELS_H
#define MS_KERNELS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ms.h"

typedef void (*ms_pool_fn)(void *ctx, int task, int n_tasks);

/* A fixed set of worker threads; ms_pool_run runs fn(ctx, i, n) for i in [0, n) with n =
 * the pool's thread count, the calling thread taking task 0, and returns when all are done.
 * One caller at a time. */
typedef struct ms_pool {
	int n_threads;
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t cv_start, cv_done;
	unsigned long generation;
	int pending;
	int stop;
	ms_pool_fn fn;
	void *ctx;
} ms_pool;

int ms_pool_init(ms_pool *p, int n_threads);
void ms_pool_free(ms_pool *p);
void ms_pool_run(ms_pool *p, ms_pool_fn fn, void *ctx);
/* Cores available to this process. */
int ms_ncpu(void);

/* out[n][d] = x[n][k] · W[d][k]ᵀ (+ bias[d]); rows of W split across the pool (pool may be
 * NULL: single-threaded). */
void ms_matmul(ms_pool *pool, float *out, const float *x, const float *w, const float *bias, int n, int d,
	       int k);
float ms_dot(const float *a, const float *b, int n);

/* 8-bit weights with a scale per block of 32 along k (like llama.cpp's Q8_0), made at load
 * time from the F32 weights: w ≈ q * s[block]. k must be a multiple of MS_Q8_BLOCK. */
#define MS_Q8_BLOCK 32
typedef struct ms_q8 {
	const int8_t *q; /* [d][k] */
	const float *s;  /* [d][k / MS_Q8_BLOCK] */
} ms_q8;
void ms_q8_quantize(const float *w, size_t d, int k, int8_t *q, float *s);
/* out[n][d] = x[n][k] · dequant(W)[d][k]ᵀ (+ bias[d]). */
void ms_matmul_q8(ms_pool *pool, float *out, const float *x, const ms_q8 *w, const float *bias, int n, int d, int k);
/* 1 when the AVX2/FMA path is in use; ms_kernels_force_portable(1) disables it (tests). */
int ms_kernels_avx2(void);
void ms_kernels_force_portable(int on);

void ms_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
void ms_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);
void ms_softmax(float *x, int n);
float ms_gelu(float x);     /* exact, erf-based (BERT's "gelu") */
float ms_gelu_new(float x); /* tanh approximation (GPT-2's "gelu_new") */
float ms_silu(float x);

#endif
