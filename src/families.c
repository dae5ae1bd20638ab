/* families.c: variational families q(z; lambda) on the unconstrained scale.
   All three are Gaussian, written as a map of standard normal base draws:
   mean-field: z = mu + exp(omega) * e, lambda = (mu[D], omega[D]).
   full-rank:  z = mu + L e, lambda = (mu[D], lower triangle of L by column,
               its diagonal stored as its log), so L stays a Cholesky factor.
   low-rank:   z = mu + B e1 + d * e2 (e1 of length r, e2 of length D),
               lambda = (mu[D], B[D x r] by column, log d[D]); covariance
               B B' + diag(d^2), handled by the matrix determinant lemma and
               Woodbury's identity in O(D r^2): nothing D x D is formed.
   The lambda layout of each family is known here only (and described to R
   by to_sexp()). */
#include "bbvi.h"
#include <Rmath.h>
#include <string.h>
#include <math.h>

#define HALF_LOG_2PI 0.918938533204672741780329736406

static int base_D(const bbvi_family *f, int D) { (void) f; return D; }

static void gaussian_draw_base(const bbvi_family *f, int D, int S, double *eps)
{
    size_t n = (size_t) f->n_base(f, D) * S;
    for (size_t i = 0; i < n; i++) eps[i] = norm_rand();
}

static double sumsq(int n, const double *x)
{
    double a = 0.0;
    for (int d = 0; d < n; d++) a += x[d] * x[d];
    return a;
}

static SEXP named_list(const char **names, int n, SEXP *vals)
{
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    for (int i = 0; i < n; i++) SET_VECTOR_ELT(out, i, vals[i]);
    UNPROTECT(1);
    return out;
}

/* ---- mean-field ---------------------------------------------------------- */

static int mf_n_lambda(const bbvi_family *f, int D) { (void) f; return 2 * D; }

static void mf_init(const bbvi_family *f, int D, const double *mean,
                    const double *log_sd, double *lambda)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        lambda[d] = mean[d];
        lambda[D + d] = log_sd[d];
    }
}

static void mf_reparam(const bbvi_family *f, int D, const double *lambda,
                       int S, const double *eps, double *z)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        double m = lambda[d], sd = exp(lambda[D + d]);
        for (int s = 0; s < S; s++) {
            size_t i = d + (size_t) s * D;
            z[i] = m + sd * eps[i];
        }
    }
}

static double mf_log_q(const bbvi_family *f, int D, const double *lambda,
                       const double *eps)
{
    (void) f;
    double a = -D * HALF_LOG_2PI - 0.5 * sumsq(D, eps);
    for (int d = 0; d < D; d++) a -= lambda[D + d];
    return a;
}

static void mf_score(const bbvi_family *f, int D, const double *lambda,
                     const double *eps, double *h)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        h[d] = eps[d] * exp(-lambda[D + d]);   /* (z - mu) / sigma^2 */
        h[D + d] = eps[d] * eps[d] - 1.0;
    }
}

static double mf_entropy(const bbvi_family *f, int D, const double *lambda)
{
    (void) f;
    double a = D * (HALF_LOG_2PI + 0.5);
    for (int d = 0; d < D; d++) a += lambda[D + d];
    return a;
}

static void mf_entropy_grad(const bbvi_family *f, int D, const double *lambda,
                            double *g)
{
    (void) f; (void) lambda;
    for (int d = 0; d < D; d++) { g[d] = 0.0; g[D + d] = 1.0; }
}

static void mf_reparam_grad(const bbvi_family *f, int D, const double *lambda,
                            const double *eps, const double *gz,
                            double *glambda)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        glambda[d] += gz[d];
        glambda[D + d] += gz[d] * eps[d] * exp(lambda[D + d]);
    }
}

static void mf_marginals(const bbvi_family *f, int D, const double *lambda,
                         double *mean, double *sd)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        mean[d] = lambda[d];
        sd[d] = exp(lambda[D + d]);
    }
}

