/* runtime/modeldir.c: see modeldir.h. */
#include "runtime/modeldir.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int is_dir(const char *p) {
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int ms_hub_cache_dir(char *out, size_t outlen) {
	const char *v = getenv("HF_HUB_CACHE");
	int n;
	if (v && *v) n = snprintf(out, outlen, "%s", v);
	else if ((v = getenv("HF_HOME")) && *v) n = snprintf(out, outlen, "%s/hub", v);
	else if ((v = getenv("HOME")) && *v) n = snprintf(out, outlen, "%s/.cache/huggingface/hub", v);
	else return MS_ENOENT;
	return n < 0 || (size_t)n >= outlen ? MS_ERANGE : 0;
}

/* Repo ids: letters, digits, '-', '_', '.', exactly one '/', no "..". */
static int valid_repo(const char *s, size_t len) {
	int slashes = 0;
	if (len == 0 || len > 200 || s[0] == '/' || s[len - 1] == '/') return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '/') slashes++;
		else if (!isalnum(c) && c != '-' && c != '_' && c != '.') return 0;
		if (c == '.' && i + 1 < len && s[i + 1] == '.') return 0;
	}
	return slashes == 1 && s[0] != '.';
}

static int valid_rev(const char *r) {
	if (!*r || strlen(r) > 200 || strstr(r, "..") || r[0] == '/') return 0;
	for (; *r; r++)
		if (!isalnum((unsigned char)*r) && !strchr("-_./", *r)) return 0;
	return 1;
}

static int is_commit(const char *r) {
	if (strlen(r) != 40) return 0;
	for (; *r; r++)
		if (!isxdigit((unsigned char)*r)) return 0;
	return 1;
}

int ms_modeldir_resolve(const char *spec, char *out, size_t outlen, char *err, size_t errlen) {
	if (is_dir(spec)) {
		if ((size_t)snprintf(out, outlen, "%s", spec) >= outlen) return MS_ERANGE;
		return 0;
	}
	const char *at = strchr(spec, '@');
	size_t rlen = at ? (size_t)(at - spec) : strlen(spec);
	const char *rev = at ? at + 1 : "main";
	if (!valid_repo(spec, rlen) || !valid_rev(rev))
		return ms_errf(err, errlen, MS_ENOENT, "%s: not a directory, nor a Hub repo id (org/name[@rev])", spec);
	char cache[2048], repo_dir[3072], commit[128], path[4096];
	if (ms_hub_cache_dir(cache, sizeof cache) != 0)
		return ms_errf(err, errlen, MS_ENOENT, "%s: no Hub cache directory (set HF_HUB_CACHE or HF_HOME)", spec);
	int n = snprintf(repo_dir, sizeof repo_dir, "%s/models--", cache);
	for (size_t i = 0; i < rlen && n + 3 < (int)sizeof repo_dir; i++) {
		if (spec[i] == '/') repo_dir[n++] = '-', repo_dir[n++] = '-';
		else repo_dir[n++] = spec[i];
	}
	repo_dir[n] = 0;
	snprintf(path, sizeof path, "%s/refs/%s", repo_dir, rev);
	FILE *f = fopen(path, "r");
	if (f) {
		size_t got = fread(commit, 1, sizeof commit - 1, f);
		fclose(f);
		commit[got] = 0;
		while (got && isspace((unsigned char)commit[got - 1])) commit[--got] = 0;
		if (!is_commit(commit))
			return ms_errf(err, errlen, MS_EFORMAT, "%s: %s does not hold a commit hash", spec, path);
	} else if (is_commit(rev)) {
		snprintf(commit, sizeof commit, "%s", rev);
	} else {
		return ms_errf(err, errlen, MS_ENOENT, "%s: not in the Hub cache (no %s; fetch it with `moonspace pull`)", spec,
			       path);
	}
	snprintf(path, sizeof path, "%s/snapshots/%s", repo_dir, commit);
	if (!is_dir(path)) return ms_errf(err, errlen, MS_ENOENT, "%s: snapshot %s missing from the Hub cache", spec, path);
	if ((size_t)snprintf(out, outlen, "%s", path) >= outlen) return MS_ERANGE;
	return 0;
}
