test_that("fit methods agree with q", {
  case <- gaussian2_case()
  fit <- bbvi(case$model, method = "fullrank", seed = 4)
  expect_s3_class(fit, "bbvi_fit")
  expect_named(coef(fit), c("z[1]", "z[2]"))
  V <- vcov(fit)
  expect_equal(dim(V), c(2L, 2L))
  expect_equal(V, tcrossprod(fit$chol_unc), ignore_attr = TRUE)
  ci <- confint(fit, level = 0.9)
  expect_equal(unname(ci[, 1]), unname(coef(fit) - qnorm(0.95) * sqrt(diag(V))))
  expect_equal(unname(ci[, 2]), unname(coef(fit) + qnorm(0.95) * sqrt(diag(V))))
  expect_equal(rownames(confint(fit, parm = "z[2]")), "z[2]")
  m <- as.matrix(fit)
  expect_equal(dim(m), c(4000L, 2L))
  expect_equal(colnames(m), c("z[1]", "z[2]"))
  # stored draws match q within Monte Carlo error
  expect_lt(max(abs(colMeans(m) - coef(fit)) / sqrt(diag(V))), 4 / sqrt(4000))
  expect_equal(nrow(as.matrix(fit, draws = 10)), 10L)
  s <- summary(fit)
  expect_equal(colnames(s$table), c("mean", "sd", "2.5%", "50%", "97.5%"))
  expect_output(print(s), "Converged")
  expect_output(print(fit), "fullrank")
  e <- elbo(fit)
  expect_named(e, c("iteration", "elbo"))
  expect_equal(nrow(e), fit$iterations)
  expect_true(is.numeric(fit$time) && fit$time >= 0)
  # the ELBO ends near its maximum, log Z (the target here is unnormalised:
  # log Z = log(2 pi) + 0.5 log det Sigma - 500)
  logZ <- log(2 * pi) + 0.5 * log(det(case$Sigma)) - 500
  expect_lt(abs(mean(tail(e$elbo, 100)) - logZ), 0.05)
})

test_that("bounded parameters: quantiles are exact transforms, summaries agree with draws", {
  fit <- suppressWarnings(bbvi(beta_binomial_case()$model, seed = 2))
  s <- summary(fit)$table
  expect_true(s[1, "2.5%"] > 0 && s[1, "97.5%"] < 1)
  d <- as.matrix(fit)[, 1]
  se <- sd(d) / sqrt(length(d))
  expect_lt(abs(mean(d) - s[1, "mean"]), 4 * se)
  expect_lt(abs(quantile(d, 0.5) - s[1, "50%"]), 0.02)
  # an upper-bound-only parameter has a decreasing transform
  m <- bbvi_model(function(theta, data) dnorm(theta$u, -2, 0.5, log = TRUE),
                  list(u = param(upper = 0)))
  fu <- suppressWarnings(bbvi(m, seed = 3))
  ci <- confint(fu)
  expect_lt(ci[1, 1], ci[1, 2])
  expect_true(ci[1, 2] < 0)
})

test_that("print() is compact (median, MAD_SD), summary() full; digits honoured", {
  # the stochastic path: its answer is not round, so digits shows
  fit <- bbvi(gaussian2_case()$model, method = "fullrank", seed = 4, optimizer = "adam")
  expect_snapshot(print(fit), transform = scrub_times)
  expect_snapshot(summary(fit), transform = scrub_times)
  expect_snapshot(print(fit, digits = 2), transform = scrub_times)
  expect_snapshot(print(summary(fit), digits = 6), transform = scrub_times)
  # digits changes every number of the table, and nothing else
  out4 <- capture.output(print(fit))
  out2 <- capture.output(print(fit, digits = 2))
  changed <- which(out4 != out2)
  expect_equal(out4[seq_len(min(changed) - 1)], out2[seq_len(min(changed) - 1)])
  expect_match(out2[length(out2)], "^z\\[2\\] +-?[0-9]\\.?[0-9]? +[0-9]\\.?[0-9]? *$")
  # an unbounded parameter's q marginal is normal: MAD_SD is its sd exactly
  tab <- vi_median_mad(fit)
  expect_equal(tab[, "MAD_SD"], sqrt(diag(vcov(fit))))
  expect_equal(tab[, "Median"], coef(fit))
  # a bounded one: from the draws
  fb <- suppressWarnings(bbvi(beta_binomial_case()$model, seed = 2))
  expect_equal(unname(vi_median_mad(fb)[1, "MAD_SD"]), stats::mad(as.matrix(fb)[, 1]))
  # no MCMC diagnostics for a variational fit
  expect_no_match(capture.output(print(summary(fit))), "rhat|ess|R-hat", ignore.case = TRUE)
  expect_snapshot(error = TRUE, print(fit, digits = 0))
  expect_snapshot(error = TRUE, summary(fit, digits = 3))
})

