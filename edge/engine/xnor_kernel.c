/* binsort's native XNOR-popcount kernel: the hot layers of a .bnn model (docs/format.md).
 *
 * Plain C99 with no dependencies, so the same file builds as a Python extension (pip, loaded
 * through ctypes by edge/engine/native.py) and in the cross-compiled test driver
 * (tools/cross-check-kernel) for ARMv6, ARMv7 and AArch64.
 *
 * Layouts are the numpy engine's: a binary map is (n, h, w, bytes) with channel c at bit c%8 of
 * byte c/8 (1 = -1); binary weights are (cout, k*k*cin/8) bytes in (ky, kx, cin) order;
 * thresholds are int32 and flips one bit per channel. An output bit is (acc < T) ^ flip, and
 * a p x p max-pool is AND of its bits, OR in flipped channels.
 *
 * Binary convolution: for each output row, the k x k patches of that row are copied into a
 * small buffer of machine words (a row-sized im2col, zero-padded to whole words: zero bits are
 * +1 in both patch and weight padding, so they XOR to 0), then every output channel is
 * n - 2 * sum(popcount(patch ^ weight)) over the words. Words are 64-bit, or 32-bit on 32-bit
 * CPUs; popcount is the compiler builtin (POPCNT on x86-64 with -mpopcnt, CNT on AArch64,
 * a short bit-twiddling sequence on ARMv6/ARMv7 without NEON). On x86-64 CPUs with AVX-512
 * VPOPCNTDQ a second path, picked at run time, does eight output channels per 512-bit register
 * (bs_simd; docs/engines.md). Both give the same integers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xnor_kernel.h"

#if UINTPTR_MAX > 0xFFFFFFFFu
typedef uint64_t word_t;
#define POPCOUNT(x) __builtin_popcountll(x)
#else
typedef uint32_t word_t;
#define POPCOUNT(x) __builtin_popcount(x)
#endif
#define WORD_BYTES ((int)sizeof(word_t))

#ifdef BINSORT_THREADS
#include <pthread.h>
#endif

int bs_word_bits(void) { return 8 * WORD_BYTES; }

static int words_for(int bytes) { return (bytes + WORD_BYTES - 1) / WORD_BYTES; }

/* bits of one output pixel: (acc < T) ^ flip for each channel, packed LSB first. Branch-free:
 * the comparisons of random-looking accumulators mispredict half the time. */
#ifdef __SSE2__
#include <emmintrin.h>
#endif
static void threshold_pixel(const int32_t *acc, int cout, const int32_t *thr,
                            const uint8_t *flips, uint8_t *out) {
#ifdef __SSE2__
    if (cout % 8 == 0) { /* four compares and a movemask per four channels */
        for (int c0 = 0; c0 < cout; c0 += 8) {
            __m128i a0 = _mm_loadu_si128((const __m128i *)(acc + c0));
            __m128i a1 = _mm_loadu_si128((const __m128i *)(acc + c0 + 4));
            __m128i t0 = _mm_loadu_si128((const __m128i *)(thr + c0));
            __m128i t1 = _mm_loadu_si128((const __m128i *)(thr + c0 + 4));
            int lo = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmplt_epi32(a0, t0)));
            int hi = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmplt_epi32(a1, t1)));
            out[c0 / 8] = (uint8_t)((lo | hi << 4) ^ flips[c0 / 8]);
        }
        return;
    }
#endif
    for (int c0 = 0; c0 < cout; c0 += 64) {
        int m = cout - c0 < 64 ? cout - c0 : 64;
        uint64_t bits = 0;
        for (int c = 0; c < m; c++) bits |= (uint64_t)(acc[c0 + c] < thr[c0 + c]) << c;
        for (int b = 0; b < (m + 7) / 8; b++)
            out[c0 / 8 + b] = (uint8_t)((uint8_t)(bits >> (8 * b)) ^ flips[c0 / 8 + b]);
    }
}

/* p x p stride-p max-pool of packed maps (n, h, w, nb) -> (n, h/p, w/p, nb), floor: AND of the
 * p*p bits, OR in flipped channels */
