/* host/calls.c: calls ("events") and sessions, and the messages a call sends in each of
 * the three ways a client can follow it:
 *   queue  (queue/join + queue/data): Gradio sse_v3 messages on the session's stream,
 *          buffered from the join on, with diffs after the first generating value;
 *   rest   (call/{api} + GET call/{api}/{id}): curl-style `event:` / `data:` lines, kept
 *          after completion (the last MS_CALL_RETAIN calls) so the GET may come late;
 *   run    (run/{api}): one JSON answer when the call completes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "host/components.h"
#include "host/host.h"

static unsigned fnv1a(const char *s) {
	unsigned h = 2166136261u;
	for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static unsigned bucket_of(const char *id) { return fnv1a(id) % MS_CALL_BUCKETS; }

/* Event ids must not be guessable (an id lets a client read or cancel a call): they come
 * from the kernel's CSPRNG, drawn 4 KiB at a time rather than one syscall per call. */
static void random_hex(char *out, size_t nbytes) {
	static unsigned char pool[4096];
	static size_t left;
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < nbytes; i++) {
		if (!left) {
			if (getrandom(pool, sizeof pool, 0) != (ssize_t)sizeof pool) { /* not expected on Linux */
				uint64_t x = ms_now_ns();
				for (size_t k = 0; k < sizeof pool; k++) pool[k] ^= (unsigned char)(x >> (8 * (k % 8))) + (unsigned char)k;
			}
			left = sizeof pool;
		}
		unsigned char b = pool[--left];
		pool[left] = 0; /* an id is handed out once */
		out[2 * i] = hex[b >> 4];
		out[2 * i + 1] = hex[b & 15];
	}
	out[2 * nbytes] = 0;
}

ms_call *ms_call_new(ms_host *h, ms_app *app, int fn_index, ms_call_mode mode) {
	ms_call *c = calloc(1, sizeof *c);
	if (!c) return NULL;
	random_hex(c->event_id, 16);
	c->seq = ++h->call_seq;
	c->app = app;
	c->src = ms_appsrc_ref(app->src);
	c->fn_index = fn_index;
	c->mode = mode;
	c->t_join = ms_now_ns();
	ms_buf_init(&c->rest_log);
	unsigned b = bucket_of(c->event_id);
	c->hnext = h->calls[b];
	h->calls[b] = c;
	return c;
}

ms_call *ms_call_find(ms_host *h, const char *event_id) {
	for (ms_call *c = h->calls[bucket_of(event_id)]; c; c = c->hnext)
		if (!strcmp(c->event_id, event_id)) return c;
	return NULL;
}

static void unlink_call(ms_host *h, ms_call *c) {
	for (ms_call **p = &h->calls[bucket_of(c->event_id)]; *p; p = &(*p)->hnext)
		if (*p == c) {
			*p = c->hnext;
			break;
		}
}

static void free_call(ms_host *h, ms_call *c) {
	unlink_call(h, c);
	ms_appsrc_unref(c->src);
	json_decref(c->data);
	json_decref(c->last_output);
	ms_buf_free(&c->rest_log);
	free(c);
}

/* Finished REST calls stay findable for a late GET; the oldest go first. */
static void retain_call(ms_host *h, ms_call *c) {
	c->lprev = h->retained_tail;
	c->lnext = NULL;
	if (h->retained_tail) h->retained_tail->lnext = c;
	else h->retained_head = c;
	h->retained_tail = c;
	if (++h->n_retained <= MS_CALL_RETAIN) return;
	ms_call *old = h->retained_head;
	if (old->rest_req) return; /* still being read: keep it a little longer */
	h->retained_head = old->lnext;
	if (h->retained_head) h->retained_head->lprev = NULL;
	else h->retained_tail = NULL;
	h->n_retained--;
	free_call(h, old);
}

/* ---- sessions ---- */

ms_session *ms_session_get(ms_host *h, ms_app *app, const char *hash, int create) {
	char key[sizeof ((ms_session *)0)->key];
	if (strlen(app->id) + strlen(hash) + 2 > sizeof key) return NULL;
	size_t idlen = strlen(app->id);
	memcpy(key, app->id, idlen);
	key[idlen] = '\n';
	memcpy(key + idlen + 1, hash, strlen(hash) + 1);
	ms_session **bucket = &h->sessions[fnv1a(key) % MS_SESSION_BUCKETS];
	for (ms_session *s = *bucket; s; s = s->next)
		if (!strcmp(s->key, key)) {
			s->last_seen_ns = ms_now_ns();
			return s;
		}
	if (!create) return NULL;
	ms_session *s = calloc(1, sizeof *s);
	if (!s) return NULL;
	memcpy(s->key, key, strlen(key) + 1);
	s->hash = s->key + strlen(app->id) + 1;
	s->app = app;
	s->state = json_object();
	s->last_seen_ns = ms_now_ns();
	ms_buf_init(&s->pending);
	s->next = *bucket;
	*bucket = s;
	return s;
}

