#' Prior distributions for formula models
#'
#' Priors for the coefficients of [bbvi.formula()] fits, written on the
#' scale of the model matrix (no rescaling happens behind your back).
#' `location` and `scale` may be vectors, one entry per coefficient they
#' apply to. `NULL` (instead of a prior object) means a flat, improper prior.
#' For the residual sd `sigma` of a gaussian model (`prior_aux`), `normal()`,
#' `student_t()` and `cauchy()` mean their half versions truncated at 0;
#' `exponential()` is only meaningful there.
#'
#' @param location Prior location(s): finite numbers.
#' @param scale Prior scale(s): positive finite numbers.
#' @param df Degrees of freedom of the Student t: positive finite numbers.
#' @param rate Rate of the exponential: one positive finite number.
#' @return An object of class `bbvi_prior`.
#' @examples
#' normal(0, 2.5)
#' student_t(df = 3, location = 0, scale = c(1, 2))
#' cauchy(0, 2.5)
#' exponential(1)
#' @name priors
NULL

#' @rdname priors
#' @export
normal <- function(location = 0, scale = 2.5) {
  check_prior_numbers(location, "location", positive = FALSE)
  check_prior_numbers(scale, "scale")
  new_bbvi_prior("normal", location = location, scale = scale, df = Inf)
}

#' @rdname priors
#' @export
student_t <- function(df = 1, location = 0, scale = 2.5) {
  check_prior_numbers(df, "df")
  check_prior_numbers(location, "location", positive = FALSE)
  check_prior_numbers(scale, "scale")
  new_bbvi_prior("student_t", location = location, scale = scale, df = df)
}

#' @rdname priors
#' @export
cauchy <- function(location = 0, scale = 2.5) {
  check_prior_numbers(location, "location", positive = FALSE)
  check_prior_numbers(scale, "scale")
  new_bbvi_prior("cauchy", location = location, scale = scale, df = 1)
}

#' @rdname priors
#' @export
exponential <- function(rate = 1) {
  check_prior_numbers(rate, "rate")
  if (length(rate) != 1) abort_arg("rate", "one positive number", rate)
  new_bbvi_prior("exponential", rate = rate)
}

new_bbvi_prior <- function(dist, ...) {
  structure(c(list(dist = dist), list(...)), class = "bbvi_prior")
}

check_prior_numbers <- function(x, arg, positive = TRUE) {
  if (!is.numeric(x) || length(x) < 1 || anyNA(x) || any(!is.finite(x)) ||
      (positive && any(x <= 0))) {
    abort_arg(arg, if (positive) "positive finite numbers" else "finite numbers", x)
  }
  invisible(x)
}

format_num <- function(x) {
  s <- format(x, digits = 4, trim = TRUE)
  if (length(s) == 1) s else sprintf("c(%s)", paste(s, collapse = ", "))
}

#' @export
format.bbvi_prior <- function(x, ...) {
  switch(x$dist,
    normal = sprintf("normal(location = %s, scale = %s)", format_num(x$location),
                     format_num(x$scale)),
    student_t = sprintf("student_t(df = %s, location = %s, scale = %s)",
                        format_num(x$df), format_num(x$location), format_num(x$scale)),
    cauchy = sprintf("cauchy(location = %s, scale = %s)", format_num(x$location),
                     format_num(x$scale)),
    exponential = sprintf("exponential(rate = %s)", format_num(x$rate)))
}

#' @export
print.bbvi_prior <- function(x, ...) {
  cat("<bbvi_prior>", format(x), "\n")
  invisible(x)
}

format_prior <- function(p, half = FALSE) {
  if (is.null(p)) return("flat (improper)")
  s <- format(p)
  if (half && p$dist != "exponential") paste("half-", s, sep = "") else s
}

# Prior codes as C reads them (see src/glm.h).
prior_code <- c(flat = 0L, normal = 1L, student_t = 2L, cauchy = 2L, exponential = 3L)

check_prior_arg <- function(p, arg) {
  if (!is.null(p) && !inherits(p, "bbvi_prior")) {
    abort_arg(arg, "NULL (flat) or a prior made by normal(), student_t(), cauchy() or exponential()", p)
  }
  invisible(p)
}

# Per-coefficient prior codes and parameters (3 x k: location, scale, df).
expand_prior <- function(p, k, arg, names) {
  if (k == 0) return(list(type = integer(0), par = matrix(0, 3, 0)))
  if (is.null(p)) return(list(type = rep(0L, k), par = matrix(c(0, 1, 1), 3, k)))
  if (p$dist == "exponential") {
    cli::cli_abort(c("{.arg {arg}} cannot be {.fn exponential}: coefficients are not positive.",
                     i = "Use {.fn normal}, {.fn student_t}, {.fn cauchy} or NULL."), call = NULL)
  }
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
  list(type = rep(prior_code[[p$dist]], k),
       par = rbind(fit_len(p$location, "location"), fit_len(p$scale, "scale"),
                   fit_len(p$df, "df")))
}

aux_prior_spec <- function(p) {
  if (is.null(p)) return(list(type = 0L, par = c(0, 1, 1)))
  if (length(p$location) > 1 || length(p$scale) > 1 || length(p$df) > 1) {
    cli::cli_abort("{.arg prior_aux} must have scalar parameters.", call = NULL)
  }
  if (p$dist == "exponential") return(list(type = 3L, par = c(p$rate, 1, 1)))
  list(type = prior_code[[p$dist]], par = c(p$location, p$scale, p$df))
}
