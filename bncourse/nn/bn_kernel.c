/* Batch norm over a contiguous (N, C, L) tensor (L = 1 for a (N, C) batch), fused by hand.

   Built by bncourse.nn.ckernel once per scalar type: -Dscalar_t=float or -Dscalar_t=double;
   parallel with OpenMP where the compiler has it (-fopenmp), on one thread otherwise.

   Passes over memory (the least the maths allows):
   - training forward: one pass reads x for the statistics, one reads x and writes y. The sums
     are of the deviations from a centre near the mean (so sum(d^2)/m - (sum(d)/m)^2 cancels
     little); a second statistics pass, from the mean, runs only if that centre was more than a
     std away. Sums are kept in scalar_t over short runs, then in double.
   - backward: one pass reads dy and x for sum(dy) and sum(dy (x - mean)), one reads them again
     and writes dx; x-hat is recomputed, never stored.
   - eval: one pass reads x and writes y.
   Rows of L >= MIN_CHANNEL_RUN values are worked a channel at a time; shorter rows (and (N, C))
   a block of whole rows per thread, into per-thread (C * L,) sums, as PyTorch's kernel does.
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else  /* a compiler without OpenMP: one thread, the pragmas ignored */
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
#endif

#ifndef scalar_t
#error "compile with -Dscalar_t=float or -Dscalar_t=double"
#endif

typedef int64_t i64;

/* values summed in scalar_t before the sum moves into a double; a run of x is short enough
   to stay in the core's first-level cache between two passes over it */
#define RUN 2048
/* rows of a (N, C) batch summed in scalar_t before the sums move into doubles */
#define ROW_RUN 64
/* independent partial sums: a sum kept in one vector register would wait for the latency of
   every add */
#define LANES 64

enum { SUM_DEV, SUM_GRAD };

/* Sums over one channel's N runs of L values (run n at x + n * stride), in LANES partial sums
   of scalar_t per stretch of up to RUN values, then of double, added up once at the end:
   SUM_DEV: s1 = sum (x - centre), s2 = sum (x - centre)^2;
   SUM_GRAD: s1 = sum dy, s2 = sum dy (x - centre). */
static void channel_sums(int kind, const scalar_t* x, const scalar_t* dy, i64 N, i64 stride,
                         i64 L, scalar_t centre, double* s1, double* s2) {
  double da[LANES] = {0}, db[LANES] = {0}, ta = 0, tb = 0;
  for (i64 n = 0; n < N; n++) {
    const scalar_t* restrict v = x + n * stride;
    const scalar_t* restrict g = dy ? dy + n * stride : NULL;
    for (i64 l0 = 0; l0 < L; l0 += RUN) {
      i64 l1 = l0 + RUN < L ? l0 + RUN : L, l = l0;
      scalar_t a[LANES] = {0}, b[LANES] = {0};
      if (kind == SUM_DEV) {
        for (; l + LANES <= l1; l += LANES) {
          #pragma omp simd
          for (int j = 0; j < LANES; j++) {
            scalar_t d = v[l + j] - centre;
            a[j] += d;
            b[j] += d * d;
          }
        }
        for (; l < l1; l++) {
          ta += v[l] - centre;
          tb += (double)(v[l] - centre) * (v[l] - centre);
        }
      } else {
        for (; l + LANES <= l1; l += LANES) {
          #pragma omp simd
          for (int j = 0; j < LANES; j++) {
            a[j] += g[l + j];
            b[j] += g[l + j] * (v[l + j] - centre);
          }
        }
        for (; l < l1; l++) {
          ta += g[l];
          tb += (double)g[l] * (v[l] - centre);
        }
      }
      #pragma omp simd
      for (int j = 0; j < LANES; j++) {
        da[j] += a[j];
        db[j] += b[j];
      }
    }
  }
  #pragma omp simd reduction(+:ta, tb)
  for (int j = 0; j < LANES; j++) {
    ta += da[j];
    tb += db[j];
  }
  *s1 = ta;
  *s2 = tb;
}

