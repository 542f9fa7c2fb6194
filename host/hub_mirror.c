/* host/hub_mirror.c: `moonspace serve` as a Hub mirror (see hub.h).
 *
 * Repos come from --mirror directories (org/name/<files>) and from the host's HF cache.
 * Every request is worked out on libuv's thread pool (listing directories and hashing
 * files never stall the loop), then answered on the loop; file bodies stream from disk
 * with ms_http_respond_fd. A plain directory gets Hub-like identities: a file's etag is
 * its git blob sha1, or its sha256 for *.safetensors and files of 10 MiB or more (served
 * like LFS files); the commit is the sha1 of the sorted "path\0etag\n" list. Hashes are
 * kept per (path, size, mtime, inode), so a big file is read once, not per request.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "host/host.h"
#include "host/hub.h"
#include "host/hub_int.h"

#define LFS_MIN_SIZE (10ull << 20)
#define HC_BUCKETS 4096

typedef struct hentry {
	struct hentry *next;
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	char etag[65];
} hentry;

struct ms_hub_mirror {
	uv_loop_t *loop;
	char **dirs;
	int ndirs;
	char *cache;
	uv_mutex_t mu;
	hentry *b[HC_BUCKETS];
};

typedef struct mentry {
	char *path;        /* in the repo */
	char *abs;         /* on disk */
	uint64_t size;
	char etag[65];     /* sha1 (40) or sha256 (64) */
	int lfs;
} mentry;

enum { K_INFO, K_TREE, K_RESOLVE, K_PATHS };

typedef struct mjob {
	uv_work_t work;
	ms_hub_mirror *m;
	ms_http_req *req;
	int gone;
	int kind;
	char repo[256], rev[256], path[2048];
	int recursive, blobs, expand;
	json_t *want_paths;
	/* results */
	int status;
	const char *ecode;
	char emsg[512];
	char commit[41];
	time_t mtime;
	mentry *ents;
	int nents, cap;
} mjob;

/* ---- hashing ---- */

static unsigned hc_hash(const char *s) {
	unsigned h = 2166136261u;
	for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
	return h % HC_BUCKETS;
}

