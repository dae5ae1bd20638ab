/* families_ext.c: non-Gaussian families that live on the constrained
   (natural) scale: Gamma, Beta and categorical (discrete parameters).
   They keep the package's convention of standard normal base draws: a base
   draw e becomes u = Phi(e) and then z = F^-1(u), the inverse CDF of the
   coordinate's marginal (mean-field within the block). Both tails of Phi
   are computed on the log scale so that |e| up to ~38 keeps its precision.
   None has a pathwise gradient here (reparam_grad = NULL: the estimators
   use the score gradient for them), and none takes a preconditioner (the
   R side passes scale 1 and shift 0 for their coordinates).
     gamma:       lambda = (log mean[D], log shape[D])
     beta:        lambda = (logit mean[D], log(a + b)[D])
     categorical: coordinate d takes the n_d values lo_d .. lo_d + n_d - 1;
                  lambda holds n_d - 1 logits per coordinate (the first
                  value is the reference, logit 0), coordinate after
                  coordinate. A Bernoulli is n_d = 2. */
#include "bbvi.h"
#include <Rmath.h>
#include <string.h>
#include <math.h>

static int base_D(const bbvi_family *f, int D) { (void) f; return D; }

static void normal_draw_base(const bbvi_family *f, int D, int S, double *eps)
{
    (void) f;
    size_t n = (size_t) D * S;
    for (size_t i = 0; i < n; i++) eps[i] = norm_rand();
}

static void no_affine(const bbvi_family *f, int D, double *lambda,
                      const double *P, const double *shift)
{
    (void) f; (void) D; (void) lambda; (void) P; (void) shift;
    Rf_error("internal error: a dense preconditioner needs a one-block Gaussian q");
}

/* their coordinates are not preconditioned (scale 1, shift 0 from R) */
static void no_affine_diag(const bbvi_family *f, int D, double *lambda,
                           const double *scale, const double *shift)
{
    (void) f; (void) D; (void) lambda; (void) scale; (void) shift;
}

/* log Phi(e) for e <= 0, log(1 - Phi(e)) for e > 0: the tail that is
   small, so the inverse CDF can be taken from the matching side */
static double log_tail(double e) { return Rf_pnorm5(e, 0.0, 1.0, e <= 0, 1); }

static double clamp(double x, double lo, double hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

static SEXP list_of(const char **names, int n, SEXP *v)
{
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    for (int i = 0; i < n; i++) SET_VECTOR_ELT(out, i, v[i]);
    UNPROTECT(1);
    return out;
}

/* ---- Gamma: lambda = (log mean, log shape) -------------------------------
   Mean and shape are orthogonal parameters of the Gamma (its Fisher
   information is diagonal in them), where shape and rate are strongly
   coupled: a posterior Gamma of shape 70 and mean 3 is reached by moving
   two nearly independent coordinates instead of along a narrow ridge. */

static int two_D(const bbvi_family *f, int D) { (void) f; return 2 * D; }

/* moment matching: shape m^2 / s^2 (m floored above 0, the shape kept
   within [0.1, 1e8] so the start is a proper, not degenerate, Gamma) */
static void ga_init(const bbvi_family *f, int D, const double *mean,
                    const double *log_sd, double *lambda)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        double m = mean[d] > 1e-8 ? mean[d] : 1e-8;
        double s = exp(clamp(log_sd[d], -30, 30));
        lambda[d] = log(m);
        lambda[D + d] = log(clamp(m * m / (s * s), 0.1, 1e8));
    }
}

/* shape a and scale mean / a */
static double ga_z(double lm, double la, double e)
{
    return Rf_qgamma(log_tail(e), exp(la), exp(lm - la), e <= 0, 1);
}

static void ga_reparam(const bbvi_family *f, int D, const double *lambda,
                       int S, const double *eps, double *z)
{
    (void) f;
    for (int s = 0; s < S; s++)
        for (int d = 0; d < D; d++)
            z[d + (size_t) s * D] = ga_z(lambda[d], lambda[D + d], eps[d + (size_t) s * D]);
}

static double ga_log_q(const bbvi_family *f, int D, const double *lambda,
                       const double *eps)
{
    (void) f;
    double a = 0.0;
    for (int d = 0; d < D; d++) {
        double z = ga_z(lambda[d], lambda[D + d], eps[d]);
        a += Rf_dgamma(z, exp(lambda[D + d]), exp(lambda[d] - lambda[D + d]), 1);
    }
    return a;
}

