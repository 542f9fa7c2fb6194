/* host/gradio.c: the Gradio-compatible API of each app, so that the official clients
 * (@gradio/client, gradio_client) work unmodified. See
 * ../shared/reference/gradio-protocol.md for the protocol and its sources.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/components.h"
#include "host/host.h"

#define GRADIO_VERSION "5.49.1"

/* ---- helpers ---- */

static void respond_json_obj(ms_http_req *req, int status, json_t *obj) {
	char *text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	ms_http_respond_json(req, status, text ? text : "{}");
	free(text);
}

static void respond_detail(ms_http_req *req, int status, const char *msg) {
	respond_json_obj(req, status, json_pack("{s:s,s:s}", "detail", msg, "error", msg));
}

/* The app named by the route, answered with an error (and NULL) when it cannot serve. */
static ms_app *route_app(ms_host *h, ms_http_req *req, char **args, int need_running) {
	char id[MS_APP_ID_MAX];
	snprintf(id, sizeof id, "%s/%s", args[0], args[1]);
	ms_app *app = ms_app_find(h, id);
	if (!app) {
		respond_detail(req, 404, "No such app.");
		return NULL;
	}
	if (ms_app_needs_token(app) && !ms_host_token(h, req, NULL, 0)) {
		respond_json_obj(req, 401, json_pack("{s:{s:s},s:{s:s,s:s}}", "detail", "auth_message",
						     "This app needs a token: send Authorization: Bearer <token>.", "error",
						     "code", "unauthorized", "message", "This app needs a token."));
		return NULL;
	}
	if (need_running && (!app->iface || ms_stage_is_error(app->stage))) {
		char msg[600];
		snprintf(msg, sizeof msg, "The app is not running (%s)%s%s", ms_stage_name(app->stage), app->error ? ": " : ".",
			 app->error ? app->error : "");
		respond_detail(req, 503, msg);
		return NULL;
	}
	return app;
}

/* NUL is allowed, as in any JSON string ("a\u0000b"): inputs reach the app with their
 * length. A body that is not JSON says where it broke. */
static json_t *parse_body(ms_http_req *req) {
	json_error_t e;
	json_t *j = json_loadb(req->body, req->body_len, JSON_ALLOW_NUL, &e);
	if (!j) {
		char msg[300];
		snprintf(msg, sizeof msg, "The request body is not valid JSON: %s (line %d, column %d).", e.text, e.line, e.column);
		respond_detail(req, 400, msg);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		respond_detail(req, 400, "The request body must be a JSON object.");
		return NULL;
	}
	return j;
}

static json_t *endpoints(const ms_app *app) { return json_object_get(app->iface, "endpoints"); }

static int is_state(const json_t *comp) {
	const char *t = json_string_value(json_object_get(comp, "type"));
	return t && !strcmp(t, "state");
}

/* Component ids: endpoints in order, inputs then outputs, numbered from 1; the k-th state
 * output of an endpoint is the same component as its k-th state input (so that a value
 * returned into a state is what the next call receives). */
static int component_id(const ms_app *app, int fn, int output, int k) {
	int id = 1;
	size_t e;
	json_t *ep;
	json_array_foreach(endpoints(app), e, ep) {
		json_t *ins = json_object_get(ep, "inputs"), *outs = json_object_get(ep, "outputs");
		int in_ids[256], n_state_in = 0, state_in_ids[256];
		for (size_t i = 0; i < json_array_size(ins) && i < 256; i++) {
			in_ids[i] = id++;
			if (is_state(json_array_get(ins, i))) state_in_ids[n_state_in++] = in_ids[i];
		}
		if ((int)e == fn && !output) return in_ids[k];
		int state_k = 0;
		for (size_t i = 0; i < json_array_size(outs); i++) {
			int oid;
			if (is_state(json_array_get(outs, i)) && state_k < n_state_in) oid = state_in_ids[state_k++];
			else oid = id++;
			if ((int)e == fn && output && (int)i == k) return oid;
		}
		id++; /* the trigger (a submit button) */
	}
	return -1;
}

