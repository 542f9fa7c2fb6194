/* runtime/safetensors.c: see safetensors.h. The format: 8-byte little-endian header
 * length N, N bytes of JSON, then the data area that every data_offsets pair indexes. */
#include "runtime/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Real headers are a few hundred KiB at most; this bounds a hostile length field. */
#define ST_MAX_HEADER (100u << 20)

static size_t dtype_size(ms_st_dtype dt) { return dt == MS_ST_F32 ? 4 : 2; }

const char *ms_st_dtype_name(ms_st_dtype dt) {
	switch (dt) {
	case MS_ST_F32: return "F32";
	case MS_ST_F16: return "F16";
	case MS_ST_BF16: return "BF16";
	}
	return "?";
}

float ms_f16_to_f32(uint16_t h) {
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
	if (exp == 0) {
		if (mant == 0) {
			bits = sign;
		} else { /* subnormal: normalise */
			int e = -1;
			do { e++; mant <<= 1; } while (!(mant & 0x400));
			mant &= 0x3ff;
			bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
		}
	} else if (exp == 31) {
		bits = sign | 0x7f800000u | (mant << 13);
	} else {
		bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

float ms_bf16_to_f32(uint16_t b) {
	uint32_t bits = (uint32_t)b << 16;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

int ms_st_read_f32(const ms_st_tensor *t, float *dst, size_t n) {
	if (!t || !dst || n != t->numel) return MS_EINVAL;
	const uint8_t *p = t->data;
	switch (t->dtype) {
	case MS_ST_F32: memcpy(dst, p, n * 4); break;
	case MS_ST_F16:
		for (size_t i = 0; i < n; i++) dst[i] = ms_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
		break;
	case MS_ST_BF16:
		for (size_t i = 0; i < n; i++) dst[i] = ms_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
		break;
	}
	return 0;
}

static int parse_dtype(const char *s, ms_st_dtype *dt) {
	if (strcmp(s, "F32") == 0) *dt = MS_ST_F32;
	else if (strcmp(s, "F16") == 0) *dt = MS_ST_F16;
	else if (strcmp(s, "BF16") == 0) *dt = MS_ST_BF16;
	else return -1;
	return 0;
}

static int cmp_name(const void *a, const void *b) {
	return strcmp(((const ms_st_tensor *)a)->name, ((const ms_st_tensor *)b)->name);
}

typedef struct { size_t begin, end; const char *name; } span;
static int cmp_span(const void *a, const void *b) {
	const span *x = a, *y = b;
	return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int json_size(json_t *v, size_t *out) {
	if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
	json_int_t i = json_integer_value(v);
	if ((unsigned long long)i > SIZE_MAX) return -1;
	*out = (size_t)i;
	return 0;
}

/* Validates one header entry and fills t (name not set). */
static int parse_entry(const char *path, const char *name, json_t *e, const uint8_t *data,
		       size_t data_len, ms_st_tensor *t, char *err, size_t errlen) {
	if (!json_is_object(e))
		return ms_errf(err, errlen, MS_EFORMAT, "%s: tensor '%s': entry is not an object", path, name);
	json_t *dt = json_object_get(e, "dtype"), *shape = json_object_get(e, "shape"),
	       *offs = json_object_get(e, "data_offsets");
	if (!json_is_string(dt))
		return ms_errf(err, errlen, MS_EFORMAT, "%s: tensor '%s': missing dtype", path, name);
	if (parse_dtype(json_string_value(dt), &t->dtype) != 0)
		return ms_errf(err, errlen, MS_EUNSUPPORTED, "%s: tensor '%s': unsupported dtype %s (F32, F16, BF16 are)",
			       path, name, json_string_value(dt));
	if (!json_is_array(shape) || json_array_size(shape) > MS_ST_MAX_DIMS)
		return ms_errf(err, errlen, MS_EFORMAT, "%s: tensor '%s': shape is not an array of at most %d dims",
			       path, name, MS_ST_MAX_DIMS);
	t->ndim = (int)json_array_size(shape);
	size_t numel = 1;
	for (int i = 0; i < t->ndim; i++) {
		size_t d;
		if (json_size(json_array_get(shape, (size_t)i), &d) != 0 || d > INT64_MAX)
			return ms_errf(err, errlen, MS_EFORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer",
				       path, name, i);
		if (d && numel > SIZE_MAX / d)
			return ms_errf(err, errlen, MS_ERANGE, "%s: tensor '%s': shape product overflows", path, name);
		numel *= d;
		t->shape[i] = (int64_t)d;
	}
	size_t es = dtype_size(t->dtype);
	if (numel > SIZE_MAX / es)
		return ms_errf(err, errlen, MS_ERANGE, "%s: tensor '%s': byte size overflows", path, name);
	size_t begin, end;
	if (!json_is_array(offs) || json_array_size(offs) != 2 || json_size(json_array_get(offs, 0), &begin) != 0 ||
	    json_size(json_array_get(offs, 1), &end) != 0)
		return ms_errf(err, errlen, MS_EFORMAT, "%s: tensor '%s': data_offsets is not [begin, end]", path, name);
	if (begin > end || end > data_len)
		return ms_errf(err, errlen, MS_ERANGE,
			       "%s: tensor '%s': data_offsets [%zu, %zu] outside the data area (%zu bytes; file truncated?)",
			       path, name, begin, end, data_len);
	if (end - begin != numel * es)
		return ms_errf(err, errlen, MS_EFORMAT,
			       "%s: tensor '%s': data_offsets span %zu bytes but shape and dtype %s need %zu", path, name,
			       end - begin, ms_st_dtype_name(t->dtype), numel * es);
	t->numel = numel;
	t->nbytes = numel * es;
	t->data = data + begin;
	return 0;
}

/* Maps and validates one file, appending its tensors to st. */
static int open_file(ms_st *st, const char *path, char *err, size_t errlen) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ms_errf(err, errlen, errno == ENOENT ? MS_ENOENT : MS_EIO, "%s: %s", path, strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return ms_errf(err, errlen, MS_EIO, "%s: not a regular file", path);
	}
	size_t size = (size_t)sb.st_size;
	if (size < 8) {
		close(fd);
		return ms_errf(err, errlen, MS_EFORMAT, "%s: %zu bytes, too short for a safetensors header", path, size);
	}
	void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED) return ms_errf(err, errlen, MS_EIO, "%s: mmap: %s", path, strerror(errno));

	ms_st_file *nf = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *nf);
	if (!nf) {
		munmap(map, size);
		return MS_ENOMEM;
	}
	st->files = nf;
	int fidx = st->n_files++;
	nf[fidx] = (ms_st_file){strdup(path), map, size};
	if (!nf[fidx].path) return MS_ENOMEM;

	const uint8_t *p = map;
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
	if (hlen > ST_MAX_HEADER || hlen > size - 8)
		return ms_errf(err, errlen, MS_EFORMAT, "%s: header length %llu exceeds the file (%zu bytes) or the limit",
			       path, (unsigned long long)hlen, size);
	json_error_t jerr;
	json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!root) return ms_errf(err, errlen, MS_EFORMAT, "%s: header JSON: %s (offset %d)", path, jerr.text, jerr.position);
	if (!json_is_object(root)) {
		json_decref(root);
		return ms_errf(err, errlen, MS_EFORMAT, "%s: header is not a JSON object", path);
	}
	const uint8_t *data = p + 8 + hlen;
	size_t data_len = size - 8 - (size_t)hlen;
	size_t n = json_object_size(root);
	ms_st_tensor *nt = realloc(st->tensors, (st->n_tensors + n + 1) * sizeof *nt);
	span *spans = malloc((n + 1) * sizeof *spans);
	if (!nt || !spans) {
		if (nt) st->tensors = nt;
		free(spans);
		json_decref(root);
		return MS_ENOMEM;
	}
	st->tensors = nt;
	int rc = 0;
	size_t ns = 0;
	const char *key;
	json_t *val;
	json_object_foreach(root, key, val) {
		if (strcmp(key, "__metadata__") == 0) continue;
		ms_st_tensor *t = &st->tensors[st->n_tensors];
		memset(t, 0, sizeof *t);
		if ((rc = parse_entry(path, key, val, data, data_len, t, err, errlen)) != 0) break;
		if (!(t->name = strdup(key))) { rc = MS_ENOMEM; break; }
		t->file = fidx;
		spans[ns++] = (span){(size_t)(t->data - data), (size_t)(t->data - data) + t->nbytes, t->name};
		st->n_tensors++;
	}
	json_decref(root);
	if (rc == 0) {
		qsort(spans, ns, sizeof *spans, cmp_span);
		for (size_t i = 1; i < ns; i++)
			if (spans[i].begin < spans[i - 1].end && spans[i].begin != spans[i].end) {
				rc = ms_errf(err, errlen, MS_EFORMAT, "%s: tensors '%s' and '%s' overlap", path,
					     spans[i - 1].name, spans[i].name);
				break;
			}
	}
	free(spans);
	return rc;
}