/* The affine map of one channel's normalized batch, y = (x - centre) * scale + shift, from
   its mean, biased variance and optional weight and bias; fills invstd. Subtracting a centre
   near the mean first keeps y's rounding error relative to the std, not to |mean|. */
static void affine_of(const double* mean, const double* var, const scalar_t* weight,
                      const scalar_t* bias, scalar_t centre, double eps, double* invstd,
                      scalar_t* scale, scalar_t* shift) {
  *invstd = 1.0 / sqrt(*var + eps);
  double g = weight ? (double)*weight : 1.0, b = bias ? (double)*bias : 0.0;
  *scale = (scalar_t)(*invstd * g);
  *shift = (scalar_t)(b - (*mean - (double)centre) * *invstd * g);
}

/* ---- (N, C, L), L > 1: a channel at a time -------------------------------------------- */

/* One pass for the statistics: sums of deviations from a centre that is near the mean
   (the mean of the channel's first values), so the variance sum(d^2)/m - (sum(d)/m)^2 cancels
   little; should the centre be further from the mean than one std (a first value far out),
   a second pass sums the deviations from the mean itself. */
static void train_channels(const scalar_t* x, const scalar_t* weight, const scalar_t* bias,
                           i64 N, i64 C, i64 L, double eps, int threads, scalar_t* y,
                           double* mean, double* var, double* invstd) {
  double m = (double)N * (double)L;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (i64 c = 0; c < C; c++) {
    const scalar_t* xc = x + c * L;
    double first = 0, s1, s2;
    for (i64 n = 0; n < N; n++) first += xc[n * C * L];
    scalar_t centre = (scalar_t)(first / N);
    channel_sums(SUM_DEV, xc, NULL, N, C * L, L, centre, &s1, &s2);   /* read x */
    double d = s1 / m;
    if (d * d > s2 / m - d * d) {                          /* the centre was far out */
      centre = (scalar_t)(centre + d);
      channel_sums(SUM_DEV, xc, NULL, N, C * L, L, centre, &s1, &s2);
      d = s1 / m;
    }
    mean[c] = centre + d;
    var[c] = fmax(s2 / m - d * d, 0.0);
    scalar_t scale, shift;
    affine_of(mean + c, var + c, weight ? weight + c : NULL, bias ? bias + c : NULL, centre,
              eps, invstd + c, &scale, &shift);
    for (i64 n = 0; n < N; n++) {                                     /* read x, write y */
      const scalar_t* xr = xc + n * C * L;
      scalar_t* yr = y + (n * C + c) * L;
      #pragma omp simd
      for (i64 l = 0; l < L; l++) yr[l] = (xr[l] - centre) * scale + shift;
    }
  }
}

static void backward_channels(const scalar_t* dy, const scalar_t* x, const double* mean,
                              const double* invstd, const scalar_t* weight, i64 N, i64 C, i64 L,
                              int threads, scalar_t* dx, double* sum_dy, double* sum_dy_xmu) {
  double m = (double)N * (double)L;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (i64 c = 0; c < C; c++) {
    double s1, s2;
    scalar_t centre = (scalar_t)mean[c];
    channel_sums(SUM_GRAD, x + c * L, dy + c * L, N, C * L, L, centre, &s1, &s2);  /* dy, x */
    /* dy * (x - centre) summed; the rounding of centre moved the sum by (mean - centre) sum dy */
    s2 -= (mean[c] - (double)centre) * s1;
    sum_dy[c] = s1;
    sum_dy_xmu[c] = s2;
    if (!dx) continue;
    /* dx = g / sigma (dy - sum dy / m - (x - mean) / sigma^2 sum dy (x - mean) / m) */
    double g = weight ? (double)weight[c] : 1.0, is = invstd[c];
    scalar_t k_dy = (scalar_t)(g * is);
    scalar_t k_x = (scalar_t)(-g * is * is * is * s2 / m);
    scalar_t k_1 = (scalar_t)(-g * is * s1 / m - (double)k_x * (mean[c] - (double)centre));
    for (i64 n = 0; n < N; n++) {                           /* read dy, x, write dx */
      const scalar_t* g_r = dy + (n * C + c) * L;
      const scalar_t* x_r = x + (n * C + c) * L;
      scalar_t* o = dx + (n * C + c) * L;
      #pragma omp simd
      for (i64 l = 0; l < L; l++) o[l] = k_dy * g_r[l] + k_x * (x_r[l] - centre) + k_1;
    }
  }
}

