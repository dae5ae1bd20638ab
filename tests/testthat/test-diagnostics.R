# R-hat and ESS against the posterior package, whose definitions
# (Vehtari et al. 2021) R/diagnostics.R follows.

diag_cases <- function() {
  set.seed(20)
  n <- 301  # odd: split chains drop the middle draw
  ar1 <- function(n, phi) as.numeric(stats::filter(rnorm(n), phi, "recursive"))
  list(
    iid = matrix(rnorm(400 * 4), 400, 4),
    ar1 = sapply(1:4, function(k) ar1(n, 0.9)),
    shifted = sapply(1:4, function(k) rnorm(200, mean = k / 2)),
    cauchy = matrix(rcauchy(250 * 3), 250, 3),
    ties = matrix(rpois(300 * 4, 2), 300, 4),
    one_chain = matrix(ar1(500, 0.5), ncol = 1)
  )
}

test_that("rhat, ess_bulk and ess_tail agree with the posterior package", {
  skip_if_not_installed("posterior")
  for (nm in names(diag_cases())) {
    x <- diag_cases()[[nm]]
    d <- mcmc_diagnostics(x)
    expect_equal(d$rhat, posterior::rhat(x), tolerance = 1e-10, label = nm)
    expect_equal(d$ess_bulk, posterior::ess_bulk(x), tolerance = 1e-10, label = nm)
    expect_equal(d$ess_tail, posterior::ess_tail(x), tolerance = 1e-10, label = nm)
    expect_equal(bbvi:::diag_ess_mean(x), posterior::ess_mean(x), tolerance = 1e-10,
                 label = nm)
  }
})

test_that("diagnostics take arrays, matrices and vectors, and flag poor mixing", {
  set.seed(3)
  a <- array(rnorm(200 * 4 * 2), c(200, 4, 2), dimnames = list(NULL, NULL, c("a", "b")))
  a[, 1, "b"] <- a[, 1, "b"] + 3   # one chain elsewhere
  d <- mcmc_diagnostics(a)
  expect_named(d, c("parameter", "rhat", "ess_bulk", "ess_tail"))
  expect_equal(d$parameter, c("a", "b"))
  expect_lt(d$rhat[1], 1.02)
  expect_gt(d$rhat[2], 1.2)
  expect_equal(mcmc_diagnostics(a[, , "a"])$rhat, d$rhat[1])
  expect_equal(nrow(mcmc_diagnostics(a[, 1, "a"])), 1)
  # constant draws: NA, as in posterior
  expect_true(is.na(mcmc_diagnostics(matrix(1, 10, 2))$rhat))
})

test_that("mcmc_diagnostics() rejects other input", {
  expect_snapshot(error = TRUE, mcmc_diagnostics("a"))
  expect_snapshot(error = TRUE, mcmc_diagnostics(array(1, c(2, 2, 2, 2))))
})
