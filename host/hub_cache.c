/* host/hub_cache.c: the environment and the cache layout (see hub.h). Every write goes
 * through a temporary name and a rename, as huggingface_hub's does, so readers never see a
 * half-written ref or blob. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/hub.h"
#include "host/hub_int.h"
#include "runtime/modeldir.h"

static const char CACHEDIR_TAG[] = "Signature: 8a477f597d28d172789f06886806bc55\n"
				   "# This file is a cache directory tag created by huggingface_hub.\n"
				   "# For information about cache directory tags, see:\n"
				   "#\thttps://bford.info/cachedir/\n";

static int truthy(const char *v) {
	return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

void ms_hub_env_load(ms_hub_env *env) {
	memset(env, 0, sizeof *env);
	const char *v = getenv("HF_ENDPOINT");
	snprintf(env->endpoint, sizeof env->endpoint, "%s", v && *v ? v : "https://huggingface.co");
	size_t n = strlen(env->endpoint);
	while (n > 0 && env->endpoint[n - 1] == '/') env->endpoint[--n] = 0;
	if (ms_hub_cache_dir(env->cache, sizeof env->cache)) snprintf(env->cache, sizeof env->cache, ".cache/huggingface/hub");
	env->offline = truthy(getenv("HF_HUB_OFFLINE")) || truthy(getenv("TRANSFORMERS_OFFLINE"));
	env->timeout_s = 10;
	if ((v = getenv("HF_HUB_DOWNLOAD_TIMEOUT")) && *v) {
		double t = strtod(v, NULL);
		if (t > 0) env->timeout_s = t;
	}
	if (truthy(getenv("HF_HUB_DISABLE_IMPLICIT_TOKEN"))) return;
	if (((v = getenv("HF_TOKEN")) && *v) || ((v = getenv("HUGGING_FACE_HUB_TOKEN")) && *v)) {
		snprintf(env->token, sizeof env->token, "%s", v);
		return;
	}
	char path[PATH_MAX + 16];
	const char *home = getenv("HF_HOME");
	if ((v = getenv("HF_TOKEN_PATH")) && *v) snprintf(path, sizeof path, "%s", v);
	else if (home && *home) snprintf(path, sizeof path, "%s/token", home);
	else if ((v = getenv("HOME")) && *v) snprintf(path, sizeof path, "%s/.cache/huggingface/token", v);
	else return;
	FILE *f = fopen(path, "r");
	if (!f) return;
	if (fgets(env->token, sizeof env->token, f)) {
		char *t = env->token;
		size_t l = strlen(t);
		while (l && isspace((unsigned char)t[l - 1])) t[--l] = 0;
		size_t lead = strspn(t, " \t");
		memmove(t, t + lead, strlen(t + lead) + 1);
	}
	fclose(f);
}

/* ---- small helpers ---- */

int hub_mkdir_p(const char *dir) {
	char p[PATH_MAX];
	if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return MS_ERANGE;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/') continue;
		*s = 0;
		if (mkdir(p, 0755) && errno != EEXIST) return errno == ENOSPC ? MS_EIO : MS_EIO;
		*s = '/';
	}
	if (mkdir(p, 0755) && errno != EEXIST) return MS_EIO;
	return 0;
}

int hub_mkdir_parent(const char *path) {
	char p[PATH_MAX];
	if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return MS_ERANGE;
	char *s = strrchr(p, '/');
	if (!s || s == p) return 0;
	*s = 0;
	return hub_mkdir_p(p);
}

int hub_write_atomic(const char *path, const char *text, size_t len) {
	char tmp[PATH_MAX + 32];
	snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
	int rc = hub_mkdir_parent(path);
	if (rc) return rc;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) return MS_EIO;
	ssize_t w = write(fd, text, len);
	if (close(fd) || w != (ssize_t)len || rename(tmp, path)) {
		unlink(tmp);
		return MS_EIO;
	}
	return 0;
}

int ms_hub_valid_repo(const char *s) {
	size_t len = s ? strlen(s) : 0;
	int slashes = 0;
	if (len == 0 || len > 200 || s[0] == '/' || s[len - 1] == '/' || s[0] == '.' || s[0] == '-') return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '/') {
			slashes++;
			if (s[i + 1] == '.' || s[i + 1] == '-') return 0;
		} else if (!isalnum(c) && c != '-' && c != '_' && c != '.') return 0;
		if (c == '.' && s[i + 1] == '.') return 0;
		if (c == '-' && s[i + 1] == '-') return 0; /* "--" is the folder separator */
	}
	return slashes == 1;
}

