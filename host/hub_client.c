/* host/hub_client.c: the Hub client (see hub.h): libcurl's multi interface driven by the
 * libuv loop (each curl socket is a uv_poll_t, curl's timer a uv_timer_t), so downloads
 * never block the host.
 *
 * A fetch lists the repo (/api/models/{repo}/revision/{rev}?blobs=true), then runs each
 * matching file through: HEAD (relative redirects followed, absolute ones give the
 * download URL) -> lock .locks/.../<etag>.lock (flock, polled, so two processes or two
 * fetches download a blob once) -> GET into blobs/<etag>.incomplete (resumed with Range)
 * -> size and sha256 checks -> rename to blobs/<etag> -> snapshot symlink.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/hub.h"
#include "host/hub_int.h"

const char *const ms_hub_default_patterns[] = {
	"config*.json", "generation_config.json", "tokenizer*", "special_tokens_map.json", "vocab.txt",
	"vocab.json", "merges.txt", "*.safetensors", "model.safetensors.index.json", "*.safetensors.index.json",
	"sentence_bert_config.json", "modules.json", "1_Pooling/config.json", "README.md", NULL,
};

#define MAX_REDIRECTS 5
#define API_MAX_BODY (64u << 20)
#define PROGRESS_NS 100000000ull
#define HASH_PIECES 8 /* default bound of the sha256 thread's pieces (MiB per file) */

typedef struct sockctx {
	uv_poll_t poll;
	curl_socket_t fd;
	ms_hub *hub;
	struct sockctx *next, *prev;
} sockctx;

typedef struct xfer xfer;
typedef void (*xfer_done_fn)(xfer *x, CURLcode res);

/* One curl easy handle and what its callbacks collect. */
struct xfer {
	CURL *easy;
	struct curl_slist *hdrs;
	xfer_done_fn on_done;
	void *owner;
	long status;
	char commit[48], etag[96], linked_etag[96], linked_size[32], location[2048], error_code[64], error_msg[256];
	char content_range[96];
	ms_buf body;       /* API bodies, and the first bytes of error bodies */
	size_t body_max;
	char errbuf[CURL_ERROR_SIZE];
};

enum { FS_QUEUED, FS_HEAD, FS_LOCK, FS_GET, FS_VERIFY, FS_DONE, FS_FAILED };

typedef struct hfile hfile;
struct hfile {
	ms_hub_fetch *f;
	char *path;
	uint64_t size;          /* from the listing, then the HEAD */
	char etag[96];
	char url[8192];         /* the resolve URL */
	char get_url[8192];     /* where the bytes come from */
	int state;
	int redirects, tries;
	xfer *x;
	int fd;                 /* the .incomplete file */
	int lockfd;
	uint64_t have;          /* bytes received: on disk + buffered */
	uint64_t disk;          /* bytes written to the .incomplete file */
	struct piece *wbuf;     /* received bytes are written in big pieces (few syscalls) */
	size_t wlen;
	uint64_t range_from;    /* the offset the current GET asked for */
	int got_first;
	int may_pause;          /* plain HTTP/1.x: pausing is safe with this libcurl (see get_body_cb) */
	int sha_ok;             /* the digest covers every byte from 0 */
	EVP_MD_CTX *sha;
	uv_timer_t timer;       /* lock polling and retry backoff */
	uint64_t last_ns;
	int io_error;
	uv_work_t work;         /* sha256 of a resumed file */
	int work_rc, work_pending;
	int dead;               /* its fetch is gone: free once the thread pool gives it back */
	struct hasher *hs;      /* sha256 on its own thread, reading behind the writer */
	int verify_waiting;     /* the bytes are in; waiting for the hasher */
	ms_hub *hub;
	hfile *qnext;
};

struct ms_hub_fetch {
	ms_hub *hub;
	char *repo, *rev;
	char **patterns;
	int npatterns;
	ms_hub_progress_cb progress;
	ms_hub_done_cb done;
	void *ud;
	char commit[48];
	char repo_dir[PATH_MAX];
	char snapshot[PATH_MAX + 64];
	xfer *api;
	hfile **files;
	int nfiles, files_done, running;
	uint64_t total, base_bytes;
	int finished, offline, n_ok;
	int defaults;           /* patterns are ms_hub_default_patterns */
	int rc;
	char *error;
	uv_timer_t timer;       /* defers the start (callbacks never run inside ms_hub_fetch_start) */
	uint64_t rate_t0, rate_b0;
	double rate;
	ms_hub_fetch *next, *prev;
};

struct ms_hub {
	uv_loop_t *loop;
	ms_hub_env env;
	ms_hub_opts opts;
	CURLM *multi;
	uv_timer_t timer;
	int open_handles;       /* the hub is freed when this drops to 0 after ms_hub_free */
	int closing;
	sockctx *socks;
	ms_hub_fetch *fetches;
	hfile *qhead, *qtail;   /* files waiting for a slot */
	int active;
};

static void hub_release(ms_hub *hub);
static void file_unlock(hfile *hf);
static void hasher_detach(hfile *hf);
static void file_next(hfile *hf);
static void file_fail(hfile *hf, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fetch_maybe_done(ms_hub_fetch *f);
static void fetch_finish(ms_hub_fetch *f, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void schedule(ms_hub *hub);

/* ---- curl on the loop ---- */

static void on_handle_closed(uv_handle_t *h) {
	ms_hub *hub = h->data;
	free(h == (uv_handle_t *)&hub->timer ? NULL : (void *)h); /* the hub's own timer is inside the hub */
	hub_release(hub);
}

static void sock_closed(uv_handle_t *h) {
	sockctx *c = (sockctx *)h;
	ms_hub *hub = c->hub;
	free(c);
	hub_release(hub);
}

static void sock_drop(ms_hub *hub, sockctx *c) {
	if (c->prev) c->prev->next = c->next;
	else hub->socks = c->next;
	if (c->next) c->next->prev = c->prev;
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, sock_closed);
}

static void check_multi(ms_hub *hub) {
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(hub->multi, &left))) {
		if (m->msg != CURLMSG_DONE) continue;
		CURL *e = m->easy_handle;
		CURLcode res = m->data.result;
		xfer *x = NULL;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &x->status);
		curl_multi_remove_handle(hub->multi, e);
		x->on_done(x, res);
	}
}

static void on_poll(uv_poll_t *p, int status, int events) {
	sockctx *c = (sockctx *)p;
	ms_hub *hub = c->hub;
	int flags = 0, running;
	if (status < 0) flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(hub->multi, c->fd, flags, &running);
	check_multi(hub);
}

static int sock_cb(CURL *e, curl_socket_t s, int action, void *userp, void *socketp) {
	(void)e;
	ms_hub *hub = userp;
	sockctx *c = socketp;
	if (action == CURL_POLL_REMOVE) {
		if (c) {
			curl_multi_assign(hub->multi, s, NULL);
			sock_drop(hub, c);
		}
		return 0;
	}
	if (!c) {
		c = calloc(1, sizeof *c);
		if (!c) return -1;
		c->fd = s;
		c->hub = hub;
		if (uv_poll_init_socket(hub->loop, &c->poll, s)) {
			free(c);
			return -1;
		}
		hub->open_handles++;
		c->next = hub->socks;
		if (c->next) c->next->prev = c;
		hub->socks = c;
		curl_multi_assign(hub->multi, s, c);
	}
	int ev = ((action & CURL_POLL_IN) ? UV_READABLE : 0) | ((action & CURL_POLL_OUT) ? UV_WRITABLE : 0);
	uv_poll_start(&c->poll, ev, on_poll);
	return 0;
}

