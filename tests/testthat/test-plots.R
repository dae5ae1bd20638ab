test_that("plot(fit, plotfun) draws areas, intervals and the ELBO", {
  fit <- bbvi(mpg ~ wt + factor(cyl), mtcars, seed = 1)
  pdf(NULL)
  on.exit(grDevices::dev.off())
  expect_invisible(plot(fit, "elbo"))
  expect_invisible(plot(fit))
  expect_snapshot(error = TRUE, plot(fit, "trace"))
  expect_snapshot(error = TRUE, plot(fit, "areas", pars = "nope"))
  skip_if_not_installed("bayesplot")
  p <- plot(fit, "areas")
  expect_s3_class(p, "ggplot")
  # every parameter is shown unless pars says otherwise
  expect_setequal(levels(p$data$parameter), fit$par_names)
  expect_setequal(levels(plot(fit, "intervals", pars = c("wt", "sigma"))$data$parameter),
                  c("wt", "sigma"))
  mc <- sample_mcmc(mpg ~ wt, mtcars, chains = 2, iter = 400, seed = 1, progress = FALSE)
  expect_s3_class(plot(mc, "trace"), "ggplot")
})
