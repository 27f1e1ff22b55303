/* One-token attention over an 8-bit KV cache (entropykit.models.kernels.decode_attention).

   Both dot products are exact integer arithmetic: q . k in int32 from int8 q and k, and p . v in
   int32 from int16 weights and int8 v. The float parts (scales, softmax, exp) are written with GCC
   vector extensions and compiled with -ffp-contract=off and no fast-math, so each lane does the
   same IEEE single-precision operations in the same order whatever the vector width. The AVX-512
   VNNI paths and the portable C paths therefore give identical bits. */
#include <stdint.h>
#include <string.h>

#define HD 32          /* head dimension */
#define BLK 64         /* cache slots per score block */
#define MAXL 8192      /* longest cache */

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define EK_VNNI 1
#endif

static inline v16f splat(float x) { return (v16f){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline v16f sel(v16i m, v16f a, v16f b) { return (v16f)((m & (v16i)a) | (~m & (v16i)b)); }
static inline v16f round_even_v(v16f x) { return (x + splat(12582912.0f)) - splat(12582912.0f); }

/* exp(x) for x <= 0 on 16 lanes: x = n ln2 + r (Cody-Waite), degree-6 Taylor polynomial in r,
   2^n from exponent bits; clamped at -87. Relative error < 2e-7. */
static inline v16f exp16(v16f x) {
    const v16f shifter = splat(12582912.0f);
    x = sel(x < splat(-87.0f), splat(-87.0f), x);
    v16f n = (x * splat(1.44269504088896341f) + shifter) - shifter;
    v16f r = x - n * splat(0.693145751953125f);
    r = r - n * splat(1.428606765330187045e-06f);
    v16f p = splat(1.0f / 720.0f);
    p = p * r + splat(1.0f / 120.0f);
    p = p * r + splat(1.0f / 24.0f);
    p = p * r + splat(1.0f / 6.0f);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;
    return p * (v16f)e;
}

static inline v16f load_bf16(const uint16_t *x) {  /* 16 bf16 -> float, exact */
#ifdef EK_VNNI
    return (v16f)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)x)), 16);
#else
    v16i u;
    for (int l = 0; l < 16; l++) u[l] = (int32_t)((uint32_t)x[l] << 16);
    return (v16f)u;
#endif
}

static inline v16f vabs(v16f x) { return (v16f)((v16i)x & 0x7fffffff); }

/* absmax int8 quantisation of one bf16 vector: q[c * stride] = round(x_c * 127 / max|x|); returns
   the scale max|x| / 127 */
static inline float quantize(const uint16_t *x, int8_t *q, long stride) {
    const v16f lo = load_bf16(x), hi = load_bf16(x + 16);
    v16f a = vabs(lo), b = vabs(hi);
    a = sel(b > a, b, a);
    float amax = a[0];
    for (int l = 1; l < 16; l++) amax = a[l] > amax ? a[l] : amax;
    const v16f inv = splat(amax > 0.0f ? 127.0f / amax : 0.0f);
    const v16i ql = __builtin_convertvector(round_even_v(lo * inv), v16i);
    const v16i qh = __builtin_convertvector(round_even_v(hi * inv), v16i);
    for (int l = 0; l < 16; l++) { q[l * stride] = (int8_t)ql[l]; q[(16 + l) * stride] = (int8_t)qh[l]; }
    return amax / 127.0f;
}

/* 16 floats -> bf16, round to nearest even (NaN stays NaN); unsigned, so nothing overflows */
static inline void store_bf16(uint16_t *dst, v16f x) {
    const v16u u = (v16u)x, nan = (v16u)((u & 0x7fffffffu) > 0x7f800000u);
    const v16u r = (u + (0x7fffu + ((u >> 16) & 1u))) >> 16;
    const v16u h = (nan & ((u >> 16) | 0x40u)) | (~nan & r);
    for (int l = 0; l < 16; l++) dst[l] = (uint16_t)h[l];
}

