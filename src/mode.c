/* mode.c: a deterministic start for VI on custom models: the posterior mode
   on the unconstrained scale, found by L-BFGS (R's lbfgsb), and the
   curvature there (a Laplace approximation). The stochastic phase then
   starts at that Gaussian and works in its coordinates, so that steps, draws
   and the convergence rule see a problem of unit scale.

   Without the model's gradient, gradients are central finite differences
   of all 2D + 1 points in one target call (one R call for a vectorized
   log-joint). Finite-difference steps follow each coordinate's scale: a
   first pass measures the diagonal curvature, and the optimiser then works
   in u = (zeta - zeta0) / sd, which also makes it indifferent to parameters
   of scales 1e-6 and 1e6 side by side. */
#include "bbvi.h"
#include <R_ext/Applic.h>
#include <math.h>
#include <string.h>
#include <float.h>

#define FD_GRAD 1e-4     /* gradient step, in units of the coordinate's sd */
#define FD_HESS 1e-2     /* Hessian step, likewise */
#define OUT_PENALTY 1e6  /* where log p is not finite the optimiser sees the
                            lowest -log p met so far plus this: 1e300 there
                            overflowed its line search's cubic fits, which
                            then stopped at the first point next to a -Inf
                            region instead of stepping back */
#define GROUPS 64        /* probes of the diagonal Hessian of a large model */
#define GROUPED_MIN_D 2000   /* above this, the diagonal Hessian is probed in
                                GROUPS groups (see neg_hessian_grouped) */

enum { MODE_OK = 0, MODE_NOT_CONVERGED = 1, MODE_NOT_CONCAVE = 2,
       MODE_NO_FINITE_START = 3 };
/* the names R sees (R/bbvi.R laplace_start words them) */
static const char *mode_status_name[] = { "ok", "not_converged", "not_concave",
                                          "no_finite_start" };

/* A stencil: point j is x + s1[j] h[i1[j]] e_i1[j] + s2[j] h[i2[j]] e_i2[j]
   (an index -1 adds nothing). */
typedef struct { int n; int *i1, *s1, *i2, *s2; } stencil;

typedef struct {
    bbvi_model *m;
    int D, B;               /* dimension; largest batch a target call gets */
    int has_grad;
    double *x0, *scale;     /* zeta = x0 + scale * u */
    double *pts, *lp, *gr;  /* scratch: D x B points, 2D + 1 values, D */
    double *h;              /* finite-difference steps, D */
    stencil axes;           /* the centre and +-h along every axis */
    double *x, *u_cache, f_cache, *g_cache;
    int cached, cache_finite;
    double f_best;          /* the lowest finite -log p met, or +Inf */
    double n_lp, n_grad;    /* evaluations of log p and of its gradient */
} mode_ws;

/* Points are made and evaluated B at a time from their stencil, so no
   D x (number of points) matrix is ever held. */

static stencil stencil_alloc(int n)
{
    stencil st = { n, (int *) R_alloc(n, sizeof(int)), (int *) R_alloc(n, sizeof(int)),
                   (int *) R_alloc(n, sizeof(int)), (int *) R_alloc(n, sizeof(int)) };
    for (int j = 0; j < n; j++) { st.i1[j] = st.i2[j] = -1; st.s1[j] = st.s2[j] = 0; }
    return st;
}

/* the centre, then x +- h_d e_d for every d */
static stencil stencil_axes(int D)
{
    stencil st = stencil_alloc(2 * D + 1);
    for (int d = 0; d < D; d++) {
        st.i1[1 + 2 * d] = st.i1[2 + 2 * d] = d;
        st.s1[1 + 2 * d] = 1; st.s1[2 + 2 * d] = -1;
    }
    return st;
}

/* Evaluate the stencil's points j0 .. j0 + nb - 1 (nb <= B): log p into
   lp[0 .. nb) and, when g is not NULL, gradients into g (D x nb). */
static void eval_chunk(mode_ws *w, const double *x, const double *h,
                       const stencil *st, int j0, int nb, double *lp, double *g)
{
    int D = w->D;
    for (int k = 0; k < nb; k++) {
        int j = j0 + k;
        double *p = w->pts + (size_t) k * D;
        memcpy(p, x, sizeof(double) * D);
        if (st->i1[j] >= 0) p[st->i1[j]] += st->s1[j] * h[st->i1[j]];
        if (st->i2[j] >= 0) p[st->i2[j]] += st->s2[j] * h[st->i2[j]];
    }
    bbvi_model_logdens(w->m, nb, w->pts, lp, g);
    w->n_lp += nb;
    if (g) w->n_grad += nb;
}

