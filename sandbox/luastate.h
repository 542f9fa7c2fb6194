/* sandbox/luastate.h: the restricted Lua 5.4 state an app runs in.
 *
 * What the app sees (its _G) is exactly ms_lua_allowlist plus the names the SDK defines
 * (ms_lua_define): base functions minus dofile/loadfile, load (text only, app env),
 * string (no dump; format without %p and without addresses), table, math, utf8,
 * coroutine, os.time/os.clock/os.date, collectgarbage("count"), require of the app's own
 * modules. Library tables and _G's built-in names are read-only; setmetatable rejects
 * __gc; tostring never shows an address.
 *
 * Limits: every allocation goes through a counting lua_Alloc with a hard cap; a call is
 * stopped by "tripping" the state (ms_lua_trip, async-signal-safe): a count hook with
 * period 1 is armed on every thread that runs, and it raises an error at each instruction
 * until ms_lua_untrip, so pcall/xpcall/coroutines cannot swallow it. The hook is only armed
 * when a budget runs out, so normal code runs at full speed.
 */
#ifndef MS_LUASTATE_H
#define MS_LUASTATE_H

#include <lua.h>
#include <signal.h>
#include <stddef.h>

enum { MS_TRIP_NONE = 0, MS_TRIP_TIMEOUT = 1, MS_TRIP_CANCEL = 2, MS_TRIP_MEMORY = 3 };

typedef struct ms_lua {
	lua_State *L;
	size_t mem_used;  /* bytes held by Lua now */
	size_t mem_limit; /* cap; an allocation past it fails and trips MS_TRIP_MEMORY */
	size_t mem_peak;
	int trip_on_oom;                  /* 1 while an app call runs */
	volatile sig_atomic_t tripped;    /* MS_TRIP_* */
	lua_State *volatile running;      /* thread executing app code now */
	int env_ref;                      /* registry ref: the app's _G (a proxy) */
	int store_ref;                    /* registry ref: the table behind _G */
	int builtin_ref;                  /* registry ref: set of read-only global names */
	int files_ref;                    /* registry ref: module name -> source (require) */
} ms_lua;

/* The names _G holds before the SDK adds its own (sorted, NULL-terminated). */
extern const char *const ms_lua_allowlist[];

/* Creates the state with a memory cap in bytes (0: 256 MiB). */
int ms_lua_open(ms_lua *s, size_t mem_limit, char *err, size_t errlen);
void ms_lua_close(ms_lua *s);
/* Pops the value on top of s->L and defines it as the read-only global `name`. */
void ms_lua_define(ms_lua *s, const char *name);
/* Adds an app file (e.g. "util.lua") that require("util") may load. */
int ms_lua_add_file(ms_lua *s, const char *name, const char *src, size_t len);
/* Loads a text chunk with the app's environment; pushes the function (0) or an error
 * message (MS_EFORMAT). */
int ms_lua_load(lua_State *L, const char *src, size_t len, const char *chunkname);
/* Arms the stop hook (async-signal-safe); kind is MS_TRIP_*. The first kind sticks. */
void ms_lua_trip(ms_lua *s, int kind);
/* Disarms the hook on the main thread and on the last running thread. */
void ms_lua_untrip(ms_lua *s);
/* Seeds math.random (per call). */
void ms_lua_seed(ms_lua *s, long long seed);
/* The ms_lua a Lua thread belongs to. */
ms_lua *ms_lua_from(lua_State *L);
/* tostring() without addresses; pushes the string. Never calls metamethods other than
 * __tostring/__name (and only when call_meta is set). */
const char *ms_lua_tostring(lua_State *L, int idx, int call_meta);

#endif
