/* host/http.c: the HTTP/1.1 server on libuv + llhttp (see host/http.h).
 *
 * One connection = one uv_tcp_t, one timer and one request object that is reused for
 * every request on that connection. Bytes read are appended to the connection's input
 * buffer and fed to llhttp; on_message_complete pauses the parser, so the next pipelined
 * request is parsed only after the current response has been finished (answers stay in
 * order, and the request's memory stays put while the handler holds it). Writes go out
 * with uv_try_write first; only what the socket did not take is copied into a write
 * request. The connection keeps reading while a request is in flight so that a client
 * that goes away is noticed (ms_http_on_close).
 */
#include "host/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>

#include "host/http_int.h"

enum { C_IDLE, C_HEAD, C_BODY, C_BUSY, C_CLOSING };
enum { R_NONE, R_PENDING, R_STREAM, R_FILE, R_DONE };

#define IN_HIGH_WATER (1u << 20)   /* stop reading past this much unparsed input */
#define FILE_CHUNK (256u << 10)
#define FILE_HIGH_WATER (512u << 10)
#define LINGER_MS 1000
#define STREAM_MAX_QUEUED (16u << 20) /* a stream reader this far behind is dropped */

typedef struct conn conn;

typedef struct hreq {
	ms_http_req pub;
	conn *conn;            /* NULL once the client is gone */
	int state;
	int status;
	int keep_alive;
	int http10;
	int chunked;           /* streaming with Transfer-Encoding: chunked */
	int gone;              /* client disconnected before the response finished */
	int orphan;            /* gone, nobody told: the handler's final call frees it */
	uint64_t bytes;        /* body bytes sent */
	uint64_t t0;
	ms_buf xh;             /* headers from ms_http_set_header, "Name: v\r\n"... */
	ms_buf url, hbuf, body, path;
	size_t *hoff;          /* pairs of (name, value) offsets into hbuf */
	size_t nh, hcap;
	ms_http_header *hdrs;
	size_t hdrs_cap;
	size_t field_start, value_start, header_bytes;
	void (*on_close)(ms_http_req *, void *);
	void *on_close_ud;
	int fd;                /* R_FILE: the file being sent */
	uint64_t foff, fleft;
	char peer[64];
} hreq;

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	ms_http_server *srv;
	conn *prev, *next;
	llhttp_t parser;
	int state;
	int processing;
	int reading;
	int rejected;
	int closed;
	int lingering;
	int failed;            /* a write failed: closing on the next loop turn */
	int nclosed;           /* handles closed so far (2 = free) */
	int err_status;
	ms_buf in;
	size_t in_off;
	ms_buf out;
	size_t queued;         /* bytes handed to uv_write, not yet written */
	hreq *rq;
	uv_shutdown_t sreq;
};

struct ms_http_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_timer_t logt;     /* flushes the access log 100 ms after its first pending line */
	int listening;
	ms_http_limits lim;
	ms_http_handler handler;
	void *ud;
	llhttp_settings_t settings;
	conn *conns;
	unsigned nconns;
	unsigned inflight;
	int port;
	int draining;
	int closing;
	int handles;
	time_t date_t;
	char date[40];
	time_t log_t;
	char log_stamp[32];
	ms_buf log;
	http_file_cache *fc;
	char rbuf[64 * 1024];
};

typedef struct wreq {
	uv_write_t req;
	conn *c;
	size_t len;
	char data[];
} wreq;

static void conn_close(conn *c);
static void conn_process(conn *c);
static void req_finish(hreq *r);

/* ---------------------------------------------------------------- small helpers */

const char *ms_http_status_text(int s) {
	switch (s) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 499: return "Client Closed Request";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return s < 300 ? "OK" : s < 400 ? "Redirect" : s < 500 ? "Client Error" : "Server Error";
	}
}

static int hexval(int ch) {
	if (ch >= '0' && ch <= '9') return ch - '0';
	if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
	return -1;
}

int ms_http_url_decode(const char *src, size_t len, char *dst, size_t dstlen, int plus_is_space) {
	size_t o = 0;
	if (!dst || dstlen == 0) return MS_EINVAL;
	for (size_t i = 0; i < len; i++) {
		int ch = (unsigned char)src[i];
		if (ch == '%') {
			int a = i + 1 < len ? hexval((unsigned char)src[i + 1]) : -1;
			int b = i + 2 < len ? hexval((unsigned char)src[i + 2]) : -1;
			if (a < 0 || b < 0) return MS_EFORMAT;
			ch = a * 16 + b;
			i += 2;
		} else if (ch == '+' && plus_is_space) {
			ch = ' ';
		}
		if (ch == 0) return MS_EFORMAT;
		if (o + 1 >= dstlen) return MS_ETOOBIG;
		dst[o++] = (char)ch;
	}
	dst[o] = 0;
	return 0;
}

const char *ms_http_req_header(const ms_http_req *req, const char *name) {
	for (size_t i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
	return NULL;
}

const char *ms_http_req_query(const ms_http_req *req, const char *name, char *buf, size_t buflen) {
	const char *q = req->query;
	size_t nlen = strlen(name);
	char key[256];
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t plen = amp ? (size_t)(amp - q) : strlen(q);
		const char *eq = memchr(q, '=', plen);
		size_t klen = eq ? (size_t)(eq - q) : plen;
		if (ms_http_url_decode(q, klen, key, sizeof key, 1) == 0 && strlen(key) == nlen &&
		    memcmp(key, name, nlen) == 0) {
			const char *v = eq ? eq + 1 : q + plen;
			size_t vlen = eq ? plen - klen - 1 : 0;
			if (ms_http_url_decode(v, vlen, buf, buflen, 1) != 0) return NULL;
			return buf;
		}
		q = amp ? amp + 1 : NULL;
	}
	return NULL;
}

