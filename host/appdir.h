/* host/appdir.h: discovering apps on disk and watching them for changes.
 *
 * An apps root holds ROOT/OWNER/NAME/README.md (the card, see card.h) plus the app file
 * (card app_file, default app.lua) and the app's own Lua modules (*.lua, in subfolders too,
 * for require "lib.util" -> lib/util.lua). OWNER and NAME must match
 * [A-Za-z0-9][A-Za-z0-9._-]* (at most 96 bytes each); other directories are ignored, as are
 * names starting with '.'. OWNER/NAME may be symlinks to directories; inside an app, a
 * symlink that resolves outside the app's directory is refused (a module is skipped with a
 * warning in `notes`; the app file or README.md makes the app a config error).
 *
 * A scan reads every app fully into memory (ms_appsrc): the card, the source files and a
 * content revision. The worker never reads files itself: the host sends it these bytes.
 * A bad app never stops a scan: it gets a status and a message that says what to fix.
 *
 * ms_appsrc is reference-counted (loop thread only, not atomic): the host keeps the
 * version a call started with (ms_appsrc_ref) so that calls in flight finish on the old
 * version after a rescan replaced it.
 *
 * When several roots hold the same OWNER/NAME, the first root wins and the later copies
 * are ignored (with a warning log line).
 */
#ifndef MS_APPDIR_H
#define MS_APPDIR_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/ms.h"
#include "host/card.h"

/* Per-app size limits: a file larger than this, more files, or more bytes in total make
 * the app a config error ("app too large: ..."). */
#define MS_APP_MAX_FILE_BYTES (1u << 20)   /* one .lua file */
#define MS_APP_MAX_TOTAL_BYTES (8u << 20)  /* all .lua files of one app */
#define MS_APP_MAX_FILES 256
#define MS_APP_MAX_DEPTH 8                 /* folder nesting below the app dir */
#define MS_APP_ID_MAX 194                  /* "OWNER/NAME" + NUL */

typedef enum ms_app_status {
	MS_APP_OK = 0,         /* card parsed, app file present */
	MS_APP_CONFIG_ERROR,   /* bad card (or app too large, or an escaping symlink) */
	MS_APP_NO_APP_FILE,    /* card fine but the app file is missing */
} ms_app_status;

typedef struct ms_appfile {
	char *path;            /* relative to the app dir, '/'-separated, e.g. "app.lua", "lib/util.lua" */
	char *data;            /* contents, NUL-terminated (not counted in len) */
	size_t len;
} ms_appfile;

typedef struct ms_appsrc {
	int refs;              /* ms_appsrc_ref/unref */
	char id[MS_APP_ID_MAX];/* "OWNER/NAME" */
	char *owner, *name;    /* the two halves of id */
	char *root;            /* the root it was found in, as given */
	char *dir;             /* the app directory: root/OWNER/NAME */
	ms_app_status status;
	char *error;           /* NULL when status is MS_APP_OK; else one actionable line */
	int has_card;          /* card parsed (status OK or NO_APP_FILE, or a later error) */
	ms_card card;          /* valid when has_card; else only card.data may be set (raw front matter) */
	ms_appfile *files;     /* the .lua files, sorted by path (strcmp); includes app_file */
	size_t nfiles;
	const ms_appfile *main;/* the app file within files, or NULL (status != OK) */
	char revision[65];     /* sha256 hex over README.md and every file (path, NUL, len, bytes) */
	char *notes;           /* warnings that did not fail the app (skipped files), or NULL */
	uint8_t stamp[32];     /* cheap fingerprint of the tree's stat data (rescan shortcut) */
} ms_appsrc;

/* "OK", "CONFIG_ERROR" or "NO_APP_FILE" (the last two are also JSON API stage names). */
const char *ms_app_status_name(ms_app_status s);

ms_appsrc *ms_appsrc_ref(ms_appsrc *a);
void ms_appsrc_unref(ms_appsrc *a);   /* frees at zero; NULL is fine */

