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