/* All the stencil's log p values (no gradients), into lp (length n). */
static void eval_values(mode_ws *w, const double *x, const double *h,
                        const stencil *st, double *lp)
{
    for (int j0 = 0; j0 < st->n; j0 += w->B) {
        int nb = st->n - j0 < w->B ? st->n - j0 : w->B;
        eval_chunk(w, x, h, st, j0, nb, lp + j0, NULL);
    }
}

/* log p at one point and its gradient (analytic, or central differences
   with steps FD_GRAD * scale); returns log p (may be non-finite). */
static double eval_point(mode_ws *w, const double *x, double *g)
{
    int D = w->D;
    if (w->has_grad) {
        bbvi_model_logdens(w->m, 1, x, w->lp, w->gr);
        w->n_lp += 1; w->n_grad += 1;
        memcpy(g, w->gr, sizeof(double) * D);
        return w->lp[0];
    }
    for (int d = 0; d < D; d++) w->h[d] = FD_GRAD * w->scale[d];
    eval_values(w, x, w->h, &w->axes, w->lp);
    double f0 = w->lp[0];
    for (int d = 0; d < D; d++) {
        double h = w->h[d];
        double fp = w->lp[1 + 2 * d], fm = w->lp[2 + 2 * d];
        if (R_FINITE(fp) && R_FINITE(fm)) g[d] = (fp - fm) / (2 * h);
        else if (R_FINITE(fp) && R_FINITE(f0)) g[d] = (fp - f0) / h;
        else if (R_FINITE(fm) && R_FINITE(f0)) g[d] = (f0 - fm) / h;
        else g[d] = 0.0;
    }
    return f0;
}

/* The optimiser minimises -log p over u; value and gradient come from one
   evaluation, cached for the gradient call that follows at the same u. */
static void eval_u(mode_ws *w, const double *u)
{
    int D = w->D;
    if (w->cached && memcmp(u, w->u_cache, sizeof(double) * D) == 0) return;
    for (int d = 0; d < D; d++) w->x[d] = w->x0[d] + w->scale[d] * u[d];
    double f = eval_point(w, w->x, w->g_cache);
    w->cache_finite = R_FINITE(f);
    if (!w->cache_finite) {
        w->f_cache = (R_FINITE(w->f_best) ? w->f_best : 0.0) + OUT_PENALTY;
        memset(w->g_cache, 0, sizeof(double) * D);
    } else {
        w->f_cache = -f;
        if (!(w->f_best <= -f)) w->f_best = -f;
        for (int d = 0; d < D; d++) {
            double gd = -w->g_cache[d] * w->scale[d];
            w->g_cache[d] = R_FINITE(gd) ? gd : 0.0;
        }
    }
    memcpy(w->u_cache, u, sizeof(double) * D);
    w->cached = 1;
}

static double opt_fn(int n, double *u, void *ex)
{
    mode_ws *w = (mode_ws *) ex;
    eval_u(w, u);
    return w->f_cache;
}

static void opt_gr(int n, double *u, double *g, void *ex)
{
    mode_ws *w = (mode_ws *) ex;
    eval_u(w, u);
    memcpy(g, w->g_cache, sizeof(double) * n);
}

/* L-BFGS from x0 in units of scale; x0 becomes the optimum. Returns the
   largest |gradient| in those units at the end (Inf when not finite). */
