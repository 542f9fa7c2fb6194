/* common/ms.c: error table, byte buffer, files, clock, log. */
#include "ms.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

const char *ms_strerror(int err) {
	switch (err) {
	case 0: return "success";
#define MS_ERR_CASE(name, msg) case MS_E##name: return msg;
	MS_ERRNO_MAP(MS_ERR_CASE)
#undef MS_ERR_CASE
	default: return err < 0 && err > -4096 ? strerror(-err) : "unknown error";
	}
}

const char *ms_err_name(int err) {
	switch (err) {
	case 0: return "MS_OK";
#define MS_ERR_NAME(name, msg) case MS_E##name: return "MS_E" #name;
	MS_ERRNO_MAP(MS_ERR_NAME)
#undef MS_ERR_NAME
	default: return "MS_ESYSTEM";
	}
}

int ms_errf(char *err, size_t errlen, int code, const char *fmt, ...) {
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

void ms_buf_init(ms_buf *b) { b->data = NULL, b->len = 0, b->cap = 0; }
void ms_buf_free(ms_buf *b) { free(b->data); ms_buf_init(b); }
void ms_buf_reset(ms_buf *b) { b->len = 0; if (b->data) b->data[0] = 0; }

int ms_buf_reserve(ms_buf *b, size_t extra) {
	if (extra > SIZE_MAX - b->len - 1) return MS_ENOMEM;
	size_t need = b->len + extra + 1;
	if (need <= b->cap) return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	char *d = realloc(b->data, cap);
	if (!d) return MS_ENOMEM;
	b->data = d, b->cap = cap;
	return 0;
}

int ms_buf_append(ms_buf *b, const void *data, size_t len) {
	if (ms_buf_reserve(b, len)) return MS_ENOMEM;
	if (len) memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = 0;
	return 0;
}

int ms_buf_puts(ms_buf *b, const char *s) { return ms_buf_append(b, s, strlen(s)); }

int ms_buf_vprintf(ms_buf *b, const char *fmt, va_list ap) {
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0) return MS_EINVAL;
	if (ms_buf_reserve(b, (size_t)n)) return MS_ENOMEM;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int ms_buf_printf(ms_buf *b, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	int r = ms_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return r;
}

void ms_buf_consume(ms_buf *b, size_t n) {
	if (n >= b->len) { ms_buf_reset(b); return; }
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = 0;
}

char *ms_buf_steal(ms_buf *b) {
	char *d = b->data;
	if (!d) d = calloc(1, 1);
	ms_buf_init(b);
	return d;
}

int ms_read_file(const char *path, char **out, size_t *len, size_t max_len) {
	*out = NULL;
	FILE *f = fopen(path, "rb");
	if (!f) return errno == ENOENT ? MS_ENOENT : MS_EIO;
	ms_buf b;
	ms_buf_init(&b);
	char chunk[65536];
	size_t n;
	int rc = 0;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (b.len + n > max_len) { rc = MS_ETOOBIG; break; }
		if (ms_buf_append(&b, chunk, n)) { rc = MS_ENOMEM; break; }
	}
	if (!rc && ferror(f)) rc = MS_EIO;
	fclose(f);
	if (rc) { ms_buf_free(&b); return rc; }
	if (len) *len = b.len;
	*out = ms_buf_steal(&b);
	return 0;
}

uint64_t ms_now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ms_log(const char *level, const char *module, const char *fmt, ...) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char line[4096];
	int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %s %s: ", ts.tv_nsec / 1000000, level, module);
	va_list ap;
	va_start(ap, fmt);
	if (n < (int)sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
	line[n++] = '\n';
	fwrite(line, 1, (size_t)n, stderr);
}
