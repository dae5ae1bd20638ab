/* mcmc.c: MCMC on the unconstrained scale of a bbvi_model, one chain per
   call. Two samplers:
   - NUTS: the multinomial No-U-Turn sampler of Stan (Betancourt 2017, "A
     conceptual introduction to Hamiltonian Monte Carlo", appendix A; Stan's
     base_nuts with the generalised criterion checked across subtrees), with
     a diagonal metric, dual-averaging step size (Hoffman & Gelman 2014) and
     Stan's windowed warmup (init buffer 75, doubling windows from 25, term
     buffer 50).
   - RWM: random-walk Metropolis with a Gaussian proposal whose covariance
     is the regularised sample covariance of the previous warmup window
     (Haario et al. 2001, on Stan's window schedule) and whose scale is
     tuned by dual averaging to a target acceptance rate; both fixed after
     warmup.
   Draws come back on the constrained scale. R's RNG throughout, held here
   (bbvi_rng_hold) and released around every call back into R. */
#include "bbvi.h"
#include <math.h>
#include <string.h>

#define MAX_DELTA_H 1000.0

static double *dzero(size_t n)
{
    double *p = (double *) R_alloc(n, sizeof(double));
    memset(p, 0, n * sizeof(double));
    return p;
}

static double log_sum_exp(double a, double b)
{
    if (a == R_NegInf) return b;
    if (b == R_NegInf) return a;
    return a > b ? a + log1p(exp(b - a)) : b + log1p(exp(a - b));
}

/* ---- dual averaging of a log step size (Hoffman & Gelman 2014, as Stan) -- */

typedef struct {
    double mu, delta, gamma, kappa, t0;
    double s_bar, x_bar;
    int counter;
} dual_avg;

/* mu_factor: Stan's NUTS shrinks towards 10 x the initial step (a bias to
   larger steps); RWM starts at the Gaussian-optimal scale and shrinks to it. */
static void da_init(dual_avg *a, double delta, double eps, double mu_factor)
{
    a->delta = delta; a->gamma = 0.05; a->kappa = 0.75; a->t0 = 10.0;
    a->mu = log(mu_factor * eps);
    a->s_bar = a->x_bar = 0.0; a->counter = 0;
}

static double da_learn(dual_avg *a, double stat)
{
    if (stat > 1.0) stat = 1.0;
    if (!R_FINITE(stat)) stat = 0.0;
    a->counter++;
    double n = a->counter;
    double eta = 1.0 / (n + a->t0);
    a->s_bar = (1.0 - eta) * a->s_bar + eta * (a->delta - stat);
    double x = a->mu - a->s_bar * sqrt(n) / a->gamma;
    double xe = pow(n, -a->kappa);
    a->x_bar = (1.0 - xe) * a->x_bar + xe * x;
    return exp(x);
}

/* ---- Stan's warmup windows ---------------------------------------------- */

typedef struct {
    int warmup, init_buffer, term_buffer, window_size, next_window, counter;
    int on;           /* metric adaptation at all */
} windows;

static void win_init(windows *w, int warmup)
{
    w->warmup = warmup; w->counter = 0;
    w->init_buffer = 75; w->term_buffer = 50; w->window_size = 25;
    w->on = warmup >= 20;
    if (w->on && w->init_buffer + w->window_size + w->term_buffer > warmup) {
        w->init_buffer = (int) (0.15 * warmup);
        w->term_buffer = (int) (0.1 * warmup);
        w->window_size = warmup - w->init_buffer - w->term_buffer;
    }
    w->next_window = w->init_buffer + w->window_size - 1;
}

static int win_in_window(const windows *w)
{
    return w->on && w->counter >= w->init_buffer &&
        w->counter < w->warmup - w->term_buffer && w->counter != w->warmup;
}

static int win_end(const windows *w)
{
    return w->on && w->counter == w->next_window && w->counter != w->warmup;
}

static void win_next(windows *w)
{
    int last = w->warmup - w->term_buffer - 1;
    if (w->next_window == last) return;
    w->window_size *= 2;
    w->next_window = w->counter + w->window_size;
    if (w->next_window != last &&
        w->next_window + 2 * w->window_size >= w->warmup - w->term_buffer)
        w->next_window = last;
}

/* Welford accumulators: mean and (co)variance of a window's draws. */
typedef struct {
    int D, n, full;
    double *mean, *m2;   /* m2: D (diagonal) or D x D */
    double *delta;
} welford;

