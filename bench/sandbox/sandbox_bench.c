/* bench/sandbox/sandbox_bench.c: app worker cold start (spawn -> ready) and the round
 * trip of a trivial call, medians over many runs. Goals: < 10 ms and < 100 us.
 * Also the worker's own CPU time (user+sys from wait4's rusage), which a loaded machine
 * distorts far less than wall time: per cold start (start, serve nothing, exit at EOF)
 * and per call (a worker that served the calls, minus a cold start, over the calls).
 * Usage: bin/bench/sandbox [starts] [calls]  (from the repository root) */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "tests/sandbox/worker_harness.h"

static int cmp_d(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	return n ? v[n / 2] : 0;
}

/* Ends the worker by EOF (as when the host closes) and returns its CPU seconds. */
static double worker_cpu(wk *w) {
	struct rusage ru;
	shutdown(w->fd, SHUT_WR);
	while (wait4(w->pid, &w->status, 0, &ru) < 0 && errno == EINTR) {}
	w->reaped = 1;
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static const char app[] = "app.interface{ fn = function(x) return x end, inputs = 'text', outputs = 'text' }";

int main(int argc, char **argv) {
	int starts = argc > 1 ? atoi(argv[1]) : 50, calls = argc > 2 ? atoi(argv[2]) : 5000;
	const char *dir = getenv("MS_BIN");
	char bin[4096];
	snprintf(bin, sizeof bin, "%s/moonspace-appworker", dir && *dir ? dir : "bin");
	double *t = malloc(sizeof(double) * (size_t)(starts > calls ? starts : calls));
	double *cpu = malloc(sizeof(double) * (size_t)starts);
	for (int i = 0; i < starts; i++) {
		wk w;
		double t0 = wk_now();
		if (wk_spawn(&w, bin)) return 1;
		json_t *r = wk_init(&w, wk_files1(app), 64, 10, NULL);
		t[i] = wk_now() - t0;
		if (!r || strcmp(wk_type(r), "ready")) {
			fprintf(stderr, "worker did not start: %s\n", w.log.data ? w.log.data : "");
			return 1;
		}
		json_decref(r);
		cpu[i] = worker_cpu(&w);
		wk_free(&w);
	}
	double cold = median(t, starts), cold_cpu = median(cpu, starts);
	/* baseline, same run: fork + exec + exit of /bin/true (process creation on this machine) */
	for (int i = 0; i < starts; i++) {
		double t0 = wk_now();
		pid_t p = fork();
		if (p == 0) {
			char *av[] = {"/bin/true", NULL}, *ev[] = {NULL};
			execve(av[0], av, ev);
			_exit(127);
		}
		int st;
		waitpid(p, &st, 0);
		t[i] = wk_now() - t0;
	}
	double base = median(t, starts);
	wk w;
	if (wk_spawn(&w, bin)) return 1;
	json_decref(wk_init(&w, wk_files1(app), 64, 10, NULL));
	for (int i = 0; i < calls; i++) {
		double t0 = wk_now();
		json_t *d = wk_call(&w, i + 1, "predict", json_pack("[s]", "hi"), 5, NULL);
		t[i] = wk_now() - t0;
		if (!d || strcmp(wk_type(d), "done")) return 1;
		json_decref(d);
	}
	double rt = median(t, calls);
	double call_cpu = (worker_cpu(&w) - cold_cpu) / calls;
	wk_free(&w);
	printf("cold start (spawn -> ready): median %.2f ms over %d runs (goal < 10 ms: %s)\n", cold * 1e3, starts,
	       cold < 0.010 ? "met" : "missed");
	printf("  baseline fork+exec+exit of /bin/true: median %.2f ms (cold start = %.2fx baseline, %.2f ms above it)\n",
	       base * 1e3, cold / base, (cold - base) * 1e3);
	printf("trivial call round trip:     median %.1f us over %d calls (goal < 100 us: %s)\n", rt * 1e6, calls,
	       rt < 100e-6 ? "met" : "missed");
	printf("worker CPU (user+sys): cold start median %.2f ms; per call %.1f us (mean over %d calls)\n",
	       cold_cpu * 1e3, call_cpu * 1e6, calls);
	free(cpu);
	free(t);
	return 0;
}
