/* bbvi.h: what crosses C files. Everything else is static in its own file. */
#ifndef BBVI_H
#define BBVI_H

#define R_NO_REMAP
#include <R.h>
#include <Rinternals.h>

/* Checked-allocation builds (tools/sanitizers.sh, tools/valgrind.sh define
   BBVI_CHECK_ALLOC): every R_alloc buffer is placed at the very end of its own
   malloc'd block, so AddressSanitizer and valgrind see a write or read past
   its end. In a normal build small R_alloc buffers share R's vector pages,
   where neither tool can see an overrun. */
#ifdef BBVI_CHECK_ALLOC
char *bbvi_check_alloc(size_t nelem, int eltsize);
#define R_alloc(nelem, eltsize) bbvi_check_alloc((nelem), (eltsize))
#endif

/* ------------------------------------------------------------------------ */
/* Targets: log p(x, theta) on the constrained (user) scale.                 */
/* ------------------------------------------------------------------------ */

typedef struct bbvi_target bbvi_target;
struct bbvi_target {
    int dim;        /* number of scalar parameters */
    int has_grad;   /* eval() can fill grad, or the model layer makes it
                       (fd_grad) */
    int fd_grad;    /* the gradient is central differences of log p, taken
                       by bbvi_model_logdens() on the unconstrained scale
                       (the model's `gradient = "numeric"`): eval() itself
                       is never asked for grad */
    /* Evaluate S points theta (dim x S, column-major). Writes lp[S]; when grad
       is not NULL (only asked if has_grad) writes the dim x S gradients.
       lp may be non-finite: callers decide what that means. May raise an R
       error (longjmp): callers hold no malloc'd memory. */
    void (*eval)(bbvi_target *t, int S, const double *theta, double *lp,
                 double *grad);
    void *ctx;      /* R_alloc'd state of the target kind */
    /* A factorised log-joint (R targets with `factors`; 0 for the others):
       log p = sum of n_factors terms. Factor f touches the declared
       parameters factor_pars[factor_start[f] .. factor_start[f + 1])
       (0-based, increasing). When lpf is not NULL, eval() also writes each
       term there (n_factors x S); callers set it around the call and reset
       it to NULL. */
    int n_factors;
    const int *factor_start, *factor_pars;
    double *lpf;
};

/* Build a target from the R-side spec list (see R/target.R). max_batch is the
   largest S that eval() will be asked for. */
void bbvi_target_from_sexp(SEXP spec, int dim, int max_batch, bbvi_target *out);

/* Target kinds that live in their own files. */
void bbvi_glm_target_init(SEXP spec, int dim, int max_batch, bbvi_target *out);

/* The C signature of a user's compiled log-joint (see ?native_logjoint).
   grad is NULL when the gradient is not wanted. */
typedef double (*bbvi_native_logjoint)(int dim, const double *theta,
                                       double *grad, void *data);

/* ------------------------------------------------------------------------ */
/* Model: target + transforms to the real line (unconstrained zeta).         */
/* ------------------------------------------------------------------------ */

/* The parameter layout: parameter j occupies par_zdim[j] coordinates of
   zeta from par_z0[j] and par_tdim[j] coordinates of theta from par_t0[j],
   mapped by a transform of kind par_kind[j]:
   - BBVI_TR_ELEMENTWISE: coordinate by coordinate by lower/upper (identity,
     log, logit), zdim == tdim;
   - BBVI_TR_SIMPLEX: stick-breaking, zdim = tdim - 1;
   - BBVI_TR_ORDERED: theta_1 = zeta_1 (or L + exp(zeta_1) when the lower
     bound L of the first coordinate is finite), theta_k = theta_{k-1} +
     exp(zeta_k), zdim == tdim.
   lower/upper are per theta coordinate (for a simplex, 0 and 1, unused). */
enum { BBVI_TR_ELEMENTWISE = 0, BBVI_TR_SIMPLEX = 1, BBVI_TR_ORDERED = 2 };

