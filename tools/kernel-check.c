/* Test driver for edge/engine/xnor_kernel.c on any CPU: runs a model from a vector file made by
 * tools/cross-check-kernel (layers, input images and the numpy engine's scores) through
 * bs_run and compares every score. Prints one line; exit status 0 when all are equal.
 *
 * Vector file, little-endian: "BSKV", u32 layer count, u32 image count, u32 height, u32 width,
 * u32 classes; per layer 11 x i32 (kind k stride pad cin cout in_h in_w pool out_h out_w) and
 * u32 sizes then bytes of: weights, thresholds (i32), flips, bias (i32); then the images
 * (u8, count x h x w) and the expected scores (i64, count x classes).
 *
 * Built with -DFREESTANDING it needs no C library: Debian's armhf libc is built for ARMv7, so
 * even an empty program stops with SIGILL on an ARMv6 core (qemu -cpu arm1176). This file then
 * brings its own entry point, Linux system calls, a bump allocator, memcpy/memset and the two
 * libgcc helpers the kernel uses on ARMv6 (__popcountsi2, __aeabi_idiv), all compiled for the
 * target. */
#include <stddef.h>
#include <stdint.h>

#include "../edge/engine/xnor_kernel.h"

#ifdef FREESTANDING
/* ---- just enough of a C library for ARMv6 Linux (EABI system calls) ---- */
static long sys3(long n, long a, long b, long c) {
    register long r7 __asm__("r7") = n;
    register long r0 __asm__("r0") = a;
    register long r1 __asm__("r1") = b;
    register long r2 __asm__("r2") = c;
    __asm__ volatile("svc #0" : "+r"(r0) : "r"(r7), "r"(r1), "r"(r2) : "memory");
    return r0;
}
static void sys_exit(int code) {
    sys3(248, code, 0, 0); /* exit_group */
    for (;;) {
    }
}
static long sys_write(int fd, const void *p, size_t n) { return sys3(4, fd, (long)p, (long)n); }

static unsigned char heap[64 << 20];
static size_t heap_top;
void *malloc(size_t n) {
    size_t start = (heap_top + 15) & ~(size_t)15;
    if (start + n > sizeof(heap)) return NULL;
    heap_top = start + n;
    return heap + start;
}
void free(void *p) { (void)p; }
void *memset(void *d, int c, size_t n) {
    unsigned char *p = d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}
void *calloc(size_t a, size_t b) {
    void *p = malloc(a * b);
    return p ? memset(p, 0, a * b) : NULL;
}
void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *o = d;
    const unsigned char *i = s;
    while (n--) *o++ = *i++;
    return d;
}
int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x - *y;
    return 0;
}
int __popcountsi2(unsigned int v) {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    return (int)((((v + (v >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24);
}
static unsigned int udiv(unsigned int n, unsigned int d) {
    unsigned int q = 0, r = 0;
    for (int i = 31; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1u);
        if (r >= d) {
            r -= d;
            q |= 1u << i;
        }
    }
    return q;
}
int __aeabi_idiv(int n, int d) {
    int neg = (n < 0) != (d < 0);
    unsigned int q = udiv(n < 0 ? 0u - (unsigned)n : (unsigned)n, d < 0 ? 0u - (unsigned)d : (unsigned)d);
    return neg ? -(int)q : (int)q;
}
unsigned int __aeabi_uidiv(unsigned int n, unsigned int d) { return udiv(n, d); }

static uint8_t *load(const char *path, size_t *size) {
    long fd = sys3(5, (long)path, 0, 0); /* open, O_RDONLY */
    if (fd < 0) return NULL;
    size_t cap = 1 << 20, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (len == cap) { /* bump allocator: the buffer is the last block, grow it in place */
            if (!malloc(cap)) return NULL;
            cap *= 2;
        }
        long got = sys3(3, fd, (long)(buf + len), (long)(cap - len));
        if (got < 0) return NULL;
        if (got == 0) break;
        len += (size_t)got;
    }
    sys3(6, fd, 0, 0);
    *size = len;
    return buf;
}
static void say(int fd, const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    sys_write(fd, s, n);
}
#else
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static uint8_t *load(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*size);
    if (!buf || fread(buf, 1, *size, f) != *size) return NULL;
    fclose(f);
    return buf;
}
static void say(int fd, const char *s) { fputs(s, fd == 2 ? stderr : stdout); }
#endif

static void say_int(long v) {
    char buf[24];
    int i = 23;
    int neg = v < 0;
    unsigned long u = neg ? 0ul - (unsigned long)v : (unsigned long)v;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg) buf[--i] = '-';
    say(1, buf + i);
}

