/* sandbox/sdk.h: the app SDK inside the restricted state (app.interface, ui.*, progress,
 * print, model, space) and the call loop of an app worker (see sandbox/PROTOCOL.md and
 * sandbox/README.md for what an app sees).
 *
 * The SDK talks to the host over one fd with frames (sandbox/frame.h). Endpoints are kept
 * as the JSON objects the `ready` message lists; a call converts the inputs from JSON,
 * runs the endpoint's function as a coroutine (each coroutine.yield streams a `yield`
 * frame), and converts what it returns with raw access, component by component.
 */
#ifndef MS_SDK_H
#define MS_SDK_H

#include <jansson.h>
#include <signal.h>

#include "common/ms.h"
#include "sandbox/frame.h"
#include "sandbox/luastate.h"

/* Calls the host may have sent ahead of the running one (it sends at most 8; more is a
 * protocol violation). */
#define MS_SDK_MAX_AHEAD 64
#define MS_SDK_EARLY_CANCELS 16

typedef struct ms_sdk {
	ms_lua *lua;
	int fd;
	json_t *files;     /* init.files (borrowed) */
	json_t *models;    /* init.models (borrowed): the model allow-list */
	json_t *endpoints; /* array of endpoint objects (as in `ready`) */
	int fns_ref;       /* registry: endpoint index -> function */
	volatile sig_atomic_t in_call;
	volatile sig_atomic_t writing;  /* a frame write is under way */
	long long call_id;
	/* cancels that came before their call started (calls sent ahead may be cancelled
	 * while they wait): a ring, so the last MS_SDK_EARLY_CANCELS are remembered */
	volatile sig_atomic_t early_cancel[MS_SDK_EARLY_CANCELS];
	volatile sig_atomic_t n_early_cancels;
	int next_req;
	int broken;        /* the host stream is misaligned: exit after this call */
	unsigned log_lines;
	uint64_t last_progress_ns;
	volatile long long hard_id; /* the call a hard stop answers for (-1: init) */
	ms_frame_reader in;   /* frames from the host (buffered: one read per frame or less) */
	json_t *ahead;        /* calls the host sent ahead, read while waiting for a model */
	ms_buf out;           /* scratch for encoding frames to the host */
} ms_sdk;

/* Defines the SDK globals in s; files/models/space are borrowed from the init message. */
int ms_sdk_init(ms_sdk *k, ms_lua *s, int fd, json_t *files, json_t *models, json_t *space);
void ms_sdk_free(ms_sdk *k);
/* Runs the entry file. Returns 0, or MS_EFORMAT with the app's error in err. */
int ms_sdk_load(ms_sdk *k, const char *entry, char *err, size_t errlen);
/* The `ready` message (a new reference). */
json_t *ms_sdk_ready(ms_sdk *k);
/* Reads the next message from the host (buffered; after init, every read of the host's
 * stream goes through here so nothing read ahead is lost): 0 and a new reference, or
 * MS_ECLOSED / MS_EPROTO / MS_EIO. */
int ms_sdk_read(ms_sdk *k, json_t **msg);
/* Serves one `call` message: streams yields/progress/logs and ends with done or error.
 * Returns 0, or MS_ECLOSED / MS_EPROTO when the worker must exit. */
int ms_sdk_call(ms_sdk *k, json_t *call, double timeout_s);
/* From the MS_SIG_CANCEL handler (async-signal-safe): remembers a cancel for call id, which has
 * not started yet. */
void ms_sdk_note_early_cancel(ms_sdk *k, int id);
/* Starts (seconds > 0) or ends (0) the time budget whose SIGALRM trips the state. The
 * ITIMER_REAL timer is armed lazily and may fire when no budget is due: the SIGALRM handler
 * must ask ms_sdk_alarm_due() first and act only when it returns 1. */
void ms_sdk_arm_timer(double seconds);
/* From the SIGALRM handler (async-signal-safe): 1 when the current budget has run out;
 * otherwise 0, after re-arming the timer for what is left of it (if any). */
int ms_sdk_alarm_due(void);
/* Prepares the frames a hard stop writes for the current call (id) or for init (id < 0). */
void ms_sdk_prepare_hard_stop(ms_sdk *k, long long id);
/* From a signal handler (async-signal-safe, no allocation): writes the `error` (or
 * `init_error`) frame for the trip kind unless a write is under way. */
void ms_sdk_hard_stop(ms_sdk *k);

#endif
