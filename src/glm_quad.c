/* glm_quad.c: the deterministic ("quadrature") path for GLMs.

   Under a Gaussian q(z) = N(mu, Sigma) over z = (beta, log sigma), every
   linear predictor eta_i = x_i'beta + offset_i is Gaussian, N(m_i, v_i), so
   E_q log p(y, z) is a sum of one-dimensional integrals: closed forms for
   gaussian (through the Gaussian moment generating function, which reduces
   it to the sufficient statistics X'WX, X'Wy, y'Wy) and poisson, and
   Gauss-Hermite quadrature for binomial and for non-normal priors. Its
   gradient and Hessian in z follow from Bonnet's and Price's theorems:
   grad_mu E f = E grad f and grad_Sigma E f = E hess f / 2.

   The ELBO is maximised by variational Newton steps (the natural-gradient
   fixed point of Gaussian VI): Lambda <- (1 - rho) Lambda + rho (-E hess),
   mu <- mu + rho Lambda^{-1} E grad, with rho halved until the ELBO rises.
   At a fixed point Sigma^{-1} = -E hess and E grad = 0, exactly the
   stationarity conditions of the ELBO. Mean-field keeps the diagonal of
   the precision update and takes a full Newton step for the mean. */
#include "glm.h"
#include <R_ext/BLAS.h>
#include <R_ext/Lapack.h>
#include <math.h>
#include <string.h>

#ifndef FCONE
# define FCONE
#endif

#define LOG_2PI 1.837877066409345483560659472811

/* why the Newton iterations stopped, and the names R sees
   (R/glm-status.R words them) */
enum { QUAD_CONVERGED = 0, QUAD_MAXITER = 1, QUAD_LINESEARCH = 2,
       QUAD_STALLED = 3 };
static const char *quad_status_name[] = { "converged", "max_iter", "line_search",
                                          "stalled" };

typedef struct {
    glm_data g;
    int fr;                     /* full-rank q? */
    int K;                      /* quadrature nodes */
    const double *gz, *gw;      /* nodes and weights for N(0, 1) */
    int K2;                     /* a short rule for predictors with sd < 0.5 */
    const double *gz2, *gw2;
    int K3;                     /* a shorter one for sd < 0.05 (large N): the
                                   error of an n-node rule is O(sd^2n) */
    const double *gz3, *gw3;
    double *Ls;                 /* P x P scratch: Cholesky factor of Sigma */
    double *G, *b, yy, sw;      /* gaussian sufficient statistics */
    double *e1, *e2;            /* N: weighted E f', -E f'' per row */
    int nr;                     /* rows per block */
    int nch, nt;                /* row chunks, threads (see glm.c) */
    double *xb, *tb;            /* per thread: nr x P design block; nr x (P + 2)
                                   for m, v and the product with L */
    double *pell, *pg, *pH;     /* chunk sums: ELL, gradient, Hessian */
    double *work;               /* 2 P + 2 */
    double ell;                 /* expected log-likelihood, last evaluation */
} quad_ws;

/* C[lower] += alpha A'A for A (nr x P, leading dimension lda): the
   reference BLAS's dsyrk runs one dependent chain of additions per dot
   product; four partial sums let the additions overlap (the hot loop of the
   quadrature path's Hessian, O(N P^2) per Newton iteration). */
static void crossprod_lower(int nr, int P, const double *A, int lda, double alpha,
                            double *C, int ldc)
{
    for (int j = 0; j < P; j++) {
        const double *aj = A + (size_t) j * lda;
        for (int k = j; k < P; k++) {
            const double *ak = A + (size_t) k * lda;
            double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
            int i = 0;
            for (; i + 3 < nr; i += 4) {
                s0 += aj[i] * ak[i];
                s1 += aj[i + 1] * ak[i + 1];
                s2 += aj[i + 2] * ak[i + 2];
                s3 += aj[i + 3] * ak[i + 3];
            }
            for (; i < nr; i++) s0 += aj[i] * ak[i];
            C[k + (size_t) j * ldc] += alpha * ((s0 + s1) + (s2 + s3));
        }
    }
}

/* E over x ~ N(mean, var) of a prior's log density and its derivatives */
static void prior_expect(const quad_ws *w, int type, const double *par,
                         int log_scale, double mean, double var,
                         double *ef, double *ef1, double *ef2)
{
    *ef = *ef1 = *ef2 = 0.0;
    if (type == PRIOR_FLAT) {
        if (log_scale) { *ef = mean; *ef1 = 1.0; }   /* the Jacobian */
        return;
    }
    if (type == PRIOR_NORMAL && !log_scale) {
        double s = par[1], d = mean - par[0];
        *ef = -0.5 * (d * d + var) / (s * s) - log(s) - 0.5 * LOG_2PI;
        *ef1 = -d / (s * s);
        *ef2 = -1.0 / (s * s);
        return;
    }
    double sd = sqrt(var), f, f1, f2;
    for (int k = 0; k < w->K; k++) {
        double x = mean + sd * w->gz[k];
        if (log_scale) {
            /* h(t) = log p_sigma(e^t) + t */
            double s = exp(x);
            bbvi_glm_prior(type, par, 1, s, &f, &f1, &f2);
            *ef += w->gw[k] * (f + x);
            *ef1 += w->gw[k] * (f1 * s + 1.0);
            *ef2 += w->gw[k] * (f2 * s * s + f1 * s);
        } else {
            bbvi_glm_prior(type, par, 0, x, &f, &f1, &f2);
            *ef += w->gw[k] * f;
            *ef1 += w->gw[k] * f1;
            *ef2 += w->gw[k] * f2;
        }
    }
}

/* Rows [r0, r0 + nr) of the design (x, leading dimension ld) under q:
   the predictors' moments m = x'mu + offset, v = x' Sigma x (w->Ls holds
   Sigma's Cholesky factor when full-rank and `nonzero`), then per row the
   weighted E f' (e1) and -E f'' (e2, >= 0) by quadrature (binomial) or in
   closed form (poisson). Returns the rows' expected log-likelihood without
   the data's constant. tbuf: nr x (P + 2) scratch. */
