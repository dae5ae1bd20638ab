/* vi.c: the variational inference loop and its .Call entry point.
   Family, target, estimator and step-size rule come in through their
   abstractions; nothing here knows which ones run. */
#include "bbvi.h"
#include <cli/progress.h>
#include <Rmath.h>
#include <math.h>
#include <string.h>

enum { VI_OK = 0, VI_DIVERGED = 1, VI_NO_FINITE = 2 };
enum { STOP_CONVERGED = 0, STOP_MAXITER_MOVING = 1, STOP_MAXITER_NOISY = 2 };

#define N_BATCH 5       /* batches per window, for batch-means errors */
#define Z_DRIFT 3.0     /* a change beyond 3 standard errors is drift */
#define MIN_AVG_WINDOWS 3

/* The convergence rule works on q's marginal means and log sds (posterior
   sd units), not on the ELBO alone, whose relative change says little about
   the answer and whose noise can hide progress.

   Phase 1 (optimising): every window of W iterations is cut into N_BATCH
   batches; the window's average and its batch-means standard error give a
   drift test against the previous window. A window passes when every
   marginal mean moved by less than max(tol, Z_DRIFT standard errors) sds,
   every log sd likewise, and the windowed mean ELBO did not rise by more
   than Z_DRIFT standard errors, and every coordinate of the gradient
   averaged over the window is zero within its standard error (Bonferroni
   over the K coordinates), so a stalled optimiser is not taken for a
   converged one. Two passes in a row: stationary.
   Phase 2 (averaging): lambda is averaged over the following windows until
   the standard error of that average (from the spread of window averages)
   is below tol sds for every mean and below tol for every log sd. */
typedef struct {
    int D, K, W, B;
    double tol;
    const bbvi_family *fam;
    double *mean, *chol;                /* scratch for moments(), D, D x D */
    double *bsum;                       /* lambda sum of the current batch, K */
    double *bmean, *blsd;               /* batch moments, D x N_BATCH */
    double *wsum;                       /* lambda sum of the current window, K */
    double *wm, *wlsd, *wse_m, *wse_l;  /* window moments and errors, D */
    double *pm, *plsd, *pse_m, *pse_l;  /* the previous window's */
    double *gsum, *gsumsq;              /* gradient sums over the window, K */
    double z_grad;                      /* Bonferroni threshold for K tests */
    double elbo_sum, elbo_sumsq, p_elbo, p_elbo_var;
    int n, nb, have_prev, passes, phase;
    /* phase 2 */
    double *asum;                       /* lambda sum over averaged windows */
    double *am, *am2, *al, *al2;        /* sums of window moments and squares */
    int n_avg;
} conv_state;

static void moments_lsd(conv_state *c, const double *lambda, double *m,
                        double *lsd)
{
    int D = c->D;
    c->fam->moments(D, lambda, m, c->chol);
    for (int d = 0; d < D; d++) {
        double v = 0.0;
        for (int j = 0; j <= d; j++) v += c->chol[d + (size_t) j * D] * c->chol[d + (size_t) j * D];
        lsd[d] = 0.5 * log(v);
    }
}

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
    c->B = W / N_BATCH > 0 ? W / N_BATCH : 1;
    c->mean = dalloc(D); c->chol = dalloc((size_t) D * D);
    c->bsum = dalloc(K); c->wsum = dalloc(K); c->asum = dalloc(K);
    c->bmean = dalloc((size_t) D * N_BATCH); c->blsd = dalloc((size_t) D * N_BATCH);
    c->wm = dalloc(D); c->wlsd = dalloc(D); c->wse_m = dalloc(D); c->wse_l = dalloc(D);
    c->pm = dalloc(D); c->plsd = dalloc(D); c->pse_m = dalloc(D); c->pse_l = dalloc(D);
    c->am = dalloc(D); c->am2 = dalloc(D); c->al = dalloc(D); c->al2 = dalloc(D);
    c->gsum = dalloc(K); c->gsumsq = dalloc(K);
    c->z_grad = Rf_qnorm5(1.0 - 0.05 / (2.0 * K), 0.0, 1.0, 1, 0);
    c->have_prev = 0; c->passes = 0; c->phase = 1; c->n_avg = 0;
    c->n = c->nb = 0;
    c->elbo_sum = c->elbo_sumsq = 0.0;
}

