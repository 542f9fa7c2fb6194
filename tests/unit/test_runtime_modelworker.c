/* tests/unit/test_runtime_modelworker.c: bin/moonspace-modelworker over a socketpair,
 * speaking the host ⇄ model worker protocol: init, concurrent batched generations equal to
 * running each alone, cancel, quick ops, exit on EOF. */
#include <jansson.h>
#include <grp.h>
#include <sys/socket.h>

#include "runtime/model.h"
#include "sandbox/frame.h"
#include "tests/testlib.h"

TEST_SUITE("runtime_modelworker")

typedef struct { int fd; pid_t pid; } worker;

static worker spawn_worker(void) {
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	char path[4096];
	snprintf(path, sizeof path, "%s/moonspace-modelworker", test_bin_dir());
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(sv[0]); /* first: it may be fd 3 itself */
		if (sv[1] != 3) {
			dup2(sv[1], 3);
			close(sv[1]);
		}
		/* the worker locks itself down and refuses uid 0: run it as the host would */
		if (getuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)) _exit(126);
		execl(path, path, "--fd", "3", (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	return (worker){sv[0], pid};
}

static void send_msg(worker *w, json_t *m) {
	CHECK_INT(ms_frame_write_json_fd(w->fd, m), 0);
	json_decref(m);
}

static json_t *recv_msg(worker *w) {
	json_t *m = NULL;
	int rc = ms_frame_read_json_fd(w->fd, &m, MS_FRAME_MAX_DEFAULT);
	CHECK_MSG(rc == 0, "reading from the worker: %s", ms_strerror(rc));
	return m;
}

static void stop_worker(worker *w) {
	close(w->fd);
	int st;
	CHECK(waitpid(w->pid, &st, 0) == w->pid);
	CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker status %d", st);
}

static json_t *start(worker *w, const char *rel) {
	*w = spawn_worker();
	send_msg(w, json_pack("{s:s, s:s, s:i}", "t", "init", "path", fixture_path(rel), "threads", 2));
	json_t *r = recv_msg(w);
	CHECK_STR(json_string_value(json_object_get(r, "t")), "ready");
	return r;
}

TEST(init_error_names_path) {
	worker w = spawn_worker();
	send_msg(&w, json_pack("{s:s, s:s}", "t", "init", "path", "/nonexistent/model-dir"));
	json_t *r = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(r, "t")), "init_error");
	CHECK(strstr(json_string_value(json_object_get(r, "message")), "/nonexistent/model-dir"));
	json_decref(r);
	int st;
	CHECK(waitpid(w.pid, &st, 0) == w.pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	close(w.fd);
}

static json_t *ids_json(const int32_t *ids, size_t n) {
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
	return a;
}

/* The value of `key` in /proc/PID/FILE ("Seccomp:\t2"), or "" */
static void proc_field(pid_t pid, const char *file, const char *key, char *out, size_t len) {
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
	FILE *f = fopen(path, "r");
	CHECK_MSG(f, "%s: %s", path, strerror(errno));
	out[0] = 0;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl)) {
			char *v = line + kl;
			while (*v == ' ' || *v == '\t' || *v == ':') v++;
			snprintf(out, len, "%s", v);
			out[strcspn(out, "\n")] = 0;
			break;
		}
	fclose(f);
}

/* Serving, the worker is locked down and sealed: no new privileges, the seccomp filters of
 * ms_isolate_apply and ms_isolate_seal, no file writes, no core dumps, and not root. */
