/* host/store.c: SQLite metadata store (see store.h). */
#include "host/store.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Migration i takes the schema from user_version i to i+1. Never edit a released entry:
 * append a new one (and bump MS_STORE_SCHEMA_VERSION). */
static const char *const migrations[] = {
	/* 1: apps and tokens */
	"CREATE TABLE apps ("
	"  id TEXT PRIMARY KEY,"
	"  card_json TEXT NOT NULL DEFAULT '{}',"
	"  status TEXT NOT NULL DEFAULT 'BUILDING',"
	"  error TEXT,"
	"  revision TEXT,"
	"  created_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE TABLE tokens ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  hash BLOB NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  last_used_at INTEGER NOT NULL DEFAULT 0);",
	/* 2: likes and run statistics */
	"CREATE TABLE likes ("
	"  app_id TEXT NOT NULL,"
	"  token_name TEXT NOT NULL REFERENCES tokens(name) ON DELETE CASCADE,"
	"  created_at INTEGER NOT NULL,"
	"  UNIQUE (app_id, token_name));"
	"CREATE TABLE app_stats ("
	"  app_id TEXT PRIMARY KEY,"
	"  runs INTEGER NOT NULL DEFAULT 0,"
	"  errors INTEGER NOT NULL DEFAULT 0,"
	"  total_ms REAL NOT NULL DEFAULT 0);"
	"CREATE TABLE runs ("
	"  id INTEGER PRIMARY KEY,"
	"  app_id TEXT NOT NULL,"
	"  at INTEGER NOT NULL,"
	"  duration_ms REAL NOT NULL,"
	"  ok INTEGER NOT NULL);"
	"CREATE INDEX runs_app ON runs (app_id, id);",
	/* 3: last activity per app, likes counted by app */
	"ALTER TABLE apps ADD COLUMN last_run_at INTEGER NOT NULL DEFAULT 0;"
	"CREATE INDEX likes_app ON likes (app_id);",
};
_Static_assert(MS_ARRAY_LEN(migrations) == MS_STORE_SCHEMA_VERSION, "one migration per schema version");

enum {
	Q_APP_UPSERT,
	Q_APP_STATUS,
	Q_APP_DELETE,
	Q_STATS_DELETE,
	Q_RUNS_DELETE,
	Q_APP_GET,
	Q_APP_TOUCH,
	Q_STATS_ADD,
	Q_RUN_INSERT,
	Q_RUN_PRUNE,
	Q_STATS_GET,
	Q_RUN_DURATIONS,
	Q_TOKEN_INSERT,
	Q_TOKEN_LIST,
	Q_TOKEN_DELETE,
	Q_TOKEN_LIKES_DELETE,
	Q_TOKEN_HASHES,
	Q_TOKEN_USED,
	Q_TOKEN_EXISTS,
	Q_APP_EXISTS,
	Q_LIKE,
	Q_UNLIKE,
	Q_LIKE_COUNT,
	Q_LIKED,
	Q_LIKES_BY,
	Q_HEALTH,
	Q_COUNT_
};

