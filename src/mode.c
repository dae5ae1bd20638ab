/* mode.c: a deterministic start for VI on custom models: the posterior mode
   on the unconstrained scale, found by L-BFGS with a backtracking line search, and the
   curvature there (a Laplace approximation). The stochastic phase then
   starts at that Gaussian and works in its coordinates, so that steps, draws
   and the convergence rule see a problem of unit scale.

   Without the model's gradient, gradients are central finite differences
   of all 2D + 1 points in one target call (one R call for a vectorized
   log-joint). Finite-difference steps follow each coordinate's scale: a
   first pass measures the diagonal curvature, and the optimiser then works
   in u = (zeta - zeta0) / sd, which also makes it indifferent to parameters
   of scales 1e-6 and 1e6 side by side.

   Where log p is -Inf (a region the model rules out, such as a dependent
   bound), the line search halves its step, and next to such a region the
   optimiser slides along its edge (see wall_normal). */
#include "bbvi.h"
#include <math.h>
#include <string.h>
#include <float.h>

#define FD_GRAD 1e-4     /* gradient step, in units of the coordinate's sd */
#define FD_HESS 1e-2     /* Hessian step, likewise */
/* Iterations without a new smallest gradient after which a search gives
   up: a funnel's gradient grows without bound as log p does (eight
   schools centred: 1000 iterations, none of them useful). At unit scale
   giving up is no verdict (a badly scaled problem crawls there; the
   search goes on in the measured scales), so it is cut early; in the
   measured scales it says "no mode". The longest such runs on the bench
   models' way to their modes: 20 at unit scale (gp_pois_regr,
   low_dim_gauss_mix), 3 in the measured scales. */
#define PATIENCE_UNIT 50
#define PATIENCE_MEASURED 30
#define UNIT_MAXIT 200   /* iterations of the unit-scale search: on scales
                             1e-6 .. 1e6 with correlations it crawls (1000
                             iterations, 72,000 log-density evaluations
                             without a gradient); the search in the
                             measured scales finishes the job */
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
    double *x;
    double gtol, inner_tol; /* the result's gradient tolerance; the optimiser's */
    int diverged;           /* the last search ran out of patience */
    int moved;              /* the last search took a step */
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

/* -log p at zeta = x0 + scale * u into *f and its gradient in u into g;
   returns 0 where log p is not finite (a region the model rules out). */
static int eval_u(mode_ws *w, const double *u, double *f, double *g)
{
    int D = w->D;
    for (int d = 0; d < D; d++) w->x[d] = w->x0[d] + w->scale[d] * u[d];
    double lp = eval_point(w, w->x, g);
    if (!R_FINITE(lp)) return 0;
    *f = -lp;
    for (int d = 0; d < D; d++) {
        double gd = -g[d] * w->scale[d];
        g[d] = R_FINITE(gd) ? gd : 0.0;
    }
    return 1;
}

/* The direction of a nearby region where log p is not finite, seen from
   u: a step of rho (in scale units) along each axis either way (one
   target call of 2D + 1 points) gives n_d = +1 where +rho e_d leaves the
   finite region, -1 where -rho e_d does, else 0. Returns |n|^2. The
   optimiser then removes from its step the part along n, as a
   bound-constrained method drops the part across an active bound, and
   slides along the edge. */
static double wall_normal(mode_ws *w, const double *u, double rho,
                          double *xx, double *n)
{
    int D = w->D;
    double nn = 0.0;
    for (int d = 0; d < D; d++) {
        xx[d] = w->x0[d] + w->scale[d] * u[d];
        w->h[d] = rho * w->scale[d];
    }
    eval_values(w, xx, w->h, &w->axes, w->lp);
    for (int d = 0; d < D; d++) {
        int up = !R_FINITE(w->lp[1 + 2 * d]), down = !R_FINITE(w->lp[2 + 2 * d]);
        n[d] = (double) (up - down);
        nn += n[d] * n[d];
    }
    return nn;
}

/* dir minus its part along the unit vector n, if it points that way */
static void slide(int D, const double *n, double *dir)
{
    double a = bbvi_dot(D, dir, n);
    if (a > 0) for (int d = 0; d < D; d++) dir[d] -= a * n[d];
}

/* Minimise -log p over u, zeta = x0 + scale * u, by L-BFGS with a
   backtracking (Armijo) line search from u = 0; x0 becomes the optimum.
   Where log p is not finite the step is halved: R's lbfgsb, given a
   penalty there, met a cliff its cubic line search could not model and
   stopped next to the -Inf region (garch11 with alpha1 + beta1 < 1 as
   -Inf, 40 sds from the mode). Pairs with s'y <= 0 are not kept, so the
   inverse Hessian stays positive definite without a Wolfe search.
   Returns the largest |gradient| in units of scale at the end (Inf when
   log p is not finite at x0). */