static void pool_bits(const uint8_t *in, int n, int h, int w, int nb, int p, const uint8_t *flips,
                      uint8_t *out) {
    int ho = h / p, wo = w / p;
    for (int i = 0; i < n; i++)
        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++) {
                const uint8_t *a = in + (((size_t)i * h + p * y) * w + p * x) * nb;
                uint8_t *o = out + (((size_t)i * ho + y) * wo + x) * nb;
                for (int k = 0; k < nb; k++) {
                    uint8_t all = 0xff, any = 0;
                    for (int dy = 0; dy < p; dy++)
                        for (int dx = 0; dx < p; dx++) {
                            uint8_t v = a[((size_t)dy * w + dx) * nb + k];
                            all &= v;
                            any |= v;
                        }
                    o[k] = (uint8_t)((all & ~flips[k]) | (any & flips[k]));
                }
            }
}

#ifdef __SSE2__
/* The first layer on x86 (SSE2 is in every x86-64): pmaddwd multiplies the int16 pixels of two
 * kernel taps with both taps' weights of four channels and adds the pairs into int32, and the
 * thresholds are four compares and a movemask. Same integers as the generic loop below. */
static inline __attribute__((always_inline)) void stem_pixel(const int16_t *taps, int pairs,
                                                             int groups, const __m128i *wv,
                                                             const int32_t *thr,
                                                             const uint8_t *flips, uint8_t *o) {
    __m128i acc[16];
    for (int g = 0; g < groups; g++) acc[g] = _mm_setzero_si128();
    for (int p = 0; p < pairs; p++) {
        int32_t two = (int32_t)(uint16_t)taps[2 * p] | ((int32_t)taps[2 * p + 1] << 16);
        __m128i x = _mm_set1_epi32(two);
        for (int g = 0; g < groups; g++)
            acc[g] = _mm_add_epi32(acc[g], _mm_madd_epi16(x, wv[p * groups + g]));
    }
    uint64_t bits = 0;
    for (int g = 0; g < groups; g++) {
        __m128i t = _mm_loadu_si128((const __m128i *)(thr + 4 * g));
        bits |= (uint64_t)_mm_movemask_ps(_mm_castsi128_ps(_mm_cmplt_epi32(acc[g], t))) << (4 * g);
    }
    for (int b = 0; b < (groups + 1) / 2; b++) o[b] = (uint8_t)((uint8_t)(bits >> (8 * b)) ^ flips[b]);
}

/* The first layer's SIMD forms share two steps: the int16 weights of two kernel taps for a run
 * of channels, interleaved as pmaddwd wants them (tap 2p, tap 2p+1 per channel; the odd last
 * tap pairs with 0), and one output pixel's k x k centred pixels, with a 0 after them. */
static void stem_pair_lanes(const int8_t *weights, int kk, int p, int ch0, int channels,
                            int16_t *lanes) {
    for (int c = 0; c < channels; c++) {
        lanes[2 * c] = weights[(ch0 + c) * kk + 2 * p];
        lanes[2 * c + 1] = 2 * p + 1 < kk ? weights[(ch0 + c) * kk + 2 * p + 1] : 0;
    }
}

static inline void stem_taps(const int16_t *base, int wp, int k, int16_t *taps) {
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) taps[ky * k + kx] = base[ky * wp + kx];
    taps[k * k] = 0;
}

static void conv_u8_sse2(const int16_t *cen, int wp, int ho, int wo, int k, int stride,
                         const int8_t *weights, int cout, const int32_t *thr,
                         const uint8_t *flips, uint8_t *conv) {
    int kk = k * k, pairs = (kk + 1) / 2, groups = cout / 4, nb = (cout + 7) / 8;
    __m128i wv[32 * 16]; /* pairs x groups, for k <= 7 and cout <= 64 */
    for (int p = 0; p < pairs; p++)
        for (int g = 0; g < groups; g++) {
            int16_t lanes[8];
            stem_pair_lanes(weights, kk, p, 4 * g, 4, lanes);
            wv[p * groups + g] = _mm_loadu_si128((const __m128i *)lanes);
        }
    for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++) {
            const int16_t *base = cen + (size_t)oy * stride * wp + (size_t)ox * stride;
            int16_t taps[64];
            stem_taps(base, wp, k, taps);
            uint8_t *o = conv + ((size_t)oy * wo + ox) * nb;
            if (groups == 8) /* 32 channels (bcnn, tiny): a constant keeps the sums in registers */
                stem_pixel(taps, pairs, 8, wv, thr, flips, o);
            else
                stem_pixel(taps, pairs, groups, wv, thr, flips, o);
        }
}
#endif

