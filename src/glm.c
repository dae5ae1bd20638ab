/* glm.c: the log-joint of a generalized linear model (gaussian/identity,
   binomial/logit, poisson/log) with independent priors, and its gradient,
   for S draws at once: one dgemm for the N x S linear predictors and one
   for the P x S gradients. Parameters on the constrained scale: the P
   coefficients, then sigma for gaussian. */
#include "glm.h"
#include <R_ext/BLAS.h>
#include <Rmath.h>
#include <math.h>
#include <string.h>

#ifndef FCONE
# define FCONE
#endif

#define LOG_2PI 1.837877066409345483560659472811
#define LOG_2 0.693147180559945309417232121458

/* ---- data ----------------------------------------------------------------- */

static const double *real_field(SEXP spec, const char *name, R_xlen_t n,
                                int allow_null)
{
    SEXP x = bbvi_list_get(spec, name);
    if (allow_null && Rf_isNull(x)) return NULL;
    if (!Rf_isReal(x) || XLENGTH(x) != n)
        Rf_error("internal error: GLM spec field `%s` must be %lld doubles",
                 name, (long long) n);
    return REAL(x);
}

void bbvi_glm_data(SEXP spec, glm_data *g)
{
    SEXP X = bbvi_list_get(spec, "X");
    if (Rf_isNull(X))
        Rf_error("this GLM fit keeps no model matrix (it was made with keep_x = FALSE); "
                 "refit with keep_x = TRUE to use this method");
    if (!Rf_isReal(X) || !Rf_isMatrix(X))
        Rf_error("internal error: GLM spec field `X` must be a double matrix");
    SEXP dim = Rf_getAttrib(X, R_DimSymbol);
    g->N = INTEGER(dim)[0];
    g->icpt = Rf_isNull(bbvi_list_get(spec, "intercept")) ? 0
        : bbvi_need_int(spec, "intercept") != 0;
    g->P = INTEGER(dim)[1] + g->icpt;
    if (g->P < 1) Rf_error("internal error: GLM without coefficients");
    g->X = REAL(X);
    /* threads for the row chunks (R/formula.R: getOption("bbvi.threads")) */
    SEXP th = bbvi_list_get(spec, "threads");
    g->threads = Rf_isNull(th) ? 1 : Rf_asInteger(th);
    if (g->threads < 1 || g->threads == NA_INTEGER) g->threads = 1;
#ifndef _OPENMP
    g->threads = 1;
#endif
    g->family = bbvi_need_int(spec, "family");
    if (g->family < GLM_GAUSSIAN || g->family > GLM_POISSON)
        Rf_error("internal error: unknown GLM family code %d", g->family);
    g->D = g->P + (g->family == GLM_GAUSSIAN);
    g->xbar = real_field(spec, "xbar", g->P, 1);
    g->y = real_field(spec, "y", g->N, 0);
    g->trials = g->family == GLM_BINOMIAL ? real_field(spec, "trials", g->N, 1) : NULL;
    g->w = real_field(spec, "weights", g->N, 1);
    g->off = real_field(spec, "offset", g->N, 1);
    SEXP pt = bbvi_list_get(spec, "prior_type");
    if (!Rf_isInteger(pt) || XLENGTH(pt) != g->P)
        Rf_error("internal error: GLM spec field `prior_type` must be %d integers", g->P);
    g->ptype = INTEGER(pt);
    g->ppar = real_field(spec, "prior_par", 3 * (R_xlen_t) g->P, 0);
    g->atype = bbvi_need_int(spec, "aux_type");
    g->apar = real_field(spec, "aux_par", 3, 0);
    /* the likelihood's constant is fixed by the data: R computes it once
       per fit (glm_llconst()); recomputed here only for a spec without it */
    const double *lc = real_field(spec, "llconst", 1, 1);
    if (lc) {
        g->llconst = lc[0];
        return;
    }
    double c = 0.0;
    for (int i = 0; i < g->N; i++) {
        double wi = glm_w(g, i);
        if (g->family == GLM_GAUSSIAN) c += wi * (-0.5 * LOG_2PI);
        else if (g->family == GLM_BINOMIAL) {
            double n = glm_trials(g, i);
            if (n != 1.0) c += wi * (lgammafn(n + 1) - lgammafn(g->y[i] + 1) -
                                     lgammafn(n - g->y[i] + 1));
        }
        else c -= wi * lgammafn(g->y[i] + 1);
    }
    g->llconst = c;
}

