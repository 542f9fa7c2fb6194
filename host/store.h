/* host/store.h: moonspace's metadata store (SQLite, one file: <data>/moonspace.db).
 *
 * What it keeps: apps (card JSON, status, error, revision, timestamps), per-app run
 * statistics, access tokens (only their SHA-256), and likes (one per token and app).
 *
 * The database runs in WAL mode with a busy timeout; the schema is a numbered list of
 * migrations applied through PRAGMA user_version, each in one transaction, so a database
 * written by an older moonspace is upgraded on open; one written by a newer moonspace is
 * refused (MS_EUNSUPPORTED) rather than damaged. Every statement is prepared, every value
 * bound; nothing is formatted into SQL.
 *
 * Threading: one ms_store is used from one thread (the host's loop). Calls are
 * synchronous and short (indexed queries on a small database).
 *
 * Times are Unix milliseconds (int64, wall clock); 0 means "never".
 * Strings returned in structs are malloc'd and freed by the matching *_free function.
 */
#ifndef MS_STORE_H
#define MS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/ms.h"

/* The schema version this build writes (PRAGMA user_version after open). */
#define MS_STORE_SCHEMA_VERSION 3
/* Run durations kept per app for p95 / recent average (older runs are pruned). */
#define MS_STORE_RECENT_RUNS 1000
/* Token text: "ms_" + 64 hex digits (32 random bytes) + NUL. */
#define MS_TOKEN_LEN 68
#define MS_TOKEN_NAME_MAX 64

typedef struct ms_store ms_store;

/* Opens (creating if needed) <data_dir>/moonspace.db; creates data_dir (0700) if missing.
 * Migrates to MS_STORE_SCHEMA_VERSION. err gets a message naming the file on failure.
 * Returns 0, MS_EIO (cannot open/create), MS_EFORMAT (not a database / migration failed),
 * MS_EUNSUPPORTED (written by a newer moonspace). */
int ms_store_open(ms_store **out, const char *data_dir, char *err, size_t errlen);
/* Same with an explicit database file path. */
int ms_store_open_file(ms_store **out, const char *db_path, char *err, size_t errlen);
/* Clean close: finalizes statements, checkpoints the WAL (TRUNCATE) and closes. NULL ok. */
void ms_store_close(ms_store *st);

/* PRAGMA user_version of the open database. */
int ms_store_schema_version(ms_store *st);
/* A cheap query proving the database answers (for /healthz): 0 or MS_EIO. */
int ms_store_health(ms_store *st);
/* The last SQLite error message (for logs). */
const char *ms_store_errmsg(ms_store *st);

/* ---- apps ---- */

/* Status strings are the caller's; the host uses the JSON API stage names (RUNNING,
 * BUILDING, SLEEPING, RUNTIME_ERROR, BUILD_ERROR, CONFIG_ERROR, NO_APP_FILE). */

/* Inserts or updates an app. card_json is the cardData JSON object text (the list search
 * reads title, short_description, tags, pinned and private from it) or NULL ("{}");
 * MS_EINVAL when it is not a JSON object. created_at is kept from the first insert;
 * updated_at (the Hub's lastModified) is set to now only when card_json or revision
 * changed, so restarting the host or a status change does not look like an edit.
 * error may be NULL. */
int ms_store_app_upsert(ms_store *st, const char *id, const char *card_json, const char *status,
			const char *error, const char *revision);
/* Sets status and error only (updated_at unchanged). MS_ENOENT for an unknown app. */
int ms_store_app_set_status(ms_store *st, const char *id, const char *status, const char *error);
/* Removes the app row and its run statistics. Likes are kept (keyed by id), so an app that
 * is moved away and back keeps them. MS_ENOENT when absent. */
int ms_store_app_remove(ms_store *st, const char *id);

typedef struct ms_store_stats {
	int64_t runs;          /* all-time count */
	int64_t errors;        /* all-time failed runs */
	double avg_ms;         /* all-time mean duration (0 without runs) */
	double recent_avg_ms;  /* mean over the last MS_STORE_RECENT_RUNS (use for ETAs) */
	double p95_ms;         /* nearest-rank 95th percentile over the last MS_STORE_RECENT_RUNS */
	int64_t last_run_at;
} ms_store_stats;

typedef struct ms_store_app {
	char *id;              /* "owner/name" */
	char *card_json;       /* cardData object text */
	char *status;
	char *error;           /* NULL when none */
	char *revision;        /* NULL when none */
	int64_t created_at, updated_at, last_run_at;
	int64_t likes;
	int64_t runs;          /* all-time count (full stats: ms_store_get_stats) */
	int pinned, private_;  /* from card_json */
} ms_store_app;

