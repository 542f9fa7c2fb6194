/* tests/unit/test_store.c: the SQLite metadata store. */
#include <sqlite3.h>

#include "host/store.h"
#include "tests/testlib.h"

TEST_SUITE("store")

static char tmpdir[64];

static ms_store *open_tmp(void) {
	snprintf(tmpdir, sizeof tmpdir, "/tmp/ms_store_XXXXXX");
	CHECK(mkdtemp(tmpdir) != NULL);
	ms_store *st = NULL;
	char err[512];
	char data[128];
	snprintf(data, sizeof data, "%s/data/sub", tmpdir); /* created on open */
	int rc = ms_store_open(&st, data, err, sizeof err);
	CHECK_MSG(rc == 0, "open: %s", err);
	return st;
}

static void rm_tmp(void) {
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	if (system(cmd)) {}
}

static int sql_int(const char *path, const char *sql) {
	sqlite3 *db;
	CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
	sqlite3_stmt *s;
	CHECK(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK);
	CHECK(sqlite3_step(s) == SQLITE_ROW);
	int v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

TEST(fresh_db_wal_and_version) {
	ms_store *st = open_tmp();
	CHECK_INT(ms_store_schema_version(st), MS_STORE_SCHEMA_VERSION);
	CHECK_INT(ms_store_health(st), 0);
	char path[256];
	snprintf(path, sizeof path, "%s/data/sub/moonspace.db", tmpdir);
	struct stat sb;
	CHECK(stat(path, &sb) == 0);
	/* WAL is a persistent property of the file: another connection sees it */
	sqlite3 *db;
	CHECK(sqlite3_open(path, &db) == SQLITE_OK);
	sqlite3_stmt *s;
	CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK);
	CHECK(sqlite3_step(s) == SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	sqlite3_close(db);
	CHECK_INT(ms_store_app_upsert(st, "a/b", "{}", "RUNNING", NULL, "r1"), 0);
	ms_store_close(st);
	/* clean close checkpoints: the -wal file is empty or gone and the data is in the db */
	char wal[300];
	snprintf(wal, sizeof wal, "%s-wal", path);
	CHECK(stat(wal, &sb) != 0 || sb.st_size == 0);
	CHECK_INT(sql_int(path, "SELECT count(*) FROM apps"), 1);
	CHECK_INT(sql_int(path, "PRAGMA user_version"), MS_STORE_SCHEMA_VERSION);
	/* reopen keeps data and version */
	char err[256];
	CHECK_INT(ms_store_open_file(&st, path, err, sizeof err), 0);
	ms_store_app a;
	CHECK_INT(ms_store_get(st, "a/b", &a), 0);
	CHECK_STR(a.revision, "r1");
	ms_store_app_free(&a);
	ms_store_close(st);
	rm_tmp();
}

/* The schema as moonspace wrote it at version 1 (apps + tokens), to prove an old
 * database upgrades in place and keeps its rows. */
TEST(migrate_from_v1) {
	snprintf(tmpdir, sizeof tmpdir, "/tmp/ms_store_XXXXXX");
	CHECK(mkdtemp(tmpdir) != NULL);
	char path[256];
	snprintf(path, sizeof path, "%s/moonspace.db", tmpdir);
	sqlite3 *db;
	CHECK(sqlite3_open(path, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db,
			   "CREATE TABLE apps (id TEXT PRIMARY KEY, card_json TEXT NOT NULL DEFAULT '{}',"
			   " status TEXT NOT NULL DEFAULT 'BUILDING', error TEXT, revision TEXT,"
			   " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
			   "CREATE TABLE tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, hash BLOB NOT NULL,"
			   " created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL DEFAULT 0);"
			   "INSERT INTO apps VALUES ('old/app', '{\"title\":\"Old\"}', 'RUNNING', NULL, 'rev0', 1000, 2000);"
			   "PRAGMA user_version = 1;",
			   NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	ms_store *st;
	char err[256];
	CHECK_MSG(ms_store_open_file(&st, path, err, sizeof err) == 0, "%s", err);
	CHECK_INT(ms_store_schema_version(st), MS_STORE_SCHEMA_VERSION);
	ms_store_app a;
	CHECK_INT(ms_store_get(st, "old/app", &a), 0);
	CHECK_INT(a.created_at, 1000);
	CHECK_INT(a.updated_at, 2000);
	CHECK_INT(a.last_run_at, 0); /* column added by migration 3 */
	ms_store_app_free(&a);
	/* tables of migration 2 work */
	CHECK_INT(ms_store_record_run(st, "old/app", 5, 1), 0);
	char tok[MS_TOKEN_LEN];
	CHECK_INT(ms_store_token_add(st, "alice", tok), 0);
	CHECK_INT(ms_store_like(st, "old/app", "alice"), 0);
	CHECK_INT(ms_store_like_count(st, "old/app"), 1);
	ms_store_close(st);
	rm_tmp();
}

TEST(newer_or_garbage_refused) {
	snprintf(tmpdir, sizeof tmpdir, "/tmp/ms_store_XXXXXX");
	CHECK(mkdtemp(tmpdir) != NULL);
	char path[256], err[256];
	snprintf(path, sizeof path, "%s/new.db", tmpdir);
	sqlite3 *db;
	CHECK(sqlite3_open(path, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	ms_store *st = (ms_store *)1;
	CHECK_INT(ms_store_open_file(&st, path, err, sizeof err), MS_EUNSUPPORTED);
	CHECK(st == NULL);
	CHECK_MSG(strstr(err, "newer") != NULL, "%s", err);
	snprintf(path, sizeof path, "%s/junk.db", tmpdir);
	FILE *f = fopen(path, "w");
	for (int i = 0; i < 200; i++) fputs("this is not a database file at all. ", f);
	fclose(f);
	CHECK_INT(ms_store_open_file(&st, path, err, sizeof err), MS_EFORMAT);
	CHECK_MSG(strstr(err, "not an SQLite database") != NULL, "%s", err);
	rm_tmp();
}

TEST(upsert_keeps_created_at) {
	ms_store *st = open_tmp();
	CHECK_INT(ms_store_app_upsert(st, "o/n", "{\"title\":\"T\"}", "BUILDING", NULL, "r1"), 0);
	ms_store_app a;
	CHECK_INT(ms_store_get(st, "o/n", &a), 0);
	int64_t created = a.created_at, updated = a.updated_at;
	CHECK(created > 1700000000000LL);
	CHECK_STR(a.status, "BUILDING");
	CHECK(a.error == NULL);
	ms_store_app_free(&a);
	usleep(20000);
	/* same card and revision: a status change is not an edit */
	CHECK_INT(ms_store_app_upsert(st, "o/n", "{\"title\":\"T\"}", "RUNNING", NULL, "r1"), 0);
	CHECK_INT(ms_store_get(st, "o/n", &a), 0);
	CHECK_INT(a.updated_at, updated);
	CHECK_STR(a.status, "RUNNING");
	ms_store_app_free(&a);
	/* new revision: updated_at moves, created_at stays */
	CHECK_INT(ms_store_app_upsert(st, "o/n", "{\"title\":\"T\"}", "CONFIG_ERROR", "README.md: bad", "r2"), 0);
	CHECK_INT(ms_store_get(st, "o/n", &a), 0);
	CHECK_INT(a.created_at, created);
	CHECK(a.updated_at > updated);
	CHECK_STR(a.error, "README.md: bad");
	ms_store_app_free(&a);
	CHECK_INT(ms_store_app_set_status(st, "o/n", "RUNTIME_ERROR", "boom"), 0);
	CHECK_INT(ms_store_get(st, "o/n", &a), 0);
	CHECK_STR(a.status, "RUNTIME_ERROR");
	CHECK_STR(a.error, "boom");
	ms_store_app_free(&a);
	CHECK_INT(ms_store_app_set_status(st, "no/such", "RUNNING", NULL), MS_ENOENT);
	CHECK_INT(ms_store_app_upsert(st, "o/x", "[1,2]", "RUNNING", NULL, NULL), MS_EINVAL);
	CHECK_INT(ms_store_app_upsert(st, "o/x", "{bad", "RUNNING", NULL, NULL), MS_EINVAL);
	/* strings with quotes are data, never SQL */
	CHECK_INT(ms_store_app_upsert(st, "o/'; DROP TABLE apps; --", "{}", "RUNNING", "it's", NULL), 0);
	CHECK_INT(ms_store_get(st, "o/'; DROP TABLE apps; --", &a), 0);
	CHECK_STR(a.error, "it's");
	ms_store_app_free(&a);
	CHECK_INT(ms_store_app_remove(st, "o/n"), 0);
	CHECK_INT(ms_store_get(st, "o/n", &a), MS_ENOENT);
	CHECK_INT(ms_store_app_remove(st, "o/n"), MS_ENOENT);
	ms_store_close(st);
	rm_tmp();
}

TEST(stats_avg_p95) {
	ms_store *st = open_tmp();
	CHECK_INT(ms_store_app_upsert(st, "o/n", "{}", "RUNNING", NULL, NULL), 0);
	ms_store_stats s;
	CHECK_INT(ms_store_get_stats(st, "o/n", &s), 0);
	CHECK_INT(s.runs, 0);
	CHECK_NEAR(s.avg_ms, 0, 0);
	CHECK_NEAR(s.p95_ms, 0, 0);
	/* durations 1..100 in a shuffled order: mean 50.5, nearest-rank p95 = 95 */
	for (int i = 0; i < 100; i++) {
		int d = (i * 37) % 100 + 1;
		CHECK_INT(ms_store_record_run(st, "o/n", d, d % 10 != 0), 0);
	}
	CHECK_INT(ms_store_get_stats(st, "o/n", &s), 0);
	CHECK_INT(s.runs, 100);
	CHECK_INT(s.errors, 10);
	CHECK_NEAR(s.avg_ms, 50.5, 1e-9);
	CHECK_NEAR(s.recent_avg_ms, 50.5, 1e-9);
	CHECK_NEAR(s.p95_ms, 95, 1e-9);
	CHECK(s.last_run_at > 0);
	CHECK_INT(ms_store_record_run(st, "no/such", 1, 1), MS_ENOENT);
	CHECK_INT(ms_store_record_run(st, "o/n", -1, 1), MS_EINVAL);
	CHECK_INT(ms_store_get_stats(st, "no/such", &s), MS_ENOENT);
	ms_store_app a;
	CHECK_INT(ms_store_get(st, "o/n", &a), 0);
	CHECK_INT(a.runs, 100);
	CHECK(a.last_run_at > 0);
	ms_store_app_free(&a);
	ms_store_close(st);
	rm_tmp();
}

TEST(stats_window_pruned) {
	ms_store *st = open_tmp();
	CHECK_INT(ms_store_app_upsert(st, "o/n", "{}", "RUNNING", NULL, NULL), 0);
	/* 200 slow runs, then MS_STORE_RECENT_RUNS fast ones: the window only sees the fast
	 * ones, the all-time figures see everything */
	for (int i = 0; i < 200; i++) CHECK_INT(ms_store_record_run(st, "o/n", 1000, 1), 0);
	for (int i = 0; i < MS_STORE_RECENT_RUNS; i++) CHECK_INT(ms_store_record_run(st, "o/n", 10, 1), 0);
	ms_store_stats s;
	CHECK_INT(ms_store_get_stats(st, "o/n", &s), 0);
	CHECK_INT(s.runs, 200 + MS_STORE_RECENT_RUNS);
	CHECK_NEAR(s.p95_ms, 10, 1e-9);
	CHECK_NEAR(s.recent_avg_ms, 10, 1e-9);
	CHECK_NEAR(s.avg_ms, (200.0 * 1000 + MS_STORE_RECENT_RUNS * 10.0) / (200 + MS_STORE_RECENT_RUNS), 1e-6);
	char path[256];
	snprintf(path, sizeof path, "%s/data/sub/moonspace.db", tmpdir);
	CHECK_INT(sql_int(path, "SELECT count(*) FROM runs"), MS_STORE_RECENT_RUNS);
	/* removing the app drops its statistics */
	CHECK_INT(ms_store_app_remove(st, "o/n"), 0);
	CHECK_INT(ms_store_app_upsert(st, "o/n", "{}", "RUNNING", NULL, NULL), 0);
	CHECK_INT(ms_store_get_stats(st, "o/n", &s), 0);
	CHECK_INT(s.runs, 0);
	ms_store_close(st);
	rm_tmp();
}

TEST(tokens) {
	ms_store *st = open_tmp();
	char tok[MS_TOKEN_LEN], tok2[MS_TOKEN_LEN], name[MS_TOKEN_NAME_MAX + 1];
	CHECK_INT(ms_store_token_add(st, "alice", tok), 0);
	/* "ms_" and 64 lower-case hex digits (32 random bytes) */
	CHECK_INT(strlen(tok), 67);
	CHECK(strncmp(tok, "ms_", 3) == 0);
	CHECK_INT(strspn(tok + 3, "0123456789abcdef"), 64);
	CHECK_INT(ms_store_token_add(st, "bob", tok2), 0);
	CHECK(strcmp(tok, tok2) != 0);
	CHECK_INT(ms_store_token_add(st, "alice", tok2), MS_EEXISTS);
	CHECK_INT(ms_store_token_add(st, "bad name", tok2), MS_EINVAL);
	CHECK_INT(ms_store_token_add(st, "", tok2), MS_EINVAL);
	/* only the hash is stored */
	char path[256];
	snprintf(path, sizeof path, "%s/data/sub/moonspace.db", tmpdir);
	ms_store_close(st);
	size_t len;
	char *raw = test_read_file(path, &len);
	CHECK(raw != NULL);
	CHECK(memmem(raw, len, tok + 3, 20) == NULL);
	free(raw);
	char err[256];
	CHECK_INT(ms_store_open_file(&st, path, err, sizeof err), 0);
	CHECK_INT(ms_store_token_verify(st, tok, name, sizeof name), 0);
	CHECK_STR(name, "alice");
	char bearer[100];
	snprintf(bearer, sizeof bearer, "Bearer %s", tok);
	CHECK_INT(ms_store_token_verify(st, bearer, name, sizeof name), 0);
	CHECK_STR(name, "alice");
	CHECK_INT(ms_store_token_verify(st, tok2, name, sizeof name), MS_EDENIED); /* was never stored */
	char wrong[MS_TOKEN_LEN];
	memcpy(wrong, tok, sizeof wrong);
	wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
	CHECK_INT(ms_store_token_verify(st, wrong, NULL, 0), MS_EDENIED);
	CHECK_INT(ms_store_token_verify(st, "", NULL, 0), MS_EDENIED);
	CHECK_INT(ms_store_token_verify(st, NULL, NULL, 0), MS_EDENIED);
	ms_store_token *t;
	size_t n;
	CHECK_INT(ms_store_token_list(st, &t, &n), 0);
	CHECK_INT(n, 2);
	CHECK_STR(t[0].name, "alice");
	CHECK(t[0].last_used_at > 0);
	CHECK_STR(t[1].name, "bob");
	CHECK_INT(t[1].last_used_at, 0);
	ms_store_tokens_free(t, n);
	CHECK_INT(ms_store_token_remove(st, "alice"), 0);
	CHECK_INT(ms_store_token_remove(st, "alice"), MS_ENOENT);
	CHECK_INT(ms_store_token_verify(st, tok, NULL, 0), MS_EDENIED);
	CHECK_INT(ms_store_token_list(st, &t, &n), 0);
	CHECK_INT(n, 1);
	ms_store_tokens_free(t, n);
	ms_store_close(st);
	rm_tmp();
}

TEST(likes) {
	ms_store *st = open_tmp();
	char tok[MS_TOKEN_LEN];
	CHECK_INT(ms_store_token_add(st, "alice", tok), 0);
	CHECK_INT(ms_store_token_add(st, "bob", tok), 0);
	CHECK_INT(ms_store_app_upsert(st, "o/a", "{}", "RUNNING", NULL, NULL), 0);
	CHECK_INT(ms_store_app_upsert(st, "o/b", "{}", "RUNNING", NULL, NULL), 0);
	CHECK_INT(ms_store_like(st, "o/a", "alice"), 0);
	CHECK_INT(ms_store_like(st, "o/a", "alice"), 0); /* idempotent */
	CHECK_INT(ms_store_like_count(st, "o/a"), 1);
	CHECK_INT(ms_store_like(st, "o/a", "bob"), 0);
	CHECK_INT(ms_store_like(st, "o/b", "bob"), 0);
	CHECK_INT(ms_store_like_count(st, "o/a"), 2);
	CHECK_INT(ms_store_liked(st, "o/a", "alice"), 1);
	CHECK_INT(ms_store_liked(st, "o/b", "alice"), 0);
	CHECK_INT(ms_store_like(st, "no/such", "alice"), MS_ENOENT);
	CHECK_INT(ms_store_like(st, "o/a", "carol"), MS_ENOENT);
	char **ids;
	size_t n;
	CHECK_INT(ms_store_likes_by(st, "bob", &ids, &n), 0);
	CHECK_INT(n, 2);
	CHECK_STR(ids[0], "o/a");
	CHECK_STR(ids[1], "o/b");
	for (size_t i = 0; i < n; i++) free(ids[i]);
	free(ids);
	CHECK_INT(ms_store_unlike(st, "o/a", "alice"), 0);
	CHECK_INT(ms_store_unlike(st, "o/a", "alice"), 0);
	CHECK_INT(ms_store_like_count(st, "o/a"), 1);
	/* likes survive an app's removal and return with it */
	CHECK_INT(ms_store_app_remove(st, "o/a"), 0);
	CHECK_INT(ms_store_app_upsert(st, "o/a", "{}", "RUNNING", NULL, NULL), 0);
	CHECK_INT(ms_store_like_count(st, "o/a"), 1);
	/* removing a token removes its likes */
	CHECK_INT(ms_store_token_remove(st, "bob"), 0);
	CHECK_INT(ms_store_like_count(st, "o/a"), 0);
	CHECK_INT(ms_store_like_count(st, "o/b"), 0);
	ms_store_close(st);
	rm_tmp();
}

static void ids_of(ms_store *st, const ms_store_query *q, char *out, size_t outlen, int64_t *total) {
	ms_store_app *a;
	size_t n;
	CHECK_INT(ms_store_list(st, q, &a, &n, total), 0);
	out[0] = 0;
	for (size_t i = 0; i < n; i++) {
		strncat(out, a[i].id, outlen - strlen(out) - 1);
		if (i + 1 < n) strncat(out, ",", outlen - strlen(out) - 1);
	}
	ms_store_apps_free(a, n);
}

TEST(list_filters_sorts) {
	ms_store *st = open_tmp();
	CHECK_INT(ms_store_app_upsert(st, "zed/zz", "{\"title\":\"Zulu\",\"tags\":[\"Demo\",\"text\"],\"pinned\":true}", "RUNNING", NULL, "1"), 0);
	usleep(5000);
	CHECK_INT(ms_store_app_upsert(st, "amy/chat", "{\"title\":\"Chatty\",\"short_description\":\"talk 100% of the time\",\"tags\":[\"chat\"]}", "RUNNING", NULL, "1"), 0);
	usleep(5000);
	CHECK_INT(ms_store_app_upsert(st, "bob/tool", "{\"title\":\"Toolkit\",\"tags\":[\"text\"]}", "RUNNING", NULL, "1"), 0);
	usleep(5000);
	CHECK_INT(ms_store_app_upsert(st, "bob/secret", "{\"title\":\"Hidden\",\"private\":true,\"tags\":[\"text\"]}", "RUNNING", NULL, "1"), 0);
	char tok[MS_TOKEN_LEN];
	CHECK_INT(ms_store_token_add(st, "u1", tok), 0);
	CHECK_INT(ms_store_token_add(st, "u2", tok), 0);
	CHECK_INT(ms_store_like(st, "bob/tool", "u1"), 0);
	CHECK_INT(ms_store_like(st, "bob/tool", "u2"), 0);
	CHECK_INT(ms_store_like(st, "amy/chat", "u1"), 0);
	char ids[512];
	int64_t total = -1;
	/* everything by name, pinned first */
	ids_of(st, NULL, ids, sizeof ids, &total);
	CHECK_STR(ids, "zed/zz,amy/chat,bob/secret,bob/tool");
	CHECK_INT(total, 4);
	ms_store_query q = {0};
	ids_of(st, &q, ids, sizeof ids, &total);
	CHECK_STR(ids, "zed/zz,amy/chat,bob/tool"); /* private left out */
	CHECK_INT(total, 3);
	q.sort = MS_STORE_SORT_LIKES;
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "zed/zz,bob/tool,amy/chat");
	q.sort = MS_STORE_SORT_UPDATED;
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "zed/zz,bob/tool,amy/chat");
	usleep(5000);
	CHECK_INT(ms_store_record_run(st, "amy/chat", 3, 1), 0); /* activity moves it up */
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "zed/zz,amy/chat,bob/tool");
	/* search: title, description (with a literal %), tag, id; case-insensitive */
	q = (ms_store_query){.search = "tool"};
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "bob/tool");
	q.search = "100%";
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "amy/chat");
	q.search = "0%o"; /* % is literal: no match */
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "");
	q.search = "DEMO";
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "zed/zz");
	q.search = "bob/";
	q.include_private = 1;
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "bob/secret,bob/tool");
	/* tag filter */
	q = (ms_store_query){.tag = "text"};
	ids_of(st, &q, ids, sizeof ids, &total);
	CHECK_STR(ids, "zed/zz,bob/tool");
	q.tag = "demo";
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "zed/zz");
	q.tag = "te"; /* exact, not substring */
	ids_of(st, &q, ids, sizeof ids, NULL);
	CHECK_STR(ids, "");
	/* paging */
	q = (ms_store_query){.limit = 2, .offset = 1};
	ids_of(st, &q, ids, sizeof ids, &total);
	CHECK_STR(ids, "amy/chat,bob/tool");
	CHECK_INT(total, 3);
	/* fields come back */
	ms_store_app *a;
	size_t n;
	q = (ms_store_query){.search = "Zulu"};
	CHECK_INT(ms_store_list(st, &q, &a, &n, NULL), 0);
	CHECK_INT(n, 1);
	CHECK_INT(a[0].pinned, 1);
	CHECK_INT(a[0].private_, 0);
	CHECK(strstr(a[0].card_json, "Zulu") != NULL);
	ms_store_apps_free(a, n);
	ms_store_sort sort;
	CHECK_INT(ms_store_sort_parse("likes", &sort), 0);
	CHECK_INT(sort, MS_STORE_SORT_LIKES);
	CHECK_INT(ms_store_sort_parse("lastModified", &sort), 0);
	CHECK_INT(sort, MS_STORE_SORT_UPDATED);
	CHECK_INT(ms_store_sort_parse("bogus", &sort), MS_EINVAL);
	ms_store_close(st);
	rm_tmp();
}
