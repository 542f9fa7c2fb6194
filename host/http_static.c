/* host/http_static.c: static files (ms_http_serve_file) and MIME types.
 *
 * Every file served is kept in a per-server cache keyed by its path and checked against
 * one stat() per request (device, inode, size, mtime): small files are answered from
 * memory with a single write, their gzipped bytes are made once per version, and the
 * realpath() check that keeps symlinks from leading out of the root runs only when a
 * path is first seen or has changed. Big files are sent from the file in pieces.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "host/http.h"
#include "host/http_int.h"

#define FC_BUCKETS 1024
#define FC_MAX_FILE (1u << 20)      /* files up to this size are kept in memory */
#define FC_MAX_BYTES (64u << 20)    /* all cached bytes (plain + gzip) */
#define GZ_MIN 256

typedef struct fentry {
	struct fentry *next;
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	const char *mime;
	int compressible;
	char etag[64];
	char etag_gz[72];
	char lastmod[40];
	char *data;         /* the whole file, or NULL when too big to keep */
	char *gz;
	size_t gz_len;
	int gz_tried;
} fentry;

typedef struct rootreal {
	struct rootreal *next;
	char *root, *real;
} rootreal;

struct http_file_cache {
	fentry *b[FC_BUCKETS];
	size_t bytes;
	rootreal *roots;
};

http_file_cache *http_file_cache_new(void) { return calloc(1, sizeof(http_file_cache)); }

static void fentry_free_data(http_file_cache *fc, fentry *e) {
	if (e->data) fc->bytes -= (size_t)e->size;
	if (e->gz) fc->bytes -= e->gz_len;
	free(e->data);
	free(e->gz);
	e->data = e->gz = NULL;
	e->gz_len = 0;
	e->gz_tried = 0;
}

void http_file_cache_free(http_file_cache *fc) {
	if (!fc) return;
	for (size_t i = 0; i < FC_BUCKETS; i++) {
		for (fentry *e = fc->b[i], *n; e; e = n) {
			n = e->next;
			fentry_free_data(fc, e);
			free(e->path);
			free(e);
		}
	}
	for (rootreal *r = fc->roots, *n; r; r = n) {
		n = r->next;
		free(r->root);
		free(r->real);
		free(r);
	}
	free(fc);
}

/* ---------------------------------------------------------------- MIME types */

static const struct { const char *ext, *mime; int z; } mime_table[] = {
	{"html", "text/html; charset=utf-8", 1},
	{"htm", "text/html; charset=utf-8", 1},
	{"css", "text/css; charset=utf-8", 1},
	{"js", "text/javascript; charset=utf-8", 1},
	{"mjs", "text/javascript; charset=utf-8", 1},
	{"json", "application/json", 1},
	{"map", "application/json", 1},
	{"webmanifest", "application/manifest+json", 1},
	{"txt", "text/plain; charset=utf-8", 1},
	{"md", "text/markdown; charset=utf-8", 1},
	{"lua", "text/plain; charset=utf-8", 1},
	{"csv", "text/csv; charset=utf-8", 1},
	{"xml", "application/xml", 1},
	{"yaml", "text/yaml; charset=utf-8", 1},
	{"yml", "text/yaml; charset=utf-8", 1},
	{"svg", "image/svg+xml", 1},
	{"wasm", "application/wasm", 1},
	{"png", "image/png", 0},
	{"jpg", "image/jpeg", 0},
	{"jpeg", "image/jpeg", 0},
	{"gif", "image/gif", 0},
	{"webp", "image/webp", 0},
	{"avif", "image/avif", 0},
	{"ico", "image/x-icon", 0},
	{"woff", "font/woff", 0},
	{"woff2", "font/woff2", 0},
	{"ttf", "font/ttf", 0},
	{"otf", "font/otf", 0},
	{"pdf", "application/pdf", 0},
	{"mp3", "audio/mpeg", 0},
	{"wav", "audio/wav", 0},
	{"ogg", "audio/ogg", 0},
	{"mp4", "video/mp4", 0},
	{"webm", "video/webm", 0},
	{"zip", "application/zip", 0},
	{"gz", "application/gzip", 0},
};

static int mime_index(const char *path) {
	const char *slash = strrchr(path, '/');
	const char *dot = strrchr(slash ? slash : path, '.');
	if (!dot || !dot[1]) return -1;
	for (size_t i = 0; i < MS_ARRAY_LEN(mime_table); i++)
		if (strcasecmp(dot + 1, mime_table[i].ext) == 0) return (int)i;
	return -1;
}

const char *ms_http_mime_type(const char *path) {
	int i = path ? mime_index(path) : -1;
	return i < 0 ? "application/octet-stream" : mime_table[i].mime;
}

