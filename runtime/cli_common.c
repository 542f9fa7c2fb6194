/* runtime/cli_common.c: see cli_common.h. */
#include "runtime/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

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