/* ---- (N, C, L), L small: per-thread blocks of rows ------------------------------------ */
/* Each row of K = C * L values is summed column by column into per-thread (K,) sums (the
   columns of one channel are added up at the end): every row is read contiguously, as
   PyTorch's kernel for (N, C) batches does. (Walking every other pass downwards, to start on the
   rows still in the cache, ran slower: the prefetchers follow ascending addresses.) */

/* rows averaged for the centre of the one-pass statistics */
#define CENTRE_ROWS 16

/* Sums over rows [lo, hi), ROW_RUN rows at a time in scalar_t (run buffers a, b), then into
   the doubles sa, sb (all (K,)): SUM_DEV: a = sum (x - centre), b = sum (x - centre)^2;
   SUM_GRAD: a = sum dy, b = sum dy (x - centre). Four rows per sweep: a and b are loaded and
   stored once per four values, not once per value (the loop was bound by those stores). */
static void rows_sums(int kind, const scalar_t* x, const scalar_t* dy,
                      const scalar_t* restrict centre, i64 K, i64 lo, i64 hi,
                      scalar_t* restrict a, scalar_t* restrict b, double* restrict sa,
                      double* restrict sb) {
  for (i64 r0 = lo; r0 < hi; r0 += ROW_RUN) {
    i64 r1 = r0 + ROW_RUN < hi ? r0 + ROW_RUN : hi, n = r0;
    memset(a, 0, K * sizeof(scalar_t));
    memset(b, 0, K * sizeof(scalar_t));
    for (; n + 4 <= r1; n += 4) {
      const scalar_t *restrict x0 = x + n * K, *restrict x1 = x0 + K, *restrict x2 = x1 + K,
                     *restrict x3 = x2 + K;
      if (kind == SUM_DEV) {
        #pragma omp simd
        for (i64 k = 0; k < K; k++) {
          scalar_t c = centre[k], d0 = x0[k] - c, d1 = x1[k] - c, d2 = x2[k] - c, d3 = x3[k] - c;
          a[k] += (d0 + d1) + (d2 + d3);
          b[k] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
      } else {
        const scalar_t *restrict g0 = dy + n * K, *restrict g1 = g0 + K, *restrict g2 = g1 + K,
                       *restrict g3 = g2 + K;
        #pragma omp simd
        for (i64 k = 0; k < K; k++) {
          scalar_t c = centre[k];
          a[k] += (g0[k] + g1[k]) + (g2[k] + g3[k]);
          b[k] += (g0[k] * (x0[k] - c) + g1[k] * (x1[k] - c))
                  + (g2[k] * (x2[k] - c) + g3[k] * (x3[k] - c));
        }
      }
    }
    for (; n < r1; n++) {
      const scalar_t* restrict xr = x + n * K;
      if (kind == SUM_DEV) {
        #pragma omp simd
        for (i64 k = 0; k < K; k++) {
          scalar_t d = xr[k] - centre[k];
          a[k] += d;
          b[k] += d * d;
        }
      } else {
        const scalar_t* restrict g = dy + n * K;
        #pragma omp simd
        for (i64 k = 0; k < K; k++) {
          a[k] += g[k];
          b[k] += g[k] * (xr[k] - centre[k]);
        }
      }
    }
    #pragma omp simd
    for (i64 k = 0; k < K; k++) {
      sa[k] += a[k];
      sb[k] += b[k];
    }
  }
}

/* Per-channel totals of the threads' (K,) sums: out1[c], out2[c]; then zeroes the sums. */
static void combine(double* part, int threads, i64 C, i64 L, double* out1, double* out2) {
  i64 K = C * L;
  for (i64 c = 0; c < C; c++) out1[c] = out2[c] = 0;
  for (int t = 0; t < threads; t++) {
    const double* sa = part + 2 * K * t;
    for (i64 c = 0; c < C; c++)
      for (i64 l = 0; l < L; l++) {
        out1[c] += sa[c * L + l];
        out2[c] += sa[K + c * L + l];
      }
  }
  memset(part, 0, 2 * K * threads * sizeof(double));
}

/* Rows [lo, hi) of width K: o = a * (x - centre) + b, or (dy given)
   o = k_dy * dy + a * (x - centre) + b */
static void rows_map(const scalar_t* x, const scalar_t* dy, const scalar_t* restrict centre,
                     const scalar_t* restrict a, const scalar_t* restrict k_dy,
                     const scalar_t* restrict b, i64 K, i64 lo, i64 hi, scalar_t* o) {
  for (i64 n = lo; n < hi; n++) {
    const scalar_t* restrict xr = x + n * K;
    scalar_t* restrict orow = o + n * K;
    if (dy) {
      const scalar_t* restrict g = dy + n * K;
      #pragma omp simd
      for (i64 k = 0; k < K; k++) orow[k] = k_dy[k] * g[k] + a[k] * (xr[k] - centre[k]) + b[k];
    } else {
      #pragma omp simd
      for (i64 k = 0; k < K; k++) orow[k] = a[k] * (xr[k] - centre[k]) + b[k];
    }
  }
}

/* Per-thread and per-column scratch of the rows path: sums (threads, 2, K) doubles; run
   buffers (threads, 2, K), and centre, scale, shift, k_dy (K,) each, in scalar_t, each on its
   own cache lines. */
typedef struct {
  double* part;
  void* block;                               /* what malloc returned, for free */
  scalar_t* run;
  scalar_t *centre, *scale, *shift, *k_dy;
  i64 Kp;                                    /* K padded: see scratch_new */
} scratch_t;

static int scratch_new(scratch_t* s, int threads, i64 K) {
  /* K rounded up to whole cache lines: every (K,) array starts on one, so no vector load of
     it straddles two (malloc aligns to 16 bytes only) */
  i64 Kp = (K * (i64)sizeof(scalar_t) + 63) / 64 * 64 / (i64)sizeof(scalar_t);
  s->part = calloc((size_t)(2 * K * threads), sizeof(double));
  /* aligned by hand: C11's aligned_alloc is missing from some C libraries (MinGW's) */
  s->block = malloc((size_t)((2 * threads + 4) * Kp) * sizeof(scalar_t) + 63);
  if (!s->part || !s->block) {
    free(s->part);
    free(s->block);
    return -1;
  }
  s->run = (scalar_t*)(((uintptr_t)s->block + 63) & ~(uintptr_t)63);
  s->Kp = Kp;
  s->centre = s->run + 2 * Kp * threads;
  s->scale = s->centre + Kp;
  s->shift = s->scale + Kp;
  s->k_dy = s->shift + Kp;
  return 0;
}

static void scratch_free(scratch_t* s) {
  free(s->part);
  free(s->block);
}

/* Each channel's centre: the mean of its values in the first CENTRE_ROWS rows, near the mean of
   the batch (so the one-pass variance cancels little); repeated over its L columns. */
static void rows_centre(const scalar_t* x, i64 N, i64 C, i64 L, scalar_t* centre) {
  i64 rows = N < CENTRE_ROWS ? N : CENTRE_ROWS;
  for (i64 c = 0; c < C; c++) {
    double s = 0;
    for (i64 n = 0; n < rows; n++)
      for (i64 l = 0; l < L; l++) s += x[(n * C + c) * L + l];
    for (i64 l = 0; l < L; l++) centre[c * L + l] = (scalar_t)(s / (rows * L));
  }
}

/* One pass for the statistics (sums of deviations from rows_centre's centre); a second pass,
   from the mean itself, only if some centre was further from its mean than one std. */
static int train_rows(const scalar_t* x, const scalar_t* weight, const scalar_t* bias, i64 N,
                      i64 C, i64 L, double eps, int threads, scalar_t* y, double* mean,
                      double* var, double* invstd) {
  i64 K = C * L;
  double m = (double)N * (double)L;
  int far_out = 0;
  scratch_t s;
  if (scratch_new(&s, threads, K)) return -1;
  rows_centre(x, N, C, L, s.centre);
  #pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    i64 lo = N * t / nt, hi = N * (t + 1) / nt;
    scalar_t *a = s.run + 2 * s.Kp * t, *b = a + s.Kp;
    double *sa = s.part + 2 * K * t, *sb = sa + K;
    for (int pass = 0; pass < 2; pass++) {
      rows_sums(SUM_DEV, x, NULL, s.centre, K, lo, hi, a, b, sa, sb);          /* read x */
      #pragma omp barrier
      #pragma omp single
      {
        combine(s.part, threads, C, L, mean, var);     /* sum (x - centre), its squares */
        far_out = 0;
        for (i64 c = 0; c < C; c++) {
          double d = mean[c] / m;
          mean[c] = s.centre[c * L] + d;
          var[c] = var[c] / m - d * d;
          if (d * d > var[c]) far_out = 1;
        }
        if (far_out)
          for (i64 k = 0; k < K; k++) s.centre[k] = (scalar_t)mean[k / L];
      }
      if (!far_out) break;
    }
    #pragma omp single
    for (i64 c = 0; c < C; c++) {
      var[c] = fmax(var[c], 0.0);
      affine_of(mean + c, var + c, weight ? weight + c : NULL, bias ? bias + c : NULL,
                s.centre[c * L], eps, invstd + c, s.scale + c * L, s.shift + c * L);
      for (i64 l = 1; l < L; l++) {
        s.scale[c * L + l] = s.scale[c * L];
        s.shift[c * L + l] = s.shift[c * L];
      }
    }
    rows_map(x, NULL, s.centre, s.scale, NULL, s.shift, K, lo, hi, y);       /* x -> y */
  }
  scratch_free(&s);
  return 0;
}

