/* Causal float32 attention of a piece of queries over a key/value cache
   (entropykit.models.kernels.piece_attention).

   Per head h, query i of the piece (0 <= i < t) sees keys 0 .. n + i (n cached keys, then the
   piece's own keys up to itself):

       s_ij = q_i . k_j,   p_ij = 2^(s_ij c - max_j(s_ij) c)  with c = scale log2(e),
       out_i = (sum_j p_ij v_j) / (sum_j p_ij)

   which is softmax(q k^T scale) v with base-2 exponentials. Blocks of R queries share each load
   of the keys (transposed once per head, so that consecutive keys fill a vector) and of the values; the
   scores of a block stay in a buffer of R rows (two passes: scores, then exponentials and the
   weighted sum of values), so no online rescaling is needed; the scale is applied in the exponent,
   s c - max c with one rounding (a fused multiply-add where the machine has it), so a large score
   loses no precision to a rounded scaled query. Heads are split over OpenMP threads, each head
   computed whole by one thread: the result does not depend on the thread count. Written with GCC
   vector extensions, 16 float lanes and 4 x 64-key score tiles with AVX-512, 8 lanes and 4 x 16-key
   tiles otherwise (AVX2 has half the registers: the wide tiles spill there and run 5x slower than
   SDPA); 2^x is its own polynomial (no libm). */
#include <stdlib.h>
#include <string.h>

#define D 32        /* head size */
#define R 8         /* queries per block (rows of the score buffer) */
#define MAXL 16384  /* longest key range */
#define TR 4        /* score tile: queries */

/* Vector width and tile shapes by instruction set, so that a tile's accumulators, its loads and a
   broadcast fit the register file: 32 AVX-512 registers of 16 floats, else 16 registers of 8
   (AVX2; other targets split the vectors as their compiler can). */
#if defined(__AVX512F__)
#include <immintrin.h>
#define EK_AVX512 1
#define VW 16 /* float lanes per vector */
#define TV 4  /* score tile: key vectors per query (4 x 4 accumulators) */
#define PR 8  /* value pass: queries per step (8 x 2 accumulators) */
#else
#define VW 8
#define TV 2 /* 4 x 2 accumulators */
#define PR 2 /* 2 x 4 accumulators */
#endif
#define TK (TV * VW) /* keys per score tile */
#define DV (D / VW)  /* vectors per key, value or output row */

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));
typedef int vi __attribute__((vector_size(VW * 4)));

static inline vf splat(float x) {
#if VW == 16
    return (vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
#else
    return (vf){x, x, x, x, x, x, x, x};
#endif
}

static inline vi lanes(void) {
    vi r;
    for (int l = 0; l < VW; l++) r[l] = l;
    return r;
}

static inline vf sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }

static inline vf maxv(vf a, vf b) {
#ifdef EK_AVX512
    return (vf)_mm512_max_ps((__m512)a, (__m512)b);
#else
    return sel(a > b, a, b);
#endif
}

/* 2^x for x <= 0 on the lanes of a vector: x = k + f with k = round(x), |f| <= 1/2; 2^f by its
   degree-7 Taylor polynomial in f ln 2 (truncation error < 6e-9 relative), 2^k by AVX-512's scalef
   (0 below the normal range) or from exponent bits with x clamped at -126 (2^-126 then stands for
   every smaller weight). */
static inline vf exp2v(vf x) {
#ifdef EK_AVX512
    const __m512 k = _mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vf f = x - (vf)k;
#else
    const vf shifter = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    x = sel(x < splat(-126.0f), splat(-126.0f), x);
    vf t = x + shifter;
    vi k = (vi)t - (vi)shifter;
    vf f = x - (t - shifter);
#endif
    vf p = splat(1.525273380405984e-05f);      /* ln2^7 / 7! */
    p = p * f + splat(1.540353039338161e-04f); /* ln2^6 / 6! */
    p = p * f + splat(1.333355814642844e-03f); /* ln2^5 / 5! */
    p = p * f + splat(9.618129107628477e-03f); /* ln2^4 / 4! */
    p = p * f + splat(5.550410866482158e-02f); /* ln2^3 / 3! */
    p = p * f + splat(2.402265069591007e-01f); /* ln2^2 / 2! */
    p = p * f + splat(6.931471805599453e-01f); /* ln2 */
    p = p * f + splat(1.0f);
#ifdef EK_AVX512
    return (vf)_mm512_scalef_ps((__m512)p, k);
#else
    return (vf)((vi)p + (k << 23));
#endif
}

static inline float hmax(vf x) {
    float m = x[0];
    for (int l = 1; l < VW; l++) m = x[l] > m ? x[l] : m;
    return m;
}