/* log q = a log b - lgamma(a) + (a - 1) log z - b z, b = a / mean */
static void ga_score(const bbvi_family *f, int D, const double *lambda,
                     const double *eps, double *h)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        double a = exp(lambda[D + d]), lb = lambda[D + d] - lambda[d], b = exp(lb);
        double z = ga_z(lambda[d], lambda[D + d], eps[d]);
        h[d] = b * z - a;
        h[D + d] = a * (lb + 1 - Rf_digamma(a) + log(z) - b * z / a);
    }
}

/* H = a - log b + lgamma(a) + (1 - a) digamma(a) */
static double ga_entropy(const bbvi_family *f, int D, const double *lambda)
{
    (void) f;
    double h = 0.0;
    for (int d = 0; d < D; d++) {
        double a = exp(lambda[D + d]);
        h += a - (lambda[D + d] - lambda[d]) + Rf_lgammafn(a) + (1 - a) * Rf_digamma(a);
    }
    return h;
}

static void ga_entropy_grad(const bbvi_family *f, int D, const double *lambda,
                            double *g)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        double a = exp(lambda[D + d]);
        g[d] = 1.0;
        g[D + d] = a * (1 + (1 - a) * Rf_trigamma(a)) - 1.0;
    }
}

static void ga_marginals(const bbvi_family *f, int D, const double *lambda,
                         double *mean, double *sd)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        mean[d] = exp(lambda[d]);
        sd[d] = mean[d] / sqrt(exp(lambda[D + d]));
    }
}

static SEXP two_par_sexp(const char *fam, const char *n1, const char *n2,
                         int D, const double *mean, const double *sd,
                         const double *p1, const double *p2)
{
    const char *names[] = { "family", "mean", "sd", n1, n2, "" };
    SEXP v[5];
    v[0] = PROTECT(Rf_mkString(fam));
    const double *src[4] = { mean, sd, p1, p2 };
    for (int i = 0; i < 4; i++) {
        v[i + 1] = PROTECT(Rf_allocVector(REALSXP, D));
        memcpy(REAL(v[i + 1]), src[i], sizeof(double) * D);
    }
    SEXP out = list_of(names, 5, v);
    UNPROTECT(5);
    return out;
}

static SEXP ga_to_sexp(const bbvi_family *f, int D, const double *lambda)
{
    double *m = (double *) R_alloc(D, sizeof(double)), *s = (double *) R_alloc(D, sizeof(double));
    double *a = (double *) R_alloc(D, sizeof(double)), *b = (double *) R_alloc(D, sizeof(double));
    ga_marginals(f, D, lambda, m, s);
    for (int d = 0; d < D; d++) {
        a[d] = exp(lambda[D + d]);
        b[d] = exp(lambda[D + d] - lambda[d]);
    }
    return two_par_sexp("gamma", "shape", "rate", D, m, s, a, b);
}

static const bbvi_family gamma_family = {
    "gamma", 0, NULL, two_D, base_D, ga_init, normal_draw_base, ga_reparam,
    ga_log_q, ga_score, ga_entropy, ga_entropy_grad, NULL, ga_marginals,
    no_affine, no_affine_diag, ga_to_sexp
};

/* ---- Beta: lambda = (logit mean, log concentration) --------------------------
   a = m n, b = (1 - m) n: mean and concentration are nearly orthogonal,
   where a and b move together along a ridge. */

static void be_ab(double lm, double ln, double *a, double *b)
{
    double n = exp(ln);
    *a = n * Rf_plogis(lm, 0.0, 1.0, 1, 0);
    *b = n * Rf_plogis(lm, 0.0, 1.0, 0, 0);
}

/* moment matching with m in [1e-6, 1 - 1e-6] and the variance below the
   largest a Beta of that mean can have (a + b kept >= 0.2) */
static void be_init(const bbvi_family *f, int D, const double *mean,
                    const double *log_sd, double *lambda)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        double m = clamp(mean[d], 1e-6, 1 - 1e-6);
        double v = exp(2 * clamp(log_sd[d], -30, 0));
        lambda[d] = log(m) - log1p(-m);
        lambda[D + d] = log(clamp(m * (1 - m) / v - 1, 0.2, 1e8));
    }
}

static double be_z(double lm, double ln, double e)
{
    double a, b;
    be_ab(lm, ln, &a, &b);
    return Rf_qbeta(log_tail(e), a, b, e <= 0, 1);
}

