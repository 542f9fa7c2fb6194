/* tests/testlib.h: a tiny test harness in the style of libuv's runner.
 *
 * Each TEST() is registered at load time; main() runs every test (or the ones named on
 * the command line) in its own forked process with a timeout, and prints one line per
 * test that tests/run counts:
 *   PASS <suite>/<name>
 *   FAIL <suite>/<name>: <why>
 *   SKIP <suite>/<name>: <why>
 * A test fails by CHECK*() or by crashing; it skips with SKIP(). Fixtures are found with
 * fixture_path(); a missing fixture skips, or fails when CI=true.
 */
#ifndef MS_TESTLIB_H
#define MS_TESTLIB_H

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*test_fn)(void);
struct test_case { const char *name; test_fn fn; int timeout_s; };

#define TEST_MAX 512
static struct test_case test_cases[TEST_MAX];
static int test_count;
static const char *test_suite_name = "unit";

static inline void test_register(const char *name, test_fn fn, int timeout_s) {
	if (test_count < TEST_MAX)
		test_cases[test_count++] = (struct test_case){name, fn, timeout_s};
}

#define TEST_T(name, timeout_s)                                                            \
	static void test_##name(void);                                                     \
	__attribute__((constructor)) static void test_reg_##name(void) {                   \
		test_register(#name, test_##name, timeout_s);                              \
	}                                                                                  \
	static void test_##name(void)
#define TEST(name) TEST_T(name, 60)
#define TEST_SUITE(s) __attribute__((constructor(101))) static void test_suite_set(void) { test_suite_name = s; }

/* Reports go to fd 3 (a pipe to the parent) so that a test's own stdout is free. */
static int test_report_fd = -1;
static inline void test_report(const char *kind, const char *fmt, ...) {
	char buf[2048];
	int n = snprintf(buf, sizeof buf, "%s ", kind);
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	if (write(test_report_fd, buf, (size_t)n) < 0) {}
}

#define TEST_FAILF(...)                                                                    \
	do {                                                                               \
		test_report("FAIL", __VA_ARGS__);                                          \
		_exit(1);                                                                  \
	} while (0)
