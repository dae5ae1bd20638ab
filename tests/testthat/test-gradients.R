test_that("gradient estimators are unbiased and control variates cut the variance", {
  case <- gaussian2_case()
  fit <- bbvi(case$model, method = "fullrank", seed = 4)
  # away from the optimum, where the gradient is not zero
  lam <- fit$lambda + c(0.5, -0.5, rep(0.2, 3))
  exact_mu_grad <- drop(case$precision %*% (case$mean - lam[1:2]))
  sc <- elbo_gradients(fit, "score", samples = 20, n = 400, lambda = lam, seed = 1)
  nocv <- elbo_gradients(fit, "score", samples = 20, n = 400, lambda = lam,
                         control_variates = FALSE, seed = 1)
  rp <- elbo_gradients(fit, "reparam", samples = 20, n = 400, lambda = lam, seed = 1)
  expect_equal(colnames(sc$grad), c("mu[z[1]]", "mu[z[2]]", "L[z[1],z[1]]",
                                    "L[z[2],z[1]]", "L[z[2],z[2]]"))
  for (g in list(sc$grad, nocv$grad, rp$grad)) {
    m <- colMeans(g[, 1:2]); se <- apply(g[, 1:2], 2, sd) / sqrt(nrow(g))
    expect_true(all(abs(m - exact_mu_grad) < 4 * se))
  }
  v_sc <- apply(sc$grad, 2, var); v_no <- apply(nocv$grad, 2, var)
  v_rp <- apply(rp$grad, 2, var)
  expect_true(all(v_sc < v_no / 100))
  expect_true(all(v_rp[1:2] < v_sc[1:2]))
  expect_snapshot(error = TRUE, elbo_gradients(fit, lambda = 1:2))
})

normal_sd_model <- function(gradient) {
  bbvi_model(function(theta, data) sum(dnorm(data, theta$mu, theta$s, log = TRUE)) +
               dnorm(theta$mu, 0, 10, log = TRUE),
             list(mu = param(), s = param(lower = 0)), data = c(1.2, 0.4, 2.1, 1.7),
             gradient = gradient)
}
grad_mu <- function(theta, data) sum(data - theta$mu) / theta$s^2 - theta$mu / 100
grad_s <- function(theta, data) sum((data - theta$mu)^2) / theta$s^3 - length(data) / theta$s

test_that("check_gradient() agrees with a correct gradient and finds a sign error", {
  good <- normal_sd_model(function(theta, data) list(mu = grad_mu(theta, data), s = grad_s(theta, data)))
  chk <- check_gradient(good)
  expect_s3_class(chk, "bbvi_gradient_check")
  expect_true(attr(chk, "ok"))
  expect_equal(nrow(chk), 6L)
  expect_equal(chk$parameter, rep(c("mu", "s"), 3))
  # central differences with h = 1e-5: error about 1e-10 relative
  expect_true(all(chk$rel_error < 1e-7))
  expect_output(print(chk), "all 6 entries at 3 point\\(s\\) agree")
  # the first point is where fits start: mu = 0, s = exp(0) = 1
  expect_equal(unname(attr(chk, "points")[1, ]), c(0, 1))
  # given points: a named list, or a matrix
  chk2 <- check_gradient(good, points = list(mu = 1, s = 0.5))
  expect_equal(chk2$analytic, c(grad_mu(list(mu = 1, s = 0.5), c(1.2, 0.4, 2.1, 1.7)),
                                grad_s(list(mu = 1, s = 0.5), c(1.2, 0.4, 2.1, 1.7))))
  chk3 <- check_gradient(good, points = rbind(c(mu = 1, s = 0.5), c(mu = -1, s = 3)))
  expect_equal(nrow(chk3), 4L)
  # a sign error in s
  bad <- normal_sd_model(function(theta, data) list(mu = grad_mu(theta, data), s = -grad_s(theta, data)))
  chk <- check_gradient(bad)
  expect_false(attr(chk, "ok"))
  expect_equal(unique(chk$parameter[!chk$ok]), "s")
  expect_true(all(chk$ok[chk$parameter == "mu"]))
  expect_output(print(chk), "DISAGREE")
  expect_snapshot(error = TRUE, check_gradient(bad, points = list(mu = 3)))
  expect_snapshot(error = TRUE, check_gradient(bad, points = list(mu = 1, s = -1)))
  nog <- bbvi_model(function(theta, data) 0, list(a = param()))
  expect_snapshot(error = TRUE, check_gradient(nog))
})

