/* sandbox/luastate.c: the restricted Lua state (see luastate.h). */
#include "sandbox/luastate.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/ms.h"

const char *const ms_lua_allowlist[] = {
	"_G", "_VERSION", "assert", "collectgarbage", "coroutine", "error", "getmetatable",
	"ipairs", "load", "math", "next", "os", "pairs", "pcall", "print", "rawequal",
	"rawget", "rawlen", "rawset", "require", "select", "setmetatable", "string", "table",
	"tonumber", "tostring", "type", "utf8", "xpcall", NULL};

/* registry keys (addresses of these statics are unique light userdata) */
static char K_RO;     /* weak table: read-only proxy -> the table behind it */
static char K_IDS;    /* weak table: object -> small integer shown by tostring */
static char K_LOADED; /* require's cache */
static char K_RANDOMSEED;

ms_lua *ms_lua_from(lua_State *L) { return *(ms_lua **)lua_getextraspace(L); }

/* ---- memory cap ---- */

static void *cap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
	ms_lua *s = ud;
	if (!ptr) osize = 0;
	if (nsize == 0) {
		free(ptr);
		s->mem_used -= osize;
		return NULL;
	}
	if (nsize > osize && s->mem_used - osize + nsize > s->mem_limit) {
		/* a memory bomb: stop the whole call, not just this allocation */
		if (s->trip_on_oom) ms_lua_trip(s, MS_TRIP_MEMORY);
		return NULL;
	}
	void *p = realloc(ptr, nsize);
	if (!p) return NULL;
	s->mem_used = s->mem_used - osize + nsize;
	if (s->mem_used > s->mem_peak) s->mem_peak = s->mem_used;
	return p;
}

/* ---- stop hook ---- */

static const char *trip_message(int kind) {
	switch (kind) {
	case MS_TRIP_TIMEOUT: return "the call took longer than the app's time limit";
	case MS_TRIP_CANCEL: return "cancelled";
	case MS_TRIP_MEMORY: return "out of memory: the app went over its memory limit";
	default: return "stopped";
	}
}

static void trip_hook(lua_State *L, lua_Debug *ar) {
	(void)ar;
	ms_lua *s = ms_lua_from(L);
	if (!s->tripped) { /* a stale hook left on a suspended coroutine */
		lua_sethook(L, NULL, 0, 0);
		return;
	}
	luaL_error(L, "%s", trip_message(s->tripped));
}

void ms_lua_trip(ms_lua *s, int kind) {
	if (!s->tripped) s->tripped = kind;
	lua_State *r = s->running;
	if (r) lua_sethook(r, trip_hook, LUA_MASKCOUNT, 1);
	lua_sethook(s->L, trip_hook, LUA_MASKCOUNT, 1);
}

void ms_lua_untrip(ms_lua *s) {
	s->tripped = MS_TRIP_NONE;
	lua_State *r = s->running;
	if (r) lua_sethook(r, NULL, 0, 0);
	lua_sethook(s->L, NULL, 0, 0);
}

/* ---- tostring without addresses ---- */

const char *ms_lua_tostring(lua_State *L, int idx, int call_meta) {
	idx = lua_absindex(L, idx);
	int t = lua_type(L, idx);
	switch (t) {
	case LUA_TNIL: return lua_pushliteral(L, "nil"), lua_tostring(L, -1);
	case LUA_TBOOLEAN: return lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
	case LUA_TNUMBER:
	case LUA_TSTRING: return luaL_tolstring(L, idx, NULL); /* no metamethods for these */
	default: break;
	}
	if (call_meta && luaL_callmeta(L, idx, "__tostring")) {
		if (!lua_isstring(L, -1)) luaL_error(L, "'__tostring' must return a string");
		return lua_tostring(L, -1);
	}
	/* a small per-state number instead of the address */
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_IDS);
	lua_pushvalue(L, idx);
	lua_rawget(L, -2);
	lua_Integer id = lua_tointeger(L, -1);
	lua_pop(L, 1);
	if (!id) {
		lua_rawgeti(L, -1, 0); /* counter at [0]... keys are objects, 0 is free */
		id = lua_tointeger(L, -1) + 1;
		lua_pop(L, 1);
		lua_pushinteger(L, id);
		lua_rawseti(L, -2, 0);
		lua_pushvalue(L, idx);
		lua_pushinteger(L, id);
		lua_rawset(L, -3);
	}
	lua_pop(L, 1);
	return lua_pushfstring(L, "%s: #%d", luaL_typename(L, idx), (int)id);
}

