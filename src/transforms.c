/* transforms.c: parameters mapped to the real line (bounded scalars
   coordinate by coordinate; simplexes and ordered vectors as a whole), with
   the log-Jacobian, and the model log density on the unconstrained scale. */
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

/* One coordinate: theta, dtheta/dzeta (negative for an upper bound only),
   log|dtheta/dzeta| and its derivative. */
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
        *theta = up - e; *dtheta = -e; *logjac = zeta; *dlogjac = 1.0;
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

/* ---- vector transforms ---------------------------------------------------

   Simplex of K (stick-breaking on K - 1 coordinates). With r_1 = 1 the
   stick left before piece k, for k = 1..K-1
       x_k = zeta_k - log(K - k),  v_k = logistic(x_k),
       theta_k = r_k v_k,  r_{k+1} = r_k (1 - v_k),  theta_K = r_K.
   The offset makes zeta = 0 the uniform simplex (v_k = 1 / (K - k + 1)).
   theta_{1..K-1} is triangular in zeta, so
       log|J| = sum_k log r_k + log v_k + log(1 - v_k).
   Everything runs on log r, so that a piece that underflows leaves the
   log-Jacobian finite.

   Ordered of K: theta_1 = zeta_1 (L + exp(zeta_1) with a finite lower bound
   L), theta_k = theta_{k-1} + exp(zeta_k): log|J| = sum_{k>1} zeta_k (plus
   zeta_1 with L). */

static double simplex_forward(int K, const double *z, double *th)
{
    double logr = 0.0, lj = 0.0;
    for (int k = 0; k < K - 1; k++) {
        double x = z[k] - log((double) (K - 1 - k));
        double lv = log_inv_logit(x), l1v = log_inv_logit(-x);
        th[k] = exp(logr + lv);
        lj += logr + lv + l1v;
        logr += l1v;
    }
    th[K - 1] = exp(logr);
    return lj;
}

/* reverse pass of simplex_forward (th from it), g = d f / d theta:
   gz = d (f + log|J|) / d zeta. B is the derivative with respect to log r
   of the pieces after the current one. */
static void simplex_grad(int K, const double *z, const double *th,
                         const double *g, double *gz)
{
    double B = g[K - 1] * th[K - 1];
    for (int k = K - 2; k >= 0; k--) {
        double x = z[k] - log((double) (K - 1 - k));
        double v = inv_logit(x), w = inv_logit(-x);
        gz[k] = g[k] * th[k] * w - B * v + w - v;
        B += g[k] * th[k] + 1.0;
    }
}

static void simplex_inverse(int K, const double *th, double *z)
{
    /* the stick left after piece k as the sum of the later pieces, which
       stays accurate when the earlier ones are large */
    double rem = th[K - 1];
    for (int k = K - 2; k >= 0; k--) {
        z[k] = log(th[k]) - log(rem) + log((double) (K - 1 - k));
        rem += th[k];
    }
}

static double ordered_forward(int K, double lo, const double *z, double *th)
{
    int has_lo = isfinite(lo);
    double lj = has_lo ? z[0] : 0.0;
    th[0] = has_lo ? lo + exp(z[0]) : z[0];
    for (int k = 1; k < K; k++) {
        th[k] = th[k - 1] + exp(z[k]);
        lj += z[k];
    }
    return lj;
}

static void ordered_grad(int K, double lo, const double *z, const double *g,
                         double *gz)
{
    double G = 0.0;   /* sum of g over the later coordinates */
    for (int k = K - 1; k >= 1; k--) {
        G += g[k];
        gz[k] = G * exp(z[k]) + 1.0;
    }
    G += g[0];
    gz[0] = isfinite(lo) ? G * exp(z[0]) + 1.0 : G;
}

static void ordered_inverse(int K, double lo, const double *th, double *z)
{
    z[0] = isfinite(lo) ? log(th[0] - lo) : th[0];
    for (int k = 1; k < K; k++) z[k] = log(th[k] - th[k - 1]);
}

/* ---- one parameter ------------------------------------------------------- */

/* theta of parameter j from zeta (both one draw, full length); returns
   its log|J| */
static double par_forward(const bbvi_model *m, int j, const double *zeta,
                          double *theta)
{
    int z0 = m->par_z0[j], t0 = m->par_t0[j], n = m->par_tdim[j];
    switch (m->par_kind[j]) {
    case BBVI_TR_SIMPLEX:
        return simplex_forward(n, zeta + z0, theta + t0);
    case BBVI_TR_ORDERED:
        return ordered_forward(n, m->lower[t0], zeta + z0, theta + t0);
    default: {
        double dth, lj, dlj, acc = 0.0;
        for (int i = 0; i < n; i++) {
            transform1(m->lower[t0 + i], m->upper[t0 + i], zeta[z0 + i],
                       &theta[t0 + i], &dth, &lj, &dlj);
            acc += lj;
        }
        return acc;
    }
    }
}