void ms_http_limits_default(ms_http_limits *l) {
	l->max_url = 8 << 10;
	l->max_headers = 32 << 10;
	l->max_body = 16 << 20;
	l->max_connections = 1024;
	l->header_timeout_ms = 10000;
	l->body_timeout_ms = 30000;
	l->idle_timeout_ms = 60000;
	l->access_log = 1;
}

/* The Date header value, formatted once per second. */
static const char *http_date(ms_http_server *s) {
	time_t now = time(NULL);
	if (now != s->date_t) {
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		s->date_t = now;
	}
	return s->date;
}

static void buf_lit(ms_buf *b, const char *s) { ms_buf_append(b, s, strlen(s)); }

static void buf_u64(ms_buf *b, uint64_t v) {
	char tmp[24];
	int n = 0;
	do tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10); while ((v /= 10) && n < 23);
	ms_buf_append(b, tmp + sizeof tmp - n, (size_t)n);
}

/* Access log lines collect in one buffer written at most every 100 ms, or at 32 KiB (a
 * write per request, or per busy loop turn, costs as much as the request itself), and are
 * put together by hand: a printf per request showed up in profiles. Same shape as
 * ms_log's lines. */
static void on_log_timer(uv_timer_t *t);

static void access_log(ms_http_server *s, hreq *r, int status) {
	if (!s || !s->lim.access_log) return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != s->log_t) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		strftime(s->log_stamp, sizeof s->log_stamp, "%Y-%m-%dT%H:%M:%S.", &tm);
		s->log_t = ts.tv_sec;
	}
	ms_buf *b = &s->log;
	if (!b->len && !s->closing) uv_timer_start(&s->logt, on_log_timer, 100, 0);
	char ms3[4] = {(char)('0' + ts.tv_nsec / 100000000), (char)('0' + ts.tv_nsec / 10000000 % 10),
		       (char)('0' + ts.tv_nsec / 1000000 % 10), 0};
	buf_lit(b, s->log_stamp);
	buf_lit(b, ms3);
	buf_lit(b, "Z info http: ");
	buf_lit(b, r->pub.method ? r->pub.method : "-");
	ms_buf_append(b, " ", 1);
	const char *path = r->pub.target && *r->pub.target ? r->pub.target : "-";
	size_t pl = strlen(path);
	ms_buf_append(b, path, pl > 512 ? 512 : pl);
	ms_buf_append(b, " ", 1);
	buf_u64(b, (uint64_t)status);
	ms_buf_append(b, " ", 1);
	buf_u64(b, r->bytes);
	ms_buf_append(b, " ", 1);
	uint64_t us = r->t0 ? (ms_now_ns() - r->t0) / 1000 : 0;
	buf_u64(b, us / 1000);
	char frac[6] = {'.', (char)('0' + us % 1000 / 100), (char)('0' + us % 100 / 10), (char)('0' + us % 10), 'm', 's'};
	ms_buf_append(b, frac, 6);
	ms_buf_append(b, " ", 1);
	buf_lit(b, r->peer);
	ms_buf_append(b, "\n", 1);
	if (b->len > 32768) {
		if (write(2, b->data, b->len) < 0) {}
		ms_buf_reset(b);
	}
}

static void on_log_timer(uv_timer_t *t) {
	ms_http_server *s = t->data;
	if (s->log.len) {
		if (write(2, s->log.data, s->log.len) < 0) {}
		ms_buf_reset(&s->log);
	}
}

/* ---------------------------------------------------------------- request objects */

static void req_reset(hreq *r) {
	ms_buf_reset(&r->xh);
	ms_buf_reset(&r->url);
	ms_buf_reset(&r->hbuf);
	ms_buf_reset(&r->body);
	ms_buf_reset(&r->path);
	r->nh = 0;
	r->field_start = r->value_start = r->header_bytes = 0;
	r->state = R_NONE;
	r->status = 0;
	r->bytes = 0;
	r->chunked = 0;
	r->gone = 0;
	r->on_close = NULL;
	r->on_close_ud = NULL;
	r->fd = -1;
	r->foff = r->fleft = 0;
	memset(&r->pub, 0, sizeof r->pub);
	r->pub.method = NULL;
	r->pub.target = "";
	r->pub.path = "";
	r->pub.query = "";
	r->pub.body = "";
	r->pub.peer = r->peer;
	r->t0 = 0;
}

static void req_free(hreq *r) {
	if (!r) return;
	if (r->fd >= 0) close(r->fd);
	ms_buf_free(&r->xh);
	ms_buf_free(&r->url);
	ms_buf_free(&r->hbuf);
	ms_buf_free(&r->body);
	ms_buf_free(&r->path);
	free(r->hoff);
	free(r->hdrs);
	free(r);
}