static const char *const sql_text[Q_COUNT_] = {
	[Q_APP_UPSERT] =
		"INSERT INTO apps (id, card_json, status, error, revision, created_at, updated_at)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)"
		" ON CONFLICT (id) DO UPDATE SET card_json = excluded.card_json, status = excluded.status,"
		" error = excluded.error, revision = excluded.revision,"
		" updated_at = CASE WHEN card_json IS excluded.card_json AND revision IS excluded.revision"
		" THEN updated_at ELSE excluded.updated_at END",
	[Q_APP_STATUS] = "UPDATE apps SET status = ?2, error = ?3 WHERE id = ?1",
	[Q_APP_DELETE] = "DELETE FROM apps WHERE id = ?1",
	[Q_STATS_DELETE] = "DELETE FROM app_stats WHERE app_id = ?1",
	[Q_RUNS_DELETE] = "DELETE FROM runs WHERE app_id = ?1",
	[Q_APP_GET] = NULL, /* built by list_sql() */
	[Q_APP_TOUCH] = "UPDATE apps SET last_run_at = ?2 WHERE id = ?1",
	[Q_STATS_ADD] = "INSERT INTO app_stats (app_id, runs, errors, total_ms) VALUES (?1, 1, ?2, ?3)"
			" ON CONFLICT (app_id) DO UPDATE SET runs = runs + 1, errors = errors + excluded.errors,"
			" total_ms = total_ms + excluded.total_ms",
	[Q_RUN_INSERT] = "INSERT INTO runs (app_id, at, duration_ms, ok) VALUES (?1, ?2, ?3, ?4)",
	[Q_RUN_PRUNE] = "DELETE FROM runs WHERE app_id = ?1 AND id <= (SELECT id FROM runs WHERE app_id = ?1"
			" ORDER BY id DESC LIMIT 1 OFFSET ?2)",
	[Q_STATS_GET] = "SELECT s.runs, s.errors, s.total_ms, a.last_run_at FROM apps a"
			" LEFT JOIN app_stats s ON s.app_id = a.id WHERE a.id = ?1",
	[Q_RUN_DURATIONS] = "SELECT duration_ms FROM runs WHERE app_id = ?1 ORDER BY duration_ms",
	[Q_TOKEN_INSERT] = "INSERT INTO tokens (name, hash, created_at) VALUES (?1, ?2, ?3)",
	[Q_TOKEN_LIST] = "SELECT name, created_at, last_used_at FROM tokens ORDER BY name",
	[Q_TOKEN_DELETE] = "DELETE FROM tokens WHERE name = ?1",
	[Q_TOKEN_LIKES_DELETE] = "DELETE FROM likes WHERE token_name = ?1",
	[Q_TOKEN_HASHES] = "SELECT name, hash, last_used_at FROM tokens",
	[Q_TOKEN_USED] = "UPDATE tokens SET last_used_at = ?2 WHERE name = ?1",
	[Q_TOKEN_EXISTS] = "SELECT 1 FROM tokens WHERE name = ?1",
	[Q_APP_EXISTS] = "SELECT 1 FROM apps WHERE id = ?1",
	[Q_LIKE] = "INSERT OR IGNORE INTO likes (app_id, token_name, created_at) VALUES (?1, ?2, ?3)",
	[Q_UNLIKE] = "DELETE FROM likes WHERE app_id = ?1 AND token_name = ?2",
	[Q_LIKE_COUNT] = "SELECT count(*) FROM likes WHERE app_id = ?1",
	[Q_LIKED] = "SELECT 1 FROM likes WHERE app_id = ?1 AND token_name = ?2",
	[Q_LIKES_BY] = "SELECT app_id FROM likes WHERE token_name = ?1 ORDER BY app_id",
	[Q_HEALTH] = "SELECT count(*) FROM apps",
};

struct ms_store {
	sqlite3 *db;
	sqlite3_stmt *q[Q_COUNT_];
};

