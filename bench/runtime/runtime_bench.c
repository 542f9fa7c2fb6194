/* bench/runtime/runtime_bench.c: bin/bench/runtime, the runtime's speed benchmark.
 *
 * Writes random-weight Llama checkpoints in Hugging Face layout (config.json +
 * model.safetensors, F32) at real shapes, then for each shape and thread count reports
 * prompt-processing and generation tokens/s and resident memory, best of --runs. A
 * vectorised read-only bandwidth probe, run after each generation, gives the
 * memory-bandwidth bound: bandwidth / weight bytes read per generated token. "bound" is
 * the best single 512 MiB pass (the definition: best of 5 runs of the probe);
 * "sustained" the best probe that lasted as long as a generation phase. Random weights:
 * compare speed only.
 *
 *   bin/bench/runtime [--shapes 15M,110M,1.1B] [--threads 1,2] [--prompt N] [--gen N] [--dir D]
 *                     [--streams 1,4,16] [--q8 0|1] [--runs N]
 */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/kernels.h"
#include "runtime/model.h"

typedef struct {
	const char *name;
	int dim, hidden, layers, heads, kv_heads, vocab;
	int tied;
} shape;

static const shape shapes[] = {
	{"15M", 288, 768, 6, 6, 6, 32000, 1},
	{"110M", 768, 2048, 12, 12, 12, 32000, 1},
	{"1.1B", 2048, 5632, 22, 32, 4, 32000, 0},
};

static uint64_t rng = 0x243f6a8885a308d3ull;
static float frand(void) {
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return ((float)(rng >> 40) / 16777216.0f - 0.5f) * 0.1f;
}

typedef struct { char name[96]; int64_t d0, d1; } tdesc;

static int write_checkpoint(const shape *s, const char *dir) {
	char path[4096];
	mkdir(dir, 0755);
	snprintf(path, sizeof path, "%s/config.json", dir);
	FILE *f = fopen(path, "w");
	if (!f) return -1;
	fprintf(f,
		"{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, "
		"\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
		"\"num_key_value_heads\": %d, \"vocab_size\": %d, \"max_position_embeddings\": 2048, "
		"\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s, "
		"\"bos_token_id\": 1, \"eos_token_id\": 2, \"hidden_act\": \"silu\"}\n",
		s->dim, s->hidden, s->layers, s->heads, s->kv_heads, s->vocab, s->tied ? "true" : "false");
	fclose(f);
	int kv = s->dim / s->heads * s->kv_heads, n = 0;
	tdesc *t = calloc((size_t)s->layers * 9 + 3, sizeof *t);
	snprintf(t[n].name, sizeof t[n].name, "model.embed_tokens.weight"), t[n].d0 = s->vocab, t[n++].d1 = s->dim;
	snprintf(t[n].name, sizeof t[n].name, "model.norm.weight"), t[n].d0 = s->dim, t[n++].d1 = 0;
	if (!s->tied) snprintf(t[n].name, sizeof t[n].name, "lm_head.weight"), t[n].d0 = s->vocab, t[n++].d1 = s->dim;
	for (int l = 0; l < s->layers; l++) {
		struct { const char *k; int64_t a, b; } L[] = {
			{"input_layernorm.weight", s->dim, 0}, {"post_attention_layernorm.weight", s->dim, 0},
			{"self_attn.q_proj.weight", s->dim, s->dim}, {"self_attn.k_proj.weight", kv, s->dim},
			{"self_attn.v_proj.weight", kv, s->dim}, {"self_attn.o_proj.weight", s->dim, s->dim},
			{"mlp.gate_proj.weight", s->hidden, s->dim}, {"mlp.up_proj.weight", s->hidden, s->dim},
			{"mlp.down_proj.weight", s->dim, s->hidden},
		};
		for (int i = 0; i < 9; i++) {
			snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.%s", l, L[i].k);
			t[n].d0 = L[i].a, t[n++].d1 = L[i].b;
		}
	}
	/* header: offsets in order, padded to 8 bytes so the data area stays aligned */
	size_t cap = 256 + (size_t)n * 160, hl = 0, off = 0;
	char *h = malloc(cap);
	hl += (size_t)snprintf(h + hl, cap - hl, "{");
	for (int i = 0; i < n; i++) {
		size_t bytes = (size_t)t[i].d0 * (t[i].d1 ? (size_t)t[i].d1 : 1) * 4;
		if (t[i].d1)
			hl += (size_t)snprintf(h + hl, cap - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}",
					       i ? "," : "", t[i].name, (long long)t[i].d0, (long long)t[i].d1, off, off + bytes);
		else
			hl += (size_t)snprintf(h + hl, cap - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%zu,%zu]}",
					       i ? "," : "", t[i].name, (long long)t[i].d0, off, off + bytes);
		off += bytes;
	}
	hl += (size_t)snprintf(h + hl, cap - hl, "}");
	while (hl % 8) h[hl++] = ' ';
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	f = fopen(path, "wb");
	if (!f) return -1;
	uint8_t len8[8];
	for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	fwrite(len8, 1, 8, f);
	fwrite(h, 1, hl, f);
	float *buf = malloc(1 << 22);
	for (int i = 0; i < n; i++) {
		size_t cnt = (size_t)t[i].d0 * (t[i].d1 ? (size_t)t[i].d1 : 1);
		int is_norm = t[i].d1 == 0;
		while (cnt) {
			size_t c = cnt < (1 << 20) ? cnt : (1 << 20);
			for (size_t k = 0; k < c; k++) buf[k] = is_norm ? 1.0f : frand();
			fwrite(buf, 4, c, f);
			cnt -= c;
		}
	}
	free(buf);
	free(h);
	free(t);
	return fclose(f);
}

