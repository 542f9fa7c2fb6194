/* sandbox/isolate.c: no-new-privs, namespaces, rlimits and the seccomp allow-list. */
#include "sandbox/isolate.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include "common/ms.h"

static char summary[256];

const char *ms_isolate_summary(void) { return summary; }

static void note(const char *fmt, const char *arg) {
	size_t n = strlen(summary);
	snprintf(summary + n, sizeof summary - n, fmt, arg);
}

static int set_limit(int res, rlim_t val) {
	struct rlimit rl;
	if (getrlimit(res, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && val > rl.rlim_max) val = rl.rlim_max;
	rl.rlim_cur = rl.rlim_max = val;
	return setrlimit(res, &rl);
}

static int apply_rlimits(const ms_isolate_opts *o, char *err, size_t errlen) {
	rlim_t cpu = o->cpu_s ? o->cpu_s : 6 * 3600;
	int nofile = o->keep_fd + 1 > 8 ? o->keep_fd + 1 : 8;
	struct { int res; rlim_t val; const char *name; } lim[] = {
		{RLIMIT_CPU, cpu, "RLIMIT_CPU"},
		{RLIMIT_CORE, 0, "RLIMIT_CORE"},
		{RLIMIT_NOFILE, (rlim_t)nofile, "RLIMIT_NOFILE"},
		{RLIMIT_FSIZE, 0, "RLIMIT_FSIZE"},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(lim); i++)
		if (set_limit(lim[i].res, lim[i].val) != 0)
			return ms_errf(err, errlen, MS_EDENIED, "setrlimit(%s): %s", lim[i].name, strerror(errno));
	/* threads count as processes for RLIMIT_NPROC, so a threaded worker relies on seccomp */
	if (!o->allow_threads && set_limit(RLIMIT_NPROC, 0) != 0)
		return ms_errf(err, errlen, MS_EDENIED, "setrlimit(RLIMIT_NPROC): %s", strerror(errno));
#ifdef MS_ASAN
	note("%s", " rlimits(no AS/DATA: ASan build)");
	fprintf(stderr, "moonspace worker: ASan build: RLIMIT_AS/RLIMIT_DATA not set, leak detection off\n");
#else
	size_t mb = (o->memory_mb ? o->memory_mb : 256) + (o->headroom_mb ? o->headroom_mb : 512);
	rlim_t bytes = (rlim_t)mb << 20;
	if (set_limit(RLIMIT_AS, bytes) != 0 || set_limit(RLIMIT_DATA, bytes) != 0)
		return ms_errf(err, errlen, MS_EDENIED, "setrlimit(RLIMIT_AS): %s", strerror(errno));
	char b[48];
	snprintf(b, sizeof b, " rlimits(AS=%zuMiB)", mb);
	note("%s", b);
#endif
	return 0;
}

/* Every syscall a worker may make without conditions. Names unknown to this
 * architecture or libseccomp are skipped. */
static const char *const allowed[] = {
	"read", "write", "readv", "writev", "pread64", "recvfrom", "recvmsg", "sendto", "sendmsg",
	"close", "lseek", "fstat", "fcntl", "poll", "ppoll", "select", "pselect6",
	"munmap", "mremap", "brk", "madvise",
	"futex", "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
	"getrandom", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
	"rt_sigtimedwait", "rt_sigsuspend", "sigaltstack", "restart_syscall",
	"setitimer", "getitimer", "alarm", "timer_create", "timer_settime", "timer_gettime",
	"timer_getoverrun", "timer_delete",
	"exit", "exit_group", "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid",
	"getrlimit", "getrusage", "times", "sched_yield", "sched_getaffinity", "getcpu", "uname",
	NULL};
static const char *const thread_calls[] = {"set_robust_list", "get_robust_list", "rseq", "membarrier", NULL};

static int add_names(scmp_filter_ctx ctx, const char *const *names) {
	for (; *names; names++) {
		int nr = seccomp_syscall_resolve_name(*names);
		if (nr == __NR_SCMP_ERROR) continue;
		int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (rc) return rc;
	}
	return 0;
}

static int build_filter(scmp_filter_ctx ctx, const ms_isolate_opts *o) {
	int rc = add_names(ctx, allowed);
	pid_t self = getpid();
	/* memory: never executable */
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	/* glibc's fstat is newfstatat(fd, "", st, AT_EMPTY_PATH) */
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(newfstatat), 1,
				       SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
	/* isatty() on stdio */
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, TCGETS));
	/* signals to itself only (raise, abort) */
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self));
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self));
	/* reading its own limits, never setting any */
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 2, SCMP_A0(SCMP_CMP_EQ, 0),
				       SCMP_A2(SCMP_CMP_EQ, 0));
	/* glibc tries clone3 first and falls back to clone on ENOSYS */
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (!rc && o->allow_threads) {
		rc = add_names(ctx, thread_calls);
		if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
					       SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	}
	return rc;
}

static int apply_seccomp(const ms_isolate_opts *o, char *err, size_t errlen) {
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!ctx) return ms_errf(err, errlen, MS_ENOMEM, "seccomp_init failed");
	int rc = build_filter(ctx, o);
	if (!rc) rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc) return ms_errf(err, errlen, MS_EDENIED, "seccomp: %s", strerror(-rc));
	note("%s", o->allow_threads ? " seccomp(threads)" : " seccomp");
	return 0;
}

int ms_isolate_apply(const ms_isolate_opts *o, char *err, size_t errlen) {
	summary[0] = 0;
	if (getuid() == 0 || geteuid() == 0)
		return ms_errf(err, errlen, MS_EDENIED, "refusing to run as uid 0 (the host spawns workers as nobody)");
	if (o->keep_fd >= 0) {
		if (syscall(SYS_close_range, (unsigned)o->keep_fd + 1, ~0u, 0) != 0)
			for (int fd = o->keep_fd + 1; fd < 1024; fd++) close(fd);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return ms_errf(err, errlen, MS_EDENIED, "no-new-privs: %s", strerror(errno));
	note("%s", "nnp");
	/* an empty network namespace: even a filter bug would find no network */
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0) note("%s", " userns+netns");
	else if (unshare(CLONE_NEWNET) == 0) note("%s", " netns");
	int rc = apply_rlimits(o, err, errlen);
	if (rc) return rc;
	if (o->no_seccomp) {
		note("%s", " NO-SECCOMP(test build)");
		return 0;
	}
	return apply_seccomp(o, err, errlen);
}
