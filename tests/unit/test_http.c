/* tests/unit/test_http.c: the HTTP server (host/http.c, host/http_static.c).
 *
 * Helpers without sockets first; then each socket test forks a child that runs the
 * test server of http_testsrv.h on an ephemeral loopback port with short limits and
 * timeouts, talks to it over raw sockets, and at the end stops it with SIGTERM and
 * checks that it exited cleanly (under ASan that includes the leak check). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <zlib.h>

#include "tests/testlib.h"
#include "tests/unit/http_testsrv.h"

TEST_SUITE("http")

/* ---------------------------------------------------------------- no sockets */

TEST(url_decode) {
	char b[64];
	CHECK_INT(ms_http_url_decode("/a%20b+c", 8, b, sizeof b, 0), 0);
	CHECK_STR(b, "/a b+c");
	CHECK_INT(ms_http_url_decode("a+b%2Bc", 7, b, sizeof b, 1), 0);
	CHECK_STR(b, "a b+c");
	CHECK_INT(ms_http_url_decode("%2e%2E/x", 8, b, sizeof b, 0), 0);
	CHECK_STR(b, "../x");
	CHECK_INT(ms_http_url_decode("a%00b", 5, b, sizeof b, 0), MS_EFORMAT);
	CHECK_INT(ms_http_url_decode("a%zzb", 5, b, sizeof b, 0), MS_EFORMAT);
	CHECK_INT(ms_http_url_decode("a%2", 3, b, sizeof b, 0), MS_EFORMAT);
	CHECK(ms_http_url_decode("abcdef", 6, b, 4, 0) < 0);
}

TEST(mime_and_status) {
	CHECK_STR(ms_http_mime_type("x/index.html"), "text/html; charset=utf-8");
	CHECK_STR(ms_http_mime_type("app.JS"), "text/javascript; charset=utf-8");
	CHECK_STR(ms_http_mime_type("a.svg"), "image/svg+xml");
	CHECK_STR(ms_http_mime_type("a.woff2"), "font/woff2");
	CHECK_STR(ms_http_mime_type("noext"), "application/octet-stream");
	CHECK_STR(ms_http_mime_type("dir.d/noext"), "application/octet-stream");
	CHECK_STR(ms_http_status_text(404), "Not Found");
	CHECK_STR(ms_http_status_text(431), "Request Header Fields Too Large");
}

TEST(query_and_headers) {
	ms_http_header h[2] = {{"Content-Type", "text/plain"}, {"X-A", "1"}};
	ms_http_req r = {.method = "GET", .target = "/", .path = "/", .query = "a=1&b=x+y%21&c&d=&a=2", .headers = h, .nheaders = 2};
	char b[32];
	CHECK_STR(ms_http_req_query(&r, "a", b, sizeof b), "1");
	CHECK_STR(ms_http_req_query(&r, "b", b, sizeof b), "x y!");
	CHECK_STR(ms_http_req_query(&r, "c", b, sizeof b), "");
	CHECK_STR(ms_http_req_query(&r, "d", b, sizeof b), "");
	CHECK(ms_http_req_query(&r, "e", b, sizeof b) == NULL);
	CHECK_STR(ms_http_req_header(&r, "content-type"), "text/plain");
	CHECK_STR(ms_http_req_header(&r, "x-a"), "1");
	CHECK(ms_http_req_header(&r, "x-b") == NULL);
}

static void noop_handler(ms_http_req *req, void *ud) {
	(void)ud;
	ms_http_respond(req, 204, NULL, NULL, 0);
}

TEST(server_lifecycle) {
	uv_loop_t loop;
	CHECK_INT(uv_loop_init(&loop), 0);
	ms_http_server *a = NULL, *b = NULL;
	CHECK_INT(ms_http_server_new(&loop, "127.0.0.1", 0, NULL, noop_handler, NULL, &a), 0);
	int port = ms_http_server_port(a);
	CHECK(port > 0);
	CHECK_INT(ms_http_server_inflight(a), 0);
	/* the same port again: busy, and nothing leaks */
	CHECK_INT(ms_http_server_new(&loop, "127.0.0.1", port, NULL, noop_handler, NULL, &b), MS_EBUSY);
	CHECK(b == NULL);
	CHECK_INT(ms_http_server_new(&loop, "not-an-address", 0, NULL, noop_handler, NULL, &b), MS_EINVAL);
	ms_http_server_close(a);
	CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
	CHECK_INT(uv_loop_close(&loop), 0);
}

/* ---------------------------------------------------------------- the test server */

static char root_dir[256], outside_file[300];
static pid_t srv_pid;
static int srv_port;
static testsrv child_ts;

static void child_sigterm(uv_signal_t *s, int signum) {
	(void)signum;
	ms_http_server_close(child_ts.srv);
	uv_close((uv_handle_t *)s, NULL);
}

static void write_file(const char *path, const char *data, size_t len) {
	FILE *f = fopen(path, "wb");
	CHECK(f != NULL);
	CHECK(fwrite(data, 1, len, f) == len);
	fclose(f);
}

