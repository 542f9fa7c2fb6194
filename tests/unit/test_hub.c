/* tests/unit/test_hub.c: the Hub cache layout, the environment, and the async client
 * against the mirror in the same process and loop (loopback, ephemeral port). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/http.h"
#include "host/hub.h"
#include "runtime/modeldir.h"
#include "tests/testlib.h"

TEST_SUITE("hub")

static char tmp[64];

static void mk_tmp(void) {
	snprintf(tmp, sizeof tmp, "/tmp/ms_hub_XXXXXX");
	CHECK(mkdtemp(tmp) != NULL);
}

static void rm_tmp(void) {
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	if (system(cmd)) {}
}

static void write_file(const char *path, const void *data, size_t len) {
	char dir[1024];
	snprintf(dir, sizeof dir, "%s", path);
	*strrchr(dir, '/') = 0;
	char cmd[1200];
	snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
	CHECK(system(cmd) == 0);
	FILE *f = fopen(path, "wb");
	CHECK(f != NULL);
	CHECK(fwrite(data, 1, len, f) == len);
	fclose(f);
}

static char *slurp(const char *path) {
	size_t n;
	return test_read_file(path, &n);
}

TEST(repo_names_and_folders) {
	char out[256];
	CHECK_INT(ms_hub_repo_folder("google-bert/bert-base-uncased", out, sizeof out), 0);
	CHECK_STR(out, "models--google-bert--bert-base-uncased");
	CHECK(ms_hub_valid_repo("org/name.v2_x"));
	CHECK(!ms_hub_valid_repo("noslash"));
	CHECK(!ms_hub_valid_repo("a/b/c"));
	CHECK(!ms_hub_valid_repo("../etc"));
	CHECK(!ms_hub_valid_repo("org/..x"));
	CHECK(!ms_hub_valid_repo("org/na--me")); /* would make an ambiguous folder name */
	CHECK(ms_hub_is_commit("0123456789abcdef0123456789abcdef01234567"));
	CHECK(!ms_hub_is_commit("main"));
	CHECK(!ms_hub_is_commit("0123456789ABCDEF0123456789abcdef01234567"));
}

TEST(layout_links_refs_markers_tag) {
	mk_tmp();
	char cache[128];
	snprintf(cache, sizeof cache, "%s/hub", tmp);
	const char *commit = "89abcdef0123456789abcdef0123456789abcdef";
	CHECK_INT(ms_hub_cache_init(cache), 0);
	char p[512];
	snprintf(p, sizeof p, "%s/CACHEDIR.TAG", cache);
	char *tag = slurp(p);
	CHECK_STR(tag, "Signature: 8a477f597d28d172789f06886806bc55\n"
		       "# This file is a cache directory tag created by huggingface_hub.\n"
		       "# For information about cache directory tags, see:\n"
		       "#\thttps://bford.info/cachedir/\n");
	free(tag);
	CHECK_INT(ms_hub_cache_link(cache, "org/name", commit, "a/b/c.txt", "e1"), 0);
	CHECK_INT(ms_hub_cache_link(cache, "org/name", commit, "top.json", "e2"), 0);
	char target[256];
	snprintf(p, sizeof p, "%s/models--org--name/snapshots/%s/a/b/c.txt", cache, commit);
	ssize_t n = readlink(p, target, sizeof target - 1);
	CHECK(n > 0);
	target[n] = 0;
	CHECK_STR(target, "../../../../blobs/e1");
	snprintf(p, sizeof p, "%s/models--org--name/snapshots/%s/top.json", cache, commit);
	n = readlink(p, target, sizeof target - 1);
	CHECK(n > 0);
	target[n] = 0;
	CHECK_STR(target, "../../blobs/e2");
	CHECK(ms_hub_cache_link(cache, "org/name", commit, "../escape", "e") != 0);
	CHECK(ms_hub_cache_link(cache, "org/name", commit, "x", "../e") != 0);

	/* refs: the bare commit, no newline; a commit revision writes nothing */
	CHECK_INT(ms_hub_cache_write_ref(cache, "org/name", "refs/pr/1", commit), 0);
	snprintf(p, sizeof p, "%s/models--org--name/refs/refs/pr/1", cache);
	char *ref = slurp(p);
	CHECK_STR(ref, commit);
	free(ref);
	CHECK_INT(ms_hub_cache_write_ref(cache, "org/name", commit, commit), 0);
	snprintf(p, sizeof p, "%s/models--org--name/refs/%s", cache, commit);
	CHECK(access(p, F_OK) != 0);
	char got[41];
	CHECK_INT(ms_hub_cache_commit(cache, "org/name", "refs/pr/1", got), 0);
	CHECK_STR(got, commit);
	CHECK_INT(ms_hub_cache_commit(cache, "org/name", commit, got), 0);
	CHECK_INT(ms_hub_cache_commit(cache, "org/name", "main", got), MS_ENOENT);

	CHECK_INT(ms_hub_cache_mark_missing(cache, "org/name", commit, "sub/none.bin"), 0);
	struct stat st;
	snprintf(p, sizeof p, "%s/models--org--name/.no_exist/%s/sub/none.bin", cache, commit);
	CHECK(stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0);

	ms_buf ls;
	ms_buf_init(&ls);
	CHECK_INT(ms_hub_cache_ls(cache, &ls), 0);
	CHECK_MSG(strstr(ls.data, "org/name") && strstr(ls.data, "refs [refs/pr/1]"), "ls: %s", ls.data);
	ms_buf_free(&ls);
	CHECK_INT(ms_hub_cache_rm(cache, "org/name"), 0);
	CHECK_INT(ms_hub_cache_rm(cache, "org/name"), MS_ENOENT);
	rm_tmp();
}