/* ---- bandwidth probe: sum a buffer much larger than the caches, split across the pool ---- */
typedef struct { const float *p, *x; size_t n; int fma; double sums[64]; } bw_job;

/* fma = 0: the read-only probe (the bound). fma = 1: what generation does to each byte, a
 * dot product with a vector held in L1, as one sequential stream per thread: how close
 * to the probe a kernel can get on this machine. */
__attribute__((target("avx2,fma"))) static void bw_task(void *ctx, int t, int nt) {
	bw_job *j = ctx;
	size_t a = j->n * (size_t)t / (size_t)nt, b = j->n * (size_t)(t + 1) / (size_t)nt;
	a &= ~(size_t)31, b &= ~(size_t)31;
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	if (!j->fma)
		for (size_t i = a; i < b; i += 32) {
			s0 = _mm256_add_ps(s0, _mm256_load_ps(j->p + i));
			s1 = _mm256_add_ps(s1, _mm256_load_ps(j->p + i + 8));
			s2 = _mm256_add_ps(s2, _mm256_load_ps(j->p + i + 16));
			s3 = _mm256_add_ps(s3, _mm256_load_ps(j->p + i + 24));
		}
	else
		for (size_t i = a; i < b; i += 32) {
			const float *x = j->x + (i & 1023);
			s0 = _mm256_fmadd_ps(_mm256_load_ps(x), _mm256_load_ps(j->p + i), s0);
			s1 = _mm256_fmadd_ps(_mm256_load_ps(x + 8), _mm256_load_ps(j->p + i + 8), s1);
			s2 = _mm256_fmadd_ps(_mm256_load_ps(x + 16), _mm256_load_ps(j->p + i + 16), s2);
			s3 = _mm256_fmadd_ps(_mm256_load_ps(x + 24), _mm256_load_ps(j->p + i + 24), s3);
		}
	float o[8];
	_mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
	j->sums[t] = o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}

/* The probe's 512 MiB buffer and pool, set up once and measured as often as needed (a
 * fresh buffer per measurement was a 512 MiB fault-in and memset each time). The buffer
 * gets transparent huge pages, as the model's weights do (runtime/model.c): through 4 KiB
 * pages the probe measured anywhere from 2 to 60 GB/s, depending on what ran before it. */