static void hexify(const unsigned char *md, unsigned n, char *out) {
	for (unsigned i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* git's blob id of `size` bytes read from fd (or of `data` when fd < 0). */
static int git_blob_sha1(int fd, const char *data, uint64_t size, char out[65]) {
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c) return MS_ENOMEM;
	EVP_DigestInit_ex(c, EVP_sha1(), NULL);
	char head[64];
	int hl = snprintf(head, sizeof head, "blob %llu", (unsigned long long)size);
	EVP_DigestUpdate(c, head, (size_t)hl + 1);
	int rc = 0;
	if (fd < 0) {
		EVP_DigestUpdate(c, data, size);
	} else {
		char *buf = malloc(1 << 20);
		uint64_t left = size;
		while (buf && left) {
			ssize_t n = read(fd, buf, 1 << 20);
			if (n <= 0) break;
			EVP_DigestUpdate(c, buf, (size_t)n);
			left -= (uint64_t)n < left ? (uint64_t)n : left;
		}
		if (!buf || left) rc = MS_EIO;
		free(buf);
	}
	unsigned char md[32];
	unsigned n = 0;
	EVP_DigestFinal_ex(c, md, &n);
	EVP_MD_CTX_free(c);
	hexify(md, n, out);
	return rc;
}

static int file_sha256(int fd, char out[65]) {
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	char *buf = malloc(1 << 20);
	if (!c || !buf) {
		EVP_MD_CTX_free(c);
		free(buf);
		return MS_ENOMEM;
	}
	EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	ssize_t n;
	while ((n = read(fd, buf, 1 << 20)) > 0) EVP_DigestUpdate(c, buf, (size_t)n);
	free(buf);
	unsigned char md[32];
	unsigned l = 0;
	EVP_DigestFinal_ex(c, md, &l);
	EVP_MD_CTX_free(c);
	hexify(md, l, out);
	return n < 0 ? MS_EIO : 0;
}

static int ends_with(const char *s, const char *suf) {
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

static int is_lfs_name(const char *path, uint64_t size) { return ends_with(path, ".safetensors") || size >= LFS_MIN_SIZE; }

/* The etag of a plain file, from the cache of hashes or computed once (thread pool). */
static int etag_of(ms_hub_mirror *m, const char *abs, const struct stat *st, int lfs, char out[65]) {
	unsigned h = hc_hash(abs);
	uv_mutex_lock(&m->mu);
	for (hentry *e = m->b[h]; e; e = e->next) {
		if (strcmp(e->path, abs) != 0) continue;
		if (e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size && e->mtime.tv_sec == st->st_mtim.tv_sec &&
		    e->mtime.tv_nsec == st->st_mtim.tv_nsec) {
			memcpy(out, e->etag, 65);
			uv_mutex_unlock(&m->mu);
			return 0;
		}
	}
	uv_mutex_unlock(&m->mu);
	int fd = open(abs, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return MS_EIO;
	int rc = lfs ? file_sha256(fd, out) : git_blob_sha1(fd, NULL, (uint64_t)st->st_size, out);
	close(fd);
	if (rc) return rc;
	uv_mutex_lock(&m->mu);
	hentry *e = NULL;
	for (hentry *x = m->b[h]; x; x = x->next)
		if (!strcmp(x->path, abs)) e = x;
	if (!e && (e = calloc(1, sizeof *e))) {
		e->path = strdup(abs);
		e->next = m->b[h];
		m->b[h] = e;
	}
	if (e) {
		e->dev = st->st_dev;
		e->ino = st->st_ino;
		e->size = st->st_size;
		e->mtime = st->st_mtim;
		memcpy(e->etag, out, 65);
	}
	uv_mutex_unlock(&m->mu);
	return 0;
}

/* ---- listings (thread pool) ---- */

static int add_ent(mjob *j, const char *rel, const char *abs, uint64_t size, const char *etag, int lfs) {
	if (j->nents == j->cap) {
		int nc = j->cap ? j->cap * 2 : 32;
		mentry *ne = realloc(j->ents, (size_t)nc * sizeof *ne);
		if (!ne) return MS_ENOMEM;
		j->ents = ne;
		j->cap = nc;
	}
	mentry *e = &j->ents[j->nents++];
	e->path = strdup(rel);
	e->abs = strdup(abs);
	e->size = size;
	snprintf(e->etag, sizeof e->etag, "%s", etag);
	e->lfs = lfs;
	return 0;
}

/* Walks dir; from_cache: files are symlinks to blobs/<etag> (or plain copies). */
static void walk(mjob *j, const char *dir, const char *prefix, int from_cache, int depth) {
	if (depth > 32) return;
	DIR *d = opendir(dir);
	if (!d) return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.') continue; /* ., .., .git, hidden files */
		char abs[PATH_MAX], rel[PATH_MAX];
		if (snprintf(abs, sizeof abs, "%s/%s", dir, de->d_name) >= (int)sizeof abs) continue;
		if (snprintf(rel, sizeof rel, "%s%s", prefix, de->d_name) >= (int)sizeof rel) continue;
		struct stat st, lst;
		if (stat(abs, &st) || lstat(abs, &lst)) continue;
		if (S_ISDIR(st.st_mode)) {
			char pre[PATH_MAX + 2];
			snprintf(pre, sizeof pre, "%s/", rel);
			walk(j, abs, pre, from_cache, depth + 1);
			continue;
		}
		if (!S_ISREG(st.st_mode)) continue;
		if (ends_with(rel, ".incomplete") || ends_with(rel, ".lock")) continue;
		char etag[65] = "";
		if (from_cache && S_ISLNK(lst.st_mode)) {
			char tgt[PATH_MAX];
			ssize_t n = readlink(abs, tgt, sizeof tgt - 1);
			if (n > 0) {
				tgt[n] = 0;
				const char *b = strrchr(tgt, '/');
				b = b ? b + 1 : tgt;
				if (strlen(b) == 40 || hub_is_sha256(b)) snprintf(etag, sizeof etag, "%.64s", b);
			}
		}
		int lfs = etag[0] ? hub_is_sha256(etag) : is_lfs_name(rel, (uint64_t)st.st_size);
		if (!etag[0] && etag_of(j->m, abs, &st, lfs, etag)) continue;
		if (st.st_mtime > j->mtime) j->mtime = st.st_mtime;
		add_ent(j, rel, abs, (uint64_t)st.st_size, etag, lfs);
	}
	closedir(d);
}

static int cmp_ent(const void *a, const void *b) { return strcmp(((const mentry *)a)->path, ((const mentry *)b)->path); }

static void set_err(mjob *j, int status, const char *code, const char *fmt, const char *arg) {
	j->status = status;
	j->ecode = code;
	snprintf(j->emsg, sizeof j->emsg, fmt, arg);
}

static int is_dir(const char *p) {
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void job_work(uv_work_t *w) {
	mjob *j = w->data;
	ms_hub_mirror *m = j->m;
	j->status = 200;
	char dir[PATH_MAX + 128];
	int found = 0;
	for (int i = 0; i < m->ndirs && !found; i++) {
		snprintf(dir, sizeof dir, "%s/%s", m->dirs[i], j->repo);
		found = is_dir(dir);
	}
	if (found) {
		walk(j, dir, "", 0, 0);
		qsort(j->ents, (size_t)j->nents, sizeof *j->ents, cmp_ent);
		EVP_MD_CTX *c = EVP_MD_CTX_new();
		EVP_DigestInit_ex(c, EVP_sha1(), NULL);
		for (int i = 0; i < j->nents; i++) {
			EVP_DigestUpdate(c, j->ents[i].path, strlen(j->ents[i].path) + 1);
			EVP_DigestUpdate(c, j->ents[i].etag, strlen(j->ents[i].etag));
			EVP_DigestUpdate(c, "\n", 1);
		}
		unsigned char md[32];
		unsigned n = 0;
		EVP_DigestFinal_ex(c, md, &n);
		EVP_MD_CTX_free(c);
		hexify(md, n, j->commit);
		if (strcmp(j->rev, "main") && strcmp(j->rev, "HEAD") && strcmp(j->rev, j->commit))
			set_err(j, 404, "RevisionNotFound", "Invalid rev id: %s", j->rev);
		return;
	}
	char rdir[PATH_MAX];
	if (!m->cache || hub_repo_dir(m->cache, j->repo, rdir, sizeof rdir) || !is_dir(rdir))
		return set_err(j, 404, "RepoNotFound", "Repository not found: %s", j->repo);
	const char *rev = strcmp(j->rev, "HEAD") ? j->rev : "main";
	if (ms_hub_cache_commit(m->cache, j->repo, rev, j->commit))
		return set_err(j, 404, "RevisionNotFound", "Invalid rev id: %s", j->rev);
	snprintf(dir, sizeof dir, "%s/snapshots/%s", rdir, j->commit);
	walk(j, dir, "", 1, 0);
	qsort(j->ents, (size_t)j->nents, sizeof *j->ents, cmp_ent);
}

/* ---- answers (loop) ---- */

static void lfs_pointer_oid(const mentry *e, char out[65]) {
	char ptr[256];
	int n = snprintf(ptr, sizeof ptr, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %llu\n", e->etag,
			 (unsigned long long)e->size);
	git_blob_sha1(-1, ptr, (uint64_t)n, out);
}

static void iso_time(time_t t, char *out, size_t len) {
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

static json_t *last_commit(mjob *j) {
	char d[40];
	iso_time(j->mtime, d, sizeof d);
	return json_pack("{s:s, s:s, s:s}", "id", j->commit, "title", "moonspace mirror", "date", d);
}

static json_t *file_json(mjob *j, const mentry *e) {
	char oid[65];
	if (e->lfs) lfs_pointer_oid(e, oid);
	else snprintf(oid, sizeof oid, "%s", e->etag);
	json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "type", "file", "oid", oid, "size", (json_int_t)e->size, "path", e->path);
	if (e->lfs)
		json_object_set_new(o, "lfs", json_pack("{s:s, s:I, s:i}", "oid", e->etag, "size", (json_int_t)e->size, "pointerSize", 134));
	if (j->expand) json_object_set_new(o, "lastCommit", last_commit(j));
	return o;
}

static json_t *dir_json(mjob *j, const char *path) {
	char oid[65];
	git_blob_sha1(-1, path, strlen(path), oid); /* stable, not git's tree id */
	json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "type", "directory", "oid", oid, "size", 0, "path", path);
	if (j->expand) json_object_set_new(o, "lastCommit", last_commit(j));
	return o;
}

static void respond_json(ms_http_req *req, json_t *j) {
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	ms_http_respond_json(req, 200, s ? s : "null");
	free(s);
}

static void respond_hub_error(ms_http_req *req, int status, const char *code, const char *msg, const char *commit) {
	ms_http_set_header(req, "X-Error-Code", code);
	ms_http_set_header(req, "X-Error-Message", msg);
	if (commit && *commit) ms_http_set_header(req, "X-Repo-Commit", commit);
	json_t *j = json_pack("{s:s}", "error", msg);
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	ms_http_respond(req, status, "application/json", s, s ? strlen(s) : 0);
	free(s);
}

static void answer_info(mjob *j) {
	json_t *sib = json_array();
	for (int i = 0; i < j->nents; i++) {
		mentry *e = &j->ents[i];
		json_t *s = json_pack("{s:s}", "rfilename", e->path);
		if (j->blobs) {
			char oid[65];
			if (e->lfs) lfs_pointer_oid(e, oid);
			else snprintf(oid, sizeof oid, "%s", e->etag);
			json_object_set_new(s, "blobId", json_string(oid));
			json_object_set_new(s, "size", json_integer((json_int_t)e->size));
			if (e->lfs)
				json_object_set_new(s, "lfs", json_pack("{s:s, s:I, s:i}", "sha256", e->etag, "size", (json_int_t)e->size,
									"pointerSize", 134));
		}
		json_array_append_new(sib, s);
	}
	char d[40], id[25];
	iso_time(j->mtime, d, sizeof d);
	snprintf(id, sizeof id, "%.24s", j->commit);
	const char *slash = strchr(j->repo, '/');
	char author[128];
	snprintf(author, sizeof author, "%.*s", (int)(slash - j->repo), j->repo);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:i, s:i, s:[], s:o}", "_id", id, "id", j->repo,
			      "modelId", j->repo, "author", author, "sha", j->commit, "lastModified", d, "createdAt", d, "private", 0,
			      "gated", 0, "disabled", 0, "downloads", 0, "likes", 0, "tags", "siblings", sib);
	respond_json(j->req, o);
}

