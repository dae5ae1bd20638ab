# The fixed-draw path's optimiser (src/saa.c, saa_lbfgs): L-BFGS that stops
# when both the gradient and the quasi-Newton step (its estimate of the
# distance left) are small. Balanced draws make the fixed-draw ELBO exact
# for a Gaussian posterior, so the answers below are exact up to the
# optimiser's tolerance, not Monte Carlo's.

ridge_model <- function(rho, scales) {
  S <- diag(scales) %*% matrix(c(1, rho, rho, 1), 2) %*% diag(scales)
  P <- solve(S)
  list(precision = P,
       model = bbvi_model(function(theta, data) -0.5 * sum(theta$z * (P %*% theta$z)),
                          list(z = param(dim = 2)),
                          gradient = function(theta, data) -drop(P %*% theta$z)))
}

test_that("fixed-draw L-BFGS reaches the mean-field optimum along a flat ridge, on any scale (3 seeds)", {
  # correlation 0.999, scales 1e-3 and 1e3: in q-sd units the mean-field
  # ELBO's curvature along the ridge is 1 - 0.999 = 0.001, so a gradient
  # of tol / 4 alone could leave the mean 5 q-sds off; the step rule stops
  # within tol / 4 of the optimum (the exact mean-field q: mean 0, sds
  # 1 / sqrt(diag(precision)))
  case <- ridge_model(0.999, c(1e-3, 1e3))
  target_sd <- 1 / sqrt(diag(case$precision))
  for (s in 1:3) {
    fit <- suppressWarnings(bbvi(case$model, seed = s, start = "init",
                                 init = list(z = c(2e-3, -1e3)), progress = FALSE))
    expect_equal(fit$optimizer, "lbfgs")
    expect_true(fit$converged)
    expect_lt(max(abs(coef(fit)) / target_sd), 0.02)
    expect_equal(unname(sqrt(diag(vcov(fit)))), unname(target_sd), tolerance = 0.01)
    # every evaluation is counted: all its draws, once
    opt <- fit$evals[fit$evals$phase == "optimisation", ]
    expect_equal(opt$gradient, sum(fit$fixed_draws$draws * fit$fixed_draws$evaluations))
  }
})

test_that("max_iter bounds the fixed-draw path's evaluations and is reported", {
  case <- ridge_model(0.999, c(1e-3, 1e3))
  expect_warning(fit <- bbvi(case$model, seed = 1, start = "init",
                             init = list(z = c(2e-3, -1e3)), max_iter = 3,
                             progress = FALSE),
                 "did not converge")
  expect_false(fit$converged)
  expect_lte(max(fit$fixed_draws$evaluations), 3)
  expect_match(fit$stop_reason, "L-BFGS stopped")
})

test_that("a check run goes on with the first run's curvature, and counts the distance it left (4 seeds)", {
  # Gamma-Poisson (a log-normal q, not exact): the check with fresh draws
  # starts at the first answer with the first run's L-BFGS pairs, rescaled
  # to its own coordinates, so it knows the curvature at once and stops
  # within a few evaluations; `moved` adds the last quasi-Newton step, so
  # an immediate stop is not reported as 0 apart
  case <- gamma_poisson_case()
  for (s in 1:4) {
    fit <- suppressWarnings(bbvi(case$model, seed = s, progress = FALSE))
    fd <- fit$fixed_draws
    expect_true(fit$converged)
    expect_lte(fd$evaluations[2], 3)
    expect_gt(fd$moved[2], 0)
    expect_lt(fd$moved[2], 2.5 * sqrt(2) * 0.02)
    expect_matches_exact(fit, case, 0.1, 0.05)
  }
})

