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

/* How long a waiting thread spins before it sleeps on a condition variable: longer than the
 * gaps between a decoder step's dispatches (norms, RoPE, sampling: microseconds), short
 * enough that an idle model costs no CPU. Spinners yield now and then so that a thread
 * sharing their core (ours or another process's) is not held up. */
#define POOL_SPIN_NS 200000
#define RUN_OPEN (1ull << 31)
#define RUN_GEN(s) ((s) >> 32)
#define RUN_ACTIVE(s) ((s) & (RUN_OPEN - 1))

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
	_mm_pause();
#endif
}

/* Called every iteration of a spin loop; 0 once the budget that started at *t0 is spent.
 * Every ~5 us it yields (~1.3 us with PTI): when other agents' processes leave our two
 * threads one core, a spinner would otherwise take half of it from the thread doing the
 * work (measured: generation 17% slower than with the old sleeping pool). */
static int spin_on(unsigned i, uint64_t *t0) {
	cpu_relax();
	if (i % 256) return 1;
	uint64_t now = ms_now_ns();
	if (!*t0) *t0 = now;
	sched_yield();
	return now - *t0 <= POOL_SPIN_NS;
}

/* Claims the first unclaimed task (back = 0) or the last (back = 1); -1 when none is left.
 * The caller works up from the first and the workers down from the last, so that each
 * thread streams one contiguous stretch of a product's weights. */
static int claim(ms_pool *p, int back) {
	unsigned long long s = atomic_load_explicit(&p->span, memory_order_relaxed);
	for (;;) {
		unsigned lo = (unsigned)s, hi = (unsigned)(s >> 32);
		if (lo >= hi) return -1;
		unsigned long long ns = back ? s - (1ull << 32) : s + 1;
		if (atomic_compare_exchange_weak_explicit(&p->span, &s, ns, memory_order_relaxed, memory_order_relaxed))
			return back ? (int)hi - 1 : (int)lo;
	}
}

static void run_tasks(ms_pool *p, int back) {
	for (int i; (i = claim(p, back)) >= 0;) p->fn(p->ctx, i, p->n_tasks);
}

/* Joins the run of generation gen if it is still open; 1 when joined. */
static int join_run(ms_pool *p, unsigned long long gen) {
	unsigned long long s = atomic_load_explicit(&p->state, memory_order_acquire);
	while (RUN_GEN(s) == gen && (s & RUN_OPEN))
		if (atomic_compare_exchange_weak_explicit(&p->state, &s, s + 1, memory_order_acquire,
							  memory_order_acquire))
			return 1;
	return 0;
}

static void *worker(void *arg) {
	worker_arg wa = *(worker_arg *)arg;
	free(arg);
	ms_pool *p = wa.p;
	unsigned long long seen = 0;
	for (;;) {
		uint64_t t0 = 0;
		unsigned i = 1;
		while (RUN_GEN(atomic_load_explicit(&p->state, memory_order_acquire)) == seen &&
		       !atomic_load_explicit(&p->stop, memory_order_relaxed) && spin_on(i++, &t0)) {
		}
		if (RUN_GEN(atomic_load(&p->state)) == seen) {
			pthread_mutex_lock(&p->mu);
			while (!atomic_load(&p->stop) && RUN_GEN(atomic_load(&p->state)) == seen)
				pthread_cond_wait(&p->cv_start, &p->mu);
			pthread_mutex_unlock(&p->mu);
		}
		if (atomic_load(&p->stop)) return NULL;
		seen = RUN_GEN(atomic_load(&p->state));
		if (!join_run(p, seen)) continue; /* the caller already did the work */
		run_tasks(p, 1);
		unsigned long long s = atomic_fetch_sub_explicit(&p->state, 1, memory_order_acq_rel) - 1;
		if (RUN_ACTIVE(s) == 0 && !(s & RUN_OPEN)) {
			/* under the mutex: the caller checks the count under it before it sleeps */
			pthread_mutex_lock(&p->mu);
			pthread_cond_signal(&p->cv_done);
			pthread_mutex_unlock(&p->mu);
		}
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
	atomic_init(&p->state, 0);
	atomic_init(&p->span, 0);
	atomic_init(&p->stop, 0);
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
		atomic_store(&p->stop, 1);
		pthread_cond_broadcast(&p->cv_start);
		pthread_mutex_unlock(&p->mu);
		for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
		free(p->threads);
		p->threads = NULL;
	}
	free(p->scratch);
	p->scratch = NULL;
	p->scratch_size = 0;
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv_start);
	pthread_cond_destroy(&p->cv_done);
}

void ms_pool_run_n(ms_pool *p, ms_pool_fn fn, void *ctx, int n_tasks) {
	if (!p || p->n_threads <= 1 || !p->threads || n_tasks <= 1) {
		for (int i = 0; i < n_tasks; i++) fn(ctx, i, n_tasks);
		return;
	}
	p->fn = fn;
	p->ctx = ctx;
	p->n_tasks = n_tasks;
	atomic_store_explicit(&p->span, (unsigned long long)n_tasks << 32, memory_order_relaxed);
	/* opened under the mutex so that a worker about to sleep cannot miss it; a broadcast
	 * with no sleeper is cheap */
	pthread_mutex_lock(&p->mu);
	unsigned long long gen = (RUN_GEN(atomic_load(&p->state)) + 1) & 0xffffffffull;
	atomic_store_explicit(&p->state, gen << 32 | RUN_OPEN, memory_order_release);
	pthread_cond_broadcast(&p->cv_start);
	pthread_mutex_unlock(&p->mu);
	run_tasks(p, 0);
	/* every task is claimed: close the run, then wait for the workers inside it */
	unsigned long long s = atomic_fetch_and_explicit(&p->state, ~RUN_OPEN, memory_order_acq_rel);
	uint64_t t0 = 0;
	for (unsigned i = 1; RUN_ACTIVE(s) > 0 && spin_on(i, &t0); i++)
		s = atomic_load_explicit(&p->state, memory_order_acquire);
	if (RUN_ACTIVE(s) > 0) {
		pthread_mutex_lock(&p->mu);
		while (RUN_ACTIVE(atomic_load(&p->state)) > 0) pthread_cond_wait(&p->cv_done, &p->mu);
		pthread_mutex_unlock(&p->mu);
	}
}