static void answer_tree(mjob *j) {
	const char *base = j->path;
	size_t bl = strlen(base);
	json_t *arr = json_array();
	int any = bl == 0;
	/* directories seen at this level (non-recursive) or anywhere below (recursive) */
	json_t *seen = json_object();
	for (int i = 0; i < j->nents; i++) {
		mentry *e = &j->ents[i];
		const char *rest = e->path;
		if (bl) {
			if (!strcmp(e->path, base)) { /* the path is a file */
				json_array_append_new(arr, file_json(j, e));
				any = 1;
				continue;
			}
			if (strncmp(e->path, base, bl) || e->path[bl] != '/') continue;
			rest = e->path + bl + 1;
		}
		any = 1;
		/* directories between base and the file */
		for (const char *s = strchr(rest, '/'); s; s = strchr(s + 1, '/')) {
			char dpath[PATH_MAX];
			snprintf(dpath, sizeof dpath, "%.*s", (int)(s - e->path), e->path);
			if (!json_object_get(seen, dpath)) {
				json_object_set_new(seen, dpath, json_true());
				json_array_append_new(arr, dir_json(j, dpath));
			}
			if (!j->recursive) break;
		}
		if (j->recursive || !strchr(rest, '/')) json_array_append_new(arr, file_json(j, e));
	}
	json_decref(seen);
	if (!any) {
		json_decref(arr);
		char msg[2300];
		snprintf(msg, sizeof msg, "%.1500s does not exist on \"%.200s\"", base, j->rev);
		return respond_hub_error(j->req, 404, "EntryNotFound", msg, j->commit);
	}
	respond_json(j->req, arr);
}

