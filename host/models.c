/* host/models.c: model workers, and relaying apps' model calls to them.
 *
 * An app's `model("org/name")` calls arrive as "model" frames from its worker. The host
 * checks them against the app's card (an app may only call the models it declares),
 * starts one model worker per checkpoint on first use (every app using that model shares
 * it), relays the request, and relays pieces and results back. A model worker with no
 * requests for `model-idle` seconds is stopped; the next call starts it again. A request
 * whose call ended (finished, failed, cancelled, worker gone) is cancelled in the model.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/host.h"
#include "runtime/kernels.h"
#include "runtime/modeldir.h"

typedef struct model_req model_req;
struct model_req {
	int64_t id;              /* the host's id, sent to the model worker */
	json_int_t app_req;      /* the app worker's id for it */
	ms_app_worker *aw;       /* NULL once the call is gone */
	int call_seq;
	json_t *msg;             /* the request frame, until sent */
	model_req *next;
};

struct ms_model_proc {
	ms_host *host;
	char spec[300];          /* "org/name" or "org/name@rev" */
	char dir[PATH_MAX];
	ms_worker *proc;
	int ready;
	int dying;               /* killed (idle unload), exit not seen yet */
	uv_timer_t idle;
	model_req *reqs;
	ms_model_proc *next;
};

static int64_t next_req_id = 1;

static void reply(ms_app_worker *aw, json_t *msg) {
	if (aw && aw->proc) ms_worker_send(aw->proc, msg);
	json_decref(msg);
}

static void reply_error(ms_app_worker *aw, json_int_t app_req, const char *message) {
	reply(aw, json_pack("{s:s,s:I,s:s}", "t", "model_error", "req", app_req, "message", message));
}