static void on_curl_timer(uv_timer_t *t) {
	ms_hub *hub = t->data;
	int running;
	curl_multi_socket_action(hub->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi(hub);
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp) {
	(void)m;
	ms_hub *hub = userp;
	if (hub->closing) return 0;
	if (timeout_ms < 0) uv_timer_stop(&hub->timer);
	else uv_timer_start(&hub->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- transfers ---- */

static size_t header_cb(char *buf, size_t size, size_t n, void *ud) {
	xfer *x = ud;
	size_t len = size * n;
	char line[2300];
	size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
	memcpy(line, buf, l);
	line[l] = 0;
	while (l && (line[l - 1] == '\r' || line[l - 1] == '\n')) line[--l] = 0;
	if (!strncmp(line, "HTTP/", 5)) { /* a new response (after 100 or a followed redirect) */
		x->commit[0] = x->etag[0] = x->linked_etag[0] = x->linked_size[0] = x->location[0] = 0;
		x->error_code[0] = x->error_msg[0] = x->content_range[0] = 0;
		return len;
	}
	char *colon = strchr(line, ':');
	if (!colon) return len;
	*colon = 0;
	char *v = colon + 1;
	while (*v == ' ' || *v == '\t') v++;
	struct { const char *name; char *dst; size_t cap; } map[] = {
		{"x-repo-commit", x->commit, sizeof x->commit},
		{"etag", x->etag, sizeof x->etag},
		{"x-linked-etag", x->linked_etag, sizeof x->linked_etag},
		{"x-linked-size", x->linked_size, sizeof x->linked_size},
		{"location", x->location, sizeof x->location},
		{"x-error-code", x->error_code, sizeof x->error_code},
		{"x-error-message", x->error_msg, sizeof x->error_msg},
		{"content-range", x->content_range, sizeof x->content_range},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(map); i++)
		if (!strcasecmp(line, map[i].name)) snprintf(map[i].dst, map[i].cap, "%s", v);
	return len;
}

static size_t body_cb(char *buf, size_t size, size_t n, void *ud) {
	xfer *x = ud;
	size_t len = size * n;
	if (x->body.len + len > x->body_max) return x->body.len >= x->body_max ? len : len; /* keep the start only */
	ms_buf_append(&x->body, buf, len);
	return len;
}

static xfer *xfer_new(ms_hub *hub, const char *url, void *owner, xfer_done_fn done) {
	xfer *x = calloc(1, sizeof *x);
	if (!x) return NULL;
	x->easy = curl_easy_init();
	if (!x->easy) {
		free(x);
		return NULL;
	}
	x->owner = owner;
	x->on_done = done;
	x->body_max = 4096;
	ms_buf_init(&x->body);
	CURL *e = x->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "moonspace/0.1; hf_hub/compatible");
	long t = (long)(hub->env.timeout_s * 1000);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, t);
	/* a stalled transfer (nothing for timeout_s) is a dropped connection */
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)(hub->env.timeout_s + 0.999));
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L * 1024);
	return x;
}

static void xfer_add_header(xfer *x, const char *h) { x->hdrs = curl_slist_append(x->hdrs, h); }

static void xfer_auth(ms_hub *hub, xfer *x) {
	if (!hub->env.token[0]) return;
	char h[600];
	snprintf(h, sizeof h, "authorization: Bearer %s", hub->env.token);
	xfer_add_header(x, h);
}

static int xfer_start(ms_hub *hub, xfer *x) {
	if (x->hdrs) curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
	return curl_multi_add_handle(hub->multi, x->easy) == CURLM_OK ? 0 : MS_ENOMEM;
}

static void xfer_free(xfer *x) {
	if (!x) return;
	curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->hdrs);
	ms_buf_free(&x->body);
	free(x);
}

/* Removes a transfer still running (cancel). */
static void xfer_abort(ms_hub *hub, xfer *x) {
	if (!x) return;
	curl_multi_remove_handle(hub->multi, x->easy);
	xfer_free(x);
}

/* The sentence for a failed HTTP answer, as huggingface_hub's hf_raise_for_status sorts
 * them. Returns the MS_E* code. */
static int http_error(ms_hub_fetch *f, xfer *x, const char *what, char *msg, size_t len) {
	const char *ec = x->error_code;
	const char *em = x->error_msg[0] ? x->error_msg : "";
	if (!strcmp(ec, "GatedRepo"))
		return ms_errf(msg, len, MS_EDENIED,
			       "%s is gated: accept its conditions on %s/%s with your account, then set HF_TOKEN to a token of that account",
			       f->repo, f->hub->env.endpoint, f->repo);
	if (!strcmp(ec, "RepoNotFound") || (x->status == 401 && !strstr(em, "Invalid credentials")))
		return ms_errf(msg, len, MS_ENOENT, "repository %s not found on %s (check the id; %s)", f->repo, f->hub->env.endpoint,
			       f->hub->env.token[0]
				       ? "if it is private or gated, the token given (HF_TOKEN or $HF_HOME/token) has no access to it"
				       : "a private or gated repo needs a token: set HF_TOKEN or write it to $HF_HOME/token");
	if (!strcmp(ec, "RevisionNotFound"))
		return ms_errf(msg, len, MS_ENOENT, "revision '%s' not found in %s (check the branch, tag or commit)", f->rev, f->repo);
	if (!strcmp(ec, "EntryNotFound"))
		return ms_errf(msg, len, MS_ENOENT, "%s not found in %s@%s", what, f->repo, f->rev);
	if (x->status == 401)
		return ms_errf(msg, len, MS_EDENIED, "the token was refused by %s (invalid credentials): check HF_TOKEN or $HF_HOME/token",
			       f->hub->env.endpoint);
	if (x->status == 403)
		return ms_errf(msg, len, MS_EDENIED, "access to %s is forbidden (403)%s%s: the token lacks permission for this repo", f->repo,
			       *em ? ": " : "", em);
	if (x->status == 429)
		return ms_errf(msg, len, MS_EBUSY, "rate limited by %s (429 Too Many Requests): wait and retry, or use a token", f->hub->env.endpoint);
	if (x->status == 404)
		return ms_errf(msg, len, MS_ENOENT, "%s not found in %s@%s (404)", what, f->repo, f->rev);
	return ms_errf(msg, len, MS_EPROTO, "%s: %s answered HTTP %ld%s%s", what, f->hub->env.endpoint, x->status, *em ? ": " : "", em);
}

static int retryable_status(long s) { return s == 408 || s == 429 || s >= 500; }

static int net_error(CURLcode c) {
	return c == CURLE_COULDNT_CONNECT || c == CURLE_COULDNT_RESOLVE_HOST || c == CURLE_COULDNT_RESOLVE_PROXY ||
	       c == CURLE_OPERATION_TIMEDOUT || c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR || c == CURLE_GOT_NOTHING ||
	       c == CURLE_PARTIAL_FILE || c == CURLE_SSL_CONNECT_ERROR;
}

static int net_message(ms_hub *hub, CURLcode c, const char *errbuf, char *msg, size_t len) {
	return ms_errf(msg, len, MS_ENET,
		       "cannot reach %s (%s)%s: check the network, HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only",
		       hub->env.endpoint, *errbuf ? errbuf : curl_easy_strerror(c),
		       c == CURLE_OPERATION_TIMEDOUT ? "; HF_HUB_DOWNLOAD_TIMEOUT raises the time limit" : "");
}

/* ---- progress ---- */

static void report(ms_hub_fetch *f, hfile *hf, int force) {
	if (!f->progress) return;
	uint64_t now = ms_now_ns();
	if (hf && !force && now - hf->last_ns < PROGRESS_NS) return;
	if (hf) hf->last_ns = now;
	uint64_t bytes = f->base_bytes;
	for (int i = 0; i < f->nfiles; i++)
		if (f->files[i]->state != FS_DONE) bytes += f->files[i]->have;
	if (!f->rate_t0) f->rate_t0 = now, f->rate_b0 = bytes;
	double dt = (double)(now - f->rate_t0) / 1e9;
	if (dt >= 0.5) {
		double r = (double)(bytes - f->rate_b0) / dt;
		f->rate = f->rate > 0 ? 0.5 * f->rate + 0.5 * r : r;
		f->rate_t0 = now;
		f->rate_b0 = bytes;
	}
	ms_hub_progress p = {
		.repo = f->repo, .file = hf ? hf->path : NULL,
		.file_bytes = hf ? (hf->state == FS_DONE ? hf->size : hf->have) : 0, .file_size = hf ? hf->size : 0,
		.file_done = hf && hf->state == FS_DONE, .bytes = bytes, .total = f->total,
		.files_done = f->files_done, .files_total = f->nfiles, .rate = f->rate,
	};
	f->progress(&p, f->ud);
}

/* ---- files ---- */

static void timer_closed_free_file(uv_handle_t *h) {
	hfile *hf = h->data;
	ms_hub *hub = hf->hub;
	if (hf->fd >= 0) close(hf->fd);
	if (hf->sha) EVP_MD_CTX_free(hf->sha);
	file_unlock(hf);
	free(hf->wbuf);
	free(hf->path);
	free(hf);
	hub_release(hub);
}

static void file_close(hfile *hf) {
	hf->dead = 1;
	if (hf->work_pending) return; /* sha_after closes it */
	hf->timer.data = hf;
	uv_close((uv_handle_t *)&hf->timer, timer_closed_free_file);
}

static void file_unlock(hfile *hf) {
	if (hf->lockfd >= 0) {
		flock(hf->lockfd, LOCK_UN);
		close(hf->lockfd);
		hf->lockfd = -1;
	}
}

