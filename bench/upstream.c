// bench-upstream: a small, fast stand-in for the reseller, for the benchmark only (loopback).
//
// One epoll loop per thread, each with its own SO_REUSEPORT listener. No allocation on the hot
// path beyond a connection's buffers. It answers:
//   POST /v1/chat/completions    non-streaming: a fixed ~1 KB chat.completion JSON
//                                "stream":true: SSE, `bench_events` events every `bench_interval_ms`
//                                (both read from the JSON body), each stamped with "sent_at_us"
//                                (CLOCK_REALTIME microseconds taken just before the send), then a
//                                usage chunk and [DONE]. Headers go out at once; the first event
//                                follows one interval later.
//   POST /v1/videos, GET /v1/videos/{id}
//                                a completed video task whose `url` points at /files/video.mp4
//   GET  /files/video.mp4        `--file-bytes` bytes (a repeating pattern, no disk), Range support
//   GET  /healthz                200
// /v1/* requires `Authorization: Bearer <--key>` (401 otherwise). Build: gcc -O2 -pthread.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define PATTERN (1 << 20)

static int g_port = 0;
static const char *g_key = "sk-bench-upstream-key";
static long long g_file_bytes = 1LL << 30;
static char *g_pattern;
static char g_chat_json[2048];
static int g_chat_len;
static char g_video_json[512];
static int g_video_len;

typedef struct conn {
    int fd;
    unsigned gen;
    int active;
    int loopfd;
    char *rbuf; size_t rlen, rcap;
    char *wbuf; size_t wlen, woff, wcap;
    long long foff, fend;          // file bytes still to send: [foff, fend)
    int sse_left, sse_seq, sse_interval_ms;
    int busy;                      // a streamed response is in progress: don't parse the next request
    int close_after;
    int want_out;
} conn;

static conn *g_conns[MAXFD];

typedef struct { uint64_t due; int fd; unsigned gen; } tentry;
typedef struct { tentry *a; int n, cap; } theap;

static uint64_t now_mono_us(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
}
static uint64_t now_real_us(void) {
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
}

static void hpush(theap *h, tentry e) {
    if (h->n == h->cap) { h->cap = h->cap ? h->cap * 2 : 1024; h->a = realloc(h->a, h->cap * sizeof(tentry)); }
    int i = h->n++;
    h->a[i] = e;
    while (i > 0) { int p = (i - 1) / 2; if (h->a[p].due <= h->a[i].due) break; tentry t = h->a[p]; h->a[p] = h->a[i]; h->a[i] = t; i = p; }
}
static tentry hpop(theap *h) {
    tentry top = h->a[0];
    h->a[0] = h->a[--h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->a[l].due < h->a[m].due) m = l;
        if (r < h->n && h->a[r].due < h->a[m].due) m = r;
        if (m == i) break;
        tentry t = h->a[m]; h->a[m] = h->a[i]; h->a[i] = t; i = m;
    }
    return top;
}

static void set_events(conn *c) {
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (c->want_out ? EPOLLOUT : 0), .data.fd = c->fd };
    epoll_ctl(c->loopfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_close(conn *c) {
    if (!c->active) return;
    c->active = 0;
    c->gen++;
    epoll_ctl(c->loopfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->rbuf); c->rbuf = NULL; c->rlen = c->rcap = 0;
    free(c->wbuf); c->wbuf = NULL; c->wlen = c->woff = c->wcap = 0;
}

static void wbuf_append(conn *c, const char *p, size_t n) {
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 4096;
        while (cap < c->wlen + n) cap *= 2;
        c->wbuf = realloc(c->wbuf, cap); c->wcap = cap;
    }
    memcpy(c->wbuf + c->wlen, p, n); c->wlen += n;
}

// Sends what is queued, then file bytes. Returns -1 when the connection was closed.
static int pump(conn *c) {
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) { c->woff += n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) goto blocked;
        conn_close(c); return -1;
    }
    c->woff = c->wlen = 0;
    while (c->foff < c->fend) {
        size_t at = (size_t)(c->foff % PATTERN);
        size_t len = PATTERN - at;
        if ((long long)len > c->fend - c->foff) len = (size_t)(c->fend - c->foff);
        ssize_t n = send(c->fd, g_pattern + at, len, MSG_NOSIGNAL);
        if (n > 0) { c->foff += n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) goto blocked;
        conn_close(c); return -1;
    }
    if (c->fend > 0 && c->foff >= c->fend) { c->foff = c->fend = 0; c->busy = 0; }
    if (c->want_out) { c->want_out = 0; set_events(c); }
    if (c->close_after && !c->busy) { conn_close(c); return -1; }
    return 0;
blocked:
    if (!c->want_out) { c->want_out = 1; set_events(c); }
    return 0;
}