int glm_block_rows(int N, int P)
{
    int nr = 65536 / (P > 0 ? P : 1);
    if (nr < 256) nr = 256;
    if (nr > 8192) nr = 8192;
    return nr < N ? nr : N;
}

const double *glm_xblock(const glm_data *g, int r0, int nr, double *buf,
                         int *ld)
{
    if (!g->icpt && !g->xbar) {
        *ld = g->N;
        return g->X + r0;
    }
    for (int j = 0; j < g->P; j++) {
        double *bj = buf + (size_t) j * nr;
        if (g->icpt && j == 0) {
            for (int i = 0; i < nr; i++) bj[i] = 1.0;
            continue;
        }
        const double *xj = g->X + (size_t) (j - g->icpt) * g->N + r0;
        double c = g->xbar ? g->xbar[j] : 0.0;
        for (int i = 0; i < nr; i++) bj[i] = xj[i] - c;
    }
    *ld = nr;
    return buf;
}

/* ---- priors ---------------------------------------------------------------- */

void bbvi_glm_prior(int type, const double *par, int half, double x,
                    double *f, double *f1, double *f2)
{
    double loc = par[0], s = par[1], nu = par[2];
    switch (type) {
    case PRIOR_NORMAL: {
        double z = (x - loc) / s;
        *f = -0.5 * z * z - log(s) - 0.5 * LOG_2PI + (half ? LOG_2 : 0.0);
        *f1 = -z / s;
        *f2 = -1.0 / (s * s);
        break;
    }
    case PRIOR_STUDENT_T: {
        double z = (x - loc) / s, q = nu + z * z;
        *f = lgammafn(0.5 * (nu + 1)) - lgammafn(0.5 * nu) -
            0.5 * log(nu * M_PI) - log(s) - 0.5 * (nu + 1) * log1p(z * z / nu) +
            (half ? LOG_2 : 0.0);
        *f1 = -(nu + 1) * z / (s * q);
        *f2 = -(nu + 1) * (nu - z * z) / (s * s * q * q);
        break;
    }
    case PRIOR_EXPONENTIAL: {
        double rate = par[0];
        *f = log(rate) - rate * x;
        *f1 = -rate;
        *f2 = 0.0;
        break;
    }
    default:
        *f = *f1 = *f2 = 0.0;
    }
}

/* ---- the target ------------------------------------------------------------- */

/* Draws are evaluated in blocks of at most GLM_DRAW_BLOCK (glm.h), rows in blocks of
   glm_block_rows(): the scratch is a rows x draws block of linear
   predictors whatever N and the number of draws. The rows are split into
   a fixed number of chunks (glm_chunks()), each summed on its own and the
   chunk sums added in order: with OpenMP the chunks run on several
   threads, and the result is the same bit for bit whatever their number. */

typedef struct {
    glm_data g;
    int nr;          /* rows per block */
    int nch;         /* row chunks */
    int nt;          /* threads */
    double *xb;      /* nt x (nr x P) design blocks */
    double *eta;     /* nt x (nr x GLM_DRAW_BLOCK) */
    double *pll;     /* nch x GLM_DRAW_BLOCK: chunk sums of the log-likelihood */
    double *pacc;    /* nch x GLM_DRAW_BLOCK: chunk sums of w r^2 (gaussian) */
    double *pgr;     /* nch x D x GLM_DRAW_BLOCK: chunk sums of the gradient */
} glm_target;

int glm_chunks(int N, int nr, int P)
{
    int nb = (N + nr - 1) / nr;
    /* the chunk sums (P x GLM_DRAW_BLOCK gradients, P x P Hessians) stay
       within about 8 MB */
    double per = (double) (P + 1) * GLM_DRAW_BLOCK;
    if ((double) P * P > per) per = (double) P * P;
    double cap = 1048576.0 / per;
    int nch = nb < GLM_MAX_CHUNKS ? nb : GLM_MAX_CHUNKS;
    if (nch > cap) nch = cap < 1 ? 1 : (int) cap;
    return nch;
}