static void answer_paths(mjob *j) {
	json_t *arr = json_array();
	size_t i;
	json_t *p;
	json_array_foreach(j->want_paths, i, p) {
		const char *want = json_string_value(p);
		if (!want) continue;
		size_t wl = strlen(want);
		int dir_done = 0;
		for (int k = 0; k < j->nents; k++) {
			mentry *e = &j->ents[k];
			if (!strcmp(e->path, want)) json_array_append_new(arr, file_json(j, e));
			else if (!dir_done && !strncmp(e->path, want, wl) && e->path[wl] == '/') {
				json_array_append_new(arr, dir_json(j, want));
				dir_done = 1;
			}
		}
	}
	respond_json(j->req, arr);
}

/* bytes=a-b | a- | -n against size; 1 = range, 0 = none/ignored, -1 = unsatisfiable */
static int parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *len) {
	if (strncmp(h, "bytes=", 6) || strchr(h, ',')) return 0;
	const char *p = h + 6;
	char *end;
	if (*p == '-') {
		unsigned long long n = strtoull(p + 1, &end, 10);
		if (end == p + 1 || *end) return 0;
		if (n == 0 || size == 0) return -1;
		if (n > size) n = size;
		*start = size - n;
		*len = n;
		return 1;
	}
	unsigned long long a = strtoull(p, &end, 10);
	if (end == p || *end != '-') return 0;
	p = end + 1;
	unsigned long long b = size ? size - 1 : 0;
	if (*p) {
		b = strtoull(p, &end, 10);
		if (*end || b < a) return 0;
		if (b >= size) b = size - 1;
	}
	if (a >= size) return -1;
	*start = a;
	*len = b - a + 1;
	return 1;
}

