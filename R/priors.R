#' Prior distributions for formula models
#'
#' Priors for the coefficients of [bbvi.formula()] fits, with rstanarm's
#' conventions: the objects are lists of the same shape as rstanarm's
#' (`dist`, `df`, `location`, `scale`, `autoscale`), so rstanarm's prior
#' objects are accepted as they are, and attaching both packages in either
#' order gives the same priors. `NULL` (instead of a prior object) means a
#' flat, improper prior.
#'
#' **Autoscaling (rstanarm's rules).** With `autoscale = TRUE`, for a
#' gaussian model every scale is multiplied by `sd(y)`; the coefficient
#' scales are then divided by the sd of their model-matrix column (by 1 for
#' a constant column; binary columns are scaled like any other, as in
#' rstanarm 2.21); the [exponential()] rate of `sigma` is divided by
#' `sd(y)`. With `autoscale = FALSE` (the constructors' default, as in
#' rstanarm) the prior is used exactly as written. The defaults of
#' [bbvi.formula()] are rstanarm's: `normal(0, 2.5, autoscale = TRUE)` for
#' the coefficients and for the intercept (whose prior applies with centred
#' predictors; the default intercept prior is centred at `mean(y)` for a
#' gaussian model, at 0 otherwise) and `exponential(1, autoscale = TRUE)`
#' for `sigma`. [prior_summary()] shows the priors as specified and as
#' adjusted.
#'
#' `location` and `scale` may be vectors, one entry per coefficient they
#' apply to. `scale = NULL` means 2.5 (1 for `prior_aux`). For the residual
#' sd `sigma` of a gaussian model (`prior_aux`), `normal()`, `student_t()`
#' and `cauchy()` mean their half versions truncated at 0; `exponential()`
#' is only meaningful there. `cauchy()` is `student_t(df = 1)` (as in
#' rstanarm, its `dist` is `"t"`).
#'
#' @param location Prior location(s): finite numbers.
#' @param scale Prior scale(s): positive finite numbers, or `NULL` for the
#'   default.
#' @param df Degrees of freedom of the Student t: positive numbers.
#' @param rate Rate of the exponential: one positive finite number (stored
#'   as `scale = 1 / rate`, as rstanarm does).
#' @param autoscale `TRUE` to rescale by the data's sds (see above).
#' @return A list of class `bbvi_prior` with elements `dist`, `df`,
#'   `location`, `scale` and `autoscale`.
#' @examples
#' normal(0, 2.5)
#' normal(0, 2.5, autoscale = TRUE)
#' student_t(df = 3, location = 0, scale = c(1, 2))
#' cauchy(0, 2.5)
#' exponential(1)
#' fit <- bbvi(mpg ~ wt, data = mtcars, seed = 1)
#' prior_summary(fit)
#' @name priors
NULL

#' @rdname priors
#' @export
normal <- function(location = 0, scale = NULL, autoscale = FALSE) {
  check_prior_numbers(location, "location", positive = FALSE)
  if (!is.null(scale)) check_prior_numbers(scale, "scale")
  check_flag(autoscale, "autoscale")
  new_bbvi_prior("normal", df = NA, location = location, scale = scale,
                 autoscale = autoscale)
}

#' @rdname priors
#' @export
student_t <- function(df = 1, location = 0, scale = NULL, autoscale = FALSE) {
  check_prior_numbers(df, "df")
  check_prior_numbers(location, "location", positive = FALSE)
  if (!is.null(scale)) check_prior_numbers(scale, "scale")
  check_flag(autoscale, "autoscale")
  new_bbvi_prior("t", df = df, location = location, scale = scale,
                 autoscale = autoscale)
}

#' @rdname priors
#' @export
cauchy <- function(location = 0, scale = NULL, autoscale = FALSE) {
  student_t(df = 1, location = location, scale = scale, autoscale = autoscale)
}

#' @rdname priors
#' @export
exponential <- function(rate = 1, autoscale = FALSE) {
  check_prior_numbers(rate, "rate")
  if (length(rate) != 1) abort_arg("rate", "one positive number", rate)
  check_flag(autoscale, "autoscale")
  new_bbvi_prior("exponential", df = NA, location = NA, scale = 1 / rate,
                 autoscale = autoscale)
}