test_that("a wrong gradient stops bbvi() and sample_mcmc() before they start, naming the parameter", {
  # a sign error: used to give a wrong answer without a word
  bad <- normal_sd_model(function(theta, data) list(mu = grad_mu(theta, data), s = -grad_s(theta, data)))
  expect_snapshot(error = TRUE, bbvi(bad, seed = 1))
  expect_error(sample_mcmc(bad, seed = 1, chains = 1, iter = 100),
               "disagrees with finite differences.*for s")
  # the right values in the wrong order, unnamed: position decides, and the
  # check catches it
  swapped <- normal_sd_model(function(theta, data) c(grad_s(theta, data), grad_mu(theta, data)))
  expect_error(bbvi(swapped, seed = 1), "disagrees with finite differences")
  # named, in the other order: matched by name, and fitted (four data
  # points and a flat prior on s: a heavy-tailed posterior whose fixed-draw
  # answers may still move by more than tol, which the fit says; that is
  # not what this test is about)
  named <- normal_sd_model(function(theta, data) c(s = grad_s(theta, data), mu = grad_mu(theta, data)))
  expect_s3_class(suppressWarnings(bbvi(named, seed = 1)), "bbvi_fit")
})

test_that("check_gradient() checks a vectorized gradient with one call at all points", {
  P <- solve(matrix(c(1, 0.5, 0.5, 2), 2))
  n_calls <- 0
  m <- bbvi_model(function(theta, data) {
    n_calls <<- n_calls + 1
    -0.5 * rowSums((theta$z %*% P) * theta$z)
  }, list(z = param(dim = 2)), vectorized = TRUE,
  gradient = function(theta, data) list(z = -theta$z %*% P))
  chk <- check_gradient(m, n = 4)
  expect_true(attr(chk, "ok"))
  expect_equal(nrow(chk), 8L)
  expect_equal(n_calls, 3)   # the points, and the points shifted up and down
  m$gradient <- function(theta, data) list(z = theta$z %*% P)
  expect_false(attr(check_gradient(m), "ok"))
})

test_that("points where the log-joint is not finite are skipped", {
  m <- bbvi_model(function(theta, data) if (theta$x > 0.5) -Inf else -theta$x^2 / 2,
                  list(x = param()), gradient = function(theta, data) -theta$x)
  chk <- check_gradient(m, points = rbind(0, 1, -1))
  expect_equal(chk$ok, c(TRUE, NA, TRUE))
  expect_true(attr(chk, "ok"))
  expect_output(print(chk), "1 entries skipped")
})

# The score estimator's quadratic control variate (src/estimators.c): for
# mean-field q from the mode, u = h (Q - log q) - grad(E_q[Q] + entropy),
# Q the quadratic of log p at the mode, regressed out draw by draw.
quadratic_cv_grads <- function(model, lambda, quadratic, n = 1000L, seed = 1) {
  spec <- r_target_spec(model)
  D <- length(model$lower)
  st <- laplace_start(model, spec, rep(0, D), "meanfield", quadratic_cv = TRUE)
  res <- with_seed(seed, .Call(C_grad_samples, spec, as.double(model$lower), as.double(model$upper),
                               list(family = "meanfield", rank = 0L, estimator = "score",
                                    samples = 50L, lambda = as.double(lambda), n = n,
                                    control_variates = 1L, precond_diag = as.double(st$precond),
                                    shift = as.double(st$mean),
                                    quadratic = if (quadratic) as.double(st$hessian))))
  t(res$grad)
}