/* grad (zeta's length) of f + log|J| for parameter j, from g = df/dtheta
   and theta = T(zeta) */
static void par_grad(const bbvi_model *m, int j, const double *zeta,
                     const double *theta, const double *g, double *grad)
{
    int z0 = m->par_z0[j], t0 = m->par_t0[j], n = m->par_tdim[j];
    switch (m->par_kind[j]) {
    case BBVI_TR_SIMPLEX:
        simplex_grad(n, zeta + z0, theta + t0, g + t0, grad + z0);
        break;
    case BBVI_TR_ORDERED:
        ordered_grad(n, m->lower[t0], zeta + z0, g + t0, grad + z0);
        break;
    default: {
        double th, dth, lj, dlj;
        for (int i = 0; i < n; i++) {
            transform1(m->lower[t0 + i], m->upper[t0 + i], zeta[z0 + i],
                       &th, &dth, &lj, &dlj);
            grad[z0 + i] = g[t0 + i] * dth + dlj;
        }
    }
    }
}

static void par_inverse(const bbvi_model *m, int j, const double *theta,
                        double *zeta)
{
    int z0 = m->par_z0[j], t0 = m->par_t0[j], n = m->par_tdim[j];
    switch (m->par_kind[j]) {
    case BBVI_TR_SIMPLEX:
        simplex_inverse(n, theta + t0, zeta + z0);
        break;
    case BBVI_TR_ORDERED:
        ordered_inverse(n, m->lower[t0], theta + t0, zeta + z0);
        break;
    default:
        bbvi_unconstrain(n, m->lower + t0, m->upper + t0, 1, theta + t0,
                         zeta + z0);
    }
}

/* ---- the layout ---------------------------------------------------------- */

static void layout_elementwise(bbvi_model *m, int n_par, const int *zdim)
{
    int *z0 = (int *) R_alloc(n_par, sizeof(int));
    int *kind = (int *) R_alloc(n_par, sizeof(int));
    int acc = 0;
    for (int j = 0; j < n_par; j++) {
        z0[j] = acc; kind[j] = BBVI_TR_ELEMENTWISE; acc += zdim[j];
    }
    if (acc != m->D || acc != m->Dth)
        Rf_error("internal error: parameter lengths add to %d, not %d", acc, m->D);
    m->n_par = n_par;
    m->par_z0 = z0; m->par_t0 = z0;
    m->par_zdim = zdim; m->par_tdim = zdim;
    m->par_kind = kind;
    m->elementwise = 1;
}

/* layout (integer 3 x n_par: kind, theta length, zeta length) -> m; sets
   m->D and checks the theta length against m->Dth */
static void layout_from_sexp(bbvi_model *m, SEXP layout)
{
    if (!Rf_isInteger(layout) || XLENGTH(layout) % 3 != 0 || XLENGTH(layout) < 3)
        Rf_error("internal error: `layout` must be an integer 3 x n matrix");
    int n = (int) (XLENGTH(layout) / 3);
    const int *L = INTEGER(layout);
    int *kind = (int *) R_alloc(n, sizeof(int));
    int *t0 = (int *) R_alloc(n, sizeof(int)), *td = (int *) R_alloc(n, sizeof(int));
    int *z0 = (int *) R_alloc(n, sizeof(int)), *zd = (int *) R_alloc(n, sizeof(int));
    int at = 0, az = 0;
    for (int j = 0; j < n; j++) {
        kind[j] = L[3 * j]; td[j] = L[3 * j + 1]; zd[j] = L[3 * j + 2];
        int ok = td[j] >= 1 &&
            (kind[j] == BBVI_TR_SIMPLEX ? td[j] >= 2 && zd[j] == td[j] - 1
             : (kind[j] == BBVI_TR_ORDERED || kind[j] == BBVI_TR_ELEMENTWISE) &&
               zd[j] == td[j]);
        if (!ok) Rf_error("internal error: bad layout of parameter %d", j + 1);
        t0[j] = at; z0[j] = az; at += td[j]; az += zd[j];
    }
    if (at != m->Dth)
        Rf_error("internal error: the layout covers %d coordinates, not %d", at, m->Dth);
    int ew = 1;
    for (int j = 0; j < n; j++) ew = ew && kind[j] == BBVI_TR_ELEMENTWISE;
    m->elementwise = ew;
    m->D = az; m->n_par = n;
    m->par_kind = kind; m->par_t0 = t0; m->par_tdim = td;
    m->par_z0 = z0; m->par_zdim = zd;
}

