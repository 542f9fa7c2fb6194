/* host/serve.c: `moonspace serve` (the host's main loop) and `moonspace token`. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/host.h"
#include "host/hub.h"

static void on_sweep(uv_timer_t *t) { ms_sessions_sweep(t->data); }
static void on_flush(uv_timer_t *t) { ms_apps_flush_runs(t->data); }

static void finish_shutdown(ms_host *h) {
	uv_timer_stop(&h->shutdown_timer);
	ms_apps_stop_all(h);
	ms_models_stop_all(h);
	if (h->watch) ms_appdir_watch_stop(h->watch);
	h->watch = NULL;
	if (h->hub) ms_hub_free(h->hub); /* cancels fetches still running */
	h->hub = NULL;
	if (h->http) ms_http_server_close(h->http);
	h->http = NULL;
	uv_close((uv_handle_t *)&h->sweep_timer, NULL);
	uv_close((uv_handle_t *)&h->flush_timer, NULL);
	uv_close((uv_handle_t *)&h->shutdown_timer, NULL);
	uv_close((uv_handle_t *)&h->sigint, NULL);
	uv_close((uv_handle_t *)&h->sigterm, NULL);
}

static void on_shutdown_tick(uv_timer_t *t) {
	ms_host *h = t->data;
	double waited = (double)(ms_now_ns() - h->started_ns) / 1e9; /* reset at the signal */
	if (ms_apps_busy(h) == 0 || waited >= h->cfg->shutdown_grace) {
		if (ms_apps_busy(h)) MS_WARN("serve", "grace period over: stopping %d calls still in flight", ms_apps_busy(h));
		finish_shutdown(h);
	}
}

static void on_signal(uv_signal_t *s, int signum) {
	ms_host *h = s->data;
	if (h->shutting_down) { /* a second signal: stop now */
		MS_WARN("serve", "second signal: stopping now");
		finish_shutdown(h);
		return;
	}
	h->shutting_down = 1;
	MS_INFO("serve", "%s: no new connections; letting %d calls finish (up to %d s)", signum == SIGINT ? "SIGINT" : "SIGTERM",
		ms_apps_busy(h), h->cfg->shutdown_grace);
	if (h->http) ms_http_server_stop_accepting(h->http);
	h->started_ns = ms_now_ns();
	uv_timer_start(&h->shutdown_timer, on_shutdown_tick, 0, 100);
}

/* Rows of apps that are no longer on disk (removed while the host was down). */
static void drop_stale_rows(ms_host *h) {
	ms_store_app *rows = NULL;
	size_t n = 0;
	ms_store_query q = {.include_private = 1};
	if (ms_store_list(h->store, &q, &rows, &n, NULL)) return;
	for (size_t i = 0; i < n; i++)
		if (!ms_app_find(h, rows[i].id)) ms_store_app_remove(h->store, rows[i].id);
	ms_store_apps_free(rows, n);
}

static void free_host_state(ms_host *h) {
	for (int b = 0; b < MS_SESSION_BUCKETS; b++)
		while (h->sessions[b]) {
			ms_session *s = h->sessions[b];
			h->sessions[b] = s->next;
			ms_buf_free(&s->pending);
			json_decref(s->state);
			free(s);
		}
	for (int b = 0; b < MS_CALL_BUCKETS; b++) {
		while (h->calls[b]) {
			ms_call *c = h->calls[b];
			h->calls[b] = c->hnext;
			ms_appsrc_unref(c->src);
			json_decref(c->data);
			json_decref(c->last_output);
			ms_buf_free(&c->rest_log);
			free(c);
		}
	}
}

static int load_config(ms_settings *cfg, int argc, char **argv) {
	char exe[PATH_MAX], err[1024];
	if (ms_exe_dir(exe, sizeof exe)) strcpy(exe, ".");
	ms_settings_init(cfg, exe);
	int rc = ms_settings_load(cfg, argc, argv, err, sizeof err);
	if (rc < 0) fprintf(stderr, "moonspace %s: %s\n", argv[0], err);
	return rc;
}