/* The popcount path is chosen at run time (bs_simd, below with the AVX-512 functions). */
static int simd(void);
#define SIMD_VPOPCNT 2
#if defined(__x86_64__) && defined(__GNUC__)
#define BS_VPOPCNT 1
static void conv_u8_avx512(const int16_t *cen, int wp, int ho, int wo, int k, int stride,
                           const int8_t *weights, int cout, const int32_t *thr,
                           const uint8_t *flips, uint8_t *conv);
#endif

/* First layer: u8 pixels (n, h, w), centred as 2p - 255 with centred-0 padding, int8 weights
 * (cout, k, k), integer accumulators, thresholds, optional pool. out: (n, ho', wo', nb).
 * Pixels (+-255) and weights (int8) are int16 with the weights transposed to (k*k, cout), so
 * the inner loop is a widening int16 multiply-add over the output channels, which compilers
 * vectorise even for baseline SSE2 (no 32-bit vector multiply there). */
int bs_conv_u8(const uint8_t *in, int n, int h, int w, const int8_t *weights, int cout, int k,
               int stride, int pad, const int32_t *thr, const uint8_t *flips, int pool,
               uint8_t *out) {
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    int nb = (cout + 7) / 8, kk = k * k;
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)cout);
    int32_t *patch = malloc(sizeof(int32_t) * (size_t)kk);
    int16_t *wt = malloc(sizeof(int16_t) * (size_t)kk * cout);
    uint8_t *conv = pool > 1 ? malloc((size_t)n * ho * wo * nb) : out;
    if (!acc || !patch || !wt || !conv) {
        free(acc);
        free(patch);
        free(wt);
        if (pool > 1) free(conv);
        return -1;
    }
    for (int c = 0; c < cout; c++)
        for (int j = 0; j < kk; j++) wt[j * cout + c] = weights[c * kk + j];
    int hp = h + 2 * pad, wp = w + 2 * pad;
    int16_t *cen = calloc((size_t)hp * wp, sizeof(int16_t)); /* centred, centred-0 padding */
    if (!cen) {
        free(acc);
        free(patch);
        free(wt);
        if (pool > 1) free(conv);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                cen[(y + pad) * wp + x + pad] = (int16_t)(2 * in[((size_t)i * h + y) * w + x] - 255);
#ifdef BS_VPOPCNT
        if (cout % 16 == 0 && cout <= 64 && k <= 7 && simd() == SIMD_VPOPCNT) {
            conv_u8_avx512(cen, wp, ho, wo, k, stride, weights, cout, thr, flips,
                           conv + (size_t)i * ho * wo * nb);
            continue;
        }
#endif
#ifdef __SSE2__
        if (cout % 4 == 0 && cout <= 64 && k <= 7) {
            conv_u8_sse2(cen, wp, ho, wo, k, stride, weights, cout, thr, flips,
                         conv + (size_t)i * ho * wo * nb);
            continue;
        }
#endif
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                const int16_t *base = cen + (size_t)oy * stride * wp + (size_t)ox * stride;
                int32_t *restrict a = acc;
                memset(a, 0, sizeof(int32_t) * (size_t)cout);
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        const int16_t pv = base[ky * wp + kx];
                        const int16_t *restrict wr = wt + (size_t)(ky * k + kx) * cout;
                        for (int c = 0; c < cout; c++) a[c] += (int32_t)wr[c] * pv;
                    }
                threshold_pixel(acc, cout, thr, flips,
                                conv + (((size_t)i * ho + oy) * wo + ox) * nb);
            }
    }
    free(cen);
    if (pool > 1) {
        pool_bits(conv, n, ho, wo, nb, pool, flips, out);
        free(conv);
    }
    free(acc);
    free(patch);
    free(wt);
    return 0;
}

/* One output row of a binary convolution: patches of row oy -> bits. */
typedef struct {
    const uint8_t *in;
    int h, w, cin_bytes, k, stride, pad, wo, cout, pw, n_bits;
    const word_t *wwords;
    const int32_t *thr;
    const uint8_t *flips;
    uint8_t *conv; /* (ho, wo, nb) for one image */
    int simd;      /* the popcount path; wwords interleaved when it is SIMD */
    const int64_t *pthr; /* the SIMD path's thresholds (pop_thresholds) */
} bconv_job;

