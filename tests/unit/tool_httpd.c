/* tests/unit/tool_httpd.c: the HTTP server alone, for benchmarks and poking by hand.
 *
 *   bin/tests/tool_httpd [--host H] [--port P] [--root DIR] [--log]
 * Serves DIR under /static/ plus the test routes of http_testsrv.h; prints
 * "listening on PORT" on stdout once bound; stops on SIGINT/SIGTERM. Access log off
 * unless --log. */
#include <signal.h>

#include "tests/unit/http_testsrv.h"

static uv_signal_t sigs[2];

static void on_signal(uv_signal_t *s, int signum) {
	(void)signum;
	testsrv *ts = s->data;
	ms_http_server_close(ts->srv);
	for (int i = 0; i < 2; i++) uv_close((uv_handle_t *)&sigs[i], NULL);
}

int main(int argc, char **argv) {
	const char *host = "127.0.0.1", *root = ".";
	int port = 0, log = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
		else if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
		else if (!strcmp(argv[i], "--log")) log = 1;
		else {
			fprintf(stderr, "usage: %s [--host H] [--port P] [--root DIR] [--log]\n", argv[0]);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	uv_loop_t *loop = uv_default_loop();
	testsrv ts = {.loop = loop, .root = root};
	ms_http_limits lim;
	ms_http_limits_default(&lim);
	lim.access_log = log;
	int rc = ms_http_server_new(loop, host, port, &lim, testsrv_handler, &ts, &ts.srv);
	if (rc) {
		fprintf(stderr, "tool_httpd: %s\n", ms_strerror(rc));
		return 1;
	}
	printf("listening on %d\n", ms_http_server_port(ts.srv));
	fflush(stdout);
	int signums[2] = {SIGINT, SIGTERM};
	for (int i = 0; i < 2; i++) {
		uv_signal_init(loop, &sigs[i]);
		sigs[i].data = &ts;
		uv_signal_start(&sigs[i], on_signal, signums[i]);
	}
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	return 0;
}
