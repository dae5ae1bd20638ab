# Formula fits: agreement with lm(), glm(), exact posteriors, posteriordb
# reference posteriors, the stochastic path against the quadrature path, the
# compiled log-joint against R's densities, and bad input.

# ---- posteriordb cases (data and references copied into fixtures/) --------

pdb_case <- function(name) {
  dir <- test_path("fixtures", name)
  d <- utils::read.csv(file.path(dir, "data.csv"))
  ref <- utils::read.csv(file.path(dir, "reference.csv"))
  switch(name,
    "kidiq-kidscore_interaction" = list(
      formula = kid_score ~ mom_hs * mom_iq, data = d, prior = NULL,
      prior_intercept = NULL, prior_aux = cauchy(0, 2.5),
      names = c("(Intercept)", "mom_hs", "mom_iq", "mom_hs:mom_iq", "sigma"), ref = ref),
    "earnings-logearn_interaction_z" = {
      d$z <- (d$height - mean(d$height)) / stats::sd(d$height)
      list(formula = log(earn) ~ z * male, data = d, prior = NULL,
           prior_intercept = NULL, prior_aux = NULL,
           names = c("(Intercept)", "z", "male", "z:male", "sigma"), ref = ref)
    },
    "mesquite-logmesquite_logvash" = list(
      formula = log(weight) ~ log(diam1 * diam2 * canopy_height) + log(diam1 * diam2) +
        log(diam1 / diam2) + log(total_height) + group,
      data = d, prior = NULL, prior_intercept = NULL, prior_aux = NULL,
      names = c("(Intercept)", "log(diam1 * diam2 * canopy_height)", "log(diam1 * diam2)",
                "log(diam1/diam2)", "log(total_height)", "group", "sigma"), ref = ref),
    "sblrc-blr" = , "sblri-blr" = list(
      formula = y ~ 0 + x1 + x2 + x3 + x4 + x5, data = d, prior = normal(0, 10),
      prior_intercept = NULL, prior_aux = normal(0, 10),
      names = c(paste0("x", 1:5), "sigma"), ref = ref),
    "kilpisjarvi_mod-kilpisjarvi" = {
      h <- as.numeric(readLines(file.path(dir, "hyper.txt")))
      list(formula = y ~ x, data = d, prior = normal(h[3], h[4]),
           prior_intercept = normal(h[1], h[2]), prior_aux = NULL,
           names = c("(Intercept)", "x", "sigma"), ref = ref)
    })
}

pdb_names <- c("kidiq-kidscore_interaction", "earnings-logearn_interaction_z",
               "mesquite-logmesquite_logvash", "sblrc-blr", "sblri-blr",
               "kilpisjarvi_mod-kilpisjarvi")

pdb_fit <- function(cs, ...) {
  # posteriordb's models put the intercept prior on the raw intercept
  bbvi(cs$formula, data = cs$data, family = gaussian(), prior = cs$prior,
       prior_intercept = cs$prior_intercept, prior_aux = cs$prior_aux,
       center = FALSE, ...)
}

pdb_errors <- function(fit, cs) {
  mom <- bbvi:::marginal_moments(fit)
  list(z = unname((mom$mean[cs$names] - cs$ref$mean) / cs$ref$sd),
       ratio = unname(mom$sd[cs$names] / cs$ref$sd))
}

# The references are 10,000 NUTS draws with ESS > 9000: their Monte Carlo
# error is about 0.01 sd for means and 1% for sds, well inside the bars.
test_that("full-rank fits match the posteriordb GLM references", {
  for (nm in pdb_names) {
    cs <- pdb_case(nm)
    fit <- pdb_fit(cs, method = "fullrank")
    expect_true(fit$converged)
    e <- pdb_errors(fit, cs)
    expect_lt(max(abs(e$z)), 0.1, label = paste(nm, "max |mean error| / ref sd"))
    expect_lt(max(abs(e$ratio - 1)), 0.1, label = paste(nm, "max |sd ratio - 1|"))
  }
})

test_that("mean-field fits get the posteriordb GLM means right", {
  for (nm in pdb_names) {
    cs <- pdb_case(nm)
    fit <- pdb_fit(cs, method = "meanfield")
    expect_identical(fit$method, "meanfield")
    e <- pdb_errors(fit, cs)
    expect_lt(max(abs(e$z)), 0.25, label = paste(nm, "max |mean error| / ref sd"))
  }
})

