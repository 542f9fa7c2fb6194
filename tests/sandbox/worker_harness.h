/* tests/sandbox/worker_harness.h: plays the host's part towards one app worker for the
 * worker-level tests and the bench: spawn (as nobody when root, empty environment, fd 3 a
 * socketpair), init, calls, and the host's deadline (SIGKILL at timeout + 1 s). */
#ifndef MS_WORKER_HARNESS_H
#define MS_WORKER_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/ms.h"
#include "sandbox/frame.h"

typedef struct wk {
	pid_t pid;
	int fd;       /* our end of the socketpair */
	int logfd;    /* the worker's stdout+stderr */
	ms_frame_reader rd;
	ms_buf log;
	int status;   /* wait status once reaped */
	long maxrss_kb;
	int reaped;
} wk;

static inline double wk_now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts bin (e.g. "bin/moonspace-appworker"). 0 or -1. */
static inline int wk_spawn(wk *w, const char *bin) {
	int sv[2], lp[2];
	memset(w, 0, sizeof *w);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
	if (pipe2(lp, O_CLOEXEC) != 0) return -1;
	pid_t pid = fork();
	if (pid < 0) return -1;
	if (pid == 0) {
		int dn = open("/dev/null", O_RDONLY);
		dup2(dn, 0);
		dup2(lp[1], 1);
		dup2(lp[1], 2);
		dup2(sv[1], 3);
		if (getuid() == 0) { /* as the host does: never run app code as root */
			if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) _exit(126);
		}
		char *argv[] = {(char *)bin, "--fd", "3", NULL};
#ifdef MS_ASAN
		char *envp[] = {"MS_ASAN=1", NULL};
#else
		char *envp[] = {NULL};
#endif
		execve(bin, argv, envp);
		_exit(127);
	}
	close(sv[1]);
	close(lp[1]);
	w->pid = pid;
	w->fd = sv[0];
	w->logfd = lp[0];
	fcntl(w->logfd, F_SETFL, O_NONBLOCK);
	fcntl(w->fd, F_SETFL, O_NONBLOCK);
	ms_frame_reader_init(&w->rd, 0);
	ms_buf_init(&w->log);
	return 0;
}

static inline void wk_drain_log(wk *w) {
	char buf[4096];
	ssize_t r;
	while ((r = read(w->logfd, buf, sizeof buf)) > 0)
		if (w->log.len < (1u << 20)) ms_buf_append(&w->log, buf, (size_t)r);
}

static inline int wk_send(wk *w, json_t *msg) {
	ms_buf b;
	ms_buf_init(&b);
	int rc = ms_frame_encode_json(&b, msg);
	json_decref(msg);
	size_t off = 0;
	while (!rc && off < b.len) {
		ssize_t n = write(w->fd, b.data + off, b.len - off);
		if (n > 0) off += (size_t)n;
		else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd p = {w->fd, POLLOUT, 0};
			poll(&p, 1, 100);
		} else rc = -1;
	}
	ms_buf_free(&b);
	return rc;
}

/* Next frame from the worker, or NULL at EOF / after timeout_s. */
static inline json_t *wk_recv(wk *w, double timeout_s) {
	double end = wk_now() + timeout_s;
	for (;;) {
		const char *p;
		size_t n;
		int r = ms_frame_next(&w->rd, &p, &n);
		if (r == 1) return json_loadb(p, n, 0, NULL);
		if (r < 0) return NULL;
		double left = end - wk_now();
		if (left <= 0) return NULL;
		struct pollfd pf[2] = {{w->fd, POLLIN, 0}, {w->logfd, POLLIN, 0}};
		poll(pf, 2, (int)(left * 1000) + 1);
		wk_drain_log(w);
		char buf[65536];
		ssize_t got = read(w->fd, buf, sizeof buf);
		if (got == 0) return NULL;
		if (got > 0) ms_frame_reader_feed(&w->rd, buf, (size_t)got);
	}
}

static inline const char *wk_type(json_t *m) {
	const char *t = json_string_value(json_object_get(m, "t"));
	return t ? t : "";
}

