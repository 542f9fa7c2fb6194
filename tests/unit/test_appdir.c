/* tests/unit/test_appdir.c: app discovery, loading, rescans and the watcher, in temp dirs. */
#include <uv.h>

#include "host/appdir.h"
#include "tests/testlib.h"

TEST_SUITE("appdir")

static char root[64];

static void mkroot(void) {
	snprintf(root, sizeof root, "/tmp/ms_appdir_XXXXXX");
	CHECK(mkdtemp(root) != NULL);
}

static void rmroot(void) {
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", root);
	if (system(cmd)) {}
}

/* Writes root/rel (creating parent folders). */
static void put(const char *rel, const char *text) {
	char path[512];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	for (char *p = path + strlen(root) + 1; *p; p++) {
		if (*p != '/') continue;
		*p = 0;
		mkdir(path, 0755);
		*p = '/';
	}
	FILE *f = fopen(path, "w");
	CHECK_MSG(f != NULL, "fopen %s", path);
	fputs(text, f);
	fclose(f);
}

static void del(const char *rel) {
	char path[512];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	CHECK(unlink(path) == 0);
}

static const char *card(const char *extra) {
	static char buf[512];
	snprintf(buf, sizeof buf, "---\ntitle: An app\nsdk: lua\n%s---\n# Hi\n", extra ? extra : "");
	return buf;
}

static ms_appsrc *scan_one(ms_appset *set, const char *id) {
	const char *roots[] = {root};
	CHECK_INT(ms_appdir_scan(roots, 1, NULL, set), 0);
	return ms_appset_find(set, id);
}

TEST(discovery_and_files) {
	mkroot();
	put("alice/hello/README.md", card(NULL));
	put("alice/hello/app.lua", "return 1\n");
	put("alice/hello/lib/util.lua", "return {}\n");
	put("alice/hello/lib/deep/x.lua", "return 2\n");
	put("alice/hello/notes.txt", "not lua\n");
	put("alice/hello/.hidden.lua", "secret\n");
	put("bob/world/README.md", card("app_file: src/main.lua\n"));
	put("bob/world/src/main.lua", "return 3\n");
	put("bob/-bad/README.md", card(NULL)); /* invalid NAME: ignored */
	put("bob/.git/README.md", card(NULL));
	put("stray.txt", "x");
	ms_appset set;
	const char *roots[] = {root};
	CHECK_INT(ms_appdir_scan(roots, 1, NULL, &set), 0);
	CHECK_INT(set.napps, 2);
	CHECK_STR(set.apps[0]->id, "alice/hello");
	CHECK_STR(set.apps[1]->id, "bob/world");
	ms_appsrc *a = set.apps[0];
	CHECK_INT(a->status, MS_APP_OK);
	CHECK(a->error == NULL);
	CHECK_STR(a->owner, "alice");
	CHECK_STR(a->name, "hello");
	CHECK(a->has_card);
	CHECK_STR(a->card.title, "An app");
	CHECK_INT(a->nfiles, 3);
	CHECK_STR(a->files[0].path, "app.lua");
	CHECK_STR(a->files[1].path, "lib/deep/x.lua");
	CHECK_STR(a->files[2].path, "lib/util.lua");
	CHECK(a->main == &a->files[0]);
	CHECK_STR(a->main->data, "return 1\n");
	CHECK(ms_appsrc_file(a, "lib/util.lua") != NULL);
	CHECK(ms_appsrc_file(a, ".hidden.lua") == NULL);
	CHECK(ms_appsrc_file(a, "notes.txt") == NULL);
	CHECK_INT(strlen(a->revision), 64);
	ms_appsrc *b = set.apps[1];
	CHECK_INT(b->status, MS_APP_OK);
	CHECK_STR(b->main->path, "src/main.lua");
	CHECK(ms_appset_find(&set, "bob/world") == b);
	CHECK(ms_appset_find(&set, "bob/nope") == NULL);
	/* the revision is a function of content: a fresh scan agrees */
	ms_appset again;
	CHECK_INT(ms_appdir_scan(roots, 1, NULL, &again), 0);
	CHECK(again.apps[0] != a);
	CHECK_STR(again.apps[0]->revision, a->revision);
	CHECK(strcmp(again.apps[0]->revision, b->revision) != 0);
	ms_appset_free(&again);
	ms_appset_free(&set);
	rmroot();
}