/* Cache layouts per (row, head), L slots:
     keys:   (L/BLK, HD/4, BLK, 4) uint8 = int8 key + 128 (4 channels of one key are adjacent,
             16 keys of a channel quad form one 64-byte line: a VNNI dot product);
     values: (L/2, HD, 2) int8 (2 slots of one channel are adjacent: an int16 pair dot product);
     scales: (L,) float per cached vector, for keys and values.
   store_one quantises the key and value of row-and-head bh into slot t. */
static void store_one(int L, long bh, long t, const uint16_t *kx, const uint16_t *vx, uint8_t *kc, float *ks,
                      int8_t *vc, float *vs) {
    int8_t tmp[HD];
    ks[bh * L + t] = quantize(kx, tmp, 1);
    uint8_t *kb = kc + bh * L * HD + (t / BLK) * BLK * HD + (t % BLK) * 4;
    for (int c = 0; c < HD; c++) kb[(c / 4) * BLK * 4 + c % 4] = (uint8_t)(tmp[c] + 128);
    vs[bh * L + t] = quantize(vx, vc + bh * L * HD + (t / 2) * HD * 2 + t % 2, 2);
}

/* Quantise tokens [t0, t0+n) of B rows into the cache; k, v: bf16, element (b, h, i, c) at
   b*bstride + h*hstride + i*istride + c. */
void ek_store_kv(int B, int H, int L, int t0, int n, const uint16_t *k, const uint16_t *v,
                 long bstride, long hstride, long istride, uint8_t *kc, float *ks, int8_t *vc, float *vs) {
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < n; i++) {
                const long off = b * bstride + h * hstride + i * istride;
                store_one(L, (long)b * H + h, t0 + i, k + off, v + off, kc, ks, vc, vs);
            }
}

/* acc[l] = sum_c kb(l, c) q[c] for the BLK slots of one key block (kb = key + 128) */
static inline void block_scores(const uint8_t *kb, const int8_t *q, int32_t *acc) {
#ifdef EK_VNNI
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (int g = 0; g < HD / 4; g++) {
        int32_t quad; memcpy(&quad, q + 4 * g, 4);
        const __m512i qg = _mm512_set1_epi32(quad);
        const uint8_t *row = kb + g * BLK * 4;
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(row), qg);
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(row + 64), qg);
        a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512(row + 128), qg);
        a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512(row + 192), qg);
    }
    _mm512_storeu_si512(acc, a0); _mm512_storeu_si512(acc + 16, a1);
    _mm512_storeu_si512(acc + 32, a2); _mm512_storeu_si512(acc + 48, a3);
#else
    for (int l = 0; l < BLK; l++) acc[l] = 0;
    for (int g = 0; g < HD / 4; g++)
        for (int l = 0; l < BLK; l++)
            for (int e = 0; e < 4; e++) acc[l] += (int32_t)kb[(g * BLK + l) * 4 + e] * q[4 * g + e];
#endif
}

/* out[c] = sum_j w[j] v(j, c) over slot pairs [0, pairs) */
static inline void weighted_values(const int8_t *vb, const int16_t *w, int pairs, int32_t *out) {
#ifdef EK_VNNI
    __m512i o0 = _mm512_setzero_si512(), o1 = o0, o2 = o0, o3 = o0;
    int p = 0;
    for (; p + 2 <= pairs; p += 2) {  /* two accumulators per half: independent chains */
        int32_t w0, w1; memcpy(&w0, w + 2 * p, 4); memcpy(&w1, w + 2 * p + 2, 4);
        const __m512i b0 = _mm512_set1_epi32(w0), b1 = _mm512_set1_epi32(w1);
        const int8_t *r0 = vb + (long)p * HD * 2, *r1 = r0 + HD * 2;
        o0 = _mm512_dpwssd_epi32(o0, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)r0)), b0);
        o1 = _mm512_dpwssd_epi32(o1, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(r0 + 32))), b0);
        o2 = _mm512_dpwssd_epi32(o2, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)r1)), b1);
        o3 = _mm512_dpwssd_epi32(o3, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(r1 + 32))), b1);
    }
    for (; p < pairs; p++) {
        int32_t w0; memcpy(&w0, w + 2 * p, 4);
        const __m512i b0 = _mm512_set1_epi32(w0);
        const int8_t *r0 = vb + (long)p * HD * 2;
        o0 = _mm512_dpwssd_epi32(o0, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)r0)), b0);
        o1 = _mm512_dpwssd_epi32(o1, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(r0 + 32))), b0);
    }
    _mm512_storeu_si512(out, _mm512_add_epi32(o0, o2));
    _mm512_storeu_si512(out + 16, _mm512_add_epi32(o1, o3));