static json_t *component_json(int id, const json_t *comp) {
	const char *type = json_string_value(json_object_get(comp, "type"));
	json_t *props = json_deep_copy(json_object_get(comp, "props"));
	if (!json_is_object(props)) {
		json_decref(props);
		props = json_object();
	}
	json_object_set_new(props, "name", json_string(type ? type : "component"));
	json_t *c = json_pack("{s:i,s:s,s:o,s:b,s:s,s:o}", "id", id, "type", type ? type : "component", "props", props,
			      "skip_api", ms_component_skip_api(comp), "component_class_id", type ? type : "",
			      "api_info", ms_component_schema(comp));
	return c;
}

/* ---- /config and /info ---- */

void ms_gradio_config(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 1);
	if (!app) return;
	char base[1024], root[1300];
	ms_host_base_url(h, req, base, sizeof base);
	snprintf(root, sizeof root, "%s/spaces/%s", base, app->id);
	json_t *components = json_array(), *deps = json_array();
	size_t e;
	json_t *ep;
	json_array_foreach(endpoints(app), e, ep) {
		json_t *ins = json_object_get(ep, "inputs"), *outs = json_object_get(ep, "outputs");
		json_t *in_ids = json_array(), *out_ids = json_array();
		for (size_t i = 0; i < json_array_size(ins); i++) {
			int id = component_id(app, (int)e, 0, (int)i);
			json_array_append_new(in_ids, json_integer(id));
			json_array_append_new(components, component_json(id, json_array_get(ins, i)));
		}
		int max_id = 0;
		for (size_t i = 0; i < json_array_size(outs); i++) {
			int id = component_id(app, (int)e, 1, (int)i);
			json_array_append_new(out_ids, json_integer(id));
			int is_new = 1;
			for (size_t k = 0; k < json_array_size(in_ids); k++)
				if (json_integer_value(json_array_get(in_ids, k)) == id) is_new = 0;
			if (is_new) json_array_append_new(components, component_json(id, json_array_get(outs, i)));
			if (id > max_id) max_id = id;
		}
		for (size_t k = 0; k < json_array_size(in_ids); k++)
			if (json_integer_value(json_array_get(in_ids, k)) > max_id) max_id = (int)json_integer_value(json_array_get(in_ids, k));
		int button = max_id + 1;
		json_array_append_new(components, json_pack("{s:i,s:s,s:{s:s,s:s},s:b}", "id", button, "type", "button", "props",
							    "value", "Submit", "name", "button", "skip_api", 1));
		json_array_append_new(deps, json_pack("{s:i,s:[[i,s]],s:o,s:o,s:b,s:O,s:b,s:n,s:{s:b,s:b},s:s,s:s,s:s,s:b,s:n}",
						      "id", (int)e, "targets", button, "click", "inputs", in_ids, "outputs", out_ids,
						      "queue", 1, "api_name", json_object_get(ep, "api_name"), "backend_fn", 1,
						      "js", "types", "generator", json_is_true(json_object_get(ep, "stream")),
						      "cancel", 0, "show_progress", "full", "trigger_mode", "once",
						      "api_visibility", "public", "collects_event_data", 0, "cancels"));
	}
	const ms_appsrc *src = app->src;
	json_t *cfg = json_pack("{s:s,s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:b,s:b,s:b,s:o,s:o,s:s,s:n}", "version", GRADIO_VERSION,
				"mode", json_array_size(endpoints(app)) == 1 ? "interface" : "blocks", "protocol", "sse_v3",
				"api_prefix", "/gradio_api", "enable_queue", 1, "root", root, "app_id", src->revision,
				"space_id", app->id, "show_error", 1, "connect_heartbeat", 0, "is_space", 0, "components",
				components, "dependencies", deps, "title",
				src->card.title ? src->card.title : src->name, "max_file_size");
	respond_json_obj(req, 200, cfg);
}

