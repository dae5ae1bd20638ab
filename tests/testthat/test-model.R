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
  # a symbol or a call is a value like any other, not evaluated by the checks
  for (v in list(quote(x), quote(f(x)))) {
    odd <- bbvi_model(function(theta, data) v, list(a = param()))
    expect_error(bbvi(odd, seed = 1), "returned a (symbol|language)", class = "rlang_error")
    odd_gr <- bbvi_model(function(theta, data) 0, list(a = param()), gradient = function(theta, data) v)
    expect_error(bbvi(odd_gr, seed = 1), class = "rlang_error")
  }
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

# C reads what the user's functions return in one of two ways: a plain
# shape as it is, anything else through the R checks (R/model.R,
# r_target_spec()). callback_paths() evaluates the model's log density
# (and gradient) at the columns of Z both ways: `fast` with the spec as
# fits use it, `slow` with a spec without the plain-shape entries, where C
# calls the checked wrappers fn/gr for every result; `checked` counts the
# calls of the R checks on the fast path.
callback_paths <- function(model, Z, grad = TRUE) {
  spec <- bbvi:::r_target_spec(model)
  checks <- new.env()
  checks$n <- 0
  for (nm in c("fn_value_call", "gr_value_call")) {
    if (is.null(spec[[nm]])) next
    local({
      f <- spec[[nm]][[1]]
      spec[[nm]][[1]] <<- function(x, n) {
        checks$n <- checks$n + 1
        f(x, n)
      }
    })
  }
  plain_entries <- c("lj_call", "fn_value_call", "gr_user_call", "gr_value_call",
                     "caught", "lj_rethrow_call", "gr_rethrow_call")
  slow <- spec[setdiff(names(spec), plain_entries)]
  ld <- function(s) .Call(bbvi:::C_logdens, s, as.double(model$lower),
                          as.double(model$upper), Z, grad)
  fast <- ld(spec)
  list(fast = fast, slow = ld(slow), checked = checks$n)
}

test_that("every gradient shape gives the same values read as it is or through the R checks", {
  # a = exp(zeta), z (3), b: log p and its gradient for n draws (rows)
  lp_of <- function(th) {
    z <- matrix(th$z, ncol = 3)
    -(th$a - 1)^2 / 2 - rowSums(z^2) / 2 - th$b^2 / 2 + th$a * th$b
  }
  G_of <- function(th) cbind(-(th$a - 1) + th$b, -matrix(th$z, ncol = 3), -th$b + th$a)
  pars <- list(a = param(lower = 0), z = param(dim = 3), b = param())
  pn <- c("a", "z[1]", "z[2]", "z[3]", "b")
  as_list <- function(G) list(a = G[, 1], z = G[, 2:4], b = G[, 5])
  perm <- c(5, 3, 1, 4, 2)
  shapes <- list(
    list_in_order = function(G) as_list(G),
    list_unnamed = function(G) unname(as_list(G)),
    list_other_order = function(G) as_list(G)[c("b", "a", "z")],
    list_integer = function(G) lapply(as_list(round(G)), function(x) {
      storage.mode(x) <- "integer"
      x
    }),
    flat = function(G) as.vector(G),
    flat_integer = function(G) as.integer(round(G)),
    matrix = function(G) G,
    matrix_colnames = function(G) `colnames<-`(G, pn),
    matrix_colnames_other_order = function(G) `colnames<-`(G, pn)[, perm, drop = FALSE],
    # one draw: scalar names, in another order; several: names that are not
    # read (a flat vector of S x D numbers)
    named_flat = function(G) {
      if (nrow(G) == 1) stats::setNames(G[1, perm], pn[perm]) else
        stats::setNames(as.vector(G), seq_along(G))
    }
  )
  # read in C (names in any order); the R checks for integers
  plain <- setdiff(names(shapes), c("list_integer", "flat_integer"))
  set.seed(3)
  for (vectorized in c(TRUE, FALSE)) for (S in c(1, 4)) for (nm in names(shapes)) {
    for (with_lp in c(FALSE, TRUE)) {
      calls <- new.env()
      calls$lj <- 0
      gradient <- function(theta, data) {
        g <- shapes[[nm]](G_of(theta))
        if (with_lp) attr(g, "logjoint") <- lp_of(theta)
        g
      }
      m <- bbvi_model(function(theta, data) {
        calls$lj <- calls$lj + 1
        lp_of(theta)
      }, pars, gradient = gradient, vectorized = vectorized)
      Z <- matrix(rnorm(5 * S), 5, S)
      res <- callback_paths(m, Z)
      info <- sprintf("%s, vectorized %s, S = %d, attribute %s", nm, vectorized, S, with_lp)
      expect_identical(res$fast, res$slow, info = info)
      expect_identical(res$checked == 0, nm %in% plain, info = info)
      # the attribute spares the log-joint calls on both paths
      expect_identical(calls$lj == 0, with_lp, info = info)
      # and the values are the model's: the chain rule through a = exp(zeta)
      th <- list(a = exp(Z[1, ]), z = t(Z[2:4, , drop = FALSE]), b = Z[5, ])
      want_g <- t(G_of(th))
      want_g[1, ] <- want_g[1, ] * th$a + 1
      if (!grepl("integer", nm)) {
        expect_equal(attr(res$fast, "gradient"), want_g, tolerance = 1e-12, info = info)
      }
      expect_equal(as.double(res$fast), lp_of(th) + Z[1, ], tolerance = 1e-12, info = info)
    }
  }
})

