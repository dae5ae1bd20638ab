/* vi.c: the variational inference loop and its .Call entry point.
   Family, target, estimator and step-size rule come in through their
   abstractions; nothing here knows which ones run. */
#include "bbvi.h"
#include <cli/progress.h>
#include <R_ext/Utils.h>
#include <Rmath.h>
#include <math.h>
#include <string.h>

enum { VI_OK = 0, VI_DIVERGED = 1, VI_NO_FINITE = 2 };
enum { STOP_CONVERGED = 0, STOP_MAXITER_MOVING = 1, STOP_MAXITER_NOISY = 2,
       STOP_OUTSIDE = 3, STOP_UNBOUNDED = 4, STOP_FROZEN = 5, STOP_FAR = 6 };
/* the names R sees (bbvi_vi_result) */
static const char *vi_status_name[] = { "ok", "diverged", "no_finite" };
static const char *stop_name[] = { "converged", "max_iter_moving",
                                   "max_iter_noisy", "outside", "unbounded",
                                   "frozen", "max_iter_far" };

#define Z_DRIFT 3.0     /* an ELBO rise beyond 3 standard errors is progress */
#define DRIFT_SD 0.25   /* largest move of a marginal (in sds) that is no drift */
#define LAG 4           /* windows back for the long-baseline drift test */
#define N_BATCH 4       /* fewest batches the averaging span is split
                           into (see var_of_mean()); at most 2 N_BATCH */
#define N_BATCH_MANY 8  /* the same with more than TOL_ALL_MAX estimates */
#define TOL_ALL_MAX 200 /* see average_error() */
#define TOL_SHARE 0.995
#define STEP_CUT 0.3    /* step-size factor when averaging is too noisy */
#define MAX_STEP_CUTS 8
#define ELBO_DROP 0.5     /* nats below the best window (beyond its Monte
                             Carlo error) that no converged q may lose: the
                             loss of moving 1 sd off in one coordinate */
#define MAX_OUTSIDE 0.02  /* share of a window's draws with a non-finite
                             log density (outside the support) that a
                             converged q may have */
#define NOISE_GROWTH 100.0   /* ELBO variance this many times the best
                                window's: q has grown wider than p */
#define NEWTON_MIN 1.0    /* q-sds of estimated distance to the optimum that
                             no converged mean-field score fit may have
                             (see newton_far()) */

/* The convergence rule looks at q's marginal means and log sds (in
   posterior-sd units), at the ELBO with its Monte Carlo noise, and at the
   gradient, not at the relative change of a noisy ELBO (which stops early
   when the ELBO is large and never when it is noisy).

   Phase 1 (optimising), at the end of every window of W iterations, with
   lambda averaged over the window: the window passes when, against the
   previous window and against the window LAG back (where a slow drift has
   had LAG windows to add up), (a) no marginal mean moved by more than
   DRIFT_SD sds and no log sd by more than DRIFT_SD, (b) the mean ELBO did
   not rise by more than Z_DRIFT standard errors (per-iteration ELBO
   estimates use fresh draws, so their plain standard error is honest; the
   iterates themselves are autocorrelated, so their moves are bounded in
   size rather than tested), and (c) every coordinate of the gradient,
   averaged over the window, is zero within its standard error (Bonferroni
   over the K coordinates, Student-t quantile since each standard error is
   estimated from the window's W values), so that a stalled optimiser is
   not taken for a converged one. Two passes in a row: stationary.

   Phase 2 (averaging): lambda is averaged over the following windows; the
   fit has converged when the standard error of that average (batch means
   over the averaging span, see var_of_mean()) is below tol sds for every
   mean and below tol for every log sd. If that would take more than three
   times as many windows as have been averaged, the iterates jitter on a
   scale above the posterior's: the step size is cut and phase 1 starts
   again (that decision reads the error without the spread its own
   estimation puts into a quantile over many coordinates; see
   average_error()). Score fits never cut for this (noise_cuts = 0): their
   slow iterates (a correlated posterior under mean-field) need long
   averaging at any step, as the error of an average of iterates is that of
   the gradient noise over the curvature, whatever the step (Polyak and
   Juditsky); a smaller step only makes them slower, and the batches then
   too short to see it. Measured on a 2-D Gaussian with correlation 0.9
   (30 seeds): with such cuts 10 to 16 fits stopped beyond 3 tol from the
   optimum, without them 1. */
typedef struct {
    int D, K, W;
    double tol;
    const bbvi_family *fam;
    double *wsum;                 /* lambda sum of the current window, K */
    double *gsum, *gsumsq;        /* gradient sums over the window, K */
    double elbo_sum, elbo_sumsq;  /* over the window */
    int n;                        /* iterations in the current window */
    double *wm, *wl;              /* the window's marginal means, log sds, D */
    double *hm, *hl;              /* the last LAG windows', LAG x D */
    double he[LAG], hev[LAG];     /* and their ELBO means and variances */
    int n_windows, passes, phase;
    double best_em, best_ev;      /* the window with the highest mean ELBO */
    int has_best;
    int stalls;                   /* failed windows in a row with a flat ELBO */
    double outside, drawn;        /* the window's non-finite and total draws */
    int outside_windows;          /* windows in a row with too many of them */
    double z_grad;                /* Bonferroni threshold for K tests */
    const int *skip_grad;         /* K flags: left out of the gradient test,
                                     or NULL */
    int noise_cuts;               /* cut the step when averaging is too noisy */
    /* Mean-field score fits from the mode: the Cholesky factor of log p's
       negative Hessian there (in z, D x D; NULL otherwise), and over the
       averaging span the sums of each iteration's Newton step Hz^-1 g (g
       its gradient of q's means) and of their squares */
    double *hchol, *nstep, *nsum, *nsumsq;
    int n_newton;
    double newton_dist;           /* the last check's distance left (largest
                                     over the means, q-sds) when it vetoed
                                     convergence, else 0 */
    int stale;                    /* the optimiser's steps are frozen by a stale
                                     second moment (bbvi_optim_stale): this
                                     window cannot pass */
    /* phase 2 */
    double *asum;                 /* lambda sum over the averaged windows */
    double *al;                   /* sum of the averaged windows' log sds, D */
    double *bm, *bl;              /* batch sums of window moments, 2 N_BATCH x D */
    int nbatch;                   /* N_BATCH or N_BATCH_MANY */
    int nb, blen, bfill;          /* complete batches, windows per batch,
                                     windows in the batch being filled */
    double *ratio;                /* scratch for average_error(), 2 D */
    double err_cut;               /* average_error() as the cut rule reads it */
    int n_avg;
} conv_state;