static double optimise(mode_ws *w, int maxit)
{
    int D = w->D, fail = 0, fncount = 0, grcount = 0;
    double *u = (double *) R_alloc(D, sizeof(double));
    double *lo = (double *) R_alloc(D, sizeof(double));
    double *up = (double *) R_alloc(D, sizeof(double));
    int *nbd = (int *) R_alloc(D, sizeof(int));
    memset(u, 0, sizeof(double) * D);
    for (int d = 0; d < D; d++) { nbd[d] = 0; lo[d] = -DBL_MAX; up[d] = DBL_MAX; }
    double fmin = 0.0;
    char msg[60];
    w->cached = 0;
    lbfgsb(D, D < 10 ? D : 10, u, lo, up, nbd, &fmin, opt_fn, opt_gr, &fail,
           w, 1e5, 0.0, &fncount, &grcount, maxit, msg, 0, 1);
    for (int d = 0; d < D; d++) w->x0[d] += w->scale[d] * u[d];
    memset(u, 0, sizeof(double) * D);
    w->cached = 0;
    eval_u(w, u);
    if (!w->cache_finite) return R_PosInf;
    double gmax = 0.0;
    for (int d = 0; d < D; d++) gmax = fmax(gmax, fabs(w->g_cache[d]));
    return gmax;
}

/* A deterministic sign per coordinate for the grouped probes below. */
static double probe_sign(int d)
{
    unsigned hsh = (unsigned) d * 2654435761u;
    return (hsh >> 15) & 1u ? 1.0 : -1.0;
}

/* The diagonal of the negative Hessian of a large model from 2 GROUPS
   gradients instead of 2 D (which costs O(D^2)): group g moves every
   coordinate d = g mod GROUPS at once, by +-h_d with a fixed sign v_d, and
   -v_d (g(x + h v) - g(x - h v))_d / 2 h_d is H_dd plus the other members'
   H_dj h_j v_j / h_d, which the signs make cancel on average and which
   vanish when the posterior's coordinates are independent. It only sets
   the scales of a diagonal start, which the stochastic phase refines. */
static int neg_hessian_grouped(mode_ws *w, double *H)
{
    int D = w->D, n = 2 * GROUPS;
    const double *x = w->x0, *h = w->h;
    double *lp = (double *) R_alloc(w->B, sizeof(double));
    double *g = (double *) R_alloc((size_t) D * w->B, sizeof(double));
    for (int j0 = 0; j0 < n; j0 += w->B) {
        int nb = n - j0 < w->B ? n - j0 : w->B;
        for (int k = 0; k < nb; k++) {
            int j = j0 + k, grp = j / 2;
            double sgn = j % 2 == 0 ? 1.0 : -1.0;
            double *p = w->pts + (size_t) k * D;
            memcpy(p, x, sizeof(double) * D);
            for (int d = grp; d < D; d += GROUPS) p[d] += sgn * probe_sign(d) * h[d];
        }
        bbvi_model_logdens(w->m, nb, w->pts, lp, g);
        w->n_lp += nb; w->n_grad += nb;
        for (int k = 0; k < nb; k++) {
            int j = j0 + k, grp = j / 2;
            double sgn = j % 2 == 0 ? 1.0 : -1.0;
            const double *gk = g + (size_t) k * D;
            if (!R_FINITE(lp[k])) return 0;
            for (int d = grp; d < D; d += GROUPS) {
                if (!R_FINITE(gk[d])) return 0;
                H[d] -= sgn * probe_sign(d) * gk[d] / (2 * h[d]);
            }
        }
    }
    return 1;
}

/* Negative Hessian of log p at x0 with steps FD_HESS * scale: full (D x D)
   when full, else only its diagonal (H of length D). From gradients when
   the model has them, else from values. Returns 0 if a needed value was
   not finite. */
