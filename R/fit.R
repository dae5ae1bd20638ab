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
  unms <- unc_names(model)   # q's coordinates (nms unless a simplex or ordered)
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
    mean_unc = stats::setNames(q$mean, unms),
    lambda = res$lambda,
    elbo_trace = res$elbo,
    converged = isTRUE(res$converged),
    stop_reason = if (is.null(res$stop_reason)) "converged" else res$stop_reason,
    iterations = res$iterations,
    time = res$time,
    restarts = res$restarts,
    dropped_draws = res$dropped_draws,
    samples = res$control$samples,
    tol = if (is.null(res$control$tol)) res$control$grad_tol else res$control$tol,
    path = if (is.null(res$path)) "stochastic" else res$path,
    n_draws = as.integer(draws)
  ), extra)
  if (dense) {
    fit$chol_unc <- matrix(q_chol(q), length(unms), length(unms),
                           dimnames = list(unms, unms))
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
  theta <- t(constrain_draws(fit, smp$zeta))
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
  if (has_vector_transform(fit)) return(vector_marginal_quantiles(fit, probs))
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

# With a simplex or an ordered vector among the parameters, q's coordinates
# are not theta's one for one. Elementwise parameters keep the exact routes
# above (on their own coordinates of q); the elements of a simplex or an
# ordered vector, which mix several coordinates of q, come from the fit's
# draws (Monte Carlo error about sd / sqrt(draws)).
vector_marginal_quantiles <- function(fit, probs) {
  idx <- elementwise_index(fit)
  ew <- !is.na(idx)
  out <- matrix(NA_real_, length(fit$par_names), length(probs),
                dimnames = list(fit$par_names, percent_labels(probs)))
  if (any(ew)) {
    sub <- elementwise_view(fit, idx[ew], ew)
    out[ew, ] <- marginal_quantiles(sub, probs)
  }
  dr <- fit_own_draws(fit)[, !ew, drop = FALSE]
  out[!ew, ] <- t(apply(dr, 2, stats::quantile, probs = probs, names = FALSE))
  out
}

vector_marginal_moments <- function(fit) {
  idx <- elementwise_index(fit)
  ew <- !is.na(idx)
  m <- s <- stats::setNames(numeric(length(fit$par_names)), fit$par_names)
  if (any(ew)) {
    mom <- marginal_moments(elementwise_view(fit, idx[ew], ew))
    m[ew] <- mom$mean
    s[ew] <- mom$sd
  }
  dr <- fit_own_draws(fit)[, !ew, drop = FALSE]
  m[!ew] <- colMeans(dr)
  s[!ew] <- apply(dr, 2, stats::sd)
  list(mean = m, sd = s)
}

# The fit restricted to its elementwise parameters: q's marginals on the
# coordinates zi, theta's coordinates ew. Only what the exact routes read.
elementwise_view <- function(fit, zi, ew) {
  q <- fit_q(fit)
  mq <- q_marginals(q)
  list(q = q_gauss_mf(mq$mean[zi], mq$sd[zi]), par_names = fit$par_names[ew],
       lower = fit$lower[ew], upper = fit$upper[ew], model = list())
}

percent_labels <- function(probs) {
  paste0(vapply(100 * probs, format, character(1), digits = 4), "%")
}

# Marginal means and sds on the constrained scale: exact for unbounded
# parameters, Gauss-Hermite quadrature (40 nodes) through the transform for
# bounded ones, so summaries carry no Monte Carlo error. O(D).
marginal_moments <- function(fit) {
  if (has_vector_transform(fit)) return(vector_marginal_moments(fit))
  mq <- q_marginals(fit_q(fit))
  m <- mq$mean
  s <- mq$sd
  bounded <- which(is.finite(fit$lower) | is.finite(fit$upper))
  if (length(bounded) > 0) {
    gh <- gauss_hermite(40)
    w <- gh$w / sqrt(pi)
    z <- m[bounded] + sqrt(2) * outer(s[bounded], gh$x)   # nb x 40
    # z is nb x 40: as.double(z) is node by node, coordinate fastest, the
    # layout C_constrain reads (nb coordinates per point)
    th <- .Call(C_constrain, as.double(z), as.double(fit$lower[bounded]),
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
  if (has_vector_transform(object)) {
    # q's coordinates are not theta's: everything from the draws
    free <- rep(FALSE, length(free))
    S <- NULL
  } else {
    S <- q_vcov(fit_q(object))   # dense: only when asked for
  }
  if (!all(free)) {
    # bounded parameters: correlations from the fit's draws, sds exact
    R <- stats::cor(fit_own_draws(object))
    if (any(free)) R[free, free] <- stats::cov2cor(S)[free, free]
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
  check_dots_empty(...)
  mom <- marginal_moments(object)
  q <- marginal_quantiles(object, c(0.025, 0.5, 0.975))
  tab <- cbind(mean = mom$mean, sd = mom$sd, q)
  structure(list(table = tab, discrete = discrete_summary(object), fit = object),
            class = "summary.bbvi_fit")
}

#' @rdname bbvi_fit-methods
#' @export
print.summary.bbvi_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  check_digits(digits)
  print_fit_header(x$fit)
  cat("\n")
  print_table(x$table, digits)
  if (!is.null(x$discrete)) {
    cat("\nDiscrete parameters (q's probabilities of every value: probabilities(fit)):\n")
    print_table(x$discrete, digits, integer = "mode")
  }
  cat(vi_summary_note(has_vector_transform(x$fit)))
  invisible(x)
}

# Under q the reported numbers are exact (closed form, quadrature, or
# transformed normal quantiles), so there is no Monte Carlo error to show;
# their error as posterior summaries is q's own, which only the diagnostics
# speak to. R-hat and ESS do not apply to independent draws from q.
vi_summary_note <- function(from_draws = FALSE) {
  if (from_draws) {
    return(paste0("\nMean, sd and quantiles of q: exact for scalar parameters; for a simplex or\n",
                  "an ordered vector from ", "the fit's draws from q (Monte Carlo error about\n",
                  "sd / sqrt(draws)). How far they are from the posterior's is q's error:\n",
                  "see the diagnostics above.\n"))
  }
  paste0("\nMean, sd and quantiles of q, computed exactly (no Monte Carlo error);\n",
         "how far they are from the posterior's is q's error: see the diagnostics above.\n")
}

# ---- printing numbers ------------------------------------------------------

# Each number to `digits` significant digits on its own, then aligned on the
# decimal point: a common column format would pad 1.904 to 1.9040 next to
# 0.7597, zeros that were never computed.
format_column <- function(x, digits) {
  s <- vapply(x, function(v) if (is.na(v)) "NA" else
    format(v, digits = digits), character(1))
  dot <- regexpr(".", s, fixed = TRUE)
  has_dot <- dot > 0 & !grepl("e", s, fixed = TRUE)
  int <- ifelse(has_dot, substr(s, 1L, dot - 1L), s)
  frac <- ifelse(has_dot, substring(s, dot), "")
  paste0(formatC(int, width = max(nchar(int), 1L)),
         formatC(frac, width = max(nchar(frac), 0L), flag = "-"))
}

# A numeric matrix as a character matrix, column by column; `integer`
# columns (counts, ESS) are rounded to whole numbers, `fixed` columns
# (R-hat) get that many decimals.
format_table <- function(tab, digits, integer = character(), fixed = c()) {
  out <- matrix("", nrow(tab), ncol(tab), dimnames = dimnames(tab))
  for (j in seq_len(ncol(tab))) {
    nm <- colnames(tab)[j]
    v <- tab[, j]
    out[, j] <- if (nm %in% integer) {
      ifelse(is.na(v), "NA", format(round(v), trim = TRUE, scientific = 12L))
    } else if (nm %in% names(fixed)) {
      ifelse(is.na(v), "NA", formatC(v, digits = fixed[[nm]], format = "f"))
    } else format_column(v, digits)
  }
  out
}

print_table <- function(tab, digits, ...) {
  print(noquote(format_table(tab, digits, ...)), right = TRUE)
  invisible(tab)
}

check_digits <- function(digits) {
  if (!is.numeric(digits) || length(digits) != 1 || is.na(digits) ||
      digits < 1 || digits > 15 || digits != round(digits)) {
    abort_arg("digits", "a whole number from 1 to 15", digits)
  }
  invisible(digits)
}

# The compact table of print(): posterior medians and MAD_SDs (1.4826 times
# the median absolute deviation), as rstanarm prints them. Medians are exact
# transformed quantiles; for an unbounded parameter q's marginal is normal
# and its MAD_SD is its sd exactly; for a bounded one it comes from the
# fit's draws.
vi_median_mad <- function(fit) {
  med <- marginal_quantiles(fit, 0.5)[, 1]
  mad_sd <- marginal_moments(fit)$sd
  bounded <- is.finite(fit$lower) | is.finite(fit$upper) |
    is.na(elementwise_index(fit))
  # natural-scale families (Gamma, Beta, categorical) are not normal either
  if (!is.null(fit$families)) bounded <- bounded | rep(fit$families != "gaussian", fit$model$sizes)
  if (any(bounded)) {
    dr <- as.matrix(fit)[, fit$par_names[bounded], drop = FALSE]
    mad_sd[bounded] <- apply(dr, 2, stats::mad)
  }
  cbind(Median = med, MAD_SD = mad_sd)
}

print_compact <- function(tab, digits, max_rows = 20L) {
  print_table(utils::head(tab, max_rows), digits)
  if (nrow(tab) > max_rows) {
    cat(sprintf("... and %d more parameters: see summary() or as.matrix()\n",
                nrow(tab) - max_rows))
  }
}

# Header lines wrapped to the console width (at most 80 columns), later
# lines of one item indented.
say <- function(...) {
  writeLines(strwrap(paste0(...), width = min(80L, getOption("width")) + 1L,
                     exdent = 2L))
}

# `prefix` and the items separated by "; ", broken between items only (an
# item broken inside, "< 0.01" then "s", reads badly); an item longer than
# a line is wrapped on its own.
say_items <- function(prefix, items) {
  width <- min(80L, getOption("width"))
  items <- paste0(items, c(rep(";", length(items) - 1L), ""))
  first <- TRUE
  emit <- function(x) {
    writeLines(strwrap(x, width = width + 1L, indent = if (first) 0L else 2L, exdent = 2L))
    first <<- FALSE
  }
  cur <- paste0(prefix, items[1])
  for (it in items[-1]) {
    if (nchar(cur) + 1L + nchar(it) > width - if (first) 0L else 2L) {
      emit(cur)
      cur <- it
    } else {
      cur <- paste(cur, it)
    }
  }
  emit(cur)
}

# A call or formula on one line if it fits, else broken after commas
# (deparse() alone lets lines run past its cutoff).
say_call <- function(call, label = "Call: ") {
  if (is.null(call)) return(invisible())
  width <- min(80L, getOption("width")) - nchar(label)
  txt <- paste(trimws(deparse(call, width.cutoff = 500L)), collapse = " ")
  parts <- strsplit(txt, "(?<=, )", perl = TRUE)[[1]]
  lines <- character()
  cur <- ""
  for (p in parts) {
    if (nchar(cur) > 0 && nchar(trimws(paste0(cur, p), "right")) > width) {
      lines <- c(lines, trimws(cur, "right"))
      cur <- p
    } else cur <- paste0(cur, p)
  }
  lines <- c(lines, trimws(cur, "right"))
  writeLines(paste0(c(label, rep(strrep(" ", nchar(label)), length(lines) - 1L)), lines))
}

# Wall-clock seconds to the timer's 0.01 s: "< 0.01 s" rather than a
# misleading "0.00 s".
format_seconds <- function(x) {
  ifelse(is.finite(x) & x < 0.005, "< 0.01 s", sprintf("%.2f s", x))
}

print_fit_header <- function(fit) {
  cat("Variational fit (bbvi)\n")
  say_call(fit$call)
  other <- if (!is.null(fit$families)) unique(fit$families[fit$families != "gaussian"])
  say(sprintf("Family: %s; gradient: %s; path: %s",
              if (length(other) == 0) paste(fit$method, "Gaussian") else
                sprintf("%s%s",
                        if (all(fit$families != "gaussian")) "" else paste(fit$method, "Gaussian blocks with "),
                        paste(sprintf("%s (%s)", other, vapply(other, function(f)
                          paste(names(fit$families)[fit$families == f], collapse = ", "),
                          character(1))), collapse = ", ")),
              fit_estimator_label(fit), fit$path))
  print_fit_status(fit)
}

# How the optimisation ended and what the diagnostics say; shared by every
# kind of fit's print and summary.
print_fit_status <- function(fit) {
  # the fixed-draw path counts evaluations of its averaged ELBO
  unit <- if (identical(fit$optimizer, "lbfgs")) "L-BFGS evaluation" else
    if (!is.null(fit$epochs)) "epoch" else "iteration"
  # the precision the convergence rule held the answer to (q-sds)
  tol <- if (is.numeric(fit$tol) && length(fit$tol) == 1) sprintf(", tol %s", format(fit$tol)) else ""
  say(sprintf("%s after %d %s%s%s (%s)%s",
              if (fit$converged) "Converged" else "NOT converged",
              fit$iterations, unit, if (identical(fit$iterations, 1L)) "" else "s", tol,
              format_seconds(fit$time),
              if (fit$converged) "" else paste0(": ", fit$stop_reason)))
  ev <- fit$evals
  if (is.data.frame(ev) && nrow(ev) > 0) {
    big <- function(x) prettyNum(x, big.mark = ",", preserve.width = "none")
    enum <- if (is.null(ev$enumerated)) rep(0, nrow(ev)) else ev$enumerated
    say_items("Evaluations of log p (gradient): ",
              sprintf("%s %s (%s)%s, %s", ev$phase, big(ev$logp), big(ev$gradient),
                      ifelse(enum > 0, sprintf(", %s of them at enumerated values", big(enum)), ""),
                      format_seconds(ev$seconds)))
  }
  dg <- fit$diagnostics
  if (!is.null(dg)) {
    say(sprintf("ELBO %s (MC se %s); KL(q || p) estimate %s nats",
                format(dg$elbo, digits = 6), format(dg$elbo_mcse, digits = 2),
                format(signif(dg$kl_hat, 2))))
    say(sprintf("Pareto k-hat %s%s%s",
                format(dg$khat, digits = 2),
                khat_label(dg$khat, dg$khat_threshold, verdict_ok = identical(dg$verdict, "ok")),
                if (dg$n_draws < min(4000L, fit_n_draws(fit))) sprintf(" (from %d draws)", dg$n_draws) else ""))
    if (!is.na(dg$max_mean_shift)) {
      say(sprintf("PSIS check: reweighted means within %s q-sds, sds within %s%% of q's%s",
                  format(signif(dg$max_mean_shift, 2)),
                  format(signif(100 * dg$max_sd_change, 2)),
                  if (identical(dg$verdict, "ok")) " (good)" else ""))
    }
    if (!is.null(dg$rao_blackwell)) say(rb_print_line(dg$rao_blackwell))
    if (isTRUE(dg$n_nonfinite > 0)) {
      say(sprintf("%d of %d draws from q have a non-finite log-joint (outside the support)",
                  dg$n_nonfinite, dg$n_draws))
    }
    if (!identical(dg$verdict, "ok") && !is.null(dg$verdict)) {
      say("WARNING: q may be inaccurate (see the warning, or vi_diagnostics(fit))")
    }
  }
  print_restarts(fit)
}

print_restarts <- function(fit) {
  rs <- fit$restart_summary
  if (is.null(rs)) return(invisible())
  say(sprintf("Best of %d restarts; their final ELBOs range over %s to %s (spread %s)",
              nrow(rs), format(min(rs$elbo), digits = 6), format(max(rs$elbo), digits = 6),
              format(diff(range(rs$elbo)), digits = 3)))
}

# A large k-hat beside a passing PSIS check: the ratios p / q can be
# unbounded far out (a Gaussian q against a posterior with heavier tails)
# while q matches p where its mass is; the verdict is the check's, and the
# label says so rather than reading as an alarm.
khat_label <- function(k, threshold = 0.7, verdict_ok = FALSE) {
  if (is.na(k)) return("")
  if (is.null(threshold) || is.na(threshold)) threshold <- 0.7
  if (k <= threshold) return(" (reliable)")
  sprintf(" (> %s: heavy-tailed ratios%s)", format(signif(threshold, 2)),
          if (verdict_ok) "; the check below passes" else "")
}

fit_estimator_label <- function(fit) {
  if (isTRUE(fit$model$numeric_gradient) && !identical(fit$estimator, "score")) {
    fit$model$numeric_gradient <- FALSE
    return(paste0(fit_estimator_label(fit), "; gradients by central differences of the log-joint"))
  }
  if (identical(fit$optimizer, "lbfgs")) return("reparameterization")
  if (!is.null(fit$minibatch)) return("reparameterization over fixed draws (curvature by Stein's identity), variational Newton steps on minibatch sums")
  if (identical(fit$optimizer, "newton")) return("exact expectations (quadrature), variational Newton steps")
  if (isTRUE(fit$enumerated)) {
    fit$enumerated <- FALSE
    return(paste0(fit_estimator_label(fit), "; discrete parameters' values enumerated"))
  }
  switch(fit$estimator,
         score = sprintf("score function%s, %d draws/iteration",
                         if (isFALSE(fit$control_variates)) " (no control variates)" else
                           if (!is.null(fit$quadratic_cv)) " + control variates (baseline and quadratic)" else
                             " + control variates", fit$samples),
         reparam = sprintf("reparameterization, %d draws/iteration", fit$samples),
         mixed = sprintf("reparameterization (Gaussian blocks) and score function + control variates (the others), %d draws/iteration", fit$samples),
         fit$estimator)
}

#' @rdname bbvi_fit-methods
#' @param digits Significant digits of every number in the table.
#' @details `print()` is compact, as rstanarm's: the posterior median and
#'   MAD_SD (1.4826 times the median absolute deviation) of each parameter;
#'   `summary()` gives mean, sd and quantiles. All are summaries of q, exact
#'   under q (no Monte Carlo error); R-hat and effective sample sizes are
#'   MCMC diagnostics and are not shown for variational fits, whose draws
#'   are independent. How close q is to the posterior is what the printed
#'   diagnostics (Pareto k-hat, the PSIS check) speak to.
#' @export
print.bbvi_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  check_digits(digits)
  print_fit_header(x)
  cat("\n")
  print_compact(vi_median_mad(x), digits)
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
#' @param pars Parameters to show (names). By default all of them; the
#'   default plot (ELBO trace and densities) fits 8 on a page and, with
#'   more, shows the first 8 and says so in a message.
#' @export
plot.bbvi_fit <- function(x, plotfun = NULL, pars = NULL, ...) {
  if (!is.null(plotfun)) return(plot_dispatch(x, plotfun, pars, ...))
  check_dots_empty(...)
  nms <- default_pars(x$par_names, 8L, pars)
  if (!is.character(nms) || !all(nms %in% x$par_names)) {
    abort_arg("pars", "names of the fit's parameters", pars)
  }
  k <- length(nms) + 1
  nc <- min(3, k)
  old <- graphics::par(mfrow = c(ceiling(k / nc), nc), mar = c(4, 4, 2, 1))
  on.exit(graphics::par(old))
  plot_elbo_trace(x)
  for (nm in nms) {
    d <- stats::density(as.matrix(x)[, nm])
    graphics::plot(d, main = nm, xlab = nm, ylab = "density")
  }
  invisible(x)
}