static json_t *endpoint_info(const ms_app *app, const json_t *ep) {
	json_t *params = json_array(), *returns = json_array();
	json_t *ins = json_object_get(ep, "inputs"), *outs = json_object_get(ep, "outputs"), *names = json_object_get(ep, "params");
	json_t *examples = json_object_get(ep, "examples");
	for (size_t i = 0; i < json_array_size(ins); i++) {
		json_t *comp = json_array_get(ins, i);
		if (ms_component_skip_api(comp)) continue;
		const char *pname = json_string_value(json_array_get(names, i));
		char fallback[32];
		snprintf(fallback, sizeof fallback, "param_%zu", i);
		if (!pname) pname = fallback;
		const char *label = json_string_value(json_object_get(json_object_get(comp, "props"), "label"));
		json_t *props = json_object_get(comp, "props");
		int has_default = json_object_get(props, "value") != NULL;
		json_t *example = json_array_get(json_array_get(examples, 0), i);
		json_array_append_new(params, json_pack("{s:s,s:s,s:b,s:o,s:o,s:o,s:s,s:o}", "label", label ? label : pname,
							"parameter_name", pname, "parameter_has_default", has_default,
							"parameter_default", has_default ? ms_component_default(comp) : json_null(),
							"type", ms_component_schema(comp), "python_type", ms_component_python_type(comp),
							"component", ms_component_class(json_string_value(json_object_get(comp, "type"))),
							"example_input", example ? json_deep_copy(example) : ms_component_example(comp)));
	}
	for (size_t i = 0; i < json_array_size(outs); i++) {
		json_t *comp = json_array_get(outs, i);
		if (ms_component_skip_api(comp)) continue;
		const char *label = json_string_value(json_object_get(json_object_get(comp, "props"), "label"));
		json_array_append_new(returns, json_pack("{s:s,s:o,s:o,s:s}", "label", label ? label : "output", "type",
							 ms_component_schema(comp), "python_type", ms_component_python_type(comp),
							 "component", ms_component_class(json_string_value(json_object_get(comp, "type")))));
	}
	const char *desc = json_string_value(json_object_get(ep, "description"));
	return json_pack("{s:o,s:o,s:s,s:s,s:b}", "parameters", params, "returns", returns, "api_visibility", "public",
			 "description", desc ? desc : "", "show_api", 1);
}

void ms_gradio_info(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 1);
	if (!app) return;
	json_t *named = json_object();
	size_t e;
	json_t *ep;
	json_array_foreach(endpoints(app), e, ep) {
		char key[300];
		snprintf(key, sizeof key, "/%s", json_string_value(json_object_get(ep, "api_name")));
		json_object_set_new(named, key, endpoint_info(app, ep));
	}
	respond_json_obj(req, 200, json_pack("{s:o,s:{}}", "named_endpoints", named, "unnamed_endpoints"));
}

void ms_gradio_app_id(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 1);
	if (app) respond_json_obj(req, 200, json_pack("{s:s}", "app_id", app->src->revision));
}

/* ---- inputs ---- */

/* Validates data against endpoint fn's inputs and fills state inputs from the session.
 * Returns the inputs to run with, or NULL after answering 422/400. */
