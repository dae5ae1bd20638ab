/* saa.c: the fixed-draw phase of VI for models with a gradient. The ELBO is
   averaged over one set of M base draws, fixed for the whole run (common
   random numbers), and that deterministic function of lambda is maximised by
   L-BFGS: a sample-average approximation, as in DADVI (Giordano, Ingram &
   Broderick 2024). Started at the Laplace approximation and preconditioned
   by it, it needs tens of iterations where the stochastic phase needs
   thousands.

   The draws are balanced so that the approximation is exact for a Gaussian
   posterior: antithetic pairs (their mean is exactly 0) rescaled so that each
   coordinate's second moment is exactly 1, and fully whitened (sample
   covariance exactly I) when there are enough draws. A posterior far from
   Gaussian is left to the diagnostics, which judge q with fresh draws.

   The L-BFGS (saa_lbfgs: its stopping rule and line search; the pairs
   and the two-loop product are lbfgs.c's) is not R's lbfgsb: lbfgsb stops
   on a small gradient or a small relative reduction, and along a flat
   direction both can hold far from the optimum; here the quasi-Newton
   step, an estimate of the distance left, must be small too. */
#include "bbvi.h"
#include <math.h>
#include <string.h>
#include <float.h>

#define BIG 1e300   /* what the optimiser sees where a draw's log p is not finite */
/* L-BFGS memory: 30 pairs took 30% fewer evaluations than 10 on the
   ill-conditioned gp_pois_regr posterior (bench_custom.R), same answers;
   10 above 1e5 variational parameters, where each pair costs 2K doubles */
#define SAA_LBFGS_M(K) ((K) > 100000 ? 10 : 30)

enum { SAA_OK = 0, SAA_NOT_FINITE_START = 3 };

typedef struct {
    bbvi_estimator_ws *ews;
    int K;
    double *lambda_cache, f_cache, *g_cache;
    int cached;
    long n_evals;            /* objective evaluations (M draws each) */
    double *trace;           /* ELBO at each new point, up to trace_cap */
    int n_trace, trace_cap;
} saa_ws;

/* The base draws: M / 2 standard normal columns (given, in the first half
   of eps) and their negatives, then either whitened (sample covariance I)
   or rescaled row by row. Also the minibatch path's draws (minibatch.c). */
void bbvi_balance_draws(int D, int M, double *eps, int whiten)
{
    int half = M / 2;
    for (int s = 0; s < half; s++)
        for (int d = 0; d < D; d++)
            eps[d + (size_t) (half + s) * D] = -eps[d + (size_t) s * D];
    if (!whiten) {
        for (int d = 0; d < D; d++) {
            double ss = 0.0;
            for (int s = 0; s < M; s++) ss += eps[d + (size_t) s * D] * eps[d + (size_t) s * D];
            double r = sqrt(ss / M);
            for (int s = 0; s < M; s++) eps[d + (size_t) s * D] /= r;
        }
        return;
    }
    /* C = E E' / M = L L'; eps <- L^-1 eps */
    double *C = (double *) R_alloc((size_t) D * D, sizeof(double));
    double *L = (double *) R_alloc((size_t) D * D, sizeof(double));
    for (int i = 0; i < D; i++)
        for (int j = 0; j <= i; j++) {
            double a = 0.0;
            for (int s = 0; s < M; s++) a += eps[i + (size_t) s * D] * eps[j + (size_t) s * D];
            C[i + (size_t) j * D] = a / M;
        }
    if (!bbvi_chol(D, C, L)) return;   /* singular (M barely above D): draws left as they are */
    for (int s = 0; s < M; s++) {
        double *e = eps + (size_t) s * D;
        for (int i = 0; i < D; i++) {
            double a = e[i];
            for (int k = 0; k < i; k++) a -= L[i + (size_t) k * D] * e[k];
            e[i] = a / L[i + (size_t) i * D];
        }
    }
}

/* -ELBO over the fixed draws and its gradient, cached for the gradient call
   that follows at the same lambda. */