static void be_reparam(const bbvi_family *f, int D, const double *lambda,
                       int S, const double *eps, double *z)
{
    (void) f;
    for (int s = 0; s < S; s++)
        for (int d = 0; d < D; d++)
            z[d + (size_t) s * D] = be_z(lambda[d], lambda[D + d], eps[d + (size_t) s * D]);
}

static double be_log_q(const bbvi_family *f, int D, const double *lambda,
                       const double *eps)
{
    (void) f;
    double acc = 0.0;
    for (int d = 0; d < D; d++) {
        double a, b;
        be_ab(lambda[d], lambda[D + d], &a, &b);
        acc += Rf_dbeta(be_z(lambda[d], lambda[D + d], eps[d]), a, b, 1);
    }
    return acc;
}

/* chain rule from (a, b): da/dl = -db/dl = n m (1 - m) = a b / n,
   da/dln = a, db/dln = b */
static void be_score(const bbvi_family *f, int D, const double *lambda,
                     const double *eps, double *h)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        double a, b;
        be_ab(lambda[d], lambda[D + d], &a, &b);
        double z = be_z(lambda[d], lambda[D + d], eps[d]);
        double dab = Rf_digamma(a + b);
        double ga = log(z) - Rf_digamma(a) + dab, gb = log1p(-z) - Rf_digamma(b) + dab;
        h[d] = a * b / (a + b) * (ga - gb);
        h[D + d] = a * ga + b * gb;
    }
}

/* H = lbeta(a, b) - (a - 1) psi(a) - (b - 1) psi(b) + (a + b - 2) psi(a + b) */
static double be_entropy(const bbvi_family *f, int D, const double *lambda)
{
    (void) f;
    double h = 0.0;
    for (int d = 0; d < D; d++) {
        double a, b;
        be_ab(lambda[d], lambda[D + d], &a, &b);
        h += Rf_lbeta(a, b) - (a - 1) * Rf_digamma(a) - (b - 1) * Rf_digamma(b) +
            (a + b - 2) * Rf_digamma(a + b);
    }
    return h;
}

static void be_entropy_grad(const bbvi_family *f, int D, const double *lambda,
                            double *g)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        double a, b;
        be_ab(lambda[d], lambda[D + d], &a, &b);
        double tab = (a + b - 2) * Rf_trigamma(a + b);
        double ha = tab - (a - 1) * Rf_trigamma(a), hb = tab - (b - 1) * Rf_trigamma(b);
        g[d] = a * b / (a + b) * (ha - hb);
        g[D + d] = a * ha + b * hb;
    }
}

static void be_marginals(const bbvi_family *f, int D, const double *lambda,
                         double *mean, double *sd)
{
    (void) f;
    for (int d = 0; d < D; d++) {
        double a, b;
        be_ab(lambda[d], lambda[D + d], &a, &b);
        double n = a + b;
        mean[d] = a / n;
        sd[d] = sqrt(a * b / (n * n * (n + 1)));
    }
}

static SEXP be_to_sexp(const bbvi_family *f, int D, const double *lambda)
{
    double *m = (double *) R_alloc(D, sizeof(double)), *s = (double *) R_alloc(D, sizeof(double));
    double *a = (double *) R_alloc(D, sizeof(double)), *b = (double *) R_alloc(D, sizeof(double));
    be_marginals(f, D, lambda, m, s);
    for (int d = 0; d < D; d++) be_ab(lambda[d], lambda[D + d], a + d, b + d);
    return two_par_sexp("beta", "a", "b", D, m, s, a, b);
}

static const bbvi_family beta_family = {
    "beta", 0, NULL, two_D, base_D, be_init, normal_draw_base, be_reparam,
    be_log_q, be_score, be_entropy, be_entropy_grad, NULL, be_marginals,
    no_affine, no_affine_diag, be_to_sexp
};

/* ---- categorical ---------------------------------------------------------------- */

typedef struct {
    int D;
    const int *lo, *n;   /* per coordinate: first value, number of values */
    const int *k0;       /* per coordinate: offset of its logits in lambda */
    int K, nmax;
    double *p;           /* scratch, nmax */
} cat_ws;

#define CW(f) ((const cat_ws *) (f)->ws)

static int ca_n_lambda(const bbvi_family *f, int D) { (void) D; return CW(f)->K; }

/* p = softmax(0, l[0 .. n - 2]); returns log of the normaliser */
static double ca_probs(int n, const double *l, double *p)
{
    double mx = 0.0;
    for (int k = 1; k < n; k++) if (l[k - 1] > mx) mx = l[k - 1];
    double s = exp(-mx);
    p[0] = s;
    for (int k = 1; k < n; k++) { p[k] = exp(l[k - 1] - mx); s += p[k]; }
    for (int k = 0; k < n; k++) p[k] /= s;
    return mx + log(s);
}

