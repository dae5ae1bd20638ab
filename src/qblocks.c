/* qblocks.c: q as a product of blocks. Each block is one family over its
   own coordinates z[z0 .. z0 + dim), with its slice of lambda and of the
   base draws; the product is itself a bbvi_family (every method loops over
   the blocks), so the estimators, the optimiser and the loop do not know
   whether q has one block or many. A single-family fit is one block. */
#include "bbvi.h"
#include <string.h>

typedef struct {
    const bbvi_family *fam;
    int z0, dim;     /* coordinates z[z0 .. z0 + dim) */
    int k0, K;       /* its slice of lambda */
    int e0, nb;      /* its slice of a draw's base draws */
} bbvi_qblock;

typedef struct { int D, K, NB, n; bbvi_qblock *b; } bbvi_q;

#define Q(f) ((const bbvi_q *) (f)->ws)

static int pr_n_lambda(const bbvi_family *f, int D) { (void) D; return Q(f)->K; }
static int pr_n_base(const bbvi_family *f, int D) { (void) D; return Q(f)->NB; }

static void pr_init(const bbvi_family *f, int D, const double *mean,
                    const double *log_sd, double *lambda)
{
    const bbvi_q *q = Q(f);
    (void) D;
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        b->fam->init(b->fam, b->dim, mean + b->z0, log_sd + b->z0, lambda + b->k0);
    }
}

/* draw by draw, block by block: the same stream order as one family
   drawing all of a draw's base draws */
static void pr_draw_base(const bbvi_family *f, int D, int S, double *eps)
{
    const bbvi_q *q = Q(f);
    (void) D;
    for (int s = 0; s < S; s++)
        for (int j = 0; j < q->n; j++) {
            const bbvi_qblock *b = q->b + j;
            b->fam->draw_base(b->fam, b->dim, 1, eps + (size_t) s * q->NB + b->e0);
        }
}

static void pr_reparam(const bbvi_family *f, int D, const double *lambda,
                       int S, const double *eps, double *z)
{
    const bbvi_q *q = Q(f);
    if (q->n == 1) {   /* one block: its own (possibly vectorised) loop */
        q->b->fam->reparam(q->b->fam, D, lambda, S, eps, z);
        return;
    }
    for (int s = 0; s < S; s++)
        for (int j = 0; j < q->n; j++) {
            const bbvi_qblock *b = q->b + j;
            b->fam->reparam(b->fam, b->dim, lambda + b->k0, 1,
                            eps + (size_t) s * q->NB + b->e0,
                            z + (size_t) s * D + b->z0);
        }
}

static double pr_log_q(const bbvi_family *f, int D, const double *lambda,
                       const double *eps)
{
    const bbvi_q *q = Q(f);
    double a = 0.0;
    (void) D;
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        a += b->fam->log_q(b->fam, b->dim, lambda + b->k0, eps + b->e0);
    }
    return a;
}

static void pr_score(const bbvi_family *f, int D, const double *lambda,
                     const double *eps, double *h)
{
    const bbvi_q *q = Q(f);
    (void) D;
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        b->fam->score(b->fam, b->dim, lambda + b->k0, eps + b->e0, h + b->k0);
    }
}

static double pr_entropy(const bbvi_family *f, int D, const double *lambda)
{
    const bbvi_q *q = Q(f);
    double a = 0.0;
    (void) D;
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        a += b->fam->entropy(b->fam, b->dim, lambda + b->k0);
    }
    return a;
}

static void pr_entropy_grad(const bbvi_family *f, int D, const double *lambda,
                            double *g)
{
    const bbvi_q *q = Q(f);
    (void) D;
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        b->fam->entropy_grad(b->fam, b->dim, lambda + b->k0, g + b->k0);
    }
}

static void pr_reparam_grad(const bbvi_family *f, int D, const double *lambda,
                            const double *eps, const double *gz,
                            double *glambda)
{
    const bbvi_q *q = Q(f);
    (void) D;
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        if (!b->fam->reparam_grad) continue;   /* score-only block */
        b->fam->reparam_grad(b->fam, b->dim, lambda + b->k0, eps + b->e0,
                             gz + b->z0, glambda + b->k0);
    }
}