static double rows_expect(const quad_ws *w, const double *x, int ld, int r0,
                          int nr, const double *mu, const double *Sig,
                          int nonzero, double *tbuf, double *e1, double *e2)
{
    const glm_data *gd = &w->g;
    int P = gd->P, D = gd->D, inc = 1;
    double one = 1.0, ellc = 0.0;
    double *m = tbuf, *v = tbuf + nr;
    double *T = tbuf + 2 * (size_t) nr;
    for (int i = 0; i < nr; i++) { m[i] = glm_off(gd, r0 + i); v[i] = 0.0; }
    F77_CALL(dgemv)("N", &nr, &P, &one, x, &ld, mu, &inc, &one, m, &inc FCONE);
    if (w->fr && nonzero) {
        /* v_i = |L' x_i|^2: rows of X L, in column strips of T */
        for (int j = 0; j < P; j++)
            memcpy(T + (size_t) j * nr, x + (size_t) j * ld, sizeof(double) * nr);
        F77_CALL(dtrmm)("R", "L", "N", "N", &nr, &P, &one, w->Ls, &P, T, &nr
                        FCONE FCONE FCONE FCONE);
        for (int j = 0; j < P; j++) {
            const double *tj = T + (size_t) j * nr;
            for (int i = 0; i < nr; i++) v[i] += tj[i] * tj[i];
        }
    } else if (!w->fr) {
        for (int j = 0; j < P; j++) {
            const double *xj = x + (size_t) j * ld;
            double s2 = Sig[j + (size_t) j * D];
            for (int i = 0; i < nr; i++) v[i] += xj[i] * xj[i] * s2;
        }
    }
    for (int i = 0; i < nr; i++) {
        int r = r0 + i;
        double wi = glm_w(gd, r), y = gd->y[r], mi = m[i];
        double sd = sqrt(v[i] > 0 ? v[i] : 0.0);
        if (gd->family == GLM_BINOMIAL) {
            double n = glm_trials(gd, r), el = 0.0, ep = 0.0, epq = 0.0;
            int K = w->K;
            const double *gz = w->gz, *gw = w->gw;
            if (sd < 0.05) { K = w->K3; gz = w->gz3; gw = w->gw3; }
            else if (sd < 0.5) { K = w->K2; gz = w->gz2; gw = w->gw2; }
            if (!(sd > 0)) K = 1;
            for (int k = 0; k < K; k++) {
                double xk = sd > 0 ? mi + sd * gz[k] : mi;
                double wk = sd > 0 ? gw[k] : 1.0;
                double ex = exp(-fabs(xk));
                double p = xk >= 0 ? 1.0 / (1.0 + ex) : ex / (1.0 + ex);
                el += wk * ((xk > 0 ? xk : 0.0) + log1p(ex));
                ep += wk * p;
                epq += wk * ex / ((1.0 + ex) * (1.0 + ex));
            }
            ellc += wi * (y * mi - n * el);
            e1[i] = wi * (y - n * ep);
            e2[i] = wi * n * epq;          /* -E f'' >= 0 */
        } else {
            double em = exp(mi + 0.5 * sd * sd);
            ellc += wi * (y * mi - em);
            e1[i] = wi * (y - em);
            e2[i] = wi * em;
        }
    }
    return ellc;
}

/* gc += X' e1 and the lower triangle of Hc += sign X' diag(e2) X for rows
   x (nr x P, leading dimension ld), e2 >= 0; tbuf: nr x P scratch */
static void rows_derivs(const double *x, int ld, int nr, int P,
                        const double *e1, const double *e2, double sign,
                        double *tbuf, double *gc, double *Hc)
{
    int inc = 1;
    double one = 1.0;
    F77_CALL(dgemv)("T", &nr, &P, &one, x, &ld, e1, &inc, &one, gc, &inc FCONE);
    for (int j = 0; j < P; j++) {
        const double *xj = x + (size_t) j * ld;
        double *tj = tbuf + (size_t) j * nr;
        for (int i = 0; i < nr; i++) tj[i] = xj[i] * sqrt(e2[i]);
    }
    crossprod_lower(nr, P, tbuf, nr, sign, Hc, P);
}

/* One pass over all rows, threaded over the workspace's row chunks (fixed
   by N, so the chunk sums, added in order by the caller, do not depend on
   the number of threads): visit() sees every block of rows of chunk c,
   with the thread's scratch tbuf (nr x (P + 2)). */
typedef void (*quad_visit)(quad_ws *w, int c, const double *x, int ld, int r0,
                           int nr, double *tbuf, void *ctx);
static void quad_pass(quad_ws *w, quad_visit visit, void *ctx)
{
    const glm_data *gd = &w->g;
    int N = gd->N, P = gd->P, nch = w->nch, nr0 = w->nr;
    int nt = (double) N * (P + 1) * (P + 1) >= GLM_THREAD_WORK ? w->nt : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(dynamic)
#endif
    for (int c = 0; c < nch; c++) {
        int tid = glm_thread_id();
        double *xbuf = w->xb + (size_t) tid * nr0 * P;
        double *tbuf = w->tb + (size_t) tid * nr0 * (P + 2);
        int ra = (int) ((long long) N * c / nch), rb = (int) ((long long) N * (c + 1) / nch);
        for (int r0 = ra; r0 < rb; r0 += nr0) {
            int nr = rb - r0 < nr0 ? rb - r0 : nr0, ld;
            const double *x = glm_xblock(gd, r0, nr, xbuf, &ld);
            visit(w, c, x, ld, r0, nr, tbuf, ctx);
        }
    }
}

typedef struct { const double *mu, *Sig; int nonzero; } expect_ctx;

/* chunk c's expected log-likelihood, and e1, e2 per row */
static void visit_expect(quad_ws *w, int c, const double *x, int ld, int r0,
                         int nr, double *tbuf, void *ctx)
{
    const expect_ctx *e = (const expect_ctx *) ctx;
    w->pell[c] += rows_expect(w, x, ld, r0, nr, e->mu, e->Sig, e->nonzero, tbuf,
                              w->e1 + r0, w->e2 + r0);
}

/* chunk c's X' e1 and -X' diag(e2) X */
static void visit_derivs(quad_ws *w, int c, const double *x, int ld, int r0,
                         int nr, double *tbuf, void *ctx)
{
    int P = w->g.P;
    (void) ctx;
    rows_derivs(x, ld, nr, P, w->e1 + r0, w->e2 + r0, -1.0, tbuf,
                w->pg + (size_t) c * P, w->pH + (size_t) c * P * P);
}

/* ELBO at (mu, Sigma) with log det Sigma given; with derivs, also
   g = E grad log p and H = E hess log p (D x D, full). */
