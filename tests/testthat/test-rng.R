# R's random number stream and log-joints that draw from it.
#
# The samplers hold R's RNG state in C for a whole loop; a log-joint (or
# gradient) that calls runif() or sample.int() must get the stream as the
# sampler left it, and the sampler must continue from where the callback
# left it. Before this was so, the callback restarted from a stale
# .Random.seed and the C loop reused old uniforms: RWM on N(0, 1) gave mean
# -0.20 and sd 0.92 with R-hat 1.004, and a third of VI's draws repeated.
# Tolerances as in test-mcmc.R: 4 Monte Carlo standard errors.

rng_mcse_mean <- function(x) stats::sd(x) / sqrt(bbvi:::diag_ess_mean(x))
rng_mcse_sd <- function(x, m) {
  d2 <- (x - m)^2
  stats::sd(d2) / sqrt(bbvi:::diag_ess_mean(d2)) / (2 * stats::sd(x))
}
expect_std_normal <- function(mc) {
  x <- matrix(mc$draws[, , 1], ncol = mc$chains)
  expect_lt(abs(mean(x)), 4 * rng_mcse_mean(x))
  expect_lt(abs(stats::sd(x) - 1), 4 * rng_mcse_sd(x, 0))
}

test_that("RWM is exact when the log-joint draws random numbers", {
  m <- bbvi_model(function(theta, data) {
    u <- stats::runif(1)
    stats::dnorm(theta$mu, log = TRUE)
  }, list(mu = param()))
  for (s in 1:2) {
    mc <- sample_mcmc(m, method = "rwm", chains = 4, iter = 4000, seed = s)
    expect_std_normal(mc)
  }
  # a minibatch-style callback that draws several numbers per call
  m2 <- bbvi_model(function(theta, data) {
    i <- sample.int(10, 3)
    stats::dnorm(theta$mu, log = TRUE) + 0 * sum(i)
  }, list(mu = param()))
  expect_std_normal(sample_mcmc(m2, method = "rwm", chains = 4, iter = 4000, seed = 3))
})

test_that("NUTS is exact when the log-joint and gradient draw random numbers", {
  m <- bbvi_model(function(theta, data) {
    u <- stats::runif(1)
    stats::dnorm(theta$mu, log = TRUE)
  }, list(mu = param()), gradient = function(theta, data) {
    u <- stats::rnorm(2)
    -theta$mu
  })
  for (s in 1:2) {
    mc <- sample_mcmc(m, chains = 4, iter = 2000, seed = s)
    expect_std_normal(mc)
  }
})

# A vectorized normal-mean model whose log-joint draws a uniform and records
# every theta it is asked about.
recording_model <- function(rec) {
  set.seed(11)
  y <- stats::rnorm(20, 1.5, 1)
  m <- bbvi_model(function(theta, data) {
    u <- stats::runif(1)
    # the batches of draws (the loop's, the diagnostics'), not the few
    # deterministic points of the start search and model checks
    if (length(theta$mu) >= 10) rec$theta <- c(rec$theta, theta$mu)
    vapply(theta$mu, function(mu) sum(stats::dnorm(data, mu, 1, log = TRUE)), 0) +
      stats::dnorm(theta$mu, 0, 10, log = TRUE)
  }, list(mu = param()), data = y, vectorized = TRUE)
  prec <- 1 / 100 + length(y)
  list(model = m, mean = sum(y) / prec, sd = sqrt(1 / prec))
}

test_that("VI draws do not repeat when the log-joint draws random numbers", {
  rec <- new.env()
  case <- recording_model(rec)
  for (s in 1:2) {
    rec$theta <- NULL
    fit <- bbvi(case$model, seed = s)   # no gradient: the score estimator
    expect_gt(length(rec$theta), 1000)
    # before: about a third of the values were repeats
    expect_equal(sum(duplicated(rec$theta)), 0)
    expect_lt(abs(fit$mean_unc[[1]] - case$mean), 0.1 * case$sd)
    expect_lt(abs(sqrt(vcov(fit)[1, 1]) / case$sd - 1), 0.1)
  }
  # at a fixed q (elbo_gradients): before, 432 of 500 draws were repeats
  rec$theta <- NULL
  g <- elbo_gradients(fit, "score", samples = 10, n = 50, seed = 1)
  expect_length(rec$theta, 500)
  expect_equal(sum(duplicated(rec$theta)), 0)
})

test_that("a seed still reproduces fits whose log-joint draws", {
  rec <- new.env()
  case <- recording_model(rec)
  a <- bbvi(case$model, seed = 5)
  b <- bbvi(case$model, seed = 5)
  expect_identical(a$lambda, b$lambda)
  expect_identical(a$elbo_trace, b$elbo_trace)
  set.seed(6); c1 <- bbvi(case$model)
  set.seed(6); c2 <- bbvi(case$model)
  expect_identical(c1$lambda, c2$lambda)

  m <- bbvi_model(function(theta, data) {
    u <- stats::runif(1)
    stats::dnorm(theta$mu, log = TRUE)
  }, list(mu = param()))
  r1 <- sample_mcmc(m, method = "rwm", chains = 2, iter = 1000, seed = 42)
  r2 <- sample_mcmc(m, method = "rwm", chains = 2, iter = 1000, seed = 42)
  expect_identical(r1$draws, r2$draws)
  # seed = leaves the caller's stream alone, callbacks' draws included
  set.seed(10); before <- .Random.seed
  suppressWarnings(sample_mcmc(m, method = "rwm", chains = 1, iter = 100, seed = 1))
  expect_identical(.Random.seed, before)
  # without seed = the callbacks' draws and the sampler's share one stream
  set.seed(11); d1 <- suppressWarnings(sample_mcmc(m, method = "rwm", chains = 1, iter = 300))
  after1 <- .Random.seed
  set.seed(11); d2 <- suppressWarnings(sample_mcmc(m, method = "rwm", chains = 1, iter = 300))
  expect_identical(d1$draws, d2$draws)
  expect_identical(.Random.seed, after1)
})

