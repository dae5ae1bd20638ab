# The variational families, C side (src/families.c, through the test entry
# point C_family_eval) and R side (R/q.R): every method against finite
# differences or a dense computation.

fam_eval <- function(family, D, rank, lambda, eps, gz) {
  .Call(bbvi:::C_family_eval,
        list(family = family, D = as.integer(D), rank = as.integer(rank),
             lambda = as.double(lambda), eps = as.double(eps), gz = as.double(gz)))
}

withr_seed <- function(seed, expr) {
  set.seed(seed)
  expr
}

fd_grad <- function(f, x, h = 1e-6) {
  vapply(seq_along(x), function(k) {
    xp <- x; xm <- x
    xp[k] <- xp[k] + h; xm[k] <- xm[k] - h
    (f(xp) - f(xm)) / (2 * h)
  }, numeric(1))
}

dense_logdens <- function(z, m, S) {
  L <- t(chol(S))
  e <- forwardsolve(L, z - m)
  -0.5 * sum(e^2) - sum(log(diag(L))) - 0.5 * length(m) * log(2 * pi)
}

cases <- list(
  list(family = "meanfield", D = 3L, rank = 0L, K = 6L, nb = 3L),
  list(family = "fullrank", D = 3L, rank = 0L, K = 9L, nb = 3L),
  list(family = "lowrank", D = 5L, rank = 2L, K = 20L, nb = 7L)
)

for (cs in cases) {
  test_that(sprintf("%s: every family method agrees with finite differences", cs$family), {
    set.seed(11)
    D <- cs$D
    lambda <- stats::rnorm(cs$K, sd = 0.5)
    S <- 2L
    eps <- matrix(stats::rnorm(cs$nb * S), cs$nb, S)
    gz <- matrix(stats::rnorm(D * S), D, S)
    r <- fam_eval(cs$family, D, cs$rank, lambda, eps, gz)
    expect_equal(r$n_lambda, cs$K)
    expect_equal(r$n_base, cs$nb)
    q <- bbvi:::q_from_c(r$q)
    Sig <- bbvi:::q_vcov(q)
    # marginals, and the R q object, match the dense covariance
    expect_equal(r$mean, q$mean)
    expect_equal(r$sd, sqrt(diag(Sig)))
    expect_equal(bbvi:::q_marginals(q)$sd, sqrt(diag(Sig)))
    # log q at z = T(eps) from C, from the q object and densely
    for (s in seq_len(S)) {
      expect_equal(r$log_q[s], dense_logdens(r$z[, s], q$mean, Sig))
    }
    expect_equal(r$log_q, bbvi:::q_log_density(q, r$z))
    # entropy: 0.5 log det(2 pi e Sigma)
    expect_equal(r$entropy, 0.5 * D * (1 + log(2 * pi)) +
                   0.5 * as.numeric(determinant(Sig)$modulus))
    ent <- function(l) fam_eval(cs$family, D, cs$rank, l, eps, gz)$entropy
    expect_equal(r$entropy_grad, fd_grad(ent, lambda), tolerance = 1e-6)
    for (s in seq_len(S)) {
      z <- r$z[, s]
      # score: the gradient in lambda of log q at a fixed z
      lq <- function(l) {
        qq <- bbvi:::q_from_c(fam_eval(cs$family, D, cs$rank, l, eps, gz)$q)
        bbvi:::q_log_density(qq, matrix(z))
      }
      expect_equal(r$score[, s], fd_grad(lq, lambda), tolerance = 1e-6)
      # reparam_grad: (dz / dlambda)' gz at fixed eps
      zg <- function(l) sum(gz[, s] * fam_eval(cs$family, D, cs$rank, l, eps, gz)$z[, s])
      expect_equal(r$reparam_grad[, s], fd_grad(zg, lambda), tolerance = 1e-6)
    }
  })
}

test_that("q objects draw from their distribution and know their moments", {
  set.seed(3)
  D <- 4
  B <- matrix(stats::rnorm(D * 2), D, 2)
  qs <- list(mf = bbvi:::q_gauss_mf(1:D, c(0.5, 1, 2, 3)),
             fr = bbvi:::q_gauss_fr(1:D, t(chol(crossprod(matrix(stats::rnorm(16), 4)) + diag(4)))),
             lr = bbvi:::q_gauss_lr(1:D, B, c(0.3, 0.4, 0.5, 0.6)))
  for (q in qs) {
    n <- 20000
    smp <- bbvi:::q_draw(q, n)
    expect_equal(dim(smp$zeta), c(D, n))
    expect_equal(smp$log_q, bbvi:::q_log_density(q, smp$zeta))
    m <- bbvi:::q_marginals(q)
    # means within 5 Monte Carlo standard errors; the covariance within 5%
    expect_lt(max(abs(rowMeans(smp$zeta) - m$mean) / (m$sd / sqrt(n))), 5)
    V <- bbvi:::q_vcov(q)
    expect_equal(stats::cov(t(smp$zeta)), V, tolerance = 0.05)
    expect_equal(bbvi:::q_quantile(q, 0.975)[, 1], m$mean + stats::qnorm(0.975) * m$sd)
    expect_equal(tcrossprod(bbvi:::q_chol(q)), V)
  }
})

test_that("fewer draws from one seed are a prefix of more", {
  set.seed(4)
  q <- bbvi:::q_gauss_lr(1:3, matrix(stats::rnorm(6), 3, 2), c(0.5, 1, 2))
  a <- withr_seed(9, bbvi:::q_draw(q, 10))
  b <- withr_seed(9, bbvi:::q_draw(q, 4))
  expect_equal(b$zeta, a$zeta[, 1:4])
  expect_equal(b$log_q, a$log_q[1:4])
})

