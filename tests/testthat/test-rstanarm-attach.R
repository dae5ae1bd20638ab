# bbvi and rstanarm both export normal(), student_t(), cauchy(),
# exponential() and the rstantools generics. Attached in either order, both
# packages' calls must work: the generics are rstantools' (one object, with
# methods from both), and each package accepts the other's prior objects.
# Run in fresh R processes (callr) so that attaching does not leak.

attach_check <- function(first, second) {
  callr::r(function(first, second) {
    suppressPackageStartupMessages({
      library(first, character.only = TRUE)
      library(second, character.only = TRUE)
    })
    out <- list()
    # the shared generics are rstantools' own
    gens <- c("posterior_predict", "posterior_epred", "posterior_linpred",
              "log_lik", "prior_summary", "predictive_interval",
              "posterior_interval", "bayes_R2")
    out$generics_shared <- vapply(gens, function(g) {
      identical(get(g, envir = globalenv()), getExportedValue("rstantools", g))
    }, logical(1))
    # whichever normal() is found, bbvi takes it: same fit as bbvi's own
    a <- bbvi(mpg ~ wt, data = mtcars, prior = normal(0, 1), seed = 1)
    b <- bbvi(mpg ~ wt, data = mtcars, prior = bbvi::normal(0, 1), seed = 1)
    r <- bbvi(mpg ~ wt, data = mtcars, prior = rstanarm::normal(0, 1), seed = 1)
    out$coef_a <- coef(a); out$coef_b <- coef(b); out$coef_r <- coef(r)
    t1 <- bbvi(am ~ wt, data = mtcars, family = binomial(),
               prior = rstanarm::student_t(4, 0, 2), seed = 1)
    t2 <- bbvi(am ~ wt, data = mtcars, family = binomial(),
               prior = bbvi::student_t(4, 0, 2), seed = 1)
    out$t_equal <- all.equal(coef(t1), coef(t2))
    e1 <- bbvi(mpg ~ wt, data = mtcars, prior_aux = rstanarm::exponential(2), seed = 1)
    e2 <- bbvi(mpg ~ wt, data = mtcars, prior_aux = bbvi::exponential(2), seed = 1)
    out$exp_equal <- all.equal(coef(e1), coef(e2))
    # rstanarm's default priors as objects give bbvi's defaults
    d1 <- bbvi(mpg ~ wt, data = mtcars, seed = 1)
    d2 <- bbvi(mpg ~ wt, data = mtcars, prior = rstanarm::normal(0, 2.5, autoscale = TRUE),
               prior_intercept = rstanarm:::default_prior_intercept(gaussian()),
               prior_aux = rstanarm::exponential(1, autoscale = TRUE), seed = 1)
    out$default_equal <- all.equal(coef(d1), coef(d2))
    # shared generics on a bbvi fit
    out$pp_dim <- dim(posterior_predict(a, draws = 10))
    out$epred_dim <- dim(posterior_epred(a, draws = 10))
    out$linpred_dim <- dim(posterior_linpred(a, draws = 10))
    out$ll_dim <- dim(log_lik(a, draws = 10))
    out$pi_dim <- dim(predictive_interval(a, draws = 100))
    out$post_int <- dim(posterior_interval(a))
    out$r2_len <- length(bayes_R2(a, draws = 10))
    out$ps_class <- class(prior_summary(a))
    # and on an rstanarm fit, with bbvi's prior objects
    s <- rstanarm::stan_glm(mpg ~ wt, data = mtcars, prior = bbvi::normal(0, 1),
                            chains = 1, iter = 400, refresh = 0, seed = 1)
    out$s_prior <- prior_summary(s)$prior$scale
    out$s_pp_dim <- dim(posterior_predict(s, draws = 10))
    out$s_r2_len <- length(bayes_R2(s))
    out$s_pi_dim <- dim(posterior_interval(s))
    out
  }, args = list(first = first, second = second))
}

for (ord in list(c("bbvi", "rstanarm"), c("rstanarm", "bbvi"))) {
  test_that(sprintf("library(%s) then library(%s): both work", ord[1], ord[2]), {
    skip_if_not_installed("rstanarm")
    skip_if_not_installed("callr")
    skip_on_cran()
    out <- attach_check(ord[1], ord[2])
    expect_true(all(out$generics_shared))
    expect_equal(out$coef_a, out$coef_b)
    expect_equal(out$coef_r, out$coef_b)
    expect_true(isTRUE(out$t_equal))
    expect_true(isTRUE(out$exp_equal))
    expect_true(isTRUE(out$default_equal))
    expect_equal(out$pp_dim, c(10L, 32L))
    expect_equal(out$epred_dim, c(10L, 32L))
    expect_equal(out$linpred_dim, c(10L, 32L))
    expect_equal(out$ll_dim, c(10L, 32L))
    expect_equal(out$pi_dim, c(32L, 2L))
    expect_equal(out$post_int, c(3L, 2L))
    expect_equal(out$r2_len, 10L)
    expect_identical(out$ps_class, "prior_summary.bbvi_fit")
    expect_equal(out$s_prior, 1)
    expect_equal(out$s_pp_dim, c(10L, 32L))
    expect_gt(out$s_r2_len, 10L)
    expect_equal(out$s_pi_dim, c(3L, 2L))
  })
}
