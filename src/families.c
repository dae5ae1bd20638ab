/* families.c: variational families q(z; lambda) on the unconstrained scale.
   Both are Gaussian: z = mu + L eps, eps ~ N(0, I).
   mean-field: lambda = (mu[D], omega[D]) with L = diag(exp(omega)).
   full-rank:  lambda = (mu[D], lower triangle of L by column, diagonal stored
               as its log), so L stays a valid Cholesky factor. */
#include "bbvi.h"
#include <Rmath.h>
#include <string.h>
#include <math.h>

#define HALF_LOG_2PI 0.918938533204672741780329736406

static void gaussian_draw_base(int D, int S, double *eps)
{
    for (size_t i = 0; i < (size_t) D * S; i++) eps[i] = norm_rand();
}

static double sumsq(int D, const double *x)
{
    double a = 0.0;
    for (int d = 0; d < D; d++) a += x[d] * x[d];
    return a;
}

/* ---- mean-field ---------------------------------------------------------- */

static int mf_n_lambda(int D) { return 2 * D; }

static void mf_init(int D, const double *mean, const double *log_sd,
                    double *lambda)
{
    for (int d = 0; d < D; d++) {
        lambda[d] = mean[d];
        lambda[D + d] = log_sd[d];
    }
}

static void mf_reparam(int D, const double *lambda, int S, const double *eps,
                       double *z)
{
    for (int s = 0; s < S; s++)
        for (int d = 0; d < D; d++) {
            size_t i = d + (size_t) s * D;
            z[i] = lambda[d] + exp(lambda[D + d]) * eps[i];
        }
}

static double mf_log_q(int D, const double *lambda, const double *eps)
{
    double a = -D * HALF_LOG_2PI - 0.5 * sumsq(D, eps);
    for (int d = 0; d < D; d++) a -= lambda[D + d];
    return a;
}

static void mf_score(int D, const double *lambda, const double *eps, double *h)
{
    for (int d = 0; d < D; d++) {
        h[d] = eps[d] * exp(-lambda[D + d]);   /* (z - mu) / sigma^2 */
        h[D + d] = eps[d] * eps[d] - 1.0;
    }
}

static double mf_entropy(int D, const double *lambda)
{
    double a = D * (HALF_LOG_2PI + 0.5);
    for (int d = 0; d < D; d++) a += lambda[D + d];
    return a;
}

static void mf_entropy_grad(int D, const double *lambda, double *g)
{
    for (int d = 0; d < D; d++) { g[d] = 0.0; g[D + d] = 1.0; }
}

static void mf_reparam_grad(int D, const double *lambda, const double *eps,
                            const double *gz, double *glambda)
{
    for (int d = 0; d < D; d++) {
        glambda[d] += gz[d];
        glambda[D + d] += gz[d] * eps[d] * exp(lambda[D + d]);
    }
}

static void mf_moments(int D, const double *lambda, double *mean, double *chol)
{
    memset(chol, 0, sizeof(double) * D * D);
    for (int d = 0; d < D; d++) {
        mean[d] = lambda[d];
        chol[d + (size_t) d * D] = exp(lambda[D + d]);
    }
}

static void mf_affine(int D, double *lambda, const double *P, const double *shift)
{
    for (int d = 0; d < D; d++) {
        double p = P[d + (size_t) d * D];
        lambda[d] = shift[d] + p * lambda[d];
        lambda[D + d] += log(p);
    }
}

const bbvi_family bbvi_family_meanfield = {
    "meanfield", mf_n_lambda, mf_init, gaussian_draw_base, mf_reparam,
    mf_log_q, mf_score, mf_entropy, mf_entropy_grad, mf_reparam_grad,
    mf_moments, mf_affine
};

/* ---- full-rank ----------------------------------------------------------- */

static int fr_n_lambda(int D) { return D + D * (D + 1) / 2; }

/* offset of L[i, j] (i >= j) in lambda: column j starts after the D means and
   the previous columns' D, D-1, ... entries */
static inline size_t fr_idx(int D, int i, int j)
{
    return (size_t) D + (size_t) j * D - (size_t) j * (j - 1) / 2 + (i - j);
}

static inline double fr_L(int D, const double *lambda, int i, int j)
{
    double v = lambda[fr_idx(D, i, j)];
    return i == j ? exp(v) : v;
}

static void fr_init(int D, const double *mean, const double *log_sd,
                    double *lambda)
{
    memset(lambda, 0, sizeof(double) * fr_n_lambda(D));
    for (int d = 0; d < D; d++) {
        lambda[d] = mean[d];
        lambda[fr_idx(D, d, d)] = log_sd[d];
    }
}

