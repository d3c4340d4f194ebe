/* The sort+blend stage of facelift_nb's fast CPU rasteriser (see facelift_nb/render_kernels.py, which compiles
   it on first use). The rasteriser constants are not written here: they are defined once in facelift_nb.render and
   passed to the compiler as -D flags (render_kernels.c_defines), so this file and the numba kernels cannot drift. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#if !defined(TILE) || !defined(ROW) || !defined(ALPHA_MIN) || !defined(ALPHA_MAX) || !defined(T_MIN)
#error "build with -D flags for TILE, ROW, ALPHA_MIN, ALPHA_MAX and T_MIN (see render_kernels.c_defines)"
#endif
#if TILE != 16
#error "a tile row is held in two 8-wide vectors: TILE must be 16"
#endif
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
#if defined(__AVX__)
#include <immintrin.h>
static inline int lanes_set(v8i m) { return __builtin_popcount(_mm256_movemask_ps((__m256)m)); }
static inline int any_set(v8i m) { return _mm256_movemask_ps((__m256)m) != 0; }
#else
static inline int lanes_set(v8i m) { int s = 0; for (int l = 0; l < 8; l++) s -= m[l]; return s; }
static inline int any_set(v8i m) { for (int l = 0; l < 8; l++) if (m[l]) return 1; return 0; }
#endif
static inline v8 sel(v8i m, v8 a, v8 b) { return (v8)(((v8i)a & m) | ((v8i)b & ~m)); }

/* exp(x) for x <= 0 (clamped at -87): x = n ln2 + r, |r| <= ln2/2, degree-7 polynomial, 2^n from the bits. */
static inline v8 vexp(v8 x) {
    const v8 lo = (v8){0} - 87.0f;
    x = sel(x < lo, lo, x);
    v8 fx = x * 1.44269504088896341f + 0.5f;
    v8i t = __builtin_convertvector(fx, v8i);
    v8 tf = __builtin_convertvector(t, v8);
    t = t + (tf > fx);                      /* truncation went up (fx < 0): step down to the floor */
    tf = __builtin_convertvector(t, v8);
    v8 r = x - tf * 0.693359375f + tf * 2.12194440e-4f;
    v8 y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r
            + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.0f;
    return y * (v8)((t + 127) << 23);
}

/* Composite one tile's depth-sorted Gaussians (rows of G, see project_nb) into out [H, W, 5]. */
static void composite_tile(const int32_t *ids, int64_t n, const float *G, int32_t x_lo, int32_t y_lo,
                           int32_t tw, int32_t th, const double *bg, float *out, int32_t W) {
    v8 T[TILE][2], Cr[TILE][2], Cg[TILE][2], Cb[TILE][2], D[TILE][2], pxc[2];
    v8i alive[TILE][2];
    int rowlive[TILE], live = 0;
    const v8 zero = {0};
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 8; l++) pxc[h][l] = (float)(x_lo + 8 * h + l) + 0.5f;
    for (int y = 0; y < TILE; y++) {
        rowlive[y] = y < th ? tw : 0;
        live += rowlive[y];
        for (int h = 0; h < 2; h++) {
            T[y][h] = zero + 1.0f; Cr[y][h] = zero; Cg[y][h] = zero; Cb[y][h] = zero; D[y][h] = zero;
            for (int l = 0; l < 8; l++) alive[y][h][l] = (y < th && 8 * h + l < tw) ? -1 : 0;
        }
    }
    for (int64_t j = 0; j < n && live > 0; j++) {
        if (j + 16 < n) __builtin_prefetch(G + ROW * (int64_t)ids[j + 16]);
        const float *g = G + ROW * (int64_t)ids[j];
        const float k2 = g[6];
        if (k2 < 0.0f) continue;
        const float u = g[0], v = g[1], a = g[2], b = g[3], c = g[4], o = g[5], ex = g[7], ey = g[8];
        int x0 = (int)floorf(u - ex - 0.5f - x_lo), x1 = (int)floorf(u + ex - 0.5f - x_lo) + 2;
        int y0 = (int)floorf(v - ey - 0.5f - y_lo), y1 = (int)floorf(v + ey - 0.5f - y_lo) + 2;
        x0 = x0 < 0 ? 0 : x0; x1 = x1 > tw ? tw : x1; y0 = y0 < 0 ? 0 : y0; y1 = y1 > th ? th : y1;
        if (x0 >= x1 || y0 >= y1) continue;
        const int h0 = x0 >> 3, h1 = (x1 + 7) >> 3;
        const float A = -0.5f * a, cr = g[9], cg = g[10], cb = g[11], z = g[12];
        for (int y = y0; y < y1; y++) {
            if (rowlive[y] == 0) continue;
            const float dy = v - ((float)(y_lo + y) + 0.5f);
            const float Bq = -b * dy, Cq = -0.5f * c * dy * dy;
            int stopped = 0;
            for (int h = h0; h < h1; h++) {
                if (!any_set(alive[y][h])) continue;
                const v8 dx = u - pxc[h];
                const v8 power = (A * dx + Bq) * dx + Cq;     /* -(a dx^2 + 2 b dx dy + c dy^2) / 2 */
                v8 alpha = o * vexp(power);
                alpha = sel(alpha > ALPHA_MAX, zero + ALPHA_MAX, alpha);
                const v8i ok = alive[y][h] & (power <= 0.0f) & (alpha >= ALPHA_MIN);
                const v8 Tp = T[y][h], tT = Tp * (1.0f - alpha);
                const v8i stop = ok & (tT < T_MIN);        /* the reference stops before this Gaussian */
                const v8i con = ok & ~stop;
                const v8 w = sel(con, alpha * Tp, zero);
                Cr[y][h] += cr * w; Cg[y][h] += cg * w; Cb[y][h] += cb * w; D[y][h] += z * w;
                T[y][h] = sel(con, tT, Tp);
                alive[y][h] &= ~stop;
                stopped += lanes_set(stop);
            }
            rowlive[y] -= stopped; live -= stopped;
        }
    }
    for (int y = 0; y < th; y++)
        for (int x = 0; x < tw; x++) {
            const int h = x >> 3, l = x & 7;
            const float Tp = T[y][h][l], acc = 1.0f - Tp;
            float *p = out + 5 * ((int64_t)(y_lo + y) * W + x_lo + x);
            p[0] = Cr[y][h][l] + Tp * (float)bg[0];
            p[1] = Cg[y][h][l] + Tp * (float)bg[1];
            p[2] = Cb[y][h][l] + Tp * (float)bg[2];
            p[3] = acc; p[4] = acc > 0.0f ? D[y][h][l] / acc : 0.0f;
        }
}