/* log-likelihood of S draws over rows [r0, r0 + nr), added to ll[]; with
   grad, X' (w dl/deta) added to grad (D x S) */
static void glm_eval_block(const glm_data *g, const double *xb, int ld, int r0,
                           int nr, int S, const double *theta, double *eta,
                           double *ll, double *acc, double *grad, const int *bad)
{
    int P = g->P, D = g->D;
    double one = 1.0, zero = 0.0;
    F77_CALL(dgemm)("N", "N", &nr, &S, &P, &one, xb, &ld, theta, &D, &zero,
                    eta, &nr FCONE FCONE);
    for (int s = 0; s < S; s++) {
        double *e = eta + (size_t) s * nr;   /* becomes w * dl/deta */
        if (bad[s]) {
            for (int i = 0; i < nr; i++) e[i] = 0.0;
            continue;
        }
        double l = 0.0;
        if (g->family == GLM_GAUSSIAN) {
            double sigma = theta[P + (size_t) s * D], is2 = 1.0 / (sigma * sigma);
            double ssq = 0.0;
            for (int i = 0; i < nr; i++) {
                int k = r0 + i;
                double wi = glm_w(g, k);
                double r = g->y[k] - glm_off(g, k) - e[i];
                ssq += wi * r * r;
                e[i] = wi * r * is2;
            }
            acc[s] += ssq;
        } else if (g->family == GLM_BINOMIAL && !grad && !g->w && !g->off && !g->trials) {
            /* the common case of the diagnostics' draws (0/1 response, no
               weights or offset, no gradient): the loop without branches */
            const double *y = g->y + r0;
            for (int i = 0; i < nr; i++) {
                double x = e[i];
                l += y[i] * x - (x > 0 ? x : 0.0) - log1p(exp(-fabs(x)));
            }
        } else if (g->family == GLM_BINOMIAL) {
            for (int i = 0; i < nr; i++) {
                int k = r0 + i;
                double x = e[i] + glm_off(g, k), wi = glm_w(g, k), n = glm_trials(g, k);
                /* one exp: log1p(e^x) and the logistic function */
                double ex = exp(-fabs(x));
                double l1pe = (x > 0 ? x : 0.0) + log1p(ex);
                l += wi * (g->y[k] * x - n * l1pe);
                if (grad) {
                    double p = x >= 0 ? 1.0 / (1.0 + ex) : ex / (1.0 + ex);
                    e[i] = wi * (g->y[k] - n * p);
                }
            }
        } else {
            for (int i = 0; i < nr; i++) {
                int k = r0 + i;
                double x = e[i] + glm_off(g, k), wi = glm_w(g, k);
                double mu = exp(x);
                l += wi * (g->y[k] * x - mu);
                e[i] = wi * (g->y[k] - mu);
            }
        }
        ll[s] += l;
    }
    if (grad)
        F77_CALL(dgemm)("T", "N", &P, &S, &nr, &one, xb, &ld, eta, &nr, &one,
                        grad, &D FCONE FCONE);
}