/* Points pub.headers at the collected (name, value) pairs. */
static int req_build_headers(hreq *r) {
	if (r->nh > r->hdrs_cap) {
		ms_http_header *n = realloc(r->hdrs, r->nh * sizeof *n);
		if (!n) return MS_ENOMEM;
		r->hdrs = n;
		r->hdrs_cap = r->nh;
	}
	for (size_t i = 0; i < r->nh; i++) {
		r->hdrs[i].name = r->hbuf.data + r->hoff[2 * i];
		r->hdrs[i].value = r->hbuf.data + r->hoff[2 * i + 1];
	}
	r->pub.headers = r->hdrs;
	r->pub.nheaders = r->nh;
	return 0;
}

/* ---------------------------------------------------------------- writing */

static void on_write(uv_write_t *w, int status);

static void file_pump(conn *c);

static void on_timer(uv_timer_t *t);

/* A write failed. The close (and the handler's on_close) happens on the next loop turn,
 * never inside the handler's own call to respond or write. */
static int conn_fail(conn *c) {
	if (!c->failed && !c->closed) {
		c->failed = 1;
		if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
		uv_timer_start(&c->timer, on_timer, 0, 0);
	}
	return MS_ECLOSED;
}

/* Writes bufs in order after anything already queued; copies what is not written now. */
static int conn_write(conn *c, const uv_buf_t *bufs, unsigned n) {
	if (c->closed || c->lingering || c->failed) return MS_ECLOSED;
	size_t total = 0;
	for (unsigned i = 0; i < n; i++) total += bufs[i].len;
	if (total == 0) return 0;
	size_t done = 0;
	if (c->queued == 0) {
		int w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
		if (w >= 0) done = (size_t)w;
		else if (w != UV_EAGAIN) return conn_fail(c);
	}
	if (done == total) return 0;
	wreq *wr = malloc(sizeof *wr + (total - done));
	if (!wr) return conn_fail(c);
	size_t skip = done, o = 0;
	for (unsigned i = 0; i < n; i++) {
		size_t l = bufs[i].len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		memcpy(wr->data + o, bufs[i].base + skip, l - skip);
		o += l - skip;
		skip = 0;
	}
	wr->c = c;
	wr->len = o;
	uv_buf_t b = uv_buf_init(wr->data, (unsigned)o);
	if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
		free(wr);
		return conn_fail(c);
	}
	c->queued += o;
	return 0;
}

static void on_write(uv_write_t *w, int status) {
	wreq *wr = (wreq *)w;
	conn *c = wr->c;
	c->queued -= wr->len;
	free(wr);
	if (status < 0) {
		conn_close(c);
		return;
	}
	if (!c->closed && c->rq && c->rq->state == R_FILE) file_pump(c);
}

/* Status line and headers into c->out. clen >= 0: Content-Length; -1: streamed body
 * (chunked, or close-delimited for HTTP/1.0); -2: no body at all (1xx/204/304). */
static void head_build(conn *c, hreq *r, int status, const char *ctype, int64_t clen, const char *extra,
		       size_t extra_len) {
	ms_buf *o = &c->out;
	ms_buf_reset(o);
	ms_buf_reserve(o, 256 + extra_len + r->xh.len);
	buf_lit(o, "HTTP/1.1 ");
	buf_u64(o, (uint64_t)status);
	ms_buf_append(o, " ", 1);
	buf_lit(o, ms_http_status_text(status));
	buf_lit(o, "\r\nDate: ");
	buf_lit(o, http_date(c->srv));
	buf_lit(o, "\r\n");
	if (ctype && clen != -2) {
		buf_lit(o, "Content-Type: ");
		buf_lit(o, ctype);
		buf_lit(o, "\r\n");
	}
	if (clen >= 0) {
		buf_lit(o, "Content-Length: ");
		buf_u64(o, (uint64_t)clen);
		buf_lit(o, "\r\n");
	} else if (clen == -1) {
		if (r->http10) r->keep_alive = 0;
		else {
			buf_lit(o, "Transfer-Encoding: chunked\r\n");
			r->chunked = 1;
		}
	}
	if (c->srv->draining) r->keep_alive = 0;
	if (!r->keep_alive) buf_lit(o, "Connection: close\r\n");
	else if (r->http10) buf_lit(o, "Connection: keep-alive\r\n");
	if (extra_len) ms_buf_append(o, extra, extra_len);
	if (r->xh.len) ms_buf_append(o, r->xh.data, r->xh.len);
	buf_lit(o, "\r\n");
}

static void conn_shutdown(conn *c);
static void conn_start_read(conn *c);

/* The response is complete (all bytes handed to the socket): log, then go on with the
 * next request on this connection or close it. */
static void req_finish(hreq *r) {
	conn *c = r->conn;
	if (!c) { /* the client left: an orphan is freed here, else the connection owns it */
		if (r->orphan) req_free(r);
		return;
	}
	ms_http_server *s = c->srv;
	r->state = R_DONE;
	if (s->inflight) s->inflight--;
	access_log(s, r, r->status);
	if (c->closed || c->lingering || c->failed) return;
	if (!r->keep_alive || s->draining || llhttp_get_upgrade(&c->parser)) {
		conn_shutdown(c);
		return;
	}
	c->state = C_IDLE;
	llhttp_resume(&c->parser);
	uv_timer_start(&c->timer, on_timer, c->srv->lim.idle_timeout_ms, 0);
	if (!c->reading) conn_start_read(c);
	if (!c->processing && c->in_off < c->in.len) conn_process(c);
}

