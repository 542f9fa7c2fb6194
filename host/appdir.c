/* host/appdir.c: app discovery, loading into memory, rescans and watching (see appdir.h). */
#include "host/appdir.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MS_APP_NAME_MAX 96
/* Entries looked at per app when fingerprinting (bounds the work a huge tree can cause). */
#define MS_APP_MAX_ENTRIES 4096

const char *ms_app_status_name(ms_app_status s) {
	switch (s) {
	case MS_APP_OK: return "OK";
	case MS_APP_CONFIG_ERROR: return "CONFIG_ERROR";
	case MS_APP_NO_APP_FILE: return "NO_APP_FILE";
	}
	return "?";
}

int ms_app_name_valid(const char *s) {
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > MS_APP_NAME_MAX || !isalnum((unsigned char)s[0])) return 0;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i])) return 0;
	return 1;
}

/* ---------------------------------------------------------------- ms_appsrc */

ms_appsrc *ms_appsrc_ref(ms_appsrc *a) {
	if (a) a->refs++;
	return a;
}

static void appsrc_free(ms_appsrc *a) {
	free(a->owner);
	free(a->name);
	free(a->root);
	free(a->dir);
	free(a->error);
	free(a->notes);
	ms_card_free(&a->card);
	for (size_t i = 0; i < a->nfiles; i++) {
		free(a->files[i].path);
		free(a->files[i].data);
	}
	free(a->files);
	free(a);
}

void ms_appsrc_unref(ms_appsrc *a) {
	if (a && --a->refs == 0) appsrc_free(a);
}

static int file_cmp(const void *x, const void *y) {
	return strcmp(((const ms_appfile *)x)->path, ((const ms_appfile *)y)->path);
}

const ms_appfile *ms_appsrc_file(const ms_appsrc *a, const char *path) {
	if (!a || !path || !a->nfiles) return NULL;
	ms_appfile key = {.path = (char *)path};
	return bsearch(&key, a->files, a->nfiles, sizeof key, file_cmp);
}

int ms_appsrc_private(const ms_appsrc *a) {
	if (a->has_card) return a->card.private_;
	json_t *p = a->card.data ? json_object_get(a->card.data, "private") : NULL;
	return p && !json_is_false(p);
}

char *ms_appsrc_card_json(const ms_appsrc *a) {
	json_t *j;
	if (a->has_card) {
		j = ms_card_to_json(&a->card);
	} else if (a->card.data && json_is_object(a->card.data)) {
		j = json_deep_copy(a->card.data);
		json_t *p = j ? json_object_get(j, "private") : NULL;
		if (p && !json_is_false(p) && json_object_set_new(j, "private", json_true())) {
			json_decref(j);
			j = NULL;
		}
	} else {
		j = json_object();
	}
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return s;
}

/* ---------------------------------------------------------------- tree walk */

typedef struct walk_entry {
	char *rel;          /* relative path */
	struct stat st;     /* stat() of the target (followed) */
	int is_link;
	int escapes;        /* symlink resolving outside the app dir (or dangling) */
} walk_entry;

typedef struct walk {
	const char *dir;    /* app dir as given */
	char real[PATH_MAX];/* its realpath */
	walk_entry *e;
	size_t n, cap;
	int truncated;
} walk;