TEST(environment_as_huggingface_hub_reads_it) {
	mk_tmp();
	char p[256];
	snprintf(p, sizeof p, "%s/token", tmp);
	write_file(p, "  hf_fromfile \n", 15);
	setenv("HF_HOME", tmp, 1);
	unsetenv("HF_HUB_CACHE");
	unsetenv("HF_TOKEN");
	unsetenv("HUGGING_FACE_HUB_TOKEN");
	unsetenv("HF_TOKEN_PATH");
	unsetenv("HF_HUB_DISABLE_IMPLICIT_TOKEN");
	unsetenv("TRANSFORMERS_OFFLINE");
	setenv("HF_ENDPOINT", "http://mirror.local:7860//", 1);
	setenv("HF_HUB_OFFLINE", "TRUE", 1);
	setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2.5", 1);
	ms_hub_env env;
	ms_hub_env_load(&env);
	CHECK_STR(env.endpoint, "http://mirror.local:7860");
	CHECK_STR(env.token, "hf_fromfile");
	CHECK(env.offline);
	CHECK_NEAR(env.timeout_s, 2.5, 1e-9);
	snprintf(p, sizeof p, "%s/hub", tmp);
	CHECK_STR(env.cache, p);
	setenv("HF_TOKEN", "hf_env", 1);
	setenv("HF_HUB_OFFLINE", "0", 1);
	setenv("HF_HUB_CACHE", "/somewhere/else", 1);
	ms_hub_env_load(&env);
	CHECK_STR(env.token, "hf_env");
	CHECK(!env.offline);
	CHECK_STR(env.cache, "/somewhere/else");
	rm_tmp();
}

/* ---- the async client against the in-process mirror ---- */

typedef struct run_state {
	int done_calls, progress_calls, rc, n_files, monotonic, inside_start, ticks;
	uint64_t last_bytes, total;
	char snapshot[1024], error[1024];
} run_state;

static ms_hub_mirror *g_mirror;

static void handler(ms_http_req *req, void *ud) {
	(void)ud;
	char path[2048];
	snprintf(path, sizeof path, "%.*s", (int)strcspn(req->target, "?"), req->target);
	if (ms_hub_mirror_handle(g_mirror, req, path)) ms_http_respond_error(req, 404, "not_found", "no");
}

static void on_progress(const ms_hub_progress *p, void *ud) {
	run_state *s = ud;
	s->progress_calls++;
	if (p->bytes < s->last_bytes) s->monotonic = 0;
	s->last_bytes = p->bytes;
	s->total = p->total;
}

static void on_done(const ms_hub_result *r, void *ud) {
	run_state *s = ud;
	s->done_calls++;
	s->rc = r->rc;
	s->n_files = r->n_files;
	snprintf(s->snapshot, sizeof s->snapshot, "%s", r->snapshot);
	snprintf(s->error, sizeof s->error, "%s", r->error ? r->error : "");
}

static void on_tick(uv_timer_t *t) { ((run_state *)t->data)->ticks++; }