/* A root with a.txt, page.html (compressible), big.bin (past the memory cache), sub/,
 * a symlink inside the root and one pointing out of it. */
static void make_root(void) {
	snprintf(root_dir, sizeof root_dir, "/tmp/ms-http-test-%d", (int)getpid());
	char p[512];
	mkdir(root_dir, 0755);
	snprintf(p, sizeof p, "%s/www", root_dir);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/www/sub", root_dir);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/www/a.txt", root_dir);
	write_file(p, "hello\n", 6);
	snprintf(p, sizeof p, "%s/www/sub/index.html", root_dir);
	write_file(p, "<p>sub</p>\n", 11);
	ms_buf b;
	ms_buf_init(&b);
	for (int i = 0; i < 400; i++) ms_buf_printf(&b, "<li>item %d of a list that compresses well</li>\n", i);
	snprintf(p, sizeof p, "%s/www/page.html", root_dir);
	write_file(p, b.data, b.len);
	ms_buf_reset(&b);
	for (int i = 0; i < (3 << 20) / 16; i++) ms_buf_printf(&b, "%015d\n", i);
	snprintf(p, sizeof p, "%s/www/big.bin", root_dir);
	write_file(p, b.data, b.len);
	ms_buf_free(&b);
	snprintf(outside_file, sizeof outside_file, "%s/secret.txt", root_dir);
	write_file(outside_file, "secret\n", 7);
	char l[512];
	snprintf(l, sizeof l, "%s/www/out.txt", root_dir);
	CHECK(symlink(outside_file, l) == 0);
	snprintf(l, sizeof l, "%s/www/in.txt", root_dir);
	CHECK(symlink("a.txt", l) == 0);
	snprintf(l, sizeof l, "%s/www/outdir", root_dir);
	CHECK(symlink(root_dir, l) == 0);
}

static void rm_root(void) {
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root_dir);
	if (system(cmd) != 0) {}
}

static char log_path[300]; /* when set, the child's stderr (access log on) goes there */

static void start_server(unsigned max_conns) {
	make_root();
	int pfd[2];
	CHECK(pipe(pfd) == 0);
	srv_pid = fork();
	CHECK(srv_pid >= 0);
	if (srv_pid == 0) {
		close(pfd[0]);
		/* die with the test process (a failed CHECK exits it), and do not hold its
		 * report pipe open */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (test_report_fd >= 0) close(test_report_fd);
		signal(SIGPIPE, SIG_IGN);
		uv_loop_t loop;
		uv_loop_init(&loop);
		static char www[300];
		snprintf(www, sizeof www, "%s/www", root_dir);
		child_ts = (testsrv){.loop = &loop, .root = www};
		ms_http_limits lim;
		ms_http_limits_default(&lim);
		lim.max_url = 1024;
		lim.max_headers = 2048;
		lim.max_body = 4096;
		lim.max_connections = max_conns;
		lim.header_timeout_ms = 400;
		lim.body_timeout_ms = 400;
		lim.idle_timeout_ms = 600;
		lim.access_log = log_path[0] || getenv("HTTP_TEST_LOG") != NULL;
		if (log_path[0]) {
			int lfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (lfd < 0 || dup2(lfd, 2) < 0) _exit(6);
			close(lfd);
		}
		if (ms_http_server_new(&loop, "127.0.0.1", 0, &lim, testsrv_handler, &child_ts, &child_ts.srv) != 0) _exit(3);
		int port = ms_http_server_port(child_ts.srv);
		if (write(pfd[1], &port, sizeof port) != sizeof port) _exit(4);
		close(pfd[1]);
		uv_signal_t sig;
		uv_signal_init(&loop, &sig);
		uv_signal_start(&sig, child_sigterm, SIGTERM);
		uv_run(&loop, UV_RUN_DEFAULT);
		int rc = uv_loop_close(&loop);
		exit(rc == 0 ? 0 : 5); /* exit, not _exit: LeakSanitizer checks the server here */
	}
	close(pfd[1]);
	CHECK(read(pfd[0], &srv_port, sizeof srv_port) == sizeof srv_port);
	close(pfd[0]);
}

