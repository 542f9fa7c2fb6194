/* tests/unit/test_settings.c: `moonspace serve` settings: defaults < config file <
 * MOONSPACE_* environment < flags, repeatable directories, clear errors. */
#include "host/settings.h"
#include "tests/testlib.h"

TEST_SUITE("settings")

/* A config file with text (at most 8 per test; remove_confs() deletes them). */
static char paths[8][32];
static int next;

static void remove_confs(void) {
	for (int i = 0; i < next && i < 8; i++) unlink(paths[i]);
}

static const char *write_conf(const char *text) {
	CHECK(next < 8);
	char *path = paths[next++];
	strcpy(path, "/tmp/ms-settings-XXXXXX");
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void clear_env(void) {
	unsetenv("MOONSPACE_PORT");
	unsetenv("MOONSPACE_APPS");
	unsetenv("MOONSPACE_ROOT_PATH");
	unsetenv("MOONSPACE_CONFIG");
	unsetenv("MOONSPACE_REQUIRE_TOKEN");
}

TEST(defaults) {
	clear_env();
	ms_settings c;
	char err[256] = "";
	ms_settings_init(&c, "/opt/ms/bin");
	char *argv[] = {"serve", "--config", (char *)write_conf("# nothing\n"), NULL};
	CHECK_INT(ms_settings_load(&c, 3, argv, err, sizeof err), 0);
	CHECK_STR(c.host, "127.0.0.1");
	CHECK_INT(c.port, 7860);
	CHECK_INT(c.n_apps, 1);
	CHECK_STR(c.apps[0], "apps");
	CHECK_STR(c.root_path, "");
	CHECK_INT(c.require_token, 0);
	ms_settings_free(&c);
	remove_confs();
}

TEST(file_then_env_then_flags) {
	clear_env();
	const char *conf = write_conf("port = 8001\napps = /a\napps = /b\nroot-path = demos/\nrequire-token = yes\n");
	ms_settings c;
	char err[256] = "";
	ms_settings_init(&c, ".");
	char *argv1[] = {"serve", "--config", (char *)conf, NULL};
	CHECK_INT(ms_settings_load(&c, 3, argv1, err, sizeof err), 0);
	CHECK_INT(c.port, 8001);
	CHECK_INT(c.n_apps, 2);
	CHECK_STR(c.apps[1], "/b");
	CHECK_STR(c.root_path, "/demos"); /* normalised: leading slash, no trailing one */
	CHECK_INT(c.require_token, 1);
	ms_settings_free(&c);

	setenv("MOONSPACE_PORT", "8002", 1);
	setenv("MOONSPACE_APPS", "/x:/y:/z", 1);
	ms_settings_init(&c, ".");
	CHECK_INT(ms_settings_load(&c, 3, argv1, err, sizeof err), 0);
	CHECK_INT(c.port, 8002);
	CHECK_INT(c.n_apps, 3);
	CHECK_STR(c.apps[2], "/z");
	ms_settings_free(&c);

	char *argv2[] = {"serve", "--config", (char *)conf, "--port", "8003", "--apps", "/only", "--no-require-token", NULL};
	ms_settings_init(&c, ".");
	CHECK_INT(ms_settings_load(&c, 8, argv2, err, sizeof err), 0);
	CHECK_INT(c.port, 8003);
	CHECK_INT(c.n_apps, 1); /* flags replace the list, they do not add to it */
	CHECK_STR(c.apps[0], "/only");
	CHECK_INT(c.require_token, 0);
	ms_settings_free(&c);
	clear_env();
	remove_confs();
}

TEST(errors_say_where_and_what) {
	clear_env();
	ms_settings c;
	char err[256] = "";
	const char *conf = write_conf("port = 80\nwhat = 1\n");
	char *argv[] = {"serve", "--config", (char *)conf, NULL};
	ms_settings_init(&c, ".");
	CHECK(ms_settings_load(&c, 3, argv, err, sizeof err) < 0);
	CHECK_MSG(strstr(err, ":2: unknown setting 'what'"), "%s", err);
	ms_settings_free(&c);

	char *bad_port[] = {"serve", "--config", (char *)write_conf(""), "--port", "70000", NULL};
	ms_settings_init(&c, ".");
	CHECK(ms_settings_load(&c, 5, bad_port, err, sizeof err) < 0);
	CHECK_MSG(strstr(err, "port must be an integer from 0 to 65535"), "%s", err);
	ms_settings_free(&c);

	char *unknown[] = {"serve", "--config", (char *)write_conf(""), "--nope", NULL};
	ms_settings_init(&c, ".");
	CHECK(ms_settings_load(&c, 4, unknown, err, sizeof err) < 0);
	CHECK_MSG(strstr(err, "unknown option '--nope'"), "%s", err);
	ms_settings_free(&c);

	setenv("MOONSPACE_REQUIRE_TOKEN", "maybe", 1);
	char *clean[] = {"serve", "--config", (char *)write_conf(""), NULL};
	ms_settings_init(&c, ".");
	CHECK(ms_settings_load(&c, 3, clean, err, sizeof err) < 0);
	CHECK_MSG(strstr(err, "MOONSPACE_REQUIRE_TOKEN") && strstr(err, "true or false"), "%s", err);
	ms_settings_free(&c);
	clear_env();
	remove_confs();
}

TEST(help_lists_every_setting) {
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ms_settings_usage(f);
	fclose(f);
	const char *names[] = {"--host", "--port", "--apps", "--mirror", "--data", "--web", "--root-path", "--require-token",
			       "--max-connections", "--max-body-mb", "--max-queue", "--timeout", "--memory", "--max-workers",
			       "--shutdown-grace", "--heartbeat", "--rescan-ms", "--model-idle", "--threads", "--access-log",
			       "--appworker", "--modelworker", "MOONSPACE_ROOT_PATH"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) CHECK_MSG(strstr(buf, names[i]), "help lacks %s", names[i]);
	free(buf);
}
