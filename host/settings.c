/* host/settings.c: the settings table and its three sources (file, environment, flags). */
#include "host/settings.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/ms.h"

enum setting_type { T_STR, T_INT, T_BOOL, T_DIRS };

struct setting {
	const char *name; /* flag without "--", file key; env is MOONSPACE_<NAME upper, - → _> */
	enum setting_type type;
	size_t offset;    /* into ms_settings */
	size_t count_off; /* T_DIRS: offset of the count */
	int min, max;     /* T_INT bounds */
	const char *arg;  /* placeholder in the usage */
	const char *help;
};

#define OFF(f) offsetof(ms_settings, f)
static const struct setting settings[] = {
	{"host", T_STR, OFF(host), 0, 0, 0, "ADDR", "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)"},
	{"port", T_INT, OFF(port), 0, 0, 65535, "N", "port to listen on (default 7860; 0 picks a free one and logs it)"},
	{"apps", T_DIRS, OFF(apps), OFF(n_apps), 0, 0, "DIR", "a directory of apps laid out OWNER/NAME/README.md; repeatable; replaces the default ./apps"},
	{"mirror", T_DIRS, OFF(mirror), OFF(n_mirror), 0, 0, "DIR", "a directory of model repos (ORG/NAME/files) to serve as a Hub mirror; repeatable"},
	{"data", T_STR, OFF(data), 0, 0, 0, "DIR", "where the SQLite store and other state live (default ./data)"},
	{"web", T_STR, OFF(web), 0, 0, 0, "DIR", "the web UI's files (default: web/ beside bin/)"},
	{"appworker", T_STR, OFF(appworker), 0, 0, 0, "PATH", "the app worker binary (default: moonspace-appworker beside this binary)"},
	{"modelworker", T_STR, OFF(modelworker), 0, 0, 0, "PATH", "the model worker binary (default: moonspace-modelworker beside this binary)"},
	{"root-path", T_STR, OFF(root_path), 0, 0, 0, "PATH", "URL prefix when served behind a reverse proxy at a sub-path, e.g. /demos"},
	{"require-token", T_BOOL, OFF(require_token), 0, 0, 1, NULL, "every app answers 401 without a valid token (see `moonspace token`)"},
	{"max-connections", T_INT, OFF(max_connections), 0, 1, 1000000, "N", "open connections at once; more get 503 (default 1024)"},
	{"max-body-mb", T_INT, OFF(max_body_mb), 0, 1, 4096, "MIB", "largest request body; larger gets 413 (default 16)"},
	{"max-queue", T_INT, OFF(max_queue), 0, 1, 1000000, "N", "calls waiting per app when its card sets no max_queue; more get 503 (default 64)"},
	{"timeout", T_INT, OFF(default_timeout), 0, 1, 86400, "SEC", "wall-clock limit per call when the card sets no timeout (default 60)"},
	{"memory", T_INT, OFF(default_memory), 0, 16, 65536, "MIB", "memory per app worker when the card sets no memory (default 256)"},
	{"max-workers", T_INT, OFF(max_workers), 0, 1, 256, "N", "upper bound on an app's concurrency (workers per app, default 8)"},
	{"shutdown-grace", T_INT, OFF(shutdown_grace), 0, 0, 3600, "SEC", "on SIGINT/SIGTERM, how long calls in flight may still run (default 10)"},
	{"heartbeat", T_INT, OFF(heartbeat), 0, 1, 3600, "SEC", "idle seconds before an SSE heartbeat (default 15)"},
	{"rescan-ms", T_INT, OFF(rescan_ms), 0, 50, 3600000, "MS", "how often the apps directories are checked for changes (default 1000)"},
	{"model-idle", T_INT, OFF(model_idle), 0, 1, 86400 * 7, "SEC", "an unused model worker is unloaded after this (default 300)"},
	{"threads", T_INT, OFF(threads), 0, 0, 256, "N", "threads per model worker (default: cores - 1, at least 1)"},
	{"access-log", T_BOOL, OFF(access_log), 0, 0, 1, NULL, "one log line per request (default on; --no-access-log turns it off)"},
};
#undef OFF

int ms_exe_dir(char *buf, size_t len) {
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	if (n <= 0) return MS_EIO;
	buf[n] = 0;
	char *slash = strrchr(buf, '/');
	if (slash) *slash = 0;
	return 0;
}

void ms_settings_find_dir(const char *exe_dir, const char *name, char *out, size_t len) {
	struct stat st;
	snprintf(out, len, "%s/../%s", exe_dir ? exe_dir : ".", name);
	if (stat(out, &st) == 0) return;
#ifdef MS_SOURCE_DIR
	snprintf(out, len, "%s/%s", MS_SOURCE_DIR, name);
	if (stat(out, &st) == 0) return;
#endif
	snprintf(out, len, "%s/../%s", exe_dir ? exe_dir : ".", name);
}