static int64_t now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A prepared statement, reset and unbound, ready for binds (prepared once, kept). */
static sqlite3_stmt *stmt(ms_store *st, int id) {
	sqlite3_stmt *s = st->q[id];
	if (!s) {
		if (sqlite3_prepare_v3(st->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT, &st->q[id], NULL) != SQLITE_OK) {
			MS_ERROR("store", "prepare: %s", sqlite3_errmsg(st->db));
			return NULL;
		}
		return st->q[id];
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Steps a statement that returns no rows; resets it. */
static int exec_stmt(ms_store *st, sqlite3_stmt *s) {
	if (!s) return MS_EIO;
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_DONE) return 0;
	if (rc == SQLITE_CONSTRAINT) return MS_EEXISTS;
	if (rc == SQLITE_BUSY) return MS_EBUSY;
	MS_ERROR("store", "%s", sqlite3_errmsg(st->db));
	return MS_EIO;
}

static int exec_sql(ms_store *st, const char *sql) {
	char *msg = NULL;
	if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
	MS_ERROR("store", "%s: %s", sql, msg ? msg : "?");
	sqlite3_free(msg);
	return MS_EIO;
}

static void bind_text(sqlite3_stmt *s, int i, const char *v) {
	if (v) sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
	else sqlite3_bind_null(s, i);
}

static char *col_dup(sqlite3_stmt *s, int i) {
	const unsigned char *t = sqlite3_column_text(s, i);
	return t ? strdup((const char *)t) : NULL;
}

/* ---------------------------------------------------------------- open / close */

static int pragma_int(ms_store *st, const char *sql, int *out) {
	sqlite3_stmt *s;
	int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		*out = sqlite3_column_int(s, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc;
}

static int migrate(ms_store *st, const char *path, char *err, size_t errlen) {
	int v = 0;
	int rc = pragma_int(st, "PRAGMA user_version", &v);
	if (rc == SQLITE_NOTADB) return ms_errf(err, errlen, MS_EFORMAT, "%s: not an SQLite database", path);
	if (rc != SQLITE_OK) return ms_errf(err, errlen, MS_EIO, "%s: %s", path, sqlite3_errmsg(st->db));
	if (v > MS_STORE_SCHEMA_VERSION)
		return ms_errf(err, errlen, MS_EUNSUPPORTED,
			       "%s: schema version %d is newer than this moonspace understands (%d): upgrade moonspace", path, v,
			       MS_STORE_SCHEMA_VERSION);
	int from = v;
	for (; v < MS_STORE_SCHEMA_VERSION; v++) {
		char bump[64];
		snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1); /* our integer, not input */
		if (exec_sql(st, "BEGIN IMMEDIATE")) return ms_errf(err, errlen, MS_EIO, "%s: %s", path, sqlite3_errmsg(st->db));
		if (exec_sql(st, migrations[v]) || exec_sql(st, bump)) {
			int e = ms_errf(err, errlen, MS_EFORMAT, "%s: migration to schema version %d failed: %s", path, v + 1,
					sqlite3_errmsg(st->db));
			exec_sql(st, "ROLLBACK");
			return e;
		}
		if (exec_sql(st, "COMMIT")) return ms_errf(err, errlen, MS_EIO, "%s: %s", path, sqlite3_errmsg(st->db));
	}
	if (from && from != v) MS_INFO("store", "%s: migrated from schema version %d to %d", path, from, v);
	return 0;
}

int ms_store_open_file(ms_store **out, const char *path, char *err, size_t errlen) {
	*out = NULL;
	ms_store *st = calloc(1, sizeof *st);
	if (!st) return ms_errf(err, errlen, MS_ENOMEM, "out of memory");
	int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc != SQLITE_OK) {
		rc = ms_errf(err, errlen, MS_EIO, "%s: cannot open: %s", path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(st->db, 5000);
	/* WAL: readers never block the writer; NORMAL sync is durable across crashes of the
	 * process (not power loss of the last commits), which suits statistics and likes. */
	sqlite3_stmt *s = NULL;
	rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
	const char *mode = rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
	int wal = mode && strcmp(mode, "wal") == 0;
	int notadb = sqlite3_errcode(st->db) == SQLITE_NOTADB;
	sqlite3_finalize(s);
	if (notadb) {
		rc = ms_errf(err, errlen, MS_EFORMAT, "%s: not an SQLite database", path);
		goto fail;
	}
	if (!wal) {
		rc = ms_errf(err, errlen, MS_EIO, "%s: cannot switch to WAL mode: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	if (exec_sql(st, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON")) {
		rc = ms_errf(err, errlen, MS_EIO, "%s: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	if ((rc = migrate(st, path, err, errlen))) goto fail;
	*out = st;
	return 0;
fail:
	sqlite3_close(st->db);
	free(st);
	return rc;
}

static int mkdir_p(const char *dir) {
	char tmp[4096];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof tmp) return MS_EINVAL;
	memcpy(tmp, dir, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/') continue;
		*p = 0;
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return MS_EIO;
		*p = '/';
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return MS_EIO;
	return 0;
}

int ms_store_open(ms_store **out, const char *data_dir, char *err, size_t errlen) {
	*out = NULL;
	if (!data_dir || !*data_dir) return ms_errf(err, errlen, MS_EINVAL, "no data directory given");
	if (mkdir_p(data_dir)) return ms_errf(err, errlen, MS_EIO, "%s: cannot create the data directory: %s", data_dir, strerror(errno));
	char path[4096];
	if ((size_t)snprintf(path, sizeof path, "%s/moonspace.db", data_dir) >= sizeof path)
		return ms_errf(err, errlen, MS_EINVAL, "%s: path too long", data_dir);
	return ms_store_open_file(out, path, err, errlen);
}

void ms_store_close(ms_store *st) {
	if (!st) return;
	for (int i = 0; i < Q_COUNT_; i++) sqlite3_finalize(st->q[i]);
	/* fold the WAL back into the main file so a stopped host leaves one self-contained file */
	if (sqlite3_wal_checkpoint_v2(st->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) != SQLITE_OK)
		MS_WARN("store", "checkpoint: %s", sqlite3_errmsg(st->db));
	if (sqlite3_close(st->db) != SQLITE_OK) MS_WARN("store", "close: %s", sqlite3_errmsg(st->db));
	free(st);
}

int ms_store_schema_version(ms_store *st) {
	int v = -1;
	pragma_int(st, "PRAGMA user_version", &v);
	return v;
}

int ms_store_health(ms_store *st) {
	sqlite3_stmt *s = stmt(st, Q_HEALTH);
	if (!s) return MS_EIO;
	int rc = sqlite3_step(s) == SQLITE_ROW ? 0 : MS_EIO;
	sqlite3_reset(s);
	return rc;
}

const char *ms_store_errmsg(ms_store *st) { return sqlite3_errmsg(st->db); }

/* ---------------------------------------------------------------- apps */

int ms_store_app_upsert(ms_store *st, const char *id, const char *card_json, const char *status, const char *error,
			const char *revision) {
	if (!id || !*id || !status) return MS_EINVAL;
	if (card_json) { /* the list query runs json_extract on it: never store anything else */
		json_t *j = json_loads(card_json, JSON_DECODE_ANY, NULL);
		int ok = json_is_object(j);
		json_decref(j);
		if (!ok) return MS_EINVAL;
	}
	sqlite3_stmt *s = stmt(st, Q_APP_UPSERT);
	if (!s) return MS_EIO;
	bind_text(s, 1, id);
	bind_text(s, 2, card_json ? card_json : "{}");
	bind_text(s, 3, status);
	bind_text(s, 4, error);
	bind_text(s, 5, revision);
	sqlite3_bind_int64(s, 6, now_ms());
	return exec_stmt(st, s);
}

int ms_store_app_set_status(ms_store *st, const char *id, const char *status, const char *error) {
	if (!id || !status) return MS_EINVAL;
	sqlite3_stmt *s = stmt(st, Q_APP_STATUS);
	if (!s) return MS_EIO;
	bind_text(s, 1, id);
	bind_text(s, 2, status);
	bind_text(s, 3, error);
	int rc = exec_stmt(st, s);
	return rc ? rc : sqlite3_changes(st->db) ? 0 : MS_ENOENT;
}

static int with_id(ms_store *st, int q, const char *id) {
	sqlite3_stmt *s = stmt(st, q);
	if (!s) return MS_EIO;
	bind_text(s, 1, id);
	return exec_stmt(st, s);
}

int ms_store_app_remove(ms_store *st, const char *id) {
	if (!id) return MS_EINVAL;
	if (exec_sql(st, "BEGIN")) return MS_EIO;
	int rc = with_id(st, Q_APP_DELETE, id);
	int gone = rc == 0 && sqlite3_changes(st->db) > 0;
	if (!rc) rc = with_id(st, Q_STATS_DELETE, id);
	if (!rc) rc = with_id(st, Q_RUNS_DELETE, id);
	if (rc) {
		exec_sql(st, "ROLLBACK");
		return rc;
	}
	if (exec_sql(st, "COMMIT")) return MS_EIO;
	return gone ? 0 : MS_ENOENT;
}

int ms_store_sort_parse(const char *s, ms_store_sort *out) {
	if (!s || !*s || !strcmp(s, "name") || !strcmp(s, "id")) *out = MS_STORE_SORT_NAME;
	else if (!strcmp(s, "likes")) *out = MS_STORE_SORT_LIKES;
	else if (!strcmp(s, "updated") || !strcmp(s, "lastModified") || !strcmp(s, "recent")) *out = MS_STORE_SORT_UPDATED;
	else return MS_EINVAL;
	return 0;
}

#define APP_COLS                                                                                             \
	"SELECT a.id, a.card_json, a.status, a.error, a.revision, a.created_at, a.updated_at, a.last_run_at,"   \
	" (SELECT count(*) FROM likes l WHERE l.app_id = a.id) AS likes,"                                     \
	" coalesce((SELECT runs FROM app_stats s WHERE s.app_id = a.id), 0),"                                 \
	" coalesce(json_extract(a.card_json, '$.pinned'), 0) = 1 AS pinned,"                                   \
	" coalesce(json_extract(a.card_json, '$.private'), 0) = 1 AS priv FROM apps a"

static int read_app(sqlite3_stmt *s, ms_store_app *a) {
	memset(a, 0, sizeof *a);
	a->id = col_dup(s, 0);
	a->card_json = col_dup(s, 1);
	a->status = col_dup(s, 2);
	a->error = col_dup(s, 3);
	a->revision = col_dup(s, 4);
	a->created_at = sqlite3_column_int64(s, 5);
	a->updated_at = sqlite3_column_int64(s, 6);
	a->last_run_at = sqlite3_column_int64(s, 7);
	a->likes = sqlite3_column_int64(s, 8);
	a->runs = sqlite3_column_int64(s, 9);
	a->pinned = sqlite3_column_int(s, 10);
	a->private_ = sqlite3_column_int(s, 11);
	if (!a->id || !a->card_json || !a->status) {
		ms_store_app_free(a);
		return MS_ENOMEM;
	}
	return 0;
}

void ms_store_app_free(ms_store_app *a) {
	if (!a) return;
	free(a->id);
	free(a->card_json);
	free(a->status);
	free(a->error);
	free(a->revision);
	memset(a, 0, sizeof *a);
}

void ms_store_apps_free(ms_store_app *a, size_t n) {
	for (size_t i = 0; a && i < n; i++) ms_store_app_free(&a[i]);
	free(a);
}

int ms_store_get(ms_store *st, const char *id, ms_store_app *out) {
	memset(out, 0, sizeof *out);
	if (!st->q[Q_APP_GET] &&
	    sqlite3_prepare_v3(st->db, APP_COLS " WHERE a.id = ?1", -1, SQLITE_PREPARE_PERSISTENT, &st->q[Q_APP_GET], NULL))
		return MS_EIO;
	sqlite3_stmt *s = st->q[Q_APP_GET];
	sqlite3_reset(s);
	bind_text(s, 1, id);
	int rc = sqlite3_step(s);
	rc = rc == SQLITE_ROW ? read_app(s, out) : rc == SQLITE_DONE ? MS_ENOENT : MS_EIO;
	sqlite3_reset(s);
	return rc;
}

/* The WHERE clause of a listing, from fixed fragments only; values are bound as ?1 (search
 * pattern) and ?2 (tag). */
static void list_where(const ms_store_query *q, ms_buf *b) {
	ms_buf_puts(b, " WHERE 1");
	if (!q->include_private) ms_buf_puts(b, " AND NOT priv");
	if (q->search && *q->search)
		ms_buf_puts(b, " AND (a.id LIKE ?1 ESCAPE '\\' OR json_extract(a.card_json, '$.title') LIKE ?1 ESCAPE '\\'"
			       " OR json_extract(a.card_json, '$.short_description') LIKE ?1 ESCAPE '\\'"
			       " OR EXISTS (SELECT 1 FROM json_each(a.card_json, '$.tags') t WHERE t.value LIKE ?1 ESCAPE '\\'))");
	if (q->tag && *q->tag)
		ms_buf_puts(b, " AND EXISTS (SELECT 1 FROM json_each(a.card_json, '$.tags') t WHERE lower(t.value) = lower(?2))");
}

static int bind_query(ms_store *st, sqlite3_stmt *s, const ms_store_query *q) {
	if (q->search && *q->search) {
		/* LIKE pattern: %search% with the search's own % _ \ escaped */
		ms_buf p;
		ms_buf_init(&p);
		ms_buf_puts(&p, "%");
		for (const char *c = q->search; *c; c++) {
			if (*c == '%' || *c == '_' || *c == '\\') ms_buf_append(&p, "\\", 1);
			ms_buf_append(&p, c, 1);
		}
		if (ms_buf_puts(&p, "%")) { ms_buf_free(&p); return MS_ENOMEM; }
		sqlite3_bind_text(s, 1, p.data, (int)p.len, SQLITE_TRANSIENT);
		ms_buf_free(&p);
	}
	if (q->tag && *q->tag) sqlite3_bind_text(s, 2, q->tag, -1, SQLITE_TRANSIENT);
	(void)st;
	return 0;
}

static int prepare_buf(ms_store *st, ms_buf *b, sqlite3_stmt **s) {
	if (!b->data) return MS_ENOMEM;
	if (sqlite3_prepare_v2(st->db, b->data, (int)b->len, s, NULL) != SQLITE_OK) {
		MS_ERROR("store", "list: %s", sqlite3_errmsg(st->db));
		return MS_EIO;
	}
	return 0;
}

static int list_total(ms_store *st, const ms_store_query *q, int64_t *total) {
	ms_buf b;
	ms_buf_init(&b);
	ms_buf_puts(&b, "SELECT count(*) FROM (" APP_COLS);
	list_where(q, &b);
	ms_buf_puts(&b, ")");
	sqlite3_stmt *s = NULL;
	int rc = prepare_buf(st, &b, &s);
	ms_buf_free(&b);
	if (!rc) rc = bind_query(st, s, q);
	if (!rc) rc = sqlite3_step(s) == SQLITE_ROW ? 0 : MS_EIO;
	if (!rc) *total = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc;
}

int ms_store_list(ms_store *st, const ms_store_query *qin, ms_store_app **out, size_t *n, int64_t *total) {
	static const ms_store_query all = {.include_private = 1};
	const ms_store_query *q = qin ? qin : &all;
	static const char *const order[] = {
		[MS_STORE_SORT_NAME] = "a.id",
		[MS_STORE_SORT_LIKES] = "likes DESC, a.id",
		[MS_STORE_SORT_UPDATED] = "max(a.updated_at, a.last_run_at) DESC, a.id",
	};
	*out = NULL;
	*n = 0;
	if ((unsigned)q->sort > MS_STORE_SORT_UPDATED) return MS_EINVAL;
	if (total && list_total(st, q, total)) return MS_EIO;
	ms_buf b;
	ms_buf_init(&b);
	ms_buf_puts(&b, "SELECT * FROM (" APP_COLS);
	list_where(q, &b);
	ms_buf_printf(&b, ") a ORDER BY pinned DESC, %s LIMIT ?3 OFFSET ?4", order[q->sort]);
	sqlite3_stmt *s = NULL;
	int rc = prepare_buf(st, &b, &s);
	ms_buf_free(&b);
	if (!rc) rc = bind_query(st, s, q);
	if (rc) { sqlite3_finalize(s); return rc; }
	sqlite3_bind_int64(s, 3, q->limit > 0 ? q->limit : -1);
	sqlite3_bind_int64(s, 4, q->offset > 0 ? q->offset : 0);
	size_t cap = 0;
	ms_store_app *v = NULL;
	int step;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			ms_store_app *nv = realloc(v, nc * sizeof *nv);
			if (!nv) { rc = MS_ENOMEM; break; }
			v = nv;
			cap = nc;
		}
		if ((rc = read_app(s, &v[*n]))) break;
		(*n)++;
	}
	if (!rc && step != SQLITE_DONE) rc = MS_EIO;
	sqlite3_finalize(s);
	if (rc) {
		ms_store_apps_free(v, *n);
		*n = 0;
		return rc;
	}
	*out = v;
	return 0;
}

/* ---------------------------------------------------------------- runs */

/* One run inside the caller's transaction. */
static int add_run(ms_store *st, const char *app_id, const ms_store_run *run) {
	sqlite3_stmt *s = stmt(st, Q_APP_TOUCH);
	int rc;
	if (!s) return MS_EIO;
	bind_text(s, 1, app_id);
	sqlite3_bind_int64(s, 2, run->at);
	if ((rc = exec_stmt(st, s))) return rc;
	if (sqlite3_changes(st->db) == 0) return MS_ENOENT;
	if (!(s = stmt(st, Q_STATS_ADD))) return MS_EIO;
	bind_text(s, 1, app_id);
	sqlite3_bind_int(s, 2, run->ok ? 0 : 1);
	sqlite3_bind_double(s, 3, run->duration_ms);
	if ((rc = exec_stmt(st, s))) return rc;
	if (!(s = stmt(st, Q_RUN_INSERT))) return MS_EIO;
	bind_text(s, 1, app_id);
	sqlite3_bind_int64(s, 2, run->at);
	sqlite3_bind_double(s, 3, run->duration_ms);
	sqlite3_bind_int(s, 4, run->ok ? 1 : 0);
	return exec_stmt(st, s);
}

int ms_store_record_runs(ms_store *st, const char *app_id, const ms_store_run *runs, size_t n) {
	if (!app_id) return MS_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!(runs[i].duration_ms >= 0)) return MS_EINVAL;
	if (n == 0) return 0;
	if (exec_sql(st, "BEGIN")) return MS_EIO;
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) rc = add_run(st, app_id, &runs[i]);
	sqlite3_stmt *s;
	if (!rc && !(s = stmt(st, Q_RUN_PRUNE))) rc = MS_EIO;
	if (!rc) {
		bind_text(s, 1, app_id);
		sqlite3_bind_int(s, 2, MS_STORE_RECENT_RUNS);
		rc = exec_stmt(st, s);
	}
	if (rc) {
		exec_sql(st, "ROLLBACK");
		return rc;
	}
	return exec_sql(st, "COMMIT");
}