test_that("printed numbers carry no zeros that were not computed", {
  tab <- cbind(mean = c(-10.04, 33.99, 2), sd = c(1.49, 1.904, 0.7597))
  out <- format_table(tab, 4)
  expect_equal(trimws(out[, "mean"]), c("-10.04", "33.99", "2"))
  expect_equal(trimws(out[, "sd"]), c("1.49", "1.904", "0.7597"))
  # aligned on the decimal point
  expect_equal(regexpr(".", out[1:2, "mean"], fixed = TRUE), rep(4L, 2), ignore_attr = TRUE)
  expect_equal(trimws(format_table(tab, 2)[, "sd"]), c("1.5", "1.9", "0.76"))
  expect_equal(trimws(format_table(cbind(ess = 3761.4, rhat = 1.00213), 4,
                                   integer = "ess", fixed = c(rhat = 3))),
               c("3761", "1.002"), ignore_attr = TRUE)
  expect_equal(trimws(format_column(c(1e-9, NA, 123456.7), 3)), c("1e-09", "NA", "123457"))
  expect_equal(format_seconds(c(0, 0.004, 0.006, 12.345)),
               c("< 0.01 s", "< 0.01 s", "0.01 s", "12.35 s"))
})

test_that("plot() draws the trace and marginals", {
  fit <- bbvi(normal_mean_case()$model, seed = 1)
  path <- tempfile(fileext = ".pdf")
  grDevices::pdf(path)
  on.exit({ grDevices::dev.off(); unlink(path) })
  expect_invisible(plot(fit))
  expect_snapshot(error = TRUE, plot(fit, pars = "nope"))
})

test_that("methods check their arguments", {
  fit <- bbvi(normal_mean_case()$model, seed = 1)
  expect_snapshot(error = TRUE, confint(fit, level = 2))
  expect_snapshot(error = TRUE, confint(fit, parm = "nope"))
  expect_snapshot(error = TRUE, as.matrix(fit, draws = 0))
  expect_snapshot(error = TRUE, elbo(1))
})

test_that("PSIS k-hat flags a too-narrow q and passes a good one", {
  case <- gaussian2_case()
  good <- bbvi(case$model, method = "fullrank", seed = 4)
  expect_lt(good$diagnostics$khat, 0.5)
  # the exact q makes log p - log q constant: the ELBO is log Z
  logZ <- log(2 * pi) + 0.5 * log(det(case$Sigma)) - 500
  expect_lt(abs(good$diagnostics$elbo - logZ), 0.01)
  # mean-field on a correlation-0.95 Gaussian is far too narrow
  S <- matrix(c(1, 0.95, 0.95, 1), 2); P <- solve(S)
  m <- bbvi_model(function(theta, data) -0.5 * sum(theta$z * (P %*% theta$z)),
                  list(z = param(dim = 2)),
                  gradient = function(theta, data) -drop(P %*% theta$z))
  expect_warning(with_khat_warning(bad <- bbvi(m, seed = 1)), "k-hat")
  expect_gt(bad$diagnostics$khat, 0.7)
  expect_lt(bad$diagnostics$elbo, log(2 * pi) + 0.5 * log(det(S)))
  expect_output(print(bad), "heavy-tailed")
  # PSIS resampling moves the too-narrow draws towards the true spread
  rs <- as.matrix(bad, psis = TRUE)
  expect_gt(sd(rs[, 1]), sd(as.matrix(bad)[, 1]))
})

test_that("a q locked on one of two modes: invisible to importance sampling, seen by restarts", {
  m <- bbvi_model(function(theta, data) {
    log(0.5 * dnorm(theta$x, -2.5, 0.7) + 0.5 * dnorm(theta$x, 2.5, 0.7))
  }, list(x = param()))
  fit <- bbvi(m, seed = 1, init = list(x = 1.5))
  expect_gt(abs(coef(fit)[["x"]]), 2)   # locked onto one mode
  expect_lt(sqrt(vcov(fit)[1, 1]), 0.8)   # with about that mode's sd
  # q's draws hardly ever reach the other mode, so the reweighted moments
  # and the KL estimate look like those of a good fit (documented in
  # ?vi_diagnostics) ...
  expect_lt(fit$diagnostics$kl_hat, 0.1)
  # ... but restarts from dispersed points find the other mode and say so
  skip_if_not_installed("future.apply")
  with_khat_warning(
    expect_warning(fit4 <- bbvi(m, seed = 1, restarts = 4), "several modes"))
  expect_true(any(fit4$restart_summary$distance > 3))
})