static double *dalloc(size_t n)
{
    double *p = (double *) R_alloc(n, sizeof(double));
    memset(p, 0, n * sizeof(double));
    return p;
}

static void conv_init(conv_state *c, const bbvi_family *fam, int D, int K,
                      int W, double tol)
{
    c->fam = fam; c->D = D; c->K = K; c->W = W; c->tol = tol;
    c->wsum = dalloc(K); c->gsum = dalloc(K); c->gsumsq = dalloc(K);
    c->asum = dalloc(K);
    c->wm = dalloc(D); c->wl = dalloc(D);
    c->hm = dalloc((size_t) LAG * D); c->hl = dalloc((size_t) LAG * D);
    c->al = dalloc(D);
    /* a 99.5% quantile over many coordinates' estimated errors reads their
       estimation noise too (see average_error()): with more batches, less
       of it (at D = 2e4: 2,150 iterations with 4-8 batches, 1,200 before
       with a growing number of windows) */
    c->nbatch = 2 * D > TOL_ALL_MAX ? N_BATCH_MANY : N_BATCH;
    c->bm = dalloc((size_t) 2 * c->nbatch * D); c->bl = dalloc((size_t) 2 * c->nbatch * D);
    c->nb = 0; c->blen = 1; c->bfill = 0;
    c->ratio = dalloc(2 * (size_t) D);
    /* the window's gradient standard errors are estimated from W values:
       Student-t with W - 1 df, not normal (with the normal quantile the
       test fails 41% of stationary windows at K = 4e4 and 59% at 2e5,
       against the 5% it is set for; measured 12 of 29 at K = 4e4) */
    c->z_grad = Rf_qt(1.0 - 0.05 / (2.0 * K), W - 1.0, 1, 0);
    c->n = 0; c->n_windows = 0; c->passes = 0; c->phase = 1; c->n_avg = 0;
    c->elbo_sum = c->elbo_sumsq = 0.0;
    c->has_best = 0;
    c->stalls = 0;
    c->outside_windows = 0;
    c->skip_grad = NULL;
    c->noise_cuts = 1;
    c->stale = 0;
    c->hchol = NULL;
    c->n_newton = 0;
    c->newton_dist = 0.0;
}

/* Watch the distance left to the optimum (newton_far()) with log p's
   negative Hessian at the mode, Hz (D x D, in z). */
static void conv_set_newton(conv_state *c, const double *Hz)
{
    int D = c->D;
    double *L = dalloc((size_t) D * D);
    if (!bbvi_chol(D, Hz, L)) return;
    c->hchol = L;
    c->nstep = dalloc(D); c->nsum = dalloc(D); c->nsumsq = dalloc(D);
}

/* Add an iteration's Newton step for q's means (its gradient of them,
   grad[0 .. D), through Hz^-1) to the averaging span's sums: iterations
   draw afresh, so their steps are independent given q, and the span's
   hundreds of them estimate the mean step's standard error well (its few
   windows would not: at 4 windows the t quantile is 5.8) */
static void newton_add(conv_state *c, const double *grad)
{
    int D = c->D;
    memcpy(c->nstep, grad, sizeof(double) * D);
    bbvi_chol_solve(D, c->hchol, c->nstep);
    for (int d = 0; d < D; d++) {
        c->nsum[d] += c->nstep[d];
        c->nsumsq[d] += c->nstep[d] * c->nstep[d];
    }
    c->n_newton++;
}

/* A flat, curved valley of the ELBO (a Gaussian process's hyperparameters
   under mean-field q) leaves a gradient that no window can tell from zero
   (0.09 in q-sd units, standard error 0.016 over 200 iterations), on a
   curvature of 0.001 in those units: the optimum is 40 q-sds away, and
   the averaged iterates, crawling along the valley, look converged.
   Log p's Hessian at the mode turns the averaged gradient into that
   distance (gp_pois_regr: 45 and 42 q-sds estimated, 41 measured). Far
   (more than NEWTON_MIN q-sds on some mean) and significantly so (beyond
   2.576 standard errors of the span's mean step; no Bonferroni factor:
   the steps of the means share the valley's direction, and a false alarm
   only lets the averaging go on): not converged. */
static int newton_far(conv_state *c)
{
    int n = c->n_newton, D = c->D, far = 0;
    if (!c->hchol || n < 2 * c->W) return 0;
    const double zq = 2.576;
    c->newton_dist = 0.0;
    for (int d = 0; d < D; d++) {
        double sd_q = exp(c->al[d] / c->n_avg);   /* q's sd over the span, in z */
        double m = c->nsum[d] / n;
        double v = fmax((c->nsumsq[d] - n * m * m) / (n - 1), 0.0) / n;
        if (fabs(m) > NEWTON_MIN * sd_q && fabs(m) > zq * sqrt(v)) {
            far = 1;
            c->newton_dist = fmax(c->newton_dist, fabs(m) / sd_q);
        }
    }
    return far;
}

static void conv_clear_window(conv_state *c)
{
    memset(c->wsum, 0, sizeof(double) * c->K);
    memset(c->gsum, 0, sizeof(double) * c->K);
    memset(c->gsumsq, 0, sizeof(double) * c->K);
    c->elbo_sum = c->elbo_sumsq = 0.0;
    c->outside = c->drawn = 0.0;
    c->n = 0;
}

static void conv_clear_average(conv_state *c)
{
    int D = c->D;
    if (c->hchol) {
        memset(c->nsum, 0, sizeof(double) * D);
        memset(c->nsumsq, 0, sizeof(double) * D);
        c->n_newton = 0;
    }
    memset(c->al, 0, sizeof(double) * D);
    memset(c->bm, 0, sizeof(double) * 2 * c->nbatch * D);
    memset(c->bl, 0, sizeof(double) * 2 * c->nbatch * D);
    c->nb = 0; c->blen = 1; c->bfill = 0;
    c->n_avg = 0; c->passes = 0; c->phase = 1;
}

/* Forget everything after a restart from an earlier point. */
static void conv_restart(conv_state *c)
{
    conv_clear_window(c);
    conv_clear_average(c);
    c->n_windows = 0;
    c->has_best = 0;
    c->stalls = 0;
    c->outside_windows = 0;
}

/* A window whose ELBO is clearly below the best window's, or whose ELBO
   noise has grown far beyond it, cannot be part of a converged fit: both
   are what a q that drifts away or blows up looks like, and both escape
   tests measured in q's own sds and in the window's own Monte Carlo error
   (an exploding q makes that error huge). Iterates that jitter around the
   optimum lower the ELBO a little and for real, so only a loss beyond
   ELBO_DROP counts. */