static void answer_resolve(mjob *j) {
	ms_http_req *req = j->req;
	mentry *e = NULL;
	for (int i = 0; i < j->nents && !e; i++)
		if (!strcmp(j->ents[i].path, j->path)) e = &j->ents[i];
	if (!e) {
		char msg[2300];
		snprintf(msg, sizeof msg, "Entry not found: %s", j->path);
		return respond_hub_error(req, 404, "EntryNotFound", msg, j->commit);
	}
	int fd = open(e->abs, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) || (uint64_t)st.st_size != e->size) {
		if (fd >= 0) close(fd);
		return respond_hub_error(req, 503, "FileChanged", "the file changed while being served; retry", j->commit);
	}
	char q[80], sz[32];
	snprintf(q, sizeof q, "\"%s\"", e->etag);
	ms_http_set_header(req, "ETag", q);
	ms_http_set_header(req, "X-Repo-Commit", j->commit);
	ms_http_set_header(req, "Accept-Ranges", "bytes");
	if (e->lfs) {
		snprintf(sz, sizeof sz, "%llu", (unsigned long long)e->size);
		ms_http_set_header(req, "X-Linked-Etag", q);
		ms_http_set_header(req, "X-Linked-Size", sz);
	}
	uint64_t start = 0, len = e->size;
	int status = 200;
	const char *range = ms_http_req_header(req, "range");
	if (range) {
		int pr = parse_range(range, e->size, &start, &len);
		if (pr < 0) {
			close(fd);
			char cr[64];
			snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)e->size);
			ms_http_set_header(req, "Content-Range", cr);
			return ms_http_respond(req, 416, "text/plain", "range not satisfiable\n", 22);
		}
		if (pr > 0) {
			char cr[96];
			snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)start, (unsigned long long)(start + len - 1),
				 (unsigned long long)e->size);
			ms_http_set_header(req, "Content-Range", cr);
			status = 206;
		}
	}
	ms_http_respond_fd(req, status, e->lfs ? "application/octet-stream" : ms_http_mime_type(e->path), fd, start, len);
}

