/* targets.c: log-joint targets. An R function called once per draw, an R
   function called once per batch of draws (vectorized), or a compiled C
   function with the bbvi_native_logjoint signature. */
#include "bbvi.h"
#include <string.h>

/* ---- R callbacks --------------------------------------------------------- */

typedef struct {
    /* fn(theta), gr(theta), built once on the R side. With `fn_value` /
       `gr_value` (R/model.R) fn and gr are the user's functions behind
       their error handler only, and a result of a plain shape is read here
       as it is; any other goes through fn_value(val, n) / gr_value(g, n),
       the R checks, which return the checked value or raise the user-facing
       error. Without them (minibatch blocks) fn and gr return checked
       values and raise their errors themselves. */
    SEXP fn_call, gr_call, fn_value, gr_value;
    /* what fn and gr return after an error in the user's function, and the
       calls that then raise it naming the function */
    SEXP caught, fn_rethrow, gr_rethrow;
    SEXP rho;
    int vectorized;
    int n_par;               /* parameters as the user declared them */
    const int *sizes;        /* scalar length of each */
    SEXP names;              /* their names */
    SEXP par_names;          /* the scalar parameters' names */
    int *perm;               /* scratch, max(D, n_par): see key_order() */
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

/* ---- the plain shapes, taken as they are -------------------------------- */

/* A double vector that no R method reads differently (no class) */
static int plain_double(SEXP x, R_xlen_t n)
{
    return TYPEOF(x) == REALSXP && !OBJECT(x) && XLENGTH(x) == n;
}

static int no_pos_inf(SEXP x)
{
    const double *v = REAL(x);
    R_xlen_t n = XLENGTH(x);
    for (R_xlen_t i = 0; i < n; i++)
        if (v[i] == R_PosInf) return 0;
    return 1;
}

/* Log-joint values that the R checks (fn_value) would return unchanged: nb
   doubles, or for F factors values without names in factor order (an nb x
   F matrix when vectorized, F numbers per draw), none +Inf. */
static int plain_logjoint(const r_target *rt, SEXP val, int nb)
{
    int F = rt->n_factors;
    if (F == 0) return plain_double(val, nb) && no_pos_inf(val);
    if (!plain_double(val, (R_xlen_t) nb * F) ||
        !Rf_isNull(Rf_getAttrib(val, R_NamesSymbol)) ||
        !Rf_isNull(Rf_getAttrib(val, R_DimNamesSymbol)))
        return 0;
    SEXP dim = Rf_getAttrib(val, R_DimSymbol);
    int ok;
    if (!rt->vectorized) ok = Rf_isNull(dim);
    else if (Rf_isNull(dim)) ok = F == 1;
    else ok = Rf_length(dim) == 2 && INTEGER(dim)[0] == nb && INTEGER(dim)[1] == F;
    return ok && no_pos_inf(val);
}

/* Names checked against the expected ones (want, m distinct strings) as
   the R checks match them: 1 if keys holds exactly them, with *permuted = 0
   when in their order, else perm[k] = the position of want[k] in keys. The
   same cached CHARSXP is the same name; anything else (other names, the
   same name in another encoding) is left to the R checks, and so is a
   permutation of many names, whose search here is quadratic. */
#define PLAIN_MAX_PERMUTED 64
static int key_order(SEXP keys, SEXP want, int m, int *perm, int *permuted)
{
    if (TYPEOF(keys) != STRSXP || XLENGTH(keys) != m) return 0;
    *permuted = 0;
    for (int k = 0; k < m; k++)
        if (STRING_ELT(keys, k) != STRING_ELT(want, k)) *permuted = 1;
    if (!*permuted) return 1;
    if (m > PLAIN_MAX_PERMUTED) return 0;
    /* every wanted name found once: keys (of length m) is a permutation */
    for (int k = 0; k < m; k++) {
        SEXP w = STRING_ELT(want, k);
        int j = 0;
        while (j < m && STRING_ELT(keys, j) != w) j++;
        if (j == m) return 0;
        perm[k] = j;
    }
    return 1;
}

/* A gradient that the R checks (gr_value, flatten_gradient()) would read
   without change but for the order: nb x D doubles (names, if read there,
   the scalar parameters' names in any order), or a list of the
   parameters' gradients (no names, or exactly theirs in any order), each
   nb x size doubles. Its attribute "logjoint", if read (no factors), must
   be nb doubles, none +Inf. Anything else (other names, other types,
   discrete parameters left out, errors) is left to gr_value. On success
   *order is NULL (the given order) or rt->perm (see key_order()). */
static int plain_gradient(const r_target *rt, SEXP g, int nb, int D, const int **order)
{
    int permuted = 0;
    if (TYPEOF(g) == REALSXP) {
        if (!plain_double(g, (R_xlen_t) nb * D)) return 0;
        /* flatten_gradient() reads the column names of an nb x D matrix,
           the names of one draw's vector, nothing else */
        SEXP dim = Rf_getAttrib(g, R_DimSymbol), keys = R_NilValue;
        if (Rf_length(dim) == 2 && INTEGER(dim)[0] == nb && INTEGER(dim)[1] == D) {
            SEXP dn = Rf_getAttrib(g, R_DimNamesSymbol);
            if (!Rf_isNull(dn)) keys = VECTOR_ELT(dn, 1);
        } else if (nb == 1) {
            keys = Rf_getAttrib(g, R_NamesSymbol);
        }
        if (!Rf_isNull(keys) && !key_order(keys, rt->par_names, D, rt->perm, &permuted))
            return 0;
    } else if (TYPEOF(g) == VECSXP) {
        if (OBJECT(g) || XLENGTH(g) != rt->n_par) return 0;
        SEXP nm = Rf_getAttrib(g, R_NamesSymbol);
        if (!Rf_isNull(nm) && !key_order(nm, rt->names, rt->n_par, rt->perm, &permuted))
            return 0;
        for (int k = 0; k < rt->n_par; k++) {
            SEXP el = VECTOR_ELT(g, permuted ? rt->perm[k] : k);
            if (!plain_double(el, (R_xlen_t) nb * rt->sizes[k])) return 0;
        }
    } else {
        return 0;
    }
    *order = permuted ? rt->perm : NULL;
    if (rt->n_factors > 0) return 1;   /* the attribute is not read */
    SEXP lp = Rf_getAttrib(g, rt->lp_sym);
    return Rf_isNull(lp) || (plain_double(lp, nb) && no_pos_inf(lp));
}

/* Copy a gradient (plain, or checked by gr_value: an nb x D matrix) to
   grad, D x nb, draw by draw; order: see plain_gradient() */
static void copy_gradient(const r_target *rt, SEXP g, int nb, int D, const int *order,
                          double *grad)
{
    if (TYPEOF(g) == REALSXP) {
        const double *gv = REAL(g);
        for (int d = 0; d < D; d++) {
            const double *col = gv + (size_t) (order ? order[d] : d) * nb;
            for (int s = 0; s < nb; s++) grad[d + (size_t) s * D] = col[s];
        }
        return;
    }
    int off = 0;
    for (int k = 0; k < rt->n_par; k++) {
        int sz = rt->sizes[k];
        const double *e = REAL(VECTOR_ELT(g, order ? order[k] : k));
        for (int s = 0; s < nb; s++)
            for (int j = 0; j < sz; j++)
                grad[off + j + (size_t) s * D] = e[s + (size_t) j * nb];
        off += sz;
    }
}

/* value(x, nb): the R checks of a result that is not plain. Returns the
   checked value or raises the user-facing error. */
static SEXP r_checked_value(SEXP value_call, SEXP x, int nb, SEXP rho)
{
    /* a symbol or a call put in a call is evaluated there: quoted, the
       checks see the value the user's function returned */
    int quoted = TYPEOF(x) == SYMSXP || TYPEOF(x) == LANGSXP || TYPEOF(x) == PROMSXP;
    if (quoted) x = PROTECT(Rf_lang2(Rf_install("quote"), x));
    SETCADR(value_call, x);
    SETCADDR(value_call, Rf_ScalarInteger(nb));
    SEXP out = Rf_eval(value_call, rho);
    SETCADR(value_call, R_NilValue);
    if (quoted) UNPROTECT(1);
    return out;
}

/* Evaluate call(theta) and return its value as doubles of length n; the R
   side has already checked type and length with a user-facing message,
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

/* The log-joint's values at the nb draws in lst: nb * max(F, 1) doubles */
static SEXP r_logjoint(const r_target *rt, SEXP lst, int nb)
{
    R_xlen_t m = (R_xlen_t) nb * (rt->n_factors > 0 ? rt->n_factors : 1);
    if (Rf_isNull(rt->fn_value))
        return r_eval_checked(rt->fn_call, lst, rt->rho, m, "logjoint");
    SETCADR(rt->fn_call, lst);
    SEXP val = PROTECT(Rf_eval(rt->fn_call, rt->rho));
    if (val == rt->caught) {
        Rf_eval(rt->fn_rethrow, rt->rho);
        Rf_error("internal error: the log-joint's error was not raised");
    }
    if (!plain_logjoint(rt, val, nb)) {
        val = r_checked_value(rt->fn_value, val, nb, rt->rho);
        UNPROTECT(1);
        PROTECT(val);
        if (!Rf_isReal(val) || XLENGTH(val) != m)
            Rf_error("internal error: checked log-joint values are malformed");
    }
    UNPROTECT(1);
    return val;
}

/* The gradient at the nb draws in lst, copied to grad (D x nb). Returns the
   value that carries the log-joint values given with it, if any, as its
   attribute "logjoint" (checked). */
static SEXP r_gradient(const r_target *rt, SEXP lst, int nb, int D, double *grad)
{
    SEXP g;
    const int *order = NULL;
    if (Rf_isNull(rt->gr_value)) {
        g = PROTECT(r_eval_checked(rt->gr_call, lst, rt->rho, (R_xlen_t) nb * D, "gradient"));
    } else {
        SETCADR(rt->gr_call, lst);
        g = PROTECT(Rf_eval(rt->gr_call, rt->rho));
        if (g == rt->caught) {
            Rf_eval(rt->gr_rethrow, rt->rho);
            Rf_error("internal error: the gradient's error was not raised");
        }
        if (!plain_gradient(rt, g, nb, D, &order)) {
            order = NULL;
            g = r_checked_value(rt->gr_value, g, nb, rt->rho);
            UNPROTECT(1);
            PROTECT(g);
            if (!Rf_isReal(g) || XLENGTH(g) != (R_xlen_t) nb * D)
                Rf_error("internal error: the checked gradient is malformed");
        }
    }
    copy_gradient(rt, g, nb, D, order, grad);
    UNPROTECT(1);
    return g;
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
        /* the gradient first: when it also returns log p (checked: plain,
           or by gr_value), the log-joint is not called at all */
        SEXP g = PROTECT(grad ? r_gradient(rt, lst, nb, D, grad + (size_t) s0 * D)
                              : R_NilValue);
        SEXP val = R_NilValue;
        if (grad && F == 0) {
            val = Rf_getAttrib(g, rt->lp_sym);
            if (!Rf_isNull(val) && (!Rf_isReal(val) || XLENGTH(val) != nb))
                Rf_error("internal error: the gradient's log-joint values are malformed");
        }
        if (Rf_isNull(val)) val = r_logjoint(rt, lst, nb);
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
    rt->fn_value = bbvi_list_get(spec, "fn_value_call");
    rt->gr_value = bbvi_list_get(spec, "gr_value_call");
    int raw = !Rf_isNull(rt->fn_value);
    rt->caught = bbvi_list_get(spec, "caught");
    rt->fn_rethrow = bbvi_list_get(spec, "lj_rethrow_call");
    rt->gr_rethrow = bbvi_list_get(spec, "gr_rethrow_call");
    rt->fn_call = bbvi_list_get(spec, raw ? "lj_call" : "fn_call");
    rt->gr_call = bbvi_list_get(spec, raw ? "gr_user_call" : "gr_call");
    if (TYPEOF(rt->fn_call) != LANGSXP ||
        (raw && (TYPEOF(rt->fn_value) != LANGSXP || !Rf_isEnvironment(rt->caught) ||
                 TYPEOF(rt->fn_rethrow) != LANGSXP)) ||
        (raw && TYPEOF(rt->gr_call) == LANGSXP &&
         (TYPEOF(rt->gr_value) != LANGSXP || TYPEOF(rt->gr_rethrow) != LANGSXP)))
        Rf_error("internal error: target `fn_call` is not a call");
    if (!Rf_isInteger(sizes))
        Rf_error("internal error: target `sizes` must be integer");
    rt->rho = bbvi_list_get(spec, "rho");
    if (!Rf_isEnvironment(rt->rho)) rt->rho = R_GlobalEnv;
    rt->vectorized = bbvi_need_int(spec, "vectorized");
    rt->n_par = Rf_length(sizes);
    rt->sizes = INTEGER(sizes);
    rt->names = bbvi_list_get(spec, "names");
    rt->par_names = bbvi_list_get(spec, "par_names");
    rt->lp_sym = Rf_install("logjoint");
    int tot = 0;
    for (int k = 0; k < rt->n_par; k++) tot += rt->sizes[k];
    if (tot != dim)
        Rf_error("internal error: parameter sizes add to %d, not %d", tot, dim);
    if (raw && (!Rf_isString(rt->names) || XLENGTH(rt->names) != rt->n_par ||
                !Rf_isString(rt->par_names) || XLENGTH(rt->par_names) != dim))
        Rf_error("internal error: target `names` / `par_names` do not match `sizes`");
    rt->perm = (int *) R_alloc(dim > rt->n_par ? dim : rt->n_par, sizeof(int));
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
    out->fd_grad = 0;
    SEXP type = bbvi_list_get(spec, "type");
    if (!Rf_isString(type) || XLENGTH(type) != 1)
        Rf_error("internal error: target spec has no `type`");
    const char *ty = CHAR(STRING_ELT(type, 0));
    if (strcmp(ty, "r") == 0) r_target_init(spec, dim, out);
    else if (strcmp(ty, "native") == 0) native_target_init(spec, dim, out);
    else if (strcmp(ty, "glm") == 0) bbvi_glm_target_init(spec, dim, max_batch, out);
    else Rf_error("internal error: unknown target type '%s'", ty);
    /* `gradient = "numeric"`: the model layer differentiates log p */
    SEXP fd = bbvi_list_get(spec, "fd_gradient");
    if (!out->has_grad && !Rf_isNull(fd) && Rf_asLogical(fd) == TRUE) {
        if (out->n_factors > 0)
            Rf_error("internal error: a numeric gradient with `factors`");
        out->has_grad = 1;
        out->fd_grad = 1;
    }
}
