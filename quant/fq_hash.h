/* fq_hash.h — SHA-256 of checkpoints (OpenSSL's libcrypto), recorded in INT6 model files. */
#ifndef FQ_HASH_H
#define FQ_HASH_H

#include <stddef.h>

/* Lowercase hex SHA-256 (65 bytes with the NUL) of a file; of a directory, the SHA-256 of the
 * bytes of its *.safetensors files in name order (the weights of an HF checkpoint). */
int fq_sha256_path(const char *path, char hex[65], char *err, size_t err_len);

#endif /* FQ_HASH_H */
