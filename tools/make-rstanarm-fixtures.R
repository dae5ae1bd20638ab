# Makes tests/testthat/fixtures/rstanarm-*.csv: posterior means, sds and
# Monte Carlo standard errors from rstanarm::stan_glm() (NUTS, default
# priors: autoscaled normal(0, 2.5) coefficients, normal(0, 2.5) intercept
# on centred predictors, exponential(1) sigma) for the same-posterior tests
# in tests/testthat/test-rstanarm-posterior.R. Run once, from the package
# root:   Rscript tools/make-rstanarm-fixtures.R
# (rstanarm 2.21.3; 4 chains x 5000 iterations, 2500 warm-up, seed 12.)
suppressPackageStartupMessages(library(rstanarm))
out_dir <- file.path("tests", "testthat", "fixtures")
cases <- list(
  mtcars_gaussian = list(formula = mpg ~ wt + factor(cyl), data = mtcars,
                         family = gaussian()),
  infert_binomial = list(formula = case ~ spontaneous + induced + age,
                         data = infert, family = binomial()),
  warpbreaks_poisson = list(formula = breaks ~ wool + tension,
                            data = warpbreaks, family = poisson())
)
for (nm in names(cases)) {
  cs <- cases[[nm]]
  fit <- stan_glm(cs$formula, data = cs$data, family = cs$family,
                  chains = 4, iter = 5000, seed = 12, refresh = 0, cores = 1)
  draws <- as.matrix(fit)
  s <- rstan::summary(fit$stanfit, pars = colnames(draws))$summary
  # stan_glm's stanfit uses the same names as as.matrix(fit)
  tab <- data.frame(parameter = colnames(draws),
                    mean = colMeans(draws),
                    sd = apply(draws, 2, stats::sd),
                    mcse_mean = s[colnames(draws), "se_mean"],
                    n_eff = round(s[colnames(draws), "n_eff"]),
                    row.names = NULL)
  utils::write.csv(tab, file.path(out_dir, sprintf("rstanarm-%s.csv", nm)),
                   row.names = FALSE)
  print(tab)
}
