# Rao-Blackwellized score gradients: models with `factors` (R/raoblackwell.R,
# src/raoblackwell.c).

# A hierarchical normal model with N local parameters: mu ~ N(0, 10^2),
# t_i | mu ~ N(mu, 1), y_i | t_i ~ N(t_i, 1). Factor l_i touches mu and t_i.
# The posterior is Gaussian with precision 1/100 + N for mu, 2 for each t_i
# (the diagonal), so the mean-field optimum has exactly the posterior means
# and sds 1 / sqrt(diagonal precision).
hier_model <- function(N, y, vectorized = TRUE) {
  pars <- c(list(mu = param()),
            stats::setNames(replicate(N, param(), simplify = FALSE), paste0("t", 1:N)))
  fac <- c(stats::setNames(lapply(1:N, function(i) c("mu", paste0("t", i))),
                           paste0("l", 1:N)), list(prior = "mu"))
  lj <- if (vectorized) {
    function(theta, data) {
      t <- do.call(cbind, theta[-1])
      mu <- theta$mu
      Y <- matrix(data, nrow(t), N, byrow = TRUE)
      unname(cbind(dnorm(t, mu, 1, log = TRUE) + dnorm(Y, t, 1, log = TRUE),
                   dnorm(mu, 0, 10, log = TRUE)))
    }
  } else {
    function(theta, data) {
      t <- unname(unlist(theta[-1]))
      c(dnorm(t, theta$mu, 1, log = TRUE) + dnorm(data, t, 1, log = TRUE),
        dnorm(theta$mu, 0, 10, log = TRUE))
    }
  }
  bbvi_model(lj, pars, data = y, factors = fac, vectorized = vectorized)
}

hier_exact <- function(y) {
  N <- length(y)
  prec_mu <- 1 / 100 + N / 2          # marginally y_i | mu ~ N(mu, 2)
  m_mu <- sum(y) / 2 / prec_mu
  list(mean = c(m_mu, (m_mu + y) / 2),
       mf_sd = c(1 / sqrt(1 / 100 + N), rep(1 / sqrt(2), N)))
}

# n gradient estimates at lambda, Rao-Blackwellized or plain
grad_draws <- function(model, lambda, rb, n = 4000, samples = 10, seed = 1) {
  control <- list(family = "meanfield", rank = 0L,
                  blocks = bbvi:::q_blocks_for(model, "meanfield"),
                  par_sizes = bbvi:::model_unc_sizes(model),
                  estimator = "score", samples = as.integer(samples),
                  n = as.integer(n), lambda = as.double(lambda),
                  control_variates = 1L, rao_blackwell = as.integer(rb))
  res <- bbvi:::with_seed(seed, .Call(bbvi:::C_grad_samples, bbvi:::r_target_spec(model),
                                      as.double(model$lower), as.double(model$upper),
                                      control))
  t(res$grad)
}

test_that("factors are validated with errors that name them", {
  lj <- function(theta, data) c(0, 0)
  p2 <- list(mu = param(), tau = param(lower = 0))
  expect_snapshot(error = TRUE, bbvi_model(lj, p2, factors = c("mu", "tau")))
  expect_snapshot(error = TRUE, bbvi_model(lj, p2, factors = list("mu", "tau")))
  expect_snapshot(error = TRUE, bbvi_model(lj, p2, factors = list(a = "mu", a = "tau")))
  expect_snapshot(error = TRUE, bbvi_model(lj, p2, factors = list(a = "mu", b = character())))
  expect_snapshot(error = TRUE, bbvi_model(lj, p2, factors = list(a = "mu", b = c("tau", "sigma"))))
  expect_snapshot(error = TRUE, bbvi_model(lj, p2, factors = list(a = "mu")))
  expect_snapshot(error = TRUE, bbvi_model(
    native_logjoint("bbvi:mvnormal", data = list(c(0, 1), diag(2))),
    list(z = param(dim = 2)), factors = list(a = "z")))
})

test_that("what a factorised log-joint returns is checked", {
  p2 <- list(mu = param(), tau = param(lower = 0))
  f2 <- list(lik = c("mu", "tau"), prior = "mu")
  one <- bbvi_model(function(theta, data) 1, p2, factors = f2)
  expect_snapshot(error = TRUE, bbvi(one, estimator = "score", seed = 1))
  named <- bbvi_model(function(theta, data) c(lik = 1, other = 2), p2, factors = f2)
  expect_snapshot(error = TRUE, bbvi(named, estimator = "score", seed = 1))
  vec <- bbvi_model(function(theta, data) rep(0, length(theta$mu)), p2,
                    factors = f2, vectorized = TRUE)
  expect_snapshot(error = TRUE, bbvi(vec, estimator = "score", seed = 1))
  full <- bbvi_model(function(theta, data) c(-theta$mu^2, -theta$tau), p2,
                     factors = f2)
  expect_snapshot(error = TRUE, bbvi(full, method = "fullrank", seed = 1))
})

