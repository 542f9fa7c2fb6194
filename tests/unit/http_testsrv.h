/* tests/unit/http_testsrv.h: the test server shared by test_http.c and tool_httpd.c.
 *
 * Routes (all on one ms_http_server):
 *   /static/REL          ms_http_serve_file(root, REL) (Cache-Control, gzip on)
 *   /echo                200 text/plain with the request body; X-Method, X-Path, X-Query-A
 *   /delay?ms=N          answers "delayed N" after N ms (an asynchronous response)
 *   /stream?n=N&ms=M     chunked: N pieces "piece I\n", one every M ms
 *   /sse?n=N&ms=M&hb=H   SSE: N events every M ms (then stays open if n<0), heartbeat H ms
 *   /hold                never answers (until the client leaves)
 *   /late?ms=N           like /delay but without ms_http_on_close: a client that leaves
 *                        first leaves an orphan that the late respond must free
 *   /stats               {"closes":C,"inflight":I,"done":D}: on_close calls so far
 *   /big?n=N             N bytes of 'x'
 *   /drain               ms_http_server_stop_accepting(), then 200
 */
#ifndef HTTP_TESTSRV_H
#define HTTP_TESTSRV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "host/http.h"

typedef struct testsrv {
	uv_loop_t *loop;
	ms_http_server *srv;
	const char *root;
	unsigned closes;  /* ms_http_on_close callbacks */
	unsigned done;    /* async jobs that finished normally */
} testsrv;

typedef struct tjob {
	uv_timer_t timer;
	testsrv *ts;
	ms_http_req *req;
	int kind; /* 0 delay, 1 stream, 2 sse */
	int left, every;
	int i;
} tjob;

static void tjob_closed(uv_handle_t *h) { free(h->data); }

static void tjob_end(tjob *j) {
	uv_timer_stop(&j->timer);
	uv_close((uv_handle_t *)&j->timer, tjob_closed);
}

static void tjob_on_close(ms_http_req *req, void *ud) {
	tjob *j = ud;
	(void)req;
	j->ts->closes++;
	j->req = NULL;
	tjob_end(j);
}

static void hold_on_close(ms_http_req *req, void *ud) {
	(void)req;
	((testsrv *)ud)->closes++;
}

static void tjob_tick(uv_timer_t *t) {
	tjob *j = t->data;
	char buf[128];
	if (!j->req) return;
	if (j->kind == 0) {
		int n = snprintf(buf, sizeof buf, "delayed %d", j->every);
		ms_http_respond(j->req, 200, "text/plain", buf, (size_t)n);
		j->ts->done++;
		tjob_end(j);
		return;
	}
	if (j->left == 0) {
		if (j->kind == 1) ms_http_stream_end(j->req);
		else ms_http_stream_end(j->req);
		j->ts->done++;
		tjob_end(j);
		return;
	}
	int n = j->kind == 1 ? snprintf(buf, sizeof buf, "piece %d\n", j->i)
			     : snprintf(buf, sizeof buf, "data: event %d\n\n", j->i);
	int rc = j->kind == 1 ? ms_http_stream_write(j->req, buf, (size_t)n) : ms_http_sse_send(j->req, buf, (size_t)n);
	(void)rc;
	j->i++;
	if (j->left > 0) j->left--;
	if (j->left < 0) uv_timer_stop(t); /* n<0: stay open with heartbeats only */
}

static int q_int(ms_http_req *req, const char *name, int def) {
	char b[32];
	const char *v = ms_http_req_query(req, name, b, sizeof b);
	return v ? atoi(v) : def;
}

static void testsrv_handler(ms_http_req *req, void *ud) {
	testsrv *ts = ud;
	const char *p = req->path;
	if (strncmp(p, "/static/", 8) == 0) {
		ms_http_static_opts o = {"public, max-age=60", 1};
		int rc = ms_http_serve_file(req, ts->root, p + 8, &o);
		if (rc == MS_ENOENT) ms_http_respond_error(req, 404, "not_found", "no file %s", p);
		return;
	}
	if (strcmp(p, "/echo") == 0) {
		char qa[256];
		const char *a = ms_http_req_query(req, "a", qa, sizeof qa);
		ms_http_set_header(req, "X-Method", req->method);
		ms_http_set_header(req, "X-Path", req->path);
		if (a) ms_http_set_header(req, "X-Query-A", a);
		ms_http_respond(req, 200, "text/plain", req->body, req->body_len);
		return;
	}
	if (strcmp(p, "/stats") == 0) {
		char b[128];
		snprintf(b, sizeof b, "{\"closes\":%u,\"inflight\":%u,\"done\":%u}", ts->closes,
			 ms_http_server_inflight(ts->srv), ts->done);
		ms_http_respond_json(req, 200, b);
		return;
	}
	if (strcmp(p, "/drain") == 0) {
		ms_http_server_stop_accepting(ts->srv);
		ms_http_respond(req, 200, "text/plain", "draining", 8);
		return;
	}
	if (strcmp(p, "/hold") == 0) {
		ms_http_on_close(req, hold_on_close, ts);
		return;
	}
	if (strcmp(p, "/big") == 0) {
		int n = q_int(req, "n", 1000);
		char *b = malloc((size_t)n + 1);
		memset(b, 'x', (size_t)n);
		ms_http_respond(req, 200, "application/octet-stream", b, (size_t)n);
		free(b);
		return;
	}
	int late = strcmp(p, "/late") == 0;
	int kind = strcmp(p, "/delay") == 0 || late ? 0 : strcmp(p, "/stream") == 0 ? 1 : strcmp(p, "/sse") == 0 ? 2 : -1;
	if (kind < 0) {
		ms_http_respond_error(req, 404, "not_found", "no route %s", p);
		return;
	}
	tjob *j = calloc(1, sizeof *j);
	j->ts = ts;
	j->req = req;
	j->kind = kind;
	uv_timer_init(ts->loop, &j->timer);
	j->timer.data = j;
	if (!late) ms_http_on_close(req, tjob_on_close, j);
	if (kind == 0) {
		j->every = q_int(req, "ms", 100);
		uv_timer_start(&j->timer, tjob_tick, (uint64_t)j->every, 0);
		return;
	}
	j->left = q_int(req, "n", 3);
	j->every = q_int(req, "ms", 10);
	if (kind == 1) ms_http_stream_start(req, 200, "text/plain");
	else ms_http_sse_start(req, (unsigned)q_int(req, "hb", 0), ": ping\n\n");
	uv_timer_start(&j->timer, tjob_tick, (uint64_t)j->every, (uint64_t)(j->every > 0 ? j->every : 1));
}

#endif
