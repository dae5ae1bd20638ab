# Improper posteriors (flat priors with separation or an all-0 response)
# must not be reported as converged.

# the fit and the messages of every warning it gave
fit_warnings <- function(expr) {
  msgs <- character(0)
  fit <- withCallingHandlers(expr, warning = function(w) {
    msgs <<- c(msgs, conditionMessage(w))
    invokeRestart("muffleWarning")
  })
  list(fit = fit, warnings = msgs)
}

separated <- data.frame(x = c(-2, -1.5, -1, -0.5, 0.5, 1, 1.5, 2),
                        y = c(0, 0, 0, 0, 1, 1, 1, 1), z = 0)

test_that("perfect separation with flat priors is an improper posterior, on both paths", {
  for (est in c("auto", "reparam")) {
    r <- fit_warnings(bbvi(y ~ x, data = separated, family = binomial(),
                           prior = NULL, prior_intercept = NULL,
                           estimator = est, seed = 1, max_iter = 2000))
    expect_true(any(grepl("separate the 0s from the 1s", r$warnings)))
    fit <- r$fit
    expect_false(fit$converged)
    expect_match(fit$stop_reason, "no proper posterior")
  }
})

test_that("an all-zero response with flat priors is improper (binomial and poisson)", {
  for (fam in list(binomial(), poisson())) {
    r <- fit_warnings(bbvi(z ~ x, data = separated, family = fam,
                           prior = NULL, prior_intercept = NULL, seed = 1))
    expect_true(any(grepl("the response is all 0", r$warnings)))
    expect_false(r$fit$converged)
  }
})

test_that("a proper posterior with flat priors is not flagged", {
  set.seed(1)
  d <- data.frame(x = rnorm(50))
  d$y <- rbinom(50, 1, plogis(d$x))
  d$n <- rpois(50, exp(0.3 * d$x))
  fit <- bbvi(y ~ x, data = d, family = binomial(), prior = NULL, prior_intercept = NULL)
  expect_true(fit$converged)
  fit <- bbvi(n ~ x, data = d, family = poisson(), prior = NULL, prior_intercept = NULL)
  expect_true(fit$converged)
  # separation with a proper prior is a proper posterior
  fit <- bbvi(y ~ x, data = separated, family = binomial(), prior = normal(0, 2.5))
  expect_true(fit$converged)
})
