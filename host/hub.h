/* host/hub.h: the Hugging Face Hub side of moonspace.
 *
 * Four parts, one header:
 *  - the environment as huggingface_hub reads it (HF_ENDPOINT, HF_TOKEN / $HF_HOME/token,
 *    HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_HUB_DOWNLOAD_TIMEOUT);
 *  - the cache layout, byte for byte as huggingface_hub writes it (hub_cache.c):
 *      $HF_HUB_CACHE/CACHEDIR.TAG
 *      $HF_HUB_CACHE/.locks/models--org--name/<etag>.lock        (flock)
 *      $HF_HUB_CACHE/models--org--name/blobs/<etag>
 *      $HF_HUB_CACHE/models--org--name/refs/<rev>                 (40-hex commit, no newline)
 *      $HF_HUB_CACHE/models--org--name/snapshots/<commit>/<path>  (relative symlink to blobs)
 *      $HF_HUB_CACHE/models--org--name/.no_exist/<commit>/<path>  (empty: absent upstream)
 *  - the client (hub_client.c): libcurl's multi interface on a libuv loop; nothing blocks
 *    the loop. One ms_hub per loop; any number of fetches at once;
 *  - the mirror (hub_mirror.c): `moonspace serve` answers the Hub's download API from its
 *    cache and from --mirror directories.
 *
 * The protocol notes (with citations of huggingface_hub) are in
 * ../shared/reference/hub-protocol.md.
 */
#ifndef MS_HUB_H
#define MS_HUB_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/ms.h"
#include "host/http.h"

/* ---- environment ---- */

typedef struct ms_hub_env {
	char endpoint[1024];   /* HF_ENDPOINT without a trailing '/'; default https://huggingface.co */
	char cache[PATH_MAX];  /* HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub */
	char token[512];       /* HF_TOKEN, else the first line of $HF_HOME/token, else "" */
	int offline;           /* HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is 1/true/yes/on */
	double timeout_s;      /* HF_HUB_DOWNLOAD_TIMEOUT (default 10): connect and stall timeout */
} ms_hub_env;

/* Fills env from the process environment. */
void ms_hub_env_load(ms_hub_env *env);

/* ---- cache layout (synchronous, small file operations) ---- */

/* "org/name" with letters, digits, '-', '_', '.'; no "..". */
int ms_hub_valid_repo(const char *repo);
/* A 40-hex commit hash. */
int ms_hub_is_commit(const char *rev);
/* "models--org--name". */
int ms_hub_repo_folder(const char *repo, char *out, size_t len);
/* The commit a revision names in the cache: refs/<rev>, or rev itself when it is a commit
 * whose snapshot exists. 0, or MS_ENOENT. commit has room for 41 bytes. */
int ms_hub_cache_commit(const char *cache, const char *repo, const char *rev, char commit[41]);
/* Writes refs/<rev> = commit (tmp + rename), as huggingface_hub does; a no-op when rev is
 * the commit itself. */
int ms_hub_cache_write_ref(const char *cache, const char *repo, const char *rev, const char *commit);
/* snapshots/<commit>/<path> -> ../../blobs/<etag> (one more ../ per subfolder). */
int ms_hub_cache_link(const char *cache, const char *repo, const char *commit, const char *path, const char *etag);
/* The empty marker .no_exist/<commit>/<path>. */
int ms_hub_cache_mark_missing(const char *cache, const char *repo, const char *commit, const char *path);
/* Creates the cache directory and its CACHEDIR.TAG (huggingface_hub's text). */
int ms_hub_cache_init(const char *cache);
/* `moonspace cache ls` as text: one block per repo with its revisions and sizes. */
int ms_hub_cache_ls(const char *cache, ms_buf *out);
/* Removes models--org--name and its locks. MS_ENOENT when not cached. */
int ms_hub_cache_rm(const char *cache, const char *repo);

/* ---- the client ---- */

typedef struct ms_hub ms_hub;
typedef struct ms_hub_fetch ms_hub_fetch;

typedef struct ms_hub_opts {
	int max_parallel;       /* files downloading at once per ms_hub (default 8) */
	int max_retries;        /* per file, for 408/429/5xx and dropped connections (default 5) */
	unsigned retry_base_ms; /* first backoff, doubled per retry (default 1000) */
	int hash_pieces;        /* MiB of received bytes the sha256 thread may hold per big file
				 * to digest from memory (default 8); while it holds them all, a
				 * plain-HTTP transfer pauses. -1: none, it reads everything back
				 * from the file */
} ms_hub_opts;

/* The files fetched when patterns is NULL: what a model app needs (configs, tokenizer,
 * safetensors weights and their index), not TF / Flax / ONNX / .bin weights. NULL-ended. */
extern const char *const ms_hub_default_patterns[];