TEST(serving_worker_is_isolated) {
	worker w;
	json_decref(start(&w, "models/stories260K"));
	char v[256];
	proc_field(w.pid, "status", "NoNewPrivs", v, sizeof v);
	CHECK_STR(v, "1");
	proc_field(w.pid, "status", "Seccomp", v, sizeof v);
	CHECK_STR(v, "2");
	proc_field(w.pid, "status", "Seccomp_filters", v, sizeof v);
	if (v[0]) CHECK_MSG(atoi(v) >= 2, "Seccomp_filters %s: the seal is missing", v);
	proc_field(w.pid, "status", "Uid", v, sizeof v);
	CHECK_MSG(atoi(v) != 0, "runs as uid %s", v);
	proc_field(w.pid, "limits", "Max file size", v, sizeof v);
	CHECK_MSG(!strncmp(v, "0 ", 2), "Max file size %s", v);
	proc_field(w.pid, "limits", "Max core file size", v, sizeof v);
	CHECK_MSG(!strncmp(v, "0 ", 2), "Max core file size %s", v);
	/* and still serves */
	int32_t p[] = {1};
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:o, s:i, s:f}}", "t", "req", "req", 1, "op", "generate", "args",
			       "prompt_ids", ids_json(p, 1), "max_new_tokens", 4, "temperature", 0.0));
	json_t *m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(m, "t")), "result");
	CHECK_INT(json_array_size(json_object_get(m, "result")), 4);
	json_decref(m);
	stop_worker(&w);
}


TEST(concurrent_generations_match_single) {
	worker w;
	json_t *ready = start(&w, "models/stories260K");
	CHECK_STR(json_string_value(json_object_get(ready, "arch")), "llama");
	json_decref(ready);
	enum { N = 5, NEW = 24 };
	int32_t prompts[N][3] = {{1, 403, 407}, {1, 300, 301}, {1, 42, 43}, {1, 403, 407}, {1, 261, 378}};
	for (int i = 0; i < N; i++)
		send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:o, s:i, s:f}}", "t", "req", "req", 100 + i, "op", "generate", "args",
				       "prompt_ids", ids_json(prompts[i], 3), "max_new_tokens", NEW, "temperature", 0.0));
	json_t *results[N] = {0};
	for (int got = 0; got < N;) {
		json_t *m = recv_msg(&w);
		const char *t = json_string_value(json_object_get(m, "t"));
		int id = (int)json_integer_value(json_object_get(m, "req")) - 100;
		CHECK_MSG(t && strcmp(t, "result") == 0, "unexpected frame %s", json_dumps(m, 0));
		CHECK(id >= 0 && id < N && !results[id]);
		results[id] = json_incref(json_object_get(m, "result"));
		json_decref(m);
		got++;
	}
	ms_model *m;
	char err[512];
	ms_model_opts mo = {.n_threads = 1};
	CHECK_INT(ms_model_load(fixture_path("models/stories260K"), &mo, &m, err, sizeof err), 0);
	for (int i = 0; i < N; i++) {
		ms_gen_opts o;
		ms_gen_opts_init(&o);
		o.temperature = 0, o.max_new_tokens = NEW;
		int32_t *out;
		size_t n;
		CHECK_INT(ms_model_generate_ids(m, prompts[i], 3, &o, NULL, NULL, &out, &n, NULL), 0);
		CHECK_INT(json_array_size(results[i]), n);
		for (size_t k = 0; k < n; k++) CHECK_INT(json_integer_value(json_array_get(results[i], k)), out[k]);
		free(out);
		json_decref(results[i]);
	}
	ms_model_free(m);
	stop_worker(&w);
}

