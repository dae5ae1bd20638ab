/* examples.c: compiled log-joints shipped with the package. They use the
   public bbvi_native_logjoint signature, so they exercise the same path as a
   user's own compiled function (see ?native_logjoint). */
#include "bbvi.h"
#include <string.h>
#include <math.h>

/* Multivariate normal: data = list(mean, precision matrix). */
static double example_mvnormal(int dim, const double *theta, double *grad,
                               void *data)
{
    SEXP d = (SEXP) data;
    const double *mu = REAL(VECTOR_ELT(d, 0)), *P = REAL(VECTOR_ELT(d, 1));
    double lp = 0.0;
    for (int i = 0; i < dim; i++) {
        double gi = 0.0;
        for (int j = 0; j < dim; j++)
            gi -= P[i + (size_t) j * dim] * (theta[j] - mu[j]);
        lp += 0.5 * (theta[i] - mu[i]) * gi;
        if (grad) grad[i] = gi;
    }
    return lp;
}

/* Logistic regression with independent normal(0, scale) priors:
   data = list(X (n x p), y (0/1 doubles), scale (length 1)). */
static double example_logistic(int dim, const double *theta, double *grad,
                               void *data)
{
    SEXP d = (SEXP) data;
    SEXP X = VECTOR_ELT(d, 0);
    const double *x = REAL(X), *y = REAL(VECTOR_ELT(d, 1));
    double scale = REAL(VECTOR_ELT(d, 2))[0];
    int n = Rf_nrows(X);
    double lp = 0.0;
    if (grad)
        for (int j = 0; j < dim; j++) grad[j] = -theta[j] / (scale * scale);
    for (int j = 0; j < dim; j++) lp -= 0.5 * theta[j] * theta[j] / (scale * scale);
    for (int i = 0; i < n; i++) {
        double eta = 0.0;
        for (int j = 0; j < dim; j++) eta += x[i + (size_t) j * n] * theta[j];
        /* y log p + (1-y) log(1-p) = y eta - log(1 + e^eta) */
        lp += y[i] * eta - bbvi_log1pexp(eta);
        if (grad) {
            double p = eta >= 0 ? 1.0 / (1.0 + exp(-eta)) : exp(eta) / (1.0 + exp(eta));
            double r = y[i] - p;
            for (int j = 0; j < dim; j++) grad[j] += r * x[i + (size_t) j * n];
        }
    }
    return lp;
}

/* .Call(C_native_example, name): an external pointer to a shipped example */
SEXP native_example(SEXP name)
{
    if (!Rf_isString(name) || XLENGTH(name) != 1)
        Rf_error("internal error: `name` must be a string");
    const char *nm = CHAR(STRING_ELT(name, 0));
    DL_FUNC fn = NULL;
    if (strcmp(nm, "mvnormal") == 0) fn = (DL_FUNC) example_mvnormal;
    else if (strcmp(nm, "logistic") == 0) fn = (DL_FUNC) example_logistic;
    else Rf_error("internal error: no compiled example '%s'", nm);
    return R_MakeExternalPtrFn(fn, Rf_install("bbvi_native_logjoint"), R_NilValue);
}