test_that("mean-field L-BFGS starts from the Laplace Hessian: the same optimum in fewer evaluations (4 seeds)", {
  # Poisson regression on 8 nearly collinear predictors: the diagonal-scaled
  # posterior precision is far from I, and the mean-field optimum is not
  # the Laplace start. Started from gamma I, L-BFGS learns the correlations
  # pair by pair; started from the Laplace Hessian (src/saa.c, saa_h0) it
  # has them at once. Same seed, same draws: the same fixed-draw problem,
  # so the two answers must agree to the optimiser's tolerance.
  set.seed(5)
  n <- 30
  z0 <- stats::rnorm(n)
  X <- sapply(1:8, function(j) z0 + 0.2 * stats::rnorm(n))
  y <- stats::rpois(n, 1)
  m <- bbvi_model(function(theta, data) {
    eta <- X %*% t(theta$b)
    colSums(y * eta - exp(eta)) - rowSums(theta$b^2) / 2
  }, list(b = param(dim = 8)), gradient = function(theta, data) {
    eta <- X %*% t(theta$b)
    t(crossprod(X, y - exp(eta))) - theta$b
  }, vectorized = TRUE)
  spec <- r_target_spec(m)
  st <- laplace_start(m, spec, rep(0, 8), "meanfield")
  expect_true(is.matrix(st$hessian))
  for (s in 1:4) {
    run <- function(hessian) with_seed(s, saa_engine(m, spec, "meanfield", NULL, 1000L, 0.02,
                                                     st$precond, st$mean, hessian = hessian,
                                                     max_doublings = 0L))
    with_h0 <- suppressWarnings(run(st$hessian))
    without <- suppressWarnings(run(NULL))
    expect_lte(with_h0$saa$evaluations[1], 0.5 * without$saa$evaluations[1])
    sd <- q_marginals(q_from_c(without$q))$sd
    expect_lt(max(abs(with_h0$mean - without$mean) / sd), 0.02)
    expect_lt(max(abs(log(q_marginals(q_from_c(with_h0$q))$sd / sd))), 0.02)
  }
})

test_that("a start for the fixed-draw path needs the mode only to grad_tol: fewer evaluations, the same answer", {
  # the fixed-draw path's L-BFGS goes on from the start, so bbvi() stops the
  # mode search at 1e-2 sd instead of 1e-4 sd. With the same seed the
  # fixed draws are the same and so is the problem (shift and scales only
  # change its coordinates): the answers must agree to the optimiser's
  # tolerance.
  set.seed(6)
  n <- 40
  z0 <- stats::rnorm(n)
  X <- cbind(1, sapply(1:5, function(j) z0 + 0.3 * stats::rnorm(n)))
  y <- stats::rpois(n, exp(0.5 + 0.2 * z0))
  m <- bbvi_model(function(theta, data) {
    eta <- X %*% t(theta$b)
    colSums(y * eta - exp(eta)) - rowSums(theta$b^2) / 8
  }, list(b = param(dim = 6)), gradient = function(theta, data) {
    eta <- X %*% t(theta$b)
    t(crossprod(X, y - exp(eta))) - theta$b / 4
  }, vectorized = TRUE)
  spec <- r_target_spec(m)
  precise <- laplace_start(m, spec, rep(0, 6), "meanfield")
  rough <- laplace_start(m, spec, rep(0, 6), "meanfield", precise = FALSE)
  expect_lt(rough$evals[["gradient"]], precise$evals[["gradient"]])
  # the rough mode's gradient is below 1e-2 in sd units; with correlated
  # coordinates its distance can be a few times that (measured: 0.021 sd)
  expect_lt(max(abs(rough$mean - precise$mean) / precise$precond), 0.1)
  for (s in 1:3) {
    run <- function(st) with_seed(s, saa_engine(m, spec, "meanfield", NULL, 1000L, 0.02,
                                                st$precond, st$mean, hessian = st$hessian,
                                                max_doublings = 0L))
    a <- suppressWarnings(run(precise))
    b <- suppressWarnings(run(rough))
    sd <- q_marginals(q_from_c(a$q))$sd
    expect_lt(max(abs(a$mean - b$mean) / sd), 0.02)
    expect_lt(max(abs(log(q_marginals(q_from_c(b$q))$sd / sd))), 0.02)
  }
})
