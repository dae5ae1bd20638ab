/* init.c: registration of the .Call entry points. */
#include "bbvi.h"
#include <R_ext/Rdynload.h>

SEXP vi_fit(SEXP spec, SEXP lower, SEXP upper, SEXP control);
SEXP constrain(SEXP zeta, SEXP lower, SEXP upper);
SEXP logdens(SEXP spec, SEXP lower, SEXP upper, SEXP zeta, SEXP want_grad);
SEXP native_example(SEXP name);
SEXP mcmc_sample(SEXP spec, SEXP lower, SEXP upper, SEXP control);
SEXP glm_quad_fit(SEXP spec, SEXP control);
SEXP glm_incr_fit(SEXP spec, SEXP control);
SEXP glm_taylor(SEXP spec, SEXP center);
SEXP glm_quad_sums(SEXP spec, SEXP control, SEXP mean, SEXP chol);
SEXP grad_samples(SEXP spec, SEXP lower, SEXP upper, SEXP control);
SEXP find_mode(SEXP spec, SEXP lower, SEXP upper, SEXP control);
SEXP family_eval(SEXP control);
SEXP vi_saa(SEXP spec, SEXP lower, SEXP upper, SEXP control);
SEXP glm_colstats(SEXP X);
SEXP glm_wcross(SEXP X, SEXP icpt, SEXP xbar, SEXP wt, SEXP z);
SEXP glm_linpred(SEXP X, SEXP icpt, SEXP xbar, SEXP B);
SEXP rb_grad_variance(SEXP spec, SEXP lower, SEXP upper, SEXP control);
SEXP transform_draws(SEXP x, SEXP lower, SEXP upper, SEXP layout, SEXP inverse);
SEXP transform_logjac(SEXP zeta, SEXP lower, SEXP upper, SEXP layout);
SEXP vi_minibatch(SEXP blk_spec, SEXP prior_spec, SEXP lower, SEXP upper, SEXP control);

#define CALLDEF(name, n) { #name, (DL_FUNC) &name, n }

static const R_CallMethodDef CallEntries[] = {
    CALLDEF(vi_fit, 4),
    CALLDEF(constrain, 3),
    CALLDEF(logdens, 5),
    CALLDEF(native_example, 1),
    CALLDEF(mcmc_sample, 4),
    CALLDEF(glm_quad_fit, 2),
    CALLDEF(glm_incr_fit, 2),
    CALLDEF(glm_taylor, 2),
    CALLDEF(glm_quad_sums, 4),
    CALLDEF(grad_samples, 4),
    CALLDEF(find_mode, 4),
    CALLDEF(family_eval, 1),
    CALLDEF(vi_saa, 4),
    CALLDEF(glm_colstats, 1),
    CALLDEF(glm_wcross, 5),
    CALLDEF(glm_linpred, 4),
    CALLDEF(rb_grad_variance, 4),
    CALLDEF(transform_draws, 5),
    CALLDEF(transform_logjac, 4),
    CALLDEF(vi_minibatch, 5),
    { NULL, NULL, 0 }
};

void R_init_bbvi(DllInfo *dll)
{
    R_registerRoutines(dll, NULL, CallEntries, NULL, NULL);
    R_useDynamicSymbols(dll, FALSE);
    R_forceSymbols(dll, TRUE);
}
