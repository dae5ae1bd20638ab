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

/* ---- conditional Gaussian: q(g, b) = prod_j q(g_j) N(b_j; m_{j,g_j}, s_{j,g_j}^2) ----
   One block over a discrete parameter g (p coordinates, categorical as
   above) and a continuous b of the same dim, so that b_j has one Gaussian
   per value of g_j: a spike-and-slab posterior, where b_j given g_j = 0 is
   its prior and given g_j = 1 is fitted to the data, needs both at once.
   The block's 2p coordinates are g then b (gfirst) or b then g, as the two
   parameters are declared; its base draws are always p for g, then p for b.
     lambda = (logits of g as the categorical family [Kc],
               m_{j,k} [N], log s_{j,k} [N]), N = sum_j n_j, coordinate j's
               n_j values consecutive (offset c0[j]).
   The logits take the score gradient (with enumeration when asked: see
   bbvi_cond_value()); m and log s the pathwise one, draw by draw through
   the Gaussian of the drawn value only. */

typedef struct {
    int p, gfirst;
    const int *lo, *n, *k0, *c0;
    int Kc, N, K, nmax;
    double *pr;          /* scratch, nmax */
} cond_ws;

#define CD(f) ((const cond_ws *) (f)->ws)

static int cd_n_lambda(const bbvi_family *f, int D) { (void) D; return CD(f)->K; }

/* coordinate j's offsets within the block's z */
static int cd_gz(const cond_ws *w, int j) { return w->gfirst ? j : w->p + j; }
static int cd_bz(const cond_ws *w, int j) { return w->gfirst ? w->p + j : j; }

static void cd_init(const bbvi_family *f, int D, const double *mean,
                    const double *log_sd, double *lambda)
{
    const cond_ws *w = CD(f);
    (void) D;
    for (int j = 0; j < w->p; j++) {
        int gz = cd_gz(w, j), bz = cd_bz(w, j);
        double s = exp(clamp(log_sd[gz], -5, 30));
        double r0 = (w->lo[j] - mean[gz]) / s;
        for (int k = 1; k < w->n[j]; k++) {
            double r = (w->lo[j] + k - mean[gz]) / s;
            lambda[w->k0[j] + k - 1] = clamp(-0.5 * (r * r - r0 * r0), -30, 30);
        }
        /* every value's Gaussian starts where b's start is */
        for (int k = 0; k < w->n[j]; k++) {
            lambda[w->Kc + w->c0[j] + k] = mean[bz];
            lambda[w->Kc + w->N + w->c0[j] + k] = clamp(log_sd[bz], -30, 30);
        }
    }
}

/* the drawn value's index of coordinate j at a draw's base draws e (2p) */
static int cd_pick(const cond_ws *w, int j, const double *lambda, const double *e)
{
    ca_probs(w->n[j], lambda + w->k0[j], w->pr);
    return ca_pick(w->n[j], w->pr, e[j]);
}

static void cd_reparam(const bbvi_family *f, int D, const double *lambda,
                       int S, const double *eps, double *z)
{
    const cond_ws *w = CD(f);
    const double *m = lambda + w->Kc, *ls = m + w->N;
    for (int s = 0; s < S; s++) {
        const double *e = eps + (size_t) s * 2 * w->p;
        double *zs = z + (size_t) s * D;
        for (int j = 0; j < w->p; j++) {
            int c = cd_pick(w, j, lambda, e), i = w->c0[j] + c;
            zs[cd_gz(w, j)] = w->lo[j] + c;
            zs[cd_bz(w, j)] = m[i] + exp(ls[i]) * e[w->p + j];
        }
    }
}

#define HALF_LOG_2PI 0.918938533204672741780
static double cd_log_q(const bbvi_family *f, int D, const double *lambda,
                       const double *eps)
{
    const cond_ws *w = CD(f);
    const double *ls = lambda + w->Kc + w->N;
    double a = 0.0;
    (void) D;
    for (int j = 0; j < w->p; j++) {
        const double *l = lambda + w->k0[j];
        double lz = ca_probs(w->n[j], l, w->pr);
        int c = ca_pick(w->n[j], w->pr, eps[j]);
        double e = eps[w->p + j];
        a += (c == 0 ? 0.0 : l[c - 1]) - lz - 0.5 * e * e - HALF_LOG_2PI - ls[w->c0[j] + c];
    }
    return a;
}

