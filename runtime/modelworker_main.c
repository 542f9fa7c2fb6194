/* runtime/modelworker_main.c: bin/moonspace-modelworker, one loaded checkpoint serving
 * many requests at once ("Host ⇄ model worker protocol" in sandbox/PROTOCOL.md).
 *
 * Two threads. The reader blocks on the socket and queues every frame; a `cancel` also
 * raises the request's flag and the batch flag at once, so the forward pass in progress
 * stops within one layer. The main thread owns the model: it takes queued requests
 * (tokenize, prefill, answer the quick ops), then runs one batched decode step for every
 * generation in flight (weights are read once per step for all of them), streams pieces
 * and finishes what is done.
 *
 * Extension for callers without a tokenizer (and tests): generate accepts
 * "prompt_ids":[...] instead of "prompt"; it then streams no pieces and its result is the
 * array of generated ids.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/model.h"
#include "runtime/tokenizer.h"

#include "runtime/jinja.h"
#include "sandbox/frame.h"
#include "sandbox/isolate.h"


#define MAX_REQS 256
#define MAX_STOPS 8

typedef struct req {
	json_int_t id;
	ms_gen *g;
	atomic_int cancel;
	int ids_mode;
	ms_buf text;
	char *stops[MAX_STOPS + 1];
} req;

typedef struct msg_node {
	json_t *msg;
	struct msg_node *next;
} msg_node;

static int sock_fd = 3;
static ms_model *model;
/* A repo that holds only tokenizer files (e.g. hf-internal-testing/llama-tokenizer) is
 * served too: tokenize and detokenize, nothing else. */
static ms_tokenizer *tok_only;

static ms_tokenizer *tokenizer(void) { return model ? ms_model_tokenizer(model) : tok_only; }
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER, park = PTHREAD_COND_INITIALIZER;
static msg_node *q_head, *q_tail;
static int reader_eof;
static req *active[MAX_REQS]; /* guarded by mu for the reader's cancel lookups */
static int n_active;
static atomic_int batch_cancel;

static void send_json(json_t *m) {
	if (ms_frame_write_json_fd(sock_fd, m) != 0) {
		/* the host is gone: nothing left to serve */
		_exit(0);
	}
	json_decref(m);
}

static void send_error(json_int_t id, const char *message) {
	send_json(json_pack("{s:s, s:I, s:s}", "t", "error", "req", id, "message", message));
}

static void *reader_main(void *arg) {
	for (;;) {
		json_t *m = NULL;
		int rc = ms_frame_read_json_fd(sock_fd, &m, MS_FRAME_MAX_DEFAULT);
		pthread_mutex_lock(&mu);
		if (rc != 0) {
			reader_eof = 1;
			atomic_store(&batch_cancel, 1);
			pthread_cond_signal(&cv);
			/* park until the main thread ends the process: a thread exiting under the
			 * seccomp filter can trip it (sanitizer runtimes call prctl there) */
			for (;;) pthread_cond_wait(&park, &mu);
		}
		const char *t = json_string_value(json_object_get(m, "t"));
		if (t && strcmp(t, "cancel") == 0) {
			json_int_t id = json_integer_value(json_object_get(m, "req"));
			for (int i = 0; i < n_active; i++)
				if (active[i]->id == id) {
					atomic_store(&active[i]->cancel, 1);
					atomic_store(&batch_cancel, 1);
				}
		}
		msg_node *n = malloc(sizeof *n);
		if (n) {
			*n = (msg_node){m, NULL};
			if (q_tail) q_tail->next = n;
			else q_head = n;
			q_tail = n;
		} else {
			json_decref(m);
		}
		pthread_cond_signal(&cv);
		pthread_mutex_unlock(&mu);
	}
	return NULL;
}

static int on_piece(void *ud, const char *text, size_t len) {
	req *r = ud;
	ms_buf_append(&r->text, text, len);
	json_t *m = json_pack("{s:s, s:I, s:s%}", "t", "piece", "req", r->id, "text", text, len);
	if (m) send_json(m);
	return 0;
}

