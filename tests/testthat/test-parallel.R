# Chains and restarts on future backends: independent L'Ecuyer-CMRG streams
# make the results identical whatever the plan; the user's global variables
# reach the workers.

test_that("rng_streams() gives independent L'Ecuyer streams and leaves R's RNG alone", {
  set.seed(42)
  before <- .Random.seed
  s1 <- bbvi:::rng_streams(3, seed = 7)
  expect_identical(.Random.seed, before)        # a seed given: R's stream untouched
  expect_identical(RNGkind()[1], "Mersenne-Twister")
  expect_length(s1, 3)
  expect_identical(s1, bbvi:::rng_streams(3, seed = 7))
  expect_identical(s1[[2]], parallel::nextRNGStream(s1[[1]]))
  # no seed: one draw from R's stream, so set.seed() reproduces it
  set.seed(3); a <- bbvi:::rng_streams(2)
  set.seed(3); b <- bbvi:::rng_streams(2)
  expect_identical(a, b)
  x <- bbvi:::with_rng_state(s1[[1]], stats::runif(2))
  expect_identical(x, bbvi:::with_rng_state(s1[[1]], stats::runif(2)))
  expect_identical(RNGkind()[1], "Mersenne-Twister")
})

test_that("carry_globals() takes the globals a function uses along with it", {
  assign("bbvi_test_gl_mu", 2.5, envir = globalenv())
  assign("bbvi_test_gl_fn", function(x) x + bbvi_test_gl_mu, envir = globalenv())
  on.exit(rm("bbvi_test_gl_mu", "bbvi_test_gl_fn", envir = globalenv()))
  f <- function(theta, data) bbvi_test_gl_fn(theta$mu) - 1
  environment(f) <- globalenv()
  g <- bbvi:::carry_globals(f)
  ev <- environment(g)
  expect_true(exists("bbvi_test_gl_fn", envir = ev, inherits = FALSE))
  expect_false(exists("bbvi_test_gl_mu", envir = ev, inherits = FALSE))
  # the helper function's own global travels in its environment
  expect_equal(get("bbvi_test_gl_mu", envir = environment(get("bbvi_test_gl_fn", envir = ev))), 2.5)
  # a copy in a fresh process (what a worker sees) still works
  h <- unserialize(serialize(g, NULL))
  rm("bbvi_test_gl_mu", "bbvi_test_gl_fn", envir = globalenv())
  expect_equal(h(list(mu = 1), NULL), 2.5)
  on.exit()
})

test_that("chains and restarts give identical results under sequential and multisession plans", {
  skip_if_not_installed("future")
  skip_if_not_installed("future.apply")
  skip_on_cran()
  # a log-joint that uses a global variable and a variable of this test's
  # environment, both needed on the workers
  assign("bbvi_test_gl_mu", 1.5, envir = globalenv())
  on.exit(rm("bbvi_test_gl_mu", envir = globalenv()), add = TRUE)
  local_sd <- 0.7
  lj <- function(theta, data) {
    stats::dnorm(theta$mu, bbvi_test_gl_mu, local_sd, log = TRUE) +
      stats::dnorm(theta$tau, 0, 1, log = TRUE)
  }
  gr <- function(theta, data) {
    list(mu = -(theta$mu - bbvi_test_gl_mu) / local_sd^2, tau = -theta$tau)
  }
  m <- bbvi_model(lj, list(mu = param(), tau = param()), gradient = gr)
  old <- future::plan("sequential")
  on.exit(future::plan(old), add = TRUE)
  mc_seq <- sample_mcmc(m, chains = 2, iter = 200, seed = 11)
  fit_seq <- bbvi(m, restarts = 2, seed = 3)
  set.seed(5); mc_rs <- sample_mcmc(m, chains = 2, iter = 200)
  future::plan("multisession", workers = 2)
  mc_par <- sample_mcmc(m, chains = 2, iter = 200, seed = 11)
  fit_par <- bbvi(m, restarts = 2, seed = 3)
  set.seed(5); mc_rs2 <- sample_mcmc(m, chains = 2, iter = 200)
  expect_identical(mc_par$draws, mc_seq$draws)
  expect_identical(mc_rs2$draws, mc_rs$draws)   # set.seed() reproduces too
  expect_identical(fit_par$lambda, fit_seq$lambda)
  expect_identical(fit_par$restart_summary$elbo, fit_seq$restart_summary$elbo)
  # the chains differ from each other (independent streams)
  expect_false(identical(mc_seq$draws[, 1, ], mc_seq$draws[, 2, ]))
  expect_lt(abs(mean(mc_seq$draws[, , "mu"]) - 1.5), 0.3)
})

test_that("a compiled GLM's chains run in parallel with the same draws", {
  skip_if_not_installed("future")
  skip_if_not_installed("future.apply")
  skip_on_cran()
  old <- future::plan("sequential")
  on.exit(future::plan(old), add = TRUE)
  a <- sample_mcmc(am ~ wt, data = mtcars, family = binomial(), chains = 2,
                   iter = 200, seed = 2)
  future::plan("multisession", workers = 2)
  b <- sample_mcmc(am ~ wt, data = mtcars, family = binomial(), chains = 2,
                   iter = 200, seed = 2)
  expect_identical(a$draws, b$draws)
})