static int worse_than_best(conv_state *c, double em, double ev)
{
    int worse = 0;
    if (c->has_best) {
        double se = sqrt((ev + c->best_ev) / c->W);
        worse = em < c->best_em - Z_DRIFT * se - ELBO_DROP ||
                ev > NOISE_GROWTH * c->best_ev + 1e-2;
    }
    if (!c->has_best || em > c->best_em) {
        c->best_em = em; c->best_ev = ev; c->has_best = 1;
    }
    return worse;
}

/* Marginal means and log sds of q at lambda. */
static void moments_lsd(conv_state *c, const double *lambda, double *m,
                        double *lsd)
{
    int D = c->D;
    c->fam->marginals(c->fam, D, lambda, m, lsd);
    for (int d = 0; d < D; d++) lsd[d] = log(lsd[d]);
}

/* (a) and (b) of phase 1 against an earlier window. */
static int no_drift(const conv_state *c, double we, double wev,
                    const double *pm, const double *pl, double pe, double pev)
{
    for (int d = 0; d < c->D; d++) {
        if (fabs(c->wm[d] - pm[d]) > DRIFT_SD * exp(c->wl[d])) return 0;
        if (fabs(c->wl[d] - pl[d]) > DRIFT_SD) return 0;
    }
    double se = sqrt((wev + pev) / c->W);
    return we - pe <= Z_DRIFT * se + 1e-8 * fabs(we);
}

/* Variance of the mean of a moment over the averaging span, from its nb
   batch sums x[0], x[stride], ... of blen windows each (n_win windows in
   all): the batch means' s^2 / (n_win / blen), inflated by (1 + r) /
   (1 - r), r their lag-1 autocorrelation clamped to [0, 0.9]. The batches
   double in length (neighbours merged) whenever there are 2 N_BATCH of
   them (N_BATCH_MANY for many coordinates), so that they grow with the span and outgrow the iterates'
   autocorrelation time: window averages of 25-50 iterations are strongly
   correlated when the iterates wander slowly (along the ridge of a
   correlated posterior under mean-field: lag-25 autocorrelation 0.68 and
   an autocorrelation time of 90 iterations for the means on a 2-D Gaussian
   with correlation 0.9), and a standard error from three of them called a
   0.14 sd error 0.02. */
static double var_of_mean(int nb, const double *x, size_t stride, int blen,
                          int n_win)
{
    double mu = 0.0, ss = 0.0, cx = 0.0;
    for (int i = 0; i < nb; i++) mu += x[i * stride];
    mu /= nb;
    for (int i = 0; i < nb; i++) {
        double e = x[i * stride] / blen - mu / blen;
        ss += e * e;
        if (i > 0) cx += e * (x[(i - 1) * stride] / blen - mu / blen);
    }
    double v = ss / (nb - 1) / ((double) n_win / blen);
    if (ss <= 0) return v;
    double r = fmin(fmax(cx / ss, 0.0), 0.9);
    return v * (1 + r) / (1 - r);
}

/* Largest standard error of the phase-2 average, in units of tol. The
   error is itself estimated from n window averages: scaled by the Student-t
   to normal ratio of 95% quantiles, so that a lucky small spread among few
   windows does not pass for precision. With more than TOL_ALL_MAX of them
   (means and log sds), the largest of 2D noisy estimates says more about
   their noise than about the fit (at D = 1e5 it is several times the
   typical error, and would hold a fit for thousands of iterations): the
   TOL_SHARE quantile is used instead, so all but 0.5% of the coordinates
   meet tol. Up to TOL_ALL_MAX estimates the rule is the maximum, as it was. */
static double average_error(conv_state *c)
{
    int n = c->nb, D = c->D, m = 2 * D;
    double worst = 0.0;
    double tfac = Rf_qt(0.95, n - 1.0, 1, 0) / Rf_qnorm5(0.95, 0.0, 1.0, 1, 0);
    int nw = c->nb * c->blen;   /* windows in complete batches */
    for (int d = 0; d < D; d++) {
        double vm = var_of_mean(n, c->bm + d, D, c->blen, nw);
        double vl = var_of_mean(n, c->bl + d, D, c->blen, nw);
        c->ratio[2 * d] = sqrt(vm) / (c->tol * exp(c->al[d] / c->n_avg));
        c->ratio[2 * d + 1] = sqrt(vl) / c->tol;
    }
    if (m <= TOL_ALL_MAX) {
        for (int i = 0; i < m; i++) worst = fmax(worst, c->ratio[i]);
    } else {
        /* NaN ratios (none in practice) count as failing */
        for (int i = 0; i < m; i++) if (ISNAN(c->ratio[i])) c->ratio[i] = R_PosInf;
        int k = (int) floor(TOL_SHARE * m);   /* 0-based rank from below */
        if (k > m - 1) k = m - 1;
        rPsort(c->ratio, m, k);
        worst = c->ratio[k];
        /* the quantile of m estimated errors is mostly the noise of their
           estimation from n windows: even if every coordinate had the same
           error, it would sit sqrt(qchisq(TOL_SHARE, n - 1) / (n - 1))
           above it (2.3 times at n = 3). Fine for deciding convergence
           (conservative), not for deciding that averaging is hopeless:
           the cut rule sees the quantile without that factor. */
        c->err_cut = worst * tfac /
            sqrt(Rf_qchisq(TOL_SHARE, n - 1.0, 1, 0) / (n - 1.0));
        return worst * tfac;
    }
    c->err_cut = worst * tfac;
    return worst * tfac;
}

/* Close a window: 1 when the fit has converged, 2 when the step size should
   be cut, else 0. */
