/* host/hub_cli.c: `moonspace pull` and `moonspace cache`, the Hub client from the command
 * line (its own libuv loop). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/hub.h"
#include "host/hub_int.h"

#define BAR_FILES 8

typedef struct pull_file {
	char name[256];
	uint64_t bytes, size, t0_bytes;
	uint64_t t0;
	double rate;
	int done;
} pull_file;

typedef struct pull_state {
	int tty;
	int rc;
	int drawn;            /* lines of the last drawing, to redraw over them */
	int junk;             /* lines below the drawing's top that hold old text */
	uint64_t last_draw, started;
	uint64_t start_bytes; /* already cached when the fetch began */
	int have_start;
	pull_file files[BAR_FILES];
	ms_hub_progress last;
	int have_last;
} pull_state;

static void fmt_eta(double s, char *out, size_t len) {
	if (s < 0 || s > 360000) snprintf(out, len, "--:--");
	else if (s >= 3600) snprintf(out, len, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
	else snprintf(out, len, "%02d:%02d", (int)s / 60, (int)s % 60);
}

static void bar_line(const char *name, uint64_t bytes, uint64_t size, double rate, int done) {
	char b[32], sz[32], r[32], eta[32], bar[24];
	hub_fmt_size(bytes, b, sizeof b);
	hub_fmt_size(size, sz, sizeof sz);
	hub_fmt_size((uint64_t)rate, r, sizeof r);
	double frac = size ? (double)bytes / (double)size : (done ? 1 : 0);
	if (frac > 1) frac = 1;
	int fill = (int)(frac * 20);
	for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
	bar[20] = 0;
	fmt_eta(rate > 0 && size >= bytes ? (double)(size - bytes) / rate : -1, eta, sizeof eta);
	fprintf(stderr, "\x1b[2K%-36.36s [%s] %3d%% %10s / %-10s %10s/s ETA %s\n", name, bar, (int)(frac * 100), b, sz, r,
		done ? "done " : eta);
}

static void draw(pull_state *st, int force) {
	uint64_t now = ms_now_ns();
	if (!force && now - st->last_draw < 100000000ull) return;
	st->last_draw = now;
	if (st->drawn) fprintf(stderr, "\x1b[%dA", st->drawn);
	int n = 0;
	for (int i = 0; i < BAR_FILES; i++) {
		pull_file *pf = &st->files[i];
		if (!pf->name[0] || pf->done) continue;
		bar_line(pf->name, pf->bytes, pf->size, pf->rate, 0);
		n++;
	}
	char label[64];
	snprintf(label, sizeof label, "total (%d/%d files)", st->last.files_done, st->last.files_total);
	double el = (double)(now - st->started) / 1e9;
	double rate = el > 0.05 && st->last.bytes > st->start_bytes ? (double)(st->last.bytes - st->start_bytes) / el : 0;
	bar_line(label, st->last.bytes, st->last.total, rate, 0);
	n++;
	int extra = st->junk - n;
	for (int i = 0; i < extra; i++) fprintf(stderr, "\x1b[2K\n");
	if (extra > 0) fprintf(stderr, "\x1b[%dA", extra);
	st->drawn = n;
	st->junk = n;
	fflush(stderr);
}

static pull_file *slot(pull_state *st, const char *name) {
	pull_file *free_slot = NULL;
	for (int i = 0; i < BAR_FILES; i++) {
		if (!strcmp(st->files[i].name, name)) return &st->files[i];
		if (!free_slot && (!st->files[i].name[0] || st->files[i].done)) free_slot = &st->files[i];
	}
	if (free_slot) {
		memset(free_slot, 0, sizeof *free_slot);
		snprintf(free_slot->name, sizeof free_slot->name, "%s", name);
		free_slot->t0 = ms_now_ns();
	}
	return free_slot;
}

static void on_progress(const ms_hub_progress *p, void *ud) {
	pull_state *st = ud;
	st->last = *p;
	st->have_last = 1;
	if (!st->have_start) {
		st->have_start = 1;
		st->start_bytes = p->bytes;
		st->started = ms_now_ns();
	}
	if (!p->file) {
		if (st->tty) draw(st, 0);
		return;
	}
	pull_file *pf = slot(st, p->file);
	if (!pf) return;
	uint64_t now = ms_now_ns();
	int started = pf->bytes == 0 && !pf->done && p->file_bytes == 0 && !p->file_done;
	pf->bytes = p->file_bytes;
	pf->size = p->file_size;
	double dt = (double)(now - pf->t0) / 1e9; /* the file's average rate so far */
	if (dt > 0.05) pf->rate = (double)(pf->bytes - pf->t0_bytes) / dt;
	if (st->tty) {
		if (p->file_done) {
			/* finished files scroll up as a log line above the live bars */
			if (st->drawn) fprintf(stderr, "\x1b[%dA", st->drawn);
			char sz[32];
			hub_fmt_size(p->file_size, sz, sizeof sz);
			fprintf(stderr, "\x1b[2K%s (%s) done\n", p->file, sz);
			st->junk = st->junk > 0 ? st->junk - 1 : 0;
			st->drawn = 0;
			pf->done = 1;
			draw(st, 1);
		} else {
			draw(st, 0);
		}
		return;
	}
	char sz[32], r[32];
	if (p->file_done) {
		double el = (double)(now - st->started) / 1e9;
		hub_fmt_size(p->file_size, sz, sizeof sz);
		hub_fmt_size(el > 0.001 ? (uint64_t)((double)(p->bytes - st->start_bytes) / el) : 0, r, sizeof r);
		fprintf(stderr, "pull: %s (%s) done [%d/%d files, %.1f s, %s/s]\n", p->file, sz, p->files_done, p->files_total, el, r);
		pf->done = 1;
	} else if (started && p->file_size) {
		hub_fmt_size(p->file_size, sz, sizeof sz);
		fprintf(stderr, "pull: downloading %s (%s)\n", p->file, sz);
	} else if (started) {
		fprintf(stderr, "pull: downloading %s\n", p->file); /* its size comes with the HEAD */
	}
}

static void on_done(const ms_hub_result *r, void *ud) {
	pull_state *st = ud;
	if (st->tty && st->junk) {
		if (st->drawn) fprintf(stderr, "\x1b[%dA", st->drawn);
		for (int i = 0; i < st->junk; i++) fprintf(stderr, "\x1b[2K\n");
		fprintf(stderr, "\x1b[%dA", st->junk);
		st->drawn = st->junk = 0;
	}
	st->rc = r->rc;
	if (r->rc) {
		fprintf(stderr, "moonspace pull: %s\n", r->error);
		return;
	}
	char sz[32];
	hub_fmt_size(st->have_last ? st->last.total : 0, sz, sizeof sz);
	fprintf(stderr, "pull: %s@%s is commit %s: %d files%s%s%s\n", r->repo, r->rev, r->commit, r->n_files,
		st->have_last ? " (" : "", st->have_last ? sz : "", st->have_last ? ")" : "");
	if (r->offline) fprintf(stderr, "pull: answered from the cache, without the network\n");
	printf("%s\n", r->snapshot);
}

static int pull_usage(FILE *f) {
	fprintf(f, "usage: moonspace pull REPO[@REV] [--include GLOB]... [--parallel N]\n\n"
		   "Downloads a model repo from the Hub (HF_ENDPOINT, default https://huggingface.co) into the\n"
		   "Hugging Face cache (HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), laid out\n"
		   "as huggingface_hub does, and prints the snapshot directory. Without --include every file of\n"
		   "the repo is fetched; --include (repeatable) keeps the files matching a glob. Nothing is\n"
		   "downloaded twice; a pinned commit already cached needs no network (nor does HF_HUB_OFFLINE=1).\n"
		   "Environment: HF_ENDPOINT, HF_TOKEN (else $HF_HOME/token), HF_HOME, HF_HUB_CACHE,\n"
		   "HF_HUB_OFFLINE, HF_HUB_DOWNLOAD_TIMEOUT.\n");
	return f == stderr ? 2 : 0;
}

int ms_pull_main(int argc, char **argv) {
	const char *spec = NULL;
	const char *pats[65];
	int np = 0;
	ms_hub_opts opts = {0};
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return pull_usage(stdout);
		if (!strcmp(argv[i], "--include") && i + 1 < argc && np < 64) pats[np++] = argv[++i];
		else if (!strncmp(argv[i], "--include=", 10) && np < 64) pats[np++] = argv[i] + 10;
		else if (!strcmp(argv[i], "--parallel") && i + 1 < argc) opts.max_parallel = atoi(argv[++i]);
		else if (argv[i][0] == '-' || spec) return pull_usage(stderr);
		else spec = argv[i];
	}
	if (!spec) return pull_usage(stderr);
	if (!np) pats[np++] = "*";
	pats[np] = NULL;
	char repo[256], rev[256] = "main";
	const char *at = strchr(spec, '@');
	size_t rl = at ? (size_t)(at - spec) : strlen(spec);
	if (rl >= sizeof repo || (at && strlen(at + 1) >= sizeof rev)) return pull_usage(stderr);
	memcpy(repo, spec, rl);
	repo[rl] = 0;
	if (at) snprintf(rev, sizeof rev, "%s", at + 1);
	if (!ms_hub_valid_repo(repo)) {
		fprintf(stderr, "moonspace pull: '%s' is not a repo id (org/name)\n", repo);
		return 2;
	}
	const char *ret = getenv("MOONSPACE_HUB_RETRY_MS"); /* tests: short backoffs */
	if (ret) opts.retry_base_ms = (unsigned)atoi(ret);
	if ((ret = getenv("MOONSPACE_HUB_RETRIES"))) opts.max_retries = atoi(ret);
	if ((ret = getenv("MOONSPACE_HUB_HASH_PIECES"))) opts.hash_pieces = atoi(ret); /* tests: -1 reads every byte back */
	uv_loop_t loop;
	uv_loop_init(&loop);
	ms_hub *hub;
	if (ms_hub_new(&loop, NULL, &opts, &hub)) {
		fprintf(stderr, "moonspace pull: cannot start the client\n");
		return 1;
	}
	pull_state st = {.tty = isatty(2) && getenv("TERM") && strcmp(getenv("TERM"), "dumb") != 0, .rc = 1, .started = ms_now_ns()};
	int rc = ms_hub_fetch_start(hub, repo, rev, pats, on_progress, on_done, &st, NULL);
	if (rc) {
		fprintf(stderr, "moonspace pull: %s\n", ms_strerror(rc));
		st.rc = rc;
	} else {
		uv_run(&loop, UV_RUN_DEFAULT);
	}
	ms_hub_free(hub);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return st.rc ? 1 : 0;
}

