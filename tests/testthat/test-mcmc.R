# MCMC against exact posteriors (the conjugate cases of the VI tests, in
# helper-models.R). Tolerances are Monte Carlo errors of the run itself: the
# error of a mean is compared with 4 MCSE, MCSE = sd / sqrt(ESS) (bulk-ESS);
# the error of an sd with 4 MCSE of the sd, from the ESS of the squared
# deviations (delta method: se(sd) = se(var) / (2 sd)). With a fixed seed the
# tests are deterministic; 4 MCSE would fail by chance about once in 16,000
# comparisons.

mcse_mean <- function(x) {   # x: iterations x chains
  stats::sd(x) / sqrt(bbvi:::diag_ess_mean(x))
}
mcse_sd <- function(x, true_mean) {
  d2 <- (x - true_mean)^2
  stats::sd(d2) / sqrt(bbvi:::diag_ess_mean(d2)) / (2 * stats::sd(x))
}
expect_exact <- function(mc, par, mean, sd) {
  x <- matrix(mc$draws[, , par], ncol = mc$chains)
  expect_lt(abs(base::mean(x) - mean), 4 * mcse_mean(x))
  expect_lt(abs(stats::sd(x) - sd), 4 * mcse_sd(x, mean))
  expect_lt(mc$diagnostics[par, "rhat"], 1.02)
}

test_that("NUTS recovers the exact posteriors of the conjugate cases", {
  case <- normal_mean_case()
  mc <- sample_mcmc(case$model, iter = 1000, seed = 1)
  expect_exact(mc, "mu", case$mean, case$sd)
  expect_equal(mc$divergences, 0)

  case <- beta_binomial_case()   # p in (0, 1): logit scale + Jacobian
  mc <- sample_mcmc(case$model, iter = 1000, seed = 2)
  expect_exact(mc, "p", case$mean, case$sd)
  expect_true(all(mc$draws > 0 & mc$draws < 1))
  # the whole distribution, not just two moments
  expect_gt(suppressWarnings(stats::ks.test(as.matrix(mc)[, "p"], "pbeta", 9, 15)$p.value),
            1e-3)

  case <- gamma_poisson_case()   # lambda > 0: log scale + Jacobian
  mc <- sample_mcmc(case$model, iter = 1000, seed = 3)
  expect_exact(mc, "lambda", case$mean, case$sd)
})

test_that("NUTS recovers a correlated 2-D Gaussian, covariance included", {
  case <- gaussian2_case()
  mc <- sample_mcmc(case$model, iter = 1000, seed = 4)
  sds <- sqrt(diag(case$Sigma))
  expect_exact(mc, "z[1]", case$mean[1], sds[1])
  expect_exact(mc, "z[2]", case$mean[2], sds[2])
  # correlation 0.8: se of a correlation about (1 - r^2) / sqrt(ESS) = 0.36 / 30
  expect_lt(abs(stats::cor(as.matrix(mc))[1, 2] - 0.8), 0.05)
  expect_equal(mc$divergences, 0)
})

test_that("the diagonal metric adapts to scales four orders of magnitude apart", {
  sds <- c(1e-2, 1, 1e2)
  lj <- native_logjoint("bbvi:mvnormal", has_gradient = TRUE,
                        data = list(c(0, 5, -5), diag(1 / sds^2)))
  m <- bbvi_model(lj, list(z = param(dim = 3)))
  mc <- sample_mcmc(m, iter = 1000, seed = 5)
  for (k in 1:3) expect_exact(mc, sprintf("z[%d]", k), c(0, 5, -5)[k], sds[k])
  # the adapted inverse metric estimates the variances (Stan's shrinkage
  # towards 1e-3 adds about 2e-5: 20% of the smallest variance)
  for (k in seq_len(mc$chains)) {
    expect_true(all(abs(log(mc$inv_metric[[k]] / sds^2)) < log(2)))
  }
  # and so the trajectories stay short
  expect_lt(mean(mc$sampler$treedepth__), 4)
})