static void glm_eval(bbvi_target *t, int S, const double *theta, double *lp,
                     double *grad)
{
    glm_target *gt = (glm_target *) t->ctx;
    const glm_data *g = &gt->g;
    int N = g->N, P = g->P, D = g->D, nr0 = gt->nr, nch = gt->nch;
    int bad[GLM_DRAW_BLOCK];
    double acc[GLM_DRAW_BLOCK];
    double sw = 0.0;
    if (g->family == GLM_GAUSSIAN)
        for (int i = 0; i < N; i++) sw += glm_w(g, i);
    for (int s0 = 0; s0 < S; s0 += GLM_DRAW_BLOCK) {
        int sb = S - s0 < GLM_DRAW_BLOCK ? S - s0 : GLM_DRAW_BLOCK;
        const double *th = theta + (size_t) s0 * D;
        double *gr = grad ? grad + (size_t) s0 * D : NULL;
        double *ll = lp + s0;
        for (int s = 0; s < sb; s++)
            bad[s] = g->family == GLM_GAUSSIAN && !(th[P + (size_t) s * D] > 0);
        memset(gt->pll, 0, sizeof(double) * nch * GLM_DRAW_BLOCK);
        memset(gt->pacc, 0, sizeof(double) * nch * GLM_DRAW_BLOCK);
        if (gr) memset(gt->pgr, 0, sizeof(double) * nch * D * GLM_DRAW_BLOCK);
        /* threads only for passes large enough to repay them (an MCMC
           step on a small GLM is not: idle threads spinning between such
           passes cost more than they save) */
        int nt = (double) N * (P + 1) * sb >= GLM_THREAD_WORK ? gt->nt : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(dynamic)
#endif
        for (int c = 0; c < nch; c++) {
            int tid = glm_thread_id();
            double *xbuf = gt->xb ? gt->xb + (size_t) tid * nr0 * P : NULL;
            double *eta = gt->eta + (size_t) tid * nr0 * GLM_DRAW_BLOCK;
            double *gc = gr ? gt->pgr + (size_t) c * D * GLM_DRAW_BLOCK : NULL;
            int a = (int) ((long long) N * c / nch), b = (int) ((long long) N * (c + 1) / nch);
            for (int r0 = a; r0 < b; r0 += nr0) {
                int nr = b - r0 < nr0 ? b - r0 : nr0, ld;
                const double *xb = glm_xblock(g, r0, nr, xbuf, &ld);
                glm_eval_block(g, xb, ld, r0, nr, sb, th, eta,
                               gt->pll + (size_t) c * GLM_DRAW_BLOCK,
                               gt->pacc + (size_t) c * GLM_DRAW_BLOCK, gc, bad);
            }
        }
        for (int s = 0; s < sb; s++) {
            ll[s] = 0.0; acc[s] = 0.0;
            if (gr) for (int d = 0; d < D; d++) gr[d + (size_t) s * D] = 0.0;
        }
        for (int c = 0; c < nch; c++) {   /* in order: deterministic */
            for (int s = 0; s < sb; s++) {
                ll[s] += gt->pll[(size_t) c * GLM_DRAW_BLOCK + s];
                acc[s] += gt->pacc[(size_t) c * GLM_DRAW_BLOCK + s];
            }
            if (gr) {
                const double *gc = gt->pgr + (size_t) c * D * GLM_DRAW_BLOCK;
                for (size_t k = 0; k < (size_t) D * sb; k++) gr[k] += gc[k];
            }
        }
        for (int s = 0; s < sb; s++) {
            const double *ths = th + (size_t) s * D;
            double *grs = gr ? gr + (size_t) s * D : NULL;
            if (bad[s]) {
                ll[s] = R_NegInf;
                if (grs) for (int d = 0; d < D; d++) grs[d] = 0.0;
                continue;
            }
            double l = g->llconst + ll[s], f, f1, f2, gsig = 0.0;
            if (g->family == GLM_GAUSSIAN) {
                double sigma = ths[P], ssq = acc[s];
                l += -sw * log(sigma) - 0.5 * ssq / (sigma * sigma);
                gsig = -sw / sigma + ssq / (sigma * sigma * sigma);
            }
            for (int j = 0; j < P; j++) {
                bbvi_glm_prior(g->ptype[j], g->ppar + 3 * j, 0, ths[j], &f, &f1, &f2);
                l += f;
                if (grs) grs[j] += f1;
            }
            if (g->family == GLM_GAUSSIAN) {
                bbvi_glm_prior(g->atype, g->apar, 1, ths[P], &f, &f1, &f2);
                l += f;
                if (grs) grs[P] = gsig + f1;
            }
            ll[s] = R_FINITE(l) || l == R_NegInf ? l : R_NegInf;
        }
    }
}

