/* tests/sandbox/test_sandbox_worker.c: the app worker over its socket, as the host drives
 * it: the hello app, component formats, streaming, errors, state, the _G list,
 * model calls relayed by a fake host, cancel. */
#include "tests/testlib.h"
#include "tests/sandbox/worker_harness.h"

TEST_SUITE("sandbox_worker")

static char bin[4096];

static json_t *start(wk *w, const char *src, int mem, double tmo, json_t *models) {
	snprintf(bin, sizeof bin, "%s/moonspace-appworker", test_bin_dir());
	CHECK(wk_spawn(w, bin) == 0);
	json_t *r = wk_init(w, wk_files1(src), mem, tmo, models);
	wk_drain_log(w);
	CHECK_MSG(r != NULL, "no answer to init; log: %s", w->log.data ? w->log.data : "");
	return r;
}

static json_t *start_ok(wk *w, const char *src) {
	json_t *r = start(w, src, 64, 5, NULL);
	CHECK_MSG(!strcmp(wk_type(r), "ready"), "expected ready, got %s (log %s)", json_dumps(r, 0), w->log.data ? w->log.data : "");
	return r;
}

static char *dump(json_t *j) { return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS); }
/* compares JSON values, whatever the key order */
#define CHECK_JSON(j, expect)                                                              \
	do {                                                                               \
		json_t *e_ = json_loads(expect, JSON_DECODE_ANY, NULL);                    \
		CHECK_MSG(e_ && json_equal(j, e_), "%s == %s, expected %s", #j, dump(j), expect); \
	} while (0)

static const char hello[] =
	"app.interface{\n"
	"  fn = function(name, intensity)\n"
	"    return \"Hello, \" .. name .. (\"!\"):rep(intensity)\n"
	"  end,\n"
	"  inputs = { \"text\", ui.slider{minimum = 1, maximum = 10, value = 2, step = 1, label = \"Intensity\"} },\n"
	"  outputs = \"text\",\n"
	"  examples = { {\"World\", 3} },\n"
	"}\n";

TEST(hello_app) {
	wk w;
	json_t *r = start_ok(&w, hello);
	json_t *ep = json_array_get(json_object_get(r, "endpoints"), 0);
	CHECK_STR(json_string_value(json_object_get(ep, "api_name")), "predict");
	CHECK_JSON((json_object_get(ep, "params")), "[\"name\",\"intensity\"]");
	CHECK_JSON(json_object_get(ep, "inputs"),
		  "[{\"type\":\"textbox\",\"props\":{\"label\":\"name\"}},{\"type\":\"slider\",\"props\":{\"minimum\":1,\"maximum\":10,\"value\":2,\"step\":1,\"label\":\"Intensity\"}}]");
	CHECK_JSON((json_object_get(ep, "outputs")), "[{\"type\":\"textbox\",\"props\":{\"label\":\"output\"}}]");
	CHECK_JSON((json_object_get(ep, "examples")), "[[\"World\",3]]");
	CHECK(json_is_false(json_object_get(ep, "stream")));
	json_t *d = wk_call(&w, 1, "predict", json_pack("[s,i]", "World", 3), 5, NULL);
	CHECK_STR(wk_type(d), "done");
	CHECK_JSON((json_object_get(d, "data")), "[\"Hello, World!!!\"]");
	d = wk_call(&w, 2, "predict", json_pack("[s,f]", "Lua", 2.0), 5, NULL);
	CHECK_JSON((json_object_get(d, "data")), "[\"Hello, Lua!!\"]");
	wk_free(&w);
}