int ms_store_record_run(ms_store *st, const char *app_id, double duration_ms, int ok) {
	ms_store_run run = {duration_ms, ok, now_ms()};
	return ms_store_record_runs(st, app_id, &run, 1);
}

int ms_store_get_stats(ms_store *st, const char *app_id, ms_store_stats *out) {
	memset(out, 0, sizeof *out);
	sqlite3_stmt *s = stmt(st, Q_STATS_GET);
	if (!s) return MS_EIO;
	bind_text(s, 1, app_id);
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return rc == SQLITE_DONE ? MS_ENOENT : MS_EIO;
	}
	out->runs = sqlite3_column_int64(s, 0);
	out->errors = sqlite3_column_int64(s, 1);
	double total = sqlite3_column_double(s, 2);
	out->last_run_at = sqlite3_column_int64(s, 3);
	out->avg_ms = out->runs > 0 ? total / (double)out->runs : 0;
	sqlite3_reset(s);
	/* recent durations arrive sorted: mean and nearest-rank p95 in one pass */
	if (!(s = stmt(st, Q_RUN_DURATIONS))) return MS_EIO;
	bind_text(s, 1, app_id);
	double d[MS_STORE_RECENT_RUNS + 1], sum = 0;
	size_t n = 0;
	while (n < MS_ARRAY_LEN(d) && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		d[n] = sqlite3_column_double(s, 0);
		sum += d[n++];
	}
	sqlite3_reset(s);
	if (n > 0) {
		size_t rank = (size_t)((95 * n + 99) / 100); /* ceil(0.95 n), 1-based */
		out->p95_ms = d[rank - 1];
		out->recent_avg_ms = sum / (double)n;
	}
	return 0;
}

