/* host/apps.c: each app's lifecycle, its pool of workers and its queue.
 *
 * An app runs `concurrency` workers at most, each serving one call at a time. The first
 * worker starts as soon as the app is found (its "ready" gives the interface and makes the
 * app RUNNING); more start when calls wait. When the app changes on disk, workers of the
 * old version finish their call and stop (retiring); new calls go to the new version.
 * A worker that dies unexpectedly fails its call with a clear error and is restarted with
 * backoff; five crashes within a minute put the app in RUNTIME_ERROR.
 *
 * Pipelining: when every worker the app may have is busy and its calls are short, calls
 * are sent ahead into a worker's socket (up to PIPELINE_DEPTH) instead of waiting for
 * its answer, so the worker goes from one call to the next without a round trip through
 * the host, and one read or write carries several frames. A call sent ahead counts as
 * started only when the call before it ends: its deadline and its process_starts wait
 * until then (a cancel does not: the worker remembers it). If the worker stops, calls it
 * never started go back to the front of the queue.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/host.h"

#define CRASH_WINDOW_NS (60ull * 1000000000ull)
#define CRASH_LIMIT 5
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
/* Workers loading at once, host-wide: starting every app's worker together on a small
 * machine makes each start slow enough to pass its time limit. */
#define MAX_STARTING 4
/* Calls sent ahead per worker, and the average call duration up to which it is done: for
 * longer calls the round trip is noise, and a call stuck behind a long one could have
 * gone to a worker that frees up sooner. */
#define PIPELINE_DEPTH 8
#define PIPELINE_MAX_MS 5.0

static void dispatch(ms_app *app);
static void spawn_worker(ms_app *app);
static void start_done(ms_host *h);
static void maybe_free_app(ms_app *app);
static void fail_queue(ms_app *app, const char *why);

const char *ms_stage_name(ms_stage s) {
	static const char *names[] = {"BUILDING", "RUNNING", "SLEEPING", "RUNTIME_ERROR",
				      "BUILD_ERROR", "CONFIG_ERROR", "NO_APP_FILE"};
	return (unsigned)s < MS_ARRAY_LEN(names) ? names[s] : "UNKNOWN";
}

ms_app *ms_app_find(ms_host *h, const char *id) {
	for (ms_app *a = h->apps; a; a = a->next)
		if (!a->removed && !strcmp(a->id, id)) return a;
	return NULL;
}

void ms_app_log(ms_app *app, const char *fmt, ...) {
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	int slot = (app->log_start + app->log_n) % MS_APP_LOG_LINES;
	if (app->log_n == MS_APP_LOG_LINES) {
		free(app->log[app->log_start]);
		app->log_start = (app->log_start + 1) % MS_APP_LOG_LINES;
		slot = (app->log_start + app->log_n - 1) % MS_APP_LOG_LINES;
	} else {
		app->log_n++;
	}
	app->log[slot] = strdup(line);
}

void ms_app_set_stage(ms_app *app, ms_stage stage, const char *error) {
	app->stage = stage;
	if (app->error != error) {
		free(app->error);
		app->error = error ? strdup(error) : NULL;
	}
	if (app->host->store) ms_store_app_set_status(app->host->store, app->id, ms_stage_name(stage), error);
	ms_build_notify(app);
	if (ms_stage_is_error(stage) && app->queue_head) { /* nothing will serve them until a restart */
		char why[700];
		snprintf(why, sizeof why, "The app stopped (%s): %s", ms_stage_name(stage), error ? error : "see its page");
		fail_queue(app, why);
	}
}

int ms_stage_is_error(ms_stage s) {
	return s == MS_STAGE_RUNTIME_ERROR || s == MS_STAGE_BUILD_ERROR || s == MS_STAGE_CONFIG_ERROR || s == MS_STAGE_NO_APP_FILE;
}

#define set_stage ms_app_set_stage

const json_t *ms_app_endpoint(const ms_app *app, int fn_index) {
	if (!app->iface || fn_index < 0) return NULL;
	return json_array_get(json_object_get(app->iface, "endpoints"), (size_t)fn_index);
}

int ms_app_endpoint_index(const ms_app *app, const char *api_name) {
	if (!app->iface || !api_name) return -1;
	if (*api_name == '/') api_name++;
	size_t i;
	json_t *ep;
	json_array_foreach(json_object_get(app->iface, "endpoints"), i, ep) {
		const char *n = json_string_value(json_object_get(ep, "api_name"));
		if (n && !strcmp(n, api_name)) return (int)i;
	}
	return -1;
}

double ms_app_eta(const ms_app *app, int rank) {
	if (app->avg_ms <= 0) return -1;
	int slots = app->concurrency > 0 ? app->concurrency : 1;
	/* calls ahead, spread over the workers, plus the calls running now (half done on average) */
	return (app->avg_ms / 1000.0) * ((double)(rank / slots) + (app->running ? 0.5 : 0.0) + 1.0);
}