int bbvi_layout_zdim(SEXP spec, int Dth)
{
    SEXP layout = bbvi_list_get(spec, "layout");
    if (Rf_isNull(layout)) return Dth;
    bbvi_model m;
    m.Dth = Dth;
    layout_from_sexp(&m, layout);
    return m.D;
}

void bbvi_model_init(bbvi_model *m, bbvi_target *t, const double *lower,
                     const double *upper, int D, int max_batch)
{
    int Dth = t ? t->dim : D;
    m->D = D;
    m->Dth = Dth;
    m->lower = lower;
    m->upper = upper;
    m->target = t;
    m->max_batch = max_batch;
    m->theta = (double *) R_alloc((size_t) Dth * max_batch, sizeof(double));
    m->gtheta = (double *) R_alloc((size_t) Dth * max_batch, sizeof(double));
    m->logjac = (double *) R_alloc((size_t) max_batch, sizeof(double));
    m->fd_scale = NULL;
    m->fd_cap = 0;
    m->fd_zeta = m->fd_theta = m->fd_logjac = m->fd_lp = NULL;
    if (D == Dth) {
        int *ones = (int *) R_alloc(D, sizeof(int));
        for (int d = 0; d < D; d++) ones[d] = 1;
        layout_elementwise(m, D, ones);
    } else {
        m->n_par = 0;   /* bbvi_model_set_layout() must follow */
    }
}

void bbvi_model_set_layout(bbvi_model *m, SEXP spec)
{
    SEXP layout = bbvi_list_get(spec, "layout");
    if (Rf_isNull(layout)) return;
    int D = m->D;
    layout_from_sexp(m, layout);
    if (m->D != D)
        Rf_error("internal error: the layout has %d unconstrained coordinates, not %d",
                 m->D, D);
}

void bbvi_model_set_params(bbvi_model *m, int n_par, const int *zdim)
{
    /* a layout still to come (zeta shorter than theta): it sets the
       segments, which are the parameters' own */
    if (m->n_par == 0) return;
    int same = m->n_par == n_par;
    for (int j = 0; same && j < n_par; j++) same = m->par_zdim[j] == zdim[j];
    if (same) return;
    for (int j = 0; j < m->n_par; j++)
        if (m->par_kind[j] != BBVI_TR_ELEMENTWISE)
            Rf_error("internal error: parameter lengths do not match the model's layout");
    int *zd = (int *) R_alloc(n_par, sizeof(int));
    for (int j = 0; j < n_par; j++) zd[j] = zdim[j];
    layout_elementwise(m, n_par, zd);
}

void bbvi_model_constrain(const bbvi_model *m, int S, const double *zeta,
                          double *theta)
{
    for (int s = 0; s < S; s++)
        for (int j = 0; j < m->n_par; j++)
            par_forward(m, j, zeta + (size_t) s * m->D, theta + (size_t) s * m->Dth);
}

void bbvi_model_unconstrain(const bbvi_model *m, int S, const double *theta,
                            double *zeta)
{
    for (int s = 0; s < S; s++)
        for (int j = 0; j < m->n_par; j++)
            par_inverse(m, j, theta + (size_t) s * m->Dth, zeta + (size_t) s * m->D);
}

void bbvi_model_logjac_par(bbvi_model *m, int S, const double *zeta, double *out)
{
    if (S > m->max_batch)
        Rf_error("internal error: batch of %d draws exceeds %d", S, m->max_batch);
    for (int s = 0; s < S; s++)
        for (int j = 0; j < m->n_par; j++)
            out[j + (size_t) s * m->n_par] =
                par_forward(m, j, zeta + (size_t) s * m->D,
                            m->theta + (size_t) s * m->Dth);
}

/* log p + log|J| at S points into lp (and the gradient wrt zeta when grad
   is not NULL), with theta, gtheta and logjac as scratch for S points */
