# compare_fits(): VI against MCMC on the same model.

test_that("compare_fits() puts VI and MCMC summaries side by side", {
  case <- gaussian2_case()
  # (mean-field here is meant to be off: its PSIS k-hat warning is expected)
  fit <- suppressWarnings(bbvi(case$model, method = "meanfield", seed = 1))
  mc <- sample_mcmc(case$model, iter = 1000, seed = 1)
  cmp <- compare_fits(fit, mc)
  expect_s3_class(cmp, "bbvi_comparison")
  expect_s3_class(cmp, "data.frame")
  expect_named(cmp, c("parameter", "vi_mean", "mcmc_mean", "vi_sd", "mcmc_sd",
                      "vi_q2.5", "mcmc_q2.5", "vi_q50", "mcmc_q50",
                      "vi_q97.5", "mcmc_q97.5", "z", "sd_ratio"))
  expect_equal(cmp$parameter, c("z[1]", "z[2]"))
  sv <- summary(fit)$table
  sm <- summary(mc)$table
  expect_equal(cmp$vi_mean, unname(sv[, "mean"]))
  expect_equal(cmp$mcmc_sd, unname(sm[, "sd"]))
  expect_equal(cmp$mcmc_q97.5, unname(sm[, "97.5%"]))
  expect_equal(cmp$z, (cmp$vi_mean - cmp$mcmc_mean) / cmp$mcmc_sd)
  expect_equal(cmp$sd_ratio, cmp$vi_sd / cmp$mcmc_sd)
  # mean-field on correlation 0.8: sds understated by sqrt(1 - 0.8^2) = 0.6,
  # means right
  expect_true(all(abs(cmp$sd_ratio - 0.6) < 0.05))
  expect_true(all(abs(cmp$z) < 0.1))
  expect_output(print(cmp), "VI \\(meanfield\\) against NUTS")
  expect_snapshot(print(cmp))
  expect_snapshot(print(cmp, digits = 5))
  # z's Monte Carlo error is the reference's mcse / sd
  expect_equal(attr(cmp, "z_mcse"), unname(sm[, "mcse_mean"] / sm[, "sd"]))
  pdf(NULL); on.exit(grDevices::dev.off())
  expect_invisible(plot(cmp))
  expect_invisible(plot(cmp, pars = "z[2]"))
  # only some parameters; and any two fits
  expect_equal(compare_fits(fit, mc, pars = "z[2]")$parameter, "z[2]")
  rw <- sample_mcmc(case$model, method = "rwm", iter = 4000, seed = 2)
  cmp2 <- compare_fits(rw, mc)
  expect_true(all(abs(cmp2$z) < 0.15))
  expect_true(all(abs(cmp2$sd_ratio - 1) < 0.1))
  expect_output(print(cmp2), "RWM against NUTS")
  expect_equal(compare_fits(fit, fit)$z, c(0, 0))
})

test_that("compare_fits() checks its arguments", {
  case <- gaussian2_case()
  mc <- sample_mcmc(case$model, chains = 2, iter = 600, seed = 1)
  other <- sample_mcmc(normal_mean_case()$model, chains = 2, iter = 600, seed = 1)
  expect_snapshot(error = TRUE, compare_fits(1, mc))
  expect_snapshot(error = TRUE, compare_fits(mc, "x"))
  expect_snapshot(error = TRUE, compare_fits(mc, other))
  expect_snapshot(error = TRUE, compare_fits(mc, mc, pars = "nope"))
  cmp <- compare_fits(mc, mc)
  expect_snapshot(error = TRUE, plot(cmp, pars = "nope"))
})

test_that("compare_fits() prints within 80 columns", {
  fit <- bbvi(mpg ~ wt + factor(cyl) + hp + disp, data = mtcars, seed = 1)
  mc <- sample_mcmc(mpg ~ wt + factor(cyl) + hp + disp, data = mtcars,
                    chains = 2, iter = 600, seed = 1, progress = FALSE)
  cmp <- compare_fits(fit, mc)
  expect_lte(widest_line(print(cmp)), 80)
  expect_lte(widest_line(print(cmp, digits = 7)), 80)
})