/* ---- workers ---- */

static int worker_index(ms_app *app, ms_app_worker *aw) {
	for (int i = 0; i < app->n_workers; i++)
		if (app->workers[i] == aw) return i;
	return -1;
}

static void on_aw_timer_closed(uv_handle_t *h) {
	ms_app_worker *aw = h->data;
	ms_app *app = aw->app;
	ms_appsrc_unref(aw->src);
	free(aw);
	app->closing_workers--;
	maybe_free_app(app);
}

/* A worker's last handle closes a loop iteration after its exit is reported (that comes
 * from a close callback): until then the app must outlive it, even if it is removed in
 * between (it was freed first, and this callback then wrote into it). */
static void close_worker(ms_app_worker *aw) {
	aw->app->closing_workers++;
	uv_close((uv_handle_t *)&aw->deadline, on_aw_timer_closed);
}

static void send_to_worker(ms_app_worker *aw, json_t *msg) {
	if (aw->proc) ms_worker_send(aw->proc, msg);
	json_decref(msg);
}

static json_t *init_message(ms_app *app, ms_appsrc *src) {
	json_t *files = json_object();
	for (size_t i = 0; i < src->nfiles; i++)
		json_object_set_new(files, src->files[i].path, json_stringn(src->files[i].data, src->files[i].len));
	json_t *models = json_array();
	for (size_t i = 0; i < src->card.nmodels; i++) json_array_append_new(models, json_string(src->card.models[i]));
	char host[300];
	snprintf(host, sizeof host, "%s:%d", app->host->cfg->host, ms_http_server_port(app->host->http));
	return json_pack("{s:s,s:s,s:s,s:o,s:i,s:i,s:o,s:{s:s,s:s,s:s,s:s,s:s}}", "t", "init", "app", app->id, "entry",
			 src->main ? src->main->path : "app.lua", "files", files, "memory_mb", app->memory_mb,
			 "timeout_s", app->timeout_s, "models", models, "space", "SPACE_ID", app->id,
			 "SPACE_AUTHOR_NAME", src->owner, "SPACE_REPO_NAME", src->name, "SPACE_TITLE",
			 src->card.title ? src->card.title : src->name, "SPACE_HOST", host);
}

static void record_crash(ms_app *app) {
	uint64_t now = ms_now_ns();
	if (app->n_crashes == CRASH_LIMIT) {
		memmove(app->crash_times, app->crash_times + 1, sizeof app->crash_times[0] * (CRASH_LIMIT - 1));
		app->n_crashes--;
	}
	app->crash_times[app->n_crashes++] = now;
	app->backoff_ms = app->backoff_ms ? app->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (app->backoff_ms > BACKOFF_MAX_MS) app->backoff_ms = BACKOFF_MAX_MS;
	if (app->n_crashes == CRASH_LIMIT && now - app->crash_times[0] < CRASH_WINDOW_NS) {
		char msg[512];
		snprintf(msg, sizeof msg, "the app crashed %d times within a minute; fix it and save, or restart it (last log lines below)",
			 CRASH_LIMIT);
		set_stage(app, MS_STAGE_RUNTIME_ERROR, msg);
		MS_WARN("apps", "%s: crash loop, stopped restarting", app->id);
	}
}

static void on_restart_timer(uv_timer_t *t) {
	ms_app *app = t->data;
	app->restart_pending = 0;
	dispatch(app);
}

static const char *signal_reason(int sig) {
	switch (sig) {
	case SIGKILL: return "it was killed (out of memory or a limit)";
	case SIGSYS: return "it made a forbidden system call";
	case SIGSEGV: return "it crashed (segmentation fault)";
	case SIGABRT: return "it aborted";
	case SIGXCPU: return "it used up its CPU time";
	case SIGBUS: return "it crashed (bus error)";
	default: return "it was stopped by a signal";
	}
}

/* Runs are written to the store in batches (one transaction per app per flush, not one
 * per call): ms_apps_flush_runs() runs on a timer and before statistics are read. */