typedef struct {
    int D;                         /* coordinates of zeta */
    int Dth;                       /* coordinates of theta (target->dim) */
    const double *lower, *upper;   /* length Dth; -Inf / Inf when unbounded */
    int n_par;                     /* parameters (segments) */
    const int *par_z0, *par_zdim;  /* zeta offset and length, per parameter */
    const int *par_t0, *par_tdim, *par_kind;   /* theta offset, length, kind */
    int elementwise;               /* every kind elementwise (D == Dth) */
    bbvi_target *target;
    int max_batch;
    double *theta, *gtheta;        /* scratch, Dth x max_batch */
    double *logjac;                /* scratch, max_batch */
    /* finite-difference gradients (target->fd_grad): the steps' scale per
       zeta coordinate (NULL: 1; the estimators set q's starting scale) and
       scratch for the shifted points, allocated at the first call */
    const double *fd_scale;
    int fd_cap;
    double *fd_zeta, *fd_theta, *fd_logjac, *fd_lp;
} bbvi_model;

/* D coordinates of zeta; the theta dimension is t->dim. Without a layout
   call, each coordinate is its own elementwise parameter (D == t->dim). */
void bbvi_model_init(bbvi_model *m, bbvi_target *t, const double *lower,
                     const double *upper, int D, int max_batch);
/* n_par elementwise parameters of zdim[j] coordinates each (offsets are
   cumulative sums). When a layout with the same segments is already set
   (bbvi_model_set_layout), it is kept; when one is still to come (D <
   target->dim), the call does nothing and the layout sets the segments. */
void bbvi_model_set_params(bbvi_model *m, int n_par, const int *zdim);
/* The layout from a target spec's `layout` entry (an integer 3 x n_par
   matrix: kind, theta length, zeta length per parameter), or elementwise
   when absent. */
void bbvi_model_set_layout(bbvi_model *m, SEXP spec);
/* The number of zeta coordinates of a spec's layout (Dth when absent);
   checks that the layout covers Dth theta coordinates. */
int bbvi_layout_zdim(SEXP spec, int Dth);
/* An entry point's bounds: lower/upper doubles of one length Dth >= 1 (one
   per coordinate of theta; an internal error otherwise); returns the number
   of coordinates of zeta by the spec's layout (Dth when spec is NULL). */
int bbvi_check_bounds(SEXP spec, SEXP lower, SEXP upper, int *Dth);
/* lp[s] = log p(T(zeta_s)) + log|det J_T(zeta_s)|; grad (D x S, wrt zeta)
   when not NULL. S <= max_batch. With a finite-difference target the
   gradient costs 2D more log-joint evaluations per point, in batches of
   many points (one call of a vectorized R function for S(2D + 1) <=
   fd_cap points). */
void bbvi_model_logdens(bbvi_model *m, int S, const double *zeta, double *lp,
                        double *grad);
/* out[j + s * n_par] = log|Jacobian| of parameter j's transform at draw s */
void bbvi_model_logjac_par(bbvi_model *m, int S, const double *zeta, double *out);
/* theta = T(zeta) (Dth x S) by the model's layout, and back */
void bbvi_model_constrain(const bbvi_model *m, int S, const double *zeta,
                          double *theta);
void bbvi_model_unconstrain(const bbvi_model *m, int S, const double *theta,
                            double *zeta);
/* theta = T(zeta), elementwise by coordinate d = i % D. */
void bbvi_constrain(int D, const double *lower, const double *upper, int S,
                    const double *zeta, double *theta);
void bbvi_unconstrain(int D, const double *lower, const double *upper, int S,
                      const double *theta, double *zeta);

/* ------------------------------------------------------------------------ */
/* Variational families q(z; lambda) on the unconstrained scale.             */
/* ------------------------------------------------------------------------ */

