/* tests/fuzz/tool_fuzz_safetensors.c: fuzz target for runtime/safetensors. Opens argv[1]
 * (a .safetensors file or a checkpoint directory), reads every tensor as F32 and prints
 * either "ok N tensors" or the loader's error. Exit 0 for both: only a crash or a sanitizer
 * report is a finding. Use with any file-based fuzzer (e.g. AFL's @@) on the ASan build:
 *   build/asan/bin/tests/tool_fuzz_safetensors CASE */
#include <stdio.h>
#include <stdlib.h>

#include "runtime/safetensors.h"

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: %s FILE|DIR\n", argv[0]);
		return 2;
	}
	ms_st st;
	char err[1024];
	int rc = ms_st_open(&st, argv[1], err, sizeof err);
	if (rc != 0) {
		printf("error %s: %s\n", ms_err_name(rc), err);
		return 0;
	}
	double sum = 0;
	for (size_t i = 0; i < st.n_tensors; i++) {
		const ms_st_tensor *t = &st.tensors[i];
		float *f = malloc((t->numel ? t->numel : 1) * sizeof *f);
		if (!f) continue;
		ms_st_read_f32(t, f, t->numel);
		for (size_t k = 0; k < t->numel; k++) sum += f[k] == f[k] ? 0 : 1; /* touch every value */
		free(f);
	}
	printf("ok %zu tensors (%g NaN)\n", st.n_tensors, sum);
	ms_st_close(&st);
	return 0;
}