# ---- exact and classical answers -------------------------------------------

test_that("a flat-prior gaussian fit agrees with lm()", {
  fit <- bbvi(mpg ~ wt + factor(cyl), data = mtcars, prior = NULL,
              prior_intercept = NULL, prior_aux = NULL, method = "fullrank")
  l <- stats::lm(mpg ~ wt + factor(cyl), data = mtcars)
  se <- sqrt(diag(stats::vcov(l)))
  cf <- coef(fit)[names(stats::coef(l))]
  # the posterior mean of the coefficients is the least-squares fit
  expect_lt(max(abs(cf - stats::coef(l)) / se), 1e-3)
  # exact marginal posterior under p(sigma) = 1: multivariate t, nu = n - p - 1
  n <- nrow(mtcars); p <- length(se); nu <- n - p - 1
  rss <- sum(stats::resid(l)^2)
  sd_exact <- sqrt(rss / (nu - 2) * diag(solve(crossprod(stats::model.matrix(l)))))
  sds <- sqrt(diag(vcov(fit)))[names(se)]
  # a Gaussian q understates the t's sd a little (nu = 27)
  expect_lt(max(abs(sds / sd_exact - 1)), 0.06)
  expect_equal(nobs(fit), n)
})

test_that("a logistic fit with a very weak prior agrees with glm()", {
  set.seed(11)
  n <- 3000
  d <- data.frame(x1 = stats::rnorm(n), x2 = stats::runif(n))
  d$y <- stats::rbinom(n, 1, stats::plogis(-0.5 + d$x1 - d$x2))
  g <- stats::glm(y ~ x1 + x2, data = d, family = stats::binomial())
  se <- sqrt(diag(stats::vcov(g)))
  for (m in c("meanfield", "fullrank")) {
    fit <- bbvi(y ~ x1 + x2, data = d, family = binomial(), prior = normal(0, 100),
                prior_intercept = normal(0, 100), method = m)
    # posterior mean - MLE is O(1/n) in se units; here below 0.05 se
    expect_lt(max(abs(coef(fit) - stats::coef(g)) / se), 0.05)
    if (m == "fullrank") {
      expect_lt(max(abs(sqrt(diag(vcov(fit))) / se - 1)), 0.03)
    }
  }
  # the stochastic path: Monte Carlo error of the iterate average (~0.03 sd)
  st <- bbvi(y ~ x1 + x2, data = d, family = binomial(), prior = normal(0, 100),
             prior_intercept = normal(0, 100), method = "fullrank",
             estimator = "reparam", seed = 3)
  expect_identical(st$path, "stochastic")
  expect_lt(max(abs(coef(st) - stats::coef(g)) / se), 0.15)
})

test_that("full-rank matches the exact posterior of the conjugate linear model", {
  # sigma known (= 1.5 up to a prior of sd 1e-7): beta | y is Gaussian,
  # N(A^{-1} X'y / s^2 + ..., A^{-1}), A = X'X / s^2 + prior precision
  set.seed(5)
  n <- 40
  d <- data.frame(x = stats::rnorm(n), u = stats::rnorm(n))
  d$y <- 1 + 0.5 * d$x - d$u + stats::rnorm(n, sd = 1.5)
  fit <- bbvi(y ~ x + u, data = d, prior = normal(c(0, 1), c(2, 0.5)),
              prior_intercept = normal(3, 1), prior_aux = normal(1.5, 1e-7),
              method = "fullrank")
  # as rstanarm, the intercept prior is on the intercept with centred
  # predictors, alpha = b0 + xbar' beta: the exact posterior of (alpha,
  # beta), mapped to (b0, beta)
  X <- stats::model.matrix(~ x + u, d)
  xbar <- colMeans(X[, -1])
  Xc <- cbind(1, sweep(X[, -1], 2, xbar))
  P0 <- diag(1 / c(1, 2, 0.5)^2)
  A <- crossprod(Xc) / 1.5^2 + P0
  Vc <- solve(A)
  mc <- Vc %*% (crossprod(Xc, d$y) / 1.5^2 + P0 %*% c(3, 0, 1))
  Tm <- diag(3)
  Tm[1, 2:3] <- -xbar
  m <- Tm %*% mc
  V <- Tm %*% Vc %*% t(Tm)
  cf <- coef(fit)[colnames(X)]
  expect_equal(unname(cf), unname(m[, 1]), tolerance = 1e-5)
  expect_equal(unname(vcov(fit)[colnames(X), colnames(X)]), unname(V), tolerance = 1e-4)
})

