/* common/ms.h: what every moonspace module shares: one table of error codes, and a
 * growable byte buffer.
 *
 * Every fallible call returns 0 or a negative MS_E* code (libuv-style); ms_strerror()
 * names it. Functions that can say more take a `char *err, size_t errlen` and write a
 * human message there (naming the file and the problem).
 */
#ifndef MS_COMMON_H
#define MS_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define MS_ERRNO_MAP(X)                                                                   \
	X(NOMEM, "out of memory")                                                         \
	X(INVAL, "invalid argument")                                                      \
	X(IO, "input/output error")                                                       \
	X(NOENT, "no such file or entry")                                                 \
	X(FORMAT, "malformed input")                                                      \
	X(RANGE, "value out of range")                                                    \
	X(TOOBIG, "too large")                                                            \
	X(UNSUPPORTED, "not supported")                                                   \
	X(CANCELED, "cancelled")                                                          \
	X(TIMEOUT, "timed out")                                                           \
	X(PROTO, "protocol violation")                                                    \
	X(EXISTS, "already exists")                                                       \
	X(BUSY, "busy")                                                                   \
	X(DENIED, "permission denied")                                                    \
	X(CLOSED, "closed")                                                               \
	X(NET, "network error")                                                           \
	X(STATE, "wrong state")

enum {
	MS_OK = 0,
#define MS_ERR_ENUM(name, msg) MS_E##name,
	MS_ERR_FIRST_ = -1000,
	MS_ERRNO_MAP(MS_ERR_ENUM)
#undef MS_ERR_ENUM
	MS_ERR_LAST_
};

/* A static description of an MS_E* code (or of a negative errno value). */
const char *ms_strerror(int err);
/* The symbolic name, e.g. "MS_EINVAL". */
const char *ms_err_name(int err);

/* Writes a formatted message into err (if non-NULL) and returns code. */
int ms_errf(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* A growable byte buffer; caller-owned struct, explicit init/free. Always NUL-terminated
 * after a successful append (the NUL is not counted in len). */
typedef struct ms_buf {
	char *data;
	size_t len;
	size_t cap;
} ms_buf;

void ms_buf_init(ms_buf *b);
void ms_buf_free(ms_buf *b);
void ms_buf_reset(ms_buf *b);
int ms_buf_reserve(ms_buf *b, size_t extra);
int ms_buf_append(ms_buf *b, const void *data, size_t len);
int ms_buf_puts(ms_buf *b, const char *s);
int ms_buf_printf(ms_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ms_buf_vprintf(ms_buf *b, const char *fmt, va_list ap);
/* Drops the first n bytes. */
void ms_buf_consume(ms_buf *b, size_t n);
/* Hands the bytes to the caller (who frees them) and leaves b empty. */
char *ms_buf_steal(ms_buf *b);

/* Reads a whole file into a malloc'd NUL-terminated buffer. */
int ms_read_file(const char *path, char **out, size_t *len, size_t max_len);
/* Monotonic clock in nanoseconds / milliseconds. */
uint64_t ms_now_ns(void);
static inline double ms_now_ms(void) { return (double)ms_now_ns() / 1e6; }

/* One log line to stderr: "2026-11-26T04:14:02.123Z level module: message". */
void ms_log(const char *level, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define MS_INFO(mod, ...) ms_log("info", mod, __VA_ARGS__)
#define MS_WARN(mod, ...) ms_log("warn", mod, __VA_ARGS__)
#define MS_ERROR(mod, ...) ms_log("error", mod, __VA_ARGS__)

#define MS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