static void wf_init(welford *w, int D, int full)
{
    w->D = D; w->full = full; w->n = 0;
    w->mean = dzero(D); w->delta = dzero(D);
    w->m2 = dzero(full ? (size_t) D * D : (size_t) D);
}

static void wf_restart(welford *w)
{
    w->n = 0;
    memset(w->mean, 0, sizeof(double) * w->D);
    memset(w->m2, 0, sizeof(double) * (w->full ? (size_t) w->D * w->D : (size_t) w->D));
}

static void wf_add(welford *w, const double *x)
{
    int D = w->D;
    w->n++;
    for (int d = 0; d < D; d++) {
        w->delta[d] = x[d] - w->mean[d];
        w->mean[d] += w->delta[d] / w->n;
    }
    if (!w->full) {
        for (int d = 0; d < D; d++) w->m2[d] += w->delta[d] * (x[d] - w->mean[d]);
    } else {
        for (int j = 0; j < D; j++)
            for (int i = 0; i < D; i++)
                w->m2[i + (size_t) j * D] += w->delta[i] * (x[j] - w->mean[j]);
    }
}

/* Stan's regularised estimate: shrink towards 1e-3 (identity) with weight
   5 / (n + 5). */
static void wf_estimate(const welford *w, double *out)
{
    int D = w->D;
    double n = w->n, a = n / (n + 5.0), b = 1e-3 * 5.0 / (n + 5.0);
    if (!w->full) {
        for (int d = 0; d < D; d++) out[d] = a * w->m2[d] / (n - 1.0) + b;
    } else {
        for (int j = 0; j < D; j++)
            for (int i = 0; i < D; i++)
                out[i + (size_t) j * D] = a * w->m2[i + (size_t) j * D] / (n - 1.0) +
                    (i == j ? b : 0.0);
    }
}

/* ---- NUTS ------------------------------------------------------------------ */

typedef struct { double *q, *p, *g, lp; } point;

typedef struct {      /* scratch of one level of the tree recursion */
    point z_final;
    double *p_init_end, *ps_init_end, *rho_init;
    double *p_final_beg, *ps_final_beg, *rho_final, *rho_ext;
} level_ws;

typedef struct {
    bbvi_model *m;
    int D;
    double *minv;     /* diagonal inverse metric */
    double eps;       /* current step size (sign carried separately) */
    point z;          /* integrator state */
    int divergent, n_leapfrog;
    double sum_metro_prob;
    level_ws *lv;     /* max_depth levels */
} nuts;

static void point_alloc(point *a, int D)
{
    a->q = dzero(D); a->p = dzero(D); a->g = dzero(D); a->lp = R_NegInf;
}

static void point_copy(point *dst, const point *src, int D)
{
    memcpy(dst->q, src->q, sizeof(double) * D);
    memcpy(dst->p, src->p, sizeof(double) * D);
    memcpy(dst->g, src->g, sizeof(double) * D);
    dst->lp = src->lp;
}

static void eval_point(nuts *s, point *z)
{
    bbvi_model_logdens(s->m, 1, z->q, &z->lp, z->g);
    if (ISNAN(z->lp)) z->lp = R_NegInf;
}

static double hamiltonian(const nuts *s, const point *z)
{
    double k = 0.0;
    for (int d = 0; d < s->D; d++) k += s->minv[d] * z->p[d] * z->p[d];
    double h = 0.5 * k - z->lp;
    return ISNAN(h) ? R_PosInf : h;
}

static void sample_p(nuts *s, point *z)
{
    for (int d = 0; d < s->D; d++) z->p[d] = norm_rand() / sqrt(s->minv[d]);
}

static void p_sharp(const nuts *s, const double *p, double *out)
{
    for (int d = 0; d < s->D; d++) out[d] = s->minv[d] * p[d];
}

static void leapfrog(nuts *s, point *z, double e)
{
    int D = s->D;
    for (int d = 0; d < D; d++) z->p[d] += 0.5 * e * z->g[d];
    for (int d = 0; d < D; d++) z->q[d] += e * s->minv[d] * z->p[d];
    eval_point(s, z);
    for (int d = 0; d < D; d++) z->p[d] += 0.5 * e * z->g[d];
}

static int criterion(int D, const double *ps_minus, const double *ps_plus,
                     const double *rho)
{
    return bbvi_dot(D, ps_plus, rho) > 0 && bbvi_dot(D, ps_minus, rho) > 0;
}