static int finish(ms_st *st, char *err, size_t errlen) {
	qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_name);
	for (size_t i = 1; i < st->n_tensors; i++)
		if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0)
			return ms_errf(err, errlen, MS_EFORMAT, "%s: tensor '%s' appears in two shards",
				       st->files[st->tensors[i].file].path, st->tensors[i].name);
	return 0;
}

/* A shard name must stay inside the checkpoint directory. */
static int plain_name(const char *s) {
	return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int open_index(ms_st *st, const char *dir, const char *ipath, char *err, size_t errlen) {
	json_error_t jerr;
	json_t *root = json_load_file(ipath, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) return ms_errf(err, errlen, MS_EFORMAT, "%s: %s (line %d)", ipath, jerr.text, jerr.line);
	json_t *wm = json_object_get(root, "weight_map");
	int rc = 0;
	if (!json_is_object(wm) || json_object_size(wm) == 0) {
		rc = ms_errf(err, errlen, MS_EFORMAT, "%s: no weight_map object", ipath);
		goto out;
	}
	/* open each distinct shard once, in order of first mention */
	const char *key;
	json_t *val;
	json_object_foreach(wm, key, val) {
		if (!json_is_string(val) || !plain_name(json_string_value(val))) {
			rc = ms_errf(err, errlen, MS_EFORMAT, "%s: weight_map['%s'] is not a file name in the directory",
				     ipath, key);
			goto out;
		}
		char path[4096];
		if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, json_string_value(val)) >= sizeof path) {
			rc = ms_errf(err, errlen, MS_ERANGE, "%s: path too long", ipath);
			goto out;
		}
		int seen = 0;
		for (int i = 0; i < st->n_files && !seen; i++) seen = strcmp(st->files[i].path, path) == 0;
		if (!seen && (rc = open_file(st, path, err, errlen)) != 0) goto out;
	}
	if ((rc = finish(st, err, errlen)) != 0) goto out;
	json_object_foreach(wm, key, val) {
		const ms_st_tensor *t = ms_st_find(st, key);
		const char *fname = strrchr(t ? st->files[t->file].path : "/", '/') + 1;
		if (!t || strcmp(fname, json_string_value(val)) != 0) {
			rc = ms_errf(err, errlen, MS_EFORMAT, "%s: tensor '%s' is not in %s", ipath, key,
				     json_string_value(val));
			goto out;
		}
	}
