/* sandbox/isolate.h: the lock-down both worker kinds apply to themselves before they run
 * untrusted code (an app's Lua) or parse untrusted files (a checkpoint).
 *
 * In order: refuse uid 0; close every fd above keep_fd; no-new-privs; unshare user+network
 * namespaces (silently skipped where the kernel refuses); rlimits; a seccomp allow-list
 * (libseccomp, default action KILL_PROCESS). After it the process can read and write the
 * fds it already has, map anonymous memory (never executable), use timers, signals to
 * itself and futexes, and (with allow_threads) create threads; it cannot open files,
 * create sockets, exec, fork, ptrace or signal other processes.
 *
 * A model worker locks down before it reads its checkpoint (the parsers then meet a hostile
 * file with no network, no exec and no writes): allow_reading also lets it open files
 * read-only, stat and list directories, until ms_isolate_seal() takes that away for good.
 */
#ifndef MS_ISOLATE_H
#define MS_ISOLATE_H

#include <stddef.h>

typedef struct ms_isolate_opts {
	size_t memory_mb;   /* Lua/model memory; RLIMIT_AS/DATA = memory_mb + headroom_mb */
	size_t headroom_mb; /* 0: 512 (code, libraries, stacks, the C side's buffers) */
	unsigned cpu_s;     /* RLIMIT_CPU backstop over the worker's whole life; 0: 6 h */
	int keep_fd;        /* highest fd kept open (the socket); -1: close nothing */
	int allow_threads;  /* clone(CLONE_THREAD) allowed; RLIMIT_NPROC left alone */
	int no_seccomp;     /* tests only: everything but the filter */
	int allow_reading;  /* read-only opens, stat, directory listings until ms_isolate_seal() */
} ms_isolate_opts;

/* Applies the lock-down to the calling process. Returns 0, MS_EDENIED when running as
 * uid 0, or another MS_E* code with a message in err. Under MS_ASAN the AS/DATA rlimits
 * are skipped (ASan reserves terabytes of shadow) and a note goes to stderr. */
int ms_isolate_apply(const ms_isolate_opts *o, char *err, size_t errlen);

/* Ends what allow_reading allowed: a second seccomp filter (filters only add up) kills the
 * process on any open, path stat or directory listing from now on. 0 or MS_EDENIED. */
int ms_isolate_seal(char *err, size_t errlen);

/* What the last ms_isolate_apply did, for the worker's log line ("userns+netns, seccomp,
 * rlimits AS=320MiB" ...). */
const char *ms_isolate_summary(void);

#endif