static int l_tostring(lua_State *L) {
	luaL_checkany(L, 1);
	ms_lua_tostring(L, 1, 1);
	return 1;
}

static int l_print_stderr(lua_State *L) {
	int n = lua_gettop(L);
	for (int i = 1; i <= n; i++) {
		size_t len;
		ms_lua_tostring(L, i, 1);
		const char *p = lua_tolstring(L, -1, &len);
		fprintf(stderr, "%s%.*s", i > 1 ? "\t" : "", (int)len, p);
		lua_pop(L, 1);
	}
	fputc('\n', stderr);
	return 0;
}

/* string.format: %p refused, %s of tables/functions through the address-free tostring */
static int l_format(lua_State *L) {
	size_t flen;
	const char *f = luaL_checklstring(L, 1, &flen);
	int arg = 1;
	for (size_t i = 0; i < flen; i++) {
		if (f[i] != '%') continue;
		if (++i < flen && f[i] == '%') continue;
		while (i < flen && strchr("-+ #0123456789.", f[i])) i++;
		if (i >= flen) break;
		arg++;
		if (f[i] == 'p') return luaL_error(L, "string.format: '%%p' is not allowed");
		if (f[i] == 's' && arg <= lua_gettop(L)) {
			int t = lua_type(L, arg);
			if (t != LUA_TSTRING && t != LUA_TNUMBER) {
				ms_lua_tostring(L, arg, 1);
				lua_replace(L, arg);
			}
		}
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

static int l_setmetatable(lua_State *L) {
	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc finalizers are not allowed");
		lua_pop(L, 1);
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

static int l_collectgarbage(lua_State *L) {
	const char *opt = luaL_optstring(L, 1, "collect");
	if (strcmp(opt, "count") != 0)
		return luaL_error(L, "collectgarbage: only \"count\" is allowed");
	int kb = lua_gc(L, LUA_GCCOUNT), b = lua_gc(L, LUA_GCCOUNTB);
	lua_pushnumber(L, (lua_Number)kb + (lua_Number)b / 1024.0);
	return 1;
}

/* xpcall's message handler runs with hooks off when the error came from the stop hook
 * (Lua raises it from inside the hook), so a looping handler could never be stopped: once
 * tripped, the app's handler is skipped and the error passes through unchanged. */
static int msgh_wrap(lua_State *L) {
	if (ms_lua_from(L)->tripped) return 1;
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

static int l_xpcall(lua_State *L) {
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, msgh_wrap, 1);
	lua_replace(L, 2);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

/* load(chunk [, chunkname [, mode [, env]]]): text only, the app's env by default */
static int l_load(lua_State *L) {
	int n = lua_gettop(L);
	lua_settop(L, 4);
	lua_pushliteral(L, "t");
	lua_replace(L, 3);
	if (n < 4) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, ms_lua_from(L)->env_ref);
		lua_replace(L, 4);
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, 4, LUA_MULTRET);
	return lua_gettop(L);
}

static int l_require(lua_State *L) {
	ms_lua *s = ms_lua_from(L);
	const char *name = luaL_checkstring(L, 1);
	lua_settop(L, 1);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_LOADED); /* 2 */
	lua_pushvalue(L, 1);
	int t = lua_rawget(L, 2);
	if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
		return luaL_error(L, "require: module '%s' requires itself (a loop)", name);
	if (t != LUA_TNIL) return 1;
	lua_pop(L, 1);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (const char *p = name; *p; p++) luaL_addchar(&b, *p == '.' ? '/' : *p);
	luaL_addstring(&b, ".lua");
	luaL_pushresult(&b); /* 3: file name */
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->files_ref);
	lua_pushvalue(L, 3);
	if (lua_rawget(L, -2) != LUA_TSTRING)
		return luaL_error(L, "module '%s' not found (require loads only the app's own .lua files)", name);
	size_t len;
	const char *src = lua_tolstring(L, -1, &len);
	lua_pushfstring(L, "@%s", lua_tostring(L, 3));
	if (ms_lua_load(L, src, len, lua_tostring(L, -1)) != 0) return lua_error(L);
	lua_pushvalue(L, 1);
	lua_pushboolean(L, 0);
	lua_rawset(L, 2); /* loading */
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
	}
	lua_pushvalue(L, 1);
	lua_pushvalue(L, -2);
	lua_rawset(L, 2);
	return 1;
}