/* logits as the categorical's; the drawn value's m and log s as a
   Gaussian's (e / s and e^2 - 1 at b = m + s e), the other values' 0 */
static void cd_score(const bbvi_family *f, int D, const double *lambda,
                     const double *eps, double *h)
{
    const cond_ws *w = CD(f);
    const double *ls = lambda + w->Kc + w->N;
    double *hm = h + w->Kc, *hs = hm + w->N;
    (void) D;
    memset(hm, 0, sizeof(double) * 2 * w->N);
    for (int j = 0; j < w->p; j++) {
        int n = w->n[j];
        ca_probs(n, lambda + w->k0[j], w->pr);
        int c = ca_pick(n, w->pr, eps[j]), i = w->c0[j] + c;
        for (int k = 1; k < n; k++) h[w->k0[j] + k - 1] = (c == k) - w->pr[k];
        double e = eps[w->p + j];
        hm[i] = e / exp(ls[i]);
        hs[i] = e * e - 1.0;
    }
}

/* H = sum_j [H(q(g_j)) + sum_k p_jk (log s_jk + (1 + log 2 pi) / 2)] */
static double cd_entropy(const bbvi_family *f, int D, const double *lambda)
{
    const cond_ws *w = CD(f);
    const double *ls = lambda + w->Kc + w->N;
    double h = 0.0;
    (void) D;
    for (int j = 0; j < w->p; j++) {
        ca_probs(w->n[j], lambda + w->k0[j], w->pr);
        for (int k = 0; k < w->n[j]; k++)
            h += -plogp(w->pr[k]) + w->pr[k] * (ls[w->c0[j] + k] + 0.5 + HALF_LOG_2PI);
    }
    return h;
}

/* dH/dl_k = -p_k (log p_k + Hc) + p_k (H_k - sum_v p_v H_v), H_k the k-th
   Gaussian's entropy; dH/dm = 0; dH/dlog s_k = p_k */
static void cd_entropy_grad(const bbvi_family *f, int D, const double *lambda,
                            double *g)
{
    const cond_ws *w = CD(f);
    const double *ls = lambda + w->Kc + w->N;
    (void) D;
    memset(g + w->Kc, 0, sizeof(double) * w->N);
    for (int j = 0; j < w->p; j++) {
        int n = w->n[j];
        const double *lj = ls + w->c0[j];
        ca_probs(n, lambda + w->k0[j], w->pr);
        double Hc = 0.0, Hg = 0.0;
        for (int k = 0; k < n; k++) { Hc -= plogp(w->pr[k]); Hg += w->pr[k] * lj[k]; }
        for (int k = 1; k < n; k++) {
            double pk = w->pr[k];
            g[w->k0[j] + k - 1] = (pk > 0 ? -pk * (log(pk) + Hc) : 0.0) + pk * (lj[k] - Hg);
        }
        for (int k = 0; k < n; k++) g[w->Kc + w->N + w->c0[j] + k] = w->pr[k];
    }
}

/* the chain rule through b = m_c + s_c e of the drawn value c only */
static void cd_reparam_grad(const bbvi_family *f, int D, const double *lambda,
                            const double *eps, const double *gz, double *glambda)
{
    const cond_ws *w = CD(f);
    const double *ls = lambda + w->Kc + w->N;
    (void) D;
    for (int j = 0; j < w->p; j++) {
        int c = cd_pick(w, j, lambda, eps), i = w->c0[j] + c;
        double gb = gz[cd_bz(w, j)], e = eps[w->p + j];
        glambda[w->Kc + i] += gb;
        glambda[w->Kc + w->N + i] += gb * exp(ls[i]) * e;
    }
}