/* Stops the server and checks it exited cleanly (no leak under ASan, no handle left). */
static void stop_server(void) {
	kill(srv_pid, SIGTERM);
	int st = 0;
	for (int i = 0; i < 500; i++) {
		if (waitpid(srv_pid, &st, WNOHANG) == srv_pid) break;
		usleep(10000);
		if (i == 499) {
			kill(srv_pid, SIGKILL);
			waitpid(srv_pid, &st, 0);
			rm_root();
			TEST_FAILF("server did not stop on SIGTERM");
		}
	}
	rm_root();
	CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server exit status %d (signal %d)",
		  WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* ---------------------------------------------------------------- a raw client */

typedef struct client {
	int fd;
	char *buf;
	size_t len, cap;
} client;

typedef struct resp {
	int status;
	char head[8192];
	char *body;
	size_t body_len;
} resp;

static void cli_open(client *c) {
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c->fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv_port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(connect(c->fd, (struct sockaddr *)&a, sizeof a) == 0);
	struct timeval tv = {3, 0};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->cap = 8 << 20;
	if (!c->buf) c->buf = malloc(c->cap);
	c->len = 0;
}

static void cli_close(client *c) {
	if (c->fd >= 0) close(c->fd);
	c->fd = -1;
}

static void cli_free(client *c) {
	cli_close(c);
	free(c->buf);
	c->buf = NULL;
}

static void cli_send(client *c, const char *s, size_t n) {
	size_t o = 0;
	while (o < n) {
		ssize_t w = send(c->fd, s + o, n - o, MSG_NOSIGNAL);
		CHECK_MSG(w > 0, "send: %s", strerror(errno));
		o += (size_t)w;
	}
}
#define SEND(c, s) cli_send(c, s, strlen(s))

/* Reads more; 0 on EOF, -1 on timeout or error. */
static int cli_fill(client *c) {
	if (c->len == c->cap) return -1;
	ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
	if (n > 0) c->len += (size_t)n;
	return n > 0 ? 1 : n == 0 ? 0 : -1;
}

/* 1 when the server closed the connection (EOF) within the receive timeout. */
static int cli_eof(client *c) {
	for (;;) {
		int r = cli_fill(c);
		if (r == 0) return 1;
		if (r < 0) return errno == ECONNRESET;
	}
}

static void consume(client *c, size_t n) {
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

static const char *hdr(const resp *r, const char *name, char *out, size_t outlen) {
	size_t nl = strlen(name);
	for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
		const char *l = p + 2;
		if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
			const char *v = l + nl + 1;
			while (*v == ' ') v++;
			const char *e = strstr(v, "\r\n");
			size_t n = e ? (size_t)(e - v) : strlen(v);
			if (n >= outlen) n = outlen - 1;
			memcpy(out, v, n);
			out[n] = 0;
			return out;
		}
	}
	return NULL;
}

/* Reads one response (no body when no_body: HEAD). 0 or -1 (timeout / EOF first). */
static int read_resp(client *c, resp *r, int no_body) {
	char *end;
	free(r->body);
	memset(r, 0, sizeof *r);
	for (;;) {
		c->buf[c->len < c->cap ? c->len : c->cap - 1] = 0;
		if (c->len && (end = memmem(c->buf, c->len, "\r\n\r\n", 4))) break;
		if (cli_fill(c) <= 0) return -1;
	}
	size_t hl = (size_t)(end - c->buf) + 4;
	if (hl >= sizeof r->head) return -1;
	memcpy(r->head, c->buf, hl);
	r->head[hl] = 0;
	consume(c, hl);
	if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) return -1;
	char v[64];
	r->body = malloc(1);
	r->body[0] = 0;
	if (no_body || r->status < 200 || r->status == 204 || r->status == 304) return 0;
	if (hdr(r, "content-length", v, sizeof v)) {
		size_t n = strtoull(v, NULL, 10);
		while (c->len < n)
			if (cli_fill(c) <= 0) return -1;
		r->body = realloc(r->body, n + 1);
		memcpy(r->body, c->buf, n);
		r->body[n] = 0;
		r->body_len = n;
		consume(c, n);
		return 0;
	}
	if (hdr(r, "transfer-encoding", v, sizeof v) && strcasecmp(v, "chunked") == 0) {
		for (;;) {
			while (!memmem(c->buf, c->len, "\r\n", 2))
				if (cli_fill(c) <= 0) return -1;
			size_t n = strtoull(c->buf, NULL, 16);
			size_t ll = (size_t)((char *)memmem(c->buf, c->len, "\r\n", 2) - c->buf) + 2;
			while (c->len < ll + n + 2)
				if (cli_fill(c) <= 0) return -1;
			r->body = realloc(r->body, r->body_len + n + 1);
			memcpy(r->body + r->body_len, c->buf + ll, n);
			r->body_len += n;
			r->body[r->body_len] = 0;
			consume(c, ll + n + 2);
			if (n == 0) return 0;
		}
	}
	while (cli_fill(c) > 0) {} /* close-delimited */
	r->body = realloc(r->body, c->len + 1);
	memcpy(r->body, c->buf, c->len);
	r->body_len = c->len;
	r->body[c->len] = 0;
	c->len = 0;
	return 0;
}

static void resp_free(resp *r) {
	free(r->body);
	r->body = NULL;
}

/* One request on a fresh connection. */
static void simple(const char *req, resp *r, int no_body) {
	client c = {.fd = -1};
	cli_open(&c);
	SEND(&c, req);
	CHECK_MSG(read_resp(&c, r, no_body) == 0, "no response to %.60s", req);
	cli_free(&c);
}