TEST(cancel_ends_request) {
	worker w;
	json_decref(start(&w, "models/stories260K"));
	int32_t p[] = {1};
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:o, s:i, s:f}}", "t", "req", "req", 7, "op", "generate", "args",
			       "prompt_ids", ids_json(p, 1), "max_new_tokens", 500, "temperature", 0.0));
	/* (greedy from BOS runs 200+ tokens without an EOS: it cannot finish before the cancel) */
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:o, s:i, s:f}}", "t", "req", "req", 8, "op", "generate", "args",
			       "prompt_ids", ids_json(p, 1), "max_new_tokens", 5, "temperature", 0.0));
	send_msg(&w, json_pack("{s:s, s:i}", "t", "cancel", "req", 7));
	int seen7 = 0, seen8 = 0;
	while (!seen7 || !seen8) {
		json_t *m = recv_msg(&w);
		int id = (int)json_integer_value(json_object_get(m, "req"));
		const char *t = json_string_value(json_object_get(m, "t"));
		if (id == 7) {
			CHECK_STR(t, "error");
			CHECK_STR(json_string_value(json_object_get(m, "message")), "cancelled");
			seen7 = 1;
		} else {
			CHECK_INT(id, 8);
			CHECK_STR(t, "result");
			/* the cancel aborted a batched step that 8 was part of: 8 carries on exactly
			 * (greedy_ids_n200_bos.txt starts 1 403 407 261 378 432) */
			json_t *want = json_pack("[i,i,i,i,i]", 403, 407, 261, 378, 432);
			CHECK_MSG(json_equal(json_object_get(m, "result"), want), "req 8: %s", json_dumps(m, 0));
			json_decref(want);
			seen8 = 1;
		}
		json_decref(m);
	}
	/* bad requests get errors, and the worker keeps serving */
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{}}", "t", "req", "req", 9, "op", "frobnicate", "args"));
	json_t *m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(m, "t")), "error");
	CHECK_INT(json_integer_value(json_object_get(m, "req")), 9);
	json_decref(m);
	int32_t bad[] = {1, 99999};
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:o}}", "t", "req", "req", 10, "op", "generate", "args", "prompt_ids",
			       ids_json(bad, 2)));
	m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(m, "t")), "error");
	json_decref(m);
	/* a stop that is not a string or a list of strings is an error, not ignored */
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[i], s:i, s:[i]}}", "t", "req", "req", 14, "op", "generate", "args",
			       "prompt_ids", 1, "max_new_tokens", 2, "stop", 5));
	m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(m, "t")), "error");
	CHECK(strstr(json_string_value(json_object_get(m, "message")), "stop"));
	json_decref(m);
	/* a mistyped option, a wrong type, a number beyond int: errors that name the option */
	static const char *const bad_opts[][2] = {
		{"{\"max_tokens\": 5}", "max_tokens"}, {"{\"temperature\": \"hot\"}", "temperature"},
		{"{\"max_new_tokens\": 1e12}", "max_new_tokens"}, {"{\"top_k\": 2.5}", "top_k"},
		{"{\"seed\": -1}", "seed"}, {"{\"top_p\": 1.5}", "top_p"}};
	for (size_t i = 0; i < MS_ARRAY_LEN(bad_opts); i++) {
		json_t *args = json_loads(bad_opts[i][0], 0, NULL);
		json_object_set_new(args, "prompt_ids", json_pack("[i]", 1));
		send_msg(&w, json_pack("{s:s, s:i, s:s, s:o}", "t", "req", "req", 20, "op", "generate", "args", args));
		m = recv_msg(&w);
		CHECK_MSG(!strcmp(json_string_value(json_object_get(m, "t")), "error") &&
				  strstr(json_string_value(json_object_get(m, "message")), bad_opts[i][1]),
			  "%s: %s", bad_opts[i][0], json_dumps(m, 0));
		json_decref(m);
	}
	/* 2^32 + 1 is not token 1, and "x" is not token 0 */
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[i,I], s:i}}", "t", "req", "req", 11, "op", "generate", "args",
			       "prompt_ids", 1, ((json_int_t)1 << 32) + 1, "max_new_tokens", 2));
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[i,s], s:i}}", "t", "req", "req", 12, "op", "generate", "args",
			       "prompt_ids", 1, "x", "max_new_tokens", 2));
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[i,s]}}", "t", "req", "req", 13, "op", "logits", "args", "ids", 1, "x"));
	for (int i = 11; i <= 13; i++) {
		m = recv_msg(&w);
		CHECK_MSG(!strcmp(json_string_value(json_object_get(m, "t")), "error"), "req %d: %s", i, json_dumps(m, 0));
		CHECK_INT(json_integer_value(json_object_get(m, "req")), i);
		json_decref(m);
	}
	stop_worker(&w);
}