test_that("per-draw and vectorized factorised log-joints give the summed log density", {
  set.seed(3)
  y <- rnorm(4, 1)
  mv <- hier_model(4, y, vectorized = TRUE)
  md <- hier_model(4, y, vectorized = FALSE)
  # names in another order are put in the factors' order
  mn <- bbvi_model(function(theta, data) {
    v <- md$logjoint(theta, data)
    names(v) <- names(md$factors)
    rev(v)
  }, md$parameters, data = y, factors = md$factors)
  zeta <- matrix(rnorm(5 * 7), 5, 7)
  ld <- function(m) as.double(.Call(bbvi:::C_logdens, bbvi:::r_target_spec(m),
                                    m$lower, m$upper, zeta, FALSE))
  t <- zeta[-1, , drop = FALSE]
  mu <- zeta[1, ]
  exact <- colSums(dnorm(t, rep(mu, each = 4), 1, log = TRUE) + dnorm(y, t, 1, log = TRUE)) +
    dnorm(mu, 0, 10, log = TRUE)
  expect_equal(ld(mv), exact)
  expect_equal(ld(md), exact)
  expect_equal(ld(mn), exact)
  expect_output(print(mv), "5 factors: l1 \\(mu, t1\\); .*; prior \\(mu\\)")
  expect_output(print(hier_model(7, rnorm(7))), "8 factors: l1 \\(mu, t1\\); .*; ... and 3 more")
})

test_that("the Rao-Blackwellized gradient is unbiased (closed-form ELBO gradient)", {
  # log p = -(y1 - a)^2/2 - (y2 - b)^2/2 - (a - b)^2/2 - a^2/2 - b^2/2;
  # for q = N(ma, sa^2) N(mb, sb^2): dELBO/dma = y1 - 3 ma + mb,
  # dELBO/dlog sa = 1 - 3 sa^2 (and the same for b)
  y <- c(1.5, -0.5)
  m <- bbvi_model(function(theta, data) {
    a <- theta$a; b <- theta$b
    cbind(la = -(data[1] - a)^2 / 2, lb = -(data[2] - b)^2 / 2,
          ab = -(a - b)^2 / 2, pa = -a^2 / 2, pb = -b^2 / 2)
  }, list(a = param(), b = param()), data = y, vectorized = TRUE,
  factors = list(la = "a", lb = "b", ab = c("a", "b"), pa = "a", pb = "b"))
  lam <- c(0.2, log(0.7), -0.3, log(1.2))        # block layout: (m, log sd) per block
  ma <- lam[1]; sa <- exp(lam[2]); mb <- lam[3]; sb <- exp(lam[4])
  exact <- c(y[1] - 3 * ma + mb, 1 - 3 * sa^2, y[2] - 3 * mb + ma, 1 - 3 * sb^2)
  g_rb <- grad_draws(m, lam, rb = TRUE)
  g_pl <- grad_draws(m, lam, rb = FALSE)
  se <- apply(g_rb, 2, sd) / sqrt(nrow(g_rb))
  # 4 coordinates: |z| < 4 fails by chance with probability ~ 3e-4
  expect_true(all(abs(colMeans(g_rb) - exact) < 4 * se))
  expect_true(all(abs(colMeans(g_pl) - exact) < 4 * apply(g_pl, 2, sd) / sqrt(nrow(g_pl))))
  # and it is less noisy than the plain estimator here
  expect_lt(sum(apply(g_rb, 2, var)), sum(apply(g_pl, 2, var)))
})