/* Every method takes the family itself first (the low-rank family carries
   its rank and a per-fit Woodbury cache). D is the number of coordinates of
   z; "base draws" are the standard normal draws a family maps to z (n_base
   per point: D, or D + rank for low-rank). Nothing here is of size D x D
   except in the full-rank family. */
typedef struct bbvi_family bbvi_family;
struct bbvi_family {
    const char *name;
    int rank;            /* low-rank only */
    void *ws;            /* per-fit scratch, or NULL */
    int (*n_lambda)(const bbvi_family *f, int D);
    int (*n_base)(const bbvi_family *f, int D);
    /* lambda from a mean and a per-coordinate log sd */
    void (*init)(const bbvi_family *f, int D, const double *mean,
                 const double *log_sd, double *lambda);
    /* base draws eps (n_base x S), from R's RNG; caller holds GetRNGstate */
    void (*draw_base)(const bbvi_family *f, int D, int S, double *eps);
    /* z = T(eps; lambda), D x S */
    void (*reparam)(const bbvi_family *f, int D, const double *lambda, int S,
                    const double *eps, double *z);
    /* log q(z) at z = T(eps; lambda) */
    double (*log_q)(const bbvi_family *f, int D, const double *lambda,
                    const double *eps);
    /* h = grad_lambda log q(z) at z = T(eps; lambda), length n_lambda */
    void (*score)(const bbvi_family *f, int D, const double *lambda,
                  const double *eps, double *h);
    double (*entropy)(const bbvi_family *f, int D, const double *lambda);
    void (*entropy_grad)(const bbvi_family *f, int D, const double *lambda,
                         double *g);
    /* glambda += (dz/dlambda)' gz at eps: chain rule of the reparam map */
    void (*reparam_grad)(const bbvi_family *f, int D, const double *lambda,
                         const double *eps, const double *gz, double *glambda);
    /* marginal means and sds of q, O(D) storage */
    void (*marginals)(const bbvi_family *f, int D, const double *lambda,
                      double *mean, double *sd);
    /* push q forward through z -> shift + P z, in place; P is lower
       triangular (D x D, column-major) with a positive diagonal; only the
       full-rank family accepts a non-diagonal P */
    void (*affine)(const bbvi_family *f, int D, double *lambda,
                   const double *P, const double *shift);
    /* the same for a diagonal P = diag(scale): O(D) */
    void (*affine_diag)(const bbvi_family *f, int D, double *lambda,
                        const double *scale, const double *shift);
    /* q as an R list: family, mean and the family's own parameters */
    SEXP (*to_sexp)(const bbvi_family *f, int D, const double *lambda);
};

extern const bbvi_family bbvi_family_meanfield;
extern const bbvi_family bbvi_family_fullrank;
/* by name ("meanfield", "fullrank", "lowrank" with its rank), for D
   coordinates */
const bbvi_family *bbvi_family_make(const char *name, int rank, int D);
const bbvi_family *bbvi_family_by_name(const char *name);   /* not low-rank */
/* q as a product of blocks (qblocks.c), itself a family: n blocks named
   names[j] with ranks[j] over dims[j] consecutive coordinates */
const bbvi_family *bbvi_family_product(int n, const char **names,
                                       const int *ranks, const int *dims, int D);
/* from a .Call control list: `blocks`, or one block of `family`/`rank` */
const bbvi_family *bbvi_family_from_control(SEXP control, int D);
int bbvi_family_is_fullrank(const bbvi_family *f);
int bbvi_family_is_meanfield(const bbvi_family *f);
/* a low-rank family's starting B (D x rank, in units of the starting sds) */
void bbvi_family_set_start(const bbvi_family *f, const double *B0);
/* The block layout of q: block j's family, its coordinates z[z0 .. z0 +
   dim), lambda slice [k0, k0 + K) and base-draw offset e0. A family that is
   not a product is one block: f itself, offsets 0, dim = K = -1 ("all"). */
int bbvi_family_n_blocks(const bbvi_family *f);
const bbvi_family *bbvi_family_block(const bbvi_family *f, int j, int *z0,
                                     int *dim, int *k0, int *K, int *e0);
