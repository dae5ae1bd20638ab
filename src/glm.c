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
    if (!Rf_isReal(X) || !Rf_isMatrix(X))
        Rf_error("internal error: GLM spec field `X` must be a double matrix");
    SEXP dim = Rf_getAttrib(X, R_DimSymbol);
    g->N = INTEGER(dim)[0];
    g->P = INTEGER(dim)[1];
    g->X = REAL(X);
    g->family = bbvi_need_int(spec, "family");
    if (g->family < GLM_GAUSSIAN || g->family > GLM_POISSON)
        Rf_error("internal error: unknown GLM family code %d", g->family);
    g->D = g->P + (g->family == GLM_GAUSSIAN);
    g->y = real_field(spec, "y", g->N, 0);
    g->trials = g->family == GLM_BINOMIAL ? real_field(spec, "trials", g->N, 0) : NULL;
    g->w = real_field(spec, "weights", g->N, 0);
    g->off = real_field(spec, "offset", g->N, 0);
    SEXP pt = bbvi_list_get(spec, "prior_type");
    if (!Rf_isInteger(pt) || XLENGTH(pt) != g->P)
        Rf_error("internal error: GLM spec field `prior_type` must be %d integers", g->P);
    g->ptype = INTEGER(pt);
    g->ppar = real_field(spec, "prior_par", 3 * (R_xlen_t) g->P, 0);
    g->atype = bbvi_need_int(spec, "aux_type");
    g->apar = real_field(spec, "aux_par", 3, 0);
    double c = 0.0;
    for (int i = 0; i < g->N; i++) {
        if (g->family == GLM_GAUSSIAN) c += g->w[i] * (-0.5 * LOG_2PI);
        else if (g->family == GLM_BINOMIAL)
            c += g->w[i] * (lgammafn(g->trials[i] + 1) - lgammafn(g->y[i] + 1) -
                            lgammafn(g->trials[i] - g->y[i] + 1));
        else c -= g->w[i] * lgammafn(g->y[i] + 1);
    }
    g->llconst = c;
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

typedef struct {
    glm_data g;
    double *eta;     /* N x max_batch */
} glm_target;

static void glm_eval(bbvi_target *t, int S, const double *theta, double *lp,
                     double *grad)
{
    glm_target *gt = (glm_target *) t->ctx;
    const glm_data *g = &gt->g;
    int N = g->N, P = g->P, D = g->D;
    double one = 1.0, zero = 0.0;
    double *eta = gt->eta;
    /* eta (N x S) = X (N x P) theta[0:P, ] (leading dimension D) */
    F77_CALL(dgemm)("N", "N", &N, &S, &P, &one, g->X, &N, theta, &D, &zero,
                    eta, &N FCONE FCONE);
    for (int s = 0; s < S; s++) {
        double *e = eta + (size_t) s * N;   /* becomes w * dl/deta */
        const double *th = theta + (size_t) s * D;
        double ll = g->llconst, gsig = 0.0;
        if (g->family == GLM_GAUSSIAN) {
            double sigma = th[P];
            if (!(sigma > 0)) {
                lp[s] = R_NegInf;
                if (grad) for (int d = 0; d < D; d++) grad[d + (size_t) s * D] = 0.0;
                for (int i = 0; i < N; i++) e[i] = 0.0;
                continue;
            }
            double is2 = 1.0 / (sigma * sigma), ls = log(sigma), ssq = 0.0, sw = 0.0;
            for (int i = 0; i < N; i++) {
                double r = g->y[i] - g->off[i] - e[i];
                double wr2 = g->w[i] * r * r;
                ssq += wr2;
                sw += g->w[i];
                e[i] = g->w[i] * r * is2;
            }
            ll += -sw * ls - 0.5 * ssq * is2;
            gsig = -sw / sigma + ssq * is2 / sigma;
        } else if (g->family == GLM_BINOMIAL) {
            for (int i = 0; i < N; i++) {
                double x = e[i] + g->off[i];
                /* one exp: log1p(e^x) and the logistic function */
                double ex = exp(-fabs(x));
                double l1pe = (x > 0 ? x : 0.0) + log1p(ex);
                double p = x >= 0 ? 1.0 / (1.0 + ex) : ex / (1.0 + ex);
                ll += g->w[i] * (g->y[i] * x - g->trials[i] * l1pe);
                e[i] = g->w[i] * (g->y[i] - g->trials[i] * p);
            }
        } else {
            for (int i = 0; i < N; i++) {
                double x = e[i] + g->off[i];
                double mu = exp(x);
                ll += g->w[i] * (g->y[i] * x - mu);
                e[i] = g->w[i] * (g->y[i] - mu);
            }
        }
        double f, f1, f2;
        for (int j = 0; j < P; j++) {
            bbvi_glm_prior(g->ptype[j], g->ppar + 3 * j, 0, th[j], &f, &f1, &f2);
            ll += f;
            if (grad) grad[j + (size_t) s * D] = f1;
        }
        if (g->family == GLM_GAUSSIAN) {
            bbvi_glm_prior(g->atype, g->apar, 1, th[P], &f, &f1, &f2);
            ll += f;
            if (grad) grad[P + (size_t) s * D] = gsig + f1;
        }
        lp[s] = R_FINITE(ll) || ll == R_NegInf ? ll : R_NegInf;
    }
    if (grad) {
        /* grad[0:P, ] += X' (w * dl/deta) */
        F77_CALL(dgemm)("T", "N", &P, &S, &N, &one, g->X, &N, eta, &N, &one,
                        grad, &D FCONE FCONE);
    }
}

void bbvi_glm_target_init(SEXP spec, int dim, int max_batch, bbvi_target *out)
{
    glm_target *gt = (glm_target *) R_alloc(1, sizeof(glm_target));
    bbvi_glm_data(spec, &gt->g);
    if (gt->g.D != dim)
        Rf_error("internal error: GLM has %d parameters, the model %d", gt->g.D, dim);
    gt->eta = (double *) R_alloc((size_t) gt->g.N * max_batch, sizeof(double));
    out->dim = dim;
    out->has_grad = 1;
    out->eval = glm_eval;
    out->ctx = gt;
}