int ms_hub_is_commit(const char *r) {
	if (!r || strlen(r) != 40) return 0;
	for (; *r; r++)
		if (!isxdigit((unsigned char)*r) || isupper((unsigned char)*r)) return 0;
	return 1;
}

int hub_is_sha256(const char *r) {
	if (!r || strlen(r) != 64) return 0;
	for (; *r; r++)
		if (!isxdigit((unsigned char)*r)) return 0;
	return 1;
}

int hub_valid_path(const char *p) {
	if (!p || !*p || *p == '/' || strlen(p) > 1024) return 0;
	const char *s = p;
	while (*s) {
		const char *e = strchr(s, '/');
		size_t l = e ? (size_t)(e - s) : strlen(s);
		if (l == 0 || (l == 1 && s[0] == '.') || (l == 2 && s[0] == '.' && s[1] == '.')) return 0;
		for (size_t i = 0; i < l; i++)
			if ((unsigned char)s[i] < 0x20 || s[i] == '\\') return 0;
		if (!e) break;
		s = e + 1;
		if (!*s) return 0;
	}
	return 1;
}

static int valid_rev(const char *r) {
	if (!r || !*r || strlen(r) > 200 || strstr(r, "..") || r[0] == '/' || r[strlen(r) - 1] == '/') return 0;
	for (; *r; r++)
		if (!isalnum((unsigned char)*r) && !strchr("-_./", *r)) return 0;
	return 1;
}

int ms_hub_repo_folder(const char *repo, char *out, size_t len) {
	if (!ms_hub_valid_repo(repo)) return MS_EINVAL;
	size_t k = 0;
	const char *pre = "models--";
	for (const char *p = pre; *p; p++) {
		if (k + 1 >= len) return MS_ERANGE;
		out[k++] = *p;
	}
	for (const char *p = repo; *p; p++) {
		if (k + 3 >= len) return MS_ERANGE;
		if (*p == '/') out[k++] = '-', out[k++] = '-';
		else out[k++] = *p;
	}
	out[k] = 0;
	return 0;
}

int hub_repo_dir(const char *cache, const char *repo, char *out, size_t len) {
	char folder[512];
	int rc = ms_hub_repo_folder(repo, folder, sizeof folder);
	if (rc) return rc;
	if ((size_t)snprintf(out, len, "%s/%s", cache, folder) >= len) return MS_ERANGE;
	return 0;
}

void hub_normalize_etag(const char *v, char *out, size_t len) {
	if (!len) return;
	out[0] = 0;
	if (!v) return;
	while (*v == ' ') v++;
	if (!strncmp(v, "W/", 2)) v += 2;
	size_t k = 0;
	for (; *v && k + 1 < len; v++)
		if (*v != '"' && *v != '\r' && *v != '\n' && *v != ' ') out[k++] = *v;
	out[k] = 0;
}

void hub_fmt_size(uint64_t n, char *out, size_t len) {
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	int i = 0;
	while (v >= 1024 && i < 4) v /= 1024, i++;
	if (i == 0) snprintf(out, len, "%llu B", (unsigned long long)n);
	else snprintf(out, len, "%.1f %s", v, u[i]);
}

int hub_url_quote(const char *s, int keep_slash, char *out, size_t len) {
	static const char hex[] = "0123456789ABCDEF";
	size_t k = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int keep = isalnum(*p) || strchr("-_.~", *p) || (keep_slash && *p == '/');
		if (k + 4 >= len) return MS_ERANGE;
		if (keep) out[k++] = (char)*p;
		else out[k++] = '%', out[k++] = hex[*p >> 4], out[k++] = hex[*p & 15];
	}
	out[k] = 0;
	return 0;
}

/* ---- the layout ---- */

int ms_hub_cache_commit(const char *cache, const char *repo, const char *rev, char commit[41]) {
	char dir[PATH_MAX], path[PATH_MAX + 256];
	if (hub_repo_dir(cache, repo, dir, sizeof dir) || !valid_rev(rev)) return MS_EINVAL;
	snprintf(path, sizeof path, "%s/refs/%s", dir, rev);
	char buf[64];
	FILE *f = fopen(path, "r");
	if (f) {
		size_t got = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[got] = 0;
		while (got && isspace((unsigned char)buf[got - 1])) buf[--got] = 0;
		if (!ms_hub_is_commit(buf)) return MS_ENOENT;
		memcpy(commit, buf, 41);
	} else if (ms_hub_is_commit(rev)) {
		memcpy(commit, rev, 41);
	} else {
		return MS_ENOENT;
	}
	struct stat st;
	snprintf(path, sizeof path, "%s/snapshots/%s", dir, commit);
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : MS_ENOENT;
}