/* ---------------------------------------------------------------- tokens */

int ms_store_token_name_valid(const char *name) {
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > MS_TOKEN_NAME_MAX || !isalnum((unsigned char)name[0])) return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("._@-", name[i])) return 0;
	return 1;
}

static void hash_token(const char *tok, size_t len, unsigned char h[SHA256_DIGEST_LENGTH]) {
	SHA256((const unsigned char *)tok, len, h);
}

int ms_store_token_add(ms_store *st, const char *name, char token_out[MS_TOKEN_LEN]) {
	if (!ms_store_token_name_valid(name)) return MS_EINVAL;
	unsigned char raw[32], h[SHA256_DIGEST_LENGTH];
	if (RAND_bytes(raw, sizeof raw) != 1) return MS_EIO;
	static const char hex[] = "0123456789abcdef";
	memcpy(token_out, "ms_", 3);
	for (size_t i = 0; i < sizeof raw; i++) {
		token_out[3 + 2 * i] = hex[raw[i] >> 4];
		token_out[4 + 2 * i] = hex[raw[i] & 15];
	}
	token_out[MS_TOKEN_LEN - 1] = 0;
	OPENSSL_cleanse(raw, sizeof raw);
	hash_token(token_out, MS_TOKEN_LEN - 1, h);
	sqlite3_stmt *s = stmt(st, Q_TOKEN_INSERT);
	if (!s) return MS_EIO;
	bind_text(s, 1, name);
	sqlite3_bind_blob(s, 2, h, sizeof h, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 3, now_ms());
	int rc = exec_stmt(st, s);
	if (rc) OPENSSL_cleanse(token_out, MS_TOKEN_LEN);
	return rc;
}

