#' How far can a variational fit be trusted?
#'
#' Every fit carries these diagnostics, computed from its stored draws from
#' q (the first `n_draws` of them: up to `diagnostic_draws`, 4000 by
#' default; in stages of 1000, 2000 and all of them, stopping at the first
#' stage whose draws
#' show q well inside every threshold below (half of each, k-hat at most
#' 0.5, no draw outside the support), or so far outside one that the
#' remaining draws cannot bring it back inside (see "When a fit warns");
#' never chosen by
#' the clock, so a seed gives the same diagnostics on any machine). With log r = log p(x, z) - log q(z) the
#' log importance ratio of a draw z:
#'
#' * `elbo`, `elbo_mcse`: the ELBO at the final q (the mean of log r) and
#'   its Monte Carlo standard error. A draw at which the log-joint is not
#'   finite (`NA`, `NaN`, `-Inf`) has p = 0 there: it counts as log r = -Inf,
#'   so the ELBO is then -Inf (`n_nonfinite` says how many) and the fit warns.
#' * `kl_hat`: an estimate of KL(q || p(z | x)) = log p(x) - ELBO, as log Z-hat
#'   (the log of the mean Pareto-smoothed importance ratio, an estimate of
#'   log p(x)) minus the ELBO. 0 when q is exact. It sees only the part of
#'   the posterior that q's draws reach, so it understates a missed mode.
#' * `khat`: the Pareto k-hat of the importance ratios (Yao, Vehtari,
#'   Simpson and Gelman 2018), from Pareto-smoothed importance sampling
#'   (PSIS) in the `loo` package, and `khat_threshold`, loo's sample-size
#'   threshold min(1 - 1 / log10(S), 0.7): above it the ratios are so
#'   heavy-tailed that importance-sampling estimates are unreliable. k-hat
#'   looks at the far tail only: a Gaussian q on the log or logit scale has
#'   lighter tails than most posteriors of bounded parameters, so accurate
#'   fits often have a large k-hat. It is reported, not warned about.
#' * `psis_moments`: for every parameter (user scale) q's mean and sd from
#'   the draws and the PSIS-reweighted ones (moved towards the posterior),
#'   the difference of the means in q-sds (`mean_shift`, the larger of the
#'   unconstrained and the user scale) and the ratio of the sds;
#'   `max_mean_shift` and `max_sd_change` (|ratio - 1|) are their maxima.
#'   A discrete parameter with fewer than 100 draws off its most common
#'   value has `sd_ratio` `NA`: its sd rests on those few draws, so only
#'   its mean is checked.
#' * `log_ratio_sd`: the sd of log r over the draws (0 when q is exact).
#' * `n_draws`, `n_finite`, `n_nonfinite`: draws used, and how many had a
#'   finite log-joint.
#' * `logdens_route`, `logdens_se` (GLMs with many rows only): log p at each
#'   draw is then not a pass over the N rows but the log-likelihood's
#'   second-order expansion around q's mean (computed exactly in one pass),
#'   plus the remainder estimated from a fixed random subsample of 4000 rows
#'   (the difference estimator of Quiroz et al. 2019); `logdens_se` is the
#'   largest standard error of that estimate over the draws. The route is
#'   taken only when a pilot of 64 draws shows standard errors below 0.05
#'   nats; gaussian GLMs need no subsample (their log-likelihood is
#'   quadratic in the coefficients given sigma). So large GLMs get all
#'   `diagnostic_draws` draws.
#' * `weights`: the normalised Pareto-smoothed importance weights of the
#'   first `n_draws` stored draws, used by `as.matrix(fit, psis = TRUE)`.
#' * `verdict`: `"ok"`, or why the fit warned.
#' * `stop_reason`: why the optimiser stopped.
#' * `rao_blackwell` (fits of a model with `factors` made with the score
#'   estimator, see [bbvi_model()]): at the final q, from 1000 draws (down
#'   to 200 when q has more than 4000 variational parameters), the
#'   variance of one draw's term of the plain score estimator and of the
#'   Rao-Blackwellized one (both with their control variates), summed over
#'   the variational parameters (`var_plain`, `var_rb`), their `ratio`
#'   (how many times less noisy the Rao-Blackwellized gradient is), the
#'   `draws` used, and both variances per coordinate (`per_coordinate`).
#'
#' **When a fit warns.** What matters is whether q's summaries are those of
#' the posterior. The fit warns when reweighting towards the posterior moves
#' a mean by more than 0.1 q-sd or changes an sd by more than 10% (errors of
#' that size change what one would report), when the estimated KL exceeds
#' 0.5 nats (what a Gaussian q one posterior sd off, or a q on one of two
#' modes, costs; accurate fits measure about 0.001-0.01, so the margin
#' against false alarms is wide), or when q has draws outside the
#' posterior's support. The advice fits the case: full-rank for a mean-field
#' fit with more than one parameter, restarts or MCMC otherwise. A mode that
#' q's draws never reach cannot be seen by any importance-sampling
#' diagnostic: use `restarts` or [sample_mcmc()] when several modes are
#' possible. The first 1000 draws decide alone when they fail clearly: a
#' draw outside the support, an estimated KL above 0.5 + log 4 nats plus
#' four standard errors of the ELBO's change, a mean shift above 0.4 q-sd, a
#' reweighted sd more than 36% above q's or 51% below. Adding 3000 draws (a quarter of the weight on
#' the first 1000) can shrink a mean shift, or an excess of variance, at most
#' about four-fold, and log Z-hat can fall by at most log 4, so the verdict
#' on all 4000 would be a warning too. The first 2000 decide by the same
#' argument with a two-fold dilution (KL above 0.5 + log 2 nats plus four
#' standard errors, a mean shift above 0.2 q-sd, an sd more than 19% above
#' q's or 21% below).
#' `options(bbvi.warn_diagnostics = FALSE)` (or the older
#' `bbvi.warn_khat = FALSE`) turns the warning off; the diagnostics are
#' still computed and printed.
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
#' str(vi_diagnostics(fit)[c("elbo", "kl_hat", "khat", "max_mean_shift", "verdict")])
#' @export
vi_diagnostics <- function(fit, ...) UseMethod("vi_diagnostics")

