/* host/api.c: the JSON API shaped like the Hub's /api/spaces, the pages, static files and
 * /healthz (see host/API.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "host/host.h"

static void respond_obj(ms_http_req *req, int status, json_t *obj) {
	char *text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	ms_http_respond_json(req, status, text ? text : "{}");
	free(text);
}

static json_t *iso_time(int64_t ms) {
	if (ms <= 0) return json_null();
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	char buf[40];
	size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ms % 1000));
	return json_string(buf);
}

/* One app as /api/spaces lists it. */
static json_t *app_json(ms_host *h, ms_app *app, const ms_store_app *row) {
	const ms_appsrc *src = app->src;
	json_t *card = src->has_card ? ms_card_to_json(&src->card) : json_object();
	json_t *tags = json_array();
	for (size_t i = 0; src->has_card && i < src->card.ntags; i++) json_array_append_new(tags, json_string(src->card.tags[i]));
	if (!src->has_card || !src->card.title) json_object_set_new(card, "title", json_string(src->name));
	return json_pack("{s:s,s:s,s:s,s:s,s:I,s:b,s:o,s:o,s:o,s:o,s:{s:s,s:s?,s:o},s:I}", "id", app->id, "_id", app->id,
			 "author", src->owner, "sdk", src->has_card && src->card.sdk ? src->card.sdk : "lua", "likes",
			 (json_int_t)(row ? row->likes : 0), "private", ms_appsrc_private(src), "tags", tags,
			 "createdAt", iso_time(row ? row->created_at : 0), "lastModified",
			 iso_time(row ? (row->last_run_at > row->updated_at ? row->last_run_at : row->updated_at) : 0),
			 "cardData", card, "runtime", "stage", ms_stage_name(app->stage), "errorMessage", app->error, "build",
			 ms_build_json(app),
			 "runs", (json_int_t)(row ? row->runs : 0));
}

static int visible(ms_host *h, ms_app *app, int has_token) {
	return has_token || !ms_app_needs_token(app);
}

void ms_api_spaces(ms_host *h, ms_http_req *req, char **args) {
	char search[256], tag[128], sort[32], limit[32], offset[32];
	ms_store_query q = {0};
	q.search = ms_http_req_query(req, "search", search, sizeof search);
	q.tag = ms_http_req_query(req, "tag", tag, sizeof tag);
	if (ms_http_req_query(req, "sort", sort, sizeof sort) && ms_store_sort_parse(sort, &q.sort))
		return ms_http_respond_error(req, 400, "bad_sort", "sort must be name, likes or updated");
	if (ms_http_req_query(req, "limit", limit, sizeof limit)) q.limit = atoll(limit);
	if (ms_http_req_query(req, "offset", offset, sizeof offset)) q.offset = atoll(offset);
	int has_token = ms_host_token(h, req, NULL, 0);
	q.include_private = has_token;
	if (h->cfg->require_token && !has_token) return respond_obj(req, 200, json_array());
	ms_store_app *rows = NULL;
	size_t n = 0;
	if (ms_store_list(h->store, &q, &rows, &n, NULL))
		return ms_http_respond_error(req, 500, "store", "the store cannot list apps: %s", ms_store_errmsg(h->store));
	json_t *out = json_array();
	for (size_t i = 0; i < n; i++) {
		ms_app *app = ms_app_find(h, rows[i].id);
		if (app && visible(h, app, has_token)) json_array_append_new(out, app_json(h, app, &rows[i]));
	}
	ms_store_apps_free(rows, n);
	respond_obj(req, 200, out);
}

static ms_app *api_app(ms_host *h, ms_http_req *req, char **args, char *token_name, size_t len) {
	char id[MS_APP_ID_MAX];
	snprintf(id, sizeof id, "%s/%s", args[0], args[1]);
	ms_app *app = ms_app_find(h, id);
	int has_token = ms_host_token(h, req, token_name, len);
	if (!app) {
		ms_http_respond_error(req, 404, "not_found", "No app %s", id);
		return NULL;
	}
	if (!visible(h, app, has_token)) {
		ms_http_respond_error(req, 401, "unauthorized", "This app needs a token: send Authorization: Bearer <token>.");
		return NULL;
	}
	return app;
}

static json_t *interface_json(const ms_app *app) {
	if (!app->iface) return json_null();
	json_t *eps = json_deep_copy(json_object_get(app->iface, "endpoints"));
	size_t i;
	json_t *ep;
	json_array_foreach(eps, i, ep) json_object_set_new(ep, "fn_index", json_integer((json_int_t)i));
	return json_pack("{s:O?,s:O?,s:o}", "title", json_object_get(app->iface, "title"), "description",
			 json_object_get(app->iface, "description"), "endpoints", eps);
}