static int backward_rows(const scalar_t* dy, const scalar_t* x, const double* mean,
                         const double* invstd, const scalar_t* weight, i64 N, i64 C, i64 L,
                         int threads, scalar_t* dx, double* sum_dy, double* sum_dy_xmu) {
  i64 K = C * L;
  double m = (double)N * (double)L;
  scratch_t s;
  if (scratch_new(&s, threads, K)) return -1;
  for (i64 k = 0; k < K; k++) s.centre[k] = (scalar_t)mean[k / L];
  #pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    i64 lo = N * t / nt, hi = N * (t + 1) / nt;
    scalar_t *a = s.run + 2 * s.Kp * t, *b = a + s.Kp;
    double *sa = s.part + 2 * K * t, *sb = sa + K;
    rows_sums(SUM_GRAD, x, dy, s.centre, K, lo, hi, a, b, sa, sb);            /* read dy, x */
    #pragma omp barrier
    #pragma omp single
    {
      combine(s.part, threads, C, L, sum_dy, sum_dy_xmu);
      for (i64 c = 0; c < C; c++) {
        double centre = (double)s.centre[c * L], s1 = sum_dy[c];
        double s2 = sum_dy_xmu[c] - (mean[c] - centre) * s1;
        sum_dy_xmu[c] = s2;
        double g = weight ? (double)weight[c] : 1.0, is = invstd[c];
        double k_x = -g * is * is * is * s2 / m;
        for (i64 l = 0; l < L; l++) {
          s.k_dy[c * L + l] = (scalar_t)(g * is);
          s.scale[c * L + l] = (scalar_t)k_x;
          s.shift[c * L + l] = (scalar_t)(-g * is * s1 / m - k_x * (mean[c] - centre));
        }
      }
    }
    if (dx)                                                        /* read dy, x, write dx */
      rows_map(x, dy, s.centre, s.scale, s.k_dy, s.shift, K, lo, hi, dx);
  }
  scratch_free(&s);
  return 0;
}

