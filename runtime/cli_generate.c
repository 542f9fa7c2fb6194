/* runtime/cli_generate.c: `moonspace generate MODEL [-p PROMPT] [-n N] [-t TEMP] ...`.
 * Echoes the prompt, streams the continuation to stdout (as llama2.c's run and llama-cli
 * do), and prints prompt and generation speeds to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cli.h"
#include "runtime/cli_common.h"

static void usage(FILE *f) {
	fprintf(f,
		"usage: moonspace generate MODEL [options]\n"
		"  MODEL               checkpoint directory or Hub repo id org/name[@rev] (from the Hub cache)\n"
		"  -p, --prompt TEXT   prompt (default: empty, generation starts after BOS)\n"
		"  -n, --max-tokens N  new tokens to generate (default 256)\n"
		"  -t, --temp T        temperature, 0 = greedy (default 1.0)\n"
		"  --top-p P           nucleus sampling (default 0.9; 1 = off)\n"
		"  --top-k K           top-k sampling (default 0 = off)\n"
		"  --repeat-penalty R  repetition penalty (default 1 = off)\n"
		"                      (defaults: the checkpoint's generation_config.json first)\n"
		"  --seed S            random seed (default: from the clock)\n"
		"  --stop TEXT         stop when TEXT is generated (repeatable, up to 8)\n"
		"  --threads N         compute threads (default: all cores)\n"
		"  --q8                8-bit weights with per-block scales (faster, approximate)\n"
		"  --no-eos            keep generating past the end-of-sequence token\n");
}

static int on_text(void *ud, const char *text, size_t len) {
	fwrite(text, 1, len, stdout);
	fflush(stdout);
	return 0;
}

int ms_cli_generate(int argc, char **argv) {
	const char *model = NULL, *prompt = "", *stops[9] = {0};
	int n_stops = 0;
	/* -1: not given, the checkpoint's generation_config.json or the default decides */
	long n = -1, top_k = -1, threads = 0, seed = 0;
	double temp = -1, top_p = -1, rep = -1;
	int no_eos = 0, q8 = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
			if (!v) bad = 1;
			else prompt = v, i++;
		} else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
			bad = ms_cli_int("generate", a, v, 0, 1 << 20, &n), i++;
		} else if (!strcmp(a, "-t") || !strcmp(a, "--temp")) {
			bad = ms_cli_float("generate", a, v, 0, 100, &temp), i++;
		} else if (!strcmp(a, "--top-p")) {
			bad = ms_cli_float("generate", a, v, 0, 1, &top_p), i++;
		} else if (!strcmp(a, "--top-k")) {
			bad = ms_cli_int("generate", a, v, 0, 1 << 24, &top_k), i++;
		} else if (!strcmp(a, "--repeat-penalty")) {
			bad = ms_cli_float("generate", a, v, 0.01, 100, &rep), i++;
		} else if (!strcmp(a, "--seed")) {
			bad = ms_cli_int("generate", a, v, 0, 0x7fffffffL, &seed), i++;
		} else if (!strcmp(a, "--threads")) {
			bad = ms_cli_int("generate", a, v, 1, 256, &threads), i++;
		} else if (!strcmp(a, "--stop")) {
			if (!v || n_stops == 8) bad = 1;
			else stops[n_stops++] = v, i++;
		} else if (!strcmp(a, "--q8")) {
			q8 = 1;
		} else if (!strcmp(a, "--no-eos")) {
			no_eos = 1;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "moonspace generate: unknown option %s\n", a);
			bad = 1;
		} else if (!model) {
			model = a;
		} else {
			bad = 1;
		}
		if (bad) {
			usage(stderr);
			return 2;
		}
	}
	if (!model) {
		usage(stderr);
		return 2;
	}
	ms_model *m = ms_cli_load_model("generate", model, (int)threads, q8);
	if (!m) return 1;
	ms_gen_opts o;
	ms_gen_opts_init(&o);
	o.top_p = 0.9f;
	ms_gen_opts_apply_model(&o, m);
	if (n >= 0) o.max_new_tokens = (int)n;
	if (temp >= 0) o.temperature = (float)temp;
	if (top_p >= 0) o.top_p = (float)top_p;
	if (top_k >= 0) o.top_k = (int)top_k;
	if (rep >= 0) o.repetition_penalty = (float)rep;
	o.seed = (uint64_t)seed;
	o.stop = n_stops ? stops : NULL;
	o.stop_on_eos = !no_eos;
	ms_gen_stats st = {0};
	char err[1024] = "";
	/* a prompt the model cannot take (wrong family, too long) fails before it is echoed,
	 * leaving stdout empty; a good one is echoed before its (maybe long) prefill */
	int32_t *ids;
	size_t n_ids;
	int rc = ms_model_encode_prompt(m, prompt, o.add_bos, &ids, &n_ids, err, sizeof err);
	if (rc == 0 && (rc = ms_gen_check_length(&o, n_ids, err, sizeof err)) != 0) free(ids);
	else if (rc == 0) {
		free(ids);
		fputs(prompt, stdout);
		fflush(stdout);
		rc = ms_model_generate(m, prompt, &o, on_text, NULL, &st, err, sizeof err);
		putchar('\n');
	}
	fflush(stdout);
	if (rc != 0) {
		fprintf(stderr, "moonspace generate: %s\n", err[0] ? err : ms_strerror(rc));
	} else {
		fprintf(stderr, "prompt: %zu tokens, %.1f tok/s; generation: %zu tokens, %.1f tok/s\n", st.prompt_tokens,
			st.prompt_ms > 0 ? st.prompt_tokens * 1000.0 / st.prompt_ms : 0.0, st.gen_tokens,
			st.gen_ms > 0 ? st.gen_tokens * 1000.0 / st.gen_ms : 0.0);
	}
	ms_model_free(m);
	return rc == 0 ? 0 : 1;
}