static void mf_affine_diag(const bbvi_family *f, int D, double *lambda,
                           const double *scale, const double *shift)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        lambda[d] = shift[d] + scale[d] * lambda[d];
        lambda[D + d] += log(scale[d]);
    }
}

/* a dense P must be diagonal here: only its diagonal is read */
static void mf_affine(const bbvi_family *f, int D, double *lambda,
                      const double *P, const double *shift)
{
    for (int d = 0; d < D; d++) {
        double p = P[d + (size_t) d * D];
        lambda[d] = shift[d] + p * lambda[d];
        lambda[D + d] += log(p);
    }
    (void) f;
}

static SEXP mf_to_sexp(const bbvi_family *f, int D, const double *lambda)
{
    SEXP v[3];
    v[0] = PROTECT(Rf_mkString("meanfield"));
    v[1] = PROTECT(Rf_allocVector(REALSXP, D));
    v[2] = PROTECT(Rf_allocVector(REALSXP, D));
    mf_marginals(f, D, lambda, REAL(v[1]), REAL(v[2]));
    const char *names[] = { "family", "mean", "sd", "" };
    SEXP out = named_list(names, 3, v);
    UNPROTECT(3);
    return out;
}

const bbvi_family bbvi_family_meanfield = {
    "meanfield", 0, NULL, mf_n_lambda, base_D, mf_init, gaussian_draw_base,
    mf_reparam, mf_log_q, mf_score, mf_entropy, mf_entropy_grad,
    mf_reparam_grad, mf_marginals, mf_affine, mf_affine_diag, mf_to_sexp
};

/* ---- full-rank ----------------------------------------------------------- */

static int fr_n_lambda(const bbvi_family *f, int D)
{
    (void) f;
    return D + D * (D + 1) / 2;
}

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

static void fr_init(const bbvi_family *f, int D, const double *mean,
                    const double *log_sd, double *lambda)
{
    memset(lambda, 0, sizeof(double) * fr_n_lambda(f, D));
    for (int d = 0; d < D; d++) {
        lambda[d] = mean[d];
        lambda[fr_idx(D, d, d)] = log_sd[d];
    }
}

static void fr_reparam(const bbvi_family *f, int D, const double *lambda,
                       int S, const double *eps, double *z)
{
    (void) f;
    /* column by column, so that each diagonal entry's exp is taken once
       for all S draws (the sums keep their order per draw) */
    for (int s = 0; s < S; s++)
        memcpy(z + (size_t) s * D, lambda, sizeof(double) * D);
    for (int j = 0; j < D; j++) {
        const double *col = lambda + fr_idx(D, j, j);
        double Ljj = exp(col[0]);
        for (int s = 0; s < S; s++) {
            const double *e = eps + (size_t) s * D;
            double *zs = z + (size_t) s * D, ej = e[j];
            zs[j] += Ljj * ej;
            for (int i = j + 1; i < D; i++) zs[i] += col[i - j] * ej;
        }
    }
}

static double fr_log_q(const bbvi_family *f, int D, const double *lambda,
                       const double *eps)
{
    (void) f;
    double a = -D * HALF_LOG_2PI - 0.5 * sumsq(D, eps);
    for (int d = 0; d < D; d++) a -= lambda[fr_idx(D, d, d)];
    return a;
}

/* h = grad_lambda log q: with u = L^{-T} eps, grad_mu log q =
   Sigma^{-1}(z - mu) = u, and the entries of L get u_i eps_j (times L_jj on
   the diagonal, stored as its log, less 1 from log |L|). The diagonal's
   exps are kept in h's diagonal slots until they are overwritten, so each
   is taken once per draw. */
