# The bbvi_fit object: q on the unconstrained scale (a q object, see
# R/q.R; full-rank and GLM fits keep mean_unc and a dense chol_unc instead),
# the model's bounds to map it back, the optimiser's record, and draws for
# summaries and diagnostics. The draws are kept when draws x D numbers fit
# the budget getOption("bbvi.draws_budget", 4e6); otherwise the fit keeps a
# seed and makes them again when asked, chunk by chunk, so the fit object
# and the memory of every method stay O(D) (O(chunk x D) while drawing).
new_bbvi_fit <- function(model, res, call, draws = 4000, class = character(),
                         extra = list(), diagnostic_draws = 4000) {
  check_count(draws, "draws")
  nms <- model$par_names
  D <- length(nms)
  q <- if (!is.null(res$q)) q_from_c(res$q) else q_gauss_fr(res$mean, res$chol)
  # GLM code maps chol_unc when it un-centres the predictors: keep it dense
  dense <- inherits(q, "q_gauss_fr") || "bbvi_glm_fit" %in% class
  fit <- c(list(
    call = call,
    model = model,
    method = res$method,
    estimator = res$estimator,
    optimizer = res$optimizer,
    par_names = nms,
    lower = model$lower,
    upper = model$upper,
    mean_unc = stats::setNames(q$mean, nms),
    lambda = res$lambda,
    elbo_trace = res$elbo,
    converged = isTRUE(res$converged),
    stop_reason = if (is.null(res$stop_reason)) "converged" else res$stop_reason,
    iterations = res$iterations,
    time = res$time,
    restarts = res$restarts,
    dropped_draws = res$dropped_draws,
    samples = res$control$samples,
    path = if (is.null(res$path)) "stochastic" else res$path,
    n_draws = as.integer(draws)
  ), extra)
  if (dense) {
    fit$chol_unc <- matrix(q_chol(q), D, D, dimnames = list(nms, nms))
  } else {
    fit$q <- q
    if (inherits(q, "q_gauss_lr")) fit$rank <- ncol(q$B)
  }
  fit <- structure(fit, class = c(class, "bbvi_fit"))
  smp <- NULL
  if (dense || as.double(draws) * D <= draws_budget()) {
    smp <- q_sample(fit, draws)
    fit$draws <- smp$theta
  } else {
    fit$draw_seed <- sample.int(.Machine$integer.max, 1L)
  }
  fit$diagnostics <- vi_diagnostics_compute(fit, smp, diagnostic_draws)
  fit
}

draws_budget <- function() {
  b <- getOption("bbvi.draws_budget", 4e6)
  if (!is.numeric(b) || length(b) != 1 || is.na(b) || b < 0) {
    abort_arg("options(bbvi.draws_budget)", "one number >= 0", b)
  }
  b
}

# Draws from q: unconstrained zeta (D x n), their log q, and theta on the
# constrained scale (n x D, one named column per scalar).
q_sample <- function(fit, n) {
  smp <- q_draw(fit_q(fit), n)
  theta <- t(.Call(C_constrain, smp$zeta, as.double(fit$lower), as.double(fit$upper)))
  colnames(theta) <- fit$par_names
  list(zeta = smp$zeta, log_q = smp$log_q, theta = theta)
}

q_draws <- function(fit, n) q_sample(fit, n)$theta

# ---- the fit's own draws, kept or made again from its seed ---------------

# Chunks of about 2^20 numbers; the size depends on D only, so the draws a
# seed gives do not depend on the machine or on how many are asked for (a
# shorter request gets a prefix of a longer one). The option is for tests.
draw_chunk_size <- function(D) {
  max(1L, as.integer(getOption("bbvi.draw_chunk_numbers", 2^20) %/% D))
}

# Calls f(smp, idx) for the fit's first n draws, chunk by chunk: smp as
# from q_sample() for the draws idx. `smp`: the draws in memory (one chunk),
# or NULL to make them from fit$draw_seed.
for_each_draw_chunk <- function(fit, smp, n, f) {
  if (n < 1) return(invisible())
  if (!is.null(smp)) {
    idx <- seq_len(n)
    f(list(zeta = smp$zeta[, idx, drop = FALSE], log_q = smp$log_q[idx],
           theta = smp$theta[idx, , drop = FALSE]), idx)
    return(invisible())
  }
  cs <- draw_chunk_size(length(fit$par_names))
  for (k in seq_len(ceiling(n / cs))) {
    idx <- seq((k - 1) * cs + 1, min(k * cs, n))
    # each chunk its own seed: R code run between chunks (a log-joint
    # that draws) cannot shift the next chunk's draws
    seed <- (fit$draw_seed + 7919 * (k - 1)) %% .Machine$integer.max
    f(with_seed(seed, q_sample(fit, length(idx))), idx)
  }
  invisible()
}

