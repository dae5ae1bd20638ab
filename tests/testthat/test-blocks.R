# GLMs read in row blocks (R/blocks.R): the same posterior as the in-memory
# formula fit, whatever the block size or the storage.

blocks_case <- function(n = 400, seed = 3) {
  set.seed(seed)
  X <- cbind(intercept = 1, x1 = rnorm(n), x2 = rnorm(n))
  y <- rbinom(n, 1, plogis(drop(X %*% c(-0.5, 1, -0.7))))
  list(X = X, y = y, d = data.frame(y = y, x1 = X[, 2], x2 = X[, 3]))
}

test_that("the block log-joint and gradient match the one-piece ones", {
  cs <- blocks_case()
  m1 <- glm_blocks_model(matrix_blocks(cs$X, cs$y, block_rows = 37), colnames(cs$X),
                         prior = normal(0, c(10, 2.5, 2.5)))
  m2 <- glm_blocks_model(matrix_blocks(cs$X, cs$y, block_rows = 1000), colnames(cs$X),
                         prior = normal(0, c(10, 2.5, 2.5)))
  B <- matrix(c(-0.4, 0.9, -0.5, 0, 0, 0, 1, -1, 2), 3, byrow = TRUE)   # 3 draws
  theta <- list(beta = B)
  lp1 <- m1$logjoint(theta, NULL)
  expect_equal(lp1, m2$logjoint(theta, NULL))
  eta <- cs$X %*% t(B)
  exact <- colSums(cs$y * eta - log1p(exp(eta))) +
    colSums(dnorm(t(B), 0, c(10, 2.5, 2.5), log = TRUE))
  expect_equal(lp1, exact)
  expect_equal(m1$gradient(theta, NULL)$beta, m2$gradient(theta, NULL)$beta)
  # and the gradient is the log-joint's (finite differences)
  expect_true(attr(check_gradient(m1), "ok"))
})

test_that("a blocks fit matches the formula fit of the same data and prior", {
  cs <- blocks_case()
  m <- glm_blocks_model(matrix_blocks(cs$X, cs$y, block_rows = 50), colnames(cs$X),
                        prior = normal(0, c(10, 2.5, 2.5)))
  fb <- bbvi(m, method = "fullrank", seed = 1)
  ff <- bbvi(y ~ x1 + x2, data = cs$d, family = binomial(),
             prior = normal(0, 2.5), prior_intercept = normal(0, 10), seed = 1)
  sd_f <- sqrt(diag(vcov(ff)))
  # two VI fits of one posterior (near Gaussian: both close to the exact
  # full-rank optimum); 0.1 sd and 10% cover their Monte Carlo and
  # fixed-draw errors
  expect_lt(max(abs(coef(fb) - coef(ff)) / sd_f), 0.1)
  expect_lt(max(abs(sqrt(diag(vcov(fb))) / sd_f - 1)), 0.1)
})

test_that("a SQLite table read in blocks gives the in-memory answer", {
  skip_if_not_installed("RSQLite")
  cs <- blocks_case()
  con <- DBI::dbConnect(RSQLite::SQLite(), ":memory:")
  on.exit(DBI::dbDisconnect(con))
  DBI::dbWriteTable(con, "d", data.frame(cs$X, y = cs$y))
  db <- dbi_blocks(con, "SELECT intercept, x1, x2, y FROM d ORDER BY rowid", y = "y",
                   x = c("intercept", "x1", "x2"), block_rows = 64)
  n_blocks <- 0
  db(function(x, y) n_blocks <<- n_blocks + 1)
  expect_equal(n_blocks, ceiling(400 / 64))
  md <- glm_blocks_model(db, colnames(cs$X), prior = normal(0, c(10, 2.5, 2.5)))
  mm <- glm_blocks_model(matrix_blocks(cs$X, cs$y, 64), colnames(cs$X),
                         prior = normal(0, c(10, 2.5, 2.5)))
  fd <- bbvi(md, method = "fullrank", seed = 2)
  fm <- bbvi(mm, method = "fullrank", seed = 2)
  # the same sums in the same order: the same fit
  expect_equal(coef(fd), coef(fm))
  expect_equal(vcov(fd), vcov(fm))
})

test_that("minibatch epochs over the blocks reach the in-memory quadrature answer", {
  cs <- blocks_case(n = 3000, seed = 4)
  for (method in c("fullrank", "meanfield")) {
    m <- glm_blocks_model(matrix_blocks(cs$X, cs$y, block_rows = 250), colnames(cs$X),
                          prior = normal(0, c(10, 2.5, 2.5)))
    fb <- bbvi(m, method = method, seed = 1)
    fq <- bbvi(cs$X, cs$y, family = binomial(), intercept = FALSE, method = method,
               prior = normal(0, c(10, 2.5, 2.5), autoscale = FALSE), seed = 1)
    expect_true(fb$converged)
    expect_match(fb$path, "minibatches")
    # both stop when a full-data Newton step is below 1e-4 sds
    expect_same_q(fb, fq, 1e-3)
    # a few passes over the data, not the 50-100 of the black-box path
    expect_lte(fb$epochs, 8)
  }
  # poisson and a flat prior
  set.seed(5)
  k <- stats::rpois(3000, exp(0.3 + 0.4 * cs$X[, 2]))
  mp <- glm_blocks_model(matrix_blocks(cs$X, k, block_rows = 500), colnames(cs$X),
                         family = poisson(), prior = NULL)
  fp <- bbvi(mp, seed = 1)
  gp <- stats::glm(k ~ cs$X - 1, family = poisson())
  expect_lt(max(abs(coef(fp) - coef(gp)) / sqrt(diag(vcov(gp)))), 0.05)
  # the black-box path is still there
  fs <- bbvi(mp, path = "stochastic", seed = 1)
  expect_false(grepl("minibatch", fs$path))
  # too few epochs: not converged, and said
  expect_warning(f1 <- bbvi(mp, max_iter = 1, seed = 1), class = "bbvi_not_converged")
  expect_false(f1$converged)
})

test_that("glm_blocks_model() checks its arguments and the blocks", {
  cs <- blocks_case()
  expect_snapshot(error = TRUE, glm_blocks_model(1, "a"))
  expect_snapshot(error = TRUE, glm_blocks_model(matrix_blocks(cs$X, cs$y), colnames(cs$X),
                                                 family = gaussian()))
  expect_snapshot(error = TRUE, glm_blocks_model(matrix_blocks(cs$X, cs$y), colnames(cs$X),
                                                 prior = cauchy(0, 1)))
  expect_snapshot(error = TRUE, matrix_blocks(cs$X, cs$y[-1]))
  bad <- glm_blocks_model(matrix_blocks(cs$X, cs$y), c("a", "b"))
  expect_snapshot(error = TRUE, bad$logjoint(list(beta = matrix(0, 1, 2)), NULL))
})