void ms_store_tokens_free(ms_store_token *t, size_t n) {
	for (size_t i = 0; t && i < n; i++) free(t[i].name);
	free(t);
}

int ms_store_token_list(ms_store *st, ms_store_token **out, size_t *n) {
	*out = NULL;
	*n = 0;
	sqlite3_stmt *s = stmt(st, Q_TOKEN_LIST);
	if (!s) return MS_EIO;
	size_t cap = 0;
	ms_store_token *v = NULL;
	int rc = 0, step;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 8;
			ms_store_token *nv = realloc(v, nc * sizeof *nv);
			if (!nv) { rc = MS_ENOMEM; break; }
			v = nv;
			cap = nc;
		}
		ms_store_token *t = &v[*n];
		t->name = col_dup(s, 0);
		t->created_at = sqlite3_column_int64(s, 1);
		t->last_used_at = sqlite3_column_int64(s, 2);
		if (!t->name) { rc = MS_ENOMEM; break; }
		(*n)++;
	}
	if (!rc && step != SQLITE_DONE) rc = MS_EIO;
	sqlite3_reset(s);
	if (rc) {
		ms_store_tokens_free(v, *n);
		*n = 0;
		return rc;
	}
	*out = v;
	return 0;
}

int ms_store_token_remove(ms_store *st, const char *name) {
	if (!name) return MS_EINVAL;
	if (exec_sql(st, "BEGIN")) return MS_EIO;
	/* likes go explicitly too, in case the database was opened without foreign keys */
	int rc = with_id(st, Q_TOKEN_LIKES_DELETE, name);
	if (!rc) rc = with_id(st, Q_TOKEN_DELETE, name);
	int gone = !rc && sqlite3_changes(st->db) > 0;
	if (rc || !gone) {
		exec_sql(st, "ROLLBACK");
		return rc ? rc : MS_ENOENT;
	}
	return exec_sql(st, "COMMIT");
}

