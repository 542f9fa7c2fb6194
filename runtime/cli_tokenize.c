/* runtime/cli_tokenize.c: `moonspace tokenize MODEL TEXT [--no-special] [--decode]`.
 *
 * MODEL is a directory holding tokenizer.json (a checkpoint, or only the tokenizer files)
 * or a Hub repo id resolved in the Hugging Face cache (runtime/modeldir.h).
 * Prints the ids as a JSON array; --decode reads ids (a JSON array or space-separated) and
 * prints the text. TEXT "-" or absent reads standard input.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cli.h"
#include "runtime/modeldir.h"
#include "runtime/tokenizer.h"

static void tokenize_usage(FILE *f) {
	fprintf(f,
		"usage: moonspace tokenize MODEL [--no-special] [--] TEXT\n"
		"       moonspace tokenize MODEL --decode IDS [--no-special]\n\n"
		"Prints TEXT's token ids as a JSON array, using MODEL's tokenizer.json (and\n"
		"tokenizer_config.json). MODEL is a checkpoint directory, a directory holding only\n"
		"the tokenizer files, or a Hub repo id (org/name[@rev]) in the Hugging Face cache.\n"
		"TEXT \"-\" (or none) reads standard input.\n\n"
		"  --no-special   without the template's special tokens (BOS, [CLS], [SEP]);\n"
		"                 with --decode: drop special tokens from the text\n"
		"  --decode       IDS is a JSON array ([1, 2, 3]) or space-separated ids; prints the text\n"
		"  -h, --help     this help\n");
}

static char *read_stdin(size_t *len) {
	ms_buf b;
	ms_buf_init(&b);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
		if (ms_buf_append(&b, chunk, n)) { ms_buf_free(&b); return NULL; }
	*len = b.len;
	return ms_buf_steal(&b);
}

/* Parses "[1, 2]" or "1 2 3" into ids; returns 0 or MS_EFORMAT. */
static int parse_ids(const char *s, int32_t **ids, size_t *n) {
	*ids = NULL, *n = 0;
	const char *p = s;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
	if (*p == '[') {
		json_error_t je;
		json_t *a = json_loads(s, 0, &je);
		if (!json_is_array(a)) { json_decref(a); return MS_EFORMAT; }
		*ids = malloc((json_array_size(a) + 1) * sizeof **ids);
		if (!*ids) { json_decref(a); return MS_ENOMEM; }
		for (size_t i = 0; i < json_array_size(a); i++) {
			json_t *v = json_array_get(a, i);
			if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
				json_decref(a);
				free(*ids), *ids = NULL;
				return MS_EFORMAT;
			}
			(*ids)[(*n)++] = (int32_t)json_integer_value(v);
		}
		json_decref(a);
		return 0;
	}
	size_t cap = 0;
	while (*p) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p || v < 0 || v > INT32_MAX) { free(*ids), *ids = NULL, *n = 0; return MS_EFORMAT; }
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			int32_t *nv = realloc(*ids, cap * sizeof *nv);
			if (!nv) { free(*ids), *ids = NULL, *n = 0; return MS_ENOMEM; }
			*ids = nv;
		}
		(*ids)[(*n)++] = (int32_t)v;
		p = end;
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
	}
	return 0;
}

int ms_cli_tokenize(int argc, char **argv) {
	const char *model = NULL, *text = NULL;
	int no_special = 0, decode = 0;
	int opts_done = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!opts_done && (!strcmp(a, "-h") || !strcmp(a, "--help"))) { tokenize_usage(stdout); return 0; }
		if (!opts_done && !strcmp(a, "--no-special")) no_special = 1;
		else if (!opts_done && !strcmp(a, "--decode")) decode = 1;
		else if (!opts_done && !strcmp(a, "--")) opts_done = 1; /* a TEXT may start with '-' after it */
		else if (!opts_done && a[0] == '-' && a[1] && (a[1] == '-' || !model)) {
			fprintf(stderr, "moonspace tokenize: unknown option %s\n", a);
			tokenize_usage(stderr);
			return 2;
		}
		else if (!model) model = a;
		else if (!text) text = a;
		else { fprintf(stderr, "moonspace tokenize: unexpected argument %s\n", a); tokenize_usage(stderr); return 2; }
	}
	if (!model) { tokenize_usage(stderr); return 2; }
	char err[1024] = "", dir[4096];
	ms_tokenizer *tok;
	if (ms_modeldir_resolve(model, dir, sizeof dir, err, sizeof err) != 0) {
		fprintf(stderr, "moonspace tokenize: %s\n", err);
		return 1;
	}
	if (ms_tokenizer_load(dir, &tok, err, sizeof err)) {
		fprintf(stderr, "moonspace tokenize: %s\n", err);
		return 1;
	}
	char *owned = NULL;
	size_t len;
	if (!text || !strcmp(text, "-")) {
		if (!(owned = read_stdin(&len))) { ms_tokenizer_free(tok); return 1; }
		text = owned;
	} else {
		len = strlen(text);
	}
	int rc = 0;
	if (decode) {
		int32_t *ids;
		size_t n;
		ms_buf out; /* with its length: the text may hold U+0000 */
		ms_buf_init(&out);
		if (parse_ids(text, &ids, &n)) {
			fprintf(stderr, "moonspace tokenize: --decode wants a JSON array of ids or space-separated ids\n");
			rc = 2;
		} else if (ms_tokenizer_decode_buf(tok, ids, n, no_special, &out)) {
			fprintf(stderr, "moonspace tokenize: decoding failed\n");
			rc = 1;
		} else {
			fwrite(out.data ? out.data : "", 1, out.len, stdout);
			fputc('\n', stdout);
		}
		ms_buf_free(&out);
		free(ids);
	} else {
		int32_t *ids;
		size_t n;
		int r = ms_tokenizer_encode(tok, text, len, !no_special, &ids, &n);
		if (r) {
			fprintf(stderr, "moonspace tokenize: %s\n", ms_strerror(r));
			rc = 1;
		} else {
			fputc('[', stdout);
			for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
			fputs("]\n", stdout);
			free(ids);
		}
	}
	free(owned);
	ms_tokenizer_free(tok);
	return rc;
}