/* Releases what a file holds (transfer, fds, lock, slot). */
static void file_release(hfile *hf) {
	ms_hub *hub = hf->f->hub;
	if (hf->x) xfer_abort(hub, hf->x);
	hf->x = NULL;
	hasher_detach(hf);
	hf->verify_waiting = 0;
	free(hf->wbuf);
	hf->wbuf = NULL;
	hf->wlen = 0;
	if (!hf->work_pending) { /* else the thread pool still reads them: freed with hf */
		if (hf->fd >= 0) close(hf->fd);
		hf->fd = -1;
		if (hf->sha) EVP_MD_CTX_free(hf->sha);
		hf->sha = NULL;
	}
	file_unlock(hf);
	uv_timer_stop(&hf->timer);
	if (hf->state >= FS_HEAD && hf->state <= FS_VERIFY) {
		hub->active--;
		hf->f->running--;
	}
}

static void file_ok(hfile *hf) {
	ms_hub_fetch *f = hf->f;
	int was_active = hf->state >= FS_HEAD && hf->state <= FS_VERIFY;
	file_release(hf);
	hf->state = FS_DONE;
	hf->have = hf->size;
	f->base_bytes += hf->size;
	f->files_done++;
	f->n_ok++;
	report(f, hf, 1);
	(void)was_active;
	schedule(f->hub);
	fetch_maybe_done(f);
}

static void file_fail(hfile *hf, int rc, const char *fmt, ...) {
	ms_hub_fetch *f = hf->f;
	file_release(hf);
	hf->state = FS_FAILED;
	f->files_done++;
	if (!f->error) {
		char msg[1024];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof msg, fmt, ap);
		va_end(ap);
		f->error = strdup(msg);
		f->rc = rc;
	}
	schedule(f->hub);
	fetch_maybe_done(f);
}

static void blob_path(hfile *hf, char *out, size_t len, const char *suffix) {
	snprintf(out, len, "%s/blobs/%s%s", hf->f->repo_dir, hf->etag, suffix);
}

static int link_blob(hfile *hf) {
	ms_hub_fetch *f = hf->f;
	return ms_hub_cache_link(f->hub->env.cache, f->repo, f->commit, hf->path, hf->etag);
}

static void on_retry_timer(uv_timer_t *t) { file_next(t->data); }

/* Backoff before another attempt; returns 0 when a retry was scheduled. */
static int file_retry(hfile *hf, int state) {
	ms_hub *hub = hf->f->hub;
	if (hf->tries >= hub->opts.max_retries) return -1;
	unsigned ms = hub->opts.retry_base_ms << (hf->tries < 6 ? hf->tries : 6);
	if (ms > 8000 && hub->opts.retry_base_ms <= 8000) ms = 8000;
	hf->tries++;
	hf->state = state;
	uv_timer_start(&hf->timer, on_retry_timer, ms, 0);
	return 0;
}

static void start_head(hfile *hf);
static void start_get(hfile *hf);
static void try_lock(hfile *hf);

static void file_next(hfile *hf) {
	switch (hf->state) {
	case FS_HEAD: start_head(hf); break;
	case FS_LOCK: try_lock(hf); break;
	case FS_GET: start_get(hf); break;
	default: break;
	}
}

/* The origin (scheme://host[:port]) of a URL. */
static void url_origin(const char *url, char *out, size_t len) {
	const char *p = strstr(url, "://");
	p = p ? p + 3 : url;
	const char *e = strchr(p, '/');
	size_t l = e ? (size_t)(e - url) : strlen(url);
	if (l >= len) l = len - 1;
	memcpy(out, url, l);
	out[l] = 0;
}

static void on_head_done(xfer *x, CURLcode res) {
	hfile *hf = x->owner;
	ms_hub_fetch *f = hf->f;
	ms_hub *hub = f->hub;
	hf->x = NULL;
	char msg[1024];
	if (res != CURLE_OK) {
		int rc = net_message(hub, res, x->errbuf, msg, sizeof msg);
		xfer_free(x);
		if (net_error(res) && file_retry(hf, FS_HEAD) == 0) return;
		return file_fail(hf, rc, "%s", msg);
	}
	if (x->status >= 300 && x->status < 400 && x->location[0]) {
		/* as huggingface_hub: a Location with no host is relative (a renamed repo); "//host/x"
		 * names a host, so it is absolute (the CDN), with the resolve URL's scheme */
		if (x->location[0] == '/' && x->location[1] != '/') { /* a renamed repo: follow, on the same host */
			if (++hf->redirects > MAX_REDIRECTS) {
				xfer_free(x);
				return file_fail(hf, MS_EPROTO, "%s: too many redirects", hf->path);
			}
			char origin[1024];
			url_origin(hf->url, origin, sizeof origin);
			snprintf(hf->url, sizeof hf->url, "%s%s", origin, x->location);
			xfer_free(x);
			return start_head(hf);
		}
		if (x->location[0] == '/') /* "//host/x" */
			snprintf(hf->get_url, sizeof hf->get_url, "%.*s%s", (int)strcspn(hf->url, ":") + 1, hf->url, x->location);
		else snprintf(hf->get_url, sizeof hf->get_url, "%s", x->location); /* the CDN */
	} else if (x->status >= 200 && x->status < 300) {
		snprintf(hf->get_url, sizeof hf->get_url, "%s", hf->url);
	} else {
		if (!strcmp(x->error_code, "EntryNotFound") && ms_hub_is_commit(x->commit))
			ms_hub_cache_mark_missing(hub->env.cache, f->repo, x->commit, hf->path);
		if (retryable_status(x->status) && !x->error_code[0]) {
			long st = x->status;
			int rc = st == 429 ? http_error(f, x, hf->path, msg, sizeof msg)
					   : ms_errf(msg, sizeof msg, MS_ENET, "%s: %s keeps answering HTTP %ld; try again later", hf->path,
						     hub->env.endpoint, st);
			xfer_free(x);
			if (file_retry(hf, FS_HEAD) == 0) return;
			return file_fail(hf, rc, "%s", msg);
		}
		int rc = http_error(f, x, hf->path, msg, sizeof msg);
		xfer_free(x);
		return file_fail(hf, rc, "%s", msg);
	}
	char etag[96];
	hub_normalize_etag(x->linked_etag[0] ? x->linked_etag : x->etag, etag, sizeof etag);
	const char *size_s = x->linked_size;
	char cl[32] = "";
	if (!*size_s && x->status < 300) {
		curl_off_t v = -1;
		curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &v);
		if (v >= 0) snprintf(cl, sizeof cl, "%lld", (long long)v);
		size_s = cl;
	}
	if (!ms_hub_is_commit(x->commit) || !etag[0] || strchr(etag, '/') || !*size_s) {
		xfer_free(x);
		return file_fail(hf, MS_EPROTO, "%s: %s did not say the file's commit, etag and size (is HF_ENDPOINT a Hub?)", hf->path,
				 hub->env.endpoint);
	}
	if (strcmp(x->commit, f->commit) != 0)
		MS_WARN("hub", "%s: HEAD says commit %s, the listing said %s", hf->path, x->commit, f->commit);
	snprintf(hf->etag, sizeof hf->etag, "%s", etag);
	/* the HEAD has the last word on the size: a listing may have none (no ?blobs=true) */
	uint64_t size = strtoull(size_s, NULL, 10);
	f->total = f->total - hf->size + size;
	hf->size = size;
	xfer_free(x);
	hf->tries = 0;
	hf->state = FS_LOCK;
	try_lock(hf);
}

/* Makes x the file's transfer and starts it; a failure to start fails the file. */
static void file_start_xfer(ms_hub *hub, hfile *hf, xfer *x) {
	hf->x = x;
	if (xfer_start(hub, x)) {
		hf->x = NULL;
		xfer_free(x);
		file_fail(hf, MS_ENOMEM, "out of memory");
	}
}

