/* runtime/cli_common.h: what the runtime's command-line tools share (not a public API). */
#ifndef MS_CLI_COMMON_H
#define MS_CLI_COMMON_H

#include "runtime/model.h"

/* Resolves MODEL (directory or Hub repo id) and loads it; prints the error and returns
 * NULL on failure. */
ms_model *ms_cli_load_model(const char *prog, const char *spec, int threads, int q8);
/* Parses a number argument or prints an error; returns 0 on success. */
int ms_cli_int(const char *prog, const char *opt, const char *s, long lo, long hi, long *out);
int ms_cli_float(const char *prog, const char *opt, const char *s, double lo, double hi, double *out);
/* `PROG MODEL TEXT [--threads N]`: parses argv (argv[0] = PROG) into *model and *text,
 * printing usage_text for --help (returns 0 with *model NULL) and on misuse (returns 2). */
int ms_cli_model_text_args(int argc, char **argv, const char *usage_text, const char **model, const char **text,
			   long *threads);
/* Writes s as a JSON string (quoted, escaped) to stdout. */
void ms_cli_json_string(const char *s);

#endif