int ms_serve_main(int argc, char **argv) {
	ms_settings cfg;
	int rc = load_config(&cfg, argc, argv);
	if (rc) {
		ms_settings_free(&cfg);
		return rc == 1 ? 0 : 2;
	}
	signal(SIGPIPE, SIG_IGN);
	ms_host *h = calloc(1, sizeof *h);
	if (!h) return 1;
	h->cfg = &cfg;
	h->loop = uv_default_loop();
	h->started_ns = ms_now_ns();
	char err[1024];
	if (ms_store_open(&h->store, cfg.data, err, sizeof err)) {
		fprintf(stderr, "moonspace serve: %s\n", err);
		return 1;
	}
	ms_http_limits limits;
	ms_http_limits_default(&limits);
	limits.max_connections = (unsigned)cfg.max_connections;
	limits.max_body = (size_t)cfg.max_body_mb << 20;
	limits.access_log = cfg.access_log;
	rc = ms_http_server_new(h->loop, cfg.host, cfg.port, &limits, ms_host_handle, h, &h->http);
	if (rc) {
		fprintf(stderr, "moonspace serve: cannot listen on %s:%d: %s\n", cfg.host, cfg.port, ms_strerror(rc));
		ms_store_close(h->store);
		return 1;
	}
	ms_hub_env hub_env;
	ms_hub_env_load(&hub_env);
	if (ms_hub_mirror_new(h->loop, cfg.mirror, cfg.n_mirror, hub_env.cache, &h->mirror) ||
	    ms_hub_new(h->loop, &hub_env, NULL, &h->hub)) {
		fprintf(stderr, "moonspace serve: cannot start the Hub client and mirror\n");
		return 1;
	}
	if (ms_appdir_watch_start(&h->watch, h->loop, (const char *const *)cfg.apps, (size_t)cfg.n_apps,
				  (unsigned)cfg.rescan_ms, ms_apps_on_change, h)) {
		fprintf(stderr, "moonspace serve: cannot watch the apps directories\n");
		return 1;
	}
	drop_stale_rows(h);
	uv_timer_init(h->loop, &h->sweep_timer);
	h->sweep_timer.data = h;
	uv_timer_start(&h->sweep_timer, on_sweep, 60000, 60000);
	uv_unref((uv_handle_t *)&h->sweep_timer);
	uv_timer_init(h->loop, &h->flush_timer);
	h->flush_timer.data = h;
	uv_timer_start(&h->flush_timer, on_flush, 500, 500);
	uv_unref((uv_handle_t *)&h->flush_timer);
	uv_timer_init(h->loop, &h->shutdown_timer);
	h->shutdown_timer.data = h;
	uv_signal_init(h->loop, &h->sigint);
	uv_signal_init(h->loop, &h->sigterm);
	h->sigint.data = h->sigterm.data = h;
	uv_signal_start(&h->sigint, on_signal, SIGINT);
	uv_signal_start(&h->sigterm, on_signal, SIGTERM);
	int n = 0;
	for (ms_app *a = h->apps; a; a = a->next) n++;
	MS_INFO("serve", "moonspace is serving %d apps on http://%s:%d%s/ (data in %s)", n, cfg.host,
		ms_http_server_port(h->http), cfg.root_path, cfg.data);
#ifdef MS_ASAN
	MS_INFO("serve", "ASan build: app workers run without address-space limits and without leak detection");
#endif
	fflush(stderr);
	uv_run(h->loop, UV_RUN_DEFAULT);
	ms_apps_flush_runs(h);
	free_host_state(h);
	ms_models_free(h);
	ms_apps_free(h);
	uv_run(h->loop, UV_RUN_DEFAULT); /* the timers' close callbacks */
	if (uv_loop_close(h->loop)) MS_WARN("serve", "some handles were still open at exit");
	ms_hub_mirror_free(h->mirror);
	ms_store_close(h->store);
	MS_INFO("serve", "stopped cleanly");
	free(h);
	ms_settings_free(&cfg);
	return 0;
}

/* ---- moonspace token ---- */

static int token_usage(FILE *f) {
	fprintf(f, "usage: moonspace token add NAME   create a token; it is printed once, only its hash is kept\n"
		   "       moonspace token ls         list tokens (names and dates)\n"
		   "       moonspace token rm NAME    delete a token and its likes\n"
		   "options: --data DIR (the store, as for serve), --config FILE\n");
	return f == stderr ? 2 : 0;
}

int ms_token_main(int argc, char **argv) {
	const char *verb = NULL, *name = NULL;
	char *flags[8] = {"token"};
	int nflags = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return token_usage(stdout);
		if ((!strcmp(argv[i], "--data") || !strcmp(argv[i], "--config")) && i + 1 < argc && nflags < 7) {
			flags[nflags++] = argv[i];
			flags[nflags++] = argv[++i];
		} else if (!verb) verb = argv[i];
		else if (!name) name = argv[i];
		else return token_usage(stderr);
	}
	if (!verb) return token_usage(stderr);
	ms_settings cfg;
	if (load_config(&cfg, nflags, flags)) return 2;
	ms_store *st;
	char err[1024];
	if (ms_store_open(&st, cfg.data, err, sizeof err)) {
		fprintf(stderr, "moonspace token: %s\n", err);
		ms_settings_free(&cfg);
		return 1;
	}
	int rc = 0;
	if (!strcmp(verb, "add") && name) {
		char tok[MS_TOKEN_LEN];
		int r = ms_store_token_add(st, name, tok);
		if (r == MS_EEXISTS) fprintf(stderr, "moonspace token: a token named '%s' exists already\n", name), rc = 1;
		else if (r == MS_EINVAL) fprintf(stderr, "moonspace token: '%s' is not a valid name ([A-Za-z0-9._@-], up to 64)\n", name), rc = 1;
		else if (r) fprintf(stderr, "moonspace token: %s\n", ms_strerror(r)), rc = 1;
		else {
			printf("%s\n", tok);
			fprintf(stderr, "token '%s' created: copy it now, it is not shown again\n", name);
		}
	} else if (!strcmp(verb, "ls") && !name) {
		ms_store_token *t = NULL;
		size_t n = 0;
		if (ms_store_token_list(st, &t, &n) == 0) {
			for (size_t i = 0; i < n; i++)
				printf("%s\tcreated %lld\tlast used %lld\n", t[i].name, (long long)t[i].created_at / 1000,
				       (long long)t[i].last_used_at / 1000);
			ms_store_tokens_free(t, n);
		}
	} else if (!strcmp(verb, "rm") && name) {
		int r = ms_store_token_remove(st, name);
		if (r == MS_ENOENT) fprintf(stderr, "moonspace token: no token named '%s'\n", name), rc = 1;
		else if (r) fprintf(stderr, "moonspace token: %s\n", ms_strerror(r)), rc = 1;
	} else {
		rc = token_usage(stderr);
	}
	ms_store_close(st);
	ms_settings_free(&cfg);
	return rc;
}