/* An error answered before any handler saw the request; the connection closes after. */
static void conn_error(conn *c, int status, const char *msg) {
	if (c->closed || c->lingering) return;
	hreq *r = c->rq;
	char body[256];
	int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"http_%d\",\"message\":\"%s\"}}", status, msg);
	r->keep_alive = 0;
	head_build(c, r, status, "application/json", n, NULL, 0);
	ms_buf_reset(&r->xh);
	uv_buf_t b[2] = {uv_buf_init(c->out.data, (unsigned)c->out.len), uv_buf_init(body, (unsigned)n)};
	r->bytes = (uint64_t)n;
	conn_write(c, b, 2);
	access_log(c->srv, r, status);
	conn_shutdown(c);
}

/* ---------------------------------------------------------------- closing */

static void server_maybe_free(ms_http_server *s);
static void on_server_handle_closed(uv_handle_t *h);

static void on_conn_handle_closed(uv_handle_t *h) {
	conn *c = h->data;
	if (++c->nclosed < 2) return;
	ms_http_server *s = c->srv;
	req_free(c->rq);
	ms_buf_free(&c->in);
	ms_buf_free(&c->out);
	free(c);
	s->handles--;
	server_maybe_free(s);
}

/* Closes at once. A request still waiting for (or in the middle of) its response is
 * told through on_close; without one it becomes an orphan freed by its final respond. */
static void conn_close(conn *c) {
	if (c->closed) return;
	c->closed = 1;
	c->state = C_CLOSING;
	ms_http_server *s = c->srv;
	if (c->prev) c->prev->next = c->next;
	else if (s->conns == c) s->conns = c->next;
	if (c->next) c->next->prev = c->prev;
	c->prev = c->next = NULL;
	if (!c->rejected && s->nconns) s->nconns--;
	hreq *r = c->rq;
	if (r && (r->state == R_PENDING || r->state == R_STREAM || r->state == R_FILE)) {
		if (s->inflight) s->inflight--;
		int was_file = r->state == R_FILE;
		access_log(s, r, 499);
		r->gone = 1;
		r->conn = NULL;
		if (r->fd >= 0) {
			close(r->fd);
			r->fd = -1;
		}
		if (r->on_close) {
			void (*cb)(ms_http_req *, void *) = r->on_close;
			r->on_close = NULL;
			r->state = R_DONE;
			cb(&r->pub, r->on_close_ud);
		} else if (!was_file) {
			c->rq = NULL; /* the handler still holds it: freed by its respond/stream_end */
			r->orphan = 1;
		} else {
			r->state = R_DONE;
		}
	}
	if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = 0;
	uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
	uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_linger_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
	(void)b;
	if (n < 0) conn_close(st->data);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
	(void)sz;
	conn *c = h->data;
	b->base = c->srv->rbuf;
	b->len = sizeof c->srv->rbuf;
}

static void on_shutdown(uv_shutdown_t *sr, int status) {
	conn *c = sr->data;
	if (c->closed) return;
	if (status < 0) {
		conn_close(c);
		return;
	}
	/* Lingering close: read and drop what the client still sends, so that closing with
	 * unread input does not reset the connection before it has read our answer. */
	c->lingering = 1;
	if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = 1;
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_linger_read);
	uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

/* Closes after everything queued has been written. */
static void conn_shutdown(conn *c) {
	if (c->closed || c->failed || c->state == C_CLOSING) return;
	c->state = C_CLOSING;
	uv_timer_stop(&c->timer);
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
}

/* ---------------------------------------------------------------- parsing */

#define CONN(p) ((conn *)(p)->data)

static int cb_message_begin(llhttp_t *p) {
	conn *c = CONN(p);
	hreq *r = c->rq;
	req_reset(r);
	r->t0 = ms_now_ns();
	c->state = C_HEAD;
	uv_timer_start(&c->timer, on_timer, c->srv->lim.header_timeout_ms, 0);
	return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t len) {
	conn *c = CONN(p);
	hreq *r = c->rq;
	if (r->url.len + len > c->srv->lim.max_url) {
		c->err_status = 414;
		return -1;
	}
	return ms_buf_append(&r->url, at, len) ? -1 : 0;
}

static int add_header_bytes(conn *c, size_t len) {
	hreq *r = c->rq;
	r->header_bytes += len;
	if (r->header_bytes > c->srv->lim.max_headers) {
		c->err_status = 431;
		return -1;
	}
	return 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len) {
	conn *c = CONN(p);
	if (add_header_bytes(c, len)) return -1;
	return ms_buf_append(&c->rq->hbuf, at, len) ? -1 : 0;
}

static int cb_header_field_complete(llhttp_t *p) {
	hreq *r = CONN(p)->rq;
	if (ms_buf_append(&r->hbuf, "", 1)) return -1;
	r->value_start = r->hbuf.len;
	return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len) {
	conn *c = CONN(p);
	if (add_header_bytes(c, len + 4)) return -1;
	return ms_buf_append(&c->rq->hbuf, at, len) ? -1 : 0;
}

static int cb_header_value_complete(llhttp_t *p) {
	hreq *r = CONN(p)->rq;
	while (r->hbuf.len > r->value_start &&
	       (r->hbuf.data[r->hbuf.len - 1] == ' ' || r->hbuf.data[r->hbuf.len - 1] == '\t'))
		r->hbuf.len--;
	if (ms_buf_append(&r->hbuf, "", 1)) return -1;
	if (r->nh == r->hcap) {
		size_t nc = r->hcap ? r->hcap * 2 : 16;
		size_t *n = realloc(r->hoff, nc * 2 * sizeof *n);
		if (!n) return -1;
		r->hoff = n;
		r->hcap = nc;
	}
	r->hoff[2 * r->nh] = r->field_start;
	r->hoff[2 * r->nh + 1] = r->value_start;
	r->nh++;
	r->field_start = r->hbuf.len;
	return 0;
}

