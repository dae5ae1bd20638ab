fit_pois <- function() {
  set.seed(8)
  d <- data.frame(x = stats::rnorm(200), g = factor(sample(c("lo", "mid", "hi"), 200, TRUE)),
                  expo = stats::runif(200, 1, 3))
  d$y <- stats::rpois(200, d$expo * exp(0.2 + 0.4 * d$x + (d$g == "hi")))
  list(d = d, fit = bbvi(y ~ x + g + offset(log(expo)), d, family = poisson(),
                         method = "fullrank", seed = 1))
}

test_that("predict() handles links, responses, factors and offsets", {
  p <- fit_pois()
  fit <- p$fit; d <- p$d
  X <- stats::model.matrix(~ x + g, d)
  beta <- coef(fit)[colnames(X)]
  expect_equal(unname(predict(fit)), unname(drop(X %*% beta) + log(d$expo)))
  # newdata with only some factor levels, in another order
  nd <- data.frame(x = c(0, 1), g = factor(c("mid", "hi"), levels = c("mid", "hi")),
                   expo = c(1, 2))
  Xn <- rbind(c(1, 0, 0, 1), c(1, 1, 0, 0))   # columns (Intercept), x, glo, gmid
  expect_equal(colnames(X), c("(Intercept)", "x", "glo", "gmid"))
  eta <- drop(Xn %*% beta) + log(nd$expo)
  expect_equal(unname(predict(fit, nd)), eta)
  # E exp(eta) under q: exp(m + v / 2), checked against the draws
  r <- predict(fit, nd, type = "response")
  dr <- as.matrix(fit)[, colnames(X)] %*% t(Xn)
  mc <- colMeans(exp(sweep(dr, 2, log(nd$expo), "+")))
  expect_equal(unname(r), unname(mc), tolerance = 0.01)
  expect_snapshot(error = TRUE, predict(fit, data.frame(x = 0, g = "nope", expo = 1)))
  expect_snapshot(error = TRUE, predict(fit, nd, type = "mean"))
})

test_that("binomial responses are posterior mean probabilities", {
  fit <- bbvi(am ~ wt, mtcars, family = binomial(), method = "fullrank", seed = 1)
  r <- predict(fit, type = "response")
  mc <- colMeans(stats::plogis(as.matrix(fit) %*% t(stats::model.matrix(~ wt, mtcars))))
  expect_equal(unname(r), unname(mc), tolerance = 0.01)
  expect_equal(fitted(fit), r)
  expect_true(all(r > 0 & r < 1))
})

test_that("posterior_predict() simulates responses of the right kind", {
  p <- fit_pois()
  set.seed(2)
  yrep <- posterior_predict(p$fit, draws = 500)
  expect_equal(dim(yrep), c(500L, 200L))
  expect_true(all(yrep >= 0 & yrep == round(yrep)))
  expect_lt(abs(mean(yrep) - mean(p$d$y)) / mean(p$d$y), 0.05)
  g <- bbvi(mpg ~ wt, mtcars, seed = 1)
  yg <- posterior_predict(g, newdata = data.frame(wt = 3), draws = 2000)
  expect_equal(dim(yg), c(2000L, 1L))
  # predictive sd = sqrt(sigma^2 + var of the mean), about 3 here
  expect_gt(stats::sd(yg), 2.5)
  b <- bbvi(cbind(am, 1 - am) ~ wt, mtcars, family = binomial(), seed = 1)
  yb <- posterior_predict(b, newdata = data.frame(wt = c(2, 4)), trials = 10, draws = 100)
  expect_true(all(yb >= 0 & yb <= 10))
})

test_that("nobs, formula and family", {
  p <- fit_pois()
  expect_equal(nobs(p$fit), 200)
  expect_identical(deparse(formula(p$fit)), "y ~ x + g + offset(log(expo))")
  expect_equal(family(p$fit)$family, "poisson")
  expect_s3_class(p$fit, "bbvi_glm_fit")
  expect_s3_class(p$fit, "bbvi_fit")
})

# ---- rstanarm-style methods (issue 12) --------------------------------------

test_that("predict(se.fit = TRUE) gives the posterior sds of the predictions", {
  p <- fit_pois()
  fit <- p$fit
  th <- as.matrix(fit)
  X <- stats::model.matrix(~ x + g, p$d)
  eta <- sweep(th[, colnames(X)] %*% t(X), 2, log(p$d$expo), "+")
  pl <- predict(fit, se.fit = TRUE)
  expect_named(pl, c("fit", "se.fit"))
  expect_equal(pl$fit, predict(fit))
  expect_equal(unname(pl$se.fit), unname(apply(eta, 2, stats::sd)), tolerance = 0.05)
  pr <- predict(fit, type = "response", se.fit = TRUE)
  expect_equal(unname(pr$se.fit), unname(apply(exp(eta), 2, stats::sd)), tolerance = 0.05)
  b <- bbvi(am ~ wt, mtcars, family = binomial(), seed = 1)
  pb <- predict(b, type = "response", se.fit = TRUE)
  mu <- stats::plogis(as.matrix(b)[, c("(Intercept)", "wt")] %*% rbind(1, mtcars$wt))
  expect_equal(unname(pb$se.fit), unname(apply(mu, 2, stats::sd)), tolerance = 0.05)
})

