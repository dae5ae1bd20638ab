# Minibatch form of custom models (bbvi_model(loglik =, logprior =, n =))
# and bbvi(model, subsample =) (R/minibatch.R, src/minibatch.c).

as_draws_matrix <- function(B) if (is.matrix(B)) B else matrix(B, 1)

# A GLM written as a custom minibatch model: vectorized loglik over rows idx,
# normal(0, 2.5) priors on every coefficient (rstanarm's scale, no autoscale).
glm_minibatch_case <- function(family, N, beta, seed) {
  set.seed(seed)
  P <- length(beta)
  Z <- scale(matrix(stats::rnorm(N * (P - 1)), N))   # centred: the formula
  X <- cbind(1, Z)                                     # fit's intercept prior matches
  eta0 <- drop(X %*% beta)
  y <- if (family == "binomial") stats::rbinom(N, 1, stats::plogis(eta0)) else
    stats::rpois(N, exp(eta0))
  mean_fn <- if (family == "binomial") stats::plogis else exp
  cum_fn <- if (family == "binomial") function(e) log1p(exp(e)) else exp
  loglik <- function(theta, data, idx) {
    eta <- data$X[idx, , drop = FALSE] %*% t(as_draws_matrix(theta$beta))
    colSums(data$y[idx] * eta - cum_fn(eta))
  }
  grad_loglik <- function(theta, data, idx) {
    Xi <- data$X[idx, , drop = FALSE]
    r <- data$y[idx] - mean_fn(Xi %*% t(as_draws_matrix(theta$beta)))
    list(beta = t(crossprod(Xi, r)))
  }
  model <- bbvi_model(
    loglik = loglik,
    logprior = function(theta) rowSums(stats::dnorm(as_draws_matrix(theta$beta), 0, 2.5, log = TRUE)),
    gradient = list(loglik = grad_loglik,
                    logprior = function(theta) list(beta = -as_draws_matrix(theta$beta) / 2.5^2)),
    parameters = list(beta = param(P)), data = list(X = X, y = y), n = N,
    vectorized = TRUE)
  list(model = model, data = data.frame(y = y, Z), P = P)
}

# The two fits' Gaussian q: means apart in units of the reference's sds,
# and the ratio of sds.
q_agreement <- function(ref, fit) {
  s0 <- sqrt(diag(vcov(ref)))
  list(shift = max(abs(coef(fit) - coef(ref)) / s0),
       ratio = range(sqrt(diag(vcov(fit))) / s0))
}

# Both the full-data fit and the minibatch one are optima of a fixed-draw
# ELBO (different draws). Their disagreement is that approximation's error,
# which the full-data path already holds below 2.5 sqrt(2) tol = 0.07 sds by
# re-solving with fresh draws: 0.1 sd and 10% are the issue's bar, with
# room to spare (measured: below 0.002 sd and 0.01%).
test_that("a logistic regression by minibatches matches the full-data fit", {
  cs <- glm_minibatch_case("binomial", 2e4, c(-0.5, 1, -0.7, 0.3, 0), seed = 1)
  full <- bbvi(cs$model, seed = 1, draws = 200, diagnostic_draws = 200)
  mb <- bbvi(cs$model, subsample = 1000, seed = 1)
  expect_match(mb$path, "^minibatch")
  expect_true(mb$converged)
  expect_lte(mb$epochs, 8)
  expect_equal(mb$minibatch$blocks, 20L)
  expect_equal(mb$minibatch$row_evals, 2e4 * mb$minibatch$samples * mb$epochs)
  ag <- q_agreement(full, mb)
  expect_lt(ag$shift, 0.1)
  expect_gt(ag$ratio[1], 0.9)
  expect_lt(ag$ratio[2], 1.1)
  # the diagnostics are capped at 100 draws (each a pass over all rows)
  expect_lte(mb$minibatch$diagnostic_draws, 100)
  expect_equal(mb$evals$logp[mb$evals$phase == "diagnostics"], mb$minibatch$diagnostic_draws)
})