/* one pixel's packed channels into a patch: fixed sizes become single moves */
static inline void copy_pixel(uint8_t *dst, const uint8_t *src, int nbytes) {
    switch (nbytes) {
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    case 16: memcpy(dst, src, 16); break;
    default: memcpy(dst, src, (size_t)nbytes);
    }
}

/* accumulators of every output channel for one patch; PW a constant where it can be, so the
 * word loop unrolls */
#define CHANNEL_LOOP(PW)                                                 \
    for (int c = 0; c < cout; c++) {                                     \
        const word_t *wv = wwords + (size_t)c * (PW);                    \
        int pop = 0;                                                     \
        for (int q = 0; q < (PW); q++) pop += POPCOUNT(pv[q] ^ wv[q]);  \
        acc[c] = n_bits - 2 * pop;                                       \
    }

static void patch_channels(const word_t *pv, const word_t *wwords, int pw, int cout, int n_bits,
                           int32_t *acc) {
    switch (pw) {
    case 2: CHANNEL_LOOP(2) break;
    case 3: CHANNEL_LOOP(3) break;
    case 5: CHANNEL_LOOP(5) break;
    case 9: CHANNEL_LOOP(9) break;
    case 10: CHANNEL_LOOP(10) break;
    case 18: CHANNEL_LOOP(18) break;
    case 36: CHANNEL_LOOP(36) break;
    default: CHANNEL_LOOP(pw) break;
    }
}

/* x86-64 with AVX-512 VPOPCNTDQ (Ice Lake and later, Zen 4): eight output channels per
 * 512-bit register. The weights are interleaved as (cout/8, pw, 8) words, and each patch word is
 * broadcast against eight channels' words at once. Chosen at run time (bs_simd), so one build
 * runs on every x86-64 CPU. */
#ifdef BS_VPOPCNT
#include <immintrin.h>
#define VPOP_TARGET __attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))

/* Popcount thresholds for the SIMD path: acc = n - 2 * pop < T  <=>  pop >= floor((n - T) / 2) + 1.
 * Lanes past cout get a bound no popcount reaches (their bits stay 0 before the flip). */
static void pop_thresholds(const int32_t *thr, int cout, int n_bits, int64_t *out) {
    for (int c = 0; c < (cout + 7) / 8 * 8; c++) {
        if (c >= cout) {
            out[c] = INT64_MAX;
            continue;
        }
        int64_t d = (int64_t)n_bits - thr[c];
        out[c] = (d >= 0 ? d / 2 : -((1 - d) / 2)) + 1;
    }
}

#define VPOP_BLOCKS(B)                                                                  \
    for (; b + (B) <= blocks; b += (B)) {                                               \
        const uint64_t *w = wi + (size_t)b * pw * 8;                                    \
        __m512i s[B];                                                                   \
        for (int i = 0; i < (B); i++) s[i] = _mm512_setzero_si512();                    \
        for (int q = 0; q < pw; q++) {                                                  \
            __m512i x = _mm512_set1_epi64((long long)pv[q]);                            \
            for (int i = 0; i < (B); i++)                                               \
                s[i] = _mm512_add_epi64(                                                \
                    s[i], _mm512_popcnt_epi64(_mm512_xor_si512(                         \
                              x, _mm512_loadu_si512(w + ((size_t)i * pw + q) * 8))));   \
        }                                                                               \
        for (int i = 0; i < (B); i++)                                                   \
            o[b + i] = (uint8_t)(_mm512_cmpge_epi64_mask(                               \
                                     s[i], _mm512_loadu_si512(pthr + 8 * (b + i))) ^     \
                                 flips[b + i]);                                         \
    }

/* `count` patches of pw words each against every output channel, eight channels per 512-bit
 * register, straight to packed output bits (out: count * nb bytes). `pthr`: pop_thresholds. */
VPOP_TARGET static void patches_vpop(const uint64_t *patches, int count, const uint64_t *wi,
                                     int pw, int cout, const int64_t *pthr,
                                     const uint8_t *flips, uint8_t *out) {
    int blocks = (cout + 7) / 8;
    for (int p = 0; p < count; p++) {
        const uint64_t *pv = patches + (size_t)p * pw;
        uint8_t *o = out + (size_t)p * blocks;
        int b = 0;
        VPOP_BLOCKS(4)
        VPOP_BLOCKS(1)
    }
}