static void free_session(ms_host *h, ms_session *s) {
	for (ms_session **p = &h->sessions[fnv1a(s->key) % MS_SESSION_BUCKETS]; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	/* calls that still point at the session lose it (they keep running) */
	for (int b = 0; b < MS_CALL_BUCKETS; b++)
		for (ms_call *c = h->calls[b]; c; c = c->hnext)
			if (c->session == s) c->session = NULL;
	if (s->stream) ms_http_on_close(s->stream, NULL, NULL), ms_http_stream_end(s->stream);
	if (s->heartbeat) ms_http_on_close(s->heartbeat, NULL, NULL), ms_http_stream_end(s->heartbeat);
	ms_buf_free(&s->pending);
	json_decref(s->state);
	free(s);
}

static void session_flush(ms_session *s) {
	if (!s->stream) return;
	if (s->pending.len) {
		if (ms_http_sse_send(s->stream, s->pending.data, s->pending.len) != 0) return;
		ms_buf_reset(&s->pending);
	}
	if (s->close_pending) {
		s->close_pending = 0;
		ms_http_req *r = s->stream;
		s->stream = NULL;
		ms_http_on_close(r, NULL, NULL);
		ms_http_stream_end(r);
	}
}

static void session_send(ms_session *s, json_t *msg) {
	char *text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!text) return;
	ms_buf_puts(&s->pending, "data: ");
	ms_buf_puts(&s->pending, text);
	ms_buf_puts(&s->pending, "\n\n");
	free(text);
	session_flush(s);
}

static void on_stream_closed(ms_http_req *req, void *ud) {
	ms_session *s = ud;
	if (s->stream == req) s->stream = NULL;
}

void ms_session_attach_stream(ms_session *s, ms_http_req *req) {
	if (s->stream) { /* a newer reader replaces the old one */
		ms_http_req *old = s->stream;
		s->stream = NULL;
		ms_http_on_close(old, NULL, NULL);
		ms_http_stream_end(old);
	}
	char hb[128];
	snprintf(hb, sizeof hb, "data: {\"msg\":\"heartbeat\",\"event_id\":null}\n\n");
	ms_http_sse_start(req, (unsigned)s->app->host->cfg->heartbeat * 1000u, hb);
	s->stream = req;
	ms_http_on_close(req, on_stream_closed, s);
	if (!s->open_calls && !s->pending.len) s->close_pending = 1; /* nothing to wait for */
	session_flush(s);
}

static void on_heartbeat_closed(ms_http_req *req, void *ud) {
	ms_session *s = ud;
	if (s->heartbeat != req) return;
	s->heartbeat = NULL;
	/* the client is gone: its session state goes with it once nothing is pending */
	if (!s->open_calls && !s->stream) free_session(s->app->host, s);
}

void ms_session_attach_heartbeat(ms_session *s, ms_http_req *req) {
	if (s->heartbeat) {
		ms_http_req *old = s->heartbeat;
		s->heartbeat = NULL;
		ms_http_on_close(old, NULL, NULL);
		ms_http_stream_end(old);
	}
	ms_http_sse_start(req, (unsigned)s->app->host->cfg->heartbeat * 1000u, "data: ALIVE\n\n");
	s->heartbeat = req;
	ms_http_on_close(req, on_heartbeat_closed, s);
	ms_http_sse_send(req, "data: ALIVE\n\n", 13);
}

void ms_sessions_sweep(ms_host *h) {
	uint64_t now = ms_now_ns();
	ms_session *next;
	for (int b = 0; b < MS_SESSION_BUCKETS; b++)
		for (ms_session *s = h->sessions[b]; s; s = next) {
			next = s->next;
			if (!s->open_calls && !s->stream && !s->heartbeat && now - s->last_seen_ns > 3600ull * 1000000000ull)
				free_session(h, s);
		}
}

void ms_sessions_drop_app(ms_host *h, ms_app *app) {
	ms_session *next;
	for (int b = 0; b < MS_SESSION_BUCKETS; b++)
		for (ms_session *s = h->sessions[b]; s; s = next) {
			next = s->next;
			if (s->app == app) free_session(h, s);
		}
}

/* ---- call messages ---- */

