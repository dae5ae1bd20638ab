/* utils.c: small helpers shared by the .Call wrappers. */
#include "bbvi.h"
#include <string.h>
#include <math.h>

SEXP bbvi_list_get(SEXP list, const char *name)
{
    SEXP names = Rf_getAttrib(list, R_NamesSymbol);
    if (Rf_isNull(names)) return R_NilValue;
    R_xlen_t n = XLENGTH(list);
    for (R_xlen_t i = 0; i < n; i++)
        if (strcmp(CHAR(STRING_ELT(names, i)), name) == 0)
            return VECTOR_ELT(list, i);
    return R_NilValue;
}

/* Required entries: every default lives on the R side, so a missing one is
   an internal error, not a silent C-side default. */
static SEXP need(SEXP list, const char *name)
{
    SEXP x = bbvi_list_get(list, name);
    if (Rf_isNull(x) || XLENGTH(x) != 1 || !(Rf_isReal(x) || Rf_isInteger(x) || Rf_isLogical(x)))
        Rf_error("internal error: control needs `%s` (one number)", name);
    return x;
}

int bbvi_need_int(SEXP list, const char *name)
{
    int v = Rf_asInteger(need(list, name));
    if (v == NA_INTEGER) Rf_error("internal error: control `%s` is NA", name);
    return v;
}

double bbvi_need_double(SEXP list, const char *name)
{
    double v = Rf_asReal(need(list, name));
    if (ISNAN(v)) Rf_error("internal error: control `%s` is NA", name);
    return v;
}

double bbvi_log1pexp(double x)
{
    /* log(1 + e^x): exact branches keep precision at both tails */
    if (x > 35.0) return x;
    if (x > -35.0) return log1p(exp(x));
    return exp(x);
}

/* ---- R's RNG, held or lent (see bbvi.h) --------------------------------- */

static int rng_held = 0;   /* a GetRNGstate() is outstanding */

void bbvi_rng_hold(void)
{
    GetRNGstate();
    rng_held = 1;
}

void bbvi_rng_release(void)
{
    PutRNGstate();
    rng_held = 0;
}

void bbvi_rng_not_held(void)
{
    rng_held = 0;
}

int bbvi_rng_is_held(void)
{
    return rng_held;
}

int bbvi_rng_lend(void)
{
    if (!rng_held) return 0;
    PutRNGstate();
    rng_held = 0;
    return 1;
}

void bbvi_rng_reclaim(int lent)
{
    if (!lent) return;
    GetRNGstate();
    rng_held = 1;
}

#ifdef BBVI_CHECK_ALLOC
#undef R_alloc
/* Like R_alloc (freed when the .Call returns or an error unwinds it), but
   the buffer is the tail of a raw vector of more than 128 bytes and a
   multiple of 8, which R allocates with malloc of exactly its size; R_alloc
   itself adds slack at the end. The vector is chained onto R's R_alloc stack
   (vmaxget/vmaxset), kept reachable through its attribute slot as R_alloc's
   own entries are. Checked builds only. */
char *bbvi_check_alloc(size_t nelem, int eltsize)
{
    size_t bytes = nelem * (size_t) eltsize;
    size_t pad = 136 + (8 - bytes % 8) % 8;
    SEXP top = (SEXP) vmaxget();
    SEXP v = PROTECT(Rf_allocVector(RAWSXP, (R_xlen_t) (pad + bytes)));
    SET_ATTRIB(v, Rf_cons(top, R_NilValue));
    vmaxset(v);
    UNPROTECT(1);
    return (char *) RAW(v) + pad;
}
#endif

int bbvi_chol(int n, const double *A, double *L)
{
    memset(L, 0, sizeof(double) * n * n);
    for (int j = 0; j < n; j++) {
        double s = A[j + (size_t) j * n];
        for (int k = 0; k < j; k++) s -= L[j + (size_t) k * n] * L[j + (size_t) k * n];
        if (!(s > 0) || !R_FINITE(s)) return 0;
        s = sqrt(s);
        L[j + (size_t) j * n] = s;
        for (int i = j + 1; i < n; i++) {
            double a = A[i + (size_t) j * n];
            for (int k = 0; k < j; k++) a -= L[i + (size_t) k * n] * L[j + (size_t) k * n];
            L[i + (size_t) j * n] = a / s;
        }
    }
    return 1;
}

/* x <- (L L')^-1 x, L lower triangular (n x n, column-major): forward then
   back substitution */
void bbvi_chol_solve(int n, const double *L, double *x)
{
    for (int i = 0; i < n; i++) {
        double a = x[i];
        for (int k = 0; k < i; k++) a -= L[i + (size_t) k * n] * x[k];
        x[i] = a / L[i + (size_t) i * n];
    }
    for (int i = n - 1; i >= 0; i--) {
        double a = x[i];
        for (int k = i + 1; k < n; k++) a -= L[k + (size_t) i * n] * x[k];
        x[i] = a / L[i + (size_t) i * n];
    }
}

void bbvi_block_sums_init(bbvi_block_sums *s, int nb, int dim)
{
    size_t dd = (size_t) dim * dim;
    s->nb = nb;
    s->dim = dim;
    s->Hb = (double *) R_alloc((size_t) nb * dd, sizeof(double));
    s->cb = (double *) R_alloc((size_t) nb * dim, sizeof(double));
    s->eb = (double *) R_alloc(nb, sizeof(double));
    s->seen = (int *) R_alloc(nb, sizeof(int));
    s->H = (double *) R_alloc(dd, sizeof(double));
    s->c = (double *) R_alloc(dim, sizeof(double));
    memset(s->Hb, 0, sizeof(double) * nb * dd);
    memset(s->cb, 0, sizeof(double) * nb * dim);
    memset(s->eb, 0, sizeof(double) * nb);
    memset(s->seen, 0, sizeof(int) * nb);
    memset(s->H, 0, sizeof(double) * dd);
    memset(s->c, 0, sizeof(double) * dim);
    s->ell = 0.0;
    s->rows_seen = 0;
}

static void block_sums_add(bbvi_block_sums *s, int b, double sign)
{
    size_t dd = (size_t) s->dim * s->dim;
    const double *Hb = s->Hb + (size_t) b * dd, *cb = s->cb + (size_t) b * s->dim;
    for (size_t k = 0; k < dd; k++) s->H[k] += sign * Hb[k];
    for (int j = 0; j < s->dim; j++) s->c[j] += sign * cb[j];
    s->ell += sign * s->eb[b];
}

void bbvi_block_sums_take_out(bbvi_block_sums *s, int b)
{
    block_sums_add(s, b, -1.0);
}

void bbvi_block_sums_put_back(bbvi_block_sums *s, int b, int rows)
{
    block_sums_add(s, b, 1.0);
    if (!s->seen[b]) { s->seen[b] = 1; s->rows_seen += rows; }
}
