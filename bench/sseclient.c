// bench-sseclient: opens N concurrent SSE streams (POST /v1/chat/completions, "stream":true) on
// loopback and measures, for every event, the added latency = receive time − the upstream's
// "sent_at_us" stamp (both CLOCK_REALTIME on this machine), plus each stream's time to first byte
// (request written → first response byte, i.e. the headers). One epoll thread, no allocation per
// event. Connections are opened evenly over `--ramp-ms` so the streams' event phases are spread.
//
// Checks: every stream gets HTTP 200, all `--events` events in order (seq 1..N), then [DONE].
// Prints one JSON object on stdout. Bounded: gives up after `--timeout-s`.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct stream {
    int fd;
    int state;            // 0 connecting, 1 sent, 2 head done (body), 3 finished ok, 4 failed
    int status;
    uint64_t t_sent;      // monotonic us
    int ttfb_us;
    char hbuf[2048]; int hlen;
    // chunked decoder
    int chunked;
    long chunk_left;      // bytes left in the current chunk's data; -1 reading size line
    int crlf_left;        // CRLF after chunk data still to skip
    char sizeline[32]; int sl;
    // SSE event assembly
    char ev[4096]; int evlen;
    int next_seq, events, done;
} stream;

static uint64_t mono_us(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return (uint64_t)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000; }
static uint64_t real_us(void) { struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts); return (uint64_t)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000; }

static int *g_lat; static long g_nlat, g_caplat;
static long g_bad_order, g_late;
static int g_interval_ms;

static int cmpint(const void *a, const void *b) { int x = *(const int *)a, y = *(const int *)b; return x < y ? -1 : x > y; }
static int pct(int *v, long n, double p) { if (!n) return -1; long i = (long)(p * (n - 1) + 0.5); return v[i]; }

static void on_event(stream *s, uint64_t now_real) {
    s->ev[s->evlen] = 0;
    if (strstr(s->ev, "[DONE]")) { s->done = 1; return; }
    char *p = strstr(s->ev, "\"sent_at_us\":");
    if (!p) return;              // e.g. the usage chunk
    unsigned long long sent = strtoull(p + 13, NULL, 10);
    char *q = strstr(s->ev, "\"seq\":");
    int seq = q ? atoi(q + 6) : -1;
    if (seq != s->next_seq) g_bad_order++;
    s->next_seq = seq + 1;
    s->events++;
    long lat = (long)(now_real - sent);
    if (lat < 0) lat = 0;
    if (lat > (long)g_interval_ms * 500) g_late++;     // held back for more than half an interval
    if (g_nlat == g_caplat) { g_caplat = g_caplat ? g_caplat * 2 : 65536; g_lat = realloc(g_lat, g_caplat * sizeof(int)); }
    g_lat[g_nlat++] = (int)lat;
}

// Feeds decoded body bytes into the SSE assembler ("\n\n" ends an event).
static void body_bytes(stream *s, const char *p, long n, uint64_t now_real) {
    for (long i = 0; i < n; i++) {
        if (s->evlen < (int)sizeof s->ev - 1) s->ev[s->evlen++] = p[i];
        if (p[i] == '\n' && s->evlen >= 2 && s->ev[s->evlen - 2] == '\n') { on_event(s, now_real); s->evlen = 0; }
    }
}