static int out(conn *c, const char *p, size_t n) {
    wbuf_append(c, p, n);
    if (c->want_out) return 0;
    return pump(c);
}

static void respond(conn *c, int status, const char *reason, const char *ctype, const char *body, size_t blen, const char *extra) {
    char head[512];
    int h = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n%s\r\n",
                     status, reason, ctype, blen, extra ? extra : "");
    wbuf_append(c, head, h);
    if (blen) wbuf_append(c, body, blen);
}

static long json_int(const char *body, size_t blen, const char *key, long dflt) {
    const char *p = memmem(body, blen, key, strlen(key));
    if (!p) return dflt;
    p += strlen(key);
    const char *end = body + blen;
    while (p < end && (*p == ' ' || *p == ':' || *p == '"')) p++;
    long v = 0; int any = 0;
    while (p < end && *p >= '0' && *p <= '9') { v = v * 10 + (*p - '0'); p++; any = 1; }
    return any ? v : dflt;
}

static void chunk(conn *c, const char *p, size_t n) {
    char hdr[32];
    int h = snprintf(hdr, sizeof hdr, "%zx\r\n", n);
    wbuf_append(c, hdr, h);
    wbuf_append(c, p, n);
    wbuf_append(c, "\r\n", 2);
}

static int sse_event(conn *c) {
    char ev[512];
    c->sse_seq++;
    uint64_t t = now_real_us();
    int n = snprintf(ev, sizeof ev,
        "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":%llu,\"model\":\"bench-model\","
        "\"seq\":%d,\"sent_at_us\":%llu,\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token%d\"},\"finish_reason\":null}]}\n\n",
        (unsigned long long)(t / 1000000), c->sse_seq, (unsigned long long)t, c->sse_seq);
    chunk(c, ev, n);
    if (--c->sse_left == 0) {
        static const char tail[] =
            "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[],"
            "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":40,\"total_tokens\":52}}\n\ndata: [DONE]\n\n";
        chunk(c, tail, sizeof tail - 1);
        wbuf_append(c, "0\r\n\r\n", 5);
        c->busy = 0;
    }
    if (c->want_out) return 0;
    return pump(c);
}

static void handle_request(conn *c, theap *timers, const char *method, const char *path, size_t plen,
                           const char *auth, size_t alen, const char *body, size_t blen) {
    int is_post = strcmp(method, "POST") == 0, is_get = strcmp(method, "GET") == 0;
#define PATHIS(s) (plen == sizeof(s) - 1 && memcmp(path, s, plen) == 0)
    if (PATHIS("/healthz")) { respond(c, 200, "OK", "application/json", "{\"status\":\"ok\"}", 15, NULL); return; }
    if (plen >= 7 && memcmp(path, "/files/", 7) == 0 && is_get) {
        // Range: parsed by the caller into c->foff/fend sentinel -1 when absent.
        return;
    }
    if (plen >= 4 && memcmp(path, "/v1/", 4) == 0) {
        size_t klen = strlen(g_key);
        if (!(alen == 7 + klen && strncasecmp(auth, "Bearer ", 7) == 0 && memcmp(auth + 7, g_key, klen) == 0)) {
            static const char e[] = "{\"error\":{\"message\":\"bad key\",\"type\":\"invalid_request_error\"}}";
            respond(c, 401, "Unauthorized", "application/json", e, sizeof e - 1, NULL);
            return;
        }
    }
    if (is_post && PATHIS("/v1/chat/completions")) {
        if (memmem(body, blen, "\"stream\":true", 13) || memmem(body, blen, "\"stream\": true", 14)) {
            c->sse_left = (int)json_int(body, blen, "\"bench_events\"", 20);
            if (c->sse_left < 1) c->sse_left = 1;
            c->sse_interval_ms = (int)json_int(body, blen, "\"bench_interval_ms\"", 50);
            c->sse_seq = 0;
            c->busy = 1;
            static const char h[] = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                                    "transfer-encoding: chunked\r\n\r\n";
            wbuf_append(c, h, sizeof h - 1);
            tentry e = { now_mono_us() + (uint64_t)c->sse_interval_ms * 1000, c->fd, c->gen };
            hpush(timers, e);
            return;
        }
        respond(c, 200, "OK", "application/json", g_chat_json, g_chat_len, NULL);
        return;
    }
    if ((is_post && PATHIS("/v1/videos")) || (is_get && plen > 11 && memcmp(path, "/v1/videos/", 11) == 0)) {
        respond(c, 200, "OK", "application/json", g_video_json, g_video_len, NULL);
        return;
    }
    static const char nf[] = "{\"error\":{\"message\":\"not found\"}}";
    respond(c, 404, "Not Found", "application/json", nf, sizeof nf - 1, NULL);
#undef PATHIS
}

