/* runtime/cli_embed.c: `moonspace embed MODEL TEXT` prints the sentence embedding (mean
 * pooling over the last hidden state, L2-normalised) as a JSON array. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cli.h"
#include "runtime/cli_common.h"

static void usage(FILE *f) {
	fprintf(f, "usage: moonspace embed MODEL TEXT [--threads N]\n"
		   "  prints the sentence embedding of TEXT (mean pooling, L2-normalised) as a JSON array\n");
}

int ms_cli_embed(int argc, char **argv) {
	const char *pos[2] = {0};
	int np = 0;
	long threads = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--threads")) {
			if (ms_cli_int("embed", "--threads", i + 1 < argc ? argv[i + 1] : NULL, 1, 256, &threads)) return 2;
			i++;
		} else if (np < 2) {
			pos[np++] = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (np != 2) {
		usage(stderr);
		return 2;
	}
	ms_model *m = ms_cli_load_model("embed", pos[0], (int)threads, 0);
	if (!m) return 1;
	float *vec;
	size_t dim;
	char err[1024] = "";
	int rc = ms_model_embed(m, pos[1], &vec, &dim, err, sizeof err);
	if (rc != 0) {
		fprintf(stderr, "moonspace embed: %s\n", err);
	} else {
		putchar('[');
		for (size_t i = 0; i < dim; i++) printf("%s%.9g", i ? ", " : "", vec[i]);
		puts("]");
		free(vec);
	}
	ms_model_free(m);
	return rc == 0 ? 0 : 1;
}