static void fr_score(const bbvi_family *f, int D, const double *lambda,
                     const double *eps, double *h)
{
    (void) f;
    for (int j = 0; j < D; j++) h[fr_idx(D, j, j)] = exp(lambda[fr_idx(D, j, j)]);
    double *u = h;   /* u is written into h[0..D) directly */
    for (int i = D - 1; i >= 0; i--) {   /* L' u = eps, column i of L */
        const double *col = lambda + fr_idx(D, i, i);
        double a = eps[i];
        for (int k = i + 1; k < D; k++) a -= col[k - i] * u[k];
        u[i] = a / h[fr_idx(D, i, i)];
    }
    for (int j = 0; j < D; j++) {
        size_t jj = fr_idx(D, j, j);
        double *hj = h + jj;
        hj[0] = u[j] * eps[j] * hj[0] - 1.0;
        for (int i = j + 1; i < D; i++) hj[i - j] = u[i] * eps[j];
    }
}

static double fr_entropy(const bbvi_family *f, int D, const double *lambda)
{
    (void) f;
    double a = D * (HALF_LOG_2PI + 0.5);
    for (int d = 0; d < D; d++) a += lambda[fr_idx(D, d, d)];
    return a;
}

static void fr_entropy_grad(const bbvi_family *f, int D, const double *lambda,
                            double *g)
{
    (void) lambda;
    memset(g, 0, sizeof(double) * fr_n_lambda(f, D));
    for (int d = 0; d < D; d++) g[fr_idx(D, d, d)] = 1.0;
}

static void fr_reparam_grad(const bbvi_family *f, int D, const double *lambda,
                            const double *eps, const double *gz,
                            double *glambda)
{
    (void) f;
    for (int i = 0; i < D; i++) glambda[i] += gz[i];
    for (int j = 0; j < D; j++) {
        size_t jj = fr_idx(D, j, j);
        glambda[jj] += gz[j] * eps[j] * exp(lambda[jj]);
        for (int i = j + 1; i < D; i++) glambda[jj + (i - j)] += gz[i] * eps[j];
    }
}

/* mean and lower Cholesky factor of the covariance (D x D) */
static void fr_moments(int D, const double *lambda, double *mean, double *chol)
{
    memset(chol, 0, sizeof(double) * D * D);
    for (int j = 0; j < D; j++) {
        mean[j] = lambda[j];
        for (int i = j; i < D; i++)
            chol[i + (size_t) j * D] = fr_L(D, lambda, i, j);
    }
}

static void fr_marginals(const bbvi_family *f, int D, const double *lambda,
                         double *mean, double *sd)
{
    (void) f;
    memcpy(mean, lambda, sizeof(double) * D);
    for (int i = 0; i < D; i++) sd[i] = 0.0;
    for (int j = 0; j < D; j++)
        for (int i = j; i < D; i++) {
            double v = fr_L(D, lambda, i, j);
            sd[i] += v * v;
        }
    for (int i = 0; i < D; i++) sd[i] = sqrt(sd[i]);
}

/* shift + P (mu + L eps): mean shift + P mu, Cholesky factor P L (lower
   triangular times lower triangular) */