/* g as the categorical's (sd floored likewise); b the mixture's mean and
   sd by the law of total variance */
static void cd_marginals(const bbvi_family *f, int D, const double *lambda,
                         double *mean, double *sd)
{
    const cond_ws *w = CD(f);
    const double *m = lambda + w->Kc, *ls = m + w->N;
    (void) D;
    for (int j = 0; j < w->p; j++) {
        ca_probs(w->n[j], lambda + w->k0[j], w->pr);
        double gm = 0.0, gm2 = 0.0, bm = 0.0, bm2 = 0.0;
        for (int k = 0; k < w->n[j]; k++) {
            double pk = w->pr[k], mk = m[w->c0[j] + k], sk = exp(ls[w->c0[j] + k]);
            gm += k * pk; gm2 += (double) k * k * pk;
            bm += pk * mk; bm2 += pk * (mk * mk + sk * sk);
        }
        mean[cd_gz(w, j)] = w->lo[j] + gm;
        sd[cd_gz(w, j)] = fmax(sqrt(fmax(gm2 - gm * gm, 0.0)), CAT_SD_FLOOR);
        mean[cd_bz(w, j)] = bm;
        sd[cd_bz(w, j)] = sqrt(fmax(bm2 - bm * bm, 0.0));
    }
}

/* b's coordinates: every value's Gaussian moves with the map; g's are left
   alone (the R side passes scale 1 and shift 0 for them) */
static void cd_affine_diag(const bbvi_family *f, int D, double *lambda,
                           const double *scale, const double *shift)
{
    const cond_ws *w = CD(f);
    (void) D;
    for (int j = 0; j < w->p; j++) {
        int bz = cd_bz(w, j);
        for (int k = 0; k < w->n[j]; k++) {
            int i = w->Kc + w->c0[j] + k;
            lambda[i] = shift[bz] + scale[bz] * lambda[i];
            lambda[i + w->N] += log(scale[bz]);
        }
    }
}

/* list(family = "given", g_first, mean (the block's 2p coordinates),
   lower, probs, cond_mean, cond_sd: one vector per coordinate of g, over
   its values) */
static SEXP cd_to_sexp(const bbvi_family *f, int D, const double *lambda)
{
    const cond_ws *w = CD(f);
    const double *m = lambda + w->Kc, *ls = m + w->N;
    const char *names[] = { "family", "g_first", "mean", "lower", "probs",
                            "cond_mean", "cond_sd", "" };
    SEXP v[7];
    v[0] = PROTECT(Rf_mkString("given"));
    v[1] = PROTECT(Rf_ScalarLogical(w->gfirst));
    v[2] = PROTECT(Rf_allocVector(REALSXP, D));
    v[3] = PROTECT(Rf_allocVector(INTSXP, w->p));
    v[4] = PROTECT(Rf_allocVector(VECSXP, w->p));
    v[5] = PROTECT(Rf_allocVector(VECSXP, w->p));
    v[6] = PROTECT(Rf_allocVector(VECSXP, w->p));
    double *sd = (double *) R_alloc(D, sizeof(double));
    cd_marginals(f, D, lambda, REAL(v[2]), sd);
    for (int j = 0; j < w->p; j++) {
        int n = w->n[j];
        INTEGER(v[3])[j] = w->lo[j];
        SET_VECTOR_ELT(v[4], j, Rf_allocVector(REALSXP, n));
        ca_probs(n, lambda + w->k0[j], REAL(VECTOR_ELT(v[4], j)));
        SET_VECTOR_ELT(v[5], j, Rf_allocVector(REALSXP, n));
        SET_VECTOR_ELT(v[6], j, Rf_allocVector(REALSXP, n));
        for (int k = 0; k < n; k++) {
            REAL(VECTOR_ELT(v[5], j))[k] = m[w->c0[j] + k];
            REAL(VECTOR_ELT(v[6], j))[k] = exp(ls[w->c0[j] + k]);
        }
    }
    SEXP out = list_of(names, 7, v);
    UNPROTECT(7);
    return out;
}

