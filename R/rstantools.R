#' rstantools generics, loo and bayesplot for formula fits
#'
#' bbvi takes these generics from \pkg{rstantools}, the package that
#' rstanarm and brms take them from, and re-exports them, so attaching
#' bbvi and rstanarm in either order leaves one generic with methods for
#' both packages' fits. All of them work on the draws of the variational
#' posterior q (independent draws: no autocorrelation, so `r_eff = 1` for
#' `loo()`).
#'
#' * `posterior_linpred()`: draws of the linear predictor (`transform =
#'   TRUE`: of the mean, as `posterior_epred()`).
#' * `posterior_epred()`: draws of the mean response (for binomial, of the
#'   success probability, as rstanarm).
#' * `posterior_predict()`: draws of replicated responses (see
#'   [predict.bbvi_glm_fit()]).
#' * `log_lik()`: the draws x observations matrix of pointwise
#'   log-likelihoods (times the prior weights), for `loo()` and `waic()`.
#' * `loo()`: PSIS leave-one-out cross-validation (\pkg{loo} package) from
#'   `log_lik()`.
#' * `predictive_interval()`: central intervals of `posterior_predict()`.
#' * `posterior_interval()`: central posterior intervals of the parameters
#'   (exact quantiles of q, as [confint()][confint.bbvi_fit]).
#' * `bayes_R2()`: draws of the Bayesian R-squared of Gelman, Goodrich,
#'   Gabry and Vehtari (2019), as rstanarm's (residual variance from the
#'   model: `sigma^2`, the binomial or the poisson variance).
#' * `prior_summary()`: the priors as specified and as adjusted by
#'   autoscaling (see [priors]).
#' * `pp_check()`: a posterior predictive check by \pkg{bayesplot}
#'   (`bayesplot::ppc_<plotfun>(y, yrep)`).
#' * `as.array()`: draws as an iterations x 1 chain x parameters array (as
#'   \pkg{bayesplot}'s `mcmc_*()` functions want, e.g.
#'   `bayesplot::mcmc_areas(fit)`); `as.data.frame()`: draws as a data
#'   frame, one column per parameter.
#'
#' @param object,x A formula fit (`bbvi_glm_fit`); for `as.array()`,
#'   `as.data.frame()` and `posterior_interval()` any `bbvi_fit`.
#' @param newdata A data frame, or `NULL` for the data of the fit
#'   (`log_lik()` needs the response in it).
#' @param transform For `posterior_linpred()`: `TRUE` for the mean response.
#' @param draws Number of draws from q.
#' @param offset,trials See [predict.bbvi_glm_fit()].
#' @param prob Probability mass of the central interval.
#' @param pars Parameter names; `NULL` for all.
#' @param plotfun The bayesplot `ppc_` function, without its prefix.
#' @param nreps Number of replicated data sets for `pp_check()`.
#' @param ... Must be empty (unknown arguments are errors), except for
#'   `pp_check()`, which passes them on to the bayesplot function.
#' @return Matrices of draws (draws x observations) for
#'   `posterior_linpred()`, `posterior_epred()`, `posterior_predict()` and
#'   `log_lik()`; a matrix with one row per observation or parameter for
#'   the intervals; a vector of draws for `bayes_R2()`; a `loo` object; a
#'   `ggplot` for `pp_check()`.
#' @references Gelman, A., Goodrich, B., Gabry, J. and Vehtari, A. (2019).
#'   R-squared for Bayesian regression models. The American Statistician.
#' @examples
#' fit <- bbvi(mpg ~ wt + factor(cyl), data = mtcars, seed = 1)
#' prior_summary(fit)
#' posterior_interval(fit, prob = 0.9)
#' dim(posterior_epred(fit, draws = 100))
#' head(predictive_interval(fit, draws = 500))
#' summary(bayes_R2(fit))
#' loo(fit)
#' dim(as.array(fit))
#' @name bbvi_rstantools
NULL

#' @importFrom rstantools posterior_predict posterior_epred posterior_linpred
#' @importFrom rstantools log_lik prior_summary predictive_interval
#' @importFrom rstantools posterior_interval bayes_R2
#' @importFrom loo loo
#' @export
rstantools::posterior_predict
#' @export
rstantools::posterior_epred
#' @export
rstantools::posterior_linpred
#' @export
rstantools::log_lik
#' @export
rstantools::prior_summary
#' @export
rstantools::predictive_interval
#' @export
rstantools::posterior_interval
#' @export
rstantools::bayes_R2
#' @export
loo::loo