static double q_elbo(quad_ws *w, const double *mu, const double *Sig,
                     double logdet, int derivs, int reuse, double *g, double *H)
{
    const glm_data *gd = &w->g;
    int P = gd->P, D = gd->D, inc = 1;
    double one = 1.0, zero = 0.0;
    double ell = gd->llconst;
    if (derivs) {
        memset(g, 0, sizeof(double) * D);
        memset(H, 0, sizeof(double) * D * D);
    }
    if (gd->family == GLM_GAUSSIAN) {
        double mt = mu[P], stt = Sig[P + (size_t) P * D];
        double e = exp(-2.0 * mt + 2.0 * stt);
        double *mus = w->work, *Gm = w->work + P;
        for (int j = 0; j < P; j++) mus[j] = mu[j] - 2.0 * Sig[j + (size_t) P * D];
        F77_CALL(dsymv)("L", &P, &one, w->G, &P, mus, &inc, &zero, Gm, &inc FCONE);
        double Q = w->yy, tr = 0.0;
        for (int j = 0; j < P; j++) Q += mus[j] * (Gm[j] - 2.0 * w->b[j]);
        for (int k = 0; k < P; k++)
            for (int j = 0; j < P; j++) tr += w->G[j + (size_t) k * P] * Sig[j + (size_t) k * D];
        Q += tr;
        ell += -w->sw * mt - 0.5 * e * Q;
        if (derivs) {
            for (int j = 0; j < P; j++) {
                double r = w->b[j] - Gm[j];
                g[j] = e * r;
                H[j + (size_t) P * D] = H[P + (size_t) j * D] = -2.0 * e * r;
                for (int k = 0; k < P; k++)
                    H[j + (size_t) k * D] = -e * w->G[j + (size_t) k * P];
            }
            g[P] = -w->sw + e * Q;
            H[P + (size_t) P * D] = -2.0 * e * Q;
        }
    } else {
        if (!reuse) {
            /* Sigma's coefficient block as L L' (full-rank); Sigma = 0 (a
               point mass) happens only at the start */
            int nonzero = 0, info;
            for (size_t k = 0; k < (size_t) D * D; k++) if (Sig[k] != 0.0) { nonzero = 1; break; }
            if (w->fr && nonzero) {
                for (int k = 0; k < P; k++)
                    for (int j = 0; j < P; j++)
                        w->Ls[j + (size_t) k * P] = j >= k ? Sig[j + (size_t) k * D] : 0.0;
                F77_CALL(dpotrf)("L", &P, w->Ls, &P, &info FCONE);
                if (info) return R_NegInf;
            }
            int nch = w->nch;
            memset(w->pell, 0, sizeof(double) * nch);
            expect_ctx ctx = { mu, Sig, nonzero };
            quad_pass(w, visit_expect, &ctx);
            for (int c = 0; c < nch; c++) ell += w->pell[c];
            w->ell = ell;
        }
        ell = w->ell;
        if (derivs) {
            int nch = w->nch;
            memset(w->pg, 0, sizeof(double) * nch * P);
            memset(w->pH, 0, sizeof(double) * nch * P * P);
            quad_pass(w, visit_derivs, NULL);
            for (int c = 0; c < nch; c++) {   /* in order: deterministic */
                const double *gc = w->pg + (size_t) c * P, *Hc = w->pH + (size_t) c * P * P;
                for (int j = 0; j < P; j++) g[j] += gc[j];
                for (int k = 0; k < P; k++)
                    for (int j = k; j < P; j++) H[j + (size_t) k * D] += Hc[j + (size_t) k * P];
            }
            for (int k = 0; k < P; k++)
                for (int j = k + 1; j < P; j++)
                    H[k + (size_t) j * D] = H[j + (size_t) k * D];
        }
    }
    double lp = 0.0, ef, ef1, ef2;
    for (int j = 0; j < P; j++) {
        prior_expect(w, gd->ptype[j], gd->ppar + 3 * j, 0, mu[j],
                     Sig[j + (size_t) j * D], &ef, &ef1, &ef2);
        lp += ef;
        if (derivs) { g[j] += ef1; H[j + (size_t) j * D] += ef2; }
    }
    if (gd->family == GLM_GAUSSIAN) {
        prior_expect(w, gd->atype, gd->apar, 1, mu[P], Sig[P + (size_t) P * D],
                     &ef, &ef1, &ef2);
        lp += ef;
        if (derivs) { g[P] += ef1; H[P + (size_t) P * D] += ef2; }
    }
    return ell + lp + 0.5 * logdet + 0.5 * D * (1.0 + LOG_2PI);
}

/* Cholesky of A (D x D) into L (lower); returns 0 on success. */
static int chol(int D, const double *A, double *L)
{
    int info;
    memcpy(L, A, sizeof(double) * D * D);
    F77_CALL(dpotrf)("L", &D, L, &D, &info FCONE);
    if (info) return info;
    for (int k = 0; k < D; k++)
        for (int j = 0; j < k; j++) L[j + (size_t) k * D] = 0.0;
    return 0;
}

/* Cholesky of A + ridge * diag, with the smallest ridge that works. */
static void chol_ridge(int D, const double *A, double *L, double *tmp)
{
    if (chol(D, A, L) == 0) return;
    double scale = 0.0;
    for (int d = 0; d < D; d++) scale = fmax(scale, fabs(A[d + (size_t) d * D]));
    if (!(scale > 0) || !R_FINITE(scale)) scale = 1.0;
    for (double r = 1e-10; r < 1e10; r *= 10) {
        memcpy(tmp, A, sizeof(double) * D * D);
        for (int d = 0; d < D; d++) tmp[d + (size_t) d * D] += r * scale;
        if (chol(D, tmp, L) == 0) return;
    }
    Rf_error("the posterior precision is not positive definite, even with a ridge; "
             "check the model for aliased or degenerate columns");
}

/* x <- A^{-1} x from the Cholesky factor L */
static void chol_solve(int D, const double *L, double *x)
{
    int one = 1, info;
    F77_CALL(dpotrs)("L", &D, &one, L, &D, x, &D, &info FCONE);
}

