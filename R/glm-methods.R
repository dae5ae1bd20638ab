#' Methods for formula fits
#'
#' `predict()` gives the posterior mean of the linear predictor
#' (`type = "link"`) or of the mean response (`type = "response"`), for the
#' data of the fit or for `newdata` (factor levels are matched to those of
#' the fit). Under the Gaussian q both are exact (the response by
#' Gauss-Hermite quadrature over each linear predictor), and so are their
#' posterior sds (`se.fit = TRUE`). `fitted()` is
#' `predict(type = "response")` on the fit's data; under
#' `na.action = na.exclude` `fitted()`, `predict()` (without `newdata`) and
#' `residuals()` are padded with `NA` for the rows left out, as for [glm()].
#' `posterior_predict()` draws replicated responses. `nobs()` counts the
#' observations with non-zero weight (as [glm()]); `formula()` and
#' `family()` return what their names say. `update()` refits with changed
#' arguments. Unknown arguments are errors. See [bbvi_rstantools] for the
#' rstantools generics, `loo()` and `pp_check()`.
#'
#' @param object A `bbvi_glm_fit`.
#' @param newdata A data frame; `NULL` for the data of the fit.
#' @param type For `predict()`: `"link"` or `"response"`. For
#'   `residuals()`: `"response"` (observed minus fitted mean; for binomial
#'   the observed proportion minus the fitted probability, as [glm()]) or
#'   `"pearson"`.
#' @param offset Offset for `newdata` when the fit used an `offset`
#'   argument (offsets written in the formula are taken from `newdata`).
#' @param trials For binomial `posterior_predict()` on `newdata`: the
#'   number of trials per row (default 1).
#' @param draws Number of posterior draws.
#' @param ... Must be empty (unknown arguments are errors).
#' @return `predict()` and `fitted()`: a numeric vector; `posterior_predict()`:
#'   a draws x observations matrix.
#' @name bbvi_glm_fit-methods
#' @importFrom stats family formula nobs fitted predict residuals
#' @examples
#' fit <- bbvi(am ~ wt, data = mtcars, family = binomial(), seed = 1)
#' predict(fit, newdata = data.frame(wt = c(2, 3, 4)), type = "response")
#' dim(posterior_predict(fit, draws = 100))
#' nobs(fit); formula(fit); family(fit)
NULL

#' @rdname bbvi_glm_fit-methods
#' @param se.fit `TRUE` to return a list with `fit` and `se.fit` (the
#'   posterior sd of the linear predictor or of the mean response), as
#'   [predict.glm()].
#' @export
predict.bbvi_glm_fit <- function(object, newdata = NULL,
                                 type = c("link", "response"), se.fit = FALSE,
                                 offset = NULL, ...) {
  check_dots_empty(...)
  type <- match_arg(type, c("link", "response"), "type")
  check_flag(se.fit, "se.fit")
  des <- glm_newdata(object, newdata, offset)
  beta <- object$mean_unc[object$coef_names]
  m <- drop(des$X %*% beta) + des$offset
  Lb <- object$chol_unc[object$coef_names, , drop = FALSE]
  v <- rowSums((des$X %*% Lb)^2)
  fam <- object$family$family
  if (type == "link" || fam == "gaussian") {
    out <- m
    se <- sqrt(v)
  } else if (fam == "poisson") {
    out <- exp(m + v / 2)
    se <- sqrt(expm1(v)) * out
  } else {
    gh <- gauss_hermite(32)
    z <- sqrt(2) * gh$x; wz <- gh$w / sqrt(pi)
    p <- stats::plogis(outer(m, rep(1, length(z))) + outer(sqrt(v), z))
    out <- drop(p %*% wz)
    se <- sqrt(pmax(drop(p^2 %*% wz) - out^2, 0))
  }
  out <- stats::setNames(out, des$rownames)
  se <- stats::setNames(se, des$rownames)
  if (is.null(newdata)) {
    out <- stats::naresid(object$na.action, out)
    se <- stats::naresid(object$na.action, se)
  }
  if (se.fit) list(fit = out, se.fit = se) else out
}

#' @rdname bbvi_glm_fit-methods
#' @export
fitted.bbvi_glm_fit <- function(object, ...) {
  check_dots_empty(...)
  predict(object, type = "response")
}

