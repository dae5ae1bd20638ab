#' Draws of the ELBO gradient estimators
#'
#' Runs an estimator `n` times at a fixed q (by default the fitted one) and
#' returns every gradient estimate, to compare the noise of the
#' score-function estimator with and without control variates and of the
#' reparameterization estimator. The score estimator's control variates
#' are those its fit used: a baseline per variational parameter and, for a
#' mean-field score fit from the mode (up to 20 parameters), the quadratic
#' one built from log p's Hessian at the mode (see `control_variates` in
#' [bbvi()]).
#'
#' @param fit A `bbvi_fit`; its model and its q are used.
#' @param estimator `"score"` or `"reparam"`.
#' @param samples Draws per estimate (S).
#' @param n Number of independent estimates.
#' @param control_variates For the score estimator: use control variates.
#' @param lambda Variational parameters to evaluate at; by default the
#'   fit's. Named as in the result's columns.
#' @param seed As in [bbvi()].
#' @return A list: `grad`, an `n` x K matrix of gradient estimates (one
#'   column per variational parameter, named `mu[...]` and `log_sd[...]` for
#'   mean-field, `mu[...]` and `L[i,j]` (log of the diagonal) for full-rank),
#'   and `elbo`, the `n` ELBO estimates made with them.
#' @examples
#' m <- bbvi_model(function(theta, data) dnorm(theta$mu, 1, 2, log = TRUE),
#'                 list(mu = param()),
#'                 gradient = function(theta, data) -(theta$mu - 1) / 4)
#' fit <- bbvi(m, seed = 1)
#' g <- elbo_gradients(fit, "score", n = 200, seed = 1)
#' apply(g$grad, 2, var)
#' @export
elbo_gradients <- function(fit, estimator = c("score", "reparam"), samples = 10,
                           n = 100, control_variates = TRUE, lambda = NULL,
                           seed = NULL) {
  if (!inherits(fit, "bbvi_fit") || !inherits(fit$model, "bbvi_model")) {
    abort_arg("fit", "a bbvi_fit", fit)
  }
  estimator <- match_arg(estimator, c("score", "reparam"), "estimator")
  estimator <- resolve_estimator(estimator, fit$model$has_gradient)
  check_count(samples, "samples")
  check_count(n, "n")
  check_flag(control_variates, "control_variates")
  nms <- if (is.null(fit$q_blocks)) lambda_names(fit$method, unc_names(fit), fit$rank) else
    block_lambda_names(fit)
  if (is.null(lambda)) lambda <- fit$lambda
  if (!is.numeric(lambda) || length(lambda) != length(nms) || anyNA(lambda)) {
    abort_arg("lambda", sprintf("%d numbers", length(nms)), lambda)
  }
  control <- list(family = fit$method,
                  rank = as.integer(if (is.null(fit$rank)) 0L else fit$rank),
                  estimator = estimator,
                  samples = as.integer(samples), n = as.integer(n),
                  lambda = as.double(lambda),
                  control_variates = as.integer(control_variates),
                  blocks = fit$q_blocks,   # q as a product (see q_blocks_for())
                  par_sizes = if (!is.null(fit$q_blocks)) model_unc_sizes(fit$model))
  qc <- fit$quadratic_cv
  if (estimator == "score" && control_variates && !is.null(qc)) {
    # the quadratic control variate works on z = zeta - mode (unit
    # scales): the means move by the mode, the log sds and the gradient
    # do not
    D <- length(qc$mode)
    control$precond_diag <- rep(1, D)
    control$shift <- as.double(qc$mode)
    control$quadratic <- as.double(qc$hessian)
    control$lambda[seq_len(D)] <- control$lambda[seq_len(D)] - qc$mode
  }
  res <- with_seed(seed, .Call(C_grad_samples, fit_target_spec(fit),
                               as.double(fit$lower), as.double(fit$upper), control))
  g <- t(res$grad)
  colnames(g) <- nms
  list(grad = g, elbo = res$elbo)
}

# Names of the variational parameters, in the C layout (see families.c).
lambda_names <- function(method, par_names, rank = NULL) {
  D <- length(par_names)
  mu <- sprintf("mu[%s]", par_names)
  if (method == "meanfield") return(c(mu, sprintf("log_sd[%s]", par_names)))
  if (method == "lowrank") {
    return(c(mu, sprintf("B[%s,%d]", rep(par_names, rank), rep(seq_len(rank), each = D)),
             sprintf("log_d[%s]", par_names)))
  }
  idx <- which(lower.tri(diag(D), diag = TRUE), arr.ind = TRUE)
  idx <- idx[order(idx[, "col"], idx[, "row"]), , drop = FALSE]
  c(mu, sprintf("L[%s,%s]", par_names[idx[, "row"]], par_names[idx[, "col"]]))
}

# The same for q as a product of mean-field blocks, one per parameter (a
# model with `factors`): each block's means, then its log sds.
block_lambda_names <- function(fit) {
  dims <- vapply(fit$q_blocks, function(b) as.integer(b$dim), integer(1))
  ends <- cumsum(dims)
  starts <- ends - dims + 1L
  unlist(Map(function(a, b, blk) {
    nm <- unc_names(fit)[a:b]
    switch(blk$family %||% "meanfield",
           given = given_lambda_names(nm, blk),
           gamma = c(sprintf("log_mean[%s]", nm), sprintf("log_shape[%s]", nm)),
           beta = c(sprintf("logit_mean[%s]", nm), sprintf("log_conc[%s]", nm)),
           categorical = unlist(Map(function(x, k) sprintf("logit[%s=%d]", x, k),
                                    nm, lapply(seq_along(nm), function(i)
                                      blk$lower[i] + seq_len(blk$n_values[i] - 1L)))),
           lambda_names("meanfield", nm))
  }, starts, ends, fit$q_blocks), use.names = FALSE)
}

# a conditional block (R/discrete.R): g's logits, then b's means and log sds
# given each value of g
given_lambda_names <- function(nm, blk) {
  p <- length(nm) / 2L
  gi <- if (isTRUE(blk$g_first == 1L)) seq_len(p) else p + seq_len(p)
  g <- nm[gi]
  b <- nm[-gi]
  vals <- lapply(seq_len(p), function(j) blk$lower[j] + seq_len(blk$n_values[j]) - 1L)
  given <- unlist(Map(function(bj, gj, v) sprintf("%s|%s=%d", bj, gj, v), b, g, vals))
  c(unlist(Map(function(gj, v) sprintf("logit[%s=%d]", gj, v[-1]), g, vals)),
    sprintf("m[%s]", given), sprintf("log_s[%s]", given))
}
