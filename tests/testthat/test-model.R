test_that("param() validates its arguments", {
  expect_snapshot(error = TRUE, param(dim = 0))
  expect_snapshot(error = TRUE, param(dim = 1.5))
  expect_snapshot(error = TRUE, param(lower = 1, upper = 1))
  expect_snapshot(error = TRUE, param(dim = 2, lower = c(0, 5), upper = c(1, 2)))
  expect_snapshot(error = TRUE, param(dim = 2, lower = c(0, 0, 0)))
  expect_snapshot(error = TRUE, param(lower = NA))
  expect_snapshot(error = TRUE, param(lower = Inf))
  p <- param(dim = 3, lower = 0)
  expect_equal(p$lower, c(0, 0, 0))
  expect_equal(p$upper, rep(Inf, 3))
  expect_output(print(p), "dim 3")
})

test_that("bbvi_model() validates its arguments", {
  expect_snapshot(error = TRUE, bbvi_model("not a function", list(a = param())))
  expect_snapshot(error = TRUE, bbvi_model(function(theta, data) 0, list(param())))
  expect_snapshot(error = TRUE, bbvi_model(function(theta, data) 0, list(a = 1)))
  expect_snapshot(error = TRUE, bbvi_model(function(theta, data) 0, list(a = param()),
                                           gradient = 3))
  expect_snapshot(error = TRUE, bbvi_model(function(theta, data) 0, list(a = param()),
                                           vectorized = NA))
  m <- bbvi_model(function(theta, data) 0, list(a = param(), b = param(dim = 2, lower = 0)))
  expect_equal(m$par_names, c("a", "b[1]", "b[2]"))
  expect_output(print(m), "3 scalar parameter")
})

test_that("a log-joint of the wrong type or length is a clear error", {
  wrong_len <- bbvi_model(function(theta, data) c(1, 2), list(a = param()))
  expect_snapshot(error = TRUE, bbvi(wrong_len, seed = 1))
  wrong_type <- bbvi_model(function(theta, data) "a", list(a = param()))
  expect_snapshot(error = TRUE, bbvi(wrong_type, seed = 1))
  wrong_vec <- bbvi_model(function(theta, data) 1, list(a = param()), vectorized = TRUE)
  expect_snapshot(error = TRUE, bbvi(wrong_vec, seed = 1))
  plus_inf <- bbvi_model(function(theta, data) Inf, list(a = param()))
  expect_snapshot(error = TRUE, bbvi(plus_inf, seed = 1))
})

test_that("an error inside the log-joint surfaces and names it", {
  m <- bbvi_model(function(theta, data) stop("data are broken"), list(a = param()))
  expect_snapshot(error = TRUE, bbvi(m, seed = 1))
  g <- bbvi_model(function(theta, data) 0, list(a = param()),
                  gradient = function(theta, data) stop("no gradient today"))
  expect_snapshot(error = TRUE, bbvi(g, seed = 1))
})

test_that("NA at every draw is a clear error, not a hang", {
  m <- bbvi_model(function(theta, data) NA_real_, list(a = param()))
  expect_snapshot(error = TRUE, bbvi(m, seed = 1))
  m2 <- bbvi_model(function(theta, data) -Inf, list(a = param()),
                   gradient = function(theta, data) 0)
  expect_snapshot(error = TRUE, bbvi(m2, seed = 1))
})

test_that("gradients of the wrong shape are clear errors", {
  m <- bbvi_model(function(theta, data) 0, list(a = param(dim = 2)),
                  gradient = function(theta, data) 1)
  expect_snapshot(error = TRUE, bbvi(m, seed = 1))
  m2 <- bbvi_model(function(theta, data) 0, list(a = param(dim = 2)),
                   gradient = function(theta, data) list(a = 1:3))
  expect_snapshot(error = TRUE, bbvi(m2, seed = 1))
})