#' @rdname bbvi_glm_fit-methods
#' @export
residuals.bbvi_glm_fit <- function(object, type = c("response", "pearson"), ...) {
  check_dots_empty(...)
  type <- match_arg(type, c("response", "pearson"), "type")
  mu <- predict(object, type = "response")
  mu <- mu[!is.na(mu)]
  fam <- object$family$family
  y <- if (fam == "binomial") object$y / object$trials else object$y
  r <- y - mu
  if (type == "pearson") {
    r <- r * sqrt(object$weights) / switch(fam,
      gaussian = 1,
      poisson = sqrt(mu),
      binomial = sqrt(mu * (1 - mu) / object$trials))
  }
  stats::naresid(object$na.action, stats::setNames(r, names(mu)))
}

#' @rdname bbvi_glm_fit-methods
#' @export
posterior_predict.bbvi_glm_fit <- function(object, newdata = NULL, draws = 4000,
                                           offset = NULL, trials = NULL, ...) {
  check_dots_empty(...)
  check_count(draws, "draws")
  des <- glm_newdata(object, newdata, offset)
  th <- as.matrix(object, draws = draws)
  eta <- th[, object$coef_names, drop = FALSE] %*% t(des$X)
  eta <- sweep(eta, 2, des$offset, "+")
  n <- nrow(eta); k <- ncol(eta)
  out <- switch(object$family$family,
    gaussian = eta + th[, "sigma"] * matrix(stats::rnorm(n * k), n, k),
    poisson = matrix(stats::rpois(n * k, exp(eta)), n, k),
    binomial = {
      tr <- glm_trials(object, newdata, trials, k)
      matrix(stats::rbinom(n * k, rep(tr, each = n), stats::plogis(eta)), n, k)
    })
  colnames(out) <- des$rownames
  out
}

glm_trials <- function(object, newdata, trials, k) {
  tr <- if (!is.null(trials)) trials else if (is.null(newdata)) object$trials else 1
  if (!is.numeric(tr) || !(length(tr) %in% c(1, k)) || anyNA(tr) || any(tr < 0) ||
      any(tr != round(tr))) {
    abort_arg("trials", sprintf("non-negative whole numbers (1 or %d)", k), trials)
  }
  rep_len(tr, k)
}

#' @rdname bbvi_glm_fit-methods
#' @export
nobs.bbvi_glm_fit <- function(object, ...) {
  check_dots_empty(...)
  sum(object$weights != 0)
}

#' @rdname bbvi_glm_fit-methods
#' @param x A `bbvi_glm_fit`.
#' @export
formula.bbvi_glm_fit <- function(x, ...) x$formula

#' @rdname bbvi_glm_fit-methods
#' @export
family.bbvi_glm_fit <- function(object, ...) object$family

# Model matrix and offset for newdata, with the fit's factor levels.
glm_newdata <- function(object, newdata, offset) {
  if (is.null(newdata)) {
    X <- glm_model_matrix(object)
    rn <- object$row_names
    return(list(X = X, offset = object$offset,
                rownames = if (!is.null(rn)) as.character(rn)))
  }
  if (is.null(object$terms)) return(glm_newdata_matrix(object, newdata, offset))
  if (!is.data.frame(newdata) && !is.list(newdata)) {
    abort_arg("newdata", "a data frame", newdata)
  }
  tt <- stats::delete.response(object$terms)
  mf <- tryCatch(
    stats::model.frame(tt, newdata, na.action = stats::na.pass, xlev = object$xlevels),
    error = function(e) {
      cli::cli_abort(c("{.arg newdata} does not fit the model.",
                       x = "{conditionMessage(e)}"), call = NULL)
    })
  X <- stats::model.matrix(tt, mf, contrasts.arg = object$contrasts)
  off <- stats::model.offset(mf)
  if (is.null(off)) off <- rep(0, nrow(X))
  if (!is.null(offset)) {
    if (!is.numeric(offset) || !(length(offset) %in% c(1, nrow(X)))) {
      abort_arg("offset", sprintf("numbers (1 or %d)", nrow(X)), offset)
    }
    off <- off + offset
  } else if (isTRUE(object$has_offset_arg)) {
    cli::cli_abort(c("The fit used an {.arg offset} argument: give {.arg offset} for {.arg newdata}.",
                     i = "Or write the offset in the formula, e.g. {.code offset(log(exposure))}."),
                   call = NULL)
  }
  list(X = X, offset = off, rownames = rownames(X))
}