#' @rdname vi_diagnostics
#' @param ... Unused.
#' @export
vi_diagnostics.bbvi_fit <- function(fit, ...) fit$diagnostics

#' @export
vi_diagnostics.default <- function(fit, ...) abort_arg("fit", "a bbvi_fit", fit)

# ---- computed once when the fit is made, from the draws it keeps ----------

# Thresholds of the accuracy check (see vi_diagnostics()).
diag_thresholds <- list(mean_shift = 0.1, sd_ratio = 0.1, kl = 0.5)

# `smp` is q_sample()'s output, or NULL when the fit makes its draws again
# from its seed (chunk by chunk: memory O(chunk x D)); the first `n` draws
# are used, n from diagnostic_draw_count(): known before the fit starts,
# never the clock.
vi_diagnostics_compute <- function(fit, smp, diagnostic_draws = 4000,
                                   first_stage = diag_first_stage) {
  available <- if (is.null(smp)) fit_n_draws(fit) else ncol(smp$zeta)
  check_count(diagnostic_draws, "diagnostic_draws")
  # a large GLM: log p from an expansion, not a pass over the rows per draw
  taylor <- glm_taylor_logdens(fit, diagnostic_draws)
  n <- diagnostic_draw_count(fit, available, diagnostic_draws, exact = is.null(taylor))
  # Stages: the first 1000 draws, then 2000, then all n, each only when the
  # draws so far neither pass clearly (well inside every threshold) nor
  # fail clearly (so far outside one that the other draws cannot bring the
  # fit back). A q that is close to p, or far from it, is then judged at a
  # quarter or half of the cost (bench_custom.R: 12 of the 20 fits that
  # went to 4000 stop at 2000), while every fit near a threshold still gets
  # the full n. The rule depends on the draws alone.
  # Draws come chunk by chunk (memory O(chunk x D)); the log-joint is
  # evaluated once per draw.
  n1 <- min(n, first_stage)
  lp <- log_q <- numeric(n)
  se_max <- 0
  dens <- function(upto, from) {
    for_each_draw_chunk(fit, smp, upto, function(ch, idx) {
      new <- idx >= from
      if (!any(new)) return()
      z <- ch$zeta[, new, drop = FALSE]
      val <- if (is.null(taylor)) diagnostic_logdens(fit, z) else taylor(z)
      if (!is.null(taylor)) se_max <<- max(se_max, attr(val, "se"))
      lp[idx[new]] <<- as.double(val)
      log_q[idx[new]] <<- ch$log_q[new]
    })
  }
  dens(n1, 1L)
  upto <- n1
  out <- diag_from_logdens(fit, smp, lp[seq_len(upto)], log_q[seq_len(upto)])
  while (upto < n && !diag_clear_pass(out) && !diag_clear_fail(out, n)) {
    nxt <- min(n, 2L * upto)
    dens(nxt, upto + 1L)
    upto <- nxt
    out <- diag_from_logdens(fit, smp, lp[seq_len(upto)], log_q[seq_len(upto)])
  }
  if (!is.null(taylor)) {
    out$logdens_route <- if (fit$model$target$family == glm_family_code[["gaussian"]]) "sufficient statistics" else
      sprintf("second-order expansion + %d-row subsample", glm_taylor_rows)
    out$logdens_se <- se_max
  }
  if (!identical(out$verdict, "ok") && diag_warning_on()) {
    # plain warning(): cli's formatting costs more than a small GLM fit
    warning(diag_message(fit, out), call. = FALSE)
  }
  out
}