static int neg_hessian(mode_ws *w, int full, double *H)
{
    int D = w->D;
    const double *x = w->x0;
    double *h = w->h;
    for (int d = 0; d < D; d++) h[d] = FD_HESS * w->scale[d];
    memset(H, 0, sizeof(double) * (full ? (size_t) D * D : (size_t) D));
    if (w->has_grad && !full && D > GROUPED_MIN_D) return neg_hessian_grouped(w, H);
    if (w->has_grad) {
        /* the axes stencil without its centre: point 1 + 2d is +h_d e_d */
        stencil *st = &w->axes;
        double *lp = (double *) R_alloc(w->B, sizeof(double));
        double *g = (double *) R_alloc((size_t) D * w->B, sizeof(double));
        for (int j0 = 1; j0 < st->n; j0 += w->B) {
            int nb = st->n - j0 < w->B ? st->n - j0 : w->B;
            eval_chunk(w, x, h, st, j0, nb, lp, g);
            for (int k = 0; k < nb; k++) {
                int j = j0 + k, d = (j - 1) / 2;
                double sgn = st->s1[j] > 0 ? -1.0 : 1.0;   /* -(g+ - g-) */
                if (!R_FINITE(lp[k])) return 0;
                const double *gk = g + (size_t) k * D;
                for (int i = 0; i < D; i++) {
                    if (!R_FINITE(gk[i])) return 0;
                    if (!full && i != d) continue;
                    H[full ? i + (size_t) d * D : (size_t) d] += sgn * gk[i] / (2 * h[d]);
                }
            }
        }
        if (full)   /* symmetrise */
            for (int j = 0; j < D; j++)
                for (int i = j + 1; i < D; i++) {
                    double a = 0.5 * (H[i + (size_t) j * D] + H[j + (size_t) i * D]);
                    H[i + (size_t) j * D] = H[j + (size_t) i * D] = a;
                }
        return 1;
    }
    /* from values: the axes stencil, and for full the four corners of
       every pair */
    int npair = full ? D * (D - 1) / 2 : 0;
    stencil st = w->axes;
    if (full) {
        st = stencil_alloc(2 * D + 1 + 4 * npair);
        memcpy(st.i1, w->axes.i1, sizeof(int) * (2 * D + 1));
        memcpy(st.s1, w->axes.s1, sizeof(int) * (2 * D + 1));
        int k = 2 * D + 1;
        static const int si[4] = { 1, 1, -1, -1 }, sj[4] = { 1, -1, 1, -1 };
        for (int j = 0; j < D; j++)
            for (int i = j + 1; i < D; i++)
                for (int c = 0; c < 4; c++, k++) {
                    st.i1[k] = i; st.s1[k] = si[c];
                    st.i2[k] = j; st.s2[k] = sj[c];
                }
    }
    double *lp = (double *) R_alloc(st.n, sizeof(double));
    eval_values(w, x, h, &st, lp);
    for (int j = 0; j < st.n; j++) if (!R_FINITE(lp[j])) return 0;
    for (int d = 0; d < D; d++)
        H[full ? d + (size_t) d * D : (size_t) d] =
            -(lp[1 + 2 * d] - 2 * lp[0] + lp[2 + 2 * d]) / (h[d] * h[d]);
    int k = 2 * D + 1;
    for (int j = 0; j < D && full; j++)
        for (int i = j + 1; i < D; i++) {
            double a = -(lp[k] - lp[k + 1] - lp[k + 2] + lp[k + 3]) / (4 * h[i] * h[j]);
            H[i + (size_t) j * D] = H[j + (size_t) i * D] = a;
            k += 4;
        }
    return 1;
}

/* Per-coordinate sds 1 / sqrt(-d2 log p / dzeta_d^2), refined until the
   step that measured them is small against them. Coordinates without
   positive curvature keep their scale. Returns 0 if any has none. */
static int refine_scales(mode_ws *w, double *H)   /* H: length D */
{
    int D = w->D, ok = 1;
    for (int pass = 0; pass < 6; pass++) {
        if (!neg_hessian(w, 0, H)) return 0;
        int again = 0;
        ok = 1;
        for (int d = 0; d < D; d++) {
            double c = H[d];
            if (!(c > 0) || !R_FINITE(c)) { ok = 0; continue; }
            double sd = 1.0 / sqrt(c);
            /* the measurement is trustworthy when the step was at most a
               tenth of an sd off the one it implies */
            if (sd < 0.5 * w->scale[d] || sd > 2.0 * w->scale[d]) again = 1;
            w->scale[d] = sd;
        }
        if (!again) break;
    }
    return ok;
}


/* .Call(C_find_mode, target_spec, lower, upper, control): control holds
   init (D), full (logical: the whole Hessian or its diagonal), maxit.
   Returns list(mode, logp, neg_hessian (D x D, or its diagonal when not
   full), grad_max (in sd units), status, n_logp, n_grad). */