static int conv_window(conv_state *c)
{
    int D = c->D, K = c->K, W = c->W;
    for (int k = 0; k < K; k++) c->wsum[k] /= W;       /* now the average */
    moments_lsd(c, c->wsum, c->wm, c->wl);
    double em = c->elbo_sum / W;
    double ev = fmax((c->elbo_sumsq - W * em * em) / (W - 1), 0.0);
    int verdict = 0;
    /* Draws outside the support (a dependent bound written as -Inf in the
       log-joint) are dropped by the estimators, which then see only the
       part of q inside: nothing holds q back, and it can settle with most
       of its mass outside. Such a q is not an answer. */
    int outside = c->outside > MAX_OUTSIDE * c->drawn;
    c->outside_windows = outside ? c->outside_windows + 1 : 0;
    int worse = worse_than_best(c, em, ev) || outside || c->stale;
    if (c->phase == 2 && worse) {
        /* back to optimising: the average so far is not of a stationary q */
        conv_clear_average(c);
    }
    if (c->phase == 1) {
        int pass = c->n_windows >= 1;
        if (pass) {
            int j = (c->n_windows - 1) % LAG;
            pass = no_drift(c, em, ev, c->hm + (size_t) j * D,
                            c->hl + (size_t) j * D, c->he[j], c->hev[j]);
        }
        if (pass && c->n_windows >= LAG) {
            int j = (c->n_windows - LAG) % LAG;
            pass = no_drift(c, em, ev, c->hm + (size_t) j * D,
                            c->hl + (size_t) j * D, c->he[j], c->hev[j]);
        }
        for (int k = 0; pass && k < K; k++) {
            if (c->skip_grad && c->skip_grad[k]) continue;
            double gm = c->gsum[k] / W;
            double se = sqrt(fmax((c->gsumsq[k] - W * gm * gm) / (W - 1), 0.0) / W);
            if (fabs(gm) > c->z_grad * se + 1e-12) pass = 0;
        }
        if (worse) pass = 0;
        c->passes = pass ? c->passes + 1 : 0;
        /* Moving without gaining: the ELBO has not risen over the last LAG
           windows, yet the window fails. The moves are the optimiser's own
           noise, wandering along a flat direction of the ELBO (a ridge of a
           correlated posterior under mean-field), where it would drift for
           ever: cut the step, as when averaging is too noisy. */
        if (!pass && c->n_windows >= LAG) {
            int j = (c->n_windows - LAG) % LAG;
            double se = sqrt((ev + c->hev[j]) / W);
            c->stalls = em - c->he[j] <= Z_DRIFT * se ? c->stalls + 1 : 0;
            if (c->stalls >= LAG) { c->stalls = 0; verdict = 2; }
        } else {
            c->stalls = 0;
        }
        /* the average restarts with every phase-1 window: once stationary,
           it begins with the window that made it so */
        memcpy(c->asum, c->wsum, sizeof(double) * K);
        if (c->passes >= 2) c->phase = 2;
    } else {
        for (int k = 0; k < K; k++) c->asum[k] += c->wsum[k];
        double *bm = c->bm + (size_t) c->nb * D, *bl = c->bl + (size_t) c->nb * D;
        for (int d = 0; d < D; d++) {
            c->al[d] += c->wl[d];
            bm[d] += c->wm[d]; bl[d] += c->wl[d];
        }
        c->n_avg++;
        if (++c->bfill == c->blen) {
            c->nb++; c->bfill = 0;
            int nh = c->nbatch;
            if (c->nb == 2 * nh) {
                /* merge neighbours: nh batches twice as long */
                for (int i = 0; i < nh; i++)
                    for (int d = 0; d < D; d++) {
                        size_t a = (size_t) 2 * i * D + d, b = a + D, o = (size_t) i * D + d;
                        c->bm[o] = c->bm[a] + c->bm[b];
                        c->bl[o] = c->bl[a] + c->bl[b];
                    }
                memset(c->bm + (size_t) nh * D, 0, sizeof(double) * nh * D);
                memset(c->bl + (size_t) nh * D, 0, sizeof(double) * nh * D);
                c->nb = nh; c->blen *= 2;
            }
        }
        if (c->nb >= c->nbatch && c->bfill == 0) {
            double err = average_error(c);
            /* the error of the average falls as 1/sqrt(windows) */
            double ecut = c->err_cut;
            verdict = err <= 1.0 ? (newton_far(c) ? 0 : 1) :
                (c->noise_cuts && ecut * ecut > 3.0 ? 2 : 0);
        }
    }
    int j = c->n_windows % LAG;
    memcpy(c->hm + (size_t) j * D, c->wm, sizeof(double) * D);
    memcpy(c->hl + (size_t) j * D, c->wl, sizeof(double) * D);
    c->he[j] = em; c->hev[j] = ev;
    c->n_windows++;
    return verdict;
}

/* Record one iteration; conv_window()'s verdict at the end of a window,
   else 0. */
static int conv_add(conv_state *c, const double *lambda, const double *grad,
                    double elbo, int n_finite, int S)
{
    c->outside += S - n_finite;
    c->drawn += S;
    for (int k = 0; k < c->K; k++) {
        c->wsum[k] += lambda[k];
        c->gsum[k] += grad[k]; c->gsumsq[k] += grad[k] * grad[k];
    }
    c->elbo_sum += elbo; c->elbo_sumsq += elbo * elbo;
    if (c->hchol && c->phase == 2) newton_add(c, grad);
    if (++c->n < c->W) return 0;
    int verdict = conv_window(c);
    if (verdict == 2) {   /* the average so far belongs to the old step */
        memcpy(c->asum, c->wsum, sizeof(double) * c->K);
        conv_clear_average(c);
    }
    conv_clear_window(c);
    return verdict;
}

/* The answer: lambda averaged over the averaging phase (with the window
   that started it), or over the last complete window if the fit never got
   there. 0 if no window closed. */
static int conv_answer(const conv_state *c, double *out)
{
    if (c->n_windows == 0) return 0;
    int n = c->phase == 2 ? c->n_avg + 1 : 1;
    for (int k = 0; k < c->K; k++) out[k] = c->asum[k] / n;
    return 1;
}

static int all_finite(const double *x, int n)
{
    for (int i = 0; i < n; i++) if (!isfinite(x[i])) return 0;
    return 1;
}

/* What both entry points build from (spec, lower, upper, control): the
   target, the model on the unconstrained scale, the family and the
   estimator with its workspace for S draws. */
typedef struct {
    int D;
    const bbvi_family *fam;
    bbvi_target target;
    bbvi_model model;
    bbvi_estimator_ws ews;
    bbvi_estimator_fn estimate;
} vi_setup;