static void logdens_into(bbvi_model *m, int S, const double *zeta, double *lp,
                         double *grad, double *theta, double *gtheta, double *logjac)
{
    int D = m->D, Dth = m->Dth;
    double dth, lj, dlj;
    for (int s = 0; s < S; s++) {
        double acc = 0.0;
        if (m->elementwise) {
            /* coordinate by coordinate, without the per-parameter dispatch */
            for (int d = 0; d < D; d++) {
                size_t i = d + (size_t) s * D;
                transform1(m->lower[d], m->upper[d], zeta[i], &theta[i],
                           &dth, &lj, &dlj);
                acc += lj;
            }
        } else {
            for (int j = 0; j < m->n_par; j++)
                acc += par_forward(m, j, zeta + (size_t) s * D, theta + (size_t) s * Dth);
        }
        logjac[s] = acc;
    }
    m->target->eval(m->target, S, theta, lp, grad ? gtheta : NULL);
    for (int s = 0; s < S; s++) lp[s] += logjac[s];
    if (!grad) return;
    if (m->elementwise) {
        for (size_t i = 0; i < (size_t) D * S; i++) {
            double th;
            int d = (int) (i % D);
            transform1(m->lower[d], m->upper[d], zeta[i], &th, &dth, &lj, &dlj);
            grad[i] = gtheta[i] * dth + dlj;
        }
        return;
    }
    /* theta still holds T(zeta): the target only reads it */
    for (int s = 0; s < S; s++)
        for (int j = 0; j < m->n_par; j++)
            par_grad(m, j, zeta + (size_t) s * D, theta + (size_t) s * Dth,
                     gtheta + (size_t) s * Dth, grad + (size_t) s * D);
}

/* Finite-difference gradients: the step along zeta_d is FD_STEP times the
   coordinate's scale (q's starting sd when an estimator has set it; the
   mode search's FD_GRAD likewise), and at least FD_REL |zeta_d| so that
   the shifted point differs from zeta_d in floating point. Central
   differences err by about (step / scale)^2 relative in the gradient,
   rounding by about 1e-16 |log p| / step. */
#define FD_STEP 1e-4
#define FD_REL 1e-7
/* points x coordinates per batch of shifted points: 32 MB of doubles */
#define FD_MAX_DOUBLES (1L << 22)

static void fd_alloc(bbvi_model *m)
{
    int D = m->D, per = 2 * D + 1, w = D > m->Dth ? D : m->Dth;
    long cap = FD_MAX_DOUBLES / w;
    if (cap < per) cap = per;
    if (cap > (long) per * m->max_batch) cap = (long) per * m->max_batch;
    m->fd_cap = (int) cap;
    m->fd_zeta = (double *) R_alloc((size_t) D * cap, sizeof(double));
    m->fd_theta = (double *) R_alloc((size_t) m->Dth * cap, sizeof(double));
    m->fd_logjac = (double *) R_alloc((size_t) cap, sizeof(double));
    m->fd_lp = (double *) R_alloc((size_t) cap, sizeof(double));
}

/* Each draw's point, then the point moved by +h and by -h along each
   coordinate, as many draws per target call as fd_cap holds. A side whose
   log p is not finite (a support edge written as -Inf) leaves the one-sided
   difference; with neither side finite the coordinate's gradient is NaN. */
static void fd_logdens(bbvi_model *m, int S, const double *zeta, double *lp,
                       double *grad)
{
    int D = m->D, per = 2 * D + 1;
    if (!m->fd_zeta) fd_alloc(m);
    int draws_per_call = m->fd_cap / per;
    for (int s0 = 0; s0 < S; s0 += draws_per_call) {
        int ns = S - s0 < draws_per_call ? S - s0 : draws_per_call;
        for (int k = 0; k < ns; k++) {
            const double *z = zeta + (size_t) (s0 + k) * D;
            double *pts = m->fd_zeta + (size_t) k * per * D;
            for (int q = 0; q < per; q++)
                for (int d = 0; d < D; d++) pts[d + (size_t) q * D] = z[d];
            for (int d = 0; d < D; d++) {
                double sc = m->fd_scale ? m->fd_scale[d] : 1.0;
                double h = fmax(FD_STEP * sc, FD_REL * fabs(z[d]));
                pts[d + (size_t) (1 + 2 * d) * D] = z[d] + h;
                pts[d + (size_t) (2 + 2 * d) * D] = z[d] - h;
            }
        }
        logdens_into(m, ns * per, m->fd_zeta, m->fd_lp, NULL, m->fd_theta, NULL,
                     m->fd_logjac);
        for (int k = 0; k < ns; k++) {
            const double *v = m->fd_lp + (size_t) k * per;
            const double *pts = m->fd_zeta + (size_t) k * per * D;
            const double *z = zeta + (size_t) (s0 + k) * D;
            double *g = grad + (size_t) (s0 + k) * D;
            lp[s0 + k] = v[0];
            for (int d = 0; d < D; d++) {
                double fp = v[1 + 2 * d], fm = v[2 + 2 * d];
                /* the steps as stored, not as intended */
                double hp = pts[d + (size_t) (1 + 2 * d) * D] - z[d];
                double hm = z[d] - pts[d + (size_t) (2 + 2 * d) * D];
                if (R_FINITE(fp) && R_FINITE(fm)) g[d] = (fp - fm) / (hp + hm);
                else if (R_FINITE(fp) && R_FINITE(v[0])) g[d] = (fp - v[0]) / hp;
                else if (R_FINITE(fm) && R_FINITE(v[0])) g[d] = (v[0] - fm) / hm;
                else g[d] = R_NaN;
            }
        }
    }
}