static int name_cmp(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

static int walk_push(walk *w, const char *rel, const struct stat *st, int is_link, int escapes) {
	if (w->n == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 32;
		walk_entry *ne = realloc(w->e, nc * sizeof *ne);
		if (!ne) return MS_ENOMEM;
		w->e = ne;
		w->cap = nc;
	}
	walk_entry *e = &w->e[w->n];
	if (!(e->rel = strdup(rel))) return MS_ENOMEM;
	e->st = *st;
	e->is_link = is_link;
	e->escapes = escapes;
	w->n++;
	return 0;
}

/* Is the symlink at path inside the app dir once resolved? */
static int link_inside(const walk *w, const char *path) {
	char real[PATH_MAX];
	if (!realpath(path, real)) return 0;
	size_t n = strlen(w->real);
	return strncmp(real, w->real, n) == 0 && real[n] == '/';
}

/* Lists the tree below the app dir in sorted order (names starting with '.' skipped);
 * symlinked directories are not descended into. */
static int walk_dir(walk *w, const char *rel, int depth) {
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof path, "%s%s%s", w->dir, *rel ? "/" : "", rel) >= sizeof path) return 0;
	DIR *d = opendir(path);
	if (!d) return 0;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.') continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			char **nn = realloc(names, nc * sizeof *nn);
			if (!nn) { rc = MS_ENOMEM; break; }
			names = nn;
			cap = nc;
		}
		if (!(names[n] = strdup(de->d_name))) { rc = MS_ENOMEM; break; }
		n++;
	}
	closedir(d);
	if (n) qsort(names, n, sizeof *names, name_cmp);
	for (size_t i = 0; i < n && !rc; i++) {
		char crel[PATH_MAX], cpath[PATH_MAX];
		if ((size_t)snprintf(crel, sizeof crel, "%s%s%s", rel, *rel ? "/" : "", names[i]) >= sizeof crel ||
		    (size_t)snprintf(cpath, sizeof cpath, "%s/%s", w->dir, crel) >= sizeof cpath)
			continue;
		if (w->n >= MS_APP_MAX_ENTRIES) { w->truncated = 1; break; }
		struct stat lst, st;
		if (lstat(cpath, &lst) != 0) continue;
		int is_link = S_ISLNK(lst.st_mode);
		int escapes = is_link && !link_inside(w, cpath);
		if (is_link && (escapes || stat(cpath, &st) != 0)) {
			memset(&st, 0, sizeof st);
			st.st_mode = S_IFLNK;
			escapes = 1;
		} else if (!is_link) {
			st = lst;
		}
		if ((rc = walk_push(w, crel, &st, is_link, escapes))) break;
		if (S_ISDIR(st.st_mode) && !is_link && depth < MS_APP_MAX_DEPTH) rc = walk_dir(w, crel, depth + 1);
	}
	for (size_t i = 0; i < n; i++) free(names[i]);
	free(names);
	return rc;
}

static void walk_free(walk *w) {
	for (size_t i = 0; i < w->n; i++) free(w->e[i].rel);
	free(w->e);
}

static int walk_app(walk *w, const char *dir) {
	memset(w, 0, sizeof *w);
	w->dir = dir;
	if (!realpath(dir, w->real)) return MS_ENOENT;
	return walk_dir(w, "", 0);
}

/* SHA-256 through EVP (the SHA256_* calls are deprecated in OpenSSL 3). A failed context
 * allocation yields an all-zero digest, which never equals a real one in practice; at
 * worst an app is re-read or reported changed once. */
