// bench-coldstart: time from exec to the first answered request.
//   coldstart PORT TIMEOUT_MS -- program args...
// Forks, execs the program, and polls `GET /healthz` on 127.0.0.1:PORT in a tight loop (a new
// connection every ~100 µs while refused) until an HTTP 200 arrives. Prints
// `{"pid":…,"ms":…}` and leaves the program running (the caller measures idle RSS and stops it).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t mono_us(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return (uint64_t)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000; }

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--")) { fprintf(stderr, "usage: coldstart PORT TIMEOUT_MS -- prog args...\n"); return 2; }
    int port = atoi(argv[1]);
    int timeout_ms = atoi(argv[2]);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    uint64_t t0 = mono_us();
    pid_t pid = fork();
    if (pid == 0) {
        // The program outlives us: it must not hold our caller's pipes open.
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); if (null > 2) close(null); }
        execvp(argv[4], argv + 4);
        _exit(127);
    }
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    while (mono_us() - t0 < (uint64_t)timeout_ms * 1000) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); usleep(100); continue; }
        if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1)) { close(fd); usleep(100); continue; }
        char buf[512]; size_t got = 0;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        while (got < 12 && poll(&p, 1, 1000) > 0) {
            ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (n <= 0) break;
            got += n;
        }
        close(fd);
        buf[got] = 0;
        if (got >= 12 && strncmp(buf + 9, "200", 3) == 0) {
            printf("{\"pid\":%d,\"ms\":%.3f}\n", pid, (mono_us() - t0) / 1000.0);
            return 0;
        }
        usleep(100);
    }
    kill(pid, SIGKILL);
    printf("{\"pid\":%d,\"ms\":null}\n", pid);
    return 1;
}
