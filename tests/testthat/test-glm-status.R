# Improper GLM posteriors (flat priors with separation, an all-0 response,
# a group of zero counts) are not reported as converged. Before, the
# quadrature path called them converged with no warning: logistic
# regression with perfect separation gave a slope of 122 +- 32 (full-rank)
# or 7e38 (mean-field), because its failed line search counted as
# convergence.

sep_data <- function() {
  data.frame(x = c(-2, -1.5, -1, -0.5, 0.5, 1, 1.5, 2),
             y = c(0, 0, 0, 0, 1, 1, 1, 1))
}

# the fit, with the warnings it raised collected (class and message)
fit_collect <- function(expr) {
  ws <- list()
  fit <- withCallingHandlers(expr, warning = function(w) {
    ws[[length(ws) + 1]] <<- w
    invokeRestart("muffleWarning")
  })
  list(fit = fit, warnings = ws,
       improper = Filter(function(w) inherits(w, "bbvi_improper_posterior"), ws))
}

expect_improper <- function(r, cause) {
  expect_false(r$fit$converged)
  expect_match(r$fit$stop_reason, "^no proper posterior")
  expect_length(r$improper, 1)
  msg <- conditionMessage(r$improper[[1]])
  expect_match(msg, cause)
  expect_match(msg, "proper prior")
}

test_that("perfect separation with flat priors is improper, not converged", {
  for (meth in c("meanfield", "fullrank")) {
    r <- fit_collect(bbvi(y ~ x, data = sep_data(), family = binomial(),
                          prior = NULL, prior_intercept = NULL, method = meth,
                          seed = 1))
    expect_improper(r, "Perfect separation")
    expect_match(r$fit$stop_reason, "(separation, flat priors)", fixed = TRUE)
    expect_match(conditionMessage(r$improper[[1]]), "`x`")
  }
  # a proper intercept prior does not help: the slope's prior is flat
  r <- fit_collect(bbvi(y ~ x, data = sep_data(), family = binomial(),
                        prior = NULL, seed = 1))
  expect_improper(r, "Perfect separation")
  expect_match(conditionMessage(r$improper[[1]]), "prior = NULL", fixed = TRUE)
  expect_no_match(conditionMessage(r$improper[[1]]), "prior_intercept = NULL", fixed = TRUE)
  # separation along a combination of two predictors
  set.seed(3)
  d <- data.frame(x1 = stats::rnorm(40), x2 = stats::rnorm(40), x3 = stats::rnorm(40))
  d$y <- as.numeric(d$x1 + d$x2 > 0)
  r <- fit_collect(bbvi(y ~ x1 + x2 + x3, data = d, family = binomial(),
                        prior = NULL, prior_intercept = NULL, seed = 1))
  expect_improper(r, "separation.*: a linear combination of `x1`, `x2`")
})

test_that("quasi-complete separation, all-0 and all-1 responses, zero-count groups", {
  dq <- data.frame(x = c(-2, -1, 0, 0, 1, 2), y = c(0, 0, 0, 1, 1, 1))
  r <- fit_collect(bbvi(y ~ x, data = dq, family = binomial(), prior = NULL,
                        prior_intercept = NULL, seed = 1))
  expect_improper(r, "quasi-complete separation")
  expect_match(conditionMessage(r$improper[[1]]), "2 observations on or near the boundary")

  set.seed(2)
  d0 <- data.frame(x = stats::rnorm(20), y = 0)
  for (meth in c("meanfield", "fullrank")) {
    r <- fit_collect(bbvi(y ~ x, data = d0, family = binomial(), prior = NULL,
                          prior_intercept = NULL, method = meth, seed = 1))
    expect_improper(r, "all 0")
    expect_match(r$fit$stop_reason, "all-0 response")
  }
  r <- fit_collect(bbvi(y ~ x, data = transform(d0, y = 1), family = binomial(),
                        prior = NULL, prior_intercept = NULL, seed = 1))
  expect_improper(r, "all 1")
  r <- fit_collect(bbvi(y ~ x, data = d0, family = poisson(), prior = NULL,
                        prior_intercept = NULL, seed = 1))
  expect_improper(r, "response is all 0 \\(every count")
  dg <- data.frame(g = factor(rep(c("a", "b", "c"), each = 6)),
                   y = c(2, 4, 3, 1, 5, 2, 3, 3, 6, 2, 1, 4, 0, 0, 0, 0, 0, 0))
  r <- fit_collect(bbvi(y ~ g, data = dg, family = poisson(), prior = NULL,
                        prior_intercept = NULL, seed = 1))
  expect_improper(r, "count 0")
  expect_match(conditionMessage(r$improper[[1]]), "gc")
})