fit_n_draws <- function(fit) {
  if (!is.null(fit$n_draws)) fit$n_draws else nrow(fit$draws)
}

# The fit's first n draws (theta, n x D): the kept ones, or made again.
fit_own_draws <- function(fit, n = fit_n_draws(fit)) {
  if (!is.null(fit$draws)) return(fit$draws[seq_len(n), , drop = FALSE])
  out <- matrix(0, n, length(fit$par_names),
                dimnames = list(NULL, fit$par_names))
  for_each_draw_chunk(fit, NULL, n, function(smp, idx) out[idx, ] <<- smp$theta)
  out
}

# Exact marginal quantiles: the transforms are monotone, so a quantile of
# theta is the transformed quantile of zeta; for a decreasing transform (an
# upper bound only) the p quantile of theta is the transformed 1 - p
# quantile of zeta.
marginal_quantiles <- function(fit, probs) {
  q <- fit_q(fit)
  flip <- !is.finite(fit$lower) & is.finite(fit$upper)
  z <- matrix(q_quantile(q, probs), ncol = length(probs))
  if (any(flip)) {
    z[flip, ] <- matrix(q_quantile(q, 1 - probs), ncol = length(probs))[flip, ]
  }
  th <- .Call(C_constrain, as.double(z), as.double(fit$lower), as.double(fit$upper))
  q <- matrix(th, ncol = length(probs))
  dimnames(q) <- list(fit$par_names, percent_labels(probs))
  q
}

percent_labels <- function(probs) {
  paste0(vapply(100 * probs, format, character(1), digits = 4), "%")
}

# Marginal means and sds on the constrained scale: exact for unbounded
# parameters, Gauss-Hermite quadrature (40 nodes) through the transform for
# bounded ones, so summaries carry no Monte Carlo error. O(D).
marginal_moments <- function(fit) {
  mq <- q_marginals(fit_q(fit))
  m <- mq$mean
  s <- mq$sd
  bounded <- which(is.finite(fit$lower) | is.finite(fit$upper))
  if (length(bounded) > 0) {
    gh <- gauss_hermite(40)
    w <- gh$w / sqrt(pi)
    z <- m[bounded] + sqrt(2) * outer(s[bounded], gh$x)   # nb x 40
    th <- .Call(C_constrain, as.double(t(z)), as.double(fit$lower[bounded]),
                as.double(fit$upper[bounded]))            # nb x 40, by node
    th <- matrix(th, nrow = length(bounded))
    mb <- drop(th %*% w)
    m[bounded] <- mb
    s[bounded] <- sqrt(pmax(drop((th - mb)^2 %*% w), 0))
  }
  list(mean = stats::setNames(m, fit$par_names), sd = stats::setNames(s, fit$par_names))
}

# Nodes and weights of Gauss-Hermite quadrature (Golub-Welsch).
gauss_hermite <- function(n) {
  i <- seq_len(n - 1)
  J <- matrix(0, n, n)
  J[cbind(i, i + 1)] <- J[cbind(i + 1, i)] <- sqrt(i / 2)
  e <- eigen(J, symmetric = TRUE)
  list(x = e$values, w = sqrt(pi) * e$vectors[1, ]^2)
}

#' Methods for variational fits
#'
#' `coef()` gives posterior means and `vcov()` the posterior covariance on
#' the constrained (user) scale; `confint()` gives equal-tailed posterior
#' intervals, exact under q; `as.matrix()` gives draws from q, one named
#' column per scalar parameter; `summary()` a table of mean, sd and
#' quantiles; `plot()` the ELBO trace and the marginal densities.
#'
#' @param object,x A `bbvi_fit`.
#' @param ... Unused.
#' @name bbvi_fit-methods
#' @return See the description.
#' @examples
#' m <- bbvi_model(function(theta, data) dnorm(theta$mu, 1, 2, log = TRUE),
#'                 list(mu = param()))
#' fit <- bbvi(m, seed = 1)
#' coef(fit); vcov(fit); confint(fit)
#' head(as.matrix(fit, draws = 10))
#' head(elbo(fit))
NULL

#' @rdname bbvi_fit-methods
#' @export
coef.bbvi_fit <- function(object, ...) marginal_moments(object)$mean

