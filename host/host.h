/* host/host.h: the host process's shared state, for the host's own modules only.
 *
 * One ms_host per process, living on one libuv loop. Apps come from the apps
 * directories (appdir.h) and are mirrored in the store (store.h); each app has a queue of
 * calls and a pool of app workers (worker.h). A call ("event" in Gradio's words) belongs to
 * an app and, for the Gradio queue protocol, to a session (session_hash), whose SSE stream
 * receives the call's messages.
 */
#ifndef MS_HOST_H
#define MS_HOST_H

#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <uv.h>

#include "common/ms.h"
#include "host/appdir.h"
#include "host/settings.h"
#include "host/http.h"
#include "host/store.h"
#include "host/worker.h"

typedef struct ms_host ms_host;
typedef struct ms_app ms_app;
typedef struct ms_call ms_call;
typedef struct ms_session ms_session;
typedef struct ms_app_worker ms_app_worker;
typedef struct ms_model_proc ms_model_proc;

/* Stages as the Hub's runtime.stage names them. */
typedef enum ms_stage {
	MS_STAGE_BUILDING = 0,
	MS_STAGE_RUNNING,
	MS_STAGE_SLEEPING,
	MS_STAGE_RUNTIME_ERROR,
	MS_STAGE_BUILD_ERROR,
	MS_STAGE_CONFIG_ERROR,
	MS_STAGE_NO_APP_FILE,
} ms_stage;
const char *ms_stage_name(ms_stage s);
/* An error stage: the app serves no calls until it changes or is restarted. */
int ms_stage_is_error(ms_stage s);

#define MS_APP_LOG_LINES 200
#define MS_APP_MAX_WORKERS 64
#define MS_APP_MAX_COMPONENTS 64
#define MS_APP_MAX_FETCHES 16   /* models + preload_from_hub entries */
#define MS_APP_MAX_LISTENERS 64 /* status streams (/events) per app */ /* per endpoint, each way; and endpoints per app */

struct ms_app_worker {
	ms_app *app;
	ms_worker *proc;     /* NULL once it exited */
	ms_appsrc *src;      /* the version this worker runs */
	int ready;           /* answered "ready" */
	int retiring;        /* finish the current call, then stop (an older version) */
	ms_call *call;       /* the call the worker is running */
	ms_call *pipe_head, *pipe_tail; /* calls sent ahead, not started yet (apps.c: pipelining) */
	int n_piped;
	int head_heard;      /* a frame about the running call arrived */
	uv_timer_t deadline; /* wall-clock limit of the call in flight */
	int timer_open;
	uint64_t started_ns;
	long peak_rss_kb;
};

struct ms_app {
	ms_host *host;
	char id[MS_APP_ID_MAX];
	ms_appsrc *src;       /* current version (one reference) */
	ms_stage stage;
	char *error;          /* what to fix, or NULL */
	json_t *iface;        /* the worker's "ready" message for the current version, or NULL */
	int removed;          /* gone from disk: serve no new calls, free when idle */

	/* limits from the card (or the host's defaults) */
	int concurrency, timeout_s, memory_mb, max_queue;

	ms_app_worker *workers[MS_APP_MAX_WORKERS];
	int n_workers;
	int closing_workers;  /* gone from workers[], their timers still closing: they point here */
	int starting;         /* workers spawned but not ready */
	int start_waiting;    /* wants a worker but the host-wide start limit was reached */

	ms_call *queue_head, *queue_tail; /* calls waiting for a worker */
	int queued;
	int queued_followed; /* queued calls whose client follows estimations (queue/join) */
	int running;         /* calls handed to workers: running, or sent ahead (pipelined) */

	/* crash-loop accounting */
	uint64_t crash_times[5];
	int n_crashes;
	uv_timer_t restart_timer;
	int restart_pending;
	unsigned backoff_ms;

	double avg_ms;        /* recent average duration, for ETAs */
	ms_store_run *runs;   /* finished calls not yet written to the store */
	size_t n_runs, cap_runs;

	/* the build: models fetched before the first worker starts (build.c) */
	struct ms_build_fetch *fetches[MS_APP_MAX_FETCHES];
	int n_fetches;
	int building;         /* fetches in flight: no worker starts yet */
	ms_http_req *listeners[MS_APP_MAX_LISTENERS]; /* /events streams */
	int n_listeners;
	uint64_t last_notify_ns;

	char *log[MS_APP_LOG_LINES]; /* ring of the app's last log lines */
	int log_start, log_n;

	ms_app *next;
};