test_that("the stochastic path agrees with the quadrature path", {
  set.seed(42)
  n <- 500
  d <- data.frame(x1 = stats::rnorm(n), x2 = stats::rnorm(n),
                  g = factor(sample(c("a", "b", "c"), n, TRUE)))
  d$y <- stats::rbinom(n, 1, stats::plogis(0.3 + d$x1 - 0.5 * d$x2 + (d$g == "b")))
  d$cnt <- stats::rpois(n, exp(0.5 + 0.3 * d$x1))
  d$z <- 1 + 2 * d$x1 + stats::rnorm(n)
  cases <- list(list(y ~ x1 + x2 + g, "binomial"), list(cnt ~ x1 + g, "poisson"),
                list(z ~ x1 + x2, "gaussian"))
  for (cs in cases) for (m in c("meanfield", "fullrank")) {
    q <- bbvi(cs[[1]], d, family = cs[[2]], method = m)
    expect_identical(q$path, "quadrature")
    s <- bbvi(cs[[1]], d, family = cs[[2]], method = m, estimator = "reparam", seed = 1)
    mq <- bbvi:::marginal_moments(q); ms <- bbvi:::marginal_moments(s)
    # observed differences are <= 0.03 sd and 3% (iterate-average noise)
    lab <- paste(cs[[2]], m)
    expect_lt(max(abs(ms$mean - mq$mean) / mq$sd), 0.1, label = lab)
    expect_lt(max(abs(ms$sd / mq$sd - 1)), 0.08, label = lab)
  }
  # the score estimator runs on the same compiled target (mean-field)
  q <- bbvi(y ~ x1 + x2 + g, d, family = binomial())
  s <- bbvi(y ~ x1 + x2 + g, d, family = binomial(), estimator = "score", seed = 2)
  expect_identical(s$estimator, "score")
  expect_lt(max(abs(coef(s) - coef(q)) / sqrt(diag(vcov(q)))), 0.15)
})

test_that("seeds make formula fits reproducible", {
  a <- bbvi(am ~ wt, mtcars, family = binomial(), estimator = "reparam", seed = 9)
  b <- bbvi(am ~ wt, mtcars, family = binomial(), estimator = "reparam", seed = 9)
  expect_identical(a$mean_unc, b$mean_unc)
  q1 <- bbvi(am ~ wt, mtcars, family = binomial(), seed = 1)
  expect_identical(q1$draws, bbvi(am ~ wt, mtcars, family = binomial(), seed = 1)$draws)
})

# ---- the compiled log-joint ------------------------------------------------