static void vi_setup_init(vi_setup *v, SEXP spec, SEXP lower, SEXP upper,
                          SEXP control, int S)
{
    int Dth, D = bbvi_check_bounds(spec, lower, upper, &Dth);
    SEXP fam_name = bbvi_list_get(control, "family");
    SEXP est_name = bbvi_list_get(control, "estimator");
    if (!Rf_isString(fam_name) || !Rf_isString(est_name))
        Rf_error("internal error: control needs family and estimator");
    if (S < 1) Rf_error("internal error: samples must be >= 1");
    v->D = D;
    v->fam = bbvi_family_from_control(control, D);
    int use_reparam = strcmp(CHAR(STRING_ELT(est_name, 0)), "reparam") == 0;
    bbvi_target_from_sexp(spec, Dth, S, &v->target);
    if (use_reparam && !v->target.has_grad)
        Rf_error("internal error: reparameterization needs a gradient");
    bbvi_model_init(&v->model, &v->target, REAL(lower), REAL(upper), D, S);
    bbvi_model_set_layout(&v->model, spec);
    SEXP ps = bbvi_list_get(control, "par_sizes");   /* optional layout */
    if (Rf_isInteger(ps)) bbvi_model_set_params(&v->model, Rf_length(ps), INTEGER(ps));
    bbvi_estimator_ws_init(&v->ews, v->fam, &v->model, S);
    v->ews.use_cv = bbvi_need_int(control, "control_variates");
    v->estimate = use_reparam ? bbvi_grad_reparam
                              : bbvi_score_estimator(&v->ews, control);
    /* blocks without a pathwise gradient (Gamma, Beta, categorical): with
       the target's gradient, the mixed estimator; without, score for all
       (Rao-Blackwellized when the target is factorised) */
    int *mask = (int *) R_alloc(v->ews.K, sizeof(int));
    if (bbvi_family_score_mask(v->fam, D, mask) > 0 && use_reparam) {
        v->ews.score_mask = mask;
        v->estimate = bbvi_rb_setup(&v->ews, control) ? bbvi_grad_rb_mixed
                                                      : bbvi_grad_mixed;
    }
    /* optional: categorical coordinates' gradient by enumerating values */
    SEXP en = bbvi_list_get(control, "enumerate");
    if (!Rf_isNull(en) && Rf_asInteger(en) == 1) bbvi_estimator_enumerate(&v->ews);
}

static int finite_positive(const double *x, int n)
{
    for (int i = 0; i < n; i++) if (!R_FINITE(x[i]) || !(x[i] > 0)) return 0;
    return 1;
}

/* optional control$quadratic (D x D, log p's negative Hessian at the mode,
   which is `shift`): the score estimator's second control variate,
   mean-field q with a diagonal preconditioner only (see bbvi_estimator_ws) */
static void set_quadratic(SEXP control, bbvi_estimator_ws *ews,
                          bbvi_estimator_fn estimate, const double *Pd)
{
    SEXP quadIn = bbvi_list_get(control, "quadratic");
    if (Rf_isNull(quadIn) || !Pd || estimate != bbvi_grad_score || !ews->use_cv) return;
    int D = ews->D;
    if (!Rf_isReal(quadIn) || XLENGTH(quadIn) != (R_xlen_t) D * D)
        Rf_error("internal error: `quadratic` must be %d x %d", D, D);
    const double *H = REAL(quadIn);
    double *Hz = (double *) R_alloc((size_t) D * D, sizeof(double));
    for (int j = 0; j < D; j++)
        for (int i = 0; i < D; i++)
            Hz[i + (size_t) j * D] = Pd[i] * H[i + (size_t) j * D] * Pd[j];
    bbvi_estimator_set_quadratic(ews, Hz);
}

/* control$precond (dense, full-rank only) or control$precond_diag, with
   control$shift; both NULL: none */
static void parse_precond(SEXP control, const bbvi_family *fam, int D,
                          const double **P, const double **Pd,
                          const double **shift)
{
    SEXP preP = bbvi_list_get(control, "precond"),
        preD = bbvi_list_get(control, "precond_diag"),
        preS = bbvi_list_get(control, "shift");
    if (Rf_isNull(preP) && Rf_isNull(preD)) return;
    if (!Rf_isNull(preP) && !Rf_isNull(preD))
        Rf_error("internal error: give `precond` or `precond_diag`, not both");
    if (!Rf_isReal(preS) || Rf_length(preS) != D)
        Rf_error("internal error: `shift` must be %d doubles", D);
    *shift = REAL(preS);
    if (!Rf_isNull(preD)) {
        if (!Rf_isReal(preD) || Rf_length(preD) != D || !finite_positive(REAL(preD), D))
            Rf_error("internal error: `precond_diag` must be %d positive doubles", D);
        *Pd = REAL(preD);
        return;
    }
    if (!bbvi_family_is_fullrank(fam))
        Rf_error("internal error: a dense `precond` is for the full-rank family only");
    if (!Rf_isReal(preP) || XLENGTH(preP) != (R_xlen_t) D * D)
        Rf_error("internal error: `precond` must be %d x %d", D, D);
    const double *p = REAL(preP);
    for (int j = 0; j < D; j++)
        for (int i = 0; i < D; i++) {
            double v = p[i + (size_t) j * D];
            if (!R_FINITE(v) || (i == j && !(v > 0)) || (i < j && v != 0))
                Rf_error("internal error: `precond` must be lower triangular with a positive diagonal");
        }
    *P = p;
}

