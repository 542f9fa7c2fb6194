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

TEST(component_formats) {
	wk w;
	start_ok(&w,
		 "app.interface{ fn = function(n) return 'x', n + 0.5, true, 'B', {cat = 0.75, dog = 0.25},\n"
		 "  {a = {1, 2}, b = 'c'}, '# hi', {{'Paris', 'LOC'}, {' is ', nil}, {token = 'big', class_or_confidence = 0.5}},\n"
		 "  {{role = 'user', content = 'hi'}, {'q', 'a'}}, {'x','y'}, 7 end,\n"
		 "  inputs = {'number'},\n"
		 "  outputs = {'text', 'number', 'checkbox', ui.radio{choices = {'A','B'}}, 'label', 'json', 'markdown',\n"
		 "    'highlightedtext', 'chatbot', ui.dropdown{multiselect = true, choices = {'x','y'}}, ui.number{} } }\n");
	json_t *d = wk_call(&w, 1, "predict", json_pack("[i]", 2), 5, NULL);
	CHECK_MSG(!strcmp(wk_type(d), "done"), "%s", dump(d));
	CHECK_JSON(json_object_get(d, "data"),
		   "[\"x\",2.5,true,\"B\",{\"label\":\"cat\",\"confidences\":[{\"label\":\"cat\",\"confidence\":0.75},{\"label\":\"dog\",\"confidence\":0.25}]},"
		   "{\"a\":[1,2],\"b\":\"c\"},\"# hi\",[{\"token\":\"Paris\",\"class_or_confidence\":\"LOC\"},{\"token\":\" is \",\"class_or_confidence\":null},"
		   "{\"token\":\"big\",\"class_or_confidence\":0.5}],[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"user\",\"content\":\"q\"},"
		   "{\"role\":\"assistant\",\"content\":\"a\"}],[\"x\",\"y\"],7]");
	wk_free(&w);
}

TEST(output_validation) {
	wk w;
	start_ok(&w, "app.interface{ fn = function(x) if x == 'n' then return {} elseif x == 'c' then return 'yes' "
		     "else local t = {} t.self = t return t end end, inputs = 'text', outputs = {'number'} }\n"
		     "app.interface{ api_name = 'cyc', fn = function() local t = {} t.self = t return t end, outputs = 'json' }\n");
	json_t *d = wk_call(&w, 1, "predict", json_pack("[s]", "n"), 5, NULL);
	CHECK_STR(wk_type(d), "error");
	CHECK_STR(json_string_value(json_object_get(d, "kind")), "output");
	d = wk_call(&w, 2, "cyc", json_pack("[]"), 5, NULL);
	CHECK_STR(wk_type(d), "error");
	CHECK_STR(json_string_value(json_object_get(d, "kind")), "output");
	d = wk_call(&w, 3, "nope", json_pack("[]"), 5, NULL);
	CHECK_STR(wk_type(d), "error");
	wk_free(&w);
}

TEST(streaming_yields) {
	wk w;
	json_t *r = start_ok(&w, "app.interface{ fn = function(n) local s = '' for i = 1, n do s = s .. i coroutine.yield(s, i) end return s .. '!', n end,\n"
				 " inputs = 'number', outputs = {'text', 'number'} }\n");
	CHECK(json_is_true(json_object_get(json_array_get(json_object_get(r, "endpoints"), 0), "stream")));
	json_t *all;
	json_t *d = wk_call(&w, 1, "predict", json_pack("[i]", 3), 5, &all);
	CHECK_STR(wk_type(d), "done");
	CHECK_INT(json_array_size(all), 4);
	CHECK_JSON(json_object_get(json_array_get(all, 0), "data"), "[\"1\",1]");
	CHECK_JSON(json_object_get(json_array_get(all, 2), "data"), "[\"123\",3]");
	CHECK_JSON(json_object_get(d, "data"), "[\"123!\",3]");
	wk_free(&w);
}