test_that("NUTS on numeric gradients recovers the exact posteriors, scales apart", {
  # central differences step in units of the adapted metric: scales 1e-2
  # to 1e2 (the metric starts at 1) and a bounded parameter
  sds <- c(1e-2, 1, 1e2)
  lj <- native_logjoint("bbvi:mvnormal", data = list(c(0, 5, -5), diag(1 / sds^2)))
  m <- bbvi_model(lj, list(z = param(dim = 3)), gradient = "numeric")
  mc <- sample_mcmc(m, iter = 1000, seed = 5)
  for (k in 1:3) expect_exact(mc, sprintf("z[%d]", k), c(0, 5, -5)[k], sds[k])
  expect_equal(mc$divergences, 0)
  case <- gamma_poisson_case()
  m <- bbvi_model(case$model$logjoint, case$model$parameters, data = case$model$data,
                  gradient = "numeric")
  mc <- sample_mcmc(m, iter = 1000, seed = 3)
  expect_exact(mc, "lambda", case$mean, case$sd)
})

test_that("random-walk Metropolis recovers the exact posteriors", {
  case <- normal_mean_case()
  m <- bbvi_model(case$model$logjoint, case$model$parameters, data = case$model$data)
  expect_error(sample_mcmc(m, iter = 100), "gradient")
  mc <- sample_mcmc(m, method = "rwm", iter = 4000, seed = 6)
  expect_exact(mc, "mu", case$mean, case$sd)
  # acceptance tuned to about 0.44 in one dimension, fixed after warmup
  expect_lt(abs(mean(mc$sampler$accept_stat__) - 0.44), 0.08)

  case <- beta_binomial_case()
  mc <- sample_mcmc(case$model, method = "rwm", iter = 4000, seed = 7)
  expect_exact(mc, "p", case$mean, case$sd)

  case <- gaussian2_case()
  mc <- sample_mcmc(case$model, method = "rwm", iter = 4000, seed = 8)
  sds <- sqrt(diag(case$Sigma))
  expect_exact(mc, "z[1]", case$mean[1], sds[1])
  expect_exact(mc, "z[2]", case$mean[2], sds[2])
  # the proposal covariance learnt the correlation
  M <- mc$inv_metric[[1]]
  expect_lt(abs(stats::cov2cor(M)[1, 2] - 0.8), 0.1)
})

test_that("RWM's inv_metric is the adapted covariance, not its Cholesky factor", {
  # a 2-D Gaussian, sds 0.5 and 3, correlation -0.6: the covariance estimate
  # of the last warmup window (several hundred correlated draws) is within
  # MC error of Sigma; before, the lower Cholesky factor was returned
  Sigma <- matrix(c(0.25, -0.9, -0.9, 9), 2)
  lj <- native_logjoint("bbvi:mvnormal", has_gradient = TRUE,
                        data = list(c(1, -2), solve(Sigma)))
  m <- bbvi_model(lj, list(z = param(dim = 2)))
  mc <- sample_mcmc(m, method = "rwm", chains = 4, iter = 4000, seed = 21)
  for (k in seq_len(mc$chains)) {
    M <- mc$inv_metric[[k]]
    expect_equal(dim(M), c(2L, 2L))
    expect_equal(dimnames(M), list(c("z[1]", "z[2]"), c("z[1]", "z[2]")))
    expect_true(isSymmetric(unname(M)))
    expect_true(all(eigen(M, symmetric = TRUE, only.values = TRUE)$values > 0))
    expect_true(all(abs(log(diag(M) / diag(Sigma))) < log(1.5)))
    expect_lt(abs(stats::cov2cor(M)[1, 2] + 0.6), 0.2)
    expect_true(M[1, 2] < 0)   # a Cholesky factor's upper triangle is 0
  }
  # proposal sd = stepsize * sqrt(diag(M)): near 2.38 / sqrt(2) posterior sds
  ratio <- mc$stepsize * sqrt(diag(mc$inv_metric[[1]])[2]) / 3
  expect_gt(min(ratio), 0.5)
  expect_lt(max(ratio), 4)
})

