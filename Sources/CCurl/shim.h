#ifndef VEIL_CCURL_SHIM_H
#define VEIL_CCURL_SHIM_H
#include <curl/curl.h>

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
#endif
