# Is the GLM posterior proper? With flat priors on some coefficients, a
# binomial or poisson likelihood can keep rising without bound along a
# direction in coefficient space: perfect or quasi-complete separation, or
# an all-0 (all-1) response. No optimiser finds a maximum there, but it does
# stop somewhere (a line search that can no longer make progress, a step
# limit), and that point used to be reported as converged. The test: along
# the ray from the origin through q's mean, and along each flat-prior
# coordinate, a proper posterior falls once it is past its mass; an
# improper one keeps rising. Runs for both the quadrature and the stochastic
# path.
glm_check_proper <- function(model, res) {
  tg <- model$target
  flat <- tg$prior_type == 0L
  if (!any(flat) || tg$family == 0L) return(res)   # gaussian: not checked here
  P <- length(tg$prior_type)
  mu <- as.double(res$mean)
  sd <- sqrt(rowSums(matrix(res$chol, length(mu))^2))
  # rays: the whole mean, and each flat coordinate that sits more than one
  # sd from 0 (doubling a coordinate near 0 moves it nowhere)
  dirs <- list(mu)
  for (j in which(flat[seq_len(P)] & abs(mu[seq_len(P)]) > sd[seq_len(P)])) {
    dirs[[length(dirs) + 1]] <- replace(numeric(length(mu)), j, mu[j])
  }
  pts <- do.call(cbind, lapply(dirs, function(d) cbind(mu + d, mu + 3 * d)))
  lp <- as.double(.Call(C_logdens, tg, as.double(model$lower), as.double(model$upper),
                        cbind(mu, pts), FALSE))
  lp0 <- lp[1]
  rising <- vapply(seq_along(dirs), function(k) {
    a <- lp[2 * k]; b <- lp[2 * k + 1]
    is.finite(a) && is.finite(b) && a >= lp0 - 1e-6 && b >= a - 1e-6
  }, logical(1))
  if (!any(rising)) return(res)
  res$converged <- FALSE
  res$stop <- NA_integer_
  res$stop_reason <- "no proper posterior: the log density keeps rising along a direction of the coefficients"
  y <- tg$y / pmax(tg$trials, 1)
  cause <- if (all(y == 0) || (tg$family == 1L && all(y == 1)))
    sprintf("the response is all %d, so the intercept runs off to %sInf",
            if (all(y == 0)) 0L else 1L, if (all(y == 0)) "-" else "+")
  else if (tg$family == 1L) "the predictors separate the 0s from the 1s (perfect or quasi-complete separation)"
  else "some coefficient can grow without bound (for instance a factor level with all-zero counts)"
  cli::cli_warn(c(
    "The posterior is improper: {cause}, and {cli::qty(sum(flat))}the prior{?s} on {.val {model$par_names[which(flat)]}} {?is/are} flat.",
    x = "The fit stopped at an arbitrary point (coefficients around {format(max(abs(mu)), digits = 3)}); it is not an answer.",
    i = "Use a proper prior (the defaults are weakly informative), or drop the separating predictor."),
    call = NULL)
  res
}
