/* minibatch.c: minibatch VI for custom models written as
   log p = logprior(theta) + sum over rows of loglik (bbvi_model(loglik =,
   logprior =, n =)), for models with a gradient.

   q = N(m, L L') on the unconstrained scale (L diagonal for mean-field) is
   moved by natural-gradient (Newton) steps to the fixed point of the ELBO,
   as glm_incr_fit (glm_quad.c) does for GLMs:

     E_q grad log p = 0 at the mean,  Sigma^-1 = -E_q Hess log p,

   both expectations over one fixed, balanced set of M base draws eps
   (antithetic and whitened, so exact for a Gaussian posterior: the fixed
   point is the stationary point of the fixed-draw ELBO of src/saa.c). The
   expected Hessian comes from gradients alone, by Stein's identity
   E[H] = E[g(z) eps'] L^-1 (with antithetic draws: central differences).

   The rows are cut into blocks (a random partition, fixed per fit). A
   visit to a block computes its rows' share of the expected gradient G_b
   and Hessian H_b at the current q, stored as the linearisation
   c_b = G_b - H_b m_b, H_b: sum_b (c_b + H_b m) approximates the data
   gradient at any mean m. q then jumps to the Newton fixed point of those
   sums with the prior (evaluated afresh at q; it touches no rows). Each
   block's share is as of its last visit (SAG-style stale sums): unlike a
   rescaled minibatch estimate, whose noise would leave the mean about
   sd sqrt(N / (B T)) from the answer after T steps, the stale sums converge
   to the full-data ones. During the first epoch the data sums cover the
   rows seen so far, scaled by N / rows seen. When an epoch moves no mean by
   more than 0.1 sd, every block is visited at one fixed q (exact sums) and
   a full Newton step taken; converged when that step is below tol (sds for
   means, log sds for sds). */
#include "bbvi.h"
#include <math.h>
#include <string.h>

enum { MB_OK = 0, MB_NOT_FINITE = 2 };

/* the log-Jacobian alone: subtracted from a block's log density, which the
   model layer adds it to (it belongs to the prior, once) */
static void zero_eval(bbvi_target *t, int S, const double *theta, double *lp,
                      double *grad)
{
    memset(lp, 0, sizeof(double) * S);
    if (grad) memset(grad, 0, sizeof(double) * (size_t) t->dim * S);
}

typedef struct {
    int D, M, fr;
    const double *eps;          /* D x M fixed base draws */
    bbvi_model *blk, *prior, *jac;
    SEXP blk_env, idx_sym;
    const int *rows, *start;    /* block b: rows[start[b] .. start[b + 1]) */
    double *z, *lp, *lj, *g, *gj;   /* D x M, M, M, D x M, D x M */
    double row_evals, prior_evals;
} mb_ws;

/* zeta = m + L eps for the fixed draws */
static void mb_draws(mb_ws *w, const double *m, const double *L)
{
    int D = w->D;
    for (int s = 0; s < w->M; s++) {
        const double *e = w->eps + (size_t) s * D;
        double *z = w->z + (size_t) s * D;
        for (int i = 0; i < D; i++) {
            double a = m[i];
            if (w->fr) for (int k = 0; k <= i; k++) a += L[i + (size_t) k * D] * e[k];
            else a += L[i + (size_t) i * D] * e[i];
            z[i] = a;
        }
    }
}

/* The expected log density, gradient G (D) and symmetrised Stein Hessian H
   (D x D) over the draws in w->z of model `md` (minus the log-Jacobian when
   `sub_jac`). Returns 0 when some draw's value or gradient is not finite. */