out:
	json_decref(root);
	return rc;
}

int ms_st_open(ms_st *st, const char *path, char *err, size_t errlen) {
	memset(st, 0, sizeof *st);
	if (err && errlen) err[0] = 0;
	struct stat sb;
	if (stat(path, &sb) != 0)
		return ms_errf(err, errlen, errno == ENOENT ? MS_ENOENT : MS_EIO, "%s: %s", path, strerror(errno));
	int rc;
	if (S_ISDIR(sb.st_mode)) {
		char p[4096];
		snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
		if (access(p, F_OK) == 0) {
			rc = open_index(st, path, p, err, errlen);
		} else {
			snprintf(p, sizeof p, "%s/model.safetensors", path);
			rc = open_file(st, p, err, errlen);
			if (rc == 0) rc = finish(st, err, errlen);
		}
	} else {
		rc = open_file(st, path, err, errlen);
		if (rc == 0) rc = finish(st, err, errlen);
	}
	if (rc != 0) ms_st_close(st);
	return rc;
}

void ms_st_close(ms_st *st) {
	for (size_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
	free(st->tensors);
	for (int i = 0; i < st->n_files; i++) {
		if (st->files[i].map) munmap(st->files[i].map, st->files[i].size);
		free(st->files[i].path);
	}
	free(st->files);
	memset(st, 0, sizeof *st);
}

const ms_st_tensor *ms_st_find(const ms_st *st, const char *name) {
	ms_st_tensor key = {.name = (char *)name};
	return st->n_tensors ? bsearch(&key, st->tensors, st->n_tensors, sizeof key, cmp_name) : NULL;
}