static void fr_reparam(int D, const double *lambda, int S, const double *eps,
                       double *z)
{
    for (int s = 0; s < S; s++) {
        const double *e = eps + (size_t) s * D;
        double *zs = z + (size_t) s * D;
        for (int i = 0; i < D; i++) zs[i] = lambda[i];
        for (int j = 0; j < D; j++) {
            double ej = e[j];
            zs[j] += exp(lambda[fr_idx(D, j, j)]) * ej;
            const double *col = lambda + fr_idx(D, j, j);
            for (int i = j + 1; i < D; i++) zs[i] += col[i - j] * ej;
        }
    }
}

static double fr_log_q(int D, const double *lambda, const double *eps)
{
    double a = -D * HALF_LOG_2PI - 0.5 * sumsq(D, eps);
    for (int d = 0; d < D; d++) a -= lambda[fr_idx(D, d, d)];
    return a;
}

/* u = L^{-T} eps, so that grad_mu log q = Sigma^{-1}(z - mu) = u */
static void fr_solve_lt(int D, const double *lambda, const double *eps,
                        double *u)
{
    for (int i = D - 1; i >= 0; i--) {
        double a = eps[i];
        for (int k = i + 1; k < D; k++) a -= fr_L(D, lambda, k, i) * u[k];
        u[i] = a / fr_L(D, lambda, i, i);
    }
}

static void fr_score(int D, const double *lambda, const double *eps, double *h)
{
    /* u = L^{-T} eps is written into h[0..D) directly */
    fr_solve_lt(D, lambda, eps, h);
    for (int j = 0; j < D; j++) {
        double Ljj = exp(lambda[fr_idx(D, j, j)]);
        h[fr_idx(D, j, j)] = h[j] * eps[j] * Ljj - 1.0;
        for (int i = j + 1; i < D; i++) h[fr_idx(D, i, j)] = h[i] * eps[j];
    }
}

static double fr_entropy(int D, const double *lambda)
{
    double a = D * (HALF_LOG_2PI + 0.5);
    for (int d = 0; d < D; d++) a += lambda[fr_idx(D, d, d)];
    return a;
}

static void fr_entropy_grad(int D, const double *lambda, double *g)
{
    memset(g, 0, sizeof(double) * fr_n_lambda(D));
    for (int d = 0; d < D; d++) g[fr_idx(D, d, d)] = 1.0;
}

static void fr_reparam_grad(int D, const double *lambda, const double *eps,
                            const double *gz, double *glambda)
{
    for (int i = 0; i < D; i++) glambda[i] += gz[i];
    for (int j = 0; j < D; j++) {
        size_t jj = fr_idx(D, j, j);
        glambda[jj] += gz[j] * eps[j] * exp(lambda[jj]);
        for (int i = j + 1; i < D; i++) glambda[jj + (i - j)] += gz[i] * eps[j];
    }
}

static void fr_moments(int D, const double *lambda, double *mean, double *chol)
{
    memset(chol, 0, sizeof(double) * D * D);
    for (int j = 0; j < D; j++) {
        mean[j] = lambda[j];
        for (int i = j; i < D; i++)
            chol[i + (size_t) j * D] = fr_L(D, lambda, i, j);
    }
}

/* shift + P (mu + L eps): mean shift + P mu, Cholesky factor P L (lower
   triangular times lower triangular) */
static void fr_affine(int D, double *lambda, const double *P, const double *shift)
{
    double *mu = (double *) R_alloc(D, sizeof(double));
    double *L = (double *) R_alloc((size_t) D * D, sizeof(double));
    fr_moments(D, lambda, mu, L);
    for (int i = 0; i < D; i++) {
        double a = shift[i];
        for (int k = 0; k <= i; k++) a += P[i + (size_t) k * D] * mu[k];
        lambda[i] = a;
    }
    for (int j = 0; j < D; j++)
        for (int i = j; i < D; i++) {
            double a = 0.0;
            for (int k = j; k <= i; k++) a += P[i + (size_t) k * D] * L[k + (size_t) j * D];
            lambda[fr_idx(D, i, j)] = i == j ? log(a) : a;
        }
}

const bbvi_family bbvi_family_fullrank = {
    "fullrank", fr_n_lambda, fr_init, gaussian_draw_base, fr_reparam,
    fr_log_q, fr_score, fr_entropy, fr_entropy_grad, fr_reparam_grad,
    fr_moments, fr_affine
};

const bbvi_family *bbvi_family_by_name(const char *name)
{
    if (strcmp(name, "meanfield") == 0) return &bbvi_family_meanfield;
    if (strcmp(name, "fullrank") == 0) return &bbvi_family_fullrank;
    Rf_error("unknown variational family '%s'", name);
    return NULL; /* not reached */
}