static void unlink_req(ms_model_proc *m, model_req *r) {
	for (model_req **p = &m->reqs; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	json_decref(r->msg);
	free(r);
}

static model_req *find_req(ms_model_proc *m, int64_t id) {
	for (model_req *r = m->reqs; r; r = r->next)
		if (r->id == id) return r;
	return NULL;
}

static void arm_idle(ms_model_proc *m);

static void on_model_message(ms_worker *w, json_t *msg, void *ud) {
	ms_model_proc *m = ud;
	const char *t = json_string_value(json_object_get(msg, "t"));
	if (!strcmp(t, "ready")) {
		m->ready = 1;
		json_int_t th = json_integer_value(json_object_get(msg, "threads")); /* absent: tokenizer only */
		char threads[32] = "";
		if (th > 0) snprintf(threads, sizeof threads, ", %d thread%s", (int)th, th == 1 ? "" : "s");
		MS_INFO("models", "%s ready (%s%s)", m->spec, json_string_value(json_object_get(msg, "arch")), threads);
		for (model_req *r = m->reqs; r; r = r->next)
			if (r->msg) {
				ms_worker_send(w, r->msg);
				json_decref(r->msg);
				r->msg = NULL;
			}
		arm_idle(m);
		return;
	}
	if (!strcmp(t, "init_error")) {
		const char *e = json_string_value(json_object_get(msg, "message"));
		char text[1200];
		snprintf(text, sizeof text, "the model %s could not be loaded: %s", m->spec, e ? e : "unknown error");
		MS_WARN("models", "%s", text);
		model_req *next;
		for (model_req *r = m->reqs; r; r = next) {
			next = r->next;
			reply_error(r->aw, r->app_req, text);
			unlink_req(m, r);
		}
		return;
	}
	json_t *idv = json_object_get(msg, "req");
	model_req *r = json_is_integer(idv) ? find_req(m, json_integer_value(idv)) : NULL;
	if (!r) return; /* a request already cancelled on our side */
	if (!strcmp(t, "piece")) {
		json_t *text = json_object_get(msg, "text");
		if (json_is_string(text))
			reply(r->aw, json_pack("{s:s,s:I,s:O}", "t", "model_piece", "req", r->app_req, "text", text));
	} else if (!strcmp(t, "result")) {
		reply(r->aw, json_pack("{s:s,s:I,s:O}", "t", "model_result", "req", r->app_req, "result",
				       json_object_get(msg, "result") ? json_object_get(msg, "result") : json_null()));
		unlink_req(m, r);
		arm_idle(m);
	} else if (!strcmp(t, "error")) {
		const char *e = json_string_value(json_object_get(msg, "message"));
		reply_error(r->aw, r->app_req, e ? e : "the model failed");
		unlink_req(m, r);
		arm_idle(m);
	}
}

static void on_model_log(ms_worker *w, const char *line, void *ud) {
	ms_model_proc *m = ud;
	MS_INFO("models", "%s: %s", m->spec, line);
}

static int start_model(ms_model_proc *m, char *err, size_t errlen);

static void on_model_exit(ms_worker *w, int64_t status, int sig, const char *reason, void *ud) {
	ms_model_proc *m = ud;
	m->proc = NULL;
	m->ready = 0;
	m->dying = 0;
	uv_timer_stop(&m->idle);
	char why[400];
	if (reason) snprintf(why, sizeof why, "%s", reason);
	else if (sig) snprintf(why, sizeof why, "it was stopped by signal %d", sig);
	else snprintf(why, sizeof why, "it exited with status %lld", (long long)status);
	if (m->reqs) MS_WARN("models", "%s: model worker stopped: %s", m->spec, why);
	char text[800];
	snprintf(text, sizeof text, "the model worker for %s stopped: %s", m->spec, why);
	model_req *next;
	int waiting = 0;
	for (model_req *r = m->reqs; r; r = next) {
		next = r->next;
		if (r->msg) { /* never sent (it came while an idle worker was going away): keep it */
			waiting = 1;
			continue;
		}
		reply_error(r->aw, r->app_req, text);
		unlink_req(m, r);
	}
	char err[600];
	if (waiting && start_model(m, err, sizeof err)) {
		for (model_req *r = m->reqs; r; r = next) {
			next = r->next;
			reply_error(r->aw, r->app_req, err);
			unlink_req(m, r);
		}
	}
}

static void on_idle(uv_timer_t *t) {
	ms_model_proc *m = t->data;
	if (m->reqs || !m->proc) return;
	MS_INFO("models", "%s unloaded after %d s without calls", m->spec, m->host->cfg->model_idle);
	m->dying = 1;
	m->ready = 0;
	ms_worker_kill(m->proc, "unloaded while idle");
}

static void arm_idle(ms_model_proc *m) {
	/* app workers stopping at shutdown cancel their requests after ms_models_stop_all: an
	 * idle timer armed then would keep the loop, and the host, alive for model_idle */
	if (!m->reqs && m->proc && !m->host->shutting_down) uv_timer_start(&m->idle, on_idle, (uint64_t)m->host->cfg->model_idle * 1000, 0);
}

static int model_threads(ms_host *h) {
	if (h->cfg->threads > 0) return h->cfg->threads;
	int n = ms_ncpu(); /* the cores this process may run on (its affinity mask, a cpuset) */
	return n > 2 ? n - 1 : 1; /* leave a core for the loop */
}

/* The worker runs as nobody (when the host is root) and may not be able to reach the
 * cache by path (~/.cache is often 0700): it gets the snapshot directory as an open fd and
 * reads it through /proc/self/fd/4. */
static int start_model(ms_model_proc *m, char *err, size_t errlen) {
	ms_host *h = m->host;
	static const ms_worker_cbs cbs = {on_model_message, on_model_log, on_model_exit};
	int dirfd = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) return ms_errf(err, errlen, MS_EIO, "cannot open %s: %s", m->dir, strerror(errno));
	ms_worker_opts opts = {.exe = h->cfg->modelworker, .max_frame = 0, .drop_privileges = 1, .extra_fds = &dirfd,
			       .n_extra_fds = 1};
	int rc = ms_worker_spawn(h->loop, &opts, &cbs, m, &m->proc, err, errlen);
	close(dirfd);
	if (rc) return MS_EIO;
	json_t *init = json_pack("{s:s,s:s,s:i}", "t", "init", "path", "/proc/self/fd/4", "threads", model_threads(h));
	ms_worker_send(m->proc, init);
	json_decref(init);
	return 0;
}

static ms_model_proc *find_model(ms_host *h, const char *spec) {
	for (ms_model_proc *m = h->models; m; m = m->next)
		if (!strcmp(m->spec, spec)) return m;
	return NULL;
}