int ms_hub_cache_write_ref(const char *cache, const char *repo, const char *rev, const char *commit) {
	if (!strcmp(rev, commit)) return 0;
	if (!valid_rev(rev) || !ms_hub_is_commit(commit)) return MS_EINVAL;
	char dir[PATH_MAX], path[PATH_MAX + 256];
	int rc = hub_repo_dir(cache, repo, dir, sizeof dir);
	if (rc) return rc;
	snprintf(path, sizeof path, "%s/refs/%s", dir, rev);
	/* unchanged refs are left alone (no needless writes when many apps share a repo) */
	char old[64];
	FILE *f = fopen(path, "r");
	if (f) {
		size_t got = fread(old, 1, sizeof old - 1, f);
		fclose(f);
		old[got] = 0;
		if (got == 40 && !strcmp(old, commit)) return 0;
	}
	return hub_write_atomic(path, commit, 40);
}

int ms_hub_cache_link(const char *cache, const char *repo, const char *commit, const char *path, const char *etag) {
	if (!ms_hub_is_commit(commit) || !hub_valid_path(path) || !*etag || strchr(etag, '/')) return MS_EINVAL;
	char dir[PATH_MAX], link[PATH_MAX + 1200], target[PATH_MAX];
	int rc = hub_repo_dir(cache, repo, dir, sizeof dir);
	if (rc) return rc;
	snprintf(link, sizeof link, "%s/snapshots/%s/%s", dir, commit, path);
	/* ../../blobs/<etag> from snapshots/<commit>/, one more ../ per subfolder */
	size_t k = 0;
	for (const char *p = path; *p; p++)
		if (*p == '/') k++;
	int n = 0;
	for (size_t i = 0; i < k + 2; i++) n += snprintf(target + n, sizeof target - (size_t)n, "../");
	snprintf(target + n, sizeof target - (size_t)n, "blobs/%s", etag);
	if ((rc = hub_mkdir_parent(link))) return rc;
	char tmp[PATH_MAX + 1300];
	snprintf(tmp, sizeof tmp, "%s.%d.lnk", link, (int)getpid());
	unlink(tmp);
	if (symlink(target, tmp) || rename(tmp, link)) {
		unlink(tmp);
		return MS_EIO;
	}
	return 0;
}

int ms_hub_cache_mark_missing(const char *cache, const char *repo, const char *commit, const char *path) {
	if (!ms_hub_is_commit(commit) || !hub_valid_path(path)) return MS_EINVAL;
	char dir[PATH_MAX], p[PATH_MAX + 1200];
	int rc = hub_repo_dir(cache, repo, dir, sizeof dir);
	if (rc) return rc;
	snprintf(p, sizeof p, "%s/.no_exist/%s/%s", dir, commit, path);
	if ((rc = hub_mkdir_parent(p))) return rc;
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) return MS_EIO;
	close(fd);
	return 0;
}

int ms_hub_cache_init(const char *cache) {
	int rc = hub_mkdir_p(cache);
	if (rc) return rc;
	char p[PATH_MAX + 16];
	snprintf(p, sizeof p, "%s/CACHEDIR.TAG", cache);
	struct stat st;
	if (stat(p, &st) == 0) return 0; /* never rewritten, as huggingface_hub */
	return hub_write_atomic(p, CACHEDIR_TAG, sizeof CACHEDIR_TAG - 1);
}

/* ---- ls / rm ---- */

/* Bytes of regular files under dir (blobs are never symlinks). */
static uint64_t dir_bytes(const char *dir, int *nfiles) {
	uint64_t total = 0;
	DIR *d = opendir(dir);
	if (!d) return 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
		char p[PATH_MAX];
		if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) continue;
		struct stat st;
		if (lstat(p, &st)) continue;
		if (S_ISDIR(st.st_mode)) total += dir_bytes(p, nfiles);
		else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
			if (S_ISLNK(st.st_mode) && stat(p, &st)) continue;
			total += (uint64_t)st.st_size;
			if (nfiles) (*nfiles)++;
		}
	}
	closedir(d);
	return total;
}

