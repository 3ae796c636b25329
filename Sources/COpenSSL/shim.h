// OpenSSL's libssl for the upstream client (UpstreamHTTP's TLS layer). Typed wrappers for the
// parts Swift can't call: macros over SSL_ctrl/SSL_CTX_ctrl, and flag macros.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

static inline int veil_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

/// Partial writes (SSL_write returns what one record took, like write(2)); retries may pass the
/// same bytes from another address; optionally free the record buffers while idle.
static inline void veil_ssl_ctx_set_modes(SSL_CTX *ctx, int release_buffers) {
    long m = SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
    if (release_buffers) m |= SSL_MODE_RELEASE_BUFFERS;
    SSL_CTX_set_mode(ctx, m);
}

/// A shared (HTTP/2) connection keeps its record buffers: it is always busy, and releasing them
/// costs an allocation per read.
static inline void veil_ssl_keep_buffers(SSL *s) { SSL_clear_mode(s, SSL_MODE_RELEASE_BUFFERS); }

/// One read(2) per socket read instead of two (header, then body) per record.
static inline void veil_ssl_ctx_set_read_ahead(SSL_CTX *ctx) { SSL_CTX_set_read_ahead(ctx, 1); }

/// Client-side session cache kept by the caller (per origin), not by OpenSSL.
static inline void veil_ssl_ctx_set_client_cache(SSL_CTX *ctx) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
}

static inline int veil_ssl_set_sni(SSL *s, const char *name) { return (int)SSL_set_tlsext_host_name(s, name); }
static inline int veil_ssl_set_app_data(SSL *s, void *p) { return SSL_set_app_data(s, p); }
static inline void *veil_ssl_get_app_data(const SSL *s) { return SSL_get_app_data(s); }

static inline int veil_ssl_error_want_read(void) { return SSL_ERROR_WANT_READ; }
static inline int veil_ssl_error_want_write(void) { return SSL_ERROR_WANT_WRITE; }
static inline int veil_ssl_error_zero_return(void) { return SSL_ERROR_ZERO_RETURN; }
static inline int veil_ssl_error_syscall(void) { return SSL_ERROR_SYSCALL; }
static inline int veil_ssl_verify_peer(void) { return SSL_VERIFY_PEER; }
static inline int veil_ssl_verify_none(void) { return SSL_VERIFY_NONE; }