static void record_run(ms_app *app, double ms, int ok) {
	if (app->n_runs == app->cap_runs) {
		size_t cap = app->cap_runs ? app->cap_runs * 2 : 64;
		ms_store_run *r = realloc(app->runs, cap * sizeof *r);
		if (!r) return; /* a statistic lost, nothing else */
		app->runs = r, app->cap_runs = cap;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	app->runs[app->n_runs++] = (ms_store_run){ms, ok, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000};
	if (app->n_runs >= 1024) ms_app_flush_runs(app);
}

void ms_app_flush_runs(ms_app *app) {
	if (app->n_runs && app->host->store) ms_store_record_runs(app->host->store, app->id, app->runs, app->n_runs);
	app->n_runs = 0;
}

void ms_apps_flush_runs(ms_host *h) {
	for (ms_app *a = h->apps; a; a = a->next) ms_app_flush_runs(a);
}

static void finish_call(ms_app_worker *aw, int ok) {
	ms_call *call = aw->call;
	ms_app *app = aw->app;
	if (!call) return;
	uv_timer_stop(&aw->deadline);
	ms_models_cancel(aw, -1);
	aw->call = NULL;
	call->worker = NULL;
	app->running--;
	double ms = (double)(ms_now_ns() - call->t_start) / 1e6;
	app->avg_ms = app->avg_ms > 0 ? app->avg_ms * 0.8 + ms * 0.2 : ms;
	record_run(app, ms, ok);
}

static void begin_next(ms_app_worker *aw);
static void take_back_piped(ms_app_worker *aw);

/* The running call goes back to the head of the pipeline: the worker never started it. */
static void unbegin_call(ms_app_worker *aw) {
	ms_call *c = aw->call;
	uv_timer_stop(&aw->deadline);
	aw->call = NULL;
	c->pnext = aw->pipe_head;
	aw->pipe_head = c;
	if (!aw->pipe_tail) aw->pipe_tail = c;
	aw->n_piped++;
}

static void on_worker_exit(ms_worker *w, int64_t status, int sig, const char *reason, void *ud) {
	ms_app_worker *aw = ud;
	ms_app *app = aw->app;
	ms_host *h = app->host;
	aw->proc = NULL;
	ms_models_cancel(aw, -1);
	int idx = worker_index(app, aw);
	if (idx >= 0) app->workers[idx] = app->workers[--app->n_workers];
	if (!aw->ready) {
		app->starting--;
		start_done(h);
	}
	char why[512];
	if (reason) snprintf(why, sizeof why, "%s", reason);
	else if (sig) snprintf(why, sizeof why, "%s (signal %d)", signal_reason(sig), sig);
	else snprintf(why, sizeof why, "it exited with status %lld", (long long)status);
	/* status 3: a hard stop, the worker ended a runaway call itself after answering it
	 * (sandbox/PROTOCOL.md); a replacement starts, but it is no crash. A call that became
	 * the running one after that answer never ran: it goes back to the queue (once). */
	int head_never_ran = aw->call && !sig && status == 3 && aw->ready && !aw->head_heard && !aw->call->requeued;
	int hard_stop = !sig && status == 3 && aw->ready && (!aw->call || head_never_ran);
	if (head_never_ran) unbegin_call(aw);
	take_back_piped(aw);
	int expected = aw->retiring || app->removed || h->shutting_down || hard_stop;
	if (!expected) {
		ms_app_log(app, "[moonspace] worker %d stopped: %s", (int)ms_worker_pid(w), why);
		MS_WARN("apps", "%s: worker %d stopped: %s", app->id, (int)ms_worker_pid(w), why);
	}
	if (aw->call) {
		ms_call *call = aw->call;
		finish_call(aw, 0);
		char msg[700];
		if (call->cancelled) {
			ms_call_cancelled(call);
		} else {
			snprintf(msg, sizeof msg, "The app's worker stopped during this call: %s. It has been restarted.", why);
			ms_call_failed(call, msg);
		}
	}
	/* a worker of the current version that had not failed its init on purpose */
	if (!expected && app->stage != MS_STAGE_RUNTIME_ERROR && aw->src == app->src) record_crash(app);
	if (!expected && app->stage != MS_STAGE_RUNTIME_ERROR && app->backoff_ms && !app->restart_pending) {
		app->restart_pending = 1;
		uv_timer_start(&app->restart_timer, on_restart_timer, app->backoff_ms, 0);
	}
	close_worker(aw);
	if (!app->restart_pending) dispatch(app);
}

static void on_worker_log(ms_worker *w, const char *line, void *ud) {
	ms_app_worker *aw = ud;
	ms_app_log(aw->app, "%s", line);
}

static void on_deadline(uv_timer_t *t) {
	ms_app_worker *aw = t->data;
	char reason[160];
	if (!aw->ready) { /* loading again would loop again: an error until the app changes */
		snprintf(reason, sizeof reason, "the app did not start within %d s (an endless loop at the top level of app.lua?)",
			 aw->app->timeout_s);
		if (aw->src == aw->app->src) set_stage(aw->app, MS_STAGE_RUNTIME_ERROR, reason);
		ms_app_log(aw->app, "[moonspace] %s", reason);
		aw->retiring = 1;
	} else
		snprintf(reason, sizeof reason, "the call passed its time limit of %d s", aw->app->timeout_s);
	if (aw->proc) ms_worker_kill(aw->proc, reason);
}

/* Stores the values of state outputs in the session and replaces them by null, as Gradio
 * does (state never travels to clients). */
static void take_state_outputs(ms_call *call, json_t *data) {
	const json_t *ep = ms_app_endpoint(call->app, call->fn_index);
	json_t *outs = json_object_get(ep, "outputs");
	int state_k = 0;
	for (size_t i = 0; i < json_array_size(outs) && i < json_array_size(data); i++) {
		const char *type = json_string_value(json_object_get(json_array_get(outs, i), "type"));
		if (!type || strcmp(type, "state") != 0) continue;
		if (call->session) {
			char key[32];
			snprintf(key, sizeof key, "%d:%d", call->fn_index, state_k);
			json_object_set(call->session->state, key, json_array_get(data, i));
		}
		json_array_set_new(data, i, json_null());
		state_k++;
	}
}

/* Checks that a worker's output list has one value per declared output. */
static json_t *checked_outputs(ms_call *call, json_t *msg) {
	json_t *data = json_object_get(msg, "data");
	const json_t *ep = ms_app_endpoint(call->app, call->fn_index);
	if (!json_is_array(data) || json_array_size(data) != json_array_size(json_object_get(ep, "outputs"))) return NULL;
	return json_deep_copy(data);
}

static void protocol_violation(ms_app_worker *aw, const char *what) {
	char reason[256];
	snprintf(reason, sizeof reason, "protocol violation: %s", what);
	if (aw->proc) ms_worker_kill(aw->proc, reason);
}

static int valid_interface(json_t *msg) {
	json_t *eps = json_object_get(msg, "endpoints");
	if (!json_is_array(eps) || json_array_size(eps) == 0 || json_array_size(eps) > MS_APP_MAX_COMPONENTS) return 0;
	size_t i;
	json_t *ep;
	json_array_foreach(eps, i, ep) {
		json_t *ins = json_object_get(ep, "inputs"), *outs = json_object_get(ep, "outputs");
		if (!json_is_string(json_object_get(ep, "api_name")) || !json_is_array(ins) || !json_is_array(outs) ||
		    json_array_size(ins) > MS_APP_MAX_COMPONENTS || json_array_size(outs) > MS_APP_MAX_COMPONENTS)
			return 0;
	}
	return 1;
}

static void on_ready(ms_app_worker *aw, json_t *msg) {
	ms_app *app = aw->app;
	if (aw->ready) return protocol_violation(aw, "a second \"ready\"");
	if (!valid_interface(msg)) return protocol_violation(aw, "\"ready\" without a valid endpoints list");
	aw->ready = 1;
	app->starting--;
	start_done(app->host);
	uv_timer_stop(&aw->deadline);
	if (aw->src == app->src) {
		json_decref(app->iface);
		app->iface = json_incref(msg);
		if (app->stage != MS_STAGE_RUNNING) set_stage(app, MS_STAGE_RUNNING, NULL);
	}
	MS_INFO("apps", "%s: worker %d ready in %.1f ms", app->id, (int)ms_worker_pid(aw->proc),
		(double)(ms_now_ns() - aw->started_ns) / 1e6);
	dispatch(app);
}

static void on_call_message(ms_app_worker *aw, const char *t, json_t *msg) {
	ms_call *call = aw->call;
	if (!strcmp(t, "yield")) {
		json_t *data = checked_outputs(call, msg);
		if (!data) return protocol_violation(aw, "\"yield\" with the wrong number of outputs");
		take_state_outputs(call, data);
		ms_call_generating(call, data);
		json_decref(data);
	} else if (!strcmp(t, "done")) {
		json_t *data = checked_outputs(call, msg);
		if (!data) return protocol_violation(aw, "\"done\" with the wrong number of outputs");
		take_state_outputs(call, data);
		finish_call(aw, 1);
		ms_call_completed(call, data);
		json_decref(data);
		aw->app->backoff_ms = 0;
	} else if (!strcmp(t, "error")) {
		const char *kind = json_string_value(json_object_get(msg, "kind"));
		const char *m = json_string_value(json_object_get(msg, "message"));
		int cancelled = (kind && !strcmp(kind, "cancelled")) || call->cancelled;
		finish_call(aw, cancelled);
		if (cancelled) ms_call_cancelled(call);
		else ms_call_failed(call, m ? m : "the app failed");
		if (kind && !strcmp(kind, "memory") && aw->proc) { /* a fresh state is safer after a memory error */
			aw->retiring = 1;
			ms_worker_kill(aw->proc, "restart after a memory error");
		}
	} else if (!strcmp(t, "progress")) {
		ms_call_progress(call, msg);
	} else if (!strcmp(t, "model")) {
		if (!json_is_integer(json_object_get(msg, "req")) || !json_is_string(json_object_get(msg, "model")) ||
		    !json_is_string(json_object_get(msg, "op")))
			return protocol_violation(aw, "a \"model\" frame without req, model and op");
		ms_models_request(aw, msg);
		return;
	} else if (!strcmp(t, "model_cancel")) {
		json_t *req = json_object_get(msg, "req");
		if (json_is_integer(req)) ms_models_cancel(aw, json_integer_value(req));
		return;
	} else {
		return protocol_violation(aw, "an unknown message type");
	}
	if (aw->call) return; /* still running */
	if (aw->proc && ms_worker_alive(aw->proc)) begin_next(aw);
	if (aw->retiring && !aw->call && aw->proc) ms_worker_kill(aw->proc, NULL);
	dispatch(aw->app);
}

static void on_worker_message(ms_worker *w, json_t *msg, void *ud) {
	ms_app_worker *aw = ud;
	ms_app *app = aw->app;
	const char *t = json_string_value(json_object_get(msg, "t"));
	if (!strcmp(t, "ready")) return on_ready(aw, msg);
	if (!strcmp(t, "init_error")) {
		const char *m = json_string_value(json_object_get(msg, "message"));
		ms_app_log(app, "[moonspace] the app failed to start: %s", m ? m : "?");
		if (aw->src == app->src) set_stage(app, MS_STAGE_RUNTIME_ERROR, m ? m : "the app failed to start");
		aw->retiring = 1; /* not a crash: it stays down until the app changes or is restarted */
		ms_worker_kill(w, NULL);
		return;
	}
	if (!strcmp(t, "log") && !aw->call) {
		const char *line = json_string_value(json_object_get(msg, "line"));
		if (line) ms_app_log(app, "%s", line);
		return;
	}
	if (!aw->ready) return protocol_violation(aw, "a message before \"ready\"");
	if (!strcmp(t, "log")) {
		const char *line = json_string_value(json_object_get(msg, "line"));
		if (line) ms_app_log(app, "%s", line);
		return;
	}
	json_t *id = json_object_get(msg, "id");
	if (!aw->call || !json_is_integer(id) || json_integer_value(id) != aw->call->seq)
		return protocol_violation(aw, "a message for a call that is not in flight");
	aw->head_heard = 1;
	on_call_message(aw, t, msg);
}

static void spawn_worker(ms_app *app) {
	ms_host *h = app->host;
	if (app->n_workers >= MS_APP_MAX_WORKERS) return;
	ms_app_worker *aw = calloc(1, sizeof *aw);
	if (!aw) return;
	aw->app = app;
	aw->src = ms_appsrc_ref(app->src);
	aw->started_ns = ms_now_ns();
	uv_timer_init(h->loop, &aw->deadline);
	aw->deadline.data = aw;
	static const ms_worker_cbs cbs = {on_worker_message, on_worker_log, on_worker_exit};
	ms_worker_opts opts = {.exe = h->cfg->appworker, .max_frame = 0, .drop_privileges = 1};
	char err[512];
	if (ms_worker_spawn(h->loop, &opts, &cbs, aw, &aw->proc, err, sizeof err)) {
		ms_app_log(app, "[moonspace] %s", err);
		set_stage(app, MS_STAGE_RUNTIME_ERROR, err);
		close_worker(aw);
		return;
	}
	app->workers[app->n_workers++] = aw;
	app->starting++;
	h->starting++;
	send_to_worker(aw, init_message(app, aw->src));
	/* loading runs app code too: it gets the same time limit as a call. The loop's clock
	 * may be stale here (the first scan runs before the loop), so refresh it first. */
	uv_update_time(h->loop);
	uv_timer_start(&aw->deadline, on_deadline, (uint64_t)app->timeout_s * 1000 + 1000, 0);
}

/* ---- the queue ---- */

static void queue_remove(ms_app *app, ms_call *c) {
	app->queued_followed -= c->followed;
	if (c->qprev) c->qprev->qnext = c->qnext;
	else app->queue_head = c->qnext;
	if (c->qnext) c->qnext->qprev = c->qprev;
	else app->queue_tail = c->qprev;
	c->qnext = c->qprev = NULL;
	app->queued--;
}

static void queue_push_front(ms_app *app, ms_call *c) {
	c->status = MS_CALL_QUEUED;
	c->requeued = 1;
	c->qprev = NULL;
	c->qnext = app->queue_head;
	if (app->queue_head) app->queue_head->qprev = c;
	else app->queue_tail = c;
	app->queue_head = c;
	app->queued++;
	app->queued_followed += c->followed;
}

static void send_estimations(ms_app *app) {
	if (!app->queued_followed) return; /* nobody waiting follows a queue position */
	int rank = 0;
	for (ms_call *c = app->queue_head; c; c = c->qnext) ms_call_estimation(c, rank++, app->queued);
}

static ms_app_worker *idle_worker(ms_app *app) {
	for (int i = 0; i < app->n_workers; i++) {
		ms_app_worker *aw = app->workers[i];
		if (aw->ready && !aw->retiring && !aw->call && aw->proc && aw->src == app->src) return aw;
	}
	return NULL;
}

static int current_workers(ms_app *app) {
	int n = 0;
	for (int i = 0; i < app->n_workers; i++) n += !app->workers[i]->retiring && app->workers[i]->src == app->src;
	return n;
}

static void send_call(ms_app_worker *aw, ms_call *call) {
	const json_t *ep = ms_app_endpoint(aw->app, call->fn_index);
	unsigned seed = (unsigned)(ms_now_ns() ^ (uint64_t)call->seq * 2654435761u);
	json_t *msg = json_pack("{s:s,s:i,s:O,s:O,s:s,s:i}", "t", "call", "id", call->seq, "api_name",
				json_object_get(ep, "api_name"), "data", call->data, "session",
				call->session ? call->session->hash : call->event_id, "seed", (int)(seed & 0x7fffffff));
	send_to_worker(aw, msg);
}

/* The worker starts this call now: the one before it (if any) has ended. */
static void begin_call(ms_app_worker *aw, ms_call *call) {
	aw->call = call;
	aw->head_heard = 0;
	call->t_start = ms_now_ns();
	uv_update_time(aw->app->host->loop);
	uv_timer_start(&aw->deadline, on_deadline, (uint64_t)aw->app->timeout_s * 1000 + 1000, 0);
	ms_call_started(call);
}

static void start_call(ms_app_worker *aw, ms_call *call) {
	call->worker = aw;
	call->status = MS_CALL_RUNNING;
	aw->app->running++;
	send_call(aw, call);
	if (!aw->call) return begin_call(aw, call);
	call->pnext = NULL;
	if (aw->pipe_tail) aw->pipe_tail->pnext = call;
	else aw->pipe_head = call;
	aw->pipe_tail = call;
	aw->n_piped++;
}

/* The running call ended: the worker goes on with the next one sent ahead. */
static void begin_next(ms_app_worker *aw) {
	ms_call *next = aw->pipe_head;
	if (!next || aw->call) return;
	aw->pipe_head = next->pnext;
	if (!aw->pipe_head) aw->pipe_tail = NULL;
	aw->n_piped--;
	next->pnext = NULL;
	begin_call(aw, next);
}

static void queue_push_front(ms_app *app, ms_call *c);

/* The worker stopped: calls sent ahead never ran. They go back to the front of the queue
 * in their order (or fail, when nothing will serve them). */
static void take_back_piped(ms_app_worker *aw) {
	ms_app *app = aw->app;
	ms_call *back = NULL; /* reversed, so pushing each to the front keeps the order */
	while (aw->pipe_head) {
		ms_call *c = aw->pipe_head;
		aw->pipe_head = c->pnext;
		c->pnext = back;
		back = c;
	}
	aw->pipe_tail = NULL;
	if (aw->n_piped && !app->removed && !app->host->shutting_down)
		MS_INFO("apps", "%s: %d calls sent ahead to a stopped worker go back to the queue", app->id, aw->n_piped);
	aw->n_piped = 0;
	while (back) {
		ms_call *c = back;
		back = c->pnext;
		c->pnext = NULL;
		c->worker = NULL;
		app->running--;
		if (c->cancelled) ms_call_cancelled(c);
		else if (app->removed) ms_call_failed(c, "This app was removed.");
		else if (app->host->shutting_down) ms_call_failed(c, "The server is shutting down.");
		else queue_push_front(app, c);
	}
}

/* The busy worker with the fewest calls sent ahead, when every worker the app may have
 * is up and busy and its calls are short (see the top of this file); else NULL. */
static ms_app_worker *pipeline_worker(ms_app *app) {
	if (app->avg_ms <= 0 || app->avg_ms > PIPELINE_MAX_MS || app->starting > 0) return NULL;
	if (current_workers(app) < app->concurrency) return NULL; /* another worker may start */
	ms_app_worker *best = NULL;
	for (int i = 0; i < app->n_workers; i++) {
		ms_app_worker *aw = app->workers[i];
		if (!aw->ready || aw->retiring || !aw->call || !aw->proc || !ms_worker_alive(aw->proc) || aw->src != app->src ||
		    aw->n_piped >= PIPELINE_DEPTH)
			continue;
		if (!best || aw->n_piped < best->n_piped) best = aw;
	}
	return best;
}

int ms_app_sent_ahead(const ms_app *app) {
	int n = 0;
	for (int i = 0; i < app->n_workers; i++) n += app->workers[i]->n_piped;
	return n;
}

void ms_app_dispatch(ms_app *app) { dispatch(app); }

static void dispatch(ms_app *app) {
	ms_host *h = app->host;
	int started = 0;
	while (app->queue_head && !app->removed) {
		ms_app_worker *aw = idle_worker(app);
		if (!aw) aw = pipeline_worker(app);
		if (!aw) break;
		ms_call *c = app->queue_head;
		queue_remove(app, c);
		start_call(aw, c);
		started = 1;
	}
	if (app->removed || h->shutting_down || app->restart_pending || app->building) return;
	if (app->stage == MS_STAGE_RUNTIME_ERROR || app->stage == MS_STAGE_BUILD_ERROR || !app->src ||
	    app->src->status != MS_APP_OK)
		return;
	/* keep one warm worker, and one more per waiting call up to the concurrency */
	int have = current_workers(app);
	int want = 1 + app->queued;
	if (want > app->concurrency) want = app->concurrency;
	int busy = app->running;
	if (want < busy + app->queued) want = busy + app->queued;
	if (want > app->concurrency) want = app->concurrency;
	if (want < 1) want = 1;
	while (have < want) {
		if (h->starting >= MAX_STARTING) {
			app->start_waiting = 1; /* start_done() comes back when a start slot frees */
			break;
		}
		spawn_worker(app);
		have++;
	}
	if (started && app->queue_head) send_estimations(app);
}

/* A worker finished starting (ready or dead): let apps waiting for a start slot go on. */
static void start_done(ms_host *h) {
	h->starting--;
	for (ms_app *a = h->apps; a && h->starting < MAX_STARTING; a = a->next)
		if (a->start_waiting) {
			a->start_waiting = 0;
			dispatch(a);
		}
}

int ms_app_enqueue(ms_app *app, ms_call *call) {
	if (app->queued >= app->max_queue) return MS_EBUSY;
	call->status = MS_CALL_QUEUED;
	call->qprev = app->queue_tail;
	call->qnext = NULL;
	if (app->queue_tail) app->queue_tail->qnext = call;
	else app->queue_head = call;
	app->queue_tail = call;
	app->queued++;
	call->followed = call->mode == MS_CALL_QUEUE && call->session; /* fixed at enqueue, for the count */
	app->queued_followed += call->followed;
	ms_call_estimation(call, app->queued - 1, app->queued);
	dispatch(app);
	return 0;
}

void ms_app_cancel_call(ms_app *app, ms_call *call) {
	if (call->status == MS_CALL_DONE || call->cancelled) return;
	call->cancelled = 1;
	if (call->status == MS_CALL_QUEUED) {
		queue_remove(app, call);
		ms_call_cancelled(call);
		send_estimations(app);
		return;
	}
	ms_app_worker *aw = call->worker;
	/* a call sent ahead too: the worker remembers cancels for calls it has not started */
	if (aw && aw->proc) ms_worker_cancel(aw->proc, call->seq);
}

/* ---- apps found, changed or removed on disk ---- */

static void apply_limits(ms_app *app) {
	ms_settings *cfg = app->host->cfg;
	const ms_appsrc *src = app->src;
	app->timeout_s = cfg->default_timeout;
	app->memory_mb = cfg->default_memory;
	app->concurrency = 1;
	app->max_queue = cfg->max_queue;
	if (src->has_card) {
		const json_t *d = src->card.data;
		if (json_object_get(d, "timeout")) app->timeout_s = src->card.timeout_s;
		if (json_object_get(d, "memory")) app->memory_mb = src->card.memory_mb;
		if (json_object_get(d, "max_queue")) app->max_queue = src->card.max_queue;
		app->concurrency = src->card.concurrency;
	}
	if (app->concurrency > cfg->max_workers) app->concurrency = cfg->max_workers;
	if (app->concurrency < 1) app->concurrency = 1;
}

static void store_app(ms_app *app) {
	ms_host *h = app->host;
	if (!h->store) return;
	char *card = ms_appsrc_card_json(app->src);
	ms_store_app_upsert(h->store, app->id, card, ms_stage_name(app->stage), app->error, app->src->revision);
	free(card);
}

static void load_version(ms_app *app, ms_appsrc *src) {
	ms_appsrc_unref(app->src);
	app->src = ms_appsrc_ref(src);
	apply_limits(app);
	json_decref(app->iface);
	app->iface = NULL;
	app->n_crashes = 0;
	app->backoff_ms = 0;
	free(app->error);
	app->error = NULL;
	if (src->status == MS_APP_OK) {
		app->stage = MS_STAGE_BUILDING;
		ms_build_start(app); /* fetches the card's models first, when it names any */
	} else {
		ms_build_cancel(app);
		app->stage = src->status == MS_APP_NO_APP_FILE ? MS_STAGE_NO_APP_FILE : MS_STAGE_CONFIG_ERROR;
		app->error = strdup(src->error ? src->error : "the app cannot be loaded");
		ms_app_log(app, "[moonspace] %s", app->error);
	}
	store_app(app);
	/* workers of the old version finish their call, then stop */
	for (int i = 0; i < app->n_workers; i++) {
		ms_app_worker *aw = app->workers[i];
		if (aw->src == src) continue;
		aw->retiring = 1;
		if (!aw->call && aw->proc) ms_worker_kill(aw->proc, NULL);
	}
	dispatch(app);
}

static void fail_queue(ms_app *app, const char *why) {
	while (app->queue_head) {
		ms_call *c = app->queue_head;
		queue_remove(app, c);
		ms_call_failed(c, why);
	}
}

static void on_app_timer_closed(uv_handle_t *h) {
	ms_app *app = h->data;
	for (int i = 0; i < app->log_n; i++) free(app->log[(app->log_start + i) % MS_APP_LOG_LINES]);
	ms_appsrc_unref(app->src);
	json_decref(app->iface);
	free(app->error);
	free(app->runs);
	free(app);
}

static void maybe_free_app(ms_app *app) {
	if (!app->removed || app->n_workers > 0 || app->closing_workers > 0 || app->running > 0) return;
	ms_host *h = app->host;
	for (ms_app **p = &h->apps; *p; p = &(*p)->next)
		if (*p == app) {
			*p = app->next;
			break;
		}
	ms_build_free(app);
	if (!uv_is_closing((uv_handle_t *)&app->restart_timer))
		uv_close((uv_handle_t *)&app->restart_timer, on_app_timer_closed);
}

void ms_apps_on_change(void *ud, ms_appdir_change kind, ms_appsrc *new_app, ms_appsrc *old_app) {
	ms_host *h = ud;
	if (kind == MS_APPDIR_ADDED) {
		ms_app *app = calloc(1, sizeof *app);
		if (!app) return;
		app->host = h;
		snprintf(app->id, sizeof app->id, "%s", new_app->id);
		uv_timer_init(h->loop, &app->restart_timer);
		app->restart_timer.data = app;
		app->next = h->apps;
		h->apps = app;
		MS_INFO("apps", "found %s (%s)", app->id, ms_app_status_name(new_app->status));
		load_version(app, new_app);
		return;
	}
	ms_app *app = ms_app_find(h, old_app->id);
	if (!app) return;
	if (kind == MS_APPDIR_CHANGED) {
		MS_INFO("apps", "%s changed on disk: loading the new version", app->id);
		load_version(app, new_app);
		return;
	}
	MS_INFO("apps", "%s was removed", app->id);
	app->removed = 1;
	ms_build_cancel(app);
	fail_queue(app, "This app was removed.");
	app->n_runs = 0; /* its statistics go with it */
	ms_sessions_drop_app(h, app);
	if (h->store) ms_store_app_remove(h->store, app->id);
	for (int i = 0; i < app->n_workers; i++) {
		ms_app_worker *aw = app->workers[i];
		aw->retiring = 1;
		if (!aw->call && aw->proc) ms_worker_kill(aw->proc, NULL);
	}
	maybe_free_app(app);
}

int ms_apps_busy(const ms_host *h) {
	int n = 0;
	for (ms_app *a = h->apps; a; a = a->next) n += a->running + a->queued;
	return n;
}

/* After the loop has stopped: every worker is gone, free the apps. */
void ms_apps_free(ms_host *h) {
	while (h->apps) {
		ms_app *a = h->apps;
		h->apps = a->next;
		ms_build_free(a);
		if (!uv_is_closing((uv_handle_t *)&a->restart_timer))
			uv_close((uv_handle_t *)&a->restart_timer, on_app_timer_closed);
	}
}

void ms_apps_stop_all(ms_host *h) {
	for (ms_app *a = h->apps; a; a = a->next) {
		fail_queue(a, "The server is shutting down.");
		uv_timer_stop(&a->restart_timer);
		for (int i = 0; i < a->n_workers; i++) {
			ms_app_worker *aw = a->workers[i];
			aw->retiring = 1;
			if (aw->proc) ms_worker_kill(aw->proc, "the server is shutting down");
		}
	}
}

void ms_app_restart(ms_app *app) {
	if (!app->src || app->src->status != MS_APP_OK) return;
	app->n_crashes = 0;
	app->backoff_ms = 0;
	for (int i = 0; i < app->n_workers; i++) {
		ms_app_worker *aw = app->workers[i];
		aw->retiring = 1;
		if (!aw->call && aw->proc) ms_worker_kill(aw->proc, NULL);
	}
	/* a fresh version object is not needed: the retiring flag keeps old workers out */
	set_stage(app, MS_STAGE_BUILDING, NULL);
	if (ms_build_start(app) != 0) return; /* fetch the models again (a BUILD_ERROR's retry) */
	spawn_worker(app);
}