# newdata for a fit from a matrix (bbvi.matrix()): a numeric matrix with the
# columns of the fit's x (by name when it has names).
glm_newdata_matrix <- function(object, newdata, offset) {
  icpt <- isTRUE(as.logical(object$model$target$intercept))
  cols <- if (icpt) object$coef_names[-1] else object$coef_names
  if (is.data.frame(newdata)) newdata <- as.matrix(newdata)
  if (!is.numeric(newdata) || !is.matrix(newdata) || ncol(newdata) != length(cols)) {
    abort_arg("newdata", sprintf("a numeric matrix with the %d columns of the fit's x", length(cols)), newdata)
  }
  if (!is.null(colnames(newdata)) && all(cols %in% colnames(newdata))) newdata <- newdata[, cols, drop = FALSE]
  X <- if (icpt) cbind(1, newdata) else newdata
  storage.mode(X) <- "double"
  colnames(X) <- object$coef_names
  off <- rep(0, nrow(X))
  if (!is.null(offset)) {
    if (!is.numeric(offset) || !(length(offset) %in% c(1, nrow(X)))) {
      abort_arg("offset", sprintf("numbers (1 or %d)", nrow(X)), offset)
    }
    off <- off + offset
  } else if (isTRUE(object$has_offset_arg)) {
    cli::cli_abort("The fit used an {.arg offset}: give {.arg offset} for {.arg newdata}.", call = NULL)
  }
  list(X = X, offset = off, rownames = rownames(X))
}

# ---- print and summary -----------------------------------------------------

#' @rdname bbvi_glm_fit-methods
#' @export
summary.bbvi_glm_fit <- function(object, ...) {
  s <- NextMethod()
  class(s) <- c("summary.bbvi_glm_fit", class(s))
  s
}

#' @export
print.summary.bbvi_glm_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  check_digits(digits)
  glm_header(x$fit)
  tab <- x$table
  coefs <- x$fit$coef_names
  cat("\nCoefficients:\n")
  print_table(tab[coefs, , drop = FALSE], digits)
  aux <- setdiff(rownames(tab), coefs)
  if (length(aux)) {
    cat("\nAuxiliary parameter:\n")
    print_table(tab[aux, , drop = FALSE], digits)
  }
  cat(vi_summary_note())
  invisible(x)
}

#' @export
print.bbvi_glm_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  check_digits(digits)
  glm_header(x)
  tab <- vi_median_mad(x)
  coefs <- x$coef_names
  cat("\n")
  print_compact(tab[intersect(coefs, rownames(tab)), , drop = FALSE], digits)
  aux <- setdiff(rownames(tab), coefs)
  if (length(aux)) {
    cat("\nAuxiliary parameter:\n")
    print_table(tab[aux, , drop = FALSE], digits)
  }
  invisible(x)
}

glm_header <- function(fit) {
  fam <- fit$family
  say(sprintf("Variational fit (bbvi): %s regression, %s link", fam$family, fam$link))
  if (is.null(fit$formula)) {
    say("Design:       a numeric matrix (no formula)")
  } else {
    say_call(fit$formula, "Formula:      ")
  }
  say(sprintf("Observations: %d; coefficients: %d", fit$nobs, length(fit$coef_names)))
  cat("Priors:\n")
  pr <- fit$prior
  if ("(Intercept)" %in% fit$coef_names)
    cat("  intercept:   ", format_prior(pr$prior_intercept), "\n")
  if (length(setdiff(fit$coef_names, "(Intercept)")))
    cat("  coefficients:", format_prior(pr$prior), "\n")
  if (fam$family == "gaussian")
    cat("  sigma:       ", format_prior(pr$prior_aux, half = TRUE), "\n")
  how <- if (startsWith(fit$path, "quadrature")) {
    sprintf("exact expectations (closed form / %d-node Gauss-Hermite quadrature), variational Newton steps",
            fit$nodes %||% 32L)
  } else fit_estimator_label(fit)
  say(sprintf("Method: %s Gaussian q; path: %s; gradient: %s", fit$method, fit$path, how))
  print_fit_status(fit)
}


`%||%` <- function(a, b) if (is.null(a)) b else a

# ---- log p at many draws on a large GLM ---------------------------------------