static void start_head(hfile *hf) {
	ms_hub *hub = hf->f->hub;
	hf->state = FS_HEAD;
	xfer *x = xfer_new(hub, hf->url, hf, on_head_done);
	if (!x) return file_fail(hf, MS_ENOMEM, "out of memory");
	curl_easy_setopt(x->easy, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(x->easy, CURLOPT_FOLLOWLOCATION, 0L);
	xfer_add_header(x, "Accept-Encoding: identity");
	xfer_auth(hub, x);
	file_start_xfer(hub, hf, x);
}

static int blob_ready(hfile *hf) {
	char p[PATH_MAX + 200];
	blob_path(hf, p, sizeof p, "");
	struct stat st;
	return stat(p, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == hf->size;
}

static void on_lock_timer(uv_timer_t *t) { try_lock(t->data); }

/* How far the download hf waits on has come: the bytes of the fetch in this host that holds
 * the blob's lock, else (another process) the size of the file it writes, which grows a
 * write buffer at a time. */
static uint64_t holder_bytes(hfile *hf) {
	for (ms_hub_fetch *o = hf->hub->fetches; o; o = o->next)
		for (int i = 0; i < o->nfiles; i++) {
			hfile *h = o->files[i];
			if (h != hf && h->state == FS_GET && !strcmp(h->etag, hf->etag) && !strcmp(o->repo, hf->f->repo)) return h->have;
		}
	char inc[PATH_MAX + 200];
	struct stat st;
	blob_path(hf, inc, sizeof inc, ".incomplete");
	return stat(inc, &st) == 0 ? (uint64_t)st.st_size : hf->have;
}

static void try_lock(hfile *hf) {
	ms_hub_fetch *f = hf->f;
	ms_hub *hub = f->hub;
	if (blob_ready(hf)) {
		if (link_blob(hf)) return file_fail(hf, MS_EIO, "%s: cannot write the snapshot link in %s", hf->path, f->repo_dir);
		return file_ok(hf);
	}
	if (hf->lockfd < 0) {
		char folder[512], p[PATH_MAX + 800];
		ms_hub_repo_folder(f->repo, folder, sizeof folder);
		snprintf(p, sizeof p, "%s/.locks/%s/%s.lock", hub->env.cache, folder, hf->etag);
		hub_mkdir_parent(p);
		hf->lockfd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (hf->lockfd < 0)
			return file_fail(hf, MS_EIO, "cannot create the lock file %s: %s", p, strerror(errno));
	}
	if (flock(hf->lockfd, LOCK_EX | LOCK_NB) != 0) {
		/* someone else (another app's fetch, another process) downloads this blob: wait for
		 * it, showing its progress, read off the file it writes (else an app waiting on
		 * another's download sat at 0% until it was over) */
		uint64_t have = holder_bytes(hf);
		if (have != hf->have && have <= hf->size) {
			hf->have = have;
			report(f, hf, 0);
		}
		uv_timer_start(&hf->timer, on_lock_timer, 100, 0);
		return;
	}
	if (blob_ready(hf)) {
		file_unlock(hf);
		if (link_blob(hf)) return file_fail(hf, MS_EIO, "%s: cannot write the snapshot link in %s", hf->path, f->repo_dir);
		return file_ok(hf);
	}
	hf->state = FS_GET;
	start_get(hf);
}

#define WBUF_SIZE (1u << 20)

/* WBUF_SIZE bytes of the file at `off`: the writer fills one, writes it, and hands it to
 * the hasher, which digests it from memory and gives it back for filling again. */
typedef struct piece {
	struct piece *next;
	uint64_t off;
	size_t len;
	char data[WBUF_SIZE];
} piece;

/* The sha256 of a big LFS file is computed on a thread of its own, just behind the writer,
 * so checking the digest neither stalls the loop nor adds a second pass at the end. It
 * digests the pieces the writer hands over (no second copy of the bytes). When it holds
 * as many as it may (the CPU is short: hashing is the slowest step), the transfer pauses
 * until it gives one back, rather than leave it to finish alone after the last byte while
 * the other core idles. With no pieces at all (hash_pieces -1), or for the last piece of a
 * transfer that ends while the hasher is full, it reads the bytes back from the
 * .incomplete file instead. Memory stays bounded either way. */
typedef struct hasher {
	uv_thread_t th;
	uv_mutex_t mu;
	uv_cond_t cv;
	uv_async_t async;
	int fd;
	uint64_t written, hashed, size;
	piece *queue, *queue_tail; /* on disk, not yet hashed, in file order */
	piece *spare;              /* hashed, for the writer to fill again */
	int held, max_held;        /* pieces in queue + spare + being hashed */
	int nspare;
	int paused;                /* the transfer waits for a piece (see hasher_full) */
	int resume;                /* a piece came back: unpause it (on the loop) */
	int done;                  /* the thread has ended */
	int stop, rc;
	EVP_MD_CTX *ctx;
	hfile *hf;              /* NULL once detached (the download was abandoned) */
	ms_hub *hub;
} hasher;

#define HASH_MIN_SIZE (4u << 20)

static void pieces_free(piece *p) {
	while (p) {
		piece *next = p->next;
		free(p);
		p = next;
	}
}

/* The next bytes to digest: a piece (from memory), else up to `cap` bytes to read back
 * from the file (*len). Waits for them; NULL with *len 0 when done or stopped. */
static piece *hasher_next(hasher *h, size_t cap, uint64_t *at, size_t *len) {
	piece *p = NULL;
	*len = 0;
	uv_mutex_lock(&h->mu);
	for (;;) {
		if (h->stop || h->hashed >= h->size) break;
		if (h->queue && h->queue->off == h->hashed) {
			p = h->queue;
			h->queue = p->next;
			if (!h->queue) h->queue_tail = NULL;
			*len = p->len;
			break;
		}
		/* bytes on disk that no piece holds: before the first queued piece, or the writer
		 * kept its piece; read them in whole pieces unless a queued piece or the end follows */
		uint64_t end = h->queue ? h->queue->off : h->written;
		uint64_t avail = end > h->hashed ? end - h->hashed : 0;
		if (h->queue && h->queue->off < h->hashed) { /* cannot happen: the writer goes in order */
			h->rc = MS_EIO;
			break;
		}
		if (avail >= cap || (avail && (h->queue || h->written >= h->size))) {
			*len = avail < cap ? (size_t)avail : cap;
			break;
		}
		uv_cond_wait(&h->cv, &h->mu);
	}
	*at = h->hashed;
	uv_mutex_unlock(&h->mu);
	return p;
}

static void hasher_thread(void *arg) {
	hasher *h = arg;
	const size_t cap = WBUF_SIZE;
	char *buf = NULL; /* for reading back, only if ever needed */
	for (;;) {
		uint64_t at;
		size_t len;
		piece *p = hasher_next(h, cap, &at, &len);
		if (!len) break;
		if (p) {
			EVP_DigestUpdate(h->ctx, p->data, len);
		} else {
			if (!buf && !(buf = malloc(cap))) {
				h->rc = MS_ENOMEM;
				break;
			}
			ssize_t n = pread(h->fd, buf, len, (off_t)at);
			if (n <= 0) {
				h->rc = MS_EIO;
				break;
			}
			len = (size_t)n;
			EVP_DigestUpdate(h->ctx, buf, len);
		}
		uv_mutex_lock(&h->mu);
		h->hashed += len;
		int wake = 0;
		if (p) {
			p->next = h->spare;
			h->spare = p;
			h->nspare++;
			/* resume once half the pieces are free: fewer pause cycles, each costly */
			if (h->paused && 2 * h->nspare >= h->max_held) { /* resume stays set until the loop has seen it */
				h->paused = 0;
				h->resume = wake = 1;
			}
		}
		uv_mutex_unlock(&h->mu);
		if (wake) uv_async_send(&h->async);
	}
	free(buf);
	uv_mutex_lock(&h->mu);
	h->done = 1;
	uv_mutex_unlock(&h->mu);
	uv_async_send(&h->async);
}

static void hasher_closed(uv_handle_t *hd) {
	hasher *h = hd->data;
	ms_hub *hub = h->hub;
	uv_mutex_destroy(&h->mu);
	uv_cond_destroy(&h->cv);
	EVP_MD_CTX_free(h->ctx);
	close(h->fd);
	pieces_free(h->queue);
	pieces_free(h->spare);
	free(h);
	hub_release(hub);
}

static void finish_blob(hfile *hf);

/* The thread gave a piece back to a paused transfer, or ended. */
static void on_hasher_async(uv_async_t *a) {
	hasher *h = a->data;
	uv_mutex_lock(&h->mu);
	int done = h->done, resume = h->resume || (done && h->paused); /* paused and done: it failed */
	h->resume = 0;
	if (done) h->paused = 0;
	uv_mutex_unlock(&h->mu);
	hfile *hf = h->hf;
	if (done) {
		uv_thread_join(&h->th);
		if (hf) {
			hf->hs = NULL;
			if (!h->stop && h->rc == 0 && h->hashed == h->size) {
				EVP_MD_CTX_copy_ex(hf->sha, h->ctx);
				hf->sha_ok = 1;
			} else {
				hf->sha_ok = 0; /* verify() reads the file back */
			}
		}
		uv_close((uv_handle_t *)&h->async, hasher_closed);
	}
	/* may call get_body_cb right away with the bytes held back; curl re-arms its timer */
	if (resume && hf && hf->x) curl_easy_pause(hf->x->easy, CURLPAUSE_CONT);
	if (done && hf && hf->verify_waiting) {
		hf->verify_waiting = 0;
		if (hf->dead) file_close(hf);
		else finish_blob(hf);
	}
}

static void hasher_start(hfile *hf) {
	hasher *h = calloc(1, sizeof *h);
	if (!h) return;
	h->fd = dup(hf->fd);
	h->ctx = EVP_MD_CTX_new();
	h->size = hf->size;
	h->hf = hf;
	h->hub = hf->f->hub;
	h->max_held = h->hub->opts.hash_pieces;
	if (h->fd < 0 || !h->ctx || uv_mutex_init(&h->mu)) goto fail;
	if (uv_cond_init(&h->cv)) {
		uv_mutex_destroy(&h->mu);
		goto fail;
	}
	EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
	uv_async_init(h->hub->loop, &h->async, on_hasher_async);
	h->async.data = h;
	h->hub->open_handles++;
	if (uv_thread_create(&h->th, hasher_thread, h)) {
		h->hf = NULL;
		uv_close((uv_handle_t *)&h->async, hasher_closed);
		return;
	}
	hf->hs = h;
	return;
fail:
	if (h->fd >= 0) close(h->fd);
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

/* The file holds `written` bytes now. *wb (when not NULL) is the piece just written: it
 * goes to the hasher if the hasher may hold one more, and *wb becomes a spare piece (or
 * NULL: the writer allocates one). */
static void hasher_feed(hasher *h, uint64_t written, piece **wb) {
	uv_mutex_lock(&h->mu);
	h->written = written;
	piece *p = wb ? *wb : NULL;
	if (p && (h->spare || h->held < h->max_held)) {
		p->next = NULL;
		if (h->queue_tail) h->queue_tail->next = p;
		else h->queue = p;
		h->queue_tail = p;
		*wb = h->spare;
		if (h->spare) h->spare = h->spare->next, h->nspare--;
		else h->held++;
	}
	int wake = written - h->hashed >= WBUF_SIZE || written >= h->size || h->queue;
	uv_mutex_unlock(&h->mu);
	if (wake) uv_cond_signal(&h->cv); /* after unlocking: the hasher wakes to a free mutex */
}

/* 1 when the hasher holds all the pieces it may: the writer would have to keep its
 * piece, so the transfer pauses (CURL_WRITEFUNC_PAUSE) until a piece comes back. */
static int hasher_full(hasher *h) {
	uv_mutex_lock(&h->mu);
	int full = h->max_held > 0 && !h->spare && h->held >= h->max_held && !h->done && !h->stop;
	if (full) h->paused = 1;
	uv_mutex_unlock(&h->mu);
	return full;
}

/* Abandons the hasher (failure, cancel, or a restart from byte 0). */
static void hasher_detach(hfile *hf) {
	hasher *h = hf->hs;
	if (!h) return;
	hf->hs = NULL;
	uv_mutex_lock(&h->mu);
	h->stop = 1;
	h->hf = NULL;
	uv_cond_signal(&h->cv);
	uv_mutex_unlock(&h->mu);
}

/* Writes the buffered bytes; -1 (with io_error set) when the disk refuses them. */
static int wbuf_flush(hfile *hf) {
	if (!hf->wlen) return 0;
	size_t off = 0;
	while (off < hf->wlen) {
		ssize_t w = pwrite(hf->fd, hf->wbuf->data + off, hf->wlen - off, (off_t)(hf->disk + off));
		if (w <= 0) {
			hf->io_error = w < 0 && errno ? errno : EIO;
			hf->wlen = 0;
			hf->have = hf->disk;
			return -1;
		}
		off += (size_t)w;
	}
	hf->wbuf->off = hf->disk;
	hf->wbuf->len = hf->wlen;
	hf->disk += hf->wlen;
	hf->wlen = 0;
	if (hf->hs) hasher_feed(hf->hs, hf->disk, &hf->wbuf);
	return 0;
}

/* io_error values other than an errno */
#define IOE_TOO_LONG (-1)
#define IOE_BAD_RANGE (-2)

/* The first byte of "bytes A-B/N", or -1. */
static long long range_start(const char *content_range) {
	unsigned long long a;
	return sscanf(content_range, "bytes %llu-", &a) == 1 ? (long long)a : -1;
}

static size_t get_body_cb(char *buf, size_t size, size_t n, void *ud) {
	hfile *hf = ud;
	xfer *x = hf->x;
	size_t len = size * n;
	if (!hf->got_first) {
		hf->got_first = 1;
		long st = 0;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &st);
		x->status = st;
		long ver = 0;
		char *scheme = NULL;
		curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &ver);
		curl_easy_getinfo(x->easy, CURLINFO_SCHEME, &scheme);
		hf->may_pause = ver > 0 && ver < CURL_HTTP_VERSION_2_0 && scheme && !strcasecmp(scheme, "http");
		int restart = st == 200 && hf->range_from > 0; /* Range ignored: start again */
		if (st == 206 && hf->range_from > 0) {
			long long at = range_start(x->content_range);
			if (at == 0) restart = 1; /* the whole file after all */
			else if (at != (long long)hf->range_from) { /* bytes from elsewhere: never append them */
				hf->io_error = IOE_BAD_RANGE;
				return 0;
			}
		}
		if (restart) {
			if (ftruncate(hf->fd, 0) != 0) return 0;
			hasher_detach(hf);
			hf->have = hf->disk = 0;
			hf->wlen = 0;
			EVP_DigestInit_ex(hf->sha, EVP_sha256(), NULL);
			hf->sha_ok = 1;
		}
	}
	if (x->status < 200 || x->status >= 300) return body_cb(buf, size, n, x);
	if (hf->have + len > hf->size) {
		hf->io_error = IOE_TOO_LONG;
		return 0;
	}
	/* the piece fills up in this call (curl hands over at most CURL_MAX_WRITE_SIZE) while
	 * the hasher holds all it may. Only over plain HTTP/1.x: libcurl 7.88 has known stalls
	 * resuming paused HTTP/2 streams; there (and over TLS, where the Hub is far slower than
	 * sha256 anyway) the hasher reads the bytes back instead. */
	if (hf->hs && hf->may_pause && hf->wlen + len >= WBUF_SIZE && len <= CURL_MAX_WRITE_SIZE && hasher_full(hf->hs))
		return CURL_WRITEFUNC_PAUSE;
	size_t off = 0;
	while (off < len) {
		/* a written piece may have gone to the hasher */
		if (!hf->wbuf && !(hf->wbuf = malloc(sizeof *hf->wbuf))) {
			hf->io_error = ENOMEM;
			return 0;
		}
		size_t c = len - off < WBUF_SIZE - hf->wlen ? len - off : WBUF_SIZE - hf->wlen;
		memcpy(hf->wbuf->data + hf->wlen, buf + off, c);
		if (!hf->hs && hf->sha_ok) EVP_DigestUpdate(hf->sha, buf + off, c);
		hf->wlen += c;
		hf->have += c;
		off += c;
		if (hf->wlen == WBUF_SIZE && wbuf_flush(hf)) return 0; /* aborts the transfer */
	}
	report(hf->f, hf, 0);
	return len;
}

static void verify(hfile *hf);

/* The server answered a range other than the one asked: the next attempt starts from byte 0
 * (what is on disk is dropped) rather than trust that server's ranges again. */
static void restart_get(hfile *hf) {
	char msg[600];
	snprintf(msg, sizeof msg, "%s: the server answered a range other than bytes=%llu-", hf->path,
		 (unsigned long long)hf->range_from);
	hasher_detach(hf);
	hf->have = hf->disk = 0;
	if (hf->fd >= 0 && ftruncate(hf->fd, 0) != 0) return file_fail(hf, MS_EIO, "%s: cannot truncate: %s", hf->path, strerror(errno));
	if (file_retry(hf, FS_GET) == 0) {
		MS_WARN("hub", "%s; starting again from byte 0", msg);
		return;
	}
	file_fail(hf, MS_EPROTO, "%s", msg);
}

static void on_get_done(xfer *x, CURLcode res) {
	hfile *hf = x->owner;
	ms_hub_fetch *f = hf->f;
	ms_hub *hub = f->hub;
	hf->x = NULL;
	char msg[1024];
	if (hf->wlen) wbuf_flush(hf); /* whatever came in stays, for a resume */
	if (hf->io_error > 0) {
		int e = hf->io_error;
		xfer_free(x);
		return file_fail(hf, MS_EIO, "cannot write %s/blobs: %s%s", f->repo_dir, strerror(e),
				 e == ENOSPC || e == EDQUOT || e == EFBIG ? " (free some space, e.g. `moonspace cache rm REPO`, or point HF_HUB_CACHE elsewhere)" : "");
	}
	if (hf->io_error == IOE_BAD_RANGE) {
		xfer_free(x);
		return restart_get(hf);
	}
	if (hf->io_error < 0) {
		xfer_free(x);
		return file_fail(hf, MS_EPROTO, "%s: the server sent more than the %llu bytes announced", hf->path,
				 (unsigned long long)hf->size);
	}
	long st = x->status;
	if (res == CURLE_OK && st == 416 && hf->have == hf->size) { /* complete already */
		xfer_free(x);
		return verify(hf);
	}
	if (res != CURLE_OK || retryable_status(st)) {
		int rc = res != CURLE_OK ? net_message(hub, res, x->errbuf, msg, sizeof msg)
			 : st == 429	 ? http_error(f, x, hf->path, msg, sizeof msg)
					 : ms_errf(msg, sizeof msg, MS_ENET, "%s: HTTP %ld from %s", hf->path, st, hub->env.endpoint);
		int retry = res == CURLE_OK || net_error(res) || res == CURLE_WRITE_ERROR;
		xfer_free(x);
		if (hf->fd >= 0) close(hf->fd);
		hf->fd = -1;
		if (retry && file_retry(hf, FS_GET) == 0) {
			MS_WARN("hub", "%s: %s; retrying (%d/%d) from byte %llu", hf->path, msg, hf->tries, hub->opts.max_retries,
				(unsigned long long)hf->have);
			return;
		}
		return file_fail(hf, rc, "%s", msg);
	}
	if (st < 200 || st >= 300) {
		int rc = http_error(f, x, hf->path, msg, sizeof msg);
		xfer_free(x);
		return file_fail(hf, rc, "%s", msg);
	}
	xfer_free(x);
	if (hf->have != hf->size) {
		if (hf->have < hf->size && file_retry(hf, FS_GET) == 0) return;
		return file_fail(hf, MS_EPROTO, "%s: consistency check failed: got %llu bytes, expected %llu", hf->path,
				 (unsigned long long)hf->have, (unsigned long long)hf->size);
	}
	verify(hf);
}

static void start_get(hfile *hf) {
	ms_hub_fetch *f = hf->f;
	ms_hub *hub = f->hub;
	char p[PATH_MAX + 200];
	blob_path(hf, p, sizeof p, ".incomplete");
	if (hub_mkdir_parent(p)) return file_fail(hf, MS_EIO, "cannot create %s/blobs", f->repo_dir);
	if (hf->fd < 0) {
		hf->fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (hf->fd < 0) return file_fail(hf, MS_EIO, "cannot write %s: %s", p, strerror(errno));
	}
	struct stat st;
	fstat(hf->fd, &st);
	hf->have = (uint64_t)st.st_size;
	if (hf->have > hf->size) {
		if (ftruncate(hf->fd, 0)) return file_fail(hf, MS_EIO, "cannot truncate %s", p);
		hf->have = 0;
	}
	hf->disk = hf->have;
	hf->wlen = 0;
	if (!hf->sha) hf->sha = EVP_MD_CTX_new();
	if (!hf->sha) return file_fail(hf, MS_ENOMEM, "out of memory");
	if (hf->have == 0) {
		EVP_DigestInit_ex(hf->sha, EVP_sha256(), NULL);
		hf->sha_ok = 1;
		if (hub_is_sha256(hf->etag) && hf->size >= HASH_MIN_SIZE && !hf->hs) hasher_start(hf);
	}
	/* else: sha_ok stays 1 when this process wrote every byte so far (a retry); a file begun
	 * by an earlier run or process is hashed from disk at the end */
	if (hf->have == hf->size && hf->size > 0) return verify(hf);
	xfer *x = xfer_new(hub, hf->get_url, hf, on_get_done);
	if (!x) return file_fail(hf, MS_ENOMEM, "out of memory");
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, get_body_cb);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, hf);
	curl_easy_setopt(x->easy, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(x->easy, CURLOPT_MAXREDIRS, 5L);
	/* Authorization only goes to the Hub itself, never to a CDN on another host */
	char o1[1024], o2[1024];
	url_origin(hf->get_url, o1, sizeof o1);
	url_origin(hf->url, o2, sizeof o2);
	if (!strcasecmp(o1, o2)) xfer_auth(hub, x);
	hf->range_from = hf->have;
	if (hf->have > 0) {
		char h[64];
		snprintf(h, sizeof h, "Range: bytes=%llu-", (unsigned long long)hf->have);
		xfer_add_header(x, h);
	}
	hf->got_first = 0;
	hf->io_error = 0;
	file_start_xfer(hub, hf, x);
}