/* Fills method, target, path and query from the URL. */
static int req_parse_target(conn *c, hreq *r) {
	r->pub.method = llhttp_method_name((llhttp_method_t)c->parser.method);
	r->pub.is_head = c->parser.method == HTTP_HEAD;
	r->http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;
	if (ms_buf_append(&r->url, "", 0)) return MS_ENOMEM;
	char *t = r->url.data;
	if (!t) return MS_EFORMAT;
	r->pub.target = t;
	const char *p = t;
	if (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0) {
		p = strchr(p + 8, '/');
		if (!p) p = "/";
	}
	const char *q = strchr(p, '?');
	size_t plen = q ? (size_t)(q - p) : strlen(p);
	r->pub.query = q ? q + 1 : "";
	if (ms_buf_reserve(&r->path, plen + 1)) return MS_ENOMEM;
	int rc = ms_http_url_decode(p, plen, r->path.data, plen + 1, 0);
	if (rc) return rc;
	r->path.len = strlen(r->path.data);
	r->pub.path = r->path.data;
	return 0;
}

static int cb_headers_complete(llhttp_t *p) {
	conn *c = CONN(p);
	hreq *r = c->rq;
	ms_http_server *s = c->srv;
	if (p->http_major != 1) {
		c->err_status = 505;
		return -1;
	}
	if (req_parse_target(c, r) != 0) {
		c->err_status = 400;
		return -1;
	}
	if (req_build_headers(r)) return -1;
	int has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > s->lim.max_body) {
		c->err_status = 413;
		return -1;
	}
	if (has_body) {
		const char *ex = ms_http_req_header(&r->pub, "expect");
		if (ex && strcasecmp(ex, "100-continue") != 0) {
			c->err_status = 417;
			return -1;
		}
		if (ex && !r->http10) {
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
			conn_write(c, &b, 1);
		}
		c->state = C_BODY;
		uv_timer_start(&c->timer, on_timer, s->lim.body_timeout_ms, 0);
	}
	return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t len) {
	conn *c = CONN(p);
	hreq *r = c->rq;
	if (r->body.len + len > c->srv->lim.max_body) {
		c->err_status = 413;
		return -1;
	}
	return ms_buf_append(&r->body, at, len) ? -1 : 0;
}

static int cb_message_complete(llhttp_t *p) {
	conn *c = CONN(p);
	hreq *r = c->rq;
	if (req_build_headers(r)) return -1; /* trailers may have moved hbuf */
	r->keep_alive = llhttp_should_keep_alive(p);
	r->pub.body = r->body.data ? r->body.data : "";
	r->pub.body_len = r->body.len;
	return HPE_PAUSED;
}

static void conn_dispatch(conn *c) {
	hreq *r = c->rq;
	ms_http_server *s = c->srv;
	c->state = C_BUSY;
	uv_timer_stop(&c->timer);
	r->state = R_PENDING;
	s->inflight++;
	s->handler(&r->pub, s->ud);
}

static void conn_process(conn *c) {
	if (c->processing) return;
	c->processing = 1;
	while (!c->closed && !c->failed && (c->state == C_IDLE || c->state == C_HEAD || c->state == C_BODY) &&
	       c->in_off < c->in.len) {
		const char *d = c->in.data + c->in_off;
		size_t n = c->in.len - c->in_off;
		llhttp_errno_t e = llhttp_execute(&c->parser, d, n);
		if (e == HPE_OK) {
			c->in_off = c->in.len;
		} else if (e == HPE_PAUSED) {
			const char *pos = llhttp_get_error_pos(&c->parser);
			c->in_off += pos && pos >= d && pos <= d + n ? (size_t)(pos - d) : n;
			conn_dispatch(c);
		} else {
			int st = c->err_status ? c->err_status : 400;
			const char *why = st == 414 ? "request target too long" :
					  st == 431 ? "request headers too large" :
					  st == 413 ? "request body too large" :
					  st == 417 ? "only Expect: 100-continue is supported" :
					  st == 505 ? "only HTTP/1.x is supported" : llhttp_get_error_reason(&c->parser);
			conn_error(c, st, why && !strchr(why, '"') ? why : "malformed request");
			break;
		}
	}
	if (c->in_off >= c->in.len) {
		ms_buf_reset(&c->in);
		c->in_off = 0;
	}
	c->processing = 0;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
	conn *c = st->data;
	if (n == 0) return;
	if (n < 0) { /* EOF or error: the client is gone (or done) */
		conn_close(c);
		return;
	}
	if (c->closed || c->state == C_CLOSING) return;
	if (ms_buf_append(&c->in, b->base, (size_t)n)) {
		conn_close(c);
		return;
	}
	if (c->state == C_BUSY) {
		if (c->in.len - c->in_off > IN_HIGH_WATER) {
			uv_read_stop(st);
			c->reading = 0;
		}
		return;
	}
	if (c->state == C_BODY) uv_timer_start(&c->timer, on_timer, c->srv->lim.body_timeout_ms, 0);
	conn_process(c);
}