test_that("restarts run through future.apply and keep the best ELBO", {
  skip_if_not_installed("future.apply")
  m <- bbvi_model(function(theta, data) {
    log(0.5 * dnorm(theta$x, -3, 0.7) + 0.5 * dnorm(theta$x, 3, 0.7))
  }, list(x = param()))
  fit <- suppressWarnings(bbvi(m, seed = 1, restarts = 3))
  rs <- fit$restart_summary
  expect_equal(nrow(rs), 3L)
  pool <- if (any(rs$converged)) rs$converged else rep(TRUE, 3)
  expect_equal(fit$diagnostics$elbo, max(rs$elbo[pool]))
  expect_true(rs$best[which(pool)[which.max(rs$elbo[pool])]])
  expect_output(print(fit), "Best of 3 restarts")
  fit2 <- suppressWarnings(bbvi(m, seed = 1, restarts = 3))
  expect_identical(fit$lambda, fit2$lambda)
  expect_snapshot(error = TRUE, bbvi(m, restarts = 0))
})

test_that("the kept restart is the best converged one", {
  # a higher ELBO from a fit that did not converge (a q still moving, or a
  # runaway sd) does not win over a converged fit
  expect_identical(bbvi:::best_restart(c(-10, -3, -5), c(TRUE, FALSE, TRUE)), 3L)
  expect_identical(bbvi:::best_restart(c(-10, -3, -5), c(TRUE, TRUE, TRUE)), 2L)
  expect_identical(bbvi:::best_restart(c(-10, -3, -5), c(FALSE, FALSE, FALSE)), 2L)
  expect_identical(bbvi:::best_restart(c(-10, -3, -5), c(TRUE, FALSE, FALSE)), 1L)
})

test_that("a progress bar can be shown without disturbing the fit", {
  case <- normal_mean_case()
  f1 <- bbvi(case$model, seed = 1, progress = FALSE)
  f2 <- suppressMessages(bbvi(case$model, seed = 1, progress = TRUE))
  expect_identical(f1$lambda, f2$lambda)
})

test_that("quantiles of an upper-bounded parameter are right for asymmetric probs", {
  # q on the unconstrained scale: zeta ~ N(0.3, 0.5^2), theta = 2 - exp(zeta)
  # (upper bound 2): a decreasing transform, so the p quantile of theta is
  # 2 - exp(the 1 - p quantile of zeta)
  m <- bbvi_model(function(theta, data) dnorm(theta$u, 0, 1, log = TRUE),
                  list(u = param(upper = 2), v = param(lower = -1, upper = 3), w = param(lower = 1)))
  res <- list(mean = c(0.3, -0.2, 0.1), chol = diag(c(0.5, 0.8, 0.4)),
              method = "meanfield", estimator = "score", optimizer = "adam",
              converged = TRUE, iterations = 1L, time = 0, restarts = 1L,
              control = list(samples = 50L))
  set.seed(1)
  fit <- bbvi:::new_bbvi_fit(m, res, call = NULL)
  probs <- c(0.1, 0.5, 0.99)
  q <- bbvi:::marginal_quantiles(fit, probs)
  expect_equal(unname(q["u", ]), 2 - exp(qnorm(1 - probs, 0.3, 0.5)))
  expect_equal(unname(q["v", ]), -1 + 4 * plogis(qnorm(probs, -0.2, 0.8)))
  expect_equal(unname(q["w", ]), 1 + exp(qnorm(probs, 0.1, 0.4)))
  expect_equal(colnames(q), c("10%", "50%", "99%"))
  # and against Monte Carlo: 4000 stored draws, quantiles within a few
  # binomial standard errors (sqrt(p (1 - p) / n) in probability)
  for (nm in c("u", "v", "w")) {
    p_hat <- vapply(seq_along(probs), function(j) mean(fit$draws[, nm] <= q[nm, j]), numeric(1))
    expect_true(all(abs(p_hat - probs) < 4 * sqrt(probs * (1 - probs) / 4000)), label = nm)
  }
  # summary() uses them
  expect_equal(unname(summary(fit)$table["u", "97.5%"]), 2 - exp(qnorm(0.025, 0.3, 0.5)))
})

# A factor model: N(0, W W' + psi2 I), its log density and gradient by
# Woodbury; mean-field understates its marginal sds, a low-rank q of the
# factors' rank does not.
factor_case <- function(D = 30, k = 2, psi2 = 0.25) {
  set.seed(5)
  W <- matrix(stats::rnorm(D * k), D, k)
  Minv <- solve(diag(k) + crossprod(W) / psi2)
  si <- function(X) X / psi2 - ((X %*% W) %*% Minv) %*% t(W) / psi2^2
  list(model = bbvi_model(function(theta, data) -0.5 * rowSums(theta$x * si(theta$x)),
                          parameters = list(x = param(dim = D)),
                          gradient = function(theta, data) list(x = -si(theta$x)),
                          vectorized = TRUE),
       Sigma = tcrossprod(W) + diag(psi2, D))
}

