/* host/worker.h: one supervised worker process (an app worker or a model worker).
 *
 * The host spawns the worker binary with fd 3 one end of a socketpair, reads its frames
 * (sandbox/frame.h) and its stdout/stderr lines, and is told when it exits. Everything
 * the worker sends is untrusted: a frame over the limit or one that is not a JSON object
 * with a string "t" kills the worker. Callbacks run on the loop thread.
 *
 * Lifetime: ms_worker_spawn() → callbacks → on_exit (always called exactly once, after the
 * process is gone and its pipes are drained) → the worker frees itself. Do not touch the
 * handle after on_exit returns.
 */
#ifndef MS_WORKER_H
#define MS_WORKER_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef struct ms_worker ms_worker;

typedef struct ms_worker_cbs {
	/* A frame: a JSON object with a string "t". Borrowed reference. */
	void (*on_message)(ms_worker *w, json_t *msg, void *ud);
	/* A line the worker wrote to stdout or stderr (without the newline). */
	void (*on_log)(ms_worker *w, const char *line, void *ud);
	/* The process ended. reason is why the host killed it (NULL when it died by itself). */
	void (*on_exit)(ms_worker *w, int64_t exit_status, int term_signal, const char *reason, void *ud);
} ms_worker_cbs;

typedef struct ms_worker_opts {
	const char *exe;      /* path of the worker binary */
	size_t max_frame;     /* largest frame accepted (default 16 MiB) */
	int drop_privileges;  /* when the host runs as root: run the worker as nobody */
	const int *extra_fds; /* inherited as fds 4, 5, ... (e.g. a directory the worker may not reach by path) */
	int n_extra_fds;      /* at most 4 */
} ms_worker_opts;

int ms_worker_spawn(uv_loop_t *loop, const ms_worker_opts *opts, const ms_worker_cbs *cbs, void *ud,
		    ms_worker **out, char *err, size_t errlen);
/* Queues one frame. MS_ECLOSED once the worker is gone. */
int ms_worker_send(ms_worker *w, const json_t *msg);
/* SIGKILLs the worker (idempotent); on_exit follows with this reason. */
void ms_worker_kill(ms_worker *w, const char *reason);
/* Asks the worker to cancel call `id` (sigqueue MS_SIG_CANCEL with the id). */
int ms_worker_cancel(ms_worker *w, int id);
pid_t ms_worker_pid(const ms_worker *w);
int ms_worker_alive(const ms_worker *w);
/* Peak resident memory of the worker in KiB (from /proc, 0 if unknown). */
long ms_worker_peak_rss_kb(const ms_worker *w);

#endif
