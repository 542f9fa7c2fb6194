/* sandbox/frame.h: length-prefixed messages between the host and its workers.
 *
 * Wire format: a 4-byte little-endian payload length N, then N bytes of payload (one
 * compact JSON object, see sandbox/PROTOCOL.md). A frame whose announced length exceeds
 * the reader's limit is a protocol violation: the reader refuses it and the host ends
 * that worker.
 */
#ifndef MS_FRAME_H
#define MS_FRAME_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>

#include "common/ms.h"

#define MS_FRAME_MAX_DEFAULT (16u << 20) /* 16 MiB */

/* The host cancels an app worker's call with sigqueue(pid, MS_SIG_CANCEL, {.sival_int =
 * id}) (sandbox/PROTOCOL.md). A real-time signal: cancels for several calls sent ahead are
 * queued, where a second SIGUSR2 arriving before the first was handled would be lost. */
#define MS_SIG_CANCEL SIGRTMIN

/* Incremental decoder for a byte stream (the host's libuv reads). */
typedef struct ms_frame_reader {
	ms_buf buf;
	size_t max;      /* largest payload accepted */
	size_t consumed; /* bytes of buf already returned as frames */
} ms_frame_reader;

void ms_frame_reader_init(ms_frame_reader *r, size_t max);
void ms_frame_reader_free(ms_frame_reader *r);
/* Appends bytes read from the stream. */
int ms_frame_reader_feed(ms_frame_reader *r, const void *data, size_t len);
/* Returns 1 and the next complete payload (valid until the next feed), 0 when more bytes
 * are needed, or MS_ETOOBIG when the announced length exceeds the limit. */
int ms_frame_next(ms_frame_reader *r, const char **payload, size_t *len);

/* Appends one encoded frame to out. */
int ms_frame_encode(ms_buf *out, const void *payload, size_t len);
/* Encodes a JSON object compactly as one frame. */
int ms_frame_encode_json(ms_buf *out, const json_t *msg);

/* Blocking I/O for workers (EINTR-safe unless *interrupted is given and becomes set). */
int ms_frame_write_fd(int fd, const void *payload, size_t len);
int ms_frame_write_json_fd(int fd, const json_t *msg);
/* Reads one frame into out (reset first). 0, MS_ECLOSED at EOF, MS_ETOOBIG, MS_EIO. */
int ms_frame_read_fd(int fd, ms_buf *out, size_t max);
/* Reads one frame and parses it; *msg is a new reference to a JSON object. MS_EPROTO
 * when the payload is not a JSON object. */
int ms_frame_read_json_fd(int fd, json_t **msg, size_t max);

/* Buffered blocking reads for workers: each read(2) takes whatever the socket holds (up to
 * 64 KiB or the rest of the frame), so a frame costs one syscall and one read can carry
 * several frames. Returns 1 with the next payload (valid until the next call on r), or
 * MS_ECLOSED (EOF between frames), MS_EPROTO (EOF inside a frame), MS_ETOOBIG, MS_ENOMEM,
 * MS_EIO, or MS_ECANCELED when a read is interrupted by a signal while *stop is non-zero
 * (stop may be NULL; a partial frame stays buffered, so the stream stays aligned). */
int ms_frame_read_next(int fd, ms_frame_reader *r, const volatile sig_atomic_t *stop, const char **payload,
		       size_t *len);
/* ms_frame_read_next, then parses the payload: *msg is a new reference to a JSON object
 * (MS_EPROTO when it is not one). */
int ms_frame_read_next_json(int fd, ms_frame_reader *r, const volatile sig_atomic_t *stop, json_t **msg);
/* ms_frame_write_json_fd encoding into scratch (reset first, kept for reuse), so a
 * steady stream of frames allocates nothing for the encoding. */
int ms_frame_write_json_fd_buf(int fd, const json_t *msg, ms_buf *scratch);

#endif