/* the category of base draw e: the smallest c with F(c) >= Phi(e), taken
   from the upper tail when e > 0 (the largest c with T(c) > 1 - Phi(e),
   T(c) = P(value >= c)) */
static int ca_pick(int n, const double *p, double e)
{
    double lt = log_tail(e);
    if (e <= 0) {
        double u = exp(lt), F = 0.0;
        for (int c = 0; c < n - 1; c++) { F += p[c]; if (F >= u) return c; }
        return n - 1;
    }
    double v = exp(lt), T = 0.0;
    for (int c = n - 1; c > 0; c--) { T += p[c]; if (T > v) return c; }
    return 0;
}

/* a discretised normal around mean with sd exp(log_sd): wide sds give a
   nearly uniform start */
static void ca_init(const bbvi_family *f, int D, const double *mean,
                    const double *log_sd, double *lambda)
{
    const cat_ws *w = CW(f);
    for (int d = 0; d < D; d++) {
        double s = exp(clamp(log_sd[d], -5, 30));
        double r0 = (w->lo[d] - mean[d]) / s;
        for (int k = 1; k < w->n[d]; k++) {
            double r = (w->lo[d] + k - mean[d]) / s;
            lambda[w->k0[d] + k - 1] = clamp(-0.5 * (r * r - r0 * r0), -30, 30);
        }
    }
}

static void ca_reparam(const bbvi_family *f, int D, const double *lambda,
                       int S, const double *eps, double *z)
{
    const cat_ws *w = CW(f);
    for (int d = 0; d < D; d++) {
        ca_probs(w->n[d], lambda + w->k0[d], w->p);
        for (int s = 0; s < S; s++)
            z[d + (size_t) s * D] = w->lo[d] + ca_pick(w->n[d], w->p, eps[d + (size_t) s * D]);
    }
}

static double ca_log_q(const bbvi_family *f, int D, const double *lambda,
                       const double *eps)
{
    const cat_ws *w = CW(f);
    double a = 0.0;
    for (int d = 0; d < D; d++) {
        const double *l = lambda + w->k0[d];
        double lz = ca_probs(w->n[d], l, w->p);
        int c = ca_pick(w->n[d], w->p, eps[d]);
        a += (c == 0 ? 0.0 : l[c - 1]) - lz;
    }
    return a;
}

/* d log p_c / d l_k = 1[c == k] - p_k */
static void ca_score(const bbvi_family *f, int D, const double *lambda,
                     const double *eps, double *h)
{
    const cat_ws *w = CW(f);
    for (int d = 0; d < D; d++) {
        int n = w->n[d];
        ca_probs(n, lambda + w->k0[d], w->p);
        int c = ca_pick(n, w->p, eps[d]);
        double *hd = h + w->k0[d];
        for (int k = 1; k < n; k++) hd[k - 1] = (c == k) - w->p[k];
    }
}

static double plogp(double p) { return p > 0 ? p * log(p) : 0.0; }

static double ca_entropy(const bbvi_family *f, int D, const double *lambda)
{
    const cat_ws *w = CW(f);
    double h = 0.0;
    for (int d = 0; d < D; d++) {
        ca_probs(w->n[d], lambda + w->k0[d], w->p);
        for (int k = 0; k < w->n[d]; k++) h -= plogp(w->p[k]);
    }
    return h;
}

/* dH / d l_k = -p_k (log p_k + H) */
static void ca_entropy_grad(const bbvi_family *f, int D, const double *lambda,
                            double *g)
{
    const cat_ws *w = CW(f);
    for (int d = 0; d < D; d++) {
        int n = w->n[d];
        ca_probs(n, lambda + w->k0[d], w->p);
        double H = 0.0;
        for (int k = 0; k < n; k++) H -= plogp(w->p[k]);
        for (int k = 1; k < n; k++)
            g[w->k0[d] + k - 1] = w->p[k] > 0 ? -w->p[k] * (log(w->p[k]) + H) : 0.0;
    }
}

/* exact mean and sd; the sd is floored at CAT_SD_FLOOR (in units of the
   spacing of the values) because the convergence rule measures moves of
   the mean in sds and takes log sds, and a q that has settled on one value
   has an sd near 0 */