static json_t *event_msg(ms_call *c, const char *msg) {
	return json_pack("{s:s,s:s}", "msg", msg, "event_id", c->event_id);
}

/* A live reader gets every event. The call keeps only its latest event (each carries the
 * full value), so a late GET, or a second one, starts from where the call is now, and a
 * retained call costs the size of its result, not of its whole stream. */
static void rest_send(ms_call *c, const char *event, const json_t *data) {
	char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
	ms_buf_reset(&c->rest_log);
	ms_buf_printf(&c->rest_log, "event: %s\ndata: %s\n\n", event, text ? text : "null");
	free(text);
	if (c->rest_req) ms_http_sse_send(c->rest_req, c->rest_log.data, c->rest_log.len);
}

void ms_call_estimation(ms_call *c, int rank, int queue_size) {
	if (c->mode != MS_CALL_QUEUE || !c->session) return;
	json_t *m = event_msg(c, "estimation");
	double eta = ms_app_eta(c->app, rank);
	json_object_set_new(m, "rank", json_integer(rank));
	json_object_set_new(m, "queue_size", json_integer(queue_size));
	json_object_set_new(m, "rank_eta", eta >= 0 ? json_real(eta) : json_null());
	session_send(c->session, m);
}

void ms_call_started(ms_call *c) {
	if (c->mode != MS_CALL_QUEUE || !c->session) return;
	json_t *m = event_msg(c, "process_starts");
	double eta = c->app->avg_ms > 0 ? c->app->avg_ms / 1000.0 : -1;
	json_object_set_new(m, "eta", eta >= 0 ? json_real(eta) : json_null());
	json_object_set_new(m, "progress_data", json_null());
	session_send(c->session, m);
}

void ms_call_progress(ms_call *c, const json_t *p) {
	if (c->mode != MS_CALL_QUEUE || !c->session) return;
	json_t *unit = json_object_get(p, "unit"), *desc = json_object_get(p, "desc");
	json_t *unit_v = json_is_string(unit) ? json_incref(unit) : json_string("steps");
	json_t *desc_v = json_is_string(desc) ? json_incref(desc) : json_null();
	json_t *item = json_pack("{s:O,s:O,s:o,s:O,s:o}", "index", json_object_get(p, "index") ? json_object_get(p, "index") : json_null(),
				 "length", json_object_get(p, "length") ? json_object_get(p, "length") : json_null(), "unit", unit_v,
				 "progress", json_is_number(json_object_get(p, "progress")) ? json_object_get(p, "progress") : json_null(),
				 "desc", desc_v);
	json_t *m = event_msg(c, "progress");
	json_object_set_new(m, "progress_data", json_pack("[o]", item));
	session_send(c->session, m);
}

void ms_call_log_line(ms_call *c, const char *level, const char *line) {
	if (c->mode != MS_CALL_QUEUE || !c->session) return;
	json_t *m = event_msg(c, "log");
	json_object_set_new(m, "log", json_string(line));
	json_object_set_new(m, "level", json_string(level));
	json_object_set_new(m, "duration", json_real(10));
	json_object_set_new(m, "visible", json_true());
	json_object_set_new(m, "title", json_null());
	session_send(c->session, m);
}

static json_t *output_obj(ms_call *c, json_t *data, int generating) {
	double dur = (double)(ms_now_ns() - (c->t_start ? c->t_start : c->t_join)) / 1e9;
	return json_pack("{s:o,s:b,s:f,s:o,s:n,s:[]}", "data", data, "is_generating", generating, "duration", dur,
			 "average_duration", c->app->avg_ms > 0 ? json_real(c->app->avg_ms / 1000.0) : json_null(),
			 "render_config", "changed_state_ids");
}

void ms_call_generating(ms_call *c, const json_t *data) {
	if (c->status == MS_CALL_DONE) return;
	if (c->mode == MS_CALL_REST) rest_send(c, "generating", data);
	if (c->mode == MS_CALL_QUEUE && c->session) {
		json_t *payload;
		if (!c->last_output) {
			payload = json_deep_copy(data);
		} else { /* per output, the edits from the last value */
			payload = json_array();
			for (size_t i = 0; i < json_array_size(data); i++)
				json_array_append_new(payload, ms_value_diff(json_array_get(c->last_output, i), json_array_get(data, i)));
		}
		json_t *m = event_msg(c, "process_generating");
		json_object_set_new(m, "success", json_true());
		json_object_set_new(m, "output", output_obj(c, payload, 1));
		json_object_set_new(m, "time_limit", json_null());
		session_send(c->session, m);
	}
	json_decref(c->last_output);
	c->last_output = json_deep_copy(data);
	c->n_generating++;
}

