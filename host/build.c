/* host/build.c: an app's "build": bringing the models its card names into the Hugging
 * Face cache before its first worker starts (BUILDING), with live progress, then RUNNING,
 * or BUILD_ERROR with the reason. Every fetch runs on the loop through the Hub client, so
 * nothing blocks other apps. Progress is in /api/spaces/{owner}/{name} (runtime.build) and
 * streamed on /api/spaces/{owner}/{name}/events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host.h"
#include "host/hub.h"

#define MAX_PATTERNS 32

struct ms_build_fetch {
	ms_app *app;
	ms_hub_fetch *fetch;
	char repo[256], rev[128];
	uint64_t bytes, total;
	int files_done, files_total;
	double rate;
	int done;
};

static void free_fetches(ms_app *app) {
	for (int i = 0; i < app->n_fetches; i++) free(app->fetches[i]);
	app->n_fetches = 0;
}

json_t *ms_build_json(const ms_app *app) {
	if (!app->n_fetches || app->stage != MS_STAGE_BUILDING) return json_null();
	uint64_t bytes = 0, total = 0;
	int done = 0, files = 0;
	double rate = 0;
	json_t *repos = json_array();
	for (int i = 0; i < app->n_fetches; i++) {
		const struct ms_build_fetch *f = app->fetches[i];
		bytes += f->bytes, total += f->total, done += f->files_done, files += f->files_total, rate += f->done ? 0 : f->rate;
		json_array_append_new(repos, json_pack("{s:s,s:I,s:I,s:i,s:i,s:b}", "repo", f->repo, "bytes", (json_int_t)f->bytes,
						       "total", (json_int_t)f->total, "files_done", f->files_done, "files_total",
						       f->files_total, "done", f->done));
	}
	return json_pack("{s:I,s:I,s:i,s:i,s:f,s:o}", "bytes", (json_int_t)bytes, "total", (json_int_t)total, "files_done",
			 done, "files_total", files, "rate", rate, "repos", repos);
}

/* ---- status listeners (SSE) ---- */

static void send_status(ms_app *app, ms_http_req *req) {
	json_t *j = json_pack("{s:s,s:s?,s:o}", "stage", ms_stage_name(app->stage), "errorMessage", app->error, "build",
			      ms_build_json(app));
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text) return;
	ms_buf b;
	ms_buf_init(&b);
	ms_buf_printf(&b, "data: %s\n\n", text);
	ms_http_sse_send(req, b.data, b.len);
	ms_buf_free(&b);
	free(text);
}

void ms_build_notify(ms_app *app) {
	for (int i = 0; i < app->n_listeners; i++) send_status(app, app->listeners[i]);
	app->last_notify_ns = ms_now_ns();
}

static void on_listener_closed(ms_http_req *req, void *ud) {
	ms_app *app = ud;
	for (int i = 0; i < app->n_listeners; i++)
		if (app->listeners[i] == req) {
			app->listeners[i] = app->listeners[--app->n_listeners];
			return;
		}
}

void ms_build_listen(ms_app *app, ms_http_req *req) {
	if (app->n_listeners >= MS_APP_MAX_LISTENERS) {
		ms_http_respond_error(req, 503, "too_many_listeners", "too many status streams for this app");
		return;
	}
	ms_http_sse_start(req, (unsigned)app->host->cfg->heartbeat * 1000u, ": ping\n\n");
	app->listeners[app->n_listeners++] = req;
	ms_http_on_close(req, on_listener_closed, app);
	send_status(app, req);
}

void ms_build_drop_listeners(ms_app *app) {
	while (app->n_listeners) {
		ms_http_req *r = app->listeners[--app->n_listeners];
		ms_http_on_close(r, NULL, NULL);
		ms_http_stream_end(r);
	}
}

/* ---- fetching ---- */

static void on_progress(const ms_hub_progress *p, void *ud) {
	struct ms_build_fetch *f = ud;
	f->bytes = p->bytes, f->total = p->total, f->files_done = p->files_done, f->files_total = p->files_total;
	f->rate = p->rate;
	if (ms_now_ns() - f->app->last_notify_ns > 250000000ull) ms_build_notify(f->app);
}