#define CAT_SD_FLOOR 0.25
static void ca_marginals(const bbvi_family *f, int D, const double *lambda,
                         double *mean, double *sd)
{
    const cat_ws *w = CW(f);
    for (int d = 0; d < D; d++) {
        ca_probs(w->n[d], lambda + w->k0[d], w->p);
        double m = 0.0, m2 = 0.0;
        for (int k = 0; k < w->n[d]; k++) { m += k * w->p[k]; m2 += (double) k * k * w->p[k]; }
        mean[d] = w->lo[d] + m;
        sd[d] = fmax(sqrt(fmax(m2 - m * m, 0.0)), CAT_SD_FLOOR);
    }
}

/* list(family = "categorical", mean, lower (first values), probs = list of
   one probability vector per coordinate) */
static SEXP ca_to_sexp(const bbvi_family *f, int D, const double *lambda)
{
    const cat_ws *w = CW(f);
    const char *names[] = { "family", "mean", "lower", "probs", "" };
    SEXP v[4];
    v[0] = PROTECT(Rf_mkString("categorical"));
    v[1] = PROTECT(Rf_allocVector(REALSXP, D));
    v[2] = PROTECT(Rf_allocVector(INTSXP, D));
    v[3] = PROTECT(Rf_allocVector(VECSXP, D));
    for (int d = 0; d < D; d++) {
        SEXP pd = Rf_allocVector(REALSXP, w->n[d]);
        SET_VECTOR_ELT(v[3], d, pd);
        ca_probs(w->n[d], lambda + w->k0[d], REAL(pd));
        double m = 0.0;
        for (int k = 0; k < w->n[d]; k++) m += (w->lo[d] + k) * REAL(pd)[k];
        REAL(v[1])[d] = m;
        INTEGER(v[2])[d] = w->lo[d];
    }
    SEXP out = list_of(names, 4, v);
    UNPROTECT(4);
    return out;
}

static const bbvi_family categorical_proto = {
    "categorical", 0, NULL, ca_n_lambda, base_D, ca_init, normal_draw_base,
    ca_reparam, ca_log_q, ca_score, ca_entropy, ca_entropy_grad, NULL,
    ca_marginals, no_affine, no_affine_diag, ca_to_sexp
};

/* ---- construction ------------------------------------------------------------------- */

int bbvi_family_is_natural(const char *name)
{
    return strcmp(name, "gamma") == 0 || strcmp(name, "beta") == 0 ||
        strcmp(name, "categorical") == 0;
}

/* gamma or beta by name; categorical needs its support
   (bbvi_family_categorical) */
const bbvi_family *bbvi_family_natural(const char *name)
{
    if (strcmp(name, "gamma") == 0) return &gamma_family;
    if (strcmp(name, "beta") == 0) return &beta_family;
    Rf_error("internal error: the %s family needs its support", name);
    return NULL;
}

const bbvi_family *bbvi_family_categorical(int D, const int *lo, const int *n)
{
    cat_ws *w = (cat_ws *) R_alloc(1, sizeof(cat_ws));
    int *lo2 = (int *) R_alloc(D, sizeof(int)), *n2 = (int *) R_alloc(D, sizeof(int));
    int *k0 = (int *) R_alloc(D, sizeof(int));
    int K = 0, nmax = 2;
    for (int d = 0; d < D; d++) {
        if (n[d] < 2 || n[d] > BBVI_MAX_CATEGORIES)
            Rf_error("internal error: a categorical coordinate needs 2 to %d values",
                     BBVI_MAX_CATEGORIES);
        lo2[d] = lo[d]; n2[d] = n[d]; k0[d] = K;
        K += n[d] - 1;
        if (n[d] > nmax) nmax = n[d];
    }
    w->D = D; w->lo = lo2; w->n = n2; w->k0 = k0; w->K = K; w->nmax = nmax;
    w->p = (double *) R_alloc(nmax, sizeof(double));
    bbvi_family *f = (bbvi_family *) R_alloc(1, sizeof(bbvi_family));
    *f = categorical_proto;
    f->ws = w;
    return f;
}

/* coordinate d of a categorical family: its first value, number of values
   and the offset of its logits in the family's lambda; 0 if f is not
   categorical */
int bbvi_categorical_coord(const bbvi_family *f, int d, int *lo, int *nv, int *k0)
{
    if (strcmp(f->name, "categorical") != 0) return 0;
    const cat_ws *w = CW(f);
    *lo = w->lo[d]; *nv = w->n[d]; *k0 = w->k0[d];
    return 1;
}
