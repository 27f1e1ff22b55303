/* Causal float32 attention of a piece of queries over a key/value cache
   (entropykit.models.kernels.piece_attention).

   Per head h, query i of the piece (0 <= i < t) sees keys 0 .. n + i (n cached keys, then the
   piece's own keys up to itself):

       s_ij = q_i . k_j,   p_ij = 2^(s_ij c - max_j(s_ij) c)  with c = scale log2(e),
       out_i = (sum_j p_ij v_j) / (sum_j p_ij)

   which is softmax(q k^T scale) v with base-2 exponentials. Blocks of R queries share each load
   of the keys (transposed once per head, so that 16 keys are one vector) and of the values; the
   scores of a block stay in a buffer of R rows (two passes: scores, then exponentials and the
   weighted sum of values), so no online rescaling is needed; the scale is applied in the exponent,
   s c - max c with one rounding (a fused multiply-add where the machine has it), so a large score
   loses no precision to a rounded scaled query. Heads are split over OpenMP threads, each head
   computed whole by one thread: the result does not depend on the thread count. Written with GCC
   vector extensions (16 float lanes: one AVX-512 register, two AVX ones); 2^x is its own
   polynomial (no libm). */
#include <stdlib.h>
#include <string.h>

#define D 32        /* head size */
#define R 8         /* queries per block */
#define MAXL 16384  /* longest key range */

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int v16i __attribute__((vector_size(64)));

#if defined(__AVX512F__)
#include <immintrin.h>
#define EK_AVX512 1
#endif

