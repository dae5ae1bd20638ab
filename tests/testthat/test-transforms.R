# Simplex and ordered parameters: the transforms (R/transforms.R,
# src/transforms.c) and fits that use them.

# A model whose log-joint is linear in theta, f = sum(c * theta), so that
# the C log density on zeta is f(T(zeta)) + log|J(zeta)| with a known
# theta-gradient c: finite differences of it check the chain rule
# J' c + grad log|J|, and with c = 0 the log-Jacobian's gradient alone.
linear_model <- function(parameters, coef) {
  bbvi_model(function(theta, data) sum(data * unlist(theta)),
             parameters, data = coef,
             gradient = function(theta, data) data)
}

unc_logdens <- function(model, zeta, grad = FALSE) {
  .Call(bbvi:::C_logdens, bbvi:::r_target_spec(model), as.double(model$lower),
        as.double(model$upper), as.double(zeta), grad)
}

fd_grad <- function(f, z, h = 1e-6) {
  vapply(seq_along(z), function(i) {
    e <- replace(numeric(length(z)), i, h)
    (f(z + e) - f(z - e)) / (2 * h)
  }, numeric(1))
}

kinds <- list(
  simplex = list(w = param(dim = 4, simplex = TRUE)),
  ordered = list(mu = param(dim = 3, ordered = TRUE)),
  positive_ordered = list(mu = param(dim = 3, ordered = TRUE, lower = 1)),
  mixed = list(a = param(lower = 0), w = param(dim = 3, simplex = TRUE),
               b = param(dim = 2), mu = param(dim = 2, ordered = TRUE, lower = -2),
               p = param(upper = 1))
)

test_that("the log-Jacobian and the chain rule match finite differences, for every kind", {
  set.seed(11)
  for (nm in names(kinds)) {
    pars <- kinds[[nm]]
    Dth <- sum(vapply(pars, `[[`, integer(1), "dim"))
    Dz <- sum(vapply(pars, bbvi:::param_unc_size, integer(1)))
    for (coef in list(numeric(Dth), stats::rnorm(Dth))) {
      m <- linear_model(pars, coef)
      for (rep in 1:3) {
        z <- stats::rnorm(Dz)
        lp <- unc_logdens(m, z, TRUE)
        num <- fd_grad(function(x) unc_logdens(m, x), z)
        expect_equal(as.double(attr(lp, "gradient")), num, tolerance = 1e-6,
                     info = paste(nm, "at", paste(signif(z, 3), collapse = ", ")))
      }
    }
  }
})

test_that("a compiled log-joint gets the constrained simplex too", {
  set.seed(15)
  mu <- c(0.2, 0.3, 0.5); P <- diag(3) * 50
  lj <- native_logjoint("bbvi:mvnormal", has_gradient = TRUE, data = list(mu, P))
  mn <- bbvi_model(lj, list(w = param(dim = 3, simplex = TRUE)))
  mr <- bbvi_model(function(theta, data) -0.5 * sum((theta$w - mu) * (P %*% (theta$w - mu))),
                   list(w = param(dim = 3, simplex = TRUE)),
                   gradient = function(theta, data) list(w = -drop(P %*% (theta$w - mu))))
  z <- matrix(stats::rnorm(2 * 4), 2, 4)
  a <- unc_logdens(mn, z, TRUE)
  b <- unc_logdens(mr, z, TRUE)
  expect_equal(a - a[1], b - b[1], ignore_attr = TRUE, tolerance = 1e-10)
  expect_equal(attr(a, "gradient"), attr(b, "gradient"), tolerance = 1e-10)
})

test_that("the per-parameter log-Jacobians add up to the model's", {
  set.seed(14)
  m <- linear_model(kinds$mixed, numeric(9))
  z <- matrix(stats::rnorm(8 * 5), 8, 5)
  lj <- .Call(bbvi:::C_transform_logjac, z, as.double(m$lower), as.double(m$upper),
              bbvi:::transform_layout(m))
  expect_equal(dim(lj), c(5L, 5L))
  expect_equal(colSums(lj), as.double(unc_logdens(m, z)), tolerance = 1e-12)
  # a (lower 0): zeta; b (free): 0; p (upper only): zeta
  expect_equal(lj[1, ], z[1, ])
  expect_equal(lj[3, ], numeric(5))
  expect_equal(lj[5, ], z[8, ])
  # without a layout: one coordinate, one parameter
  lj1 <- .Call(bbvi:::C_transform_logjac, z[1:2, ], c(0, -Inf), c(Inf, Inf), NULL)
  expect_equal(lj1, rbind(z[1, ], 0))
})