static void conn_start_read(conn *c) {
	c->reading = 1;
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---------------------------------------------------------------- timers */

static void on_timer(uv_timer_t *t) {
	conn *c = t->data;
	if (c->closed) return;
	if (c->lingering || c->failed) {
		conn_close(c);
		return;
	}
	switch (c->state) {
	case C_IDLE: conn_close(c); break;
	case C_HEAD: conn_error(c, 408, "request headers not received in time"); break;
	case C_BODY: conn_error(c, 408, "request body not received in time"); break;
	default: break;
	}
}

/* ---------------------------------------------------------------- accepting */

static void on_connection(uv_stream_t *ls, int status) {
	ms_http_server *s = ls->data;
	if (status < 0) return;
	conn *c = calloc(1, sizeof *c);
	hreq *r = c ? calloc(1, sizeof *r) : NULL;
	if (!c || !r) {
		free(c);
		free(r);
		return;
	}
	c->srv = s;
	c->rq = r;
	r->conn = c;
	r->fd = -1;
	ms_buf_init(&c->in);
	ms_buf_init(&c->out);
	uv_tcp_init(s->loop, &c->tcp);
	uv_timer_init(s->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	s->handles++;
	if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
		c->rejected = 1;
		c->closed = 1;
		uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
		uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	struct sockaddr_storage ss;
	int sl = sizeof ss;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&ss, r->peer, sizeof r->peer);
		else uv_ip4_name((struct sockaddr_in *)&ss, r->peer, sizeof r->peer);
	} else {
		snprintf(r->peer, sizeof r->peer, "-");
	}
	req_reset(r);
	llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
	c->parser.data = c;
	if (s->nconns >= s->lim.max_connections || s->draining) {
		c->rejected = 1;
		conn_start_read(c);
		conn_error(c, 503, "too many connections");
		return;
	}
	s->nconns++;
	c->next = s->conns;
	if (s->conns) s->conns->prev = c;
	s->conns = c;
	c->state = C_IDLE;
	uv_timer_start(&c->timer, on_timer, s->lim.idle_timeout_ms, 0);
	conn_start_read(c);
}

/* ---------------------------------------------------------------- server */

int ms_http_server_new(uv_loop_t *loop, const char *host, int port, const ms_http_limits *limits,
		       ms_http_handler handler, void *ud, ms_http_server **out) {
	*out = NULL;
	if (!loop || !handler || port < 0 || port > 65535) return MS_EINVAL;
	ms_http_server *s = calloc(1, sizeof *s);
	if (!s) return MS_ENOMEM;
	ms_http_limits d;
	ms_http_limits_default(&d);
	s->lim = limits ? *limits : d;
	/* zero means "the default" for every number */
	if (!s->lim.max_url) s->lim.max_url = d.max_url;
	if (!s->lim.max_headers) s->lim.max_headers = d.max_headers;
	if (!s->lim.max_body) s->lim.max_body = d.max_body;
	if (!s->lim.max_connections) s->lim.max_connections = d.max_connections;
	if (!s->lim.header_timeout_ms) s->lim.header_timeout_ms = d.header_timeout_ms;
	if (!s->lim.body_timeout_ms) s->lim.body_timeout_ms = d.body_timeout_ms;
	if (!s->lim.idle_timeout_ms) s->lim.idle_timeout_ms = d.idle_timeout_ms;
	s->loop = loop;
	s->handler = handler;
	s->ud = ud;
	ms_buf_init(&s->log);
	llhttp_settings_init(&s->settings);
	s->settings.on_message_begin = cb_message_begin;
	s->settings.on_url = cb_url;
	s->settings.on_header_field = cb_header_field;
	s->settings.on_header_field_complete = cb_header_field_complete;
	s->settings.on_header_value = cb_header_value;
	s->settings.on_header_value_complete = cb_header_value_complete;
	s->settings.on_headers_complete = cb_headers_complete;
	s->settings.on_body = cb_body;
	s->settings.on_message_complete = cb_message_complete;

	struct sockaddr_storage addr;
	const char *h = host && *host ? host : "127.0.0.1";
	int rc;
	if (strchr(h, ':')) rc = uv_ip6_addr(h, port, (struct sockaddr_in6 *)&addr);
	else rc = uv_ip4_addr(h, port, (struct sockaddr_in *)&addr);
	if (rc) {
		free(s);
		return MS_EINVAL;
	}
	uv_tcp_init(loop, &s->listener);
	s->listener.data = s;
	s->handles = 1;
	rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
	if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
	if (rc != 0) {
		MS_ERROR("http", "cannot listen on %s:%d: %s", h, port, uv_strerror(rc));
		/* the struct must outlive the listener handle: freed by its close callback */
		s->closing = 1;
		uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
		return rc == UV_EADDRINUSE ? MS_EBUSY : MS_ENET;
	}
	s->listening = 1;
	struct sockaddr_storage ba;
	int bl = sizeof ba;
	uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ba, &bl);
	s->port = ntohs(ba.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ba)->sin6_port
						 : ((struct sockaddr_in *)&ba)->sin_port);
	uv_timer_init(loop, &s->logt);
	s->logt.data = s;
	uv_unref((uv_handle_t *)&s->logt);
	s->handles++;
	*out = s;
	return 0;
}

int ms_http_server_port(const ms_http_server *s) { return s ? s->port : 0; }
unsigned ms_http_server_inflight(const ms_http_server *s) { return s ? s->inflight : 0; }