static json_t *prepare_inputs(ms_app *app, int fn, json_t *data, ms_session *session, ms_http_req *req) {
	const json_t *ep = ms_app_endpoint(app, fn);
	json_t *ins = json_object_get(ep, "inputs"), *names = json_object_get(ep, "params");
	size_t n = json_array_size(ins), n_api = 0;
	for (size_t i = 0; i < n; i++) n_api += !ms_component_skip_api(json_array_get(ins, i));
	if (!data) data = json_array();
	else json_incref(data);
	if (!json_is_array(data) || (json_array_size(data) != n && json_array_size(data) != n_api)) {
		char msg[200];
		snprintf(msg, sizeof msg, "This endpoint takes %zu inputs; the request gave %zu.", n_api, json_array_size(data));
		json_decref(data);
		respond_json_obj(req, 422, json_pack("{s:[{s:s,s:b,s:n,s:s}],s:s}", "detail", "__type__", "validate", "is_valid", 0,
						     "parameter_name", "message", msg, "error", msg));
		return NULL;
	}
	int full = json_array_size(data) == n;
	json_t *out = json_array(), *errors = json_array();
	size_t src_i = 0;
	int state_k = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *comp = json_array_get(ins, i);
		int skipped = ms_component_skip_api(comp);
		json_t *v = (full || !skipped) ? json_array_get(data, src_i++) : NULL;
		if (is_state(comp)) {
			char key[32];
			snprintf(key, sizeof key, "%d:%d", fn, state_k++);
			json_t *st = session ? json_object_get(session->state, key) : NULL;
			json_array_append_new(out, st ? json_deep_copy(st) : ms_component_default(comp));
			continue;
		}
		json_t *ok = NULL;
		char msg[300];
		if (ms_component_validate(comp, v, &ok, msg, sizeof msg) != 0) {
			const char *pname = json_string_value(json_array_get(names, i));
			json_array_append_new(errors, json_pack("{s:s,s:b,s:s?,s:s}", "__type__", "validate", "is_valid", 0,
								"parameter_name", pname, "message", msg));
			json_array_append_new(out, json_null());
		} else {
			json_array_append_new(out, ok);
		}
	}
	json_decref(data);
	if (json_array_size(errors)) {
		json_decref(out);
		const char *first = json_string_value(json_object_get(json_array_get(errors, 0), "message"));
		respond_json_obj(req, 422, json_pack("{s:o,s:s}", "detail", errors, "error", first ? first : "invalid input"));
		return NULL;
	}
	json_decref(errors);
	return out;
}

static int fn_from_body(ms_app *app, json_t *body) {
	json_t *fi = json_object_get(body, "fn_index");
	if (json_is_integer(fi)) return ms_app_endpoint(app, (int)json_integer_value(fi)) ? (int)json_integer_value(fi) : -1;
	const char *api = json_string_value(json_object_get(body, "api_name"));
	return ms_app_endpoint_index(app, api);
}

static void queue_full(ms_http_req *req) { respond_detail(req, 503, "Queue is full."); }

/* ---- the queue protocol ---- */

void ms_gradio_join(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 1);
	if (!app) return;
	json_t *body = parse_body(req);
	if (!body) return;
	int fn = fn_from_body(app, body);
	const char *hash = json_string_value(json_object_get(body, "session_hash"));
	if (fn < 0) {
		json_decref(body);
		return respond_detail(req, 422, "Unknown fn_index or api_name.");
	}
	if (!hash || !*hash || strlen(hash) > 64) {
		json_decref(body);
		return respond_detail(req, 400, "session_hash is required (a string of at most 64 characters).");
	}
	ms_session *s = ms_session_get(h, app, hash, 1);
	json_t *inputs = s ? prepare_inputs(app, fn, json_object_get(body, "data"), s, req) : NULL;
	json_decref(body);
	if (!inputs) {
		if (!s) respond_detail(req, 500, "out of memory");
		return;
	}
	ms_call *c = ms_call_new(h, app, fn, MS_CALL_QUEUE);
	c->data = inputs;
	c->session = s;
	s->open_calls++;
	s->close_pending = 0;
	char id[40];
	snprintf(id, sizeof id, "%s", c->event_id);
	if (ms_app_enqueue(app, c) == MS_EBUSY) {
		s->open_calls--;
		c->session = NULL;
		ms_call_failed(c, "Queue is full."); /* frees it */
		return queue_full(req);
	}
	respond_json_obj(req, 200, json_pack("{s:s}", "event_id", id));
}