typedef struct sha { EVP_MD_CTX *c; } sha;
static void sha_init(sha *h) {
	h->c = EVP_MD_CTX_new();
	if (h->c && EVP_DigestInit_ex(h->c, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(h->c);
		h->c = NULL;
	}
}
static void sha_update(sha *h, const void *p, size_t n) {
	if (h->c) EVP_DigestUpdate(h->c, p, n);
}
static void sha_final(sha *h, uint8_t out[32]) {
	memset(out, 0, 32);
	if (h->c) EVP_DigestFinal_ex(h->c, out, NULL);
	EVP_MD_CTX_free(h->c);
	h->c = NULL;
}

/* The stat fingerprint: paths, types, sizes, mtimes, inodes of every entry. */
static void walk_stamp(const walk *w, uint8_t out[32]) {
	sha c;
	sha_init(&c);
	sha_update(&c, w->real, strlen(w->real) + 1); /* a retargeted app symlink is a change */
	for (size_t i = 0; i < w->n; i++) {
		const walk_entry *e = &w->e[i];
		int64_t v[6] = {(int64_t)e->st.st_mode, (int64_t)e->st.st_size, (int64_t)e->st.st_mtim.tv_sec,
				(int64_t)e->st.st_mtim.tv_nsec, (int64_t)e->st.st_ino, e->escapes};
		sha_update(&c, e->rel, strlen(e->rel) + 1);
		sha_update(&c, v, sizeof v);
	}
	sha_final(&c, out);
}

/* ---------------------------------------------------------------- loading */

static void set_error(ms_appsrc *a, ms_app_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(ms_appsrc *a, ms_app_status st, const char *fmt, ...) {
	if (a->status == MS_APP_CONFIG_ERROR) return; /* the first config error is the one to fix */
	if (a->status == MS_APP_NO_APP_FILE && st == MS_APP_NO_APP_FILE) return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	free(a->error);
	a->error = strdup(msg);
	a->status = st;
}

static void add_note(ms_appsrc *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_note(ms_appsrc *a, const char *fmt, ...) {
	ms_buf b;
	ms_buf_init(&b);
	if (a->notes) ms_buf_printf(&b, "%s; ", a->notes);
	va_list ap;
	va_start(ap, fmt);
	ms_buf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (!b.data) return;
	free(a->notes);
	a->notes = ms_buf_steal(&b);
}

static int ends_with(const char *s, const char *suf) {
	size_t n = strlen(s), m = strlen(suf);
	return n >= m && strcmp(s + n - m, suf) == 0;
}

static void hash_blob(sha *c, const char *path, const char *data, size_t len) {
	uint64_t l = len;
	sha_update(c, path, strlen(path) + 1);
	sha_update(c, &l, sizeof l);
	sha_update(c, data, len);
}

/* Reads the .lua files (and the app file, whatever its extension) into a->files. */
static int load_files(ms_appsrc *a, const walk *w, const char *app_file) {
	size_t total = 0;
	a->files = calloc(w->n ? w->n : 1, sizeof *a->files);
	if (!a->files) return MS_ENOMEM;
	for (size_t i = 0; i < w->n; i++) {
		const walk_entry *e = &w->e[i];
		int is_main = app_file && strcmp(e->rel, app_file) == 0;
		if (!is_main && !ends_with(e->rel, ".lua")) continue;
		if (e->escapes) {
			if (is_main)
				set_error(a, MS_APP_CONFIG_ERROR, "%s is a symlink that leads outside the app directory: copy the file in instead",
					  e->rel);
			else
				add_note(a, "%s skipped: a symlink that leads outside the app directory", e->rel);
			continue;
		}
		if (!S_ISREG(e->st.st_mode)) continue;
		if (a->nfiles >= MS_APP_MAX_FILES) {
			set_error(a, MS_APP_CONFIG_ERROR, "app too large: more than %u .lua files", MS_APP_MAX_FILES);
			return 0;
		}
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof path, "%s/%s", a->dir, e->rel) >= sizeof path) continue;
		ms_appfile *f = &a->files[a->nfiles];
		int rc = ms_read_file(path, &f->data, &f->len, MS_APP_MAX_FILE_BYTES);
		if (rc == MS_ETOOBIG) {
			set_error(a, MS_APP_CONFIG_ERROR, "app too large: %s is over %u bytes", e->rel, MS_APP_MAX_FILE_BYTES);
			return 0;
		}
		if (rc == MS_ENOMEM) return rc;
		if (rc) {
			add_note(a, "%s skipped: %s", e->rel, ms_strerror(rc));
			continue;
		}
		if (!(f->path = strdup(e->rel))) { free(f->data); f->data = NULL; return MS_ENOMEM; }
		a->nfiles++;
		total += f->len;
		if (total > MS_APP_MAX_TOTAL_BYTES) {
			set_error(a, MS_APP_CONFIG_ERROR, "app too large: its .lua files add up to more than %u bytes", MS_APP_MAX_TOTAL_BYTES);
			return 0;
		}
	}
	return 0;
}

/* Reads README.md (refusing a symlink out of the app) and parses the card. Returns the
 * README bytes (for the revision) or NULL. */
static char *load_card(ms_appsrc *a, const walk *w, size_t *len) {
	*len = 0;
	const walk_entry *readme = NULL;
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->e[i].rel, "README.md") == 0) readme = &w->e[i];
	if (!readme) {
		set_error(a, MS_APP_CONFIG_ERROR, "README.md not found: create it with the card (--- title: ... sdk: lua ---)");
		return NULL;
	}
	if (readme->escapes) {
		set_error(a, MS_APP_CONFIG_ERROR, "README.md is a symlink that leads outside the app directory: copy the file in instead");
		return NULL;
	}
	char path[PATH_MAX], err[512];
	snprintf(path, sizeof path, "%s/README.md", a->dir);
	char *text;
	int rc = ms_read_file(path, &text, len, MS_CARD_MAX_BYTES);
	if (rc) {
		set_error(a, MS_APP_CONFIG_ERROR, "README.md: %s", rc == MS_ETOOBIG ? "larger than 1 MiB" : ms_strerror(rc));
		return NULL;
	}
	ms_card_init(&a->card);
	if (ms_card_parse(&a->card, text, *len, err, sizeof err) == 0) a->has_card = 1;
	else set_error(a, MS_APP_CONFIG_ERROR, "%s", err);
	return text;
}

