/* sandbox/frame.c: length-prefixed JSON frames (see frame.h). */
#include "sandbox/frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ms_frame_reader_init(ms_frame_reader *r, size_t max) {
	ms_buf_init(&r->buf);
	r->max = max ? max : MS_FRAME_MAX_DEFAULT;
	r->consumed = 0;
}

void ms_frame_reader_free(ms_frame_reader *r) { ms_buf_free(&r->buf); }

int ms_frame_reader_feed(ms_frame_reader *r, const void *data, size_t len) {
	if (r->consumed) { /* drop frames already handed out */
		ms_buf_consume(&r->buf, r->consumed);
		r->consumed = 0;
	}
	return ms_buf_append(&r->buf, data, len);
}

static uint32_t get_le32(const unsigned char *p) {
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int ms_frame_next(ms_frame_reader *r, const char **payload, size_t *len) {
	size_t avail = r->buf.len - r->consumed;
	if (avail < 4) return 0;
	const unsigned char *p = (const unsigned char *)r->buf.data + r->consumed;
	uint32_t n = get_le32(p);
	if (n > r->max) return MS_ETOOBIG;
	if (avail - 4 < n) return 0;
	*payload = (const char *)p + 4;
	*len = n;
	r->consumed += 4 + (size_t)n;
	return 1;
}

int ms_frame_encode(ms_buf *out, const void *payload, size_t len) {
	if (len > UINT32_MAX) return MS_ETOOBIG;
	unsigned char hdr[4] = {(unsigned char)len, (unsigned char)(len >> 8), (unsigned char)(len >> 16),
				(unsigned char)(len >> 24)};
	if (ms_buf_append(out, hdr, 4)) return MS_ENOMEM;
	return ms_buf_append(out, payload, len);
}

int ms_frame_encode_json(ms_buf *out, const json_t *msg) {
	char *s = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!s) return MS_ENOMEM;
	int rc = ms_frame_encode(out, s, strlen(s));
	free(s);
	return rc;
}

static int write_all(int fd, const void *data, size_t len) {
	const char *p = data;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR) continue;
			return errno == EPIPE ? MS_ECLOSED : MS_EIO;
		}
		p += w, len -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *data, size_t len) {
	char *p = data;
	while (len) {
		ssize_t r = read(fd, p, len);
		if (r == 0) return MS_ECLOSED;
		if (r < 0) {
			if (errno == EINTR) continue;
			return MS_EIO;
		}
		p += r, len -= (size_t)r;
	}
	return 0;
}

int ms_frame_write_fd(int fd, const void *payload, size_t len) {
	ms_buf b;
	ms_buf_init(&b);
	int rc = ms_frame_encode(&b, payload, len);
	if (!rc) rc = write_all(fd, b.data, b.len);
	ms_buf_free(&b);
	return rc;
}

int ms_frame_write_json_fd(int fd, const json_t *msg) {
	ms_buf b;
	ms_buf_init(&b);
	int rc = ms_frame_encode_json(&b, msg);
	if (!rc) rc = write_all(fd, b.data, b.len);
	ms_buf_free(&b);
	return rc;
}

int ms_frame_read_fd(int fd, ms_buf *out, size_t max) {
	unsigned char hdr[4];
	ms_buf_reset(out);
	int rc = read_all(fd, hdr, 4);
	if (rc) return rc;
	uint32_t n = get_le32(hdr);
	if (n > (max ? max : MS_FRAME_MAX_DEFAULT)) return MS_ETOOBIG;
	if (ms_buf_reserve(out, n)) return MS_ENOMEM;
	rc = read_all(fd, out->data, n);
	if (rc) return rc == MS_ECLOSED ? MS_EPROTO : rc;
	out->len = n;
	out->data[n] = 0;
	return 0;
}

int ms_frame_read_json_fd(int fd, json_t **msg, size_t max) {
	ms_buf b;
	ms_buf_init(&b);
	*msg = NULL;
	int rc = ms_frame_read_fd(fd, &b, max);
	if (!rc) {
		json_error_t e;
		json_t *j = json_loadb(b.data, b.len, JSON_ALLOW_NUL, &e);
		if (!j || !json_is_object(j)) {
			json_decref(j);
			rc = MS_EPROTO;
		} else {
			*msg = j;
		}
	}
	ms_buf_free(&b);
	return rc;
}

#define READ_CHUNK 65536

int ms_frame_read_next(int fd, ms_frame_reader *r, const volatile sig_atomic_t *stop, const char **payload,
		       size_t *len) {
	for (;;) {
		int rc = ms_frame_next(r, payload, len);
		if (rc) return rc;
		if (r->consumed) { /* drop what was handed out (the rest is a partial frame) */
			ms_buf_consume(&r->buf, r->consumed);
			r->consumed = 0;
		}
		size_t want = READ_CHUNK;
		if (r->buf.len >= 4) { /* the header is known: room for the whole frame */
			size_t total = 4 + (size_t)get_le32((const unsigned char *)r->buf.data);
			if (total - r->buf.len > want) want = total - r->buf.len;
		}
		if (ms_buf_reserve(&r->buf, want)) return MS_ENOMEM;
		ssize_t got = read(fd, r->buf.data + r->buf.len, r->buf.cap - r->buf.len - 1);
		if (got == 0) return r->buf.len ? MS_EPROTO : MS_ECLOSED;
		if (got < 0) {
			if (errno != EINTR) return MS_EIO;
			if (stop && *stop) return MS_ECANCELED;
			continue;
		}
		r->buf.len += (size_t)got;
		r->buf.data[r->buf.len] = 0;
	}
}

int ms_frame_read_next_json(int fd, ms_frame_reader *r, const volatile sig_atomic_t *stop, json_t **msg) {
	const char *p;
	size_t n;
	*msg = NULL;
	int rc = ms_frame_read_next(fd, r, stop, &p, &n);
	if (rc < 0) return rc;
	json_t *j = json_loadb(p, n, JSON_ALLOW_NUL, NULL);
	if (!j || !json_is_object(j)) {
		json_decref(j);
		return MS_EPROTO;
	}
	*msg = j;
	return 0;
}

static int dump_cb(const char *buf, size_t size, void *data) {
	return ms_buf_append(data, buf, size) ? -1 : 0;
}

int ms_frame_write_json_fd_buf(int fd, const json_t *msg, ms_buf *scratch) {
	ms_buf_reset(scratch);
	if (ms_buf_append(scratch, "\0\0\0\0", 4)) return MS_ENOMEM;
	if (json_dump_callback(msg, dump_cb, scratch, JSON_COMPACT | JSON_ENCODE_ANY)) return MS_ENOMEM;
	size_t n = scratch->len - 4;
	if (n > UINT32_MAX) return MS_ETOOBIG;
	unsigned char *h = (unsigned char *)scratch->data;
	h[0] = (unsigned char)n, h[1] = (unsigned char)(n >> 8), h[2] = (unsigned char)(n >> 16), h[3] = (unsigned char)(n >> 24);
	return write_all(fd, scratch->data, scratch->len);
}