test_that("bbvi() checks its tuning arguments", {
  case <- normal_mean_case()
  m <- case$model
  expect_snapshot(error = TRUE, bbvi(m, method = "diag"))
  expect_snapshot(error = TRUE, bbvi(m, samples = 0))
  expect_snapshot(error = TRUE, bbvi(m, max_iter = -1))
  expect_snapshot(error = TRUE, bbvi(m, tol = -1))
  expect_snapshot(error = TRUE, bbvi(m, seed = "a"))
  expect_snapshot(error = TRUE, bbvi(m, init = list(mu = 1:2)))
  expect_snapshot(error = TRUE, bbvi(m, bogus = 1))
  expect_snapshot(error = TRUE, bbvi(42))
  nog <- bbvi_model(m$logjoint, m$parameters, data = case$y)
  expect_snapshot(error = TRUE, bbvi(nog, estimator = "reparam"))
})

test_that("init on the constrained scale is used", {
  m <- beta_binomial_case()$model
  expect_snapshot(error = TRUE, bbvi(m, init = list(p = 1.5)))
  fit <- suppressWarnings(bbvi(m, init = list(p = 0.4), seed = 1))
  expect_s3_class(fit, "bbvi_fit")
})

test_that("native_logjoint() validates its arguments", {
  expect_snapshot(error = TRUE, native_logjoint("no_such_symbol_anywhere"))
  expect_snapshot(error = TRUE, native_logjoint(3))
  expect_snapshot(error = TRUE, native_logjoint("bbvi:mvnormal", has_gradient = "yes"))
  lj <- native_logjoint("bbvi:mvnormal", data = list(0, matrix(1)))
  expect_output(print(lj), "mvnormal")
  expect_snapshot(error = TRUE, bbvi_model(lj, list(a = param()), gradient = function(t, d) 0))
  # without has_gradient only the score estimator is available
  m <- bbvi_model(lj, list(a = param()))
  expect_false(m$has_gradient)
})

test_that("a user's own compiled log-joint is found by name and used", {
  # the path a user takes: write C, R CMD SHLIB, dyn.load, native_logjoint()
  dir <- tempfile("bbvi-native-")
  dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  src <- file.path(dir, "lj.c")
  writeLines(c(
    "#include <Rinternals.h>",
    "/* N(m, 1) for each coordinate; data = the vector m */",
    "double bbvi_test_lj(int dim, const double *theta, double *grad, void *data) {",
    "  const double *m = REAL((SEXP) data);",
    "  double lp = 0;",
    "  for (int i = 0; i < dim; i++) {",
    "    lp -= 0.5 * (theta[i] - m[i]) * (theta[i] - m[i]);",
    "    if (grad) grad[i] = m[i] - theta[i];",
    "  }",
    "  return lp;",
    "}"), src)
  r <- file.path(R.home("bin"), "R")
  out <- system2(r, c("CMD", "SHLIB", shQuote(src)), stdout = TRUE, stderr = TRUE)
  so <- file.path(dir, paste0("lj", .Platform$dynlib.ext))
  expect_true(file.exists(so), info = paste(out, collapse = "\n"))
  dll <- dyn.load(so)
  on.exit(dyn.unload(so), add = TRUE, after = FALSE)
  lj <- native_logjoint("bbvi_test_lj", data = c(1, -2), has_gradient = TRUE)
  m <- bbvi_model(lj, list(z = param(dim = 2)))
  fit <- bbvi(m, seed = 1)
  expect_equal(unname(coef(fit)), c(1, -2), tolerance = 0.05)
  expect_equal(unname(sqrt(diag(vcov(fit)))), c(1, 1), tolerance = 0.05)
  fit_s <- bbvi(bbvi_model(native_logjoint("bbvi_test_lj", data = c(1, -2)),
                           list(z = param(dim = 2))), seed = 1)
  expect_equal(fit_s$estimator, "score")
  expect_equal(unname(coef(fit_s)), c(1, -2), tolerance = 0.05)
})