test_that("with a bounded parameter (log-Jacobian per block) RB and plain agree in mean", {
  set.seed(2)
  y <- rnorm(6, 1, 2)
  m <- bbvi_model(function(theta, data) {
    c(lik = sum(dnorm(data, theta$mu, theta$sigma, log = TRUE)),
      p_mu = dnorm(theta$mu, 0, 5, log = TRUE),
      p_sigma = dexp(theta$sigma, 1, log = TRUE))
  }, list(mu = param(), sigma = param(lower = 0)), data = y,
  factors = list(lik = c("mu", "sigma"), p_mu = "mu", p_sigma = "sigma"))
  lam <- c(0.8, log(0.8), log(1.8), log(0.3))
  g_rb <- grad_draws(m, lam, rb = TRUE, n = 3000)
  g_pl <- grad_draws(m, lam, rb = FALSE, n = 3000, seed = 2)
  se <- sqrt(apply(g_rb, 2, var) / nrow(g_rb) + apply(g_pl, 2, var) / nrow(g_pl))
  expect_true(all(abs(colMeans(g_rb) - colMeans(g_pl)) < 4 * se))
})

test_that("a hierarchical model: large variance reduction, and the exact mean-field answer", {
  set.seed(11)
  N <- 50
  y <- rnorm(N, 1, sqrt(2))
  m <- hier_model(N, y)
  fit <- bbvi(m, estimator = "score", seed = 1, progress = FALSE)
  ex <- hier_exact(y)
  mq <- q_marginals(fit$q)
  # means within 0.2 sds and sds within 15% of the mean-field optimum (tol
  # 0.02 bounds the averaging error far below that; the rest is Adam's
  # stationary jitter)
  expect_lt(max(abs(mq$mean - ex$mean) / ex$mf_sd), 0.2)
  expect_lt(max(abs(mq$sd / ex$mf_sd - 1)), 0.15)
  rb <- fit$diagnostics$rao_blackwell
  expect_named(rb, c("var_plain", "var_rb", "ratio", "draws", "per_coordinate"), ignore.order = TRUE)
  expect_equal(rb$ratio, rb$var_plain / rb$var_rb)
  expect_output(print(fit), "Rao-Blackwellized score gradient: [0-9.]+ times lower variance")
  # The local parameters' gradients: each t_i's weight keeps one factor
  # instead of N + 1, so the plain weight's variance (growing like N) is
  # cut to O(1): measured 13x at N = 50 (5.7x at N = 20, 25x at N = 100).
  # mu touches every factor: its weight is the plain one (same variance).
  v <- rb_gradient_variance(fit, draws = 2000, seed = 3)
  pc <- v$per_coordinate
  loc <- -(1:2)
  expect_gt(sum(pc$var_plain[loc]) / sum(pc$var_rb[loc]), 5)
  expect_equal(pc$var_rb[1:2], pc$var_plain[1:2])
  expect_gt(v$ratio, 1.5)
})

test_that("N local parameters each in one factor: the ratio grows with N", {
  # t_i ~ N(0, 1), y_i ~ N(t_i, 1): factor i touches t_i alone (a mixture's
  # latent assignments have this shape). The plain weight of t_i carries
  # the other N - 1 factors' noise; the RB one carries none.
  ratio_for <- function(N) {
    set.seed(N)
    y <- rnorm(N, 0, sqrt(2))
    pars <- stats::setNames(replicate(N, param(), simplify = FALSE), paste0("t", 1:N))
    m <- bbvi_model(function(theta, data) {
      t <- do.call(cbind, theta)
      unname(dnorm(t, 0, 1, log = TRUE) + dnorm(matrix(data, nrow(t), N, byrow = TRUE), t, 1, log = TRUE))
    }, pars, data = y, vectorized = TRUE,
    factors = stats::setNames(as.list(paste0("t", 1:N)), paste0("f", 1:N)))
    fit <- bbvi(m, estimator = "score", seed = 1, progress = FALSE)
    rb_gradient_variance(fit, draws = 1000, seed = 2)$ratio
  }
  # measured: 2.6 at N = 10, 14 at N = 50 (about N / 4: t_i's plain weight
  # sums N factors' noise, its RB weight one); asserted at about half
  r10 <- ratio_for(10)
  r50 <- ratio_for(50)
  expect_gt(r10, 1.5)
  expect_gt(r50, 7)
  expect_gt(r50, 3 * r10)
})

test_that("elbo_gradients() reads a factorised fit's q (one block per parameter)", {
  m <- bbvi_model(function(theta, data) {
    c(lik = sum(dnorm(c(0.5, 1.5), theta$mu, theta$sigma, log = TRUE)),
      p_mu = dnorm(theta$mu, 0, 5, log = TRUE),
      p_sigma = dexp(theta$sigma, 1, log = TRUE))
  }, list(mu = param(), sigma = param(lower = 0)),
  factors = list(lik = c("mu", "sigma"), p_mu = "mu", p_sigma = "sigma"))
  fit <- suppressWarnings(bbvi(m, seed = 1, progress = FALSE))
  g <- elbo_gradients(fit, "score", n = 50, seed = 1)
  expect_equal(colnames(g$grad), c("mu[mu]", "log_sd[mu]", "mu[sigma]", "log_sd[sigma]"))
  # at the fitted q the gradient is zero within its noise
  z <- colMeans(g$grad) / (apply(g$grad, 2, sd) / sqrt(50))
  expect_true(all(abs(z) < 4))
})

