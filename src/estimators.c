/* estimators.c: Monte Carlo estimates of the ELBO gradient.
   score:   E_q[h (log p - log q)], h = grad_lambda log q, with one control
            variate per coordinate of lambda (Ranganath, Gerrish & Blei 2014).
   reparam: E_eps[(dz/dlambda)' grad_z log p(z)] + grad_lambda entropy.
   Draws whose log density is not finite (NA, NaN, -Inf from the model) are
   left out of both the gradient and the ELBO estimate of that iteration. */
#include "bbvi.h"
#include <math.h>
#include <string.h>

void bbvi_estimator_ws_init(bbvi_estimator_ws *w, const bbvi_family *fam,
                            bbvi_model *m, int S)
{
    int D = m->D, K = fam->n_lambda(fam, D), NB = fam->n_base(fam, D);
    w->fam = fam; w->model = m; w->D = D; w->K = K; w->S = S; w->NB = NB;
    w->eps = (double *) R_alloc((size_t) NB * S, sizeof(double));
    w->z = (double *) R_alloc((size_t) D * S, sizeof(double));
    w->gz = (double *) R_alloc((size_t) D * S, sizeof(double));
    w->lp = (double *) R_alloc((size_t) S, sizeof(double));
    w->h = (double *) R_alloc((size_t) K * S, sizeof(double));
    w->f = (double *) R_alloc((size_t) K * S, sizeof(double));
    w->work = (double *) R_alloc((size_t) K, sizeof(double));
    w->work2 = (double *) R_alloc((size_t) K, sizeof(double));
    w->wt = (double *) R_alloc((size_t) S, sizeof(double));
    w->score_mask = NULL;
    w->n_finite = 0;
    w->use_cv = 1;
    w->fixed_base = 0;
    w->P = w->Pdiag = w->shift = NULL;
    w->zs = NULL;
    w->log_det_P = 0.0;
}

/* Either preconditioner: a dense lower-triangular P (D x D) or a scale
   per coordinate, with the log-determinant of the map from its diagonal. */
static void set_precond(bbvi_estimator_ws *w, const double *P,
                        const double *scale, const double *shift)
{
    int D = w->D;
    w->P = P;
    w->Pdiag = scale;
    w->shift = shift;
    w->log_det_P = 0.0;
    if (!P && !scale) return;
    if (!w->zs) w->zs = (double *) R_alloc((size_t) D * w->S, sizeof(double));
    for (int d = 0; d < D; d++)
        w->log_det_P += log(P ? P[d + (size_t) d * D] : scale[d]);
}

void bbvi_estimator_set_precond(bbvi_estimator_ws *w, const double *P,
                                const double *shift)
{
    set_precond(w, P, NULL, shift);
}

void bbvi_estimator_set_precond_diag(bbvi_estimator_ws *w, const double *scale,
                                     const double *shift)
{
    set_precond(w, NULL, scale, shift);
}

/* log density (and gradient) at the current draws, through the
   preconditioner when there is one */
static void eval_draws(bbvi_estimator_ws *w, double *gz)
{
    int D = w->D, S = w->S;
    if (w->Pdiag) {
        const double *p = w->Pdiag;
        for (int s = 0; s < S; s++) {
            const double *z = w->z + (size_t) s * D;
            double *zs = w->zs + (size_t) s * D;
            for (int i = 0; i < D; i++) zs[i] = w->shift[i] + p[i] * z[i];
        }
        bbvi_model_logdens(w->model, S, w->zs, w->lp, gz);
        for (int s = 0; s < S; s++) {
            w->lp[s] += w->log_det_P;
            if (!gz) continue;
            double *g = gz + (size_t) s * D;
            for (int i = 0; i < D; i++) g[i] *= p[i];
        }
        return;
    }
    if (!w->P) {
        bbvi_model_logdens(w->model, S, w->z, w->lp, gz);
        return;
    }
    const double *P = w->P;
    for (int s = 0; s < S; s++) {
        const double *z = w->z + (size_t) s * D;
        double *zs = w->zs + (size_t) s * D;
        for (int i = 0; i < D; i++) zs[i] = w->shift[i];
        for (int j = 0; j < D; j++)
            for (int i = j; i < D; i++) zs[i] += P[i + (size_t) j * D] * z[j];
    }
    bbvi_model_logdens(w->model, S, w->zs, w->lp, gz);
    for (int s = 0; s < S; s++) {
        w->lp[s] += w->log_det_P;
        if (!gz) continue;
        /* gradient wrt z = P' (gradient wrt zeta), in place from the top */
        double *g = gz + (size_t) s * D;
        for (int j = 0; j < D; j++) {
            double a = 0.0;
            for (int i = j; i < D; i++) a += P[i + (size_t) j * D] * g[i];
            g[j] = a;
        }
    }
}

static void draw(bbvi_estimator_ws *w, const double *lambda)
{
    if (!w->fixed_base) w->fam->draw_base(w->fam, w->D, w->S, w->eps);
    w->fam->reparam(w->fam, w->D, lambda, w->S, w->eps, w->z);
}

static int finite_lp(double x) { return isfinite(x); }

/* The score part of a draw: h = grad log q and f = h (log p - log q) into
   slot n of w->h, w->f; its weight log p - log q, or NaN when log q is not
   finite (a Gamma or Beta draw that underflowed to the edge of its support:
   left out like a non-finite log p). */
static double score_draw(bbvi_estimator_ws *w, const double *lambda, int s, int n)
{
    int D = w->D, K = w->K;
    const double *e = w->eps + (size_t) s * w->NB;
    double lq = w->fam->log_q(w->fam, D, lambda, e);
    if (!isfinite(lq)) return R_NaN;
    double wt = w->lp[s] - lq;
    double *h = w->h + (size_t) n * K, *f = w->f + (size_t) n * K;
    w->fam->score(w->fam, D, lambda, e, h);
    for (int k = 0; k < K; k++) f[k] = h[k] * wt;
    w->wt[n] = wt;
    return wt;
}