test_that("the compiled log-joint and gradient match R's densities", {
  set.seed(3)
  n <- 30
  d <- data.frame(x = stats::rnorm(n), f = factor(sample(letters[1:3], n, TRUE)),
                  w = stats::runif(n, 0.5, 2), o = stats::rnorm(n, sd = 0.1))
  d$yb <- stats::rbinom(n, 4, 0.4)
  d$yp <- stats::rpois(n, 2)
  d$yg <- stats::rnorm(n)
  check <- function(formula, family, prior, prior_intercept, prior_aux, lj) {
    s <- bbvi:::glm_setup(formula, d, family, prior, prior_intercept, prior_aux,
                          weights = d$w, offset = d$o)
    mod <- s$model
    D <- length(mod$par_names)
    z <- matrix(stats::rnorm(D * 3, sd = 0.3), D, 3)
    lp <- .Call(bbvi:::C_logdens, mod$target, mod$lower, mod$upper, z, TRUE)
    th <- .Call(bbvi:::C_constrain, z, mod$lower, mod$upper)
    # the Jacobian of sigma = exp(zeta) is zeta
    X <- mod$target$X
    jac <- if (D > ncol(X)) z[D, ] else 0
    expect_equal(as.numeric(lp), apply(th, 2, function(b) lj(b, X)) + jac, tolerance = 1e-10)
    num <- sapply(1:3, function(k) sapply(seq_len(D), function(j) {
      h <- 1e-5; e <- replace(numeric(D), j, h)
      (.Call(bbvi:::C_logdens, mod$target, mod$lower, mod$upper, z[, k] + e, FALSE) -
         .Call(bbvi:::C_logdens, mod$target, mod$lower, mod$upper, z[, k] - e, FALSE)) / (2 * h)
    }))
    expect_equal(attr(lp, "gradient"), num, tolerance = 1e-6)
  }
  check(cbind(yb, 4 - yb) ~ x + f, binomial(), student_t(3, 0, 2), normal(0, 5), NULL,
        function(b, M) {
          eta <- M %*% b + d$o
          sum(d$w * stats::dbinom(d$yb, 4, stats::plogis(eta), log = TRUE)) +
            stats::dnorm(b[1], 0, 5, log = TRUE) +
            sum(stats::dt(b[-1] / 2, 3, log = TRUE) - log(2))
        })
  check(yp ~ x + f, poisson(), cauchy(0, 1), NULL, NULL, function(b, M) {
    eta <- M %*% b + d$o
    sum(d$w * stats::dpois(d$yp, exp(eta), log = TRUE)) +
      sum(stats::dcauchy(b[-1], 0, 1, log = TRUE))
  })
  check(yg ~ x, gaussian(), normal(1, 2), NULL, student_t(4, 0, 3), function(b, M) {
    eta <- M %*% b[1:2] + d$o
    sum(d$w * stats::dnorm(d$yg, eta, b[3], log = TRUE)) +
      stats::dnorm(b[2], 1, 2, log = TRUE) + log(2) + stats::dt(b[3] / 3, 4, log = TRUE) - log(3)
  })
})

test_that("large linear predictors do not overflow", {
  d <- data.frame(x = c(-1, 1, -1, 1), y = c(0, 1, 1, 0))
  s <- bbvi:::glm_setup(y ~ x, d, binomial(), normal(0, 1e4), normal(0, 1e4), NULL)
  mod <- s$model
  lp <- .Call(bbvi:::C_logdens, mod$target, mod$lower, mod$upper,
              matrix(c(0, 800, 0, -800), 2), TRUE)
  expect_true(all(is.finite(lp)))
  expect_true(all(is.finite(attr(lp, "gradient"))))
  # two observations are predicted wrong by 800 on the logit scale
  expect_equal(as.numeric(lp[1]), -1600 + 2 * stats::dnorm(0, 0, 1e4, log = TRUE) -
                 800^2 / 2e8, tolerance = 1e-9)
})

# ---- data handling ------------------------------------------------------------

test_that("binomial responses come in every glm() form", {
  d <- mtcars
  d$am_l <- d$am == 1
  d$am_f <- factor(ifelse(d$am == 1, "manual", "auto"))
  a <- bbvi(am ~ wt, d, family = binomial())
  expect_equal(coef(bbvi(am_l ~ wt, d, family = "binomial")), coef(a))
  expect_equal(coef(bbvi(am_f ~ wt, d, family = binomial)), coef(a))
  expect_equal(coef(bbvi(cbind(am, 1 - am) ~ wt, d, family = binomial())), coef(a))
})

test_that("weights, offsets, subset and na.action work as in glm()", {
  d <- mtcars
  d$wt2 <- d$wt
  d$wt2[3] <- NA
  f <- bbvi(mpg ~ wt2, d)
  expect_equal(nobs(f), 31)
  expect_error(bbvi(mpg ~ wt2, d, na.action = na.fail), "missing values")
  # integer weights = repeated rows (priors as written: autoscaling uses
  # the unweighted sd(y), which repeating rows changes, as in rstanarm)
  dd <- d[c(1:10, 1:10), ]
  pr <- list(prior = normal(0, 2.5), prior_intercept = normal(0, 10),
             prior_aux = exponential(1))
  a <- do.call(bbvi, c(list(mpg ~ wt, dd, method = "fullrank"), pr))
  b <- do.call(bbvi, c(list(mpg ~ wt, d[1:10, ], weights = rep(2, 10),
                            method = "fullrank"), pr))
  expect_equal(coef(a), coef(b), tolerance = 1e-6)
  c1 <- bbvi(mpg ~ wt, d, subset = cyl == 4)
  expect_equal(nobs(c1), sum(d$cyl == 4))
  # offset in the formula and as an argument agree
  o1 <- bbvi(carb ~ wt + offset(log(gear)), d, family = poisson())
  o2 <- bbvi(carb ~ wt, d, family = poisson(), offset = log(gear))
  expect_equal(coef(o1), coef(o2))
})