void bbvi_model_logdens(bbvi_model *m, int S, const double *zeta, double *lp,
                        double *grad)
{
    if (S > m->max_batch)
        Rf_error("internal error: batch of %d draws exceeds %d", S, m->max_batch);
    if (m->n_par < 1) Rf_error("internal error: the model has no parameter layout");
    if (grad && m->target->fd_grad) {
        fd_logdens(m, S, zeta, lp, grad);
        return;
    }
    logdens_into(m, S, zeta, lp, grad, m->theta, m->gtheta, m->logjac);
}

/* A model without a target from .Call arguments: lower/upper (length Dth)
   and a layout (NULL: elementwise). */
int bbvi_check_bounds(SEXP spec, SEXP lower, SEXP upper, int *Dth)
{
    int n = Rf_length(lower);
    if (!Rf_isReal(lower) || !Rf_isReal(upper) || Rf_length(upper) != n || n < 1)
        Rf_error("internal error: `lower` and `upper` must be doubles of one length >= 1");
    *Dth = n;
    return Rf_isNull(spec) ? n : bbvi_layout_zdim(spec, n);
}

static void layout_model(bbvi_model *m, SEXP lower, SEXP upper, SEXP layout)
{
    int Dth;
    bbvi_check_bounds(R_NilValue, lower, upper, &Dth);
    m->Dth = Dth; m->D = Dth;
    m->lower = REAL(lower); m->upper = REAL(upper);
    m->target = NULL; m->max_batch = 0;
    m->theta = m->gtheta = m->logjac = NULL;
    m->fd_scale = NULL;
    m->fd_cap = 0;
    m->fd_zeta = m->fd_theta = m->fd_logjac = m->fd_lp = NULL;
    if (Rf_isNull(layout)) {
        int *ones = (int *) R_alloc(Dth, sizeof(int));
        for (int d = 0; d < Dth; d++) ones[d] = 1;
        layout_elementwise(m, Dth, ones);
    } else {
        layout_from_sexp(m, layout);
    }
}

/* .Call(C_transform_draws, x, lower, upper, layout, inverse): the columns
   of x mapped by the layout (NULL: elementwise), zeta (D x S) -> theta
   (Dth x S), or back when inverse is TRUE. lower/upper have length Dth. */
SEXP transform_draws(SEXP x, SEXP lower, SEXP upper, SEXP layout, SEXP inverse)
{
    int inv = Rf_asLogical(inverse) == TRUE;
    bbvi_model m;
    layout_model(&m, lower, upper, layout);
    int din = inv ? m.Dth : m.D, dout = inv ? m.D : m.Dth;
    if (!Rf_isReal(x) || XLENGTH(x) % din != 0)
        Rf_error("internal error: transform_draws needs doubles in %d rows", din);
    int S = (int) (XLENGTH(x) / din);
    SEXP out = PROTECT(Rf_allocMatrix(REALSXP, dout, S));
    if (inv) bbvi_model_unconstrain(&m, S, REAL(x), REAL(out));
    else bbvi_model_constrain(&m, S, REAL(x), REAL(out));
    UNPROTECT(1);
    return out;
}

/* .Call(C_transform_logjac, zeta, lower, upper, layout): the n_par x S
   log-Jacobians of bbvi_model_logjac_par(), for tests. */
SEXP transform_logjac(SEXP zeta, SEXP lower, SEXP upper, SEXP layout)
{
    bbvi_model m;
    layout_model(&m, lower, upper, layout);
    if (!Rf_isReal(zeta) || XLENGTH(zeta) % m.D != 0)
        Rf_error("internal error: transform_logjac needs doubles in %d rows", m.D);
    int S = (int) (XLENGTH(zeta) / m.D);
    m.max_batch = S;
    m.theta = (double *) R_alloc((size_t) m.Dth * (S > 0 ? S : 1), sizeof(double));
    SEXP out = PROTECT(Rf_allocMatrix(REALSXP, m.n_par, S));
    bbvi_model_logjac_par(&m, S, REAL(zeta), REAL(out));
    UNPROTECT(1);
    return out;
}
