/* runtime/cli_classify.c: `moonspace classify MODEL TEXT` prints
 * [{"label": ..., "score": ...}, ...], highest score first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cli.h"
#include "runtime/cli_common.h"

static const char usage_text[] = "usage: moonspace classify MODEL TEXT [--threads N]\n"
		   "  prints [{\"label\": ..., \"score\": ...}, ...] (softmax over the labels, highest first)\n";

int ms_cli_classify(int argc, char **argv) {
	const char *model, *text;
	long threads;
	int rc = ms_cli_model_text_args(argc, argv, usage_text, &model, &text, &threads);
	if (rc || !model) return rc;
	ms_model *m = ms_cli_load_model("classify", model, (int)threads, 0);
	if (!m) return 1;
	ms_label_score *ls;
	size_t n;
	char err[1024] = "";
	rc = ms_model_classify(m, text, &ls, &n, err, sizeof err);
	if (rc != 0) {
		fprintf(stderr, "moonspace classify: %s\n", err);
	} else {
		putchar('[');
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"label\": ", i ? ", " : "");
			ms_cli_json_string(ls[i].label);
			printf(", \"score\": %.9g}", ls[i].score);
		}
		puts("]");
		free(ls);
	}
	ms_model_free(m);
	return rc == 0 ? 0 : 1;
}
