/* host/card.h: an app's README.md: the Spaces card (YAML front matter) and its body.
 *
 * A README starts with a YAML front matter block between two `---` lines (the Hugging Face
 * Spaces card), followed by Markdown. ms_card_parse() reads the front matter with libyaml
 * into a caller-owned ms_card, validates the fields moonspace uses, keeps everything else
 * (the whole front matter is also available as a JSON object, `data`, which is what the
 * Hub's /api/spaces calls `cardData`), and renders the Markdown body with cmark-gfm
 * (tables, strikethrough, autolinks, task lists) into sanitized HTML: raw HTML is never
 * passed through and links/images whose URL uses javascript:, vbscript:, file: or a
 * non-image data: scheme lose their URL.
 *
 * Errors are one line a user can act on, always starting with "README.md", e.g.
 *   README.md: no YAML front matter (--- ... ---) at the top of the file
 *   README.md line 4: colorFrom must be one of red, yellow, green, blue, indigo, purple, pink, gray
 *   README.md line 3: YAML error: mapping values are not allowed in this context
 * (line numbers are lines of README.md, 1-based).
 *
 * Usage:
 *   ms_card c;
 *   char err[256];
 *   ms_card_init(&c);
 *   if (ms_card_load(&c, "apps/demo/x/README.md", err, sizeof err) < 0) show(err);
 *   ... c.title, c.models[i], c.html ...
 *   ms_card_free(&c);
 */
#ifndef MS_CARD_H
#define MS_CARD_H

#include <jansson.h>
#include <stddef.h>

#include "common/ms.h"

/* Largest README.md ms_card_load() reads. */
#define MS_CARD_MAX_BYTES (1u << 20)

/* Defaults of moonspace's own limits (card fields timeout, memory, concurrency, max_queue). */
#define MS_CARD_DEFAULT_TIMEOUT_S 60
#define MS_CARD_DEFAULT_MEMORY_MB 256
#define MS_CARD_DEFAULT_CONCURRENCY 1
#define MS_CARD_DEFAULT_MAX_QUEUE 64

typedef struct ms_card {
	/* Spaces card fields. Strings are malloc'd, NUL-terminated, owned by the card; NULL when
	 * the card does not set them (title: the caller falls back to the app's NAME). */
	char *title;
	char *emoji;
	char *color_from;        /* "colorFrom": one of ms_card_colors (validated) */
	char *color_to;          /* "colorTo": same enum */
	char *sdk;               /* "lua" (default when absent) or "static" */
	char *app_file;          /* default "app.lua"; a relative path inside the app, no "..", validated */
	char *short_description;
	char *license;
	char **models;           /* each "org/name" or "org/name@rev" (validated); see ms_card_model_split */
	size_t nmodels;
	char **preload_from_hub; /* "repo", "repo f1,f2" or "repo f1,f2 sha", kept as written */
	size_t npreload;
	char **tags;
	size_t ntags;
	int pinned;              /* 0/1 */
	int private_;            /* "private": 0/1 */

	/* moonspace's own limits (validated ranges; defaults above) */
	int timeout_s;           /* wall-clock limit per call, 1..3600 */
	int memory_mb;           /* app worker memory cap, 16..65536 */
	int concurrency;         /* calls running at once, 1..64 */
	int max_queue;           /* waiting calls before 503, 0..100000 */

	json_t *data;            /* the whole front matter as a JSON object (cardData); owned (one ref) */
	char *body_md;           /* the Markdown after the front matter (may be "") */
	char *html;              /* body_md rendered by ms_markdown_to_html (may be "") */
	int body_line;           /* line of README.md where body_md starts (1-based) */
} ms_card;

/* NULL-terminated list of the colours colorFrom/colorTo accept. */
extern const char *const ms_card_colors[];

/* Zeroes the card and sets the defaults (sdk/app_file NULL until parsed; the limits set). */
void ms_card_init(ms_card *c);
/* Frees everything the card owns and re-initialises it. Safe on an init'ed card. */
void ms_card_free(ms_card *c);

/* Parses README text (need not be NUL-terminated). On success fills c (which must be freshly
 * init'ed) and returns 0. On failure returns MS_EFORMAT (bad/missing front matter, a
 * field of the wrong type or value) or MS_ENOMEM, writes the message into err, and leaves
 * c init'ed, except that c->data keeps the raw front matter when the YAML parsed but a
 * field was invalid (so the caller can still honour e.g. private: true); free with
 * ms_card_free in every case. */
int ms_card_parse(ms_card *c, const char *text, size_t len, char *err, size_t errlen);

/* Reads path (at most MS_CARD_MAX_BYTES) and parses it. MS_ENOENT / MS_EIO / MS_ETOOBIG with
 * a "README.md: ..." message when the file cannot be read. */
int ms_card_load(ms_card *c, const char *path, char *err, size_t errlen);

/* The card as a JSON object with every known field normalised (defaults filled in, lists
 * as arrays, limits included) plus unknown fields from the front matter: what the JSON
 * API serves as cardData. New reference; NULL on out-of-memory. */
json_t *ms_card_to_json(const ms_card *c);

/* 1 when s is one of ms_card_colors. */
int ms_card_color_valid(const char *s);

/* Splits a models entry "org/name[@rev]" into repo ("org/name") and rev ("" when absent,
 * meaning "main"). Returns MS_EINVAL when the entry is malformed or a buffer is too small. */
int ms_card_model_split(const char *entry, char *repo, size_t repolen, char *rev, size_t revlen);

/* GitHub-flavoured Markdown (table, strikethrough, autolink, tasklist) to sanitized HTML:
 * raw HTML blocks/inlines are replaced by a comment, dangerous link/image URLs removed.
 * Returns a malloc'd string (caller frees) or NULL on out-of-memory. */
char *ms_markdown_to_html(const char *md, size_t len);

#endif