TEST(errors_logs_progress) {
	wk w;
	start_ok(&w, "app.interface{ fn = function(x) print('hello', 1, {}) progress(0.5) progress(3, 10, 'steps')\n"
		     " if x == 'bad' then error('That name is not allowed') end return x:upper() end, inputs = 'text', outputs = 'text' }\n");
	json_t *all;
	json_t *d = wk_call(&w, 1, "predict", json_pack("[s]", "bad"), 5, &all);
	CHECK_STR(wk_type(d), "error");
	CHECK_STR(json_string_value(json_object_get(d, "kind")), "app");
	CHECK_STR(json_string_value(json_object_get(d, "message")), "That name is not allowed");
	json_t *log = json_array_get(all, 0);
	CHECK_STR(wk_type(log), "log");
	CHECK_STR(json_string_value(json_object_get(log, "line")), "hello\t1\ttable: #1");
	CHECK_STR(wk_type(json_array_get(all, 1)), "progress");
	CHECK_NEAR(json_number_value(json_object_get(json_array_get(all, 1), "progress")), 0.5, 1e-9);
	d = wk_call(&w, 2, "predict", json_pack("[s]", "ok"), 5, NULL);
	CHECK_JSON(json_object_get(d, "data"), "[\"OK\"]");
	wk_free(&w);
	/* a load error is an init_error naming the place */
	json_t *r = start(&w, "local x = = 1", 64, 5, NULL);
	CHECK_STR(wk_type(r), "init_error");
	CHECK(strstr(json_string_value(json_object_get(r, "message")), "app.lua:1:") != NULL);
	wk_free(&w);
}

TEST(state_per_session) {
	wk w;
	start_ok(&w, "app.interface{ fn = function(msg, history) history = history or {} history[#history + 1] = {role = 'user', content = msg}\n"
		     " history[#history + 1] = {role = 'assistant', content = 'echo ' .. msg} return history, history end,\n"
		     " inputs = {'text', ui.state{value = {}}}, outputs = {'chatbot', 'state'} }\n");
	json_t *d = wk_call(&w, 1, "predict", json_pack("[s,n]", "hi"), 5, NULL);
	CHECK_STR(wk_type(d), "done");
	json_t *st = json_array_get(json_object_get(d, "data"), 1);
	CHECK_INT(json_array_size(st), 2);
	d = wk_call(&w, 2, "predict", json_pack("[s,O]", "again", st), 5, NULL);
	CHECK_INT(json_array_size(json_array_get(json_object_get(d, "data"), 0)), 4);
	CHECK_STR(json_string_value(json_object_get(json_array_get(json_array_get(json_object_get(d, "data"), 0), 3), "content")), "echo again");
	wk_free(&w);
}

TEST(globals_allowlist) {
	wk w;
	start_ok(&w, "app.interface{ fn = function() local k = {} for n in pairs(_G) do k[#k + 1] = n end table.sort(k)\n"
		     " local o = {} for n in pairs(os) do o[#o + 1] = n end table.sort(o)\n"
		     " return table.concat(k, ','), table.concat(o, ','), string.dump == nil, tostring(print):match('0x') == nil end,\n"
		     " outputs = {'text', 'text', 'checkbox', 'checkbox'} }\n");
	json_t *d = wk_call(&w, 1, "predict", json_pack("[]"), 5, NULL);
	CHECK_JSON(json_object_get(d, "data"),
		   "[\"_G,_VERSION,app,assert,collectgarbage,coroutine,error,getmetatable,ipairs,load,math,model,next,os,pairs,pcall,"
		   "print,progress,rawequal,rawget,rawlen,rawset,require,select,setmetatable,space,string,table,tonumber,tostring,type,ui,utf8,xpcall\","
		   "\"clock,date,time\",true,true]");
	wk_free(&w);
}