test_that("same seed, same draws; set.seed() reproduces; seed leaves the stream alone", {
  case <- gaussian2_case()
  # short runs: an R-hat warning is possible and beside the point here
  a <- suppressWarnings(sample_mcmc(case$model, chains = 2, iter = 300, seed = 42))
  b <- suppressWarnings(sample_mcmc(case$model, chains = 2, iter = 300, seed = 42))
  expect_identical(a$draws, b$draws)
  expect_identical(a$sampler, b$sampler)
  c2 <- suppressWarnings(sample_mcmc(case$model, chains = 2, iter = 300, seed = 43))
  expect_false(identical(a$draws, c2$draws))
  set.seed(9); d <- suppressWarnings(sample_mcmc(case$model, chains = 2, iter = 300))
  set.seed(9); e <- suppressWarnings(sample_mcmc(case$model, chains = 2, iter = 300))
  expect_identical(d$draws, e$draws)
  set.seed(10); before <- .Random.seed
  suppressWarnings(sample_mcmc(case$model, chains = 1, iter = 50, seed = 1))
  expect_identical(.Random.seed, before)
  r1 <- suppressWarnings(sample_mcmc(case$model, method = "rwm", chains = 2, iter = 300, seed = 42))
  r2 <- suppressWarnings(sample_mcmc(case$model, method = "rwm", chains = 2, iter = 300, seed = 42))
  expect_identical(r1$draws, r2$draws)
  # chains start apart: uniform(-2, 2) on the unconstrained scale
  expect_true(all(abs(a$inits) <= 2))
  expect_false(identical(a$inits[, 1], a$inits[, 2]))
})