static int cache_usage(FILE *f) {
	fprintf(f, "usage: moonspace cache ls          list cached repos, their revisions and sizes\n"
		   "       moonspace cache rm REPO     remove a repo (org/name) from the cache\n"
		   "The cache is HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.\n");
	return f == stderr ? 2 : 0;
}

int ms_cache_main(int argc, char **argv) {
	if (argc < 2) return cache_usage(stderr);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return cache_usage(stdout);
	ms_hub_env env;
	ms_hub_env_load(&env);
	if (!strcmp(argv[1], "ls") && argc == 2) {
		ms_buf out;
		ms_buf_init(&out);
		int rc = ms_hub_cache_ls(env.cache, &out);
		if (rc == MS_ENOENT) fprintf(stderr, "moonspace cache: %s does not exist yet (nothing cached)\n", env.cache);
		else if (out.len) fwrite(out.data, 1, out.len, stdout);
		ms_buf_free(&out);
		return 0;
	}
	if (!strcmp(argv[1], "rm") && argc == 3) {
		int rc = ms_hub_cache_rm(env.cache, argv[2]);
		if (rc == MS_ENOENT) {
			fprintf(stderr, "moonspace cache: %s is not in %s\n", argv[2], env.cache);
			return 1;
		}
		if (rc) {
			fprintf(stderr, "moonspace cache: cannot remove %s: %s\n", argv[2], ms_strerror(rc));
			return 1;
		}
		fprintf(stderr, "removed %s from %s\n", argv[2], env.cache);
		return 0;
	}
	return cache_usage(stderr);
}