/* The first layer on the same CPUs: vpmaddwd on 512 bits multiplies two taps' int16 pixels with
 * sixteen channels' weights at once (cout a multiple of 16, at most 64), and the thresholds
 * are one mask compare per sixteen channels. Same integers as conv_u8_sse2. */
VPOP_TARGET static void conv_u8_avx512(const int16_t *cen, int wp, int ho, int wo, int k,
                                       int stride, const int8_t *weights, int cout,
                                       const int32_t *thr, const uint8_t *flips, uint8_t *conv) {
    int kk = k * k, pairs = (kk + 1) / 2, groups = cout / 16, nb = cout / 8;
    __m512i wv[25 * 4], tv[4]; /* pairs x groups, for k <= 7 and cout <= 64 */
    for (int p = 0; p < pairs; p++)
        for (int g = 0; g < groups; g++) {
            int16_t lanes[32];
            stem_pair_lanes(weights, kk, p, 16 * g, 16, lanes);
            wv[p * groups + g] = _mm512_loadu_si512(lanes);
        }
    for (int g = 0; g < groups; g++) tv[g] = _mm512_loadu_si512(thr + 16 * g);
    for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++) {
            const int16_t *base = cen + (size_t)oy * stride * wp + (size_t)ox * stride;
            int16_t taps[50];
            stem_taps(base, wp, k, taps);
            __m512i acc[4];
            for (int g = 0; g < groups; g++) acc[g] = _mm512_setzero_si512();
            for (int p = 0; p < pairs; p++) {
                int32_t two = (int32_t)(uint16_t)taps[2 * p] | ((int32_t)taps[2 * p + 1] << 16);
                __m512i x = _mm512_set1_epi32(two);
                for (int g = 0; g < groups; g++)
                    acc[g] = _mm512_add_epi32(acc[g], _mm512_madd_epi16(x, wv[p * groups + g]));
            }
            uint8_t *o = conv + ((size_t)oy * wo + ox) * nb;
            for (int g = 0; g < groups; g++) {
                unsigned m = _mm512_cmplt_epi32_mask(acc[g], tv[g]);
                o[2 * g] = (uint8_t)(m ^ flips[2 * g]);
                o[2 * g + 1] = (uint8_t)((m >> 8) ^ flips[2 * g + 1]);
            }
        }
}

VPOP_TARGET static uint64_t peak_vpop(const uint64_t *a, const uint64_t *b, int words, int rounds) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (int r = 0; r < rounds; r++) {
        for (int q = 0; q + 32 <= words; q += 32) {
#define PEAK_STEP(S, O) \
    S = _mm512_add_epi64(S, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + q + O), \
                                                                 _mm512_loadu_si512(b + q + O))))
            PEAK_STEP(s0, 0);
            PEAK_STEP(s1, 8);
            PEAK_STEP(s2, 16);
            PEAK_STEP(s3, 24);
#undef PEAK_STEP
        }
        __asm__ volatile("" ::: "memory");
    }
    uint64_t tail = 0;
    for (int q = words / 32 * 32; q < words; q++) tail += (uint64_t)rounds * __builtin_popcountll(a[q] ^ b[q]);
    return tail + (uint64_t)_mm512_reduce_add_epi64(
                      _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}
#endif

static int simd_level = -1;

static int simd_best(void) {
#ifdef BS_VPOPCNT
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vpopcntdq"))
        return SIMD_VPOPCNT;
#endif
    return 0;
}

/* The popcount path: `want` -1 picks the best this CPU has, 0 forces the portable scalar one
 * (same results, for tests and benchmarks), -2 only asks. Returns the path now in use:
 * 0 scalar builtin, 2 AVX-512 VPOPCNTQ. Set it before sharing the library between threads. */
int bs_simd(int want) {
    if (want < -1 && simd_level >= 0) return simd_level;
    int best = simd_best();
    simd_level = (want < 0 || want > best) ? best : want; /* -2 before any choice: the best */
    return simd_level;
}

