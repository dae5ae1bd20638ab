/* optimisers.c: per-coordinate step sizes for stochastic gradient ascent.
   AdaGrad (Duchi et al. 2011) as used by Ranganath et al. (2014):
   rho_t = eta / sqrt(sum of squared gradients); Adam (Kingma & Ba 2015). */
#include "bbvi.h"
#include <math.h>
#include <string.h>

#define OPT_EPS 1e-8

void bbvi_optim_init(bbvi_optim *o, int type, int K, double eta)
{
    o->type = type;
    o->K = K;
    o->eta = eta;
    o->b2 = 0.999;
    o->m1 = (double *) R_alloc((size_t) K, sizeof(double));
    o->m2 = (double *) R_alloc((size_t) K, sizeof(double));
    bbvi_optim_reset(o);
}

void bbvi_optim_reset(bbvi_optim *o)
{
    o->t = 0;
    memset(o->m1, 0, sizeof(double) * o->K);
    memset(o->m2, 0, sizeof(double) * o->K);
}

void bbvi_optim_step(bbvi_optim *o, double *lambda, const double *grad)
{
    o->t++;
    if (o->type == BBVI_ADAGRAD) {
        for (int k = 0; k < o->K; k++) {
            o->m2[k] += grad[k] * grad[k];
            lambda[k] += o->eta * grad[k] / (sqrt(o->m2[k]) + OPT_EPS);
        }
    } else {
        const double b1 = 0.9, b2 = o->b2;
        double c1 = 1.0 - pow(b1, o->t), c2 = 1.0 - pow(b2, o->t);
        for (int k = 0; k < o->K; k++) {
            o->m1[k] = b1 * o->m1[k] + (1 - b1) * grad[k];
            o->m2[k] = b2 * o->m2[k] + (1 - b2) * grad[k] * grad[k];
            lambda[k] += o->eta * (o->m1[k] / c1) / (sqrt(o->m2[k] / c2) + OPT_EPS);
        }
    }
}