typedef struct ms_hub_progress {
	const char *repo;       /* as asked */
	const char *file;       /* the file this update is about (NULL for a fetch-level update) */
	uint64_t file_bytes;    /* bytes of `file` on disk so far */
	uint64_t file_size;     /* its expected size (0 until known) */
	int file_done;          /* 1 once `file` is in place (downloaded or found cached) */
	uint64_t bytes;         /* whole fetch: bytes so far (cached files count as done) */
	uint64_t total;         /* whole fetch: expected bytes (grows as sizes become known) */
	int files_done, files_total;
	double rate;            /* bytes per second over the last few seconds */
} ms_hub_progress;

typedef struct ms_hub_result {
	int rc;                 /* 0, or MS_E*: NOENT (repo/revision/file not found, or not
				 * cached while offline), DENIED (401/403/gated), BUSY (429),
				 * NET (unreachable), IO (disk, e.g. full), PROTO (bad answer or
				 * checksum), CANCELED */
	const char *error;      /* a sentence a user can act on, or NULL */
	const char *repo, *rev;
	const char *commit;     /* the resolved 40-hex commit ("" when unknown) */
	const char *snapshot;   /* $cache/models--org--name/snapshots/<commit> ("" on failure) */
	int n_files;            /* files in place (matching the patterns) */
	int offline;            /* 1 when answered from the cache without network */
} ms_hub_result;

/* Called on the loop thread, often (at most every ~100 ms per file, plus each file's
 * start and end). The struct is valid only during the call. */
typedef void (*ms_hub_progress_cb)(const ms_hub_progress *p, void *ud);
/* Called exactly once per started fetch (also when cancelled); the fetch is freed right
 * after it returns. */
typedef void (*ms_hub_done_cb)(const ms_hub_result *r, void *ud);

/* A client on `loop`. env NULL = ms_hub_env_load(); opts NULL = defaults. */
int ms_hub_new(uv_loop_t *loop, const ms_hub_env *env, const ms_hub_opts *opts, ms_hub **out);
/* Cancels every fetch (their done callbacks run with MS_ECANCELED) and closes the handles;
 * the hub's memory is released once the loop has run the close callbacks. */
void ms_hub_free(ms_hub *hub);
const ms_hub_env *ms_hub_get_env(const ms_hub *hub);

/* Brings repo@rev (rev NULL = "main"; a branch, tag, "refs/pr/N" or a commit) into the
 * cache: every file of the repo matching one of `patterns` (fnmatch globs on the path in
 * the repo, e.g. "*.safetensors", "tokenizer*"; NULL = ms_hub_default_patterns; {"*"} =
 * all). Returns 0 and (if out) a handle for cancelling; callbacks come later on the loop,
 * never from inside this call.
 *
 * Order: a pinned commit whose snapshot surely holds what is asked (each file name asked
 * for is there or marked in .no_exist, each glob outside the defaults matches a file; "*"
 * always asks), or HF_HUB_OFFLINE, is answered from the cache with no network; otherwise the file list comes from
 * /api/models, each file missing from the snapshot is HEADed and downloaded (the blob is
 * shared, see the cache layout above), and refs/<rev> is written. When the Hub cannot be
 * reached (connection error, timeout, 5xx; for a pinned commit, any error) and the revision
 * is cached, the cached snapshot is used. */
int ms_hub_fetch_start(ms_hub *hub, const char *repo, const char *rev, const char *const *patterns,
		       ms_hub_progress_cb progress, ms_hub_done_cb done, void *ud, ms_hub_fetch **out);
/* Stops a fetch; its done callback runs (with MS_ECANCELED) before this returns.
 * Partial downloads stay as blobs/<etag>.incomplete and are resumed next time. */
void ms_hub_fetch_cancel(ms_hub_fetch *f);

/* `moonspace pull` and `moonspace cache` (hub_cli.c). */
int ms_pull_main(int argc, char **argv);
int ms_cache_main(int argc, char **argv);

/* ---- the mirror ---- */

typedef struct ms_hub_mirror ms_hub_mirror;

/* Serves the repos of `dirs` (each laid out org/name/<files>) and of the HF cache `cache`
 * (may be NULL). Hashing happens on libuv's thread pool and is cached by (path, size,
 * mtime), so big files are hashed once. */
int ms_hub_mirror_new(uv_loop_t *loop, char *const *dirs, int ndirs, const char *cache, ms_hub_mirror **out);
void ms_hub_mirror_free(ms_hub_mirror *m);
/* Answers req if it is one of the mirror's routes; `path` is the raw (still
 * percent-encoded) request path with the root path stripped and no query, e.g.
 * "/org/name/resolve/main/config.json" or "/api/models/org/name/tree/main". Returns 0 when
 * it answered (now or later), MS_ENOENT when the path is not a mirror route. */
int ms_hub_mirror_handle(ms_hub_mirror *m, ms_http_req *req, const char *path);
/* The router's entry (routes api/models/... and ORG/NAME/resolve/...): strips the root path
 * from the raw target and calls ms_hub_mirror_handle with the host's mirror. */
struct ms_host;
void ms_hub_route(struct ms_host *h, ms_http_req *req, char **args);

#endif