test_that("names C leaves to the R checks give the same values there", {
  set.seed(6)
  # many scalar names in another order: matched in R, not searched in C
  D <- 70
  pn <- sprintf("b[%d]", seq_len(D))
  lj <- function(theta, data) -sum(theta$b^2) / 2
  for (rev_order in c(FALSE, TRUE)) {
    m <- bbvi_model(lj, list(b = param(dim = D)), gradient = function(theta, data) {
      g <- stats::setNames(-theta$b, pn)
      if (rev_order) rev(g) else g
    })
    z <- matrix(rnorm(D), D, 1)
    res <- callback_paths(m, z)
    expect_identical(res$fast, res$slow)
    expect_identical(attr(res$fast, "gradient"), -z)
    expect_identical(res$checked > 0, rev_order)
  }
  # a name equal to a parameter's in another encoding: not the same cached
  # string, matched in R
  e_utf8 <- "\u00e9ta"
  e_latin1 <- iconv(e_utf8, "UTF-8", "latin1")
  skip_if(is.na(e_latin1) || Encoding(e_latin1) != "latin1")
  pars <- stats::setNames(list(param(), param()), c("a", e_utf8))
  m <- bbvi_model(function(theta, data) -(theta[[1]]^2 + theta[[2]]^2) / 2, pars,
                  gradient = function(theta, data) {
                    stats::setNames(list(-theta[[1]], -theta[[2]]), c("a", e_latin1))
                  })
  res <- callback_paths(m, matrix(c(0.3, -0.7), 2, 1))
  expect_identical(res$fast, res$slow)
  expect_identical(as.vector(attr(res$fast, "gradient")), c(-0.3, 0.7))
  expect_gt(res$checked, 0)
})

test_that("a discrete parameter left out of the gradient reads as a zero gradient", {
  pars <- list(a = param(), k = param(lower = 0, upper = 2, integer = TRUE), z = param(dim = 2))
  lj <- function(theta, data) -theta$a^2 / 2 - rowSums(matrix(theta$z, ncol = 2)^2) / 2 + 0.1 * theta$k
  full <- function(theta, data) list(a = -theta$a, k = 0 * theta$k, z = -theta$z)
  shapes <- list(
    full = full,
    named = function(theta, data) full(theta, data)[c("z", "a")],
    unnamed = function(theta, data) unname(full(theta, data)[c("a", "z")]))
  set.seed(4)
  for (vectorized in c(TRUE, FALSE)) {
    S <- if (vectorized) 3 else 1
    Z <- rbind(rnorm(S), rnorm(S), rnorm(S), rnorm(S))
    res <- lapply(shapes, function(gr) {
      callback_paths(bbvi_model(lj, pars, gradient = gr, vectorized = vectorized), Z)
    })
    for (nm in names(res)) expect_identical(res[[nm]]$fast, res[[nm]]$slow, info = nm)
    expect_identical(res$named$fast, res$full$fast)
    expect_identical(res$unnamed$fast, res$full$fast)
    expect_identical(vapply(res, `[[`, numeric(1), "checked") == 0,
                     c(full = TRUE, named = FALSE, unnamed = FALSE))
  }
})