/* Stan's base_nuts::build_tree: extends s->z by 2^depth leapfrog steps in
   direction sign; returns 0 when the subtree is invalid (divergence or a
   U-turn inside it). */
static int build_tree(nuts *s, int depth, point *z_propose, double *ps_beg,
                      double *ps_end, double *rho, double *p_beg, double *p_end,
                      double H0, double sign, double *log_sum_weight)
{
    int D = s->D;
    if (depth == 0) {
        leapfrog(s, &s->z, sign * s->eps);
        s->n_leapfrog++;
        double h = hamiltonian(s, &s->z);
        if (h - H0 > MAX_DELTA_H) s->divergent = 1;
        *log_sum_weight = log_sum_exp(*log_sum_weight, H0 - h);
        s->sum_metro_prob += H0 - h > 0 ? 1.0 : exp(H0 - h);
        point_copy(z_propose, &s->z, D);
        p_sharp(s, s->z.p, ps_beg);
        memcpy(ps_end, ps_beg, sizeof(double) * D);
        for (int d = 0; d < D; d++) rho[d] += s->z.p[d];
        memcpy(p_beg, s->z.p, sizeof(double) * D);
        memcpy(p_end, p_beg, sizeof(double) * D);
        return !s->divergent;
    }
    level_ws *w = &s->lv[depth];
    double lsw_init = R_NegInf, lsw_final = R_NegInf;
    memset(w->rho_init, 0, sizeof(double) * D);
    if (!build_tree(s, depth - 1, z_propose, ps_beg, w->ps_init_end, w->rho_init,
                    p_beg, w->p_init_end, H0, sign, &lsw_init))
        return 0;
    memset(w->rho_final, 0, sizeof(double) * D);
    if (!build_tree(s, depth - 1, &w->z_final, w->ps_final_beg, ps_end,
                    w->rho_final, w->p_final_beg, p_end, H0, sign, &lsw_final))
        return 0;
    double lsw_sub = log_sum_exp(lsw_init, lsw_final);
    *log_sum_weight = log_sum_exp(*log_sum_weight, lsw_sub);
    if (lsw_final > lsw_sub || unif_rand() < exp(lsw_final - lsw_sub))
        point_copy(z_propose, &w->z_final, D);
    for (int d = 0; d < D; d++) {
        w->rho_ext[d] = w->rho_init[d] + w->rho_final[d];   /* rho_subtree */
        rho[d] += w->rho_ext[d];
    }
    int ok = criterion(D, ps_beg, ps_end, w->rho_ext);
    for (int d = 0; d < D; d++) w->rho_ext[d] = w->rho_init[d] + w->p_final_beg[d];
    ok = ok && criterion(D, ps_beg, w->ps_final_beg, w->rho_ext);
    for (int d = 0; d < D; d++) w->rho_ext[d] = w->rho_final[d] + w->p_init_end[d];
    ok = ok && criterion(D, w->ps_init_end, ps_end, w->rho_ext);
    return ok;
}

typedef struct {
    point z_fwd, z_bck, z_sample, z_propose;
    double *p_fwd_fwd, *ps_fwd_fwd, *p_fwd_bck, *ps_fwd_bck;
    double *p_bck_fwd, *ps_bck_fwd, *p_bck_bck, *ps_bck_bck;
    double *rho, *rho_fwd, *rho_bck, *rho_ext;
} trans_ws;

typedef struct { double accept, energy; int depth, n_leapfrog, divergent; } trans_info;