test_that("the quadratic control variate keeps the score gradient unbiased and cuts its noise", {
  # logistic regression on collinear predictors: log p is not quadratic,
  # the quadratic at the mode still explains most of the correlation
  # noise; 1000 estimates each at a q away from the optimum (z scale)
  set.seed(7)
  X <- cbind(1, stats::rnorm(40))
  X <- cbind(X, X[, 2] + 0.3 * stats::rnorm(40))
  y <- stats::rbinom(40, 1, stats::plogis(X %*% c(0.3, 1, -0.5)))
  m <- bbvi_model(function(theta, data) {
    eta <- X %*% t(theta$b)
    colSums(y * eta - log1p(exp(eta))) - rowSums(theta$b^2) / 8
  }, list(b = param(dim = 3)), vectorized = TRUE)
  lam <- c(0.4, -0.3, 0.2, 0.2, -0.3, 0.1)
  with_q <- quadratic_cv_grads(m, lam, TRUE)
  without <- quadratic_cv_grads(m, lam, FALSE)
  se <- sqrt(apply(with_q, 2, var) / 1000 + apply(without, 2, var) / 1000)
  expect_true(all(abs(colMeans(with_q) - colMeans(without)) < 4 * se))
  expect_true(all(apply(with_q, 2, sd) < apply(without, 2, sd) / 1.5))
})

# N(mu, S), S with correlations 0.9^|i - j| and the given scales, as a
# vectorized log-joint without a gradient
correlated_gaussian <- function(mu, scales = rep(1, length(mu))) {
  D <- length(mu)
  P <- solve(0.9^abs(outer(1:D, 1:D, "-")) * outer(scales, scales))
  list(precision = P,
       model = bbvi_model(function(theta, data) {
         z <- t(theta$z) - mu
         -0.5 * colSums(z * (P %*% z))
       }, list(z = param(dim = D)), vectorized = TRUE))
}

test_that("mean-field score fits of a correlated Gaussian reach the exact optimum at once (4 seeds)", {
  # Gaussian log p: Q is log p itself, so the gradient's noise is gone up
  # to the regression's; without the second control variate these fits
  # took 250 to 10,000 iterations and stopped up to 0.1 q-sd off
  # (the exact mean-field q: means mu, sds 1 / sqrt(diag(precision)))
  mu <- c(1, -20, 0.3, 2)
  case <- correlated_gaussian(mu, scales = c(1, 10, 0.1, 1))
  m <- case$model
  target_sd <- 1 / sqrt(diag(case$precision))
  for (s in 1:4) {
    fit <- suppressWarnings(bbvi(m, seed = s, progress = FALSE))
    q <- q_from_c(fit$q)
    expect_true(fit$converged)
    expect_lte(fit$iterations, 300)
    expect_lt(max(abs(q$mean - mu) / target_sd), 0.01)
    expect_lt(max(abs(log(q$sd / target_sd))), 0.01)
  }
})

test_that("elbo_gradients() shows the score estimator a mean-field fit from the mode used", {
  # a correlated Gaussian: with its quadratic control variate the score
  # gradient is exact up to the finite-difference Hessian's error; without
  # it, noisy
  mu <- c(1, -2, 0.3, 2)
  case <- correlated_gaussian(mu)
  P <- case$precision
  fit <- suppressWarnings(bbvi(case$model, seed = 1, progress = FALSE))
  expect_output(print(fit), "(baseline and quadratic)", fixed = TRUE)
  plain_fit <- suppressWarnings(bbvi(case$model, seed = 1, progress = FALSE,
                                     control_variates = FALSE, max_iter = 200))
  expect_output(print(plain_fit), "score function (no control variates)", fixed = TRUE)
  expect_null(plain_fit$quadratic_cv)
  # the mode search's answer (1e-4 sd) and its Hessian (finite differences)
  expect_equal(fit$quadratic_cv$mode, mu, tolerance = 1e-3)
  lam <- fit$lambda + c(0.3, -0.2, 0.1, 0, 0.1, -0.1, 0, 0.2)
  g <- elbo_gradients(fit, "score", samples = 50, n = 200, lambda = lam, seed = 1)
  exact_mu <- -drop(P %*% (lam[1:4] - mu))
  expect_equal(unname(colMeans(g$grad[, 1:4])), exact_mu, tolerance = 1e-4)
  expect_lt(max(apply(g$grad, 2, sd)), 1e-3)
  plain <- elbo_gradients(fit, "score", samples = 50, n = 200, lambda = lam, seed = 1,
                          control_variates = FALSE)
  expect_gt(min(apply(plain$grad, 2, sd)), 0.01)
})