typedef enum ms_store_sort {
	MS_STORE_SORT_NAME = 0,  /* id ascending */
	MS_STORE_SORT_LIKES,     /* likes descending, then id */
	MS_STORE_SORT_UPDATED,   /* most recent activity first: max(updated_at, last_run_at) */
} ms_store_sort;

typedef struct ms_store_query {
	const char *search;      /* case-insensitive substring of id, title, short_description or a tag; NULL/"" = all */
	const char *tag;         /* exact tag (case-insensitive); NULL/"" = all */
	ms_store_sort sort;
	int include_private;     /* 0: apps whose card says private: true are left out */
	int64_t limit;           /* <= 0: no limit */
	int64_t offset;
} ms_store_query;

/* Parses "name" / "likes" / "updated" (also "lastModified", "recent"); MS_EINVAL otherwise. */
int ms_store_sort_parse(const char *s, ms_store_sort *out);

/* Lists apps matching q (NULL = everything, by name), pinned apps first within every sort,
 * filtered, sorted and paged in SQL. *total (if non-NULL) gets the number of matches
 * before limit/offset. Free with ms_store_apps_free. */
int ms_store_list(ms_store *st, const ms_store_query *q, ms_store_app **out, size_t *n, int64_t *total);
/* One app; MS_ENOENT when absent. Free with ms_store_app_free. */
int ms_store_get(ms_store *st, const char *id, ms_store_app *out);
void ms_store_app_free(ms_store_app *a);
void ms_store_apps_free(ms_store_app *a, size_t n);

/* ---- runs ---- */

/* Records one finished call (duration in ms, ok = 0 for an error) and bumps last_run_at.
 * Keeps the last MS_STORE_RECENT_RUNS durations per app. MS_ENOENT for an unknown app. */
int ms_store_record_run(ms_store *st, const char *app_id, double duration_ms, int ok);
/* Several finished calls in one transaction (a busy app records its runs in batches). */
typedef struct ms_store_run {
	double duration_ms;
	int ok;
	int64_t at; /* when it finished, Unix ms */
} ms_store_run;
int ms_store_record_runs(ms_store *st, const char *app_id, const ms_store_run *runs, size_t n);
/* Statistics of an app (zeros when it never ran); MS_ENOENT for an unknown app. */
int ms_store_get_stats(ms_store *st, const char *app_id, ms_store_stats *out);

/* ---- tokens ---- */

typedef struct ms_store_token {
	char *name;
	int64_t created_at, last_used_at;
} ms_store_token;

/* 1 when name is a valid token name: [A-Za-z0-9][A-Za-z0-9._@-]*, 1..MS_TOKEN_NAME_MAX. */
int ms_store_token_name_valid(const char *name);
/* Creates a token: 32 random bytes (OpenSSL RAND_bytes) as "ms_<64 hex>" written to
 * token_out (MS_TOKEN_LEN bytes); only its SHA-256 is stored, so print it now or never.
 * MS_EINVAL (bad name), MS_EEXISTS (name taken). */
int ms_store_token_add(ms_store *st, const char *name, char token_out[MS_TOKEN_LEN]);
/* Tokens by name. Free with ms_store_tokens_free. */
int ms_store_token_list(ms_store *st, ms_store_token **out, size_t *n);
void ms_store_tokens_free(ms_store_token *t, size_t n);
/* Deletes a token and the likes made with it; MS_ENOENT when absent. */
int ms_store_token_remove(ms_store *st, const char *name);
/* Checks a presented token (with or without a "Bearer " prefix) against every stored hash
 * with a constant-time compare. 0 and the token's name in name_out (if non-NULL) when
 * valid; updates last_used_at (at most once a minute per token). MS_EDENIED otherwise. */
int ms_store_token_verify(ms_store *st, const char *token, char *name_out, size_t name_len);

/* ---- likes ---- */

/* Idempotent: liking twice counts once, unliking what is not liked is 0. Like needs an
 * existing app (MS_ENOENT) and token name (MS_ENOENT). */
int ms_store_like(ms_store *st, const char *app_id, const char *token_name);
int ms_store_unlike(ms_store *st, const char *app_id, const char *token_name);
/* Number of likes (>= 0) or a negative MS_E* code. */
int64_t ms_store_like_count(ms_store *st, const char *app_id);
/* 1 liked, 0 not, negative on error. */
int ms_store_liked(ms_store *st, const char *app_id, const char *token_name);
/* App ids liked by a token (sorted). Free each string and the array. */
int ms_store_likes_by(ms_store *st, const char *token_name, char ***ids, size_t *n);

#endif