static void job_free(mjob *j) {
	for (int i = 0; i < j->nents; i++) {
		free(j->ents[i].path);
		free(j->ents[i].abs);
	}
	free(j->ents);
	json_decref(j->want_paths);
	free(j);
}

static void on_req_gone(ms_http_req *req, void *ud) {
	(void)req;
	mjob *j = ud;
	j->gone = 1;
	j->req = NULL;
}

static void job_after(uv_work_t *w, int status) {
	mjob *j = w->data;
	if (j->gone || !j->req) return job_free(j);
	ms_http_on_close(j->req, NULL, NULL);
	if (status) respond_hub_error(j->req, 500, "Internal", "the mirror could not list the repo", NULL);
	else if (j->status != 200) respond_hub_error(j->req, j->status, j->ecode, j->emsg, j->commit);
	else if (j->kind == K_INFO) answer_info(j);
	else if (j->kind == K_TREE) answer_tree(j);
	else if (j->kind == K_PATHS) answer_paths(j);
	else answer_resolve(j);
	job_free(j);
}

/* ---- routing ---- */

/* Splits the raw path into at most max decoded segments; the last one keeps the rest
 * (still '/'-separated, each piece decoded). Returns the count, or -1. */
static int split(const char *path, char segs[][2048], int max) {
	int n = 0;
	const char *p = path;
	while (*p == '/') p++;
	while (*p && n < max) {
		const char *e = (n == max - 1) ? p + strlen(p) : strchr(p, '/');
		if (!e) e = p + strlen(p);
		/* decode piecewise so an encoded '/' inside a segment (refs%2Fpr%2F1) stays in it */
		if (ms_http_url_decode(p, (size_t)(e - p), segs[n], 2048, 0)) return -1;
		n++;
		p = e;
		while (*p == '/') p++;
	}
	return n;
}

int ms_hub_mirror_handle(ms_hub_mirror *m, ms_http_req *req, const char *path) {
	if (!m) return MS_ENOENT;
	char (*seg)[2048] = malloc(8 * 2048);
	if (!seg) return MS_ENOMEM;
	int kind = -1, n;
	char repo[512] = "", rev[2048] = "main", file[2048] = "";
	if (!strncmp(path, "/api/models/", 12)) {
		n = split(path + 12, seg, 5);
		if (n >= 2) snprintf(repo, sizeof repo, "%s/%s", seg[0], seg[1]);
		if (n == 2) kind = K_INFO;
		else if (n >= 4 && !strcmp(seg[2], "revision")) kind = n == 4 ? K_INFO : -1, snprintf(rev, sizeof rev, "%s", seg[3]);
		else if (n >= 4 && !strcmp(seg[2], "tree")) kind = K_TREE, snprintf(rev, sizeof rev, "%s", seg[3]);
		else if (n == 4 && !strcmp(seg[2], "paths-info")) kind = K_PATHS, snprintf(rev, sizeof rev, "%s", seg[3]);
		if (kind == K_TREE && n == 5) snprintf(file, sizeof file, "%s", seg[4]);
	} else {
		n = split(path, seg, 5);
		if (n == 5 && !strcmp(seg[2], "resolve")) {
			kind = K_RESOLVE;
			snprintf(repo, sizeof repo, "%s/%s", seg[0], seg[1]);
			snprintf(rev, sizeof rev, "%s", seg[3]);
			snprintf(file, sizeof file, "%s", seg[4]);
		}
	}
	free(seg);
	if (kind < 0) return MS_ENOENT;
	int is_post = !strcmp(req->method, "POST");
	if ((kind == K_PATHS) != is_post) {
		ms_http_respond_error(req, 405, "method_not_allowed", "%s is not allowed here", req->method);
		return 0;
	}
	if (!ms_hub_valid_repo(repo)) {
		respond_hub_error(req, 404, "RepoNotFound", "Repository not found", NULL);
		return 0;
	}
	size_t fl = strlen(file);
	while (fl && file[fl - 1] == '/') file[--fl] = 0;
	if ((kind == K_RESOLVE && !hub_valid_path(file)) || (kind == K_TREE && fl && !hub_valid_path(file)) || strlen(rev) > 200 ||
	    strstr(rev, "..")) {
		respond_hub_error(req, 404, "EntryNotFound", "Entry not found", NULL);
		return 0;
	}
	mjob *j = calloc(1, sizeof *j);
	if (!j) return MS_ENOMEM;
	j->m = m;
	j->req = req;
	j->kind = kind;
	snprintf(j->repo, sizeof j->repo, "%.255s", repo);
	snprintf(j->rev, sizeof j->rev, "%.255s", rev);
	snprintf(j->path, sizeof j->path, "%s", file);
	char b[16];
	j->recursive = ms_http_req_query(req, "recursive", b, sizeof b) && (!strcmp(b, "true") || !strcmp(b, "1"));
	j->blobs = ms_http_req_query(req, "blobs", b, sizeof b) && (!strcmp(b, "true") || !strcmp(b, "1"));
	j->expand = ms_http_req_query(req, "expand", b, sizeof b) && (!strcmp(b, "true") || !strcmp(b, "1"));
	if (kind == K_PATHS) {
		json_t *body = json_loadb(req->body, req->body_len, 0, NULL);
		j->want_paths = json_incref(json_object_get(body, "paths"));
		j->expand = json_is_true(json_object_get(body, "expand"));
		json_decref(body);
		if (!json_is_array(j->want_paths)) {
			job_free(j);
			ms_http_respond_error(req, 400, "bad_request", "expected {\"paths\": [...]}");
			return 0;
		}
	}
	j->work.data = j;
	ms_http_on_close(req, on_req_gone, j);
	if (uv_queue_work(m->loop, &j->work, job_work, job_after)) {
		ms_http_on_close(req, NULL, NULL);
		job_free(j);
		ms_http_respond_error(req, 500, "internal", "cannot queue work");
	}
	return 0;
}

