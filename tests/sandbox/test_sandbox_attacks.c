/* tests/sandbox/test_sandbox_attacks.c: every app under tests/sandbox/attacks/ runs in
 * a real worker, driven as the host drives it (deadline SIGKILL at timeout + 1 s). Contained
 * means: a clear error (init_error, or an error answer; or the host's deadline kill) within
 * the card's timeout + 2 s, the worker's peak RSS within memory + 32 MiB (release build),
 * and a fresh worker then serving the control app's exact expected value. */
#include "tests/testlib.h"
#include "tests/sandbox/worker_harness.h"

TEST_SUITE("sandbox_attacks")

#define ATTACK_DIR "tests/sandbox/attacks"
#ifdef MS_ASAN
#define PARALLEL 2 /* ASan workers are slow to start and run: keep the machine unloaded */
#else
#define PARALLEL 4
#endif

static const char control_app[] =
	"app.interface{ fn = function(name, intensity) return 'Hello, ' .. name .. ('!'):rep(intensity) end,\n"
	"  inputs = { 'text', ui.slider{minimum = 1, maximum = 10, value = 2, step = 1, label = 'Intensity'} },\n"
	"  outputs = 'text', examples = { {'World', 3} } }\n";

/* Runs one attack; writes one line "ok NAME how" or "bad NAME why" to out. */
static void run_attack(const char *name, int out) {
	char dir[1024], bin[1024], line[2048];
	snprintf(dir, sizeof dir, "%s/%s", ATTACK_DIR, name);
	snprintf(bin, sizeof bin, "%s/moonspace-appworker", test_bin_dir());
	int timeout_s = 60, memory_mb = 256;
	json_t *files = wk_load_app_dir(dir, &timeout_s, &memory_mb);
	wk w;
	const char *how = NULL;
	char why[600] = "";
	double t0 = wk_now();
	if (!files || wk_spawn(&w, bin) != 0) {
		snprintf(line, sizeof line, "bad %s cannot start\n", name);
		if (write(out, line, strlen(line)) < 0) {}
		return;
	}
	t0 = wk_now(); /* containment time counts from the init (load-time attacks) or the call */
	json_t *r = wk_init(&w, files, memory_mb, timeout_s, NULL);
	double limit = timeout_s + 2.0;
	if (r && !strcmp(wk_type(r), "init_error")) {
		how = "init_error";
		snprintf(why, sizeof why, "%s", json_string_value(json_object_get(r, "message")));
	} else if (r && !strcmp(wk_type(r), "ready")) {
		t0 = wk_now();
		json_t *d = wk_call(&w, 1, "predict", json_pack("[s]", "x"), timeout_s + 1.0, NULL);
		if (d && !strcmp(wk_type(d), "error")) {
			how = json_string_value(json_object_get(d, "kind"));
			/* the worker's own hard stop (no hook fired: C code) answers, then exits 3 */
			if (wk_wait_exit(&w, 0.1) && WIFEXITED(w.status) && WEXITSTATUS(w.status) == 3) how = "timeout(hard-stop)";
			snprintf(why, sizeof why, "%s", json_string_value(json_object_get(d, "message")));
		} else if (d) {
			snprintf(why, sizeof why, "answered %s instead of an error", wk_type(d));
		} else if (!wk_wait_exit(&w, 0)) {
			how = "deadline-kill"; /* the host's SIGKILL path: it answers a timeout error */
			snprintf(why, sizeof why, "no answer by timeout + 1 s");
		} else {
			how = "worker-exit";
			snprintf(why, sizeof why, "worker ended (status %d)", w.status);
		}
	} else {
		snprintf(why, sizeof why, "no init answer");
	}
	double took = wk_now() - t0;
	wk_kill(&w);
	long peak_mb = w.maxrss_kb / 1024;
	int ok = how != NULL && took <= limit;
	if (how && took > limit) snprintf(why, sizeof why, "took %.2f s > %.1f s", took, limit);
#ifndef MS_ASAN /* ASan's shadow and quarantine make RSS meaningless here */
	if (ok && peak_mb > memory_mb + 32) {
		ok = 0;
		snprintf(why, sizeof why, "peak RSS %ld MiB > %d + 32 MiB", peak_mb, memory_mb);
	}
#endif
	wk_free(&w);
	if (ok) { /* the next app still serves */
		wk c;
		json_t *d = NULL;
		if (wk_spawn(&c, bin) == 0) {
			json_t *rr = wk_init(&c, wk_files1(control_app), 64, 5, NULL);
			if (rr && !strcmp(wk_type(rr), "ready")) d = wk_call(&c, 1, "predict", json_pack("[s,i]", "World", 3), 5, NULL);
			wk_free(&c);
		}
		json_t *v = json_array_get(json_object_get(d, "data"), 0);
		if (!json_is_string(v) || strcmp(json_string_value(v), "Hello, World!!!") != 0) {
			ok = 0;
			snprintf(why, sizeof why, "the control app did not answer Hello, World!!!");
		}
	}
	for (char *p = why; *p; p++)
		if (*p == '\n') *p = ' ';
	snprintf(line, sizeof line, "%s %s %s %.2fs %ldMiB: %.300s\n", ok ? "ok" : "bad", name, how ? how : "-", took, peak_mb, why);
	if (write(out, line, strlen(line)) < 0) {}
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

TEST_T(attack_suite, 300) {
	DIR *d = opendir(ATTACK_DIR);
	if (!d) SKIP("%s not found (run from the repository root)", ATTACK_DIR);
	char *names[256];
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < 256)
		if (e->d_name[0] != '.' && e->d_type == DT_DIR) names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof *names, cmp_str);
	int fds[2];
	CHECK(pipe(fds) == 0);
	int running = 0, next = 0;
	while (next < n || running > 0) {
		while (running < PARALLEL && next < n) {
			pid_t p = fork();
			if (p == 0) {
				close(fds[0]);
				run_attack(names[next], fds[1]);
				_exit(0);
			}
			next++, running++;
		}
		int st;
		if (wait(&st) > 0) running--;
	}
	close(fds[1]);
	char buf[1 << 16];
	size_t len = 0;
	ssize_t r;
	while ((r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
	buf[len] = 0;
	int ran = 0, contained = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		ran++;
		contained += !strncmp(line, "ok ", 3);
		printf("  %s\n", line);
	}
	printf("attacks: %d ran, %d contained\n", ran, contained);
	CHECK_INT(ran, n);
	CHECK_MSG(contained == ran, "%d of %d attacks not contained (see the lines above)", ran - contained, ran);
}