typedef struct {
	char *map;
	bw_job j;
	ms_pool pool;
} probe;

#define PROBE_BYTES ((size_t)512 << 20)
#define PROBE_ALIGN ((size_t)2 << 20)

static int probe_open(probe *pr, int threads) {
	memset(pr, 0, sizeof *pr);
	pr->map = mmap(NULL, PROBE_BYTES + PROBE_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	float *x = aligned_alloc(64, 1024 * sizeof *x);
	if (pr->map == MAP_FAILED || !x) {
		if (pr->map != MAP_FAILED) munmap(pr->map, PROBE_BYTES + PROBE_ALIGN);
		free(x);
		return -1;
	}
	float *p = (float *)(void *)(((uintptr_t)pr->map + PROBE_ALIGN - 1) & ~(uintptr_t)(PROBE_ALIGN - 1));
	madvise(p, PROBE_BYTES, MADV_HUGEPAGE);
	memset(p, 0, PROBE_BYTES);
	for (int i = 0; i < 1024; i++) x[i] = 1.0f;
	pr->j = (bw_job){p, x, PROBE_BYTES / 4, 0, {0}};
	ms_pool_init(&pr->pool, threads);
	ms_pool_run(&pr->pool, bw_task, &pr->j); /* warms up: the pool's threads are starting */
	return 0;
}

static void probe_close(probe *pr) {
	ms_pool_free(&pr->pool);
	munmap(pr->map, PROBE_BYTES + PROBE_ALIGN);
	free((float *)pr->j.x);
}

/* GB/s, best of `runs`, read-only (fma = 0) or as a streaming dot product (fma = 1). A run
 * reads the buffer once, or again and again for at least min_ms: the bandwidth of this
 * shared VM swings within milliseconds, so a bound for a generation that lasts a second
 * comes from a probe that lasts as long (a best single 8 ms pass catches a spike no
 * second-long run ever sees). */
static double probe_gbs(probe *pr, int fma, int runs, double min_ms) {
	pr->j.fma = fma;
	double best = 0;
	for (int r = 0; r < runs; r++) {
		double t0 = ms_now_ms(), ms;
		size_t passes = 0;
		do {
			ms_pool_run(&pr->pool, bw_task, &pr->j);
			passes++;
		} while ((ms = ms_now_ms() - t0) < min_ms);
		double gbs = (double)PROBE_BYTES * passes / (ms / 1000.0) / 1e9;
		if (gbs > best) best = gbs;
	}
	return best;
}

static long status_kb(const char *key) {
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, key, strlen(key))) v = atol(line + strlen(key) + 1);
	if (f) fclose(f);
	return v;
}

static int count_gen(void *ud, int32_t id) { return 0; }

/* Aggregate tokens/s of S streams of o.max_new_tokens after 8-token prompts, stepped
 * together (the model worker's batched path). */
static double streams_tps(ms_model *m, const ms_gen_opts *o, int S, int vocab) {
	ms_gen **g = calloc((size_t)S, sizeof *g);
	int32_t p8[8];
	for (int k = 0; k < S; k++) {
		for (int i = 0; i < 8; i++) p8[i] = 1 + (int32_t)(((k + 1) * 131u + i * 7919u) % (unsigned)(vocab - 1));
		ms_gen_new(m, p8, 8, o, NULL, NULL, NULL, &g[k]);
		ms_gen_prefill(g[k]);
	}
	double t0 = ms_now_ms();
	size_t toks = 0;
	for (;;) {
		int live = 0;
		for (int k = 0; k < S; k++) live += !ms_gen_done(g[k]);
		if (!live) break;
		ms_gen_step_batch(g, (size_t)S, NULL);
	}
	double ms = ms_now_ms() - t0;
	for (int k = 0; k < S; k++) {
		toks += ms_gen_stats_of(g[k])->gen_tokens - 1; /* the first came from the prefill */
		ms_gen_free(g[k]);
	}
	free(g);
	return toks * 1000.0 / ms;
}