/* .Call(C_vi_fit, target_spec, lower, upper, control) */
SEXP vi_fit(SEXP spec, SEXP lower, SEXP upper, SEXP control)
{
    SEXP opt_name = bbvi_list_get(control, "optimizer");
    if (!Rf_isString(opt_name)) Rf_error("internal error: control needs optimizer");
    int opt_type = strcmp(CHAR(STRING_ELT(opt_name, 0)), "adam") == 0 ? BBVI_ADAM : BBVI_ADAGRAD;
    int S = bbvi_need_int(control, "samples");
    int max_iter = bbvi_need_int(control, "max_iter");
    int max_restarts = bbvi_need_int(control, "max_restarts");
    double eta = bbvi_need_double(control, "eta");
    int W = bbvi_need_int(control, "window");
    if (max_iter < 1 || W < 2 || !(eta > 0))
        Rf_error("internal error: bad control values");
    vi_setup v;
    vi_setup_init(&v, spec, lower, upper, control, S);
    int D = v.D;
    const bbvi_family *fam = v.fam;
    bbvi_estimator_ws *ews = &v.ews;
    bbvi_estimator_fn estimate = v.estimate;

    /* optional preconditioner zeta = shift + P z (see bbvi_estimator_ws):
       dense (precond, D x D lower triangular: full-rank only) or diagonal
       (precond_diag, D scales: any family, O(D)) */
    const double *P = NULL, *Pd = NULL, *shift = NULL;
    double *Pinv = NULL, *shift_inv = NULL;
    parse_precond(control, fam, D, &P, &Pd, &shift);
    if (Pd) bbvi_estimator_set_precond_diag(ews, Pd, shift);
    set_quadratic(control, ews, estimate, Pd);
    if (P) {
        bbvi_estimator_set_precond(ews, P, shift);
        /* its inverse, to move the starting point into z */
        Pinv = (double *) R_alloc((size_t) D * D, sizeof(double));
        shift_inv = (double *) R_alloc(D, sizeof(double));
        memset(Pinv, 0, sizeof(double) * D * D);
        for (int j = 0; j < D; j++) {
            Pinv[j + (size_t) j * D] = 1.0 / P[j + (size_t) j * D];
            for (int i = j + 1; i < D; i++) {
                double a = 0.0;
                for (int k = j; k < i; k++) a += P[i + (size_t) k * D] * Pinv[k + (size_t) j * D];
                Pinv[i + (size_t) j * D] = -a / P[i + (size_t) i * D];
            }
        }
        for (int i = 0; i < D; i++) {
            double a = 0.0;
            for (int k = 0; k <= i; k++) a += Pinv[i + (size_t) k * D] * shift[k];
            shift_inv[i] = -a;
        }
    }
    int K = ews->K;

    double *lambda = (double *) R_alloc(K, sizeof(double));
    double *good = (double *) R_alloc(K, sizeof(double));
    double *grad = (double *) R_alloc(K, sizeof(double));
    SEXP init_mean = bbvi_list_get(control, "init_mean");
    SEXP init_lsd = bbvi_list_get(control, "init_log_sd");
    if (!Rf_isReal(init_mean) || Rf_length(init_mean) != D ||
        !Rf_isReal(init_lsd) || Rf_length(init_lsd) != D)
        Rf_error("internal error: init_mean and init_log_sd must be doubles of length %d", D);
    fam->init(fam, D, REAL(init_mean), REAL(init_lsd), lambda);
    /* the loop works on z: with a preconditioner the start is z ~ N(P^-1
       (init_mean - shift), I), i.e. q = N(init_mean, P P') */
    if (P || Pd) {
        double *zero = (double *) R_alloc(D, sizeof(double));
        double *mz = (double *) R_alloc(D, sizeof(double));
        memset(zero, 0, sizeof(double) * D);
        if (P) {
            fam->affine(fam, D, lambda, Pinv, shift_inv);
            memcpy(mz, lambda, sizeof(double) * D);
        } else {
            for (int d = 0; d < D; d++) mz[d] = (REAL(init_mean)[d] - shift[d]) / Pd[d];
        }
        /* optional init_log_sd_z: the start's log sds in z (default 0, q's
           sds are P's); natural-scale families, which P leaves alone (scale
           1, shift 0), take their own log sds from here */
        SEXP lsz = bbvi_list_get(control, "init_log_sd_z");
        if (!Rf_isNull(lsz)) {
            if (!Rf_isReal(lsz) || Rf_length(lsz) != D)
                Rf_error("internal error: init_log_sd_z must be %d doubles", D);
            memcpy(zero, REAL(lsz), sizeof(double) * D);
        }
        fam->init(fam, D, mz, zero, lambda);
    }
    memcpy(good, lambda, sizeof(double) * K);

    bbvi_optim opt;
    bbvi_optim_init(&opt, opt_type, K, eta);
    SEXP b2 = bbvi_list_get(control, "adam_b2");   /* optional */
    if (!Rf_isNull(b2)) {
        opt.b2 = Rf_asReal(b2);
        if (!(opt.b2 > 0 && opt.b2 < 1)) Rf_error("internal error: adam_b2 must be in (0, 1)");
    }
    double eta_floor = eta * pow(STEP_CUT, MAX_STEP_CUTS);

    conv_state conv;
    conv_init(&conv, fam, D, K, W, bbvi_need_double(control, "tol"));
    if (ews->quad) conv_set_newton(&conv, ews->quad);
    SEXP ncut = bbvi_list_get(control, "noise_cuts");   /* optional, default 1 */
    conv.noise_cuts = Rf_isNull(ncut) || Rf_asInteger(ncut) == 1;
    /* enumerated categorical logits: their gradient is nearly free of
       noise, so the window's test calls the tiny, steady push on values of
       negligible probability (which a cut step size makes ever slower)
       significant for ever; their marginal means and sds (and the ELBO)
       are tested as every coordinate's are */
    if (ews->n_cat > 0) {
        int *skip = (int *) R_alloc(K, sizeof(int));
        memset(skip, 0, sizeof(int) * K);
        for (int c = 0; c < ews->n_cat; c++)
            for (int k = 0; k < ews->cat_nv[c] - 1; k++) skip[ews->cat_k[c] + k] = 1;
        conv.skip_grad = skip;
    }

    /* the ELBO trace grows by doubling: max_iter may be far above what a
       fit uses (R_alloc'd memory is released when the call returns) */
    int trace_cap = max_iter < 10000 ? max_iter : 10000;
    double *trace = (double *) R_alloc(trace_cap, sizeof(double));
    int t = 0, good_t = 0, restarts = 0, converged = 0, status = VI_OK;
    int last_fail_nofinite = 0, nofinite_streak = 0, step_cuts = 0, unbounded = 0;
    double *sd_scratch = (double *) R_alloc(2 * (size_t) D, sizeof(double));
    /* squared gradients summed over the window, for bbvi_optim_stale */
    double *gsq = (double *) R_alloc(K, sizeof(double));
    memset(gsq, 0, sizeof(double) * K);
    int stale_windows = 0;
    long n_dropped = 0;
    double n_logp = 0, n_grad = 0;   /* evaluations of log p and its gradient */
    double n_enum = 0;               /* of n_logp, at enumerated values */

    /* cli's C progress bar: ticking costs a flag test per iteration */
    SEXP bar = R_NilValue;
    if (bbvi_need_int(control, "progress"))
        bar = cli_progress_bar(max_iter, bbvi_list_get(control, "progress_config"));
    PROTECT(bar);

    bbvi_rng_hold();
    while (t < max_iter) {
        if (t % 8 == 0) R_CheckUserInterrupt();
        if (!Rf_isNull(bar) && CLI_SHOULD_TICK) {
            cli_progress_set_status(bar, conv.phase == 1 ? "optimising" : "averaging");
            cli_progress_set(bar, t);
        }
        double elbo = estimate(ews, lambda, grad);
        n_logp += S + ews->n_extra;
        n_enum += ews->n_extra;
        if (estimate != bbvi_grad_score) n_grad += S;
        /* an iteration with no finite draw is skipped; only a run of them
           counts as a failure (a single one is plain bad luck at small S) */
        if (ews->n_finite == 0 && ++nofinite_streak < 10) continue;
        if (ews->n_finite > 0) nofinite_streak = 0;
        int failed = !R_FINITE(elbo) || !all_finite(grad, K);
        if (!failed) {
            n_dropped += S - ews->n_finite;
            bbvi_optim_step(&opt, lambda, grad);
            failed = !all_finite(lambda, K);
            for (int k = 0; k < K; k++) gsq[k] += grad[k] * grad[k];
        }
        if (failed) {
            /* divergence guard: back to the last good lambda with a smaller
               step; give up after max_restarts */
            last_fail_nofinite = ews->n_finite == 0;
            nofinite_streak = 0;
            if (++restarts > max_restarts) {
                status = last_fail_nofinite ? VI_NO_FINITE : VI_DIVERGED;
                break;
            }
            memcpy(lambda, good, sizeof(double) * K);
            opt.eta *= 0.1;
            bbvi_optim_reset(&opt);
            memset(gsq, 0, sizeof(double) * K);
            t = good_t;
            conv_restart(&conv);
            continue;
        }
        if (t == trace_cap) {
            int cap = trace_cap > max_iter / 2 ? max_iter : 2 * trace_cap;
            double *bigger = (double *) R_alloc(cap, sizeof(double));
            memcpy(bigger, trace, sizeof(double) * t);
            trace = bigger;
            trace_cap = cap;
        }
        trace[t++] = elbo;
        if (t % W == 0) {
            memcpy(good, lambda, sizeof(double) * K);
            good_t = t;
            /* steps frozen by an earlier, far larger gradient: no window
               passes, and after LAG such windows in a row the run stops
               (nothing moves for the next 10^4-10^5 iterations) */
            for (int k = 0; k < K; k++) gsq[k] /= W;
            conv.stale = bbvi_optim_stale(&opt, gsq) > 0;
            memset(gsq, 0, sizeof(double) * K);
            stale_windows = conv.stale ? stale_windows + 1 : 0;
            if (stale_windows >= LAG) break;
            if ((unbounded = bbvi_q_unbounded(fam, D, lambda, sd_scratch)) > 0) break;
        }
        int verdict = conv_add(&conv, lambda, grad, elbo, ews->n_finite, S);
        if (verdict == 2 && step_cuts < MAX_STEP_CUTS) {
            /* never below MAX_STEP_CUTS cuts by STEP_CUT: a step near 0
               freezes the iterates, and their average would look precise */
            opt.eta = fmax(opt.eta * STEP_CUT, eta_floor);
            step_cuts++;
        }
        converged = verdict == 1;
        if (converged) break;
    }
    bbvi_rng_release();
    cli_progress_done(bar);
    UNPROTECT(1);

    /* The answer is lambda averaged over the last complete window (iterate
       averaging removes most of the optimiser's own noise). */
    double *answer = (double *) R_alloc(K, sizeof(double));
    if (!conv_answer(&conv, answer)) memcpy(answer, lambda, sizeof(double) * K);
    if (P) {   /* back to zeta */
        fam->affine(fam, D, answer, P, shift);
        fam->affine(fam, D, lambda, P, shift);
    } else if (Pd) {
        fam->affine_diag(fam, D, answer, Pd, shift);
        fam->affine_diag(fam, D, lambda, Pd, shift);
    }
    int stop = converged ? STOP_CONVERGED :
        unbounded > 0 ? STOP_UNBOUNDED :
        stale_windows >= LAG ? STOP_FROZEN :
        conv.phase == 2 && conv.newton_dist > 0 ? STOP_FAR :
        conv.outside_windows > 0 ? STOP_OUTSIDE :
        (conv.phase == 2 ? STOP_MAXITER_NOISY : STOP_MAXITER_MOVING);
    bbvi_vi_result r = { answer, lambda, K, trace, t, converged, t, restarts,
                         vi_status_name[status], stop_name[stop], opt.eta,
                         (double) n_dropped, n_logp, n_grad, NA_REAL, NA_INTEGER,
                         n_enum, unbounded, conv.newton_dist };
    return bbvi_vi_result_sexp(fam, D, &r);
}