/* Forget the current window (after a restart); phase 2 starts over too. */
static void conv_restart(conv_state *c)
{
    memset(c->bsum, 0, sizeof(double) * c->K);
    memset(c->wsum, 0, sizeof(double) * c->K);
    memset(c->asum, 0, sizeof(double) * c->K);
    memset(c->gsum, 0, sizeof(double) * c->K);
    memset(c->gsumsq, 0, sizeof(double) * c->K);
    memset(c->am, 0, sizeof(double) * c->D); memset(c->am2, 0, sizeof(double) * c->D);
    memset(c->al, 0, sizeof(double) * c->D); memset(c->al2, 0, sizeof(double) * c->D);
    c->n = c->nb = 0; c->n_avg = 0; c->phase = 1; c->passes = 0;
    c->elbo_sum = c->elbo_sumsq = 0.0;
}

static void mean_se(const double *x, int n, int stride, double *m, double *se)
{
    double a = 0.0, b = 0.0;
    for (int i = 0; i < n; i++) a += x[(size_t) i * stride];
    a /= n;
    for (int i = 0; i < n; i++) b += (x[(size_t) i * stride] - a) * (x[(size_t) i * stride] - a);
    *m = a;
    *se = n > 1 ? sqrt(b / (n - 1) / n) : 0.0;
}

/* Close a window; returns 1 when the fit has converged. */
static int conv_window(conv_state *c)
{
    int D = c->D, K = c->K;
    for (int d = 0; d < D; d++) {
        mean_se(c->bmean + d, c->nb, D, &c->wm[d], &c->wse_m[d]);
        mean_se(c->blsd + d, c->nb, D, &c->wlsd[d], &c->wse_l[d]);
    }
    double em = c->elbo_sum / c->n;
    double ev = c->n > 1 ? (c->elbo_sumsq - c->n * em * em) / (c->n - 1) : 0.0;
    if (ev < 0) ev = 0;
    int done = 0;
    if (c->phase == 1) {
        int pass = c->have_prev;
        for (int d = 0; pass && d < D; d++) {
            double sd = exp(c->wlsd[d]);
            double dm = fabs(c->wm[d] - c->pm[d]);
            double sem = sqrt(c->wse_m[d] * c->wse_m[d] + c->pse_m[d] * c->pse_m[d]);
            double dl = fabs(c->wlsd[d] - c->plsd[d]);
            double sel = sqrt(c->wse_l[d] * c->wse_l[d] + c->pse_l[d] * c->pse_l[d]);
            if (dm > fmax(c->tol * sd, Z_DRIFT * sem)) pass = 0;
            if (dl > fmax(c->tol, Z_DRIFT * sel)) pass = 0;
        }
        /* the mean gradient over the window must be zero within its noise:
           small steps alone (a stalled optimiser) do not make a fit */
        for (int k = 0; pass && k < K; k++) {
            double gm = c->gsum[k] / c->n;
            double gv = (c->gsumsq[k] - c->n * gm * gm) / (c->n - 1);
            double se = sqrt(fmax(gv, 0.0) / c->n);
            if (fabs(gm) > c->z_grad * se + 1e-12) pass = 0;
        }
        if (pass) {
            double gain = em - c->p_elbo;
            double se = sqrt((ev + c->p_elbo_var) / c->n);
            if (gain > Z_DRIFT * se + 1e-8 * fabs(em)) pass = 0;
        }
        c->passes = pass ? c->passes + 1 : 0;
        if (c->passes >= 2) c->phase = 2;
    } else {
        for (int k = 0; k < K; k++) c->asum[k] += c->wsum[k];
        for (int d = 0; d < D; d++) {
            c->am[d] += c->wm[d]; c->am2[d] += c->wm[d] * c->wm[d];
            c->al[d] += c->wlsd[d]; c->al2[d] += c->wlsd[d] * c->wlsd[d];
        }
        c->n_avg++;
        if (c->n_avg >= MIN_AVG_WINDOWS) {
            int n = c->n_avg, ok = 1;
            for (int d = 0; ok && d < D; d++) {
                double mm = c->am[d] / n, ml = c->al[d] / n;
                double vm = fmax((c->am2[d] - n * mm * mm) / (n - 1), 0.0);
                double vl = fmax((c->al2[d] - n * ml * ml) / (n - 1), 0.0);
                if (sqrt(vm / n) > c->tol * exp(ml) || sqrt(vl / n) > c->tol) ok = 0;
            }
            done = ok;
        }
    }
    memcpy(c->pm, c->wm, sizeof(double) * D);
    memcpy(c->plsd, c->wlsd, sizeof(double) * D);
    memcpy(c->pse_m, c->wse_m, sizeof(double) * D);
    memcpy(c->pse_l, c->wse_l, sizeof(double) * D);
    c->p_elbo = em; c->p_elbo_var = ev; c->have_prev = 1;
    return done;
}

