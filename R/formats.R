#' Draws in the formats of the R ecosystem
#'
#' Methods for the `posterior` package's `as_draws()`, `as_draws_matrix()`,
#' `as_draws_df()` and `as_draws_array()`, and for `coda::as.mcmc()`, so
#' that `posterior::summarise_draws()`, `bayesplot` and `coda` work on a fit
#' directly. A variational fit gives its stored draws from q (one "chain");
#' see [as.matrix.bbvi_fit()] for other numbers of draws or PSIS-resampled
#' draws.
#'
#' Draws from q are independent, so MCMC convergence diagnostics (R-hat,
#' effective sample sizes) say nothing about them: `summarise_draws(fit)`
#' on the fit itself gives mean, median, sd, MAD and the 5% and 95%
#' quantiles, without them. (On `as_draws_df(fit)` posterior computes them
#' anyway; they only restate that the draws are independent, not that q is
#' close to the posterior: see [vi_diagnostics()] for that.)
#'
#' @param x,.x A `bbvi_fit`.
#' @param ... Unused by the conversions; for `summarise_draws()`, summary
#'   functions as in [posterior::summarise_draws()] (by default posterior's
#'   `default_summary_measures()`).
#' @return A `draws_matrix`, `draws_df`, `draws_array`, or a `coda::mcmc`
#'   object.
#' @name bbvi-formats
#' @examplesIf requireNamespace("posterior", quietly = TRUE)
#' m <- bbvi_model(function(theta, data) dnorm(theta$mu, 1, 2, log = TRUE),
#'                 list(mu = param()))
#' fit <- bbvi(m, seed = 1)
#' posterior::summarise_draws(fit)
NULL

need_pkg <- function(pkg) {
  if (!requireNamespace(pkg, quietly = TRUE)) {
    cli::cli_abort("This needs the {.pkg {pkg}} package.", call = NULL)
  }
}

#' @rdname bbvi-formats
#' @exportS3Method posterior::as_draws_matrix
as_draws_matrix.bbvi_fit <- function(x, ...) {
  need_pkg("posterior")
  posterior::as_draws_matrix(fit_own_draws(x))
}

#' @rdname bbvi-formats
#' @exportS3Method posterior::as_draws
as_draws.bbvi_fit <- function(x, ...) as_draws_matrix.bbvi_fit(x, ...)

#' @rdname bbvi-formats
#' @exportS3Method posterior::as_draws_df
as_draws_df.bbvi_fit <- function(x, ...) {
  need_pkg("posterior")
  posterior::as_draws_df(as_draws_matrix.bbvi_fit(x))
}

#' @rdname bbvi-formats
#' @exportS3Method posterior::as_draws_array
as_draws_array.bbvi_fit <- function(x, ...) {
  need_pkg("posterior")
  posterior::as_draws_array(as_draws_matrix.bbvi_fit(x))
}

#' @rdname bbvi-formats
#' @exportS3Method coda::as.mcmc
as.mcmc.bbvi_fit <- function(x, ...) {
  need_pkg("coda")
  coda::mcmc(fit_own_draws(x))
}

#' @rdname bbvi-formats
#' @exportS3Method posterior::summarise_draws
summarise_draws.bbvi_fit <- function(.x, ...) {
  need_pkg("posterior")
  dr <- as_draws_df.bbvi_fit(.x)
  if (...length() == 0) {
    posterior::summarise_draws(dr, posterior::default_summary_measures())
  } else {
    posterior::summarise_draws(dr, ...)
  }
}