/* Stable LSD radix sort of ids by keys[ids]. Keys are taken relative to the smallest, and the digit width
   (at most 11 bits; 8 for short lists) is chosen so the fewest passes cover the range actually present. */
static void radix_sort(int32_t *ids, int64_t n, const uint32_t *keys, int32_t *tmp, uint32_t *k0, uint32_t *k1,
                       int64_t *cnt) {
    if (n < 2) return;
    uint32_t kmin = 0xffffffffu, kmax = 0;
    for (int64_t j = 0; j < n; j++) {
        const uint32_t k = keys[ids[j]];
        k0[j] = k;
        kmin = k < kmin ? k : kmin;
        kmax = k > kmax ? k : kmax;
    }
    const uint32_t range = kmax - kmin;
    if (range == 0) return;  /* all keys equal: index order is already the stable order */
    const int bits = 32 - __builtin_clz(range), maxd = n < 2048 ? 8 : 11;
    const int passes = (bits + maxd - 1) / maxd, d = (bits + passes - 1) / passes;
    const uint32_t mask = (1u << d) - 1;
    for (int64_t j = 0; j < n; j++) k0[j] -= kmin;
    int32_t *a = ids, *b = tmp;
    for (int pass = 0; pass < passes; pass++) {
        const int shift = pass * d;
        memset(cnt, 0, (mask + 2) * sizeof(int64_t));
        for (int64_t j = 0; j < n; j++) cnt[((k0[j] >> shift) & mask) + 1]++;
        for (uint32_t q = 0; q <= mask; q++) cnt[q + 1] += cnt[q];
        for (int64_t j = 0; j < n; j++) {
            const uint32_t q = (k0[j] >> shift) & mask;
            const int64_t p = cnt[q]++;
            b[p] = a[j]; k1[p] = k0[j];
        }
        int32_t *ta = a; a = b; b = ta;
        uint32_t *tk = k0; k0 = k1; k1 = tk;
    }
    if (a != ids) memcpy(ids, a, n * sizeof(int32_t));
}

typedef struct {
    const float *G; const uint32_t *keys; const int64_t *offsets; int32_t *lists;
    int32_t gx, gy, W, H; const double *bg; float *out; int64_t next; int failed; pthread_mutex_t lock;
} job_t;

static void *worker(void *arg) {
    job_t *J = (job_t *)arg;
    int64_t cap = 0, cnt[2049]; int32_t *tmp = NULL; uint32_t *k0 = NULL, *k1 = NULL;
    for (;;) {
        pthread_mutex_lock(&J->lock);
        const int64_t t = J->next++;
        pthread_mutex_unlock(&J->lock);
        if (t >= (int64_t)J->gx * J->gy) break;
        const int64_t lo = J->offsets[t], n = J->offsets[t + 1] - lo;
        if (n > cap) {
            free(tmp); free(k0); free(k1);
            cap = n;
            tmp = malloc(cap * sizeof(int32_t));
            k0 = malloc(cap * sizeof(uint32_t));
            k1 = malloc(cap * sizeof(uint32_t));
            if (!tmp || !k0 || !k1) { J->failed = 1; break; }
        }
        radix_sort(J->lists + lo, n, J->keys, tmp, k0, k1, cnt);
        const int32_t x_lo = (int32_t)(t % J->gx) * TILE, y_lo = (int32_t)(t / J->gx) * TILE;
        const int32_t tw = J->W - x_lo < TILE ? J->W - x_lo : TILE, th = J->H - y_lo < TILE ? J->H - y_lo : TILE;
        composite_tile(J->lists + lo, n, J->G, x_lo, y_lo, tw, th, J->bg, J->out, J->W);
    }
    free(tmp); free(k0); free(k1);
    return NULL;
}

/* Sort every tile's list in place and composite all tiles on nthreads threads; returns 0 on success. */
int facelift_blend(const float *G, const uint32_t *keys, const int64_t *offsets, int32_t *lists, int32_t W, int32_t H,
                   const double *bg, float *out, int32_t nthreads) {
    job_t J = {G, keys, offsets, lists, (W + TILE - 1) / TILE, (H + TILE - 1) / TILE, W, H, bg, out, 0, 0};
    pthread_t th[64];
    int started = 0;
    pthread_mutex_init(&J.lock, NULL);
    if (nthreads > 64) nthreads = 64;
    for (int i = 1; i < nthreads; i++) if (pthread_create(&th[started], NULL, worker, &J) == 0) started++;
    worker(&J);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&J.lock);
    return J.failed ? -1 : 0;
}

int facelift_tile(void) { return TILE; }