static void req_free(req *r) {
	ms_gen_free(r->g);
	ms_buf_free(&r->text);
	for (int i = 0; r->stops[i]; i++) free(r->stops[i]);
	free(r);
}

static int can_chat(void) {
	ms_tokenizer *tok = tokenizer();
	return tok && ms_tokenizer_chat_template(tok);
}

/* chat: the messages rendered through the checkpoint's chat template, as transformers'
 * apply_chat_template(add_generation_prompt=True); the template writes the special tokens
 * itself, so the text is encoded without the post-processor's. */
static char *render_chat(json_t *args, char *err, size_t errlen) {
	json_t *msgs = json_object_get(args, "messages");
	if (!json_is_array(msgs)) {
		ms_errf(err, errlen, MS_EINVAL, "chat: messages must be an array");
		return NULL;
	}
	if (!can_chat()) {
		ms_errf(err, errlen, MS_EUNSUPPORTED, "chat: this checkpoint has no chat template");
		return NULL;
	}
	ms_tokenizer *tok = tokenizer();
	char *out = NULL;
	if (ms_chat_template_render(ms_tokenizer_chat_template(tok), msgs, ms_tokenizer_bos_token(tok),
				    ms_tokenizer_eos_token(tok), 1, NULL, &out, err, errlen) != 0)
		return NULL;
	return out;
}

/* "stop": one string or a list of them (as transformers' stop_strings); anything else is
 * an error rather than a stop silently ignored. */
static int take_stops(req *r, json_t *stop) {
	if (!stop || json_is_null(stop)) return 0;
	json_t *one = json_is_string(stop) ? stop : NULL;
	size_t n = one ? 1 : json_array_size(stop);
	if ((!one && !json_is_array(stop)) || n > MAX_STOPS) return -1;
	for (size_t i = 0; i < n; i++) {
		json_t *v = one ? one : json_array_get(stop, i);
		if (!json_is_string(v) || !json_string_length(v)) return -1;
		if (!(r->stops[i] = strdup(json_string_value(v)))) return -1;
	}
	return 0;
}

/* Generation options, each checked for type and range before any cast (a number outside
 * int's range converted to int is undefined): a typo or a wrong type is an error that says
 * so, not a default used silently. An option given wins over the checkpoint's
 * generation_config.json, which wins over the worker's defaults. */
static int take_opts(json_t *args, ms_gen_opts *o, char *err, size_t errlen) {
	static const char *const names[] = {"max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed"};
	static const char *const other[] = {"prompt", "prompt_ids", "messages", "stop"};
	double v[MS_ARRAY_LEN(names)] = {0};
	int given[MS_ARRAY_LEN(names)] = {0};
	const char *key;
	json_t *val;
	json_object_foreach(args, key, val) {
		size_t i = 0;
		while (i < MS_ARRAY_LEN(names) && strcmp(key, names[i])) i++;
		if (i == MS_ARRAY_LEN(names)) {
			size_t k = 0;
			while (k < MS_ARRAY_LEN(other) && strcmp(key, other[k])) k++;
			if (k == MS_ARRAY_LEN(other))
				return ms_errf(err, errlen, MS_EINVAL, "generate: unknown option '%s' (max_new_tokens, temperature, "
					       "top_p, top_k, repetition_penalty, seed, stop)", key);
			continue;
		}
		if (json_is_null(val)) continue; /* the default, as the protocol's "seed": null */
		/* 40.0 is 40: a Lua or JavaScript number may arrive as a real */
		double d = json_is_number(val) ? json_number_value(val) : NAN;
		int rc = ms_gen_option_check(ms_gen_option_find(key), d, d == floor(d), "generate", err, errlen);
		if (rc != 0) return rc;
		v[i] = d, given[i] = 1;
	}
	ms_gen_opts_init(o);
	o->max_new_tokens = 128;
	ms_gen_opts_apply_model(o, model);
	if (given[0]) o->max_new_tokens = (int)v[0];
	if (given[1]) o->temperature = (float)v[1];
	if (given[2]) o->top_p = (float)v[2];
	if (given[3]) o->top_k = (int)v[3];
	if (given[4]) o->repetition_penalty = (float)v[4];
	o->seed = (uint64_t)v[5];
	return 0;
}

