/* runtime/sampler.c: see sampler.h. Semantics follow transformers' logits processors:
 * repetition penalty divides positive / multiplies negative logits of seen ids, then
 * temperature, then top-k, then top-p (keep the smallest set reaching p). */
#include "runtime/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/ms.h"

int32_t ms_argmax(const float *x, int n) {
	int32_t best = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[best]) best = i;
	return best;
}

int ms_sampler_init(ms_sampler *s, int vocab, float temperature, int top_k, float top_p, float rep_penalty,
		    uint64_t seed) {
	memset(s, 0, sizeof *s);
	s->vocab = vocab;
	s->temperature = temperature;
	s->top_k = top_k;
	s->top_p = top_p;
	s->repetition_penalty = rep_penalty;
	s->rng = seed ? seed : (ms_now_ns() | 1);
	s->scratch = malloc((size_t)vocab * sizeof *s->scratch);
	return s->scratch ? 0 : MS_ENOMEM;
}

void ms_sampler_free(ms_sampler *s) {
	free(s->scratch);
	s->scratch = NULL;
}

static uint32_t rng_u32(uint64_t *st) { /* xorshift64*, as llama2.c */
	*st ^= *st >> 12;
	*st ^= *st << 25;
	*st ^= *st >> 27;
	return (uint32_t)((*st * 0x2545F4914F6CDD1Dull) >> 32);
}
static float rng_f32(uint64_t *st) { return (float)(rng_u32(st) >> 8) / 16777216.0f; }

static int cmp_desc(const void *a, const void *b) {
	float x = ((const ms_prob_index *)a)->p, y = ((const ms_prob_index *)b)->p;
	return x > y ? -1 : x < y;
}

int32_t ms_sampler_sample(ms_sampler *s, float *logits, const int32_t *history, size_t n_history) {
	int n = s->vocab;
	if (s->repetition_penalty > 0 && s->repetition_penalty != 1.0f) {
		/* each distinct id once, as transformers' gather/scatter: scratch marks seen ids */
		for (int i = 0; i < n; i++) s->scratch[i].id = 0;
		for (size_t i = 0; i < n_history; i++) {
			int32_t id = history[i];
			if (id < 0 || id >= n || s->scratch[id].id) continue;
			s->scratch[id].id = 1;
			logits[id] = logits[id] > 0 ? logits[id] / s->repetition_penalty : logits[id] * s->repetition_penalty;
		}
	}
	if (s->temperature <= 0.0f) return ms_argmax(logits, n);
	for (int i = 0; i < n; i++) logits[i] /= s->temperature;
	float max = logits[ms_argmax(logits, n)], sum = 0.0f;
	for (int i = 0; i < n; i++) {
		s->scratch[i] = (ms_prob_index){expf(logits[i] - max), i};
		sum += s->scratch[i].p;
	}
	int m = n;
	if ((s->top_k > 0 && s->top_k < n) || (s->top_p > 0.0f && s->top_p < 1.0f)) {
		qsort(s->scratch, (size_t)n, sizeof *s->scratch, cmp_desc);
		if (s->top_k > 0 && s->top_k < m) m = s->top_k;
		sum = 0.0f;
		for (int i = 0; i < m; i++) sum += s->scratch[i].p;
		if (s->top_p > 0.0f && s->top_p < 1.0f) {
			float cum = 0.0f;
			for (int i = 0; i < m; i++) {
				cum += s->scratch[i].p / sum;
				if (cum >= s->top_p) {
					m = i + 1;
					break;
				}
			}
			sum = 0.0f;
			for (int i = 0; i < m; i++) sum += s->scratch[i].p;
		}
	}
	float r = rng_f32(&s->rng) * sum, cdf = 0.0f;
	for (int i = 0; i < m; i++) {
		cdf += s->scratch[i].p;
		if (r < cdf) return s->scratch[i].id;
	}
	return s->scratch[m - 1].id;
}