static void pr_marginals(const bbvi_family *f, int D, const double *lambda,
                         double *mean, double *sd)
{
    const bbvi_q *q = Q(f);
    (void) D;
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        b->fam->marginals(b->fam, b->dim, lambda + b->k0, mean + b->z0, sd + b->z0);
    }
}

/* a dense P couples blocks: only a one-block q takes it */
static void pr_affine(const bbvi_family *f, int D, double *lambda,
                      const double *P, const double *shift)
{
    const bbvi_q *q = Q(f);
    if (q->n != 1)
        Rf_error("internal error: a dense preconditioner needs a one-block q");
    q->b->fam->affine(q->b->fam, D, lambda, P, shift);
}

static void pr_affine_diag(const bbvi_family *f, int D, double *lambda,
                           const double *scale, const double *shift)
{
    const bbvi_q *q = Q(f);
    (void) D;
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        b->fam->affine_diag(b->fam, b->dim, lambda + b->k0, scale + b->z0,
                            shift + b->z0);
    }
}

/* one block: that family's own list; several: list(family = "blocks",
   blocks = list(list(z0 (1-based start), dim, q), ...)) */
static SEXP pr_to_sexp(const bbvi_family *f, int D, const double *lambda)
{
    const bbvi_q *q = Q(f);
    if (q->n == 1) return q->b->fam->to_sexp(q->b->fam, D, lambda);
    SEXP blocks = PROTECT(Rf_allocVector(VECSXP, q->n));
    const char *bn[] = { "start", "dim", "q", "" };
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        SEXP one = PROTECT(Rf_mkNamed(VECSXP, bn));
        SET_VECTOR_ELT(one, 0, Rf_ScalarInteger(b->z0 + 1));
        SET_VECTOR_ELT(one, 1, Rf_ScalarInteger(b->dim));
        SET_VECTOR_ELT(one, 2, b->fam->to_sexp(b->fam, b->dim, lambda + b->k0));
        SET_VECTOR_ELT(blocks, j, one);
        UNPROTECT(1);
    }
    const char *names[] = { "family", "blocks", "" };
    SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
    SET_VECTOR_ELT(out, 0, Rf_mkString("blocks"));
    SET_VECTOR_ELT(out, 1, blocks);
    UNPROTECT(2);
    return out;
}

static const bbvi_family product_proto = {
    "blocks", 0, NULL, pr_n_lambda, pr_n_base, pr_init, pr_draw_base,
    pr_reparam, pr_log_q, pr_score, pr_entropy, pr_entropy_grad,
    pr_reparam_grad, pr_marginals, pr_affine, pr_affine_diag, pr_to_sexp
};

/* The product of n blocks: names[j], ranks[j], dims[j] (the dims add up to
   D, in coordinate order); fams[j], when not NULL, is block j's family
   already made (a categorical one, which needs its support). */
static const bbvi_family *product_of(int n, const char **names,
                                     const int *ranks, const int *dims,
                                     const bbvi_family **fams, int D)
{
    if (n < 1) Rf_error("internal error: q needs at least one block");
    bbvi_q *q = (bbvi_q *) R_alloc(1, sizeof(bbvi_q));
    q->n = n;
    q->b = (bbvi_qblock *) R_alloc(n, sizeof(bbvi_qblock));
    int z0 = 0, k0 = 0, e0 = 0;
    for (int j = 0; j < n; j++) {
        if (dims[j] < 1 || z0 + dims[j] > D)
            Rf_error("internal error: block dims must be >= 1 and add up to %d", D);
        bbvi_qblock *b = q->b + j;
        b->fam = fams && fams[j] ? fams[j] :
            bbvi_family_is_natural(names[j]) ? bbvi_family_natural(names[j]) :
            bbvi_family_make(names[j], ranks[j], dims[j]);
        b->z0 = z0; b->dim = dims[j];
        b->k0 = k0; b->K = b->fam->n_lambda(b->fam, b->dim);
        b->e0 = e0; b->nb = b->fam->n_base(b->fam, b->dim);
        z0 += b->dim; k0 += b->K; e0 += b->nb;
    }
    if (z0 != D) Rf_error("internal error: block dims add up to %d, not %d", z0, D);
    q->D = D; q->K = k0; q->NB = e0;
    bbvi_family *f = (bbvi_family *) R_alloc(1, sizeof(bbvi_family));
    *f = product_proto;
    f->ws = q;
    return f;
}