static void sha_work(uv_work_t *w) {
	hfile *hf = w->data;
	EVP_DigestInit_ex(hf->sha, EVP_sha256(), NULL);
	char *buf = malloc(1 << 20);
	hf->work_rc = buf ? 0 : MS_ENOMEM;
	off_t off = 0;
	while (buf) {
		ssize_t n = pread(hf->fd, buf, 1 << 20, off);
		if (n < 0) hf->work_rc = MS_EIO;
		if (n <= 0) break;
		EVP_DigestUpdate(hf->sha, buf, (size_t)n);
		off += n;
	}
	free(buf);
}

static void finish_blob(hfile *hf);

static void sha_after(uv_work_t *w, int status) {
	hfile *hf = w->data;
	hf->work_pending = 0;
	hf->sha_ok = status == 0 && hf->work_rc == 0;
	if (hf->dead) return file_close(hf);
	if (hf->state == FS_FAILED) return;
	finish_blob(hf);
}

static void verify(hfile *hf) {
	hf->state = FS_VERIFY;
	if (hf->hs) {
		hf->verify_waiting = 1;
		hasher_feed(hf->hs, hf->have, NULL);
		return;
	}
	if (hub_is_sha256(hf->etag) && !hf->sha_ok) {
		hf->work.data = hf;
		if (uv_queue_work(hf->f->hub->loop, &hf->work, sha_work, sha_after) == 0) {
			hf->work_pending = 1;
			return;
		}
	}
	finish_blob(hf);
}