typedef enum ms_call_mode {
	MS_CALL_QUEUE = 0, /* queue/join: messages go to the session's queue/data stream */
	MS_CALL_REST,      /* call/{api}: curl-style event stream, kept for a later GET */
	MS_CALL_RUN,       /* run/{api}: one synchronous JSON answer */
} ms_call_mode;

typedef enum ms_call_status { MS_CALL_QUEUED = 0, MS_CALL_RUNNING, MS_CALL_DONE } ms_call_status;

struct ms_call {
	char event_id[33];
	int seq;               /* the id sent to the worker */
	ms_app *app;
	ms_appsrc *src;        /* held while queued/running */
	int fn_index;
	json_t *data;          /* validated inputs, state filled in */
	ms_session *session;   /* queue mode (and state for every mode with a session) */
	ms_call_mode mode;
	ms_call_status status;
	int cancelled;
	int followed;          /* counted in app->queued_followed while queued */
	int requeued;          /* put back in the queue once after its worker stopped */
	uint64_t t_join, t_start;
	json_t *last_output;   /* the last full value sent (for diffs) */
	int n_generating;
	ms_app_worker *worker;

	/* REST mode: the curl-style events so far and the reader, if attached */
	ms_buf rest_log;
	ms_http_req *rest_req;
	/* RUN mode: the request waiting for the answer */
	ms_http_req *run_req;

	ms_call *qnext, *qprev; /* app queue */
	ms_call *pnext;         /* the worker's pipeline */
	ms_call *hnext;         /* event table bucket */
	ms_call *lnext, *lprev; /* finished-call retention list */
};

struct ms_session {
	char key[MS_APP_ID_MAX + 72]; /* "owner/name\nsession_hash" */
	const char *hash;             /* points into key */
	ms_app *app;
	ms_buf pending;               /* SSE text waiting for a reader */
	ms_http_req *stream;          /* queue/data */
	ms_http_req *heartbeat;       /* heartbeat/{hash} */
	int open_calls;               /* calls joined and not completed */
	int close_pending;            /* send close_stream once drained */
	json_t *state;                /* component id (string) → value */
	uint64_t last_seen_ns;
	ms_session *next;
};

#define MS_CALL_BUCKETS 1024
#define MS_SESSION_BUCKETS 1024
#define MS_CALL_RETAIN 2000

struct ms_host {
	uv_loop_t *loop;
	ms_settings *cfg;
	ms_http_server *http;
	ms_store *store;
	struct ms_hub_mirror *mirror; /* hub.h: the Hub mirror routes */
	struct ms_hub *hub;           /* hub.h: the Hub client (HF_* environment) for fetching models */
	ms_appdir_watch *watch;
	ms_app *apps;
	ms_session *sessions[MS_SESSION_BUCKETS]; /* hashed on the session key */
	ms_model_proc *models;
	ms_call *calls[MS_CALL_BUCKETS];
	ms_call *retained_head, *retained_tail; /* finished calls, oldest first */
	int n_retained;
	int call_seq;
	int starting;         /* app workers loading, host-wide */
	uv_timer_t sweep_timer;
	uv_timer_t flush_timer;
	uv_signal_t sigint, sigterm;
	uv_timer_t shutdown_timer;
	int shutting_down;
	uint64_t started_ns;
};

/* ---- apps.c ---- */
ms_app *ms_app_find(ms_host *h, const char *id);
/* The watcher's callback: an app was added, changed or removed on disk. */
void ms_apps_on_change(void *ud, ms_appdir_change kind, ms_appsrc *new_app, ms_appsrc *old_app);
/* Enqueues a call (already validated); starts a worker if needed. 0, or MS_EBUSY when the
 * queue is full. */
int ms_app_enqueue(ms_app *app, ms_call *call);
/* Cancels a queued or running call. */
void ms_app_cancel_call(ms_app *app, ms_call *call);
/* Starts the app again after an error (the page's retry button). */
void ms_app_restart(ms_app *app);
/* Sets the stage (and what to fix), records it and tells the status listeners. */
void ms_app_set_stage(ms_app *app, ms_stage stage, const char *error);
/* Hands queued calls to free workers and starts workers as needed. */
void ms_app_dispatch(ms_app *app);
/* Calls handed to a worker ahead of the one it runs (pipelining, apps.c). */
int ms_app_sent_ahead(const ms_app *app);

/* ---- build.c ---- */
/* Starts fetching the models the card names: 1 when the app must wait for them (stays
 * BUILDING), 0 when there is nothing to fetch, <0 on error (the app is in BUILD_ERROR). */
