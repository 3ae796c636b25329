#ifndef VEIL_CSYSTEM_H
#define VEIL_CSYSTEM_H
// Linux interfaces that Swift's Glibc module does not expose (they sit behind _GNU_SOURCE).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <errno.h>
#include <stdint.h>

int veil_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
/// Ignores SIGPIPE process-wide and blocks SIGTERM/SIGHUP/SIGINT in the calling thread (so new
/// threads inherit the mask and only the signal thread receives them).
void veil_block_signals(void);
/// Waits for one of SIGTERM/SIGHUP/SIGINT (blocked by veil_block_signals) and returns its number.
int veil_wait_signal(void);
int veil_errno(void);
/// glibc's malloc_trim(0): returns free heap pages of every arena to the kernel.
int veil_malloc_trim(void);

#endif