/* coroutine.resume that keeps s->running pointed at the thread executing app code, so a
 * trip reaches it, and re-arms the hook on the resumer when the budget ran out inside */
static int l_resume(lua_State *L) {
	ms_lua *s = ms_lua_from(L);
	lua_State *co = lua_tothread(L, 1);
	luaL_argexpected(L, co != NULL, 1, "coroutine");
	s->running = co;
	if (s->tripped) lua_sethook(co, trip_hook, LUA_MASKCOUNT, 1);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	s->running = L;
	if (s->tripped) lua_sethook(L, trip_hook, LUA_MASKCOUNT, 1);
	return lua_gettop(L);
}

static const char wrap_src[] =
	"local create, resume, error = ...\n"
	"local function pass(ok, ...) if ok then return ... end error((...), 0) end\n"
	"return function(f) local co = create(f)\n"
	"  return function(...) return pass(resume(co, ...)) end end\n";

/* ---- read-only tables ---- */

static int ro_newindex(lua_State *L) {
	return luaL_error(L, "attempt to modify a read-only table (key '%s')",
			  lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2));
}

static int ro_pairs(lua_State *L) {
	lua_getglobal(L, "next"); /* registry globals: the real next */
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushnil(L);
	return 3;
}

/* Replaces the table on top with a read-only proxy of it. */
static void make_readonly(lua_State *L) {
	int real = lua_gettop(L);
	lua_newtable(L); /* proxy */
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, real);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, ro_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pushvalue(L, real);
	lua_pushcclosure(L, ro_pairs, 1);
	lua_setfield(L, -2, "__pairs");
	lua_setmetatable(L, -2);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_RO);
	lua_pushvalue(L, -2);
	lua_pushvalue(L, real);
	lua_rawset(L, -3);
	lua_pop(L, 1);
	lua_replace(L, real);
}

/* _G: assignments to built-in names are refused, everything else lands in the store */
static int g_newindex(lua_State *L) {
	ms_lua *s = ms_lua_from(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->builtin_ref);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, -2) != LUA_TNIL)
		return luaL_error(L, "cannot assign to the built-in global '%s'", lua_tostring(L, 2));
	lua_pop(L, 2);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->store_ref);
	lua_insert(L, 2);
	lua_rawset(L, 2);
	return 0;
}

/* rawset/rawget see through the proxies: read-only stays read-only */
static int l_rawset(lua_State *L) {
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_checkany(L, 3);
	lua_settop(L, 3);
	ms_lua *s = ms_lua_from(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->env_ref);
	int is_g = lua_rawequal(L, 1, -1);
	lua_pop(L, 1);
	if (is_g) {
		lua_pushcfunction(L, g_newindex);
		lua_insert(L, 1);
		lua_call(L, 3, 0);
		lua_settop(L, 1);
		return 1;
	}
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_RO);
	lua_pushvalue(L, 1);
	if (lua_rawget(L, -2) != LUA_TNIL) return ro_newindex(L);
	lua_pop(L, 2);
	lua_rawset(L, 1);
	return 1;
}

static int l_rawget(lua_State *L) {
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_checkany(L, 2);
	lua_settop(L, 2);
	ms_lua *s = ms_lua_from(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->env_ref);
	if (lua_rawequal(L, 1, -1)) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, s->store_ref);
		lua_replace(L, 1);
	} else {
		lua_rawgetp(L, LUA_REGISTRYINDEX, &K_RO);
		lua_pushvalue(L, 1);
		if (lua_rawget(L, -2) == LUA_TTABLE) lua_replace(L, 1);
	}
	lua_settop(L, 2);
	lua_rawget(L, 1);
	return 1;
}

/* ---- building the state ---- */

static void copy_fields(lua_State *L, int from, int to, const char *const *names) {
	for (; *names; names++) {
		lua_getfield(L, from, *names);
		lua_setfield(L, to, *names);
	}
}

/* Sets store[name] = wrapper(original) where original = store[name]. */
static void wrap_global(lua_State *L, int store, const char *name, lua_CFunction fn) {
	lua_getfield(L, store, name);
	lua_pushcclosure(L, fn, 1);
	lua_setfield(L, store, name);
}

