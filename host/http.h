/* host/http.h: the HTTP/1.1 server (libuv + llhttp).
 *
 * One server per loop. Each parsed request is handed to one handler; the handler answers
 * through the request's response handle now or later (asynchronously), exactly once, with
 * ms_http_respond() or by streaming (ms_http_stream_*). Requests on one connection are
 * answered in order (pipelining): the next request is parsed only when the current
 * response has been finished.
 *
 * The server owns: keep-alive, chunked request bodies, Expect: 100-continue, HEAD (the body
 * is dropped, headers kept), Content-Length / Transfer-Encoding / Date / Connection headers,
 * limits (414 URL, 431 headers, 413 body, 503 too many connections), slow-header /
 * slow-body / idle timeouts, and one access-log line per request.
 */
#ifndef MS_HTTP_H
#define MS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/ms.h"

typedef struct ms_http_server ms_http_server;
typedef struct ms_http_req ms_http_req;

typedef struct ms_http_header {
	const char *name; /* as received; compare case-insensitively */
	const char *value;
} ms_http_header;

struct ms_http_req {
	const char *method;  /* "GET", "HEAD", "POST", ... */
	const char *target;  /* raw request target, e.g. "/a%20b?x=1" */
	const char *path;    /* target before '?', percent-decoded; never contains NUL */
	const char *query;   /* raw text after '?', or "" */
	const ms_http_header *headers;
	size_t nheaders;
	const char *body;    /* de-chunked body, NUL-terminated; "" when none */
	size_t body_len;
	int is_head;         /* HEAD: responses keep their headers, the body is dropped */
	const char *peer;    /* client address, e.g. "127.0.0.1" */
	void *user;          /* free for the handler (NULL initially) */
};

/* Case-insensitive header lookup: the first value, or NULL. */
const char *ms_http_req_header(const ms_http_req *req, const char *name);
/* A query parameter, percent- and '+'-decoded into buf; NULL if absent. */
const char *ms_http_req_query(const ms_http_req *req, const char *name, char *buf, size_t buflen);

/* Handler: called on the loop thread once per complete request. `req` stays valid until
 * the response is finished (or the client goes away, see ms_http_on_close). */
typedef void (*ms_http_handler)(ms_http_req *req, void *ud);

typedef struct ms_http_limits {
	size_t max_url;          /* bytes of request target -> 414 (default 8 KiB) */
	size_t max_headers;      /* bytes of all header lines -> 431 (default 32 KiB) */
	size_t max_body;         /* bytes -> 413 (default 16 MiB) */
	unsigned max_connections;/* -> 503 and close (default 1024) */
	unsigned header_timeout_ms; /* whole request head must arrive in this (default 10 s) */
	unsigned body_timeout_ms;   /* max gap between body reads (default 30 s) */
	unsigned idle_timeout_ms;   /* keep-alive idle (default 60 s) */
	int access_log;          /* one line per request on stderr (default 1) */
} ms_http_limits;

void ms_http_limits_default(ms_http_limits *l);
/* (ms_http_server_new: limits NULL means the defaults; a zero number in it means that
 * number's default; access_log is taken as given.) */

/* Creates and binds (does not block). host "127.0.0.1", port 0 = ephemeral. */
int ms_http_server_new(uv_loop_t *loop, const char *host, int port, const ms_http_limits *limits,
		       ms_http_handler handler, void *ud, ms_http_server **out);
/* The bound port (useful with port 0). */
int ms_http_server_port(const ms_http_server *s);
/* Stops accepting new connections (the listening socket is closed); open ones continue:
 * idle keep-alive connections are closed at once, busy ones after their response
 * (which then says Connection: close). */
void ms_http_server_stop_accepting(ms_http_server *s);
/* Number of requests whose response is not finished yet. */
unsigned ms_http_server_inflight(const ms_http_server *s);
/* Closes every connection and frees the server (after the loop runs the close callbacks). */
void ms_http_server_close(ms_http_server *s);

/* ---- responses (each function takes the request it answers) ---- */

/* Adds a response header before the response starts. Copies both strings. Content-Length,
 * Transfer-Encoding, Date and Connection are the server's. */
