/* host/worker.c: spawning and supervising one worker process (see worker.h). */
#include "host/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/ms.h"
#include "sandbox/frame.h"

#define LOG_LINE_MAX 4096

struct log_pipe {
	uv_pipe_t pipe;
	ms_worker *w;
	ms_buf line;
};

struct ms_worker {
	uv_loop_t *loop;
	uv_process_t proc;
	uv_pipe_t sock;
	struct log_pipe out, err;
	ms_frame_reader reader;
	ms_buf pending; /* frames sent during this loop iteration, written together before it polls */
	uv_prepare_t flush;
	ms_worker_cbs cbs;
	void *ud;
	int open_handles;
	int exited;
	int64_t exit_status;
	int term_signal;
	char *kill_reason;
	int killed;
	int sock_closed;
	int finished;
};

struct write_req {
	uv_write_t req;
	char *data;
};

static void maybe_finish(ms_worker *w);

/* Every handle's data points at its worker. */
static void on_handle_closed(uv_handle_t *h) {
	ms_worker *w = h->data;
	w->open_handles--;
	maybe_finish(w);
}

static void close_handle(ms_worker *w, uv_handle_t *h) {
	(void)w;
	if (!uv_is_closing(h)) uv_close(h, on_handle_closed);
}

static void maybe_finish(ms_worker *w) {
	/* all pipes drained and closed, process reaped: report once, then free */
	if (!w->exited || w->open_handles > 0 || w->finished) return;
	w->finished = 1;
	if (w->cbs.on_exit) w->cbs.on_exit(w, w->exit_status, w->term_signal, w->kill_reason, w->ud);
	ms_frame_reader_free(&w->reader);
	ms_buf_free(&w->pending);
	ms_buf_free(&w->out.line);
	ms_buf_free(&w->err.line);
	free(w->kill_reason);
	free(w);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
	ms_worker *w = p->data;
	w->exited = 1;
	w->exit_status = status;
	w->term_signal = sig;
	ms_buf_reset(&w->pending); /* nobody reads it any more */
	close_handle(w, (uv_handle_t *)&w->flush);
	/* the process is gone: its socket and pipes are read to their end (a last frame may
	 * still be in them, e.g. the answer before a hard stop) and close on EOF */
	close_handle(w, (uv_handle_t *)p);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
	static char slab[65536]; /* the loop is single-threaded; data is copied out at once */
	(void)h, (void)suggested;
	buf->base = slab;
	buf->len = sizeof slab;
}

static void protocol_error(ms_worker *w, const char *what) {
	char reason[256];
	snprintf(reason, sizeof reason, "protocol violation: %s", what);
	ms_worker_kill(w, reason);
}

static void on_sock_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
	ms_worker *w = s->data;
	if (n < 0) {
		if (!w->sock_closed) {
			w->sock_closed = 1;
			close_handle(w, (uv_handle_t *)&w->sock);
		}
		return;
	}
	if (w->killed || ms_frame_reader_feed(&w->reader, buf->base, (size_t)n)) return;
	const char *payload;
	size_t len;
	int rc = 0;
	while (!w->killed && (rc = ms_frame_next(&w->reader, &payload, &len)) == 1) {
		json_error_t e;
		/* NUL is allowed: a model's text may hold U+0000 (Llama's <0x00> byte token), and
		 * every string is carried with its length */
		json_t *msg = json_loadb(payload, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
		if (!msg || !json_is_object(msg) || !json_is_string(json_object_get(msg, "t"))) {
			json_decref(msg);
			protocol_error(w, "a frame that is not a JSON object with a string \"t\"");
			return;
		}
		if (w->cbs.on_message) w->cbs.on_message(w, msg, w->ud);
		json_decref(msg);
	}
	if (rc == MS_ETOOBIG) protocol_error(w, "a frame over the size limit");
}

