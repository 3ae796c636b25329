// The low-level SHA-256 calls are deprecated in OpenSSL 3 but kept: its one-shot SHA256() now
// goes through EVP_Q_digest, which fetches the algorithm from the provider store (a lock and a
// name lookup) and makes three allocations per call; these make none.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <openssl/crypto.h>

static inline void veil_sha256(const void *data, size_t count, unsigned char out[32]) {
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, data, count);
    SHA256_Final(out, &c);
}

#include <openssl/hmac.h>
#include <openssl/evp.h>

/// HMAC-SHA256 (webhook signatures). Returns 1 on success.
static inline int veil_hmac_sha256(const void *key, size_t keyCount, const void *data, size_t count, unsigned char out[32]) {
    unsigned int n = 32;
    return HMAC(EVP_sha256(), key, (int)keyCount, (const unsigned char *)data, count, out, &n) != NULL && n == 32;
}