static char *xstrdup(const char *s) {
	char *d = strdup(s);
	if (!d) { perror("strdup"); _exit(70); }
	return d;
}

void ms_settings_init(ms_settings *c, const char *exe_dir) {
	memset(c, 0, sizeof *c);
	char path[PATH_MAX];
	c->host = xstrdup("127.0.0.1");
	c->port = 7860;
	c->apps[c->n_apps++] = xstrdup("apps");
	c->data = xstrdup("data");
	ms_settings_find_dir(exe_dir, "web", path, sizeof path);
	c->web = xstrdup(path);
	c->root_path = xstrdup("");
	snprintf(path, sizeof path, "%s/moonspace-appworker", exe_dir ? exe_dir : ".");
	c->appworker = xstrdup(path);
	snprintf(path, sizeof path, "%s/moonspace-modelworker", exe_dir ? exe_dir : ".");
	c->modelworker = xstrdup(path);
	c->max_connections = 1024;
	c->max_body_mb = 16;
	c->max_queue = 64;
	c->default_timeout = 60;
	c->default_memory = 256;
	c->max_workers = 8;
	c->shutdown_grace = 10;
	c->heartbeat = 15;
	c->rescan_ms = 1000;
	c->model_idle = 300;
	c->threads = 0;
	c->access_log = 1;
}

static void free_dirs(char **dirs, int *n) {
	for (int i = 0; i < *n; i++) free(dirs[i]);
	*n = 0;
}

void ms_settings_free(ms_settings *c) {
	free(c->host);
	free_dirs(c->apps, &c->n_apps);
	free_dirs(c->mirror, &c->n_mirror);
	free(c->data);
	free(c->web);
	free(c->root_path);
	free(c->appworker);
	free(c->modelworker);
	free(c->config_file);
	memset(c, 0, sizeof *c);
}

static const struct setting *find_setting(const char *name, size_t len) {
	for (size_t i = 0; i < MS_ARRAY_LEN(settings); i++)
		if (strlen(settings[i].name) == len && !strncmp(settings[i].name, name, len)) return &settings[i];
	return NULL;
}

/* Sets one value. `fresh` tracks which T_DIRS lists were replaced by this source already
 * (the first value from a source replaces the list, later ones append). */
static int set_value(ms_settings *c, const struct setting *s, const char *value, unsigned *fresh,
		     const char *where, char *err, size_t errlen) {
	void *field = (char *)c + s->offset;
	switch (s->type) {
	case T_STR:
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case T_INT: {
		char *end;
		errno = 0;
		long v = strtol(value, &end, 10);
		if (errno || end == value || *end || v < s->min || v > s->max)
			return ms_errf(err, errlen, MS_EINVAL, "%s: %s must be an integer from %d to %d, got '%s'", where,
				       s->name, s->min, s->max, value);
		*(int *)field = (int)v;
		return 0;
	}
	case T_BOOL:
		if (!strcmp(value, "1") || !strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcasecmp(value, "on"))
			*(int *)field = 1;
		else if (!strcmp(value, "0") || !strcasecmp(value, "false") || !strcasecmp(value, "no") ||
			 !strcasecmp(value, "off") || !*value)
			*(int *)field = 0;
		else
			return ms_errf(err, errlen, MS_EINVAL, "%s: %s must be true or false, got '%s'", where, s->name, value);
		return 0;
	case T_DIRS: {
		char **dirs = field;
		int *n = (int *)((char *)c + s->count_off);
		unsigned bit = 1u << (s - settings);
		if (!(*fresh & bit)) {
			free_dirs(dirs, n);
			*fresh |= bit;
		}
		if (*n >= MS_SETTINGS_MAX_DIRS)
			return ms_errf(err, errlen, MS_EINVAL, "%s: at most %d values for %s", where, MS_SETTINGS_MAX_DIRS, s->name);
		dirs[(*n)++] = xstrdup(value);
		return 0;
	}
	}
	return MS_EINVAL;
}

static char *trim(char *s) {
	while (isspace((unsigned char)*s)) s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
	return s;
}

static int load_file(ms_settings *c, const char *path, int must_exist, char *err, size_t errlen) {
	FILE *f = fopen(path, "r");
	if (!f) {
		if (!must_exist && errno == ENOENT) return 0;
		return ms_errf(err, errlen, MS_EIO, "%s: %s", path, strerror(errno));
	}
	free(c->config_file);
	c->config_file = xstrdup(path);
	char line[4096], where[PATH_MAX + 32];
	unsigned fresh = 0;
	int rc = 0;
	for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
		char *p = trim(line);
		if (!*p || *p == '#') continue;
		snprintf(where, sizeof where, "%s:%d", path, lineno);
		char *eq = strchr(p, '=');
		if (!eq) { rc = ms_errf(err, errlen, MS_EINVAL, "%s: expected 'key = value'", where); break; }
		*eq = 0;
		char *key = trim(p), *value = trim(eq + 1);
		const struct setting *s = find_setting(key, strlen(key));
		if (!s) { rc = ms_errf(err, errlen, MS_EINVAL, "%s: unknown setting '%s'", where, key); break; }
		if ((rc = set_value(c, s, value, &fresh, where, err, errlen))) break;
	}
	fclose(f);
	return rc;
}