new_bbvi_prior <- function(dist, df, location, scale, autoscale) {
  # the element order of rstanarm's objects
  structure(list(dist = dist, df = df, location = location, scale = scale,
                 autoscale = autoscale), class = "bbvi_prior")
}

check_prior_numbers <- function(x, arg, positive = TRUE) {
  if (!is.numeric(x) || length(x) < 1 || anyNA(x) || any(!is.finite(x)) ||
      (positive && any(x <= 0))) {
    abort_arg(arg, if (positive) "positive finite numbers" else "finite numbers", x)
  }
  invisible(x)
}

format_num <- function(x, digits = 4) {
  s <- format(signif(x, digits), digits = digits, trim = TRUE, drop0trailing = TRUE)
  if (length(s) == 1) s else sprintf("c(%s)", paste(s, collapse = ", "))
}

#' @export
format.bbvi_prior <- function(x, ...) format_prior_obj(x)

format_prior_obj <- function(x, digits = 4) {
  x <- prior_defaults(x, 2.5)
  auto <- if (isTRUE(x$autoscale)) ", autoscale = TRUE" else ""
  switch(x$dist,
    normal = sprintf("normal(location = %s, scale = %s%s)", format_num(x$location, digits),
                     format_num(x$scale, digits), auto),
    t = if (all(x$df == 1)) {
      sprintf("cauchy(location = %s, scale = %s%s)", format_num(x$location, digits),
              format_num(x$scale, digits), auto)
    } else {
      sprintf("student_t(df = %s, location = %s, scale = %s%s)", format_num(x$df, digits),
              format_num(x$location, digits), format_num(x$scale, digits), auto)
    },
    exponential = sprintf("exponential(rate = %s%s)", format_num(1 / x$scale, digits), auto))
}

#' @export
print.bbvi_prior <- function(x, ...) {
  cat("<bbvi_prior>", format(x), "\n")
  invisible(x)
}

format_prior <- function(p, half = FALSE) {
  if (is.null(p)) return("flat (improper)")
  s <- format_prior_obj(p)
  if (half && p$dist != "exponential") paste("half-", s, sep = "") else s
}

# Prior codes as C reads them (see src/glm.h).
# The codes src/glm.h's PRIOR_* and GLM_* enums use: the one place they
# are mapped on the R side.
prior_code <- c(flat = 0L, normal = 1L, t = 2L, exponential = 3L)
glm_family_code <- c(gaussian = 0L, binomial = 1L, poisson = 2L)

# Checks a prior argument: NULL, or a list shaped as bbvi's and rstanarm's
# prior objects (dist, df, location, scale, autoscale). Returns NULL or a
# normalised bbvi_prior (old-style dist names mapped, default flag kept).
check_prior_arg <- function(p, arg, aux = FALSE) {
  if (is.null(p)) return(NULL)
  ok <- c("normal", "t", "student_t", "cauchy", if (aux) "exponential")
  if (!is.list(p) || !is.character(p$dist) || length(p$dist) != 1) {
    abort_arg(arg, "NULL (flat) or a prior made by normal(), student_t(), cauchy() or exponential()", p)
  }
  if (!(p$dist %in% ok)) {
    if (p$dist == "exponential") {
      cli::cli_abort(c("{.arg {arg}} cannot be {.fn exponential}: coefficients are not positive.",
                       i = "Use {.fn normal}, {.fn student_t}, {.fn cauchy} or NULL."), call = NULL)
    }
    cli::cli_abort(c("{.arg {arg}}: the {.val {p$dist}} prior is not available in bbvi.",
                     i = "Use {.fn normal}, {.fn student_t}, {.fn cauchy}{if (aux) ', {.fn exponential}' else ''} or NULL."),
                   call = NULL)
  }
  dist <- switch(p$dist, student_t = "t", cauchy = "t", p$dist)
  df <- if (p$dist == "cauchy") 1 else p$df
  if (dist == "normal") df <- NA
  loc <- p$location
  if (dist != "exponential") {
    if (!is.null(loc) && !(length(loc) == 1 && is.na(loc))) check_prior_numbers(loc, "location", positive = FALSE)
    if (dist == "t") {
      if (is.null(df) || anyNA(df)) df <- 1
      check_prior_numbers(df, "df")
    }
  } else if (!is.null(p$rate)) {
    p$scale <- 1 / p$rate         # bbvi < 0.2 stored the rate
  }
  if (!is.null(p$scale)) check_prior_numbers(p$scale, "scale")
  out <- new_bbvi_prior(dist, df = df, location = loc, scale = p$scale,
                        autoscale = isTRUE(p$autoscale))
  if (isTRUE(p$default)) out$default <- TRUE
  out
}