static void on_rest_closed(ms_http_req *req, void *ud) {
	ms_call *c = ud;
	if (c->rest_req == req) c->rest_req = NULL;
}

static void end_call(ms_call *c) {
	ms_host *h = c->app->host;
	c->status = MS_CALL_DONE;
	json_decref(c->data);
	c->data = NULL;
	if (c->session && c->mode == MS_CALL_QUEUE) {
		ms_session *s = c->session;
		if (--s->open_calls <= 0) {
			s->open_calls = 0;
			session_send(s, json_pack("{s:s,s:n}", "msg", "close_stream", "event_id"));
			s->close_pending = 1;
			session_flush(s);
		}
	}
	if (c->mode == MS_CALL_REST) {
		if (c->rest_req) {
			ms_http_req *r = c->rest_req;
			c->rest_req = NULL;
			ms_http_on_close(r, NULL, NULL);
			ms_http_stream_end(r);
		}
		retain_call(h, c);
		return;
	}
	free_call(h, c);
}

/* run/{api}: the one answer, if the client still waits for it (takes body). */
static void run_answer(ms_call *c, int status, json_t *body) {
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (c->run_req) {
		ms_http_on_close(c->run_req, NULL, NULL);
		ms_http_respond_json(c->run_req, status, text ? text : "{}");
		c->run_req = NULL;
	}
	free(text);
}

void ms_call_completed(ms_call *c, const json_t *data) {
	if (c->status == MS_CALL_DONE) return;
	double dur = (double)(ms_now_ns() - (c->t_start ? c->t_start : c->t_join)) / 1e9;
	if (c->mode == MS_CALL_REST) rest_send(c, "complete", data);
	if (c->mode == MS_CALL_QUEUE && c->session) {
		json_t *m = event_msg(c, "process_completed");
		json_object_set_new(m, "success", json_true());
		json_object_set_new(m, "output", output_obj(c, json_deep_copy(data), 0));
		json_object_set_new(m, "title", json_null());
		session_send(c->session, m);
	}
	if (c->mode == MS_CALL_RUN)
		run_answer(c, 200, json_pack("{s:O,s:b,s:f,s:o}", "data", data, "is_generating", 0, "duration", dur,
					     "average_duration", c->app->avg_ms > 0 ? json_real(c->app->avg_ms / 1000.0) : json_null()));
	end_call(c);
}

void ms_call_failed(ms_call *c, const char *message) {
	if (c->status == MS_CALL_DONE) return;
	ms_app_log(c->app, "[moonspace] call %s failed: %s", c->event_id, message);
	if (c->mode == MS_CALL_REST) {
		json_t *m = json_string(message);
		rest_send(c, "error", m);
		json_decref(m);
	}
	if (c->mode == MS_CALL_QUEUE && c->session) {
		json_t *m = event_msg(c, "process_completed");
		json_object_set_new(m, "success", json_false());
		json_object_set_new(m, "output", json_pack("{s:s,s:b,s:f,s:s}", "error", message, "visible", 1, "duration", 10.0,
							   "title", "Error"));
		session_send(c->session, m);
	}
	if (c->mode == MS_CALL_RUN) run_answer(c, 500, json_pack("{s:s}", "error", message));
	end_call(c);
}

void ms_call_cancelled(ms_call *c) {
	if (c->status == MS_CALL_DONE) return;
	if (c->mode == MS_CALL_QUEUE && c->session) {
		json_t *m = event_msg(c, "process_completed");
		json_object_set_new(m, "success", json_true());
		json_object_set_new(m, "output", json_object());
		session_send(c->session, m);
		end_call(c);
		return;
	}
	ms_call_failed(c, "The call was cancelled.");
}

void ms_call_attach_rest(ms_call *c, ms_http_req *req) {
	ms_http_sse_start(req, (unsigned)c->app->host->cfg->heartbeat * 1000u, "event: heartbeat\ndata: null\n\n");
	if (c->rest_log.len) ms_http_sse_send(req, c->rest_log.data, c->rest_log.len);
	if (c->status == MS_CALL_DONE) { /* replayed everything: done */
		ms_http_stream_end(req);
		return;
	}
	if (c->rest_req) { /* one live reader at a time: the newer one */
		ms_http_req *old = c->rest_req;
		ms_http_on_close(old, NULL, NULL);
		ms_http_stream_end(old);
	}
	c->rest_req = req;
	ms_http_on_close(req, on_rest_closed, c);
}