/* ---- entry points --------------------------------------------------------------------- */

/* rows path below this many values per (sample, channel): the channel path reads each channel
   as N runs of L values, and short runs waste most of every cache line */
#define MIN_CHANNEL_RUN 64

/* running = running + factor (batch - running), for the mean and the unbiased variance, in
   double, rounded once */
static void update_running(const double* mean, const double* var, i64 C, double m, double factor,
                           scalar_t* running_mean, scalar_t* running_var) {
  for (i64 c = 0; c < C; c++) {
    running_mean[c] = (scalar_t)(running_mean[c] + factor * (mean[c] - running_mean[c]));
    double unbiased = var[c] * (m / (m - 1));
    running_var[c] = (scalar_t)(running_var[c] + factor * (unbiased - running_var[c]));
  }
}

/* Training forward. x, y: (N, C, L) contiguous, N * L > 1; weight, bias: (C,) or NULL; fills
   mean, var (biased), invstd = 1 / sqrt(var + eps), all (C,) double; then, if running_mean and
   running_var ((C,) or NULL) are given, blends the batch's mean and unbiased variance into them
   with weight factor. Returns 0, or -1 if out of memory (nothing written to the running
   statistics). */
int bn_train(const scalar_t* x, const scalar_t* weight, const scalar_t* bias, i64 N, i64 C,
             i64 L, double eps, int threads, scalar_t* y, double* mean, double* var,
             double* invstd, scalar_t* running_mean, scalar_t* running_var, double factor) {
  if (L < MIN_CHANNEL_RUN) {
    if (train_rows(x, weight, bias, N, C, L, eps, threads, y, mean, var, invstd)) return -1;
  } else {
    train_channels(x, weight, bias, N, C, L, eps, threads, y, mean, var, invstd);
  }
  if (running_mean && running_var)
    update_running(mean, var, C, (double)N * (double)L, factor, running_mean, running_var);
  return 0;
}