/* Token ids from a JSON array, each checked before the cast (2^32 + 1 must not become
 * token 1, nor "x" token 0): integers in [0, limit). *ids is malloc'd, one slot at least;
 * the caller frees it, also on error. */
static int json_ids(json_t *a, json_int_t limit, const char *what, int32_t **ids, size_t *n, char *err, size_t errlen) {
	*n = json_array_size(a);
	if (!(*ids = malloc((*n + 1) * sizeof **ids))) return MS_ENOMEM;
	for (size_t i = 0; i < *n; i++) {
		json_t *v = json_array_get(a, i);
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= limit)
			return ms_errf(err, errlen, MS_ERANGE, "%s[%zu] is not a token id (an integer from 0 to %lld)", what, i,
				       (long long)limit - 1);
		(*ids)[i] = (int32_t)json_integer_value(v);
	}
	return 0;
}

static void start_generate(json_int_t id, json_t *args, int chat) {
	if (!json_is_object(args)) return send_error(id, "generate: args must be an object");
	if (n_active >= MAX_REQS) return send_error(id, "busy: too many requests in flight");
	req *r = calloc(1, sizeof *r);
	if (!r) return send_error(id, "out of memory");
	r->id = id;
	ms_buf_init(&r->text);
	ms_gen_opts o;
	char err[512] = "";
	if (take_opts(args, &o, err, sizeof err) != 0) {
		req_free(r);
		return send_error(id, err);
	}
	o.cancel = &r->cancel;
	if (take_stops(r, json_object_get(args, "stop")) != 0) {
		req_free(r);
		return send_error(id, "generate: stop must be a string or a list of at most 8 non-empty strings");
	}
	o.stop = (const char *const *)r->stops;
	int32_t *ids = NULL;
	size_t n = 0;
	int rc;
	json_t *pids = json_object_get(args, "prompt_ids");
	const char *prompt = json_string_value(json_object_get(args, "prompt"));
	char *rendered = NULL;
	if (chat) {
		rendered = render_chat(args, err, sizeof err);
		rc = rendered ? ms_model_encode_prompt(model, rendered, 0, &ids, &n, err, sizeof err) : MS_EINVAL;
		free(rendered);
	} else if (json_is_array(pids) && json_array_size(pids) > 0) {
		r->ids_mode = 1;
		rc = json_ids(pids, ms_model_config(model)->vocab_size, "generate: prompt_ids", &ids, &n, err, sizeof err);
	} else if (prompt) {
		rc = ms_model_encode_prompt(model, prompt, 1, &ids, &n, err, sizeof err);
	} else {
		rc = ms_errf(err, sizeof err, MS_EINVAL, "generate: prompt missing");
	}
	if (rc == 0) rc = ms_gen_check_length(&o, n, err, sizeof err);
	if (rc == 0) rc = ms_gen_new(model, ids, n, &o, NULL, r->ids_mode ? NULL : on_piece, r, &r->g);
	free(ids);
	if (rc == 0) {
		pthread_mutex_lock(&mu);
		active[n_active++] = r;
		pthread_mutex_unlock(&mu);
		ms_gen_prefill(r->g); /* outcome checked with the others after the step */
		return;
	}
	if (!err[0]) snprintf(err, sizeof err, "generate: %s", ms_strerror(rc));
	req_free(r);
	send_error(id, err);
}