static double optimise(mode_ws *w, int maxit, double tol, int patience)
{
    /* 30 pairs even below 30 coordinates: on a curved path more pairs
       than coordinates still help (arK, arma11, low_dim_gauss_mix: 10-15%
       fewer evaluations than with D pairs) */
    int D = w->D, m = 30;
    double *u = (double *) R_alloc(D, sizeof(double));
    double *g = (double *) R_alloc(D, sizeof(double));
    double *un = (double *) R_alloc(D, sizeof(double));
    double *gn = (double *) R_alloc(D, sizeof(double));
    double *dir = (double *) R_alloc(D, sizeof(double));
    double *xx = (double *) R_alloc(D, sizeof(double));
    double *nrm = (double *) R_alloc(D, sizeof(double));
    double f, fn, wall = 0.0;
    int flat = 0, since = 0;
    bbvi_lbfgs L;
    bbvi_lbfgs_init(&L, D, m);
    double gbest = R_PosInf;
    w->diverged = 0;
    w->moved = 0;
    memset(u, 0, sizeof(double) * D);
    if (!eval_u(w, u, &f, g)) return R_PosInf;
    for (int it = 0; it < maxit; it++) {
        double gmax = 0.0;
        for (int d = 0; d < D; d++) gmax = fmax(gmax, fabs(g[d]));
        if (gmax <= tol) break;
        if (gmax < gbest) { gbest = gmax; since = 0; }
        else if (++since >= patience) { w->diverged = gbest > w->gtol; break; }
        if (it % 10 == 9) R_CheckUserInterrupt();
        /* the first step moves no coordinate by more than one scale unit */
        if (L.cnt == 0) L.gamma = 1.0 / fmax(1.0, gmax);
        bbvi_lbfgs_direction(&L, g, dir);
        /* the last step stopped short of a -Inf region: slide along it */
        double nn = wall > 0 ? wall_normal(w, u, wall, xx, nrm) : 0.0;
        if (nn > 0) {
            for (int d = 0; d < D; d++) nrm[d] /= sqrt(nn);
            slide(D, nrm, dir);
        }
        double gd = bbvi_dot(D, g, dir);
        if (!(gd < 0)) {   /* not a descent direction: forget the pairs */
            bbvi_lbfgs_forget(&L);
            L.gamma = 1.0 / fmax(1.0, gmax);
            for (int d = 0; d < D; d++) dir[d] = -L.gamma * g[d];
            if (nn > 0) slide(D, nrm, dir);
            gd = bbvi_dot(D, g, dir);
            if (!(gd < 0)) break;   /* against the edge: nowhere to go */
        }
        double t = 1.0, t_out = R_PosInf;
        int ok = 0;
        for (int ls = 0; ls < 60; ls++) {
            for (int d = 0; d < D; d++) un[d] = u[d] + t * dir[d];
            if (eval_u(w, un, &fn, gn)) {
                if (fn <= f + 1e-4 * t * gd) { ok = 1; break; }
                /* the minimum of the quadratic through f, gd and fn,
                   kept within [0.1 t, 0.5 t] */
                double tq = -gd * t * t / (2 * (fn - f - gd * t));
                t = R_FINITE(tq) ? fmin(fmax(tq, 0.1 * t), 0.5 * t) : 0.5 * t;
            } else {
                t_out = t;
                t *= 0.5;
            }
        }
        /* how far the nearest point met outside is, in scale units */
        wall = ok && R_FINITE(t_out) ? 2 * (t_out - t) * sqrt(bbvi_dot(D, dir, dir)) : 0.0;
        if (!ok) {
            if (L.cnt == 0) break;       /* not even a gradient step helps */
            bbvi_lbfgs_forget(&L);       /* retry from a gradient step */
            continue;
        }
        bbvi_lbfgs_push(&L, u, un, g, gn);
        double dec = f - fn;
        memcpy(u, un, sizeof(double) * D);
        memcpy(g, gn, sizeof(double) * D);
        f = fn;
        /* no progress twice in a row: the gradient's own error (finite
           differences) is as large as what is left */
        flat = dec <= 1e-12 * (fabs(f) + 1) ? flat + 1 : 0;
        if (flat >= 2) break;
    }
    w->moved = 0;
    for (int d = 0; d < D; d++) {
        w->x0[d] += w->scale[d] * u[d];
        if (u[d] != 0.0) w->moved = 1;
    }
    double gmax = 0.0;   /* g is the gradient at the new x0 */
    for (int d = 0; d < D; d++) gmax = fmax(gmax, fabs(g[d]));
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
   positive curvature are probed again with wider steps. Returns 0 if any
   still has none. H
   (length D) gets the diagonal of the last measurement; Hfull, when not
   NULL, its whole matrix (from gradients the same points give it whole,
   so the caller need not measure again). */
static int refine_scales(mode_ws *w, double *H, double *Hfull)
{
    int D = w->D, ok = 1;
    for (int pass = 0; pass < 6; pass++) {
        if (Hfull) {
            if (!neg_hessian(w, 1, Hfull)) return 0;
            for (int d = 0; d < D; d++) H[d] = Hfull[d + (size_t) d * D];
        } else if (!neg_hessian(w, 0, H)) return 0;
        int again = 0;
        ok = 1;
        for (int d = 0; d < D; d++) {
            double c = H[d];
            if (!(c > 0) || !R_FINITE(c)) {
                ok = 0;
                /* a step far below the coordinate's sd leaves its
                   curvature under rounding (sd 1e6 probed at 1e-2: a
                   second difference of 1e-16 against log p's rounding):
                   probe again a hundred times wider. A saddle or a flat
                   direction stays non-positive at any step. */
                if (R_FINITE(c) && pass < 5) {
                    w->scale[d] *= 100.0;
                    again = 1;
                }
                continue;
            }
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
   init (D), full (1: the whole Hessian, which must be positive definite;
   2: the whole Hessian, of which only the diagonal must be positive; 0:
   the diagonal only), maxit, grad_tol (the result's largest gradient, in
   sd units) and optionally inner_tol (the search's, at most grad_tol).
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
    w.m = &model; w.D = D; w.has_grad = target.has_grad && !target.fd_grad;   /* its own differences */
    w.x0 = (double *) R_alloc(D, sizeof(double));
    w.scale = (double *) R_alloc(D, sizeof(double));
    w.pts = (double *) R_alloc((size_t) D * w.B, sizeof(double));
    w.h = (double *) R_alloc(D, sizeof(double));
    w.axes = stencil_axes(D);
    w.lp = (double *) R_alloc(2 * (size_t) D + 1, sizeof(double));
    w.gr = (double *) R_alloc(D, sizeof(double));
    w.x = (double *) R_alloc(D, sizeof(double));
    /* by default a hundredth of the tolerance the result is judged by:
       the mode to 1e-4 sd where the gradient is exact enough for that.
       A start for the fixed-draw path needs no more than grad_tol: its
       L-BFGS goes on from there (gp_pois_regr: 166 gradients instead of
       222, the same fits) */
    w.gtol = gtol;
    SEXP innerIn = bbvi_list_get(control, "inner_tol");
    w.inner_tol = Rf_isNull(innerIn) ? 1e-2 * gtol : Rf_asReal(innerIn);
    if (!(w.inner_tol > 0) || w.inner_tol > gtol)
        Rf_error("internal error: find_mode needs 0 < inner_tol <= grad_tol");
    memcpy(w.x0, REAL(init), sizeof(double) * D);
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
        /* at unit scale only to the result's tolerance: there an
           ill-conditioned posterior's last digits cost most of the
           search (gp_pois_regr: 270 of its 300 evaluations), and the
           search in the measured scales that follows goes on from there */
        gmax = optimise(&w, maxit < UNIT_MAXIT ? maxit : UNIT_MAXIT, gtol, PATIENCE_UNIT);
        /* the whole Hessian from gradients costs what its diagonal does:
           measured whole in every refinement, so that the last one is the
           answer's */
        double *Hg = full && w.has_grad ? H : NULL;
        /* the curvature measured by the last refinement is at x0 still
           (the search after it took no step) */
        int fresh = 0;
        /* running out of patience at unit scale is no verdict: a badly
           scaled problem (predictors on raw scales) crawls there; only a
           search in the measured scales that also runs out gives up */
        for (int rep = 0; rep < 3 && R_FINITE(gmax); rep++) {
            if (!refine_scales(&w, diag, Hg)) { status = MODE_NOT_CONCAVE; break; }
            gmax = optimise(&w, maxit, w.inner_tol, PATIENCE_MEASURED);
            fresh = !w.moved;
            if (gmax <= gtol || w.diverged) break;
        }
        if (status == MODE_OK && !(gmax <= gtol)) status = MODE_NOT_CONVERGED;
        if (status == MODE_OK && !fresh && !refine_scales(&w, diag, Hg)) status = MODE_NOT_CONCAVE;
        if (status == MODE_OK) {
            if (!full) memcpy(H, diag, sizeof(double) * D);
            else if (!Hg && !neg_hessian(&w, full, H)) status = MODE_NOT_CONCAVE;
            if (full == 1 && status == MODE_OK && !bbvi_chol(D, H, L)) status = MODE_NOT_CONCAVE;
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