void ms_http_set_header(ms_http_req *req, const char *name, const char *value);
/* A complete response. body is copied. */
void ms_http_respond(ms_http_req *req, int status, const char *content_type, const void *body, size_t len);
/* Convenience: JSON text (already serialised). */
void ms_http_respond_json(ms_http_req *req, int status, const char *json);
/* {"error": {"code": code, "message": message}} with the status. */
void ms_http_respond_error(ms_http_req *req, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Streaming: starts a response of unknown length (chunked). Writes are sent immediately
 * (no buffering beyond the socket). Returns MS_ECLOSED once the client is gone. */
int ms_http_stream_start(ms_http_req *req, int status, const char *content_type);
int ms_http_stream_write(ms_http_req *req, const void *data, size_t len);
void ms_http_stream_end(ms_http_req *req);

/* Server-sent events: stream_start with text/event-stream, Cache-Control: no-cache,
 * X-Accel-Buffering: no; heartbeat_ms > 0 sends heartbeat_text (e.g. ": ping\n\n" or
 * "data: ALIVE\n\n") whenever nothing else was sent for that long. */
int ms_http_sse_start(ms_http_req *req, unsigned heartbeat_ms, const char *heartbeat_text);
/* Sends raw SSE text (the caller formats "data: ...\n\n"). Flushed per call. */
int ms_http_sse_send(ms_http_req *req, const char *text, size_t len);

/* Called once when the client disconnects before the response finished (stream or
 * pending). After the callback returns, req is invalid: drop every pointer to it. Calling
 * again replaces the callback; NULL removes it. The callback never runs inside the
 * handler's own ms_http_* call (a failed write closes on the next loop turn). A client
 * that closes or half-closes its end (EOF) while its request is in flight counts as gone.
 * Without a callback, a request whose client left stays allocated until the handler
 * finishes it (ms_http_respond* or ms_http_stream_end, which then just free it; stream
 * writes return MS_ECLOSED meanwhile): the handler must still finish every request. */
void ms_http_on_close(ms_http_req *req, void (*cb)(ms_http_req *req, void *ud), void *ud);

/* ---- static files ---- */

typedef struct ms_http_static_opts {
	const char *cache_control; /* e.g. "public, max-age=3600" or "no-cache" */
	int allow_gzip;            /* gzip text types when the client accepts it */
} ms_http_static_opts;

/* Answers req with the file root/rel (rel is a decoded URL path below the root). Refuses
 * anything that escapes root ("..", NUL, symlinks resolving outside) with 404. Handles
 * MIME types, ETag + If-None-Match (304), If-Modified-Since, Last-Modified, Range
 * (206/416, one range; If-Range), gzip, HEAD; other methods get 405. A directory serves
 * its index.html. Returns 0 when it answered, MS_ENOENT when no such file, or for names
 * starting with '.' (nothing sent, so the caller may try something else).
 * Files are cached per server (keyed by path, checked with one stat per request against
 * device, inode, size and mtime): files up to 1 MiB are answered from memory, with their
 * gzipped bytes made once per version; bigger ones are sent from disk in pieces. */
int ms_http_serve_file(ms_http_req *req, const char *root, const char *rel, const ms_http_static_opts *opts);

/* Answers req with `len` bytes of the open file fd from `off` (Content-Length len), read in
 * pieces as the socket drains, so big files never sit in memory; headers added with
 * ms_http_set_header are sent. Takes ownership of fd. For HEAD only the headers go out. */
void ms_http_respond_fd(ms_http_req *req, int status, const char *content_type, int fd, uint64_t off, uint64_t len);

/* The MIME type for a file name ("application/octet-stream" when unknown). */
const char *ms_http_mime_type(const char *path);
/* Reason phrase for a status code. */
const char *ms_http_status_text(int status);
/* Percent-decodes src into dst (dstlen incl. NUL); returns MS_EFORMAT on a NUL byte or bad escape. */
int ms_http_url_decode(const char *src, size_t len, char *dst, size_t dstlen, int plus_is_space);

#endif