/* Families on the constrained (natural) scale (families_ext.c): "gamma",
   "beta" and "categorical". reparam_grad is NULL for them (score only); a
   product skips such blocks in its reparam_grad, and
   bbvi_family_score_mask() marks their lambda entries. A categorical
   coordinate takes the values lo[d] .. lo[d] + n[d] - 1, 2 <= n[d] <=
   BBVI_MAX_CATEGORIES. */
#define BBVI_MAX_CATEGORIES 1000
int bbvi_family_is_natural(const char *name);
const bbvi_family *bbvi_family_natural(const char *name);
const bbvi_family *bbvi_family_categorical(int D, const int *lo, const int *n);
/* mask[k] = 1 for the lambda entries (K) that need the score gradient
   (blocks without reparam_grad); returns how many there are */
int bbvi_family_score_mask(const bbvi_family *f, int D, int *mask);
int bbvi_categorical_coord(const bbvi_family *f, int d, int *lo, int *nv, int *k0);
int bbvi_family_categorical_coords(const bbvi_family *f, int D, int *zd,
                                   int *lo, int *nv, int *koff);
/* The conditional Gaussian block (families_ext.c, family "given"): a
   discrete g of p coordinates and a continuous b of p, q(b_j | g_j) one
   Gaussian per value of g_j; its 2p coordinates are g then b when gfirst,
   else b then g. Its logits take the score gradient, the Gaussians' m and
   log s the pathwise one. bbvi_family_cond_value(): for enumerating the
   discrete coordinate zd of q at value index v, the coordinate zb of its
   partner b_j, b_j's value at the draw's base draws eps (a whole draw's)
   and log s_{j,v}; 0 when zd has no partner. */
const bbvi_family *bbvi_family_cond(int p, const int *lo, const int *n, int gfirst);
int bbvi_cond_coord(const bbvi_family *f, int j, int *zoff, int *lo, int *nv, int *k0);
int bbvi_cond_n_logits(const bbvi_family *f);
int bbvi_cond_value(const bbvi_family *f, int gzoff, int v, const double *lambda,
                    const double *eps, int *bzoff, double *b, double *log_s);
int bbvi_family_cond_value(const bbvi_family *f, int zd, int v, const double *lambda,
                           const double *eps, int *zb, double *b, double *log_s);

/* ------------------------------------------------------------------------ */
/* Gradient estimators of the ELBO.                                          */
/* ------------------------------------------------------------------------ */

typedef struct {
    const bbvi_family *fam;
    bbvi_model *model;
    int D, K, S;         /* dims of z, of lambda; draws per iteration */
    int NB;              /* base draws per point (family's n_base) */
    double *eps, *z;     /* NB x S; D x S */
    double *lp, *gz;     /* S; D x S */
    double *h, *f;       /* K x S: score and score x weight, per draw */
    double *work;        /* K */
    int n_finite;        /* draws with a finite log density, last call */
    int use_cv;          /* score estimator: apply control variates */
    int fixed_base;      /* 1: keep the current eps (common random numbers,
                            the caller fills or keeps it), 0: fresh draws */
    int *score_mask;     /* mixed estimator: K flags, 1 = score gradient */
    double *work2;       /* K */
    double *wt;          /* S: the score weights log p - log q, packed */
    int *used;           /* S: the draws behind the packed ones */
    /* categorical coordinates whose gradient is computed by enumerating
       their values (bbvi_estimator_enumerate), or n_cat = 0 */
    int n_cat, *cat_zd, *cat_lo, *cat_nv, *cat_k;
    double *zalt, *lpalt, *pcat;
    double n_extra;      /* log-density evaluations beyond S, last call */
    /* optional fixed affine preconditioner: q lives on z with
       zeta = shift + P z, so that the optimiser works on a problem of unit
       scale (and, with a full P, unit correlation). P is either dense
       (D x D lower triangular, full-rank) or diagonal (Pdiag, D): never
       both. */
    const double *P, *Pdiag, *shift;   /* or NULL */
    double *zs;                /* scratch D x S: shift + P z */
    double log_det_P;          /* the Jacobian of the map */
    void *rb;                  /* Rao-Blackwellized score: its workspace */
    /* score estimator, mean-field Gaussian q: a second control variate
       from the quadratic -z' Hz z / 2 (Hz: D x D, log p's negative
       Hessian at the mode in z's coordinates, the mode at z = 0), whose
       expectation under q is known (bbvi_estimator_set_quadratic); NULL:
       none. u: its per-draw terms, K x S. */
    const double *quad;
    double *u;
} bbvi_estimator_ws;

