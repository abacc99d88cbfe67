/* The native kernel's interface (edge/engine/xnor_kernel.c), shared with its test driver
 * (tools/kernel-check.c). edge/engine/native.py mirrors bs_layer as a ctypes Structure and checks
 * its size against bs_layer_size() before using the library. */
#ifndef BINSORT_XNOR_KERNEL_H
#define BINSORT_XNOR_KERNEL_H
#include <stdint.h>

/* One layer. kind: 1 conv_u8, 2 bconv, 3 bdense, 4 dense_out (docs/format.md); `weights`
 * points to int8 (conv_u8), rows padded to words (bconv, bdense; bs_pad_rows) or int16
 * (dense_out). */
typedef struct {
    int32_t kind, k, stride, pad, cin, cout, in_h, in_w, pool, out_h, out_w, reserved;
    const void *weights;
    const int32_t *thresholds;
    const uint8_t *flips;
    const int32_t *bias;
} bs_layer;

int bs_run(const bs_layer *layers, int nlayers, const uint8_t *images, int n, int threads,
           int64_t *scores);
int bs_layer_size(void);
int bs_simd(int want);
int bs_word_bits(void);
int bs_row_words(int bytes);
void bs_pad_rows(const uint8_t *rows, int count, int bytes, void *out);

#endif
