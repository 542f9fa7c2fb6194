/* host/main.c: bin/moonspace, one binary with subcommands. */
#include <stdio.h>
#include <string.h>

#include "host/host.h"
#include "host/hub.h"
#include "runtime/cli.h"

typedef int (*cmd_fn)(int argc, char **argv);
struct command { const char *name; cmd_fn fn; const char *summary; };

static int usage(FILE *f);

static const struct command commands[] = {
	{"serve", ms_serve_main, "serve the apps, their APIs and the web gallery"},
	{"token", ms_token_main, "add, list or remove access tokens"},
	{"pull", ms_pull_main, "download a model repo from the Hub into the Hugging Face cache"},
	{"cache", ms_cache_main, "list (ls) or remove (rm) repos in the Hugging Face cache"},
	{"generate", ms_cli_generate, "generate text with a causal LM checkpoint"},
	{"tokenize", ms_cli_tokenize, "print token ids (or --decode ids) with a checkpoint's tokenizer"},
	{"embed", ms_cli_embed, "print a sentence embedding as a JSON array"},
	{"classify", ms_cli_classify, "print labels and scores for a text"},
	{"chat-template", ms_cli_chat_template, "render a checkpoint's chat template for messages"},
};

static int usage(FILE *f) {
	fprintf(f, "usage: moonspace COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n`moonspace COMMAND --help` describes each.\n");
	return f == stderr ? 2 : 0;
}

int main(int argc, char **argv) {
	if (argc < 2) return usage(stderr);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) return usage(stdout);
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(argv[1], commands[i].name) != 0) continue;
		if (!commands[i].fn) {
			fprintf(stderr, "moonspace: %s is not built into this binary\n", argv[1]);
			return 2;
		}
		return commands[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "moonspace: unknown command '%s'\n", argv[1]);
	return usage(stderr);
}