static void emit_line(struct log_pipe *lp) {
	ms_worker *w = lp->w;
	if (lp->line.len && w->cbs.on_log) w->cbs.on_log(w, lp->line.data, w->ud);
	ms_buf_reset(&lp->line);
}

static void on_log_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
	ms_worker *w = s->data;
	struct log_pipe *lp = s == (uv_stream_t *)&w->out.pipe ? &w->out : &w->err;
	if (n < 0) {
		emit_line(lp);
		close_handle(w, (uv_handle_t *)s);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		char c = buf->base[i];
		if (c == '\n') { emit_line(lp); continue; }
		if (lp->line.len < LOG_LINE_MAX) ms_buf_append(&lp->line, &c, 1);
		else if (lp->line.len == LOG_LINE_MAX) ms_buf_puts(&lp->line, "…");
	}
}

int ms_worker_spawn(uv_loop_t *loop, const ms_worker_opts *opts, const ms_worker_cbs *cbs, void *ud,
		    ms_worker **out, char *err, size_t errlen) {
	int sv[2];
	*out = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return ms_errf(err, errlen, MS_EIO, "socketpair: %s", strerror(errno));
	ms_worker *w = calloc(1, sizeof *w);
	if (!w) {
		close(sv[0]), close(sv[1]);
		return ms_errf(err, errlen, MS_ENOMEM, "out of memory");
	}
	w->loop = loop;
	w->cbs = *cbs;
	w->ud = ud;
	w->out.w = w->err.w = w;
	ms_frame_reader_init(&w->reader, opts->max_frame);
	uv_pipe_init(loop, &w->sock, 0);
	uv_pipe_init(loop, &w->out.pipe, 0);
	uv_pipe_init(loop, &w->err.pipe, 0);
	uv_prepare_init(loop, &w->flush);
	w->flush.data = w;
	w->sock.data = w;
	w->out.pipe.data = w;
	w->err.pipe.data = w;
	w->proc.data = w;
	w->open_handles = 4;

	uv_stdio_container_t stdio[8];
	int n_extra = opts->n_extra_fds > 4 ? 4 : opts->n_extra_fds;
	for (int i = 0; i < n_extra; i++) {
		stdio[4 + i].flags = UV_INHERIT_FD;
		stdio[4 + i].data.fd = opts->extra_fds[i];
	}
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&w->out.pipe;
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&w->err.pipe;
	stdio[3].flags = UV_INHERIT_FD;
	stdio[3].data.fd = sv[1];

	char *args[] = {(char *)opts->exe, "--fd", "3", NULL};
#ifdef MS_ASAN
	char *env[] = {"MS_ASAN=1", "ASAN_OPTIONS=detect_leaks=0:halt_on_error=1",
		       "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1", NULL};
#else
	char *env[] = {NULL};
#endif
	uv_process_options_t po;
	memset(&po, 0, sizeof po);
	po.file = opts->exe;
	po.args = args;
	po.env = env;
	po.exit_cb = on_exit_cb;
	po.stdio = stdio;
	po.stdio_count = 4 + n_extra;
	if (opts->drop_privileges && geteuid() == 0) {
		po.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
		po.uid = 65534;
		po.gid = 65534;
	}
	int rc = uv_spawn(loop, &w->proc, &po);
	close(sv[1]);
	if (rc) {
		close(sv[0]);
		ms_errf(err, errlen, MS_EIO, "cannot start %s: %s", opts->exe, uv_strerror(rc));
		/* the process handle is not active; close the pipes and free without on_exit */
		w->cbs.on_exit = NULL;
		w->exited = 1;
		w->open_handles = 5;
		w->sock_closed = 1;
		uv_close((uv_handle_t *)&w->flush, on_handle_closed);
		uv_close((uv_handle_t *)&w->proc, on_handle_closed);
		uv_close((uv_handle_t *)&w->sock, on_handle_closed);
		uv_close((uv_handle_t *)&w->out.pipe, on_handle_closed);
		uv_close((uv_handle_t *)&w->err.pipe, on_handle_closed);
		return MS_EIO;
	}
	w->open_handles = 5;
	uv_pipe_open(&w->sock, sv[0]);
	uv_read_start((uv_stream_t *)&w->sock, alloc_cb, on_sock_read);
	uv_read_start((uv_stream_t *)&w->out.pipe, alloc_cb, on_log_read);
	uv_read_start((uv_stream_t *)&w->err.pipe, alloc_cb, on_log_read);
	*out = w;
	return 0;
}