int ms_store_token_verify(ms_store *st, const char *token, char *name_out, size_t name_len) {
	if (name_out && name_len) name_out[0] = 0;
	if (!token) return MS_EDENIED;
	while (*token == ' ') token++;
	if (strncasecmp(token, "Bearer ", 7) == 0) token += 7;
	while (*token == ' ') token++;
	size_t len = strlen(token);
	while (len > 0 && (token[len - 1] == ' ' || token[len - 1] == '\r' || token[len - 1] == '\n')) len--;
	if (len == 0 || len > 512) return MS_EDENIED;
	unsigned char h[SHA256_DIGEST_LENGTH];
	hash_token(token, len, h);
	sqlite3_stmt *s = stmt(st, Q_TOKEN_HASHES);
	if (!s) return MS_EIO;
	/* compare with every stored hash, without stopping early, so the time taken does not
	 * depend on which (or whether a) token matched */
	char match[MS_TOKEN_NAME_MAX + 1] = "";
	int64_t last_used = 0;
	int found = 0, step;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		const void *blob = sqlite3_column_blob(s, 1);
		int eq = sqlite3_column_bytes(s, 1) == (int)sizeof h && blob && CRYPTO_memcmp(blob, h, sizeof h) == 0;
		if (eq && !found) {
			const unsigned char *nm = sqlite3_column_text(s, 0);
			snprintf(match, sizeof match, "%s", nm ? (const char *)nm : "");
			last_used = sqlite3_column_int64(s, 2);
			found = 1;
		}
	}
	sqlite3_reset(s);
	if (step != SQLITE_DONE) return MS_EIO;
	if (!found) return MS_EDENIED;
	int64_t now = now_ms();
	if (now - last_used >= 60000 && (s = stmt(st, Q_TOKEN_USED))) {
		bind_text(s, 1, match);
		sqlite3_bind_int64(s, 2, now);
		exec_stmt(st, s); /* a failed bookkeeping write does not deny a valid token */
	}
	if (name_out && name_len) snprintf(name_out, name_len, "%s", match);
	return 0;
}