#else
    for (int c = 0; c < HD; c++) out[c] = 0;
    for (int p = 0; p < pairs; p++)
        for (int c = 0; c < HD; c++)
            out[c] += (int32_t)w[2 * p] * vb[(p * HD + c) * 2] + (int32_t)w[2 * p + 1] * vb[(p * HD + c) * 2 + 1];
#endif
}

/* softmax(q k / sqrt(HD)) v over cache slots [0, T] of row-and-head bh; q: HD bf16, dst: HD bf16.
   Scores run over whole blocks of BLK slots; slots past T are masked to weight 0. */
static void attend_one(int L, int T, long bh, const uint16_t *qx, const uint8_t *kc, const float *ks,
                       const int8_t *vc, const float *vs, uint16_t *dst) {
    float s[MAXL] __attribute__((aligned(64)));
    int16_t w[MAXL] __attribute__((aligned(64)));
    int32_t acc[BLK] __attribute__((aligned(64)));
    /* scores run over whole blocks (nb); softmax and weights over whole vectors (n16) only */
    const int n = T + 1, nb = (n + BLK - 1) / BLK * BLK, n16 = (n + 15) / 16 * 16, pairs = (n + 1) / 2;
    /* integer weights: sum_j w_j |v_jc| <= 127 * n * wmax stays below 2^31 */
    const float wmax = (float)(n <= 516 ? 32767 : 16909320 / n);
    const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const uint8_t *K = kc + bh * L * HD;
    const int8_t *V = vc + bh * L * HD;
    const float *kscale = ks + bh * L, *vscale = vs + bh * L;
    int8_t qi[HD];
    const float qscale = quantize(qx, qi, 1);
    int32_t qsum = 0;
    for (int c = 0; c < HD; c++) qsum += qi[c];
    const v16i offset = (v16i){0} + 128 * qsum;  /* keys are stored + 128 */
    const v16f factor = splat(qscale * 0.17677669529663687f);  /* qscale / sqrt(32) */
    v16f mx = splat(-__builtin_inff());
    for (int j0 = 0; j0 < nb; j0 += BLK) {
        block_scores(K + (long)j0 * HD, qi, acc);
        for (int u = 0; u < BLK / 16; u++) {
            const int j = j0 + 16 * u;
            v16i a; memcpy(&a, acc + 16 * u, 64);
            v16f ksc; memcpy(&ksc, kscale + j, 64);
            v16f x = (__builtin_convertvector(a - offset, v16f) * ksc) * factor;
            x = sel((lane + j) < n, x, splat(-__builtin_inff()));
            memcpy(s + j, &x, 64);
            mx = sel(x > mx, x, mx);
        }
    }
    float m = mx[0];
    for (int l = 1; l < 16; l++) m = mx[l] > m ? mx[l] : m;
    v16f sum = splat(0.0f), top = splat(0.0f);
    for (int j = 0; j < n16; j += 16) {  /* p_j, then the value weights p_j * sv_j */
        v16f x; memcpy(&x, s + j, 64);
        v16f p = sel((lane + j) < n, exp16(x - splat(m)), splat(0.0f));
        sum = sum + p;
        v16f vsc; memcpy(&vsc, vscale + j, 64);
        p = p * vsc;
        top = sel(p > top, p, top);
        memcpy(s + j, &p, 64);
    }
    for (int l = 8; l > 0; l /= 2)
        for (int e = 0; e < l; e++) { sum[e] = sum[e] + sum[e + l]; top[e] = top[e] > top[e + l] ? top[e] : top[e + l]; }
    const float to_int = top[0] > 0.0f ? wmax / top[0] : 0.0f;
    for (int j = 0; j < n16; j += 16) {  /* w up to n16 >= 2 * pairs: slot n of an odd n gets 0 */
        v16f x; memcpy(&x, s + j, 64);
        v16i r = __builtin_convertvector(round_even_v(x * splat(to_int)), v16i);
        for (int l = 0; l < 16; l++) w[j + l] = (int16_t)r[l];
    }
    v16i o[2];
    weighted_values(V, w, pairs, (int32_t *)o);
    const v16f back = splat(top[0] > 0.0f ? (top[0] / wmax) / sum[0] : 0.0f);
    store_bf16(dst, __builtin_convertvector(o[0], v16f) * back);
    store_bf16(dst + 16, __builtin_convertvector(o[1], v16f) * back);
}