test_that("an error inside a sampler does not leave the RNG held", {
  # flat density: the step-size search fails with an error while the C code
  # holds R's RNG
  flat <- bbvi_model(function(theta, data) 0, list(mu = param()),
                     gradient = function(theta, data) 0)
  set.seed(3); before <- .Random.seed
  expect_error(sample_mcmc(flat, chains = 1, iter = 100, seed = 1), "improper")
  expect_identical(.Random.seed, before)   # restored by assignment
  # a later evaluation outside any sampler must not write the sampler's
  # stale state over .Random.seed
  m <- bbvi_model(function(theta, data) stats::dnorm(theta$mu, log = TRUE),
                  list(mu = param()))
  lp <- .Call(bbvi:::C_logdens, bbvi:::r_target_spec(m), -Inf, Inf,
              matrix(c(0, 1), 1), FALSE)
  expect_equal(as.double(lp), stats::dnorm(c(0, 1), log = TRUE))
  expect_identical(.Random.seed, before)
  # an error in the callback itself, then a clean run with the same seed
  boom <- bbvi_model(function(theta, data) {
    if (stats::runif(1) < 0.01) stop("boom")
    stats::dnorm(theta$mu, log = TRUE)
  }, list(mu = param()))
  expect_error(sample_mcmc(boom, method = "rwm", chains = 1, iter = 2000, seed = 1), "boom")
  m2 <- bbvi_model(function(theta, data) {
    u <- stats::runif(1)
    stats::dnorm(theta$mu, log = TRUE)
  }, list(mu = param()))
  a <- sample_mcmc(m2, method = "rwm", chains = 1, iter = 300, seed = 7)
  expect_error(sample_mcmc(boom, method = "rwm", chains = 1, iter = 2000, seed = 1), "boom")
  b <- sample_mcmc(m2, method = "rwm", chains = 1, iter = 300, seed = 7)
  expect_identical(a$draws, b$draws)
})

# ---- from main (the same fix, tested independently) ----


test_that("RWM and NUTS are right when the log-joint calls runif()", {
  lj <- function(theta, data) {
    u <- stats::runif(1)   # used for nothing: only its effect on the stream matters
    dnorm(theta$x, 0, 1, log = TRUE) + 0 * u
  }
  m <- bbvi_model(lj, list(x = param()), gradient = function(theta, data) {
    u <- stats::runif(1)
    -theta$x + 0 * u
  })
  for (meth in c("rwm", "nuts")) {
    mc <- sample_mcmc(m, method = meth, chains = 4, iter = 2000, seed = 1)
    x <- as.vector(mc$draws[, , "x"])
    ess <- mcmc_diagnostics(mc)$ess_bulk
    # within 4 Monte Carlo standard errors of the N(0, 1) truth (it was
    # -0.22 for RWM, with the uniforms reused)
    expect_lt(abs(mean(x)), 4 / sqrt(ess))
    expect_lt(abs(sd(x) - 1), 4 * sqrt(0.5 / ess) * 1.5)
  }
})

test_that("VI draws do not repeat when the log-joint calls runif()", {
  seen <- new.env()
  seen$x <- numeric(0)
  lj <- function(theta, data) {
    # the loop's batches of 50 draws (not the model checks or diagnostics)
    if (length(theta$mu) == 50) seen$x <- c(seen$x, theta$mu)
    stats::runif(1)
    dnorm(theta$mu, 1, 0.5, log = TRUE)
  }
  m <- bbvi_model(lj, list(mu = param()), vectorized = TRUE)
  fit <- suppressWarnings(bbvi(m, estimator = "score", seed = 1, start = "init", max_iter = 200))
  x <- seen$x
  expect_equal(length(x), 200 * 50)
  expect_false(anyDuplicated(x) > 0)
  # and the answer is still exact: N(1, 0.5^2)
  fit <- bbvi(m, estimator = "score", seed = 2)
  expect_lt(abs(coef(fit)[["mu"]] - 1) / 0.5, 0.05)
  expect_lt(abs(sqrt(vcov(fit)[1, 1]) / 0.5 - 1), 0.05)
})

test_that("a seeded fit with such a log-joint is still reproducible", {
  lj <- function(theta, data) dnorm(theta$mu, 1 + 0 * stats::runif(1), 0.5, log = TRUE)
  m <- bbvi_model(lj, list(mu = param()))
  a <- bbvi(m, seed = 3)
  b <- bbvi(m, seed = 3)
  expect_identical(a$lambda, b$lambda)
})