int ms_build_start(ms_app *app);
void ms_build_cancel(ms_app *app);
void ms_build_free(ms_app *app);
/* The download progress while BUILDING, or JSON null. New reference. */
json_t *ms_build_json(const ms_app *app);
/* Status streams: /api/spaces/{owner}/{name}/events. */
void ms_build_listen(ms_app *app, ms_http_req *req);
void ms_build_notify(ms_app *app);
void ms_build_drop_listeners(ms_app *app);
/* The endpoint with this index, or NULL; and by api name (with or without '/'). */
const json_t *ms_app_endpoint(const ms_app *app, int fn_index);
int ms_app_endpoint_index(const ms_app *app, const char *api_name);
void ms_app_log(ms_app *app, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Estimated seconds until a call at queue rank `rank` starts (negative when unknown). */
double ms_app_eta(const ms_app *app, int rank);
/* Stops every worker of every app (shutdown). */
void ms_apps_stop_all(ms_host *h);
void ms_apps_free(ms_host *h);
/* Writes the runs recorded since the last flush to the store (one app, or all). */
void ms_app_flush_runs(ms_app *app);
void ms_apps_flush_runs(ms_host *h);
int ms_apps_busy(const ms_host *h);

/* ---- calls.c ---- */
ms_call *ms_call_new(ms_host *h, ms_app *app, int fn_index, ms_call_mode mode);
ms_call *ms_call_find(ms_host *h, const char *event_id);
/* Messages from the lifecycle of a call, formatted for its mode. */
void ms_call_estimation(ms_call *c, int rank, int queue_size);
void ms_call_started(ms_call *c);
void ms_call_progress(ms_call *c, const json_t *msg);
void ms_call_log_line(ms_call *c, const char *level, const char *line);
void ms_call_generating(ms_call *c, const json_t *data);
void ms_call_completed(ms_call *c, const json_t *data);
/* kind: "error" title etc. A cancelled call completes with success and empty output. */
void ms_call_failed(ms_call *c, const char *message);
void ms_call_cancelled(ms_call *c);
/* call/{api}/{event_id}: replays the events so far, then streams the rest. */
void ms_call_attach_rest(ms_call *c, ms_http_req *req);

ms_session *ms_session_get(ms_host *h, ms_app *app, const char *hash, int create);
void ms_session_attach_stream(ms_session *s, ms_http_req *req);
void ms_session_attach_heartbeat(ms_session *s, ms_http_req *req);
void ms_sessions_sweep(ms_host *h);
void ms_sessions_drop_app(ms_host *h, ms_app *app);

/* ---- models.c ---- */
/* An app worker's "model" frame: checked against the card, relayed to a model worker. */
void ms_models_request(ms_app_worker *aw, json_t *msg);
/* Cancels the worker's model requests: one (app_req >= 0) or all of them (-1). */
void ms_models_cancel(ms_app_worker *aw, json_int_t app_req);
void ms_models_stop_all(ms_host *h);
void ms_models_free(ms_host *h);

/* ---- router.c ---- */
void ms_host_handle(ms_http_req *req, void *ud);
/* The public base URL of the host as the client sees it (scheme://host[:port]{root}). */
void ms_host_base_url(ms_host *h, const ms_http_req *req, char *out, size_t len);
/* Token check: 1 when the request carries a valid token (name in name_out). */
int ms_host_token(ms_host *h, const ms_http_req *req, char *name_out, size_t len);
/* 1 when the app needs a token (private card or --require-token). */
int ms_app_needs_token(const ms_app *app);

/* ---- gradio.c / api.c: route handlers (args[] are the captured path segments) ---- */
typedef void (*ms_route_fn)(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_config(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_info(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_join(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_data(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_heartbeat(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_call(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_call_stream(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_cancel(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_reset(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_run(ms_host *h, ms_http_req *req, char **args);
void ms_gradio_app_id(ms_host *h, ms_http_req *req, char **args);
void ms_api_spaces(ms_host *h, ms_http_req *req, char **args);
void ms_api_space(ms_host *h, ms_http_req *req, char **args);
void ms_api_like(ms_host *h, ms_http_req *req, char **args);
void ms_api_restart(ms_host *h, ms_http_req *req, char **args);
void ms_api_events(ms_host *h, ms_http_req *req, char **args);
void ms_page_gallery(ms_host *h, ms_http_req *req, char **args);
void ms_page_app(ms_host *h, ms_http_req *req, char **args);
void ms_page_static(ms_host *h, ms_http_req *req, char **args);
void ms_page_healthz(ms_host *h, ms_http_req *req, char **args);

/* ---- serve.c ---- */
int ms_serve_main(int argc, char **argv);
int ms_token_main(int argc, char **argv);

#endif
