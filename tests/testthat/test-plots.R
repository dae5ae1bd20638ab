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

test_that("default plots show every parameter or say which they leave out", {
  pdf(NULL)
  on.exit(grDevices::dev.off())
  # 5 parameters: all of them on the VI plot, silently
  fit <- bbvi(mpg ~ wt + factor(cyl), mtcars, seed = 1)
  expect_no_message(plot(fit))
  # 11 parameters: the first 8, and a message naming `pars`
  big <- bbvi(mpg ~ wt + hp + disp + drat + qsec + vs + am + gear + carb, mtcars,
              seed = 1)
  expect_snapshot(shown <- default_pars(big$par_names, 8L))
  expect_equal(shown, big$par_names[1:8])
  expect_message(plot(big), "Showing 8 of 11 parameters")
  expect_no_message(plot(big, pars = c("carb", "sigma")))
  mc <- sample_mcmc(mpg ~ wt + factor(cyl), mtcars, chains = 2, iter = 400,
                    seed = 1, progress = FALSE)
  expect_message(plot(mc), "Showing 4 of 5 parameters.*`pars`")
  expect_no_message(plot(mc, pars = "sigma"))
  cmp <- compare_fits(fit, mc)
  expect_no_message(plot(cmp))
  expect_snapshot(error = TRUE, plot(mc, foo = 1))
})