static int header_value(const char *hs, const char *he, const char *name, const char **v, size_t *vlen) {
    size_t nl = strlen(name);
    const char *p = hs;
    while (p < he) {
        const char *eol = memmem(p, he - p, "\r\n", 2);
        if (!eol) eol = he;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *s = p + nl + 1;
            while (s < eol && (*s == ' ' || *s == '\t')) s++;
            const char *e = eol;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
            *v = s; *vlen = e - s;
            return 1;
        }
        p = eol + 2;
    }
    return 0;
}

// Parses and answers every complete request in the read buffer (one at a time while streaming).
static void process(conn *c, theap *timers) {
    size_t off = 0;
    while (!c->busy && c->active) {
        char *start = c->rbuf + off;
        size_t avail = c->rlen - off;
        char *end = memmem(start, avail, "\r\n\r\n", 4);
        if (!end) break;
        char *sp1 = memchr(start, ' ', end - start);
        if (!sp1) { conn_close(c); return; }
        char *sp2 = memchr(sp1 + 1, ' ', end - sp1 - 1);
        if (!sp2) { conn_close(c); return; }
        char method[16];
        size_t ml = sp1 - start; if (ml >= sizeof method) ml = sizeof method - 1;
        memcpy(method, start, ml); method[ml] = 0;
        const char *path = sp1 + 1; size_t plen = sp2 - path;
        const char *q = memchr(path, '?', plen); if (q) plen = q - path;
        const char *hs = memchr(start, '\n', end - start); hs = hs ? hs + 1 : end;
        const char *he = end + 2;
        const char *v; size_t vl;
        long long clen = 0;
        if (header_value(hs, he, "content-length", &v, &vl)) clen = atoll(v);
        size_t headlen = (end + 4) - start;
        if (avail < headlen + clen) {
            if (header_value(hs, he, "expect", &v, &vl) && vl >= 12 && strncasecmp(v, "100-continue", 12) == 0 && avail == headlen) {
                // Answer the interim response once: strip the header by rewriting it.
                memcpy((char *)v, "xxxxxxxxxxxx", 12);
                if (out(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0) return;
            }
            break;
        }
        if (header_value(hs, he, "connection", &v, &vl) && vl == 5 && strncasecmp(v, "close", 5) == 0) c->close_after = 1;
        const char *auth = ""; size_t alen = 0;
        if (header_value(hs, he, "authorization", &v, &vl)) { auth = v; alen = vl; }
        const char *body = start + headlen;
        if (plen >= 7 && memcmp(path, "/files/", 7) == 0 && strcmp(method, "GET") == 0) {
            long long a = 0, b = g_file_bytes - 1; int partial = 0, bad = 0;
            if (header_value(hs, he, "range", &v, &vl) && vl > 6 && strncasecmp(v, "bytes=", 6) == 0) {
                char r[64]; size_t rl = vl - 6 < 63 ? vl - 6 : 63; memcpy(r, v + 6, rl); r[rl] = 0;
                char *dash = strchr(r, '-');
                if (!dash) bad = 1;
                else if (dash == r) { long long n = atoll(dash + 1); a = g_file_bytes - n; if (a < 0) a = 0; }
                else { a = atoll(r); if (dash[1]) b = atoll(dash + 1); }
                if (b >= g_file_bytes) b = g_file_bytes - 1;
                if (a >= g_file_bytes || a > b) bad = 1;
                partial = 1;
            }
            char head[512]; int h;
            if (bad) {
                h = snprintf(head, sizeof head, "HTTP/1.1 416 Range Not Satisfiable\r\ncontent-range: bytes */%lld\r\ncontent-length: 0\r\n\r\n", g_file_bytes);
                wbuf_append(c, head, h);
            } else {
                if (partial)
                    h = snprintf(head, sizeof head, "HTTP/1.1 206 Partial Content\r\ncontent-type: video/mp4\r\naccept-ranges: bytes\r\n"
                                 "content-range: bytes %lld-%lld/%lld\r\ncontent-length: %lld\r\n\r\n", a, b, g_file_bytes, b - a + 1);
                else
                    h = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\naccept-ranges: bytes\r\n"
                                 "content-length: %lld\r\n\r\n", g_file_bytes);
                wbuf_append(c, head, h);
                c->foff = a; c->fend = b + 1; c->busy = 1;
            }
        } else {
            handle_request(c, timers, method, path, plen, auth, alen, body, (size_t)clen);
        }
        off += headlen + clen;
    }
    if (!c->active) return;
    if (off) { memmove(c->rbuf, c->rbuf + off, c->rlen - off); c->rlen -= off; }
    if (c->wlen > c->woff && !c->want_out) pump(c);
}

typedef struct { int lfd; } worker_arg;