/* ---------------------------------------------------------------- likes */

static int exists(ms_store *st, int q, const char *a, const char *b) {
	sqlite3_stmt *s = stmt(st, q);
	if (!s) return MS_EIO;
	bind_text(s, 1, a);
	if (b) bind_text(s, 2, b);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : MS_EIO;
}

int ms_store_like(ms_store *st, const char *app_id, const char *token_name) {
	if (!app_id || !token_name) return MS_EINVAL;
	int rc = exists(st, Q_APP_EXISTS, app_id, NULL);
	if (rc <= 0) return rc ? rc : MS_ENOENT;
	rc = exists(st, Q_TOKEN_EXISTS, token_name, NULL);
	if (rc <= 0) return rc ? rc : MS_ENOENT;
	sqlite3_stmt *s = stmt(st, Q_LIKE);
	if (!s) return MS_EIO;
	bind_text(s, 1, app_id);
	bind_text(s, 2, token_name);
	sqlite3_bind_int64(s, 3, now_ms());
	return exec_stmt(st, s);
}

int ms_store_unlike(ms_store *st, const char *app_id, const char *token_name) {
	if (!app_id || !token_name) return MS_EINVAL;
	sqlite3_stmt *s = stmt(st, Q_UNLIKE);
	if (!s) return MS_EIO;
	bind_text(s, 1, app_id);
	bind_text(s, 2, token_name);
	return exec_stmt(st, s);
}

int64_t ms_store_like_count(ms_store *st, const char *app_id) {
	sqlite3_stmt *s = stmt(st, Q_LIKE_COUNT);
	if (!s) return MS_EIO;
	bind_text(s, 1, app_id);
	int64_t n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : MS_EIO;
	sqlite3_reset(s);
	return n;
}

int ms_store_liked(ms_store *st, const char *app_id, const char *token_name) {
	if (!app_id || !token_name) return MS_EINVAL;
	return exists(st, Q_LIKED, app_id, token_name);
}

int ms_store_likes_by(ms_store *st, const char *token_name, char ***ids, size_t *n) {
	*ids = NULL;
	*n = 0;
	sqlite3_stmt *s = stmt(st, Q_LIKES_BY);
	if (!s) return MS_EIO;
	bind_text(s, 1, token_name);
	size_t cap = 0;
	int rc = 0, step;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 8;
			char **nv = realloc(*ids, nc * sizeof *nv);
			if (!nv) { rc = MS_ENOMEM; break; }
			*ids = nv;
			cap = nc;
		}
		if (!((*ids)[*n] = col_dup(s, 0))) { rc = MS_ENOMEM; break; }
		(*n)++;
	}
	if (!rc && step != SQLITE_DONE) rc = MS_EIO;
	sqlite3_reset(s);
	if (rc) {
		for (size_t i = 0; i < *n; i++) free((*ids)[i]);
		free(*ids);
		*ids = NULL;
		*n = 0;
	}
	return rc;
}