test_that("a low-rank fit recovers a factor model's sds and covariance; mean-field understates them", {
  case <- factor_case()
  sd_true <- sqrt(diag(case$Sigma))
  lr <- suppressWarnings(bbvi(case$model, method = "lowrank", rank = 2, seed = 1))
  mf <- suppressWarnings(bbvi(case$model, seed = 1))
  expect_s3_class(lr$q, "q_gauss_lr")
  expect_equal(lr$rank, 2L)
  expect_null(lr$chol_unc)
  # q is exact here; tol 0.02 sds on the averages, so 10% on sds is wide
  expect_lt(max(abs(coef(lr))), 0.2 * max(sd_true))
  expect_lt(max(abs(summary(lr)$table[, "sd"] / sd_true - 1)), 0.1)
  expect_lt(stats::median(summary(mf)$table[, "sd"] / sd_true), 0.5)
  V <- vcov(lr)
  expect_equal(dim(V), c(30L, 30L))
  expect_equal(dimnames(V)[[1]], lr$par_names)
  expect_lt(max(abs(V - case$Sigma)) / max(case$Sigma), 0.15)
  ci <- confint(lr, level = 0.9)
  expect_equal(unname(ci[, 2]), unname(coef(lr) + qnorm(0.95) * sqrt(diag(V))))
  X <- as.matrix(lr)
  expect_equal(dim(X), c(4000L, 30L))
  expect_equal(colnames(X), lr$par_names)
  expect_equal(stats::cor(X)[1, 2], stats::cov2cor(V)[1, 2], tolerance = 0.1)
  expect_lt(lr$diagnostics$kl_hat, 0.1)
})

test_that("rank is checked and only for low-rank", {
  case <- factor_case(D = 5)
  expect_error(bbvi(case$model, method = "lowrank", rank = 6), class = "rlang_error")
  expect_error(bbvi(case$model, method = "lowrank", rank = 0), class = "rlang_error")
  expect_error(bbvi(case$model, rank = 2), "lowrank")
})

test_that("beyond the draws budget the fit keeps a seed and makes the same draws again", {
  case <- factor_case(D = 30)
  old <- options(bbvi.draws_budget = 0)
  on.exit(options(old), add = TRUE)
  fit <- suppressWarnings(bbvi(case$model, seed = 2, draws = 500))
  expect_null(fit$draws)
  expect_null(fit$chol_unc)
  X <- as.matrix(fit, draws = 500)
  expect_identical(X, as.matrix(fit, draws = 500))
  # a shorter request is a prefix: the weights refer to the first draws
  expect_identical(bbvi:::fit_own_draws(fit, 20), X[1:20, ])
  expect_equal(dim(as.matrix(fit, draws = 100, psis = TRUE)), c(100L, 30L))
  expect_equal(fit$diagnostics$n_draws, 500L)
  expect_true(is.finite(fit$diagnostics$khat))
})

test_that("diagnostics over chunks of draws equal those over the same draws at once", {
  case <- factor_case(D = 30)
  # chunks of 64 draws: 300 draws come in 5 of them
  old <- options(bbvi.draws_budget = 0, bbvi.draw_chunk_numbers = 30 * 64)
  on.exit(options(old), add = TRUE)
  fit <- suppressWarnings(bbvi(case$model, seed = 3, draws = 300, max_iter = 200))
  n_chunks <- 0
  bbvi:::for_each_draw_chunk(fit, NULL, 300, function(ch, idx) n_chunks <<- n_chunks + 1)
  expect_equal(n_chunks, 5)
  # the same draws handed over in one piece
  smp <- list(zeta = NULL, log_q = NULL, theta = NULL)
  bbvi:::for_each_draw_chunk(fit, NULL, 300, function(ch, idx) {
    smp$zeta <<- cbind(smp$zeta, ch$zeta)
    smp$log_q <<- c(smp$log_q, ch$log_q)
    smp$theta <<- rbind(smp$theta, ch$theta)
  })
  a <- suppressWarnings(bbvi:::vi_diagnostics_compute(fit, NULL, 300))
  b <- suppressWarnings(bbvi:::vi_diagnostics_compute(fit, smp, 300))
  expect_equal(a[c("khat", "elbo", "kl_hat", "max_mean_shift", "max_sd_change")],
               b[c("khat", "elbo", "kl_hat", "max_mean_shift", "max_sd_change")])
  expect_equal(a$psis_moments, b$psis_moments)
})

test_that("a fixed-draw fit prints its path and counts L-BFGS evaluations", {
  fit <- suppressWarnings(bbvi(gamma_poisson_case()$model, seed = 3))
  expect_snapshot(print(fit), transform = scrub_times)
  out <- capture.output(print(fit))
  expect_match(out, "path: fixed draws", all = FALSE)
  expect_match(out, sprintf("after %d L-BFGS evaluations", fit$iterations), all = FALSE)
})