void ms_pool_run(ms_pool *p, ms_pool_fn fn, void *ctx) { ms_pool_run_n(p, fn, ctx, p ? p->n_threads : 1); }

void *ms_pool_scratch(ms_pool *p, size_t bytes) {
	if (bytes <= p->scratch_size) return p->scratch;
	size_t cap = (bytes + 4095) & ~(size_t)4095;
	void *n = aligned_alloc(64, cap);
	if (!n) return NULL;
	free(p->scratch);
	p->scratch = n;
	p->scratch_size = cap;
	return n;
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

/* Rows of the next block of W, which a tile fetches into cache (one 64-byte line of each
 * row per 16 columns it walks) while it computes on a block already there. Without it the
 * first group of tokens waited on memory for each block and the memory idled while the
 * other groups computed: 4, 8 and 16 tokens against 440 MB of weights on two cores took
 * 17%, 20% and 10% longer. */
typedef struct {
	const float *row[4];
	int n, lines;
} next_rows;

/* At column i of a tile's walk over k. An asm statement, not _mm_prefetch: GCC 12 dropped
 * the builtin's prefetches from these loops (none were in the object file). The address
 * goes in a register, not as a memory operand: with one, GCC stored the 16 accumulators
 * to the stack on every step, in case the asm read them. */
static inline void fetch_next(const next_rows *pf, int i) {
	if (i % 16 == 0 && i / 16 < pf->lines)
		for (int e = 0; e < pf->n; e++) __asm__ volatile("prefetcht0 (%0)" : : "r"(pf->row[e] + i));
}

/* Four rows of W (row stride ldw) against one x: x is loaded once per four rows, and two
 * accumulators per row keep eight FMA chains in flight (four leave the FMA units half idle
 * waiting on their latency). */
__attribute__((target("avx2,fma"))) static void dot4_avx2(const float *x, const float *w, size_t ldw, int k, float *out,
								 const next_rows *pf) {
	const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, u0 = s0, u1 = s0, u2 = s0, u3 = s0;
	int i = 0;
	for (; i + 16 <= k; i += 16) {
		fetch_next(pf, i);
		__m256 xv = _mm256_loadu_ps(x + i), xu = _mm256_loadu_ps(x + i + 8);
		s0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w0 + i), s0);
		s1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w1 + i), s1);
		s2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w2 + i), s2);
		s3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w3 + i), s3);
		u0 = _mm256_fmadd_ps(xu, _mm256_loadu_ps(w0 + i + 8), u0);
		u1 = _mm256_fmadd_ps(xu, _mm256_loadu_ps(w1 + i + 8), u1);
		u2 = _mm256_fmadd_ps(xu, _mm256_loadu_ps(w2 + i + 8), u2);
		u3 = _mm256_fmadd_ps(xu, _mm256_loadu_ps(w3 + i + 8), u3);
	}
	for (; i + 8 <= k; i += 8) {
		__m256 xv = _mm256_loadu_ps(x + i);
		s0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w0 + i), s0);
		s1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w1 + i), s1);
		s2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w2 + i), s2);
		s3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w3 + i), s3);
	}
	float t[4] = {hsum256(_mm256_add_ps(s0, u0)), hsum256(_mm256_add_ps(s1, u1)), hsum256(_mm256_add_ps(s2, u2)),
		      hsum256(_mm256_add_ps(s3, u3))};
	const float *ws[4] = {w0, w1, w2, w3};
	for (; i < k; i++)
		for (int q = 0; q < 4; q++) t[q] += x[i] * ws[q][i];
	memcpy(out, t, sizeof t);
}

/* Four rows of W against two x rows (stride ldx). out: [2][ldo], 4 results in each. */
__attribute__((target("avx2,fma"))) static void dot4x2_avx2(const float *x0, size_t ldx, const float *w, size_t ldw,
							    int k, float *out, size_t ldo, const next_rows *pf) {
	const float *x1 = x0 + ldx;
	const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
	int i = 0;
	for (; i + 8 <= k; i += 8) {
		fetch_next(pf, i);
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
	memcpy(out, ta, sizeof ta);
	memcpy(out + ldo, tb, sizeof tb);
}

/* Four rows of W against three x rows: twelve accumulators, so that each loaded weight
 * vector feeds three FMAs and each x vector four; the FMA units, not the loads, bound
 * prompt chunks and batched steps (one core: 106 GFLOP/s, against 75 for four rows
 * against two). out: [3][ldo]. */
__attribute__((target("avx2,fma"))) static void dot4x3_avx2(const float *x0, size_t ldx, const float *w, size_t ldw,
							    int k, float *out, size_t ldo, const next_rows *pf) {
	const float *x1 = x0 + ldx, *x2 = x1 + ldx;
	const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
	__m256 c0 = a0, c1 = a0, c2 = a0, c3 = a0;
	int i = 0;
	for (; i + 8 <= k; i += 8) {
		fetch_next(pf, i);
		__m256 xa = _mm256_loadu_ps(x0 + i), xb = _mm256_loadu_ps(x1 + i), xc = _mm256_loadu_ps(x2 + i);
		__m256 v = _mm256_loadu_ps(w0 + i);
		a0 = _mm256_fmadd_ps(xa, v, a0), b0 = _mm256_fmadd_ps(xb, v, b0), c0 = _mm256_fmadd_ps(xc, v, c0);
		v = _mm256_loadu_ps(w1 + i);
		a1 = _mm256_fmadd_ps(xa, v, a1), b1 = _mm256_fmadd_ps(xb, v, b1), c1 = _mm256_fmadd_ps(xc, v, c1);
		v = _mm256_loadu_ps(w2 + i);
		a2 = _mm256_fmadd_ps(xa, v, a2), b2 = _mm256_fmadd_ps(xb, v, b2), c2 = _mm256_fmadd_ps(xc, v, c2);
		v = _mm256_loadu_ps(w3 + i);
		a3 = _mm256_fmadd_ps(xa, v, a3), b3 = _mm256_fmadd_ps(xb, v, b3), c3 = _mm256_fmadd_ps(xc, v, c3);
	}
	float t[3][4] = {{hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)},
			 {hsum256(b0), hsum256(b1), hsum256(b2), hsum256(b3)},
			 {hsum256(c0), hsum256(c1), hsum256(c2), hsum256(c3)}};
	const float *ws[4] = {w0, w1, w2, w3}, *xs[3] = {x0, x1, x2};
	for (; i < k; i++)
		for (int j = 0; j < 3; j++)
			for (int q = 0; q < 4; q++) t[j][q] += xs[j][i] * ws[q][i];
	for (int j = 0; j < 3; j++) memcpy(out + j * ldo, t[j], sizeof t[j]);
}