# The diagnostics need log p(y, z) at thousands of draws; on a GLM each one
# is a pass over the N rows. For large N the log-likelihood is instead
# expanded to second order in the linear predictors around q's mean (one
# pass: sums of the per-row values, gradients and Hessians, exact), and what
# the expansion misses is estimated from a fixed random subsample of rows:
# the difference estimator (Quiroz, Kohn, Villani and Tran, 2019). The
# remainder per row is third order in eta - m, which shrinks as 1/sqrt(N),
# so the estimate's standard error is tiny; it is computed for every draw
# and checked on a pilot before the route is taken. Gaussian GLMs need no
# subsample: their log-likelihood is exactly quadratic in beta given sigma.
# Returns function(zeta) -> log p at the columns of zeta, or NULL when the
# exact route is cheap enough or the estimate would not be accurate.
glm_taylor_logdens <- function(fit, diagnostic_draws) {
  tg <- fit$model$target
  if (!glm_taylor_applies(tg, diagnostic_draws)) return(NULL)
  N <- nrow(tg$X)
  P <- length(tg$names)
  center <- as.double(fit$mean_unc[seq_len(P)])
  gaussian <- tg$family == glm_family_code[["gaussian"]]
  # the expansion of all rows, one pass in C; priors (and sigma's Jacobian)
  # alone: the target with no likelihood
  full <- glm_taylor_part(tg, center)
  prior_spec <- glm_rows_spec(tg, 1L, prior = TRUE)
  prior_spec$weights <- 0
  # the subsample, in interleaved groups: the spread of the groups'
  # remainders gives the estimate's standard error
  groups <- list()
  if (!gaussian) {
    rows <- with_seed(fit_row_seed(fit), sort(sample.int(N, min(N, glm_taylor_rows))))
    groups <- lapply(split(rows, rep_len(seq_len(glm_taylor_groups), length(rows))),
                     function(r) {
                       spec <- glm_rows_spec(tg, r, prior = FALSE)
                       list(spec = spec, taylor = glm_taylor_part(spec, center))
                     })
    n <- length(rows)
  }
  sw <- if (is.null(tg$weights)) N else sum(tg$weights)
  logdens <- function(zeta) {
    delta <- zeta[seq_len(P), , drop = FALSE] - center
    ld <- function(spec) .Call(C_logdens, spec, as.double(fit$lower),
                               as.double(fit$upper), zeta, FALSE)
    prior <- ld(prior_spec)
    if (gaussian) {
      sigma <- exp(zeta[P + 1L, ])
      out <- tg$llconst - sw * log(sigma) + full(delta) / sigma^2 + prior
      return(structure(out, se = numeric(ncol(zeta))))
    }
    # each group's remainder: its exact log-likelihood minus its expansion
    R <- vapply(groups, function(gr) ld(gr$spec) - gr$taylor(delta), numeric(ncol(zeta)))
    R <- matrix(R, ncol = length(groups))
    G <- ncol(R)
    est <- N / n * rowSums(R)
    se <- if (n < N) N / n * sqrt(G * (1 - n / N) * apply(R, 1, stats::var)) else 0 * est
    structure(tg$llconst + full(delta) + est + prior, se = se)
  }
  # the pilot: the estimate must be good to a small fraction of a nat at
  # q's draws, or the exact route is taken
  pilot <- logdens(with_seed(fit_row_seed(fit) %% 1e9 + 1, q_sample(fit, 64L))$zeta)
  if (!all(is.finite(pilot)) || max(attr(pilot, "se")) > glm_taylor_max_se) return(NULL)
  logdens
}

# The log-likelihood's second-order expansion of a GLM spec's rows around
# `center` (src/glm.c): a function of delta (P x S) = beta - center.
glm_taylor_part <- function(spec, center) {
  tay <- .Call(C_glm_taylor, spec, center)
  function(delta) {
    tay$a + colSums(delta * tay$g) + 0.5 * colSums(delta * (tay$H %*% delta))
  }
}

# A GLM spec of some rows of tg (their likelihood, without the data's
# constant), with tg's priors or none.
glm_rows_spec <- function(tg, rows, prior) {
  spec <- tg
  spec$X <- tg$X[rows, , drop = FALSE]
  for (what in c("y", "weights", "offset", "trials")) {
    if (!is.null(tg[[what]])) spec[[what]] <- tg[[what]][rows]
  }
  spec$llconst <- 0
  if (!prior) {
    spec$prior_type[] <- prior_code[["flat"]]
    spec$aux_type <- 0L
  }
  spec
}

# rows of the subsample, in groups; the standard error a draw's estimate
# may have
glm_taylor_rows <- 4000L
glm_taylor_groups <- 8L
glm_taylor_max_se <- 0.05

# Worth it when the exact route would have to cut the diagnostic draws
# (see diagnostic_draw_count()): an in-memory GLM with many rows.
glm_taylor_applies <- function(tg, diagnostic_draws) {
  is.list(tg) && identical(tg$type, "glm") && is.matrix(tg$X) &&
    isTRUE(getOption("bbvi.glm_taylor_diagnostics", TRUE)) &&
    as.double(nrow(tg$X)) * max(1, ncol(tg$X)) * diagnostic_draws > glm_exact_diag_work
}

# multiply-adds the exact route may spend on the diagnostics (about a second)
glm_exact_diag_work <- 1e8

fit_row_seed <- function(fit) {
  if (!is.null(fit$draw_seed)) fit$draw_seed else 20261127L
}