#' @rdname bbvi_fit-methods
#' @export
vcov.bbvi_fit <- function(object, ...) {
  mom <- marginal_moments(object)
  free <- !is.finite(object$lower) & !is.finite(object$upper)
  S <- q_vcov(fit_q(object))   # dense: only when asked for
  if (!all(free)) {
    # bounded parameters: correlations from the fit's draws, sds exact
    R <- stats::cor(fit_own_draws(object))
    R[free, free] <- stats::cov2cor(S)[free, free]
    S <- R * outer(mom$sd, mom$sd)
  }
  dimnames(S) <- list(object$par_names, object$par_names)
  S
}

#' @rdname bbvi_fit-methods
#' @param parm Parameters (names or indices); all by default.
#' @param level Probability of the interval.
#' @export
confint.bbvi_fit <- function(object, parm, level = 0.95, ...) {
  if (!is.numeric(level) || length(level) != 1 || is.na(level) ||
      level <= 0 || level >= 1) {
    abort_arg("level", "a probability strictly between 0 and 1", level)
  }
  a <- (1 - level) / 2
  q <- marginal_quantiles(object, c(a, 1 - a))
  if (!missing(parm)) q <- q[select_parm(object, parm), , drop = FALSE]
  q
}

select_parm <- function(object, parm) {
  nms <- object$par_names
  ok <- if (is.character(parm)) parm %in% nms else
    is.numeric(parm) && !anyNA(parm) &&
      all(parm >= 1 & parm <= length(nms) & parm == round(parm))
  if (!all(ok)) abort_arg("parm", "parameter names or indices of the fit", parm)
  parm
}

#' @rdname bbvi_fit-methods
#' @param draws Number of draws. The fit has a fixed set (4000 by default):
#'   kept in the fit when they fit in `getOption("bbvi.draws_budget")`
#'   (4e6 numbers), otherwise made again from a stored seed; asking for that
#'   many returns them, another number makes new ones with R's random
#'   number stream.
#' @param psis If `TRUE`, the fit's stored draws resampled (with
#'   replacement) by their Pareto-smoothed importance weights p/q: a
#'   correction of q towards the posterior that is worth having when k-hat is
#'   below 0.7 (see [vi_diagnostics()]).
#' @export
as.matrix.bbvi_fit <- function(x, draws = 4000, psis = FALSE, ...) {
  check_count(draws, "draws")
  check_flag(psis, "psis")
  if (psis) {
    w <- x$diagnostics$weights   # for the fit's first length(w) draws
    idx <- sample.int(length(w), draws, replace = TRUE, prob = w)
    out <- fit_own_draws(x, length(w))[idx, , drop = FALSE]
    rownames(out) <- NULL
    return(out)
  }
  if (draws == fit_n_draws(x)) return(fit_own_draws(x))
  q_draws(x, draws)
}

#' @rdname bbvi_fit-methods
#' @export
summary.bbvi_fit <- function(object, ...) {
  mom <- marginal_moments(object)
  q <- marginal_quantiles(object, c(0.025, 0.5, 0.975))
  tab <- cbind(mean = mom$mean, sd = mom$sd, q)
  structure(list(table = tab, fit = object), class = "summary.bbvi_fit")
}

#' @export
print.summary.bbvi_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  print_fit_header(x$fit)
  cat("\n")
  print(signif(x$table, digits))
  invisible(x)
}

print_fit_header <- function(fit) {
  cat("Variational fit (bbvi)\n")
  if (!is.null(fit$call)) cat("Call:", paste(deparse(fit$call, width.cutoff = 70), collapse = "\n      "), "\n")
  cat(sprintf("Family: %s Gaussian; gradient: %s; path: %s\n",
              fit$method, fit_estimator_label(fit), fit$path))
  print_fit_status(fit)
}

