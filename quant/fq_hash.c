/* fq_hash.c — streams files through OpenSSL's SHA-256. */
#include "fq_hash.h"

#include "fq_base.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int hash_file(EVP_MD_CTX *ctx, const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fq_err(err, err_len, FQ_EIO, "%s: cannot open for hashing", path);
    unsigned char buf[1 << 16];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0)
        if (EVP_DigestUpdate(ctx, buf, n) != 1)
            rc = fq_err(err, err_len, FQ_EIO, "%s: hashing failed", path);
    if (rc == 0 && ferror(f))
        rc = fq_err(err, err_len, FQ_EIO, "%s: read error while hashing", path);
    fclose(f);
    return rc;
}

static int is_safetensors(const struct dirent *d)
{
    size_t n = strlen(d->d_name), s = strlen(".safetensors");
    return n > s && strcmp(d->d_name + n - s, ".safetensors") == 0;
}

static int hash_dir(EVP_MD_CTX *ctx, const char *dir, char *err, size_t err_len)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, is_safetensors, alphasort);
    if (n < 0)
        return fq_err(err, err_len, FQ_EIO, "%s: cannot list the directory", dir);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (rc == 0)
            rc = hash_file(ctx, path, err, err_len);
        free(names[i]);
    }
    free(names);
    return rc;
}

int fq_sha256_path(const char *path, char hex[65], char *err, size_t err_len)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return fq_err(err, err_len, FQ_EIO, "%s: no such file or directory", path);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return fq_err(err, err_len, FQ_ENOMEM, "cannot start SHA-256");
    }
    int rc = S_ISDIR(st.st_mode) ? hash_dir(ctx, path, err, err_len)
                                 : hash_file(ctx, path, err, err_len);
    unsigned char md[32];
    unsigned int md_len = 0;
    if (rc == 0 && EVP_DigestFinal_ex(ctx, md, &md_len) != 1)
        rc = fq_err(err, err_len, FQ_EIO, "%s: hashing failed", path);
    EVP_MD_CTX_free(ctx);
    for (unsigned int i = 0; rc == 0 && i < md_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return rc;
}
