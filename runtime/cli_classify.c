/* runtime/cli_classify.c: `moonspace classify MODEL TEXT` prints
 * [{"label": ..., "score": ...}, ...], highest score first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cli.h"
#include "runtime/cli_common.h"

static void usage(FILE *f) {
	fprintf(f, "usage: moonspace classify MODEL TEXT [--threads N]\n"
		   "  prints [{\"label\": ..., \"score\": ...}, ...] (softmax over the labels, highest first)\n");
}

int ms_cli_classify(int argc, char **argv) {
	const char *pos[2] = {0};
	int np = 0;
	long threads = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--threads")) {
			if (ms_cli_int("classify", "--threads", i + 1 < argc ? argv[i + 1] : NULL, 1, 256, &threads)) return 2;
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
	ms_model *m = ms_cli_load_model("classify", pos[0], (int)threads, 0);
	if (!m) return 1;
	ms_label_score *ls;
	size_t n;
	char err[1024] = "";
	int rc = ms_model_classify(m, pos[1], &ls, &n, err, sizeof err);
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