/* Sends the outcome of every finished or cancelled request and drops it. */
static void reap(void) {
	for (int i = 0; i < n_active;) {
		req *r = active[i];
		int cancelled = atomic_load(&r->cancel);
		if (!cancelled && !ms_gen_done(r->g)) {
			i++;
			continue;
		}
		if (cancelled == 2) {
			/* already answered */
		} else if (cancelled || ms_gen_error(r->g) == MS_ECANCELED) {
			send_error(r->id, "cancelled");
		} else if (ms_gen_error(r->g) != 0) {
			send_error(r->id, ms_strerror(ms_gen_error(r->g)));
		} else if (r->ids_mode) {
			size_t n;
			const int32_t *ids = ms_gen_ids(r->g, &n);
			json_t *a = json_array();
			for (size_t k = 0; k < n; k++) json_array_append_new(a, json_integer(ids[k]));
			send_json(json_pack("{s:s, s:I, s:o}", "t", "result", "req", r->id, "result", a));
		} else {
			send_json(json_pack("{s:s, s:I, s:s%}", "t", "result", "req", r->id, "result", r->text.data ? r->text.data : "",
					    r->text.len));
		}
		pthread_mutex_lock(&mu);
		active[i] = active[--n_active];
		pthread_mutex_unlock(&mu);
		req_free(r);
	}
}

static int text_ids(json_t *args, int32_t **ids, size_t *n, char *err, size_t errlen) {
	const char *text = json_string_value(json_object_get(args, "text"));
	if (!text) return ms_errf(err, errlen, MS_EINVAL, "text missing");
	json_t *sp = json_object_get(args, "special");
	int special = json_is_boolean(sp) ? json_is_true(sp) : 1;
	if (!tokenizer())
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "this checkpoint has no tokenizer");
	int rc = ms_tokenizer_encode(tokenizer(), text, strlen(text), special, ids, n);
	return rc ? ms_errf(err, errlen, rc, "tokenize: %s", ms_strerror(rc)) : 0;
}

