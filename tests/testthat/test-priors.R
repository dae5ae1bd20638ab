test_that("prior constructors validate and print", {
  expect_snapshot({
    normal()
    normal(c(0, 1), 2)
    student_t(3, 0, 2.5)
    cauchy(0, 1)
    exponential(2)
  })
  expect_snapshot(error = TRUE, normal(0, -1))
  expect_snapshot(error = TRUE, normal(NA, 1))
  expect_snapshot(error = TRUE, student_t(df = 0))
  expect_snapshot(error = TRUE, cauchy(scale = Inf))
  expect_snapshot(error = TRUE, exponential(c(1, 2)))
  expect_snapshot(error = TRUE, exponential("a"))
})

test_that("priors expand to one entry per coefficient", {
  e <- bbvi:::expand_prior(normal(c(0, 1), c(1, 2)), 2, "prior", c("a", "b"))
  expect_equal(e$par[1:2, ], rbind(c(0, 1), c(1, 2)))
  expect_equal(bbvi:::expand_prior(NULL, 3, "prior", letters[1:3])$type, rep(0L, 3))
  expect_equal(bbvi:::expand_prior(cauchy(), 1, "prior", "a")$par[3, ], 1)
})

test_that("vector priors reach the right coefficients", {
  # a very tight prior pins one coefficient at its location, not the other
  fit <- bbvi(mpg ~ wt + hp, mtcars, prior = normal(c(0, 5), c(100, 1e-4)),
              method = "fullrank")
  expect_equal(unname(coef(fit)["hp"]), 5, tolerance = 1e-3)
  expect_gt(abs(coef(fit)["wt"] - 5), 1)
})

test_that("Student t priors: quadrature and stochastic paths agree", {
  # hp in hundreds: AdaGrad's first steps are O(eta) per coordinate, so the
  # stochastic path wants coefficients of order one (the quadrature path
  # does not care); observed: 0.13 sd and 5%
  d <- mtcars
  d$hp100 <- d$hp / 100
  q <- bbvi(am ~ wt + hp100, d, family = binomial(), prior = student_t(3, 0, 1),
            prior_intercept = cauchy(0, 10), method = "fullrank")
  s <- bbvi(am ~ wt + hp100, d, family = binomial(), prior = student_t(3, 0, 1),
            prior_intercept = cauchy(0, 10), method = "fullrank",
            estimator = "reparam", seed = 4)
  sd <- sqrt(diag(vcov(q)))
  expect_lt(max(abs(coef(s) - coef(q)) / sd), 0.25)
  expect_lt(max(abs(sqrt(diag(vcov(s))) / sd - 1)), 0.1)
})

test_that("summary() and print() show the priors and the path", {
  fit <- bbvi(mpg ~ wt, mtcars, prior = normal(0, 3), prior_aux = cauchy(0, 5))
  out <- capture.output(print(fit))
  expect_match(out, "coefficients: normal\\(location = 0, scale = 3\\)", all = FALSE)
  expect_match(out, "sigma: +half-cauchy\\(location = 0, scale = 5\\)", all = FALSE)
  expect_match(out, "path: quadrature", all = FALSE)
  s <- capture.output(summary(bbvi(am ~ wt, mtcars, family = binomial(), prior = NULL,
                                   estimator = "reparam", seed = 1)))
  expect_match(s, "coefficients: flat \\(improper\\)", all = FALSE)
  expect_match(s, "path: stochastic", all = FALSE)
  expect_match(s, "2.5%", all = FALSE)
})

# ---- rstanarm's shapes and autoscaling (issue 12) ---------------------------

test_that("prior objects have rstanarm's shape and defaults", {
  expect_identical(names(unclass(normal())), c("dist", "df", "location", "scale", "autoscale"))
  expect_false(normal()$autoscale)
  expect_null(normal()$scale)
  expect_identical(cauchy(0, 1)$dist, "t")
  expect_equal(cauchy(0, 1)$df, 1)
  expect_equal(exponential(4)$scale, 0.25)
  expect_true(normal(0, 2.5, autoscale = TRUE)$autoscale)
  expect_snapshot(normal(0, 2.5, autoscale = TRUE))
  expect_snapshot(error = TRUE, normal(0, 1, autoscale = NA))
  # plain lists as rstanarm makes them are accepted
  rs <- list(dist = "normal", df = NA, location = 0, scale = 1, autoscale = FALSE)
  a <- bbvi(mpg ~ wt, mtcars, prior = rs, seed = 1)
  b <- bbvi(mpg ~ wt, mtcars, prior = normal(0, 1), seed = 1)
  expect_equal(coef(a), coef(b))
  expect_snapshot(error = TRUE,
                  bbvi(mpg ~ wt, mtcars, prior = list(dist = "hs", df = 1, autoscale = FALSE)))
  expect_snapshot(error = TRUE,
                  bbvi(mpg ~ wt, mtcars, prior_intercept = exponential(1)))
})

