/* host/settings.h: the host's settings, from one declarative table.
 *
 * Precedence: built-in defaults < config file (config/moonspace.conf, or --config FILE)
 * < MOONSPACE_* environment variables < command-line flags. Every setting has one row in
 * the table in config.c, which also generates `moonspace serve --help`.
 */
#ifndef MS_SETTINGS_H
#define MS_SETTINGS_H

#include <stddef.h>
#include <stdio.h>

#define MS_SETTINGS_MAX_DIRS 16

typedef struct ms_settings {
	char *host;
	int port;
	char *apps[MS_SETTINGS_MAX_DIRS]; /* app roots; default ./apps */
	int n_apps;
	char *mirror[MS_SETTINGS_MAX_DIRS]; /* plain directories of model repos to mirror */
	int n_mirror;
	char *data;      /* SQLite and other state */
	char *web;       /* static files; default <binary>/../web */
	char *root_path; /* "" or "/prefix" (no trailing slash) */
	char *appworker;   /* the app worker binary; default beside bin/moonspace */
	char *modelworker; /* the model worker binary; default beside bin/moonspace */
	int require_token;
	int max_connections;
	int max_body_mb;
	int max_queue;        /* default per-app queue size when the card says none */
	int default_timeout;  /* seconds per call when the card says none */
	int default_memory;   /* MiB per app worker when the card says none */
	int max_workers;      /* upper bound for a card's concurrency */
	int shutdown_grace;   /* seconds calls in flight may take on SIGTERM */
	int heartbeat;        /* seconds between SSE heartbeats */
	int rescan_ms;        /* app directory polling period */
	int model_idle;       /* seconds before an idle model worker is unloaded */
	int threads;          /* model worker threads (0 = cores - 1, at least 1) */
	int access_log;
	char *config_file;    /* the file that was read, if any */
} ms_settings;

/* Fills defaults; exe_dir is the directory of the running binary (for web/ and config/). */
void ms_settings_init(ms_settings *c, const char *exe_dir);
void ms_settings_free(ms_settings *c);
/* Applies the file, the environment, then argv (argv[0] = "serve"). On error writes a
 * message to err and returns MS_EINVAL; returns 1 when --help was printed. */
int ms_settings_load(ms_settings *c, int argc, char **argv, char *err, size_t errlen);
/* Prints the usage of `moonspace serve`, generated from the table. */
void ms_settings_usage(FILE *f);
/* The directory `name` (web, config) beside bin/, else in the source tree the binary was
 * built from; written to out. */
void ms_settings_find_dir(const char *exe_dir, const char *name, char *out, size_t len);
/* Directory of the running executable (readlink /proc/self/exe), into buf. */
int ms_exe_dir(char *buf, size_t len);

#endif