static void on_server_handle_closed(uv_handle_t *h) {
	ms_http_server *s = h->data;
	s->handles--;
	server_maybe_free(s);
}

static void server_maybe_free(ms_http_server *s) {
	if (!s->closing || s->handles > 0) return;
	if (s->log.len && write(2, s->log.data, s->log.len) < 0) {}
	ms_buf_free(&s->log);
	http_file_cache_free(s->fc);
	free(s);
}

void ms_http_server_stop_accepting(ms_http_server *s) {
	if (!s || !s->listening) return;
	s->listening = 0;
	s->draining = 1;
	uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
	/* idle keep-alive connections go now; busy ones close after their response */
	for (conn *c = s->conns, *n; c; c = n) {
		n = c->next;
		if (c->state == C_IDLE) conn_close(c);
	}
}

void ms_http_server_close(ms_http_server *s) {
	if (!s || s->closing) return;
	if (s->listening) {
		s->listening = 0;
		uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
	}
	s->draining = 1;
	while (s->conns) conn_close(s->conns);
	s->closing = 1;
	uv_close((uv_handle_t *)&s->logt, on_server_handle_closed);
}

/* ---------------------------------------------------------------- responses */

static hreq *live(ms_http_req *req, int want_state) {
	hreq *r = (hreq *)req;
	if (!r) return NULL;
	if (!r->conn) return NULL;
	if (r->state != want_state) return NULL;
	return r;
}

void ms_http_set_header(ms_http_req *req, const char *name, const char *value) {
	hreq *r = live(req, R_PENDING);
	if (!r || !name || !value) return;
	static const char *const own[] = {"content-length", "transfer-encoding", "date", "connection"};
	for (size_t i = 0; i < MS_ARRAY_LEN(own); i++)
		if (strcasecmp(name, own[i]) == 0) return;
	/* header injection guard: no CR/LF in either part */
	if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n")) return;
	ms_buf_puts(&r->xh, name);
	ms_buf_append(&r->xh, ": ", 2);
	ms_buf_puts(&r->xh, value);
	ms_buf_append(&r->xh, "\r\n", 2);
}

/* For a request whose client left: the handler's final call frees it. */
static int orphan_done(ms_http_req *req) {
	hreq *r = (hreq *)req;
	if (r && r->orphan) {
		req_free(r);
		return 1;
	}
	return 0;
}

void http_respond_ex(ms_http_req *req, int status, const char *ctype, const char *extra, size_t extra_len,
		     const void *body, size_t len) {
	hreq *r = live(req, R_PENDING);
	if (!r) {
		orphan_done(req);
		return;
	}
	conn *c = r->conn;
	int nobody = status < 200 || status == 204 || status == 304;
	head_build(c, r, status, ctype, nobody ? -2 : (int64_t)len, extra, extra_len);
	size_t blen = nobody || r->pub.is_head ? 0 : len;
	uv_buf_t b[2] = {uv_buf_init(c->out.data, (unsigned)c->out.len), uv_buf_init((char *)body, (unsigned)blen)};
	r->status = status;
	r->bytes = blen;
	conn_write(c, b, 2);
	req_finish(r);
}

void http_respond_fd(ms_http_req *req, int status, const char *ctype, const char *extra, size_t extra_len,
		     int fd, off_t off, uint64_t len) {
	hreq *r = live(req, R_PENDING);
	if (!r) {
		close(fd);
		orphan_done(req);
		return;
	}
	conn *c = r->conn;
	head_build(c, r, status, ctype, (int64_t)len, extra, extra_len);
	uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	r->status = status;
	if (conn_write(c, &b, 1) != 0 || r->pub.is_head || len == 0) {
		close(fd);
		req_finish(r);
		return;
	}
	r->fd = fd;
	r->foff = (uint64_t)off;
	r->fleft = len;
	r->state = R_FILE;
	file_pump(c);
}

/* Reads the next pieces of the file straight into write requests, keeping at most
 * FILE_HIGH_WATER bytes queued; on_write calls back here as the socket drains. */
static void file_pump(conn *c) {
	hreq *r = c->rq;
	if (c->failed) return;
	while (r->fleft > 0 && c->queued < FILE_HIGH_WATER) {
		size_t n = r->fleft < FILE_CHUNK ? (size_t)r->fleft : FILE_CHUNK;
		wreq *wr = malloc(sizeof *wr + n);
		if (!wr) {
			conn_fail(c);
			return;
		}
		ssize_t got = pread(r->fd, wr->data, n, (off_t)r->foff);
		if (got <= 0) { /* the file shrank under us: the length promised cannot be kept */
			free(wr);
			conn_fail(c);
			return;
		}
		wr->c = c;
		wr->len = (size_t)got;
		uv_buf_t b = uv_buf_init(wr->data, (unsigned)got);
		if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
			free(wr);
			conn_fail(c);
			return;
		}
		c->queued += (size_t)got;
		r->foff += (uint64_t)got;
		r->fleft -= (uint64_t)got;
		r->bytes += (uint64_t)got;
	}
	if (r->fleft == 0) {
		close(r->fd);
		r->fd = -1;
		r->state = R_PENDING;
		req_finish(r);
	}
}

void ms_http_respond(ms_http_req *req, int status, const char *ctype, const void *body, size_t len) {
	http_respond_ex(req, status, ctype, NULL, 0, body, len);
}

