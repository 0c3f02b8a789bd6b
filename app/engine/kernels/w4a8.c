// 4-bit weights times integer activations on AVX-512 VNNI, for the decode step of a GGUF Q4_0/Q4_1 model
// (cpu_w4a8.py builds and loads this file; see there for why and what it changes).
//
// y[m][n] = sum over groups g of 32 inputs:  d[n][g] * sx[m][g] / 256 * isum(m, n, g)  +  mn[n][g] * xs[m][g]
//   d, mn: the weights' fp16 scale and minimum per group (what a GGUF Q4_0/Q4_1 block stores)
//   isum = sum_k q[n][k] * (256 * xq[m][k] + xl[m][k]) over the group, exact in int32 (q in 0..15)
//   each group of a row's inputs as int8 steps of sx (xq, as llama.cpp rounds them) plus the remainder in 256ths of
//   a step (xl, also int8): about 15 bits where llama.cpp keeps 8; xs: the group's exact fp32 sum.
// Two vpdpbusd per 4 inputs instead of llama.cpp's one: 8 bits lost on the embedded model's fragile first tokens
// ("The capital..." and "L'..." are 0.08 apart in its fp32 logits) changed its answers.
//
// Every row is computed by the same instructions in the same order whatever the number of rows, the thread count
// or the row's place in its block: batched results equal alone, bit for bit. All float arithmetic is explicit
// intrinsics (and the file is built with -ffp-contract=off) so the compiler cannot fuse it differently anywhere.

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

// Each calling thread's activation scratch, grown as needed and kept: a malloc and free per product cost more
// than a one-row product of a small layer.
static __thread int8_t *scratch;
static __thread size_t scratch_size;

static int8_t *scratch_for(size_t bytes) {
    if (bytes > scratch_size) {
        free(scratch);
        scratch = (int8_t *)aligned_alloc(64, (bytes + 63) / 64 * 64);
        scratch_size = scratch ? bytes : 0;
    }
    return scratch;
}

// Calls CALL(R) with R the constant rows (1..ROWS): one copy of a block function per row count, its row loop
// unrolled and its accumulators in registers.
#define FOR_ROWS(rows, CALL)     \
    switch (rows) {              \
        case 8: CALL(8); break;  \
        case 7: CALL(7); break;  \
        case 6: CALL(6); break;  \
        case 5: CALL(5); break;  \
        case 4: CALL(4); break;  \
        case 3: CALL(3); break;  \
        case 2: CALL(2); break;  \
        default: CALL(1); break; \
    }

#define GROUP 32
#define LANES 16
#define ROWS 8

// Rows of x (M x K fp32) to int8 groups: xq (M x K), sx and xs (M x K/32); with xl, also each value's remainder
// after xq, in 256ths of the group's step (M x K): xq + xl / 256 carries about 15 bits instead of 8. `flip` stores
// xq + 128 as unsigned bytes instead (the 8-bit product's operand).
static void quantize(const float *x, int64_t M, int64_t K, int8_t *xq, int8_t *xl, float *sx, float *xs, int flip) {
    const __m128i top = _mm_set1_epi8(flip ? (char)0x80 : 0);
    const int64_t G = K / GROUP;
    for (int64_t m = 0; m < M; m++) {
        for (int64_t g = 0; g < G; g++) {
            const float *p = x + m * K + g * GROUP;
            __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + LANES);
            __m512 amax = _mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b));
            float hi = _mm512_reduce_max_ps(amax);
            float inv = hi > 0.0f ? 127.0f / hi : 0.0f;
            __m512 vinv = _mm512_set1_ps(inv);
            __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, vinv));  // round to nearest even
            __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, vinv));
            _mm_storeu_si128((__m128i *)(xq + m * K + g * GROUP), _mm_xor_si128(_mm512_cvtepi32_epi8(qa), top));
            _mm_storeu_si128((__m128i *)(xq + m * K + g * GROUP + LANES), _mm_xor_si128(_mm512_cvtepi32_epi8(qb), top));
            if (xl) {
                const __m512 k256 = _mm512_set1_ps(256.0f);
                const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
                __m512 ra = _mm512_sub_ps(_mm512_mul_ps(a, vinv), _mm512_cvtepi32_ps(qa));  // exact, in [-0.5, 0.5]
                __m512 rb = _mm512_sub_ps(_mm512_mul_ps(b, vinv), _mm512_cvtepi32_ps(qb));
                __m512i la = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(ra, k256)), nlim), lim);
                __m512i lb = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(rb, k256)), nlim), lim);
                _mm_storeu_si128((__m128i *)(xl + m * K + g * GROUP), _mm512_cvtepi32_epi8(la));
                _mm_storeu_si128((__m128i *)(xl + m * K + g * GROUP + LANES), _mm512_cvtepi32_epi8(lb));
            }
            sx[m * G + g] = hi / 127.0f;
            xs[m * G + g] = _mm512_reduce_add_ps(_mm512_add_ps(a, b));
        }
    }
}

