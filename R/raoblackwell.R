# Rao-Blackwellized score gradients (src/raoblackwell.c): a model with
# `factors` fitted with the score estimator. q is a product with one block
# per parameter, and each block's score is weighted by the factors that
# touch it. Every such fit measures what that buys (fit$diagnostics$
# rao_blackwell).

# Does this fit use the Rao-Blackwellized estimator?
rb_applies <- function(model, estimator) {
  !is.null(model$factors) && identical(estimator, "score")
}

# The last steps of a custom model's fit: the Rao-Blackwellization
# measurement (rb), and the evaluations by phase (the diagnostics' time
# counted from t0).
finish_custom_fit <- function(fit, rb, st, res, t0, checks) {
  if (rb) {
    fit$diagnostics$rao_blackwell <-
      rb_gradient_variance(fit, draws = rb_diag_draws(length(fit$lambda)))
  }
  fit$evals <- fit_evals(st, res, fit$diagnostics$n_draws,
                         proc.time()[["elapsed"]] - t0, checks)
  if (isTRUE(fit$model$numeric_gradient)) {
    # each numeric gradient took 2D log-joint evaluations besides its point's
    fit$evals$logp <- fit$evals$logp + 2 * length(fit$mean_unc) * fit$evals$gradient
  }
  fit
}

# The length of each parameter on the unconstrained scale (contract item 2:
# `unc_sizes` when the model has it).
model_unc_sizes <- function(model) {
  as.integer(if (is.null(model$unc_sizes)) model$sizes else model$unc_sizes)
}

#' Variance of the plain and the Rao-Blackwellized score gradients
#'
#' At a fit's q, draws `draws` points once and computes, coordinate by
#' coordinate of the variational parameters, the variance across those
#' draws of one draw's term of the plain score-function estimator (weight
#' log p - log q) and of the Rao-Blackwellized one (each block's weight
#' restricted to the factors that touch it), both with their control
#' variates. An estimate from S draws has these variances divided by S.
#'
#' @param fit A `bbvi_fit` of a model with `factors`, fitted with the score
#'   estimator.
#' @param draws Number of draws from q.
#' @param control_variates Apply the control variates (as the fit does).
#' @param seed As in [bbvi()].
#' @return A list: `var_plain` and `var_rb`, the total variance over the
#'   variational parameters, `ratio` = var_plain / var_rb, `draws` (the
#'   draws with a finite log-joint), and `per_coordinate`, a data frame of
#'   both variances per variational parameter.
#' @noRd
rb_gradient_variance <- function(fit, draws = 1000, control_variates = TRUE,
                                 seed = NULL) {
  model <- fit$model
  if (!inherits(fit, "bbvi_fit") || is.null(model$factors) || is.null(fit$q_blocks)) {
    abort_arg("fit", "a fit of a model with `factors` made with the score estimator", fit)
  }
  check_count(draws, "draws")
  check_flag(control_variates, "control_variates")
  control <- list(family = "meanfield", rank = 0L, blocks = fit$q_blocks,
                  par_sizes = model_unc_sizes(model),
                  lambda = as.double(fit$lambda), draws = as.integer(max(draws, 3)),
                  control_variates = as.integer(control_variates),
                  enumerate = as.integer(isTRUE(fit$enumerated)))
  res <- with_seed(seed, .Call(C_rb_grad_variance, r_target_spec(model),
                               as.double(fit$lower), as.double(fit$upper), control))
  vp <- sum(res$var_plain)
  vr <- sum(res$var_rb)
  pc <- data.frame(var_plain = res$var_plain, var_rb = res$var_rb)
  out <- list(var_plain = vp, var_rb = vr, ratio = vp / vr, draws = res$n)
  # the fit's estimator: discrete logits by enumeration through the factors
  if (!is.null(res$var_enum)) {
    pc$var_enum <- res$var_enum
    out$var_enum <- sum(res$var_enum)
    out$ratio_enum <- vp / out$var_enum
  }
  c(out, list(per_coordinate = pc))
}

# Draws for the measurement a fit stores: 1000, fewer (down to 200) when q
# has many variational parameters K, so that each K x draws buffer holds
# about 4e6 numbers at most.
rb_diag_draws <- function(K) as.integer(min(1000, max(200, floor(4e6 / K))))

# The line print() and summary() show for such a fit
rb_print_line <- function(rb) {
  out <- sprintf("Rao-Blackwellized score gradient: %s times lower variance than the plain one (%s vs %s, from %d draws at q)",
                 format(signif(rb$ratio, 3)), format(signif(rb$var_rb, 3)),
                 format(signif(rb$var_plain, 3)), rb$draws)
  if (is.null(rb$ratio_enum)) return(out)
  paste0(out, sprintf("; with the discrete parameters' values enumerated through the factors, %s times",
                      format(signif(rb$ratio_enum, 3))))
}