test_that("bad input gives clear errors", {
  d <- mtcars
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, family = Gamma()))
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, family = "quasi_foo"))
  expect_snapshot(error = TRUE, bbvi(am ~ wt, d, family = binomial("probit")))
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, family = 3))
  expect_snapshot(error = TRUE, bbvi(gear ~ wt, d, family = binomial()))
  expect_snapshot(error = TRUE, bbvi(I(-carb) ~ wt, d, family = poisson()))
  expect_snapshot(error = TRUE, bbvi(factor(cyl) ~ wt, d))
  d$one <- 1
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt + one, d))
  d$wt_copy <- 2 * d$wt
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt + wt_copy, d))
  d$inf <- d$wt
  d$inf[2] <- Inf
  expect_snapshot(error = TRUE, bbvi(mpg ~ inf, d))
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, weights = -d$wt))
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, prior = normal(0, c(1, 2))))
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, prior = exponential(1)))
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, prior = "normal"))
  expect_snapshot(error = TRUE, bbvi(mpg ~ nothere, d))
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, method = "full"))
  expect_snapshot(error = TRUE, bbvi(mpg ~ wt, d, estimator = "score", path = "quadrature"))
})

test_that("formula defaults: full-rank up to 200 parameters, Adam on the stochastic path", {
  f <- bbvi(mpg ~ wt, mtcars, seed = 1)
  expect_identical(f$method, "fullrank")
  s <- bbvi(mpg ~ wt, mtcars, estimator = "reparam", seed = 1)
  expect_identical(s$optimizer, "adam")
  expect_identical(s$method, "fullrank")
  set.seed(1)
  n <- 300; k <- 200
  X <- matrix(stats::rnorm(n * k), n, k)
  d <- data.frame(y = stats::rnorm(n), X)
  expect_message(big <- bbvi(y ~ ., d, seed = 1), "meanfield")
  expect_identical(big$method, "meanfield")
  small <- bbvi(y ~ ., d[, 1:199], seed = 1)   # intercept + 198 + sigma = 200
  expect_identical(small$method, "fullrank")
  expect_silent(bbvi(y ~ ., d, method = "meanfield", seed = 1))
})

test_that("the compiled GLM walks rows and draws in blocks, centring on the fly", {
  # 20000 rows (three row blocks) and 70 draws (three draw blocks); the
  # design is centred in C, the intercept column implied for a matrix
  set.seed(11)
  n <- 20000
  X <- cbind(a = stats::rnorm(n, 2), b = stats::runif(n))
  y <- stats::rbinom(n, 1, stats::plogis(-0.5 + X %*% c(0.4, -1)))
  s <- bbvi:::glm_setup(y ~ a + b, data.frame(y = y, X), binomial(),
                        normal(0, 2.5), normal(0, 2.5), NULL, center = TRUE)
  tg <- s$model$target
  expect_identical(tg$X[, 2:3], X)          # stored uncentred, once
  expect_equal(tg$llconst, 0)
  Xc <- cbind(1, sweep(X, 2, colMeans(X)))
  z <- matrix(stats::rnorm(3 * 70, sd = 0.2), 3, 70)
  lp <- .Call(bbvi:::C_logdens, tg, s$model$lower, s$model$upper, z, TRUE)
  eta <- Xc %*% z
  ref <- colSums(y * eta - log1p(exp(eta))) + colSums(stats::dnorm(z, 0, 2.5, log = TRUE))
  expect_equal(as.numeric(lp), ref, tolerance = 1e-10)
  expect_equal(attr(lp, "gradient"),
               crossprod(Xc, y - stats::plogis(eta)) - z / 2.5^2,
               tolerance = 1e-8, ignore_attr = TRUE)
  # memory does not grow with the number of draws: 4000 draws through one
  # call allocate no N x S matrix (that alone would be 640 MB)
  z4 <- matrix(stats::rnorm(3 * 4000, sd = 0.2), 3, 4000)
  gc(reset = TRUE)
  before <- gc()[2, 6]
  lp4 <- .Call(bbvi:::C_logdens, tg, s$model$lower, s$model$upper, z4, FALSE)
  expect_lt(gc()[2, 6] - before, 10)      # MB of vector heap at the peak
  expect_equal(lp4[1:70], as.numeric(.Call(bbvi:::C_logdens, tg, s$model$lower,
                                            s$model$upper, z4[, 1:70], FALSE)))
})