TEST(tampering_is_refused_and_invisible) {
	wk w;
	start_ok(&w, "local n = 0\n"
		     "app.interface{ fn = function(x) n = n + 1 local fails = 0\n"
		     " for _, f in ipairs{function() string.upper = nil end, function() rawset(string, 'upper', nil) end,\n"
		     "   function() getmetatable('').__index = {} end, function() print = nil end, function() _G.string = {} end,\n"
		     "   function() rawset(_G, 'tostring', nil) end, function() table.insert = nil end,\n"
		     "   function() setmetatable({}, {__gc = function() end}) end, function() collectgarbage('stop') end,\n"
		     "   function() return string.format('%p', {}) end, function() load(string.dump(print)) end } do\n"
		     "   if not pcall(f) then fails = fails + 1 end end\n"
		     " return ('abc'):upper() .. string.upper('d') .. fails .. n end, inputs = 'text', outputs = 'text' }\n");
	json_t *d = wk_call(&w, 1, "predict", json_pack("[s]", "x"), 5, NULL);
	CHECK_JSON(json_object_get(d, "data"), "[\"ABCD111\"]");
	d = wk_call(&w, 2, "predict", json_pack("[s]", "x"), 5, NULL);
	CHECK_JSON(json_object_get(d, "data"), "[\"ABCD112\"]");
	wk_free(&w);
}

TEST(require_own_modules) {
	wk w;
	snprintf(bin, sizeof bin, "%s/moonspace-appworker", test_bin_dir());
	CHECK(wk_spawn(&w, bin) == 0);
	json_t *r = wk_init(&w, json_pack("{s:s,s:s}", "app.lua",
		"local u = require('lib.util') app.interface{ fn = function(x) return u.twice(x), (pcall(require, 'io')) end, inputs = 'text', outputs = {'text', 'checkbox'} }",
		"lib/util.lua", "return { twice = function(s) return s .. s end }"), 64, 5, NULL);
	CHECK_STR(wk_type(r), "ready");
	json_t *d = wk_call(&w, 1, "predict", json_pack("[s]", "ab"), 5, NULL);
	CHECK_JSON(json_object_get(d, "data"), "[\"abab\",false]");
	wk_free(&w);
}

TEST(model_calls_through_the_host) {
	wk w;
	json_t *r = start(&w, "local m = model('org/tiny')\n"
			      "app.interface{ fn = function(p) local out = {} for piece in m:generate(p, {max_new_tokens = 4}) do out[#out + 1] = piece coroutine.yield(table.concat(out)) end\n"
			      " local c = m:classify('x') return table.concat(out) .. '|' .. c[1].label .. '|' .. tostring(pcall(model, 'org/other')) end,\n"
			      " inputs = 'text', outputs = 'text' }\n", 64, 5, json_pack("[s]", "org/tiny@abc123"));
	CHECK_STR(wk_type(r), "ready");
	CHECK(wk_send(&w, json_pack("{s:s,s:i,s:s,s:[s],s:s,s:i}", "t", "call", "id", 7, "api_name", "predict", "data", "Once", "session", "s", "seed", 1)) == 0);
	json_t *m = wk_recv(&w, 5);
	CHECK_STR(wk_type(m), "model");
	CHECK_STR(json_string_value(json_object_get(m, "op")), "generate");
	CHECK_STR(json_string_value(json_object_get(json_object_get(m, "args"), "prompt")), "Once");
	CHECK_INT(json_integer_value(json_object_get(json_object_get(m, "args"), "max_new_tokens")), 4);
	int req = (int)json_integer_value(json_object_get(m, "req"));
	wk_send(&w, json_pack("{s:s,s:i,s:s}", "t", "model_piece", "req", req, "text", "Once"));
	wk_send(&w, json_pack("{s:s,s:i,s:s}", "t", "model_piece", "req", req, "text", " upon"));
	wk_send(&w, json_pack("{s:s,s:i,s:s}", "t", "model_result", "req", req, "result", "Once upon"));
	CHECK_STR(wk_type(wk_recv(&w, 5)), "yield");
	CHECK_STR(wk_type(wk_recv(&w, 5)), "yield");
	m = wk_recv(&w, 5);
	CHECK_STR(json_string_value(json_object_get(m, "op")), "classify");
	req = (int)json_integer_value(json_object_get(m, "req"));
	wk_send(&w, json_pack("{s:s,s:i,s:[{s:s,s:f}]}", "t", "model_result", "req", req, "result", "label", "POSITIVE", "score", 0.9));
	m = wk_recv(&w, 5);
	CHECK_STR(wk_type(m), "done");
	CHECK_JSON(json_object_get(m, "data"), "[\"Once upon|POSITIVE|false\"]");
	wk_free(&w);
}