test_that("a Poisson regression by minibatches matches the full-data fit and the formula GLM", {
  cs <- glm_minibatch_case("poisson", 3e4, c(0.7, 0.3, -0.2, 0.1), seed = 2)
  full <- bbvi(cs$model, method = "fullrank", seed = 1, draws = 200, diagnostic_draws = 200)
  mb <- bbvi(cs$model, method = "fullrank", subsample = 2000, seed = 1)
  expect_true(mb$converged)
  ag <- q_agreement(full, mb)
  expect_lt(ag$shift, 0.1)
  expect_gt(ag$ratio[1], 0.9)
  expect_lt(ag$ratio[2], 1.1)
  # the same posterior as a formula fit (exact quadrature, same priors on
  # centred predictors): its q is the same full-rank Gaussian optimum
  glm <- bbvi(y ~ ., data = cs$data, family = poisson(), method = "fullrank",
              prior = normal(0, 2.5, autoscale = FALSE),
              prior_intercept = normal(0, 2.5, autoscale = FALSE), seed = 1)
  ag <- q_agreement(glm, mb)
  expect_lt(ag$shift, 0.1)
  expect_gt(ag$ratio[1], 0.9)
  expect_lt(ag$ratio[2], 1.1)
})

# Normal data with unknown mean and sd (sigma > 0: the log-Jacobian belongs
# to the prior, once, not to every minibatch), per-draw callbacks.
normal_sd_model <- function(y) {
  bbvi_model(
    loglik = function(theta, data, idx) sum(stats::dnorm(data[idx], theta$mu, theta$sigma, log = TRUE)),
    logprior = function(theta) stats::dnorm(theta$mu, 0, 10, log = TRUE) +
      stats::dexp(theta$sigma, 1, log = TRUE),
    gradient = list(
      loglik = function(theta, data, idx) {
        r <- data[idx] - theta$mu
        list(mu = sum(r) / theta$sigma^2,
             sigma = -length(idx) / theta$sigma + sum(r^2) / theta$sigma^3)
      },
      logprior = function(theta) list(mu = -theta$mu / 100, sigma = -1)),
    parameters = list(mu = param(), sigma = param(lower = 0)), data = y,
    n = length(y))
}

test_that("a bounded parameter, per-draw callbacks: the minibatch fit matches; seeds reproduce it", {
  set.seed(3)
  m <- normal_sd_model(stats::rnorm(4000, 1, 2))
  full <- bbvi(m, seed = 3, draws = 200, diagnostic_draws = 200)
  mb <- bbvi(m, subsample = 500, seed = 3)
  ag <- q_agreement(full, mb)
  expect_lt(ag$shift, 0.1)
  expect_gt(ag$ratio[1], 0.9)
  expect_lt(ag$ratio[2], 1.1)
  again <- bbvi(m, subsample = 500, seed = 3)
  expect_identical(again$lambda, mb$lambda)
  expect_identical(again$draws, mb$draws)
  # max_iter bounds the epochs: one epoch cannot converge, and says so
  expect_warning(short <- bbvi(m, subsample = 500, seed = 3, max_iter = 1), "did not converge")
  expect_false(short$converged)
  expect_equal(short$epochs, 1L)
  set.seed(9)
  a <- bbvi(m, subsample = 500)
  set.seed(9)
  b <- bbvi(m, subsample = 500)
  expect_identical(a$lambda, b$lambda)
})

