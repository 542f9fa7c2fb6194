/* runtime/safetensors.h: read-only, memory-mapped safetensors checkpoints.
 *
 * A checkpoint is one file (model.safetensors) or several shards listed by
 * model.safetensors.index.json. Every header is validated before any tensor is handed
 * out: JSON well-formed (jansson), each entry's dtype known, shape product and byte size
 * computed overflow-safe and equal to its data_offsets span, spans inside the file's data
 * area and not overlapping. Errors name the file and the problem.
 *
 * Tensors are F32, F16 or BF16 on disk; ms_st_read_f32() upcasts into caller memory.
 */
#ifndef MS_SAFETENSORS_H
#define MS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/ms.h"

#define MS_ST_MAX_DIMS 8

typedef enum { MS_ST_F32 = 0, MS_ST_F16, MS_ST_BF16 } ms_st_dtype;

typedef struct ms_st_tensor {
	char *name;
	ms_st_dtype dtype;
	int ndim;
	int64_t shape[MS_ST_MAX_DIMS];
	size_t numel;
	size_t nbytes;
	const uint8_t *data; /* inside the read-only mapping */
	int file;            /* index into the checkpoint's files */
} ms_st_tensor;

typedef struct ms_st_file {
	char *path;
	void *map;
	size_t size;
} ms_st_file;

typedef struct ms_st {
	ms_st_file *files;
	int n_files;
	ms_st_tensor *tensors; /* sorted by name */
	size_t n_tensors;
} ms_st;

/* Opens one .safetensors file, or a checkpoint directory (model.safetensors.index.json if
 * present, else model.safetensors). On failure st is left empty and err says why. */
int ms_st_open(ms_st *st, const char *path, char *err, size_t errlen);
void ms_st_close(ms_st *st);

/* NULL when absent. */
const ms_st_tensor *ms_st_find(const ms_st *st, const char *name);
const char *ms_st_dtype_name(ms_st_dtype dt);

/* Copies a tensor into dst as F32 (n floats, which must equal numel). */
int ms_st_read_f32(const ms_st_tensor *t, float *dst, size_t n);

/* Scalar conversions (exact, as torch's .float()). */
float ms_f16_to_f32(uint16_t h);
float ms_bf16_to_f32(uint16_t b);

#endif