static void fr_affine(const bbvi_family *f, int D, double *lambda,
                      const double *P, const double *shift)
{
    (void) f;
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

/* diag(scale): row i of L times scale[i] */
static void fr_affine_diag(const bbvi_family *f, int D, double *lambda,
                           const double *scale, const double *shift)
{
    (void) f;
    for (int i = 0; i < D; i++) lambda[i] = shift[i] + scale[i] * lambda[i];
    for (int j = 0; j < D; j++) {
        lambda[fr_idx(D, j, j)] += log(scale[j]);
        for (int i = j + 1; i < D; i++) lambda[fr_idx(D, i, j)] *= scale[i];
    }
}

static SEXP fr_to_sexp(const bbvi_family *f, int D, const double *lambda)
{
    (void) f;
    SEXP v[3];
    v[0] = PROTECT(Rf_mkString("fullrank"));
    v[1] = PROTECT(Rf_allocVector(REALSXP, D));
    v[2] = PROTECT(Rf_allocMatrix(REALSXP, D, D));
    fr_moments(D, lambda, REAL(v[1]), REAL(v[2]));
    const char *names[] = { "family", "mean", "chol", "" };
    SEXP out = named_list(names, 3, v);
    UNPROTECT(3);
    return out;
}

const bbvi_family bbvi_family_fullrank = {
    "fullrank", 0, NULL, fr_n_lambda, base_D, fr_init, gaussian_draw_base,
    fr_reparam, fr_log_q, fr_score, fr_entropy, fr_entropy_grad,
    fr_reparam_grad, fr_marginals, fr_affine, fr_affine_diag, fr_to_sexp
};

/* ---- low-rank plus diagonal ----------------------------------------------- */

/* Woodbury factors of Sigma = B B' + diag(d^2) at one lambda, recomputed only
   when lambda changes (every method of a call sees the same lambda):
   C = I + B' D^-2 B = Lc Lc' (r x r), W = D^-2 B Lc^-T (D x r), so that
   Sigma^-1 = D^-2 - W W' and log|Sigma| = 2 sum log d + 2 sum log diag Lc. */
typedef struct {
    int D, r, valid;
    double *lam;          /* the lambda the factors belong to, K */
    double *W, *SiB;      /* D x r; SiB = Sigma^-1 B */
    double *dSi;          /* diag of Sigma^-1, D */
    double *d2inv;        /* 1 / d^2, D */
    double *C, *Lc, *WtB; /* r x r */
    double *x, *v, *t;    /* scratch: D, D, r */
    double logdet;
    const double *B0;     /* a starting B (D x r, in sd units), or NULL */
} lr_ws;

#define LR_B(lambda, D, i, j) ((lambda)[(D) + (i) + (size_t) (j) * (D)])
#define LR_LOGD(lambda, D, r, i) ((lambda)[(size_t) (D) * ((r) + 1) + (i)])

static int lr_n_lambda(const bbvi_family *f, int D)
{
    return D * (f->rank + 2);
}

static int lr_n_base(const bbvi_family *f, int D) { return D + f->rank; }

static lr_ws *lr_prepare(const bbvi_family *f, int D, const double *lambda)
{
    lr_ws *w = (lr_ws *) f->ws;
    int r = f->rank, K = lr_n_lambda(f, D);
    if (w->D != D) Rf_error("internal error: low-rank family built for %d coordinates, used with %d", w->D, D);
    if (w->valid && memcmp(w->lam, lambda, sizeof(double) * K) == 0) return w;
    memcpy(w->lam, lambda, sizeof(double) * K);
    for (int i = 0; i < D; i++) w->d2inv[i] = exp(-2.0 * LR_LOGD(lambda, D, r, i));
    /* C = I + B' D^-2 B */
    for (int a = 0; a < r; a++)
        for (int b = 0; b <= a; b++) {
            double s = a == b ? 1.0 : 0.0;
            for (int i = 0; i < D; i++)
                s += LR_B(lambda, D, i, a) * LR_B(lambda, D, i, b) * w->d2inv[i];
            w->C[a + (size_t) b * r] = w->C[b + (size_t) a * r] = s;
        }
    if (!bbvi_chol(r, w->C, w->Lc)) {
        /* C >= I is positive definite; only non-finite lambda gets here */
        for (size_t i = 0; i < (size_t) r * r; i++) w->Lc[i] = R_NaN;
    }
    double ld = 0.0;
    for (int i = 0; i < D; i++) ld += 2.0 * LR_LOGD(lambda, D, r, i);
    for (int a = 0; a < r; a++) ld += 2.0 * log(w->Lc[a + (size_t) a * r]);
    w->logdet = ld;
    /* W = D^-2 B Lc^-T: row i solves Lc w_i = D^-2 b_i (forward) */
    for (int i = 0; i < D; i++) {
        double di2 = w->d2inv[i];
        for (int a = 0; a < r; a++) {
            double s = LR_B(lambda, D, i, a) * di2;
            for (int b = 0; b < a; b++) s -= w->Lc[a + (size_t) b * r] * w->W[i + (size_t) b * D];
            w->W[i + (size_t) a * D] = s / w->Lc[a + (size_t) a * r];
        }
    }
    /* W'B (r x r), SiB = D^-2 B - W (W'B), diag Sigma^-1 */
    for (int a = 0; a < r; a++)
        for (int b = 0; b < r; b++) {
            double s = 0.0;
            for (int i = 0; i < D; i++) s += w->W[i + (size_t) a * D] * LR_B(lambda, D, i, b);
            w->WtB[a + (size_t) b * r] = s;
        }
    for (int i = 0; i < D; i++) {
        double di2 = w->d2inv[i];
        double ww = 0.0;
        for (int a = 0; a < r; a++) ww += w->W[i + (size_t) a * D] * w->W[i + (size_t) a * D];
        w->dSi[i] = di2 - ww;
        for (int b = 0; b < r; b++) {
            double s = LR_B(lambda, D, i, b) * di2;
            for (int a = 0; a < r; a++) s -= w->W[i + (size_t) a * D] * w->WtB[a + (size_t) b * r];
            w->SiB[i + (size_t) b * D] = s;
        }
    }
    w->valid = 1;
    return w;
}

/* x = z - mu = B e1 + d * e2 and v = Sigma^-1 x; returns x'v. The base draw
   is (e2[D], e1[r]). */
static double lr_solve(const bbvi_family *f, int D, const double *lambda,
                       const double *eps, lr_ws *w)
{
    int r = f->rank;
    const double *e1 = eps + D;
    for (int i = 0; i < D; i++) {
        double s = exp(LR_LOGD(lambda, D, r, i)) * eps[i];
        for (int a = 0; a < r; a++) s += LR_B(lambda, D, i, a) * e1[a];
        w->x[i] = s;
    }
    for (int a = 0; a < r; a++) {
        double s = 0.0;
        for (int i = 0; i < D; i++) s += w->W[i + (size_t) a * D] * w->x[i];
        w->t[a] = s;
    }
    double q = 0.0;
    for (int i = 0; i < D; i++) {
        double s = w->x[i] * w->d2inv[i];
        for (int a = 0; a < r; a++) s -= w->W[i + (size_t) a * D] * w->t[a];
        w->v[i] = s;
        q += w->x[i] * s;
    }
    return q;
}

/* B starts small and not zero: B = 0 is a stationary point of the ELBO in
   B (its gradient there vanishes in expectation). Entry (i, a) gets
   c sd_i with a fixed sign pattern, c^2 r = 0.1, and d shrinks to keep the
   marginal sds at exp(log_sd). */
static void lr_init(const bbvi_family *f, int D, const double *mean,
                    const double *log_sd, double *lambda)
{
    int r = f->rank;
    const double *B0 = ((const lr_ws *) f->ws)->B0;
    if (B0) {   /* a given start (see bbvi_family_set_start): B = sd B0, d = sd */
        for (int i = 0; i < D; i++) {
            double sd = exp(log_sd[i]);
            lambda[i] = mean[i];
            for (int a = 0; a < r; a++) LR_B(lambda, D, i, a) = sd * B0[i + (size_t) a * D];
            LR_LOGD(lambda, D, r, i) = log_sd[i];
        }
        return;
    }
    double c = sqrt(0.1 / r);
    for (int i = 0; i < D; i++) {
        double sd = exp(log_sd[i]);
        lambda[i] = mean[i];
        for (int a = 0; a < r; a++) {
            unsigned h = (unsigned) i * 2654435761u + (unsigned) a * 40503u;
            LR_B(lambda, D, i, a) = ((h >> 13) & 1u ? c : -c) * sd;
        }
        LR_LOGD(lambda, D, r, i) = log_sd[i] + 0.5 * log(0.9);
    }
}

static void lr_reparam(const bbvi_family *f, int D, const double *lambda,
                       int S, const double *eps, double *z)
{
    int r = f->rank, nb = D + r;
    for (int s = 0; s < S; s++) {
        const double *e = eps + (size_t) s * nb, *e1 = e + D;
        double *zs = z + (size_t) s * D;
        for (int i = 0; i < D; i++) {
            double a = lambda[i] + exp(LR_LOGD(lambda, D, r, i)) * e[i];
            for (int k = 0; k < r; k++) a += LR_B(lambda, D, i, k) * e1[k];
            zs[i] = a;
        }
    }
}

static double lr_log_q(const bbvi_family *f, int D, const double *lambda,
                       const double *eps)
{
    lr_ws *w = lr_prepare(f, D, lambda);
    double q = lr_solve(f, D, lambda, eps, w);
    return -D * HALF_LOG_2PI - 0.5 * w->logdet - 0.5 * q;
}

/* grad log N(z; mu, Sigma) with v = Sigma^-1 (z - mu):
   mu: v; B: (v v' - Sigma^-1) B; log d_i: (v_i^2 - Sigma^-1_ii) d_i^2 */
static void lr_score(const bbvi_family *f, int D, const double *lambda,
                     const double *eps, double *h)
{
    int r = f->rank;
    lr_ws *w = lr_prepare(f, D, lambda);
    lr_solve(f, D, lambda, eps, w);
    for (int a = 0; a < r; a++) {
        double s = 0.0;
        for (int i = 0; i < D; i++) s += w->v[i] * LR_B(lambda, D, i, a);
        w->t[a] = s;   /* v'B */
    }
    for (int i = 0; i < D; i++) {
        double vi = w->v[i];
        h[i] = vi;
        for (int a = 0; a < r; a++)
            h[D + i + (size_t) a * D] = vi * w->t[a] - w->SiB[i + (size_t) a * D];
        h[(size_t) D * (r + 1) + i] = (vi * vi - w->dSi[i]) * exp(2.0 * LR_LOGD(lambda, D, r, i));
    }
}

static double lr_entropy(const bbvi_family *f, int D, const double *lambda)
{
    lr_ws *w = lr_prepare(f, D, lambda);
    return D * (HALF_LOG_2PI + 0.5) + 0.5 * w->logdet;
}

/* d/dB 0.5 log|Sigma| = Sigma^-1 B; d/dlog d_i = Sigma^-1_ii d_i^2 */
static void lr_entropy_grad(const bbvi_family *f, int D, const double *lambda,
                            double *g)
{
    int r = f->rank;
    lr_ws *w = lr_prepare(f, D, lambda);
    for (int i = 0; i < D; i++) {
        g[i] = 0.0;
        for (int a = 0; a < r; a++) g[D + i + (size_t) a * D] = w->SiB[i + (size_t) a * D];
        g[(size_t) D * (r + 1) + i] = w->dSi[i] * exp(2.0 * LR_LOGD(lambda, D, r, i));
    }
}

static void lr_reparam_grad(const bbvi_family *f, int D, const double *lambda,
                            const double *eps, const double *gz,
                            double *glambda)
{
    int r = f->rank;
    const double *e1 = eps + D;
    for (int i = 0; i < D; i++) {
        glambda[i] += gz[i];
        for (int a = 0; a < r; a++) glambda[D + i + (size_t) a * D] += gz[i] * e1[a];
        glambda[(size_t) D * (r + 1) + i] += gz[i] * eps[i] * exp(LR_LOGD(lambda, D, r, i));
    }
}

static void lr_marginals(const bbvi_family *f, int D, const double *lambda,
                         double *mean, double *sd)
{
    int r = f->rank;
    for (int i = 0; i < D; i++) {
        double v = exp(2.0 * LR_LOGD(lambda, D, r, i));
        for (int a = 0; a < r; a++) v += LR_B(lambda, D, i, a) * LR_B(lambda, D, i, a);
        mean[i] = lambda[i];
        sd[i] = sqrt(v);
    }
}

static void lr_affine_diag(const bbvi_family *f, int D, double *lambda,
                           const double *scale, const double *shift)
{
    int r = f->rank;
    for (int i = 0; i < D; i++) {
        lambda[i] = shift[i] + scale[i] * lambda[i];
        for (int a = 0; a < r; a++) LR_B(lambda, D, i, a) *= scale[i];
        LR_LOGD(lambda, D, r, i) += log(scale[i]);
    }
}

/* P diag(d) is not diagonal unless P is: only a diagonal P is accepted */
static void lr_affine(const bbvi_family *f, int D, double *lambda,
                      const double *P, const double *shift)
{
    double *s = (double *) R_alloc(D, sizeof(double));
    for (int j = 0; j < D; j++) {
        for (int i = j + 1; i < D; i++)
            if (P[i + (size_t) j * D] != 0.0)
                Rf_error("internal error: the low-rank family takes a diagonal preconditioner only");
        s[j] = P[j + (size_t) j * D];
    }
    lr_affine_diag(f, D, lambda, s, shift);
}

static SEXP lr_to_sexp(const bbvi_family *f, int D, const double *lambda)
{
    int r = f->rank;
    SEXP v[4];
    v[0] = PROTECT(Rf_mkString("lowrank"));
    v[1] = PROTECT(Rf_allocVector(REALSXP, D));
    v[2] = PROTECT(Rf_allocMatrix(REALSXP, D, r));
    v[3] = PROTECT(Rf_allocVector(REALSXP, D));
    memcpy(REAL(v[1]), lambda, sizeof(double) * D);
    memcpy(REAL(v[2]), lambda + D, sizeof(double) * D * r);
    for (int i = 0; i < D; i++) REAL(v[3])[i] = exp(LR_LOGD(lambda, D, r, i));
    const char *names[] = { "family", "mean", "B", "d", "" };
    SEXP out = named_list(names, 4, v);
    UNPROTECT(4);
    return out;
}

static const bbvi_family lowrank_proto = {
    "lowrank", 0, NULL, lr_n_lambda, lr_n_base, lr_init, gaussian_draw_base,
    lr_reparam, lr_log_q, lr_score, lr_entropy, lr_entropy_grad,
    lr_reparam_grad, lr_marginals, lr_affine, lr_affine_diag, lr_to_sexp
};

/* ---- lookup ---------------------------------------------------------------- */

/* The family for D coordinates; rank is read by "lowrank" only. Families
   with per-fit scratch (low-rank) are built here, R_alloc'd for the call. */
const bbvi_family *bbvi_family_make(const char *name, int rank, int D)
{
    if (strcmp(name, "meanfield") == 0) return &bbvi_family_meanfield;
    if (strcmp(name, "fullrank") == 0) return &bbvi_family_fullrank;
    if (strcmp(name, "lowrank") == 0) {
        if (rank < 1 || rank > D)
            Rf_error("internal error: low-rank family needs 1 <= rank <= %d", D);
        bbvi_family *f = (bbvi_family *) R_alloc(1, sizeof(bbvi_family));
        *f = lowrank_proto;
        f->rank = rank;
        lr_ws *w = (lr_ws *) R_alloc(1, sizeof(lr_ws));
        int r = rank;
        w->D = D; w->r = r; w->valid = 0; w->logdet = 0.0; w->B0 = NULL;
        w->lam = (double *) R_alloc((size_t) D * (r + 2), sizeof(double));
        w->W = (double *) R_alloc((size_t) D * r, sizeof(double));
        w->SiB = (double *) R_alloc((size_t) D * r, sizeof(double));
        w->dSi = (double *) R_alloc(D, sizeof(double));
        w->d2inv = (double *) R_alloc(D, sizeof(double));
        w->C = (double *) R_alloc((size_t) r * r, sizeof(double));
        w->Lc = (double *) R_alloc((size_t) r * r, sizeof(double));
        w->WtB = (double *) R_alloc((size_t) r * r, sizeof(double));
        w->x = (double *) R_alloc(D, sizeof(double));
        w->v = (double *) R_alloc(D, sizeof(double));
        w->t = (double *) R_alloc(r, sizeof(double));
        f->ws = w;
        return f;
    }
    Rf_error("unknown variational family '%s'", name);
    return NULL; /* not reached */
}

/* A low-rank family's starting B (D x rank, in units of the starting sds,
   kept by pointer), for init(); other families ignore it. */
void bbvi_family_set_start(const bbvi_family *f, const double *B0)
{
    if (strcmp(f->name, "lowrank") == 0) ((lr_ws *) f->ws)->B0 = B0;
}

const bbvi_family *bbvi_family_by_name(const char *name)
{
    if (strcmp(name, "lowrank") == 0)
        Rf_error("internal error: the low-rank family needs bbvi_family_make()");
    return bbvi_family_make(name, 0, 1);
}

/* .Call(C_family_eval, control): every method of a family at given lambda
   and base draws, for the finite-difference tests. control: family, rank,
   D, lambda (K), eps (n_base x S), gz (D x S). Returns list(z, log_q, score
   (K x S), entropy, entropy_grad, reparam_grad (K x S, each from zero),
   mean, sd, n_lambda, n_base, q). */
SEXP family_eval(SEXP control)
{
    int D = bbvi_need_int(control, "D");
    if (D < 1) Rf_error("internal error: bad family_eval control");
    /* `blocks` or one `family` with `rank`, as vi_fit reads them */
    const bbvi_family *f = bbvi_family_from_control(control, D);
    int K = f->n_lambda(f, D), nb = f->n_base(f, D);
    SEXP lam = bbvi_list_get(control, "lambda"), eps = bbvi_list_get(control, "eps"),
        gz = bbvi_list_get(control, "gz");
    if (!Rf_isReal(lam) || Rf_length(lam) != K || !Rf_isReal(eps) ||
        XLENGTH(eps) % nb != 0 || !Rf_isReal(gz))
        Rf_error("internal error: family_eval needs lambda (%d) and eps (%d x S)", K, nb);
    int S = (int) (XLENGTH(eps) / nb);
    if (XLENGTH(gz) != (R_xlen_t) D * S) Rf_error("internal error: gz must be %d x %d", D, S);
    const double *l = REAL(lam), *e = REAL(eps);
    SEXP v[11];
    v[0] = PROTECT(Rf_allocMatrix(REALSXP, D, S));
    f->reparam(f, D, l, S, e, REAL(v[0]));
    v[1] = PROTECT(Rf_allocVector(REALSXP, S));
    v[2] = PROTECT(Rf_allocMatrix(REALSXP, K, S));
    v[5] = PROTECT(Rf_allocMatrix(REALSXP, K, S));
    memset(REAL(v[5]), 0, sizeof(double) * K * S);
    for (int s = 0; s < S; s++) {
        const double *es = e + (size_t) s * nb;
        REAL(v[1])[s] = f->log_q(f, D, l, es);
        f->score(f, D, l, es, REAL(v[2]) + (size_t) s * K);
        f->reparam_grad(f, D, l, es, REAL(gz) + (size_t) s * D, REAL(v[5]) + (size_t) s * K);
    }
    v[3] = PROTECT(Rf_ScalarReal(f->entropy(f, D, l)));
    v[4] = PROTECT(Rf_allocVector(REALSXP, K));
    f->entropy_grad(f, D, l, REAL(v[4]));
    v[6] = PROTECT(Rf_allocVector(REALSXP, D));
    v[7] = PROTECT(Rf_allocVector(REALSXP, D));
    f->marginals(f, D, l, REAL(v[6]), REAL(v[7]));
    v[8] = PROTECT(Rf_ScalarInteger(K));
    v[9] = PROTECT(Rf_ScalarInteger(nb));
    v[10] = PROTECT(f->to_sexp(f, D, l));
    const char *names[] = { "z", "log_q", "score", "entropy", "entropy_grad",
                            "reparam_grad", "mean", "sd", "n_lambda", "n_base",
                            "q", "" };
    SEXP out = named_list(names, 11, v);
    UNPROTECT(11);
    return out;
}