void ms_http_respond_json(ms_http_req *req, int status, const char *json) {
	http_respond_ex(req, status, "application/json", NULL, 0, json, json ? strlen(json) : 0);
}

static void json_escape(ms_buf *b, const char *s) {
	ms_buf_append(b, "\"", 1);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			char e[2] = {'\\', (char)ch};
			ms_buf_append(b, e, 2);
		} else if (ch == '\n') ms_buf_append(b, "\\n", 2);
		else if (ch == '\r') ms_buf_append(b, "\\r", 2);
		else if (ch == '\t') ms_buf_append(b, "\\t", 2);
		else if (ch < 0x20) ms_buf_printf(b, "\\u%04x", ch);
		else ms_buf_append(b, (const char *)&ch, 1);
	}
	ms_buf_append(b, "\"", 1);
}

void ms_http_respond_error(ms_http_req *req, int status, const char *code, const char *fmt, ...) {
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	ms_buf b;
	ms_buf_init(&b);
	ms_buf_puts(&b, "{\"error\":{\"code\":");
	json_escape(&b, code ? code : "error");
	ms_buf_puts(&b, ",\"message\":");
	json_escape(&b, msg);
	ms_buf_puts(&b, "}}");
	http_respond_ex(req, status, "application/json", NULL, 0, b.data ? b.data : "", b.len);
	ms_buf_free(&b);
}

int ms_http_stream_start(ms_http_req *req, int status, const char *ctype) {
	hreq *r = live(req, R_PENDING);
	if (!r) return MS_ECLOSED;
	conn *c = r->conn;
	head_build(c, r, status, ctype, -1, NULL, 0);
	uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	r->status = status;
	r->state = R_STREAM;
	return conn_write(c, &b, 1);
}

int ms_http_stream_write(ms_http_req *req, const void *data, size_t len) {
	hreq *r = live(req, R_STREAM);
	if (!r) return MS_ECLOSED;
	if (len == 0 || r->pub.is_head) return 0;
	conn *c = r->conn;
	if (c->queued > STREAM_MAX_QUEUED) return conn_fail(c); /* the client stopped reading */
	r->bytes += len;
	if (!r->chunked) {
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
		return conn_write(c, &b, 1);
	}
	char hx[24];
	int n = snprintf(hx, sizeof hx, "%zx\r\n", len);
	uv_buf_t b[3] = {uv_buf_init(hx, (unsigned)n), uv_buf_init((char *)data, (unsigned)len), uv_buf_init("\r\n", 2)};
	return conn_write(c, b, 3);
}

void ms_http_stream_end(ms_http_req *req) {
	hreq *r = live(req, R_STREAM);
	if (!r) {
		orphan_done(req);
		return;
	}
	conn *c = r->conn;
	uv_timer_stop(&c->timer);
	if (r->chunked && !r->pub.is_head) {
		uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
		conn_write(c, &b, 1);
	}
	if (c->closed) return;
	if (!r->chunked) r->keep_alive = 0; /* the end of the body is the end of the connection */
	req_finish(r);
}

/* SSE heartbeats: the connection's timer (free while the request is in flight) fires
 * after heartbeat_ms without a send; every send restarts it. */
static void on_heartbeat(uv_timer_t *t) {
	conn *c = t->data;
	if (c->closed || c->failed || !c->rq || c->rq->state != R_STREAM) return;
	hreq *r = c->rq;
	const char *txt = r->xh.data; /* the heartbeat text is kept in xh once headers are out */
	ms_http_stream_write(&r->pub, txt, r->xh.len);
}

int ms_http_sse_start(ms_http_req *req, unsigned heartbeat_ms, const char *heartbeat_text) {
	hreq *r = live(req, R_PENDING);
	if (!r) return MS_ECLOSED;
	ms_http_set_header(req, "Cache-Control", "no-cache");
	ms_http_set_header(req, "X-Accel-Buffering", "no");
	int rc = ms_http_stream_start(req, 200, "text/event-stream; charset=utf-8");
	if (rc) return rc;
	ms_buf_reset(&r->xh); /* headers are sent; xh now holds the heartbeat text */
	if (heartbeat_ms > 0 && r->conn) {
		ms_buf_puts(&r->xh, heartbeat_text && *heartbeat_text ? heartbeat_text : ": ping\n\n");
		uv_timer_start(&r->conn->timer, on_heartbeat, heartbeat_ms, heartbeat_ms);
	}
	return 0;
}

int ms_http_sse_send(ms_http_req *req, const char *text, size_t len) {
	hreq *r = live(req, R_STREAM);
	if (!r) return MS_ECLOSED;
	if (!r->conn->failed && uv_is_active((uv_handle_t *)&r->conn->timer)) uv_timer_again(&r->conn->timer);
	return ms_http_stream_write(req, text, len);
}

void ms_http_on_close(ms_http_req *req, void (*cb)(ms_http_req *req, void *ud), void *ud) {
	hreq *r = (hreq *)req;
	if (!r || !r->conn) return;
	r->on_close = cb;
	r->on_close_ud = cb ? ud : NULL;
}

http_file_cache *http_req_file_cache(ms_http_req *req) {
	hreq *r = (hreq *)req;
	if (!r || !r->conn) return NULL;
	ms_http_server *s = r->conn->srv;
	if (!s->fc) s->fc = http_file_cache_new();
	return s->fc;
}