static void finish_blob(hfile *hf) {
	ms_hub_fetch *f = hf->f;
	char inc[PATH_MAX + 200], dst[PATH_MAX + 200];
	blob_path(hf, inc, sizeof inc, ".incomplete");
	blob_path(hf, dst, sizeof dst, "");
	if (hub_is_sha256(hf->etag)) {
		unsigned char md[32];
		unsigned mdlen = 0;
		char hex[65];
		if (!hf->sha_ok) return file_fail(hf, MS_EIO, "%s: cannot read %s back to check it", hf->path, inc);
		EVP_DigestFinal_ex(hf->sha, md, &mdlen);
		for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
		if (strcasecmp(hex, hf->etag) != 0) {
			unlink(inc);
			return file_fail(hf, MS_EPROTO, "%s: sha256 mismatch (got %s, expected %s); the partial file was deleted, run again",
					 hf->path, hex, hf->etag);
		}
	}
	if (hf->fd >= 0) {
		fchmod(hf->fd, 0644);
		close(hf->fd);
		hf->fd = -1;
	}
	if (rename(inc, dst)) return file_fail(hf, MS_EIO, "cannot rename %s: %s", inc, strerror(errno));
	file_unlock(hf);
	if (link_blob(hf)) return file_fail(hf, MS_EIO, "%s: cannot write the snapshot link in %s", hf->path, f->repo_dir);
	file_ok(hf);
}

/* Starts queued files while slots are free. */
static void schedule(ms_hub *hub) {
	while (hub->qhead && hub->active < hub->opts.max_parallel) {
		hfile *hf = hub->qhead;
		hub->qhead = hf->qnext;
		if (!hub->qhead) hub->qtail = NULL;
		hf->qnext = NULL;
		if (hf->state != FS_QUEUED) continue;
		hub->active++;
		hf->f->running++;
		report(hf->f, hf, 1);
		start_head(hf);
	}
}

static void enqueue(ms_hub *hub, hfile *hf) {
	hf->qnext = NULL;
	if (hub->qtail) hub->qtail->qnext = hf;
	else hub->qhead = hf;
	hub->qtail = hf;
}

static void unqueue(ms_hub *hub, hfile *hf) {
	hfile **pp = &hub->qhead, *prev = NULL;
	while (*pp && *pp != hf) prev = *pp, pp = &(*pp)->qnext;
	if (!*pp) return;
	*pp = hf->qnext;
	if (hub->qtail == hf) hub->qtail = prev;
}

/* ---- fetches ---- */

static int matches(ms_hub_fetch *f, const char *path) {
	for (int i = 0; i < f->npatterns; i++)
		if (fnmatch(f->patterns[i], path, 0) == 0) return 1;
	return 0;
}

static void fetch_closed(uv_handle_t *h) {
	ms_hub_fetch *f = h->data;
	ms_hub *hub = f->hub;
	free(f);
	hub_release(hub);
}