TEST(missing_app_file_and_bad_card) {
	mkroot();
	put("o/noapp/README.md", card(NULL));
	put("o/badcard/README.md", "---\ntitle: x\ncolorFrom: orange\n---\n");
	put("o/badcard/app.lua", "return 1\n");
	put("o/noreadme/app.lua", "return 1\n");
	put("o/custom/README.md", card("app_file: main.lua\n"));
	put("o/custom/app.lua", "return 1\n");
	ms_appset set;
	ms_appsrc *a = scan_one(&set, "o/noapp");
	CHECK(a != NULL);
	CHECK_INT(a->status, MS_APP_NO_APP_FILE);
	CHECK_STR(a->error, "app.lua not found: create it or set app_file in README.md");
	CHECK(a->main == NULL);
	CHECK(a->has_card);
	a = ms_appset_find(&set, "o/badcard");
	CHECK_INT(a->status, MS_APP_CONFIG_ERROR);
	CHECK_MSG(strstr(a->error, "README.md line 3: colorFrom must be one of") == a->error, "%s", a->error);
	CHECK(!a->has_card);
	CHECK(a->main == NULL);
	a = ms_appset_find(&set, "o/noreadme");
	CHECK_INT(a->status, MS_APP_CONFIG_ERROR);
	CHECK(strstr(a->error, "README.md not found") != NULL);
	a = ms_appset_find(&set, "o/custom");
	CHECK_INT(a->status, MS_APP_NO_APP_FILE);
	CHECK_STR(a->error, "main.lua not found: create it or set app_file in README.md");
	CHECK_STR(ms_app_status_name(a->status), "NO_APP_FILE");
	/* cardData for the store: normalised when the card parsed */
	char *cj = ms_appsrc_card_json(a);
	json_t *j = json_loads(cj, 0, NULL);
	CHECK_STR(json_string_value(json_object_get(j, "app_file")), "main.lua");
	CHECK_INT(ms_appsrc_private(a), 0);
	CHECK_INT(json_integer_value(json_object_get(j, "timeout")), 60);
	json_decref(j);
	free(cj);
	ms_appset_free(&set);
	rmroot();
}

TEST(private_survives_bad_card) {
	mkroot();
	put("o/p/README.md", "---\ntitle: Secret\nprivate: true\ncolorFrom: orange\n---\n");
	put("o/p/app.lua", "return 1\n");
	put("o/q/README.md", "---\ntitle: Typo\nprivate: yes please\n---\n");
	put("o/q/app.lua", "return 1\n");
	put("o/r/README.md", "---\nbroken: [\n---\n");
	put("o/r/app.lua", "return 1\n");
	ms_appset set;
	const char *ids[] = {"o/p", "o/q", "o/r"};
	const char *want_private[] = {"true", "true", NULL};
	CHECK(scan_one(&set, "o/p") != NULL);
	for (int i = 0; i < 3; i++) {
		ms_appsrc *a = ms_appset_find(&set, ids[i]);
		CHECK_INT(a->status, MS_APP_CONFIG_ERROR);
		char *cj = ms_appsrc_card_json(a);
		CHECK(cj != NULL);
		json_t *j = json_loads(cj, 0, NULL);
		CHECK(json_is_object(j));
		json_t *p = json_object_get(j, "private");
		CHECK_INT(ms_appsrc_private(a), want_private[i] != NULL);
		if (want_private[i]) CHECK_MSG(json_is_true(p), "%s: %s", ids[i], cj);
		else CHECK_STR(cj, "{}");
		json_decref(j);
		free(cj);
	}
	ms_appset_free(&set);
	rmroot();
}

TEST(size_limits) {
	mkroot();
	put("o/big/README.md", card(NULL));
	put("o/big/app.lua", "return 1\n");
	char *big = malloc(MS_APP_MAX_FILE_BYTES + 2);
	memset(big, '-', MS_APP_MAX_FILE_BYTES + 1);
	big[MS_APP_MAX_FILE_BYTES + 1] = 0;
	put("o/big/huge.lua", big);
	free(big);
	ms_appset set;
	ms_appsrc *a = scan_one(&set, "o/big");
	CHECK_INT(a->status, MS_APP_CONFIG_ERROR);
	CHECK_MSG(strstr(a->error, "app too large: huge.lua") != NULL, "%s", a->error);
	ms_appset_free(&set);
	rmroot();
}