void bbvi_estimator_ws_init(bbvi_estimator_ws *w, const bbvi_family *fam,
                            bbvi_model *m, int S);
void bbvi_estimator_set_precond(bbvi_estimator_ws *w, const double *P,
                                const double *shift);
void bbvi_estimator_set_precond_diag(bbvi_estimator_ws *w, const double *scale,
                                     const double *shift);
/* the quadratic control variate of the score estimator (mean-field q only;
   see quad above); returns 0, setting nothing, for other families */
int bbvi_estimator_set_quadratic(bbvi_estimator_ws *w, const double *Hz);
/* Enumerate the values of every categorical coordinate of q in the
   gradient: exact in that coordinate given the other coordinates' draws
   (Rao-Blackwellized), at the cost of (number of values) x S more
   evaluations of the log density per coordinate. */
void bbvi_estimator_enumerate(bbvi_estimator_ws *w);
/* one categorical coordinate's enumeration gradient from its values' log
   densities (estimators.c; see there), and log p at given points */
void bbvi_enum_grad(int nv, const double *l, int n, const double *lpv,
                    double *p, double *g, double *terms, int tstride);
void bbvi_estimator_eval_points(bbvi_estimator_ws *w, const double *zz, int n,
                                double *lp);
/* Both estimators: draw S points, fill grad (K), return the ELBO estimate
   (NaN when no draw had a finite log density). Non-finite draws are left out. */
typedef double (*bbvi_estimator_fn)(bbvi_estimator_ws *w, const double *lambda,
                                    double *grad);
double bbvi_grad_score(bbvi_estimator_ws *w, const double *lambda, double *grad);
double bbvi_grad_reparam(bbvi_estimator_ws *w, const double *lambda,
                         double *grad);
/* draw S points from q (fresh or fixed base draws) and evaluate log p at
   them (w->lp; gz when not NULL), through the preconditioner */
void bbvi_estimator_draw_eval(bbvi_estimator_ws *w, const double *lambda,
                              double *gz);
/* The score estimate from n draws' scores h and weighted scores f (K x n)
   for the lambda entries with mask[k] (all when mask is NULL): the mean of
   f - a_k h, a_k a leave-one-out control variate (estimators.c); terms,
   when not NULL, gets the per-draw terms f - a_k h (K x n). */
void bbvi_score_combine(int n, int K, const double *h, const double *f,
                        const int *mask, int use_cv, double *grad, double *terms);
/* Rao-Blackwellized score estimator (raoblackwell.c): each block of q
   weighs its score by the factors of log p that touch it */
double bbvi_grad_rb(bbvi_estimator_ws *w, const double *lambda, double *grad);
/* the mixed estimator with Rao-Blackwellized score entries (needs
   bbvi_rb_setup() and w->score_mask) */
double bbvi_grad_rb_mixed(bbvi_estimator_ws *w, const double *lambda, double *grad);
/* set up the Rao-Blackwellized workspace when the target is factorised and
   control does not say rao_blackwell = 0; returns whether it did */
int bbvi_rb_setup(bbvi_estimator_ws *w, SEXP control);
/* the score estimator for this target and control: bbvi_grad_rb (its
   workspace set up) when the target is factorised and control's
   `rao_blackwell` is not 0, else bbvi_grad_score */
