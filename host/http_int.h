/* host/http_int.h: private glue between http.c (connections, parsing, responses) and
 * http_static.c (files). Not for other modules: they use host/http.h. */
#ifndef MS_HTTP_INT_H
#define MS_HTTP_INT_H

#include <stdint.h>
#include <sys/types.h>

#include "host/http.h"

typedef struct http_file_cache http_file_cache;

/* The server's file cache for the request (NULL when the client is gone). */
http_file_cache *http_req_file_cache(ms_http_req *req);
http_file_cache *http_file_cache_new(void);
void http_file_cache_free(http_file_cache *fc);

/* Sends a complete response. `extra` is preformatted header lines ("Name: v\r\n"...).
 * content_length < 0 means "len"; status 304/204 get no Content-Length. The body is
 * dropped for HEAD. Bytes not written at once are copied. */
void http_respond_ex(ms_http_req *req, int status, const char *content_type, const char *extra,
		     size_t extra_len, const void *body, size_t len);

/* Sends headers, then `len` bytes of fd from `off`, read in pieces as the socket drains.
 * Takes ownership of fd (closed when done or on error). */
void http_respond_fd(ms_http_req *req, int status, const char *content_type, const char *extra,
		     size_t extra_len, int fd, off_t off, uint64_t len);

#endif