/* The card entry that allows `name` ("org/name" matches "org/name" and "org/name@rev"). */
static const char *declared_model(const ms_app *app, const char *name) {
	const ms_appsrc *src = app->src;
	if (!src || !src->has_card) return NULL;
	size_t n = strlen(name);
	for (size_t i = 0; i < src->card.nmodels; i++) {
		const char *e = src->card.models[i];
		if (!strcmp(e, name) || (!strncmp(e, name, n) && e[n] == '@')) return e;
	}
	return NULL;
}

void ms_models_request(ms_app_worker *aw, json_t *msg) {
	ms_app *app = aw->app;
	ms_host *h = app->host;
	json_t *reqv = json_object_get(msg, "req");
	const char *name = json_string_value(json_object_get(msg, "model"));
	const char *op = json_string_value(json_object_get(msg, "op"));
	if (!json_is_integer(reqv) || !name || !op) return; /* the app worker checks its own frames */
	json_int_t app_req = json_integer_value(reqv);
	const char *spec = declared_model(app, name);
	char text[1400];
	if (!spec) {
		snprintf(text, sizeof text, "this app may not use the model %s: add it to `models:` in its README.md", name);
		return reply_error(aw, app_req, text);
	}
	ms_model_proc *m = find_model(h, spec);
	if (!m) {
		char dir[PATH_MAX], err[1024];
		if (ms_modeldir_resolve(spec, dir, sizeof dir, err, sizeof err)) {
			snprintf(text, sizeof text, "the model %s is not available: %s", spec, err);
			return reply_error(aw, app_req, text);
		}
		m = calloc(1, sizeof *m);
		if (!m) return reply_error(aw, app_req, "out of memory");
		m->host = h;
		snprintf(m->spec, sizeof m->spec, "%s", spec);
		snprintf(m->dir, sizeof m->dir, "%s", dir);
		uv_timer_init(h->loop, &m->idle);
		m->idle.data = m;
		m->next = h->models;
		h->models = m;
	}
	if (!m->proc) {
		char err[600];
		if (start_model(m, err, sizeof err)) return reply_error(aw, app_req, err);
	}
	model_req *r = calloc(1, sizeof *r);
	if (!r) return reply_error(aw, app_req, "out of memory");
	r->id = next_req_id++;
	r->app_req = app_req;
	r->aw = aw;
	r->call_seq = aw->call ? aw->call->seq : 0;
	json_t *args = json_object_get(msg, "args");
	r->msg = json_pack("{s:s,s:I,s:s,s:O}", "t", "req", "req", (json_int_t)r->id, "op", op, "args",
			   json_is_object(args) ? args : json_object());
	r->next = m->reqs;
	m->reqs = r;
	uv_timer_stop(&m->idle);
	if (m->ready) {
		ms_worker_send(m->proc, r->msg);
		json_decref(r->msg);
		r->msg = NULL;
	}
}

static void cancel_req(ms_model_proc *m, model_req *r) {
	if (m->proc && !r->msg) {
		json_t *c = json_pack("{s:s,s:I}", "t", "cancel", "req", (json_int_t)r->id);
		ms_worker_send(m->proc, c);
		json_decref(c);
	}
	unlink_req(m, r);
}

void ms_models_cancel(ms_app_worker *aw, json_int_t app_req) {
	for (ms_model_proc *m = aw->app->host->models; m; m = m->next) {
		model_req *next;
		for (model_req *r = m->reqs; r; r = next) {
			next = r->next;
			if (r->aw == aw && (app_req < 0 || r->app_req == app_req)) cancel_req(m, r);
		}
		arm_idle(m);
	}
}

void ms_models_stop_all(ms_host *h) {
	for (ms_model_proc *m = h->models; m; m = m->next) {
		uv_timer_stop(&m->idle);
		if (m->proc) ms_worker_kill(m->proc, "the server is shutting down");
	}
}

static void on_model_closed(uv_handle_t *hd) { free(hd->data); }

void ms_models_free(ms_host *h) {
	while (h->models) {
		ms_model_proc *m = h->models;
		h->models = m->next;
		while (m->reqs) unlink_req(m, m->reqs);
		uv_close((uv_handle_t *)&m->idle, on_model_closed);
	}
}