static int level_cap = MS_KERNELS_AVX512, cpu_level = -1;

int ms_kernels_level(void) {
	if (cpu_level < 0) {
		__builtin_cpu_init();
		int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
		cpu_level = !avx2 ? MS_KERNELS_PORTABLE
			    : __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? MS_KERNELS_AVX512
											   : MS_KERNELS_AVX2;
	}
	return cpu_level < level_cap ? cpu_level : level_cap;
}

void ms_kernels_cap(int level) { level_cap = level; }
int ms_kernels_avx2(void) { return ms_kernels_level() >= MS_KERNELS_AVX2; }
void ms_kernels_force_portable(int on) { level_cap = on ? MS_KERNELS_PORTABLE : MS_KERNELS_AVX512; }

float ms_dot(const float *a, const float *b, int n) {
	return ms_kernels_avx2() ? dot_avx2(a, b, n) : dot_portable(a, b, n);
}

/* 64 columns at a time against every row: the sums stay in registers (an axpy per row would
 * load and store them for each) and a 64-wide head's values are read in one pass. */
__attribute__((target("avx2,fma"))) static void weighted_sum_avx2(float *out, const float *w, const float *v, int n,
								   int dim, size_t ldv) {
	int e = 0;
	for (; e + 64 <= dim; e += 64) {
		__m256 s[8];
		for (int q = 0; q < 8; q++) s[q] = _mm256_setzero_ps();
		for (int i = 0; i < n; i++) {
			__m256 wi = _mm256_broadcast_ss(w + i);
			const float *vi = v + (size_t)i * ldv + e;
			for (int q = 0; q < 8; q++) s[q] = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 8 * q), s[q]);
		}
		for (int q = 0; q < 8; q++) _mm256_storeu_ps(out + e + 8 * q, s[q]);
	}
	for (; e + 8 <= dim; e += 8) {
		__m256 s0 = _mm256_setzero_ps();
		for (int i = 0; i < n; i++) s0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + i), _mm256_loadu_ps(v + (size_t)i * ldv + e), s0);
		_mm256_storeu_ps(out + e, s0);
	}
	for (; e < dim; e++) {
		float t = 0.0f;
		for (int i = 0; i < n; i++) t = fmaf(w[i], v[(size_t)i * ldv + e], t);
		out[e] = t;
	}
}

void ms_weighted_sum(float *out, const float *w, const float *v, int n, int dim, size_t ldv) {
	if (ms_kernels_avx2()) {
		weighted_sum_avx2(out, w, v, n, dim, ldv);
		return;
	}
	memset(out, 0, (size_t)dim * sizeof *out);
	for (int i = 0; i < n; i++)
		for (int e = 0; e < dim; e++) out[e] += w[i] * v[(size_t)i * ldv + e];
}

/* Eight rows at a time: q is loaded once for eight dots, eight FMA chains keep both units
 * busy (four left half their issue slots waiting on latency), and the sums are reduced
 * together; then four, then one. */
__attribute__((target("avx2,fma"))) static void dots_avx2(float *out, const float *q, const float *k, int n, int dim,
							  size_t ldk, float scale) {
	int p = 0;
	for (; p + 8 <= n && dim % 8 == 0; p += 8) {
		const float *k0 = k + (size_t)p * ldk;
		__m256 a[8];
		for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
		for (int e = 0; e < dim; e += 8) {
			__m256 qv = _mm256_loadu_ps(q + e);
			for (int r = 0; r < 8; r++) a[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + (size_t)r * ldk + e), a[r]);
		}
		/* each half: [lo-lane sums | hi-lane sums] of four rows; the lanes then add up */
		__m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
		__m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
		__m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
		_mm256_storeu_ps(out + p, _mm256_mul_ps(sum, _mm256_set1_ps(scale)));
	}
	for (; p + 4 <= n && dim % 8 == 0; p += 4) {
		const float *k0 = k + (size_t)p * ldk, *k1 = k0 + ldk, *k2 = k1 + ldk, *k3 = k2 + ldk;
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		for (int e = 0; e < dim; e += 8) {
			__m256 qv = _mm256_loadu_ps(q + e);
			a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + e), a0);
			a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + e), a1);
			a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + e), a2);
			a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + e), a3);
		}
		/* [a0 a1 a2 a3] summed within each: two rounds of hadd, then the two halves */
		__m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
		__m128 sum = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
		_mm_storeu_ps(out + p, _mm_mul_ps(sum, _mm_set1_ps(scale)));
	}
	for (; p < n; p++) out[p] = dot_avx2(q, k + (size_t)p * ldk, dim) * scale;
}

void ms_dots(float *out, const float *q, const float *k, int n, int dim, size_t ldk, float scale) {
	if (ms_kernels_avx2()) {
		dots_avx2(out, q, k, n, dim, ldk, scale);
		return;
	}
	for (int p = 0; p < n; p++) out[p] = dot_portable(q, k + (size_t)p * ldk, dim) * scale;
}

/* ---- 8-bit weights ---- */

/* Weights: int8 per block of 32 with scale amax / 127. */
static void q8_block_portable(const float *src, int8_t *q, float *s) {
	float amax = 0.0f;
	for (int i = 0; i < MS_Q8_BLOCK; i++) amax = fmaxf(amax, fabsf(src[i]));
	float scale = amax / 127.0f, inv = scale > 0 ? 1.0f / scale : 0.0f;
	*s = scale;
	for (int i = 0; i < MS_Q8_BLOCK; i++) q[i] = (int8_t)lrintf(src[i] * inv);
}

