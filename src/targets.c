/* targets.c: log-joint targets. An R function called once per draw, an R
   function called once per batch of draws (vectorized), or a compiled C
   function with the bbvi_native_logjoint signature. */
#include "bbvi.h"
#include <string.h>

/* ---- R callbacks --------------------------------------------------------- */

typedef struct {
    SEXP fn_call, gr_call;   /* calls fn(theta), gr(theta), built once */
    SEXP rho;
    int vectorized;
    int n_par;               /* parameters as the user declared them */
    const int *sizes;        /* scalar length of each */
    SEXP names;              /* their names */
    int n_factors;           /* 0: logjoint returns one value per draw */
    SEXP lp_sym;             /* the gradient's optional attribute "logjoint" */
} r_target;

/* theta as the user sees it: a named list, one element per parameter. With
   several draws (vectorized) scalars become length-S vectors and vectors
   S x size matrices. */
static SEXP r_theta_list(const r_target *rt, int D, int S, const double *theta)
{
    SEXP lst = PROTECT(Rf_allocVector(VECSXP, rt->n_par));
    int off = 0;
    for (int k = 0; k < rt->n_par; k++) {
        int sz = rt->sizes[k];
        SEXP el;
        if (!rt->vectorized) {
            el = PROTECT(Rf_allocVector(REALSXP, sz));
            memcpy(REAL(el), theta + off, sizeof(double) * sz);
        } else {
            el = PROTECT(sz == 1 ? Rf_allocVector(REALSXP, S)
                                 : Rf_allocMatrix(REALSXP, S, sz));
            double *e = REAL(el);
            for (int s = 0; s < S; s++)
                for (int j = 0; j < sz; j++)
                    e[s + (size_t) j * S] = theta[off + j + (size_t) s * D];
        }
        SET_VECTOR_ELT(lst, k, el);
        UNPROTECT(1);
        off += sz;
    }
    Rf_setAttrib(lst, R_NamesSymbol, rt->names);
    UNPROTECT(1);
    return lst;
}

/* Evaluate call(theta) and return its value as doubles of length n; the R
   wrapper has already checked type and length with a user-facing message,
   these checks only guard the C side. */
static SEXP r_eval_checked(SEXP call, SEXP theta, SEXP rho, R_xlen_t n,
                           const char *what)
{
    SETCADR(call, theta);
    /* R's RNG is lent for the whole batch by r_eval() */
    SEXP val = PROTECT(Rf_eval(call, rho));
    if (!Rf_isReal(val)) val = Rf_coerceVector(val, REALSXP);
    UNPROTECT(1);
    PROTECT(val);
    if (XLENGTH(val) != n)
        Rf_error("`%s` returned %lld values where %lld were expected", what,
                 (long long) XLENGTH(val), (long long) n);
    UNPROTECT(1);
    return val;
}

static void r_eval(bbvi_target *t, int S, const double *theta, double *lp,
                   double *grad)
{
    r_target *rt = (r_target *) t->ctx;
    int D = t->dim;
    int nb = rt->vectorized ? S : 1;   /* draws per R call */
    /* the user's functions may draw from R's RNG: they get the stream as
       the sampler left it, and the sampler continues from where they left
       it (see bbvi.h). Lent for the whole batch: no C draw happens inside. */
    int lent = bbvi_rng_lend();
    int F = rt->n_factors;
    for (int s0 = 0; s0 < S; s0 += nb) {
        const double *th = theta + (size_t) s0 * D;
        SEXP lst = PROTECT(r_theta_list(rt, D, nb, th));
        /* the gradient first: when it also returns log p (the R wrapper
           has checked its attribute "logjoint"), the log-joint is not
           called at all */
        SEXP g = R_NilValue, val = R_NilValue;
        if (grad) {
            g = r_eval_checked(rt->gr_call, lst, rt->rho, (R_xlen_t) nb * D, "gradient");
            const double *gv = REAL(g);
            for (int s = 0; s < nb; s++)
                for (int d = 0; d < D; d++)
                    grad[d + (size_t) (s0 + s) * D] = gv[s + (size_t) d * nb];
            if (F == 0) val = Rf_getAttrib(g, rt->lp_sym);
            if (!Rf_isNull(val) && (!Rf_isReal(val) || XLENGTH(val) != nb))
                Rf_error("internal error: the gradient's log-joint values are malformed");
        }
        PROTECT(g);
        if (Rf_isNull(val))
            val = r_eval_checked(rt->fn_call, lst, rt->rho,
                                 (R_xlen_t) nb * (F > 0 ? F : 1), "logjoint");
        PROTECT(val);
        if (F == 0) {
            memcpy(lp + s0, REAL(val), sizeof(double) * nb);
        } else {
            /* nb x F terms (the R wrapper has put them in factor order):
               log p is their sum */
            const double *v = REAL(val);
            for (int s = 0; s < nb; s++) {
                double a = 0.0;
                for (int f = 0; f < F; f++) {
                    double x = v[s + (size_t) f * nb];
                    a += x;
                    if (t->lpf) t->lpf[f + (size_t) (s0 + s) * F] = x;
                }
                lp[s0 + s] = a;
            }
        }
        UNPROTECT(3);
    }
    /* the calls keep a reference to the last theta: drop it */
    SETCADR(rt->fn_call, R_NilValue);
    if (grad) SETCADR(rt->gr_call, R_NilValue);
    bbvi_rng_reclaim(lent);
}