static int simd(void) { return simd_level < 0 ? bs_simd(-1) : simd_level; }

/* The SIMD path's form of a binary layer: its weights interleaved by channel as (cout/8, pw, 8)
 * words (lanes past cout zero) and its popcount thresholds, in one allocation (`raw`, to free).
 * With the scalar path `w` is the caller's words. Returns 0, or -1 when out of memory. */
typedef struct {
    const word_t *w;
    const int64_t *pthr;
    void *raw;
} simd_layer;

static int simd_prep(int level, const word_t *wwords, int cout, int pw, const int32_t *thr,
                     int n_bits, simd_layer *out) {
    out->w = wwords;
    out->pthr = NULL;
    out->raw = NULL;
#ifdef BS_VPOPCNT
    if (level == SIMD_VPOPCNT) {
        size_t words = (size_t)((cout + 7) / 8) * pw * 8;
        out->raw = malloc((words + (size_t)(cout + 7) / 8 * 8) * 8 + 64);
        if (!out->raw) return -1;
        uint64_t *wi = (uint64_t *)(((uintptr_t)out->raw + 63) & ~(uintptr_t)63);
        memset(wi, 0, words * 8);
        for (int c = 0; c < cout; c++)
            for (int q = 0; q < pw; q++)
                wi[((size_t)(c / 8) * pw + q) * 8 + c % 8] = wwords[(size_t)c * pw + q];
        pop_thresholds(thr, cout, n_bits, (int64_t *)(wi + words));
        out->w = wi;
        out->pthr = (const int64_t *)(wi + words);
    }
#endif
    (void)level;
    (void)thr;
    (void)n_bits;
    return 0;
}

static void bconv_rows(const bconv_job *j, int row0, int row1, word_t *patch, int32_t *acc) {
    int nb = (j->cout + 7) / 8;
    for (int oy = row0; oy < row1; oy++) {
        for (int ox = 0; ox < j->wo; ox++) {
            uint8_t *p = (uint8_t *)(patch + (size_t)ox * j->pw);
            memset(p, 0, (size_t)j->pw * WORD_BYTES);
            for (int ky = 0; ky < j->k; ky++) {
                int y = oy * j->stride + ky - j->pad;
                if (y < 0 || y >= j->h) continue; /* +1 padding: bits 0 */
                for (int kx = 0; kx < j->k; kx++) {
                    int x = ox * j->stride + kx - j->pad;
                    if (x >= 0 && x < j->w)
                        copy_pixel(p + (ky * j->k + kx) * j->cin_bytes,
                                   j->in + ((size_t)y * j->w + x) * j->cin_bytes, j->cin_bytes);
                }
            }
        }
        uint8_t *row = j->conv + (size_t)oy * j->wo * nb;
#ifdef BS_VPOPCNT
        if (j->simd == SIMD_VPOPCNT) {
            patches_vpop(patch, j->wo, j->wwords, j->pw, j->cout, j->pthr, j->flips, row);
            continue;
        }
#endif
        for (int ox = 0; ox < j->wo; ox++) {
            patch_channels(patch + (size_t)ox * j->pw, j->wwords, j->pw, j->cout, j->n_bits, acc);
            threshold_pixel(acc, j->cout, j->thr, j->flips, row + (size_t)ox * nb);
        }
    }
}

#ifdef BINSORT_THREADS
typedef struct {
    const bconv_job *job;
    int row0, row1, ok;
} bconv_slice;

static void *bconv_thread(void *arg) {
    bconv_slice *s = arg;
    word_t *patch = malloc(sizeof(word_t) * (size_t)s->job->wo * s->job->pw);
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)s->job->cout);
    s->ok = patch && acc;
    if (s->ok) bconv_rows(s->job, s->row0, s->row1, patch, acc);
    free(patch);
    free(acc);
    return NULL;
}
#endif

/* Binary convolution of packed maps (n, h, w, cin/8) with +1 padding -> (n, ho', wo', nb).
 * `wwords`: the weights as words, each output channel's k*k*cin/8 bytes zero-padded to
 * bs_row_words(k*k*cin/8) words (see bs_pad_rows). `threads` > 1 splits each image's output
 * rows over that many threads (when built with BINSORT_THREADS); the result is the same. */
