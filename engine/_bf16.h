/* Shared by engine/_blas_shim.c and engine/_cpu_decoder.c (two libraries of their own). */
#ifndef VVREADER_BF16_H
#define VVREADER_BF16_H

/* dst = the top 16 bits of each of the n float32 values of src (their bfloat16 bits);
 * 1 when every value is a bfloat16 (all low halves zero), else 0 (dst is then incomplete
 * and unusable). Checked a chunk at a time, so that a matrix that is not bfloat16 stops
 * early. */
static inline int bf16_from_f32(long n, const unsigned int *restrict src,
                                unsigned short *restrict dst) {
    const long chunk = 1 << 16;
    for (long i0 = 0; i0 < n; i0 += chunk) {
        const long i1 = n - i0 < chunk ? n : i0 + chunk;
        unsigned int low = 0;
        for (long i = i0; i < i1; i++) {
            low |= src[i] & 0xFFFFu;
            dst[i] = (unsigned short)(src[i] >> 16);
        }
        if (low) return 0;
    }
    return 1;
}

#endif