void ms_q8_quantize(const float *w, size_t d, int k, int8_t *q, float *s) {
	size_t nb = (size_t)k / MS_Q8_BLOCK;
	for (size_t r = 0; r < d; r++)
		for (size_t b = 0; b < nb; b++)
			q8_block_portable(w + r * k + b * MS_Q8_BLOCK, q + r * k + b * MS_Q8_BLOCK, s + r * nb + b);
}

/* Activations: int16 per block of 32 with scale amax / 32767. Their rounding error is 256
 * times smaller than the weights', so an 8-bit product stays as close to F32 as the 8-bit
 * weights alone allow (int8 activations, llama.cpp's Q8_0 x Q8_0, measured 1.6x the logit
 * error on stories260K), at the same cost per block: two _mm256_madd_epi16 against
 * sign + _mm256_maddubs_epi16 + _mm256_madd_epi16. Products are exact in int32
 * (32 * 32767 * 127 < 2^31) and in each float lane (4 * 32767 * 127 < 2^24). */
typedef struct {
	int16_t *q; /* [n][k] */
	float *s;   /* [n][k / MS_Q8_BLOCK] */
} q8_acts;

static void act_block_portable(const float *src, int16_t *q, float *s) {
	float amax = 0.0f;
	for (int i = 0; i < MS_Q8_BLOCK; i++) amax = fmaxf(amax, fabsf(src[i]));
	float scale = amax / 32767.0f, inv = scale > 0 ? 1.0f / scale : 0.0f;
	*s = scale;
	for (int i = 0; i < MS_Q8_BLOCK; i++) q[i] = (int16_t)lrintf(src[i] * inv);
}

/* The same arithmetic as act_block_portable (max of |x|, one multiply, round to nearest
 * even), so both paths give the same integers. */
__attribute__((target("avx2,fma"))) static void act_block_avx2(const float *src, int16_t *q, float *s) {
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8), v2 = _mm256_loadu_ps(src + 16),
	       v3 = _mm256_loadu_ps(src + 24);
	__m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
				 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
	__m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
	h = _mm_max_ps(h, _mm_movehl_ps(h, h));
	h = _mm_max_ss(h, _mm_movehdup_ps(h));
	float scale = _mm_cvtss_f32(h) / 32767.0f, inv = scale > 0 ? 1.0f / scale : 0.0f;
	*s = scale;
	__m256 iv = _mm256_set1_ps(inv);
	__m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, iv)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, iv)),
		i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, iv)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, iv));
	/* packs interleaves the 128-bit lanes; the permutation puts the values back in order */
	__m256i lo = _mm256_permute4x64_epi64(_mm256_packs_epi32(i0, i1), 0xD8);
	__m256i hi = _mm256_permute4x64_epi64(_mm256_packs_epi32(i2, i3), 0xD8);
	_mm256_storeu_si256((__m256i *)(void *)q, lo);
	_mm256_storeu_si256((__m256i *)(void *)(q + 16), hi);
}

/* x·w of one row and one token: each block's integer dot (exact) times both scales, summed
 * in block order. */
static float dot_q8_portable(const int16_t *qx, const float *sx, const int8_t *qw, const float *sw, int nb) {
	float t = 0.0f;
	for (int b = 0; b < nb; b++) {
		int32_t acc = 0;
		for (int i = 0; i < MS_Q8_BLOCK; i++) acc += (int32_t)qx[b * MS_Q8_BLOCK + i] * qw[b * MS_Q8_BLOCK + i];
		t += (float)acc * (sw[b] * sx[b]);
	}
	return t;
}

/* A block of 32 weights sign-extended to int16, in two halves. */
typedef struct {
	__m256i lo, hi;
} w16;

__attribute__((target("avx2,fma"), always_inline)) static inline w16 q8_load_block(const int8_t *q) {
	__m256i v = _mm256_loadu_si256((const __m256i *)(const void *)q);
	return (w16){_mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1))};
}

/* One block's integer dot in 8 int32 lanes, as floats (exact). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 q8_dot_block(const int16_t *x, w16 w) {
	__m256i a = _mm256_madd_epi16(w.lo, _mm256_loadu_si256((const __m256i *)(const void *)x));
	__m256i b = _mm256_madd_epi16(w.hi, _mm256_loadu_si256((const __m256i *)(const void *)(x + 16)));
	return _mm256_cvtepi32_ps(_mm256_add_epi32(a, b));
}

/* R rows of 8-bit W against T tokens' quantised x, R * T accumulators; out: [T][ldo]. Each
 * (row, token) sums acc += d[b] * s[b] + d[b+1] * s[b+1] per pair of blocks, the same order
 * for every R and T (one accumulator per pair, and the add per two blocks keeps its chain
 * short). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
q8_tile_avx2(const q8_acts *x, int k, const int8_t *qw, const float *sw, int R, int T, float *out, size_t ldo) {
	int nb = k / MS_Q8_BLOCK;
	__m256 acc[2][4];
	for (int r = 0; r < R; r++)
		for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
	int b = 0;
	for (; b + 2 <= nb; b += 2) {
		w16 w0[2], w1[2];
		for (int r = 0; r < R; r++) {
			w0[r] = q8_load_block(qw + (size_t)r * k + b * MS_Q8_BLOCK);
			w1[r] = q8_load_block(qw + (size_t)r * k + (b + 1) * MS_Q8_BLOCK);
		}
		for (int t = 0; t < T; t++) {
			const int16_t *xt = x->q + (size_t)t * k + b * MS_Q8_BLOCK;
			const float *sx = x->s + (size_t)t * nb + b;
			for (int r = 0; r < R; r++) {
				const float *s = sw + (size_t)r * nb + b;
				__m256 p = _mm256_mul_ps(q8_dot_block(xt, w0[r]), _mm256_set1_ps(s[0] * sx[0]));
				p = _mm256_fmadd_ps(q8_dot_block(xt + MS_Q8_BLOCK, w1[r]), _mm256_set1_ps(s[1] * sx[1]), p);
				acc[r][t] = _mm256_add_ps(acc[r][t], p);
			}
		}
	}
	if (b < nb)
		for (int r = 0; r < R; r++) {
			w16 w = q8_load_block(qw + (size_t)r * k + b * MS_Q8_BLOCK);
			for (int t = 0; t < T; t++) {
				__m256 dv = q8_dot_block(x->q + (size_t)t * k + b * MS_Q8_BLOCK, w);
				float sc = sw[(size_t)r * nb + b] * x->s[(size_t)t * nb + b];
				acc[r][t] = _mm256_fmadd_ps(dv, _mm256_set1_ps(sc), acc[r][t]);
			}
		}
	for (int t = 0; t < T; t++)
		for (int r = 0; r < R; r++) out[(size_t)t * ldo + r] = hsum256(acc[r][t]);
}

/* The tile shapes in use, each compiled with its loops unrolled. */
#define Q8_TILE(R, T)                                                                                          \
	__attribute__((target("avx2,fma"))) static void q8_tile_##R##x##T(const q8_acts *x, int k, const int8_t *qw, \
									     const float *sw, float *out, size_t ldo) { \
		q8_tile_avx2(x, k, qw, sw, R, T, out, ldo);                                                     \
	}