/* Backward of bn_train. dy, x, dx: (N, C, L) contiguous (dx NULL: not wanted); mean, invstd:
   bn_train's; fills sum_dy = sum dy and sum_dy_xmu = sum dy (x - mean), (C,) double.
   Returns 0, or -1 if out of memory. */
int bn_backward(const scalar_t* dy, const scalar_t* x, const double* mean, const double* invstd,
                const scalar_t* weight, i64 N, i64 C, i64 L, int threads, scalar_t* dx,
                double* sum_dy, double* sum_dy_xmu) {
  if (L < MIN_CHANNEL_RUN)
    return backward_rows(dy, x, mean, invstd, weight, N, C, L, threads, dx, sum_dy, sum_dy_xmu);
  backward_channels(dy, x, mean, invstd, weight, N, C, L, threads, dx, sum_dy, sum_dy_xmu);
  return 0;
}

/* Eval forward: y = x * scale + shift per channel. x, y: (N, C, L) contiguous; scale, shift:
   (C,). One pass: read x, write y. */
void bn_affine(const scalar_t* x, const scalar_t* scale, const scalar_t* shift, i64 N, i64 C,
               i64 L, int threads, scalar_t* y) {
  if (L == 1) {                                     /* (N, C): each row against (C,) vectors */
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 n = 0; n < N; n++) {
      const scalar_t* restrict xr = x + n * C;
      scalar_t* restrict yr = y + n * C;
      #pragma omp simd
      for (i64 c = 0; c < C; c++) yr[c] = xr[c] * scale[c] + shift[c];
    }
    return;
  }
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (i64 r = 0; r < N * C; r++) {
    scalar_t a = scale[r % C], b = shift[r % C];
    const scalar_t* xr = x + r * L;
    scalar_t* yr = y + r * L;
    #pragma omp simd
    for (i64 l = 0; l < L; l++) yr[l] = xr[l] * a + b;
  }
}
