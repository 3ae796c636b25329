#define _GNU_SOURCE
#include "csystem.h"
#include <pthread.h>

int veil_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

static void veil_signal_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGINT);
}

void veil_block_signals(void) {
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    veil_signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int veil_wait_signal(void) {
    sigset_t set;
    veil_signal_set(&set);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {}
    return sig;
}

int veil_errno(void) { return errno; }

#include <malloc.h>
int veil_malloc_trim(void) { return malloc_trim(0); }