/* Attention of one query per row b and head h over cache slots [0, T]. q: bf16 (b, h*HD + c) at
   b*qstride + h*HD + c; out: (B, H*HD) bf16. L must be a multiple of BLK, at most MAXL. */
void ek_attend(int B, int H, int L, int T, const uint16_t *q, long qstride, const uint8_t *kc,
               const float *ks, const int8_t *vc, const float *vs, uint16_t *out) {
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            attend_one(L, T, (long)b * H + h, q + b * qstride + h * HD, kc, ks, vc, vs, out + ((long)b * H + h) * HD);
}

/* One decoding step: store the new token's key and value in slot T, then attend over [0, T], per
   row and head in one pass (the slot just written is still in cache when it is read). qkv: bf16
   rows of q | k | v (3*H*HD each) with row stride qstride. */
void ek_step(int B, int H, int L, int T, const uint16_t *qkv, long qstride, uint8_t *kc, float *ks,
             int8_t *vc, float *vs, uint16_t *out) {
    const long C = (long)H * HD;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const long bh = (long)b * H + h;
            const uint16_t *x = qkv + b * qstride + h * HD;
            store_one(L, bh, T, x + C, x + 2 * C, kc, ks, vc, vs);
            attend_one(L, T, bh, x, kc, ks, vc, vs, out + bh * HD);
        }
}

/* Rotary position of one head vector: y = x cos + rotate_half(x) sin with rotate_half([a, b]) = [-b, a]
   (a, b: the two halves of HD / 2 channels), each product and the sum rounded to float32 (as
   entropykit.models.bytegpt.apply_rope computes it), then to bf16. cs, sn: HD floats. */
static inline void rope_one(const uint16_t *x, const float *cs, const float *sn, uint16_t *y) {
    const v16f a = load_bf16(x), b = load_bf16(x + 16);
    v16f c0, c1, s0, s1;
    memcpy(&c0, cs, 64); memcpy(&c1, cs + 16, 64); memcpy(&s0, sn, 64); memcpy(&s1, sn + 16, 64);
    const v16f lo = a * c0, hi = b * c1, rlo = (-b) * s0, rhi = a * s1;
    store_bf16(y, lo + rlo);
    store_bf16(y + 16, hi + rhi);
}

/* One row-and-head of one step of a rotary model over a sliding (ring) cache with an attention sink:
   rotate the token's query and key by (cs, sn) (its absolute position), store its key and value in
   slot `slot`; when skx is not NULL, store the sink (the BOS key skx rotated by (scs, ssn), and the
   value svx) in slot 0; then attend with the rotated query over slots [0, T]. x: the row's bf16
   q | k | v at head h (q at x, k at x + C, v at x + 2C). */