/* The cardData JSON text to store and serve (ms_store_app_upsert's card_json): the
 * normalised card (ms_card_to_json) when it parsed; otherwise the raw front matter if the
 * YAML parsed, with "private" forced to true when the raw card mentions private with any
 * value other than false (a typo must not publish a private app); else "{}". Malloc'd;
 * NULL on out-of-memory. */
char *ms_appsrc_card_json(const ms_appsrc *a);
/* Whether the app must be treated as private: card.private_ when the card parsed;
 * otherwise 1 when the raw front matter has a "private" key with any value other than
 * false (same rule as ms_appsrc_card_json). Use this, not card.private_, for access checks. */
int ms_appsrc_private(const ms_appsrc *a);

/* A file of the app by relative path ("lib/util.lua"), or NULL. */
const ms_appfile *ms_appsrc_file(const ms_appsrc *a, const char *path);

/* Loads one app directory (dir = root/owner/name). Always returns an app (status says
 * whether it is usable) unless out of memory (NULL). The result has one reference. */
ms_appsrc *ms_appsrc_load(const char *root, const char *owner, const char *name);

/* 1 when s is a valid OWNER or NAME. */
int ms_app_name_valid(const char *s);

/* ---- a set of apps (one scan) ---- */

typedef struct ms_appset {
	ms_appsrc **apps;      /* sorted by id; each holds one reference owned by the set */
	size_t napps;
} ms_appset;

void ms_appset_init(ms_appset *s);
void ms_appset_free(ms_appset *s);     /* unrefs every app */
/* The app with this id, or NULL (binary search). */
ms_appsrc *ms_appset_find(const ms_appset *s, const char *id);

/* Scans every root into out (init'ed by the call; free with ms_appset_free). When prev is
 * non-NULL, an app whose stat fingerprint (paths, sizes, mtimes, inodes) is unchanged is
 * shared with prev (a new reference) instead of being read again. A root that does not
 * exist or cannot be read is logged and skipped. Returns 0 or MS_ENOMEM. */
int ms_appdir_scan(const char *const *roots, size_t nroots, const ms_appset *prev, ms_appset *out);

typedef enum ms_appdir_change {
	MS_APPDIR_ADDED = 1,
	MS_APPDIR_CHANGED,     /* revision, status or error differ */
	MS_APPDIR_REMOVED,
} ms_appdir_change;

/* One change: added (old_app NULL), changed (both), removed (new_app NULL). The apps are
 * borrowed for the call: take ms_appsrc_ref() to keep one. */
typedef void (*ms_appdir_cb)(void *ud, ms_appdir_change kind, ms_appsrc *new_app, ms_appsrc *old_app);

/* Calls cb for every difference between two scans, in id order. Returns the number of
 * changes. */
size_t ms_appset_diff(const ms_appset *old_set, const ms_appset *new_set, ms_appdir_cb cb, void *ud);

/* ---- watching ---- */

typedef struct ms_appdir_watch ms_appdir_watch;

/* Scans the roots now, calls cb(ADDED) for every app found (synchronously, before
 * returning), then rescans every interval_ms on a uv_timer (plus soon after a uv_fs_event
 * on a root fires, where the platform supports it) and calls cb for each change, on the
 * loop thread. The roots are copied. Returns 0, MS_EINVAL or MS_ENOMEM. */
int ms_appdir_watch_start(ms_appdir_watch **out, uv_loop_t *loop, const char *const *roots, size_t nroots,
			  unsigned interval_ms, ms_appdir_cb cb, void *ud);
/* The current set (valid until the next rescan; take refs to keep apps). */
const ms_appset *ms_appdir_watch_apps(const ms_appdir_watch *w);
/* Rescans now (synchronously), calling cb for changes; returns the number of changes. */
size_t ms_appdir_watch_rescan(ms_appdir_watch *w);
/* Stops the timer and watchers; the struct is freed once libuv has closed its handles
 * (run the loop). No callback is called after this. */
void ms_appdir_watch_stop(ms_appdir_watch *w);

#endif