static void fetch_free(ms_hub_fetch *f) {
	ms_hub *hub = f->hub;
	for (int i = 0; i < f->nfiles; i++) {
		hfile *hf = f->files[i];
		if (hf->state == FS_QUEUED) unqueue(hub, hf);
		if (hf->state != FS_DONE && hf->state != FS_FAILED) file_release(hf);
		hf->state = FS_FAILED;
		file_close(hf);
	}
	free(f->files);
	free(f->repo);
	free(f->rev);
	for (int i = 0; i < f->npatterns; i++) free(f->patterns[i]);
	free(f->patterns);
	free(f->error);
	xfer_abort(hub, f->api);
	f->api = NULL;
	if (f->prev) f->prev->next = f->next;
	else if (hub->fetches == f) hub->fetches = f->next;
	if (f->next) f->next->prev = f->prev;
	uv_close((uv_handle_t *)&f->timer, fetch_closed);
}

static void fetch_finish(ms_hub_fetch *f, int rc, const char *fmt, ...) {
	if (f->finished) return;
	f->finished = 1;
	if (rc && fmt && !f->error) {
		char msg[1024];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof msg, fmt, ap);
		va_end(ap);
		f->error = strdup(msg);
	}
	/* stop the files still running before telling the caller */
	for (int i = 0; i < f->nfiles; i++) {
		hfile *hf = f->files[i];
		if (hf->state == FS_QUEUED) unqueue(f->hub, hf);
		if (hf->state != FS_DONE && hf->state != FS_FAILED) {
			file_release(hf);
			hf->state = FS_FAILED;
		}
	}
	ms_hub_result r = {
		.rc = rc, .error = rc ? (f->error ? f->error : ms_strerror(rc)) : NULL, .repo = f->repo, .rev = f->rev,
		.commit = f->commit, .snapshot = rc ? "" : f->snapshot, .n_files = f->n_ok, .offline = f->offline,
	};
	if (f->done) f->done(&r, f->ud);
	/* files in the thread pool keep their memory until they come back */
	int busy = 0;
	for (int i = 0; i < f->nfiles; i++)
		if (f->files[i]->state == FS_VERIFY) busy = 1;
	(void)busy;
	fetch_free(f);
	schedule(f->hub);
}

static void fetch_maybe_done(ms_hub_fetch *f) {
	if (f->finished || f->api || f->files_done < f->nfiles) return;
	if (f->error) return fetch_finish(f, f->rc ? f->rc : MS_EIO, NULL);
	fetch_finish(f, 0, NULL);
}

/* Files of the snapshot matching the patterns (cache-only answers). */
static int count_snapshot(ms_hub_fetch *f, const char *dir, const char *prefix) {
	DIR *d = opendir(dir);
	if (!d) return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		char p[PATH_MAX], rel[PATH_MAX];
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		snprintf(rel, sizeof rel, "%s%s", prefix, e->d_name);
		struct stat st;
		if (stat(p, &st)) continue;
		if (S_ISDIR(st.st_mode)) {
			strncat(rel, "/", sizeof rel - strlen(rel) - 1);
			n += count_snapshot(f, p, rel);
		} else if (matches(f, rel)) {
			n++;
			f->base_bytes += (uint64_t)st.st_size;
		}
	}
	closedir(d);
	return n;
}

static int is_glob(const char *p) { return strpbrk(p, "*?[") != NULL; }

/* Whether snapshot/<path> exists, or .no_exist/<commit>/<path> marks it absent. */
static int cached_or_absent(ms_hub_fetch *f, const char *path) {
	char p[PATH_MAX * 2];
	struct stat st;
	snprintf(p, sizeof p, "%s/%s", f->snapshot, path);
	if (stat(p, &st) == 0) return 1;
	snprintf(p, sizeof p, "%s/.no_exist/%s/%s", f->repo_dir, f->commit, path);
	return stat(p, &st) == 0;
}

/* Whether a file of the snapshot matches pattern (dir is relative to the snapshot). */
static int snapshot_matches(ms_hub_fetch *f, const char *pattern, const char *dir) {
	char p[PATH_MAX * 3];
	snprintf(p, sizeof p, "%s/%s", f->snapshot, dir);
	DIR *d = opendir(p);
	if (!d) return 0;
	int found = 0;
	struct dirent *e;
	while (!found && (e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		char rel[PATH_MAX];
		snprintf(rel, sizeof rel, "%s%s%s", dir, *dir ? "/" : "", e->d_name);
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", f->snapshot, rel);
		if (stat(p, &st)) continue;
		found = S_ISDIR(st.st_mode) ? snapshot_matches(f, pattern, rel) : fnmatch(pattern, rel, 0) == 0;
	}
	closedir(d);
	return found;
}

/* A pinned commit's snapshot is used with no network, as huggingface_hub uses a cached file
 * at a commit, but only when it surely holds what is asked: the files a pattern stands for
 * are known from the Hub's listing alone, and an earlier fetch may have asked for fewer.
 * So each file name asked for is there (or marked absent); each glob matches a file there,
 * except among the defaults, where several match nothing in most repos; and "*" always
 * asks. When the Hub cannot answer, the snapshot is used anyway (on_api_done). */
static int snapshot_answers(ms_hub_fetch *f) {
	if (ms_hub_cache_commit(f->hub->env.cache, f->repo, f->rev, f->commit)) return 0;
	snprintf(f->snapshot, sizeof f->snapshot, "%s/snapshots/%s", f->repo_dir, f->commit);
	for (int i = 0; i < f->npatterns; i++) {
		const char *p = f->patterns[i];
		if (!strcmp(p, "*")) return 0;
		if (!is_glob(p) ? !cached_or_absent(f, p) : !f->defaults && !snapshot_matches(f, p, "")) return 0;
	}
	return 1;
}

/* Marks the file names asked for that the listing lacks, as huggingface_hub marks a file it
 * found absent, so that the next pinned fetch knows without asking. */
static void mark_absent(ms_hub_fetch *f) {
	for (int i = 0; i < f->npatterns; i++) {
		const char *p = f->patterns[i];
		int listed = 0;
		for (int k = 0; k < f->nfiles && !listed; k++) listed = !strcmp(f->files[k]->path, p);
		if (!is_glob(p) && !listed && hub_valid_path(p)) ms_hub_cache_mark_missing(f->hub->env.cache, f->repo, f->commit, p);
	}
}

/* Answers from the cache: 0 when the revision is cached with matching files. */
static int from_cache(ms_hub_fetch *f, const char *why) {
	ms_hub *hub = f->hub;
	if (ms_hub_cache_commit(hub->env.cache, f->repo, f->rev, f->commit)) return MS_ENOENT;
	snprintf(f->snapshot, sizeof f->snapshot, "%s/snapshots/%s", f->repo_dir, f->commit);
	f->base_bytes = 0;
	int n = count_snapshot(f, f->snapshot, "");
	if (n == 0) return MS_ENOENT;
	f->n_ok = n;
	f->offline = 1;
	f->total = f->base_bytes;
	f->files_done = n;
	if (why) MS_WARN("hub", "%s: %s; using the cached snapshot %s", f->repo, why, f->commit);
	report(f, NULL, 1);
	fetch_finish(f, 0, NULL);
	return 0;
}

static void add_file(ms_hub_fetch *f, const char *path, uint64_t size) {
	hfile *hf = calloc(1, sizeof *hf);
	hfile **nf = realloc(f->files, (size_t)(f->nfiles + 1) * sizeof *nf);
	if (!hf || !nf) {
		free(hf);
		if (nf) f->files = nf;
		return;
	}
	f->files = nf;
	hf->f = f;
	hf->hub = f->hub;
	f->hub->open_handles++; /* its timer */
	hf->path = strdup(path);
	hf->size = size;
	hf->fd = hf->lockfd = -1;
	uv_timer_init(f->hub->loop, &hf->timer);
	hf->timer.data = hf;
	char qrev[256], qpath[3200];
	hub_url_quote(f->commit, 0, qrev, sizeof qrev);
	hub_url_quote(path, 1, qpath, sizeof qpath);
	snprintf(hf->url, sizeof hf->url, "%s/%s/resolve/%s/%s", f->hub->env.endpoint, f->repo, qrev, qpath);
	f->files[f->nfiles++] = hf;
	f->total += size;
}

static void on_api_done(xfer *x, CURLcode res) {
	ms_hub_fetch *f = x->owner;
	ms_hub *hub = f->hub;
	f->api = NULL;
	char msg[1024];
	if (res != CURLE_OK || retryable_status(x->status)) {
		/* the Hub is unreachable or failing: a cached revision is still good */
		if (res != CURLE_OK) net_message(hub, res, x->errbuf, msg, sizeof msg);
		else snprintf(msg, sizeof msg, "%.900s answered HTTP %ld", hub->env.endpoint, x->status);
		xfer_free(x);
		if (from_cache(f, msg) == 0) return;
		return fetch_finish(f, res != CURLE_OK ? MS_ENET : MS_EPROTO, "%s (and %s@%s is not in the cache %s)", msg, f->repo,
				    f->rev, hub->env.cache);
	}
	if (x->status != 200) {
		int rc = http_error(f, x, "the file list", msg, sizeof msg);
		xfer_free(x);
		/* a commit is immutable: what the cache holds of it stays good whatever the Hub says */
		if (ms_hub_is_commit(f->rev) && from_cache(f, msg) == 0) return;
		return fetch_finish(f, rc, "%s", msg);
	}
	json_error_t je;
	json_t *j = json_loadb(x->body.data ? x->body.data : "", x->body.len, 0, &je);
	xfer_free(x);
	const char *sha = j ? json_string_value(json_object_get(j, "sha")) : NULL;
	json_t *sib = j ? json_object_get(j, "siblings") : NULL;
	if (!sha || !ms_hub_is_commit(sha) || !json_is_array(sib)) {
		json_decref(j);
		return fetch_finish(f, MS_EPROTO, "%s/api/models/%s did not answer a model's info (no sha or siblings)", hub->env.endpoint,
				    f->repo);
	}
	snprintf(f->commit, sizeof f->commit, "%s", sha);
	snprintf(f->snapshot, sizeof f->snapshot, "%s/snapshots/%s", f->repo_dir, f->commit);
	size_t i;
	json_t *s;
	json_array_foreach(sib, i, s) {
		const char *name = json_string_value(json_object_get(s, "rfilename"));
		if (!name || !hub_valid_path(name) || !matches(f, name)) continue;
		json_t *lfs = json_object_get(s, "lfs");
		json_int_t size = json_integer_value(json_object_get(lfs ? lfs : s, "size"));
		add_file(f, name, size > 0 ? (uint64_t)size : 0);
	}
	json_decref(j);
	int rc = ms_hub_cache_init(hub->env.cache);
	if (!rc) rc = hub_mkdir_p(f->snapshot);
	if (!rc) rc = ms_hub_cache_write_ref(hub->env.cache, f->repo, f->rev, f->commit);
	if (rc) return fetch_finish(f, MS_EIO, "cannot write the Hub cache %s: %s", hub->env.cache, strerror(errno));
	mark_absent(f);
	if (f->nfiles == 0) return fetch_finish(f, MS_ENOENT, "no file of %s@%s matches %s%s", f->repo, f->rev, f->patterns[0],
						 f->npatterns > 1 ? " (and the other patterns)" : "");
	for (int k = 0; k < f->nfiles; k++) {
		hfile *hf = f->files[k];
		char p[PATH_MAX + 1200];
		snprintf(p, sizeof p, "%s/%s", f->snapshot, hf->path);
		struct stat st;
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) { /* in place already */
			hf->size = (uint64_t)st.st_size;
			hf->state = FS_DONE;
			f->base_bytes += hf->size;
			f->files_done++;
			f->n_ok++;
			continue;
		}
		enqueue(hub, hf);
	}
	report(f, NULL, 1);
	schedule(hub);
	fetch_maybe_done(f);
}