test_that("the log-Jacobian is log|det| of the transform's derivative", {
  set.seed(12)
  # simplex: the map to its first K - 1 elements is square
  K <- 4
  m <- linear_model(list(w = param(dim = K, simplex = TRUE)), numeric(K))
  for (rep in 1:3) {
    z <- stats::rnorm(K - 1)
    J <- vapply(seq_len(K - 1), function(i) {
      e <- replace(numeric(K - 1), i, 1e-6)
      (bbvi:::constrain_draws(m, z + e) - bbvi:::constrain_draws(m, z - e))[-K] / 2e-6
    }, numeric(K - 1))
    expect_equal(as.double(unc_logdens(m, z)), log(abs(det(J))), tolerance = 1e-6)
  }
  # positive ordered
  m <- linear_model(list(mu = param(dim = 3, ordered = TRUE, lower = 1)), numeric(3))
  z <- stats::rnorm(3)
  J <- vapply(1:3, function(i) {
    e <- replace(numeric(3), i, 1e-6)
    (bbvi:::constrain_draws(m, z + e) - bbvi:::constrain_draws(m, z - e)) / 2e-6
  }, numeric(3))
  expect_equal(as.double(unc_logdens(m, z)), log(abs(det(J))), tolerance = 1e-6)
})

test_that("the transforms map zeta to valid theta, and back exactly", {
  set.seed(13)
  for (nm in names(kinds)) {
    m <- linear_model(kinds[[nm]], numeric(sum(vapply(kinds[[nm]], `[[`, integer(1), "dim"))))
    Dz <- bbvi:::n_unconstrained(m)
    z <- matrix(stats::rnorm(Dz * 50, sd = 2), Dz, 50)
    th <- bbvi:::constrain_draws(m, z)
    expect_equal(dim(th), c(length(m$par_names), 50L))
    expect_equal(bbvi:::unconstrain_theta(m, th), z, tolerance = 1e-9, info = nm)
    for (j in seq_len(50)) expect_null(bbvi:::vector_support_problem(m, th[, j]))
  }
  # zeta = 0 is the uniform simplex
  m <- linear_model(list(w = param(dim = 5, simplex = TRUE)), numeric(5))
  expect_equal(as.double(bbvi:::constrain_draws(m, numeric(4))), rep(0.2, 5))
  # ordered: cumulative, above the lower bound
  m <- linear_model(list(mu = param(dim = 3, ordered = TRUE, lower = 1)), numeric(3))
  expect_equal(as.double(bbvi:::constrain_draws(m, c(0, log(2), log(3)))), c(2, 4, 7))
})

test_that("the model knows its unconstrained sizes", {
  m <- linear_model(kinds$mixed, numeric(9))
  expect_equal(m$sizes, c(a = 1L, w = 3L, b = 2L, mu = 2L, p = 1L))
  expect_equal(m$unc_sizes, c(a = 1L, w = 2L, b = 2L, mu = 2L, p = 1L))
  expect_equal(m$par_names, c("a", "w[1]", "w[2]", "w[3]", "b[1]", "b[2]",
                              "mu[1]", "mu[2]", "p"))
  expect_equal(bbvi:::unc_names(m), c("a", "w_unc[1]", "w_unc[2]", "b[1]", "b[2]",
                                      "mu_unc[1]", "mu_unc[2]", "p"))
})