const bbvi_family *bbvi_family_product(int n, const char **names,
                                       const int *ranks, const int *dims, int D)
{
    return product_of(n, names, ranks, dims, NULL, D);
}

/* The categorical coordinates of q (one-block or product): for each, its
   coordinate zd in z, first value lo, number of values nv and the offset
   koff of its logits in lambda. Returns how many; the arrays may be NULL
   to count them. */
int bbvi_family_categorical_coords(const bbvi_family *f, int D, int *zd,
                                   int *lo, int *nv, int *koff)
{
    int n = 0, l, m, k;
    if (strcmp(f->name, "blocks") != 0) {
        for (int d = 0; d < D && bbvi_categorical_coord(f, d, &l, &m, &k); d++) {
            if (zd) { zd[n] = d; lo[n] = l; nv[n] = m; koff[n] = k; }
            n++;
        }
        return n;
    }
    const bbvi_q *q = Q(f);
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        for (int d = 0; d < b->dim && bbvi_categorical_coord(b->fam, d, &l, &m, &k); d++) {
            if (zd) { zd[n] = b->z0 + d; lo[n] = l; nv[n] = m; koff[n] = b->k0 + k; }
            n++;
        }
        int zo;   /* a conditional block's discrete coordinates */
        for (int d = 0; bbvi_cond_coord(b->fam, d, &zo, &l, &m, &k); d++) {
            if (zd) { zd[n] = b->z0 + zo; lo[n] = l; nv[n] = m; koff[n] = b->k0 + k; }
            n++;
        }
    }
    return n;
}

int bbvi_family_score_mask(const bbvi_family *f, int D, int *mask)
{
    int K = f->n_lambda(f, D), n = 0;
    if (strcmp(f->name, "blocks") != 0) {
        for (int k = 0; k < K; k++) mask[k] = f->reparam_grad == NULL;
        return f->reparam_grad == NULL ? K : 0;
    }
    const bbvi_q *q = Q(f);
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *b = q->b + j;
        int nl = bbvi_cond_n_logits(b->fam);
        if (nl >= 0) {   /* conditional block: its logits only */
            for (int k = 0; k < b->K; k++) mask[b->k0 + k] = k < nl;
            n += nl;
            continue;
        }
        int s = b->fam->reparam_grad == NULL;
        for (int k = 0; k < b->K; k++) mask[b->k0 + k] = s;
        n += s * b->K;
    }
    return n;
}

/* From control: `blocks` (list of list(family, rank, dim)) when given,
   else one block of `family` (with `rank`) over all D coordinates. */
