# A log-joint that draws from R's RNG (a minibatch, a simulated likelihood)
# must advance the one random stream, not rewind the sampler's: the C loops
# release the RNG around every call back into R.

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
  fit <- bbvi(m, estimator = "score", seed = 1, start = "init", max_iter = 200)
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