test_that("a model in minibatch form is an ordinary model: log-joint over all rows, MCMC, gradient check", {
  set.seed(4)
  y <- stats::rnorm(300, 1, 2)
  m <- normal_sd_model(y)
  expect_s3_class(m, "bbvi_model")
  expect_match(m$kind, "minibatch form")
  th <- list(mu = 0.5, sigma = 1.5)
  expect_equal(m$logjoint(th, y),
               sum(stats::dnorm(y, 0.5, 1.5, log = TRUE)) + stats::dnorm(0.5, 0, 10, log = TRUE) +
                 stats::dexp(1.5, 1, log = TRUE))
  # rows are summed in chunks: the chunks cover 1..n once
  ch <- bbvi:::mb_chunks(2500000L, 1L)
  expect_equal(unlist(ch), seq_len(2500000L))
  expect_gt(length(bbvi:::mb_chunks(2500000L, 40L)), 1)
  cg <- check_gradient(m)
  expect_true(all(cg$ok))
  mc <- sample_mcmc(m, chains = 1, iter = 300, seed = 1)
  expect_s3_class(mc, "bbvi_mcmc")
  # without gradients: every full-data path, but no subsample
  m0 <- bbvi_model(loglik = function(theta, data, idx) sum(stats::dnorm(data[idx], theta$mu, 1, log = TRUE)),
                   logprior = function(theta) stats::dnorm(theta$mu, 0, 10, log = TRUE),
                   parameters = list(mu = param()), data = y, n = length(y))
  fit <- bbvi(m0, seed = 1, draws = 200, diagnostic_draws = 200)
  expect_equal(coef(fit)[["mu"]], sum(y) / (length(y) + 0.01), tolerance = 0.02)
})

test_that("non-finite log-likelihoods: q steps back, and stops with an error when that does not help", {
  # Poisson log-rate: Newton from 0 overshoots the answer log(mean(y)) = 3;
  # the log-likelihood is -Inf above 3.5 (far in the posterior's tail)
  set.seed(5)
  y <- stats::rpois(5000, exp(3))
  m <- bbvi_model(
    loglik = function(theta, data, idx) if (theta$b > 3.5) -Inf else
      sum(data[idx] * theta$b - exp(theta$b)),
    logprior = function(theta) stats::dnorm(theta$b, 0, 10, log = TRUE),
    gradient = list(loglik = function(theta, data, idx) list(b = sum(data[idx] - exp(theta$b))),
                    logprior = function(theta) list(b = -theta$b / 100)),
    parameters = list(b = param()), data = y, n = length(y))
  fit <- bbvi(m, subsample = 500, seed = 1)
  expect_gt(fit$minibatch$backoffs, 0)
  expect_true(fit$converged)
  expect_equal(coef(fit)[["b"]], log(mean(y)), tolerance = 1e-3)
  bad <- bbvi_model(
    loglik = function(theta, data, idx) NA_real_,
    logprior = function(theta) stats::dnorm(theta$b, 0, 10, log = TRUE),
    gradient = list(loglik = function(theta, data, idx) list(b = 0),
                    logprior = function(theta) list(b = -theta$b / 100)),
    parameters = list(b = param()), data = y, n = length(y))
  expect_snapshot(error = TRUE, bbvi(bad, subsample = 500, seed = 1))
})