/* the Gaussian families (natural-scale ones, Gamma or Beta, have their
   sds on the parameter's own scale, and conditional ones theirs) */
static int is_gaussian_family(const bbvi_family *f)
{
    return f == &bbvi_family_meanfield || f == &bbvi_family_fullrank ||
        strcmp(f->name, "lowrank") == 0;
}

int bbvi_q_unbounded(const bbvi_family *fam, int D, const double *lambda,
                     double *scratch)
{
    double *mean = scratch, *sd = scratch + D;
    int nb = bbvi_family_n_blocks(fam);
    for (int j = 0; j < nb; j++) {
        int z0, dim, k0, K, e0;
        const bbvi_family *bf = bbvi_family_block(fam, j, &z0, &dim, &k0, &K, &e0);
        if (dim < 0) dim = D;   /* q is this one family */
        if (!is_gaussian_family(bf)) continue;
        bf->marginals(bf, dim, lambda + k0, mean, sd);
        for (int d = 0; d < dim; d++)
            if (!(sd[d] <= BBVI_SD_UNBOUNDED)) return z0 + d + 1;
    }
    return 0;
}

/* The result of a VI run as R reads it, for the stochastic path and the
   fixed-draw one (src/saa.c) alike: q at the answer (in zeta), the trace,
   the stop codes and the evaluation counts. */