/* One NUTS transition from *cur (q, g, lp valid); *cur becomes the draw. */
static void nuts_transition(nuts *s, trans_ws *t, point *cur, int max_depth,
                            trans_info *info)
{
    int D = s->D;
    size_t nb = sizeof(double) * D;
    point_copy(&s->z, cur, D);
    sample_p(s, &s->z);
    point_copy(&t->z_fwd, &s->z, D);
    point_copy(&t->z_bck, &s->z, D);
    point_copy(&t->z_sample, &s->z, D);
    memcpy(t->p_fwd_fwd, s->z.p, nb);
    p_sharp(s, s->z.p, t->ps_fwd_fwd);
    memcpy(t->p_fwd_bck, s->z.p, nb); memcpy(t->ps_fwd_bck, t->ps_fwd_fwd, nb);
    memcpy(t->p_bck_fwd, s->z.p, nb); memcpy(t->ps_bck_fwd, t->ps_fwd_fwd, nb);
    memcpy(t->p_bck_bck, s->z.p, nb); memcpy(t->ps_bck_bck, t->ps_fwd_fwd, nb);
    memcpy(t->rho, s->z.p, nb);
    double log_sum_weight = 0.0, H0 = hamiltonian(s, &s->z);
    s->n_leapfrog = 0; s->sum_metro_prob = 0.0; s->divergent = 0;
    int depth = 0;
    while (depth < max_depth) {
        memset(t->rho_fwd, 0, nb); memset(t->rho_bck, 0, nb);
        double lsw_sub = R_NegInf;
        int valid;
        if (unif_rand() > 0.5) {
            point_copy(&s->z, &t->z_fwd, D);
            memcpy(t->rho_bck, t->rho, nb);
            memcpy(t->p_bck_fwd, t->p_fwd_fwd, nb);
            memcpy(t->ps_bck_fwd, t->ps_fwd_fwd, nb);
            valid = build_tree(s, depth, &t->z_propose, t->ps_fwd_bck, t->ps_fwd_fwd,
                               t->rho_fwd, t->p_fwd_bck, t->p_fwd_fwd, H0, 1.0,
                               &lsw_sub);
            point_copy(&t->z_fwd, &s->z, D);
        } else {
            point_copy(&s->z, &t->z_bck, D);
            memcpy(t->rho_fwd, t->rho, nb);
            memcpy(t->p_fwd_bck, t->p_bck_bck, nb);
            memcpy(t->ps_fwd_bck, t->ps_bck_bck, nb);
            valid = build_tree(s, depth, &t->z_propose, t->ps_bck_fwd, t->ps_bck_bck,
                               t->rho_bck, t->p_bck_fwd, t->p_bck_bck, H0, -1.0,
                               &lsw_sub);
            point_copy(&t->z_bck, &s->z, D);
        }
        if (!valid) break;
        depth++;
        if (lsw_sub > log_sum_weight || unif_rand() < exp(lsw_sub - log_sum_weight))
            point_copy(&t->z_sample, &t->z_propose, D);
        log_sum_weight = log_sum_exp(log_sum_weight, lsw_sub);
        for (int d = 0; d < D; d++) t->rho[d] = t->rho_bck[d] + t->rho_fwd[d];
        int ok = criterion(D, t->ps_bck_bck, t->ps_fwd_fwd, t->rho);
        for (int d = 0; d < D; d++) t->rho_ext[d] = t->rho_bck[d] + t->p_fwd_bck[d];
        ok = ok && criterion(D, t->ps_bck_bck, t->ps_fwd_bck, t->rho_ext);
        for (int d = 0; d < D; d++) t->rho_ext[d] = t->rho_fwd[d] + t->p_bck_fwd[d];
        ok = ok && criterion(D, t->ps_bck_fwd, t->ps_fwd_fwd, t->rho_ext);
        if (!ok) break;
    }
    point_copy(cur, &t->z_sample, D);
    info->accept = s->n_leapfrog > 0 ? s->sum_metro_prob / s->n_leapfrog : 0.0;
    info->depth = depth;
    info->n_leapfrog = s->n_leapfrog;
    info->divergent = s->divergent;
    info->energy = hamiltonian(s, cur);
}

/* Stan's heuristic: double or halve the step until one leapfrog step's
   acceptance crosses 0.8. */
static void init_stepsize(nuts *s, const point *cur)
{
    int D = s->D;
    if (s->eps == 0 || s->eps > 1e7 || ISNAN(s->eps)) return;
    int direction = 0;
    for (int it = 0; it < 100; it++) {
        point_copy(&s->z, cur, D);
        sample_p(s, &s->z);
        double H0 = hamiltonian(s, &s->z);
        leapfrog(s, &s->z, s->eps);
        double dH = H0 - hamiltonian(s, &s->z);
        if (direction == 0) {
            direction = dH > log(0.8) ? 1 : -1;
            continue;
        }
        if (direction == 1 && !(dH > log(0.8))) break;
        if (direction == -1 && !(dH < log(0.8))) break;
        s->eps = direction == 1 ? 2.0 * s->eps : 0.5 * s->eps;
        if (s->eps > 1e7)
            Rf_error("the posterior looks improper: the step size grew beyond 1e7 (is a parameter's density flat?)");
        if (s->eps == 0)
            Rf_error("no acceptable step size: the log density is not smooth at the initial point");
    }
}