const bbvi_family *bbvi_family_from_control(SEXP control, int D)
{
    SEXP blocks = bbvi_list_get(control, "blocks");
    if (Rf_isNull(blocks)) {
        SEXP fam = bbvi_list_get(control, "family");
        if (!Rf_isString(fam)) Rf_error("internal error: control needs family");
        const char *name = CHAR(STRING_ELT(fam, 0));
        int rank = bbvi_need_int(control, "rank");
        const bbvi_family *f = bbvi_family_product(1, &name, &rank, &D, D);
        /* optional init_B (D x rank): a low-rank q's starting B */
        SEXP B0 = bbvi_list_get(control, "init_B");
        if (!Rf_isNull(B0)) {
            if (!Rf_isReal(B0) || XLENGTH(B0) != (R_xlen_t) D * rank)
                Rf_error("internal error: init_B must be %d x %d doubles", D, rank);
            bbvi_family_set_start(Q(f)->b->fam, REAL(B0));
        }
        return f;
    }
    if (!Rf_isNewList(blocks) || Rf_length(blocks) < 1)
        Rf_error("internal error: `blocks` must be a list of blocks");
    int n = Rf_length(blocks);
    const char **names = (const char **) R_alloc(n, sizeof(char *));
    int *ranks = (int *) R_alloc(n, sizeof(int)), *dims = (int *) R_alloc(n, sizeof(int));
    const bbvi_family **fams = (const bbvi_family **) R_alloc(n, sizeof(bbvi_family *));
    for (int j = 0; j < n; j++) {
        SEXP b = VECTOR_ELT(blocks, j), fam = bbvi_list_get(b, "family");
        if (!Rf_isString(fam)) Rf_error("internal error: every block needs a family");
        names[j] = CHAR(STRING_ELT(fam, 0));
        ranks[j] = bbvi_need_int(b, "rank");
        dims[j] = bbvi_need_int(b, "dim");
        fams[j] = NULL;
        if (strcmp(names[j], "categorical") == 0) {
            /* its support: `lower` (first value) and `n_values`, per coordinate */
            SEXP lo = bbvi_list_get(b, "lower"), nv = bbvi_list_get(b, "n_values");
            if (!Rf_isInteger(lo) || !Rf_isInteger(nv) || Rf_length(lo) != dims[j] ||
                Rf_length(nv) != dims[j])
                Rf_error("internal error: a categorical block needs integer lower and n_values of length %d",
                         dims[j]);
            fams[j] = bbvi_family_categorical(dims[j], INTEGER(lo), INTEGER(nv));
        } else if (strcmp(names[j], "given") == 0) {
            /* g's support (dim / 2 coordinates) and which comes first */
            SEXP lo = bbvi_list_get(b, "lower"), nv = bbvi_list_get(b, "n_values");
            int p = dims[j] / 2;
            if (dims[j] % 2 != 0 || !Rf_isInteger(lo) || !Rf_isInteger(nv) ||
                Rf_length(lo) != p || Rf_length(nv) != p)
                Rf_error("internal error: a conditional block needs an even dim and integer lower and n_values of length dim / 2");
            fams[j] = bbvi_family_cond(p, INTEGER(lo), INTEGER(nv),
                                       bbvi_need_int(b, "g_first"));
        }
    }
    return product_of(n, names, ranks, dims, fams, D);
}

/* 1 when q is one full-rank block (the only q a dense preconditioner fits) */
/* f is `family`, or a product of one block of it */
static int is_single(const bbvi_family *f, const bbvi_family *family)
{
    if (f == family) return 1;
    if (strcmp(f->name, "blocks") != 0) return 0;
    const bbvi_q *q = Q(f);
    return q->n == 1 && q->b->fam == family;
}

int bbvi_family_is_fullrank(const bbvi_family *f)
{
    return is_single(f, &bbvi_family_fullrank);
}

int bbvi_family_is_meanfield(const bbvi_family *f)
{
    return is_single(f, &bbvi_family_meanfield);
}

/* The block layout, for estimators that treat blocks apart (the
   Rao-Blackwellized score, raoblackwell.c). */
int bbvi_family_n_blocks(const bbvi_family *f)
{
    return strcmp(f->name, "blocks") == 0 ? Q(f)->n : 1;
}

const bbvi_family *bbvi_family_block(const bbvi_family *f, int j, int *z0,
                                     int *dim, int *k0, int *K, int *e0)
{
    if (strcmp(f->name, "blocks") != 0) {
        if (j != 0) Rf_error("internal error: block %d of a one-block q", j);
        *z0 = 0; *dim = -1; *k0 = 0; *K = -1; *e0 = 0;
        return f;
    }
    const bbvi_q *q = Q(f);
    if (j < 0 || j >= q->n) Rf_error("internal error: no block %d", j);
    const bbvi_qblock *b = q->b + j;
    *z0 = b->z0; *dim = b->dim; *k0 = b->k0; *K = b->K; *e0 = b->e0;
    return b->fam;
}

/* the partner of discrete coordinate zd when its block is conditional
   (see bbvi.h); eps and lambda are a whole draw's and q's */
int bbvi_family_cond_value(const bbvi_family *f, int zd, int v, const double *lambda,
                           const double *eps, int *zb, double *b, double *log_s)
{
    if (strcmp(f->name, "blocks") != 0) return 0;
    const bbvi_q *q = Q(f);
    for (int j = 0; j < q->n; j++) {
        const bbvi_qblock *bl = q->b + j;
        if (zd < bl->z0 || zd >= bl->z0 + bl->dim) continue;
        int bo;
        if (!bbvi_cond_value(bl->fam, zd - bl->z0, v, lambda + bl->k0, eps + bl->e0,
                             &bo, b, log_s)) return 0;
        *zb = bl->z0 + bo;
        return 1;
    }
    return 0;
}
