#' Check a model's gradient against finite differences
#'
#' Compares the gradient a [bbvi_model()] was given with central finite
#' differences of its log-joint, on the constrained (user) scale, at a few
#' points inside the support. [bbvi()] and [sample_mcmc()] run this check
#' (at 3 points) before they start, and stop with an error naming the
#' parameter that disagrees: a gradient with a sign error or in the wrong
#' order would otherwise give a wrong answer without a word.
#'
#' The default points are where a fit starts (0 on the unconstrained scale,
#' i.e. 0 for a real parameter, `lower + 1` for a positive one, the middle
#' of an interval) and points a little away from it (deterministic offsets
#' of up to 1 on the unconstrained scale), so that a symmetric target does
#' not hide a sign error. The step for parameter value x is
#' 1e-5 max(1, |x|) (less near a bound), so the finite-difference error is
#' about 1e-10 relative; an entry disagrees when
#' |analytic - numeric| > `tol` max(1, |numeric|) plus the rounding error of
#' the difference (which grows with |log-joint|). Points where the log-joint
#' is not finite are skipped.
#'
#' @param model A [bbvi_model()] with an R `gradient`.
#' @param points `NULL` for the default points (see Details), or the points
#'   to check on the constrained scale: a named list like `init` in
#'   [bbvi()] (one point), a list of such lists, or a matrix with one row
#'   per point and one column per scalar parameter (in the order of
#'   `parameters`, or named like the fit's parameters, e.g. `beta[2]`).
#' @param n Number of default points (when `points` is `NULL`).
#' @param tol Relative tolerance (see Details).
#' @return A data frame of class `bbvi_gradient_check`, one row per point
#'   and scalar parameter: `point`, `parameter`, `analytic`, `numeric`,
#'   `rel_error` (|analytic - numeric| / max(1, |numeric|)) and `ok`
#'   (`NA` at a point where the log-joint is not finite). Its attribute
#'   `"ok"` is `TRUE` when every checked entry agrees. Printing it lists the
#'   entries that disagree.
#' @examples
#' m <- bbvi_model(function(theta, data) sum(dnorm(data, theta$mu, theta$s, log = TRUE)),
#'                 list(mu = param(), s = param(lower = 0)), data = c(1, 2, 4),
#'                 gradient = function(theta, data) {
#'                   r <- data - theta$mu
#'                   list(mu = sum(r) / theta$s^2,
#'                        s = sum(r^2) / theta$s^3 - length(data) / theta$s)
#'                 })
#' check_gradient(m)
#' @export
check_gradient <- function(model, points = NULL, n = 3, tol = 1e-3) {
  if (!inherits(model, "bbvi_model")) abort_arg("model", "a model made by {.fn bbvi_model}", model)
  if (!is.function(model$logjoint) || !is.function(model$gradient)) {
    cli::cli_abort(c("{.fn check_gradient} needs a model with an R {.arg gradient}.",
                     i = "This model's log-joint is {model$kind}, {if (isTRUE(model$numeric_gradient)) 'with a numeric gradient (finite differences of the log-joint: nothing to check)' else if (model$has_gradient) 'with a compiled gradient' else 'without a gradient'}."),
                   call = NULL)
  }
  check_count(n, "n")
  check_positive(tol, "tol")
  pts <- gradient_check_points(model, points, n)
  gradient_check_table(model, pts, tol, err_call = call("check_gradient"),
                       coords = continuous_coords(model))
}

# Coordinates a gradient is checked at: all but the discrete ones (NULL:
# all), which have no derivative and need no entry in the gradient.
continuous_coords <- function(model, coords = NULL) {
  disc <- integer_coords(model)
  if (!any(disc)) return(coords)
  keep <- which(!disc)
  if (is.null(coords)) keep else intersect(coords, keep)
}

# The check run before a fit: the R callbacks of a model (a vectorized
# log-joint must give each draw's value whatever the other draws are; a
# gradient must agree with finite differences). An error names the culprit.
# Called by bbvi() and sample_mcmc() for a bbvi_model. Returns (invisibly)
# what it cost: c(logp, gradient, seconds), the fit's "checks" phase.
assert_model_ok <- function(model, err_call = call("bbvi")) {
  spent <- c(logp = 0, gradient = 0, seconds = 0)
  if (!inherits(model, "bbvi_model") || !is.function(model$logjoint)) {
    return(invisible(spent))
  }
  t0 <- proc.time()[["elapsed"]]
  pts <- gradient_check_points(model, NULL, 3)
  if (isTRUE(model$vectorized)) {
    assert_vectorized_ok(model, pts, err_call)
    spent[["logp"]] <- 2 * nrow(pts)   # all at once, then one by one
  }
  if (is.function(model$gradient)) {
    n <- assert_gradient_ok(model, err_call, pts)
    spent[c("logp", "gradient")] <- spent[c("logp", "gradient")] + n
  }
  spent[["seconds"]] <- proc.time()[["elapsed"]] - t0
  invisible(spent)
}