static void compute_revision(ms_appsrc *a, const char *readme, size_t readme_len) {
	sha c;
	uint8_t h[32];
	sha_init(&c);
	hash_blob(&c, "README.md", readme ? readme : "", readme_len);
	for (size_t i = 0; i < a->nfiles; i++) hash_blob(&c, a->files[i].path, a->files[i].data, a->files[i].len);
	sha_final(&c, h);
	for (int i = 0; i < 32; i++) snprintf(a->revision + 2 * i, 3, "%02x", h[i]);
}

static ms_appsrc *appsrc_new(const char *root, const char *owner, const char *name) {
	ms_appsrc *a = calloc(1, sizeof *a);
	if (!a) return NULL;
	a->refs = 1;
	ms_card_init(&a->card);
	snprintf(a->id, sizeof a->id, "%s/%s", owner, name);
	a->owner = strdup(owner);
	a->name = strdup(name);
	a->root = strdup(root);
	ms_buf b;
	ms_buf_init(&b);
	ms_buf_printf(&b, "%s/%s/%s", root, owner, name);
	a->dir = ms_buf_steal(&b);
	if (!a->owner || !a->name || !a->root || !a->dir) {
		appsrc_free(a);
		return NULL;
	}
	return a;
}

/* Loads an app whose tree was already walked. */
static ms_appsrc *appsrc_load_walked(const char *root, const char *owner, const char *name, const walk *w, int walk_rc) {
	ms_appsrc *a = appsrc_new(root, owner, name);
	if (!a) return NULL;
	if (walk_rc == MS_ENOMEM) goto oom;
	walk_stamp(w, a->stamp);
	if (walk_rc) set_error(a, MS_APP_CONFIG_ERROR, "cannot read the app directory %s", a->dir);
	if (w->truncated) set_error(a, MS_APP_CONFIG_ERROR, "app too large: more than %u files and folders", MS_APP_MAX_ENTRIES);
	size_t readme_len = 0;
	char *readme = load_card(a, w, &readme_len);
	const char *app_file = a->has_card ? a->card.app_file : "app.lua";
	int rc = load_files(a, w, app_file);
	if (rc == MS_ENOMEM) {
		free(readme);
		goto oom;
	}
	if (a->nfiles > 1) qsort(a->files, a->nfiles, sizeof *a->files, file_cmp);
	compute_revision(a, readme, readme_len);
	free(readme);
	a->main = ms_appsrc_file(a, app_file);
	if (!a->main)
		set_error(a, MS_APP_NO_APP_FILE, "%s not found: create it or set app_file in README.md", app_file);
	if (a->status != MS_APP_OK) a->main = NULL;
	if (a->status != MS_APP_OK && !a->error) goto oom; /* the message itself could not be allocated */
	return a;
oom:
	appsrc_free(a);
	return NULL;
}