TEST(async_fetch_default_patterns_progress_cancel) {
	mk_tmp();
	char mirror[128], p[2048];
	snprintf(mirror, sizeof mirror, "%s/mirror", tmp);
	size_t wlen = 3u << 20;
	char *w = malloc(wlen);
	for (size_t i = 0; i < wlen; i++) w[i] = (char)(i * 2654435761u >> 13);
	snprintf(p, sizeof p, "%s/org/model/model.safetensors", mirror);
	write_file(p, w, wlen);
	snprintf(p, sizeof p, "%s/org/model/config.json", mirror);
	write_file(p, "{}\n", 3);
	snprintf(p, sizeof p, "%s/org/model/tokenizer.json", mirror);
	write_file(p, "{\"model\":{}}\n", 13);
	snprintf(p, sizeof p, "%s/org/model/flax_model.msgpack", mirror);
	write_file(p, "not wanted", 10);
	snprintf(p, sizeof p, "%s/org/model/pytorch_model.bin", mirror);
	write_file(p, "not wanted", 10);
	free(w);

	uv_loop_t loop;
	uv_loop_init(&loop);
	char *dirs[] = {mirror};
	CHECK_INT(ms_hub_mirror_new(&loop, dirs, 1, NULL, &g_mirror), 0);
	ms_http_limits lim;
	ms_http_limits_default(&lim);
	lim.access_log = 0;
	ms_http_server *srv;
	CHECK_INT(ms_http_server_new(&loop, "127.0.0.1", 0, &lim, handler, NULL, &srv), 0);

	ms_hub_env env;
	memset(&env, 0, sizeof env);
	snprintf(env.endpoint, sizeof env.endpoint, "http://127.0.0.1:%d", ms_http_server_port(srv));
	snprintf(env.cache, sizeof env.cache, "%s/cache", tmp);
	env.timeout_s = 5;
	ms_hub *hub;
	CHECK_INT(ms_hub_new(&loop, &env, NULL, &hub), 0);

	/* a fetch, and a second of the same repo at the same time */
	run_state a = {.monotonic = 1}, b = {.monotonic = 1};
	CHECK_INT(ms_hub_fetch_start(hub, "org/model", NULL, NULL, on_progress, on_done, &a, NULL), 0);
	CHECK_INT(ms_hub_fetch_start(hub, "org/model", "main", NULL, on_progress, on_done, &b, NULL), 0);
	CHECK_INT(a.done_calls + b.done_calls + a.progress_calls, 0); /* never from inside the call */
	uv_timer_t tick;
	uv_timer_init(&loop, &tick);
	tick.data = &a;
	uv_timer_start(&tick, on_tick, 1, 1);
	uint64_t t0 = ms_now_ns();
	while ((a.done_calls == 0 || b.done_calls == 0) && ms_now_ns() - t0 < 20000000000ull) uv_run(&loop, UV_RUN_ONCE);
	uv_timer_stop(&tick);
	CHECK_INT(a.done_calls, 1);
	CHECK_INT(b.done_calls, 1);
	CHECK_MSG(a.rc == 0 && b.rc == 0, "a: %.400s / b: %.400s", a.error, b.error);
	CHECK_INT(a.n_files, 3); /* config, tokenizer, safetensors; not flax nor .bin */
	CHECK(a.progress_calls > 0 && a.monotonic && b.monotonic);
	CHECK_INT(a.last_bytes, a.total);
	CHECK_INT(a.total, (3u << 20) + 3 + 13);
	CHECK_STR(a.snapshot, b.snapshot);
	snprintf(p, sizeof p, "%s/model.safetensors", a.snapshot);
	struct stat st;
	CHECK(stat(p, &st) == 0 && st.st_size == (off_t)(3u << 20));
	snprintf(p, sizeof p, "%s/flax_model.msgpack", a.snapshot);
	CHECK(access(p, F_OK) != 0);
	/* the runtime finds what the client wrote (runtime/modeldir.h) */
	setenv("HF_HUB_CACHE", env.cache, 1);
	char dir[2048], err[512];
	CHECK_MSG(ms_modeldir_resolve("org/model", dir, sizeof dir, err, sizeof err) == 0, "%s", err);
	CHECK_STR(dir, a.snapshot);

	/* a cancelled fetch reports MS_ECANCELED once */
	run_state c = {.monotonic = 1};
	ms_hub_fetch *f;
	CHECK_INT(ms_hub_fetch_start(hub, "org/model", NULL, (const char *const[]){"*", NULL}, on_progress, on_done, &c, &f), 0);
	ms_hub_fetch_cancel(f);
	CHECK_INT(c.done_calls, 1);
	CHECK_INT(c.rc, MS_ECANCELED);
	/* a bad repo id is refused at once */
	CHECK_INT(ms_hub_fetch_start(hub, "no-slash", NULL, NULL, NULL, on_done, &c, NULL), MS_EINVAL);

	/* a fetch still running when the hub is freed is cancelled */
	run_state d = {.monotonic = 1};
	CHECK_INT(ms_hub_fetch_start(hub, "org/model", NULL, (const char *const[]){"*", NULL}, NULL, on_done, &d, NULL), 0);
	ms_hub_free(hub);
	CHECK_INT(d.done_calls, 1);
	CHECK_INT(d.rc, MS_ECANCELED);
	uv_close((uv_handle_t *)&tick, NULL);
	ms_http_server_close(srv);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&loop), 0);
	ms_hub_mirror_free(g_mirror);
	rm_tmp();
}
