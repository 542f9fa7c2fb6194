/* tests/sandbox/test_sandbox_isolate.c: the seccomp filter and limits, with raw syscalls
 * from tool_sandbox_syscall: each forbidden call ends the isolated build with SIGSYS (or is
 * refused), the control build makes it successfully, and this process is unaffected. */
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tests/testlib.h"

TEST_SUITE("sandbox_isolate")

/* Runs the tool; returns the wait status. as_nobody drops to 65534 when root. */
static int run_tool(const char *mode, int port, const char *flag, int as_nobody) {
	char bin[4096], ports[16];
	snprintf(bin, sizeof bin, "%s/tests/tool_sandbox_syscall", test_bin_dir());
	snprintf(ports, sizeof ports, "%d", port);
	pid_t p = fork();
	if (p == 0) {
		if (as_nobody && getuid() == 0 && (setgroups(0, NULL) || setgid(65534) || setuid(65534))) _exit(126);
		char *av[] = {bin, (char *)mode, ports, (char *)flag, NULL};
		char *ev[] = {"MS_ASAN=1", "ASAN_OPTIONS=detect_leaks=0", NULL};
		execve(bin, av, ev);
		_exit(127);
	}
	int st = 0;
	while (waitpid(p, &st, 0) < 0 && errno == EINTR) {}
	return st;
}

static int listener(int *port) {
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof a;
	if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4) || getsockname(s, (struct sockaddr *)&a, &len)) return -1;
	*port = ntohs(a.sin_port);
	return s;
}

TEST(raw_syscalls_end_with_sigsys) {
	int port;
	int ls = listener(&port);
	CHECK(ls >= 0);
	const char *modes[] = {"open", "socket", "execve", "fork", "kill_parent", "ptrace"};
	for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
		int st = run_tool(modes[i], port, "--control", 0);
		CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "control %s: status %#x", modes[i], st);
		st = run_tool(modes[i], port, "", 1);
		int contained = (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) || (WIFEXITED(st) && WEXITSTATUS(st) == 3);
		CHECK_MSG(contained, "isolated %s: status %#x (want SIGSYS or refused)", modes[i], st);
		printf("  %s: control ok, isolated %s\n", modes[i], WIFSIGNALED(st) ? "SIGSYS" : "refused");
	}
	close(ls);
	CHECK(kill(getpid(), 0) == 0); /* and we are still here */
}

TEST(threads_only_when_allowed) {
	int st = run_tool("thread", 0, "--threads", 1);
	CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "threads allowed: status %#x", st);
	st = run_tool("thread", 0, "", 1);
	CHECK_MSG((WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) || (WIFEXITED(st) && WEXITSTATUS(st) == 3),
		  "threads not allowed: status %#x", st);
}

/* A model worker locks down before it reads its checkpoint: while loading it may open
 * files read-only, and nothing else; once sealed, not even that, in every thread. */
TEST(model_worker_reading_then_sealed) {
	int port;
	int ls = listener(&port);
	CHECK(ls >= 0);
	int st = run_tool("open", port, "--reading", 1);
	CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reading: open read-only: status %#x", st);
	const char *forbidden[] = {"open_write", "socket", "execve", "fork"};
	for (size_t i = 0; i < sizeof forbidden / sizeof *forbidden; i++) {
		st = run_tool(forbidden[i], port, "--control", 1);
		CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "control %s: status %#x", forbidden[i], st);
		st = run_tool(forbidden[i], port, "--reading", 1);
		CHECK_MSG((WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) || (WIFEXITED(st) && WEXITSTATUS(st) == 3),
			  "reading: %s: status %#x (want SIGSYS or refused)", forbidden[i], st);
	}
	const char *after_seal[] = {"open", "thread_open"};
	for (size_t i = 0; i < sizeof after_seal / sizeof *after_seal; i++) {
		st = run_tool(after_seal[i], port, "--control", 1);
		CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "control %s: status %#x", after_seal[i], st);
		st = run_tool(after_seal[i], port, "--sealed", 1);
		CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS, "sealed: %s: status %#x (want SIGSYS)", after_seal[i], st);
	}
	close(ls);
}

TEST(refuses_uid_0) {
	if (getuid() != 0) SKIP("not root");
	int st = run_tool("open", 0, "", 0);
	CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 4, "as root: status %#x (want refusal, 4)", st);
}