TEST(classify_embed_ops) {
	worker w;
	json_t *ready = start(&w, "models/tiny-bert-cls");
	CHECK_STR(json_string_value(json_object_get(ready, "arch")), "bert");
	int has_tok = 0;
	json_t *tasks = json_object_get(ready, "tasks"), *v;
	size_t i;
	json_array_foreach(tasks, i, v) has_tok |= strcmp(json_string_value(v), "tokenize") == 0;
	json_decref(ready);
	if (!has_tok) {
		stop_worker(&w);
		SKIP("runtime built without runtime/tokenizer.c");
	}
	json_error_t je;
	json_t *ref = json_load_file(fixture_path("models/tiny-bert-cls/reference.json"), 0, &je);
	json_t *s0 = json_array_get(json_object_get(ref, "sentences"), 0);
	const char *text = json_string_value(json_object_get(s0, "text"));
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:s}}", "t", "req", "req", 1, "op", "classify", "args", "text", text));
	json_t *m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(m, "result"), 0), "label")),
		  json_string_value(json_object_get(s0, "predicted_label")));
	json_decref(m);
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:s}}", "t", "req", "req", 2, "op", "embed", "args", "text", text));
	m = recv_msg(&w);
	json_t *want = json_object_get(s0, "embedding_mean_pooled_l2"), *got = json_object_get(m, "result");
	CHECK_INT(json_array_size(got), json_array_size(want));
	for (size_t k = 0; k < json_array_size(want); k++)
		CHECK_NEAR(json_number_value(json_array_get(got, k)), json_number_value(json_array_get(want, k)), 1e-4);
	json_decref(m);
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:s}}", "t", "req", "req", 3, "op", "tokenize", "args", "text", text));
	m = recv_msg(&w);
	CHECK(json_equal(json_object_get(m, "result"), json_object_get(s0, "input_ids")));
	json_decref(m);
	json_decref(ref);
	stop_worker(&w);
}

/* chat renders the messages through the checkpoint's chat template: stories260K with a
 * minimal template gives the same continuation as generate on the same text. */
TEST(chat_uses_template) {
	char fx[4096];
	CHECK(realpath(fixture_path("models/stories260K"), fx));
	char tmp[] = "/tmp/ms-chat-XXXXXX", cmd[16384], path[512];
	CHECK(mkdtemp(tmp));
	CHECK(chmod(tmp, 0755) == 0); /* readable by the worker's uid */
	snprintf(cmd, sizeof cmd, "ln -s %s/config.json %s/model.safetensors %s/tokenizer.json %s/", fx, fx, fx, tmp);
	CHECK_INT(system(cmd), 0);
	snprintf(path, sizeof path, "%s/tokenizer_config.json", tmp);
	FILE *f = fopen(path, "w");
	CHECK(f);
	fchmod(fileno(f), 0644);
	fputs("{\"bos_token\":\"<s>\",\"eos_token\":\"</s>\",\"add_bos_token\":true,"
	      "\"chat_template\":\"{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}\"}", f);
	fclose(f);
	worker w = spawn_worker();
	send_msg(&w, json_pack("{s:s, s:s}", "t", "init", "path", tmp));
	json_t *ready = recv_msg(&w);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	CHECK_INT(system(cmd), 0);
	CHECK_STR(json_string_value(json_object_get(ready, "t")), "ready");
	int has_chat = json_is_true(json_object_get(ready, "chat_template"));
	json_decref(ready);
	if (!has_chat) {
		stop_worker(&w);
		SKIP("runtime built without runtime/jinja.c");
	}
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[{s:s, s:s}], s:i, s:f}}", "t", "req", "req", 1, "op", "chat", "args",
			       "messages", "role", "user", "content", "Once upon a time", "max_new_tokens", 20, "temperature", 0.0));
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:s, s:i, s:f}}", "t", "req", "req", 2, "op", "generate", "args",
			       "prompt", "Once upon a time", "max_new_tokens", 20, "temperature", 0.0));
	char *res[3] = {0};
	ms_buf pieces[3];
	ms_buf_init(&pieces[1]);
	ms_buf_init(&pieces[2]);
	while (!res[1] || !res[2]) {
		json_t *m = recv_msg(&w);
		int id = (int)json_integer_value(json_object_get(m, "req"));
		const char *t = json_string_value(json_object_get(m, "t"));
		CHECK(id == 1 || id == 2);
		if (strcmp(t, "piece") == 0) {
			ms_buf_puts(&pieces[id], json_string_value(json_object_get(m, "text")));
		} else {
			CHECK_MSG(strcmp(t, "result") == 0, "req %d: %s", id, json_string_value(json_object_get(m, "message")));
			res[id] = strdup(json_string_value(json_object_get(m, "result")));
		}
		json_decref(m);
	}
	CHECK(strlen(res[1]) > 20);
	CHECK_STR(res[1], res[2]);
	CHECK_STR(pieces[1].data, res[1]); /* the pieces add up to the result */
	free(res[1]);
	free(res[2]);
	ms_buf_free(&pieces[1]);
	ms_buf_free(&pieces[2]);
	stop_worker(&w);
}