void bbvi_glm_target_init(SEXP spec, int dim, int max_batch, bbvi_target *out)
{
    (void) max_batch;   /* scratch is fixed-size: see GLM_DRAW_BLOCK */
    glm_target *gt = (glm_target *) R_alloc(1, sizeof(glm_target));
    bbvi_glm_data(spec, &gt->g);
    const glm_data *g = &gt->g;
    if (g->D != dim)
        Rf_error("internal error: GLM has %d parameters, the model %d", g->D, dim);
    gt->nr = glm_block_rows(g->N, g->P);
    if (gt->nr > 2048) gt->nr = 2048;   /* eta: at most 2 MB per thread */
    gt->nch = glm_chunks(g->N, gt->nr, g->P);
    gt->nt = g->threads < gt->nch ? g->threads : gt->nch;
    gt->xb = (g->icpt || g->xbar)
        ? (double *) R_alloc((size_t) gt->nt * gt->nr * g->P, sizeof(double)) : NULL;
    gt->eta = (double *) R_alloc((size_t) gt->nt * gt->nr * GLM_DRAW_BLOCK, sizeof(double));
    gt->pll = (double *) R_alloc((size_t) gt->nch * GLM_DRAW_BLOCK, sizeof(double));
    gt->pacc = (double *) R_alloc((size_t) gt->nch * GLM_DRAW_BLOCK, sizeof(double));
    gt->pgr = (double *) R_alloc((size_t) gt->nch * g->D * GLM_DRAW_BLOCK, sizeof(double));
    out->dim = dim;
    out->has_grad = 1;
    out->eval = glm_eval;
    out->ctx = gt;
}

/* ---- design statistics for R's setup (row-blocked, no N x P copies) ------- */

static void design_from(SEXP X, SEXP icpt, SEXP xbar, glm_data *g)
{
    if (!Rf_isReal(X) || !Rf_isMatrix(X))
        Rf_error("internal error: `X` must be a double matrix");
    memset(g, 0, sizeof(glm_data));
    SEXP dim = Rf_getAttrib(X, R_DimSymbol);
    g->N = INTEGER(dim)[0];
    g->icpt = Rf_asLogical(icpt) == TRUE;
    g->P = INTEGER(dim)[1] + g->icpt;
    g->X = REAL(X);
    if (!Rf_isNull(xbar)) {
        if (!Rf_isReal(xbar) || XLENGTH(xbar) != g->P)
            Rf_error("internal error: `xbar` must be %d doubles", g->P);
        g->xbar = REAL(xbar);
    }
}

/* .Call(C_glm_colstats, X): per stored column, whether all values are
   finite, the mean, the sd and whether it is constant; one pass per column */
