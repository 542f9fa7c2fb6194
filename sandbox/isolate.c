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
#ifdef MS_ASAN /* said before RLIMIT_FSIZE 0: stderr may be a regular file */
	fprintf(stderr, "moonspace worker: ASan build: RLIMIT_AS/RLIMIT_DATA not set, leak detection off\n");
#endif
	rlim_t cpu = o->cpu_s ? o->cpu_s : 6 * 3600;
	int nofile = o->keep_fd + 1 > 8 ? o->keep_fd + 1 : 8;
	if (o->allow_reading) nofile += 56; /* checkpoint files while they are read and mapped */
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
	note("%s", " rlimits(no AS/DATA: ASan build, leak detection off)");
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

/* Every syscall a worker may make without conditions (SCMP_SYS: resolved at compile time,
 * which keeps the filter's build cheap at worker start). */
static const int allowed[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(pread64),
	SCMP_SYS(recvfrom), SCMP_SYS(recvmsg), SCMP_SYS(sendto), SCMP_SYS(sendmsg), SCMP_SYS(close),
	SCMP_SYS(lseek), SCMP_SYS(fstat), SCMP_SYS(fcntl), SCMP_SYS(poll), SCMP_SYS(ppoll),
	SCMP_SYS(select), SCMP_SYS(pselect6), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(brk),
	SCMP_SYS(madvise), SCMP_SYS(futex), SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres),
	SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(gettimeofday), SCMP_SYS(time),
	SCMP_SYS(getrandom), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(rt_sigpending), SCMP_SYS(rt_sigtimedwait), SCMP_SYS(rt_sigsuspend),
	SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall), SCMP_SYS(setitimer), SCMP_SYS(getitimer),
	SCMP_SYS(alarm), SCMP_SYS(timer_create), SCMP_SYS(timer_settime), SCMP_SYS(timer_gettime),
	SCMP_SYS(timer_getoverrun), SCMP_SYS(timer_delete), SCMP_SYS(exit), SCMP_SYS(exit_group),
	SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(getppid), SCMP_SYS(getuid), SCMP_SYS(geteuid),
	SCMP_SYS(getgid), SCMP_SYS(getegid), SCMP_SYS(getrlimit), SCMP_SYS(getrusage),
	SCMP_SYS(times), SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity), SCMP_SYS(getcpu),
	SCMP_SYS(uname), SCMP_SYS(sysinfo) /* glibc's qsort asks for the memory size */,
	-1};
static const int thread_calls[] = {
	SCMP_SYS(set_robust_list), SCMP_SYS(get_robust_list), SCMP_SYS(rseq), SCMP_SYS(membarrier),
	-1};

/* allow_reading: what opening and reading a checkpoint directory takes (glibc's open and
 * fopen are openat; opendir adds getdents64; stat, access and realpath take paths) */
static const int reading_calls[] = {
	SCMP_SYS(getdents64), SCMP_SYS(readlink), SCMP_SYS(readlinkat), SCMP_SYS(faccessat),
	SCMP_SYS(faccessat2), SCMP_SYS(access), SCMP_SYS(stat), SCMP_SYS(lstat), SCMP_SYS(statx),
	SCMP_SYS(fadvise64), SCMP_SYS(getcwd),
	SCMP_SYS(seccomp), /* for ms_isolate_seal(): a filter can only take more away */
	-1};
/* opening for anything but reading (and creating) stays forbidden even then */
#define OPEN_WRITE_FLAGS (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND | __O_TMPFILE)

static int add_nrs(scmp_filter_ctx ctx, const int *nrs) {
	for (; *nrs != -1; nrs++) {
		int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, *nrs, 0);
		if (rc) return rc;
	}
	return 0;
}

static int build_filter(scmp_filter_ctx ctx, const ms_isolate_opts *o) {
	int rc = add_nrs(ctx, allowed);
	pid_t self = getpid();
	/* memory: never executable */
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	/* a model worker's tokenizer tries PCRE2's JIT: it gets EPERM and falls back to the
	 * interpreter, instead of dying */
	if (!rc && o->allow_reading)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mmap), 1,
				      SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC));
	/* glibc's fstat is newfstatat(fd, "", st, AT_EMPTY_PATH) */
	if (!rc && !o->allow_reading)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(newfstatat), 1,
				      SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
	if (!rc && o->allow_reading) {
		rc = add_nrs(ctx, reading_calls);
		if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(newfstatat), 0);
		if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
					       SCMP_A2(SCMP_CMP_MASKED_EQ, OPEN_WRITE_FLAGS, O_RDONLY));
		if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(open), 1,
					       SCMP_A1(SCMP_CMP_MASKED_EQ, OPEN_WRITE_FLAGS, O_RDONLY));
	}
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
		rc = add_nrs(ctx, thread_calls);
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
	if (o->allow_reading) note("%s", "(reading until sealed)");
	return 0;
}

int ms_isolate_seal(char *err, size_t errlen) {
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx) return ms_errf(err, errlen, MS_ENOMEM, "seccomp_init failed");
	/* no-new-privs is set already (prctl is not allowed any more); every thread of the
	 * process gets the filter (the pool's threads started after the first one) */
	int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (!rc) rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	for (const int *nr = reading_calls; !rc && *nr != -1; nr++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, *nr, 0);
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(openat), 0);
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(open), 0);
	/* fstat (AT_EMPTY_PATH) stays; a stat by path goes */
	if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(newfstatat), 1,
				       SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, 0));
	if (!rc) rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc) return ms_errf(err, errlen, MS_EDENIED, "seccomp (seal): %s", strerror(-rc));
	char *r = strstr(summary, "(reading until sealed)");
	if (r) snprintf(r, sizeof summary - (size_t)(r - summary), "%s", "+sealed");
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