/* A text longer than the model's positions is truncated as transformers' pipelines do
 * (the last [SEP] kept), the same in the worker as in the runtime's own classify / embed. */
TEST(long_text_truncated_like_the_runtime) {
	worker w;
	json_t *ready = start(&w, "models/tiny-bert-cls");
	json_decref(ready);
	ms_buf text;
	ms_buf_init(&text);
	for (int i = 0; i < 700; i++) ms_buf_puts(&text, i % 7 ? "good " : "terrible ");
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:s}}", "t", "req", "req", 1, "op", "classify", "args", "text", text.data));
	json_t *cm = recv_msg(&w);
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:s}}", "t", "req", "req", 2, "op", "embed", "args", "text", text.data));
	json_t *em = recv_msg(&w);
	stop_worker(&w);
	ms_model *m;
	char err[512];
	CHECK_INT(ms_model_load(fixture_path("models/tiny-bert-cls"), NULL, &m, err, sizeof err), 0);
	ms_label_score *ls;
	size_t nl, dim;
	CHECK_INT(ms_model_classify(m, text.data, &ls, &nl, err, sizeof err), 0);
	json_t *got = json_object_get(cm, "result");
	CHECK_MSG(json_array_size(got) == nl, "classify: %s", json_dumps(cm, 0));
	for (size_t i = 0; i < nl; i++) {
		CHECK_STR(json_string_value(json_object_get(json_array_get(got, i), "label")), ls[i].label);
		CHECK_NEAR(json_number_value(json_object_get(json_array_get(got, i), "score")), ls[i].score, 1e-6);
	}
	float *vec;
	CHECK_INT(ms_model_embed(m, text.data, &vec, &dim, err, sizeof err), 0);
	got = json_object_get(em, "result");
	CHECK_MSG(json_array_size(got) == dim, "embed: %s", json_dumps(em, 0));
	for (size_t i = 0; i < dim; i++) CHECK_NEAR(json_number_value(json_array_get(got, i)), vec[i], 1e-6);
	free(vec);
	free(ls);
	ms_model_free(m);
	json_decref(cm);
	json_decref(em);
	ms_buf_free(&text);
}

/* detokenize: ids that are not integers are an error, not token 0 */
TEST(detokenize_checks_ids) {
	worker w;
	json_decref(start(&w, "models/tiny-bert-cls"));
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[i,i,i,i]}}", "t", "req", "req", 1, "op", "detokenize", "args", "ids",
			       101, 7592, 2088, 102));
	json_t *m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(m, "result")), "hello world");
	json_decref(m);
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[i,i,i,i], s:b}}", "t", "req", "req", 4, "op", "detokenize", "args", "ids",
			       101, 7592, 2088, 102, "special", 1));
	m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(m, "result")), "[CLS] hello world [SEP]");
	json_decref(m);
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[i,s]}}", "t", "req", "req", 2, "op", "detokenize", "args", "ids", 7592,
			       "x"));
	m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(m, "t")), "error");
	CHECK(strstr(json_string_value(json_object_get(m, "message")), "integer"));
	json_decref(m);
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:[I]}}", "t", "req", "req", 3, "op", "detokenize", "args", "ids",
			       (json_int_t)1 << 33));
	m = recv_msg(&w);
	CHECK_STR(json_string_value(json_object_get(m, "t")), "error");
	json_decref(m);
	stop_worker(&w);
}