static void on_write(uv_write_t *req, int status) {
	struct write_req *wr = (struct write_req *)req;
	free(wr->data);
	free(wr);
}

/* Most writes fit the socket at once: try them directly (no allocation, no write
 * request, no epoll change), and queue only what is left. Bytes keep their order because
 * nothing is tried while earlier writes are still queued. */
static int write_now(ms_worker *w, const char *data, size_t len) {
	size_t off = 0;
	if (uv_stream_get_write_queue_size((uv_stream_t *)&w->sock) == 0) {
		uv_buf_t ub = uv_buf_init((char *)data, (unsigned)len);
		int n = uv_try_write((uv_stream_t *)&w->sock, &ub, 1);
		if (n > 0) off = (size_t)n;
		else if (n != UV_EAGAIN) return MS_ECLOSED;
	}
	if (off == len) return 0;
	struct write_req *wr = malloc(sizeof *wr);
	char *rest = malloc(len - off);
	if (!wr || !rest) {
		free(wr), free(rest);
		return MS_ENOMEM;
	}
	memcpy(rest, data + off, len - off);
	wr->data = rest;
	uv_buf_t ub = uv_buf_init(rest, (unsigned)(len - off));
	if (uv_write(&wr->req, (uv_stream_t *)&w->sock, &ub, 1, on_write)) {
		free(rest), free(wr);
		return MS_ECLOSED;
	}
	return 0;
}

/* Runs before the loop polls again: everything sent since goes out in one write. */
static void on_flush(uv_prepare_t *p) {
	ms_worker *w = p->data;
	uv_prepare_stop(p);
	if (w->pending.len && !w->exited && !w->killed && !w->sock_closed) write_now(w, w->pending.data, w->pending.len);
	if (w->pending.cap > (1u << 20)) ms_buf_free(&w->pending); /* e.g. an init with big files */
	else ms_buf_reset(&w->pending);
}

/* Frames are gathered until the loop is about to wait: a loop iteration that hands a
 * worker several calls (pipelining) costs it one write and the worker one read. */
int ms_worker_send(ms_worker *w, const json_t *msg) {
	if (w->exited || w->killed || w->sock_closed) return MS_ECLOSED;
	size_t before = w->pending.len;
	if (ms_frame_encode_json(&w->pending, msg)) {
		w->pending.len = before;
		return MS_ENOMEM;
	}
	if (!before) uv_prepare_start(&w->flush, on_flush);
	return 0;
}

void ms_worker_kill(ms_worker *w, const char *reason) {
	if (w->exited || w->killed) return;
	w->killed = 1;
	w->kill_reason = reason ? strdup(reason) : NULL;
	uv_process_kill(&w->proc, SIGKILL);
}

int ms_worker_cancel(ms_worker *w, int id) {
	if (w->exited) return MS_ECLOSED;
	union sigval v = {.sival_int = id};
	return sigqueue(w->proc.pid, MS_SIG_CANCEL, v) == 0 ? 0 : MS_EIO;
}

pid_t ms_worker_pid(const ms_worker *w) { return w->proc.pid; }
int ms_worker_alive(const ms_worker *w) { return !w->exited && !w->killed; }

long ms_worker_peak_rss_kb(const ms_worker *w) {
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)w->proc.pid);
	FILE *f = fopen(path, "r");
	if (!f) return 0;
	long kb = 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
	fclose(f);
	return kb;
}