static uint8_t *data;
static size_t at, size;

static const uint8_t *take(size_t n) {
    if (at + n > size) {
        say(2, "kernel-check: vector file truncated\n");
        return NULL;
    }
    at += n;
    return data + at - n;
}

static uint32_t u32(void) {
    const uint8_t *p = take(4);
    return p ? (p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24) : 0;
}

static void *copy(uint32_t n) {
    void *out = malloc(n ? n : 1);
    const uint8_t *p = take(n);
    if (p) memcpy(out, p, n);
    return out;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        say(2, "usage: kernel-check VECTORS\n");
        return 2;
    }
    data = load(argv[1], &size);
    if (!data || size < 24 || memcmp(data, "BSKV", 4) != 0) {
        say(2, "kernel-check: cannot read a vector file\n");
        return 2;
    }
    at = 4;
    int nl = (int)u32(), n = (int)u32(), h = (int)u32(), w = (int)u32(), classes = (int)u32();
    bs_layer *layers = calloc((size_t)nl, sizeof(bs_layer));
    for (int l = 0; l < nl; l++) {
        int32_t *v = &layers[l].kind;
        for (int i = 0; i < 11; i++) v[i] = (int32_t)u32();
        uint32_t nw = u32();
        uint8_t *weights = copy(nw);
        if (layers[l].kind == 2 || layers[l].kind == 3) { /* binary: rows padded to words */
            int rows = layers[l].cout, bytes = (int)nw / rows;
            void *padded = calloc((size_t)rows * bs_row_words(bytes), (size_t)bs_word_bits() / 8);
            bs_pad_rows(weights, rows, bytes, padded);
            layers[l].weights = padded;
        } else {
            layers[l].weights = weights;
        }
        layers[l].thresholds = copy(u32());
        layers[l].flips = copy(u32());
        layers[l].bias = copy(u32());
    }
    const uint8_t *images = take((size_t)n * h * w);
    int64_t *want = copy((uint32_t)(n * classes * 8)), *got = calloc((size_t)n * classes, 8);
    if (!images) return 2;
    /* every popcount path this CPU has: the scalar builtin, then SIMD where there is one */
    int status = 0, bad = 0, paths = 0;
    for (int want_path = 0; want_path >= -1; want_path--) {
        int path = bs_simd(want_path);
        if (want_path == -1 && path == 0) break;
        paths++;
        memset(got, 0, (size_t)n * classes * 8);
        status |= bs_run(layers, nl, images, n, 1, got);
        for (int i = 0; i < n * classes; i++) bad += got[i] != want[i];
    }
    say(1, "kernel-check: ");
    say_int(bs_word_bits());
    say(1, "-bit words, ");
    say_int(paths);
    say(1, paths > 1 ? " popcount paths, " : " popcount path, ");
    say_int(nl);
    say(1, " layers, ");
    say_int(n);
    say(1, (bad || status) ? " images: DIFFERENT (" : " images: identical (");
    say_int(bad);
    say(1, " of ");
    say_int((long)n * classes * paths);
    say(1, " scores differ, status ");
    say_int(status);
    say(1, ")\n");
    return (bad || status) ? 1 : 0;
}

#ifdef FREESTANDING
__asm__(".global _start\n_start:\n  mov r0, sp\n  bl start_c\n");
void start_c(long *sp) {
    int argc = (int)sp[0];
    sys_exit(main(argc, (char **)(sp + 1)));
}
#endif