# The gradient part of assert_model_ok(). Returns (invisibly) the
# evaluations it made, c(logp, gradient).
assert_gradient_ok <- function(model, err_call = call("bbvi"), points = NULL) {
  if (!inherits(model, "bbvi_model") || !is.function(model$logjoint) ||
      !is.function(model$gradient)) {
    return(invisible(c(logp = 0, gradient = 0)))
  }
  if (is.null(points)) points <- gradient_check_points(model, NULL, 3)
  # before a fit of many parameters, 200 coordinates spread over all of them
  # (a wrong sign or order shows there too): the full check costs 2 D
  # log-joint evaluations of D numbers each per point
  D <- ncol(points)
  coords <- if (D > 200) unique(round(seq(1, D, length.out = 200)))
  coords <- continuous_coords(model, coords)
  tab <- gradient_check_table(model, points, 1e-3, err_call, coords = coords)
  if (isTRUE(attr(tab, "ok"))) return(invisible(attr(tab, "evals")))
  bad <- tab[!is.na(tab$ok) & !tab$ok, , drop = FALSE]
  worst <- bad[which.max(bad$rel_error), ]
  pars <- unique(bad$parameter)
  cli::cli_abort(c(
    "{.arg gradient} disagrees with finite differences of {.arg logjoint} for {.field {pars}}.",
    x = "At point {worst$point} ({format_point(points[worst$point, ])}), the gradient for {.field {worst$parameter}} is {signif(worst$analytic, 4)}; finite differences give {signif(worst$numeric, 4)}.",
    i = "Check the gradient's signs and order (a named list or vector is matched by name). {.code check_gradient(model)} shows every entry."
  ), call = err_call)
}

format_point <- function(p) {
  paste(sprintf("%s = %s", names(p), format(signif(unlist(p), 4), trim = TRUE)),
        collapse = ", ")
}

# Evaluated at several draws at once and one at a time, a vectorized
# log-joint must agree: otherwise a term is recycled across draws (a sum
# over the data added to per-draw terms is the usual cause).
assert_vectorized_ok <- function(model, pts, err_call) {
  spec <- r_target_spec(model, err_call = err_call)
  fn <- spec_logjoint_fn(spec)
  all_at_once <- fn(theta_list(model, pts, vectorized = TRUE))
  one_by_one <- vapply(seq_len(nrow(pts)), function(i) {
    fn(theta_list(model, pts[i, , drop = FALSE], vectorized = TRUE))
  }, numeric(1))
  same <- (is.na(all_at_once) & is.na(one_by_one)) |
    (!is.na(all_at_once) & !is.na(one_by_one) &
       abs(all_at_once - one_by_one) <= 1e-8 * pmax(1, abs(one_by_one)))
  same[is.infinite(all_at_once) & is.infinite(one_by_one) &
         sign(all_at_once) == sign(one_by_one)] <- TRUE
  if (!all(same)) {
    S <- nrow(pts)
    cli::cli_abort(c(
      "With {.code vectorized = TRUE}, {.arg logjoint} must return one value per draw that depends on that draw only.",
      x = "At {S} draws at once it returned {signif(all_at_once, 6)}; at the same draws one at a time {signif(one_by_one, 6)}.",
      i = "{.arg theta} holds each scalar parameter as a vector of length S (one per draw). A sum over the data added to per-draw terms (e.g. {.code sum(dnorm(data, theta$mu, 1, log = TRUE)) + dnorm(theta$mu, log = TRUE)}) mixes the draws: compute one sum per draw (e.g. with {.fn vapply}), or use {.code vectorized = FALSE}."),
      call = err_call)
  }
  invisible(TRUE)
}