void ms_hub_route(struct ms_host *h, ms_http_req *req, char **args) {
	(void)args;
	const char *t = req->target;
	size_t tl = strcspn(t, "?#");
	char *path = malloc(tl + 2);
	if (!path) return ms_http_respond_error(req, 500, "internal", "out of memory");
	size_t k = 0;
	for (size_t i = 0; i < tl; i++)
		if (!(t[i] == '/' && k && path[k - 1] == '/')) path[k++] = t[i];
	path[k] = 0;
	const char *p = path;
	size_t rl = strlen(h->cfg->root_path);
	if (rl && !strncmp(p, h->cfg->root_path, rl) && (p[rl] == '/' || !p[rl])) p += rl;
	int rc = ms_hub_mirror_handle(h->mirror, req, p);
	free(path);
	if (rc == MS_ENOENT) ms_http_respond_error(req, 404, "not_found", "Nothing at %s", req->path);
	else if (rc) ms_http_respond_error(req, 500, "internal", "%s", ms_strerror(rc));
}

int ms_hub_mirror_new(uv_loop_t *loop, char *const *dirs, int ndirs, const char *cache, ms_hub_mirror **out) {
	*out = NULL;
	ms_hub_mirror *m = calloc(1, sizeof *m);
	if (!m) return MS_ENOMEM;
	m->loop = loop;
	m->dirs = calloc((size_t)ndirs + 1, sizeof *m->dirs);
	for (int i = 0; m->dirs && i < ndirs; i++)
		if ((m->dirs[m->ndirs] = strdup(dirs[i]))) m->ndirs++;
	m->cache = cache ? strdup(cache) : NULL;
	if (!m->dirs || uv_mutex_init(&m->mu)) {
		free(m->dirs);
		free(m->cache);
		free(m);
		return MS_ENOMEM;
	}
	*out = m;
	return 0;
}

void ms_hub_mirror_free(ms_hub_mirror *m) {
	if (!m) return;
	for (int i = 0; i < m->ndirs; i++) free(m->dirs[i]);
	free(m->dirs);
	free(m->cache);
	for (int i = 0; i < HC_BUCKETS; i++)
		for (hentry *e = m->b[i], *n; e; e = n) {
			n = e->next;
			free(e->path);
			free(e);
		}
	uv_mutex_destroy(&m->mu);
	free(m);
}
