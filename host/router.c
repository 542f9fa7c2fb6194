/* host/router.c: one table of routes, checked at one choke point: the root path is
 * stripped, CORS is answered, the method and path are matched, captures are handed to the
 * handler. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host.h"
#include "host/hub.h"

struct route {
	const char *method;  /* "GET" also matches HEAD */
	const char *pattern; /* segments; "*" captures one, a final "**" captures the rest */
	ms_route_fn fn;
};

static const struct route routes[] = {
	{"GET", "", ms_page_gallery},
	{"GET", "healthz", ms_page_healthz},
	{"GET", "static/**", ms_page_static},
	{"GET", "api/spaces", ms_api_spaces},
	{"GET", "api/spaces/*/*", ms_api_space},
	{"POST", "api/spaces/*/*/like", ms_api_like},
	{"DELETE", "api/spaces/*/*/like", ms_api_like},
	{"POST", "api/spaces/*/*/restart", ms_api_restart},
	{"GET", "api/spaces/*/*/events", ms_api_events},
	{"GET", "spaces/*/*", ms_page_app},
	{"GET", "spaces/*/*/embed", ms_page_app},
	{"GET", "spaces/*/*/config", ms_gradio_config},
	{"GET", "spaces/*/*/gradio_api/info", ms_gradio_info},
	{"GET", "spaces/*/*/info", ms_gradio_info},
	{"GET", "spaces/*/*/gradio_api/app_id", ms_gradio_app_id},
	{"POST", "spaces/*/*/gradio_api/queue/join", ms_gradio_join},
	{"GET", "spaces/*/*/gradio_api/queue/data", ms_gradio_data},
	{"GET", "spaces/*/*/gradio_api/heartbeat/*", ms_gradio_heartbeat},
	{"POST", "spaces/*/*/gradio_api/call/*", ms_gradio_call},
	{"POST", "spaces/*/*/call/*", ms_gradio_call},
	{"GET", "spaces/*/*/gradio_api/call/*/*", ms_gradio_call_stream},
	{"GET", "spaces/*/*/call/*/*", ms_gradio_call_stream},
	{"POST", "spaces/*/*/gradio_api/cancel", ms_gradio_cancel},
	{"POST", "spaces/*/*/gradio_api/reset", ms_gradio_reset},
	{"POST", "spaces/*/*/gradio_api/run/*", ms_gradio_run},
	{"POST", "spaces/*/*/gradio_api/api/*", ms_gradio_run},
	{"POST", "spaces/*/*/run/*", ms_gradio_run},
	/* the Hub mirror (hub_mirror.c); it reads the raw target itself, so that an encoded
	 * revision such as refs%2Fpr%2F1 stays one segment */
	{"GET", "api/models/**", ms_hub_route},
	{"POST", "api/models/**", ms_hub_route},
	{"GET", "*/*/resolve/**", ms_hub_route},
};

#define MAX_CAPTURES 6

/* Matches path (no leading '/', single slashes) against a pattern; fills captures (which
 * point into buf, a writable copy of path). */
static int match(const char *pattern, char *buf, char **caps, int *ncaps) {
	*ncaps = 0;
	const char *p = pattern;
	char *s = buf;
	if (!*p) return !*s;
	for (;;) {
		const char *pend = strchr(p, '/');
		size_t plen = pend ? (size_t)(pend - p) : strlen(p);
		if (plen == 2 && !strncmp(p, "**", 2)) {
			if (*ncaps >= MAX_CAPTURES) return 0;
			caps[(*ncaps)++] = s;
			return 1;
		}
		if (!*s) return 0;
		char *send = strchr(s, '/');
		size_t slen = send ? (size_t)(send - s) : strlen(s);
		if (plen == 1 && *p == '*') {
			if (!slen || *ncaps >= MAX_CAPTURES) return 0;
			caps[(*ncaps)++] = s;
		} else if (plen != slen || strncmp(p, s, plen) != 0) {
			return 0;
		}
		if (!pend) {
			if (send && send[1]) return 0; /* more path than pattern */
			if (send) *send = 0;     /* a trailing slash is fine */
			return 1;
		}
		if (!send) return 0;
		*send = 0;
		p = pend + 1;
		s = send + 1;
	}
}