Q8_TILE(1, 1)
Q8_TILE(1, 2)
Q8_TILE(1, 3)
Q8_TILE(1, 4)
Q8_TILE(2, 1)
Q8_TILE(2, 2)
Q8_TILE(2, 3)
Q8_TILE(2, 4)
typedef void (*q8_tile_fn)(const q8_acts *, int, const int8_t *, const float *, float *, size_t);
static const q8_tile_fn q8_tiles[2][4] = {{q8_tile_1x1, q8_tile_1x2, q8_tile_1x3, q8_tile_1x4},
					  {q8_tile_2x1, q8_tile_2x2, q8_tile_2x3, q8_tile_2x4}};

/* AVX-512 (BW): a block's 32 weights sign-extend into one zmm and meet x in one
 * _mm512_madd_epi16, about half the AVX2 instructions per block. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512 q8_dot_block512(const int16_t *x,
												   __m512i w) {
	return _mm512_cvtepi32_ps(_mm512_madd_epi16(w, _mm512_loadu_si512((const void *)x)));
}

__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512i q8_load_block512(const int8_t *q) {
	return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)q));
}

/* As q8_tile_avx2, on zmm registers. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void
q8_tile_avx512(const q8_acts *x, int k, const int8_t *qw, const float *sw, int R, int T, float *out, size_t ldo) {
	int nb = k / MS_Q8_BLOCK;
	__m512 acc[2][4];
	for (int r = 0; r < R; r++)
		for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
	int b = 0;
	for (; b + 2 <= nb; b += 2) {
		__m512i w0[2], w1[2];
		for (int r = 0; r < R; r++) {
			w0[r] = q8_load_block512(qw + (size_t)r * k + b * MS_Q8_BLOCK);
			w1[r] = q8_load_block512(qw + (size_t)r * k + (b + 1) * MS_Q8_BLOCK);
		}
		for (int t = 0; t < T; t++) {
			const int16_t *xt = x->q + (size_t)t * k + b * MS_Q8_BLOCK;
			const float *sx = x->s + (size_t)t * nb + b;
			for (int r = 0; r < R; r++) {
				const float *sc = sw + (size_t)r * nb + b;
				__m512 p = _mm512_mul_ps(q8_dot_block512(xt, w0[r]), _mm512_set1_ps(sc[0] * sx[0]));
				p = _mm512_fmadd_ps(q8_dot_block512(xt + MS_Q8_BLOCK, w1[r]), _mm512_set1_ps(sc[1] * sx[1]), p);
				acc[r][t] = _mm512_add_ps(acc[r][t], p);
			}
		}
	}
	if (b < nb)
		for (int r = 0; r < R; r++) {
			__m512i w = q8_load_block512(qw + (size_t)r * k + b * MS_Q8_BLOCK);
			for (int t = 0; t < T; t++) {
				__m512 dv = q8_dot_block512(x->q + (size_t)t * k + b * MS_Q8_BLOCK, w);
				float sc = sw[(size_t)r * nb + b] * x->s[(size_t)t * nb + b];
				acc[r][t] = _mm512_fmadd_ps(dv, _mm512_set1_ps(sc), acc[r][t]);
			}
		}
	for (int t = 0; t < T; t++)
		for (int r = 0; r < R; r++) out[(size_t)t * ldo + r] = _mm512_reduce_add_ps(acc[r][t]);
}

#define Q8_TILE512(R, T)                                                                                       \
	__attribute__((target("avx512f,avx512bw"))) static void q8_tile512_##R##x##T(                               \
		const q8_acts *x, int k, const int8_t *qw, const float *sw, float *out, size_t ldo) {               \
		q8_tile_avx512(x, k, qw, sw, R, T, out, ldo);                                                    \
	}
Q8_TILE512(1, 1)
Q8_TILE512(1, 2)
Q8_TILE512(1, 3)
Q8_TILE512(1, 4)
Q8_TILE512(2, 1)
Q8_TILE512(2, 2)
Q8_TILE512(2, 3)
Q8_TILE512(2, 4)
static const q8_tile_fn q8_tiles512[2][4] = {{q8_tile512_1x1, q8_tile512_1x2, q8_tile512_1x3, q8_tile512_1x4},
					     {q8_tile512_2x1, q8_tile512_2x2, q8_tile512_2x3, q8_tile512_2x4}};

/* ---- products ---- */

typedef struct {
	const float *x;
	int n, k, count, blocks, level, avx2;
	const ms_mat *mats;
	q8_acts xq; /* x quantised, when a matrix is 8-bit */
} mm_job;

static void put(float *out, const float *v, int cnt, const float *bias) {
	for (int q = 0; q < cnt; q++) out[q] = v[q] + (bias ? bias[q] : 0.0f);
}