test_that("bad simplex and ordered declarations and inits are clear errors", {
  expect_snapshot(error = TRUE, param(dim = 3, simplex = TRUE, lower = 0))
  expect_snapshot(error = TRUE, param(dim = 3, simplex = TRUE, upper = 1))
  expect_snapshot(error = TRUE, param(dim = 1, simplex = TRUE))
  expect_snapshot(error = TRUE, param(dim = 2, ordered = TRUE, upper = 5))
  expect_snapshot(error = TRUE, param(dim = 2, ordered = TRUE, lower = c(0, 1)))
  expect_snapshot(error = TRUE, param(dim = 2, ordered = TRUE, simplex = TRUE))
  expect_snapshot(error = TRUE, param(dim = 2, ordered = NA))
  m <- linear_model(list(w = param(dim = 3, simplex = TRUE),
                         mu = param(dim = 2, ordered = TRUE)), numeric(5))
  expect_snapshot(error = TRUE,
                  bbvi(m, init = list(w = c(0.2, 0.2, 0.2), mu = c(0, 1))))
  expect_snapshot(error = TRUE,
                  bbvi(m, init = list(w = c(0.2, 0.3, 0.5), mu = c(1, 0))))
  expect_snapshot(error = TRUE,
                  bbvi(m, init = list(w = c(-0.2, 0.7, 0.5), mu = c(0, 1))))
  expect_snapshot(error = TRUE,
                  sample_mcmc(m, init = list(w = c(0.2, 0.3, 0.5), mu = c(1, 1))))
  expect_snapshot(print(m))
})

# ---- a Dirichlet posterior ---------------------------------------------------

# Multinomial counts y with a Dirichlet(alpha) prior: the posterior is
# Dirichlet(alpha + y), with means a / A and sds sqrt(a (A - a) / (A^2 (A + 1))).
dirichlet_case <- function(vectorized = FALSE) {
  a <- c(2, 3, 5) + c(4, 7, 12)
  if (vectorized) {
    lj <- function(theta, data) drop(log(theta$w) %*% (data - 1))
    gr <- function(theta, data) list(w = sweep(1 / theta$w, 2, data - 1, `*`))
  } else {
    lj <- function(theta, data) sum((data - 1) * log(theta$w))
    gr <- function(theta, data) list(w = (data - 1) / theta$w)
  }
  A <- sum(a)
  list(model = bbvi_model(lj, list(w = param(dim = 3, simplex = TRUE)), data = a,
                          gradient = gr, vectorized = vectorized),
       mean = a / A, sd = sqrt(a * (A - a) / (A^2 * (A + 1))))
}

test_that("full-rank VI on a simplex recovers a Dirichlet posterior", {
  case <- dirichlet_case()
  fit <- bbvi(case$model, method = "fullrank", seed = 1)
  s <- summary(fit)$table
  expect_equal(rownames(s), c("w[1]", "w[2]", "w[3]"))
  # q is a Gaussian on the stick-breaking scale, where the Dirichlet(6, 10,
  # 17) is close to but not exactly Gaussian (its stick fractions are
  # independent Betas, so mean-field loses nothing): with 1e5 draws q's
  # means are 0.005 posterior sds off and its sds 2% (seeds 1-3, all three
  # families). Summaries of a simplex come from the fit's 4000 draws, whose
  # Monte Carlo error is 0.016 sds in a mean and 1.1% in an sd: 0.1 sds and
  # 10% leave five such errors on top of q's own.
  expect_lt(max(abs(s[, "mean"] - case$mean) / case$sd), 0.1)
  expect_lt(max(abs(s[, "sd"] / case$sd - 1)), 0.1)
  dr <- as.matrix(fit)
  expect_equal(colnames(dr), c("w[1]", "w[2]", "w[3]"))
  expect_equal(rowSums(dr), rep(1, nrow(dr)), tolerance = 1e-12)
  expect_equal(names(coef(fit)), colnames(dr))
  expect_equal(dim(confint(fit)), c(3L, 2L))
  expect_equal(dim(vcov(fit)), c(3L, 3L))
  grDevices::pdf(NULL)
  expect_no_error(plot(fit))
  expect_no_error(plot(fit, plotfun = "intervals"))
  grDevices::dev.off()
  expect_output(print(fit), "w\\[3\\]")
  # the other families and the stochastic path run and land close (mean-field
  # cannot see the correlations of the stick-breaking coordinates: looser)
  for (method in c("meanfield", "lowrank")) {
    f <- bbvi(case$model, method = method, seed = 2)
    expect_lt(max(abs(coef(f) - case$mean) / case$sd), 0.25)
  }
  f <- bbvi(dirichlet_case(vectorized = TRUE)$model, method = "fullrank",
            estimator = "reparam", optimizer = "adam", seed = 3)
  expect_lt(max(abs(coef(f) - case$mean) / case$sd), 0.25)
  # init on the constrained scale, and a start from it
  f <- bbvi(case$model, method = "fullrank", init = list(w = c(0.1, 0.3, 0.6)),
            start = "init", seed = 4)
  expect_lt(max(abs(coef(f) - case$mean) / case$sd), 0.25)
})