static void quick_op(json_int_t id, const char *op, json_t *args) {
	char err[512] = "";
	int32_t *ids = NULL;
	size_t n = 0;
	json_t *result = NULL;
	const ms_config *c = model ? ms_model_config(model) : NULL;
	int rc;
	if (!json_is_object(args)) {
		rc = ms_errf(err, sizeof err, MS_EINVAL, "%s: args must be an object", op);
	} else if (!model && strcmp(op, "tokenize") != 0 && strcmp(op, "detokenize") != 0) {
		rc = ms_errf(err, sizeof err, MS_EUNSUPPORTED, "%s: this repository holds only a tokenizer (tokenize and detokenize work)", op);
	} else if (strcmp(op, "tokenize") == 0) {
		if ((rc = text_ids(args, &ids, &n, err, sizeof err)) == 0) {
			result = json_array();
			for (size_t i = 0; i < n; i++) json_array_append_new(result, json_integer(ids[i]));
		}
	} else if (strcmp(op, "detokenize") == 0) {
		json_t *a = json_object_get(args, "ids");
		rc = json_is_array(a) ? 0 : ms_errf(err, sizeof err, MS_EINVAL, "detokenize: ids missing");
		if (rc == 0 && (!tokenizer()))
			rc = ms_errf(err, sizeof err, MS_EUNSUPPORTED, "this checkpoint has no tokenizer");
		if (rc == 0) {
			/* ids past the vocabulary are skipped by the decoder, as HF tokenizers do */
			rc = json_ids(a, (json_int_t)INT32_MAX + 1, "detokenize: ids", &ids, &n, err, sizeof err);
			ms_buf text;
			ms_buf_init(&text);
			/* special tokens dropped unless asked for ("special": true), as m:detokenize documents */
			int keep = json_is_true(json_object_get(args, "special"));
			if (rc == 0) rc = ms_tokenizer_decode_buf(tokenizer(), ids, n, !keep, &text);
			if (rc == 0) result = json_stringn(text.data ? text.data : "", text.len);
			else if (!err[0]) ms_errf(err, sizeof err, rc, "detokenize: %s", ms_strerror(rc));
			ms_buf_free(&text);
		}
	} else if (strcmp(op, "logits") == 0) {
		/* the next-token logits after a text (or "ids"), as a list of vocab floats */
		json_t *a = json_object_get(args, "ids");
		if (json_is_array(a)) {
			rc = json_ids(a, c->vocab_size, "logits: ids", &ids, &n, err, sizeof err);
		} else {
			rc = text_ids(args, &ids, &n, err, sizeof err);
		}
		int causal = c->arch == MS_ARCH_LLAMA || c->arch == MS_ARCH_GPT2;
		if (rc == 0 && !causal) rc = ms_errf(err, sizeof err, MS_EUNSUPPORTED, "logits: only causal language models (llama, gpt2)");
		if (rc == 0 && (n == 0 || n > (size_t)c->max_pos))
			rc = ms_errf(err, sizeof err, MS_ERANGE, "logits: between 1 and %d tokens", c->max_pos);
		float *all = rc == 0 ? malloc(n * (size_t)c->vocab_size * sizeof *all) : NULL;
		if (rc == 0 && !all) rc = MS_ENOMEM;
		if (rc == 0 && (rc = ms_model_logits(model, ids, n, all)) != 0) ms_errf(err, sizeof err, rc, "logits: %s", ms_strerror(rc));
		if (rc == 0) {
			result = json_array();
			const float *last = all + (n - 1) * (size_t)c->vocab_size;
			for (int v = 0; v < c->vocab_size; v++) json_array_append_new(result, json_real(last[v]));
		}
		free(all);
	} else if (strcmp(op, "classify") == 0) {
		if ((rc = text_ids(args, &ids, &n, err, sizeof err)) == 0) {
			ms_label_score *ls;
			size_t nl;
			n = ms_model_fit_ids(model, ids, n);
			if ((rc = ms_model_classify_ids(model, ids, n, &ls, &nl)) == 0) {
				result = json_array();
				for (size_t i = 0; i < nl; i++)
					json_array_append_new(result, json_pack("{s:s, s:f}", "label", ls[i].label, "score", (double)ls[i].score));
				free(ls);
			} else {
				ms_errf(err, sizeof err, rc, "classify: %s", ms_strerror(rc));
			}
		}
	} else if (strcmp(op, "embed") == 0) {
		if ((rc = text_ids(args, &ids, &n, err, sizeof err)) == 0) {
			json_t *nv = json_object_get(args, "normalize");
			int normalize = json_is_boolean(nv) ? json_is_true(nv) : 1;
			n = ms_model_fit_ids(model, ids, n);
			float *hidden = malloc(n * c->dim * sizeof *hidden), *vec = malloc((size_t)c->dim * sizeof *vec);
			rc = hidden && vec ? (normalize ? ms_model_embed_ids(model, ids, n, vec)
							: ms_model_encode(model, ids, NULL, n, hidden, NULL, NULL))
					   : MS_ENOMEM;
			if (rc == 0) {
				result = json_array();
				for (int e = 0; e < c->dim; e++) {
					double v = vec[e];
					if (!normalize) {
						double s = 0;
						for (size_t i = 0; i < n; i++) s += hidden[i * c->dim + e];
						v = s / (double)n;
					}
					json_array_append_new(result, json_real(v));
				}
			} else {
				ms_errf(err, sizeof err, rc, "embed: %s", ms_strerror(rc));
			}
			free(hidden);
			free(vec);
		}
	} else {
		rc = ms_errf(err, sizeof err, MS_EUNSUPPORTED, "op '%s' not supported by this model worker", op);
	}
	free(ids);
	if (rc == 0) send_json(json_pack("{s:s, s:I, s:o}", "t", "result", "req", id, "result", result));
	else send_error(id, err);
}