test_that("input errors name the argument", {
  lik <- function(theta, data, idx) sum(stats::dnorm(data[idx], theta$mu, 1, log = TRUE))
  pri <- function(theta) stats::dnorm(theta$mu, 0, 10, log = TRUE)
  pars <- list(mu = param())
  y <- c(0.1, 0.5, 1.2, 0.3)
  expect_snapshot(error = TRUE, bbvi_model(parameters = pars))
  expect_snapshot(error = TRUE, bbvi_model(function(theta, data) 0, pars, loglik = lik,
                                           logprior = pri, n = 4))
  expect_snapshot(error = TRUE, bbvi_model(loglik = "lik", logprior = pri, parameters = pars, n = 4))
  expect_snapshot(error = TRUE, bbvi_model(loglik = lik, parameters = pars, n = 4))
  expect_snapshot(error = TRUE, bbvi_model(loglik = lik, logprior = pri, parameters = pars))
  expect_snapshot(error = TRUE, bbvi_model(loglik = lik, logprior = pri, parameters = pars, n = 2.5))
  expect_snapshot(error = TRUE, bbvi_model(loglik = lik, logprior = pri, parameters = pars, n = 4,
                                           gradient = function(theta, data) 0))
  expect_snapshot(error = TRUE, bbvi_model(loglik = lik, logprior = pri, parameters = pars, n = 4,
                                           factors = list(a = "mu")))
  m <- bbvi_model(loglik = lik, logprior = pri, parameters = pars, data = y, n = 4)
  expect_snapshot(error = TRUE, bbvi(m, subsample = 2))
  mg <- bbvi_model(loglik = lik, logprior = pri, parameters = pars, data = y, n = 4,
                   gradient = list(loglik = function(theta, data, idx) list(mu = sum(data[idx] - theta$mu)),
                                   logprior = function(theta) list(mu = -theta$mu / 100)))
  expect_snapshot(error = TRUE, bbvi(mg, subsample = 0))
  expect_snapshot(error = TRUE, bbvi(mg, subsample = 2, method = "lowrank"))
  expect_snapshot(error = TRUE, bbvi(mg, subsample = 2, samples = 2))
  expect_snapshot(error = TRUE, bbvi(mg, subsample = 2, estimator = "score"))
  m_lj <- bbvi_model(function(theta, data) pri(theta), pars)
  expect_snapshot(error = TRUE, bbvi(m_lj, subsample = 2))
  # an error inside the user's loglik names it
  mbad <- bbvi_model(loglik = function(theta, data, idx) stop("boom"), logprior = pri,
                     parameters = pars, data = y, n = 4,
                     gradient = list(loglik = function(theta, data, idx) list(mu = 0),
                                     logprior = function(theta) list(mu = 0)))
  expect_snapshot(error = TRUE, bbvi(mbad, subsample = 2, seed = 1))
  mlen <- bbvi_model(loglik = function(theta, data, idx) c(1, 2), logprior = pri,
                     parameters = pars, data = y, n = 4,
                     gradient = list(loglik = function(theta, data, idx) list(mu = 0),
                                     logprior = function(theta) list(mu = 0)))
  expect_snapshot(error = TRUE, bbvi(mlen, subsample = 2, seed = 1))
  # a wrong gradient is caught before the fit, on 100 of the rows
  yy <- seq(-1, 1, length.out = 300)
  mwrong <- bbvi_model(loglik = lik, logprior = pri, parameters = pars, data = yy, n = 300,
                       gradient = list(loglik = function(theta, data, idx) list(mu = -sum(data[idx] - theta$mu)),
                                       logprior = function(theta) list(mu = -theta$mu / 100)))
  expect_snapshot(error = TRUE, bbvi(mwrong, subsample = 50, seed = 1))
  # subsample >= n is the full-data path
  fit <- bbvi(mg, subsample = 10, seed = 1, draws = 100, diagnostic_draws = 100)
  expect_false(grepl("minibatch", fit$path))
})

test_that("an interrupt stops a minibatch fit cleanly", {
  skip_on_cran()
  skip_if_not_installed("callr")
  rs <- callr::r_session$new(
    options = callr::r_session_options(libpath = .libPaths(),
                                       env = c(NOT_CRAN = "true")),
    wait_timeout = 20000)
  on.exit(rs$close(), add = TRUE)
  out <- rs$run(function() {
    suppressPackageStartupMessages(library(bbvi))
    y <- stats::rnorm(2000)
    n <- 0
    m <- bbvi_model(
      loglik = function(theta, data, idx) {
        n <<- n + 1
        if (n == 50) tools::pskill(Sys.getpid(), tools::SIGINT)
        sum(stats::dnorm(data[idx], theta$mu, 1, log = TRUE))
      },
      logprior = function(theta) stats::dnorm(theta$mu, 0, 10, log = TRUE),
      gradient = list(loglik = function(theta, data, idx) list(mu = sum(data[idx] - theta$mu)),
                      logprior = function(theta) list(mu = -theta$mu / 100)),
      parameters = list(mu = param()), data = y, n = 2000)
    res <- tryCatch(bbvi(m, subsample = 10, seed = 1, tol = 1e-12),
                    interrupt = function(i) "interrupted")
    again <- bbvi(m, subsample = 500, seed = 1)
    list(res = res, n = n, ok = isTRUE(again$converged))
  })
  expect_identical(out$res, "interrupted")
  expect_lt(out$n, 1e4)
  expect_true(out$ok)
})