/* Text a Lua app built byte by byte may be invalid UTF-8: its bad bytes reach the model as
 * U+FFFD (as the runtime's tokenizers treat them), not as a call that fails. */
TEST(model_calls_with_invalid_utf8) {
	wk w;
	json_t *r = start(&w, "local m = model('org/tiny')\n"
			      "app.interface{ fn = function(p) local t = m:tokenize('a' .. string.char(255) .. 'b', {special = false})\n"
			      " for piece in m:generate(string.char(0xC3)) do end\n"
			      " return #t .. '|' .. m:classify(string.char(0xE2, 0x82))[1].label end, inputs = 'text', outputs = 'text' }\n",
			  64, 5, json_pack("[s]", "org/tiny"));
	CHECK_STR(wk_type(r), "ready");
	CHECK(wk_send(&w, json_pack("{s:s,s:i,s:s,s:[s],s:s,s:i}", "t", "call", "id", 3, "api_name", "predict", "data", "x", "session", "s", "seed", 1)) == 0);
	json_t *m = wk_recv(&w, 5);
	CHECK_MSG(!strcmp(wk_type(m), "model"), "got %s", json_dumps(m, 0));
	CHECK_STR(json_string_value(json_object_get(json_object_get(m, "args"), "text")), "a\xEF\xBF\xBD" "b");
	CHECK(json_is_false(json_object_get(json_object_get(m, "args"), "special")));
	int req = (int)json_integer_value(json_object_get(m, "req"));
	wk_send(&w, json_pack("{s:s,s:i,s:[i,i,i]}", "t", "model_result", "req", req, "result", 1, 2, 3));
	m = wk_recv(&w, 5);
	CHECK_MSG(!strcmp(wk_type(m), "model"), "got %s", json_dumps(m, 0));
	CHECK_STR(json_string_value(json_object_get(json_object_get(m, "args"), "prompt")), "\xEF\xBF\xBD");
	req = (int)json_integer_value(json_object_get(m, "req"));
	wk_send(&w, json_pack("{s:s,s:i,s:s}", "t", "model_result", "req", req, "result", ""));
	m = wk_recv(&w, 5);
	CHECK_MSG(!strcmp(wk_type(m), "model"), "got %s", json_dumps(m, 0));
	CHECK_STR(json_string_value(json_object_get(json_object_get(m, "args"), "text")), "\xEF\xBF\xBD");
	req = (int)json_integer_value(json_object_get(m, "req"));
	wk_send(&w, json_pack("{s:s,s:i,s:[{s:s,s:f}]}", "t", "model_result", "req", req, "result", "label", "POS", "score", 0.9));
	m = wk_recv(&w, 5);
	CHECK_STR(wk_type(m), "done");
	CHECK_JSON(json_object_get(m, "data"), "[\"3|POS\"]");
	wk_free(&w);
}

TEST(cancel_by_sigqueue) {
	wk w;
	start_ok(&w, "app.interface{ fn = function() while true do pcall(function() while true do end end) end end, outputs = 'text' }\n");
	CHECK(wk_send(&w, json_pack("{s:s,s:i,s:s,s:[],s:s,s:i}", "t", "call", "id", 9, "api_name", "predict", "data", "session", "s", "seed", 1)) == 0);
	usleep(100000);
	union sigval v = {.sival_int = 9};
	CHECK(sigqueue(w.pid, MS_SIG_CANCEL, v) == 0);
	double t0 = wk_now();
	json_t *m = wk_recv(&w, 3);
	CHECK(m != NULL);
	CHECK_STR(wk_type(m), "error");
	CHECK_STR(json_string_value(json_object_get(m, "kind")), "cancelled");
	CHECK(wk_now() - t0 < 2.0); /* prompt (the hook), with slack for a loaded machine */
	json_t *d = wk_call(&w, 10, "predict", json_pack("[]"), 0.5, NULL); /* still serving (and times out again) */
	(void)d;
	wk_free(&w);
}