ms_appsrc *ms_appsrc_load(const char *root, const char *owner, const char *name) {
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/%s/%s", root, owner, name);
	walk w;
	int rc = walk_app(&w, dir);
	ms_appsrc *a = appsrc_load_walked(root, owner, name, &w, rc);
	walk_free(&w);
	return a;
}

/* ---------------------------------------------------------------- sets and scans */

void ms_appset_init(ms_appset *s) { memset(s, 0, sizeof *s); }

void ms_appset_free(ms_appset *s) {
	for (size_t i = 0; i < s->napps; i++) ms_appsrc_unref(s->apps[i]);
	free(s->apps);
	ms_appset_init(s);
}

static int app_cmp(const void *x, const void *y) {
	return strcmp((*(ms_appsrc *const *)x)->id, (*(ms_appsrc *const *)y)->id);
}

ms_appsrc *ms_appset_find(const ms_appset *s, const char *id) {
	size_t lo = 0, hi = s ? s->napps : 0;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(s->apps[mid]->id, id);
		if (c == 0) return s->apps[mid];
		if (c < 0) lo = mid + 1;
		else hi = mid;
	}
	return NULL;
}

typedef struct scan {
	ms_appset *out;
	size_t cap;
	const ms_appset *prev;
} scan;

static int scan_has(const scan *sc, const char *id) {
	for (size_t i = 0; i < sc->out->napps; i++) /* unsorted while scanning; few apps */
		if (strcmp(sc->out->apps[i]->id, id) == 0) return 1;
	return 0;
}

static int scan_add(scan *sc, ms_appsrc *a) {
	if (sc->out->napps == sc->cap) {
		size_t nc = sc->cap ? sc->cap * 2 : 16;
		ms_appsrc **na = realloc(sc->out->apps, nc * sizeof *na);
		if (!na) return MS_ENOMEM;
		sc->out->apps = na;
		sc->cap = nc;
	}
	sc->out->apps[sc->out->napps++] = a;
	return 0;
}

static int scan_app(scan *sc, const char *root, const char *owner, const char *name) {
	char id[MS_APP_ID_MAX], dir[PATH_MAX];
	snprintf(id, sizeof id, "%s/%s", owner, name);
	if (scan_has(sc, id)) {
		if (!sc->prev || !ms_appset_find(sc->prev, id)) /* once, not on every poll */
			MS_WARN("appdir", "%s/%s: ignored, %s was already found in an earlier apps directory", root, id, id);
		return 0;
	}
	snprintf(dir, sizeof dir, "%s/%s/%s", root, owner, name);
	walk w;
	int wrc = walk_app(&w, dir);
	if (wrc == MS_ENOMEM) { walk_free(&w); return MS_ENOMEM; }
	ms_appsrc *old = ms_appset_find(sc->prev, id), *a;
	uint8_t stamp[32];
	walk_stamp(&w, stamp);
	if (old && !wrc && strcmp(old->root, root) == 0 && memcmp(old->stamp, stamp, sizeof stamp) == 0)
		a = ms_appsrc_ref(old); /* nothing changed on disk: reuse without reading */
	else
		a = appsrc_load_walked(root, owner, name, &w, wrc);
	walk_free(&w);
	if (!a) return MS_ENOMEM;
	if (scan_add(sc, a)) {
		ms_appsrc_unref(a);
		return MS_ENOMEM;
	}
	return 0;
}

static int is_dir(const char *path) {
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Sorted names of subdirectories of path that are valid OWNER/NAME parts. */
static int list_names(const char *path, char ***out, size_t *n) {
	*out = NULL;
	*n = 0;
	DIR *d = opendir(path);
	if (!d) return errno == ENOENT ? MS_ENOENT : MS_EIO;
	size_t cap = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!ms_app_name_valid(de->d_name)) continue;
		char sub[PATH_MAX];
		if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) >= sizeof sub || !is_dir(sub)) continue;
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			char **nn = realloc(*out, nc * sizeof *nn);
			if (!nn) { rc = MS_ENOMEM; break; }
			*out = nn;
			cap = nc;
		}
		if (!((*out)[*n] = strdup(de->d_name))) { rc = MS_ENOMEM; break; }
		(*n)++;
	}
	closedir(d);
	if (*n) qsort(*out, *n, sizeof **out, name_cmp);
	return rc;
}