// One block of 16 outputs for `rows` (1..ROWS, a constant where it is inlined) rows. wp: the block's packed
// weights, G groups x 4 vectors of 64 bytes (lane i, byte j of vector t: low nibble q[i][32g + 4t + j], high nibble
// q[i][32g + 16 + 4t + j]). Integer sums are exact in any order, so two chains per row hide vpdpbusd's latency.
static inline __attribute__((always_inline)) void block(const uint8_t *wp, const uint16_t *d, const uint16_t *mn,
                                                        const int8_t *xq, const int8_t *xl, const float *sx,
                                                        const float *xs, const int rows, int64_t K, float *y,
                                                        int64_t N) {
    const int64_t G = K / GROUP;
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512 acc[ROWS];
    for (int r = 0; r < rows; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        __m512i lo[4], hi[4];
        for (int t = 0; t < 4; t++) {
            __m512i w = _mm512_loadu_si512((const void *)(wp + (g * 4 + t) * 64));
            lo[t] = _mm512_and_si512(w, low);
            hi[t] = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);
        }
        const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(d + g * LANES)));
        const __m512 mv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mn + g * LANES)));
        for (int r = 0; r < rows; r++) {
            const int8_t *xg = xq + r * K + g * GROUP;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int t = 0; t < 4; t++) {
                s0 = _mm512_dpbusd_epi32(s0, lo[t], _mm512_set1_epi32(*(const int32_t *)(xg + 4 * t)));
                s1 = _mm512_dpbusd_epi32(s1, hi[t], _mm512_set1_epi32(*(const int32_t *)(xg + 16 + 4 * t)));
            }
            // 256 * (q . xq) + q . xl: below 2^24, so exact in int32 and in its conversion to fp32.
            const int8_t *lg = xl + r * K + g * GROUP;
            __m512i l0 = _mm512_setzero_si512(), l1 = _mm512_setzero_si512();
            for (int t = 0; t < 4; t++) {
                l0 = _mm512_dpbusd_epi32(l0, lo[t], _mm512_set1_epi32(*(const int32_t *)(lg + 4 * t)));
                l1 = _mm512_dpbusd_epi32(l1, hi[t], _mm512_set1_epi32(*(const int32_t *)(lg + 16 + 4 * t)));
            }
            const __m512i high = _mm512_slli_epi32(_mm512_add_epi32(s0, s1), 8);
            const __m512i isum = _mm512_add_epi32(high, _mm512_add_epi32(l0, l1));
            const __m512 scale = _mm512_mul_ps(dv, _mm512_set1_ps(sx[r * G + g] * (1.0f / 256.0f)));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[r]);
            acc[r] = _mm512_fmadd_ps(mv, _mm512_set1_ps(xs[r * G + g]), acc[r]);
        }
    }
    for (int r = 0; r < rows; r++) _mm512_storeu_ps(y + r * N, acc[r]);
}

