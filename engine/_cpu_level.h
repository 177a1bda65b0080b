/* Shared by engine/_blas_shim.c and engine/_cpu_decoder.c (two libraries of their own):
 * which x86-64 level their kernels run at (engine/switches.py: VVREADER_CPU_LEVEL). */
#ifndef VVREADER_CPU_LEVEL_H
#define VVREADER_CPU_LEVEL_H

/* The highest x86-64 level (4: AVX-512, 3: AVX2 and FMA, 1: baseline) this CPU has, at
 * most `most`; 1 on other architectures. */
static inline int cpu_level_at_most(int most) {
    int level = 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (most >= 4 && __builtin_cpu_supports("x86-64-v4"))
        level = 4;
    else if (most >= 3 && __builtin_cpu_supports("x86-64-v3"))
        level = 3;
#endif
    return level;
}

#endif