SEXP bbvi_vi_result_sexp(const bbvi_family *fam, int D, const bbvi_vi_result *r)
{
    const char *names[] = { "lambda", "lambda_last", "mean", "q", "elbo",
                            "converged", "iterations", "status", "restarts",
                            "eta", "dropped_draws", "stop", "n_logp",
                            "n_grad", "grad_max", "lbfgs_code", "n_logp_enum",
                            "unbounded", "dist_left", "" };
    int K = r->K;
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SEXP lam = PROTECT(Rf_allocVector(REALSXP, K));
    memcpy(REAL(lam), r->answer, sizeof(double) * K);
    SET_VECTOR_ELT(out, 0, lam);
    SEXP lam_last = PROTECT(Rf_allocVector(REALSXP, K));
    memcpy(REAL(lam_last), r->last, sizeof(double) * K);
    SET_VECTOR_ELT(out, 1, lam_last);
    SEXP mean = PROTECT(Rf_allocVector(REALSXP, D));
    memcpy(REAL(mean), r->answer, sizeof(double) * D);   /* every family: mu first */
    SET_VECTOR_ELT(out, 2, mean);
    SEXP q = PROTECT(fam->to_sexp(fam, D, r->answer));
    SET_VECTOR_ELT(out, 3, q);
    SEXP tr = PROTECT(Rf_allocVector(REALSXP, r->n_trace));
    if (r->n_trace > 0) memcpy(REAL(tr), r->trace, sizeof(double) * r->n_trace);
    SET_VECTOR_ELT(out, 4, tr);
    SET_VECTOR_ELT(out, 5, Rf_ScalarLogical(r->converged));
    SET_VECTOR_ELT(out, 6, Rf_ScalarInteger(r->iterations));
    SET_VECTOR_ELT(out, 7, Rf_mkString(r->status));
    SET_VECTOR_ELT(out, 8, Rf_ScalarInteger(r->restarts));
    SET_VECTOR_ELT(out, 9, Rf_ScalarReal(r->eta));
    SET_VECTOR_ELT(out, 10, Rf_ScalarReal(r->dropped_draws));
    SET_VECTOR_ELT(out, 11, Rf_mkString(r->stop));
    SET_VECTOR_ELT(out, 12, Rf_ScalarReal(r->n_logp));
    SET_VECTOR_ELT(out, 13, Rf_ScalarReal(r->n_grad));
    SET_VECTOR_ELT(out, 14, Rf_ScalarReal(r->grad_max));
    SET_VECTOR_ELT(out, 15, Rf_ScalarInteger(r->lbfgs_code));
    SET_VECTOR_ELT(out, 16, Rf_ScalarReal(r->n_logp_enum));
    SET_VECTOR_ELT(out, 17, Rf_ScalarInteger(r->unbounded > 0 ? r->unbounded : NA_INTEGER));
    SET_VECTOR_ELT(out, 18, Rf_ScalarReal(r->dist_left > 0 ? r->dist_left : NA_REAL));
    UNPROTECT(6);
    return out;
}

/* .Call(C_constrain, zeta (D x S), lower, upper): theta on the user's scale */
SEXP constrain(SEXP zeta, SEXP lower, SEXP upper)
{
    int D = Rf_length(lower);
    if (!Rf_isReal(zeta) || !Rf_isReal(lower) || !Rf_isReal(upper) ||
        Rf_length(upper) != D || D < 1 || XLENGTH(zeta) % D != 0)
        Rf_error("internal error: bad arguments to constrain");
    int S = (int) (XLENGTH(zeta) / D);
    SEXP out = PROTECT(Rf_allocMatrix(REALSXP, D, S));
    bbvi_constrain(D, REAL(lower), REAL(upper), S, REAL(zeta), REAL(out));
    UNPROTECT(1);
    return out;
}

/* .Call(C_logdens, target_spec, lower, upper, zeta (D x S), want_grad):
   the unconstrained log density (and gradient) at given points; used by
   tests and diagnostics. */
SEXP logdens(SEXP spec, SEXP lower, SEXP upper, SEXP zeta, SEXP want_grad)
{
    int Dth, D = bbvi_check_bounds(spec, lower, upper, &Dth);
    if (!Rf_isReal(zeta) || XLENGTH(zeta) % D != 0)
        Rf_error("internal error: bad arguments to logdens");
    int S = (int) (XLENGTH(zeta) / D);
    int wg = Rf_asLogical(want_grad) == TRUE;
    bbvi_rng_not_held();
    bbvi_target target;
    bbvi_target_from_sexp(spec, Dth, S, &target);
    if (wg && !target.has_grad) Rf_error("internal error: target has no gradient");
    bbvi_model model;
    bbvi_model_init(&model, &target, REAL(lower), REAL(upper), D, S);
    bbvi_model_set_layout(&model, spec);
    SEXP lp = PROTECT(Rf_allocVector(REALSXP, S));
    SEXP gr = PROTECT(wg ? Rf_allocMatrix(REALSXP, D, S) : R_NilValue);
    bbvi_model_logdens(&model, S, REAL(zeta), REAL(lp), wg ? REAL(gr) : NULL);
    if (wg) Rf_setAttrib(lp, Rf_install("gradient"), gr);
    UNPROTECT(2);
    return lp;
}

/* .Call(C_grad_samples, target_spec, lower, upper, control): n independent
   gradient estimates at a fixed lambda, to study estimator noise. control:
   family, estimator, samples, lambda, n, control_variates; optionally
   precond_diag and shift (lambda is then q's on z = (zeta - shift) /
   precond_diag) and quadratic (see set_quadratic). Returns
   list(grad = K x n, elbo = n). */
SEXP grad_samples(SEXP spec, SEXP lower, SEXP upper, SEXP control)
{
    SEXP lam = bbvi_list_get(control, "lambda");
    int S = bbvi_need_int(control, "samples"), n = bbvi_need_int(control, "n");
    if (!Rf_isReal(lam) || n < 1) Rf_error("internal error: bad lambda or n");
    vi_setup v;
    vi_setup_init(&v, spec, lower, upper, control, S);
    bbvi_estimator_ws *ews = &v.ews;
    bbvi_estimator_fn estimate = v.estimate;
    /* optional: a diagonal preconditioner (precond_diag, shift) and the
       quadratic control variate, as in vi_fit */
    SEXP preD = bbvi_list_get(control, "precond_diag"), preS = bbvi_list_get(control, "shift");
    if (!Rf_isNull(preD)) {
        if (!Rf_isReal(preD) || Rf_length(preD) != v.D || !Rf_isReal(preS) || Rf_length(preS) != v.D)
            Rf_error("internal error: bad precond_diag or shift");
        bbvi_estimator_set_precond_diag(ews, REAL(preD), REAL(preS));
        set_quadratic(control, ews, estimate, REAL(preD));
    }
    int K = ews->K;
    if (Rf_length(lam) != K) Rf_error("internal error: lambda must have length %d", K);
    SEXP g = PROTECT(Rf_allocMatrix(REALSXP, K, n));
    SEXP el = PROTECT(Rf_allocVector(REALSXP, n));
    bbvi_rng_hold();
    for (int i = 0; i < n; i++) {
        if (i % 8 == 0) R_CheckUserInterrupt();
        REAL(el)[i] = estimate(ews, REAL(lam), REAL(g) + (size_t) i * K);
    }
    bbvi_rng_release();
    const char *names[] = { "grad", "elbo", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SET_VECTOR_ELT(out, 0, g);
    SET_VECTOR_ELT(out, 1, el);
    UNPROTECT(3);
    return out;
}