test_that("a named gradient is matched by name; wrong names are an error naming them", {
  y <- c(1, 2, 4)
  lj <- function(theta, data) sum(dnorm(data, theta$mu, theta$s, log = TRUE))
  gmu <- function(theta, data) sum(data - theta$mu) / theta$s^2
  gs <- function(theta, data) sum((data - theta$mu)^2) / theta$s^3 - length(data) / theta$s
  pars <- list(mu = param(), s = param(lower = 0))
  spec_grad <- function(gradient, at = list(mu = 0.5, s = 2)) {
    m <- bbvi_model(lj, pars, data = y, gradient = gradient)
    spec <- bbvi:::r_target_spec(m, err_call = call("bbvi"))
    spec$gr_call[[1]](at)
  }
  want <- cbind(gmu(list(mu = 0.5, s = 2), y), gs(list(mu = 0.5, s = 2), y))
  # named list and named vector in another order: reordered
  expect_equal(spec_grad(function(theta, data) list(s = gs(theta, data), mu = gmu(theta, data))), want)
  expect_equal(spec_grad(function(theta, data) c(s = gs(theta, data), mu = gmu(theta, data))), want)
  # unnamed: the order of `parameters`
  expect_equal(spec_grad(function(theta, data) c(gmu(theta, data), gs(theta, data))), want)
  expect_equal(spec_grad(function(theta, data) list(gmu(theta, data), gs(theta, data))), want)
  # names that do not match: errors that name them
  expect_snapshot(error = TRUE, spec_grad(function(theta, data) list(mu = 1, sigma = 1)))
  expect_snapshot(error = TRUE, spec_grad(function(theta, data) c(mu = 1, sigma = 1)))
  expect_snapshot(error = TRUE, spec_grad(function(theta, data) list(mu = 1, mu = 1)))
  # vector parameters: a named vector carries the scalar names
  m <- bbvi_model(function(theta, data) -0.5 * sum(theta$b^2) - 0.5 * theta$a^2,
                  list(a = param(), b = param(dim = 2)),
                  gradient = function(theta, data) c(`b[2]` = -theta$b[2], a = -theta$a, `b[1]` = -theta$b[1]))
  spec <- bbvi:::r_target_spec(m, err_call = call("bbvi"))
  expect_equal(spec$gr_call[[1]](list(a = 1, b = c(2, 3))), cbind(-1, -2, -3))
  m$gradient <- function(theta, data) c(a = -theta$a, b = -theta$b)   # names a, b1, b2
  spec <- bbvi:::r_target_spec(m, err_call = call("bbvi"))
  expect_snapshot(error = TRUE, spec$gr_call[[1]](list(a = 1, b = c(2, 3))))
})

test_that("a vectorized log-joint must give one value per draw", {
  y <- c(0.3, -1.2, 0.8, 2.1, 0.4)
  # one number for S draws
  one <- bbvi_model(function(theta, data) sum(dnorm(data, theta$mu, 1, log = TRUE)),
                    list(mu = param()), data = y, vectorized = TRUE)
  expect_snapshot(error = TRUE, bbvi(one, seed = 1))
  # S numbers, but a sum over the data recycled across the draws: used to
  # fit silently (the likelihood term was the same for every draw)
  mixed <- bbvi_model(function(theta, data) sum(dnorm(data, theta$mu, 1, log = TRUE)) +
                        dnorm(theta$mu, 0, 10, log = TRUE),
                      list(mu = param()), data = y, vectorized = TRUE)
  expect_error(bbvi(mixed, seed = 1), "depends on that draw only")
  expect_error(sample_mcmc(mixed, method = "rwm", seed = 1, chains = 1, iter = 100),
               "depends on that draw only")
  # the correct version is accepted
  good <- bbvi_model(function(theta, data) {
    vapply(theta$mu, function(mu) sum(dnorm(data, mu, 1, log = TRUE)), numeric(1)) +
      dnorm(theta$mu, 0, 10, log = TRUE)
  }, list(mu = param()), data = y, vectorized = TRUE)
  fit <- bbvi(good, seed = 1)
  prec <- 1 / 100 + length(y)
  expect_lt(abs(coef(fit)[["mu"]] - sum(y) / prec) * sqrt(prec), 0.1)
})