static void handle(json_t *m) {
	const char *t = json_string_value(json_object_get(m, "t"));
	json_t *idv = json_object_get(m, "req");
	if (!t || !json_is_integer(idv)) {
		fprintf(stderr, "moonspace-modelworker: ignoring a frame without t/req\n");
		return;
	}
	json_int_t id = json_integer_value(idv);
	if (strcmp(t, "cancel") == 0) {
		/* the reader raised the flag if the request was in flight; it may have read the
		 * cancel before this thread started the request, so look again in order */
		for (int i = 0; i < n_active; i++)
			if (active[i]->id == id) atomic_store(&active[i]->cancel, 1);
		return;
	}
	if (strcmp(t, "req") != 0) {
		fprintf(stderr, "moonspace-modelworker: ignoring frame type '%s'\n", t);
		return;
	}
	const char *op = json_string_value(json_object_get(m, "op"));
	json_t *args = json_object_get(m, "args");
	if (!op) return send_error(id, "op missing");
	if (!model && (strcmp(op, "generate") == 0 || strcmp(op, "chat") == 0))
		send_error(id, "this repository holds only a tokenizer: it cannot generate");
	else if (strcmp(op, "generate") == 0 || strcmp(op, "chat") == 0) start_generate(id, args, op[0] == 'c');
	else quick_op(id, op, args);
}

static const char *arch_short(ms_arch a) {
	switch (a) {
	case MS_ARCH_LLAMA: return "llama";
	case MS_ARCH_GPT2: return "gpt2";
	case MS_ARCH_BERT: case MS_ARCH_BERT_CLS: return "bert";
	case MS_ARCH_DISTILBERT: return "distilbert";
	default: return "unknown";
	}
}

static pthread_t reader;

static int only_tokenizer(const char *dir) {
	char p[4096];
	snprintf(p, sizeof p, "%s/config.json", dir);
	if (access(p, F_OK) == 0) return 0;
	snprintf(p, sizeof p, "%s/tokenizer.json", dir);
	return access(p, R_OK) == 0;
}

