/* Shared by engine/_blas_shim.c, engine/_cpu_decoder.c and the C frames (engine/_cpu_lm.c,
 * engine/_cpu_head.c), libraries of their own: which x86-64 level their kernels run at
 * (engine/switches.py: VVREADER_CPU_LEVEL), and how a function is compiled for one. */
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

#if defined(__x86_64__)
/* A function compiled for one x86-64 level (v4: AVX-512; v3: AVX2 and FMA), for code built
 * once per level that picks one at run time (the best the CPU has, unless a lower one is
 * asked for: engine/switches.py, measuring and testing the AVX2 path on an AVX-512
 * machine). A target string with a comma ("avx2,fma") would be two levels, one without
 * FMA and one without AVX2, hence the level names. */
#define V4 __attribute__((target("arch=x86-64-v4")))
#define V3 __attribute__((target("arch=x86-64-v3")))
#endif
/* Helpers inlined into each level's function, so that they are compiled for its
 * instruction set. */
#define INLINE static inline __attribute__((always_inline))

#endif