diag_first_stage <- 1000L

# Well inside every threshold, with a reliable k-hat and no draw outside
# the support: no need for more draws.
diag_clear_pass <- function(dg) {
  identical(dg$verdict, "ok") && dg$n_nonfinite == 0 &&
    isTRUE(dg$khat <= 0.5) &&
    isTRUE(dg$max_mean_shift <= diag_thresholds$mean_shift / 2) &&
    isTRUE(dg$max_sd_change <= diag_thresholds$sd_ratio / 2) &&
    isTRUE(dg$kl_hat <= diag_thresholds$kl / 2)
}

# Outside a threshold on the first n1 = dg$n_draws draws by so much that
# the verdict on all n draws would be a warning too, whatever the other
# n - n1 draws hold short of a weight far above the first ones' (f = n / n1,
# 4 by default):
# * a draw outside the support stays among the n;
# * the importance-weight sum over n draws is at least that over the first
#   n1, so log Z-hat falls by at most log f, and the ELBO moves by the mean
#   of the new draws' log ratios (4 standard errors allowed);
# * a weighted mean shift, or an excess (or lack) of weighted variance, is
#   diluted at most f-fold when the other draws carry (n - n1) / n1 times
#   the first draws' weight, as they do on average: a shift above f x 0.1
#   q-sd stays above 0.1, and an sd ratio r with r^2 - 1 above
#   f x (1.1^2 - 1) (r > 1.36 for f = 4), or 1 - r^2 above f x (1 - 0.9^2)
#   (r < 0.49), stays outside [0.9, 1.1]. (Without the sides, as in a
#   hand-made list, the larger bar holds for both.)
# Never used to pass a fit: it can only spare draws on one that warns.
diag_clear_fail <- function(dg, n) {
  if (dg$n_nonfinite > 0) return(TRUE)
  th <- diag_thresholds
  f <- n / dg$n_draws
  se_elbo <- dg$log_ratio_sd * (1 - 1 / f) * sqrt(1 / (n - dg$n_draws) + 1 / dg$n_draws)
  kl_low <- dg$kl_hat - log(f) - 4 * se_elbo
  sd_up <- sqrt(1 + f * ((1 + th$sd_ratio)^2 - 1)) - 1
  lack <- f * (1 - (1 - th$sd_ratio)^2)
  sd_down <- if (lack < 1) 1 - sqrt(1 - lack) else Inf
  sides <- attr(dg, "sd_sides")
  sd_clear <- if (is.null(sides)) isTRUE(dg$max_sd_change > max(sd_up, sd_down)) else
    isTRUE(sides[["up"]] > sd_up) || isTRUE(sides[["down"]] > sd_down)
  isTRUE(kl_low > th$kl) ||
    isTRUE(dg$max_mean_shift > f * th$mean_shift) || sd_clear
}