#' @rdname bbvi_rstantools
#' @export
posterior_linpred.bbvi_glm_fit <- function(object, transform = FALSE, newdata = NULL,
                                           draws = 4000, offset = NULL, ...) {
  check_dots_empty(...)
  check_flag(transform, "transform")
  check_count(draws, "draws")
  des <- glm_newdata(object, newdata, offset)
  th <- as.matrix(object, draws = draws)
  eta <- th[, object$coef_names, drop = FALSE] %*% t(des$X)
  eta <- sweep(eta, 2, des$offset, "+")
  if (transform) eta <- object$family$linkinv(eta)
  dimnames(eta) <- list(NULL, des$rownames)
  eta
}

#' @rdname bbvi_rstantools
#' @export
posterior_epred.bbvi_glm_fit <- function(object, newdata = NULL, draws = 4000,
                                         offset = NULL, ...) {
  check_dots_empty(...)
  posterior_linpred(object, transform = TRUE, newdata = newdata, draws = draws,
                    offset = offset)
}

#' @rdname bbvi_rstantools
#' @export
log_lik.bbvi_glm_fit <- function(object, newdata = NULL, draws = 4000,
                                 offset = NULL, ...) {
  check_dots_empty(...)
  check_count(draws, "draws")
  fam <- object$family$family
  if (is.null(newdata)) {
    y <- object$y; tr <- object$trials; w <- object$weights
  } else {
    mf <- tryCatch(
      stats::model.frame(object$terms, newdata, na.action = stats::na.pass,
                         xlev = object$xlevels),
      error = function(e) {
        cli::cli_abort(c("{.arg newdata} does not fit the model (log_lik() needs the response too).",
                         x = "{conditionMessage(e)}"), call = NULL)
      })
    resp <- glm_response(stats::model.response(mf, "any"), object$family, nrow(mf))
    y <- resp$y; tr <- resp$trials; w <- rep(1, length(y))
  }
  th <- as.matrix(object, draws = draws)
  des <- glm_newdata(object, newdata, offset)
  eta <- th[, object$coef_names, drop = FALSE] %*% t(des$X)
  eta <- sweep(eta, 2, des$offset, "+")
  n <- nrow(eta)
  Y <- matrix(y, n, length(y), byrow = TRUE)
  ll <- switch(fam,
    gaussian = stats::dnorm(Y, eta, th[, "sigma"], log = TRUE),
    poisson = stats::dpois(Y, exp(eta), log = TRUE),
    binomial = stats::dbinom(Y, matrix(tr, n, length(y), byrow = TRUE),
                             stats::plogis(eta), log = TRUE))
  ll <- sweep(ll, 2, w, "*")
  dimnames(ll) <- list(NULL, des$rownames)
  ll
}

#' @rdname bbvi_rstantools
#' @export
loo.bbvi_glm_fit <- function(x, ..., draws = 4000) {
  check_dots_empty(...)
  ll <- log_lik(x, draws = draws)
  ll <- ll[, x$weights != 0, drop = FALSE]
  loo::loo(ll, r_eff = rep(1, ncol(ll)))
}

#' @rdname bbvi_rstantools
#' @export
predictive_interval.bbvi_glm_fit <- function(object, prob = 0.9, newdata = NULL,
                                             draws = 4000, offset = NULL,
                                             trials = NULL, ...) {
  check_dots_empty(...)
  check_prob(prob)
  yrep <- posterior_predict(object, newdata = newdata, draws = draws,
                            offset = offset, trials = trials)
  rstantools::predictive_interval(yrep, prob = prob)
}

#' @rdname bbvi_rstantools
#' @export
posterior_interval.bbvi_fit <- function(object, prob = 0.9, pars = NULL, ...) {
  check_dots_empty(...)
  check_prob(prob)
  q <- marginal_quantiles(object, c((1 - prob) / 2, (1 + prob) / 2))
  if (!is.null(pars)) {
    bad <- setdiff(pars, rownames(q))
    if (!is.character(pars) || length(bad)) {
      abort_arg("pars", "names of parameters of the fit", pars)
    }
    q <- q[pars, , drop = FALSE]
  }
  colnames(q) <- percent_labels(c((1 - prob) / 2, (1 + prob) / 2))
  q
}

check_prob <- function(prob) {
  if (!is.numeric(prob) || length(prob) != 1 || is.na(prob) || prob <= 0 || prob >= 1) {
    abort_arg("prob", "one number between 0 and 1", prob)
  }
  invisible(prob)
}

#' @rdname bbvi_rstantools
#' @export
bayes_R2.bbvi_glm_fit <- function(object, draws = 4000, ...) {
  check_dots_empty(...)
  th <- as.matrix(object, draws = draws)
  eta <- th[, object$coef_names, drop = FALSE] %*% t(glm_model_matrix(object))
  eta <- sweep(eta, 2, object$offset, "+")
  p <- object$family$linkinv(eta)
  fam <- object$family$family
  mu <- if (fam == "binomial") sweep(p, 2, object$trials, "*") else p
  var_mu <- apply(mu, 1, stats::var)
  var_e <- switch(fam,
    gaussian = th[, "sigma"]^2,
    poisson = rowMeans(mu),
    binomial = rowMeans(mu * (1 - p)))
  var_mu / (var_mu + var_e)
}