/* AVX-512: four rows of W against T tokens, 16 columns a step, 4T accumulators (of 32 zmm
 * registers): one core ran 88 GMAC/s against 47 for the AVX2 4x3 tiles. out: [T][ldo]. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void
tile4_avx512(const float *x, size_t ldx, const float *w, size_t ldw, int k, float *out, size_t ldo, int T,
	     const next_rows *pf) {
	__m512 acc[4][4];
	for (int r = 0; r < 4; r++)
		for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
	int i = 0;
	for (; i + 16 <= k; i += 16) {
		fetch_next(pf, i);
		__m512 xv[4];
		for (int t = 0; t < T; t++) xv[t] = _mm512_loadu_ps(x + t * ldx + i);
		for (int r = 0; r < 4; r++) {
			__m512 wv = _mm512_loadu_ps(w + r * ldw + i);
			for (int t = 0; t < T; t++) acc[r][t] = _mm512_fmadd_ps(xv[t], wv, acc[r][t]);
		}
	}
	if (i < k) {
		__mmask16 m = (__mmask16)((1u << (k - i)) - 1);
		__m512 xv[4];
		for (int t = 0; t < T; t++) xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + i);
		for (int r = 0; r < 4; r++) {
			__m512 wv = _mm512_maskz_loadu_ps(m, w + r * ldw + i);
			for (int t = 0; t < T; t++) acc[r][t] = _mm512_fmadd_ps(xv[t], wv, acc[r][t]);
		}
	}
	for (int t = 0; t < T; t++)
		for (int r = 0; r < 4; r++) out[t * ldo + r] = _mm512_reduce_add_ps(acc[r][t]);
}

#define TILE4_AVX512(T)                                                                                          \
	__attribute__((target("avx512f,avx512bw"))) static void tile4x##T##_avx512(                               \
		const float *x, size_t ldx, const float *w, size_t ldw, int k, float *out, size_t ldo,             \
		const next_rows *pf) {                                                                           \
		tile4_avx512(x, ldx, w, ldw, k, out, ldo, T, pf);                                                \
	}
TILE4_AVX512(1)
TILE4_AVX512(2)
TILE4_AVX512(3)
TILE4_AVX512(4)
typedef void (*tile4_fn)(const float *, size_t, const float *, size_t, int, float *, size_t, const next_rows *);
static const tile4_fn tiles4_avx512[4] = {tile4x1_avx512, tile4x2_avx512, tile4x3_avx512, tile4x4_avx512};

/* Tokens in the next tile when left remain: AVX-512 takes up to 4; AVX2 up to 3, and 4
 * as 2 + 2 (a lone token runs slowest). */
static int tile_tokens(int avx512, int left) {
	if (avx512) return left < 4 ? left : 4;
	return left == 4 ? 2 : left >= 3 ? 3 : left;
}

/* Four rows of W (row stride ldw) against n x rows (stride ldx) over k columns: out[i][0..3]
 * (row stride ldo) = the dots, or += them (add). */
static void rows4(int level, const float *x, size_t ldx, int n, const float *w, size_t ldw, int k, float *out,
		  size_t ldo, int add, const float *next, int next_len) {
	float t[4][4];
	int avx512 = level >= MS_KERNELS_AVX512, groups = 0;
	for (int i = 0; i < n; i += tile_tokens(avx512, n - i)) groups++;
	for (int i = 0, g = 0; i < n; g++) {
		const float *xi = x + (size_t)i * ldx;
		int c = tile_tokens(avx512, n - i);
		/* group g fetches the next block's rows g, g + groups, ... */
		next_rows pf = {{0}, 0, next ? (next_len + 15) / 16 : 0};
		for (int e = g; next && e < 4; e += groups) pf.row[pf.n++] = next + (size_t)e * ldw;
		if (avx512) tiles4_avx512[c - 1](xi, ldx, w, ldw, k, t[0], 4, &pf);
		else if (c == 3) dot4x3_avx2(xi, ldx, w, ldw, k, t[0], 4, &pf);
		else if (c == 2) dot4x2_avx2(xi, ldx, w, ldw, k, t[0], 4, &pf);
		else dot4_avx2(xi, w, ldw, k, t[0], &pf);
		for (int q = 0; q < c; q++)
			for (int e = 0; e < 4; e++) out[(size_t)(i + q) * ldo + e] = t[q][e] + (add ? out[(size_t)(i + q) * ldo + e] : 0.0f);
		i += c;
	}
}

/* Several tokens' tiles walk k in slices of KC columns: four rows' slice (32 KiB) stays in
 * L1 for all the tokens instead of coming from L2 for each group of three (1.1B's k=5632
 * rows: ~20% faster on one core). */
#define KC 2048
static void add_bias(float *out, int n, size_t ldo, const float *bias, int cnt) {
	if (bias)
		for (int i = 0; i < n; i++)
			for (int e = 0; e < cnt; e++) out[(size_t)i * ldo + e] += bias[e];
}

/* Rows [r0, r1) of an F32 product. One token (generation) walks one row at a time: a single
 * sequential stream per thread is what the hardware prefetchers follow best (one core:
 * 33 GB/s, against 25 GB/s for four rows interleaved). Several tokens share each loaded
 * weight vector through the 4-row tiles. */
static void mm_rows_f32(const mm_job *j, const ms_mat *m, int r0, int r1) {
	int n = j->n, k = j->k, d = m->d;
	for (int r = r0; r < r1;) {
		const float *w = m->w + (size_t)r * k;
		if (j->avx2 && n > 1 && r + 4 <= r1) {
			for (int kc = 0; kc < k; kc += KC) {
				/* the next block: these rows' next slice, or the next rows' first */
				const float *next = kc + KC < k ? w + kc + KC : r + 8 <= r1 ? w + (size_t)4 * k : NULL;
				int next_len = kc + KC < k ? (k - kc - KC < KC ? k - kc - KC : KC) : (k < KC ? k : KC);
				rows4(j->level, j->x + kc, (size_t)k, n, w + kc, (size_t)k, k - kc < KC ? k - kc : KC, m->out + r,
				      (size_t)d, kc > 0, next, next_len);
			}
			add_bias(m->out + r, n, (size_t)d, m->bias ? m->bias + r : NULL, 4);
			r += 4;
		} else {
			for (int i = 0; i < n; i++) {
				float v = j->avx2 ? dot_avx2(j->x + (size_t)i * k, w, k) : dot_portable(j->x + (size_t)i * k, w, k);
				m->out[(size_t)i * d + r] = v + (m->bias ? m->bias[r] : 0.0f);
			}
			r++;
		}
	}
}