// Returns 1 when the response is complete.
static int feed(stream *s, const char *p, long n, uint64_t now_real) {
    if (!s->chunked) { body_bytes(s, p, n, now_real); return 0; }
    while (n > 0) {
        if (s->crlf_left) { long k = s->crlf_left < n ? s->crlf_left : n; s->crlf_left -= k; p += k; n -= k; continue; }
        if (s->chunk_left < 0) {
            char c = *p++; n--;
            if (c == '\n') {
                s->sizeline[s->sl] = 0;
                long size = strtol(s->sizeline, NULL, 16);
                s->sl = 0;
                if (size == 0) return 1;          // last chunk (trailers ignored)
                s->chunk_left = size;
            } else if (c != '\r' && s->sl < (int)sizeof s->sizeline - 1) s->sizeline[s->sl++] = c;
            continue;
        }
        long k = s->chunk_left < n ? s->chunk_left : n;
        body_bytes(s, p, k, now_real);
        p += k; n -= k; s->chunk_left -= k;
        if (s->chunk_left == 0) { s->chunk_left = -1; s->crlf_left = 2; }
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *token = "none";
    int port = 0, streams = 100, events = 20, ramp_ms = -1, timeout_s = 120;
    g_interval_ms = 50;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
        else if (!strcmp(argv[i], "--token") && i + 1 < argc) token = argv[++i];
        else if (!strcmp(argv[i], "--streams") && i + 1 < argc) streams = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--events") && i + 1 < argc) events = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc) g_interval_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ramp-ms") && i + 1 < argc) ramp_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timeout-s") && i + 1 < argc) timeout_s = atoi(argv[++i]);
        else { fprintf(stderr, "usage: %s --port P --streams N --events E --interval-ms I [--ramp-ms R] [--token T] [--timeout-s S]\n", argv[0]); return 2; }
    }
    if (ramp_ms < 0) ramp_ms = g_interval_ms;
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)streams + 16 > rl.rlim_cur) { fprintf(stderr, "sseclient: %d streams need more than %lu descriptors\n", streams, (unsigned long)rl.rlim_cur); return 2; }

    char body[256];
    int blen = snprintf(body, sizeof body,
        "{\"model\":\"bench-model\",\"stream\":true,\"bench_events\":%d,\"bench_interval_ms\":%d,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}", events, g_interval_ms);
    char req[1024];
    int rlen = snprintf(req, sizeof req,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
        "Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s", host, port, token, blen, body);

    stream *ss = calloc(streams, sizeof(stream));
    int ep = epoll_create1(0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, host, &a.sin_addr);
    uint64_t t0 = mono_us(), deadline = t0 + (uint64_t)timeout_s * 1000000ULL;
    int opened = 0, finished = 0, failed = 0, max_open = 0, open_now = 0;
    long connect_errors = 0;
    uint64_t all_open_at = 0;
    struct epoll_event evs[1024];
    char buf[65536];
    while (finished + failed < streams) {
        uint64_t now = mono_us();
        if (now > deadline) break;
        // Open the connections due by now (evenly over the ramp).
        long due = ramp_ms > 0 ? (long)((double)(now - t0) / (ramp_ms * 1000.0) * streams) + 1 : streams;
        if (due > streams) due = streams;
        while (opened < due) {
            stream *s = &ss[opened];
            s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            int one = 1; setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            s->chunk_left = -1; s->next_seq = 1;
            int rc = connect(s->fd, (struct sockaddr *)&a, sizeof a);
            if (rc != 0 && errno != EINPROGRESS) { connect_errors++; close(s->fd); s->state = 4; failed++; opened++; continue; }
            struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)opened };
            epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
            opened++; open_now++;
            if (open_now > max_open) max_open = open_now;
        }
        int n = epoll_wait(ep, evs, 1024, 1);
        uint64_t nowr = real_us(), nowm = mono_us();
        for (int i = 0; i < n; i++) {
            stream *s = &ss[evs[i].data.u32];
            if (s->state >= 3) continue;
            if (s->state == 0 && (evs[i].events & EPOLLOUT)) {
                int err = 0; socklen_t el = sizeof err; getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || send(s->fd, req, rlen, MSG_NOSIGNAL) != rlen) { connect_errors++; goto fail; }
                s->t_sent = mono_us();
                s->state = 1;
                struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = evs[i].data.u32 };
                epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                continue;
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                ssize_t r = recv(s->fd, buf, sizeof buf, 0);
                if (r < 0 && errno == EINTR) continue;
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                if (r <= 0) { if (s->state == 2 && !s->chunked && s->done) goto ok; goto fail; }
                const char *p = buf; long left = r;
                if (s->state == 1) {
                    if (s->hlen == 0) s->ttfb_us = (int)(nowm - s->t_sent);
                    long k = left; if (s->hlen + k > (long)sizeof s->hbuf - 1) k = sizeof s->hbuf - 1 - s->hlen;
                    memcpy(s->hbuf + s->hlen, p, k); s->hlen += k; s->hbuf[s->hlen] = 0;
                    char *end = strstr(s->hbuf, "\r\n\r\n");
                    if (!end) { if (s->hlen >= (int)sizeof s->hbuf - 1) goto fail; break; }
                    long headlen = end + 4 - s->hbuf;
                    s->status = atoi(s->hbuf + 9);
                    for (char *h = s->hbuf; *h; h++) *h = (*h >= 'A' && *h <= 'Z') ? *h + 32 : *h;
                    s->chunked = strstr(s->hbuf, "transfer-encoding: chunked") != NULL;
                    s->state = 2;
                    if (s->status != 200) goto fail;
                    long consumed_before = s->hlen - k;   // bytes of earlier reads already in hbuf
                    p = buf + (headlen - consumed_before); left = r - (headlen - consumed_before);
                }
                if (left > 0 && feed(s, p, left, nowr)) {
                    if (s->done && s->events == events) goto ok;
                    goto fail;
                }
                continue;
            ok:
                s->state = 3; finished++; open_now--; close(s->fd); break;
            fail:
                if (s->state < 3) { s->state = 4; failed++; open_now--; close(s->fd); }
                break;
            }
            if (!all_open_at && opened == streams && open_now == streams) all_open_at = mono_us();
        }
    }
    // Anything still open at the deadline failed.
    for (int i = 0; i < opened; i++) if (ss[i].state < 3) { ss[i].state = 4; failed++; close(ss[i].fd); }
    int *tt = malloc(sizeof(int) * (size_t)(streams > 0 ? streams : 1)); long ntt = 0;
    for (int i = 0; i < streams; i++) if (ss[i].ttfb_us > 0) tt[ntt++] = ss[i].ttfb_us;
    qsort(tt, ntt, sizeof(int), cmpint);
    qsort(g_lat, g_nlat, sizeof(int), cmpint);
    double wall = (mono_us() - t0) / 1e6;
    printf("{\"streams\":%d,\"ok\":%d,\"failed\":%d,\"connect_errors\":%ld,\"max_open\":%d,\"events\":%ld,"
           "\"expected_events\":%ld,\"out_of_order\":%ld,\"late\":%ld,"
           "\"lat_p50_us\":%d,\"lat_p99_us\":%d,\"lat_p999_us\":%d,\"lat_max_us\":%d,"
           "\"ttfb_p50_us\":%d,\"ttfb_p99_us\":%d,\"ttfb_max_us\":%d,\"wall_s\":%.2f}\n",
           streams, finished, failed, connect_errors, max_open, g_nlat, (long)streams * events, g_bad_order, g_late,
           pct(g_lat, g_nlat, 0.5), pct(g_lat, g_nlat, 0.99), pct(g_lat, g_nlat, 0.999), g_nlat ? g_lat[g_nlat - 1] : -1,
           pct(tt, ntt, 0.5), pct(tt, ntt, 0.99), ntt ? tt[ntt - 1] : -1, wall);
    return failed ? 1 : 0;
}