static void on_done(const ms_hub_result *r, void *ud) {
	struct ms_build_fetch *f = ud;
	ms_app *app = f->app;
	f->done = 1;
	f->fetch = NULL;
	if (r->rc == MS_ECANCELED) return; /* a newer version, or the app went away */
	if (r->rc) {
		char msg[1200];
		snprintf(msg, sizeof msg, "could not fetch the model %s%s%s: %s", f->repo, f->rev[0] ? "@" : "", f->rev,
			 r->error ? r->error : ms_strerror(r->rc));
		ms_app_log(app, "[moonspace] %s", msg);
		MS_WARN("build", "%s: %s", app->id, msg);
		ms_build_cancel(app); /* the others are of no use now */
		ms_app_set_stage(app, MS_STAGE_BUILD_ERROR, msg);
		ms_build_notify(app);
		return;
	}
	ms_app_log(app, "[moonspace] %s %s (%d files%s)", f->repo, r->offline ? "found in the cache" : "fetched",
		   r->n_files, r->offline ? ", no network" : "");
	for (int i = 0; i < app->n_fetches; i++)
		if (!app->fetches[i]->done) {
			ms_build_notify(app);
			return;
		}
	app->building = 0;
	ms_build_notify(app);
	ms_app_dispatch(app); /* every model is in place: start the app */
}

/* "repo", "repo f1,f2" or "repo f1,f2 sha" (preload_from_hub) → repo, rev, patterns. */
static int parse_preload(const char *entry, char *repo, size_t rl, char *rev, size_t vl, char *files, size_t fl) {
	*rev = 0, *files = 0;
	if (sscanf(entry, "%255s %1023s %127s", repo, files, rev) < 1) return MS_EINVAL;
	(void)rl, (void)vl, (void)fl;
	return ms_hub_valid_repo(repo) ? 0 : MS_EINVAL;
}

static int start_one(ms_app *app, const char *repo, const char *rev, char *files) {
	if (app->n_fetches >= MS_APP_MAX_FETCHES) return MS_ETOOBIG;
	struct ms_build_fetch *f = calloc(1, sizeof *f);
	if (!f) return MS_ENOMEM;
	f->app = app;
	snprintf(f->repo, sizeof f->repo, "%s", repo);
	snprintf(f->rev, sizeof f->rev, "%s", rev);
	const char *patterns[MAX_PATTERNS + 1] = {0};
	int np = 0;
	for (char *save = NULL, *p = files && *files ? strtok_r(files, ",", &save) : NULL; p && np < MAX_PATTERNS;
	     p = strtok_r(NULL, ",", &save))
		patterns[np++] = p;
	app->fetches[app->n_fetches++] = f;
	int rc = ms_hub_fetch_start(app->host->hub, repo, rev[0] ? rev : NULL, np ? patterns : NULL, on_progress, on_done, f,
				    &f->fetch);
	if (rc) f->done = 1;
	return rc;
}

/* A repo that a preload_from_hub entry names: that entry's file list wins. */
static int preloaded(const ms_appsrc *src, const char *repo) {
	size_t n = strlen(repo);
	for (size_t i = 0; i < src->card.npreload; i++) {
		const char *e = src->card.preload_from_hub[i];
		if (!strncmp(e, repo, n) && (e[n] == 0 || e[n] == ' ')) return 1;
	}
	return 0;
}

int ms_build_start(ms_app *app) {
	ms_build_cancel(app);
	free_fetches(app);
	const ms_appsrc *src = app->src;
	if (!app->host->hub || !src || !src->has_card || (!src->card.nmodels && !src->card.npreload)) return 0;
	app->building = 1;
	char repo[256], rev[128], files[1024], err[300] = "";
	int rc = 0;
	for (size_t i = 0; i < src->card.nmodels && !rc; i++) {
		files[0] = 0;
		rc = ms_card_model_split(src->card.models[i], repo, sizeof repo, rev, sizeof rev);
		if (!rc && preloaded(src, repo)) continue; /* preload_from_hub says which files */
		if (!rc) rc = start_one(app, repo, rev, files);
		if (rc) snprintf(err, sizeof err, "cannot fetch %s: %s", src->card.models[i], ms_strerror(rc));
	}
	for (size_t i = 0; i < src->card.npreload && !rc; i++) {
		rc = parse_preload(src->card.preload_from_hub[i], repo, sizeof repo, rev, sizeof rev, files, sizeof files);
		if (!rc) rc = start_one(app, repo, rev, files);
		if (rc) snprintf(err, sizeof err, "preload_from_hub entry '%s': %s", src->card.preload_from_hub[i], ms_strerror(rc));
	}
	if (rc) {
		ms_build_cancel(app);
		ms_app_set_stage(app, MS_STAGE_BUILD_ERROR, err);
		return rc;
	}
	return 1;
}

void ms_build_cancel(ms_app *app) {
	for (int i = 0; i < app->n_fetches; i++) {
		struct ms_build_fetch *f = app->fetches[i];
		if (f->fetch) ms_hub_fetch_cancel(f->fetch); /* on_done runs now, with MS_ECANCELED */
	}
	app->building = 0;
}

void ms_build_free(ms_app *app) {
	ms_build_cancel(app);
	free_fetches(app);
	ms_build_drop_listeners(app);
}
