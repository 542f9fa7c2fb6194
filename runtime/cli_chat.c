/* runtime/cli_chat.c: `moonspace chat-template MODEL --messages FILE.json
 * [--add-generation-prompt]`: renders a checkpoint's chat template so it can be checked
 * by hand. MODEL is a directory holding (at least) tokenizer_config.json, or a repo id
 * (org/name[@rev]) in the Hugging Face cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/ms.h"
#include "runtime/cli.h"
#include "runtime/jinja.h"
#include "runtime/modeldir.h"

#define CFG_MAX (64u << 20)

static int usage(FILE *f) {
	fprintf(f, "usage: moonspace chat-template MODEL --messages FILE.json [--add-generation-prompt]\n\n"
	           "Renders MODEL/tokenizer_config.json's chat_template for the JSON array of messages in\n"
	           "FILE.json (each {\"role\": ..., \"content\": ...}) and prints the prompt to stdout.\n"
	           "MODEL is a directory or a repo id (org/name[@rev]) in the Hugging Face cache.\n"
	           "bos_token / eos_token come from the same file. A template's raise_exception(msg)\n"
	           "prints msg to stderr and exits 1.\n");
	return f == stderr ? 2 : 0;
}

static json_t *load_json(const char *path, const char *what) {
	char *data = NULL;
	size_t len = 0;
	int rc = ms_read_file(path, &data, &len, CFG_MAX);
	if (rc) {
		fprintf(stderr, "chat-template: cannot read %s %s: %s\n", what, path, ms_strerror(rc));
		return NULL;
	}
	json_error_t je;
	json_t *j = json_loadb(data, len, 0, &je);
	free(data);
	if (!j) fprintf(stderr, "chat-template: %s: line %d: %s\n", path, je.line, je.text);
	return j;
}

int ms_cli_chat_template(int argc, char **argv) {
	const char *model = NULL, *messages_path = NULL;
	int agp = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout);
		if (!strcmp(argv[i], "--add-generation-prompt")) agp = 1;
		else if (!strcmp(argv[i], "--messages") && i + 1 < argc) messages_path = argv[++i];
		else if (argv[i][0] == '-' || model) {
			fprintf(stderr, "chat-template: unexpected argument '%s'\n", argv[i]);
			return usage(stderr);
		} else model = argv[i];
	}
	if (!model || !messages_path) return usage(stderr);

	char dir[4096], path[4200], where[600];
	if (ms_modeldir_resolve(model, dir, sizeof dir, where, sizeof where)) {
		fprintf(stderr, "chat-template: %s\n", where);
		return 1;
	}
	if ((size_t)snprintf(path, sizeof path, "%s/tokenizer_config.json", dir) >= sizeof path) {
		fprintf(stderr, "chat-template: model path too long\n");
		return 2;
	}
	int code = 1;
	json_t *cfg = load_json(path, "tokenizer config"), *msgs = NULL;
	if (!cfg) return 1;
	msgs = load_json(messages_path, "messages");
	if (!msgs) goto done;
	if (!json_is_array(msgs)) {
		fprintf(stderr, "chat-template: %s must hold a JSON array of messages\n", messages_path);
		goto done;
	}
	const char *tmpl, *bos, *eos;
	if (ms_chat_template_from_config(cfg, &tmpl, &bos, &eos)) {
		fprintf(stderr, "chat-template: %s has no chat_template\n", path);
		goto done;
	}
	char *out = NULL, err[600];
	int rc = ms_chat_template_render(tmpl, msgs, bos, eos, agp, NULL, &out, err, sizeof err);
	if (rc) {
		if (rc == MS_EINVAL) fprintf(stderr, "%s\n", err); /* the template's own message */
		else fprintf(stderr, "chat-template: %s\n", err);
		goto done;
	}
	fputs(out, stdout);
	if (!*out || out[strlen(out) - 1] != '\n') fputc('\n', stdout);
	free(out);
	code = fflush(stdout) == 0 ? 0 : 1;
done:
	json_decref(cfg);
	json_decref(msgs);
	return code;
}