bbvi_estimator_fn bbvi_score_estimator(bbvi_estimator_ws *w, SEXP control);
/* pathwise for the lambda entries of blocks with a reparam_grad, score
   (with control variates) for the entries in w->score_mask; needs the
   target's gradient (zeros at coordinates of score-only blocks will do) */
double bbvi_grad_mixed(bbvi_estimator_ws *w, const double *lambda, double *grad);

/* ------------------------------------------------------------------------ */
/* Step-size rules (gradient ascent).                                        */
/* ------------------------------------------------------------------------ */

enum { BBVI_ADAGRAD = 0, BBVI_ADAM = 1 };
typedef struct {
    int type, K, t;
    double eta;
    double *m1, *m2;     /* first/second moment accumulators, K */
    double b2;           /* Adam's second-moment decay (0.999 unless set) */
} bbvi_optim;

void bbvi_optim_init(bbvi_optim *o, int type, int K, double eta);
void bbvi_optim_reset(bbvi_optim *o);
void bbvi_optim_step(bbvi_optim *o, double *lambda, const double *grad);
/* how many coordinates' steps a stale second moment has frozen, given the
   last window's mean squared gradient (ms, K; see optimisers.c) */
int bbvi_optim_stale(const bbvi_optim *o, const double *ms);

/* L-BFGS curvature memory (lbfgs.c): a ring of cnt <= m pairs (s, y) of
   length n, the oldest at `head`; scratch from R_alloc. */
typedef struct {
    int n, m, cnt, head;
    double *S, *Y, *rho, *alpha, gamma;   /* gamma: H0 = gamma I */
    /* H0 given instead (v <- H0 v in place), e.g. from the Laplace
       Hessian; NULL: gamma I */
    void (*h0)(const void *ctx, double *v);
    const void *h0_ctx;
} bbvi_lbfgs;

void bbvi_lbfgs_init(bbvi_lbfgs *L, int n, int m);
void bbvi_lbfgs_forget(bbvi_lbfgs *L);
int bbvi_lbfgs_push(bbvi_lbfgs *L, const double *x0, const double *x1,
                    const double *g0, const double *g1);
void bbvi_lbfgs_direction(const bbvi_lbfgs *L, const double *g, double *d);
double bbvi_dot(int n, const double *a, const double *b);

/* ------------------------------------------------------------------------ */
/* Small shared helpers (utils.c).                                           */
/* ------------------------------------------------------------------------ */

SEXP bbvi_list_get(SEXP list, const char *name);   /* R_NilValue if absent */
/* required entries (R holds every default): an internal error if absent */
int bbvi_need_int(SEXP list, const char *name);
double bbvi_need_double(SEXP list, const char *name);
double bbvi_log1pexp(double x);   /* log(1 + exp(x)) without overflow */
/* lower Cholesky factor L of the n x n symmetric A (column-major; only the
   lower triangle is read); 1 on success, 0 if A is not positive definite */
int bbvi_chol(int n, const double *A, double *L);
/* x <- (L L')^-1 x for the Cholesky factor L of bbvi_chol */
void bbvi_chol_solve(int n, const double *L, double *x);

/* Stale per-block sums of an incremental (SAG-style) Newton fit over row
   blocks: each block's share, from its last visit, of a dim x dim matrix
   (Hb), a dim-vector (cb) and a scalar (eb), and their totals (H, c, ell).
   A visit takes block b's share out (bbvi_block_sums_take_out), writes the
   new one into its slots, and puts it back (bbvi_block_sums_put_back).
   Used by the GLM minibatches (glm_quad.c) and the custom-model ones
   (minibatch.c). Memory from R_alloc, zeroed. */
