/* tc_st_write.h — a small in-memory safetensors writer for tests and the tiny-model generator.
 *
 * Collects "__metadata__" string pairs and tensors in call order and writes one safetensors file:
 * the 8-byte little-endian header length, the JSON header (metadata first, then the tensors in call
 * order) padded with spaces to a multiple of 8 bytes, then the tensor data back to back with no
 * padding, so every strict prefix of a file with non-empty tensors is truncated. It checks nothing
 * about the content (a test may pass an unknown dtype or a size that disagrees with the shape on
 * purpose). Allocation failures are remembered and reported by tc_st_write. Not thread-safe: one
 * writer per thread.
 */
#ifndef TC_ST_WRITE_H
#define TC_ST_WRITE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tc_st tc_st;

/* A new empty writer (caller frees with tc_st_free), or NULL when out of memory. */
tc_st *tc_st_new(void);
/* Frees the writer; NULL is a no-op. */
void tc_st_free(tc_st *w);

/* A "__metadata__" entry; key and value are copied. */
void tc_st_meta(tc_st *w, const char *key, const char *value);

/* A tensor: shape is row-major with n_dims entries (may be NULL when n_dims is 0); data has nbytes
 * in the dtype's encoding ("F32", "F16", "BF16", "U8", ...) and is copied. */
void tc_st_tensor(tc_st *w, const char *name, const char *dtype, int n_dims, const int64_t *shape,
                  const void *data, size_t nbytes);

/* Writes the file. Returns 0, or -1 when a previous call ran out of memory or the file cannot be
 * written. */
int tc_st_write(const tc_st *w, const char *path);

#endif /* TC_ST_WRITE_H */
