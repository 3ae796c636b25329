#ifndef VEIL_CCURL_SHIM_H
#define VEIL_CCURL_SHIM_H
#include <curl/curl.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

// curl_easy_setopt, curl_easy_getinfo and curl_multi_setopt are variadic: Swift cannot call them.
// One typed wrapper per argument kind.
static inline CURLcode veil_easy_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode veil_easy_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode veil_easy_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode veil_easy_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode veil_easy_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }

typedef size_t (*veil_data_cb)(char *ptr, size_t size, size_t nmemb, void *userdata);
static inline CURLcode veil_easy_setopt_datacb(CURL *h, CURLoption o, veil_data_cb cb) { return curl_easy_setopt(h, o, cb); }
static inline CURLcode veil_easy_setopt_opensocketcb(CURL *h, curl_opensocket_callback cb) { return curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, cb); }

static inline CURLcode veil_easy_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode veil_easy_getinfo_pointer(CURL *h, CURLINFO i, void **v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode veil_easy_getinfo_double(CURL *h, CURLINFO i, double *v) { return curl_easy_getinfo(h, i, v); }

static inline CURLMcode veil_multi_setopt_long(CURLM *m, CURLMoption o, long v) { return curl_multi_setopt(m, o, v); }
static inline CURLMcode veil_multi_setopt_pointer(CURLM *m, CURLMoption o, void *v) { return curl_multi_setopt(m, o, v); }
static inline CURLMcode veil_multi_setopt_socketcb(CURLM *m, curl_socket_callback cb) { return curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, cb); }
static inline CURLMcode veil_multi_setopt_timercb(CURLM *m, curl_multi_timer_callback cb) { return curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, cb); }

// Macros Swift cannot import as constants.
static inline size_t veil_curl_writefunc_pause(void) { return CURL_WRITEFUNC_PAUSE; }
static inline int veil_curl_socket_timeout(void) { return CURL_SOCKET_TIMEOUT; }
static inline int veil_curl_sockopt_ok(void) { return CURL_SOCKOPT_OK; }
static inline curl_socket_t veil_curl_socket_bad(void) { return CURL_SOCKET_BAD; }

static inline CURLcode veil_easy_setopt_xferinfocb(CURL *h, curl_xferinfo_callback cb) { return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, cb); }

// Added for the multi-socket client (Sources/Upstream/UpstreamClient.swift).
static inline int veil_curlpause_recv(void) { return CURLPAUSE_RECV; }
static inline int veil_curlpause_cont(void) { return CURLPAUSE_CONT; }
static inline long veil_curlpipe_multiplex(void) { return CURLPIPE_MULTIPLEX; }
static inline int veil_curl_poll_in(void) { return CURL_POLL_IN; }
static inline int veil_curl_poll_out(void) { return CURL_POLL_OUT; }
static inline int veil_curl_poll_inout(void) { return CURL_POLL_INOUT; }
static inline int veil_curl_poll_remove(void) { return CURL_POLL_REMOVE; }
static inline int veil_curl_cselect_in(void) { return CURL_CSELECT_IN; }
static inline int veil_curl_cselect_out(void) { return CURL_CSELECT_OUT; }
static inline int veil_curl_cselect_err(void) { return CURL_CSELECT_ERR; }

/// The easy handle and result of a CURLMSG_DONE message (the union is awkward from Swift).
static inline CURL *veil_curlmsg_easy(CURLMsg *m) { return m->easy_handle; }
static inline CURLcode veil_curlmsg_result(CURLMsg *m) { return m->data.result; }
static inline int veil_curlmsg_is_done(CURLMsg *m) { return m->msg == CURLMSG_DONE; }

/// The address in a curl_sockaddr (curl allocates room for sockaddr_in6 behind `addr`).
/// Writes 4 (IPv4) or 16 (IPv6) bytes in network order to `out` and returns that length; 0 otherwise.
static inline int veil_curl_sockaddr_ip(const struct curl_sockaddr *a, unsigned char out[16]) {
    if (a->family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)(const void *)&a->addr;
        memcpy(out, &s->sin_addr, 4); return 4;
    }
    if (a->family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)(const void *)&a->addr;
        memcpy(out, &s->sin6_addr, 16); return 16;
    }
    return 0;
}
/// Opens the socket curl asked for (close-on-exec; curl makes it non-blocking itself).
static inline curl_socket_t veil_curl_open_socket(const struct curl_sockaddr *a) {
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}
/// Socket lifecycle callbacks, to count the client's upstream connections (UpstreamClient).
static inline CURLcode veil_easy_setopt_sockoptcb(CURL *h, curl_sockopt_callback cb) { return curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, cb); }
static inline CURLcode veil_easy_setopt_closesocketcb(CURL *h, curl_closesocket_callback cb) { return curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, cb); }

#endif