# The diagnostics from the log densities `lp` (and log q) of the first
# length(lp) draws.
diag_from_logdens <- function(fit, smp, lp, log_q) {
  n <- length(lp)
  # a draw where the log-joint is NA, NaN or -Inf has p = 0 there: its log
  # ratio is -Inf, so the ELBO (an average over q) is -Inf, not the average
  # of the other draws
  ok <- is.finite(lp)
  n_ok <- sum(ok)
  log_ratio <- ifelse(ok, lp - log_q, -Inf)
  lr <- log_ratio[ok]
  weights <- numeric(n)
  khat <- NA_real_
  lw <- lr   # log importance weights of the finite draws (smoothed below)
  lr_sd <- if (n_ok > 1) stats::sd(lr) else NA_real_
  if (n_ok >= 10 && lr_sd <= 1e-8 * max(1, abs(mean(lr)))) {
    # q equals p up to rounding: uniform weights (loo's tail fit degenerates)
    khat <- 0
  } else if (n_ok >= 100) {
    # loo warns about large k itself; the fit gives its own warning below
    ps <- suppressWarnings(loo::psis(lr, r_eff = 1))
    khat <- as.double(loo::pareto_k_values(ps))
    lw <- as.double(stats::weights(ps, log = TRUE, normalize = FALSE))
    # back on the scale of the log ratios whatever loo's shift: the smallest
    # ratio is never in the smoothed tail
    i0 <- which.min(lr)
    lw <- lw + (lr[i0] - lw[i0])
  }
  if (n_ok > 0) weights[ok] <- exp(lw - max(lw)) / sum(exp(lw - max(lw)))
  elbo <- if (n_ok == n) mean(lr) else -Inf
  # log Z-hat: the importance-sampling estimate of log p(x) over all n draws
  log_z <- if (n_ok > 0) log_mean_exp(lw) + log(n_ok / n) else -Inf
  kl <- if (n_ok == n) max(log_z - elbo, 0) else Inf
  if (!is.na(khat) && khat == 0 && n_ok == n) kl <- 0
  moments <- if (n_ok >= 100) {
    psis_moments(fit, smp, n, weights)
  } else NULL
  out <- list(
    khat = khat,
    khat_threshold = khat_threshold(n_ok),
    kl_hat = kl,
    log_z = log_z,
    elbo = elbo,
    elbo_mcse = if (n_ok == n && n > 1) stats::sd(lr) / sqrt(n) else NA_real_,
    log_ratio_sd = lr_sd,
    psis_moments = moments$table,
    max_mean_shift = if (is.null(moments)) NA_real_ else moments$max_shift,
    max_sd_change = if (is.null(moments)) NA_real_ else moments$max_sd_change,
    n_draws = n, n_finite = n_ok, n_nonfinite = n - n_ok,
    weights = weights, stop_reason = fit$stop_reason)
  out$verdict <- diag_verdict(out)
  # not part of the reported list: the sd changes by side
  if (!is.null(moments)) attr(out, "sd_sides") <- moments$sides
  out
}