/* Sends init; returns the answer (ready or init_error) or NULL. */
static inline json_t *wk_init(wk *w, json_t *files, int memory_mb, double timeout_s, json_t *models) {
	json_t *m = json_pack("{s:s,s:s,s:s,s:o,s:i,s:f,s:o,s:{s:s}}", "t", "init", "app", "test/app", "entry", "app.lua",
			      "files", files, "memory_mb", memory_mb, "timeout_s", timeout_s, "models",
			      models ? models : json_array(), "space", "SPACE_ID", "test/app");
	if (wk_send(w, m)) return NULL;
	return wk_recv(w, timeout_s + 5);
}

/* Sends a call and collects every frame until done/error (returned, also last in *all),
 * or NULL when none came before deadline_s (the caller then kills, as the host does). */
static inline json_t *wk_call(wk *w, long long id, const char *api, json_t *data, double deadline_s, json_t **all) {
	if (all) *all = json_array();
	if (wk_send(w, json_pack("{s:s,s:I,s:s,s:o,s:s,s:i}", "t", "call", "id", (json_int_t)id, "api_name", api, "data",
				 data, "session", "s1", "seed", 42)))
		return NULL;
	double end = wk_now() + deadline_s;
	for (;;) {
		double left = end - wk_now();
		json_t *m = left > 0 ? wk_recv(w, left) : NULL;
		if (!m) return NULL;
		const char *t = wk_type(m);
		if (all) json_array_append(*all, m);
		if (!strcmp(t, "done") || !strcmp(t, "error")) return m;
		json_decref(m);
	}
}

/* SIGKILL (if still running) and reap; fills status and peak RSS. */
static inline void wk_kill(wk *w) {
	if (!w->reaped && w->pid > 0) {
		kill(w->pid, SIGKILL);
		struct rusage ru;
		while (wait4(w->pid, &w->status, 0, &ru) < 0 && errno == EINTR) {}
		w->maxrss_kb = ru.ru_maxrss;
		w->reaped = 1;
	}
	wk_drain_log(w);
}

/* Waits up to timeout_s for the worker to exit by itself; 1 if it did. */
static inline int wk_wait_exit(wk *w, double timeout_s) {
	double end = wk_now() + timeout_s;
	while (wk_now() < end) {
		struct rusage ru;
		pid_t r = wait4(w->pid, &w->status, WNOHANG, &ru);
		if (r == w->pid) {
			w->maxrss_kb = ru.ru_maxrss;
			w->reaped = 1;
			wk_drain_log(w);
			return 1;
		}
		usleep(2000);
	}
	return 0;
}

static inline void wk_free(wk *w) {
	wk_kill(w);
	close(w->fd);
	close(w->logfd);
	ms_frame_reader_free(&w->rd);
	ms_buf_free(&w->log);
}

static inline json_t *wk_files1(const char *src) { return json_pack("{s:s}", "app.lua", src); }

/* Reads an app directory: every *.lua file, and timeout/memory from README.md's card. */
static inline json_t *wk_load_app_dir(const char *dir, int *timeout_s, int *memory_mb) {
	json_t *files = json_object();
	DIR *d = opendir(dir);
	if (!d) return NULL;
	struct dirent *e;
	char path[4096];
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n < 5 || strcmp(e->d_name + n - 4, ".lua") != 0) continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		char *src;
		size_t len;
		if (ms_read_file(path, &src, &len, 16u << 20) == 0) {
			json_object_set_new(files, e->d_name, json_stringn(src, len));
			free(src);
		}
	}
	closedir(d);
	snprintf(path, sizeof path, "%s/README.md", dir);
	char *card;
	size_t len;
	if (ms_read_file(path, &card, &len, 1 << 20) == 0) {
		char *p;
		if ((p = strstr(card, "\ntimeout:"))) *timeout_s = atoi(p + 9);
		if ((p = strstr(card, "\nmemory:"))) *memory_mb = atoi(p + 8);
		free(card);
	}
	return files;
}

#endif
