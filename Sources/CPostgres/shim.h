// libpq, the PostgreSQL client library (Debian: libpq-dev; headers under /usr/include/postgresql,
// found through pkg-config). Used only by Store's PostgreSQL backend, on store threads.
#include <libpq-fe.h>
#include <poll.h>