# options(bbvi.warn_diagnostics = FALSE) silences the accuracy warning; the
# older name bbvi.warn_khat still works.
diag_warning_on <- function() {
  isTRUE(getOption("bbvi.warn_diagnostics", getOption("bbvi.warn_khat", TRUE)))
}

# loo's sample-size-dependent threshold for a reliable PSIS estimate
# (Vehtari et al. 2024, Pareto smoothed importance sampling, JMLR).
khat_threshold <- function(S) if (S < 10) NA_real_ else min(1 - 1 / log10(S), 0.7)

log_mean_exp <- function(x) {
  m <- max(x)
  if (!is.finite(m)) return(m)
  m + log(mean(exp(x - m)))
}

# PSIS-reweighted means and sds of every coordinate against q's (the same
# draws, unweighted, so the Monte Carlo error of the draws cancels), on the
# unconstrained scale (where q is Gaussian) and on the user's scale. The
# table is for the user's scale; the maxima are over both scales. Sums are
# accumulated over the chunks of draws (shifted by a point per coordinate,
# so that a large mean does not swallow a small sd).
psis_moments <- function(fit, smp, n, w) {
  # the sums start at 0 and take their length (D of zeta or of theta,
  # which differ with a simplex) from the first chunk
  acc <- function() list(c = NULL, s1 = 0, s2 = 0, w1 = 0, w2 = 0)
  add <- function(a, X, wi) {
    if (is.null(a$c)) a$c <- ifelse(is.finite(X[1, ]), X[1, ], 0)
    Y <- sweep(X, 2, a$c)
    a$s1 <- a$s1 + colSums(Y); a$s2 <- a$s2 + colSums(Y^2)
    a$w1 <- a$w1 + colSums(wi * Y); a$w2 <- a$w2 + colSums(wi * Y^2)
    a
  }
  unc <- acc()
  con <- acc()
  int_j <- which(integer_coords(fit$model))
  counts <- lapply(int_j, function(j) integer())   # draws per value, by coordinate
  for_each_draw_chunk(fit, smp, n, function(ch, idx) {
    unc <<- add(unc, t(ch$zeta), w[idx])
    con <<- add(con, ch$theta, w[idx])
    for (k in seq_along(int_j)) {
      tab <- table(ch$theta[, int_j[k]])
      counts[[k]][names(tab)] <<- ifelse(is.na(counts[[k]][names(tab)]), 0L,
                                         counts[[k]][names(tab)]) + as.integer(tab)
    }
  })
  one <- function(a) {
    m0 <- a$s1 / n
    s0 <- sqrt(pmax(a$s2 / n - m0^2, 0))
    s1 <- sqrt(pmax(a$w2 - a$w1^2, 0))   # the weights sum to 1
    pos <- s0 > 0 & is.finite(s0)
    shift <- ifelse(pos, abs(a$w1 - m0) / s0, 0)
    ratio <- ifelse(pos, s1 / s0, 1)
    list(m0 = a$c + m0, s0 = s0, m1 = a$c + a$w1, s1 = s1, shift = shift,
         ratio = ratio)
  }
  unc <- one(unc)
  con <- one(con)
  bad_num <- function(x) ifelse(is.finite(x), x, Inf)
  shift <- bad_num(con$shift)
  change <- abs(bad_num(con$ratio) - 1)
  # A discrete coordinate whose draws nearly all take one value (an
  # indicator at probability 0.9996) has an sd resting on a handful of
  # draws: its ratio is noise, not a verdict. Below 100 draws off the mode
  # (relative Monte Carlo error of an sd about 1 / (2 sqrt(100)) = 5%, half
  # the threshold) only its mean is checked, which covers a wrong
  # probability: an error of d in P moves the mean by d q-sds / sd.
  few <- int_j[vapply(counts, function(ct) n - max(ct) < 100, logical(1))]
  change[few] <- 0
  unc_change <- abs(bad_num(unc$ratio) - 1)
  if (length(unc$shift) == length(shift)) {   # theta and zeta coordinate by coordinate
    unc_change[few] <- 0
    shift <- pmax(bad_num(unc$shift), shift)
    change <- pmax(unc_change, change)
  }   # else (a simplex) the table is theta's; the maxima are over both
  max_shift <- max(shift, bad_num(unc$shift))
  max_change <- max(change, unc_change)
  # the same changes by side: widest excess (ratio above 1) and deepest
  # lack (below 1), for diag_clear_fail()
  ratios <- c(replace(bad_num(con$ratio), few, 1),
              if (length(unc$ratio) == length(con$ratio)) replace(bad_num(unc$ratio), few, 1)
              else bad_num(unc$ratio))
  list(sides = c(up = max(ratios - 1, 0), down = max(1 - ratios, 0)),
    table = data.frame(parameter = fit$par_names, q_mean = con$m0, q_sd = con$s0,
                       psis_mean = con$m1, psis_sd = con$s1,
                       mean_shift = shift,
                       sd_ratio = replace(con$ratio, few, NA_real_),   # not checked
                       row.names = NULL),
    max_shift = max_shift, max_sd_change = max_change)
}