test_that("log-joint values read as they are or through the R checks are the same", {
  pars <- list(mu = param(), s = param(lower = 0))
  y <- c(0.5, 1.5, -0.2)
  one <- function(mu, s) sum(dnorm(y, mu, s, log = TRUE))
  vals <- function(theta) mapply(one, theta$mu, theta$s)
  prior <- function(theta) dnorm(theta$mu, 0, 3, log = TRUE) + dexp(theta$s, log = TRUE)
  set.seed(5)
  Z <- matrix(rnorm(2 * 4), 2, 4)
  Z[1, 2] <- 300   # a draw where the log-joint is -Inf (s = exp(300) = Inf)
  Z[2, 2] <- 800
  cases <- list(
    plain = list(fn = function(theta, data) vals(theta) + prior(theta), plain = TRUE),
    named = list(fn = function(theta, data) stats::setNames(vals(theta) + prior(theta), seq_along(theta$mu)), plain = TRUE),
    integer = list(fn = function(theta, data) {
      suppressWarnings(as.integer(round(vals(theta) + prior(theta))))   # -Inf: NA
    }, plain = FALSE),
    all_na = list(fn = function(theta, data) rep(NA, length(theta$mu)), plain = FALSE))
  for (vectorized in c(TRUE, FALSE)) for (nm in names(cases)) {
    m <- bbvi_model(cases[[nm]]$fn, pars, vectorized = vectorized)
    res <- callback_paths(m, Z, grad = FALSE)
    expect_identical(res$fast, res$slow, info = nm)
    expect_identical(res$checked == 0, cases[[nm]]$plain, info = nm)
  }
  # factors: an unnamed S x F matrix (or F numbers per draw) is plain,
  # names in another order go through the R checks
  fac <- list(lik = c("mu", "s"), prior = c("mu", "s"))
  fcases <- list(
    plain = function(theta, data) {
      v <- cbind(vals(theta), prior(theta))
      if (length(theta$mu) == 1) as.vector(v) else v
    },
    named = function(theta, data) {
      v <- cbind(prior = prior(theta), lik = vals(theta))
      if (length(theta$mu) == 1) v[1, ] else v
    })
  for (vectorized in c(TRUE, FALSE)) {
    res <- lapply(fcases, function(f) {
      callback_paths(bbvi_model(f, pars, vectorized = vectorized, factors = fac), Z, grad = FALSE)
    })
    expect_identical(res$plain$fast, res$plain$slow)
    expect_identical(res$named$fast, res$named$slow)
    expect_identical(res$plain$fast, res$named$fast)
    expect_identical(c(res$plain$checked, res$named$checked) == 0, c(TRUE, FALSE))
  }
})

test_that("malformed callback results give the same errors on both paths", {
  pars <- list(a = param(), z = param(dim = 2))
  ok_lj <- function(theta, data) -theta$a^2 / 2
  ok_gr <- function(theta, data) list(a = -theta$a, z = 0 * theta$z)
  bad <- list(
    lj_inf = list(lj = function(theta, data) rep(Inf, length(theta$a))),
    lj_short = list(lj = function(theta, data) 0[0]),
    lj_char = list(lj = function(theta, data) rep("a", length(theta$a))),
    lj_stop = list(lj = function(theta, data) stop("broken data")),
    gr_stop = list(gr = function(theta, data) stop("no gradient")),
    gr_short = list(gr = function(theta, data) list(a = -theta$a)),
    gr_long_flat = list(gr = function(theta, data) rep(0, 7 * length(theta$a))),
    gr_bad_names = list(gr = function(theta, data) list(a = -theta$a, zz = theta$z)),
    gr_char = list(gr = function(theta, data) list(a = "x", z = theta$z)),
    gr_lp_inf = list(gr = function(theta, data) structure(ok_gr(theta, data), logjoint = rep(Inf, length(theta$a)))),
    gr_lp_short = list(gr = function(theta, data) structure(ok_gr(theta, data), logjoint = numeric(0))))
  Z <- matrix(c(0.1, 0.2, 0.3, -0.4, 0.5, 0.6), 3, 2)
  for (vectorized in c(TRUE, FALSE)) for (nm in names(bad)) {
    b <- bad[[nm]]
    m <- bbvi_model(if (is.null(b$lj)) ok_lj else b$lj, pars,
                    gradient = if (is.null(b$gr)) ok_gr else b$gr, vectorized = vectorized)
    spec <- bbvi:::r_target_spec(m, err_call = call("bbvi"))
    slow <- spec[c("type", "fn_call", "gr_call", "vectorized", "sizes", "names", "rho", "layout")]
    run <- function(s) {
      tryCatch(.Call(bbvi:::C_logdens, s, m$lower, m$upper, Z, TRUE), error = identity)
    }
    ef <- run(spec)
    es <- run(slow)
    info <- sprintf("%s, vectorized %s", nm, vectorized)
    expect_s3_class(ef, "rlang_error")
    expect_identical(class(ef), class(es), info = info)
    expect_identical(conditionMessage(ef), conditionMessage(es), info = info)
    expect_identical(ef$call, es$call, info = info)
    expect_null(ef$parent)
  }
})