/* Many tokens against 8-bit rows: four rows at a time are dequantised into F32, a slice of
 * DQ_K columns at a time (16 KiB on the stack), and run through the F32 tiles. From 16
 * tokens that beat the integer tiles (at 32: ~20% on AVX2, ~13% on AVX-512, one core):
 * each integer block sum still needs a conversion and a scaling per (row, token), about
 * what the F32 FMAs it replaces cost, while the dequantising is shared by all the tokens. */
#define DQ_K 1024
#define DQ_MIN_N 16
__attribute__((target("avx2,fma"))) static void dequant_avx2(const int8_t *q, const float *sc, int k, float *out) {
	for (int b = 0; b < k / MS_Q8_BLOCK; b++) {
		__m256 s8 = _mm256_broadcast_ss(sc + b);
		for (int i = 0; i < MS_Q8_BLOCK; i += 8) {
			__m128i v = _mm_loadl_epi64((const __m128i *)(const void *)(q + b * MS_Q8_BLOCK + i));
			_mm256_storeu_ps(out + b * MS_Q8_BLOCK + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), s8));
		}
	}
}

__attribute__((target("avx512f,avx512bw"))) static void dequant_avx512(const int8_t *q, const float *sc, int k,
									 float *out) {
	for (int b = 0; b < k / MS_Q8_BLOCK; b++) {
		__m512 s16 = _mm512_set1_ps(sc[b]);
		for (int i = 0; i < MS_Q8_BLOCK; i += 16) {
			__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(q + b * MS_Q8_BLOCK + i));
			_mm512_storeu_ps(out + b * MS_Q8_BLOCK + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)), s16));
		}
	}
}

static void mm_rows4_q8_dequant(const mm_job *j, const ms_mat *m, int r) {
	int n = j->n, k = j->k, d = m->d;
	size_t nb = (size_t)k / MS_Q8_BLOCK;
	float wf[4][DQ_K];
	for (int i = 0; i < n; i++)
		for (int e = 0; e < 4; e++) m->out[(size_t)i * d + r + e] = m->bias ? m->bias[r + e] : 0.0f;
	for (int kc = 0; kc < k; kc += DQ_K) {
		int kl = k - kc < DQ_K ? k - kc : DQ_K;
		for (int e = 0; e < 4; e++) {
			const int8_t *q = m->w8->q + (size_t)(r + e) * k + kc;
			const float *sc = m->w8->s + (size_t)(r + e) * nb + kc / MS_Q8_BLOCK;
			if (j->level >= MS_KERNELS_AVX512) dequant_avx512(q, sc, kl, wf[e]);
			else dequant_avx2(q, sc, kl, wf[e]);
		}
		rows4(j->level, j->x + kc, (size_t)k, n, wf[0], DQ_K, kl, m->out + r, (size_t)d, 1, NULL, 0);
	}
}

/* Rows [r0, r1) of an 8-bit product: dequantised 4-row tiles for many tokens, else integer
 * tiles of up to 2 rows x 4 tokens (one row for one token: a single stream, as for F32). */
static void mm_rows_q8(const mm_job *j, const ms_mat *m, int r0, int r1) {
	int n = j->n, k = j->k, d = m->d, nb = k / MS_Q8_BLOCK;
	const float *bias = m->bias;
	float t[4][2];
	if (j->avx2 && n >= DQ_MIN_N)
		for (; r0 + 4 <= r1; r0 += 4) mm_rows4_q8_dequant(j, m, r0);
	for (int r = r0; r < r1;) {
		int R = n > 1 && r + 2 <= r1 ? 2 : 1;
		const int8_t *qw = m->w8->q + (size_t)r * k;
		const float *sw = m->w8->s + (size_t)r * nb, *b = bias ? bias + r : NULL;
		for (int i = 0; i < n;) {
			int T = n - i < 4 ? n - i : 4;
			q8_acts xi = {j->xq.q + (size_t)i * k, j->xq.s + (size_t)i * nb};
			if (j->level >= MS_KERNELS_AVX512) {
				q8_tiles512[R - 1][T - 1](&xi, k, qw, sw, t[0], 2);
			} else if (j->avx2) {
				q8_tiles[R - 1][T - 1](&xi, k, qw, sw, t[0], 2);
			} else {
				for (int q = 0; q < T; q++)
					for (int e = 0; e < R; e++)
						t[q][e] = dot_q8_portable(xi.q + (size_t)q * k, xi.s + (size_t)q * nb, qw + (size_t)e * k,
									  sw + (size_t)e * nb, nb);
			}
			for (int q = 0; q < T; q++) put(m->out + (size_t)(i + q) * d + r, t[q], R, b);
			i += T;
		}
		r += R;
	}
}

/* A task: a contiguous range of 4-row blocks across the products, in order. */
/* Where task t of nt starts, in blocks: tasks shrink from both ends towards the middle,
 * where the front and back claimers meet (see claim), so that the thread that finishes
 * first waits on a small last task rather than an average one. */
static int task_start(int blocks, int t, int nt) {
	if (t <= 0 || t >= nt) return t <= 0 ? 0 : blocks;
	double u = (double)t / nt, v = u < 0.5 ? 1.0 - 2.0 * u : 2.0 * u - 1.0, f = 0.5 * (1.0 - v * v);
	return (int)(blocks * (u < 0.5 ? f : 1.0 - f) + 0.5);
}