static int load_env(ms_settings *c, char *err, size_t errlen) {
	unsigned fresh = 0;
	for (size_t i = 0; i < MS_ARRAY_LEN(settings); i++) {
		char env[64] = "MOONSPACE_";
		size_t k = strlen(env);
		for (const char *p = settings[i].name; *p && k < sizeof env - 1; p++)
			env[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
		env[k] = 0;
		const char *v = getenv(env);
		if (!v) continue;
		if (settings[i].type == T_DIRS) { /* colon-separated, like PATH */
			char *copy = xstrdup(v), *save = NULL;
			for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
				int rc = set_value(c, &settings[i], d, &fresh, env, err, errlen);
				if (rc) { free(copy); return rc; }
			}
			free(copy);
			continue;
		}
		int rc = set_value(c, &settings[i], v, &fresh, env, err, errlen);
		if (rc) return rc;
	}
	return 0;
}

void ms_settings_usage(FILE *f) {
	fprintf(f, "usage: moonspace serve [OPTIONS]\n\n"
		   "Serves the apps found in the apps directories, their Gradio-compatible APIs, the web\n"
		   "gallery and the Hub mirror. Settings come from the config file, then MOONSPACE_*\n"
		   "environment variables, then these flags (each later source wins).\n\n"
		   "  --config FILE            config file (default: config/moonspace.conf beside bin/, if present)\n");
	for (size_t i = 0; i < MS_ARRAY_LEN(settings); i++) {
		char left[64];
		snprintf(left, sizeof left, "--%s%s%s", settings[i].name, settings[i].arg ? " " : "",
			 settings[i].arg ? settings[i].arg : "");
		char env[64] = "MOONSPACE_";
		size_t k = strlen(env);
		for (const char *p = settings[i].name; *p && k < sizeof env - 1; p++)
			env[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
		env[k] = 0;
		fprintf(f, "  %-24s %s\n  %-24s [env %s%s]\n", left, settings[i].help, "", env,
			settings[i].type == T_DIRS ? ", colon-separated" : "");
	}
	fprintf(f, "  --help                   this text\n");
}

int ms_settings_load(ms_settings *c, int argc, char **argv, char *err, size_t errlen) {
	/* the config file comes first, so find --config before anything else */
	const char *file = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			ms_settings_usage(stdout);
			return 1;
		}
		if (!strcmp(argv[i], "--config") && i + 1 < argc) file = argv[i + 1];
		else if (!strncmp(argv[i], "--config=", 9)) file = argv[i] + 9;
	}
	if (!file) file = getenv("MOONSPACE_CONFIG");
	int rc;
	if (file) {
		rc = load_file(c, file, 1, err, errlen);
	} else {
		char dir[PATH_MAX], path[PATH_MAX + 32], exe[PATH_MAX];
		if (ms_exe_dir(exe, sizeof exe)) strcpy(exe, ".");
		ms_settings_find_dir(exe, "config", dir, sizeof dir);
		snprintf(path, sizeof path, "%s/moonspace.conf", dir);
		rc = load_file(c, path, 0, err, errlen);
	}
	if (rc || (rc = load_env(c, err, errlen))) return rc;

	unsigned fresh = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--", 2) != 0)
			return ms_errf(err, errlen, MS_EINVAL, "unexpected argument '%s' (see --help)", a);
		a += 2;
		const char *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		if (len == 6 && !strncmp(a, "config", 6)) { if (!eq) i++; continue; }
		const struct setting *s = find_setting(a, len);
		const char *value = eq ? eq + 1 : NULL;
		if (!s && len > 3 && !strncmp(a, "no-", 3) && (s = find_setting(a + 3, len - 3)) && s->type == T_BOOL && !eq)
			value = "false";
		else if (s && s->type == T_BOOL && !eq)
			value = "true";
		if (!s) return ms_errf(err, errlen, MS_EINVAL, "unknown option '%s' (see --help)", argv[i]);
		if (!value) {
			if (i + 1 >= argc) return ms_errf(err, errlen, MS_EINVAL, "--%s needs a value", s->name);
			value = argv[++i];
		}
		if ((rc = set_value(c, s, value, &fresh, "command line", err, errlen))) return rc;
	}
	/* normalise the root path: "" or "/x" without a trailing slash */
	size_t n = strlen(c->root_path);
	while (n && c->root_path[n - 1] == '/') c->root_path[--n] = 0;
	if (n && c->root_path[0] != '/') {
		char *p = malloc(n + 2);
		if (!p) return MS_ENOMEM;
		p[0] = '/';
		memcpy(p + 1, c->root_path, n + 1);
		free(c->root_path);
		c->root_path = p;
	}
	return 0;
}