test_that("divergences are counted and reported; tree depth is capped", {
  # Neal's funnel: the neck is too narrow for one step size
  funnel <- bbvi_model(
    function(theta, data) dnorm(theta$v, 0, 3, log = TRUE) +
      sum(dnorm(theta$x, 0, exp(theta$v / 2), log = TRUE)),
    list(v = param(), x = param(dim = 2)),
    gradient = function(theta, data) {
      s2 <- exp(theta$v)
      list(v = -theta$v / 9 - 1 + 0.5 * sum(theta$x^2) / s2, x = -theta$x / s2)
    })
  warns <- character()
  mc <- withCallingHandlers(
    sample_mcmc(funnel, chains = 2, iter = 600, seed = 11),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  expect_true(any(grepl("transitions after warmup were divergent", warns)))
  expect_gt(mc$divergences, 0)
  expect_equal(mc$divergences, sum(mc$sampler$divergent__))
  expect_output(print(summary(mc)), "Divergent transitions: [1-9]")

  case <- gaussian2_case()
  mc <- suppressWarnings(
    sample_mcmc(case$model, chains = 1, iter = 200, max_treedepth = 1, seed = 12))
  expect_true(all(mc$sampler$treedepth__ <= 1))
  expect_true(all(mc$sampler$n_leapfrog__ <= 2))
  expect_equal(mc$max_treedepth_hits, sum(mc$sampler$treedepth__ == 1))
})

test_that("bbvi_mcmc methods: draws, summaries, intervals, plot", {
  case <- gaussian2_case()
  mc <- sample_mcmc(case$model, chains = 3, iter = 400, warmup = 150, seed = 13)
  expect_s3_class(mc, "bbvi_mcmc")
  expect_equal(dim(mc$draws), c(250, 3, 2))
  m <- as.matrix(mc)
  expect_equal(dim(m), c(750, 2))
  expect_equal(colnames(m), c("z[1]", "z[2]"))
  expect_equal(m[251:500, "z[2]"], mc$draws[, 2, "z[2]"])
  expect_identical(as.array(mc), mc$draws)
  expect_equal(coef(mc), colMeans(m))
  expect_equal(vcov(mc), stats::cov(m))
  ci <- confint(mc, level = 0.9)
  expect_equal(unname(ci["z[1]", ]), unname(stats::quantile(m[, 1], c(0.05, 0.95))))
  expect_equal(rownames(confint(mc, "z[2]")), "z[2]")
  s <- summary(mc)$table
  expect_equal(colnames(s), c("mean", "sd", "2.5%", "50%", "97.5%", "mcse_mean",
                              "rhat", "ess_bulk", "ess_tail"))
  # the Monte Carlo error of the mean: sd / sqrt(ESS of the mean)
  ess_mean <- diag_ess_mean(mc$draws[, , "z[1]"])
  expect_equal(s["z[1]", "mcse_mean"], s["z[1]", "sd"] / sqrt(ess_mean))
  expect_lt(s["z[1]", "mcse_mean"], s["z[1]", "sd"] / sqrt(50))
  expect_equal(nrow(mc$sampler), 750)
  expect_named(mc$sampler, c("chain", "iteration", "lp__", "accept_stat__",
                             "treedepth__", "n_leapfrog__", "divergent__", "energy__"))
  expect_length(mc$stepsize, 3)
  expect_gt(mc$time, 0)
  expect_output(print(mc), "No-U-Turn")
  expect_output(print(summary(mc)), "ess_bulk")
  expect_snapshot(print(mc), transform = scrub_times)
  expect_snapshot(summary(mc), transform = scrub_times)
  expect_snapshot(print(mc, digits = 2), transform = scrub_times)
  expect_false(identical(capture.output(summary(mc)),
                         capture.output(print(summary(mc), digits = 2))))
  expect_lte(widest_line(print(summary(mc))), 80)
  expect_snapshot(error = TRUE, print(mc, digits = "a"))
  pdf(NULL); on.exit(grDevices::dev.off())
  expect_invisible(plot(mc))
  expect_invisible(plot(mc, pars = "z[2]"))
})

test_that("sample_mcmc() starts from init when given", {
  case <- gamma_poisson_case()
  mc <- suppressWarnings(
    sample_mcmc(case$model, chains = 2, iter = 50, init = list(lambda = 4), seed = 1))
  expect_equal(mc$inits[1, ], rep(log(4), 2))
})

test_that("sample_mcmc() errors name the argument", {
  case <- gaussian2_case()
  m <- case$model
  nograd <- bbvi_model(m$logjoint, m$parameters)
  expect_snapshot(error = TRUE, sample_mcmc("a"))
  expect_snapshot(error = TRUE, sample_mcmc(nograd))
  expect_snapshot(error = TRUE, sample_mcmc(m, method = "hmc"))
  expect_snapshot(error = TRUE, sample_mcmc(m, chains = 0))
  expect_snapshot(error = TRUE, sample_mcmc(m, iter = 100, warmup = 100))
  expect_snapshot(error = TRUE, sample_mcmc(m, adapt_delta = 1))
  expect_snapshot(error = TRUE, sample_mcmc(m, max_treedepth = 0))
  expect_snapshot(error = TRUE, sample_mcmc(m, thin = 2))
  expect_snapshot(error = TRUE, sample_mcmc(m, init = list(z = c(1, NA))))
  bad <- bbvi_model(function(theta, data) stop("boom"), list(a = param()),
                    gradient = function(theta, data) 0)
  expect_snapshot(error = TRUE, sample_mcmc(bad, chains = 1, iter = 10))
  never <- bbvi_model(function(theta, data) -Inf, list(a = param()),
                      gradient = function(theta, data) 0)
  expect_snapshot(error = TRUE, sample_mcmc(never, chains = 1, iter = 10))
})

test_that("NUTS on a posteriordb GLM (kidiq interaction) matches the reference", {
  # fixtures/kidiq-kidscore_interaction/: posteriordb's data and reference
  # (see fixtures/README.md). Flat priors on the coefficients, half-Cauchy(0, 2.5) on
  # sigma, as in the posteriordb model. The uncentred interaction makes the
  # coefficients strongly correlated: a real test of the adaptation.
  kid <- utils::read.csv(test_path("fixtures", "kidiq-kidscore_interaction", "data.csv"))
  ref <- utils::read.csv(test_path("fixtures", "kidiq-kidscore_interaction", "reference.csv"))
  mc <- sample_mcmc(kid_score ~ mom_hs * mom_iq, data = kid, prior = NULL,
                    prior_intercept = NULL, prior_aux = cauchy(0, 2.5),
                    center = FALSE, iter = 1000, seed = 1)
  expect_s3_class(mc, "bbvi_glm_mcmc")
  expect_equal(mc$par_names, c("(Intercept)", "mom_hs", "mom_iq", "mom_hs:mom_iq", "sigma"))
  s <- summary(mc)$table
  # means within 0.1 reference sd (MCSE here is about 0.05 sd), sds within 10%
  expect_true(all(abs(s[, "mean"] - ref$mean) / ref$sd < 0.1))
  expect_true(all(abs(s[, "sd"] / ref$sd - 1) < 0.1))
  expect_true(all(s[, "rhat"] < 1.02))
  expect_equal(mc$divergences, 0)
  expect_equal(nobs(mc), 434)
  expect_equal(formula(mc), kid_score ~ mom_hs * mom_iq)
  expect_equal(family(mc)$family, "gaussian")
  # RWM, gradient-free, on the same compiled target: on this ill-conditioned
  # posterior it needs a long warmup to learn the proposal covariance (cheap:
  # 80,000 iterations take about 0.3 s). Bulk-ESS is about 300, so 0.25 sd
  # is 4 MCSE.
  rw <- sample_mcmc(kid_score ~ mom_hs * mom_iq, data = kid, prior = NULL,
                    prior_intercept = NULL, prior_aux = cauchy(0, 2.5),
                    center = FALSE, method = "rwm", iter = 20000, seed = 2)
  s2 <- summary(rw)$table
  expect_true(all(s2[, "ess_bulk"] > 200))
  expect_true(all(abs(s2[, "mean"] - ref$mean) / ref$sd < 0.25))
  expect_true(all(abs(s2[, "sd"] / ref$sd - 1) < 0.25))
})

test_that("draws convert to posterior and coda formats, chains kept", {
  skip_if_not_installed("posterior")
  skip_if_not_installed("coda")
  case <- gaussian2_case()
  mc <- sample_mcmc(case$model, chains = 2, iter = 400, seed = 3)
  a <- posterior::as_draws_array(mc)
  expect_equal(posterior::nchains(a), 2)
  expect_equal(posterior::variables(a), c("z[1]", "z[2]"))
  expect_equal(posterior::rhat(posterior::extract_variable_matrix(a, "z[1]")),
               mc$diagnostics["z[1]", "rhat"])
  expect_equal(nrow(posterior::as_draws_df(mc)), 400)
  expect_equal(posterior::ndraws(posterior::as_draws_matrix(mc)), 400)
  cm <- coda::as.mcmc(mc)
  expect_s3_class(cm, "mcmc.list")
  expect_equal(unname(as.matrix(cm[[2]])[, "z[1]"]), unname(mc$draws[, 2, "z[1]"]))
})

test_that("NUTS on posteriordb eight schools (non-centred, tau > 0) matches the reference", {
  # fixtures/eight_schools_reference.csv: posteriordb reference (see its
  # first line). An R-function model with gradient: hierarchical, with a
  # positive scale sampled on the log scale. The reference holds the derived
  # theta = mu + tau * theta_trans.
  ref <- utils::read.csv(test_path("fixtures", "eight_schools_reference.csv"),
                         comment.char = "#")
  es <- list(y = c(28, 8, -3, 7, -1, 1, 18, 12),
             sigma = c(15, 10, 16, 11, 9, 11, 10, 18))
  m <- bbvi_model(
    function(theta, data) {
      th <- theta$mu + theta$tau * theta$theta_trans
      sum(dnorm(data$y, th, data$sigma, log = TRUE)) +
        sum(dnorm(theta$theta_trans, log = TRUE)) +
        dnorm(theta$mu, 0, 5, log = TRUE) + dcauchy(theta$tau, 0, 5, log = TRUE)
    },
    parameters = list(theta_trans = param(dim = 8), mu = param(), tau = param(lower = 0)),
    data = es,
    gradient = function(theta, data) {
      th <- theta$mu + theta$tau * theta$theta_trans
      r <- (data$y - th) / data$sigma^2
      list(theta_trans = theta$tau * r - theta$theta_trans,
           mu = sum(r) - theta$mu / 25,
           tau = sum(r * theta$theta_trans) - 2 * theta$tau / (25 + theta$tau^2))
    })
  # at adapt_delta = 0.8 the non-centred form still has the odd divergent
  # transition now and then (in Stan too): warned about, not a failure
  mc <- suppressWarnings(sample_mcmc(m, iter = 1000, seed = 1))
  d <- as.matrix(mc)
  x <- cbind(d[, "mu"] + d[, "tau"] * d[, 1:8], d[, "mu"], d[, "tau"])
  # bulk-ESS is above 1000 for every parameter: MCSE below 0.03 sd
  expect_true(all(mc$diagnostics$ess_bulk > 1000))
  expect_true(all(abs(colMeans(x) - ref$mean) / ref$sd < 0.1))
  expect_true(all(abs(apply(x, 2, stats::sd) / ref$sd - 1) < 0.1))
  expect_true(all(d[, "tau"] > 0))
  # more than 0.5% of transitions divergent would mean a sampler problem
  expect_lte(mc$divergences, 0.005 * nrow(mc$sampler))
})

test_that("RWM reports its adapted proposal covariance as inv_metric", {
  # 2-D Gaussian, sds 1 and 3, correlation 0.8: the adapted covariance
  # estimates the target's (up to Monte Carlo error of the warmup windows)
  S <- matrix(c(1, 0.8 * 3, 0.8 * 3, 9), 2)
  Pm <- solve(S)
  m <- bbvi_model(function(theta, data) -0.5 * sum(theta$z * (Pm %*% theta$z)),
                  list(z = param(dim = 2)))
  mc <- sample_mcmc(m, method = "rwm", chains = 2, iter = 4000, seed = 1)
  for (M in mc$inv_metric) {
    expect_true(isSymmetric(unname(M)))
    expect_true(all(eigen(M, symmetric = TRUE)$values > 0))
    # a Cholesky factor would have a zero above the diagonal and 3, not 9
    expect_gt(M[1, 2], 0.5 * S[1, 2])
    expect_lt(abs(M[2, 2] / S[2, 2] - 1), 0.5)
    expect_lt(abs(cov2cor(M)[1, 2] - 0.8), 0.15)
  }
})

test_that("sample_mcmc() on a formula targets the same posterior as bbvi() (default priors)", {
  # rstanarm's autoscaled priors and the centred intercept in both
  f <- bbvi(mpg ~ wt + factor(cyl), data = mtcars, seed = 1)
  mc <- sample_mcmc(mpg ~ wt + factor(cyl), data = mtcars, seed = 1, iter = 3000)
  cmp <- compare_fits(f, mc)
  # full-rank VI on this near-Gaussian posterior: within 0.1 NUTS sd (the
  # NUTS means' own Monte Carlo error is about 0.02 sd at this ESS)
  expect_lt(max(abs(cmp$z)), 0.1)
  expect_equal(mc$prior, f$prior)
})