static void mm_task(void *ctx, int t, int nt) {
	const mm_job *j = ctx;
	int b0 = task_start(j->blocks, t, nt), b1 = task_start(j->blocks, t + 1, nt);
	for (int mi = 0, off = 0; mi < j->count && off < b1; mi++) {
		const ms_mat *m = &j->mats[mi];
		int nb = (m->d + 3) / 4, lo = b0 > off ? b0 - off : 0, hi = b1 - off < nb ? b1 - off : nb;
		if (lo < hi) {
			int r0 = lo * 4, r1 = hi * 4 < m->d ? hi * 4 : m->d;
			if (m->w8) mm_rows_q8(j, m, r0, r1);
			else mm_rows_f32(j, m, r0, r1);
		}
		off += nb;
	}
}

size_t ms_matmul_scratch(int n, int k) {
	return (size_t)n * k * sizeof(int16_t) + (size_t)n * (k / MS_Q8_BLOCK) * sizeof(float);
}

void ms_q8_quantize_acts(const float *x, size_t n, int k, int16_t *q, float *s) {
	size_t blocks = n * (size_t)(k / MS_Q8_BLOCK);
	int avx2 = ms_kernels_avx2();
	for (size_t i = 0; i < blocks; i++) {
		if (avx2) act_block_avx2(x + i * MS_Q8_BLOCK, q + i * MS_Q8_BLOCK, s + i);
		else act_block_portable(x + i * MS_Q8_BLOCK, q + i * MS_Q8_BLOCK, s + i);
	}
}

int ms_matmul_many(ms_pool *pool, const float *x, int n, int k, const ms_mat *mats, int count) {
	mm_job j = {x, n, k, count, 0, ms_kernels_level(), ms_kernels_avx2(), mats, {0}};
	size_t work = 0;
	int q8 = 0, int_rows = 0; /* 8-bit rows that take the integer kernels */
	for (int i = 0; i < count; i++) {
		j.blocks += (mats[i].d + 3) / 4;
		work += (size_t)n * mats[i].d * k;
		q8 |= mats[i].w8 != NULL;
		int_rows |= mats[i].w8 && (!j.avx2 || n < DQ_MIN_N || mats[i].d % 4);
	}
	if (n <= 0 || j.blocks == 0) return 0;
	if (q8 && k % MS_Q8_BLOCK) return MS_EINVAL;
	void *own = NULL;
	if (int_rows) {
		size_t need = ms_matmul_scratch(n, k);
		char *buf = pool ? ms_pool_scratch(pool, need) : (own = malloc(need));
		if (!buf) return MS_ENOMEM;
		j.xq.s = (float *)(void *)buf;
		j.xq.q = (int16_t *)(void *)(buf + (size_t)n * (k / MS_Q8_BLOCK) * sizeof(float));
		ms_q8_quantize_acts(x, (size_t)n, k, j.xq.q, j.xq.s);
	}
	/* several tasks per thread, claimed as threads come free: a thread the OS runs late
	 * costs its share, not the whole product; tiny products are not worth the pool */
	int tasks = pool && pool->n_threads > 1 && work >= 32768 ? 8 * pool->n_threads : 1;
	if (tasks > j.blocks) tasks = j.blocks;
	ms_pool_run_n(pool, mm_task, &j, tasks);
	free(own);
	return 0;
}

void ms_matmul(ms_pool *pool, float *out, const float *x, const float *w, const float *bias, int n, int d,
	       int k) {
	ms_mat m = {out, w, NULL, bias, d};
	ms_matmul_many(pool, x, n, k, &m, 1); /* F32 only: needs no memory, cannot fail */
}

int ms_matmul_q8(ms_pool *pool, float *out, const float *x, const ms_q8 *w, const float *bias, int n, int d, int k) {
	ms_mat m = {out, NULL, w, bias, d};
	return ms_matmul_many(pool, x, n, k, &m, 1);
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

/* e^x for x in [-87.3, 88.3] (clamped: below, e^x is ~1e-38 where expf would give a
 * denormal or 0; above, ~2e38 where expf would overflow), to ~2 ulp: Cephes' expf, x = n
 * ln2 + r with ln2 split in two, a degree-6 polynomial in r, then n added to the exponent. */
__attribute__((target("avx2,fma"))) static inline __m256 exp_avx2(__m256 x) {
	x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
	__m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
				    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 y = _mm256_set1_ps(1.9875691500e-4f);
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
	y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) static void softmax_avx2(float *x, int n) {
	__m256 mv = _mm256_set1_ps(x[0]);
	int i = 0;
	for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
	__m128 h = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
	h = _mm_max_ps(h, _mm_movehl_ps(h, h));
	float max = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
	for (; i < n; i++) max = x[i] > max ? x[i] : max;
	__m256 sv = _mm256_setzero_ps(), m8 = _mm256_set1_ps(max);
	float sum = 0.0f;
	for (i = 0; i + 8 <= n; i += 8) {
		__m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), m8));
		_mm256_storeu_ps(x + i, e);
		sv = _mm256_add_ps(sv, e);
	}
	for (; i < n; i++) {
		x[i] = expf(x[i] - max);
		sum += x[i];
	}
	sum += hsum256(sv);
	__m256 inv = _mm256_set1_ps(sum);
	for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), inv));
	for (; i < n; i++) x[i] /= sum;
}

void ms_softmax(float *x, int n) {
	if (ms_kernels_avx2()) {
		softmax_avx2(x, n);
		return;
	}
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

__attribute__((target("avx2,fma"))) static void silu_mul_avx2(float *h, const float *g, size_t n) {
	size_t i = 0;
	const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(h + i);
		__m256 den = _mm256_add_ps(one, exp_avx2(_mm256_xor_ps(x, sign)));
		_mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_div_ps(x, den), _mm256_loadu_ps(g + i)));
	}
	for (; i < n; i++) h[i] = ms_silu(h[i]) * g[i];
}

void ms_silu_mul(float *h, const float *g, size_t n) {
	if (ms_kernels_avx2()) silu_mul_avx2(h, g, n);
	else
		for (size_t i = 0; i < n; i++) h[i] = ms_silu(h[i]) * g[i];
}

float ms_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
float ms_gelu_new(float x) {
	return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
float ms_silu(float x) { return x / (1.0f + expf(-x)); }