test_that("proper fits still converge without a warning", {
  # the same separated data with the default (proper) priors
  r <- fit_collect(bbvi(y ~ x, data = sep_data(), family = binomial(), seed = 1))
  expect_true(r$fit$converged)
  expect_identical(r$fit$stop_reason, "converged")
  expect_length(r$improper, 0)
  # overlapping data with flat priors: a proper posterior
  expect_no_warning(f <- bbvi(am ~ wt + hp, data = mtcars, family = binomial(),
                              prior = NULL, prior_intercept = NULL,
                              method = "fullrank", seed = 1))
  expect_true(f$converged)
  expect_identical(f$stop_reason, "converged")
  r <- fit_collect(bbvi(am ~ wt, data = mtcars, family = binomial(), prior = NULL,
                        prior_intercept = NULL, seed = 1))
  expect_true(r$fit$converged)
  expect_false(any(vapply(r$warnings, inherits, NA,
                          c("bbvi_improper_posterior", "bbvi_not_converged"))))
  r <- fit_collect(bbvi(cyl ~ wt, data = mtcars, family = poisson(), prior = NULL,
                        prior_intercept = NULL, seed = 1))
  expect_true(r$fit$converged)
  expect_length(r$improper, 0)
})

test_that("a failed line search away from a stationary point is not converged", {
  setup <- bbvi:::glm_setup(am ~ wt, mtcars, stats::binomial(), normal(0, 2.5),
                            normal(0, 10), exponential(1))
  res <- bbvi:::glm_quad(setup$model, "meanfield")
  expect_identical(res$status, "converged")
  # the same result as if the line search had failed 3 sds from the optimum
  res$status <- "line_search"
  res$newton_step <- 3
  expect_warning(out <- bbvi:::glm_quad_status(res, setup$model),
                 class = "bbvi_not_converged")
  expect_false(out$converged)
  expect_match(out$stop_reason, "^line search failed")
  # when the Newton step is below tol the C side reports "stalled": converged
  res$status <- "stalled"
  expect_no_warning(out <- bbvi:::glm_quad_status(res, setup$model))
  expect_true(out$converged)
})

test_that("the stochastic path does not call separated data converged", {
  for (est in c("score", "reparam")) {
    r <- fit_collect(bbvi(y ~ x, data = sep_data(), family = binomial(),
                          prior = NULL, prior_intercept = NULL,
                          estimator = est, seed = 1))
    expect_improper(r, "separation")
  }
})

test_that("a rare-event logistic regression converges on the quadrature path", {
  # 9 events in 5000: the Newton map's mean steps alternated in sign and the
  # fit crawled to max_iter = 200 ("did not converge") for both families;
  # damping a reversing step converges in about 20 iterations
  set.seed(1)
  n <- 5000
  X <- matrix(stats::rnorm(n * 8), n)
  invisible(stats::rbinom(n, 1, 0.5))
  d <- data.frame(X, y = stats::rbinom(n, 1, 0.002))
  for (meth in c("meanfield", "fullrank")) {
    r <- fit_collect(bbvi(y ~ ., data = d, family = binomial(), method = meth,
                          seed = 1))
    expect_true(r$fit$converged)
    expect_lt(r$fit$iterations, 60)
    expect_false(any(vapply(r$warnings, inherits, NA, "bbvi_not_converged")))
  }
})

# ---- from main ----

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
    expect_true(any(grepl("separates? the 0s from the 1s", r$warnings)))
    fit <- r$fit
    expect_false(fit$converged)
    expect_match(fit$stop_reason, "no proper posterior")
  }
})

test_that("an all-zero response with flat priors is improper (binomial and poisson)", {
  for (fam in list(binomial(), poisson())) {
    r <- fit_warnings(bbvi(z ~ x, data = separated, family = fam,
                           prior = NULL, prior_intercept = NULL, seed = 1))
    expect_true(any(grepl("the response is all 0", r$warnings, ignore.case = TRUE)))
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
