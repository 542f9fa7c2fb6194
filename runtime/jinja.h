/* runtime/jinja.h: a Jinja template interpreter for Hugging Face chat templates.
 *
 * Covers what real chat templates use: {{ }}, {% %}, {# #}, whitespace control
 * ({%- -%} {{- -}} {%+), trim_blocks / lstrip_blocks, if/elif/else, for (with loop.*,
 * else, inline if, tuple unpacking, break/continue), set (incl. set blocks and
 * namespace attributes), macros, filters, tests, string / dict / list methods, slicing,
 * Python-style printing, and Jinja's undefined. Data comes in as jansson JSON.
 *
 * Rendering is bounded: output size, memory, evaluation steps and nesting depth have
 * limits, so a hostile template ends in an error, never a hang or an exhausted host.
 *
 * Return codes: 0; MS_EINVAL when the template called raise_exception(msg) (err holds
 * exactly msg); MS_EFORMAT for a syntax or evaluation error (err: "line N: ...");
 * MS_ETOOBIG when a limit was hit; MS_ENOMEM.
 */
#ifndef MS_RUNTIME_JINJA_H
#define MS_RUNTIME_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ms_jinja_opts {
	int trim_blocks;     /* drop the first newline after a block tag */
	int lstrip_blocks;   /* strip spaces/tabs before a block tag at line start */
	size_t max_output;   /* bytes of rendered output */
	size_t max_memory;   /* bytes the evaluator may allocate */
	uint64_t max_steps;  /* evaluation steps (expressions, loop iterations, bulk work) */
	int max_depth;       /* nesting of syntax and of macro calls */
} ms_jinja_opts;

/* Defaults: trim_blocks and lstrip_blocks on (as transformers' apply_chat_template),
 * 16 MiB output, 128 MiB memory, 20M steps, depth 64. */
void ms_jinja_opts_default(ms_jinja_opts *o);

/* Renders tmpl with the variables of the JSON object context (may be NULL). opts may be
 * NULL for the defaults. On success *out is a malloc'd NUL-terminated string (free()). */
int ms_jinja_render(const char *tmpl, const json_t *context, const ms_jinja_opts *opts,
                    char **out, char *err, size_t errlen);

/* Renders a chat template the way transformers' apply_chat_template does: context
 * {messages, bos_token, eos_token, add_generation_prompt} plus the keys of extra_vars
 * (an object or NULL; e.g. tools). A NULL bos/eos token is left undefined. */
int ms_chat_template_render(const char *tmpl, const json_t *messages, const char *bos_token,
                            const char *eos_token, int add_generation_prompt,
                            const json_t *extra_vars, char **out, char *err, size_t errlen);

/* Reads the chat template and special tokens of a tokenizer_config.json object:
 * chat_template as a string or a list of {name, template} (the "default" one, else the
 * first); bos_token / eos_token as strings or {"content": ...} (NULL when absent).
 * Returned pointers borrow from config. Returns MS_ENOENT when there is no template. */
int ms_chat_template_from_config(const json_t *config, const char **tmpl, const char **bos,
                                 const char **eos);

#endif
