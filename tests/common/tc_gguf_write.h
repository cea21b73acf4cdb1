/* tc_gguf_write.h — a small in-memory GGUF (v3) writer for tests and the tiny-model generator.
 *
 * Collects metadata keys and tensors in call order and writes them as one GGUF v3 file with
 * alignment 32. It checks nothing about the content (a test may write 5 dimensions or type 99 on
 * purpose). Tensor data is padded to the alignment between tensors but not after the last one, so
 * every strict prefix of the file is truncated. Allocation failures are remembered and reported
 * by tc_gguf_write. Not thread-safe: one writer per thread.
 */
#ifndef TC_GGUF_WRITE_H
#define TC_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tc_gguf tc_gguf;

/* A new empty writer (caller frees with tc_gguf_free), or NULL when out of memory. */
tc_gguf *tc_gguf_new(void);
/* Frees the writer; NULL is a no-op. */
void tc_gguf_free(tc_gguf *g);

/* Metadata: key and values are copied. */
void tc_gguf_kv_u32(tc_gguf *g, const char *key, uint32_t v);
void tc_gguf_kv_f32(tc_gguf *g, const char *key, float v);
void tc_gguf_kv_bool(tc_gguf *g, const char *key, bool v);
void tc_gguf_kv_str(tc_gguf *g, const char *key, const char *v);
void tc_gguf_kv_arr_str(tc_gguf *g, const char *key, const char *const *v, size_t n);
void tc_gguf_kv_arr_i32(tc_gguf *g, const char *key, const int32_t *v, size_t n);

/* A tensor: ne is GGUF order (ne[0] innermost; n_dims entries); data has nbytes of the type's
 * encoding and is copied. */
void tc_gguf_tensor(tc_gguf *g, const char *name, int ggml_type, int n_dims, const int64_t *ne,
                    const void *data, size_t nbytes);

/* Writes the file (alignment 32). Returns 0, or -1 when a previous call ran out of memory or the
 * file cannot be written. */
int tc_gguf_write(const tc_gguf *g, const char *path);

#endif /* TC_GGUF_WRITE_H */
