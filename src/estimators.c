/* estimators.c: Monte Carlo estimates of the ELBO gradient.
   score:   E_q[h (log p - log q)], h = grad_lambda log q, with one control
            variate per coordinate of lambda (Ranganath, Gerrish & Blei 2014).
   reparam: E_eps[(dz/dlambda)' grad_z log p(z)] + grad_lambda entropy.
   Draws whose log density is not finite (NA, NaN, -Inf from the model) are
   left out of the ELBO estimate of that iteration; those at -Inf (outside
   the support) still push q back inside through a score term (see
   outside_score and bbvi_grad_score). */
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
    w->used = (int *) R_alloc((size_t) S, sizeof(int));
    w->n_cat = 0;
    w->n_extra = 0.0;
    w->score_mask = NULL;
    w->n_finite = 0;
    w->use_cv = 1;
    w->fixed_base = 0;
    w->P = w->Pdiag = w->shift = NULL;
    w->zs = NULL;
    w->log_det_P = 0.0;
    w->rb = NULL;
    w->quad = NULL;
    w->u = NULL;
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
    /* a finite-difference gradient steps in units of q's starting sds */
    if (w->model->target && w->model->target->fd_grad) {
        double *sd = (double *) R_alloc(D, sizeof(double));
        for (int d = 0; d < D; d++) {
            double a = 0.0;
            if (P) for (int j = 0; j <= d; j++) a += P[d + (size_t) j * D] * P[d + (size_t) j * D];
            sd[d] = P ? sqrt(a) : scale[d];
        }
        w->model->fd_scale = sd;
    }
}