static void add_cors(ms_http_req *req) {
	const char *origin = ms_http_req_header(req, "origin");
	if (!origin) return;
	ms_http_set_header(req, "Access-Control-Allow-Origin", "*");
	ms_http_set_header(req, "Access-Control-Expose-Headers", "Content-Length, Content-Range, ETag, X-Repo-Commit, X-Linked-Etag, X-Linked-Size, X-Error-Code, X-Error-Message");
}

void ms_host_handle(ms_http_req *req, void *ud) {
	ms_host *h = ud;
	add_cors(req);
	if (!strcmp(req->method, "OPTIONS")) {
		if (!ms_http_req_header(req, "origin")) ms_http_set_header(req, "Access-Control-Allow-Origin", "*");
		ms_http_set_header(req, "Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE, OPTIONS");
		ms_http_set_header(req, "Access-Control-Allow-Headers",
				   "content-type, authorization, x-gradio-user, x-hf-authorization, range");
		ms_http_set_header(req, "Access-Control-Max-Age", "600");
		ms_http_respond(req, 204, NULL, NULL, 0);
		return;
	}
	/* normalise: strip the root path when present, collapse repeated slashes */
	const char *path = req->path;
	size_t rl = strlen(h->cfg->root_path);
	if (rl && !strncmp(path, h->cfg->root_path, rl) && (path[rl] == '/' || !path[rl])) path += rl;
	size_t n = strlen(path);
	char *buf = malloc(n + 1);
	if (!buf) return ms_http_respond_error(req, 500, "internal", "out of memory");
	size_t k = 0;
	for (const char *p = path; *p; p++)
		if (!(*p == '/' && (k == 0 || buf[k - 1] == '/'))) buf[k++] = *p;
	buf[k] = 0;
	char *copy = malloc(k + 1);
	if (!copy) {
		free(buf);
		return ms_http_respond_error(req, 500, "internal", "out of memory");
	}
	int method_mismatch = 0;
	for (size_t i = 0; i < MS_ARRAY_LEN(routes); i++) {
		char *caps[MAX_CAPTURES];
		int ncaps;
		memcpy(copy, buf, k + 1);
		if (!match(routes[i].pattern, copy, caps, &ncaps)) continue;
		int ok = !strcmp(req->method, routes[i].method) ||
			 (!strcmp(routes[i].method, "GET") && !strcmp(req->method, "HEAD"));
		if (!ok) {
			method_mismatch = 1;
			continue;
		}
		routes[i].fn(h, req, caps);
		free(copy);
		free(buf);
		return;
	}
	free(copy);
	free(buf);
	if (method_mismatch) return ms_http_respond_error(req, 405, "method_not_allowed", "%s is not allowed here", req->method);
	ms_http_respond_error(req, 404, "not_found", "Nothing at %s", req->path);
}

/* A header value is used in URLs, JSON and HTML: keep only what a host name or scheme may
 * hold. */
static int safe_token(const char *s, size_t max) {
	if (!s || !*s || strlen(s) > max) return 0;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || strchr(".-:[]_", *s))) return 0;
	return 1;
}

void ms_host_base_url(ms_host *h, const ms_http_req *req, char *out, size_t len) {
	const char *proto = ms_http_req_header(req, "x-forwarded-proto");
	const char *host = ms_http_req_header(req, "x-forwarded-host");
	char proto_buf[16] = "http";
	if (proto && (!strncmp(proto, "https", 5) || !strncmp(proto, "http", 4))) {
		snprintf(proto_buf, sizeof proto_buf, "%s", !strncmp(proto, "https", 5) ? "https" : "http");
	}
	if (!safe_token(host, 255)) host = ms_http_req_header(req, "host");
	char fallback[300];
	if (!safe_token(host, 255)) {
		snprintf(fallback, sizeof fallback, "%s:%d", h->cfg->host, ms_http_server_port(h->http));
		host = fallback;
	}
	snprintf(out, len, "%s://%s%s", proto_buf, host, h->cfg->root_path);
}

int ms_host_token(ms_host *h, const ms_http_req *req, char *name_out, size_t len) {
	const char *auth = ms_http_req_header(req, "authorization");
	if (!auth) auth = ms_http_req_header(req, "x-hf-authorization");
	if (!auth || !h->store) return 0;
	if (!strncasecmp(auth, "Bearer ", 7)) auth += 7;
	return ms_store_token_verify(h->store, auth, name_out, len) == 0;
}

int ms_app_needs_token(const ms_app *app) {
	return app->host->cfg->require_token || (app->src && ms_appsrc_private(app->src));
}