TEST(symlink_escape_refused) {
	mkroot();
	put("outside/secret.lua", "return 'secret'\n");
	put("o/app/README.md", card(NULL));
	put("o/app/app.lua", "return require 'mod'\n");
	put("o/app/real.lua", "return 1\n");
	char target[256], link[256];
	snprintf(target, sizeof target, "%s/outside/secret.lua", root);
	snprintf(link, sizeof link, "%s/o/app/mod.lua", root);
	CHECK(symlink(target, link) == 0);
	snprintf(link, sizeof link, "%s/o/app/alias.lua", root);
	CHECK(symlink("real.lua", link) == 0); /* inside the app: fine */
	snprintf(link, sizeof link, "%s/o/app/etc.lua", root);
	CHECK(symlink("/etc/passwd", link) == 0);
	/* an app whose app file escapes is a config error */
	put("o/evil/README.md", card(NULL));
	snprintf(link, sizeof link, "%s/o/evil/app.lua", root);
	CHECK(symlink(target, link) == 0);
	/* and one whose README escapes */
	put("o/evil2/app.lua", "return 1\n");
	snprintf(target, sizeof target, "%s/o/app/README.md", root);
	snprintf(link, sizeof link, "%s/o/evil2/README.md", root);
	CHECK(symlink(target, link) == 0);
	ms_appset set;
	ms_appsrc *a = scan_one(&set, "o/app");
	CHECK_INT(a->status, MS_APP_OK);
	CHECK(ms_appsrc_file(a, "mod.lua") == NULL);
	CHECK(ms_appsrc_file(a, "etc.lua") == NULL);
	CHECK(ms_appsrc_file(a, "alias.lua") != NULL);
	CHECK_STR(ms_appsrc_file(a, "alias.lua")->data, "return 1\n");
	CHECK(a->notes && strstr(a->notes, "mod.lua skipped") != NULL);
	for (size_t i = 0; i < a->nfiles; i++) CHECK(strstr(a->files[i].data, "secret") == NULL && strstr(a->files[i].data, "root:") == NULL);
	a = ms_appset_find(&set, "o/evil");
	CHECK_INT(a->status, MS_APP_CONFIG_ERROR);
	CHECK_MSG(strstr(a->error, "app.lua is a symlink that leads outside") != NULL, "%s", a->error);
	a = ms_appset_find(&set, "o/evil2");
	CHECK_INT(a->status, MS_APP_CONFIG_ERROR);
	CHECK_MSG(strstr(a->error, "README.md is a symlink") != NULL, "%s", a->error);
	ms_appset_free(&set);
	rmroot();
}

struct changes {
	char log[1024];
};

static void record(void *ud, ms_appdir_change kind, ms_appsrc *n, ms_appsrc *o) {
	struct changes *c = ud;
	const char *k = kind == MS_APPDIR_ADDED ? "+" : kind == MS_APPDIR_CHANGED ? "~" : "-";
	char line[256];
	snprintf(line, sizeof line, "%s%s ", k, n ? n->id : o->id);
	strncat(c->log, line, sizeof c->log - strlen(c->log) - 1);
	if (kind == MS_APPDIR_CHANGED) CHECK(n != o && strcmp(n->id, o->id) == 0);
}

TEST(rescan_diff) {
	mkroot();
	put("o/keep/README.md", card(NULL));
	put("o/keep/app.lua", "return 1\n");
	put("o/change/README.md", card(NULL));
	put("o/change/app.lua", "return 1\n");
	put("o/gone/README.md", card(NULL));
	put("o/gone/app.lua", "return 1\n");
	const char *roots[] = {root};
	ms_appset s1, s2, s3;
	CHECK_INT(ms_appdir_scan(roots, 1, NULL, &s1), 0);
	CHECK_INT(s1.napps, 3);
	ms_appsrc *held = ms_appsrc_ref(ms_appset_find(&s1, "o/change")); /* a call in flight */
	usleep(10000);
	put("o/change/lib.lua", "return 2\n");
	put("o/new/README.md", card(NULL));
	put("o/new/app.lua", "return 1\n");
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf %s/o/gone", root);
	CHECK(system(cmd) == 0);
	CHECK_INT(ms_appdir_scan(roots, 1, &s1, &s2), 0);
	/* an untouched app is shared, not re-read */
	CHECK(ms_appset_find(&s2, "o/keep") == ms_appset_find(&s1, "o/keep"));
	struct changes c = {{0}};
	CHECK_INT(ms_appset_diff(&s1, &s2, record, &c), 3);
	CHECK_STR(c.log, "~o/change -o/gone +o/new ");
	ms_appset_free(&s1);
	/* the held old version is intact after its set is gone */
	CHECK_INT(held->nfiles, 1);
	CHECK_STR(held->main->data, "return 1\n");
	CHECK(ms_appset_find(&s2, "o/change")->nfiles == 2);
	ms_appsrc_unref(held);
	/* touching a file without changing it: re-read (new mtime) but no change reported */
	usleep(10000);
	put("o/keep/app.lua", "return 1\n");
	/* a card that breaks is a change of status */
	put("o/new/README.md", "no front matter\n");
	CHECK_INT(ms_appdir_scan(roots, 1, &s2, &s3), 0);
	CHECK(ms_appset_find(&s3, "o/keep") != ms_appset_find(&s2, "o/keep"));
	c.log[0] = 0;
	CHECK_INT(ms_appset_diff(&s2, &s3, record, &c), 1);
	CHECK_STR(c.log, "~o/new ");
	CHECK_INT(ms_appset_find(&s3, "o/new")->status, MS_APP_CONFIG_ERROR);
	ms_appset_free(&s2);
	ms_appset_free(&s3);
	rmroot();
}