static void free_names(char **v, size_t n) {
	for (size_t i = 0; i < n; i++) free(v[i]);
	free(v);
}

static int scan_root(scan *sc, const char *root) {
	char **owners;
	size_t nowners;
	int rc = list_names(root, &owners, &nowners);
	if (rc && rc != MS_ENOMEM) {
		if (!sc->prev) MS_WARN("appdir", "%s: cannot read the apps directory: %s", root, ms_strerror(rc));
		rc = 0;
	}
	for (size_t i = 0; i < nowners && !rc; i++) {
		char odir[PATH_MAX], **names;
		size_t nnames;
		snprintf(odir, sizeof odir, "%s/%s", root, owners[i]);
		rc = list_names(odir, &names, &nnames);
		if (rc && rc != MS_ENOMEM) rc = 0;
		for (size_t j = 0; j < nnames && !rc; j++) rc = scan_app(sc, root, owners[i], names[j]);
		free_names(names, nnames);
	}
	free_names(owners, nowners);
	return rc;
}

int ms_appdir_scan(const char *const *roots, size_t nroots, const ms_appset *prev, ms_appset *out) {
	ms_appset_init(out);
	scan sc = {.out = out, .prev = prev};
	int rc = 0;
	for (size_t i = 0; i < nroots && !rc; i++) rc = scan_root(&sc, roots[i]);
	if (rc) {
		ms_appset_free(out);
		return rc;
	}
	if (out->napps > 1) qsort(out->apps, out->napps, sizeof *out->apps, app_cmp);
	return 0;
}

static int str_eq(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

size_t ms_appset_diff(const ms_appset *o, const ms_appset *n, ms_appdir_cb cb, void *ud) {
	size_t i = 0, j = 0, changes = 0;
	size_t on = o ? o->napps : 0, nn = n ? n->napps : 0;
	while (i < on || j < nn) {
		int c = i >= on ? 1 : j >= nn ? -1 : strcmp(o->apps[i]->id, n->apps[j]->id);
		if (c < 0) {
			changes++;
			if (cb) cb(ud, MS_APPDIR_REMOVED, NULL, o->apps[i]);
			i++;
		} else if (c > 0) {
			changes++;
			if (cb) cb(ud, MS_APPDIR_ADDED, n->apps[j], NULL);
			j++;
		} else {
			ms_appsrc *a = o->apps[i], *b = n->apps[j];
			if (a != b && (strcmp(a->revision, b->revision) || a->status != b->status || !str_eq(a->error, b->error) ||
				       strcmp(a->dir, b->dir))) {
				changes++;
				if (cb) cb(ud, MS_APPDIR_CHANGED, b, a);
			}
			i++;
			j++;
		}
	}
	return changes;
}

/* ---------------------------------------------------------------- watching */

struct ms_appdir_watch {
	uv_loop_t *loop;
	char **roots;
	size_t nroots;
	unsigned interval_ms;
	ms_appdir_cb cb;
	void *ud;
	ms_appset set;
	uv_timer_t poll;      /* periodic rescan */
	uv_timer_t debounce;  /* one rescan shortly after a burst of fs events */
	uv_fs_event_t *events;/* one per root (not recursive on Linux: catches apps added/removed) */
	size_t nevents;       /* started fs_event handles */
	int open_handles;     /* handles still to be closed by stop */
	int stopped;
};

/* Forwards changes unless the watch was stopped from inside a callback. */
static void watch_forward(void *ud, ms_appdir_change kind, ms_appsrc *n, ms_appsrc *o) {
	ms_appdir_watch *w = ud;
	if (!w->stopped) w->cb(w->ud, kind, n, o);
}

size_t ms_appdir_watch_rescan(ms_appdir_watch *w) {
	if (w->stopped) return 0;
	ms_appset next;
	if (ms_appdir_scan((const char *const *)w->roots, w->nroots, &w->set, &next)) {
		MS_WARN("appdir", "rescan: out of memory, keeping the previous apps");
		return 0;
	}
	ms_appset old = w->set;
	w->set = next; /* callbacks see the new set through ms_appdir_watch_apps */
	size_t changes = ms_appset_diff(&old, &w->set, watch_forward, w);
	ms_appset_free(&old);
	return changes;
}

static void on_poll(uv_timer_t *t) { ms_appdir_watch_rescan(t->data); }

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
	ms_appdir_watch *w = h->data;
	if (!w->stopped) uv_timer_start(&w->debounce, on_poll, 50, 0);
}

