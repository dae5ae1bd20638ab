test_that("fit methods agree with q", {
  case <- gaussian2_case()
  fit <- bbvi(case$model, method = "fullrank", seed = 4)
  expect_s3_class(fit, "bbvi_fit")
  expect_named(coef(fit), c("z[1]", "z[2]"))
  V <- vcov(fit)
  expect_equal(dim(V), c(2L, 2L))
  expect_equal(V, tcrossprod(fit$chol_unc), ignore_attr = TRUE)
  ci <- confint(fit, level = 0.9)
  expect_equal(unname(ci[, 1]), unname(coef(fit) - qnorm(0.95) * sqrt(diag(V))))
  expect_equal(unname(ci[, 2]), unname(coef(fit) + qnorm(0.95) * sqrt(diag(V))))
  expect_equal(rownames(confint(fit, parm = "z[2]")), "z[2]")
  m <- as.matrix(fit)
  expect_equal(dim(m), c(4000L, 2L))
  expect_equal(colnames(m), c("z[1]", "z[2]"))
  # stored draws match q within Monte Carlo error
  expect_lt(max(abs(colMeans(m) - coef(fit)) / sqrt(diag(V))), 4 / sqrt(4000))
  expect_equal(nrow(as.matrix(fit, draws = 10)), 10L)
  s <- summary(fit)
  expect_equal(colnames(s$table), c("mean", "sd", "2.5%", "50%", "97.5%"))
  expect_output(print(s), "Converged")
  expect_output(print(fit), "fullrank")
  e <- elbo(fit)
  expect_named(e, c("iteration", "elbo"))
  expect_equal(nrow(e), fit$iterations)
  expect_true(is.numeric(fit$time) && fit$time >= 0)
  # the ELBO ends near its maximum, log Z (the target here is unnormalised:
  # log Z = log(2 pi) + 0.5 log det Sigma)
  logZ <- log(2 * pi) + 0.5 * log(det(case$Sigma))
  expect_lt(abs(mean(tail(e$elbo, 100)) - logZ), 0.05)
})

test_that("bounded parameters: quantiles are exact transforms, summaries agree with draws", {
  fit <- bbvi(beta_binomial_case()$model, seed = 2)
  s <- summary(fit)$table
  expect_true(s[1, "2.5%"] > 0 && s[1, "97.5%"] < 1)
  d <- as.matrix(fit)[, 1]
  se <- sd(d) / sqrt(length(d))
  expect_lt(abs(mean(d) - s[1, "mean"]), 4 * se)
  expect_lt(abs(quantile(d, 0.5) - s[1, "50%"]), 0.02)
  # an upper-bound-only parameter has a decreasing transform
  m <- bbvi_model(function(theta, data) dnorm(theta$u, -2, 0.5, log = TRUE),
                  list(u = param(upper = 0)))
  fu <- bbvi(m, seed = 3)
  ci <- confint(fu)
  expect_lt(ci[1, 1], ci[1, 2])
  expect_true(ci[1, 2] < 0)
})

test_that("plot() draws the trace and marginals", {
  fit <- bbvi(normal_mean_case()$model, seed = 1)
  path <- tempfile(fileext = ".pdf")
  grDevices::pdf(path)
  on.exit({ grDevices::dev.off(); unlink(path) })
  expect_invisible(plot(fit))
  expect_snapshot(error = TRUE, plot(fit, pars = "nope"))
})

test_that("methods check their arguments", {
  fit <- bbvi(normal_mean_case()$model, seed = 1)
  expect_snapshot(error = TRUE, confint(fit, level = 2))
  expect_snapshot(error = TRUE, confint(fit, parm = "nope"))
  expect_snapshot(error = TRUE, as.matrix(fit, draws = 0))
  expect_snapshot(error = TRUE, elbo(1))
})