TEST(cancel_before_the_call_starts) {
	wk w;
	start_ok(&w, "app.interface{ fn = function() return 'ran' end, outputs = 'text' }\n");
	union sigval v = {.sival_int = 4};
	CHECK(sigqueue(w.pid, MS_SIG_CANCEL, v) == 0);
	usleep(50000);
	json_t *d = wk_call(&w, 4, "predict", json_pack("[]"), 5, NULL);
	CHECK_STR(json_string_value(json_object_get(d, "kind")), "cancelled");
	d = wk_call(&w, 5, "predict", json_pack("[]"), 5, NULL);
	CHECK_JSON(json_object_get(d, "data"), "[\"ran\"]");
	wk_free(&w);
}

/* Pipelining (sandbox/PROTOCOL.md): the host may send calls ahead of the running one. A call
 * frame that arrives while the running call waits for a model is kept and run after it, in
 * order; cancels for several calls that have not started are all remembered. */
TEST(calls_sent_ahead_run_in_order) {
	wk w;
	json_t *r = start(&w, "local m = model('org/tiny')\n"
			      "app.interface{ fn = function(p)\n"
			      "  if p == 'model' then return m:classify('x')[1].label end\n"
			      "  return 'echo:' .. p end, inputs = 'text', outputs = 'text' }\n",
			  64, 5, json_pack("[s]", "org/tiny"));
	CHECK_STR(wk_type(r), "ready");
	union sigval v = {.sival_int = 12};
	CHECK(sigqueue(w.pid, MS_SIG_CANCEL, v) == 0); /* 12 and 14 are cancelled before they start */
	v.sival_int = 14;
	CHECK(sigqueue(w.pid, MS_SIG_CANCEL, v) == 0);
	usleep(50000);
	CHECK(wk_send(&w, json_pack("{s:s,s:i,s:s,s:[s],s:s,s:i}", "t", "call", "id", 10, "api_name", "predict", "data", "model", "session", "s", "seed", 1)) == 0);
	json_t *m = wk_recv(&w, 5);
	CHECK_STR(wk_type(m), "model");
	int req = (int)json_integer_value(json_object_get(m, "req"));
	for (int id = 11; id <= 14; id++) { /* sent ahead while call 10 waits for the model */
		char in[16];
		snprintf(in, sizeof in, "c%d", id);
		CHECK(wk_send(&w, json_pack("{s:s,s:i,s:s,s:[s],s:s,s:i}", "t", "call", "id", id, "api_name", "predict", "data", in, "session", "s", "seed", 1)) == 0);
	}
	usleep(50000);
	wk_send(&w, json_pack("{s:s,s:i,s:[{s:s,s:f}]}", "t", "model_result", "req", req, "result", "label", "POS", "score", 0.9));
	const char *want[] = {"done:[\"POS\"]", "done:[\"echo:c11\"]", "error:cancelled", "done:[\"echo:c13\"]", "error:cancelled"};
	for (int i = 0; i < 5; i++) {
		m = wk_recv(&w, 5);
		CHECK(m != NULL);
		CHECK_MSG(json_integer_value(json_object_get(m, "id")) == 10 + i, "answer %d is for call %lld", i,
			  (long long)json_integer_value(json_object_get(m, "id")));
		char got[128];
		if (!strcmp(wk_type(m), "done")) {
			char *d = json_dumps(json_object_get(m, "data"), JSON_COMPACT);
			snprintf(got, sizeof got, "done:%s", d ? d : "?");
			free(d);
		} else {
			snprintf(got, sizeof got, "%s:%s", wk_type(m), json_string_value(json_object_get(m, "kind")));
		}
		CHECK_STR(got, want[i]);
		json_decref(m);
	}
	wk_free(&w);
}