static int mb_expect(mb_ws *w, bbvi_model *md, int sub_jac, const double *L,
                     double *ell, double *G, double *H)
{
    int D = w->D, M = w->M;
    bbvi_model_logdens(md, M, w->z, w->lp, w->g);
    if (sub_jac) {
        bbvi_model_logdens(w->jac, M, w->z, w->lj, w->gj);
        for (int s = 0; s < M; s++) w->lp[s] -= w->lj[s];
        for (size_t k = 0; k < (size_t) D * M; k++) w->g[k] -= w->gj[k];
    }
    double a = 0.0;
    for (int s = 0; s < M; s++) {
        if (!R_FINITE(w->lp[s])) return 0;
        a += w->lp[s];
    }
    for (size_t k = 0; k < (size_t) D * M; k++) if (!R_FINITE(w->g[k])) return 0;
    *ell = a / M;
    /* E = mean g eps' (D x D), then H = E L^-1 (rows: L' h = e) */
    memset(G, 0, sizeof(double) * D);
    memset(H, 0, sizeof(double) * (size_t) D * D);
    for (int s = 0; s < M; s++) {
        const double *gs = w->g + (size_t) s * D, *e = w->eps + (size_t) s * D;
        for (int i = 0; i < D; i++) G[i] += gs[i] / M;
        for (int j = 0; j < D; j++) {
            double ej = e[j] / M;
            for (int i = 0; i < D; i++) H[i + (size_t) j * D] += gs[i] * ej;
        }
    }
    for (int i = 0; i < D; i++) {
        /* row i of H: solve x L = e_row, i.e. back substitution with L' */
        for (int j = D - 1; j >= 0; j--) {
            double v = H[i + (size_t) j * D];
            if (w->fr) for (int k = j + 1; k < D; k++) v -= H[i + (size_t) k * D] * L[k + (size_t) j * D];
            H[i + (size_t) j * D] = v / L[j + (size_t) j * D];
        }
    }
    for (int j = 0; j < D; j++)
        for (int i = j + 1; i < D; i++) {
            double v = 0.5 * (H[i + (size_t) j * D] + H[j + (size_t) i * D]);
            H[i + (size_t) j * D] = H[j + (size_t) i * D] = v;
        }
    return 1;
}

/* lower Cholesky factor of A + ridge (added until positive definite) */
static void chol_pd(int D, const double *A, double *Lc, double *tmp)
{
    double dmax = 0.0;
    for (int j = 0; j < D; j++) dmax = fmax(dmax, fabs(A[j + (size_t) j * D]));
    double ridge = 0.0;
    for (int tries = 0; tries < 60; tries++) {
        memcpy(tmp, A, sizeof(double) * D * D);
        for (int j = 0; j < D; j++) tmp[j + (size_t) j * D] += ridge;
        if (bbvi_chol(D, tmp, Lc)) return;
        ridge = ridge == 0.0 ? 1e-10 * (dmax > 0 ? dmax : 1.0) : 10.0 * ridge;
    }
    Rf_error("internal error: no positive definite precision in the minibatch path");
}

/* Visit block b at q = (m, L): replace its share of the sums. 0 when the
   block's log-likelihood was not finite at some draw (sums untouched). */
static int mb_visit(mb_ws *w, bbvi_block_sums *ss, int b, const double *m,
                    const double *L, double *G, double *H)
{
    int D = w->D, nr = w->start[b + 1] - w->start[b];
    SEXP idx = PROTECT(Rf_allocVector(INTSXP, nr));
    memcpy(INTEGER(idx), w->rows + w->start[b], sizeof(int) * nr);
    Rf_defineVar(w->idx_sym, idx, w->blk_env);
    UNPROTECT(1);
    mb_draws(w, m, L);
    double ell;
    int ok = mb_expect(w, w->blk, 1, L, &ell, G, H);
    w->row_evals += (double) nr * w->M;
    if (!ok) return 0;
    /* per block: D x D expected Hessian, D (its Newton right-hand side),
       expected log-likelihood */
    size_t DD = (size_t) D * D;
    double *Hb = ss->Hb + (size_t) b * DD, *cb = ss->cb + (size_t) b * D;
    bbvi_block_sums_take_out(ss, b);
    memcpy(Hb, H, sizeof(double) * DD);
    for (int i = 0; i < D; i++) {
        double a = G[i];
        for (int j = 0; j < D; j++) a -= H[i + (size_t) j * D] * m[j];
        cb[i] = a;
    }
    ss->eb[b] = ell;
    bbvi_block_sums_put_back(ss, b, nr);
    return 1;
}

/* The Newton fixed point of the sums (data part scaled by `scale`) and the
   prior at q = (m, L): writes the new m and L, returns the ELBO estimate at
   the old q, or NaN when the prior was not finite at a draw. The mean's
   step is capped at max_step (unconstrained units) per coordinate. */