# "ok", or the reasons the fit is not to be trusted.
diag_verdict <- function(dg) {
  th <- diag_thresholds
  why <- character()
  if (dg$n_nonfinite > 0) why <- c(why, "nonfinite")
  if (isTRUE(dg$max_mean_shift > th$mean_shift) ||
      isTRUE(dg$max_sd_change > th$sd_ratio)) why <- c(why, "moments")
  if (dg$n_nonfinite == 0 && isTRUE(dg$kl_hat > th$kl)) why <- c(why, "kl")
  if (length(why) == 0) "ok" else why
}

diag_message <- function(fit, dg) {
  fmt <- function(x, d = 2) format(signif(x, d))
  v <- dg$verdict
  lines <- "The variational approximation q may be inaccurate:"
  if ("nonfinite" %in% v) {
    lines <- c(lines, sprintf(
      "x %d of %d draws from q fall where the log-joint is not finite (NA, NaN or -Inf): q puts mass outside the posterior's support, so the ELBO is -Inf.",
      dg$n_nonfinite, dg$n_draws))
  }
  mt <- dg$psis_moments
  if ("moments" %in% v) {
    j <- which.max(pmax(mt$mean_shift / diag_thresholds$mean_shift,
                        abs(mt$sd_ratio - 1) / diag_thresholds$sd_ratio, na.rm = TRUE))
    lines <- c(lines, sprintf(
      "x Reweighted towards the posterior (PSIS), `%s` has mean %s and sd %s against q's %s and %s (means up to %s q-sds apart, sds up to %s%% off).",
      mt$parameter[j], fmt(mt$psis_mean[j], 3), fmt(mt$psis_sd[j], 3),
      fmt(mt$q_mean[j], 3), fmt(mt$q_sd[j], 3), fmt(dg$max_mean_shift),
      fmt(100 * dg$max_sd_change)))
  }
  if ("kl" %in% v || "moments" %in% v) {
    lines <- c(lines, sprintf(
      "%s Estimated KL(q || p) = log Z-hat - ELBO = %s nats%s.",
      if ("kl" %in% v) "x" else "i", fmt(dg$kl_hat),
      if ("kl" %in% v) sprintf(" (> %s)", diag_thresholds$kl) else ""))
  }
  if (!is.na(dg$khat)) {
    lines <- c(lines, sprintf(
      "i Pareto k-hat %s from %d draws%s.", fmt(dg$khat), dg$n_draws,
      if (isTRUE(dg$khat > dg$khat_threshold))
        sprintf(" (> %s: the reweighted estimates are rough themselves; q misses posterior mass in its tails)",
                fmt(dg$khat_threshold))
      else ""))
  }
  paste(c(lines, diag_advice(fit, dg)), collapse = "\n")
}