static void *worker(void *arg) {
    int lfd = ((worker_arg *)arg)->lfd;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    theap timers = {0};
    struct epoll_event evs[512];
    char scratch[65536];
    for (;;) {
        int timeout = -1;
        if (timers.n) {
            uint64_t now = now_mono_us();
            timeout = timers.a[0].due <= now ? 0 : (int)((timers.a[0].due - now + 999) / 1000);
        }
        int n = epoll_wait(ep, evs, 512, timeout);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                for (int k = 0; k < 64; k++) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) break;
                    if (cfd >= MAXFD) { close(cfd); continue; }
                    int one = 1; setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn *c = g_conns[cfd];
                    if (!c) { c = calloc(1, sizeof *c); g_conns[cfd] = c; }
                    unsigned gen = c->gen;
                    memset(c, 0, sizeof *c);
                    c->gen = gen + 1; c->fd = cfd; c->active = 1; c->loopfd = ep;
                    struct epoll_event cev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = cfd };
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            conn *c = g_conns[fd];
            if (!c || !c->active) continue;
            uint32_t e = evs[i].events;
            if (e & EPOLLOUT) { if (pump(c) < 0) continue; if (!c->busy) process(c, &timers); if (!c->active) continue; }
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                    ssize_t r = recv(fd, scratch, sizeof scratch, 0);
                    if (r > 0) {
                        if (c->rlen + r > c->rcap) {
                            size_t cap = c->rcap ? c->rcap : 8192;
                            while (cap < c->rlen + r) cap *= 2;
                            if (cap > (64u << 20)) { conn_close(c); break; }
                            c->rbuf = realloc(c->rbuf, cap); c->rcap = cap;
                        }
                        memcpy(c->rbuf + c->rlen, scratch, r); c->rlen += r;
                        if ((size_t)r < sizeof scratch) break;
                        continue;
                    }
                    if (r < 0 && errno == EINTR) continue;
                    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                    conn_close(c); break;      // EOF or error: a stream in progress ends here
                }
                if (c->active) process(c, &timers);
            }
        }
        // Fire due SSE events.
        uint64_t now = now_mono_us();
        while (timers.n && timers.a[0].due <= now) {
            tentry t = hpop(&timers);
            conn *c = g_conns[t.fd];
            if (!c || !c->active || c->gen != t.gen || c->sse_left <= 0) continue;
            if (sse_event(c) < 0) continue;
            if (c->active && c->sse_left > 0) {
                tentry nx = { t.due + (uint64_t)c->sse_interval_ms * 1000, t.fd, t.gen };
                hpush(&timers, nx);
            } else if (c->active && !c->busy) {
                process(c, &timers);      // pipelined request behind the stream
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) g_port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--key") && i + 1 < argc) g_key = argv[++i];
        else if (!strcmp(argv[i], "--file-bytes") && i + 1 < argc) g_file_bytes = atoll(argv[++i]);
        else { fprintf(stderr, "usage: %s --port P [--threads N] [--key K] [--file-bytes N]\n", argv[0]); return 2; }
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);
    g_pattern = malloc(PATTERN);
    for (int i = 0; i < PATTERN; i++) g_pattern[i] = (char)(i * 131 + (i >> 9));
    // ~1 KB non-streaming answer.
    char content[700];
    memset(content, 0, sizeof content);
    const char *words = "The quick brown fox jumps over the lazy dog. ";
    while (strlen(content) + strlen(words) < 640) strcat(content, words);
    g_chat_len = snprintf(g_chat_json, sizeof g_chat_json,
        "{\"id\":\"chatcmpl-bench0001\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"bench-model\","
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},\"logprobs\":null,"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":150,\"total_tokens\":162},"
        "\"system_fingerprint\":\"fp_bench\"}", content);
    g_video_len = snprintf(g_video_json, sizeof g_video_json,
        "{\"id\":\"benchvid\",\"object\":\"video\",\"model\":\"sora-2\",\"status\":\"completed\",\"progress\":100,"
        "\"created_at\":1700000000,\"completed_at\":1700000100,\"seconds\":\"4\",\"quality\":\"standard\","
        "\"url\":\"http://127.0.0.1:%d/files/video.mp4\"}", g_port);
    pthread_t tids[64];
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    worker_arg args[64];
    for (int t = 0; t < threads; t++) {
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(g_port) };
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4096) != 0) { perror("bind/listen"); return 1; }
        args[t].lfd = lfd;
        pthread_create(&tids[t], NULL, worker, &args[t]);
    }
    fprintf(stderr, "bench-upstream: 127.0.0.1:%d, %d thread(s), chat JSON %d bytes, file %lld bytes\n", g_port, threads, g_chat_len, g_file_bytes);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    return 0;
}
