/* tests/unit/test_sandbox_luastate.c: the restricted Lua state in-process (no isolation):
 * the stop hook across pcall/xpcall/coroutines, the memory cap, address-free tostring,
 * text-only load, read-only libraries, per-call seeding. */
#include <lauxlib.h>
#include <sys/time.h>

#include "sandbox/luastate.h"
#include "tests/testlib.h"

TEST_SUITE("sandbox_luastate")

static ms_lua S;

/* Runs src as an app chunk; returns the status and leaves the result/error on top. */
static int run(const char *src) {
	CHECK(ms_lua_load(S.L, src, strlen(src), "=test") == 0);
	S.running = S.L;
	return lua_pcall(S.L, 0, 1, 0);
}

static void on_alarm(int sig) {
	(void)sig;
	ms_lua_trip(&S, MS_TRIP_TIMEOUT);
}

static void arm(int ms) {
	signal(SIGALRM, on_alarm); /* (the harness alarm is replaced: keep loops bounded) */
	struct itimerval it = {{0, 0}, {0, ms * 1000}};
	setitimer(ITIMER_REAL, &it, NULL);
}

TEST(trip_cannot_be_swallowed) {
	char err[256];
	CHECK(ms_lua_open(&S, 0, err, sizeof err) == 0);
	const char *loops[] = {
		"while true do end",
		"while true do pcall(function() while true do end end) end",
		"while true do xpcall(function() error('x') end, function() while true do end end) end",
		"local co = coroutine.wrap(function() while true do pcall(function() while true do end end) end end) co()",
		"local t = {} for i = 1, 100 do t[i] = coroutine.create(function() while true do end end) end\n"
		"while true do for i = 1, 100 do pcall(coroutine.resume, t[i]) end end",
	};
	for (size_t i = 0; i < sizeof loops / sizeof *loops; i++) {
		arm(50);
		int st = run(loops[i]);
		CHECK_MSG(st != LUA_OK, "loop %zu returned", i);
		CHECK_INT(S.tripped, MS_TRIP_TIMEOUT);
		ms_lua_untrip(&S);
		lua_settop(S.L, 0);
		CHECK(run("local n = 0 for i = 1, 1000 do n = n + i end return n") == LUA_OK);
		CHECK_INT(lua_tointeger(S.L, -1), 500500);
		lua_settop(S.L, 0);
	}
	ms_lua_close(&S);
}

TEST(memory_cap) {
	char err[256];
	CHECK(ms_lua_open(&S, 8u << 20, err, sizeof err) == 0);
	S.trip_on_oom = 1;
	int st = run("local t = {} for i = 1, 1e8 do t[i] = ('x'):rep(64) .. i end");
	CHECK(st != LUA_OK);
	CHECK_INT(S.tripped, MS_TRIP_MEMORY);
	CHECK(S.mem_peak <= (8u << 20));
	ms_lua_untrip(&S);
	S.trip_on_oom = 0;
	lua_settop(S.L, 0);
	lua_gc(S.L, LUA_GCCOLLECT);
	CHECK(S.mem_used < (1u << 20));
	ms_lua_close(&S);
}

TEST(no_addresses_text_only_readonly) {
	char err[256];
	CHECK(ms_lua_open(&S, 0, err, sizeof err) == 0);
	CHECK(run("local a, b = {}, {} return tostring(a) .. ' ' .. tostring(b) .. ' ' .. tostring(a) .. ' ' .. string.format('%s', print)") == LUA_OK);
	CHECK_STR(lua_tostring(S.L, -1), "table: #1 table: #2 table: #1 function: #3");
	lua_settop(S.L, 0);
	CHECK(run("return select(2, load('\\27Lua'))") == LUA_OK);
	CHECK(strstr(lua_tostring(S.L, -1), "binary") != NULL);
	lua_settop(S.L, 0);
	CHECK(run("string.rep = nil") != LUA_OK);
	CHECK(strstr(lua_tostring(S.L, -1), "read-only") != NULL);
	lua_settop(S.L, 0);
	CHECK(run("x = 1 return rawget(_G, 'x') + #('ab'):rep(3)") == LUA_OK);
	CHECK_INT(lua_tointeger(S.L, -1), 7);
	lua_settop(S.L, 0);
	ms_lua_seed(&S, 7);
	CHECK(run("return math.random(1000000)") == LUA_OK);
	lua_Integer r1 = lua_tointeger(S.L, -1);
	lua_settop(S.L, 0);
	ms_lua_seed(&S, 7);
	CHECK(run("return math.random(1000000)") == LUA_OK);
	CHECK_INT(lua_tointeger(S.L, -1), r1);
	ms_lua_close(&S);
}