test_that("threaded passes over the rows give the same bits as one thread", {
  # row chunks are fixed by N, not by the threads; 60 columns make the
  # passes large enough to be threaded (GLM_THREAD_WORK)
  set.seed(14)
  n <- 20000; k <- 60
  X <- matrix(stats::rnorm(n * k), n, k, dimnames = list(NULL, paste0("v", 1:k)))
  y <- stats::rbinom(n, 1, stats::plogis(X[, 1] - X[, 2]))
  s <- bbvi:::glm_setup(y ~ ., data.frame(y = y, X), binomial(), normal(0, 2.5),
                        normal(0, 2.5), NULL, center = TRUE)
  tg <- s$model$target
  tg1 <- replace(tg, "threads", list(1L))
  tg3 <- replace(tg, "threads", list(3L))
  z <- matrix(stats::rnorm((k + 1) * 40, sd = 0.05), k + 1, 40)
  expect_identical(.Call(bbvi:::C_logdens, tg1, s$model$lower, s$model$upper, z, TRUE),
                   .Call(bbvi:::C_logdens, tg3, s$model$lower, s$model$upper, z, TRUE))
  q1 <- bbvi:::glm_quad(utils::modifyList(s$model, list(target = tg1)), "fullrank", quiet = TRUE)
  q3 <- bbvi:::glm_quad(utils::modifyList(s$model, list(target = tg3)), "fullrank", quiet = TRUE)
  expect_identical(q1$mean, q3$mean)
  expect_identical(q1$chol, q3$chol)
})

test_that("a numeric matrix fits the same GLM as the formula", {
  set.seed(12)
  n <- 400
  X <- cbind(u = stats::rnorm(n), v = stats::rnorm(n))
  yb <- stats::rbinom(n, 1, stats::plogis(0.3 + X %*% c(1, -0.5)))
  d <- data.frame(yb = yb, X)
  f1 <- bbvi(yb ~ u + v, data = d, family = binomial(), seed = 1)
  f2 <- bbvi(X, yb, family = binomial(), seed = 1)
  expect_equal(coef(f2), coef(f1), tolerance = 1e-8)
  expect_equal(vcov(f2), vcov(f1), tolerance = 1e-8)
  expect_identical(f2$model$target$X, X)     # the user's matrix, not a copy
  expect_equal(predict(f2, type = "response"), predict(f1, type = "response"),
               tolerance = 1e-8, ignore_attr = TRUE)
  expect_equal(predict(f2, newdata = X[1:5, ]), unname(predict(f1, newdata = d[1:5, ])),
               tolerance = 1e-8)
  expect_output(print(f2), "numeric matrix")
  # no intercept; unnamed columns; poisson with an offset
  ym <- stats::rpois(n, exp(0.2 * X[, 1]))
  f3 <- bbvi(unname(X), ym, family = "poisson", intercept = FALSE, offset = rep(0.1, n))
  f4 <- bbvi(ym ~ 0 + u + v, data = d, family = poisson(), offset = rep(0.1, n))
  expect_named(coef(f3), c("x1", "x2"))
  expect_equal(unname(coef(f3)), unname(coef(f4)), tolerance = 1e-8)
  expect_error(bbvi(X, yb[-1], family = binomial()), "one value per row")
  expect_error(bbvi(X, yb, family = binomial(), colour = 1), "colour")
})

test_that("without an intercept, one constant column is the intercept", {
  set.seed(14)
  n <- 300
  X <- cbind(one = 1, u = stats::rnorm(n))
  y <- stats::rbinom(n, 1, stats::plogis(0.4 + X[, 2]))
  f1 <- bbvi(X, y, family = binomial(), intercept = FALSE, seed = 1)
  f2 <- bbvi(y ~ u, data = data.frame(y = y, u = X[, 2]), family = binomial(),
             seed = 1, prior_intercept = normal(0, 2.5), prior = normal(0, 2.5),
             center = FALSE)
  # the same posterior up to the intercept prior's autoscaling (a constant
  # column's sd is taken as 1): means within a small fraction of an sd
  expect_lt(max(abs(coef(f1) - coef(f2)) / sqrt(diag(vcov(f2)))), 0.05)
  expect_snapshot(bbvi(cbind(X, two = 2), y, family = binomial(), intercept = FALSE),
                  error = TRUE)
})