/* ---- the chain ------------------------------------------------------------- */

/* A starting point with a finite log density (and gradient): the given one,
   or up to 100 tries uniform(-radius, radius) per coordinate. */
static int find_init(bbvi_model *m, int D, const double *init, double radius,
                     double *q, double *lp, double *g)
{
    for (int tr = 0; tr < 100; tr++) {
        if (init) memcpy(q, init, sizeof(double) * D);
        else for (int d = 0; d < D; d++) q[d] = radius * (2.0 * unif_rand() - 1.0);
        bbvi_model_logdens(m, 1, q, lp, g);
        int ok = R_FINITE(*lp);
        for (int d = 0; ok && g && d < D; d++) ok = R_FINITE(g[d]);
        if (ok) return 1;
        if (init) return 0;
    }
    return 0;
}

/* lower Cholesky factor in place (D x D); returns 0 if not positive definite */
static int cholesky(int D, double *A)
{
    for (int j = 0; j < D; j++) {
        double s = A[j + (size_t) j * D];
        for (int k = 0; k < j; k++) s -= A[j + (size_t) k * D] * A[j + (size_t) k * D];
        if (!(s > 0)) return 0;
        double l = sqrt(s);
        A[j + (size_t) j * D] = l;
        for (int i = j + 1; i < D; i++) {
            double v = A[i + (size_t) j * D];
            for (int k = 0; k < j; k++) v -= A[i + (size_t) k * D] * A[j + (size_t) k * D];
            A[i + (size_t) j * D] = v / l;
        }
        for (int i = 0; i < j; i++) A[i + (size_t) j * D] = 0.0;
    }
    return 1;
}

static SEXP named_list(const char **names, int n)
{
    SEXP out = PROTECT(Rf_allocVector(VECSXP, n));
    SEXP nm = PROTECT(Rf_allocVector(STRSXP, n));
    for (int i = 0; i < n; i++) SET_STRING_ELT(nm, i, Rf_mkChar(names[i]));
    Rf_setAttrib(out, R_NamesSymbol, nm);
    UNPROTECT(2);
    return out;
}

/* .Call(C_mcmc_sample, spec, lower, upper, control): one chain.
   control: method ("nuts"/"rwm"), iter, warmup, max_depth, delta (target
   acceptance), init (unconstrained start or NULL), init_radius, stepsize. */