int bbvi_estimator_set_quadratic(bbvi_estimator_ws *w, const double *Hz)
{
    if (!bbvi_family_is_meanfield(w->fam) || w->K != 2 * w->D) return 0;
    w->quad = Hz;
    if (!w->u) w->u = (double *) R_alloc((size_t) w->K * w->S, sizeof(double));
    return 1;
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

/* log density (and gradient) at S points zz (D x S, S <= w->S) into lp,
   through the preconditioner when there is one */
static void eval_points(bbvi_estimator_ws *w, const double *zz, int S,
                        double *lp, double *gz)
{
    int D = w->D;
    if (w->Pdiag) {
        const double *p = w->Pdiag;
        for (int s = 0; s < S; s++) {
            const double *z = zz + (size_t) s * D;
            double *zs = w->zs + (size_t) s * D;
            for (int i = 0; i < D; i++) zs[i] = w->shift[i] + p[i] * z[i];
        }
        bbvi_model_logdens(w->model, S, w->zs, lp, gz);
        for (int s = 0; s < S; s++) {
            lp[s] += w->log_det_P;
            if (!gz) continue;
            double *g = gz + (size_t) s * D;
            for (int i = 0; i < D; i++) g[i] *= p[i];
        }
        return;
    }
    if (!w->P) {
        bbvi_model_logdens(w->model, S, zz, lp, gz);
        return;
    }
    const double *P = w->P;
    for (int s = 0; s < S; s++) {
        const double *z = zz + (size_t) s * D;
        double *zs = w->zs + (size_t) s * D;
        for (int i = 0; i < D; i++) zs[i] = w->shift[i];
        for (int j = 0; j < D; j++)
            for (int i = j; i < D; i++) zs[i] += P[i + (size_t) j * D] * z[j];
    }
    bbvi_model_logdens(w->model, S, w->zs, lp, gz);
    for (int s = 0; s < S; s++) {
        lp[s] += w->log_det_P;
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

static void eval_draws(bbvi_estimator_ws *w, double *gz)
{
    eval_points(w, w->z, w->S, w->lp, gz);
}

void bbvi_estimator_enumerate(bbvi_estimator_ws *w)
{
    int n = bbvi_family_categorical_coords(w->fam, w->D, NULL, NULL, NULL, NULL);
    if (n == 0) return;
    w->n_cat = n;
    w->cat_zd = (int *) R_alloc(n, sizeof(int));
    w->cat_lo = (int *) R_alloc(n, sizeof(int));
    w->cat_nv = (int *) R_alloc(n, sizeof(int));
    w->cat_k = (int *) R_alloc(n, sizeof(int));
    bbvi_family_categorical_coords(w->fam, w->D, w->cat_zd, w->cat_lo, w->cat_nv, w->cat_k);
    int nmax = 2;
    for (int c = 0; c < n; c++) if (w->cat_nv[c] > nmax) nmax = w->cat_nv[c];
    w->zalt = (double *) R_alloc((size_t) w->D * w->S, sizeof(double));
    w->lpalt = (double *) R_alloc((size_t) w->S * nmax, sizeof(double));
    w->pcat = (double *) R_alloc(nmax, sizeof(double));
}

/* The gradient of the categorical coordinates' logits by enumeration: for
   coordinate c with probabilities p over its values and the n used draws
   of everything else, d ELBO / d l_k = E[p_k (lp(k) - sum_v p_v lp(v))] +
   dH / d l_k, the expectation over the other coordinates' draws only
   (their log q does not depend on c's value, so it drops out). The score
   estimator's noise from c's own draw (worst for values it rarely draws,
   which then stay rare) is gone. Draws where some value has a non-finite
   log density are left out of that coordinate's average. */
#define P_FROZEN 1e-3
/* One categorical coordinate's gradient from its values' log densities at
   n draws (lpv[i + v * n], v < nv; any terms that do not depend on the
   coordinate's value may be left out or kept: they cancel), its logits l
   (nv - 1) and probabilities p (scratch, nv): g (nv - 1) and, when terms
   is not NULL, each draw's term p_k (lpv(k) - sum_v p_v lpv(v)) at
   terms[k - 1 + i * tstride] (0 for draws left out). Draws where some
   value's log density is not finite are left out of the average. */
void bbvi_enum_grad(int nv, const double *l, int n, const double *lpv,
                    double *p, double *g, double *terms, int tstride)
{
    double mx = 0.0, sum = 0.0, H = 0.0;
    for (int k = 1; k < nv; k++) if (l[k - 1] > mx) mx = l[k - 1];
    p[0] = exp(-mx); sum = p[0];
    for (int k = 1; k < nv; k++) { p[k] = exp(l[k - 1] - mx); sum += p[k]; }
    for (int k = 0; k < nv; k++) {
        p[k] /= sum;
        if (p[k] > 0) H -= p[k] * log(p[k]);
    }
    for (int k = 1; k < nv; k++) g[k - 1] = 0.0;
    int m = 0;
    for (int i = 0; i < n; i++) {
        double eb = 0.0;
        int ok = 1;
        for (int v = 0; v < nv && ok; v++) {
            double x = lpv[i + (size_t) v * n];
            ok = isfinite(x);
            eb += p[v] * x;
        }
        for (int k = 1; k < nv; k++) {
            double tk = ok ? p[k] * (lpv[i + (size_t) k * n] - eb) : 0.0;
            g[k - 1] += tk;
            if (terms) terms[k - 1 + (size_t) i * tstride] = tk;
        }
        m += ok;
    }
    for (int k = 1; k < nv; k++) {
        if (m > 0) g[k - 1] /= m;
        g[k - 1] -= p[k] > 0 ? p[k] * (log(p[k]) + H) : 0.0;
        /* a value below P_FROZEN / nv that the gradient pushes lower
           still stays where it is: its logit would creep down for
           ever (more slowly with every cut of the step size), and the
           convergence rule would never see its gradient vanish; all
           such values together hold at most P_FROZEN of the mass */
        if (p[k] < P_FROZEN / nv && g[k - 1] < 0) g[k - 1] = 0.0;
    }
}

/* The gradient of the categorical coordinates' logits by enumeration: for
   coordinate c with probabilities p over its values and the n used draws
   of everything else, d ELBO / d l_k = E[p_k (lp(k) - sum_v p_v lp(v))] +
   dH / d l_k, the expectation over the other coordinates' draws only
   (their log q does not depend on c's value, so it drops out). The score
   estimator's noise from c's own draw (worst for values it rarely draws,
   which then stay rare) is gone. */
static void enumerate_grad(bbvi_estimator_ws *w, const double *lambda, int n,
                           double *grad)
{
    int D = w->D;
    w->n_extra = 0.0;
    for (int c = 0; c < w->n_cat; c++) {
        int nv = w->cat_nv[c], zd = w->cat_zd[c];
        for (int i = 0; i < n; i++)
            memcpy(w->zalt + (size_t) i * D, w->z + (size_t) w->used[i] * D,
                   sizeof(double) * D);
        /* a conditional block's partner b_j moves with the value, to
           m_v + s_v e at its own base draw e; - log q(b_j | v) then adds
           log s_v (the rest of it does not depend on v) */
        int zb;
        double bv, lsv;
        int pair = n > 0 && bbvi_family_cond_value(w->fam, zd, 0, lambda, w->eps, &zb, &bv, &lsv);
        for (int v = 0; v < nv; v++) {
            double *lv = w->lpalt + (size_t) v * n;
            for (int i = 0; i < n; i++) {
                double *za = w->zalt + (size_t) i * D;
                za[zd] = w->cat_lo[c] + v;
                if (pair) {
                    bbvi_family_cond_value(w->fam, zd, v, lambda,
                                           w->eps + (size_t) w->used[i] * w->NB, &zb, &bv, &lsv);
                    za[zb] = bv;
                }
            }
            eval_points(w, w->zalt, n, lv, NULL);
            for (int i = 0; pair && i < n; i++) {
                bbvi_family_cond_value(w->fam, zd, v, lambda,
                                       w->eps + (size_t) w->used[i] * w->NB, &zb, &bv, &lsv);
                lv[i] += lsv;
            }
        }
        w->n_extra += (double) nv * n;
        bbvi_enum_grad(nv, lambda + w->cat_k[c], n, w->lpalt, w->pcat,
                       grad + w->cat_k[c], NULL, 0);
    }
}

/* log density at n points zz (D x n) through the preconditioner */
void bbvi_estimator_eval_points(bbvi_estimator_ws *w, const double *zz, int n,
                                double *lp)
{
    eval_points(w, zz, n, lp, NULL);
}

static void draw(bbvi_estimator_ws *w, const double *lambda)
{
    if (!w->fixed_base) w->fam->draw_base(w->fam, w->D, w->S, w->eps);
    w->fam->reparam(w->fam, w->D, lambda, w->S, w->eps, w->z);
}

void bbvi_estimator_draw_eval(bbvi_estimator_ws *w, const double *lambda,
                              double *gz)
{
    draw(w, lambda);
    eval_draws(w, gz);
}

static int finite_lp(double x) { return isfinite(x); }

#define OUTSIDE_DROP 10.0

/* draw s has a finite log density and gradient */
static int finite_draw(const bbvi_estimator_ws *w, int s)
{
    const double *g = w->gz + (size_t) s * w->D;
    int ok = finite_lp(w->lp[s]);
    for (int d = 0; ok && d < w->D; d++) ok = isfinite(g[d]);
    return ok;
}

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
    w->used[n] = s;
    return wt;
}

/* The quadratic control variate's terms for the n packed draws (mean-field
   q, lambda = (m, log s) in z's coordinates): u = h (Q - log q) - g, with
   Q(z) = -z' Hz z / 2 and g = grad_lambda (E_q[Q] + entropy), so that
   E_q[u] = 0 (E_q[h f] = grad E_q[f] for f free of lambda, and
   E_q[h log q] = -grad entropy). Where log p is close to a quadratic with
   q's correlations missing from log q (mean-field on a correlated
   posterior), log p - log q carries the cross terms sum H_ij z_i z_j,
   which the per-coordinate baseline cannot remove and u can. */
static void quadratic_terms(bbvi_estimator_ws *w, const double *lambda, int n)
{
    int D = w->D, K = w->K;
    const double *Hz = w->quad;
    double *g = w->work2;
    for (int d = 0; d < D; d++) {   /* E_q[Q] = -(m'Hz m + sum Hz_dd s_d^2) / 2 */
        double a = 0.0;
        for (int j = 0; j < D; j++) a += Hz[d + (size_t) j * D] * lambda[j];
        g[d] = -a;
        g[D + d] = -Hz[d + (size_t) d * D] * exp(2.0 * lambda[D + d]) + 1.0;
    }
    for (int i = 0; i < n; i++) {
        int s = w->used[i];
        const double *z = w->z + (size_t) s * D, *e = w->eps + (size_t) s * w->NB;
        double Q = 0.0;
        for (int j = 0; j < D; j++) {
            double a = 0.0;
            for (int d = j + 1; d < D; d++) a += Hz[d + (size_t) j * D] * z[d];
            Q -= z[j] * (a + 0.5 * Hz[j + (size_t) j * D] * z[j]);
        }
        double r = Q - w->fam->log_q(w->fam, D, lambda, e);
        const double *h = w->h + (size_t) i * K;
        double *u = w->u + (size_t) i * K;
        for (int k = 0; k < K; k++) u[k] = h[k] * r - g[k];
    }
}

/* bbvi_score_combine with two control variates per entry, h and u: the
   mean of f - a_k h - c_k u, (a_k, c_k) the least-squares regression of f
   on both over the other draws (leave one out, so the estimate stays
   unbiased). Where u explains nothing, c_k is near 0 and this is the
   one-variate estimate, up to the noise of one more coefficient. A
   singular 2 x 2 system falls back to h alone. */
static void score_combine_quadratic(int n, int K, const double *h, const double *f,
                                    const double *u, double *grad)
{
    double m = n - 1;
    for (int k = 0; k < K; k++) {
        double sf = 0, sh = 0, su = 0, shh = 0, suu = 0, shu = 0, sfh = 0, sfu = 0;
        for (int i = 0; i < n; i++) {
            double fi = f[k + (size_t) i * K], hi = h[k + (size_t) i * K],
                ui = u[k + (size_t) i * K];
            sf += fi; sh += hi; su += ui;
            shh += hi * hi; suu += ui * ui; shu += hi * ui;
            sfh += fi * hi; sfu += fi * ui;
        }
        double acc = 0.0;
        for (int i = 0; i < n; i++) {
            double fi = f[k + (size_t) i * K], hi = h[k + (size_t) i * K],
                ui = u[k + (size_t) i * K];
            double f1 = sf - fi, h1 = sh - hi, u1 = su - ui;
            double chh = (shh - hi * hi) - h1 * h1 / m, cuu = (suu - ui * ui) - u1 * u1 / m,
                chu = (shu - hi * ui) - h1 * u1 / m, cfh = (sfh - fi * hi) - f1 * h1 / m,
                cfu = (sfu - fi * ui) - f1 * u1 / m;
            double det = chh * cuu - chu * chu, a, c;
            if (det > 1e-10 * chh * cuu && det > 0) {
                a = (cuu * cfh - chu * cfu) / det;
                c = (chh * cfu - chu * cfh) / det;
            } else {
                a = chh > 0 ? cfh / chh : (h1 != 0 ? f1 / h1 : 0.0);
                c = 0.0;
            }
            acc += fi - a * hi - c * ui;
        }
        grad[k] = acc / n;
    }
}

double bbvi_grad_score(bbvi_estimator_ws *w, const double *lambda, double *grad)
{
    int K = w->K, S = w->S;
    bbvi_estimator_draw_eval(w, lambda, NULL);

    /* keep the finite draws, packed at the front of h and f */
    int n = 0;
    double elbo = 0.0, wt_min = R_PosInf;
    for (int s = 0; s < S; s++) {
        if (!finite_lp(w->lp[s])) continue;
        double wt = score_draw(w, lambda, s, n);
        if (!isfinite(wt)) continue;
        elbo += wt;
        if (wt < wt_min) wt_min = wt;
        n++;
    }
    w->n_finite = n;
    if (n == 0) {
        memset(grad, 0, sizeof(double) * K);
        return R_NaN;
    }
    /* Draws where log p is -Inf (a region the log-joint rules out) enter
       the gradient, not the ELBO estimate, with a weight OUTSIDE_DROP
       nats below the lowest finite one: left out, nothing in the gradient
       would hold q inside, and it drifts out (the ELBO over the draws
       inside even rewards that). */
    int m = n;
    if (n < S && !w->n_cat) {
        for (int s = 0; s < S; s++) {
            if (finite_lp(w->lp[s]) || ISNAN(w->lp[s])) continue;
            if (ISNAN(score_draw(w, lambda, s, m))) continue;   /* log q not finite */
            double *h = w->h + (size_t) m * K, *f = w->f + (size_t) m * K;
            for (int k = 0; k < K; k++) f[k] = h[k] * (wt_min - OUTSIDE_DROP);
            m++;
        }
    }
    if (w->quad && w->use_cv && m >= 4) {
        quadratic_terms(w, lambda, m);
        score_combine_quadratic(m, K, w->h, w->f, w->u, grad);
    } else bbvi_score_combine(m, K, w->h, w->f, NULL, w->use_cv, grad, NULL);
    if (w->n_cat) enumerate_grad(w, lambda, n, grad);
    return elbo / n;
}

/* grad[k] for the entries with mask[k] (all when mask is NULL; the others
   are left as they are) from n draws' scores h and weighted scores f (K x n):
   the mean of f - a_k h, with a_k = Cov(f_k, h_k) / Var(h_k) estimated
   leaving draw s out when it is applied to draw s, so it is independent of
   that draw and the estimate stays unbiased. Where h_k does not vary over
   the other draws (a category that none of them drew: h_k = -p_k for all),
   the covariance says nothing, and a_k is the other draws' mean weight
   instead (f_k / h_k; a baseline, just as independent of the draw): without
   it such an entry's estimate is -p_k times the ELBO, a constant far from 0
   until the category is drawn, which the convergence rule reads as a
   gradient that never vanishes. No control variate without use_cv or with
   n < 3. terms, when not NULL, gets the per-draw terms f - a_k h (K x n). */
void bbvi_score_combine(int n, int K, const double *h, const double *f,
                        const int *mask, int use_cv, double *grad, double *terms)
{
    /* draw by draw, entries innermost: f and h are K x n by column, and
       walking them entry by entry (stride K) cost a fifth of a score
       iteration's time; the sums keep their order, so the result is the
       same to the bit */
    if (n < 3 || !use_cv) {
        memset(grad, 0, sizeof(double) * K);
        for (int i = 0; i < n; i++) {
            const double *fi = f + (size_t) i * K;
            for (int k = 0; k < K; k++) grad[k] += fi[k] / n;
            if (terms) memcpy(terms + (size_t) i * K, fi, sizeof(double) * K);
        }
        if (mask) for (int k = 0; k < K; k++) if (!mask[k]) grad[k] = 0.0;
        return;
    }
    const void *vmax = vmaxget();
    double *sf = (double *) R_alloc((size_t) 4 * K, sizeof(double));
    double *sh = sf + K, *sfh = sh + K, *shh = sfh + K;
    memset(sf, 0, sizeof(double) * 4 * (size_t) K);
    for (int i = 0; i < n; i++) {
        const double *fi = f + (size_t) i * K, *hi = h + (size_t) i * K;
        for (int k = 0; k < K; k++) {
            sf[k] += fi[k]; sh[k] += hi[k];
            sfh[k] += fi[k] * hi[k]; shh[k] += hi[k] * hi[k];
        }
    }
    double m = n - 1;
    memset(grad, 0, sizeof(double) * K);
    for (int i = 0; i < n; i++) {
        const double *fi = f + (size_t) i * K, *hi = h + (size_t) i * K;
        double *ti = terms ? terms + (size_t) i * K : NULL;
        for (int k = 0; k < K; k++) {
            double fv = fi[k], hv = hi[k];
            double f1 = sf[k] - fv, h1 = sh[k] - hv;
            /* the other draws' covariance and variance, both times m
               (one division instead of three: divisions were most of
               this loop's time) */
            double shh1 = shh[k] - hv * hv;
            double cov = m * (sfh[k] - fv * hv) - f1 * h1;
            double var = m * shh1 - h1 * h1;
            double a = var > 1e-10 * m * shh1 && var > 0 ? cov / var :
                (h1 != 0 ? f1 / h1 : 0.0);
            grad[k] += fv - a * hv;
            if (ti) ti[k] = fv - a * hv;
        }
    }
    for (int k = 0; k < K; k++) grad[k] /= n;
    if (mask) for (int k = 0; k < K; k++) if (!mask[k]) grad[k] = 0.0;
    vmaxset(vmax);
}

/* Pathwise for the blocks that have it, score for the others: both are
   unbiased for their own entries of the gradient (the pathwise one because
   the other blocks' draws do not depend on these entries), so the mix is. */
static void outside_score(bbvi_estimator_ws *w, const double *lambda, double *grad);

double bbvi_grad_mixed(bbvi_estimator_ws *w, const double *lambda, double *grad)
{
    int D = w->D, K = w->K, S = w->S;
    const int *mask = w->score_mask;
    bbvi_estimator_draw_eval(w, lambda, w->gz);
    double *path = w->work2;
    memset(path, 0, sizeof(double) * K);
    int n = 0;
    double elbo = 0.0;
    for (int s = 0; s < S; s++) {
        const double *g = w->gz + (size_t) s * D;
        if (!finite_draw(w, s)) continue;
        double wt = score_draw(w, lambda, s, n);
        if (!isfinite(wt)) continue;
        w->fam->reparam_grad(w->fam, D, lambda, w->eps + (size_t) s * w->NB, g, path);
        elbo += wt;
        n++;
    }
    w->n_finite = n;
    memset(grad, 0, sizeof(double) * K);
    if (n == 0) return R_NaN;
    bbvi_score_combine(n, K, w->h, w->f, mask, w->use_cv, grad, NULL);
    w->fam->entropy_grad(w->fam, D, lambda, w->work);
    for (int k = 0; k < K; k++)
        if (!mask[k]) grad[k] = path[k] / n + w->work[k];
    if (w->n_cat) enumerate_grad(w, lambda, n, grad);
    /* -Inf draws hold q inside as in the reparameterization estimator (the
       score-masked blocks' weights cover only the draws inside) */
    if (n < S) outside_score(w, lambda, grad);
    return elbo / n;
}

/* Draws where log p is -Inf (a region the log-joint rules out, such as a
   dependent bound) have no pathwise gradient: left out, nothing would hold
   q inside, and its entropy would push it out. They get a score-function
   term instead, as if log p dropped by OUTSIDE_DROP nats at the edge of
   the support: OUTSIDE_DROP times the gradient of q's mass outside, -E[1_out
   h] (h = grad log q), estimated over all draws with the leave-one-out
   control variate (E[h] = 0, so it stays unbiased). The pathwise average
   over the draws inside stands in for the part of the gradient away from
   the edge. Added to grad. */
static void outside_score(bbvi_estimator_ws *w, const double *lambda, double *grad)
{
    int D = w->D, K = w->K, S = w->S, m = 0;
    double *g = w->work2;
    for (int s = 0; s < S; s++) {
        double lp = w->lp[s];
        int out = !ISNAN(lp) && lp == R_NegInf;
        if (!out && !finite_draw(w, s)) continue;   /* NA, or no finite gradient: left out */
        const double *e = w->eps + (size_t) s * w->NB;
        if (!isfinite(w->fam->log_q(w->fam, D, lambda, e))) continue;
        double *h = w->h + (size_t) m * K, *f = w->f + (size_t) m * K;
        w->fam->score(w->fam, D, lambda, e, h);
        for (int k = 0; k < K; k++) f[k] = out ? -OUTSIDE_DROP * h[k] : 0.0;
        m++;
    }
    if (m == 0) return;
    bbvi_score_combine(m, K, w->h, w->f, NULL, w->use_cv, g, NULL);
    for (int k = 0; k < K; k++) grad[k] += g[k];
}

double bbvi_grad_reparam(bbvi_estimator_ws *w, const double *lambda,
                         double *grad)
{
    int D = w->D, K = w->K, S = w->S;
    bbvi_estimator_draw_eval(w, lambda, w->gz);
    memset(grad, 0, sizeof(double) * K);
    int n = 0;
    double elbo = 0.0;
    for (int s = 0; s < S; s++) {
        const double *g = w->gz + (size_t) s * D;
        if (!finite_draw(w, s)) continue;
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
    if (n < S) outside_score(w, lambda, grad);
    return elbo / n;
}