test_that("keep_x = FALSE keeps no model matrix; methods rebuild it or say so", {
  set.seed(13)
  d <- data.frame(x = stats::rnorm(300), g = factor(sample(c("a", "b"), 300, TRUE)))
  d$y <- stats::rbinom(300, 1, stats::plogis(d$x))
  f1 <- bbvi(y ~ x + g, data = d, family = binomial(), seed = 2)
  f0 <- bbvi(y ~ x + g, data = d, family = binomial(), seed = 2, keep_x = FALSE)
  expect_null(f0$model$target$X)
  expect_null(f0$x)
  expect_lt(as.numeric(utils::object.size(f0)), as.numeric(utils::object.size(f1)))
  expect_equal(coef(f0), coef(f1))
  expect_equal(predict(f0), predict(f1))
  set.seed(5); ll0 <- log_lik(f0, draws = 10)
  set.seed(5); ll1 <- log_lik(f1, draws = 10)
  expect_equal(ll0, ll1)
  X <- as.matrix(d[, "x", drop = FALSE])
  m0 <- bbvi(X, d$y, family = binomial(), keep_x = FALSE, seed = 1)
  expect_error(predict(m0), "keep_x = FALSE")
  expect_error(.Call(bbvi:::C_logdens, m0$model$target, m0$lower, m0$upper,
                     matrix(0, 2, 1), FALSE), "keep_x")
})

test_that("subsample = B: minibatch epochs reach the full-data answer", {
  set.seed(15)
  N <- 20000
  d <- data.frame(x1 = stats::rnorm(N), x2 = stats::rnorm(N),
                  g = factor(sample(c("a", "b", "c"), N, TRUE)))
  d$y <- stats::rbinom(N, 1, stats::plogis(-1 + d$x1 - 0.5 * d$x2 + (d$g == "b")))
  d$k <- stats::rpois(N, exp(0.2 + 0.3 * d$x1))
  for (method in c("fullrank", "meanfield")) {
    f0 <- bbvi(y ~ x1 + x2 + g, data = d, family = binomial(), method = method, seed = 1)
    f1 <- bbvi(y ~ x1 + x2 + g, data = d, family = binomial(), method = method, seed = 1,
               subsample = 1000)
    expect_true(f1$converged)
    expect_match(f1$path, "minibatches of 1,000 rows")
    # both stop when a full-data Newton step is below tol = 1e-4 sds: the
    # same fixed point to about that
    expect_same_q(f1, f0, 1e-3)
    expect_gte(f1$epochs, 2)
  }
  p0 <- bbvi(k ~ x1, data = d, family = poisson(), seed = 1)
  p1 <- bbvi(k ~ x1, data = d, family = poisson(), seed = 1, subsample = 3000)
  expect_lt(max(abs(coef(p1) - coef(p0)) / sqrt(diag(vcov(p0)))), 1e-3)
  expect_output(print(p1), "epochs")
  # the block order comes from the seed
  p2 <- bbvi(k ~ x1, data = d, family = poisson(), seed = 1, subsample = 3000)
  expect_identical(coef(p2), coef(p1))
  # the matrix interface takes it too
  X <- model.matrix(~ x1 + x2, d)[, -1]
  m1 <- bbvi(X, d$y, family = binomial(), subsample = 2500, seed = 2)
  m0 <- bbvi(X, d$y, family = binomial(), seed = 2)
  expect_lt(max(abs(coef(m1) - coef(m0)) / sqrt(diag(vcov(m0)))), 1e-3)
  expect_snapshot(bbvi(y ~ x1, data = d, family = binomial(), subsample = 5), error = TRUE)
  expect_snapshot(bbvi(y ~ x1, data = d, family = binomial(), subsample = 500,
                       estimator = "reparam"), error = TRUE)
  expect_message(g <- bbvi(x2 ~ x1, data = d, subsample = 5000), "needs no minibatches")
  expect_identical(g$path, "quadrature")
})