test_that("a product of blocks: every method agrees with finite differences and with its blocks", {
  set.seed(12)
  blocks <- list(list(family = "meanfield", rank = 0L, dim = 2L),
                 list(family = "lowrank", rank = 1L, dim = 3L),
                 list(family = "fullrank", rank = 0L, dim = 2L))
  D <- 7L
  K <- 2 * 2 + 3 * 3 + (2 + 3)
  nb <- 2 + 4 + 2
  ev <- function(l, eps, gz) {
    .Call(bbvi:::C_family_eval, list(blocks = blocks, D = D, lambda = as.double(l),
                                     eps = as.double(eps), gz = as.double(gz)))
  }
  lambda <- stats::rnorm(K, sd = 0.5)
  eps <- matrix(stats::rnorm(nb * 2), nb, 2)
  gz <- matrix(stats::rnorm(D * 2), D, 2)
  r <- ev(lambda, eps, gz)
  expect_equal(r$n_lambda, K)
  expect_equal(r$n_base, nb)
  q <- bbvi:::q_from_c(r$q)
  expect_s3_class(q, "q_product")
  expect_equal(bbvi:::q_n_base(q), nb)
  Sig <- bbvi:::q_vcov(q)
  expect_equal(Sig[1:2, 3:7], matrix(0, 2, 5))
  expect_equal(r$sd, sqrt(diag(Sig)))
  for (s in 1:2) expect_equal(r$log_q[s], dense_logdens(r$z[, s], q$mean, Sig))
  expect_equal(r$log_q, bbvi:::q_log_density(q, r$z))
  # the R side maps the same base draws to the same points
  expect_equal(bbvi:::q_from_base(q, eps)$zeta, r$z)
  expect_equal(r$entropy, 0.5 * D * (1 + log(2 * pi)) + 0.5 * as.numeric(determinant(Sig)$modulus))
  expect_equal(r$entropy_grad, fd_grad(function(l) ev(l, eps, gz)$entropy, lambda), tolerance = 1e-6)
  for (s in 1:2) {
    lq <- function(l) bbvi:::q_log_density(bbvi:::q_from_c(ev(l, eps, gz)$q), matrix(r$z[, s]))
    expect_equal(r$score[, s], fd_grad(lq, lambda), tolerance = 1e-6)
    zg <- function(l) sum(gz[, s] * ev(l, eps, gz)$z[, s])
    expect_equal(r$reparam_grad[, s], fd_grad(zg, lambda), tolerance = 1e-6)
  }
})

test_that("a fit with q as a product of blocks recovers independent groups", {
  # two independent groups: a correlated pair (full-rank) and three
  # independent normals (mean-field)
  Sigma <- matrix(c(1, 0.8, 0.8, 1), 2)
  P <- solve(Sigma)
  s3 <- c(0.5, 1, 2)
  m <- bbvi_model(function(theta, data) {
    a <- theta$a; b <- theta$b
    -0.5 * rowSums((a %*% P) * a) - 0.5 * rowSums(sweep(b, 2, s3, "/")^2)
  }, list(a = param(dim = 2), b = param(dim = 3)),
  gradient = function(theta, data) list(a = -theta$a %*% P, b = -sweep(theta$b, 2, s3^2, "/")),
  vectorized = TRUE)
  spec <- bbvi:::r_target_spec(m)
  res <- withr_seed(1, bbvi:::vi_engine(m, spec, method = "blocks", estimator = "reparam",
    samples = 10, max_iter = 5000, tol = NULL, optimizer = "adam", eta = NULL,
    window = 100, init_mean = numeric(5), init_log_sd = numeric(5),
    blocks = list(list(family = "fullrank", rank = 0L, dim = 2L),
                  list(family = "meanfield", rank = 0L, dim = 3L))))
  fit <- withr_seed(2, bbvi:::new_bbvi_fit(m, res, call = NULL, draws = 2000))
  expect_s3_class(fit$q, "q_product")
  expect_true(fit$converged)
  V <- vcov(fit)
  # tol 0.02 sds on the averaged q: 0.1 is wide
  expect_lt(max(abs(V[1:2, 1:2] - Sigma)), 0.1)
  expect_lt(max(abs(sqrt(diag(V))[3:5] / s3 - 1)), 0.1)
  expect_equal(V[1:2, 3:5], matrix(0, 2, 3), ignore_attr = TRUE)
  expect_equal(dim(as.matrix(fit, draws = 2000)), c(2000L, 5L))
  expect_equal(summary(fit)$table[, "sd"], sqrt(diag(V)), tolerance = 1e-8)
})

test_that("a product's quantiles come block by block (Gaussian blocks as before, Gamma exact)", {
  q <- bbvi:::q_product(list(bbvi:::q_gauss_mf(c(1, 2), c(0.5, 2)),
                             bbvi:::q_gamma(3, 2)))
  qq <- bbvi:::q_quantile(q, c(0.1, 0.5))
  expect_equal(qq[1:2, ], outer(c(1, 2), c(1, 1)) + outer(c(0.5, 2), stats::qnorm(c(0.1, 0.5))))
  expect_equal(qq[3, ], stats::qgamma(c(0.1, 0.5), 3, 2))
  expect_equal(bbvi:::q_marginals(q)$sd, c(0.5, 2, sqrt(3) / 2))
})
