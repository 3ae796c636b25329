#ifndef VEIL_CZLIB_SHIM_H
#define VEIL_CZLIB_SHIM_H
#include <zlib.h>

// inflateInit2/deflateInit2 are macros (they pass the header's version and struct size): Swift
// can't call macros, so these wrap them.
static inline int veil_inflate_init2(z_streamp strm, int window_bits) {
    return inflateInit2(strm, window_bits);
}

static inline int veil_deflate_init2(z_streamp strm, int level, int window_bits) {
    return deflateInit2(strm, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY);
}
#endif
