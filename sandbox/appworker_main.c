/* sandbox/appworker_main.c: `moonspace-appworker --fd 3`, one app's Lua in a locked-down
 * process (sandbox/PROTOCOL.md): read init, lock down, load the app, answer ready, then
 * serve calls one at a time until the host closes the socket. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/ms.h"
#include "sandbox/frame.h"
#include "sandbox/isolate.h"
#include "sandbox/luastate.h"
#include "sandbox/sdk.h"

#ifdef MS_ASAN
/* workers never report leaks: they end by _exit or SIGKILL mid-flight */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }
#endif

static ms_lua g_lua;
static ms_sdk g_sdk;
static volatile sig_atomic_t g_loading;

/* SIGALRM: the call's (or the load's) time is up. First the stop hook; if no hook fires
 * within 0.5 s (C code such as pattern matching), answer from here and exit. */
static void on_alarm(int sig) {
	(void)sig;
	if (!ms_sdk_alarm_due()) return; /* early: the lazily armed timer (re-armed) */
	if (!g_sdk.in_call && !g_loading) return;
	if (!g_lua.tripped) {
		ms_lua_trip(&g_lua, MS_TRIP_TIMEOUT);
		ms_sdk_arm_timer(0.5);
		return;
	}
	ms_sdk_hard_stop(&g_sdk);
	_exit(3);
}

/* MS_SIG_CANCEL via sigqueue with the call id: cancel that call if it is the one running. */
static void on_cancel(int sig, siginfo_t *si, void *uc) {
	(void)sig, (void)uc;
	if (si->si_code != SI_QUEUE) return;
	if (!g_sdk.in_call || si->si_value.sival_int != (int)g_sdk.call_id) {
		ms_sdk_note_early_cancel(&g_sdk, si->si_value.sival_int); /* its call has not started yet */
		return;
	}
	if (!g_lua.tripped) {
		ms_lua_trip(&g_lua, MS_TRIP_CANCEL);
		ms_sdk_arm_timer(0.5);
	}
}

static void install_signals(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_alarm; /* no SA_RESTART: a blocked read returns EINTR */
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = NULL;
	sa.sa_sigaction = on_cancel;
	sa.sa_flags = SA_SIGINFO;
	sigaction(MS_SIG_CANCEL, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int fail_init(int fd, const char *msg) {
	json_t *m = json_pack("{s:s,s:s}", "t", "init_error", "message", msg);
	if (m) ms_frame_write_json_fd(fd, m);
	json_decref(m);
	fprintf(stderr, "moonspace-appworker: %s\n", msg);
	return 1;
}

int main(int argc, char **argv) {
	int fd = 3;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--fd") && i + 1 < argc) fd = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--help")) {
			printf("usage: moonspace-appworker --fd N  (started by the host; see sandbox/PROTOCOL.md)\n");
			return 0;
		}
	}
	install_signals();
	json_t *init = NULL;
	int rc = ms_frame_read_json_fd(fd, &init, 0);
	if (rc) return 2;
	if (strcmp(json_string_value(json_object_get(init, "t")) ? json_string_value(json_object_get(init, "t")) : "", "init") != 0)
		return fail_init(fd, "protocol: the first message must be init");
	json_t *files = json_object_get(init, "files");
	const char *entry = json_string_value(json_object_get(init, "entry"));
	json_int_t mem_mb = json_integer_value(json_object_get(init, "memory_mb"));
	double timeout_s = json_number_value(json_object_get(init, "timeout_s"));
	const char *app = json_string_value(json_object_get(init, "app"));
	if (!json_is_object(files) || !entry) return fail_init(fd, "protocol: init needs files and entry");
	if (mem_mb <= 0) mem_mb = 256;
	if (mem_mb > 1 << 20) mem_mb = 1 << 20;
	if (timeout_s <= 0) timeout_s = 60;

	char err[512];
	/* the state is built before the lock-down (it reads the time zone file once); no app
	 * code runs until after it */
	if (ms_lua_open(&g_lua, (size_t)mem_mb << 20, err, sizeof err) != 0) return fail_init(fd, err);
	ms_isolate_opts iso = {.memory_mb = (size_t)mem_mb, .keep_fd = fd > 2 ? fd : 2};
	if (ms_isolate_apply(&iso, err, sizeof err) != 0) return fail_init(fd, err);
	fprintf(stderr, "moonspace-appworker: app %s: %s, memory %lld MiB, timeout %g s\n", app ? app : "?",
		ms_isolate_summary(), (long long)mem_mb, timeout_s);

	if (ms_sdk_init(&g_sdk, &g_lua, fd, files, json_object_get(init, "models"), json_object_get(init, "space")))
		return fail_init(fd, "out of memory setting up the SDK");
	ms_sdk_prepare_hard_stop(&g_sdk, -1);
	g_loading = 1;
	ms_sdk_arm_timer(timeout_s);
	rc = ms_sdk_load(&g_sdk, entry, err, sizeof err);
	ms_sdk_arm_timer(0);
	g_loading = 0;
	if (rc) return fail_init(fd, err);
	json_t *ready = ms_sdk_ready(&g_sdk);
	rc = ready ? ms_frame_write_json_fd(fd, ready) : MS_ENOMEM;
	json_decref(ready);
	if (rc) return 2;

	for (;;) {
		json_t *msg = NULL;
		rc = ms_sdk_read(&g_sdk, &msg);
		if (rc == MS_ECLOSED) break;
		if (rc) return 2;
		const char *t = json_string_value(json_object_get(msg, "t"));
		if (t && !strcmp(t, "call")) rc = ms_sdk_call(&g_sdk, msg, timeout_s);
		else if (t && !strncmp(t, "model_", 6)) rc = 0; /* late answer to an abandoned request */
		else rc = MS_EPROTO;
		json_decref(msg);
		if (rc) return 2;
	}
	ms_sdk_free(&g_sdk);
	ms_lua_close(&g_lua);
	json_decref(init);
	return 0;
}
