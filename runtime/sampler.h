/* runtime/sampler.h: picking the next token from logits: greedy, temperature, top-k,
 * top-p, repetition penalty, with a seeded xorshift generator (reproducible runs). */
#ifndef MS_SAMPLER_H
#define MS_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct { float p; int32_t id; } ms_prob_index;

typedef struct ms_sampler {
	int vocab;
	float temperature, top_p, repetition_penalty;
	int top_k;
	uint64_t rng;
	ms_prob_index *scratch; /* vocab entries */
} ms_sampler;

int ms_sampler_init(ms_sampler *s, int vocab, float temperature, int top_k, float top_p, float rep_penalty,
		    uint64_t seed);
void ms_sampler_free(ms_sampler *s);
/* logits (modified in place); history: ids seen so far, for the repetition penalty. */
int32_t ms_sampler_sample(ms_sampler *s, float *logits, const int32_t *history, size_t n_history);
/* Index of the largest value (the first on ties, as torch.argmax). */
int32_t ms_argmax(const float *x, int n);

#endif