test_that("a factorised model with a gradient, and under MCMC, uses the summed log-joint", {
  set.seed(5)
  y <- rnorm(8, 2, 1)
  m <- bbvi_model(function(theta, data) {
    cbind(lik = colSums(dnorm(outer(data, theta$mu, "-"), log = TRUE)),
          prior = dnorm(theta$mu, 0, 10, log = TRUE))
  }, list(mu = param()), data = y, vectorized = TRUE,
  gradient = function(theta, data) sapply(theta$mu, function(mu) sum(data - mu)) - theta$mu / 100,
  factors = list(lik = "mu", prior = "mu"))
  # posterior N(sum(y) / (n + 0.01), 1 / (n + 0.01)): exact for a Gaussian q
  fit <- bbvi(m, seed = 1, progress = FALSE)
  expect_equal(fit$estimator, "reparam")
  expect_null(fit$diagnostics$rao_blackwell)
  prec <- length(y) + 0.01
  expect_equal(unname(coef(fit)), sum(y) / prec, tolerance = 0.05 / sqrt(prec))
  mc <- sample_mcmc(m, method = "rwm", chains = 1, iter = 400, seed = 1)
  expect_true(all(is.finite(as.matrix(mc))))
})

test_that("with a gradient, pathwise Gaussian blocks and Rao-Blackwellized discrete ones: unbiased, less noisy", {
  dm <- mixture_data(N = 6, seed = 4)
  plain <- mixture_model(dm, factors = FALSE)
  fac <- mixture_model(dm, factors = TRUE)
  zn <- paste0("z", seq_len(dm$N))
  grad <- function(theta, data) {
    mu <- matrix(theta$mu, ncol = 2)
    Z <- matrix(vapply(zn, function(nm) as.double(theta[[nm]]), numeric(nrow(mu))), nrow(mu))
    r <- matrix(data$y, nrow(mu), dm$N, byrow = TRUE) - (mu[, 1] * (1 - Z) + mu[, 2] * Z)
    list(mu = cbind(rowSums(r * (1 - Z)) - (mu[, 1] - data$m0[1]) / data$tau^2,
                    rowSums(r * Z) - (mu[, 2] - data$m0[2]) / data$tau^2))
  }
  with_grad <- function(m) bbvi_model(m$logjoint, m$parameters, data = dm,
                                      vectorized = TRUE, factors = m$factors,
                                      gradient = grad)
  fit <- suppressWarnings(bbvi(with_grad(fac), seed = 1))
  expect_identical(fit$estimator, "mixed")
  expect_true(fit$converged)
  # the same q, the gradient estimated with and without the factors
  fit_plain <- fit
  fit_plain$model <- with_grad(plain)
  n <- 3000
  g_rb <- elbo_gradients(fit, "reparam", samples = 5, n = n, seed = 2)$grad
  g_pl <- elbo_gradients(fit_plain, "reparam", samples = 5, n = n, seed = 3)$grad
  z <- (colMeans(g_rb) - colMeans(g_pl)) /
    sqrt(apply(g_rb, 2, stats::var) / n + apply(g_pl, 2, stats::var) / n)
  # both unbiased: the means agree within Monte Carlo error (16 entries)
  expect_lt(max(abs(z)), 4)
  # the assignments' entries (the first N) are less noisy (measured 1.27x
  # with 6 observations; the gain grows with their number: 7-10x at 50 in
  # bench_discrete.R; from 3000 gradients the ratio is good to about 5%);
  # mu's pathwise entries are the same estimator
  v_rb <- apply(g_rb, 2, stats::var)
  v_pl <- apply(g_pl, 2, stats::var)
  expect_gt(sum(v_pl[seq_len(dm$N)]) / sum(v_rb[seq_len(dm$N)]), 1.1)
  mu_entries <- grep("^mu|^log_sd\\[mu", colnames(g_rb))
  expect_equal(sum(v_rb[mu_entries]), sum(v_pl[mu_entries]), tolerance = 0.25)
})
