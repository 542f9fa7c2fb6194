/* runtime/cli_common.c: see cli_common.h. */
#include "runtime/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/modeldir.h"

ms_model *ms_cli_load_model(const char *prog, const char *spec, int threads, int q8) {
	char dir[4096], err[1024];
	if (ms_modeldir_resolve(spec, dir, sizeof dir, err, sizeof err) != 0) {
		fprintf(stderr, "moonspace %s: %s\n", prog, err);
		return NULL;
	}
	ms_model_opts o = {.n_threads = threads, .q8 = q8};
	ms_model *m;
	int rc = ms_model_load(dir, &o, &m, err, sizeof err);
	if (rc != 0) {
		fprintf(stderr, "moonspace %s: %s\n", prog, err[0] ? err : ms_strerror(rc));
		return NULL;
	}
	return m;
}

int ms_cli_int(const char *prog, const char *opt, const char *s, long lo, long hi, long *out) {
	char *end;
	errno = 0;
	long v = s ? strtol(s, &end, 10) : 0;
	if (!s || !*s || *end || errno || v < lo || v > hi) {
		fprintf(stderr, "moonspace %s: %s wants an integer in [%ld, %ld]\n", prog, opt, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

int ms_cli_float(const char *prog, const char *opt, const char *s, double lo, double hi, double *out) {
	char *end;
	errno = 0;
	double v = s ? strtod(s, &end) : 0;
	if (!s || !*s || *end || errno || !(v >= lo && v <= hi)) {
		fprintf(stderr, "moonspace %s: %s wants a number in [%g, %g]\n", prog, opt, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

void ms_cli_json_string(const char *s) {
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') printf("\\%c", *p);
		else if (*p == '\n') fputs("\\n", stdout);
		else if (*p == '\t') fputs("\\t", stdout);
		else if (*p < 0x20) printf("\\u%04x", *p);
		else putchar(*p);
	}
	putchar('"');
}

int ms_cli_model_text_args(int argc, char **argv, const char *usage_text, const char **model, const char **text,
			   long *threads) {
	const char *pos[2] = {0};
	int np = 0;
	*model = *text = NULL;
	*threads = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(usage_text, stdout);
			return 0;
		} else if (!strcmp(argv[i], "--threads")) {
			if (ms_cli_int(argv[0], "--threads", i + 1 < argc ? argv[i + 1] : NULL, 1, 256, threads)) return 2;
			i++;
		} else if (np < 2) {
			pos[np++] = argv[i];
		} else {
			np = 3;
			break;
		}
	}
	if (np != 2) {
		fputs(usage_text, stderr);
		return 2;
	}
	*model = pos[0], *text = pos[1];
	return 0;
}