static int init(void) {
	json_t *m = NULL;
	if (ms_frame_read_json_fd(sock_fd, &m, MS_FRAME_MAX_DEFAULT) != 0) return 1;
	const char *t = json_string_value(json_object_get(m, "t"));
	const char *path = json_string_value(json_object_get(m, "path"));
	json_t *th = json_object_get(m, "threads");
	char err[1024] = "";
	int rc = MS_EPROTO;
	if (!t || strcmp(t, "init") != 0 || !path) {
		send_json(json_pack("{s:s, s:s}", "t", "init_error", "message", "expected {\"t\":\"init\",\"path\":...}"));
		json_decref(m);
		return 1;
	}
	/* Lock down before reading the checkpoint: its parsers meet a possibly hostile file
	 * with no network, no exec and no writes, as nobody. Files may still be opened for
	 * reading until the seal below; threads are allowed (the pool's and the reader). */
	json_t *mem = json_object_get(m, "memory_mb");
	ms_isolate_opts iso = {.memory_mb = json_is_integer(mem) && json_integer_value(mem) > 0
						    ? (size_t)json_integer_value(mem)
						    : 8192,
			       .keep_fd = sock_fd > 2 ? sock_fd : 2,
			       .allow_threads = 1,
			       .allow_reading = 1};
	int dir_fd = -1; /* the snapshot directory the host passes as an inherited fd */
	if (sscanf(path, "/proc/self/fd/%d", &dir_fd) == 1 && dir_fd > iso.keep_fd && dir_fd < 64) iso.keep_fd = dir_fd;
	if (ms_isolate_apply(&iso, err, sizeof err) != 0) {
		send_json(json_pack("{s:s, s:s}", "t", "init_error", "message", err));
		json_decref(m);
		return 1;
	}
	ms_model_opts o = {.n_threads = json_is_integer(th) ? (int)json_integer_value(th) : 1,
			   .q8 = json_is_true(json_object_get(m, "q8"))};
	rc = ms_model_load(path, &o, &model, err, sizeof err);
	if (rc != 0 && only_tokenizer(path)) {
		err[0] = 0;
		rc = ms_tokenizer_load(path, &tok_only, err, sizeof err);
	}
	json_t *m_init = m;
	if (rc != 0) {
		send_json(json_pack("{s:s, s:s}", "t", "init_error", "message", err[0] ? err : ms_strerror(rc)));
		json_decref(m_init);
		return 1;
	}
	/* every thread exists before the seal (sanitizer runtimes read /proc when a thread
	 * starts) */
	if (pthread_create(&reader, NULL, reader_main, NULL) != 0) {
		send_json(json_pack("{s:s, s:s}", "t", "init_error", "message", "cannot start a thread"));
		json_decref(m_init);
		return 1;
	}
	if (dir_fd > sock_fd) close(dir_fd); /* everything is read and mapped */
	if (ms_isolate_seal(err, sizeof err) != 0) {
		send_json(json_pack("{s:s, s:s}", "t", "init_error", "message", err));
		json_decref(m_init);
		return 1;
	}
	fprintf(stderr, "moonspace-modelworker: %s: %s\n", path, ms_isolate_summary());
	json_decref(m_init);
	if (!model) {
		send_json(json_pack("{s:s, s:s, s:[s,s], s:b}", "t", "ready", "arch", "tokenizer", "tasks", "tokenize",
				    "detokenize", "chat_template", 0));
		return 0;
	}
	const ms_config *c = ms_model_config(model);
	json_t *tasks = json_array();
	int causal = c->arch == MS_ARCH_LLAMA || c->arch == MS_ARCH_GPT2;
	if (causal) json_array_append_new(tasks, json_string("generate"));
	if (causal) json_array_append_new(tasks, json_string("logits"));
	if (causal && can_chat()) json_array_append_new(tasks, json_string("chat"));
	if (c->has_classifier) json_array_append_new(tasks, json_string("classify"));
	if (!causal) json_array_append_new(tasks, json_string("embed"));
	if (tokenizer()) {
		json_array_append_new(tasks, json_string("tokenize"));
		json_array_append_new(tasks, json_string("detokenize"));
	}
	send_json(json_pack("{s:s, s:s, s:o, s:b, s:i}", "t", "ready", "arch", arch_short(c->arch), "tasks", tasks,
			    "chat_template", causal && can_chat(), "threads", ms_model_threads(model)));
	return 0;
}

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--fd") && i + 1 < argc) {
			sock_fd = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: moonspace-modelworker --fd N\n");
			return 2;
		}
	}
	/* the lock-down sets RLIMIT_FSIZE 0: a log line to a stderr that is a regular file
	 * must fail (EFBIG), not kill the worker */
	signal(SIGXFSZ, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	if (init() != 0) { /* _exit: a leak check at exit would make calls the lock-down forbids */
		fflush(stderr);
		_exit(1);
	}
	ms_gen **gens = malloc(MAX_REQS * sizeof *gens);
	for (;;) {
		pthread_mutex_lock(&mu);
		while (!q_head && !reader_eof && n_active == 0) pthread_cond_wait(&cv, &mu);
		msg_node *batch = q_head;
		q_head = q_tail = NULL;
		int eof = reader_eof;
		pthread_mutex_unlock(&mu);
		while (batch) {
			msg_node *next = batch->next;
			handle(batch->msg);
			json_decref(batch->msg);
			free(batch);
			batch = next;
		}
		if (eof) break;
		atomic_store(&batch_cancel, 0);
		reap();
		int k = 0;
		for (int i = 0; i < n_active; i++) gens[k++] = active[i]->g;
		int rc = k > 0 ? ms_gen_step_batch(gens, (size_t)k, &batch_cancel) : 0;
		if (rc != 0 && rc != MS_ECANCELED) /* e.g. out of memory: fail everything in flight */
			for (int i = 0; i < n_active; i++) {
				send_error(active[i]->id, ms_strerror(rc));
				atomic_store(&active[i]->cancel, 2);
			}
		reap();
	}
	/* the host closed the socket: nothing in flight matters any more. _exit without
	 * joining threads (see the reader) */
	free(gens);
	fflush(stderr);
	_exit(0);
}