/* ---------------------------------------------------------------- cache */

static uint32_t hash_str(const char *s) {
	uint32_t h = 2166136261u;
	for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static fentry *fc_find(http_file_cache *fc, const char *path) {
	for (fentry *e = fc->b[hash_str(path) % FC_BUCKETS]; e; e = e->next)
		if (strcmp(e->path, path) == 0) return e;
	return NULL;
}

static int same_version(const fentry *e, const struct stat *st) {
	return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
	       e->mtime.tv_sec == st->st_mtim.tv_sec && e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static const char *root_real(http_file_cache *fc, const char *root) {
	for (rootreal *r = fc->roots; r; r = r->next)
		if (strcmp(r->root, root) == 0) return r->real;
	char *real = realpath(root, NULL);
	if (!real) return NULL;
	rootreal *r = calloc(1, sizeof *r);
	char *copy = strdup(root);
	if (!r || !copy) {
		free(r);
		free(copy);
		free(real);
		return NULL;
	}
	r->root = copy;
	r->real = real;
	r->next = fc->roots;
	fc->roots = r;
	return real;
}

/* 1 when the file's real path lies below the root's real path. */
static int inside_root(http_file_cache *fc, const char *root, const char *full) {
	const char *rr = root_real(fc, root);
	if (!rr) return 0;
	char *real = realpath(full, NULL);
	if (!real) return 0;
	size_t n = strlen(rr);
	int ok = strncmp(real, rr, n) == 0 && (real[n] == '/' || (n == 1 && rr[0] == '/'));
	free(real);
	return ok;
}

/* (Re)loads the entry for full: version fields, validators and, for small files, the
 * bytes. Returns NULL on error. */
static fentry *fc_load(http_file_cache *fc, fentry *e, const char *full, const struct stat *st0) {
	int fd = open(full, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return NULL;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return NULL;
	}
	(void)st0;
	char *data = NULL;
	if ((uint64_t)st.st_size <= FC_MAX_FILE && fc->bytes + (size_t)st.st_size <= FC_MAX_BYTES) {
		data = malloc((size_t)st.st_size + 1);
		if (data) {
			size_t got = 0;
			while (got < (size_t)st.st_size) {
				ssize_t n = pread(fd, data + got, (size_t)st.st_size - got, (off_t)got);
				if (n <= 0) break;
				got += (size_t)n;
			}
			if (got != (size_t)st.st_size) { /* changed while reading: don't cache it */
				free(data);
				data = NULL;
			}
		}
	}
	close(fd);
	if (!e) {
		e = calloc(1, sizeof *e);
		if (!e || !(e->path = strdup(full))) {
			free(e);
			free(data);
			return NULL;
		}
		uint32_t h = hash_str(full) % FC_BUCKETS;
		e->next = fc->b[h];
		fc->b[h] = e;
	} else {
		fentry_free_data(fc, e);
	}
	e->dev = st.st_dev;
	e->ino = st.st_ino;
	e->size = st.st_size;
	e->mtime = st.st_mtim;
	int mi = mime_index(full);
	e->mime = mi < 0 ? "application/octet-stream" : mime_table[mi].mime;
	e->compressible = mi >= 0 && mime_table[mi].z;
	snprintf(e->etag, sizeof e->etag, "\"%llx-%llx\"", (unsigned long long)st.st_size,
		 (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec);
	snprintf(e->etag_gz, sizeof e->etag_gz, "%.*s-gz\"", (int)strlen(e->etag) - 1, e->etag);
	struct tm tm;
	gmtime_r(&st.st_mtim.tv_sec, &tm);
	strftime(e->lastmod, sizeof e->lastmod, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	e->data = data;
	if (data) fc->bytes += (size_t)st.st_size;
	return e;
}

/* Gzips the cached bytes once per version; keeps the result only if it is smaller. */
static void fc_gzip(http_file_cache *fc, fentry *e) {
	if (e->gz_tried || !e->data) return;
	e->gz_tried = 1;
	z_stream z;
	memset(&z, 0, sizeof z);
	if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return;
	uLong bound = deflateBound(&z, (uLong)e->size);
	char *out = malloc(bound);
	if (out) {
		z.next_in = (Bytef *)e->data;
		z.avail_in = (uInt)e->size;
		z.next_out = (Bytef *)out;
		z.avail_out = (uInt)bound;
		if (deflate(&z, Z_FINISH) == Z_STREAM_END && z.total_out < (uLong)e->size &&
		    fc->bytes + z.total_out <= FC_MAX_BYTES) {
			e->gz = out;
			e->gz_len = z.total_out;
			fc->bytes += e->gz_len;
			out = NULL;
		}
	}
	free(out);
	deflateEnd(&z);
}

/* ---------------------------------------------------------------- request headers */

/* gzip listed in Accept-Encoding without q=0. */
static int accepts_gzip(const char *ae) {
	if (!ae) return 0;
	for (const char *p = ae; (p = strcasestr(p, "gzip")) != NULL; p += 4) {
		if (p > ae && p[-1] != ' ' && p[-1] != ',' && p[-1] != '\t') continue;
		const char *q = p + 4;
		while (*q == ' ' || *q == '\t') q++;
		if (*q == ',' || *q == 0) return 1;
		if (*q != ';') continue;
		q++;
		while (*q == ' ' || *q == '\t') q++;
		if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=') return strtod(q + 2, NULL) > 0.0;
		return 1;
	}
	return 0;
}

/* If-None-Match lists one of our tags (weak comparison, as RFC 9110 asks for it). */
static int etag_matches(const char *inm, const fentry *e) {
	const char *p = inm;
	while (*p) {
		while (*p == ' ' || *p == ',' || *p == '\t') p++;
		if (*p == '*') return 1;
		if (p[0] == 'W' && p[1] == '/') p += 2;
		if (*p != '"') break;
		const char *end = strchr(p + 1, '"');
		if (!end) break;
		size_t n = (size_t)(end - p + 1);
		if ((n == strlen(e->etag) && memcmp(p, e->etag, n) == 0) ||
		    (n == strlen(e->etag_gz) && memcmp(p, e->etag_gz, n) == 0))
			return 1;
		p = end + 1;
	}
	return 0;
}

static int not_modified_since(const char *ims, const fentry *e) {
	if (strcmp(ims, e->lastmod) == 0) return 1;
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *end = strptime(ims, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (!end) return 0;
	return timegm(&tm) >= e->mtime.tv_sec;
}

/* One "bytes=a-b" range. 1 = range set, 0 = ignore the header, -1 = unsatisfiable. */
static int parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *len) {
	if (strncasecmp(h, "bytes=", 6) != 0) return 0;
	const char *p = h + 6;
	if (strchr(p, ',')) return 0; /* several ranges: answer the whole file */
	while (*p == ' ') p++;
	char *endp;
	if (*p == '-') {
		if (p[1] < '0' || p[1] > '9') return 0;
		unsigned long long n = strtoull(p + 1, &endp, 10);
		if (*endp && *endp != ' ') return 0;
		if (n == 0 || size == 0) return -1;
		if (n > size) n = size;
		*start = size - n;
		*len = n;
		return 1;
	}
	if (*p < '0' || *p > '9') return 0;
	unsigned long long a = strtoull(p, &endp, 10), b;
	if (*endp != '-') return 0;
	p = endp + 1;
	if (*p == 0 || *p == ' ') b = size ? size - 1 : 0;
	else {
		if (*p < '0' || *p > '9') return 0;
		b = strtoull(p, &endp, 10);
		if (*endp && *endp != ' ') return 0;
		if (b < a) return 0;
	}
	if (a >= size) return -1;
	if (b >= size) b = size - 1;
	*start = a;
	*len = b - a + 1;
	return 1;
}

/* ---------------------------------------------------------------- serving */

/* rel's segments: ".." refuses the request, other dot-names are "not found". */
static int check_rel(const char *rel) {
	const char *p = rel;
	while (*p) {
		while (*p == '/') p++;
		const char *s = p;
		while (*p && *p != '/') p++;
		size_t n = (size_t)(p - s);
		if (n == 2 && s[0] == '.' && s[1] == '.') return -1;
		if (n >= 1 && s[0] == '.') return MS_ENOENT;
		if (memchr(s, '\\', n)) return MS_ENOENT;
	}
	return 0;
}

int ms_http_serve_file(ms_http_req *req, const char *root, const char *rel, const ms_http_static_opts *opts) {
	if (!req || !root || !rel) return MS_EINVAL;
	int chk = check_rel(rel);
	if (chk == -1) {
		ms_http_respond_error(req, 404, "not_found", "not found");
		return 0;
	}
	if (chk) return chk;
	http_file_cache *fc = http_req_file_cache(req);
	if (!fc) { /* the client is gone: this frees the request */
		ms_http_respond(req, 499, NULL, NULL, 0);
		return 0;
	}
	while (*rel == '/') rel++;
	char full[PATH_MAX];
	size_t rl = strlen(root);
	while (rl > 1 && root[rl - 1] == '/') rl--;
	int n = snprintf(full, sizeof full, "%.*s/%s", (int)rl, root, rel);
	if (n < 0 || (size_t)n >= sizeof full - 16) return MS_ENOENT;
	struct stat st;
	if (stat(full, &st) != 0) return MS_ENOENT;
	if (S_ISDIR(st.st_mode)) {
		while (n > 0 && full[n - 1] == '/') full[--n] = 0;
		memcpy(full + n, "/index.html", 12);
		if (stat(full, &st) != 0) return MS_ENOENT;
	}
	if (!S_ISREG(st.st_mode)) return MS_ENOENT;

	fentry *e = fc_find(fc, full);
	if (!e || !same_version(e, &st)) {
		if (!inside_root(fc, root, full)) {
			MS_WARN("http", "refused %s: outside %s", full, root);
			ms_http_respond_error(req, 404, "not_found", "not found");
			return 0;
		}
		e = fc_load(fc, e, full, &st);
		if (!e) return MS_ENOENT;
	}
	if (strcmp(req->method, "GET") != 0 && !req->is_head) {
		ms_http_set_header(req, "Allow", "GET, HEAD");
		ms_http_respond_error(req, 405, "method_not_allowed", "use GET or HEAD");
		return 0;
	}

	const char *ae = ms_http_req_header(req, "accept-encoding");
	int gzip_ok = opts && opts->allow_gzip && e->compressible && e->size >= GZ_MIN && accepts_gzip(ae);
	char extra[512];
	int xl = snprintf(extra, sizeof extra, "Last-Modified: %s\r\nAccept-Ranges: bytes\r\n%s%s%s%s", e->lastmod,
			  opts && opts->cache_control ? "Cache-Control: " : "",
			  opts && opts->cache_control ? opts->cache_control : "",
			  opts && opts->cache_control ? "\r\n" : "",
			  opts && opts->allow_gzip && e->compressible ? "Vary: Accept-Encoding\r\n" : "");
	if (xl < 0 || xl >= (int)sizeof extra - 100) xl = 0;

	const char *inm = ms_http_req_header(req, "if-none-match");
	const char *ims = ms_http_req_header(req, "if-modified-since");
	if ((inm && etag_matches(inm, e)) || (!inm && ims && not_modified_since(ims, e))) {
		xl += snprintf(extra + xl, sizeof extra - (size_t)xl, "ETag: %s\r\n", gzip_ok ? e->etag_gz : e->etag);
		http_respond_ex(req, 304, NULL, extra, (size_t)xl, NULL, 0);
		return 0;
	}

	uint64_t start = 0, len = (uint64_t)e->size;
	int status = 200;
	const char *range = ms_http_req_header(req, "range");
	if (range) {
		const char *ifr = ms_http_req_header(req, "if-range");
		if (!ifr || strcmp(ifr, e->etag) == 0 || strcmp(ifr, e->lastmod) == 0) {
			int pr = parse_range(range, (uint64_t)e->size, &start, &len);
			if (pr < 0) {
				xl += snprintf(extra + xl, sizeof extra - (size_t)xl, "ETag: %s\r\nContent-Range: bytes */%llu\r\n",
					       e->etag, (unsigned long long)e->size);
				http_respond_ex(req, 416, "text/plain", extra, (size_t)xl, "range not satisfiable\n", 22);
				return 0;
			}
			if (pr > 0) {
				status = 206;
				gzip_ok = 0;
				xl += snprintf(extra + xl, sizeof extra - (size_t)xl, "Content-Range: bytes %llu-%llu/%llu\r\n",
					       (unsigned long long)start, (unsigned long long)(start + len - 1),
					       (unsigned long long)e->size);
			}
		}
	}
	if (gzip_ok) {
		fc_gzip(fc, e);
		if (e->gz) {
			xl += snprintf(extra + xl, sizeof extra - (size_t)xl, "ETag: %s\r\nContent-Encoding: gzip\r\n", e->etag_gz);
			http_respond_ex(req, 200, e->mime, extra, (size_t)xl, e->gz, e->gz_len);
			return 0;
		}
	}
	xl += snprintf(extra + xl, sizeof extra - (size_t)xl, "ETag: %s\r\n", e->etag);
	if (e->data) {
		http_respond_ex(req, status, e->mime, extra, (size_t)xl, e->data + start, (size_t)len);
		return 0;
	}
	int fd = open(full, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return MS_ENOENT;
	http_respond_fd(req, status, e->mime, extra, (size_t)xl, fd, (off_t)start, len);
	return 0;
}

void ms_http_respond_fd(ms_http_req *req, int status, const char *content_type, int fd, uint64_t off, uint64_t len) {
	http_respond_fd(req, status, content_type, "", 0, fd, (off_t)off, len);
}