# Advice that fits the case.
diag_advice <- function(fit, dg) {
  v <- dg$verdict
  D <- length(fit$par_names)
  out <- character()
  if ("nonfinite" %in% v) {
    out <- c(out, "i Declare the support with `param(lower = , upper = )` so that q cannot leave it, or check where `logjoint` returns NA or -Inf.")
  }
  mt <- dg$psis_moments
  too_wide <- !is.null(mt) && any(mt$sd_ratio < 0.5, na.rm = TRUE)
  if (too_wide) {
    out <- c(out, "i q is far wider than the posterior: the optimisation may not have settled. Check `plot(fit)`; try a smaller `eta`, `estimator = \"reparam\"` (with a gradient), or `sample_mcmc()`.")
  } else if (any(c("moments", "kl") %in% v)) {
    if (!is.null(fit$families) && any(fit$families != "gaussian")) {
      out <- c(out, "i q is a product of one block per parameter (categorical, Gamma or Beta blocks among them): it cannot represent how the parameters depend on each other. Check with `sample_mcmc()` on a model with the discrete parameters summed out, or treat the summaries as approximate.")
    } else if (identical(fit$method, "meanfield") && D > 1) {
      out <- c(out, "i Mean-field q cannot represent posterior correlations (it understates sds): try `method = \"fullrank\"`, or check with `sample_mcmc()` (or, if the posterior may have several modes, use `restarts = 4`).")
    } else {
      out <- c(out, "i The posterior is not close to a Gaussian on the unconstrained scale (several modes, skew or heavy tails): look for other modes with `restarts = 4`, or check with `sample_mcmc()`.")
    }
    if (isTRUE(dg$khat <= dg$khat_threshold)) {
      out <- c(out, "i k-hat is small enough that `as.matrix(fit, psis = TRUE)` (draws reweighted towards the posterior) is a usable correction.")
    }
  }
  out
}

# How many of the fit's draws the diagnostics use: `diagnostic_draws`
# (4000 by default), fewer for more than 10,000 parameters (see below) or for
# a GLM with many rows whose log densities are computed exactly (`exact`; see
# glm_taylor_logdens() for the route that makes this cut unnecessary),
# where one log density costs about N x ncol(X) operations: at most 1e8 of
# them (about a second), but at least 100 draws (k-hat needs them). Known in advance: the same fit
# gets the same diagnostics on a busy machine and an idle one.
diagnostic_draw_count <- function(fit, available, diagnostic_draws = 4000, exact = TRUE) {
  check_count(diagnostic_draws, "diagnostic_draws")
  n <- min(available, diagnostic_draws)
  # every draw is D numbers to make, map and evaluate: at most 4e7 of them
  # (the 4000 default up to D = 10,000), at least 100 draws
  n <- min(n, max(100, floor(4e7 / length(fit$par_names))))
  tg <- fit$model$target
  if (exact && is.list(tg) && identical(tg$type, "glm") && is.matrix(tg$X)) {
    cost <- as.double(nrow(tg$X)) * max(1, ncol(tg$X))
    n <- min(n, max(100, floor(glm_exact_diag_work / cost)))
  }
  as.integer(n)
}

fit_target_spec <- function(fit) r_target_spec(fit$model, err_call = call("bbvi"))

# log p (with the log-Jacobian, on the unconstrained scale) at the columns of
# zeta, in chunks so that a vectorized log-joint sees at most `chunk` draws.
diagnostic_logdens <- function(fit, zeta, chunk = 1000L) {
  spec <- fit_target_spec(fit)
  n <- ncol(zeta)
  out <- numeric(n)
  for (s in seq(1L, n, by = chunk)) {
    idx <- seq(s, min(n, s + chunk - 1L))
    out[idx] <- .Call(C_logdens, spec, as.double(fit$lower), as.double(fit$upper),
                      zeta[, idx, drop = FALSE], FALSE)
  }
  out
}