static void r_target_init(SEXP spec, int dim, bbvi_target *out)
{
    r_target *rt = (r_target *) R_alloc(1, sizeof(r_target));
    SEXP sizes = bbvi_list_get(spec, "sizes");
    /* The calls fn(NULL) and gr(NULL) are built on the R side and live in
       spec, which the caller keeps protected: no preserve/release to leak
       when a callback errors. The argument slot is poked per evaluation. */
    rt->fn_call = bbvi_list_get(spec, "fn_call");
    rt->gr_call = bbvi_list_get(spec, "gr_call");
    if (TYPEOF(rt->fn_call) != LANGSXP)
        Rf_error("internal error: target `fn_call` is not a call");
    if (!Rf_isInteger(sizes))
        Rf_error("internal error: target `sizes` must be integer");
    rt->rho = bbvi_list_get(spec, "rho");
    if (!Rf_isEnvironment(rt->rho)) rt->rho = R_GlobalEnv;
    rt->vectorized = bbvi_need_int(spec, "vectorized");
    rt->n_par = Rf_length(sizes);
    rt->sizes = INTEGER(sizes);
    rt->names = bbvi_list_get(spec, "names");
    rt->lp_sym = Rf_install("logjoint");
    int tot = 0;
    for (int k = 0; k < rt->n_par; k++) tot += rt->sizes[k];
    if (tot != dim)
        Rf_error("internal error: parameter sizes add to %d, not %d", tot, dim);
    out->dim = dim;
    out->has_grad = TYPEOF(rt->gr_call) == LANGSXP;
    out->eval = r_eval;
    out->ctx = rt;
    /* optional factors: the parameters of factor f are factor_pars[
       factor_start[f] .. factor_start[f + 1]) (see bbvi.h) */
    SEXP fs = bbvi_list_get(spec, "factor_start"), fp = bbvi_list_get(spec, "factor_pars");
    rt->n_factors = 0;
    if (!Rf_isNull(fs)) {
        int F = Rf_length(fs) - 1;
        if (!Rf_isInteger(fs) || !Rf_isInteger(fp) || F < 1 || INTEGER(fs)[0] != 0 ||
            INTEGER(fs)[F] != Rf_length(fp))
            Rf_error("internal error: bad `factor_start` / `factor_pars`");
        const int *st = INTEGER(fs), *pp = INTEGER(fp);
        for (int f = 0; f < F; f++)
            for (int i = st[f]; i < st[f + 1]; i++)
                if (pp[i] < 0 || pp[i] >= rt->n_par || (i > st[f] && pp[i] <= pp[i - 1]))
                    Rf_error("internal error: `factor_pars` must be increasing parameter indices");
        rt->n_factors = F;
        out->n_factors = F;
        out->factor_start = st;
        out->factor_pars = pp;
    }
}

/* ---- compiled log-joints ------------------------------------------------- */

typedef struct {
    bbvi_native_logjoint fn;
    void *data;
} native_target;

static void native_eval(bbvi_target *t, int S, const double *theta,
                        double *lp, double *grad)
{
    native_target *nt = (native_target *) t->ctx;
    int D = t->dim;
    for (int s = 0; s < S; s++)
        lp[s] = nt->fn(D, theta + (size_t) s * D,
                       grad ? grad + (size_t) s * D : NULL, nt->data);
}

static void native_target_init(SEXP spec, int dim, bbvi_target *out)
{
    SEXP ptr = bbvi_list_get(spec, "fn");
    if (TYPEOF(ptr) != EXTPTRSXP)
        Rf_error("internal error: native target `fn` is not an external pointer");
    native_target *nt = (native_target *) R_alloc(1, sizeof(native_target));
    nt->fn = (bbvi_native_logjoint) R_ExternalPtrAddrFn(ptr);
    if (!nt->fn) Rf_error("the compiled log-joint's address is NULL (was its DLL unloaded?)");
    /* the data object is passed as a SEXP in the void pointer (see ?native_logjoint) */
    nt->data = (void *) bbvi_list_get(spec, "data");
    out->dim = dim;
    out->has_grad = bbvi_need_int(spec, "has_grad");
    out->eval = native_eval;
    out->ctx = nt;
}

void bbvi_target_from_sexp(SEXP spec, int dim, int max_batch, bbvi_target *out)
{
    /* every entry point that evaluates a target comes here before it holds
       R's RNG: a hold that an error or interrupt unwound is forgotten */
    bbvi_rng_not_held();
    /* no factors unless the target kind says so */
    out->n_factors = 0;
    out->factor_start = out->factor_pars = NULL;
    out->lpf = NULL;
    SEXP type = bbvi_list_get(spec, "type");
    if (!Rf_isString(type) || XLENGTH(type) != 1)
        Rf_error("internal error: target spec has no `type`");
    const char *ty = CHAR(STRING_ELT(type, 0));
    if (strcmp(ty, "r") == 0) r_target_init(spec, dim, out);
    else if (strcmp(ty, "native") == 0) native_target_init(spec, dim, out);
    else if (strcmp(ty, "glm") == 0) bbvi_glm_target_init(spec, dim, max_batch, out);
    else Rf_error("internal error: unknown target type '%s'", ty);
}