test_that("errors the user's function handles itself, and its warnings, pass through", {
  warned <- 0
  m <- bbvi_model(function(theta, data) {
    v <- tryCatch(stop("handled"), error = function(e) dnorm(theta$mu, 1, 2, log = TRUE))
    warning("a warning from the log-joint")
    v
  }, list(mu = param()), gradient = function(theta, data) {
    tryCatch(stop("handled"), error = function(e) list(mu = -(theta$mu - 1) / 4))
  })
  fit <- withCallingHandlers(bbvi(m, seed = 1), warning = function(w) {
    if (grepl("a warning from the log-joint", conditionMessage(w))) {
      warned <<- warned + 1
      invokeRestart("muffleWarning")
    }
  })
  expect_gt(warned, 0)
  expect_lt(abs(coef(fit)[["mu"]] - 1) / 2, 0.05)
})

test_that("gradient = \"numeric\" is validated where it cannot work", {
  lj <- function(theta, data) -theta$a^2 / 2
  expect_snapshot(error = TRUE, bbvi_model(lj, list(a = param()), gradient = "numerical"))
  expect_snapshot(error = TRUE, bbvi_model(function(theta, data) c(f = -theta$a^2 / 2),
                                           list(a = param()), gradient = "numeric",
                                           factors = list(f = "a")))
  expect_snapshot(error = TRUE, bbvi_model(function(theta, data) 0,
                                           list(a = param(), k = param(lower = 0, upper = 3, integer = TRUE)),
                                           gradient = "numeric"))
  expect_snapshot(error = TRUE, bbvi_model(native_logjoint("bbvi:mvnormal", has_gradient = TRUE,
                                                           data = list(mean = 0, precision = matrix(1))),
                                           list(a = param()), gradient = "numeric"))
  expect_snapshot(error = TRUE, bbvi_model(loglik = function(theta, data, idx) 0,
                                           logprior = function(theta) 0, n = 3,
                                           parameters = list(a = param()), gradient = "numeric"))
  m <- bbvi_model(lj, list(a = param()), gradient = "numeric")
  expect_true(m$has_gradient)
  expect_null(m$gradient)
  expect_output(print(m), "numeric gradient")
  expect_snapshot(error = TRUE, check_gradient(m))
})

test_that("numeric gradients agree with the exact ones through every transform", {
  exact <- transforms_model("exact")
  num <- transforms_model("numeric")
  set.seed(3)
  D <- length(exact$par_names) - 1   # the simplex loses a coordinate
  Z <- matrix(rnorm(D * 7, sd = 0.7), D, 7)
  run <- function(m) .Call(bbvi:::C_logdens, bbvi:::r_target_spec(m), as.double(m$lower),
                           as.double(m$upper), Z, TRUE)
  a <- run(exact); b <- run(num)
  expect_equal(as.double(b), as.double(a))
  # central differences with steps 1e-4: errors of order 1e-8 here
  ga <- attr(a, "gradient"); gb <- attr(b, "gradient")
  expect_lt(max(abs(gb - ga) / pmax(1, abs(ga))), 1e-6)
  # the same from a log-joint called once per point
  g1 <- attr(run(transforms_model("numeric", vectorized = FALSE)), "gradient")
  expect_lt(max(abs(g1 - ga) / pmax(1, abs(ga))), 1e-6)
})

test_that("numeric gradients of many coordinates come in batches, and one-sided at an edge", {
  D <- 1500L   # (2D + 1) D doubles exceed a batch: one draw per target call
  calls <- 0
  m <- bbvi_model(function(theta, data) {
    calls <<- calls + 1
    -rowSums((theta$x - 1)^2) / 2
  }, list(x = param(dim = D)), vectorized = TRUE, gradient = "numeric")
  set.seed(1)
  Z <- matrix(rnorm(D * 3), D, 3)
  lp <- .Call(bbvi:::C_logdens, bbvi:::r_target_spec(m), m$lower, m$upper, Z, TRUE)
  expect_equal(calls, 3)
  expect_equal(attr(lp, "gradient"), 1 - Z, tolerance = 1e-7)
  # log p = -Inf beyond x = 1, written in the log-joint: a point just
  # inside gets the difference from its inner side
  edge <- bbvi_model(function(theta, data) ifelse(theta$x < 1, -theta$x^2 / 2, -Inf),
                     list(x = param()), vectorized = TRUE, gradient = "numeric")
  z <- c(1 - 5e-5, 0.5, 2)
  lp <- .Call(bbvi:::C_logdens, bbvi:::r_target_spec(edge), -Inf, Inf, matrix(z, 1), TRUE)
  g <- attr(lp, "gradient")
  expect_equal(g[1:2], -z[1:2], tolerance = 1e-3)
  expect_true(is.nan(g[3]))
})