# Points on the constrained scale: a matrix, one row per point, one named
# column per scalar parameter.
gradient_check_points <- function(model, points, n) {
  D <- length(model$par_names)
  lower <- model$lower
  upper <- model$upper
  if (is.null(points)) {
    # 0 on the unconstrained scale (where fits start), then deterministic
    # offsets in (-1, 1), different for every coordinate and point
    Dz <- n_unconstrained(model)
    z <- matrix(0, n, Dz)
    if (n > 1) {
      k <- seq_len(n - 1)
      d <- seq_len(Dz)
      z[-1, ] <- 2 * ((outer(k * 0.7548777, d * 0.5698403, "+") + 0.31) %% 1) - 1
    }
    pts <- t(constrain_draws(model, t(z)))
    # discrete parameters at whole numbers inside their bounds
    disc <- integer_coords(model)
    if (any(disc)) {
      pts[, disc] <- t(pmin(pmax(round(t(pts[, disc, drop = FALSE])), lower[disc]), upper[disc]))
    }
  } else {
    pts <- points_matrix(model, points)
  }
  pts <- matrix(as.double(pts), ncol = D)
  colnames(pts) <- model$par_names
  pts
}

points_matrix <- function(model, points) {
  D <- length(model$par_names)
  want <- "a named list of parameter values, a list of them, or a matrix with one column per scalar parameter"
  if (is.list(points) && !is.data.frame(points) && !is.null(names(points))) {
    points <- list(points)
  }
  if (is.data.frame(points)) points <- as.matrix(points)
  if (is.list(points)) {
    rows <- lapply(points, function(p) {
      if (!is.list(p) || is.null(names(p)) || !setequal(names(p), names(model$parameters))) {
        abort_arg("points", want, points)
      }
      unlist(p[names(model$parameters)], use.names = FALSE)
    })
    points <- do.call(rbind, rows)
  }
  if (!is.numeric(points)) abort_arg("points", want, points)
  if (!is.matrix(points)) points <- matrix(points, nrow = 1)
  if (ncol(points) != D) abort_arg("points", want, points)
  if (!is.null(colnames(points))) {
    if (!setequal(colnames(points), model$par_names)) abort_arg("points", want, points)
    points <- points[, model$par_names, drop = FALSE]
  }
  disc <- integer_coords(model)
  inside <- t((t(points) > model$lower & t(points) < model$upper) |
                (disc & t(points) >= model$lower & t(points) <= model$upper &
                   t(points) == round(t(points))))
  if (anyNA(points) || !all(inside)) {
    abort_arg("points", "inside each parameter's support (not NA)", points)
  }
  if (has_vector_transform(model)) {
    for (i in seq_len(nrow(points))) {
      why <- vector_support_problem(model, points[i, ])
      if (!is.null(why)) {
        cli::cli_abort(c("{.arg points} must be inside each parameter's support.",
                         x = "Point {i}: {why}"), call = NULL)
      }
    }
  }
  points
}

# theta as the callbacks get it: a named list, one element per parameter;
# vectorized, scalar parameters as length-S vectors and others as S x dim
# matrices.
theta_list <- function(model, pts, vectorized) {
  sizes <- model$sizes
  ends <- cumsum(sizes)
  out <- Map(function(sz, end) {
    cols <- seq(end - sz + 1L, end)
    x <- pts[, cols, drop = FALSE]
    dimnames(x) <- NULL
    if (!vectorized) return(as.double(x))
    if (sz == 1) as.double(x) else x
  }, sizes, ends)
  stats::setNames(out, names(model$parameters))
}