static void cd_draw_base(const bbvi_family *f, int D, int S, double *eps)
{
    normal_draw_base(f, D, S, eps);   /* 2p per draw: D = 2p */
}

static const bbvi_family cond_proto = {
    "given", 0, NULL, cd_n_lambda, base_D, cd_init, cd_draw_base,
    cd_reparam, cd_log_q, cd_score, cd_entropy, cd_entropy_grad, cd_reparam_grad,
    cd_marginals, no_affine, cd_affine_diag, cd_to_sexp
};

/* p coordinates of g with values lo[j] .. lo[j] + n[j] - 1, each with one
   Gaussian per value for b's coordinate j; the block has 2p coordinates */
const bbvi_family *bbvi_family_cond(int p, const int *lo, const int *n, int gfirst)
{
    cond_ws *w = (cond_ws *) R_alloc(1, sizeof(cond_ws));
    int *lo2 = (int *) R_alloc(p, sizeof(int)), *n2 = (int *) R_alloc(p, sizeof(int));
    int *k0 = (int *) R_alloc(p, sizeof(int)), *c0 = (int *) R_alloc(p, sizeof(int));
    int Kc = 0, N = 0, nmax = 2;
    for (int j = 0; j < p; j++) {
        if (n[j] < 2 || n[j] > BBVI_MAX_CATEGORIES)
            Rf_error("internal error: a categorical coordinate needs 2 to %d values",
                     BBVI_MAX_CATEGORIES);
        lo2[j] = lo[j]; n2[j] = n[j]; k0[j] = Kc; c0[j] = N;
        Kc += n[j] - 1; N += n[j];
        if (n[j] > nmax) nmax = n[j];
    }
    w->p = p; w->gfirst = gfirst != 0; w->lo = lo2; w->n = n2; w->k0 = k0; w->c0 = c0;
    w->Kc = Kc; w->N = N; w->K = Kc + 2 * N; w->nmax = nmax;
    w->pr = (double *) R_alloc(nmax, sizeof(double));
    bbvi_family *f = (bbvi_family *) R_alloc(1, sizeof(bbvi_family));
    *f = cond_proto;
    f->ws = w;
    return f;
}

/* discrete coordinate j (< p) of a conditional family: its offset in the
   block's z, first value, number of values and logits' offset; 0 if f is
   not one or j >= p */
int bbvi_cond_coord(const bbvi_family *f, int j, int *zoff, int *lo, int *nv, int *k0)
{
    if (strcmp(f->name, "given") != 0) return 0;
    const cond_ws *w = CD(f);
    if (j < 0 || j >= w->p) return 0;
    *zoff = cd_gz(w, j); *lo = w->lo[j]; *nv = w->n[j]; *k0 = w->k0[j];
    return 1;
}

/* the number of logits (score-gradient entries, at the front of lambda) of
   a conditional family, or -1 if f is not one */
int bbvi_cond_n_logits(const bbvi_family *f)
{
    return strcmp(f->name, "given") == 0 ? CD(f)->Kc : -1;
}

/* For enumeration: were the discrete coordinate at block offset gzoff to
   take its value index v, its partner b_j would be m_{j,v} + s_{j,v} e at
   the same base draw e (eps: the block's base draws of one draw); writes
   b_j's block offset, that value and log s_{j,v}. Returns 0 when gzoff is
   not a discrete coordinate of a conditional family. */
int bbvi_cond_value(const bbvi_family *f, int gzoff, int v, const double *lambda,
                    const double *eps, int *bzoff, double *b, double *log_s)
{
    if (strcmp(f->name, "given") != 0) return 0;
    const cond_ws *w = CD(f);
    int j = w->gfirst ? gzoff : gzoff - w->p;
    if (j < 0 || j >= w->p || v < 0 || v >= w->n[j]) return 0;
    int i = w->Kc + w->c0[j] + v;
    *bzoff = cd_bz(w, j);
    *log_s = lambda[i + w->N];
    *b = lambda[i] + exp(*log_s) * eps[w->p + j];
    return 1;
}
