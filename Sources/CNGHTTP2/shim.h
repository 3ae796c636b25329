// nghttp2's sans-I/O HTTP/2 session for the upstream client (UpstreamHTTP's H2Connection).
#include <nghttp2/nghttp2.h>