/* grad[k] for the entries with mask[k] (all when mask is NULL) from the n
   packed draws of h and f. Control variate a_k = Cov(f_k, h_k) / Var(h_k),
   estimated leaving draw s out when it is applied to draw s, so it is
   independent of that draw and the estimate stays unbiased. Where h_k
   does not vary over the other draws (a category that none of them drew:
   h_k = -p_k for all), the covariance says nothing, and the control
   variate is the other draws' mean weight instead (a baseline, just as
   independent of the draw): without it such an entry's estimate is
   -p_k times the ELBO, a constant far from 0 until the category is drawn,
   which the convergence rule reads as a gradient that never vanishes. */
static void score_average(bbvi_estimator_ws *w, int n, const int *mask,
                          double *grad)
{
    int K = w->K;
    double sw = 0.0;
    for (int i = 0; i < n; i++) sw += w->wt[i];
    for (int k = 0; k < K; k++) {
        if (mask && !mask[k]) continue;
        double sf = 0, sh = 0, sfh = 0, shh = 0;
        for (int i = 0; i < n; i++) {
            double fi = w->f[k + (size_t) i * K], hi = w->h[k + (size_t) i * K];
            sf += fi; sh += hi; sfh += fi * hi; shh += hi * hi;
        }
        if (n < 3 || !w->use_cv) {   /* plain average (too few draws for a CV) */
            double a = 0.0;
            for (int i = 0; i < n; i++) a += w->f[k + (size_t) i * K] / n;
            grad[k] = a;
            continue;
        }
        double m = n - 1, acc = 0.0;
        for (int i = 0; i < n; i++) {
            double fi = w->f[k + (size_t) i * K], hi = w->h[k + (size_t) i * K];
            double f1 = sf - fi, h1 = sh - hi;
            double cov = (sfh - fi * hi) - f1 * h1 / m;
            double var = (shh - hi * hi) - h1 * h1 / m;
            double a = var > 1e-10 * (shh - hi * hi) && var > 0 ? cov / var :
                (sw - w->wt[i]) / m;
            acc += fi - a * hi;
        }
        grad[k] = acc / n;
    }
}

double bbvi_grad_score(bbvi_estimator_ws *w, const double *lambda, double *grad)
{
    int K = w->K, S = w->S;
    draw(w, lambda);
    eval_draws(w, NULL);

    /* keep the finite draws, packed at the front of h and f */
    int n = 0;
    double elbo = 0.0;
    for (int s = 0; s < S; s++) {
        if (!finite_lp(w->lp[s])) continue;
        double wt = score_draw(w, lambda, s, n);
        if (!isfinite(wt)) continue;
        elbo += wt;
        n++;
    }
    w->n_finite = n;
    memset(grad, 0, sizeof(double) * K);
    if (n == 0) return R_NaN;
    score_average(w, n, NULL, grad);
    return elbo / n;
}

/* Pathwise for the blocks that have it, score for the others: both are
   unbiased for their own entries of the gradient (the pathwise one because
   the other blocks' draws do not depend on these entries), so the mix is. */
double bbvi_grad_mixed(bbvi_estimator_ws *w, const double *lambda, double *grad)
{
    int D = w->D, K = w->K, S = w->S;
    const int *mask = w->score_mask;
    draw(w, lambda);
    eval_draws(w, w->gz);
    double *path = w->work2;
    memset(path, 0, sizeof(double) * K);
    int n = 0;
    double elbo = 0.0;
    for (int s = 0; s < S; s++) {
        const double *g = w->gz + (size_t) s * D;
        int ok = finite_lp(w->lp[s]);
        for (int d = 0; ok && d < D; d++) ok = isfinite(g[d]);
        if (!ok) continue;
        double wt = score_draw(w, lambda, s, n);
        if (!isfinite(wt)) continue;
        w->fam->reparam_grad(w->fam, D, lambda, w->eps + (size_t) s * w->NB, g, path);
        elbo += wt;
        n++;
    }
    w->n_finite = n;
    memset(grad, 0, sizeof(double) * K);
    if (n == 0) return R_NaN;
    score_average(w, n, mask, grad);
    w->fam->entropy_grad(w->fam, D, lambda, w->work);
    for (int k = 0; k < K; k++)
        if (!mask[k]) grad[k] = path[k] / n + w->work[k];
    return elbo / n;
}

double bbvi_grad_reparam(bbvi_estimator_ws *w, const double *lambda,
                         double *grad)
{
    int D = w->D, K = w->K, S = w->S;
    draw(w, lambda);
    eval_draws(w, w->gz);
    memset(grad, 0, sizeof(double) * K);
    int n = 0;
    double elbo = 0.0;
    for (int s = 0; s < S; s++) {
        const double *g = w->gz + (size_t) s * D;
        int ok = finite_lp(w->lp[s]);
        for (int d = 0; ok && d < D; d++) ok = isfinite(g[d]);
        if (!ok) continue;
        const double *e = w->eps + (size_t) s * w->NB;
        w->fam->reparam_grad(w->fam, D, lambda, e, g, grad);
        elbo += w->lp[s] - w->fam->log_q(w->fam, D, lambda, e);
        n++;
    }
    w->n_finite = n;
    if (n == 0) {
        memset(grad, 0, sizeof(double) * K);
        return R_NaN;
    }
    for (int k = 0; k < K; k++) grad[k] /= n;
    w->fam->entropy_grad(w->fam, D, lambda, w->work);
    for (int k = 0; k < K; k++) grad[k] += w->work[k];
    return elbo / n;
}
