/* host/hub_int.h: helpers shared by hub_cache.c, hub_client.c, hub_mirror.c and hub_cli.c
 * only. Others use host/hub.h. */
#ifndef MS_HUB_INT_H
#define MS_HUB_INT_H

#include <stddef.h>
#include <stdint.h>

/* mkdir -p of the directory part of path (everything before the last '/'). */
int hub_mkdir_parent(const char *path);
int hub_mkdir_p(const char *dir);
/* Writes text to path through path.tmp + rename. */
int hub_write_atomic(const char *path, const char *text, size_t len);
/* $cache/models--org--name */
int hub_repo_dir(const char *cache, const char *repo, char *out, size_t len);
/* A path inside a repo: no leading '/', no "." or ".." segments, no empty segments. */
int hub_valid_path(const char *path);
/* Strips W/ and quotes from an ETag value into out. */
void hub_normalize_etag(const char *v, char *out, size_t len);
/* A 64-hex string (an LFS sha256 etag). */
int hub_is_sha256(const char *s);
/* Human sizes: "1.5 MiB". */
void hub_fmt_size(uint64_t n, char *out, size_t len);
/* Percent-encodes s (keeping '/' when keep_slash) into out. */
int hub_url_quote(const char *s, int keep_slash, char *out, size_t len);

#endif