static inline v16 splat(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline v16 sel(v16i m, v16 a, v16 b) { return (v16)((m & (v16i)a) | (~m & (v16i)b)); }

/* 2^x for x <= 0 on 16 lanes: x = k + f with k = round(x), |f| <= 1/2; 2^f by its degree-7 Taylor
   polynomial in f ln 2 (truncation error < 6e-9 relative), 2^k from exponent bits; x clamped at
   -126 (2^-126 stands for every smaller weight). */
static inline v16 max16(v16 a, v16 b) {
#ifdef EK_AVX512
    return (v16)_mm512_max_ps((__m512)a, (__m512)b);
#else
    return sel(a > b, a, b);
#endif
}

static inline v16 exp2_16(v16 x) {
#ifdef EK_AVX512
    const __m512 k = _mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const v16 f = x - (v16)k;
#else
    const v16 shifter = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    x = sel(x < splat(-126.0f), splat(-126.0f), x);
    v16 t = x + shifter;
    v16i k = (v16i)t - (v16i)shifter;
    v16 f = x - (t - shifter);
#endif
    v16 p = splat(1.525273380405984e-05f);   /* ln2^7 / 7! */
    p = p * f + splat(1.540353039338161e-04f); /* ln2^6 / 6! */
    p = p * f + splat(1.333355814642844e-03f); /* ln2^5 / 5! */
    p = p * f + splat(9.618129107628477e-03f); /* ln2^4 / 4! */
    p = p * f + splat(5.550410866482158e-02f); /* ln2^3 / 3! */
    p = p * f + splat(2.402265069591007e-01f); /* ln2^2 / 2! */
    p = p * f + splat(6.931471805599453e-01f); /* ln2 */
    p = p * f + splat(1.0f);
#ifdef EK_AVX512
    return (v16)_mm512_scalef_ps((__m512)p, k); /* p 2^k, 0 below the normal range */
#else
    return (v16)((v16i)p + (k << 23));
#endif
}

static inline float hmax(v16 x) {
    float m = x[0];
    for (int l = 1; l < 16; l++) m = x[l] > m ? x[l] : m;
    return m;
}

static inline float hsum(v16 x) {
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += x[l];
    return s;
}

typedef struct {
    int heads, t, n;
    const float *q;
    float *k, *v; /* written only with rotary tables: the piece's keys and values stored first */
    long q_sh, q_st, k_sh, k_st, v_sh, v_st, o_sh, o_st;
    float *out;
    float scale;
    const float *kn, *vn; /* with tables: the piece's unrotated keys and values (q's strides) */
    const float *cs, *sn; /* rotary tables (t x D), or NULL: q and k already rotated, k and v stored */
} job_t;

/* y = x cos + rotate_half(x) sin, rotate_half([a, b]) = [-b, a] (GPT-NeoX layout), two rounded
   products and one rounded sum per channel, no fused multiply-add: the same bits as
   entropykit.models.bytegpt.apply_rope. */
__attribute__((optimize("fp-contract=off"), noinline)) static void rotate(const float *x, const float *cs,
                                                                           const float *sn, float *y) {
    for (int c = 0; c < D / 2; c++) {
        y[c] = x[c] * cs[c] + (-x[c + D / 2]) * sn[c];
        y[c + D / 2] = x[c + D / 2] * cs[c + D / 2] + x[c] * sn[c + D / 2];
    }
}

/* One head: kt (D x lp, 64-byte aligned) and s (R x lp) are the caller's scratch. */
static void one_head(const job_t *jb, int h, float *kt, float *s) {
    const int t = jb->t, n = jb->n, len = n + t, lp = ((len + 15) & ~15) + 16; /* +16: rows not 4 KB apart */
    const float *q = jb->q + h * jb->q_sh;
    float *k = jb->k + h * jb->k_sh, *v = jb->v + h * jb->v_sh, *out = jb->out + h * jb->o_sh;
    if (jb->cs != NULL) /* rotate the piece's keys into the cache, copy its values */
        for (int i = 0; i < t; i++) {
            rotate(jb->kn + h * jb->q_sh + i * jb->q_st, jb->cs + i * D, jb->sn + i * D, k + (n + i) * jb->k_st);
            memcpy(v + (n + i) * jb->v_st, jb->vn + h * jb->q_sh + i * jb->q_st, D * sizeof(float));
        }
    for (int j = 0; j < len; j++)
        for (int c = 0; c < D; c++) kt[(long)c * lp + j] = k[j * jb->k_st + c];
    for (int c = 0; c < D; c++)
        for (int j = len; j < lp; j++) kt[(long)c * lp + j] = 0.0f;
    const float scale = jb->scale * 1.4426950408889634f;
    for (int i0 = 0; i0 < t; i0 += R) {
        const int rows = t - i0 < R ? t - i0 : R;
        const int top = n + i0 + rows; /* keys the block's last query sees */
        const int tp = (top + 15) & ~15;
        float qs[R][D];
        for (int r = 0; r < R; r++) {
            const float *qr = q + (i0 + r) * jb->q_st;
            float rot[D];
            if (r < rows && jb->cs != NULL) {
                rotate(qr, jb->cs + (i0 + r) * D, jb->sn + (i0 + r) * D, rot);
                qr = rot;
            }
            for (int c = 0; c < D; c++) qs[r][c] = r < rows ? qr[c] : 0.0f;
        }
        const int vis = n + i0 + 1; /* every query of the block sees keys 0 .. vis - 1 */
        v16 mrow[R];                /* row maxima over the whole tiles below vis */
        for (int r = 0; r < R; r++) mrow[r] = splat(-3.0e38f);
        int j = 0;
        for (; j + 64 <= tp; j += 64) { /* scores: 4 rows x 64 keys per step, twice */
            for (int r0 = 0; r0 < R; r0 += 4) {
                v16 acc[4][4];
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
                    for (int u = 0; u < 4; u++) acc[r][u] = splat(0.0f);
                for (int c = 0; c < D; c++) {
                    const float *kc = kt + (long)c * lp + j;
                    const v16 k0 = *(const v16 *)kc, k1 = *(const v16 *)(kc + 16), k2 = *(const v16 *)(kc + 32),
                              k3 = *(const v16 *)(kc + 48);
#pragma GCC unroll 4
                    for (int r = 0; r < 4; r++) {
                        const v16 qb = splat(qs[r0 + r][c]);
                        acc[r][0] += qb * k0;
                        acc[r][1] += qb * k1;
                        acc[r][2] += qb * k2;
                        acc[r][3] += qb * k3;
                    }
                }
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
                    for (int u = 0; u < 4; u++) *(v16 *)(s + (long)(r0 + r) * lp + j + 16 * u) = acc[r][u];
                if (j + 64 <= vis)
#pragma GCC unroll 4
                    for (int r = 0; r < 4; r++)
                        mrow[r0 + r] = max16(max16(acc[r][0], acc[r][1]),
                                             max16(max16(acc[r][2], acc[r][3]), mrow[r0 + r]));
            }
        }
        const int done = j < (vis & ~63) ? j : (vis & ~63); /* keys already in mrow */
        for (; j < tp; j += 16) { /* scores: R rows x 16 keys per step */
            v16 acc[R];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) acc[r] = splat(0.0f);
            for (int c = 0; c < D; c++) {
                const v16 kv = *(const v16 *)(kt + (long)c * lp + j);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) acc[r] += splat(qs[r][c]) * kv;
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) *(v16 *)(s + (long)r * lp + j) = acc[r];
        }
        float total[R];
        const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
        for (int r = 0; r < R; r++) { /* softmax weights of row r over its keys 0 .. n + i0 + r */
            float *sr = s + (long)r * lp;
            const int lim = r < rows ? n + i0 + r + 1 : 0;
            const int full = lim & ~15; /* keys in whole chunks every one visible */
            v16 m = mrow[r];
            int j = done;
            for (; j < full; j += 16) {
                const v16 x = *(v16 *)(sr + j);
                m = max16(x, m);
            }
            for (; j < tp; j += 16) {
                const v16 x = sel(lane + j < lim, *(v16 *)(sr + j), splat(-3.0e38f));
                m = max16(x, m);
            }
            const v16 c2 = splat(scale), mc = splat(-hmax(m) * scale); /* one rounding: s c - m c */
            v16 sum = splat(0.0f);
            for (j = 0; j < full; j += 16) {
                const v16 p = exp2_16(*(v16 *)(sr + j) * c2 + mc);
                *(v16 *)(sr + j) = p;
                sum += p;
            }
            for (; j < tp; j += 16) {
                const v16 p = sel(lane + j < lim, exp2_16(*(v16 *)(sr + j) * c2 + mc), splat(0.0f));
                *(v16 *)(sr + j) = p;
                sum += p;
            }
            total[r] = hsum(sum);
        }
        v16 a0[R], a1[R];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) a0[r] = a1[r] = splat(0.0f);
        for (int j = 0; j < top; j++) { /* weighted sum of values: R rows x 32 channels per key */
            const v16 v0 = *(const v16u *)(v + j * jb->v_st), v1 = *(const v16u *)(v + j * jb->v_st + 16);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const v16 p = splat(s[(long)r * lp + j]);
                a0[r] += p * v0;
                a1[r] += p * v1;
            }
        }
        for (int r = 0; r < rows; r++) {
            const v16 inv = splat(1.0f / total[r]);
            float *o = out + (i0 + r) * jb->o_st;
            *(v16u *)o = a0[r] * inv;
            *(v16u *)(o + 16) = a1[r] * inv;
        }
    }
}