static void open_lib(lua_State *L, const char *name, lua_CFunction open) {
	luaL_requiref(L, name, open, 0);
	lua_pop(L, 1);
}

static int build(lua_State *L) {
	ms_lua *s = ms_lua_from(L);
	open_lib(L, "_G", luaopen_base);
	open_lib(L, LUA_STRLIBNAME, luaopen_string);
	open_lib(L, LUA_TABLIBNAME, luaopen_table);
	open_lib(L, LUA_MATHLIBNAME, luaopen_math);
	open_lib(L, LUA_UTF8LIBNAME, luaopen_utf8);
	open_lib(L, LUA_COLIBNAME, luaopen_coroutine);
	open_lib(L, LUA_OSLIBNAME, luaopen_os);

	lua_newtable(L); /* weak registries */
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "k");
	lua_setfield(L, -2, "__mode");
	lua_pushvalue(L, -1);
	lua_setmetatable(L, -3);
	lua_newtable(L);
	lua_insert(L, -2);
	lua_setmetatable(L, -2);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &K_IDS);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &K_RO);
	lua_newtable(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &K_LOADED);
	lua_newtable(L);
	s->files_ref = luaL_ref(L, LUA_REGISTRYINDEX);

	lua_pushglobaltable(L);
	int G = lua_gettop(L);
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	int LOADED = lua_gettop(L);
	lua_newtable(L);
	int store = lua_gettop(L);
	static const char *const base[] = {"_VERSION", "assert", "error", "getmetatable", "ipairs",
					   "next", "pairs", "pcall", "rawequal", "rawlen", "select",
					   "tonumber", "type", "xpcall", "setmetatable", "load", NULL};
	copy_fields(L, G, store, base);
	wrap_global(L, store, "setmetatable", l_setmetatable);
	wrap_global(L, store, "load", l_load);
	wrap_global(L, store, "xpcall", l_xpcall);
	lua_pushcfunction(L, l_tostring);
	lua_setfield(L, store, "tostring");
	lua_pushcfunction(L, l_print_stderr);
	lua_setfield(L, store, "print");
	lua_pushcfunction(L, l_rawset);
	lua_setfield(L, store, "rawset");
	lua_pushcfunction(L, l_rawget);
	lua_setfield(L, store, "rawget");
	lua_pushcfunction(L, l_collectgarbage);
	lua_setfield(L, store, "collectgarbage");
	lua_pushcfunction(L, l_require);
	lua_setfield(L, store, "require");

	/* string: the real table (reachable only as the strings' __index) loses dump and gets
	 * the safe format; the app's `string` is a read-only proxy of it */
	lua_getfield(L, LOADED, "string");
	int str = lua_gettop(L);
	lua_pushnil(L);
	lua_setfield(L, str, "dump");
	lua_getfield(L, str, "format");
	lua_pushcclosure(L, l_format, 1);
	lua_setfield(L, str, "format");
	lua_pushliteral(L, "");
	lua_getmetatable(L, -1);
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 2);
	make_readonly(L);
	lua_setfield(L, store, "string");

	static const char *const tab[] = {"concat", "insert", "move", "pack", "remove", "sort", "unpack", NULL};
	static const char *const math[] = {"abs", "acos", "asin", "atan", "ceil", "cos", "deg", "exp", "floor",
					   "fmod", "huge", "log", "max", "maxinteger", "min", "mininteger",
					   "modf", "pi", "rad", "random", "randomseed", "sin", "sqrt", "tan",
					   "tointeger", "type", "ult", NULL};
	static const char *const utf8[] = {"char", "charpattern", "codepoint", "codes", "len", "offset", NULL};
	static const char *const co[] = {"close", "create", "isyieldable", "running", "status", "yield", NULL};
	static const char *const os[] = {"clock", "date", "time", NULL};
	static const struct { const char *name; const char *const *fields; } libs[] = {
		{"table", tab}, {"math", math}, {"utf8", utf8}, {"coroutine", co}, {"os", os}};
	for (size_t i = 0; i < MS_ARRAY_LEN(libs); i++) {
		lua_getfield(L, LOADED, libs[i].name);
		lua_newtable(L);
		copy_fields(L, -2, lua_gettop(L), libs[i].fields);
		if (strcmp(libs[i].name, "math") == 0) {
			lua_getfield(L, -1, "randomseed");
			lua_rawsetp(L, LUA_REGISTRYINDEX, &K_RANDOMSEED);
		}
		if (strcmp(libs[i].name, "coroutine") == 0) {
			lua_getfield(L, -2, "resume");
			lua_pushcclosure(L, l_resume, 1);
			lua_pushvalue(L, -1);
			lua_setfield(L, -3, "resume");
			if (luaL_loadbufferx(L, wrap_src, sizeof wrap_src - 1, "=coroutine", "t") != 0)
				return lua_error(L);
			lua_getfield(L, -3, "create");
			lua_pushvalue(L, -3); /* resume wrapper */
			lua_getfield(L, G, "error");
			lua_call(L, 3, 1);
			lua_setfield(L, -3, "wrap");
			lua_pop(L, 1);
		}
		make_readonly(L);
		lua_setfield(L, store, libs[i].name);
		lua_pop(L, 1);
	}

	/* _G: a read-only-for-builtins proxy over the store */
	lua_newtable(L);
	int proxy = lua_gettop(L);
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, store);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, g_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pushvalue(L, store);
	lua_pushcclosure(L, ro_pairs, 1);
	lua_setfield(L, -2, "__pairs");
	lua_setmetatable(L, proxy);
	lua_pushvalue(L, proxy);
	lua_setfield(L, store, "_G");

	lua_newtable(L);
	for (const char *const *n = ms_lua_allowlist; *n; n++) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, *n);
	}
	s->builtin_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushvalue(L, proxy);
	s->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushvalue(L, store);
	s->store_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