test_that("a scalar parameter named like an element of a vector parameter is an error", {
  expect_snapshot(error = TRUE,
                  bbvi_model(function(theta, data) 0,
                             list(beta = param(dim = 2), `beta[1]` = param())))
  expect_snapshot(error = TRUE,
                  bbvi_model(function(theta, data) 0,
                             list(`b[2]` = param(), b = param(dim = 3))))
  # `beta[3]` next to a beta of length 2 is distinct
  m <- bbvi_model(function(theta, data) 0, list(beta = param(dim = 2), `beta[3]` = param()))
  expect_equal(m$par_names, c("beta[1]", "beta[2]", "beta[3]"))
})

test_that("a gradient that returns log p too spares the log-joint calls and gives the same fit", {
  # a correlated 2-D Gaussian posterior (known exactly), vectorized
  Lam <- matrix(c(2, 0.9, 0.9, 1), 2)
  lp_fun <- function(th) -0.5 * (Lam[1, 1] * th$a^2 + 2 * Lam[1, 2] * th$a * th$b + Lam[2, 2] * th$b^2)
  calls <- new.env()
  lj <- function(theta, data) {
    calls$lj <- calls$lj + 1
    lp_fun(theta)
  }
  gr <- function(theta, data) {
    calls$gr <- calls$gr + 1
    list(a = -(Lam[1, 1] * theta$a + Lam[1, 2] * theta$b),
         b = -(Lam[1, 2] * theta$a + Lam[2, 2] * theta$b))
  }
  gr_lp <- function(theta, data) structure(gr(theta, data), logjoint = lp_fun(theta))
  pars <- list(a = param(), b = param())
  fit_counted <- function(gradient, seed) {
    m <- bbvi_model(lj, pars, gradient = gradient, vectorized = TRUE)
    calls$lj <- calls$gr <- 0
    fit <- bbvi(m, method = "fullrank", seed = seed)
    list(fit = fit, lj = calls$lj, gr = calls$gr)
  }
  for (seed in 1:2) {
    plain <- fit_counted(gr, seed)
    both <- fit_counted(gr_lp, seed)
    # the same numbers reach the optimiser: the same fit
    expect_equal(coef(both$fit), coef(plain$fit), tolerance = 1e-12)
    expect_equal(vcov(both$fit), vcov(plain$fit), tolerance = 1e-12)
    expect_equal(unname(vcov(both$fit)), solve(Lam), tolerance = 0.05)
    expect_equal(both$gr, plain$gr)
    # every gradient call of the fit (all but the one of the check before
    # it) spared a log-joint call
    expect_gte(plain$lj - both$lj, both$gr - 1)
    expect_gt(both$gr, 5)
  }
})

test_that("a gradient's log p attribute is checked against the log-joint", {
  lj <- function(theta, data) dnorm(theta$mu, 1, 2, log = TRUE)
  gr <- function(theta, data) list(mu = -(theta$mu - 1) / 4)
  pars <- list(mu = param())
  # constants dropped in the attribute: a different log density
  off <- bbvi_model(lj, pars, gradient = function(theta, data) {
    structure(gr(theta, data), logjoint = -(theta$mu - 1)^2 / 8)
  }, vectorized = TRUE)
  expect_snapshot(error = TRUE, bbvi(off, seed = 1))
  expect_error(check_gradient(off), "disagrees with")
  # one value where S are due
  short <- bbvi_model(lj, pars, gradient = function(theta, data) {
    structure(gr(theta, data), logjoint = 0)
  }, vectorized = TRUE)
  expect_error(bbvi(short, seed = 1), "logjoint\" attribute")
  # per-draw (not vectorized) models may give it too
  one <- bbvi_model(lj, pars, gradient = function(theta, data) {
    structure(gr(theta, data), logjoint = lj(theta, data))
  })
  fit <- bbvi(one, seed = 1)
  expect_lt(abs(coef(fit)[["mu"]] - 1) / 2, 0.05)
  expect_equal(sqrt(vcov(fit)[1, 1]), 2, tolerance = 0.05)
})