int bs_bconv(const uint8_t *in, int n, int h, int w, int cin, const word_t *wwords, int cout,
             int k, int stride, int pad, const int32_t *thr, const uint8_t *flips, int pool,
             int threads, uint8_t *out) {
    int cin_bytes = cin / 8, ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    int nb = (cout + 7) / 8, pw = words_for(k * k * cin_bytes);
    word_t *patch = malloc(sizeof(word_t) * (size_t)wo * pw);
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)cout);
    uint8_t *conv = malloc((size_t)ho * wo * nb);
    simd_layer sl;
    int level = simd(), prep = simd_prep(level, wwords, cout, pw, thr, k * k * cin, &sl);
    if (!patch || !acc || !conv || prep != 0) {
        free(patch);
        free(acc);
        free(conv);
        free(sl.raw);
        return -1;
    }
    int status = 0;
    for (int i = 0; i < n && status == 0; i++) {
        bconv_job job = {in + (size_t)i * h * w * cin_bytes, h, w, cin_bytes, k, stride, pad, wo,
                         cout, pw, k * k * cin, sl.w, thr, flips, conv, level, sl.pthr};
#ifdef BINSORT_THREADS
        if (threads > 1) {
            if (threads > ho) threads = ho;
            if (threads > 64) threads = 64;
            pthread_t tid[64];
            bconv_slice slice[64];
            for (int t = 0; t < threads; t++) {
                slice[t].job = &job;
                slice[t].row0 = ho * t / threads;
                slice[t].row1 = ho * (t + 1) / threads;
                pthread_create(&tid[t], NULL, bconv_thread, &slice[t]);
            }
            for (int t = 0; t < threads; t++) {
                pthread_join(tid[t], NULL);
                if (!slice[t].ok) status = -1;
            }
        } else
#endif
            bconv_rows(&job, 0, ho, patch, acc);
        if (pool > 1)
            pool_bits(conv, 1, ho, wo, nb, pool, flips,
                      out + (size_t)i * (ho / pool) * (wo / pool) * nb);
        else
            memcpy(out + (size_t)i * ho * wo * nb, conv, (size_t)ho * wo * nb);
    }
    (void)threads;
    free(patch);
    free(acc);
    free(conv);
    free(sl.raw);
    return status;
}

/* Words per weight row of `bytes` bytes, and the rows zero-padded to that (out: rows * words). */
int bs_row_words(int bytes) { return words_for(bytes); }

void bs_pad_rows(const uint8_t *rows, int count, int bytes, void *out_words) {
    word_t *out = out_words;
    int pw = words_for(bytes);
    memset(out, 0, sizeof(word_t) * (size_t)count * pw);
    for (int c = 0; c < count; c++)
        memcpy(out + (size_t)c * pw, rows + (size_t)c * bytes, (size_t)bytes);
}

/* Binary dense layer: packed inputs (n, cin/8) -> packed bits (n, nb); weights as padded words. */
int bs_bdense(const uint8_t *in, int n, int cin, const word_t *wwords, int cout,
              const int32_t *thr, const uint8_t *flips, uint8_t *out) {
    int in_bytes = cin / 8, pw = words_for(in_bytes), nb = (cout + 7) / 8;
    word_t *x = calloc((size_t)pw * n, sizeof(word_t)); /* the inputs padded to words */
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)cout);
    simd_layer sl;
    int level = simd(), prep = simd_prep(level, wwords, cout, pw, thr, cin, &sl);
    if (!x || !acc || prep != 0) {
        free(x);
        free(acc);
        free(sl.raw);
        return -1;
    }
    for (int i = 0; i < n; i++)
        memcpy(x + (size_t)i * pw, in + (size_t)i * in_bytes, (size_t)in_bytes);
#ifdef BS_VPOPCNT
    if (level == SIMD_VPOPCNT) patches_vpop(x, n, sl.w, pw, cout, sl.pthr, flips, out);
#endif
    for (int i = 0; i < n && level != SIMD_VPOPCNT; i++) {
        patch_channels(x + (size_t)i * pw, wwords, pw, cout, cin, acc);
        threshold_pixel(acc, cout, thr, flips, out + (size_t)i * nb);
    }
    free(x);
    free(acc);
    free(sl.raw);
    return 0;
}

/* The real-valued output layer: packed inputs (n, cin bits) as +-1, int16 weights (cout, cin),
 * int32 biases -> int64 scores (n, cout). */