SEXP find_mode(SEXP spec, SEXP lower, SEXP upper, SEXP control)
{
    int Dth, D = bbvi_check_bounds(spec, lower, upper, &Dth);
    SEXP init = bbvi_list_get(control, "init");
    if (!Rf_isReal(init) || Rf_length(init) != D)
        Rf_error("internal error: bad arguments to find_mode");
    int full = bbvi_need_int(control, "full");
    int maxit = bbvi_need_int(control, "maxit");
    double gtol = bbvi_need_double(control, "grad_tol");
    if (maxit < 1 || !(gtol > 0))
        Rf_error("internal error: find_mode needs maxit >= 1 and grad_tol > 0");

    bbvi_rng_not_held();
    mode_ws w;
    memset(&w, 0, sizeof w);
    bbvi_target target;
    /* batches of 2D + 1 points, with the scratch that needs (D x B) kept
       near 32 MB for large D */
    long cap = (1L << 22) / D;
    w.B = 2L * D + 1 < cap ? 2 * D + 1 : (cap < 16 ? 16 : (int) cap);
    bbvi_target_from_sexp(spec, Dth, w.B, &target);
    bbvi_model model;
    bbvi_model_init(&model, &target, REAL(lower), REAL(upper), D, w.B);
    bbvi_model_set_layout(&model, spec);
    w.m = &model; w.D = D; w.has_grad = target.has_grad;
    w.x0 = (double *) R_alloc(D, sizeof(double));
    w.scale = (double *) R_alloc(D, sizeof(double));
    w.pts = (double *) R_alloc((size_t) D * w.B, sizeof(double));
    w.h = (double *) R_alloc(D, sizeof(double));
    w.axes = stencil_axes(D);
    w.lp = (double *) R_alloc(2 * (size_t) D + 1, sizeof(double));
    w.gr = (double *) R_alloc(D, sizeof(double));
    w.x = (double *) R_alloc(D, sizeof(double));
    w.u_cache = (double *) R_alloc(D, sizeof(double));
    w.g_cache = (double *) R_alloc(D, sizeof(double));
    memcpy(w.x0, REAL(init), sizeof(double) * D);
    w.f_best = R_PosInf;
    for (int d = 0; d < D; d++) w.scale[d] = 1.0;
    size_t nH = full ? (size_t) D * D : (size_t) D;
    double *H = (double *) R_alloc(nH, sizeof(double));
    double *diag = (double *) R_alloc(D, sizeof(double));
    double *L = full ? (double *) R_alloc(nH, sizeof(double)) : NULL;

    int status = MODE_OK;
    double gmax = R_PosInf;
    double *g0 = (double *) R_alloc(D, sizeof(double));
    if (!R_FINITE(eval_point(&w, w.x0, g0))) status = MODE_NO_FINITE_START;
    else {
        /* unit scale first, then in the scales measured at its optimum */
        gmax = optimise(&w, maxit);
        for (int rep = 0; rep < 3 && R_FINITE(gmax); rep++) {
            if (!refine_scales(&w, diag)) { status = MODE_NOT_CONCAVE; break; }
            gmax = optimise(&w, maxit);
            if (gmax <= gtol) break;
        }
        if (status == MODE_OK && !(gmax <= gtol)) status = MODE_NOT_CONVERGED;
        if (status == MODE_OK) {
            if (!refine_scales(&w, diag) || !neg_hessian(&w, full, H) ||
                (full && !bbvi_chol(D, H, L)))
                status = MODE_NOT_CONCAVE;
        }
    }

    const char *names[] = { "mode", "logp", "neg_hessian", "grad_max",
                            "status", "n_logp", "n_grad", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SEXP mode = PROTECT(Rf_allocVector(REALSXP, D));
    memcpy(REAL(mode), w.x0, sizeof(double) * D);
    SET_VECTOR_ELT(out, 0, mode);
    SEXP lp1 = PROTECT(Rf_allocVector(REALSXP, 1));
    REAL(lp1)[0] = eval_point(&w, w.x0, g0);
    SET_VECTOR_ELT(out, 1, lp1);
    SEXP Hs = PROTECT(full ? Rf_allocMatrix(REALSXP, D, D) : Rf_allocVector(REALSXP, D));
    memcpy(REAL(Hs), H, sizeof(double) * nH);
    SET_VECTOR_ELT(out, 2, Hs);
    SET_VECTOR_ELT(out, 3, Rf_ScalarReal(gmax));
    SET_VECTOR_ELT(out, 4, Rf_mkString(mode_status_name[status]));
    SET_VECTOR_ELT(out, 5, Rf_ScalarReal(w.n_lp));
    SET_VECTOR_ELT(out, 6, Rf_ScalarReal(w.n_grad));
    UNPROTECT(4);
    return out;
}