# How the optimisation ended and what the diagnostics say; shared by every
# kind of fit's print and summary.
print_fit_status <- function(fit) {
  cat(sprintf("%s after %d iterations (%.2f s)%s\n",
              if (fit$converged) "Converged" else "NOT converged",
              fit$iterations, fit$time,
              if (fit$converged) "" else paste0(": ", fit$stop_reason)))
  ev <- fit$evals
  if (is.data.frame(ev) && nrow(ev) > 0) {
    cat("Evaluations of log p (gradient):",
        paste(sprintf("%s %s (%s), %.2f s", ev$phase,
                      prettyNum(ev$logp, big.mark = ",", preserve.width = "none"),
                      prettyNum(ev$gradient, big.mark = ",", preserve.width = "none"),
                      ev$seconds), collapse = "; "),
        "\n")
  }
  dg <- fit$diagnostics
  if (!is.null(dg)) {
    cat(sprintf("ELBO %s (MC se %s); KL(q || p) estimate %s nats; Pareto k-hat %s%s%s\n",
                format(dg$elbo, digits = 6), format(dg$elbo_mcse, digits = 2),
                format(signif(dg$kl_hat, 2)),
                format(dg$khat, digits = 2), khat_label(dg$khat, dg$khat_threshold),
                if (dg$n_draws < min(4000L, nrow(fit$draws))) sprintf(" (from %d draws)", dg$n_draws) else ""))
    if (!is.na(dg$max_mean_shift)) {
      cat(sprintf("PSIS check: reweighted means within %s q-sds and sds within %s%% of q's%s\n",
                  format(signif(dg$max_mean_shift, 2)),
                  format(signif(100 * dg$max_sd_change, 2)),
                  if (identical(dg$verdict, "ok")) " (good)" else ""))
    }
    if (isTRUE(dg$n_nonfinite > 0)) {
      cat(sprintf("%d of %d draws from q have a non-finite log-joint (outside the support)\n",
                  dg$n_nonfinite, dg$n_draws))
    }
    if (!identical(dg$verdict, "ok") && !is.null(dg$verdict)) {
      cat("WARNING: q may be inaccurate (see the warning, or vi_diagnostics(fit))\n")
    }
  }
  print_restarts(fit)
}

print_restarts <- function(fit) {
  rs <- fit$restart_summary
  if (is.null(rs)) return(invisible())
  cat(sprintf("Best of %d restarts; their final ELBOs range over %s to %s (spread %s)\n",
              nrow(rs), format(min(rs$elbo), digits = 6), format(max(rs$elbo), digits = 6),
              format(diff(range(rs$elbo)), digits = 3)))
}

khat_label <- function(k, threshold = 0.7) {
  if (is.na(k)) return("")
  if (is.null(threshold) || is.na(threshold)) threshold <- 0.7
  if (k <= threshold) " (reliable)" else
    sprintf(" (> %s: heavy-tailed ratios)", format(signif(threshold, 2)))
}

fit_estimator_label <- function(fit) {
  switch(fit$estimator,
         score = sprintf("score function + control variates, %d draws/iteration", fit$samples),
         reparam = sprintf("reparameterization, %d draws/iteration", fit$samples),
         fit$estimator)
}

#' @rdname bbvi_fit-methods
#' @param digits Significant digits to print.
#' @export
print.bbvi_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  print_fit_header(x)
  mom <- marginal_moments(x)
  tab <- cbind(mean = mom$mean, sd = mom$sd)
  shown <- utils::head(tab, 20)
  cat("\n")
  print(signif(shown, digits))
  if (nrow(tab) > 20) cat(sprintf("... and %d more parameters\n", nrow(tab) - 20))
  invisible(x)
}

#' The ELBO trace of a fit
#'
#' @param fit A `bbvi_fit`.
#' @return A data frame with columns `iteration` and `elbo` (the per-iteration
#'   Monte Carlo estimate).
#' @export
elbo <- function(fit) {
  if (!inherits(fit, "bbvi_fit")) abort_arg("fit", "a bbvi_fit", fit)
  data.frame(iteration = seq_along(fit$elbo_trace), elbo = fit$elbo_trace)
}

#' @rdname bbvi_fit-methods
#' @param plotfun `NULL` for the ELBO trace and marginal densities, or
#'   `"areas"`, `"intervals"`, `"dens"`, `"hist"` (bayesplot's `mcmc_`
#'   plots of the draws, all parameters unless `pars` says otherwise; base
#'   graphics without bayesplot) or `"elbo"` (the ELBO trace alone).
#' @param pars Parameters to show (names); by default up to the first 8.
#' @export
plot.bbvi_fit <- function(x, plotfun = NULL, pars = NULL, ...) {
  if (!is.null(plotfun)) return(plot_dispatch(x, plotfun, pars, ...))
  nms <- if (is.null(pars)) utils::head(x$par_names, 8) else pars
  if (!is.character(nms) || !all(nms %in% x$par_names)) {
    abort_arg("pars", "names of the fit's parameters", pars)
  }
  k <- length(nms) + 1
  nc <- min(3, k)
  old <- graphics::par(mfrow = c(ceiling(k / nc), nc), mar = c(4, 4, 2, 1))
  on.exit(graphics::par(old))
  plot_elbo_trace(x)
  for (nm in nms) {
    d <- stats::density(x$draws[, nm])
    graphics::plot(d, main = nm, xlab = nm, ylab = "density")
  }
  invisible(x)
}