typedef struct {
    int nb, dim;
    double *Hb, *cb, *eb;
    int *seen;
    double *H, *c, ell;
    int rows_seen;            /* rows of the blocks visited at least once */
} bbvi_block_sums;
void bbvi_block_sums_init(bbvi_block_sums *s, int nb, int dim);
/* eps (D x M, M even): its first M / 2 columns standard normal draws;
   adds their negatives and whitens (whiten = 1) or rescales each row to
   second moment 1 (src/saa.c) */
void bbvi_balance_draws(int D, int M, double *eps, int whiten);
void bbvi_block_sums_take_out(bbvi_block_sums *s, int b);
void bbvi_block_sums_put_back(bbvi_block_sums *s, int b, int rows);

/* What a VI run returns to R (vi.c), for the stochastic and the fixed-draw
   paths alike: answer and last are lambda (length K) on the zeta scale;
   grad_max and lbfgs_code are the fixed-draw path's (NA otherwise). */
typedef struct {
    const double *answer, *last;
    int K;
    const double *trace;
    int n_trace, converged, iterations, restarts;
    /* why the run ended, as R reads it: status "ok" or the failure
       ("diverged", "no_finite", "no_finite_start"); stop "converged",
       "max_iter_moving", "max_iter_noisy", "outside", "unbounded", "frozen"
       or "max_iter_far" (R/bbvi.R
       stop_reasons words them) */
    const char *status, *stop;
    double eta, dropped_draws, n_logp, n_grad, grad_max;
    int lbfgs_code;
    double n_logp_enum;   /* of n_logp, those at enumerated discrete values
                             (0 where nothing is enumerated) */
    int unbounded;        /* stop "unbounded": the coordinate (1-based) whose
                             sd passed BBVI_SD_UNBOUNDED; 0 otherwise */
    double dist_left;     /* stop "max_iter_far": the distance left to the
                             optimum that the last check estimated (q-sds);
                             0 otherwise */
} bbvi_vi_result;

/* A Gaussian q whose marginal sd passes this many times the run's unit (the
   start's scale: the Laplace sds, or init_sd) is running away along a
   direction the log-joint does not bound (an improper posterior): the ELBO
   rises without limit as the sd grows, and long before the sd overflows
   its draws turn the other coordinates' estimates to noise. */
#define BBVI_SD_UNBOUNDED 1e10
/* the first coordinate (1-based) of q's Gaussian blocks (in the run's
   units) whose sd passes BBVI_SD_UNBOUNDED, else 0; natural-scale and
   conditional blocks are not watched. scratch: 2 D doubles */
int bbvi_q_unbounded(const struct bbvi_family *fam, int D, const double *lambda,
                     double *scratch);
SEXP bbvi_vi_result_sexp(const struct bbvi_family *fam, int D, const bbvi_vi_result *r);

/* R's RNG. C code that draws holds R's generator state (GetRNGstate) for a
   whole loop; every call back into R must lend it back, or a log-joint that
   draws (runif, sample.int) would start from the stale .Random.seed and the
   C loop would then reuse the same uniforms. Use these, not Get/PutRNGstate:
   - bbvi_rng_hold() / bbvi_rng_release(): around a sampling loop;
   - bbvi_rng_lend() before evaluating R code: PutRNGstate if held, returns
     whether it did; bbvi_rng_reclaim(lent) after: GetRNGstate if lent.
   Outside a hold, lend does nothing: a caller that draws nothing (logdens)
   must not write its stale copy over a .Random.seed R code may have
   assigned. bbvi_rng_not_held() clears the flag; bbvi_target_from_sexp()
   calls it, so an R error or an interrupt (longjmp) inside a hold cannot
   leave it set for the next call: every entry point builds its target
   before it holds the RNG. While lent the flag is clear, so an entry point
   called from inside a callback (nested) sees the RNG as not held. */
void bbvi_rng_hold(void);
void bbvi_rng_release(void);
void bbvi_rng_not_held(void);
int bbvi_rng_is_held(void);
int bbvi_rng_lend(void);
void bbvi_rng_reclaim(int lent);

#endif