TEST(outputs_read_raw) {
	wk w;
	start_ok(&w, "app.interface{ fn = function() local bad = function() error('boom') end\n"
		     " return setmetatable({a = 1, b = {2, 3}}, {__index = bad, __pairs = bad, __len = bad, __tostring = bad}) end,\n"
		     " outputs = 'json' }\n");
	json_t *d = wk_call(&w, 1, "predict", json_pack("[]"), 5, NULL);
	CHECK_STR(wk_type(d), "done");
	CHECK_JSON(json_object_get(d, "data"), "[{\"a\":1,\"b\":[2,3]}]");
	wk_free(&w);
}

/* The budget's timer is armed lazily (sandbox/sdk.c): a timer armed for an earlier call must
 * not cut a later call short, and the budget must still stop a loop afterwards. Call 2 waits
 * on the (fake) host's model answer past the moment call 1's timer fires. */
TEST(budget_is_per_call_with_a_lazy_timer) {
	wk w;
	json_t *r = start(&w, "local m = model('org/tiny')\n"
			      "app.interface{ fn = function(p)\n"
			      "  if p == 'model' then return m:classify('x')[1].label end\n"
			      "  if p == 'loop' then while true do end end\n"
			      "  return p end, inputs = 'text', outputs = 'text' }\n",
			  64, 1, json_pack("[s]", "org/tiny"));
	CHECK_STR(wk_type(r), "ready");
	json_t *d = wk_call(&w, 1, "predict", json_pack("[s]", "quick"), 5, NULL);
	CHECK_STR(wk_type(d), "done");
	usleep(600000);
	double t0 = wk_now();
	CHECK(wk_send(&w, json_pack("{s:s,s:i,s:s,s:[s],s:s,s:i}", "t", "call", "id", 2, "api_name", "predict", "data", "model", "session", "s", "seed", 1)) == 0);
	json_t *m = wk_recv(&w, 5);
	CHECK_STR(wk_type(m), "model");
	int req = (int)json_integer_value(json_object_get(m, "req"));
	usleep(700000); /* call 1's timer (t1 + 1 s) fires while call 2 waits */
	wk_send(&w, json_pack("{s:s,s:i,s:[{s:s,s:f}]}", "t", "model_result", "req", req, "result", "label", "POS", "score", 0.9));
	m = wk_recv(&w, 5);
	CHECK_MSG(!strcmp(wk_type(m), "done"), "call 2 (%.2f s into a 1 s budget) ended %s", wk_now() - t0, dump(m));
	CHECK_JSON(json_object_get(m, "data"), "[\"POS\"]");
	t0 = wk_now();
	d = wk_call(&w, 3, "predict", json_pack("[s]", "loop"), 5, NULL);
	CHECK_STR(wk_type(d), "error");
	CHECK_STR(json_string_value(json_object_get(d, "kind")), "timeout");
	CHECK(wk_now() - t0 > 0.9 && wk_now() - t0 < 3.0);
	d = wk_call(&w, 4, "predict", json_pack("[s]", "after"), 5, NULL);
	CHECK_STR(wk_type(d), "done");
	CHECK_JSON(json_object_get(d, "data"), "[\"after\"]");
	wk_free(&w);
}

/* Frames are read through a buffer: several frames in one write are all served, and a
 * cancel while a model answer is half received keeps the stream aligned (the worker goes
 * on serving instead of exiting). */