TEST(several_roots_first_wins) {
	mkroot();
	put("r1/o/a/README.md", card("title: first\n"));
	put("r1/o/a/app.lua", "return 1\n");
	put("r2/o/a/README.md", "---\ntitle: second\n---\n");
	put("r2/o/a/app.lua", "return 1\n");
	put("r2/o/b/README.md", card(NULL));
	put("r2/o/b/app.lua", "return 1\n");
	char r1[128], r2[128], r3[128];
	snprintf(r1, sizeof r1, "%s/r1", root);
	snprintf(r2, sizeof r2, "%s/r2", root);
	snprintf(r3, sizeof r3, "%s/does-not-exist", root);
	const char *roots[] = {r1, r3, r2};
	ms_appset set;
	CHECK_INT(ms_appdir_scan(roots, 3, NULL, &set), 0);
	CHECK_INT(set.napps, 2);
	CHECK_STR(ms_appset_find(&set, "o/a")->root, r1);
	CHECK(ms_appset_find(&set, "o/b") != NULL);
	ms_appset_free(&set);
	rmroot();
}

TEST(names) {
	CHECK(ms_app_name_valid("a"));
	CHECK(ms_app_name_valid("Org_1.x-y"));
	CHECK(!ms_app_name_valid(""));
	CHECK(!ms_app_name_valid(".x"));
	CHECK(!ms_app_name_valid("-x"));
	CHECK(!ms_app_name_valid("a b"));
	CHECK(!ms_app_name_valid("a/b"));
	CHECK(!ms_app_name_valid(NULL));
}

struct watch_state {
	struct changes c;
	int events;
	ms_appdir_watch *w;
};

static void on_change(void *ud, ms_appdir_change kind, ms_appsrc *n, ms_appsrc *o) {
	struct watch_state *s = ud;
	record(&s->c, kind, n, o);
	s->events++;
}

static void run_until(uv_loop_t *loop, int *events, int want, int ms) {
	for (int i = 0; i < ms / 10 && *events < want; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(10000);
	}
}

TEST_T(watch, 30) {
	mkroot();
	put("o/one/README.md", card(NULL));
	put("o/one/app.lua", "return 1\n");
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct watch_state s = {0};
	const char *roots[] = {root};
	CHECK_INT(ms_appdir_watch_start(&s.w, &loop, roots, 1, 100, on_change, &s), 0);
	CHECK_INT(s.events, 1); /* initial apps reported before start returns */
	CHECK_STR(s.c.log, "+o/one ");
	CHECK_INT(ms_appdir_watch_apps(s.w)->napps, 1);
	s.c.log[0] = 0;
	s.events = 0;
	put("o/two/README.md", card(NULL));
	put("o/two/app.lua", "return 1\n");
	run_until(&loop, &s.events, 1, 5000);
	CHECK_STR(s.c.log, "+o/two ");
	s.c.log[0] = 0;
	s.events = 0;
	usleep(10000);
	put("o/one/app.lua", "return 'v2'\n"); /* nested change: found by the poll timer */
	run_until(&loop, &s.events, 1, 5000);
	CHECK_STR(s.c.log, "~o/one ");
	CHECK_STR(ms_appset_find(ms_appdir_watch_apps(s.w), "o/one")->main->data, "return 'v2'\n");
	s.c.log[0] = 0;
	s.events = 0;
	del("o/two/app.lua");
	run_until(&loop, &s.events, 1, 5000);
	CHECK_STR(s.c.log, "~o/two ");
	CHECK_INT(ms_appset_find(ms_appdir_watch_apps(s.w), "o/two")->status, MS_APP_NO_APP_FILE);
	s.c.log[0] = 0;
	s.events = 0;
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf %s/o/two", root);
	CHECK(system(cmd) == 0);
	CHECK_INT(ms_appdir_watch_rescan(s.w), 1); /* forced rescan sees it at once */
	CHECK_STR(s.c.log, "-o/two ");
	ms_appdir_watch_stop(s.w);
	CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
	CHECK_INT(uv_loop_close(&loop), 0);
	rmroot();
}
