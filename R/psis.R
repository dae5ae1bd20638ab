#' How far can a variational fit be trusted?
#'
#' Every fit carries these diagnostics, computed from its stored draws from
#' q (up to 4000; fewer for an expensive log-joint, see `n_draws`):
#'
#' * `khat`: the Pareto k-hat of the importance ratios p(x, z) / q(z)
#'   (Yao, Vehtari, Simpson and Gelman 2018), from Pareto-smoothed
#'   importance sampling in the `loo` package. Below 0.5 q is close to the
#'   posterior; 0.5-0.7 is usable; above 0.7 q misses posterior mass (too
#'   narrow, a missed mode or a heavy tail) and its summaries are unreliable:
#'   the fit warns. k-hat looks at the far tail: a Gaussian q on the log or
#'   logit scale has lighter tails than most posteriors of bounded
#'   parameters (a Gamma posterior is exponential-tailed on the log scale),
#'   so such fits can show a large k-hat while their means and central
#'   intervals are accurate; `log_ratio_sd`, the sd of log p - log q over
#'   the draws, says how far q is from p where q has its mass (0 when q is
#'   exact). A mode that q never reaches cannot be seen by any importance
#'   sampling diagnostic. `options(bbvi.warn_khat = FALSE)` turns the
#'   warning off (the diagnostic is still computed and printed).
#' * `elbo`, `elbo_mcse`: the ELBO at the final q, estimated from the same
#'   draws, and its Monte Carlo standard error.
#' * `n_draws`: how many of the stored draws these use: all of them (up to
#'   4000) unless the log-joint is expensive (the diagnostics take at most a
#'   quarter of the fit's time, or half a second, but at least 100 draws).
#' * `weights`: the Pareto-smoothed normalised importance weights, used by
#'   `as.matrix(fit, psis = TRUE)`.
#' * `stop_reason`: why the optimiser stopped.
#'
#' @param fit A `bbvi_fit`.
#' @return `vi_diagnostics()` returns a list with the elements above (for a
#'   fit, its stored copy).
#' @references Yao, Y., Vehtari, A., Simpson, D. and Gelman, A. (2018). Yes,
#'   but did it work?: Evaluating variational inference. ICML.
#' @examples
#' m <- bbvi_model(function(theta, data) dnorm(theta$mu, 1, 2, log = TRUE),
#'                 list(mu = param()))
#' fit <- bbvi(m, seed = 1)
#' str(vi_diagnostics(fit)[c("khat", "elbo", "elbo_mcse", "stop_reason")])
#' @export
vi_diagnostics <- function(fit, ...) UseMethod("vi_diagnostics")

#' @rdname vi_diagnostics
#' @param ... Unused.
#' @export
vi_diagnostics.bbvi_fit <- function(fit, ...) fit$diagnostics

#' @export
vi_diagnostics.default <- function(fit, ...) abort_arg("fit", "a bbvi_fit", fit)

# Computed once when the fit is made, from the draws it keeps.
vi_diagnostics_compute <- function(fit, smp) {
  lp <- diagnostic_logdens(fit, smp$zeta)
  log_ratio <- as.double(lp) - smp$log_q[seq_along(lp)]
  ok <- is.finite(log_ratio)
  n_ok <- sum(ok)
  weights <- numeric(length(log_ratio))
  khat <- NA_real_
  lr_sd <- if (n_ok > 1) stats::sd(log_ratio[ok]) else NA_real_
  if (n_ok >= 10 && lr_sd <= 1e-8 * max(1, abs(mean(log_ratio[ok])))) {
    # q equals p up to rounding: uniform weights (loo's tail fit degenerates)
    khat <- 0
    weights[ok] <- 1 / n_ok
  } else if (n_ok >= 100) {
    # loo warns about large k itself; the fit gives its own warning below
    ps <- suppressWarnings(loo::psis(log_ratio[ok], r_eff = 1))
    khat <- as.double(loo::pareto_k_values(ps))
    weights[ok] <- as.double(stats::weights(ps, log = FALSE, normalize = TRUE))
  } else {
    # too few draws for a Pareto tail fit: no k-hat (NA), uniform weights
    weights[ok] <- 1 / max(n_ok, 1)
  }
  out <- list(
    khat = khat,
    elbo = if (n_ok > 0) mean(log_ratio[ok]) else NA_real_,
    elbo_mcse = if (n_ok > 1) stats::sd(log_ratio[ok]) / sqrt(n_ok) else NA_real_,
    log_ratio_sd = lr_sd,
    n_draws = length(log_ratio), n_finite = n_ok,
    weights = weights, stop_reason = fit$stop_reason)
  if (!is.na(khat) && khat > 0.7 && isTRUE(getOption("bbvi.warn_khat", TRUE))) {
    # plain warning(): cli's formatting costs more than a small GLM fit
    warning(sprintf(paste0(
      "Pareto k-hat is %s (> 0.7): the importance ratios p/q are heavy-tailed.\n",
      "i q's tails are lighter than the posterior's or it misses a mode (log p - log q has sd %s over q's draws); sds and tail quantiles may be off.\n",
      "i Try `method = \"fullrank\"`, or check with `sample_mcmc()`."),
      format(khat, digits = 2), format(out$log_ratio_sd, digits = 2)),
      call. = FALSE)
  }
  out
}

fit_target_spec <- function(fit) r_target_spec(fit$model, err_call = call("bbvi"))

# log p at the first draws of zeta (at most 4000: k-hat sees heavy tails
# better with more draws), in chunks, as many as the time budget allows:
# the diagnostics may take max(0.5 s, a quarter of the fit's time), but use
# at least 100 draws (or all, if fewer). For a cheap log-joint that is all
# of them; for an expensive one (a GLM with N = 100,000) a few hundred, and
# k-hat is then a rougher estimate (`n_draws` says how many).
diagnostic_logdens <- function(fit, zeta, chunk = 50L, min_draws = 100L,
                               max_draws = 4000L) {
  spec <- fit_target_spec(fit)
  n <- min(ncol(zeta), max_draws)
  budget <- max(0.5, 0.25 * fit$time)
  out <- numeric(0)
  start <- proc.time()[["elapsed"]]
  while (length(out) < n) {
    idx <- seq(length(out) + 1L, min(n, length(out) + chunk))
    lp <- .Call(C_logdens, spec, as.double(fit$lower), as.double(fit$upper),
                zeta[, idx, drop = FALSE], FALSE)
    out <- c(out, as.double(lp))
    used <- proc.time()[["elapsed"]] - start
    per_draw <- used / length(out)
    if (length(out) >= min_draws && used + chunk * per_draw > budget) break
    # what the budget still allows, in one call (calls have a fixed cost)
    chunk <- max(50L, min(n - length(out), floor((budget - used) / max(per_draw, 1e-9))))
  }
  out
}