static inline void step_rope_one(int L, long bh, long C, int slot, int T, const uint16_t *x, const float *cs,
                                 const float *sn, const uint16_t *skx, const uint16_t *svx, const float *scs,
                                 const float *ssn, uint8_t *kc, float *ks, int8_t *vc, float *vs, uint16_t *dst) {
    uint16_t q[HD], k[HD], s[HD];
    rope_one(x, cs, sn, q);
    rope_one(x + C, cs, sn, k);
    store_one(L, bh, slot, k, x + 2 * C, kc, ks, vc, vs);
    if (skx != NULL) {
        rope_one(skx, scs, ssn, s);
        store_one(L, bh, 0, s, svx, kc, ks, vc, vs);
    }
    attend_one(L, T, bh, q, kc, ks, vc, vs, dst);
}

/* One decoding step of a rotary model over a sliding (ring) cache with an attention sink:
   rotate the new token's query and key by (cs, sn) (its absolute position), store its key and value
   in slot `slot`; when sk is not NULL, store the sink (the BOS key sk, rotated by (scs, ssn), and
   value sv: bf16 rows of H*HD at row stride sstride) in slot 0; then attend with the rotated query
   over slots [0, T]. The slots' order does not matter to attention. qkv: bf16 rows q | k | v. */
void ek_step_rope(int B, int H, int L, int slot, int T, const uint16_t *qkv, long qstride, const float *cs,
                  const float *sn, const uint16_t *sk, const uint16_t *sv, long sstride, const float *scs,
                  const float *ssn, uint8_t *kc, float *ks, int8_t *vc, float *vs, uint16_t *out) {
    const long C = (long)H * HD;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const long bh = (long)b * H + h, o = b * sstride + h * HD;
            step_rope_one(L, bh, C, slot, T, qkv + b * qstride + h * HD, cs, sn, sk == NULL ? NULL : sk + o,
                          sk == NULL ? NULL : sv + o, scs, ssn, kc, ks, vc, vs, out + bh * HD);
        }
}

/* P consecutive steps of the ring cache of W slots (W <= L), for tokens at absolute positions
   p0 .. p0 + P - 1 (p0 >= 1; position 0 is the BOS prime): the same operations, in the same order
   for each row and head, as P calls of ek_step_rope with the stepper's slot rule (position p goes to
   slot 1 + (p - 1) % (W - 1), attends over slots [0, min(p, W - 1)], and once p >= W the sink is
   re-rotated to position p - W + 1), so the results are the same bits. The loop runs steps inside
   each row and head, so that one row-and-head's cache (W slots: about 36 KB) is read from memory
   once for all P steps instead of once a step: the encoder's path, where every token is known.
   qkv: bf16 q | k | v of step i, row b at qkv + i * istride + b * qstride; cs, sn: P x HD rotary
   tables of the positions; scs, ssn: P x HD tables of the sink positions (read for p >= W only);
   out: (P, B, H * HD) bf16. */
void ek_steps_rope(int B, int H, int L, int W, long p0, int P, const uint16_t *qkv, long istride, long qstride,
                   const float *cs, const float *sn, const uint16_t *sk, const uint16_t *sv, long sstride,
                   const float *scs, const float *ssn, uint8_t *kc, float *ks, int8_t *vc, float *vs,
                   uint16_t *out) {
    const long C = (long)H * HD;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const long bh = (long)b * H + h, o = b * sstride + h * HD;
            for (int i = 0; i < P; i++) {
                const long p = p0 + i;
                const int slot = 1 + (int)((p - 1) % (W - 1)), T = p < W - 1 ? (int)p : W - 1;
                const int wrapped = p >= W;
                step_rope_one(L, bh, C, slot, T, qkv + i * istride + b * qstride + h * HD, cs + i * HD,
                              sn + i * HD, wrapped ? sk + o : NULL, wrapped ? sv + o : NULL, scs + i * HD,
                              ssn + i * HD, kc, ks, vc, vs, out + ((long)i * B + b) * C + h * HD);
            }
        }
}