const ms_appset *ms_appdir_watch_apps(const ms_appdir_watch *w) { return &w->set; }

static void watch_free(ms_appdir_watch *w) {
	for (size_t i = 0; i < w->nroots; i++) free(w->roots[i]);
	free(w->roots);
	free(w->events);
	ms_appset_free(&w->set);
	free(w);
}

static void on_closed(uv_handle_t *h) {
	ms_appdir_watch *w = h->data;
	if (--w->open_handles == 0) watch_free(w);
}

int ms_appdir_watch_start(ms_appdir_watch **out, uv_loop_t *loop, const char *const *roots, size_t nroots,
			  unsigned interval_ms, ms_appdir_cb cb, void *ud) {
	*out = NULL;
	if (!loop || !cb || (nroots && !roots)) return MS_EINVAL;
	ms_appdir_watch *w = calloc(1, sizeof *w);
	if (!w) return MS_ENOMEM;
	w->loop = loop;
	w->interval_ms = interval_ms ? interval_ms : 2000;
	w->cb = cb;
	w->ud = ud;
	w->roots = calloc(nroots ? nroots : 1, sizeof *w->roots);
	w->events = calloc(nroots ? nroots : 1, sizeof *w->events);
	if (!w->roots || !w->events) goto oom;
	for (; w->nroots < nroots; w->nroots++)
		if (!(w->roots[w->nroots] = strdup(roots[w->nroots]))) goto oom;
	ms_appset empty;
	ms_appset_init(&empty);
	if (ms_appdir_scan((const char *const *)w->roots, w->nroots, NULL, &w->set)) goto oom;
	uv_timer_init(loop, &w->poll);
	uv_timer_init(loop, &w->debounce);
	w->poll.data = w->debounce.data = w;
	w->open_handles = 2;
	for (size_t i = 0; i < nroots; i++) {
		uv_fs_event_t *e = &w->events[w->nevents];
		uv_fs_event_init(loop, e);
		e->data = w;
		w->nevents++;
		w->open_handles++;
		if (uv_fs_event_start(e, on_fs_event, w->roots[i], 0) != 0) /* the poll timer still covers it */
			MS_INFO("appdir", "%s: not watched for events, polling every %u ms", w->roots[i], w->interval_ms);
	}
	uv_timer_start(&w->poll, on_poll, w->interval_ms, w->interval_ms);
	*out = w;
	ms_appset_diff(&empty, &w->set, watch_forward, w);
	return 0;
oom:
	watch_free(w);
	return MS_ENOMEM;
}

void ms_appdir_watch_stop(ms_appdir_watch *w) {
	if (!w || w->stopped) return;
	w->stopped = 1;
	uv_timer_stop(&w->poll);
	uv_timer_stop(&w->debounce);
	uv_close((uv_handle_t *)&w->poll, on_closed);
	uv_close((uv_handle_t *)&w->debounce, on_closed);
	for (size_t i = 0; i < w->nevents; i++) {
		uv_fs_event_stop(&w->events[i]);
		uv_close((uv_handle_t *)&w->events[i], on_closed);
	}
}
