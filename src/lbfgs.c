/* lbfgs.c: the curvature memory of L-BFGS (Nocedal 1980), shared by the
   mode search (mode.c) and the fixed-draw path (saa.c). Each keeps its own
   line search (the mode search must step back from -Inf regions and slide
   along them; the fixed-draw path stops on its Monte Carlo error); what
   they share is the ring of pairs (s, y), the rule for keeping a pair and
   the two-loop product with the inverse Hessian. */
#include "bbvi.h"
#include <string.h>

double bbvi_dot(int n, const double *a, const double *b)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void bbvi_lbfgs_init(bbvi_lbfgs *L, int n, int m)
{
    L->n = n;
    L->m = m;
    L->S = (double *) R_alloc((size_t) m * n, sizeof(double));
    L->Y = (double *) R_alloc((size_t) m * n, sizeof(double));
    L->rho = (double *) R_alloc(m, sizeof(double));
    L->alpha = (double *) R_alloc(m, sizeof(double));
    L->gamma = 1.0;
    L->h0 = NULL;
    L->h0_ctx = NULL;
    bbvi_lbfgs_forget(L);
}

void bbvi_lbfgs_forget(bbvi_lbfgs *L)
{
    L->cnt = 0;
    L->head = 0;
}

/* Keeps the pair s = x1 - x0, y = g1 - g0 when s'y > 1e-10 y'y: only pairs
   with curvature along the step keep the inverse Hessian positive
   definite without a Wolfe line search. When the ring is full the oldest
   pair makes room. Returns 1 if kept. */
int bbvi_lbfgs_push(bbvi_lbfgs *L, const double *x0, const double *x1,
                    const double *g0, const double *g1)
{
    int n = L->n;
    double sy = 0.0, yy = 0.0;
    for (int i = 0; i < n; i++) {
        double s = x1[i] - x0[i], y = g1[i] - g0[i];
        sy += s * y;
        yy += y * y;
    }
    if (!(sy > 1e-10 * yy && yy > 0.0)) return 0;
    int slot = (L->head + L->cnt) % L->m;
    double *s = L->S + (size_t) slot * n, *y = L->Y + (size_t) slot * n;
    for (int i = 0; i < n; i++) { s[i] = x1[i] - x0[i]; y[i] = g1[i] - g0[i]; }
    L->rho[slot] = 1.0 / sy;
    L->gamma = sy / yy;
    if (L->cnt < L->m) L->cnt++;
    else L->head = (L->head + 1) % L->m;
    return 1;
}

/* d = -H g, H the inverse Hessian of the kept pairs with H0 = gamma I, or
   L->h0 when set (the two-loop recursion; -H0 g when no pair is kept). */
void bbvi_lbfgs_direction(const bbvi_lbfgs *L, const double *g, double *d)
{
    int n = L->n, m = L->m;
    for (int i = 0; i < n; i++) d[i] = -g[i];
    for (int k = L->cnt - 1; k >= 0; k--) {   /* newest first */
        int j = (L->head + k) % m;
        L->alpha[k] = L->rho[j] * bbvi_dot(n, L->S + (size_t) j * n, d);
        for (int i = 0; i < n; i++) d[i] -= L->alpha[k] * L->Y[(size_t) j * n + i];
    }
    if (L->h0) L->h0(L->h0_ctx, d);
    else for (int i = 0; i < n; i++) d[i] *= L->gamma;
    for (int k = 0; k < L->cnt; k++) {
        int j = (L->head + k) % m;
        double b = L->rho[j] * bbvi_dot(n, L->Y + (size_t) j * n, d);
        for (int i = 0; i < n; i++) d[i] += (L->alpha[k] - b) * L->S[(size_t) j * n + i];
    }
}
