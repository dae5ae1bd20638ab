/* transforms.c: bounded parameters mapped to the real line, with the
   log-Jacobian, and the model log density on the unconstrained scale. */
#include "bbvi.h"
#include <math.h>
#include <float.h>

/* log of the logistic function, stable for large |x| */
static double log_inv_logit(double x)
{
    return -bbvi_log1pexp(-x);
}

static double inv_logit(double x)
{
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* One coordinate: theta, dtheta/dzeta, log|dtheta/dzeta| and its derivative. */
static void transform1(double lo, double up, double zeta, double *theta,
                       double *dtheta, double *logjac, double *dlogjac)
{
    int has_lo = isfinite(lo), has_up = isfinite(up);
    if (!has_lo && !has_up) {
        *theta = zeta; *dtheta = 1.0; *logjac = 0.0; *dlogjac = 0.0;
    } else if (has_lo && !has_up) {
        double e = exp(zeta);
        *theta = lo + e; *dtheta = e; *logjac = zeta; *dlogjac = 1.0;
    } else if (!has_lo && has_up) {
        double e = exp(zeta);
        *theta = up - e; *dtheta = e; *logjac = zeta; *dlogjac = 1.0;
    } else {
        double p = inv_logit(zeta), w = up - lo;
        double th = lo + w * p;
        /* keep theta strictly inside when p rounds to 0 or 1 */
        if (th <= lo) th = lo + w * DBL_EPSILON;
        if (th >= up) th = up - w * DBL_EPSILON;
        *theta = th;
        *dtheta = w * p * (1.0 - p);
        *logjac = log(w) + log_inv_logit(zeta) + log_inv_logit(-zeta);
        *dlogjac = 1.0 - 2.0 * p;
    }
}

void bbvi_constrain(int D, const double *lower, const double *upper, int S,
                    const double *zeta, double *theta)
{
    double dth, lj, dlj;
    for (int s = 0; s < S; s++)
        for (int d = 0; d < D; d++)
            transform1(lower[d], upper[d], zeta[d + (size_t) s * D],
                       &theta[d + (size_t) s * D], &dth, &lj, &dlj);
}

void bbvi_unconstrain(int D, const double *lower, const double *upper, int S,
                      const double *theta, double *zeta)
{
    for (int s = 0; s < S; s++)
        for (int d = 0; d < D; d++) {
            double lo = lower[d], up = upper[d], th = theta[d + (size_t) s * D];
            int has_lo = isfinite(lo), has_up = isfinite(up);
            double z;
            if (!has_lo && !has_up) z = th;
            else if (has_lo && !has_up) z = log(th - lo);
            else if (!has_lo && has_up) z = log(up - th);
            else { double p = (th - lo) / (up - lo); z = log(p) - log1p(-p); }
            zeta[d + (size_t) s * D] = z;
        }
}

void bbvi_model_init(bbvi_model *m, bbvi_target *t, const double *lower,
                     const double *upper, int D, int max_batch)
{
    m->D = D;
    m->lower = lower;
    m->upper = upper;
    m->target = t;
    m->max_batch = max_batch;
    m->theta = (double *) R_alloc((size_t) D * max_batch, sizeof(double));
    m->gtheta = (double *) R_alloc((size_t) D * max_batch, sizeof(double));
    m->logjac = (double *) R_alloc((size_t) max_batch, sizeof(double));
    m->n_par = D;
    m->par_z0 = m->par_zdim = NULL;
}

void bbvi_model_logdens(bbvi_model *m, int S, const double *zeta, double *lp,
                        double *grad)
{
    int D = m->D;
    double dth, lj, dlj;
    if (S > m->max_batch)
        Rf_error("internal error: batch of %d draws exceeds %d", S, m->max_batch);
    for (int s = 0; s < S; s++) {
        double acc = 0.0;
        for (int d = 0; d < D; d++) {
            size_t i = d + (size_t) s * D;
            transform1(m->lower[d], m->upper[d], zeta[i], &m->theta[i], &dth,
                       &lj, &dlj);
            acc += lj;
        }
        m->logjac[s] = acc;
    }
    m->target->eval(m->target, S, m->theta, lp, grad ? m->gtheta : NULL);
    for (int s = 0; s < S; s++) lp[s] += m->logjac[s];
    if (!grad) return;
    for (int s = 0; s < S; s++)
        for (int d = 0; d < D; d++) {
            size_t i = d + (size_t) s * D;
            double th;
            transform1(m->lower[d], m->upper[d], zeta[i], &th, &dth, &lj, &dlj);
            grad[i] = m->gtheta[i] * dth + dlj;
        }
}

/* The parameter layout: parameter j covers zdim[j] consecutive
   coordinates of zeta, in order. */
void bbvi_model_set_params(bbvi_model *m, int n_par, const int *zdim)
{
    int *z0 = (int *) R_alloc(n_par, sizeof(int));
    int *zd = (int *) R_alloc(n_par, sizeof(int));
    int off = 0;
    for (int j = 0; j < n_par; j++) {
        if (zdim[j] < 1) Rf_error("internal error: parameter sizes must be >= 1");
        z0[j] = off; zd[j] = zdim[j];
        off += zdim[j];
    }
    if (off != m->D)
        Rf_error("internal error: parameter sizes add to %d, not %d", off, m->D);
    m->n_par = n_par;
    m->par_z0 = z0;
    m->par_zdim = zd;
}

/* Per-parameter log-Jacobian, for transforms that act coordinate by
   coordinate: the sum of the coordinates' log-Jacobians. */
void bbvi_model_logjac_par(bbvi_model *m, int S, const double *zeta, double *out)
{
    int D = m->D, P = m->n_par;
    double th, dth, lj, dlj;
    for (int s = 0; s < S; s++)
        for (int j = 0; j < P; j++) {
            int z0 = m->par_z0 ? m->par_z0[j] : j;
            int zd = m->par_zdim ? m->par_zdim[j] : 1;
            double acc = 0.0;
            for (int d = z0; d < z0 + zd; d++) {
                transform1(m->lower[d], m->upper[d], zeta[d + (size_t) s * D],
                           &th, &dth, &lj, &dlj);
                acc += lj;
            }
            out[j + (size_t) s * P] = acc;
        }
}