/* Sigma = A^{-1} from the Cholesky factor L of A; log det Sigma returned */
static double chol_inverse(int D, const double *L, double *Sig)
{
    int info;
    double ld = 0.0;
    memcpy(Sig, L, sizeof(double) * D * D);
    for (int d = 0; d < D; d++) ld -= 2.0 * log(L[d + (size_t) d * D]);
    F77_CALL(dpotri)("L", &D, Sig, &D, &info FCONE);
    for (int k = 0; k < D; k++)
        for (int j = k + 1; j < D; j++) Sig[k + (size_t) j * D] = Sig[j + (size_t) k * D];
    return ld;
}

/* The quadrature workspace: the data, the family of q, the quadrature
   rules, row blocks and chunk scratch; gaussian sufficient statistics (one
   pass) or the per-row e1, e2 buffers. */
static void quad_setup(quad_ws *w, SEXP spec, SEXP control)
{
    bbvi_glm_data(spec, &w->g);
    int N = w->g.N, P = w->g.P;
    SEXP fam = bbvi_list_get(control, "family");
    if (!Rf_isString(fam)) Rf_error("internal error: control$family");
    w->fr = strcmp(CHAR(STRING_ELT(fam, 0)), "fullrank") == 0;
    SEXP gz = bbvi_list_get(control, "gh_x"), gw = bbvi_list_get(control, "gh_w");
    if (!Rf_isReal(gz) || !Rf_isReal(gw) || XLENGTH(gz) != XLENGTH(gw) || XLENGTH(gz) < 1)
        Rf_error("internal error: control$gh_x, control$gh_w");
    w->K = (int) XLENGTH(gz); w->gz = REAL(gz); w->gw = REAL(gw);
    SEXP gz2 = bbvi_list_get(control, "gh_x2"), gw2 = bbvi_list_get(control, "gh_w2");
    if (Rf_isReal(gz2) && Rf_isReal(gw2) && XLENGTH(gz2) == XLENGTH(gw2) && XLENGTH(gz2) > 0) {
        w->K2 = (int) XLENGTH(gz2); w->gz2 = REAL(gz2); w->gw2 = REAL(gw2);
    } else {
        w->K2 = w->K; w->gz2 = w->gz; w->gw2 = w->gw;
    }
    SEXP gz3 = bbvi_list_get(control, "gh_x3"), gw3 = bbvi_list_get(control, "gh_w3");
    if (Rf_isReal(gz3) && Rf_isReal(gw3) && XLENGTH(gz3) == XLENGTH(gw3) && XLENGTH(gz3) > 0) {
        w->K3 = (int) XLENGTH(gz3); w->gz3 = REAL(gz3); w->gw3 = REAL(gw3);
    } else {
        w->K3 = w->K2; w->gz3 = w->gz2; w->gw3 = w->gw2;
    }
    w->Ls = (double *) R_alloc((size_t) P * P, sizeof(double));
    w->work = (double *) R_alloc(2 * (size_t) P + 2, sizeof(double));
    w->nr = glm_block_rows(N, P);
    w->nch = glm_chunks(N, w->nr, P);
    w->nt = w->g.threads < w->nch ? w->g.threads : w->nch;
    w->xb = (double *) R_alloc((size_t) w->nt * w->nr * P, sizeof(double));
    /* derivs: nr x P; moments: m, v and an nr x P strip */
    w->tb = (double *) R_alloc((size_t) w->nt * w->nr * (P + 2), sizeof(double));
    w->pell = (double *) R_alloc(w->nch, sizeof(double));
    w->pg = (double *) R_alloc((size_t) w->nch * P, sizeof(double));
    w->pH = (double *) R_alloc((size_t) w->nch * P * P, sizeof(double));
    if (w->g.family == GLM_GAUSSIAN) {
        /* sufficient statistics of the design as fitted, with y - offset */
        int inc = 1;
        double one = 1.0;
        w->G = (double *) R_alloc((size_t) P * P, sizeof(double));
        w->b = (double *) R_alloc(P, sizeof(double));
        memset(w->G, 0, sizeof(double) * P * P);
        memset(w->b, 0, sizeof(double) * P);
        double *yr = w->tb + (size_t) w->nr * P;
        w->yy = w->sw = 0.0;
        for (int r0 = 0; r0 < N; r0 += w->nr) {
            int nr = N - r0 < w->nr ? N - r0 : w->nr, ld;
            const double *x = glm_xblock(&w->g, r0, nr, w->xb, &ld);
            for (int i = 0; i < nr; i++) {
                double wi = glm_w(&w->g, r0 + i);
                double r = w->g.y[r0 + i] - glm_off(&w->g, r0 + i);
                yr[i] = wi * r;
                w->yy += wi * r * r;
                w->sw += wi;
            }
            F77_CALL(dgemv)("T", &nr, &P, &one, x, &ld, yr, &inc, &one, w->b, &inc FCONE);
            for (int j = 0; j < P; j++) {
                const double *xj = x + (size_t) j * ld;
                double *wj = w->tb + (size_t) j * nr;
                for (int i = 0; i < nr; i++) wj[i] = xj[i] * sqrt(glm_w(&w->g, r0 + i));
            }
            F77_CALL(dsyrk)("L", "T", &P, &nr, &one, w->tb, &nr, &one, w->G, &P FCONE FCONE);
        }
        for (int k = 0; k < P; k++)
            for (int j = k + 1; j < P; j++) w->G[k + (size_t) j * P] = w->G[j + (size_t) k * P];
    } else {
        w->e1 = (double *) R_alloc(N, sizeof(double));
        w->e2 = (double *) R_alloc(N, sizeof(double));
    }
}

/* What both drivers return, in the layout of the variational families
   (see families.c): mean, Cholesky factor, lambda, the ELBO trace, and how
   the iterations ended. drift: the recent movement of the mean (R tests
   whether it is a direction of unbounded likelihood). */