/* Record one iteration's lambda and ELBO; returns 1 at convergence. */
static int conv_add(conv_state *c, const double *lambda, const double *grad,
                    double elbo)
{
    int K = c->K;
    for (int k = 0; k < K; k++) {
        c->bsum[k] += lambda[k]; c->wsum[k] += lambda[k];
        c->gsum[k] += grad[k]; c->gsumsq[k] += grad[k] * grad[k];
    }
    c->elbo_sum += elbo; c->elbo_sumsq += elbo * elbo;
    c->n++;
    int done = 0;
    if (c->n % c->B == 0 && c->nb < N_BATCH) {
        for (int k = 0; k < K; k++) c->bsum[k] /= c->B;
        moments_lsd(c, c->bsum, c->bmean + (size_t) c->nb * c->D,
                    c->blsd + (size_t) c->nb * c->D);
        memset(c->bsum, 0, sizeof(double) * K);
        c->nb++;
    }
    if (c->n == c->W) {
        int was_phase1 = c->phase == 1;
        done = conv_window(c);
        /* in phase 1 asum holds the last window; the window that completes
           phase 1 is stationary and starts the average */
        if (was_phase1) memcpy(c->asum, c->wsum, sizeof(double) * K);
        memset(c->wsum, 0, sizeof(double) * K);
        memset(c->bsum, 0, sizeof(double) * K);
        memset(c->gsum, 0, sizeof(double) * K);
        memset(c->gsumsq, 0, sizeof(double) * K);
        c->n = c->nb = 0;
        c->elbo_sum = c->elbo_sumsq = 0.0;
    }
    return done;
}

/* The answer: lambda averaged over the averaging phase, or over the last
   complete window if the fit never got there. NULL if no window closed. */
static int conv_answer(const conv_state *c, double *out)
{
    if (!c->have_prev) return 0;
    int n = (c->phase == 2 ? c->n_avg + 1 : 1) * c->W;
    for (int k = 0; k < c->K; k++) out[k] = c->asum[k] / n;
    return 1;
}

static int all_finite(const double *x, int n)
{
    for (int i = 0; i < n; i++) if (!R_FINITE(x[i])) return 0;
    return 1;
}