/* The server's /stats counter `key`, polled until it reaches want (or 2 s pass). */
static int stat_wait(const char *key, int want) {
	int v = -1;
	for (int i = 0; i < 200; i++) {
		resp r = {0};
		simple("GET /stats HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
		char k[64];
		snprintf(k, sizeof k, "\"%s\":", key);
		const char *p = strstr(r.body, k);
		v = p ? atoi(p + strlen(k)) : -1;
		resp_free(&r);
		if (v >= want) return v;
		usleep(10000);
	}
	return v;
}

/* ---------------------------------------------------------------- HTTP/1.1 */

TEST(keep_alive_and_headers) {
	start_server(16);
	client c = {.fd = -1};
	cli_open(&c);
	resp r = {0};
	char v[128];
	for (int i = 0; i < 3; i++) {
		SEND(&c, "POST /echo?a=%41b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
		CHECK_INT(read_resp(&c, &r, 0), 0);
		CHECK_INT(r.status, 200);
		CHECK_STR(r.body, "abc");
		CHECK_STR(hdr(&r, "x-query-a", v, sizeof v), "Ab");
		CHECK_STR(hdr(&r, "x-method", v, sizeof v), "POST");
		CHECK(hdr(&r, "date", v, sizeof v) != NULL);
		CHECK(hdr(&r, "connection", v, sizeof v) == NULL);
	}
	/* percent-decoded path, raw target */
	SEND(&c, "GET /ec%68o HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(hdr(&r, "x-path", v, sizeof v), "/echo");
	/* Connection: close is honoured */
	SEND(&c, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(hdr(&r, "connection", v, sizeof v), "close");
	CHECK(cli_eof(&c));
	resp_free(&r);
	cli_free(&c);
	stop_server();
}

TEST(http10) {
	start_server(16);
	client c = {.fd = -1};
	resp r = {0};
	char v[64];
	cli_open(&c);
	SEND(&c, "GET /echo HTTP/1.0\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 200);
	CHECK_STR(hdr(&r, "connection", v, sizeof v), "close");
	CHECK(cli_eof(&c));
	cli_close(&c);
	cli_open(&c);
	SEND(&c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(hdr(&r, "connection", v, sizeof v), "keep-alive");
	SEND(&c, "GET /echo?a=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(hdr(&r, "x-query-a", v, sizeof v), "2");
	/* a stream to an HTTP/1.0 client: no chunked encoding, ends with the connection */
	SEND(&c, "GET /stream?n=2&ms=5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK(hdr(&r, "transfer-encoding", v, sizeof v) == NULL);
	CHECK_STR(r.body, "piece 0\npiece 1\n");
	resp_free(&r);
	cli_free(&c);
	stop_server();
}

TEST(pipelining_in_order) {
	start_server(16);
	client c = {.fd = -1};
	cli_open(&c);
	/* the first answer is slow; the others must still come after it, in order */
	SEND(&c, "GET /delay?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n"
		 "POST /echo?a=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
		 "GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
		 "HEAD /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
		 "GET /echo?a=5 HTTP/1.1\r\nHost: x\r\n\r\n");
	resp r = {0};
	char v[64];
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(r.body, "delayed 200");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(r.body, "body");
	CHECK_STR(hdr(&r, "x-query-a", v, sizeof v), "2");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(r.body, "hello\n");
	CHECK_INT(read_resp(&c, &r, 1), 0);
	CHECK_STR(hdr(&r, "content-length", v, sizeof v), "6");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(hdr(&r, "x-query-a", v, sizeof v), "5");
	CHECK_INT(c.len, 0); /* nothing extra (HEAD sent no body) */
	/* many small pipelined requests in one write */
	ms_buf b;
	ms_buf_init(&b);
	for (int i = 0; i < 200; i++) ms_buf_printf(&b, "GET /echo?a=%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
	cli_send(&c, b.data, b.len);
	ms_buf_free(&b);
	for (int i = 0; i < 200; i++) {
		CHECK_INT(read_resp(&c, &r, 0), 0);
		CHECK_INT(atoi(hdr(&r, "x-query-a", v, sizeof v)), i);
	}
	resp_free(&r);
	cli_free(&c);
	stop_server();
}

TEST(chunked_body_and_continue) {
	start_server(16);
	client c = {.fd = -1};
	cli_open(&c);
	resp r = {0};
	SEND(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
	usleep(50000);
	SEND(&c, "7\r\n, world\r\n0\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 200);
	CHECK_STR(r.body, "hello, world");
	/* Expect: 100-continue: the interim answer comes before we send the body */
	SEND(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 100);
	SEND(&c, "12345");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 200);
	CHECK_STR(r.body, "12345");
	/* too big with 100-continue: 413 instead, without waiting for the body */
	SEND(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\nExpect: 100-continue\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 413);
	resp_free(&r);
	cli_free(&c);
	stop_server();
}

TEST(head_and_streams) {
	start_server(16);
	client c = {.fd = -1};
	cli_open(&c);
	resp r = {0};
	char v[128];
	SEND(&c, "HEAD /big?n=5000 HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 1), 0);
	CHECK_INT(r.status, 200);
	CHECK_STR(hdr(&r, "content-length", v, sizeof v), "5000");
	SEND(&c, "GET /big?n=200000 HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.body_len, 200000);
	CHECK(r.body[0] == 'x' && r.body[199999] == 'x');
	SEND(&c, "GET /stream?n=3&ms=5 HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(hdr(&r, "transfer-encoding", v, sizeof v), "chunked");
	CHECK_STR(r.body, "piece 0\npiece 1\npiece 2\n");
	SEND(&c, "HEAD /stream?n=2&ms=5 HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 1), 0);
	SEND(&c, "GET /echo?a=after HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(hdr(&r, "x-query-a", v, sizeof v), "after");
	CHECK_INT(c.len, 0);
	resp_free(&r);
	cli_free(&c);
	stop_server();
}

/* ---------------------------------------------------------------- limits */

TEST(limits_status_codes) {
	start_server(16);
	resp r = {0};
	char big[4096];
	memset(big, 'a', sizeof big);
	big[sizeof big - 1] = 0;
	char req[8192];
	snprintf(req, sizeof req, "GET /echo?x=%s HTTP/1.1\r\nHost: x\r\n\r\n", big);
	simple(req, &r, 0);
	CHECK_INT(r.status, 414);
	snprintf(req, sizeof req, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
	simple(req, &r, 0);
	CHECK_INT(r.status, 431);
	/* many small headers add up too */
	ms_buf b;
	ms_buf_init(&b);
	ms_buf_puts(&b, "GET /echo HTTP/1.1\r\n");
	for (int i = 0; i < 300; i++) ms_buf_printf(&b, "X-H%d: v\r\n", i);
	ms_buf_puts(&b, "\r\n");
	simple(b.data, &r, 0);
	CHECK_INT(r.status, 431);
	ms_buf_free(&b);
	simple("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 413);
	/* chunked past the limit */
	client c = {.fd = -1};
	cli_open(&c);
	SEND(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
	char chunk[1100];
	snprintf(chunk, sizeof chunk, "400\r\n%.1024s\r\n", big);
	for (int i = 0; i < 5; i++) SEND(&c, chunk);
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 413);
	CHECK(cli_eof(&c));
	cli_free(&c);
	/* malformed */
	simple("BLAH\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 400);
	simple("GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 400);
	simple("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", &r, 0);
	CHECK_INT(r.status, 400);
	simple("GET / HTTP/1.1\r\nBad Header\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 400);
	simple("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", &r, 0);
	CHECK_INT(r.status, 417);
	simple("GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", &r, 0);
	CHECK(r.status == 505 || r.status == 400);
	/* after all that the server still answers */
	simple("GET /echo?a=ok HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 200);
	resp_free(&r);
	stop_server();
}

TEST(too_many_connections) {
	start_server(4);
	client cs[4];
	resp r = {0};
	for (int i = 0; i < 4; i++) {
		cs[i] = (client){.fd = -1};
		cli_open(&cs[i]);
		SEND(&cs[i], "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
		CHECK_INT(read_resp(&cs[i], &r, 0), 0);
		CHECK_INT(r.status, 200);
	}
	client extra = {.fd = -1};
	cli_open(&extra);
	SEND(&extra, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&extra, &r, 0), 0);
	CHECK_INT(r.status, 503);
	CHECK(cli_eof(&extra));
	cli_free(&extra);
	/* a slot frees up when a connection closes */
	cli_free(&cs[0]);
	usleep(50000);
	cs[0] = (client){.fd = -1};
	cli_open(&cs[0]);
	SEND(&cs[0], "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&cs[0], &r, 0), 0);
	CHECK_INT(r.status, 200);
	for (int i = 0; i < 4; i++) cli_free(&cs[i]);
	resp_free(&r);
	stop_server();
}

TEST(timeouts) {
	start_server(16);
	resp r = {0};
	client c = {.fd = -1};
	/* slow headers: 408 and close, even though bytes keep trickling in */
	cli_open(&c);
	double t0 = ms_now_ms();
	SEND(&c, "GET /echo HTTP/1.1\r\n");
	usleep(200000);
	SEND(&c, "X-A: 1\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 408);
	double dt = ms_now_ms() - t0;
	CHECK_MSG(dt >= 350 && dt < 2000, "header timeout after %.0f ms", dt);
	CHECK(cli_eof(&c));
	cli_close(&c);
	/* slow body */
	cli_open(&c);
	SEND(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 408);
	cli_close(&c);
	/* a body that keeps coming within the gap is fine */
	cli_open(&c);
	SEND(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab");
	for (int i = 0; i < 2; i++) {
		usleep(250000);
		SEND(&c, "c");
	}
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 200);
	CHECK_STR(r.body, "abcc");
	/* idle keep-alive: closed quietly */
	t0 = ms_now_ms();
	CHECK(cli_eof(&c));
	dt = ms_now_ms() - t0;
	CHECK_MSG(dt >= 500 && dt < 2000, "idle close after %.0f ms", dt);
	CHECK_INT(c.len, 0);
	cli_free(&c);
	resp_free(&r);
	stop_server();
}

/* ---------------------------------------------------------------- disconnects */

TEST(disconnect_mid_response) {
	start_server(16);
	client c = {.fd = -1};
	resp r = {0};
	/* pending */
	cli_open(&c);
	SEND(&c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
	usleep(50000);
	cli_close(&c);
	CHECK_INT(stat_wait("closes", 1), 1);
	/* streaming SSE */
	cli_open(&c);
	SEND(&c, "GET /sse?n=1000&ms=5 HTTP/1.1\r\nHost: x\r\n\r\n");
	while (!memmem(c.buf, c.len, "event 3", 7)) CHECK(cli_fill(&c) > 0);
	cli_close(&c);
	CHECK_INT(stat_wait("closes", 2), 2);
	/* delayed answer */
	cli_open(&c);
	SEND(&c, "GET /delay?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n");
	usleep(50000);
	cli_close(&c);
	CHECK_INT(stat_wait("closes", 3), 3);
	/* no on_close: the late respond frees the orphan */
	cli_open(&c);
	SEND(&c, "GET /late?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n");
	usleep(50000);
	cli_close(&c);
	CHECK_INT(stat_wait("done", 1), 1);
	/* a big static file, left half-read */
	cli_open(&c);
	int small = 4096;
	setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	SEND(&c, "GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK(cli_fill(&c) > 0);
	cli_close(&c);
	/* the server keeps serving; nothing is left in flight but /stats itself */
	CHECK_INT(stat_wait("closes", 3), 3);
	simple("GET /stats HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_MSG(strstr(r.body, "\"inflight\":1,") != NULL, "stats %s", r.body);
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_STR(r.body, "hello\n");
	resp_free(&r);
	cli_free(&c);
	stop_server();
}

TEST(sse_flush_and_heartbeat) {
	start_server(16);
	client c = {.fd = -1};
	resp r = {0};
	char v[128];
	cli_open(&c);
	SEND(&c, "GET /sse?n=2&ms=300 HTTP/1.1\r\nHost: x\r\n\r\n");
	double t0 = ms_now_ms();
	/* headers arrive at once, then each event on its own */
	while (!memmem(c.buf, c.len, "\r\n\r\n", 4)) CHECK(cli_fill(&c) > 0);
	CHECK_MSG(ms_now_ms() - t0 < 200, "headers held back");
	c.buf[c.len] = 0;
	r.status = 0;
	snprintf(r.head, sizeof r.head, "%.*s", (int)((char *)memmem(c.buf, c.len, "\r\n\r\n", 4) - c.buf + 4), c.buf);
	CHECK_STR(hdr(&r, "content-type", v, sizeof v), "text/event-stream; charset=utf-8");
	CHECK_STR(hdr(&r, "cache-control", v, sizeof v), "no-cache");
	CHECK_STR(hdr(&r, "x-accel-buffering", v, sizeof v), "no");
	while (!memmem(c.buf, c.len, "event 0", 7)) CHECK(cli_fill(&c) > 0);
	double dt = ms_now_ms() - t0;
	CHECK_MSG(dt < 550 && !memmem(c.buf, c.len, "event 1", 7), "first event after %.0f ms", dt);
	cli_close(&c);
	/* heartbeat after idle periods */
	cli_open(&c);
	SEND(&c, "GET /sse?n=-1&ms=10&hb=100 HTTP/1.1\r\nHost: x\r\n\r\n");
	t0 = ms_now_ms();
	int pings = 0;
	while (ms_now_ms() - t0 < 2000 && pings < 3) {
		CHECK(cli_fill(&c) > 0);
		pings = 0;
		for (char *p = c.buf; (p = memmem(p, c.len - (size_t)(p - c.buf), ": ping", 6)); p++) pings++;
	}
	CHECK_INT(pings, 3);
	CHECK(memmem(c.buf, c.len, "event 0", 7) != NULL);
	cli_free(&c);
	resp_free(&r);
	stop_server();
}

/* ---------------------------------------------------------------- static files */

TEST(static_files) {
	start_server(16);
	resp r = {0};
	char v[256], etag[128], lm[128], req[1024];
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 200);
	CHECK_STR(r.body, "hello\n");
	CHECK_STR(hdr(&r, "content-type", v, sizeof v), "text/plain; charset=utf-8");
	CHECK_STR(hdr(&r, "cache-control", v, sizeof v), "public, max-age=60");
	CHECK(hdr(&r, "etag", etag, sizeof etag) != NULL);
	CHECK(hdr(&r, "last-modified", lm, sizeof lm) != NULL);
	/* conditional requests */
	snprintf(req, sizeof req, "GET /static/a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"zz\", %s\r\n\r\n", etag);
	simple(req, &r, 0);
	CHECK_INT(r.status, 304);
	CHECK_STR(hdr(&r, "etag", v, sizeof v), etag);
	CHECK(hdr(&r, "content-length", v, sizeof v) == NULL);
	snprintf(req, sizeof req, "GET /static/a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"other\"\r\n\r\n");
	simple(req, &r, 0);
	CHECK_INT(r.status, 200);
	snprintf(req, sizeof req, "GET /static/a.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: %s\r\n\r\n", lm);
	simple(req, &r, 0);
	CHECK_INT(r.status, 304);
	/* a changed file is noticed (new ETag, new bytes) */
	char p[512];
	snprintf(p, sizeof p, "%s/www/a.txt", root_dir);
	write_file(p, "changed!\n", 9);
	snprintf(req, sizeof req, "GET /static/a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\n\r\n", etag);
	simple(req, &r, 0);
	CHECK_INT(r.status, 200);
	CHECK_STR(r.body, "changed!\n");
	/* directories serve index.html; HEAD */
	simple("GET /static/sub/ HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_STR(r.body, "<p>sub</p>\n");
	CHECK_STR(hdr(&r, "content-type", v, sizeof v), "text/html; charset=utf-8");
	simple("HEAD /static/page.html HTTP/1.1\r\nHost: x\r\n\r\n", &r, 1);
	CHECK_INT(r.status, 200);
	CHECK(atoi(hdr(&r, "content-length", v, sizeof v)) > 10000);
	simple("GET /static/nope.txt HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 404);
	simple("POST /static/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 405);
	resp_free(&r);
	stop_server();
}

TEST(static_gzip) {
	start_server(16);
	resp r = {0}, plain = {0};
	char v[128], req[512];
	simple("GET /static/page.html HTTP/1.1\r\nHost: x\r\n\r\n", &plain, 0);
	CHECK_INT(plain.status, 200);
	CHECK(hdr(&plain, "content-encoding", v, sizeof v) == NULL);
	CHECK_STR(hdr(&plain, "vary", v, sizeof v), "Accept-Encoding");
	for (int round = 0; round < 2; round++) { /* the second comes from the cache */
		simple("GET /static/page.html HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br, gzip, deflate\r\n\r\n", &r, 0);
		CHECK_INT(r.status, 200);
		CHECK_STR(hdr(&r, "content-encoding", v, sizeof v), "gzip");
		CHECK(r.body_len < plain.body_len / 4);
		char *out = malloc(plain.body_len + 1);
		z_stream z = {0};
		CHECK(inflateInit2(&z, 31) == Z_OK);
		z.next_in = (Bytef *)r.body;
		z.avail_in = (uInt)r.body_len;
		z.next_out = (Bytef *)out;
		z.avail_out = (uInt)plain.body_len + 1;
		CHECK_INT(inflate(&z, Z_FINISH), Z_STREAM_END);
		CHECK_INT(z.total_out, plain.body_len);
		CHECK(memcmp(out, plain.body, plain.body_len) == 0);
		inflateEnd(&z);
		free(out);
	}
	/* the gzip variant has its own ETag, and it validates */
	char etag[128];
	CHECK(hdr(&r, "etag", etag, sizeof etag) != NULL);
	CHECK(strcmp(etag, hdr(&plain, "etag", v, sizeof v)) != 0);
	snprintf(req, sizeof req, "GET /static/page.html HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nIf-None-Match: %s\r\n\r\n", etag);
	simple(req, &r, 0);
	CHECK_INT(r.status, 304);
	/* q=0 refuses; small and binary files are not compressed */
	simple("GET /static/page.html HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;q=0\r\n\r\n", &r, 0);
	CHECK(hdr(&r, "content-encoding", v, sizeof v) == NULL);
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", &r, 0);
	CHECK(hdr(&r, "content-encoding", v, sizeof v) == NULL);
	simple("GET /static/big.bin HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", &r, 0);
	CHECK(hdr(&r, "content-encoding", v, sizeof v) == NULL);
	resp_free(&r);
	resp_free(&plain);
	stop_server();
}

TEST(static_range_and_big) {
	start_server(16);
	resp r = {0};
	char v[128];
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=1-3\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 206);
	CHECK_STR(r.body, "ell");
	CHECK_STR(hdr(&r, "content-range", v, sizeof v), "bytes 1-3/6");
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=-2\r\n\r\n", &r, 0);
	CHECK_STR(r.body, "o\n");
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=4-\r\n\r\n", &r, 0);
	CHECK_STR(r.body, "o\n");
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=10-20\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 416);
	CHECK_STR(hdr(&r, "content-range", v, sizeof v), "bytes */6");
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,3-4\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 200); /* several ranges: the whole file */
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\nIf-Range: \"stale\"\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 200);
	/* a file bigger than the memory cache is streamed from disk */
	char p[512];
	snprintf(p, sizeof p, "%s/www/big.bin", root_dir);
	size_t blen = 0;
	char *want = test_read_file(p, &blen);
	CHECK(want && blen == (3u << 20));
	client c = {.fd = -1};
	cli_open(&c);
	SEND(&c, "GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /static/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000000-1000031\r\n\r\nGET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.body_len, blen);
	CHECK(memcmp(r.body, want, blen) == 0);
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_INT(r.status, 206);
	CHECK_INT(r.body_len, 32);
	CHECK(memcmp(r.body, want + 1000000, 32) == 0);
	CHECK_INT(read_resp(&c, &r, 0), 0);
	CHECK_STR(r.body, "hello\n");
	free(want);
	cli_free(&c);
	resp_free(&r);
	stop_server();
}

TEST(static_no_escape) {
	start_server(16);
	resp r = {0};
	static const char *const bad[] = {
		"GET /static/../secret.txt HTTP/1.1\r\n",
		"GET /static/%2e%2e/secret.txt HTTP/1.1\r\n",
		"GET /static/%2E%2E%2fsecret.txt HTTP/1.1\r\n",
		"GET /static/sub/../../secret.txt HTTP/1.1\r\n",
		"GET /static/out.txt HTTP/1.1\r\n",
		"GET /static/outdir/secret.txt HTTP/1.1\r\n",
		"GET /static/%2fetc/passwd HTTP/1.1\r\n",
		"GET /static/.hidden HTTP/1.1\r\n",
		"GET /static/a.txt%00.html HTTP/1.1\r\n",
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(bad); i++) {
		char req[512];
		snprintf(req, sizeof req, "%sHost: x\r\n\r\n", bad[i]);
		simple(req, &r, 0);
		CHECK_MSG(r.status == 404 || r.status == 400, "%s -> %d", bad[i], r.status);
		CHECK_MSG(!strstr(r.body, "secret") && !strstr(r.body, "root:"), "%s leaked", bad[i]);
	}
	/* a symlink that stays inside the root is fine */
	simple("GET /static/in.txt HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 200);
	CHECK_STR(r.body, "hello\n");
	resp_free(&r);
	stop_server();
}

/* ---------------------------------------------------------------- log and shutdown */

TEST(access_log_and_drain) {
	snprintf(log_path, sizeof log_path, "/tmp/ms-http-log-%d.txt", (int)getpid());
	start_server(16);
	resp r = {0};
	client c = {.fd = -1};
	cli_open(&c);
	SEND(&c, "POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
	CHECK_INT(read_resp(&c, &r, 0), 0);
	simple("GET /static/nope HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 404);
	CHECK_MSG(strstr(r.body, "\"code\":\"not_found\"") && strstr(r.body, "\"message\":"), "error body %s", r.body);
	simple("GET /drain HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_INT(r.status, 200);
	/* the open keep-alive connection gets its answer, then is closed */
	SEND(&c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	if (read_resp(&c, &r, 0) == 0) CHECK_INT(r.status, 200);
	CHECK(cli_eof(&c));
	cli_free(&c);
	/* no new connections */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv_port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) != 0);
	close(fd);
	resp_free(&r);
	stop_server();
	size_t n = 0;
	char *log = test_read_file(log_path, &n);
	unlink(log_path);
	log_path[0] = 0;
	CHECK(log != NULL);
	CHECK_MSG(strstr(log, "info http: POST /echo?a=1 200 3 ") != NULL, "log: %.500s", log);
	CHECK_MSG(strstr(log, "info http: GET /static/nope 404 ") != NULL, "log: %.500s", log);
	CHECK_MSG(strstr(log, " 127.0.0.1\n") != NULL, "log: %.500s", log);
	free(log);
}

/* ---------------------------------------------------------------- abuse */

/* Many clients doing rude things at once: pipelining and leaving, half requests, reading
 * half a stream. The server must keep serving and (under ASan) exit with nothing leaked. */
TEST(rude_clients) {
	start_server(64);
	static const char *const reqs[] = {
		"GET /echo?a=1 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /static/page.html HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
		"GET /static/big.bin HTTP/1.1\r\n\r\n",
		"GET /stream?n=50&ms=2 HTTP/1.1\r\n\r\n",
		"GET /sse?n=50&ms=2&hb=5 HTTP/1.1\r\n\r\n",
		"GET /delay?ms=20 HTTP/1.1\r\n\r\n",
		"GET /late?ms=20 HTTP/1.1\r\n\r\n",
		"GET /hold HTTP/1.1\r\n\r\n",
		"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
		"POST /echo HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
		"GET /echo HTTP/1.1\r\nX-Partial: ",
	};
	enum { N = 24 };
	client cs[N];
	for (int i = 0; i < N; i++) cs[i] = (client){.fd = -1};
	srand(12345);
	for (int step = 0; step < 600; step++) {
		client *c = &cs[rand() % N];
		int act = rand() % 4;
		if (c->fd < 0) {
			cli_open(c);
			struct timeval tv = {0, 20000};
			setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		}
		if (act <= 1) {
			int k = 1 + rand() % 3;
			for (int j = 0; j < k; j++) {
				const char *q = reqs[rand() % MS_ARRAY_LEN(reqs)];
				if (send(c->fd, q, strlen(q), MSG_NOSIGNAL) < 0) break;
			}
		} else if (act == 2) {
			c->len = 0;
			cli_fill(c);
		} else {
			if (rand() % 2) { /* reset instead of a clean close */
				struct linger lg = {1, 0};
				setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			}
			cli_close(c);
		}
	}
	for (int i = 0; i < N; i++) cli_free(&cs[i]);
	/* everything settles: the server still answers and holds no request but /stats */
	resp r = {0};
	int inflight = -1;
	for (int i = 0; i < 300 && inflight != 1; i++) {
		simple("GET /stats HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
		const char *p = strstr(r.body, "\"inflight\":");
		inflight = p ? atoi(p + 11) : -1;
		if (inflight != 1) usleep(10000);
	}
	CHECK_MSG(inflight == 1, "inflight %d: %s", inflight, r.body);
	simple("GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n", &r, 0);
	CHECK_STR(r.body, "hello\n");
	resp_free(&r);
	stop_server();
}
