# Many fits in the tests are deliberately inaccurate (mean-field on a
# correlated posterior, a handful of draws), so the fit's accuracy warning
# (see ?vi_diagnostics) is off here; the tests that are about it switch it
# back on. The option's older name, still honoured, is used on purpose.
options(bbvi.warn_khat = FALSE)

with_khat_warning <- function(code) {
  op <- options(bbvi.warn_khat = TRUE)
  on.exit(options(op))
  code
}

# Models with exact posteriors, shared by the VI (and MCMC) tests.

# Normal mean, known sd, normal prior: posterior N(post_mean, post_sd^2).
normal_mean_case <- function(n = 20, seed = 11) {
  set.seed(seed)
  y <- stats::rnorm(n, 1.5, 1)
  prec <- 1 / 10^2 + n
  list(
    model = bbvi_model(
      function(theta, data) sum(dnorm(data, theta$mu, 1, log = TRUE)) +
        dnorm(theta$mu, 0, 10, log = TRUE),
      parameters = list(mu = param()), data = y,
      gradient = function(theta, data) sum(data - theta$mu) - theta$mu / 100),
    mean = sum(y) / prec, sd = sqrt(1 / prec), y = y)
}

# Beta-Binomial: 7 successes in 20, Beta(2, 2) prior -> Beta(9, 15).
beta_binomial_case <- function() {
  a <- 9; b <- 15
  list(
    model = bbvi_model(
      function(theta, data) dbinom(7, 20, theta$p, log = TRUE) +
        dbeta(theta$p, 2, 2, log = TRUE),
      parameters = list(p = param(lower = 0, upper = 1)),
      gradient = function(theta, data) 8 / theta$p - 14 / (1 - theta$p)),
    mean = a / (a + b), sd = sqrt(a * b / ((a + b)^2 * (a + b + 1))))
}

# Gamma-Poisson: Poisson counts, Gamma(3, 1) prior -> Gamma(3 + sum y, 1 + n).
gamma_poisson_case <- function() {
  y <- c(3L, 5L, 2L, 6L, 4L, 4L, 7L, 1L, 3L, 5L, 4L, 2L, 6L, 3L, 5L)
  a <- 3 + sum(y); b <- 1 + length(y)
  list(
    model = bbvi_model(
      function(theta, data) sum(dpois(data, theta$lambda, log = TRUE)) +
        dgamma(theta$lambda, 3, 1, log = TRUE),
      parameters = list(lambda = param(lower = 0)), data = y,
      gradient = function(theta, data) (sum(data) + 2) / theta$lambda - length(data) - 1),
    mean = a / b, sd = sqrt(a) / b)
}

# Correlated 2-D Gaussian target N(mu, Sigma), correlation 0.8, with a
# normalising constant far from 0 (log Z = log(2 pi) + log det(Sigma) / 2 - 500)
# as real models have: without control variates the score estimator's noise
# grows with |log Z|.
gaussian2_case <- function() {
  mu <- c(1, -2)
  Sigma <- matrix(c(1, 1.6, 1.6, 4), 2)
  P <- solve(Sigma)
  list(
    model = bbvi_model(
      function(theta, data) { d <- theta$z - mu; -0.5 * sum(d * (P %*% d)) - 500 },
      parameters = list(z = param(dim = 2)),
      gradient = function(theta, data) -drop(P %*% (theta$z - mu))),
    mean = mu, Sigma = Sigma, precision = P)
}

# A fit of a one-parameter case against its exact posterior: converged, mean
# within tol_mean posterior sds, sd within a fraction tol_sd.
expect_matches_exact <- function(fit, case, tol_mean, tol_sd) {
  expect_true(fit$converged)
  expect_lt(abs(coef(fit)[[1]] - case$mean) / case$sd, tol_mean)
  expect_lt(abs(sqrt(vcov(fit)[1, 1]) / case$sd - 1), tol_sd)
}

# Two fits of one posterior that should agree to `tol` posterior sds in
# every mean and to a fraction `tol` in every sd (of the reference).
expect_same_q <- function(fit, ref, tol) {
  sd_ref <- sqrt(diag(vcov(ref)))
  expect_lt(max(abs(coef(fit) - coef(ref)) / sd_ref), tol)
  expect_lt(max(abs(sqrt(diag(vcov(fit))) / sd_ref - 1)), tol)
}

# A linear regression with unknown sigma as a vectorized R log-joint without
# a gradient: beta ~ N(0, prior_sd^2), sigma ~ Exponential(sigma_rate).
regression_logjoint_model <- function(X, y, prior_sd, sigma_rate) {
  bbvi_model(function(theta, data) {
    mu <- data$X %*% t(theta$beta)
    colSums(matrix(dnorm(data$y, mu, rep(theta$sigma, each = length(data$y)), log = TRUE),
                   nrow = length(data$y))) -
      0.5 * rowSums(theta$beta^2) / prior_sd^2 + dexp(theta$sigma, sigma_rate, log = TRUE)
  }, list(beta = param(dim = ncol(X)), sigma = param(lower = 0)),
  data = list(X = X, y = y), vectorized = TRUE)
}

# A log-joint with every kind of transform: real, positive, interval,
# simplex, ordered; its exact gradient in closed form.
transforms_model <- function(gradient, vectorized = TRUE) {
  bbvi_model(function(theta, data) {
    w <- matrix(theta$w, ncol = 3); o <- matrix(theta$o, ncol = 2)
    dnorm(theta$mu, 0, 1, log = TRUE) + dgamma(theta$s, 2, 1, log = TRUE) +
      dbeta(theta$p, 2, 3, log = TRUE) + drop(log(w) %*% c(1, 2, 3)) +
      rowSums(dnorm(o, rep(c(-1, 1), each = nrow(o)), 1, log = TRUE))
  }, list(mu = param(), s = param(lower = 0), p = param(lower = 0, upper = 1),
          w = param(dim = 3, simplex = TRUE), o = param(dim = 2, ordered = TRUE)),
  vectorized = vectorized, gradient = if (identical(gradient, "numeric")) "numeric" else
    function(theta, data) {
      w <- matrix(theta$w, ncol = 3); o <- matrix(theta$o, ncol = 2)
      list(mu = -theta$mu, s = 1 / theta$s - 1, p = 1 / theta$p - 2 / (1 - theta$p),
           w = sweep(1 / w, 2, c(1, 2, 3), `*`),
           o = -(o - rep(c(-1, 1), each = nrow(o))))
    })
}