/* .Call(C_vi_fit, target_spec, lower, upper, control) */
SEXP vi_fit(SEXP spec, SEXP lower, SEXP upper, SEXP control)
{
    int D = Rf_length(lower);
    if (!Rf_isReal(lower) || !Rf_isReal(upper) || Rf_length(upper) != D || D < 1)
        Rf_error("internal error: `lower` and `upper` must be doubles of one length >= 1");
    SEXP fam_name = bbvi_list_get(control, "family");
    SEXP est_name = bbvi_list_get(control, "estimator");
    SEXP opt_name = bbvi_list_get(control, "optimizer");
    if (!Rf_isString(fam_name) || !Rf_isString(est_name) || !Rf_isString(opt_name))
        Rf_error("internal error: control needs family, estimator, optimizer");
    const bbvi_family *fam = bbvi_family_by_name(CHAR(STRING_ELT(fam_name, 0)));
    int use_reparam = strcmp(CHAR(STRING_ELT(est_name, 0)), "reparam") == 0;
    int opt_type = strcmp(CHAR(STRING_ELT(opt_name, 0)), "adam") == 0 ? BBVI_ADAM : BBVI_ADAGRAD;
    int S = bbvi_list_int(control, "samples", 10);
    int max_iter = bbvi_list_int(control, "max_iter", 10000);
    int max_restarts = bbvi_list_int(control, "max_restarts", 5);
    double eta = bbvi_list_double(control, "eta", 0.1);
    int W = bbvi_list_int(control, "window", 100);
    if (S < 1 || max_iter < 1 || W < N_BATCH || !(eta > 0))
        Rf_error("internal error: bad control values");

    bbvi_target target;
    bbvi_target_from_sexp(spec, D, S, &target);
    if (use_reparam && !target.has_grad)
        Rf_error("internal error: reparameterization needs a gradient");
    bbvi_model model;
    bbvi_model_init(&model, &target, REAL(lower), REAL(upper), D, S);
    bbvi_estimator_ws ews;
    bbvi_estimator_ws_init(&ews, fam, &model, S);
    ews.use_cv = bbvi_list_int(control, "control_variates", 1);
    bbvi_estimator_fn estimate = use_reparam ? bbvi_grad_reparam : bbvi_grad_score;
    int K = ews.K;

    double *lambda = (double *) R_alloc(K, sizeof(double));
    double *good = (double *) R_alloc(K, sizeof(double));
    double *grad = (double *) R_alloc(K, sizeof(double));
    SEXP init_mean = bbvi_list_get(control, "init_mean");
    SEXP init_lsd = bbvi_list_get(control, "init_log_sd");
    if (!Rf_isReal(init_mean) || Rf_length(init_mean) != D ||
        !Rf_isReal(init_lsd) || Rf_length(init_lsd) != D)
        Rf_error("internal error: init_mean and init_log_sd must be doubles of length %d", D);
    fam->init(D, REAL(init_mean), REAL(init_lsd), lambda);
    memcpy(good, lambda, sizeof(double) * K);

    bbvi_optim opt;
    bbvi_optim_init(&opt, opt_type, K, eta);

    conv_state conv;
    conv_init(&conv, fam, D, K, bbvi_list_int(control, "window", 100),
              bbvi_list_double(control, "tol", 0.02));

    double *trace = (double *) R_alloc(max_iter, sizeof(double));
    int t = 0, good_t = 0, restarts = 0, converged = 0, status = VI_OK;
    int last_fail_nofinite = 0, nofinite_streak = 0;
    long n_dropped = 0;

    /* cli's C progress bar: ticking costs a flag test per iteration */
    SEXP bar = R_NilValue;
    if (bbvi_list_int(control, "progress", 0))
        bar = cli_progress_bar(max_iter, bbvi_list_get(control, "progress_config"));
    PROTECT(bar);

    GetRNGstate();
    while (t < max_iter) {
        if (t % 8 == 0) R_CheckUserInterrupt();
        if (!Rf_isNull(bar) && CLI_SHOULD_TICK) {
            cli_progress_set_status(bar, conv.phase == 1 ? "optimising" : "averaging");
            cli_progress_set(bar, t);
        }
        double elbo = estimate(&ews, lambda, grad);
        /* an iteration with no finite draw is skipped; only a run of them
           counts as a failure (a single one is plain bad luck at small S) */
        if (ews.n_finite == 0 && ++nofinite_streak < 10) continue;
        if (ews.n_finite > 0) nofinite_streak = 0;
        int failed = !R_FINITE(elbo) || !all_finite(grad, K);
        if (!failed) {
            n_dropped += S - ews.n_finite;
            bbvi_optim_step(&opt, lambda, grad);
            failed = !all_finite(lambda, K);
        }
        if (failed) {
            /* divergence guard: back to the last good lambda with a smaller
               step; give up after max_restarts */
            last_fail_nofinite = ews.n_finite == 0;
            nofinite_streak = 0;
            if (++restarts > max_restarts) {
                status = last_fail_nofinite ? VI_NO_FINITE : VI_DIVERGED;
                break;
            }
            memcpy(lambda, good, sizeof(double) * K);
            opt.eta *= 0.1;
            bbvi_optim_reset(&opt);
            t = good_t;
            conv_restart(&conv);
            continue;
        }
        trace[t++] = elbo;
        if (t % W == 0) { memcpy(good, lambda, sizeof(double) * K); good_t = t; }
        converged = conv_add(&conv, lambda, grad, elbo);
        if (converged) break;
    }
    PutRNGstate();
    cli_progress_done(bar);
    UNPROTECT(1);

    /* The answer is lambda averaged over the last complete window (iterate
       averaging removes most of the optimiser's own noise). */
    double *answer = (double *) R_alloc(K, sizeof(double));
    if (!conv_answer(&conv, answer)) memcpy(answer, lambda, sizeof(double) * K);
    int stop = converged ? STOP_CONVERGED :
        (conv.phase == 2 ? STOP_MAXITER_NOISY : STOP_MAXITER_MOVING);
    const char *names[] = { "lambda", "lambda_last", "mean", "chol", "elbo",
                            "converged", "iterations", "status", "restarts",
                            "eta", "dropped_draws", "stop", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SEXP lam = PROTECT(Rf_allocVector(REALSXP, K));
    memcpy(REAL(lam), answer, sizeof(double) * K);
    SET_VECTOR_ELT(out, 0, lam);
    SEXP lam_last = PROTECT(Rf_allocVector(REALSXP, K));
    memcpy(REAL(lam_last), lambda, sizeof(double) * K);
    SET_VECTOR_ELT(out, 1, lam_last);
    SEXP mean = PROTECT(Rf_allocVector(REALSXP, D));
    SEXP chol = PROTECT(Rf_allocMatrix(REALSXP, D, D));
    fam->moments(D, answer, REAL(mean), REAL(chol));
    SET_VECTOR_ELT(out, 2, mean);
    SET_VECTOR_ELT(out, 3, chol);
    SEXP tr = PROTECT(Rf_allocVector(REALSXP, t));
    memcpy(REAL(tr), trace, sizeof(double) * t);
    SET_VECTOR_ELT(out, 4, tr);
    SET_VECTOR_ELT(out, 5, Rf_ScalarLogical(converged));
    SET_VECTOR_ELT(out, 6, Rf_ScalarInteger(t));
    SET_VECTOR_ELT(out, 7, Rf_ScalarInteger(status));
    SET_VECTOR_ELT(out, 8, Rf_ScalarInteger(restarts));
    SET_VECTOR_ELT(out, 9, Rf_ScalarReal(opt.eta));
    SET_VECTOR_ELT(out, 10, Rf_ScalarReal((double) n_dropped));
    SET_VECTOR_ELT(out, 11, Rf_ScalarInteger(stop));
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
    int D = Rf_length(lower);
    if (!Rf_isReal(zeta) || !Rf_isReal(lower) || !Rf_isReal(upper) ||
        Rf_length(upper) != D || D < 1 || XLENGTH(zeta) % D != 0)
        Rf_error("internal error: bad arguments to logdens");
    int S = (int) (XLENGTH(zeta) / D);
    int wg = Rf_asLogical(want_grad) == TRUE;
    bbvi_target target;
    bbvi_target_from_sexp(spec, D, S, &target);
    if (wg && !target.has_grad) Rf_error("internal error: target has no gradient");
    bbvi_model model;
    bbvi_model_init(&model, &target, REAL(lower), REAL(upper), D, S);
    SEXP lp = PROTECT(Rf_allocVector(REALSXP, S));
    SEXP gr = PROTECT(wg ? Rf_allocMatrix(REALSXP, D, S) : R_NilValue);
    bbvi_model_logdens(&model, S, REAL(zeta), REAL(lp), wg ? REAL(gr) : NULL);
    if (wg) Rf_setAttrib(lp, Rf_install("gradient"), gr);
    UNPROTECT(2);
    return lp;
}

/* .Call(C_grad_samples, target_spec, lower, upper, control): n independent
   gradient estimates at a fixed lambda, to study estimator noise. control:
   family, estimator, samples, lambda, n, control_variates. Returns
   list(grad = K x n, elbo = n). */
SEXP grad_samples(SEXP spec, SEXP lower, SEXP upper, SEXP control)
{
    int D = Rf_length(lower);
    if (!Rf_isReal(lower) || !Rf_isReal(upper) || Rf_length(upper) != D || D < 1)
        Rf_error("internal error: `lower` and `upper` must be doubles of one length >= 1");
    SEXP fam_name = bbvi_list_get(control, "family");
    SEXP est_name = bbvi_list_get(control, "estimator");
    SEXP lam = bbvi_list_get(control, "lambda");
    if (!Rf_isString(fam_name) || !Rf_isString(est_name) || !Rf_isReal(lam))
        Rf_error("internal error: control needs family, estimator, lambda");
    const bbvi_family *fam = bbvi_family_by_name(CHAR(STRING_ELT(fam_name, 0)));
    int use_reparam = strcmp(CHAR(STRING_ELT(est_name, 0)), "reparam") == 0;
    int S = bbvi_list_int(control, "samples", 10), n = bbvi_list_int(control, "n", 100);
    if (S < 1 || n < 1) Rf_error("internal error: bad samples or n");
    bbvi_target target;
    bbvi_target_from_sexp(spec, D, S, &target);
    if (use_reparam && !target.has_grad)
        Rf_error("internal error: reparameterization needs a gradient");
    bbvi_model model;
    bbvi_model_init(&model, &target, REAL(lower), REAL(upper), D, S);
    bbvi_estimator_ws ews;
    bbvi_estimator_ws_init(&ews, fam, &model, S);
    ews.use_cv = bbvi_list_int(control, "control_variates", 1);
    int K = ews.K;
    if (Rf_length(lam) != K) Rf_error("internal error: lambda must have length %d", K);
    bbvi_estimator_fn estimate = use_reparam ? bbvi_grad_reparam : bbvi_grad_score;
    SEXP g = PROTECT(Rf_allocMatrix(REALSXP, K, n));
    SEXP el = PROTECT(Rf_allocVector(REALSXP, n));
    GetRNGstate();
    for (int i = 0; i < n; i++) {
        if (i % 8 == 0) R_CheckUserInterrupt();
        REAL(el)[i] = estimate(&ews, REAL(lam), REAL(g) + (size_t) i * K);
    }
    PutRNGstate();
    const char *names[] = { "grad", "elbo", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SET_VECTOR_ELT(out, 0, g);
    SET_VECTOR_ELT(out, 1, el);
    UNPROTECT(3);
    return out;
}
