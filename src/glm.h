/* glm.h: shared between glm.c (the log-joint target, all S draws at once)
   and glm_quad.c (the deterministic quadrature fit). Internal to the GLM
   code; the core only sees bbvi_glm_target_init() from bbvi.h. */
#ifndef BBVI_GLM_H
#define BBVI_GLM_H

#include "bbvi.h"

enum { GLM_GAUSSIAN = 0, GLM_BINOMIAL = 1, GLM_POISSON = 2 };
enum { PRIOR_FLAT = 0, PRIOR_NORMAL = 1, PRIOR_STUDENT_T = 2,
       PRIOR_EXPONENTIAL = 3 };

typedef struct {
    int family;
    int N, P, D;              /* observations, coefficients, parameters */
    const double *X;          /* N x P, column-major */
    const double *y;          /* response; successes for binomial */
    const double *trials;     /* binomial trials (NULL otherwise) */
    const double *w;          /* prior weights */
    const double *off;        /* offset */
    const int *ptype;         /* P prior types */
    const double *ppar;       /* 3 x P: location, scale, df (rate for exp) */
    int atype;                /* prior type of sigma (gaussian only) */
    const double *apar;       /* 3: location, scale, df (rate for exp) */
    double llconst;           /* sum of the likelihood's constant terms */
} glm_data;

/* Read and check the spec list (see R/formula.R, glm_target_spec()). */
void bbvi_glm_data(SEXP spec, glm_data *g);

/* Log density of a coefficient prior at x with first and second
   derivatives; half (x > 0) versions when half = 1. */
void bbvi_glm_prior(int type, const double *par, int half, double x,
                    double *f, double *f1, double *f2);

#endif
