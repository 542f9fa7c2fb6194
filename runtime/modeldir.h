/* runtime/modeldir.h: turns a MODEL argument into a checkpoint directory.
 *
 * MODEL is a local directory, or a Hub repo id "org/name" with an optional "@rev" (branch,
 * tag or commit; default main) resolved in the Hugging Face cache layout, shared with
 * Python's huggingface_hub: $HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub; models--org--name/refs/<rev> holds a commit hash and
 * snapshots/<commit>/ the files. Nothing is fetched here (that is the Hub client's job).
 */
#ifndef MS_MODELDIR_H
#define MS_MODELDIR_H

#include <stddef.h>

#include "common/ms.h"

/* The Hub cache directory in use (no check that it exists). */
int ms_hub_cache_dir(char *out, size_t outlen);
/* Writes the directory for spec into out; MS_ENOENT with a message saying where it looked. */
int ms_modeldir_resolve(const char *spec, char *out, size_t outlen, char *err, size_t errlen);

#endif