gradient_check_table <- function(model, pts, tol, err_call, coords = NULL) {
  spec <- r_target_spec(model, err_call = err_call)
  fn <- spec_logjoint_fn(spec)
  gr <- spec$gr_call[[1]]
  vec <- isTRUE(model$vectorized)
  D <- ncol(pts)
  P <- nrow(pts)
  lower <- model$lower
  upper <- model$upper
  # steps: 1e-5 of the value's scale, at most a third of the way to a bound
  h <- t(apply(pts, 1, function(x) {
    s <- pmax(1, abs(x))
    s <- pmin(s, (x - lower) / 3, (upper - x) / 3)
    1e-5 * s
  }))
  h <- matrix(h, P, D)
  # the shifted points: for point p and coordinate d, +h and -h; made and
  # evaluated in chunks of about 2^22 numbers, so that memory stays
  # O(chunk x D) whatever D is
  idx <- expand.grid(d = if (is.null(coords)) seq_len(D) else coords, p = seq_len(P))
  hh <- h[cbind(idx$p, idx$d)]
  eval_fn <- function(X) {
    if (vec) return(fn(theta_list(model, X, TRUE)))
    vapply(seq_len(nrow(X)), function(i) fn(theta_list(model, X[i, , drop = FALSE], FALSE)),
           numeric(1))
  }
  f0 <- eval_fn(pts)
  fp <- fm <- numeric(nrow(idx))
  chunk <- max(1L, (2^22) %/% D)
  for (s in seq(1L, nrow(idx), by = chunk)) {
    rows <- seq(s, min(nrow(idx), s + chunk - 1L))
    shifted <- pts[idx$p[rows], , drop = FALSE]
    at <- cbind(seq_along(rows), idx$d[rows])
    shifted[at] <- shifted[at] + hh[rows]
    fp[rows] <- eval_fn(shifted)
    shifted[at] <- pts[cbind(idx$p[rows], idx$d[rows])] - hh[rows]
    fm[rows] <- eval_fn(shifted)
  }
  finite_pt <- is.finite(f0)
  g_pts <- if (vec) list(gr(theta_list(model, pts, TRUE))) else
    lapply(seq_len(P), function(i) gr(theta_list(model, pts[i, , drop = FALSE], FALSE)))
  check_gradient_logjoint(g_pts, f0, err_call)
  g <- matrix(do.call(rbind, g_pts), P, D)
  numeric_g <- (fp - fm) / (2 * hh)
  analytic <- g[cbind(idx$p, idx$d)]
  # rounding error of the difference: grows with |log-joint| / h
  round_err <- 100 * .Machine$double.eps * pmax(abs(fp), abs(fm)) / hh
  err <- abs(analytic - numeric_g)
  scale <- pmax(1, abs(numeric_g))
  usable <- finite_pt[idx$p] & is.finite(fp) & is.finite(fm)
  ok <- ifelse(usable, is.finite(analytic) & err <= tol * scale + round_err, NA)
  tab <- data.frame(point = idx$p, parameter = model$par_names[idx$d],
                    analytic = analytic, numeric = ifelse(usable, numeric_g, NA_real_),
                    rel_error = ifelse(usable, err / scale, NA_real_), ok = ok,
                    stringsAsFactors = FALSE)
  structure(tab, class = c("bbvi_gradient_check", "data.frame"),
            ok = !any(!tab$ok, na.rm = TRUE), points = pts, tol = tol,
            evals = c(logp = P + 2 * nrow(idx), gradient = P))
}

# The log-joint a gradient returns with its value (attribute "logjoint")
# replaces logjoint's own in the fit: it must be the same, up to rounding.
check_gradient_logjoint <- function(g_pts, f0, err_call) {
  lp <- lapply(g_pts, attr, which = "logjoint", exact = TRUE)
  given <- !vapply(lp, is.null, logical(1))
  if (!any(given)) return(invisible(TRUE))
  lp <- unlist(lp)
  if (!all(given) || length(lp) != length(f0)) return(invisible(TRUE))
  same <- (is.na(lp) & is.na(f0)) | (!is.na(lp) & !is.na(f0) &
    (lp == f0 | abs(lp - f0) <= 1e-8 * pmax(1, abs(f0))))
  if (all(same)) return(invisible(TRUE))
  i <- which(!same)[1]
  cli::cli_abort(c(
    "The {.val logjoint} attribute of {.arg gradient}'s value disagrees with {.arg logjoint}.",
    x = "At point {i}, the attribute is {signif(lp[i], 8)}; {.arg logjoint} gives {signif(f0[i], 8)}.",
    i = "The attribute replaces {.arg logjoint}'s value in the fit: it must be the same log density, constants included."
  ), call = err_call)
}

#' @export
print.bbvi_gradient_check <- function(x, ...) {
  P <- nrow(attr(x, "points"))
  checked <- sum(!is.na(x$ok))
  if (isTRUE(attr(x, "ok"))) {
    cat(sprintf("Gradient check: all %d entries at %d point(s) agree with finite differences (largest relative error %s)\n",
                checked, P, format(signif(max(c(0, x$rel_error), na.rm = TRUE), 2))))
  } else {
    bad <- x[!is.na(x$ok) & !x$ok, , drop = FALSE]
    cat(sprintf("Gradient check: %d of %d entries DISAGREE with finite differences (tol %s):\n",
                nrow(bad), checked, format(attr(x, "tol"))))
    print(as.data.frame(bad)[, c("point", "parameter", "analytic", "numeric", "rel_error")],
          row.names = FALSE, digits = 4)
  }
  if (checked < nrow(x)) {
    cat(sprintf("(%d entries skipped: the log-joint is not finite there)\n", nrow(x) - checked))
  }
  invisible(x)
}
