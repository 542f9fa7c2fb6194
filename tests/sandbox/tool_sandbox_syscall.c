/* tests/sandbox/tool_sandbox_syscall.c: a test-only worker build that locks itself down
 * with ms_isolate_apply and then makes one forbidden call directly.
 *
 *   tool_sandbox_syscall MODE [PORT]            isolated (must run as non-root)
 *   tool_sandbox_syscall MODE [PORT] --control  the same call without any lock-down
 *   tool_sandbox_syscall thread --threads       isolated with threads allowed
 *   tool_sandbox_syscall MODE [PORT] --reading  a model worker loading: files readable
 *   tool_sandbox_syscall MODE [PORT] --sealed   a model worker serving (read, then sealed)
 * MODE: open, open_write, socket, execve, fork, kill_parent, ptrace, thread, thread_open
 * (a thread started before the seal opens a file after it). Exit 0 when the call
 * succeeded, 3 when it was refused with an error; the filter ends it with SIGSYS. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/ms.h"
#include "sandbox/isolate.h"

static void *thread_fn(void *arg) { return arg; }

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int go;

static void *open_later(void *arg) {
	pthread_mutex_lock(&mu);
	while (!go) pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	*(int *)arg = open("/etc/hostname", O_RDONLY);
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	const char *mode = argv[1];
	int port = argc > 2 ? atoi(argv[2]) : 0, control = 0, threads = 0, reading = 0, sealed = 0;
	for (int i = 2; i < argc; i++) {
		control |= !strcmp(argv[i], "--control");
		threads |= !strcmp(argv[i], "--threads");
		reading |= !strcmp(argv[i], "--reading");
		sealed |= !strcmp(argv[i], "--sealed");
	}
	pthread_t early;
	int early_rc = -2;
	if (!control) {
		char err[256];
		ms_isolate_opts o = {.memory_mb = 64, .keep_fd = 2, .allow_threads = threads || reading || sealed,
				     .allow_reading = reading || sealed};
		if (ms_isolate_apply(&o, err, sizeof err) != 0) {
			fprintf(stderr, "isolate: %s\n", err);
			return 4;
		}
		if (!strcmp(mode, "thread_open") && pthread_create(&early, NULL, open_later, &early_rc) != 0) return 5;
		if (sealed && ms_isolate_seal(err, sizeof err) != 0) {
			fprintf(stderr, "seal: %s\n", err);
			return 4;
		}
	}
	int rc = -1;
	char tmp[64];
	snprintf(tmp, sizeof tmp, "/tmp/ms-sandbox-write-%d", (int)getpid());
	if (!strcmp(mode, "open")) rc = open("/etc/hostname", O_RDONLY);
	else if (!strcmp(mode, "open_write")) {
		rc = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (rc >= 0) unlink(tmp);
	} else if (!strcmp(mode, "thread_open")) {
		if (control && pthread_create(&early, NULL, open_later, &early_rc) != 0) return 5;
		pthread_mutex_lock(&mu);
		go = 1;
		pthread_cond_signal(&cv);
		pthread_mutex_unlock(&mu);
		pthread_join(early, NULL);
		rc = early_rc;
	}
	else if (!strcmp(mode, "socket")) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		rc = s < 0 ? -1 : connect(s, (struct sockaddr *)&a, sizeof a);
	} else if (!strcmp(mode, "execve")) {
		char *av[] = {"/bin/true", NULL}, *ev[] = {NULL};
		execve("/bin/true", av, ev);
		rc = -1;
	} else if (!strcmp(mode, "fork")) {
		pid_t p = fork();
		if (p == 0) _exit(0);
		int st;
		rc = p < 0 ? -1 : waitpid(p, &st, 0) == p ? 0 : -1;
	} else if (!strcmp(mode, "kill_parent")) rc = kill(getppid(), 0);
	else if (!strcmp(mode, "ptrace")) rc = (int)ptrace(PTRACE_TRACEME, 0, NULL, NULL);
	else if (!strcmp(mode, "thread")) {
		pthread_t t;
		rc = pthread_create(&t, NULL, thread_fn, NULL) == 0 ? pthread_join(t, NULL) : -1;
	} else return 2;
	return rc < 0 ? 3 : 0;
}