static inline float hsum(vf x) {
    float s = 0.0f;
    for (int l = 0; l < VW; l++) s += x[l];
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
        const int tp = (top + VW - 1) & ~(VW - 1);
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
        vf mrow[R];                 /* row maxima over the whole tiles below vis */
        for (int r = 0; r < R; r++) mrow[r] = splat(-3.0e38f);
        int j = 0;
        for (; j + TK <= tp; j += TK) { /* scores: TR queries x TK keys per tile */
            for (int r0 = 0; r0 < R; r0 += TR) {
                vf acc[TR][TV];
#pragma GCC unroll 4
                for (int r = 0; r < TR; r++)
#pragma GCC unroll 4
                    for (int u = 0; u < TV; u++) acc[r][u] = splat(0.0f);
                for (int c = 0; c < D; c++) {
                    const float *kc = kt + (long)c * lp + j;
                    vf kv[TV];
#pragma GCC unroll 4
                    for (int u = 0; u < TV; u++) kv[u] = *(const vf *)(kc + VW * u);
#pragma GCC unroll 4
                    for (int r = 0; r < TR; r++) {
                        const vf qb = splat(qs[r0 + r][c]);
#pragma GCC unroll 4
                        for (int u = 0; u < TV; u++) acc[r][u] += qb * kv[u];
                    }
                }
#pragma GCC unroll 4
                for (int r = 0; r < TR; r++)
#pragma GCC unroll 4
                    for (int u = 0; u < TV; u++) *(vf *)(s + (long)(r0 + r) * lp + j + VW * u) = acc[r][u];
                if (j + TK <= vis)
#pragma GCC unroll 4
                    for (int r = 0; r < TR; r++) { /* a tree, not a chain of dependent maxima */
#if TV == 4
                        mrow[r0 + r] =
                            maxv(maxv(acc[r][0], acc[r][1]), maxv(maxv(acc[r][2], acc[r][3]), mrow[r0 + r]));
#else
                        mrow[r0 + r] = maxv(maxv(acc[r][0], acc[r][1]), mrow[r0 + r]);
#endif
                    }
            }
        }
        const int done = j < vis / TK * TK ? j : vis / TK * TK; /* keys already in mrow */
        for (; j < tp; j += VW) { /* scores: R queries x VW keys per step */
            vf acc[R];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) acc[r] = splat(0.0f);
            for (int c = 0; c < D; c++) {
                const vf kv = *(const vf *)(kt + (long)c * lp + j);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) acc[r] += splat(qs[r][c]) * kv;
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) *(vf *)(s + (long)r * lp + j) = acc[r];
        }
        float total[R];
        const vi lane = lanes();
        for (int r = 0; r < R; r++) { /* softmax weights of row r over its keys 0 .. n + i0 + r */
            float *sr = s + (long)r * lp;
            const int lim = r < rows ? n + i0 + r + 1 : 0;
            const int full = lim & ~(VW - 1); /* keys in whole vectors every one visible */
            vf m = mrow[r];
            int j = done;
            for (; j < full; j += VW) m = maxv(*(vf *)(sr + j), m);
            for (; j < tp; j += VW) m = maxv(sel(lane + j < lim, *(vf *)(sr + j), splat(-3.0e38f)), m);
            const vf c2 = splat(scale), mc = splat(-hmax(m) * scale); /* one rounding: s c - m c */
            vf sum = splat(0.0f);
            for (j = 0; j < full; j += VW) {
                const vf p = exp2v(*(vf *)(sr + j) * c2 + mc);
                *(vf *)(sr + j) = p;
                sum += p;
            }
            for (; j < tp; j += VW) {
                const vf p = sel(lane + j < lim, exp2v(*(vf *)(sr + j) * c2 + mc), splat(0.0f));
                *(vf *)(sr + j) = p;
                sum += p;
            }
            total[r] = hsum(sum);
        }
        for (int r0 = 0; r0 < rows; r0 += PR) { /* weighted sum of values: PR queries x D channels per key */
            const int last = r0 + PR < rows ? r0 + PR : rows;
            vf acc[PR][DV];
#pragma GCC unroll 8
            for (int r = 0; r < PR; r++)
#pragma GCC unroll 4
                for (int u = 0; u < DV; u++) acc[r][u] = splat(0.0f);
            for (int j = 0; j < n + i0 + last; j++) {
                const float *vj = v + j * jb->v_st;
                vf vv[DV];
#pragma GCC unroll 4
                for (int u = 0; u < DV; u++) vv[u] = *(const vfu *)(vj + VW * u);
#pragma GCC unroll 8
                for (int r = 0; r < PR; r++) {
                    const vf p = splat(s[(long)(r0 + r) * lp + j]);
#pragma GCC unroll 4
                    for (int u = 0; u < DV; u++) acc[r][u] += p * vv[u];
                }
            }
            for (int r = r0; r < last; r++) {
                const vf inv = splat(1.0f / total[r]);
                float *o = out + (i0 + r) * jb->o_st;
#pragma GCC unroll 4
                for (int u = 0; u < DV; u++) *(vfu *)(o + VW * u) = acc[r - r0][u] * inv;
            }
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
