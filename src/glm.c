/* glm.c: generalized linear model targets (filled in by the GLM work). */
#include "bbvi.h"

void bbvi_glm_target_init(SEXP spec, int dim, int max_batch, bbvi_target *out)
{
    (void) spec; (void) dim; (void) max_batch; (void) out;
    Rf_error("GLM targets are not available yet");
}