static SEXP quad_result(const quad_ws *w, const double *mu, const double *Sig,
                        const double *trace, int it, int converged, int status,
                        double newton_step, const double *drift, double *tmp)
{
    int D = w->g.D;
    /* results in the layout of the variational families (see families.c) */
    const char *names[] = { "mean", "chol", "lambda", "elbo", "converged",
                            "iterations", "status", "newton_step", "drift", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SEXP rmean = PROTECT(Rf_allocVector(REALSXP, D));
    memcpy(REAL(rmean), mu, sizeof(double) * D);
    SEXP rchol = PROTECT(Rf_allocMatrix(REALSXP, D, D));
    if (chol(D, Sig, REAL(rchol)) != 0) {
        chol_ridge(D, Sig, REAL(rchol), tmp);
    }
    double *Ls = REAL(rchol);
    int K = w->fr ? D + D * (D + 1) / 2 : 2 * D;
    SEXP rlam = PROTECT(Rf_allocVector(REALSXP, K));
    double *lam = REAL(rlam);
    for (int d = 0; d < D; d++) lam[d] = mu[d];
    if (w->fr) {
        size_t pos = D;
        for (int j = 0; j < D; j++)
            for (int i = j; i < D; i++) {
                double l = Ls[i + (size_t) j * D];
                lam[pos++] = i == j ? log(l) : l;
            }
    } else {
        for (int d = 0; d < D; d++) lam[D + d] = log(Ls[d + (size_t) d * D]);
    }
    SEXP rtr = PROTECT(Rf_allocVector(REALSXP, it));
    memcpy(REAL(rtr), trace, sizeof(double) * it);
    SET_VECTOR_ELT(out, 0, rmean);
    SET_VECTOR_ELT(out, 1, rchol);
    SET_VECTOR_ELT(out, 2, rlam);
    SET_VECTOR_ELT(out, 3, rtr);
    SET_VECTOR_ELT(out, 4, Rf_ScalarLogical(converged));
    SET_VECTOR_ELT(out, 5, Rf_ScalarInteger(it));
    SET_VECTOR_ELT(out, 6, Rf_mkString(quad_status_name[status]));
    SET_VECTOR_ELT(out, 7, Rf_ScalarReal(newton_step));
    SEXP rdrift = PROTECT(Rf_allocVector(REALSXP, D));
    memcpy(REAL(rdrift), drift, sizeof(double) * D);
    SET_VECTOR_ELT(out, 8, rdrift);
    UNPROTECT(6);
    return out;
}

/* .Call(C_glm_quad_fit, spec, control) */
SEXP glm_quad_fit(SEXP spec, SEXP control)
{
    quad_ws w;
    quad_setup(&w, spec, control);
    int D = w.g.D;
    int max_iter = bbvi_need_int(control, "max_iter");
    double tol = bbvi_need_double(control, "tol");
    SEXP init = bbvi_list_get(control, "init_mean");
    if (!Rf_isReal(init) || XLENGTH(init) != D)
        Rf_error("internal error: control$init_mean must be %d doubles", D);

    size_t DD = (size_t) D * D;
    double *mu = (double *) R_alloc(D, sizeof(double));
    double *mu_new = (double *) R_alloc(D, sizeof(double));
    double *Sig = (double *) R_alloc(DD, sizeof(double));
    double *Sig_new = (double *) R_alloc(DD, sizeof(double));
    double *Lam = (double *) R_alloc(DD, sizeof(double));      /* precision */
    double *Lam_new = (double *) R_alloc(DD, sizeof(double));
    double *Lc = (double *) R_alloc(DD, sizeof(double));
    double *Pc = (double *) R_alloc(DD, sizeof(double));
    double *Pm = (double *) R_alloc(DD, sizeof(double));
    double *tmp = (double *) R_alloc(DD, sizeof(double));
    double *g = (double *) R_alloc(D, sizeof(double));
    double *H = (double *) R_alloc(DD, sizeof(double));
    double *step = (double *) R_alloc(D, sizeof(double));
    double *prev = (double *) R_alloc(D, sizeof(double));   /* last mean step */
    double *trace = (double *) R_alloc(max_iter + 1, sizeof(double));
    double *mu_mid = (double *) R_alloc(D, sizeof(double));

    memcpy(mu, REAL(init), sizeof(double) * D);
    memcpy(mu_mid, mu, sizeof(double) * D);
    memset(Sig, 0, sizeof(double) * DD);
    memset(Lam, 0, sizeof(double) * DD);
    /* at a point mass, E grad and E hess are the gradient and Hessian at mu:
       the first step is a Newton step with the Laplace covariance */
    double elbo = R_NegInf;
    q_elbo(&w, mu, Sig, 0.0, 1, 0, g, H);
    int it = 0, converged = 0, first = 1, ls_failed = 0, reversed = 0;
    memset(prev, 0, sizeof(double) * D);
    double rho = 1.0;
    while (it < max_iter) {
        if (it % 4 == 0) R_CheckUserInterrupt();
        for (size_t k = 0; k < DD; k++) Pm[k] = -H[k];
        chol_ridge(D, Pm, Pc, tmp);
        if (!w.fr) {
            memcpy(step, g, sizeof(double) * D);
            chol_solve(D, Pc, step);
        }
        /* a full step again after a success, unless the last two steps of
           the mean reversed: the fixed-point map then overshoots (a 2-cycle
           that closes only slowly, as with rare events whose expected
           likelihood depends strongly on q's variance), and damping it
           converges at once */
        rho = first ? 1.0 : (reversed ? 0.5 * rho : fmin(1.0, 2.0 * rho));
        double elbo_new = R_NegInf, logdet = 0.0;
        int accepted = 0;
        for (int tries = 0; tries < 40; tries++) {
            if (w.fr) {
                for (size_t k = 0; k < DD; k++)
                    Lam_new[k] = first ? Pm[k] : (1.0 - rho) * Lam[k] + rho * Pm[k];
                if (first) memcpy(Lc, Pc, sizeof(double) * DD);
                else chol_ridge(D, Lam_new, Lc, tmp);
                memcpy(mu_new, g, sizeof(double) * D);
                chol_solve(D, Lc, mu_new);
                for (int d = 0; d < D; d++) mu_new[d] = mu[d] + rho * mu_new[d];
                logdet = chol_inverse(D, Lc, Sig_new);
            } else {
                memset(Sig_new, 0, sizeof(double) * DD);
                memset(Lam_new, 0, sizeof(double) * DD);
                logdet = 0.0;
                for (int d = 0; d < D; d++) {
                    double pd = Pm[d + (size_t) d * D];
                    if (!(pd > 0)) pd = Pc[d + (size_t) d * D] * Pc[d + (size_t) d * D];
                    double prec = first ? pd : (1.0 - rho) * Lam[d + (size_t) d * D] + rho * pd;
                    Lam_new[d + (size_t) d * D] = prec;
                    Sig_new[d + (size_t) d * D] = 1.0 / prec;
                    logdet -= log(prec);
                    mu_new[d] = mu[d] + rho * step[d];
                }
            }
            elbo_new = q_elbo(&w, mu_new, Sig_new, logdet, 0, 0, NULL, NULL);
            if (R_FINITE(elbo_new) &&
                (first || elbo_new >= elbo - 1e-12 * fabs(elbo))) {
                accepted = 1;
                break;
            }
            rho *= 0.5;
        }
        if (!accepted) { ls_failed = 1; break; }
        double dmu = 0.0, dls = 0.0;
        for (int d = 0; d < D; d++) {
            double sn = Sig_new[d + (size_t) d * D], so = Sig[d + (size_t) d * D];
            dmu = fmax(dmu, fabs(mu_new[d] - mu[d]) / sqrt(sn));
            dls = fmax(dls, first ? R_PosInf : 0.5 * fabs(log(sn / so)));
        }
        double delbo = elbo_new - elbo;
        {   /* cosine of this mean step with the last, in posterior sds */
            double ab = 0.0, aa = 0.0, bb = 0.0;
            for (int d = 0; d < D; d++) {
                double sd = sqrt(Sig_new[d + (size_t) d * D]);
                double a = (mu_new[d] - mu[d]) / sd, b = prev[d] / sd;
                ab += a * b; aa += a * a; bb += b * b;
                prev[d] = mu_new[d] - mu[d];
            }
            reversed = aa > 0 && bb > 0 && ab < -0.5 * sqrt(aa * bb);
        }
        memcpy(mu, mu_new, sizeof(double) * D);
        memcpy(Sig, Sig_new, sizeof(double) * DD);
        memcpy(Lam, Lam_new, sizeof(double) * DD);
        elbo = elbo_new;
        trace[it++] = elbo;
        /* the mean at the last power-of-two iteration, at least halfway:
           mu - mu_mid is the recent drift (R tests whether it is a
           direction of unbounded likelihood) */
        if ((it & (it - 1)) == 0) memcpy(mu_mid, mu, sizeof(double) * D);
        /* derivatives at the accepted point (the last evaluation) */
        q_elbo(&w, mu, Sig, logdet, 1, 1, g, H);
        if (!first && dmu < tol && dls < tol && fabs(delbo) < 1e-6 * (1.0 + fabs(elbo))) {
            converged = 1;
            break;
        }
        first = 0;
    }
    /* No step along the Newton direction raises the ELBO. At the optimum
       that is rounding: the full Newton step for the mean, -E hess^{-1}
       E grad, is then below tol in posterior sds. Otherwise the line search
       failed away from a stationary point (an ELBO that is not concave
       there, or one that keeps rising towards infinity along a direction
       the quadrature can no longer resolve): not converged. */
    int status = converged ? QUAD_CONVERGED : QUAD_MAXITER;
    double newton_step = NA_REAL;
    if (ls_failed) {
        for (size_t k = 0; k < DD; k++) Pm[k] = -H[k];
        chol_ridge(D, Pm, Pc, tmp);
        memcpy(step, g, sizeof(double) * D);
        chol_solve(D, Pc, step);
        newton_step = 0.0;
        for (int d = 0; d < D; d++) {
            double sd = sqrt(Sig[d + (size_t) d * D]);
            double r = fabs(step[d]) / sd;
            newton_step = fmax(newton_step, R_FINITE(r) ? r : R_PosInf);
        }
        if (!first && newton_step < tol) {
            converged = 1;
            status = QUAD_STALLED;
        } else {
            status = QUAD_LINESEARCH;
        }
    }

    double *drift = (double *) R_alloc(D, sizeof(double));
    for (int d = 0; d < D; d++) drift[d] = mu[d] - mu_mid[d];
    return quad_result(&w, mu, Sig, trace, it, converged, status, newton_step,
                       drift, tmp);
}

/* ---- minibatch VI: incremental natural-gradient steps -------------------

   The rows are cut into blocks of B consecutive rows (cache-friendly), and
   each epoch visits the blocks in a random order. Visiting a block computes
   its rows' E f' and -E f'' under the current q and replaces the block's
   share of two sums, A = sum_i (-E f''_i) x_i x_i' and
   c = sum_i (-E f''_i (m_i - offset_i) + E f'_i) x_i; then q jumps to the
   Newton fixed point of those sums with the priors: precision A + prior,
   mean (A + prior)^{-1} (c + prior). Each row's term was computed at the q
   of its block's last visit (SAG-style stale sums, rather than a
   Robbins-Monro average of rescaled minibatch estimates): the noise of a
   minibatch estimate would leave the mean about sd / sqrt(epochs) from the
   full-data answer, the stale sums converge to it. In the first epoch the
   sums cover the rows seen so far, scaled by N / rows seen. When an epoch
   moves the mean by little, one pass at a fixed q computes the sums
   exactly; converged when the full-data Newton step from there is below
   tol posterior sds. */

typedef struct {
    bbvi_block_sums s;       /* per block: P x P (lower), P, expected ll */
    int B;                   /* rows per block */
    double *sub;             /* per sub-block sums of one block */
} incr_sums;

/* The sums of rows [r_a, r_b) under q (mu, Sig; w->Ls holds Sigma's
   Cholesky factor when full-rank): A (P x P, lower triangle) = sum of
   -E f''_i x_i x_i', c (P) = sum of (-E f''_i (m_i - offset_i) + E f'_i)
   x_i, returned: their expected log-likelihood. The sub-blocks of w->nr
   rows are spread over the threads; their sums (sub scratch, room for
   (r_b - r_a) / w->nr + 1 of P x P + P + 1) are added in order, so the
   result does not depend on the number of threads. */
static double rows_sums(quad_ws *w, int r_a, int r_b, const double *mu,
                        const double *Sig, double *sub, double *A, double *c)
{
    const glm_data *gd = &w->g;
    int P = gd->P, nr0 = w->nr;
    size_t PP = (size_t) P * P;
    int nsub = (r_b - r_a + nr0 - 1) / nr0;
    memset(sub, 0, sizeof(double) * nsub * (PP + P + 1));
    int nt = (double) (r_b - r_a) * (P + 1) * (P + 1) >= GLM_THREAD_WORK / 8 ? w->nt : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(dynamic)
#endif
    for (int k = 0; k < nsub; k++) {
        int tid = glm_thread_id(), ld;
        int r0 = r_a + k * nr0, nr = r_b - r0 < nr0 ? r_b - r0 : nr0;
        double *xbuf = w->xb + (size_t) tid * nr0 * P;
        double *tbuf = w->tb + (size_t) tid * nr0 * (P + 2);
        double *As = sub + (size_t) k * (PP + P + 1), *cs = As + PP;
        const double *x = glm_xblock(gd, r0, nr, xbuf, &ld);
        double *e1 = w->e1 + r0, *e2 = w->e2 + r0;
        cs[P] = rows_expect(w, x, ld, r0, nr, mu, Sig, 1, tbuf, e1, e2);
        /* the working response's term: m (in tbuf) without the offset */
        for (int i = 0; i < nr; i++)
            e1[i] += e2[i] * (tbuf[i] - glm_off(gd, r0 + i));
        rows_derivs(x, ld, nr, P, e1, e2, 1.0, tbuf, cs, As);
    }
    memset(A, 0, sizeof(double) * PP);
    memset(c, 0, sizeof(double) * P);
    double ell = 0.0;
    for (int k = 0; k < nsub; k++) {
        const double *As = sub + (size_t) k * (PP + P + 1), *cs = As + PP;
        for (size_t q = 0; q < PP; q++) A[q] += As[q];
        for (int j = 0; j < P; j++) c[j] += cs[j];
        ell += cs[P];
    }
    return ell;
}

/* Replace block b's share of the sums by its rows' terms under q. */
static void incr_visit(quad_ws *w, incr_sums *is, int b, const double *mu,
                       const double *Sig)
{
    int N = w->g.N, P = w->g.P;
    size_t PP = (size_t) P * P;
    int r_a = b * is->B, r_b = r_a + is->B < N ? r_a + is->B : N;
    bbvi_block_sums *s = &is->s;
    bbvi_block_sums_take_out(s, b);
    s->eb[b] = rows_sums(w, r_a, r_b, mu, Sig, is->sub, s->Hb + (size_t) b * PP,
                         s->cb + (size_t) b * P);
    bbvi_block_sums_put_back(s, b, r_b - r_a);
}

/* q from the sums (scaled by `scale`) and the priors, linearised at the
   current q: writes mu, Sig (and w->Ls), returns log det Sigma. Lam, Lc,
   tmp: P x P scratch. */
static double incr_solve(quad_ws *w, const incr_sums *is, double scale,
                         double *mu, double *Sig, double *Lam, double *Lc,
                         double *tmp)
{
    int P = w->g.P;
    double *rhs = w->work, ef, ef1, ef2;
    for (int k = 0; k < P; k++)
        for (int j = 0; j < P; j++)
            Lam[j + (size_t) k * P] = scale * (j >= k ? is->s.H[j + (size_t) k * P]
                                                      : is->s.H[k + (size_t) j * P]);
    for (int j = 0; j < P; j++) {
        rhs[j] = scale * is->s.c[j];
        prior_expect(w, w->g.ptype[j], w->g.ppar + 3 * j, 0, mu[j],
                     Sig[j + (size_t) j * P], &ef, &ef1, &ef2);
        Lam[j + (size_t) j * P] -= ef2;
        rhs[j] += ef1 - ef2 * mu[j];
    }
    chol_ridge(P, Lam, Lc, tmp);
    memcpy(mu, rhs, sizeof(double) * P);
    chol_solve(P, Lc, mu);
    double logdet;
    if (w->fr) {
        logdet = chol_inverse(P, Lc, Sig);
        int info = chol(P, Sig, w->Ls);
        if (info) chol_ridge(P, Sig, w->Ls, tmp);
    } else {
        memset(Sig, 0, sizeof(double) * P * P);
        logdet = 0.0;
        for (int j = 0; j < P; j++) {
            double prec = Lam[j + (size_t) j * P];
            Sig[j + (size_t) j * P] = 1.0 / prec;
            logdet -= log(prec);
        }
    }
    return logdet;
}

/* ELBO from the sums' expected log-likelihood (exact after a pass at a
   fixed q, stale otherwise) */
static double incr_elbo(const quad_ws *w, const incr_sums *is, const double *mu, const double *Sig, double logdet)
{
    int P = w->g.P;
    double lp = 0.0, ef, ef1, ef2;
    for (int j = 0; j < P; j++) {
        prior_expect(w, w->g.ptype[j], w->g.ppar + 3 * j, 0, mu[j],
                     Sig[j + (size_t) j * P], &ef, &ef1, &ef2);
        lp += ef;
    }
    return w->g.llconst + is->s.ell + lp + 0.5 * logdet +
        0.5 * P * (1.0 + LOG_2PI);
}

/* .Call(C_glm_incr_fit, spec, control): binomial and poisson GLMs; control
   as glm_quad_fit's plus `batch` (rows per block) and `max_epochs` */
SEXP glm_incr_fit(SEXP spec, SEXP control)
{
    quad_ws w;
    quad_setup(&w, spec, control);
    int N = w.g.N, P = w.g.P;
    if (w.g.family == GLM_GAUSSIAN)
        Rf_error("internal error: gaussian GLMs take the sufficient statistics");
    int B = bbvi_need_int(control, "batch"), max_epochs = bbvi_need_int(control, "max_epochs");
    double tol = bbvi_need_double(control, "tol");
    SEXP init = bbvi_list_get(control, "init_mean");
    if (!Rf_isReal(init) || XLENGTH(init) != P)
        Rf_error("internal error: control$init_mean must be %d doubles", P);
    if (B < 1 || B > N) Rf_error("internal error: batch must be in 1..%d", N);
    size_t PP = (size_t) P * P;
    incr_sums is;
    is.B = B;
    bbvi_block_sums_init(&is.s, (int) (((long long) N + B - 1) / B), P);
    is.sub = (double *) R_alloc((size_t) ((B + w.nr - 1) / w.nr) * (PP + P + 1),
                                sizeof(double));

    double *mu = (double *) R_alloc(P, sizeof(double));
    double *mu_epoch = (double *) R_alloc(P, sizeof(double));
    double *mu_step = (double *) R_alloc(P, sizeof(double));
    double *Sig = (double *) R_alloc(PP, sizeof(double));
    double *Sig_step = (double *) R_alloc(PP, sizeof(double));
    double *g = (double *) R_alloc(P, sizeof(double));
    double *H = (double *) R_alloc(PP, sizeof(double));
    double *Lam = (double *) R_alloc(PP, sizeof(double));
    double *Lc = (double *) R_alloc(PP, sizeof(double));
    double *tmp = (double *) R_alloc(PP, sizeof(double));
    double *trace = (double *) R_alloc((size_t) 2 * max_epochs + 2, sizeof(double));
    int *order = (int *) R_alloc(is.s.nb, sizeof(int));
    memcpy(mu, REAL(init), sizeof(double) * P);
    memset(Sig, 0, sizeof(double) * PP);   /* a point mass at the start */
    memset(w.Ls, 0, sizeof(double) * PP);

    int epoch = 0, it = 0, converged = 0, frozen_next = 0;
    double newton_step = NA_REAL, logdet = 0.0;
    for (int b = 0; b < is.s.nb; b++) order[b] = b;
    bbvi_rng_hold();
    while (epoch < max_epochs) {
        memcpy(mu_epoch, mu, sizeof(double) * P);
        if (frozen_next) {
            /* a full-data Newton step at q (threaded passes, no line
               search: near the answer they converge quadratically) */
            bbvi_rng_release();
            R_CheckUserInterrupt();
            trace[it++] = q_elbo(&w, mu, Sig, logdet, 1, 0, g, H);
            bbvi_rng_hold();
            epoch++;
            for (size_t k = 0; k < PP; k++) Lam[k] = -H[k];
            chol_ridge(P, Lam, Lc, tmp);
            memcpy(mu_step, g, sizeof(double) * P);
            chol_solve(P, Lc, mu_step);
            double ld = 0.0;
            if (w.fr) {
                ld = chol_inverse(P, Lc, Sig_step);
            } else {
                memset(Sig_step, 0, sizeof(double) * PP);
                for (int j = 0; j < P; j++) {
                    Sig_step[j + (size_t) j * P] = 1.0 / Lam[j + (size_t) j * P];
                    ld -= log(Lam[j + (size_t) j * P]);
                }
            }
            double dmu = 0.0, dls = 0.0;
            for (int j = 0; j < P; j++) {
                double sn = Sig_step[j + (size_t) j * P], so = Sig[j + (size_t) j * P];
                dmu = fmax(dmu, fabs(mu_step[j]) / sqrt(sn));
                dls = fmax(dls, 0.5 * fabs(log(sn / so)));
                mu[j] += mu_step[j];
            }
            newton_step = fmax(dmu, dls);
            memcpy(Sig, Sig_step, sizeof(double) * PP);
            logdet = ld;
            if (newton_step < tol) { converged = 1; break; }
            continue;
        }
        /* blocks in a random order (R's RNG: set.seed() reproduces it) */
        for (int b = is.s.nb - 1; b > 0; b--) {
            int k = (int) floor(unif_rand() * (b + 1));
            if (k > b) k = b;
            int t = order[b]; order[b] = order[k]; order[k] = t;
        }
        for (int k = 0; k < is.s.nb; k++) {
            if (k % 8 == 7) { bbvi_rng_release(); R_CheckUserInterrupt(); bbvi_rng_hold(); }
            incr_visit(&w, &is, order[k], mu, Sig);
            double scale = (double) N / is.s.rows_seen;
            logdet = incr_solve(&w, &is, scale, mu, Sig, Lam, Lc, tmp);
        }
        epoch++;
        trace[it++] = incr_elbo(&w, &is, mu, Sig, logdet);
        double moved = 0.0;
        for (int j = 0; j < P; j++)
            moved = fmax(moved, fabs(mu[j] - mu_epoch[j]) / sqrt(Sig[j + (size_t) j * P]));
        /* close enough for full-data Newton steps (no line search) */
        frozen_next = epoch >= 2 && moved < 0.1;
    }
    bbvi_rng_release();
    double *drift = (double *) R_alloc(P, sizeof(double));
    for (int j = 0; j < P; j++) drift[j] = mu[j] - mu_epoch[j];
    SEXP res = PROTECT(quad_result(&w, mu, Sig, trace, it, converged,
                                   converged ? QUAD_CONVERGED : QUAD_MAXITER,
                                   newton_step, drift, tmp));
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
    SET_VECTOR_ELT(out, 0, res);
    SET_VECTOR_ELT(out, 1, Rf_ScalarInteger(epoch));
    UNPROTECT(2);
    return out;
}

/* .Call(C_glm_quad_sums, spec, control, mean, chol): the sums of all the
   spec's rows under q = N(mean, chol chol') (a block of rows read from
   outside memory: R/blocks.R keeps the minibatch sums), as list(A, c,
   ell); A full (both triangles). */
SEXP glm_quad_sums(SEXP spec, SEXP control, SEXP mean, SEXP chol_)
{
    quad_ws w;
    quad_setup(&w, spec, control);
    int N = w.g.N, P = w.g.P;
    if (w.g.family == GLM_GAUSSIAN)
        Rf_error("internal error: gaussian GLMs take the sufficient statistics");
    if (!Rf_isReal(mean) || XLENGTH(mean) != P || !Rf_isReal(chol_) ||
        XLENGTH(chol_) != (R_xlen_t) P * P)
        Rf_error("internal error: mean (%d) and chol (%d x %d) must be doubles", P, P, P);
    size_t PP = (size_t) P * P;
    double *Sig = (double *) R_alloc(PP, sizeof(double));
    const double *L = REAL(chol_);
    /* Sigma = L L' (its diagonal is what mean-field reads); w.Ls = L */
    for (int j = 0; j < P; j++)
        for (int i = 0; i < P; i++) {
            double a = 0.0;
            for (int k = 0; k <= (i < j ? i : j); k++) a += L[i + (size_t) k * P] * L[j + (size_t) k * P];
            Sig[i + (size_t) j * P] = a;
        }
    memcpy(w.Ls, L, sizeof(double) * PP);
    double *sub = (double *) R_alloc((size_t) (N / w.nr + 1) * (PP + P + 1), sizeof(double));
    const char *names[] = { "A", "c", "ell", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SEXP A = PROTECT(Rf_allocMatrix(REALSXP, P, P));
    SEXP c = PROTECT(Rf_allocVector(REALSXP, P));
    double ell = rows_sums(&w, 0, N, REAL(mean), Sig, sub, REAL(A), REAL(c));
    double *a = REAL(A);
    for (int k = 0; k < P; k++)
        for (int j = k + 1; j < P; j++) a[k + (size_t) j * P] = a[j + (size_t) k * P];
    SET_VECTOR_ELT(out, 0, A);
    SET_VECTOR_ELT(out, 1, c);
    SET_VECTOR_ELT(out, 2, Rf_ScalarReal(ell + w.g.llconst));
    UNPROTECT(3);
    return out;
}