test_that("summaries mix exact routes for scalars and draws for a simplex", {
  a <- c(6, 10, 17)
  m <- bbvi_model(function(theta, data) sum((data - 1) * log(theta$w)) +
                    stats::dgamma(theta$s, 3, 2, log = TRUE),
                  list(s = param(lower = 0), w = param(dim = 3, simplex = TRUE)),
                  data = a, gradient = function(theta, data)
                    list(s = 2 / theta$s - 2, w = (data - 1) / theta$w))
  fit <- bbvi(m, method = "fullrank", seed = 8)
  dr <- as.matrix(fit)
  s <- summary(fit)$table
  expect_equal(rownames(s), c("s", "w[1]", "w[2]", "w[3]"))
  # the simplex's rows are the draws' summaries
  expect_equal(s[-1, "mean"], colMeans(dr[, -1]), tolerance = 1e-12)
  expect_equal(s[-1, "50%"], apply(dr[, -1], 2, stats::median), tolerance = 1e-12)
  # the scale's are exact under q (quadrature, transformed quantiles): close
  # to its draws within their Monte Carlo error, but not equal to them
  mc_se <- stats::sd(dr[, "s"]) / sqrt(nrow(dr))
  expect_lt(abs(s["s", "mean"] - mean(dr[, "s"])), 4 * mc_se)
  expect_false(isTRUE(all.equal(s["s", "mean"], mean(dr[, "s"]), tolerance = 1e-12)))
  q <- bbvi:::q_marginals(bbvi:::fit_q(fit))
  expect_equal(s["s", "50%"], exp(q$mean[1]), tolerance = 1e-12)
  # Gamma(3, 2) for s: mean 1.5, sd 0.87 (q is log-normal: close, not exact)
  expect_lt(abs(s["s", "mean"] - 1.5) / sqrt(3) * 2, 0.15)
})

test_that("NUTS and RWM on a simplex recover a Dirichlet posterior", {
  case <- dirichlet_case()
  mc <- sample_mcmc(case$model, chains = 2, iter = 2000, seed = 1,
                    init = list(w = c(0.3, 0.3, 0.4)))
  dg <- summary(mc)$table
  dr <- as.matrix(mc)
  expect_equal(colnames(dr), c("w[1]", "w[2]", "w[3]"))
  expect_equal(rowSums(dr), rep(1, nrow(dr)), tolerance = 1e-12)
  # 4.5 Monte Carlo standard errors (mean: the sampler's mcse; sd: the
  # usual sd / sqrt(2 ESS) of a sample sd): a false alarm about once in
  # 10^5 per comparison
  expect_true(all(abs(colMeans(dr) - case$mean) < 4.5 * dg[, "mcse_mean"]))
  expect_true(all(abs(apply(dr, 2, sd) / case$sd - 1) < 4.5 / sqrt(2 * dg[, "ess_bulk"])))
  expect_named(mc$inv_metric[[1]], c("w_unc[1]", "w_unc[2]"))
  mr <- sample_mcmc(case$model, method = "rwm", chains = 2, iter = 4000, seed = 2)
  dr <- as.matrix(mr)
  expect_true(all(abs(colMeans(dr) - case$mean) < 4.5 * summary(mr)$table[, "mcse_mean"]))
})

test_that("check_gradient() works on a simplex", {
  case <- dirichlet_case()
  expect_true(attr(check_gradient(case$model), "ok"))
  bad <- case$model
  bad$gradient <- function(theta, data) list(w = data / theta$w)
  expect_false(attr(check_gradient(bad), "ok"))
  expect_snapshot(error = TRUE,
                  check_gradient(case$model, points = list(w = c(0.5, 0.4, 0.2))))
})

# ---- an ordered two-component mixture ----------------------------------------