void ms_api_space(ms_host *h, ms_http_req *req, char **args) {
	char token_name[MS_TOKEN_NAME_MAX + 1] = "";
	ms_app *app = api_app(h, req, args, token_name, sizeof token_name);
	if (!app) return;
	ms_app_flush_runs(app);
	ms_store_app row;
	int have_row = ms_store_get(h->store, app->id, &row) == 0;
	json_t *j = app_json(h, app, have_row ? &row : NULL);
	if (have_row) ms_store_app_free(&row);
	ms_store_stats st = {0};
	ms_store_get_stats(h->store, app->id, &st);
	json_t *logs = json_array();
	int from = app->log_n > 50 ? app->log_n - 50 : 0;
	for (int i = from; i < app->log_n; i++)
		json_array_append_new(logs, json_string(app->log[(app->log_start + i) % MS_APP_LOG_LINES]));
	char base[1024], api_url[1400];
	ms_host_base_url(h, req, base, sizeof base);
	snprintf(api_url, sizeof api_url, "%s/spaces/%s/", base, app->id);
	json_object_set_new(j, "readme_html", json_string(app->src->has_card && app->src->card.html ? app->src->card.html : ""));
	json_object_set_new(j, "interface", interface_json(app));
	json_object_set_new(j, "stats", json_pack("{s:I,s:I,s:f,s:f}", "runs", (json_int_t)st.runs, "errors", (json_int_t)st.errors,
						  "avg_ms", st.avg_ms, "p95_ms", st.p95_ms));
	json_object_set_new(j, "logs", logs);
	json_object_set_new(j, "liked", json_boolean(*token_name && ms_store_liked(h->store, app->id, token_name) == 1));
	json_object_set_new(j, "api_url", json_string(api_url));
	int ahead = ms_app_sent_ahead(app);
	json_object_set_new(j, "queue", json_pack("{s:i,s:i,s:i,s:i}", "waiting", app->queued, "running", app->running - ahead,
						  "sent_ahead", ahead, "concurrency", app->concurrency));
	respond_obj(req, 200, j);
}

void ms_api_like(ms_host *h, ms_http_req *req, char **args) {
	char token_name[MS_TOKEN_NAME_MAX + 1] = "";
	ms_app *app = api_app(h, req, args, token_name, sizeof token_name);
	if (!app) return;
	if (!*token_name) return ms_http_respond_error(req, 401, "unauthorized", "Liking needs a token (moonspace token add NAME).");
	int rc = !strcmp(req->method, "DELETE") ? ms_store_unlike(h->store, app->id, token_name)
					       : ms_store_like(h->store, app->id, token_name);
	if (rc < 0) return ms_http_respond_error(req, 500, "store", "%s", ms_strerror(rc));
	respond_obj(req, 200, json_pack("{s:I,s:b}", "likes", (json_int_t)ms_store_like_count(h->store, app->id), "liked",
					ms_store_liked(h->store, app->id, token_name) == 1));
}

void ms_api_events(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = api_app(h, req, args, NULL, 0);
	if (app) ms_build_listen(app, req);
}

void ms_api_restart(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = api_app(h, req, args, NULL, 0);
	if (!app) return;
	/* only an app that is down: a running app is never interrupted from outside */
	if (app->stage != MS_STAGE_RUNTIME_ERROR && app->stage != MS_STAGE_BUILD_ERROR)
		return ms_http_respond_error(req, 409, "not_stopped", "%s is %s: only an app in an error state is restarted", app->id,
					     ms_stage_name(app->stage));
	ms_app_restart(app);
	respond_obj(req, 200, json_pack("{s:s}", "stage", ms_stage_name(app->stage)));
}

/* ---- pages ---- */

/* Sends web/<file> with {{root}} replaced by the root path. */
static void send_template(ms_host *h, ms_http_req *req, const char *file) {
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/%s", h->cfg->web, file);
	char *text = NULL;
	size_t len = 0;
	if (ms_read_file(path, &text, &len, 4u << 20))
		return ms_http_respond_error(req, 500, "web_missing", "%s is missing: is --web right?", path);
	ms_buf out;
	ms_buf_init(&out);
	const char *p = text, *mark;
	while ((mark = strstr(p, "{{root}}"))) {
		ms_buf_append(&out, p, (size_t)(mark - p));
		ms_buf_puts(&out, h->cfg->root_path);
		p = mark + 8;
	}
	ms_buf_puts(&out, p);
	free(text);
	ms_http_set_header(req, "Cache-Control", "no-cache");
	ms_http_set_header(req, "X-Content-Type-Options", "nosniff");
	ms_http_respond(req, 200, "text/html; charset=utf-8", out.data, out.len);
	ms_buf_free(&out);
}

void ms_page_gallery(ms_host *h, ms_http_req *req, char **args) { send_template(h, req, "index.html"); }

void ms_page_app(ms_host *h, ms_http_req *req, char **args) {
	char id[MS_APP_ID_MAX];
	snprintf(id, sizeof id, "%s/%s", args[0], args[1]);
	ms_app *app = ms_app_find(h, id);
	if (!app) return ms_http_respond_error(req, 404, "not_found", "No app %s", id);
	if (app->src && app->src->has_card && json_is_true(json_object_get(app->src->card.data, "disable_embedding")))
		ms_http_set_header(req, "Content-Security-Policy", "frame-ancestors 'none'");
	send_template(h, req, "app.html");
}

void ms_page_static(ms_host *h, ms_http_req *req, char **args) {
	static const ms_http_static_opts opts = {"public, max-age=300", 1};
	if (ms_http_serve_file(req, h->cfg->web, args[0], &opts) == MS_ENOENT)
		ms_http_respond_error(req, 404, "not_found", "No file %s", req->path);
}

void ms_page_healthz(ms_host *h, ms_http_req *req, char **args) {
	int ok = h->store && ms_store_health(h->store) == 0 && !h->shutting_down;
	int n = 0;
	for (ms_app *a = h->apps; a; a = a->next) n++;
	respond_obj(req, ok ? 200 : 503, json_pack("{s:s,s:i,s:f}", "status", ok ? "ok" : "unhealthy", "apps", n,
						   "uptime_s", (double)(ms_now_ns() - h->started_ns) / 1e9));
}