static void refs_for(const char *refdir, const char *prefix, const char *commit, ms_buf *out) {
	DIR *d = opendir(refdir);
	if (!d) return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		char p[PATH_MAX], name[512];
		snprintf(p, sizeof p, "%s/%s", refdir, e->d_name);
		snprintf(name, sizeof name, "%s%s", prefix, e->d_name);
		struct stat st;
		if (stat(p, &st)) continue;
		if (S_ISDIR(st.st_mode)) {
			char pre[600];
			snprintf(pre, sizeof pre, "%s/", name);
			refs_for(p, pre, commit, out);
			continue;
		}
		char buf[64] = {0};
		FILE *f = fopen(p, "r");
		if (!f) continue;
		size_t got = fread(buf, 1, 40, f);
		fclose(f);
		if (got == 40 && !strncmp(buf, commit, 40)) ms_buf_printf(out, "%s%s", out->len && out->data[out->len - 1] != '[' ? ", " : "", name);
	}
	closedir(d);
}

int ms_hub_cache_ls(const char *cache, ms_buf *out) {
	DIR *d = opendir(cache);
	if (!d) return MS_ENOENT;
	struct dirent *e;
	char **names = NULL;
	size_t n = 0;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "models--", 8) != 0) continue;
		char **nn = realloc(names, (n + 1) * sizeof *nn);
		if (!nn) break;
		names = nn;
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	/* sorted, so the listing is stable */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			char *t = names[j];
			names[j] = names[j - 1];
			names[j - 1] = t;
		}
	for (size_t i = 0; i < n; i++) {
		char repo[512], dir[PATH_MAX], p[PATH_MAX + 64], sz[32];
		const char *s = names[i] + 8;
		size_t k = 0;
		for (; *s && k + 1 < sizeof repo; s++) {
			if (s[0] == '-' && s[1] == '-') repo[k++] = '/', s++;
			else repo[k++] = *s;
		}
		repo[k] = 0;
		snprintf(dir, sizeof dir, "%s/%s", cache, names[i]);
		snprintf(p, sizeof p, "%s/blobs", dir);
		int nblobs = 0;
		hub_fmt_size(dir_bytes(p, &nblobs), sz, sizeof sz);
		ms_buf_printf(out, "%s\t%s\t%d files\n", repo, sz, nblobs);
		snprintf(p, sizeof p, "%s/snapshots", dir);
		DIR *sd = opendir(p);
		if (!sd) continue;
		struct dirent *se;
		while ((se = readdir(sd))) {
			if (!ms_hub_is_commit(se->d_name)) continue;
			char sp[PATH_MAX + 128], refdir[PATH_MAX + 64];
			snprintf(sp, sizeof sp, "%.3000s/%.255s", p, se->d_name);
			int nf = 0;
			hub_fmt_size(dir_bytes(sp, &nf), sz, sizeof sz);
			ms_buf_printf(out, "  %s\t%s\t%d files\trefs [", se->d_name, sz, nf);
			snprintf(refdir, sizeof refdir, "%s/refs", dir);
			refs_for(refdir, "", se->d_name, out);
			ms_buf_puts(out, "]\n");
		}
		closedir(sd);
	}
	for (size_t i = 0; i < n; i++) free(names[i]);
	free(names);
	return 0;
}

static int rm_rf(const char *path) {
	struct stat st;
	if (lstat(path, &st)) return errno == ENOENT ? 0 : MS_EIO;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		if (!d) return MS_EIO;
		struct dirent *e;
		int rc = 0;
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
			char p[PATH_MAX];
			if (snprintf(p, sizeof p, "%s/%s", path, e->d_name) >= (int)sizeof p) {
				rc = MS_ERANGE;
				continue;
			}
			int r = rm_rf(p);
			if (r) rc = r;
		}
		closedir(d);
		if (rmdir(path)) rc = MS_EIO;
		return rc;
	}
	return unlink(path) ? MS_EIO : 0;
}

int ms_hub_cache_rm(const char *cache, const char *repo) {
	char dir[PATH_MAX], folder[512], locks[PATH_MAX + 600];
	int rc = hub_repo_dir(cache, repo, dir, sizeof dir);
	if (rc) return rc;
	struct stat st;
	if (lstat(dir, &st)) return MS_ENOENT;
	ms_hub_repo_folder(repo, folder, sizeof folder);
	snprintf(locks, sizeof locks, "%s/.locks/%s", cache, folder);
	rm_rf(locks);
	return rm_rf(dir);
}