// y (M x N fp32) = x (M x K fp32) times the packed weights (d and mn fp16); N a multiple of 16, K of 32.
// Returns 0, or -1 when out of memory.
int w4a8_linear(const float *x, int64_t M, int64_t K, const uint8_t *wp, const uint16_t *d, const uint16_t *mn,
                int64_t N, float *y, int threads) {
    const int64_t G = K / GROUP, NB = N / LANES;
    const size_t qbytes = (size_t)(M * K + 63) / 64 * 64;
    int8_t *xq = scratch_for(2 * qbytes + (size_t)(M * G) * sizeof(float) * 2);
    if (!xq) return -1;
    int8_t *xl = xq + qbytes;
    float *sx = (float *)(xq + 2 * qbytes);
    float *xs = sx + M * G;
    quantize(x, M, K, xq, xl, sx, xs, 0);
    const int64_t MB = (M + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2) if (threads > 1)
    for (int64_t nb = 0; nb < NB; nb++) {
        for (int64_t mb = 0; mb < MB; mb++) {
            const int64_t m0 = mb * ROWS;
            const int rows = (int)(M - m0 < ROWS ? M - m0 : ROWS);
            const uint8_t *w = wp + nb * G * 256;
            const uint16_t *db = d + nb * G * LANES, *mb_ = mn + nb * G * LANES;
            float *yb = y + m0 * N + nb * LANES;
#define BLOCK(R) block(w, db, mb_, xq + m0 * K, xl + m0 * K, sx + m0 * G, xs + m0 * G, R, K, yb, N)
            FOR_ROWS(rows, BLOCK)
#undef BLOCK
        }
    }
    return 0;
}

// 8-bit weights (a GGUF Q8_0 block: w = d * q, q in -127..127 per group of 32) times 8-bit activations, for the
// output projection. vpdpbusd multiplies unsigned by signed bytes, so the activations go in shifted by 128 and
// each group's sum takes back 128 * (the weights' own sum, `ws`): still exact integers.
// wp: per block of 16 outputs and group, 8 vectors of 64 bytes (lane i, byte j of vector t: q[i][32g + 4t + j]).
static inline __attribute__((always_inline)) void block8(const int8_t *wp, const uint16_t *d, const int16_t *ws,
                                                         const uint8_t *xu, const float *sx, const int rows,
                                                         int64_t K, float *y, int64_t N) {
    const int64_t G = K / GROUP;
    __m512 acc[ROWS];
    for (int r = 0; r < rows; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        __m512i w[8];
        for (int t = 0; t < 8; t++) w[t] = _mm512_loadu_si512((const void *)(wp + (g * 8 + t) * 64));
        const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(d + g * LANES)));
        const __m512i wsum = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(ws + g * LANES)));
        const __m512i shift = _mm512_slli_epi32(wsum, 7);
        for (int r = 0; r < rows; r++) {
            const uint8_t *xg = xu + r * K + g * GROUP;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int t = 0; t < 8; t += 2) {
                s0 = _mm512_dpbusd_epi32(s0, _mm512_set1_epi32(*(const int32_t *)(xg + 4 * t)), w[t]);
                s1 = _mm512_dpbusd_epi32(s1, _mm512_set1_epi32(*(const int32_t *)(xg + 4 * t + 4)), w[t + 1]);
            }
            const __m512i isum = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), shift);
            const __m512 scale = _mm512_mul_ps(dv, _mm512_set1_ps(sx[r * G + g]));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[r]);
        }
    }
    for (int r = 0; r < rows; r++) _mm512_storeu_ps(y + r * N, acc[r]);
}

int w8a8_linear(const float *x, int64_t M, int64_t K, const int8_t *wp, const uint16_t *d, const int16_t *ws,
                int64_t N, float *y, int threads) {
    const int64_t G = K / GROUP, NB = N / LANES;
    const size_t qbytes = (size_t)(M * K + 63) / 64 * 64;
    int8_t *xq = scratch_for(qbytes + (size_t)(M * G) * sizeof(float) * 2);
    if (!xq) return -1;
    float *sx = (float *)(xq + qbytes);
    quantize(x, M, K, xq, NULL, sx, sx + M * G, 1);
    const uint8_t *xu = (const uint8_t *)xq;
    const int64_t MB = (M + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2) if (threads > 1)
    for (int64_t nb = 0; nb < NB; nb++) {
        for (int64_t mb = 0; mb < MB; mb++) {
            const int64_t m0 = mb * ROWS;
            const int rows = (int)(M - m0 < ROWS ? M - m0 : ROWS);
            const int8_t *w = wp + nb * G * 512;
            const uint16_t *db = d + nb * G * LANES;
            const int16_t *wsb = ws + nb * G * LANES;
            float *yb = y + m0 * N + nb * LANES;
#define BLOCK8(R) block8(w, db, wsb, xu + m0 * K, sx + m0 * G, R, K, yb, N)
            FOR_ROWS(rows, BLOCK8)
#undef BLOCK8
        }
    }
    return 0;
}