SEXP mcmc_sample(SEXP spec, SEXP lower, SEXP upper, SEXP control)
{
    int Dth, D = bbvi_check_bounds(spec, lower, upper, &Dth);
    SEXP meth = bbvi_list_get(control, "method");
    if (!Rf_isString(meth)) Rf_error("internal error: control needs `method`");
    int use_nuts = strcmp(CHAR(STRING_ELT(meth, 0)), "nuts") == 0;
    int iter = bbvi_need_int(control, "iter");
    int warmup = bbvi_need_int(control, "warmup");
    int max_depth = bbvi_need_int(control, "max_depth");
    double delta = bbvi_need_double(control, "delta");
    double radius = bbvi_need_double(control, "init_radius");
    double eps0 = bbvi_need_double(control, "stepsize");
    SEXP init = bbvi_list_get(control, "init");
    if (iter < 1 || warmup < 0 || warmup >= iter || max_depth < 1 || max_depth > 30 ||
        !(delta > 0 && delta < 1) || !(eps0 > 0))
        Rf_error("internal error: bad control values");
    if (!Rf_isNull(init) && (!Rf_isReal(init) || Rf_length(init) != D))
        Rf_error("internal error: `init` must be NULL or %d doubles", D);
    int n_keep = iter - warmup;

    bbvi_target target;
    bbvi_target_from_sexp(spec, Dth, 1, &target);
    if (use_nuts && !target.has_grad)
        Rf_error("internal error: NUTS needs a gradient");
    bbvi_model model;
    bbvi_model_init(&model, &target, REAL(lower), REAL(upper), D, 1);
    bbvi_model_set_layout(&model, spec);

    const char *names[] = { "draws", "lp", "accept_stat", "stepsize", "treedepth",
                            "n_leapfrog", "divergent", "energy", "inv_metric",
                            "warmup_divergent", "init" };
    SEXP out = PROTECT(named_list(names, 11));
    SEXP draws = PROTECT(Rf_allocMatrix(REALSXP, Dth, n_keep));
    SEXP lp_s = PROTECT(Rf_allocVector(REALSXP, n_keep));
    SEXP acc_s = PROTECT(Rf_allocVector(REALSXP, n_keep));
    SEXP depth_s = PROTECT(Rf_allocVector(INTSXP, n_keep));
    SEXP nlf_s = PROTECT(Rf_allocVector(INTSXP, n_keep));
    SEXP div_s = PROTECT(Rf_allocVector(LGLSXP, n_keep));
    SEXP en_s = PROTECT(Rf_allocVector(REALSXP, n_keep));
    SEXP metric_s = PROTECT(use_nuts ? Rf_allocVector(REALSXP, D)
                                     : Rf_allocMatrix(REALSXP, D, D));
    SEXP init_s = PROTECT(Rf_allocVector(REALSXP, D));

    point cur;
    point_alloc(&cur, D);
    windows win;
    win_init(&win, warmup);
    dual_avg da;
    int warm_div = 0;
    double eps = eps0;

    bbvi_rng_hold();
    if (!find_init(&model, D, Rf_isNull(init) ? NULL : REAL(init), radius,
                   cur.q, &cur.lp, use_nuts ? cur.g : NULL)) {
        bbvi_rng_release();
        Rf_error(Rf_isNull(init)
                 ? "no starting point with a finite log density%s in 100 tries"
                 : "the log density%s is not finite at `init`",
                 use_nuts ? " and gradient" : "");
    }
    memcpy(REAL(init_s), cur.q, sizeof(double) * D);

    if (use_nuts) {
        nuts s;
        s.m = &model; s.D = D; s.eps = eps0;
        s.minv = REAL(metric_s);
        for (int d = 0; d < D; d++) s.minv[d] = 1.0;
        /* numeric gradients step in units of the metric's scales */
        double *fd_sd = NULL;
        if (target.fd_grad) {
            fd_sd = (double *) R_alloc(D, sizeof(double));
            for (int d = 0; d < D; d++) fd_sd[d] = 1.0;
            model.fd_scale = fd_sd;
        }
        point_alloc(&s.z, D);
        s.lv = (level_ws *) R_alloc(max_depth + 1, sizeof(level_ws));
        for (int l = 0; l <= max_depth; l++) {
            level_ws *w = &s.lv[l];
            point_alloc(&w->z_final, D);
            w->p_init_end = dzero(D); w->ps_init_end = dzero(D); w->rho_init = dzero(D);
            w->p_final_beg = dzero(D); w->ps_final_beg = dzero(D);
            w->rho_final = dzero(D); w->rho_ext = dzero(D);
        }
        trans_ws t;
        point_alloc(&t.z_fwd, D); point_alloc(&t.z_bck, D);
        point_alloc(&t.z_sample, D); point_alloc(&t.z_propose, D);
        double **vv[] = { &t.p_fwd_fwd, &t.ps_fwd_fwd, &t.p_fwd_bck, &t.ps_fwd_bck,
                          &t.p_bck_fwd, &t.ps_bck_fwd, &t.p_bck_bck, &t.ps_bck_bck,
                          &t.rho, &t.rho_fwd, &t.rho_bck, &t.rho_ext };
        for (int i = 0; i < 12; i++) *vv[i] = dzero(D);
        welford wf;
        wf_init(&wf, D, 0);
        if (warmup > 0) init_stepsize(&s, &cur);
        da_init(&da, delta, s.eps, 10.0);
        trans_info info;
        for (int it = 0; it < iter; it++) {
            if (it % 16 == 0) R_CheckUserInterrupt();
            nuts_transition(&s, &t, &cur, max_depth, &info);
            if (it < warmup) {
                warm_div += info.divergent;
                s.eps = da_learn(&da, info.accept);
                if (win_in_window(&win)) wf_add(&wf, cur.q);
                if (win_end(&win)) {
                    win_next(&win);
                    wf_estimate(&wf, s.minv);
                    wf_restart(&wf);
                    if (fd_sd)
                        for (int d = 0; d < D; d++) fd_sd[d] = sqrt(s.minv[d]);
                    init_stepsize(&s, &cur);
                    da_init(&da, delta, s.eps, 10.0);
                }
                win.counter++;
                if (it == warmup - 1) s.eps = exp(da.x_bar);
                continue;
            }
            int k = it - warmup;
            bbvi_model_constrain(&model, 1, cur.q, REAL(draws) + (size_t) k * Dth);
            REAL(lp_s)[k] = cur.lp;
            REAL(acc_s)[k] = info.accept;
            INTEGER(depth_s)[k] = info.depth;
            INTEGER(nlf_s)[k] = info.n_leapfrog;
            LOGICAL(div_s)[k] = info.divergent;
            REAL(en_s)[k] = info.energy;
        }
        eps = s.eps;
    } else {
        /* RWM: proposal q + scale * L z, L the Cholesky factor of the
           proposal covariance (identity until the first window ends) */
        double target_acc = D == 1 ? 0.44 : (D >= 5 ? 0.234 : 0.44 - (D - 1) * 0.0515);
        double *L = REAL(metric_s);
        memset(L, 0, sizeof(double) * D * D);
        for (int d = 0; d < D; d++) L[d + (size_t) d * D] = 1.0;
        double *cov = dzero((size_t) D * D), *prop = dzero(D), *z = dzero(D);
        double scale = 2.38 / sqrt((double) D);
        welford wf;
        wf_init(&wf, D, 1);
        da_init(&da, target_acc, scale, 1.0);
        for (int it = 0; it < iter; it++) {
            if (it % 16 == 0) R_CheckUserInterrupt();
            for (int d = 0; d < D; d++) z[d] = norm_rand();
            for (int i = 0; i < D; i++) {
                double v = 0.0;
                for (int j = 0; j <= i; j++) v += L[i + (size_t) j * D] * z[j];
                prop[i] = cur.q[i] + scale * v;
            }
            double lp_prop;
            bbvi_model_logdens(&model, 1, prop, &lp_prop, NULL);
            if (ISNAN(lp_prop)) lp_prop = R_NegInf;
            double a = lp_prop - cur.lp;
            double acc = a >= 0 ? 1.0 : exp(a);
            if (a >= 0 || unif_rand() < acc) {
                memcpy(cur.q, prop, sizeof(double) * D);
                cur.lp = lp_prop;
            }
            if (it < warmup) {
                scale = da_learn(&da, acc);
                if (win_in_window(&win)) wf_add(&wf, cur.q);
                if (win_end(&win)) {
                    win_next(&win);
                    wf_estimate(&wf, cov);
                    wf_restart(&wf);
                    if (cholesky(D, cov)) {
                        memcpy(L, cov, sizeof(double) * D * D);
                        scale = 2.38 / sqrt((double) D);
                        da_init(&da, target_acc, scale, 1.0);
                    }
                }
                win.counter++;
                if (it == warmup - 1) scale = exp(da.x_bar);
                continue;
            }
            int k = it - warmup;
            bbvi_model_constrain(&model, 1, cur.q, REAL(draws) + (size_t) k * Dth);
            REAL(lp_s)[k] = cur.lp;
            REAL(acc_s)[k] = acc;
            INTEGER(depth_s)[k] = NA_INTEGER;
            INTEGER(nlf_s)[k] = NA_INTEGER;
            LOGICAL(div_s)[k] = 0;
            REAL(en_s)[k] = NA_REAL;
        }
        eps = scale;
        /* report the adapted covariance L L' (the inverse metric; the
           proposal is N(q, eps^2 L L')), not its Cholesky factor */
        double *M = dzero((size_t) D * D);
        for (int j = 0; j < D; j++)
            for (int i = j; i < D; i++) {
                double v = 0.0;
                for (int k = 0; k <= j; k++) v += L[i + (size_t) k * D] * L[j + (size_t) k * D];
                M[i + (size_t) j * D] = M[j + (size_t) i * D] = v;
            }
        memcpy(L, M, sizeof(double) * D * D);
    }
    bbvi_rng_release();

    SET_VECTOR_ELT(out, 0, draws);
    SET_VECTOR_ELT(out, 1, lp_s);
    SET_VECTOR_ELT(out, 2, acc_s);
    SET_VECTOR_ELT(out, 3, Rf_ScalarReal(eps));
    SET_VECTOR_ELT(out, 4, depth_s);
    SET_VECTOR_ELT(out, 5, nlf_s);
    SET_VECTOR_ELT(out, 6, div_s);
    SET_VECTOR_ELT(out, 7, en_s);
    SET_VECTOR_ELT(out, 8, metric_s);
    SET_VECTOR_ELT(out, 9, Rf_ScalarInteger(warm_div));
    SET_VECTOR_ELT(out, 10, init_s);
    UNPROTECT(11);
    return out;
}