# Fills scale = NULL (default) and location = NULL/NA (0).
prior_defaults <- function(p, default_scale) {
  if (is.null(p)) return(NULL)
  if (is.null(p$scale)) p$scale <- default_scale
  if (p$dist != "exponential" && (is.null(p$location) ||
                                  (length(p$location) == 1 && is.na(p$location)))) {
    p$location <- 0
  }
  p
}

# rstanarm's adjustments (rstanarm:::stan_glm.fit, version 2.21.3): the
# priors as used, from the priors as specified, the model matrix, the
# response and the family. `intercept_default` is TRUE for the default
# intercept prior (then centred at mean(y) for a gaussian model).
adjust_priors <- function(prior, prior_intercept, prior_aux, X, is_int, y,
                          family, xsd = NULL) {
  gaussian_fam <- family == "gaussian"
  ss <- if (gaussian_fam && length(y) > 1) stats::sd(y) else 1
  if (!is.finite(ss) || ss <= 0) ss <- 1
  p <- prior_defaults(prior, 2.5)
  if (!is.null(p) && p$autoscale && any(!is_int)) {
    if (gaussian_fam) p$scale <- ss * p$scale
    # xsd: the columns' sds computed without copying X (glm_colstats())
    xs <- if (!is.null(xsd)) xsd else apply(X[, !is_int, drop = FALSE], 2, function(x) {
      if (length(unique(x)) == 1) 1 else stats::sd(x)
    })
    p$scale <- pmax(1e-12, p$scale / xs)
  }
  pi <- prior_intercept
  if (!is.null(pi) && isTRUE(pi$default)) {
    pi$location <- if (gaussian_fam) mean(y) else 0
  }
  pi <- prior_defaults(pi, 2.5)
  if (!is.null(pi) && pi$autoscale && gaussian_fam) pi$scale <- ss * pi$scale
  pa <- prior_defaults(prior_aux, 1)
  if (!is.null(pa) && pa$autoscale && gaussian_fam) pa$scale <- ss * pa$scale
  list(prior = p, prior_intercept = pi, prior_aux = if (gaussian_fam) pa)
}

# Per-coefficient prior codes and parameters (3 x k: location, scale, df)
# from an adjusted prior.
expand_prior <- function(p, k, arg, names) {
  if (k == 0) return(list(type = integer(0), par = matrix(0, 3, 0)))
  if (is.null(p)) return(list(type = rep(prior_code[["flat"]], k), par = matrix(c(0, 1, 1), 3, k)))
  p <- prior_defaults(p, 2.5)
  fit_len <- function(x, what) {
    if (length(x) == 1) return(rep(x, k))
    if (length(x) != k) {
      lens <- if (k == 1) "1" else sprintf("1 or %d (one per coefficient)", k)
      cli::cli_abort(c("{.arg {arg}}: {.arg {what}} must have length {lens}.",
                       x = "It has length {length(x)}.",
                       i = if (k <= 10) "The coefficients are {.val {names}}."), call = NULL)
    }
    x
  }
  df <- if (p$dist == "normal") Inf else p$df
  list(type = rep(prior_code[[p$dist]], k),
       par = rbind(fit_len(p$location, "location"), fit_len(p$scale, "scale"),
                   fit_len(df, "df")))
}

aux_prior_spec <- function(p) {
  if (is.null(p)) return(list(type = prior_code[["flat"]], par = c(0, 1, 1)))
  p <- prior_defaults(p, 1)
  if (p$dist == "exponential") return(list(type = prior_code[["exponential"]], par = c(1 / p$scale, 1, 1)))
  if (length(p$location) > 1 || length(p$scale) > 1 || length(p$df) > 1) {
    cli::cli_abort("{.arg prior_aux} must have scalar parameters.", call = NULL)
  }
  list(type = prior_code[[p$dist]],
       par = c(p$location, p$scale, if (p$dist == "normal") Inf else p$df))
}