#' @rdname bbvi_rstantools
#' @export
prior_summary.bbvi_glm_fit <- function(object, digits = 2, ...) {
  check_dots_empty(...)
  nms <- object$coef_names
  has_int <- "(Intercept)" %in% nms
  spec <- object$prior_specified
  adj <- object$prior
  parts <- list(
    prior_intercept = if (has_int) list(specified = spec$prior_intercept,
                                        adjusted = adj$prior_intercept),
    prior = if (any(nms != "(Intercept)")) list(specified = spec$prior, adjusted = adj$prior),
    prior_aux = if (object$family$family == "gaussian") list(specified = spec$prior_aux,
                                                          adjusted = adj$prior_aux))
  structure(Filter(Negate(is.null), parts), class = "prior_summary.bbvi_fit",
            digits = digits, centered = !is.null(object$xbar),
            coef_names = nms[nms != "(Intercept)"])
}

#' @param digits Significant digits shown.
#' @rdname bbvi_rstantools
#' @export
print.prior_summary.bbvi_fit <- function(x, digits = attr(x, "digits"), ...) {
  check_dots_empty(...)
  cat("Priors for the variational fit (bbvi)\n")
  labels <- c(prior_intercept = if (isTRUE(attr(x, "centered")))
                "Intercept (after predictors centered)" else "Intercept",
              prior = "Coefficients", prior_aux = "Auxiliary (sigma)")
  for (nm in names(x)) {
    cat("\n", labels[[nm]], "\n", sep = "")
    sp <- x[[nm]]$specified
    ad <- x[[nm]]$adjusted
    half <- nm == "prior_aux"
    if (is.null(sp)) {
      cat("  ~ flat (improper)\n")
      next
    }
    cat("  Specified prior:\n    ~ ", prior_line(sp, digits, half), "\n", sep = "")
    if (!identical(prior_line(sp, digits, half, FALSE), prior_line(ad, digits, half, FALSE))) {
      cat("  Adjusted prior:\n    ~ ", prior_line(ad, digits, half, FALSE), "\n", sep = "")
    }
  }
  cat("------\nSee help('priors', package = 'bbvi') for how priors are autoscaled.\n")
  invisible(x)
}

prior_line <- function(p, digits, half, show_auto = TRUE) {
  if (!show_auto) p$autoscale <- FALSE
  if (isTRUE(p$default) && is.null(p$location)) p$location <- 0
  s <- format_prior_obj(p, digits = digits)
  if (half && p$dist != "exponential") paste0("half-", s) else s
}

#' @rdname bbvi_rstantools
#' @exportS3Method bayesplot::pp_check
pp_check.bbvi_glm_fit <- function(object, plotfun = "dens_overlay", nreps = 50, ...) {
  if (!requireNamespace("bayesplot", quietly = TRUE)) {
    cli::cli_abort("{.fn pp_check} needs the {.pkg bayesplot} package.", call = NULL)
  }
  if (!is.character(plotfun) || length(plotfun) != 1 || is.na(plotfun)) {
    abort_arg("plotfun", "the name of a bayesplot ppc_ function", plotfun)
  }
  fun_name <- sub("^ppc_", "", plotfun)
  fun <- get0(paste0("ppc_", fun_name), envir = asNamespace("bayesplot"), mode = "function")
  if (is.null(fun)) {
    cli::cli_abort(c("{.arg plotfun}: bayesplot has no {.fn ppc_{fun_name}}.",
                     i = "See {.code bayesplot::available_ppc()}."), call = NULL)
  }
  check_count(nreps, "nreps")
  yrep <- posterior_predict(object, draws = nreps)
  y <- object$y
  fun(y, yrep, ...)
}

#' @rdname bbvi_rstantools
#' @export
as.array.bbvi_fit <- function(x, draws = 4000, ...) {
  check_dots_empty(...)
  m <- as.matrix(x, draws = draws)
  array(m, dim = c(nrow(m), 1L, ncol(m)),
        dimnames = list(iterations = NULL, chains = "chain:1",
                        parameters = colnames(m)))
}

#' @rdname bbvi_rstantools
#' @param row.names,optional Unused (as [as.data.frame()]).
#' @export
as.data.frame.bbvi_fit <- function(x, row.names = NULL, optional = FALSE, ...,
                                   draws = 4000) {
  check_dots_empty(...)
  as.data.frame(as.matrix(x, draws = draws), row.names = row.names,
                optional = optional)
}

# A clear error for objects no package has a method for (rstantools has no
# default method).
#' @export
posterior_predict.default <- function(object, ...) {
  abort_arg("object", "a GLM fitted by {.fn bbvi} with a formula", object)
}