/* "stop" as one string, as transformers' stop_strings takes it: the text ends before it */
TEST(stop_as_one_string) {
	worker w;
	json_decref(start(&w, "models/stories260K"));
	send_msg(&w, json_pack("{s:s, s:i, s:s, s:{s:s, s:i, s:f, s:s, s:n}}", "t", "req", "req", 1, "op", "generate", "args",
			       "prompt", "Once upon a time", "max_new_tokens", 60, "temperature", 0.0, "stop", "Lily", "seed"));
	/* (and null is an option's default, as the protocol writes "seed": null) */
	for (;;) {
		json_t *m = recv_msg(&w);
		const char *t = json_string_value(json_object_get(m, "t"));
		if (!strcmp(t, "piece")) {
			json_decref(m);
			continue;
		}
		CHECK_MSG(!strcmp(t, "result"), "%s", json_dumps(m, 0));
		CHECK_STR(json_string_value(json_object_get(m, "result")), ", there was a little girl named ");
		json_decref(m);
		break;
	}
	stop_worker(&w);
}

/* One generate request with prompt_ids [1] (BOS) and the options in opts (taken); the
 * result's ids as "a b c" text, or the error message prefixed "error: ". */
static char *generate_bos(worker *w, int id, json_t *opts) {
	json_object_set_new(opts, "prompt_ids", json_pack("[i]", 1));
	send_msg(w, json_pack("{s:s, s:i, s:s, s:o}", "t", "req", "req", id, "op", "generate", "args", opts));
	json_t *m = recv_msg(w);
	CHECK_INT(json_integer_value(json_object_get(m, "req")), id);
	ms_buf b;
	ms_buf_init(&b);
	json_t *r = json_object_get(m, "result");
	if (!json_is_array(r)) ms_buf_printf(&b, "error: %s", json_string_value(json_object_get(m, "message")));
	for (size_t i = 0; i < json_array_size(r); i++)
		ms_buf_printf(&b, "%s%lld", i ? " " : "", (long long)json_integer_value(json_array_get(r, i)));
	json_decref(m);
	char *s = strdup(b.data ? b.data : "");
	ms_buf_free(&b);
	return s;
}

/* The worker takes generation_config.json's defaults for options a request leaves out
 * (greedy, 4 tokens), a request's own options win, and any id of the eos list ends the
 * generation (383, the third, is the 6th greedy token after BOS: 403 407 261 378 432 383). */
TEST(generation_config_and_eos_list) {
	char dir[64];
	test_stories_ckpt(dir, "[2, 500, 383]", "{\"do_sample\": false, \"max_new_tokens\": 4, \"max_length\": 3}");
	worker w = spawn_worker();
	send_msg(&w, json_pack("{s:s, s:s}", "t", "init", "path", dir));
	json_t *ready = recv_msg(&w);
	test_rm_rf(dir);
	CHECK_MSG(!strcmp(json_string_value(json_object_get(ready, "t")), "ready"), "%s", json_dumps(ready, 0));
	json_decref(ready);
	char *r = generate_bos(&w, 1, json_object());
	CHECK_STR(r, "403 407 261 378");
	free(r);
	r = generate_bos(&w, 2, json_pack("{s:i}", "max_new_tokens", 10));
	CHECK_STR(r, "403 407 261 378 432");
	free(r);
	r = generate_bos(&w, 3, json_pack("{s:n, s:n}", "max_new_tokens", "temperature")); /* null: the defaults */
	CHECK_STR(r, "403 407 261 378");
	free(r);
	r = generate_bos(&w, 4, json_pack("{s:i, s:f, s:f, s:i}", "max_new_tokens", 10, "temperature", 1.5, "top_p", 1.0,
					  "seed", 5));
	CHECK_MSG(strncmp(r, "403 407 261 378", 15) != 0, "sampled run gave the greedy ids: %s", r);
	free(r);
	stop_worker(&w);
}