SEXP glm_colstats(SEXP X)
{
    if (!Rf_isReal(X) || !Rf_isMatrix(X))
        Rf_error("internal error: `X` must be a double matrix");
    SEXP dim = Rf_getAttrib(X, R_DimSymbol);
    int N = INTEGER(dim)[0], P = INTEGER(dim)[1];
    const char *names[] = { "finite", "mean", "sd", "constant", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SEXP fin = PROTECT(Rf_allocVector(LGLSXP, P));
    SEXP mn = PROTECT(Rf_allocVector(REALSXP, P));
    SEXP sd = PROTECT(Rf_allocVector(REALSXP, P));
    SEXP cst = PROTECT(Rf_allocVector(LGLSXP, P));
    for (int j = 0; j < P; j++) {
        const double *x = REAL(X) + (size_t) j * N;
        int ok = 1, same = 1;
        double m = 0.0;
        for (int i = 0; i < N; i++) {
            if (!R_FINITE(x[i])) ok = 0;
            if (x[i] != x[0]) same = 0;
            m += x[i];
        }
        m = N > 0 ? m / N : 0.0;
        double ss = 0.0;
        for (int i = 0; i < N && ok; i++) ss += (x[i] - m) * (x[i] - m);
        LOGICAL(fin)[j] = ok;
        REAL(mn)[j] = m;
        REAL(sd)[j] = ok && N > 1 ? sqrt(ss / (N - 1)) : NA_REAL;
        LOGICAL(cst)[j] = same;
    }
    SET_VECTOR_ELT(out, 0, fin);
    SET_VECTOR_ELT(out, 1, mn);
    SET_VECTOR_ELT(out, 2, sd);
    SET_VECTOR_ELT(out, 3, cst);
    UNPROTECT(5);
    return out;
}

/* .Call(C_glm_wcross, X, intercept, xbar, wt, v): A = Xd' diag(wt) Xd and
   b = Xd' v for the design Xd as fitted, one block of rows at a time
   (wt >= 0) */
SEXP glm_wcross(SEXP X, SEXP icpt, SEXP xbar, SEXP wt, SEXP v)
{
    glm_data g;
    design_from(X, icpt, xbar, &g);
    int N = g.N, P = g.P, inc = 1;
    if (!Rf_isReal(wt) || XLENGTH(wt) != N || !Rf_isReal(v) || XLENGTH(v) != N)
        Rf_error("internal error: `wt` and `v` must be %d doubles", N);
    int nr0 = glm_block_rows(N, P);
    double *xb = (double *) R_alloc((size_t) nr0 * P, sizeof(double));
    double *sb = (double *) R_alloc((size_t) nr0 * P, sizeof(double));
    const char *names[] = { "A", "b", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SEXP A = PROTECT(Rf_allocMatrix(REALSXP, P, P));
    SEXP b = PROTECT(Rf_allocVector(REALSXP, P));
    memset(REAL(A), 0, sizeof(double) * P * P);
    memset(REAL(b), 0, sizeof(double) * P);
    double one = 1.0;
    for (int r0 = 0; r0 < N; r0 += nr0) {
        int nr = N - r0 < nr0 ? N - r0 : nr0, ld;
        const double *x = glm_xblock(&g, r0, nr, xb, &ld);
        for (int j = 0; j < P; j++)
            for (int i = 0; i < nr; i++)
                sb[i + (size_t) j * nr] = x[i + (size_t) j * ld] * sqrt(REAL(wt)[r0 + i]);
        F77_CALL(dsyrk)("L", "T", &P, &nr, &one, sb, &nr, &one, REAL(A), &P FCONE FCONE);
        F77_CALL(dgemv)("T", &nr, &P, &one, x, &ld, REAL(v) + r0, &inc, &one, REAL(b), &inc FCONE);
        if ((r0 / nr0) % 64 == 63) R_CheckUserInterrupt();
    }
    for (int k = 0; k < P; k++)
        for (int j = k + 1; j < P; j++) REAL(A)[k + (size_t) j * P] = REAL(A)[j + (size_t) k * P];
    SET_VECTOR_ELT(out, 0, A);
    SET_VECTOR_ELT(out, 1, b);
    UNPROTECT(3);
    return out;
}

/* .Call(C_glm_linpred, X, intercept, xbar, B): Xd %*% B for a P x K matrix
   B (K small), without forming Xd */
SEXP glm_linpred(SEXP X, SEXP icpt, SEXP xbar, SEXP B)
{
    glm_data g;
    design_from(X, icpt, xbar, &g);
    int N = g.N, P = g.P;
    if (!Rf_isReal(B) || XLENGTH(B) % (P > 0 ? P : 1) != 0)
        Rf_error("internal error: `B` must have %d rows", P);
    int K = (int) (XLENGTH(B) / P);
    SEXP out = PROTECT(Rf_allocMatrix(REALSXP, N, K));
    int nr0 = glm_block_rows(N, P);
    double *xb = (double *) R_alloc((size_t) nr0 * P, sizeof(double));
    double *eb = (double *) R_alloc((size_t) nr0 * (K > 0 ? K : 1), sizeof(double));
    double one = 1.0, zero = 0.0;
    for (int r0 = 0; r0 < N && K > 0; r0 += nr0) {
        int nr = N - r0 < nr0 ? N - r0 : nr0, ld;
        const double *x = glm_xblock(&g, r0, nr, xb, &ld);
        F77_CALL(dgemm)("N", "N", &nr, &K, &P, &one, x, &ld, REAL(B), &P, &zero,
                        eb, &nr FCONE FCONE);
        for (int k = 0; k < K; k++)
            memcpy(REAL(out) + r0 + (size_t) k * N, eb + (size_t) k * nr,
                   sizeof(double) * nr);
    }
    UNPROTECT(1);
    return out;
}

/* .Call(C_glm_taylor, spec, center): the log-likelihood's second-order
   expansion in the coefficients around `center`, in one blocked pass: at
   eta_i = x_i'center + offset_i, a = sum of the weighted per-row terms
   (without the data's constant), g = sum of their first derivatives times
   x_i, H = sum of their second derivatives times x_i x_i' (gaussian: the
   terms -w r^2 / 2, so that sigma can be put in per draw). */
SEXP glm_taylor(SEXP spec, SEXP center)
{
    glm_data g;
    bbvi_glm_data(spec, &g);
    int N = g.N, P = g.P, inc = 1;
    if (!Rf_isReal(center) || XLENGTH(center) != P)
        Rf_error("internal error: `center` must be %d doubles", P);
    int nr0 = glm_block_rows(N, P);
    double *xb = (double *) R_alloc((size_t) nr0 * P, sizeof(double));
    double *sb = (double *) R_alloc((size_t) nr0 * P, sizeof(double));
    double *eta = (double *) R_alloc(nr0, sizeof(double));
    double *d1 = (double *) R_alloc(nr0, sizeof(double));
    const char *names[] = { "a", "g", "H", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SEXP rg = PROTECT(Rf_allocVector(REALSXP, P));
    SEXP rH = PROTECT(Rf_allocMatrix(REALSXP, P, P));
    double *gv = REAL(rg), *H = REAL(rH), a = 0.0, one = 1.0, zero = 0.0, mone = -1.0;
    memset(gv, 0, sizeof(double) * P);
    memset(H, 0, sizeof(double) * P * P);
    for (int r0 = 0; r0 < N; r0 += nr0) {
        int nr = N - r0 < nr0 ? N - r0 : nr0, ld;
        const double *x = glm_xblock(&g, r0, nr, xb, &ld);
        F77_CALL(dgemv)("N", &nr, &P, &one, x, &ld, REAL(center), &inc, &zero,
                        eta, &inc FCONE);
        for (int i = 0; i < nr; i++) {
            int k = r0 + i;
            double wi = glm_w(&g, k), y = g.y[k], e = eta[i] + glm_off(&g, k), l, h;
            if (g.family == GLM_GAUSSIAN) {
                double r = y - e;
                l = -0.5 * wi * r * r; d1[i] = wi * r; h = wi;
            } else if (g.family == GLM_BINOMIAL) {
                double n = glm_trials(&g, k), ex = exp(-fabs(e));
                double p = e >= 0 ? 1.0 / (1.0 + ex) : ex / (1.0 + ex);
                l = wi * (y * e - n * ((e > 0 ? e : 0.0) + log1p(ex)));
                d1[i] = wi * (y - n * p);
                h = wi * n * p * (1.0 - p);
            } else {
                double mu = exp(e);
                l = wi * (y * e - mu); d1[i] = wi * (y - mu); h = wi * mu;
            }
            a += l;
            /* -(second derivative) >= 0: its square root scales the row */
            double sh = sqrt(h);
            for (int j = 0; j < P; j++) sb[i + (size_t) j * nr] = x[i + (size_t) j * ld] * sh;
        }
        F77_CALL(dgemv)("T", &nr, &P, &one, x, &ld, d1, &inc, &one, gv, &inc FCONE);
        F77_CALL(dsyrk)("L", "T", &P, &nr, &mone, sb, &nr, &one, H, &P FCONE FCONE);
        if ((r0 / nr0) % 64 == 63) R_CheckUserInterrupt();
    }
    for (int k = 0; k < P; k++)
        for (int j = k + 1; j < P; j++) H[k + (size_t) j * P] = H[j + (size_t) k * P];
    SET_VECTOR_ELT(out, 0, Rf_ScalarReal(a));
    SET_VECTOR_ELT(out, 1, rg);
    SET_VECTOR_ELT(out, 2, rH);
    UNPROTECT(3);
    return out;
}
