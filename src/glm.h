/* glm.h: shared between glm.c (the log-joint target, all S draws at once)
   and glm_quad.c (the deterministic quadrature fit). Internal to the GLM
   code; the core only sees bbvi_glm_target_init() from bbvi.h. */
#ifndef BBVI_GLM_H
#define BBVI_GLM_H

#include "bbvi.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* The calling thread's index inside a parallel row pass (0 without OpenMP):
   it picks the thread's scratch buffers. */
static inline int glm_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* R/priors.R's glm_family_code and prior_code map names to these: keep
   the two in step */
enum { GLM_GAUSSIAN = 0, GLM_BINOMIAL = 1, GLM_POISSON = 2 };
enum { PRIOR_FLAT = 0, PRIOR_NORMAL = 1, PRIOR_STUDENT_T = 2,
       PRIOR_EXPONENTIAL = 3 };

typedef struct {
    int family;
    int N, P, D;              /* observations, coefficients, parameters */
    const double *X;          /* N x (P - icpt), column-major, as stored */
    int icpt;                 /* 1: coefficient 0 is an intercept whose
                                 column of ones is not stored */
    const double *xbar;       /* P column means subtracted on the fly
                                 (centred predictors), or NULL */
    const double *y;          /* response; successes for binomial */
    const double *trials;     /* binomial trials (NULL: all 1) */
    const double *w;          /* prior weights (NULL: all 1) */
    const double *off;        /* offset (NULL: all 0) */
    const int *ptype;         /* P prior types */
    const double *ppar;       /* 3 x P: location, scale, df (rate for exp) */
    int atype;                /* prior type of sigma (gaussian only) */
    const double *apar;       /* 3: location, scale, df (rate for exp) */
    double llconst;           /* sum of the likelihood's constant terms */
    int threads;              /* OpenMP threads for row chunks */
} glm_data;

/* Read and check the spec list (see R/formula.R, glm_setup()). */
void bbvi_glm_data(SEXP spec, glm_data *g);

/* The design as fitted is never built whole: kernels walk it in blocks of
   rows. glm_block_rows() is the block height for P columns (a block of
   about 512 KB); glm_xblock() returns rows [r0, r0 + nr) of the design
   (intercept column and centring applied) with its leading dimension in
   *ld: a pointer into X itself when nothing needs applying, else buf
   (nr x P). */
int glm_block_rows(int N, int P);

/* Rows are also split into at most GLM_MAX_CHUNKS chunks (fixed by N, not
   by the number of threads), each walked in blocks: chunk sums added in
   order make threaded results identical to single-threaded ones. */
#define GLM_MAX_CHUNKS 64
/* draws per pass over the rows (log-density draws of the diagnostics: one
   pass for 128 of them) */
#define GLM_DRAW_BLOCK 128
/* multiply-adds per pass below which a pass runs on one thread */
#define GLM_THREAD_WORK 4e6
int glm_chunks(int N, int nr, int P);
const double *glm_xblock(const glm_data *g, int r0, int nr, double *buf,
                         int *ld);

/* Per-row accessors for the optional vectors. */
static inline double glm_w(const glm_data *g, int i) { return g->w ? g->w[i] : 1.0; }
static inline double glm_off(const glm_data *g, int i) { return g->off ? g->off[i] : 0.0; }
static inline double glm_trials(const glm_data *g, int i) { return g->trials ? g->trials[i] : 1.0; }

/* Log density of a coefficient prior at x with first and second
   derivatives; half (x > 0) versions when half = 1. */
void bbvi_glm_prior(int type, const double *par, int half, double x,
                    double *f, double *f1, double *f2);

#endif