int ms_lua_open(ms_lua *s, size_t mem_limit, char *err, size_t errlen) {
	memset(s, 0, sizeof *s);
	s->mem_limit = mem_limit ? mem_limit : (size_t)256 << 20;
	s->env_ref = s->store_ref = s->builtin_ref = s->files_ref = LUA_NOREF;
	/* os.date reads the time zone once here: after the seccomp filter no file opens */
	tzset();
	time_t t0 = 0;
	struct tm tm;
	localtime_r(&t0, &tm);
	s->L = lua_newstate(cap_alloc, s);
	if (!s->L) return ms_errf(err, errlen, MS_ENOMEM, "cannot create the Lua state");
	*(ms_lua **)lua_getextraspace(s->L) = s;
	s->running = s->L;
	lua_pushcfunction(s->L, build);
	if (lua_pcall(s->L, 0, 0, 0) != LUA_OK) {
		ms_errf(err, errlen, MS_ENOMEM, "cannot build the Lua state: %s", lua_tostring(s->L, -1));
		ms_lua_close(s);
		return MS_ENOMEM;
	}
	return 0;
}

void ms_lua_close(ms_lua *s) {
	if (s->L) lua_close(s->L);
	s->L = NULL;
}

void ms_lua_define(ms_lua *s, const char *name) {
	lua_State *L = s->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->store_ref);
	lua_insert(L, -2);
	lua_setfield(L, -2, name);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->builtin_ref);
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, name);
	lua_pop(L, 2);
}

static int add_file(lua_State *L) {
	ms_lua *s = ms_lua_from(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->files_ref);
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_rawset(L, -3);
	return 0;
}

int ms_lua_add_file(ms_lua *s, const char *name, const char *src, size_t len) {
	lua_State *L = s->L;
	lua_pushcfunction(L, add_file);
	lua_pushstring(L, name);
	lua_pushlstring(L, src, len);
	int rc = lua_pcall(L, 2, 0, 0);
	if (rc != LUA_OK) {
		lua_pop(L, 1);
		return MS_ENOMEM;
	}
	return 0;
}

int ms_lua_load(lua_State *L, const char *src, size_t len, const char *chunkname) {
	if (luaL_loadbufferx(L, src, len, chunkname, "t") != LUA_OK) return MS_EFORMAT;
	lua_rawgeti(L, LUA_REGISTRYINDEX, ms_lua_from(L)->env_ref);
	if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
	return 0;
}

void ms_lua_seed(ms_lua *s, long long seed) {
	lua_State *L = s->L;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &K_RANDOMSEED);
	lua_pushinteger(L, (lua_Integer)seed);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
}