void ms_gradio_data(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 0);
	if (!app) return;
	char hash[128];
	if (!ms_http_req_query(req, "session_hash", hash, sizeof hash) || !*hash)
		return respond_detail(req, 400, "session_hash is required.");
	ms_session *s = ms_session_get(h, app, hash, 0);
	if (!s) {
		ms_http_sse_start(req, 0, NULL);
		const char *m = "data: {\"msg\":\"unexpected_error\",\"message\":\"Session not found.\",\"session_not_found\":true,"
				"\"success\":false,\"event_id\":null}\n\n";
		ms_http_sse_send(req, m, strlen(m));
		ms_http_stream_end(req);
		return;
	}
	ms_session_attach_stream(s, req);
}

void ms_gradio_heartbeat(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 0);
	if (!app) return;
	if (strlen(args[2]) > 64) return respond_detail(req, 400, "session_hash is too long.");
	ms_session *s = ms_session_get(h, app, args[2], 1);
	if (!s) return respond_detail(req, 500, "out of memory");
	ms_session_attach_heartbeat(s, req);
}

void ms_gradio_cancel(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 0);
	if (!app) return;
	json_t *body = parse_body(req);
	if (!body) return;
	const char *id = json_string_value(json_object_get(body, "event_id"));
	ms_call *c = id ? ms_call_find(h, id) : NULL;
	if (c && c->app == app) ms_app_cancel_call(app, c);
	json_decref(body);
	respond_json_obj(req, 200, json_pack("{s:b}", "success", 1));
}

void ms_gradio_reset(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 0);
	if (!app) return;
	respond_json_obj(req, 200, json_pack("{s:b}", "success", 1));
}

/* ---- curl-friendly /call and the synchronous /run ---- */

static ms_call *start_rest_call(ms_host *h, ms_http_req *req, ms_app *app, const char *api, ms_call_mode mode) {
	int fn = ms_app_endpoint_index(app, api);
	if (fn < 0) {
		respond_detail(req, 404, "No such endpoint: see gradio_api/info for this app's endpoints.");
		return NULL;
	}
	json_t *body = parse_body(req);
	if (!body) return NULL;
	const char *hash = json_string_value(json_object_get(body, "session_hash"));
	ms_session *s = hash && *hash && strlen(hash) <= 64 ? ms_session_get(h, app, hash, 1) : NULL;
	json_t *inputs = prepare_inputs(app, fn, json_object_get(body, "data"), s, req);
	json_decref(body);
	if (!inputs) return NULL;
	ms_call *c = ms_call_new(h, app, fn, mode);
	c->data = inputs;
	c->session = s;
	return c;
}

void ms_gradio_call(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 1);
	if (!app) return;
	ms_call *c = start_rest_call(h, req, app, args[2], MS_CALL_REST);
	if (!c) return;
	char id[40];
	snprintf(id, sizeof id, "%s", c->event_id);
	if (ms_app_enqueue(app, c) == MS_EBUSY) {
		ms_call_failed(c, "Queue is full.");
		return queue_full(req);
	}
	respond_json_obj(req, 200, json_pack("{s:s}", "event_id", id));
}

void ms_gradio_call_stream(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 0);
	if (!app) return;
	ms_call *c = ms_call_find(h, args[3]);
	if (!c || c->app != app || c->mode != MS_CALL_REST) return respond_detail(req, 404, "No such event.");
	ms_call_attach_rest(c, req);
}

static void on_run_closed(ms_http_req *req, void *ud) {
	ms_call *c = ud;
	if (c->run_req != req) return;
	c->run_req = NULL;
	ms_app_cancel_call(c->app, c); /* nobody waits for the answer any more */
}

void ms_gradio_run(ms_host *h, ms_http_req *req, char **args) {
	ms_app *app = route_app(h, req, args, 1);
	if (!app) return;
	ms_call *c = start_rest_call(h, req, app, args[2], MS_CALL_RUN);
	if (!c) return;
	c->run_req = req;
	ms_http_on_close(req, on_run_closed, c);
	if (ms_app_enqueue(app, c) == MS_EBUSY) {
		c->run_req = NULL;
		ms_http_on_close(req, NULL, NULL);
		ms_call_failed(c, "Queue is full.");
		queue_full(req);
	}
}