test_that("autoscaling follows rstanarm's rules", {
  d <- mtcars
  d$const <- 1
  X <- stats::model.matrix(~ wt + am, d)
  # gaussian: scales times sd(y), coefficient scales over sd(x) (binary
  # columns too), exponential rate over sd(y), intercept location mean(y)
  f <- bbvi(mpg ~ wt + am, d, prior_intercept = structure(
    normal(0, 2.5, autoscale = TRUE), default = NULL), seed = 1)
  pr <- f$prior
  sy <- stats::sd(d$mpg)
  expect_equal(pr$prior$scale, unname(2.5 * sy / apply(X[, -1], 2, stats::sd)))
  expect_equal(pr$prior_intercept$scale, 2.5 * sy)
  expect_equal(pr$prior_intercept$location, 0)   # not the default object: as written
  expect_equal(1 / pr$prior_aux$scale, 1 / sy)
  dflt <- bbvi(mpg ~ wt + am, d, seed = 1)
  expect_equal(dflt$prior$prior_intercept$location, mean(d$mpg))
  # binomial: no sd(y)
  b <- bbvi(am ~ wt + hp, d, family = binomial(), seed = 1)
  expect_equal(b$prior$prior$scale, unname(2.5 / apply(X[, "wt", drop = FALSE], 2, stats::sd)) *
                 c(1, stats::sd(d$wt) / stats::sd(d$hp)))
  expect_equal(b$prior$prior_intercept$scale, 2.5)
  expect_equal(b$prior$prior_intercept$location, 0)
  expect_null(b$prior$prior_aux)
  # autoscale = FALSE: as written
  w <- bbvi(mpg ~ wt + am, d, prior = normal(0, c(1, 2)), prior_intercept = normal(5, 3),
            prior_aux = exponential(2), seed = 1)
  expect_equal(w$prior$prior$scale, c(1, 2))
  expect_equal(w$prior$prior_intercept[c("location", "scale")], list(location = 5, scale = 3))
  expect_equal(w$prior$prior_aux$scale, 0.5)
  # a constant column (no intercept) is divided by 1
  k <- bbvi:::adjust_priors(normal(0, 2.5, autoscale = TRUE), NULL, NULL,
                            cbind(a = c(1, 1, 1), b = c(1, 2, 4)), c(FALSE, FALSE),
                            c(0, 1, 0), "binomial")
  expect_equal(k$prior$scale, c(2.5, 2.5 / stats::sd(c(1, 2, 4))))
})

test_that("the intercept prior is on centred predictors, reported on the original scale", {
  # a tight intercept prior pins the centred intercept: mean(y) at mean(x)
  d <- data.frame(x = c(10, 11, 12, 13, 14), y = c(1, 3, 2, 5, 4))
  f <- bbvi(y ~ x, d, prior_intercept = normal(7, 1e-4), prior = normal(0, 100),
            prior_aux = exponential(1))
  cf <- coef(f)
  expect_equal(unname(cf["(Intercept)"] + cf["x"] * mean(d$x)), 7, tolerance = 1e-3)
  # the raw intercept is far from 7; center = FALSE pins it instead
  expect_gt(abs(cf[["(Intercept)"]] - 7), 1)
  g <- bbvi(y ~ x, d, prior_intercept = normal(7, 1e-4), prior = normal(0, 100),
            prior_aux = exponential(1), center = FALSE)
  expect_equal(unname(coef(g)["(Intercept)"]), 7, tolerance = 1e-3)
  # draws, vcov and predictions are on the original scale
  th <- as.matrix(f)
  sds <- sqrt(diag(vcov(f)))
  expect_lt(max(abs(colMeans(th) - coef(f)) / sds), 0.1)   # 4000 draws: MC se 0.016 sd
  expect_equal(stats::cor(th[, "(Intercept)"], th[, "x"]), stats::cov2cor(vcov(f))[1, 2],
               tolerance = 0.02)
  expect_equal(unname(predict(f)), unname(cf[1] + cf[2] * d$x))
})