static double mb_update(mb_ws *w, const bbvi_block_sums *ss, double scale, double *m,
                        double *L, double max_step, double *Gp, double *Hp,
                        double *Lam, double *Lc, double *tmp, double *x)
{
    int D = w->D;
    size_t DD = (size_t) D * D;
    mb_draws(w, m, L);
    double lpp;
    if (!mb_expect(w, w->prior, 0, L, &lpp, Gp, Hp)) return R_NaN;
    w->prior_evals += w->M;
    double elbo = scale * ss->ell + lpp + 0.5 * D * (1.0 + log(2.0 * M_PI));
    for (int j = 0; j < D; j++) elbo += log(L[j + (size_t) j * D]);
    for (size_t k = 0; k < DD; k++) Lam[k] = -(scale * ss->H[k] + Hp[k]);
    for (int i = 0; i < D; i++) {
        double a = scale * ss->c[i] + Gp[i];
        for (int j = 0; j < D; j++) a -= Hp[i + (size_t) j * D] * m[j];
        x[i] = a;
    }
    chol_pd(D, Lam, Lc, tmp);
    bbvi_chol_solve(D, Lc, x);          /* the new mean */
    double big = 0.0;
    for (int i = 0; i < D; i++) big = fmax(big, fabs(x[i] - m[i]));
    double r = big > max_step ? max_step / big : 1.0;
    for (int i = 0; i < D; i++) m[i] += r * (x[i] - m[i]);
    memset(L, 0, sizeof(double) * DD);
    if (!w->fr) {
        /* mean-field: the diagonal of the precision (as the fixed-draw
           ELBO's stationary point has it) */
        for (int j = 0; j < D; j++) {
            double p = Lam[j + (size_t) j * D];
            if (!(p > 0)) p = Lc[j + (size_t) j * D] * Lc[j + (size_t) j * D];
            L[j + (size_t) j * D] = 1.0 / sqrt(p);
        }
    } else {
        /* Sigma = Lam^-1 column by column, then its Cholesky factor */
        for (int j = 0; j < D; j++) {
            memset(x, 0, sizeof(double) * D);
            x[j] = 1.0;
            bbvi_chol_solve(D, Lc, x);
            memcpy(tmp + (size_t) j * D, x, sizeof(double) * D);
        }
        if (!bbvi_chol(D, tmp, L)) {
            for (int j = 0; j < D; j++)
                L[j + (size_t) j * D] = sqrt(fmax(tmp[j + (size_t) j * D], 1e-300));
        }
    }
    return elbo;
}

/* .Call(C_vi_minibatch, blk_spec, prior_spec, lower, upper, control):
   blk_spec is the target of one block's log-likelihood (an R target that
   reads `idx` from control$blk_env), prior_spec the log prior's. control:
   family ("meanfield"/"fullrank"), samples (M, even, >= 2 D + 2), rows
   (the row indices, block after block, 1-based), start (nb + 1 block
   offsets, 0-based), init_mean, init_sd (D), max_epochs, tol, max_step.
   Returns list(result as vi_fit's, c(epochs, row_evals, prior_evals,
   backoffs, newton_step)). */