static int run(const job_t *jb, int threads) {
    const int heads = jb->heads;
    if (heads < 1 || jb->t < 1 || jb->n < 0 || jb->n + jb->t > MAXL) return 2;
    if (threads > heads) threads = heads;
    if (threads < 1) threads = 1;
    const long lp = ((jb->n + jb->t + 15) & ~15) + 16;
    int status = 0;
#pragma omp parallel num_threads(threads) reduction(| : status)
    {
        float *kt = aligned_alloc(64, (size_t)(D + R) * lp * sizeof(float));
#pragma omp for schedule(static)
        for (int h = 0; h < heads; h++) { /* every thread meets the loop (and its barrier) */
            if (kt != NULL)
                one_head(jb, h, kt, kt + D * lp);
            else
                status = 1;
        }
        free(kt);
    }
    return status;
}

/* out[h, i, :] for h < heads, i < t (strides in floats: *_sh between heads, *_st between tokens,
   unit between channels) from rotated q and the keys and values k, v of slots 0 .. n + t - 1.
   Heads are shared out over an OpenMP team of `threads`: inside PyTorch this is PyTorch's own pool
   (its libgomp.so.1 is the one loaded), whose workers are still spinning from the previous
   operation, so no thread competes with them for a core. Returns 0, 1 when scratch memory could
   not be had, 2 when the shapes are out of range. */
int ek_piece_attention(int heads, int t, int n, const float *q, long q_sh, long q_st, float *k, long k_sh,
                       long k_st, float *v, long v_sh, long v_st, float *out, long o_sh, long o_st, float scale,
                       int threads) {
    const job_t jb = {heads, t, n, q, k, v, q_sh, q_st, k_sh, k_st, v_sh, v_st, o_sh, o_st, out, scale,
                      NULL, NULL, NULL, NULL};
    return run(&jb, threads);
}

/* The same from the piece's unrotated q, k and v (each with strides qkv_sh, qkv_st) and rotary
   tables cs, sn (t x D): k rotated into slots n .. n + t - 1 of the cache k, v copied into those of
   v, q rotated as it is read; then attention as ek_piece_attention. */
int ek_piece_attention_rope(int heads, int t, int n, const float *q, const float *kn, const float *vn,
                            long qkv_sh, long qkv_st, const float *cs, const float *sn, float *k, long k_sh,
                            long k_st, float *v, long v_sh, long v_st, float *out, long o_sh, long o_st,
                            float scale, int threads) {
    const job_t jb = {heads, t, n, q, k, v, qkv_sh, qkv_st, k_sh, k_st, v_sh, v_st, o_sh, o_st, out, scale,
                      kn, vn, cs, sn};
    return run(&jb, threads);
}