static int cmp_double(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Each run measures every count in `list` back to back, so that a count's ratio to one
 * stream is taken under the same memory bandwidth (it drifts by tens of percent within a
 * minute here, and one stream follows it while 16 are bound by arithmetic). A row: the
 * best tokens/s, and the median of the runs' ratios to one stream. */
#define MAX_COUNTS 8
static void report_streams(ms_model *m, const ms_gen_opts *o, const shape *s, int th, const char *list, int runs) {
	int counts[MAX_COUNTS], nc = 0, one = -1;
	for (const char *sp = list; *sp && nc < MAX_COUNTS; sp = strchr(sp, ',') ? strchr(sp, ',') + 1 : "") {
		int S = atoi(sp);
		if (S < 1 || S > 256) continue;
		if (S == 1) one = nc;
		counts[nc++] = S;
	}
	double tps[MAX_COUNTS][5] = {{0}};
	if (runs > 5) runs = 5;
	for (int r = 0; r < runs; r++)
		for (int c = 0; c < nc; c++) tps[c][r] = streams_tps(m, o, counts[c], s->vocab);
	for (int c = 0; c < nc; c++) {
		double best = 0, ratio[5];
		for (int r = 0; r < runs; r++) {
			best = tps[c][r] > best ? tps[c][r] : best;
			ratio[r] = one >= 0 ? tps[c][r] / tps[one][r] : 0;
		}
		qsort(ratio, (size_t)runs, sizeof ratio[0], cmp_double);
		printf("%-6s %3d   %2d streams: %8.1f tok/s aggregate", s->name, th, counts[c], best);
		double med = runs % 2 ? ratio[runs / 2] : 0.5 * (ratio[runs / 2 - 1] + ratio[runs / 2]);
		if (one >= 0 && c != one) printf(", %.1fx one stream (median of %d runs)", med, runs);
		printf("\n");
		fflush(stdout);
	}
}

int main(int argc, char **argv) {
	const char *shape_list = "15M,110M", *thread_list = "1,2", *dir = "/tmp/moonspace-bench", *streams = "1,4,16";
	int n_prompt = 128, n_gen = 128, q8 = 0, runs = 5;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--shapes")) shape_list = argv[i + 1];
		else if (!strcmp(argv[i], "--threads")) thread_list = argv[i + 1];
		else if (!strcmp(argv[i], "--prompt")) n_prompt = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--gen")) n_gen = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
		else if (!strcmp(argv[i], "--streams")) streams = argv[i + 1];
		else if (!strcmp(argv[i], "--q8")) q8 = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
		else {
			fprintf(stderr, "usage: %s [--shapes 15M,110M,1.1B] [--threads 1,2] [--prompt N] [--gen N] [--dir D] [--streams 1,4,16] [--q8 0|1] [--runs N]\n", argv[0]);
			return 2;
		}
	}
	if (n_prompt < 1) n_prompt = 1;
	if (runs < 1) runs = 1;
	mkdir(dir, 0755);
	static const char *const levels[] = {"portable", "AVX2/FMA", "AVX2/FMA + AVX-512 tiles"};
	printf("kernels: %s, weights: %s\n", levels[ms_kernels_level()], q8 ? "8-bit (per-32 scales)" : "F32");
	for (const char *t = thread_list; *t; t = strchr(t, ',') ? strchr(t, ',') + 1 : "") {
		int th = atoi(t);
		probe pr;
		if (probe_open(&pr, th) != 0) {
			fprintf(stderr, "no memory for the bandwidth probe\n");
			return 1;
		}
		double pass = probe_gbs(&pr, 0, 5, 0), sustained = probe_gbs(&pr, 0, 5, 1000), fma = probe_gbs(&pr, 1, 5, 1000);
		printf("bandwidth probe, %d thread%s: single passes %.1f GB/s (best of 5), 1 s runs %.1f GB/s; streaming FMA over the same bytes: %.1f GB/s\n",
		       th, th > 1 ? "s" : "", pass, sustained, fma);
		probe_close(&pr);
	}
	printf("%-6s %3s %12s %12s %10s %10s %10s %10s %9s\n", "shape", "thr", "prompt t/s", "gen t/s", "bound t/s",
	       "of bound", "sustained", "of sust.", "RSS MiB");
	for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
		const shape *s = &shapes[si];
		if (!strstr(shape_list, s->name)) continue;
		char d[1024], cfg[1100];
		snprintf(d, sizeof d, "%s/llama-%s", dir, s->name);
		snprintf(cfg, sizeof cfg, "%s/model.safetensors", d);
		struct stat st;
		if (stat(cfg, &st) != 0 && write_checkpoint(s, d) != 0) {
			fprintf(stderr, "cannot write %s\n", d);
			return 1;
		}
		/* weight bytes read per generated token: every matrix, the head, not the embedding table */
		int kv = s->dim / s->heads * s->kv_heads;
		double per_layer = (double)s->dim * s->dim * 2 + 2.0 * kv * s->dim + 3.0 * s->hidden * s->dim;
		double bytes_tok = (q8 ? 34.0 / 32.0 : 4.0) * (per_layer * s->layers + (double)s->vocab * s->dim);
		for (const char *t = thread_list; *t; t = strchr(t, ',') ? strchr(t, ',') + 1 : "") {
			int th = atoi(t);
			ms_model *m;
			char err[512];
			ms_model_opts mo = {.n_threads = th, .q8 = q8};
			if (ms_model_load(d, &mo, &m, err, sizeof err) != 0) {
				fprintf(stderr, "%s\n", err);
				return 1;
			}
			int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
			for (int i = 0; i < n_prompt; i++) prompt[i] = 1 + (int32_t)((i * 7919u) % (unsigned)(s->vocab - 1));
			ms_gen_opts o;
			ms_gen_opts_init(&o);
			o.temperature = 0;
			o.max_new_tokens = n_gen;
			o.stop_on_eos = 0;
			/* the machine's bandwidth drifts by tens of percent over a minute (a shared VM):
			 * each run is one generation then one probe as long as its generation phase,
			 * and the row reports the best of each, so that the bound and the speed are
			 * taken under the same conditions */
			double pps = 0, gps = 0, bw_pass = 0, bw_long = 0;
			probe pr;
			if (probe_open(&pr, th) != 0) {
				fprintf(stderr, "no memory for the bandwidth probe\n");
				return 1;
			}
			for (int r = 0; r < runs; r++) {
				ms_gen_stats gs;
				ms_model_generate_ids(m, prompt, (size_t)n_prompt, &o, count_gen, NULL, NULL, NULL, &gs);
				double b = probe_gbs(&pr, 0, 1, 0), bl = probe_gbs(&pr, 0, 1, gs.gen_ms);
				double p = gs.prompt_tokens * 1000.0 / gs.prompt_ms, g = gs.gen_tokens * 1000.0 / gs.gen_ms;
				pps = p > pps ? p : pps, gps = g > gps ? g : gps;
				bw_pass = b > bw_pass ? b : bw_pass, bw_long = bl > bw_long ? bl : bw_long;
			}
			probe_close(&pr); /* before the RSS below: the model's, not the probe's */
			double bound = bw_pass * 1e9 / bytes_tok, bound_long = bw_long * 1e9 / bytes_tok;
			printf("%-6s %3d %12.1f %12.1f %10.1f %9.0f%% %10.1f %9.0f%% %9.0f\n", s->name, th, pps, gps, bound,
			       bound > 0 ? 100.0 * gps / bound : 0.0, bound_long, bound_long > 0 ? 100.0 * gps / bound_long : 0.0,
			       status_kb("VmRSS:") / 1024.0);
			fflush(stdout);
			free(prompt);
			/* batched: S concurrent streams stepped together (the model worker's path) */
			if (th == atoi(thread_list + strlen(thread_list) - 1)) report_streams(m, &o, s, th, streams, runs < 3 ? runs : 3);
			ms_model_free(m);
		}
	}
	return 0;
}