SEXP vi_minibatch(SEXP blk_spec, SEXP prior_spec, SEXP lower, SEXP upper,
                  SEXP control)
{
    int Dth, D = bbvi_check_bounds(blk_spec, lower, upper, &Dth);
    int M = bbvi_need_int(control, "samples");
    int max_epochs = bbvi_need_int(control, "max_epochs");
    double tol = bbvi_need_double(control, "tol");
    double max_step = bbvi_need_double(control, "max_step");
    SEXP rows = bbvi_list_get(control, "rows"), start = bbvi_list_get(control, "start");
    SEXP im = bbvi_list_get(control, "init_mean"), isd = bbvi_list_get(control, "init_sd");
    SEXP env = bbvi_list_get(control, "blk_env"), fam_s = bbvi_list_get(control, "family");
    if (M < 2 * D + 2 || M % 2 || max_epochs < 1 || !Rf_isInteger(rows) ||
        !Rf_isInteger(start) || Rf_length(start) < 2 || !Rf_isReal(im) ||
        Rf_length(im) != D || !Rf_isReal(isd) || Rf_length(isd) != D ||
        !Rf_isEnvironment(env) || !Rf_isString(fam_s))
        Rf_error("internal error: bad arguments to vi_minibatch");
    int nb = Rf_length(start) - 1;
    const int *st = INTEGER(start);
    if (st[0] != 0 || st[nb] != Rf_length(rows))
        Rf_error("internal error: bad block offsets");
    const char *famname = CHAR(STRING_ELT(fam_s, 0));
    int fr = strcmp(famname, "fullrank") == 0;
    const bbvi_family *fam = bbvi_family_by_name(fr ? "fullrank" : "meanfield");
    size_t DD = (size_t) D * D;

    bbvi_target tb, tp, tz;
    bbvi_target_from_sexp(blk_spec, Dth, M, &tb);
    bbvi_target_from_sexp(prior_spec, Dth, M, &tp);
    if (!tb.has_grad || !tp.has_grad)
        Rf_error("internal error: the minibatch path needs gradients");
    tz = tb;
    tz.eval = zero_eval;
    tz.ctx = NULL;
    bbvi_model mb, mp, mz;
    bbvi_model_init(&mb, &tb, REAL(lower), REAL(upper), D, M);
    bbvi_model_set_layout(&mb, blk_spec);
    bbvi_model_init(&mp, &tp, REAL(lower), REAL(upper), D, M);
    bbvi_model_set_layout(&mp, blk_spec);
    bbvi_model_init(&mz, &tz, REAL(lower), REAL(upper), D, M);
    bbvi_model_set_layout(&mz, blk_spec);

    mb_ws w;
    w.D = D; w.M = M; w.fr = fr;
    w.blk = &mb; w.prior = &mp; w.jac = &mz;
    w.blk_env = env; w.idx_sym = Rf_install("idx");
    w.rows = INTEGER(rows); w.start = st;
    w.z = (double *) R_alloc((size_t) D * M, sizeof(double));
    w.g = (double *) R_alloc((size_t) D * M, sizeof(double));
    w.gj = (double *) R_alloc((size_t) D * M, sizeof(double));
    w.lp = (double *) R_alloc(M, sizeof(double));
    w.lj = (double *) R_alloc(M, sizeof(double));
    w.row_evals = w.prior_evals = 0.0;
    double *eps = (double *) R_alloc((size_t) D * M, sizeof(double));
    w.eps = eps;

    bbvi_block_sums ss;
    bbvi_block_sums_init(&ss, nb, D);

    double *m = (double *) R_alloc(D, sizeof(double));
    double *L = (double *) R_alloc(DD, sizeof(double));
    double *m_prev = (double *) R_alloc(D, sizeof(double));
    double *L_prev = (double *) R_alloc(DD, sizeof(double));
    double *m_epoch = (double *) R_alloc(D, sizeof(double));
    double *L_old = (double *) R_alloc(DD, sizeof(double));
    double *G = (double *) R_alloc(D, sizeof(double));
    double *H = (double *) R_alloc(DD, sizeof(double));
    double *Gp = (double *) R_alloc(D, sizeof(double));
    double *Hp = (double *) R_alloc(DD, sizeof(double));
    double *Lam = (double *) R_alloc(DD, sizeof(double));
    double *Lc = (double *) R_alloc(DD, sizeof(double));
    double *tmp = (double *) R_alloc(DD, sizeof(double));
    double *x = (double *) R_alloc(D, sizeof(double));
    int trace_cap = max_epochs + 1;
    double *trace = (double *) R_alloc(trace_cap, sizeof(double));
    int *order = (int *) R_alloc(nb, sizeof(int));
    /* start: a narrow q at init_mean (the first visits then take Newton
       steps on the mode; the q's width follows from the curvature) */
    memcpy(m, REAL(im), sizeof(double) * D);
    memset(L, 0, sizeof(double) * DD);
    for (int j = 0; j < D; j++) L[j + (size_t) j * D] = 1e-3 * REAL(isd)[j];
    memcpy(m_prev, m, sizeof(double) * D);
    memcpy(L_prev, L, sizeof(double) * DD);

    bbvi_rng_hold();
    /* balanced base draws: antithetic pairs, whitened (E eps eps' = I) */
    for (size_t k = 0; k < (size_t) D * (M / 2); k++) eps[k] = norm_rand();
    for (int b = 0; b < nb; b++) order[b] = b;
    bbvi_rng_release();
    bbvi_balance_draws(D, M, eps, 1);

    int epoch = 0, n_trace = 0, converged = 0, frozen = 0, status = MB_OK;
    int backoffs = 0, fails = 0;
    double newton_step = NA_REAL;
    while (epoch < max_epochs && status == MB_OK) {
        memcpy(m_epoch, m, sizeof(double) * D);
        memcpy(L_old, L, DD * sizeof(double));
        if (!frozen) {
            bbvi_rng_hold();
            for (int b = nb - 1; b > 0; b--) {
                int k = (int) floor(unif_rand() * (b + 1));
                if (k > b) k = b;
                int t = order[b]; order[b] = order[k]; order[k] = t;
            }
            bbvi_rng_release();
        }
        double elbo = R_NaN;
        int restart = 0;
        for (int k = 0; k < nb; k++) {
            R_CheckUserInterrupt();
            int b = frozen ? k : order[k];
            if (!mb_visit(&w, &ss, b, m, L, G, H)) {
                /* not finite at some draw: back halfway to the q before
                   the last step and try again */
                if (++fails > 30) { status = MB_NOT_FINITE; break; }
                backoffs++;
                for (int i = 0; i < D; i++) m[i] = 0.5 * (m[i] + m_prev[i]);
                for (size_t q = 0; q < DD; q++) L[q] = 0.5 * (L[q] + L_prev[q]);
                if (frozen) { restart = 1; break; }
                k--;
                continue;
            }
            fails = 0;
            if (frozen && k < nb - 1) continue;   /* one q for the whole pass */
            memcpy(m_prev, m, sizeof(double) * D);
            memcpy(L_prev, L, sizeof(double) * DD);
            elbo = mb_update(&w, &ss, (double) st[nb] / ss.rows_seen, m, L,
                             max_step, Gp, Hp, Lam, Lc, tmp, x);
            if (ISNAN(elbo)) {
                memcpy(m, m_prev, sizeof(double) * D);
                memcpy(L, L_prev, sizeof(double) * DD);
                status = MB_NOT_FINITE;
                break;
            }
        }
        if (status != MB_OK) break;
        if (restart) continue;
        epoch++;
        if (n_trace < trace_cap) trace[n_trace++] = elbo;
        /* the move over the epoch: means in new sds, log sds */
        double moved = 0.0;
        for (int j = 0; j < D; j++) {
            double sn = 0.0, so = 0.0;
            for (int k = 0; k <= j; k++) {
                sn += L[j + (size_t) k * D] * L[j + (size_t) k * D];
                so += L_old[j + (size_t) k * D] * L_old[j + (size_t) k * D];
            }
            moved = fmax(moved, fabs(m[j] - m_epoch[j]) / sqrt(sn));
            if (frozen) moved = fmax(moved, 0.5 * fabs(log(sn / so)));
        }
        if (frozen) {
            newton_step = moved;
            if (moved < tol) { converged = 1; break; }
        } else {
            frozen = epoch >= 2 && moved < 0.1;
        }
    }

    /* lambda of q = N(m, L L') */
    int K = fam->n_lambda(fam, D);
    double *lambda = (double *) R_alloc(K, sizeof(double));
    double *zero = (double *) R_alloc(D, sizeof(double));
    memset(zero, 0, sizeof(double) * D);
    fam->init(fam, D, zero, zero, lambda);
    if (fr) fam->affine(fam, D, lambda, L, m);
    else {
        for (int j = 0; j < D; j++) x[j] = L[j + (size_t) j * D];
        fam->affine_diag(fam, D, lambda, x, m);
    }
    bbvi_vi_result r = { lambda, lambda, K, trace, n_trace, converged, epoch, 0,
                         status == MB_OK ? "ok" : "no_finite",
                         converged ? "converged" : "max_iter_moving", NA_REAL, 0.0,
                         w.row_evals + w.prior_evals, w.row_evals + w.prior_evals,
                         NA_REAL, 0, 0.0 };
    SEXP res = PROTECT(bbvi_vi_result_sexp(fam, D, &r));
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
    SET_VECTOR_ELT(out, 0, res);
    SEXP stats = PROTECT(Rf_allocVector(REALSXP, 5));
    REAL(stats)[0] = epoch;
    REAL(stats)[1] = w.row_evals;
    REAL(stats)[2] = w.prior_evals;
    REAL(stats)[3] = backoffs;
    REAL(stats)[4] = newton_step;
    SET_VECTOR_ELT(out, 1, stats);
    Rf_defineVar(w.idx_sym, R_NilValue, env);
    UNPROTECT(3);
    return out;
}