#define CHECK(c)                                                                           \
	do {                                                                               \
		if (!(c)) TEST_FAILF("%s:%d: CHECK(%s)", __FILE__, __LINE__, #c);          \
	} while (0)
#define CHECK_MSG(c, ...)                                                                  \
	do {                                                                               \
		if (!(c)) {                                                                \
			char m_[1024];                                                     \
			snprintf(m_, sizeof m_, __VA_ARGS__);                              \
			TEST_FAILF("%s:%d: %s", __FILE__, __LINE__, m_);                   \
		}                                                                          \
	} while (0)
#define CHECK_INT(a, b)                                                                    \
	do {                                                                               \
		long long a_ = (long long)(a), b_ = (long long)(b);                        \
		if (a_ != b_) TEST_FAILF("%s:%d: %s == %lld, expected %s == %lld", __FILE__, __LINE__, #a, a_, #b, b_); \
	} while (0)
#define CHECK_STR(a, b)                                                                    \
	do {                                                                               \
		const char *a_ = (a), *b_ = (b);                                           \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                                     \
			TEST_FAILF("%s:%d: %s == \"%.400s\", expected \"%.400s\"", __FILE__, __LINE__, #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
	} while (0)
#define CHECK_NEAR(a, b, tol)                                                              \
	do {                                                                               \
		double a_ = (a), b_ = (b);                                                 \
		if (!(fabs(a_ - b_) <= (tol)))                                             \
			TEST_FAILF("%s:%d: %s == %.9g, expected %.9g (tol %g)", __FILE__, __LINE__, #a, a_, b_, (double)(tol)); \
	} while (0)
#define SKIP(...)                                                                          \
	do {                                                                               \
		test_report("SKIP", __VA_ARGS__);                                          \
		_exit(77);                                                                 \
	} while (0)

/* Directory of the shared fixtures ($MOONSPACE_FIXTURES, default ../shared/fixtures). */
static inline const char *fixtures_dir(void) {
	const char *d = getenv("MOONSPACE_FIXTURES");
	return d && *d ? d : "../shared/fixtures";
}

/* Path of a fixture below fixtures_dir(), or a skip (a failure under CI=true) when absent.
 * Returns a static buffer valid until the next call. */
static inline const char *fixture_path(const char *rel) {
	static char path[4096];
	struct stat st;
	snprintf(path, sizeof path, "%s/%s", fixtures_dir(), rel);
	if (stat(path, &st) != 0) {
		const char *ci = getenv("CI");
		if (ci && strcmp(ci, "true") == 0) TEST_FAILF("fixture %s missing (CI=true)", path);
		SKIP("fixture %s missing", path);
	}
	return path;
}

/* Directory holding the binaries under test (bin/ or build/asan/bin). */
static inline const char *test_bin_dir(void) {
	const char *d = getenv("MS_BIN");
	return d && *d ? d : "bin";
}

/* Reads a whole file; returns malloc'd NUL-terminated bytes (length in *len) or NULL. */
static inline char *test_read_file(const char *path, size_t *len) {
	FILE *f = fopen(path, "rb");
	if (!f) return NULL;
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap + 1);
	size_t got;
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			char *nb = realloc(buf, cap * 2 + 1);
			if (!nb) { free(buf); buf = NULL; break; }
			buf = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (!buf) return NULL;
	buf[n] = 0;
	if (len) *len = n;
	return buf;
}

/* A checkpoint made from the stories260K fixture in a fresh directory (dir: a buffer of
 * at least 64 bytes), readable by other uids (the model worker's): weights and tokenizer
 * symlinked, config.json with its eos_token_id replaced by the JSON text eos (NULL keeps
 * it), and generation_config.json holding gen when gen is not NULL. Remove it with
 * test_rm_rf. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation" /* paths bounded; a cut one fails the test */
static inline void test_stories_ckpt(char *dir, const char *eos, const char *gen) {
	char fx[4096], cmd[16384];
	if (!realpath(fixture_path("models/stories260K"), fx)) TEST_FAILF("realpath: %s", strerror(errno));
	strcpy(dir, "/tmp/ms-ckpt-XXXXXX");
	if (!mkdtemp(dir) || chmod(dir, 0755) != 0) TEST_FAILF("mkdtemp: %s", strerror(errno));
	snprintf(cmd, sizeof cmd,
		 "ln -s %s/model.safetensors %s/tokenizer.json %s/tokenizer_config.json %s/ && "
		 "sed 's/\"eos_token_id\": *2,/\"eos_token_id\": %s,/' %s/config.json > %s/config.json",
		 fx, fx, fx, dir, eos ? eos : "2", fx, dir);
	if (system(cmd) != 0) TEST_FAILF("making %s failed", dir);
	if (gen) {
		snprintf(cmd, sizeof cmd, "%s/generation_config.json", dir);
		FILE *f = fopen(cmd, "w");
		if (!f || fputs(gen, f) < 0 || fclose(f) != 0) TEST_FAILF("writing %s failed", cmd);
	}
	/* not *.json: chmod follows the symlinks into the fixtures */
	snprintf(cmd, sizeof cmd, "chmod 0644 %s/config.json%s%s%s && grep -qF '\"eos_token_id\": %s,' %s/config.json",
		 dir, gen ? " " : "", gen ? dir : "", gen ? "/generation_config.json" : "", eos ? eos : "2", dir);
	if (system(cmd) != 0) TEST_FAILF("%s failed", cmd);
}

#pragma GCC diagnostic pop

static inline void test_rm_rf(const char *dir) {
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0) TEST_FAILF("%s failed", cmd);
}

static inline int test_run_one(const struct test_case *t) {
	int fds[2];
	if (pipe(fds) != 0) return 1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		test_report_fd = fds[1];
		alarm((unsigned)t->timeout_s);
		t->fn();
		test_report("PASS", "%s/%s", test_suite_name, t->name);
		fflush(stdout);
		_exit(0);
	}
	close(fds[1]);
	char buf[4096];
	size_t n = 0;
	ssize_t r;
	while (n < sizeof buf - 1 && (r = read(fds[0], buf + n, sizeof buf - 1 - n)) != 0) {
		if (r < 0) { if (errno == EINTR) continue; break; }
		n += (size_t)r;
	}
	close(fds[0]);
	buf[n] = 0;
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
	if (n > 0 && (strncmp(buf, "PASS", 4) == 0 || strncmp(buf, "SKIP", 4) == 0 || strncmp(buf, "FAIL", 4) == 0)) {
		/* SKIP/FAIL lines from the child lack the test name's prefix: add it */
		if (buf[0] == 'P') { printf("%s", buf); return 0; }
		printf("%.4s %s/%s:%s", buf, test_suite_name, t->name, buf + 4);
		return buf[0] == 'S' ? 0 : 1;
	}
	if (WIFSIGNALED(status))
		printf("FAIL %s/%s: killed by signal %d%s\n", test_suite_name, t->name, WTERMSIG(status),
		       WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
	else
		printf("FAIL %s/%s: exited %d without a report\n", test_suite_name, t->name, WEXITSTATUS(status));
	return 1;
}

int main(int argc, char **argv) {
	signal(SIGPIPE, SIG_IGN);
	int failed = 0;
	for (int i = 0; i < test_count; i++) {
		if (argc > 1) {
			int want = 0;
			for (int a = 1; a < argc; a++) want |= strcmp(argv[a], test_cases[i].name) == 0;
			if (!want) continue;
		}
		failed |= test_run_one(&test_cases[i]);
		fflush(stdout);
	}
	return failed ? 1 : 0;
}

#endif