# y from 0.5 N(mu1, 1) + 0.5 N(mu2, 1), mu ~ N(0, 5^2) each, mu1 < mu2
# (ordered: the posterior has one mode, not two mirror images).
mixture_case <- function() {
  set.seed(20)
  y <- c(stats::rnorm(20, -1.2), stats::rnorm(20, 1.5))
  lj1 <- function(mu, y) {
    sum(log(0.5 * stats::dnorm(y, mu[1]) + 0.5 * stats::dnorm(y, mu[2]))) +
      sum(stats::dnorm(mu, 0, 5, log = TRUE))
  }
  gr <- function(theta, data) {
    mu <- theta$mu
    a <- stats::dnorm(data, mu[1]); b <- stats::dnorm(data, mu[2])
    r <- a / (a + b)
    list(mu = c(sum(r * (data - mu[1])), sum((1 - r) * (data - mu[2]))) - mu / 25)
  }
  model <- bbvi_model(function(theta, data) lj1(theta$mu, data),
                      list(mu = param(dim = 2, ordered = TRUE)), data = y,
                      gradient = gr)
  # the reference: the posterior on a grid over mu1 < mu2, 400 x 400 nodes
  # spaced 0.0075 over +-1.5 around each half's mean (the posterior sds are
  # about 0.25, so the grid's error in means and sds is far below 1e-3)
  g <- seq(-1.5, 1.5, length.out = 400)
  c1 <- mean(y[1:20]) + g
  c2 <- mean(y[21:40]) + g
  L <- outer(stats::dnorm(c1, 0, 5, log = TRUE), stats::dnorm(c2, 0, 5, log = TRUE), "+")
  for (yi in y) L <- L + log(outer(0.5 * stats::dnorm(yi, c1), 0.5 * stats::dnorm(yi, c2), "+"))
  L[outer(c1, c2, ">=")] <- -Inf
  P <- exp(L - max(L)); P <- P / sum(P)
  m1 <- sum(rowSums(P) * c1); m2 <- sum(colSums(P) * c2)
  s1 <- sqrt(sum(rowSums(P) * (c1 - m1)^2)); s2 <- sqrt(sum(colSums(P) * (c2 - m2)^2))
  list(model = model, mean = c(m1, m2), sd = c(s1, s2), y = y)
}

test_that("an ordered two-component mixture matches quadrature", {
  case <- mixture_case()
  mc <- sample_mcmc(case$model, chains = 2, iter = 2000, seed = 3)
  dr <- as.matrix(mc)
  expect_equal(colnames(dr), c("mu[1]", "mu[2]"))
  expect_true(all(dr[, 1] < dr[, 2]))
  dg <- summary(mc)$table
  expect_true(all(abs(colMeans(dr) - case$mean) < 4.5 * dg[, "mcse_mean"]))
  expect_true(all(abs(apply(dr, 2, sd) / case$sd - 1) < 4.5 / sqrt(2 * dg[, "ess_bulk"])))
  # VI: the posterior of (mu1, log(mu2 - mu1)) is near Gaussian when the
  # components are well apart (here 2.8 sds of the data): with 1e5 draws
  # q's means are within 0.01 posterior sds and its sds within 2% (seeds
  # 5-7); 0.1 sds and 10% leave room for the 4000 draws' Monte Carlo error
  # (0.016 sds, 1.1%) as above
  fit <- bbvi(case$model, method = "fullrank", seed = 5)
  s <- summary(fit)$table
  expect_lt(max(abs(s[, "mean"] - case$mean) / case$sd), 0.1)
  expect_lt(max(abs(s[, "sd"] / case$sd - 1)), 0.1)
  # the start on the constrained scale
  f <- bbvi(case$model, init = list(mu = c(-1, 1)), start = "init", seed = 6)
  expect_true(all(as.matrix(f)[, 1] < as.matrix(f)[, 2]))
})

test_that("a positive-ordered vector stays above its bound", {
  set.seed(21)
  y <- stats::rexp(30, 1)
  # gamma(2, 1) priors on three increasing rates, a toy likelihood
  m <- bbvi_model(function(theta, data) {
    l <- theta$l
    sum(stats::dgamma(l, 2, 1, log = TRUE)) + sum(stats::dexp(data, l[2], log = TRUE))
  }, list(l = param(dim = 3, ordered = TRUE, lower = 0)), data = y)
  fit <- bbvi(m, method = "meanfield", seed = 7)
  dr <- as.matrix(fit)
  expect_true(all(dr[, 1] > 0 & dr[, 2] > dr[, 1] & dr[, 3] > dr[, 2]))
  expect_equal(unname(coef(fit)), unname(colMeans(dr)), tolerance = 1e-12)
})