static void eval_lambda(saa_ws *w, const double *lambda)
{
    int K = w->K;
    if (w->cached && memcmp(lambda, w->lambda_cache, sizeof(double) * K) == 0) return;
    if (w->n_evals > 0 && w->n_evals % 8 == 0) R_CheckUserInterrupt();
    double elbo = bbvi_grad_reparam(w->ews, lambda, w->g_cache);
    w->n_evals += 1;
    int ok = w->ews->n_finite == w->ews->S && R_FINITE(elbo);
    for (int k = 0; ok && k < K; k++) ok = R_FINITE(w->g_cache[k]);
    if (!ok) {
        w->f_cache = BIG;
        memset(w->g_cache, 0, sizeof(double) * K);
    } else {
        w->f_cache = -elbo;
        for (int k = 0; k < K; k++) w->g_cache[k] = -w->g_cache[k];
        if (w->n_trace < w->trace_cap) w->trace[w->n_trace++] = elbo;
    }
    memcpy(w->lambda_cache, lambda, sizeof(double) * K);
    w->cached = 1;
}

static double max_abs(int n, const double *a)
{
    double m = 0.0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

enum { LB_CONVERGED = 0, LB_MAX_EVALS = 1, LB_STALLED = 2, LB_UNBOUNDED = 3 };

/* L-BFGS on -ELBO from x (overwritten with the answer), m pairs of memory,
   Armijo backtracking. Stops when the gradient is below grad_tol and the
   quasi-Newton step, L-BFGS's estimate of the distance left to the optimum,
   moves no coordinate of lambda by more than step_tol (q-sds for means, log
   sds): along a flat direction a small gradient can leave the answer far
   from the optimum, and two runs stopped there differ by their stopping
   points, not by their draws. Also stops after max_evals evaluations, or
   when no step decreases -ELBO (LB_STALLED), and when q's sd runs away
   along a direction log p does not bound (LB_UNBOUNDED; *unbounded gets
   the coordinate, see bbvi_q_unbounded). */
/* L-BFGS's curvature pairs, kept across runs (see vi_saa's `memory`) */
typedef struct {
    bbvi_lbfgs L;
    double step_left;   /* the last quasi-Newton step's largest coordinate */
} saa_memory;

static int saa_lbfgs(saa_ws *w, double *x, int max_evals, double grad_tol,
                     double step_tol, saa_memory *mem, int *unbounded)
{
    int K = w->K, D = w->ews->D;
    double *sd_scratch = (double *) R_alloc(2 * (size_t) D, sizeof(double));
    bbvi_lbfgs *L = &mem->L;
    double *g = (double *) R_alloc(K, sizeof(double));
    double *d = (double *) R_alloc(K, sizeof(double));
    double *xn = (double *) R_alloc(K, sizeof(double));
    eval_lambda(w, x);
    double f = w->f_cache;
    memcpy(g, w->g_cache, sizeof(double) * K);
    for (;;) {
        double gmax = max_abs(K, g);
        if (gmax == 0.0) { mem->step_left = 0.0; return LB_CONVERGED; }
        if (L->cnt > 0 || L->h0) bbvi_lbfgs_direction(L, g, d);
        else for (int k = 0; k < K; k++) d[k] = -g[k];
        double gtd = bbvi_dot(K, g, d);
        if (!(gtd < 0.0)) {   /* not a descent direction: forget the pairs */
            bbvi_lbfgs_forget(L);
            for (int k = 0; k < K; k++) d[k] = -g[k];
            gtd = -bbvi_dot(K, g, g);
        }
        mem->step_left = L->cnt > 0 ? max_abs(K, d) : R_PosInf;
        if (L->cnt > 0 && gmax <= grad_tol && mem->step_left <= step_tol) return LB_CONVERGED;
        if (w->n_evals >= max_evals) return LB_MAX_EVALS;
        /* without pairs or H0, -g is no distance: a first step of length 1
           at most */
        double alpha = L->cnt > 0 || L->h0 ? 1.0 : fmin(1.0, 1.0 / sqrt(-gtd));
        int accepted = 0;
        double fn = BIG;
        for (int ls = 0; ls < 40 && w->n_evals < max_evals; ls++) {
            for (int k = 0; k < K; k++) xn[k] = x[k] + alpha * d[k];
            eval_lambda(w, xn);
            fn = w->f_cache;
            if (fn < BIG && fn <= f + 1e-4 * alpha * gtd) { accepted = 1; break; }
            /* the minimum of the quadratic through f, its slope and fn,
               within [0.1, 0.5] of the step (a tenth past the support) */
            double a2 = 0.1 * alpha;
            if (fn < BIG) {
                double den = 2.0 * (fn - f - gtd * alpha);
                if (den > 0.0) a2 = fmin(0.5 * alpha, fmax(0.1 * alpha, -gtd * alpha * alpha / den));
            }
            alpha = a2;
        }
        if (!accepted) {
            /* at rounding level the gradient decides */
            if (fn < BIG && fabs(fn - f) <= 10.0 * DBL_EPSILON * fmax(1.0, fabs(f)) &&
                gmax <= grad_tol) return LB_CONVERGED;
            return w->n_evals >= max_evals ? LB_MAX_EVALS : LB_STALLED;
        }
        bbvi_lbfgs_push(L, x, xn, g, w->g_cache);
        memcpy(x, xn, sizeof(double) * K);
        memcpy(g, w->g_cache, sizeof(double) * K);
        f = fn;
        if ((*unbounded = bbvi_q_unbounded(w->ews->fam, D, x, sd_scratch)) > 0)
            return LB_UNBOUNDED;
    }
}

/* The Laplace inverse Hessian of -ELBO for mean-field q in the run's
   coordinates (z = (zeta - shift) / p): for the means (P H P)^-1, H the
   negative Hessian of log p at the mode; for the log sds 1/2, their
   curvature at the optimum of a Gaussian posterior. Without it L-BFGS
   starts from gamma I and must learn the posterior's correlations pair by
   pair: on gp_pois_regr the diagonal-scaled H has condition number ~6000. */
typedef struct {
    int D;
    double *L;   /* Cholesky factor of P H P, D x D */
} saa_h0;

static void saa_h0_apply(const void *ctx, double *v)
{
    const saa_h0 *h = (const saa_h0 *) ctx;
    int D = h->D;
    const double *L = h->L;
    for (int i = 0; i < D; i++) {   /* L y = v */
        double a = v[i];
        for (int k = 0; k < i; k++) a -= L[i + (size_t) k * D] * v[k];
        v[i] = a / L[i + (size_t) i * D];
    }
    for (int i = D - 1; i >= 0; i--) {   /* L' x = y */
        double a = v[i];
        for (int k = i + 1; k < D; k++) a -= L[k + (size_t) i * D] * v[k];
        v[i] = a / L[i + (size_t) i * D];
    }
    for (int i = D; i < 2 * D; i++) v[i] *= 0.5;
}

/* .Call(C_vi_saa, target_spec, lower, upper, control). control: family,
   samples (M, even), whiten (0/1), precond (D x D lower triangular, diagonal
   for mean-field) and shift (D): q starts as zeta = shift + precond z with
   z ~ N(0, I), i.e. at the Laplace approximation; maxit (most evaluations),
   grad_tol (largest |gradient| accepted as converged) and step_tol (largest
   quasi-Newton step accepted as converged, see saa_lbfgs); optionally
   hessian (mean-field only: D x D negative Hessian of log p at the mode,
   L-BFGS's starting inverse Hessian, see saa_h0), memory (an earlier run's attribute lbfgs_memory) and memory_scale (K
   factors from its lambda to this run's). Returns what vi_fit returns,
   plus grad_max and lbfgs_code (0 converged, 1 maxit reached, 2 no step
   decreased -ELBO), with attributes lbfgs_memory (the curvature pairs)
   and lbfgs_step (the last quasi-Newton step's largest coordinate, Inf
   when there was none). */
SEXP vi_saa(SEXP spec, SEXP lower, SEXP upper, SEXP control)
{
    int Dth, D = bbvi_check_bounds(spec, lower, upper, &Dth);
    int M = bbvi_need_int(control, "samples");
    int maxit = bbvi_need_int(control, "maxit");
    int whiten = bbvi_need_int(control, "whiten");
    double grad_tol = bbvi_need_double(control, "grad_tol");
    double step_tol = bbvi_need_double(control, "step_tol");
    /* precond: dense D x D lower triangular (full-rank) or precond_diag,
       per-coordinate scales (mean-field: nothing D x D) */
    SEXP preP = bbvi_list_get(control, "precond"), preD = bbvi_list_get(control, "precond_diag"),
        preS = bbvi_list_get(control, "shift");
    int dense = !Rf_isNull(preP);
    if (M < 2 || M % 2 != 0 || maxit < 1 ||
        (dense ? !Rf_isReal(preP) || XLENGTH(preP) != (R_xlen_t) D * D
               : !Rf_isReal(preD) || Rf_length(preD) != D) ||
        !Rf_isReal(preS) || Rf_length(preS) != D || (whiten && M <= D))
        Rf_error("internal error: bad arguments to vi_saa");
    const bbvi_family *fam = bbvi_family_from_control(control, D);
    if (fam->n_base(fam, D) != D)
        Rf_error("internal error: the fixed-draw phase takes one base draw per coordinate");
    if (dense && !bbvi_family_is_fullrank(fam))
        Rf_error("internal error: a dense `precond` is for the full-rank family only");
    const double *P = dense ? REAL(preP) : REAL(preD), *shift = REAL(preS);
    for (int j = 0; j < D; j++) {
        double pj = dense ? P[j + (size_t) j * D] : P[j];
        if (!(pj > 0) || !R_FINITE(pj))
            Rf_error("internal error: `precond` needs a positive diagonal");
    }

    bbvi_target target;
    bbvi_target_from_sexp(spec, Dth, M, &target);
    if (!target.has_grad) Rf_error("internal error: the fixed-draw phase needs a gradient");
    bbvi_model model;
    bbvi_model_init(&model, &target, REAL(lower), REAL(upper), D, M);
    bbvi_model_set_layout(&model, spec);
    bbvi_estimator_ws ews;
    bbvi_estimator_ws_init(&ews, fam, &model, M);
    if (dense) bbvi_estimator_set_precond(&ews, P, shift);
    else bbvi_estimator_set_precond_diag(&ews, P, shift);

    bbvi_rng_hold();
    fam->draw_base(fam, D, M / 2, ews.eps);
    bbvi_rng_release();
    bbvi_balance_draws(D, M, ews.eps, whiten);
    ews.fixed_base = 1;

    int K = ews.K;
    double *lambda = (double *) R_alloc(K, sizeof(double));
    double *zero = (double *) R_alloc(D, sizeof(double));
    memset(zero, 0, sizeof(double) * D);
    fam->init(fam, D, zero, zero, lambda);   /* z ~ N(0, I): the Laplace q */

    saa_ws w = { &ews, K, (double *) R_alloc(K, sizeof(double)), 0.0,
                 (double *) R_alloc(K, sizeof(double)), 0, 0, NULL, 0, 0 };
    w.trace_cap = 2 * maxit + 20;
    w.trace = (double *) R_alloc(w.trace_cap, sizeof(double));

    /* the pairs of an earlier run on the same q (a check with fresh draws),
       carried into this run's coordinates: its lambda is the earlier one's
       times `memory_scale` coordinate by coordinate (a step s scales so, a
       gradient change y inversely, s'y not at all). Without them a check
       run starting at the answer sees the curvature of its first steps
       only, underestimates the distance left along flat directions and
       stops after a step or two, wherever it started. */
    saa_memory mem;
    bbvi_lbfgs_init(&mem.L, K, SAA_LBFGS_M(K));
    mem.step_left = R_PosInf;
    bbvi_lbfgs *L = &mem.L;
    SEXP memIn = bbvi_list_get(control, "memory"), memScale = bbvi_list_get(control, "memory_scale");
    if (!Rf_isNull(memIn)) {
        SEXP mS = bbvi_list_get(memIn, "S"), mY = bbvi_list_get(memIn, "Y");
        int cnt = bbvi_need_int(memIn, "cnt"), head = bbvi_need_int(memIn, "head");
        if (!Rf_isReal(mS) || !Rf_isReal(mY) || XLENGTH(mS) != (R_xlen_t) L->m * K ||
            XLENGTH(mY) != (R_xlen_t) L->m * K || !Rf_isReal(memScale) ||
            Rf_length(memScale) != K || cnt < 0 || cnt > L->m || head < 0 || head >= L->m)
            Rf_error("internal error: bad `memory` for vi_saa");
        const double *a = REAL(memScale);
        memcpy(L->S, REAL(mS), sizeof(double) * L->m * K);
        memcpy(L->Y, REAL(mY), sizeof(double) * L->m * K);
        int kept = 0;
        for (int i = 0; i < cnt; i++) {
            int j = (head + i) % L->m;   /* oldest first */
            double *sj = L->S + (size_t) j * K, *yj = L->Y + (size_t) j * K;
            for (int k = 0; k < K; k++) { sj[k] *= a[k]; yj[k] /= a[k]; }
            double sy = bbvi_dot(K, sj, yj), yy = bbvi_dot(K, yj, yj);
            if (!(sy > 1e-10 * yy && yy > 0.0)) { kept = 0; break; }
            L->rho[j] = 1.0 / sy;
            L->gamma = sy / yy;
            kept++;
        }
        L->cnt = kept;
        L->head = kept ? head : 0;
    }

    SEXP hessIn = bbvi_list_get(control, "hessian");
    saa_h0 h0 = { D, NULL };
    if (!Rf_isNull(hessIn) && !dense) {
        if (!Rf_isReal(hessIn) || XLENGTH(hessIn) != (R_xlen_t) D * D || K != 2 * D)
            Rf_error("internal error: bad `hessian` for vi_saa");
        const double *H = REAL(hessIn);
        double *Hz = (double *) R_alloc((size_t) D * D, sizeof(double));
        for (int j = 0; j < D; j++)
            for (int i = 0; i < D; i++)
                Hz[i + (size_t) j * D] = P[i] * H[i + (size_t) j * D] * P[j];
        h0.L = (double *) R_alloc((size_t) D * D, sizeof(double));
        if (bbvi_chol(D, Hz, h0.L)) {   /* not positive definite: gamma I */
            L->h0 = saa_h0_apply;
            L->h0_ctx = &h0;
        }
    }

    int status = SAA_OK, stop = LB_STALLED, unbounded = 0;
    double grad_max = R_PosInf;
    eval_lambda(&w, lambda);
    if (w.f_cache >= BIG) {
        status = SAA_NOT_FINITE_START;
    } else {
        stop = saa_lbfgs(&w, lambda, maxit, grad_tol, step_tol, &mem, &unbounded);
        eval_lambda(&w, lambda);
        grad_max = max_abs(K, w.g_cache);
        if (w.f_cache >= BIG) grad_max = R_PosInf;
    }
    int converged = status == SAA_OK && stop == LB_CONVERGED && grad_max <= grad_tol;

    if (dense) fam->affine(fam, D, lambda, P, shift);   /* back to zeta */
    else fam->affine_diag(fam, D, lambda, P, shift);
    bbvi_vi_result r = { lambda, lambda, K, w.trace, w.n_trace, converged,
                         (int) w.n_evals, 0,
                         status == SAA_OK ? "ok" : "no_finite_start",
                         converged ? "converged" :
                         stop == LB_UNBOUNDED ? "unbounded" : "max_iter_moving",
                         NA_REAL, 0.0, (double) w.n_evals * M, (double) w.n_evals * M,
                         grad_max, stop, 0.0, unbounded };
    SEXP out = PROTECT(bbvi_vi_result_sexp(fam, D, &r));
    SEXP memOut = PROTECT(Rf_allocVector(VECSXP, 4)), nms = PROTECT(Rf_allocVector(STRSXP, 4));
    SEXP mS = Rf_allocVector(REALSXP, (R_xlen_t) L->m * K);
    SET_VECTOR_ELT(memOut, 0, mS);
    memcpy(REAL(mS), L->S, sizeof(double) * L->m * K);
    SEXP mY = Rf_allocVector(REALSXP, (R_xlen_t) L->m * K);
    SET_VECTOR_ELT(memOut, 1, mY);
    memcpy(REAL(mY), L->Y, sizeof(double) * L->m * K);
    SET_VECTOR_ELT(memOut, 2, Rf_ScalarInteger(L->cnt));
    SET_VECTOR_ELT(memOut, 3, Rf_ScalarInteger(L->head));   /* the oldest pair */
    SET_STRING_ELT(nms, 0, Rf_mkChar("S"));
    SET_STRING_ELT(nms, 1, Rf_mkChar("Y"));
    SET_STRING_ELT(nms, 2, Rf_mkChar("cnt"));
    SET_STRING_ELT(nms, 3, Rf_mkChar("head"));
    Rf_setAttrib(memOut, R_NamesSymbol, nms);
    Rf_setAttrib(out, Rf_install("lbfgs_memory"), memOut);
    Rf_setAttrib(out, Rf_install("lbfgs_step"), Rf_ScalarReal(mem.step_left));
    UNPROTECT(3);
    return out;
}