TEST(buffered_frames_stay_aligned) {
	wk w;
	json_t *r = start(&w, "local m = model('org/tiny')\n"
			      "app.interface{ fn = function(p)\n"
			      "  if p == 'model' then return m:classify('x')[1].label end\n"
			      "  return p end, inputs = 'text', outputs = 'text' }\n",
			  64, 5, json_pack("[s]", "org/tiny"));
	CHECK_STR(wk_type(r), "ready");
	ms_buf b; /* three calls in one write */
	ms_buf_init(&b);
	for (int i = 1; i <= 3; i++) {
		json_t *c = json_pack("{s:s,s:i,s:s,s:[i],s:s,s:i}", "t", "call", "id", i, "api_name", "predict", "data", i, "session", "s", "seed", 1);
		CHECK(ms_frame_encode_json(&b, c) == 0);
		json_decref(c);
	}
	CHECK(write(w.fd, b.data, b.len) == (ssize_t)b.len);
	for (int i = 1; i <= 3; i++) {
		json_t *m = wk_recv(&w, 5);
		CHECK_STR(wk_type(m), "done");
		CHECK_INT(json_integer_value(json_object_get(m, "id")), i);
		json_decref(m);
	}
	CHECK(wk_send(&w, json_pack("{s:s,s:i,s:s,s:[s],s:s,s:i}", "t", "call", "id", 5, "api_name", "predict", "data", "model", "session", "s", "seed", 1)) == 0);
	json_t *m = wk_recv(&w, 5);
	CHECK_STR(wk_type(m), "model");
	int req = (int)json_integer_value(json_object_get(m, "req"));
	ms_buf_reset(&b);
	json_t *ans = json_pack("{s:s,s:i,s:[{s:s,s:f}]}", "t", "model_result", "req", req, "result", "label", "POS", "score", 0.9);
	CHECK(ms_frame_encode_json(&b, ans) == 0);
	json_decref(ans);
	CHECK(write(w.fd, b.data, 10) == 10); /* half a frame, then the cancel */
	usleep(100000);
	union sigval v = {.sival_int = 5};
	CHECK(sigqueue(w.pid, MS_SIG_CANCEL, v) == 0);
	m = wk_recv(&w, 3);
	CHECK_STR(wk_type(m), "error");
	CHECK_STR(json_string_value(json_object_get(m, "kind")), "cancelled");
	CHECK(write(w.fd, b.data + 10, b.len - 10) == (ssize_t)(b.len - 10)); /* the rest: dropped */
	json_t *d = wk_call(&w, 6, "predict", json_pack("[s]", "still here"), 5, NULL);
	CHECK_MSG(d && !strcmp(wk_type(d), "done"), "after a cancel mid-frame: %s (log %s)", d ? dump(d) : "no answer",
		  w.log.data ? w.log.data : "");
	CHECK_JSON(json_object_get(d, "data"), "[\"still here\"]");
	ms_buf_free(&b);
	wk_free(&w);
}

/* The hard stop (no hook fires: C code backtracking) writes its frame from the signal
 * handler, formatted by hand: it must be a well-formed frame with the call's id. */
static const char backtrack[] = "local function slow() return (('a'):rep(28)):match(('a*'):rep(28) .. 'b') end\n";

TEST(hard_stop_frames_are_well_formed) {
	wk w;
	char src[512];
	snprintf(src, sizeof src, "%sapp.interface{ fn = function() slow() return 'no' end, outputs = 'text' }\n", backtrack);
	json_t *r = start(&w, src, 64, 1, NULL);
	CHECK_STR(wk_type(r), "ready");
	json_t *d = wk_call(&w, 123456789012LL, "predict", json_pack("[]"), 5, NULL);
	CHECK_MSG(d != NULL, "no answer (log %s)", w.log.data ? w.log.data : "");
	CHECK_STR(wk_type(d), "error");
	CHECK(json_integer_value(json_object_get(d, "id")) == 123456789012LL);
	CHECK_STR(json_string_value(json_object_get(d, "kind")), "timeout");
	CHECK_STR(json_string_value(json_object_get(d, "message")), "the call took longer than the app's time limit");
	CHECK(wk_wait_exit(&w, 3));
	CHECK(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 3);
	wk_free(&w);

	snprintf(src, sizeof src, "%sslow()\n", backtrack); /* at load time: init_error */
	r = start(&w, src, 64, 1, NULL);
	CHECK_STR(wk_type(r), "init_error");
	CHECK_STR(json_string_value(json_object_get(r, "message")), "app.lua: the call took longer than the app's time limit");
	wk_free(&w);
}
