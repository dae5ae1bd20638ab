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

/* A gradient far larger than any since (a draw where log p explodes:
   exp(a + b x) at b = 3 and x = 50 gives a score gradient near 1e50) leaves
   the second moment so large that every later step is practically zero:
   with Adam's memory of 1000 iterations it takes 10^5 iterations to decay
   from 1e100 to 1e6. The frozen iterates then pass every test on their
   moves, and the fit would claim to have converged where it froze. Given
   the mean squared gradient of the last window (ms, K), returns how many
   coordinates have a second moment more than STALE_M2 times larger
   (steps 1000 times shorter than that window's gradients call for) while
   those gradients are still far from zero (root mean square above
   STALE_GRAD, in the run's units: q's means in units of the start's sds,
   and log sds). Under steady noise, heavy-tailed or not, the two moments
   agree within a few tens; where q converges onto the posterior exactly
   (a Gamma q on a Gamma posterior) the gradients themselves vanish, and
   their shrinking is no freeze. */
#define STALE_M2 1e6
#define STALE_GRAD 1.0
int bbvi_optim_stale(const bbvi_optim *o, const double *ms)
{
    int n = 0;
    if (o->t == 0) return 0;
    /* AdaGrad's sum grows as t ms under steady gradients */
    double scale = o->type == BBVI_ADAGRAD ? (double) o->t : 1.0 - pow(o->b2, o->t);
    for (int k = 0; k < o->K; k++)
        if (ms[k] > STALE_GRAD * STALE_GRAD && o->m2[k] > STALE_M2 * scale * ms[k]) n++;
    return n;
}