test_that("fitted(), residuals() and predict() are padded under na.exclude", {
  d <- mtcars
  d$wt[c(3, 10)] <- NA
  fe <- bbvi(mpg ~ wt, d, na.action = na.exclude, seed = 1)
  fo <- bbvi(mpg ~ wt, d, seed = 1)
  expect_length(fitted(fe), 32)
  expect_true(all(is.na(fitted(fe)[c(3, 10)])))
  expect_identical(names(fitted(fe)), rownames(d))
  expect_equal(fitted(fe)[-c(3, 10)], fitted(fo))
  expect_length(fitted(fo), 30)
  expect_length(predict(fe), 32)
  expect_length(residuals(fe), 32)
  expect_equal(unname(residuals(fo)), unname(d$mpg[-c(3, 10)] - fitted(fo)))
  expect_equal(nobs(fe), 30)
})

test_that("residuals() follow glm(): proportions for binomial, pearson scaling", {
  b <- bbvi(cbind(am, 1 - am) ~ wt, mtcars, family = binomial(), seed = 1)
  mu <- fitted(b)
  expect_equal(unname(residuals(b)), unname(mtcars$am - mu))
  expect_equal(unname(residuals(b, type = "pearson")),
               unname((mtcars$am - mu) / sqrt(mu * (1 - mu))))
  expect_snapshot(error = TRUE, residuals(b, type = "deviance"))
})

test_that("nobs() leaves out zero weights, as glm()", {
  w <- rep(c(0, 1), 16)
  f <- bbvi(mpg ~ wt, mtcars, weights = w, seed = 1)
  expect_equal(nobs(f), nobs(stats::glm(mpg ~ wt, data = mtcars, weights = w)))
  expect_equal(nobs(f), 16)
})

test_that("update() refits formula fits", {
  f <- bbvi(mpg ~ wt, data = mtcars, seed = 1)
  expect_identical(f$call[[1]], quote(bbvi))
  g <- update(f, . ~ . + hp)
  expect_named(coef(g), c("(Intercept)", "wt", "hp", "sigma"))
  h <- update(f, family = poisson(), formula. = carb ~ wt)
  expect_equal(family(h)$family, "poisson")
  m <- update(f, method = "meanfield")
  expect_identical(m$method, "meanfield")
  expect_equal(coef(update(f)), coef(f))
})

test_that("unknown arguments are errors", {
  f <- bbvi(mpg ~ wt, data = mtcars, seed = 1)
  expect_snapshot(error = TRUE, fitted(f, type = "link"))
  expect_snapshot(error = TRUE, predict(f, interval = "confidence"))
  expect_snapshot(error = TRUE, posterior_predict(f, nsamples = 10))
  expect_error(residuals(f, foo = 1), "Unknown argument")
  expect_error(nobs(f, 1), "Unknown argument")
  expect_error(log_lik(f, foo = 1), "Unknown argument")
  expect_error(bayes_R2(f, foo = 1), "Unknown argument")
  expect_error(as.array(f, foo = 1), "Unknown argument")
  expect_error(bbvi(mpg ~ wt, data = mtcars, chains = 4), "Unknown argument")
})

test_that("formula fits print medians and MAD_SDs, summaries mean, sd, quantiles", {
  fit <- bbvi(mpg ~ wt + factor(cyl), data = mtcars, seed = 1)
  expect_snapshot(print(fit), transform = scrub_times)
  expect_snapshot(summary(fit), transform = scrub_times)
  expect_snapshot(print(fit, digits = 2), transform = scrub_times)
  out <- capture.output(print(fit))
  rows <- out[grepl("^(\\(Intercept\\)|wt|factor\\(cyl\\)[68]|sigma) ", out)]
  expect_length(rows, 5)
  expect_no_match(rows, "[0-9]\\.[0-9]*0( |$)")  # no padded zeros
  expect_lte(widest_line(summary(fit)), 80)
})

test_that("large GLMs get log p for their diagnostics from an expansion, accurately", {
  set.seed(21)
  N <- 20000
  X <- matrix(stats::rnorm(N * 4), N, 4, dimnames = list(NULL, paste0("x", 1:4)))
  eta <- -0.3 + drop(X %*% c(0.5, -0.2, 0.1, 0))
  cases <- list(binomial = stats::rbinom(N, 1, stats::plogis(eta)),
                poisson = stats::rpois(N, exp(eta)),
                gaussian = eta + stats::rnorm(N, 0, 2))
  for (fam in names(cases)) {
    fit <- bbvi(X, cases[[fam]], family = fam, offset = rep(0.1, N), seed = 3)
    dg <- fit$diagnostics
    # the exact route would have cut the draws to 1e8 / (N * 4) = 1250 (and
    # to 100 at N = 250,000); this one is not limited
    expect_match(dg$logdens_route, if (fam == "gaussian") "sufficient" else "expansion")
    expect_gte(dg$n_draws, 1000)
    expect_lt(dg$logdens_se, 0.05)
    # against the exact log density on the centred scale, where the target
    # lives, at draws from a q three times wider than the fit's
    D <- length(fit$par_names)
    A <- if (is.null(fit$xbar)) diag(D) else center_matrix(fit$par_names, fit$xbar)
    centred <- fit
    centred$mean_unc <- stats::setNames(drop(solve(A, fit$mean_unc)), fit$par_names)
    L <- solve(A, fit$chol_unc)
    z <- centred$mean_unc + 3 * L %*% matrix(with_seed(9, stats::rnorm(D * 40)), D, 40)
    est <- glm_taylor_logdens(centred, 4000)(z)
    exact <- diagnostic_logdens(centred, z)
    # the error is within a few of the estimate's own standard errors (and
    # at rounding level for gaussian, where the expansion is exact); out
    # here the remainder (cubic in eta - m) is 27 times that at q's draws
    expect_lt(max(attr(est, "se")), 0.5)
    expect_lt(max(abs(est - exact)), max(1e-6, 5 * max(attr(est, "se"))))
  }
})