static void fetch_begin(uv_timer_t *t) {
	ms_hub_fetch *f = t->data;
	ms_hub *hub = f->hub;
	if (ms_hub_is_commit(f->rev) && snapshot_answers(f) && from_cache(f, NULL) == 0) return; /* no network */
	if (hub->env.offline) {
		if (from_cache(f, NULL) == 0) return;
		return fetch_finish(f, MS_ENOENT,
				    "HF_HUB_OFFLINE is set and %s@%s is not in the cache %s (unset HF_HUB_OFFLINE, or fill the cache with `moonspace pull %s@%s` where the Hub is reachable)",
				    f->repo, f->rev, hub->env.cache, f->repo, f->rev);
	}
	char qrev[600], url[4096];
	hub_url_quote(f->rev, 0, qrev, sizeof qrev);
	snprintf(url, sizeof url, "%s/api/models/%s/revision/%s?blobs=true", hub->env.endpoint, f->repo, qrev);
	xfer *x = xfer_new(hub, url, f, on_api_done);
	if (!x) return fetch_finish(f, MS_ENOMEM, "out of memory");
	x->body_max = API_MAX_BODY;
	curl_easy_setopt(x->easy, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(x->easy, CURLOPT_MAXREDIRS, 5L);
	xfer_auth(hub, x);
	f->api = x;
	if (xfer_start(hub, x)) {
		f->api = NULL;
		xfer_free(x);
		fetch_finish(f, MS_ENOMEM, "out of memory");
	}
}

int ms_hub_fetch_start(ms_hub *hub, const char *repo, const char *rev, const char *const *patterns, ms_hub_progress_cb progress,
		       ms_hub_done_cb done, void *ud, ms_hub_fetch **out) {
	if (out) *out = NULL;
	if (!hub || hub->closing || !repo) return MS_EINVAL;
	if (!ms_hub_valid_repo(repo)) return MS_EINVAL;
	if (!rev || !*rev) rev = "main";
	if (strlen(rev) > 200 || strstr(rev, "..")) return MS_EINVAL;
	if (!patterns) patterns = ms_hub_default_patterns;
	ms_hub_fetch *f = calloc(1, sizeof *f);
	if (!f) return MS_ENOMEM;
	f->hub = hub;
	f->repo = strdup(repo);
	f->rev = strdup(rev);
	int np = 0;
	while (patterns[np]) np++;
	f->patterns = calloc((size_t)np + 1, sizeof *f->patterns);
	if (!f->repo || !f->rev || !f->patterns) {
		free(f->repo), free(f->rev), free(f->patterns), free(f);
		return MS_ENOMEM;
	}
	for (int i = 0; i < np; i++) f->patterns[f->npatterns++] = strdup(patterns[i]);
	f->progress = progress;
	f->defaults = patterns == ms_hub_default_patterns;
	f->done = done;
	f->ud = ud;
	hub_repo_dir(hub->env.cache, repo, f->repo_dir, sizeof f->repo_dir);
	uv_timer_init(hub->loop, &f->timer);
	f->timer.data = f;
	hub->open_handles++;
	f->next = hub->fetches;
	if (f->next) f->next->prev = f;
	hub->fetches = f;
	uv_timer_start(&f->timer, fetch_begin, 0, 0);
	if (out) *out = f;
	return 0;
}

void ms_hub_fetch_cancel(ms_hub_fetch *f) {
	if (!f || f->finished) return;
	fetch_finish(f, MS_ECANCELED, "cancelled");
}

/* ---- the hub ---- */

static int curl_ready;

int ms_hub_new(uv_loop_t *loop, const ms_hub_env *env, const ms_hub_opts *opts, ms_hub **out) {
	*out = NULL;
	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT)) return MS_EIO;
		curl_ready = 1;
	}
	ms_hub *hub = calloc(1, sizeof *hub);
	if (!hub) return MS_ENOMEM;
	hub->loop = loop;
	if (env) hub->env = *env;
	else ms_hub_env_load(&hub->env);
	hub->opts.max_parallel = opts && opts->max_parallel > 0 ? opts->max_parallel : 8;
	hub->opts.max_retries = opts && opts->max_retries > 0 ? opts->max_retries : 5;
	hub->opts.retry_base_ms = opts && opts->retry_base_ms ? opts->retry_base_ms : 1000;
	hub->opts.hash_pieces = !opts || !opts->hash_pieces ? HASH_PIECES : opts->hash_pieces < 0 ? 0 : opts->hash_pieces;
	hub->multi = curl_multi_init();
	if (!hub->multi) {
		free(hub);
		return MS_ENOMEM;
	}
	curl_multi_setopt(hub->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(hub->multi, CURLMOPT_SOCKETDATA, hub);
	curl_multi_setopt(hub->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(hub->multi, CURLMOPT_TIMERDATA, hub);
	uv_timer_init(loop, &hub->timer);
	hub->timer.data = hub;
	hub->open_handles = 1;
	*out = hub;
	return 0;
}

const ms_hub_env *ms_hub_get_env(const ms_hub *hub) { return &hub->env; }

static void hub_release(ms_hub *hub) {
	if (--hub->open_handles > 0 || !hub->closing) return;
	free(hub);
}

static void hub_timer_closed(uv_handle_t *h) { hub_release(h->data); }

void ms_hub_free(ms_hub *hub) {
	if (!hub || hub->closing) return;
	while (hub->fetches) {
		ms_hub_fetch *f = hub->fetches;
		if (!f->finished) fetch_finish(f, MS_ECANCELED, "cancelled");
		else break;
	}
	hub->closing = 1;
	curl_multi_cleanup(hub->multi);
	hub->multi = NULL;
	while (hub->socks) sock_drop(hub, hub->socks);
	uv_timer_stop(&hub->timer);
	uv_close((uv_handle_t *)&hub->timer, hub_timer_closed);
	(void)on_handle_closed;
	(void)timer_closed_free_file;
}