void bs_dense_out(const uint8_t *in, int n, int cin, const int16_t *weights, int cout,
                  const int32_t *bias, int64_t *scores) {
    int in_bytes = (cin + 7) / 8;
    for (int i = 0; i < n; i++) {
        const uint8_t *x = in + (size_t)i * in_bytes;
        for (int c = 0; c < cout; c++) {
            const int16_t *wr = weights + (size_t)c * cin;
            int64_t s = bias[c];
            for (int j = 0; j < cin; j++) s += (x[j >> 3] >> (j & 7)) & 1 ? -wr[j] : wr[j];
            scores[(size_t)i * cout + c] = s;
        }
    }
}

/* A whole model in one call (bs_layer: edge/engine/xnor_kernel.h). */
int bs_layer_size(void) { return (int)sizeof(bs_layer); }

int bs_run(const bs_layer *layers, int nlayers, const uint8_t *images, int n, int threads,
           int64_t *scores) {
    size_t biggest = 0;
    for (int l = 0; l < nlayers; l++) {
        size_t bytes = (size_t)layers[l].out_h * layers[l].out_w * ((layers[l].cout + 7) / 8);
        if (bytes > biggest) biggest = bytes;
    }
    uint8_t *a = malloc(biggest * (size_t)n + 1), *b = malloc(biggest * (size_t)n + 1);
    if (!a || !b) {
        free(a);
        free(b);
        return -1;
    }
    const uint8_t *x = images;
    int status = -2; /* no output layer */
    for (int l = 0; l < nlayers; l++) {
        const bs_layer *L = &layers[l];
        uint8_t *out = (x == a) ? b : a;
        int s = 0;
        if (L->kind == 1)
            s = bs_conv_u8(x, n, L->in_h, L->in_w, L->weights, L->cout, L->k, L->stride, L->pad,
                           L->thresholds, L->flips, L->pool, out);
        else if (L->kind == 2)
            s = bs_bconv(x, n, L->in_h, L->in_w, L->cin, L->weights, L->cout, L->k, L->stride,
                         L->pad, L->thresholds, L->flips, L->pool, threads, out);
        else if (L->kind == 3)
            s = bs_bdense(x, n, L->cin, L->weights, L->cout, L->thresholds, L->flips, out);
        else {
            bs_dense_out(x, n, L->cin, L->weights, L->cout, L->bias, scores);
            status = 0;
            break;
        }
        if (s != 0) {
            status = s;
            break;
        }
        x = out;
    }
    free(a);
    free(b);
    return status;
}

/* This CPU's XOR + popcount peak on the path in use (bs_simd): `rounds` passes over `words`
 * words that stay in L1, with four independent accumulators. Returns the popcount total so the work cannot be dropped;
 * the caller times it. One word = 8 * WORD_BYTES binary multiply-accumulates. */
uint64_t bs_popcount_peak(const word_t *a, const word_t *b, int words, int rounds) {
#ifdef BS_VPOPCNT
    if (simd() == SIMD_VPOPCNT) return peak_vpop(a, b, words, rounds);
#endif
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int r = 0; r < rounds; r++) {
        int q = 0;
        for (; q + 4 <= words; q += 4) {
            s0 += POPCOUNT(a[q] ^ b[q]);
            s1 += POPCOUNT(a[q + 1] ^ b[q + 1]);
            s2 += POPCOUNT(a[q + 2] ^ b[q + 2]);
            s3 += POPCOUNT(a[q + 3] ^ b[q + 3]);
        }
        for (; q < words; q++) s0 += POPCOUNT(a[q] ^ b[q]);
        __asm__ volatile("" ::: "memory"); /* one pass per round, not folded into one */
    }
    return s0 + s1 + s2 + s3;
}

#ifdef BINSORT_PYTHON_MODULE
#include <Python.h>
/* An importable module so pip builds and installs this file; edge/engine/native.py loads the same
 * shared object with ctypes and calls the functions above. */
static struct PyModuleDef xnor_module = {PyModuleDef_HEAD_INIT, "_xnor",
                                         "binsort's XNOR-popcount kernel (called through ctypes)",
                                         -1, NULL, NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__xnor(void) { return PyModule_Create(&xnor_module); }
#endif
