/* runtime/cli_embed.c: `moonspace embed MODEL TEXT` prints the sentence embedding (mean
 * pooling over the last hidden state, L2-normalised) as a JSON array. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cli.h"
#include "runtime/cli_common.h"

static const char usage_text[] = "usage: moonspace embed MODEL TEXT [--threads N]\n"
		   "  prints the sentence embedding of TEXT (mean pooling, L2-normalised) as a JSON array\n";

int ms_cli_embed(int argc, char **argv) {
	const char *model, *text;
	long threads;
	int rc = ms_cli_model_text_args(argc, argv, usage_text, &model, &text, &threads);
	if (rc || !model) return rc;
	ms_model *m = ms_cli_load_model("embed", model, (int)threads, 0);
	if (!m) return 1;
	float *vec;
	size_t dim;
	char err[1024] = "";
	rc = ms_model_embed(m, text, &vec, &dim, err, sizeof err);
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
