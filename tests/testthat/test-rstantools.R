# rstantools generics, loo, bayesplot on formula fits.

gfit <- function() bbvi(mpg ~ wt + factor(cyl), data = mtcars, seed = 1)

test_that("posterior_linpred(), posterior_epred() and predict() agree", {
  b <- bbvi(am ~ wt, mtcars, family = binomial(), seed = 1)
  lp <- posterior_linpred(b)
  expect_equal(dim(lp), c(4000L, 32L))
  expect_equal(colMeans(lp), predict(b), tolerance = 0.02)
  ep <- posterior_epred(b)
  expect_equal(ep, stats::plogis(lp))
  expect_equal(posterior_linpred(b, transform = TRUE), ep)
  expect_equal(colMeans(ep), predict(b, type = "response"), tolerance = 0.02)
  nd <- data.frame(wt = c(2, 5))
  expect_equal(dim(posterior_epred(b, newdata = nd, draws = 50)), c(50L, 2L))
})

test_that("log_lik() matches the densities at the draws, and loo() uses it", {
  f <- gfit()
  set.seed(3)
  ll <- log_lik(f, draws = 200)
  expect_equal(dim(ll), c(200L, 32L))
  # the same draws as as.matrix() with the same seed
  set.seed(3)
  th <- as.matrix(f, draws = 200)
  X <- stats::model.matrix(~ wt + factor(cyl), mtcars)
  mu <- th[, colnames(X)] %*% t(X)
  expect_equal(unname(ll), unname(stats::dnorm(matrix(mtcars$mpg, 200, 32, byrow = TRUE),
                                               mu, th[, "sigma"], log = TRUE)))
  nd <- mtcars[1:5, ]
  expect_equal(dim(log_lik(f, newdata = nd, draws = 20)), c(20L, 5L))
  lo <- suppressWarnings(loo(f))
  expect_s3_class(lo, "psis_loo")
  # elpd_loo is below the in-sample lpd
  lpd <- sum(log(colMeans(exp(log_lik(f)))))
  expect_lt(lo$estimates["elpd_loo", "Estimate"], lpd)
  expect_gt(lo$estimates["p_loo", "Estimate"], 2)
  expect_lt(lo$estimates["p_loo", "Estimate"], 10)
  # binomial with trials: dbinom with its binomial coefficient
  b <- bbvi(cbind(am, 2 - am) ~ wt, mtcars, family = binomial(), seed = 1)
  set.seed(1); lb <- log_lik(b, draws = 10)
  set.seed(1); tb <- as.matrix(b, draws = 10)
  pb <- stats::plogis(tb[, 1:2] %*% rbind(1, mtcars$wt))
  expect_equal(unname(lb), unname(stats::dbinom(matrix(mtcars$am, 10, 32, byrow = TRUE),
                                               2, pb, log = TRUE)))
})

test_that("predictive_interval() and posterior_interval()", {
  f <- gfit()
  set.seed(1)
  pi <- predictive_interval(f, prob = 0.8)
  expect_equal(dim(pi), c(32L, 2L))
  expect_identical(colnames(pi), c("10%", "90%"))
  cover <- mean(mtcars$mpg >= pi[, 1] & mtcars$mpg <= pi[, 2])
  expect_gt(cover, 0.6)
  q <- posterior_interval(f, prob = 0.9)
  expect_identical(colnames(q), c("5%", "95%"))
  draws <- as.matrix(f)
  emp <- t(apply(draws, 2, stats::quantile, c(0.05, 0.95)))
  expect_equal(unname(q), unname(emp[rownames(q), ]), tolerance = 0.02)
  expect_equal(rownames(posterior_interval(f, pars = "wt")), "wt")
  expect_snapshot(error = TRUE, posterior_interval(f, prob = 95))
  expect_snapshot(error = TRUE, posterior_interval(f, pars = "nope"))
})

test_that("bayes_R2() is rstanarm's Bayesian R-squared", {
  f <- gfit()
  set.seed(1)
  r2 <- bayes_R2(f, draws = 500)
  expect_length(r2, 500)
  expect_true(all(r2 > 0 & r2 < 1))
  # close to the classical R-squared of the same regression (0.84)
  expect_equal(stats::median(r2), summary(stats::lm(mpg ~ wt + factor(cyl), mtcars))$r.squared,
               tolerance = 0.05)
  p <- bbvi(breaks ~ wool + tension, data = warpbreaks, family = poisson(), seed = 1)
  expect_true(all(bayes_R2(p, draws = 50) < 1))
})

test_that("prior_summary() shows the specified and the adjusted priors", {
  f <- gfit()
  ps <- prior_summary(f)
  expect_s3_class(ps, "prior_summary.bbvi_fit")
  expect_true(ps$prior$specified$autoscale)
  sx <- apply(stats::model.matrix(~ wt + factor(cyl), mtcars)[, -1], 2, stats::sd)
  expect_equal(ps$prior$adjusted$scale, unname(2.5 * stats::sd(mtcars$mpg) / sx))
  expect_equal(ps$prior_intercept$adjusted$location, mean(mtcars$mpg))
  out <- capture.output(print(ps))
  expect_match(out, "Intercept (after predictors centered)", fixed = TRUE, all = FALSE)
  expect_match(out, "Specified prior:", all = FALSE)
  expect_match(out, "Adjusted prior:", all = FALSE)
  expect_match(out, "exponential(rate = 0.17)", fixed = TRUE, all = FALSE)
  # priors as written: no adjusted line
  g <- bbvi(mpg ~ wt, mtcars, prior = normal(0, 3), prior_intercept = normal(20, 10),
            prior_aux = exponential(0.5), seed = 1)
  out <- capture.output(print(prior_summary(g)))
  expect_false(any(grepl("Adjusted", out)))
  expect_match(out, "normal(location = 0, scale = 3)", fixed = TRUE, all = FALSE)
  expect_snapshot(print(prior_summary(bbvi(am ~ wt, mtcars, family = binomial(), seed = 1))))
})

test_that("as.array() and as.data.frame() feed bayesplot", {
  f <- gfit()
  a <- as.array(f, draws = 100)
  expect_equal(dim(a), c(100L, 1L, 5L))
  expect_identical(dimnames(a)$parameters, names(coef(f)))
  df <- as.data.frame(f, draws = 50)
  expect_s3_class(df, "data.frame")
  expect_identical(names(df), names(coef(f)))
  expect_equal(nrow(df), 50)
  skip_if_not_installed("bayesplot")
  p <- bayesplot::mcmc_areas(f)
  expect_s3_class(p, "ggplot")
  expect_setequal(levels(p$data$parameter), names(coef(f)))
  expect_s3_class(bayesplot::mcmc_intervals(as.array(f)), "ggplot")
})

test_that("pp_check() plots through bayesplot", {
  skip_if_not_installed("bayesplot")
  f <- gfit()
  p <- bayesplot::pp_check(f)
  expect_s3_class(p, "ggplot")
  expect_s3_class(bayesplot::pp_check(f, plotfun = "stat", stat = "mean"), "ggplot")
  expect_snapshot(error = TRUE, bayesplot::pp_check(f, plotfun = "nope"))
})
