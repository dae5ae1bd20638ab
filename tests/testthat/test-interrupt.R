# An interrupt (Ctrl-C / Esc, SIGINT) stops a fit cleanly: the session stays
# usable, R's RNG state is as the seed handling promises, and the next fit
# reproduces one made before the interrupt. Runs in a separate R session
# (callr) so that the signals do not reach the test process.

skip_on_cran()
skip_if_not_installed("callr")

interrupt_session <- function() {
  rs <- callr::r_session$new(
    options = callr::r_session_options(libpath = .libPaths(),
                                       env = c(NOT_CRAN = "true")),
    wait_timeout = 20000)
  rs$run(function() {
    suppressPackageStartupMessages(library(bbvi))
    m <- bbvi_model(function(theta, data) stats::dnorm(theta$mu, 1, 2, log = TRUE),
                    list(mu = param()),
                    gradient = function(theta, data) (1 - theta$mu) / 4)
    assign("ref_model", m, globalenv())
    assign("ref_fit", bbvi(m, seed = 42), globalenv())
    NULL
  })
  rs
}

# The fit after an interrupt equals the one made before it, bit for bit.
expect_session_usable <- function(rs) {
  same <- rs$run(function() {
    fit <- bbvi(ref_model, seed = 42)
    again <- suppressMessages(bbvi(ref_model, seed = 42, progress = TRUE))
    c(identical(fit$lambda, ref_fit$lambda),
      identical(again$lambda, ref_fit$lambda),
      identical(coef(fit), coef(ref_fit)))
  })
  expect_equal(same, c(TRUE, TRUE, TRUE))
}

test_that("an interrupt inside an R log-joint stops the fit and leaves the session usable", {
  rs <- interrupt_session()
  on.exit(rs$close(), add = TRUE)
  out <- rs$run(function() {
    set.seed(7)
    before <- .Random.seed
    n <- 0
    m <- bbvi_model(function(theta, data) {
      n <<- n + 1
      if (n == 200) tools::pskill(Sys.getpid(), tools::SIGINT)
      stats::dnorm(theta$mu, 0, 1, log = TRUE)
    }, list(mu = param()))
    res <- tryCatch(bbvi(m, seed = 1, max_iter = 1e6, tol = 1e-9, progress = TRUE),
                    interrupt = function(i) "interrupted")
    list(res = res, n = n, rng_kept = identical(.Random.seed, before))
  })
  expect_identical(out$res, "interrupted")
  expect_gte(out$n, 200)
  expect_lt(out$n, 1e5)
  expect_true(out$rng_kept)   # seed = 1: the user's stream is put back
  expect_session_usable(rs)
})

# Start `work` (a function run in the subprocess that returns
# list(res = ...)), interrupt it from outside once it runs, and check that it
# stopped with an interrupt and left the session usable.
expect_interrupted_from_outside <- function(work) {
  rs <- interrupt_session()
  on.exit(rs$close(), add = TRUE)
  rs$call(work)
  Sys.sleep(2)
  rs$interrupt()
  expect_identical(rs$poll_process(20000), "ready")
  msg <- rs$read()
  expect_null(msg$error)
  expect_identical(msg$result$res, "interrupted")
  expect_session_usable(rs)
}

test_that("an interrupt during the compiled loop (native log-joint) stops the fit", {
  # a long fit of a compiled target, interrupted from outside after it started
  expect_interrupted_from_outside(function() {
    m <- bbvi_model(native_logjoint("bbvi:mvnormal", has_gradient = TRUE,
                                    data = list(0, diag(1))),
                    list(z = param()))
    res <- tryCatch(bbvi(m, seed = 1, max_iter = 5e7, tol = 1e-12, optimizer = "adam"),
                    interrupt = function(i) "interrupted")
    list(res = res)
  })
})

# In the session: a fit whose log-joint sends SIGINT at its first call
# inside the fixed-draw phase (with its gradient, or numeric gradients from
# a vectorized log-joint); counts the log-joint's calls from then on.
interrupt_fixed_draws <- function(rs, numeric) {
  rs$run(function(numeric) {
    in_phase <- function() any(vapply(sys.calls(), function(cl)
      identical(cl[[1]], quote(saa_engine)), logical(1)))
    sent <- FALSE
    calls_after <- 0
    m <- bbvi_model(function(theta, data) {
      if (in_phase()) {
        if (!sent) { sent <<- TRUE; tools::pskill(Sys.getpid(), tools::SIGINT) }
        calls_after <<- calls_after + 1
      }
      stats::dnorm(theta$mu, 0, 1, log = TRUE)
    }, list(mu = param()), vectorized = numeric,
    gradient = if (numeric) "numeric" else function(theta, data) -theta$mu)
    res <- tryCatch(bbvi(m, seed = 1), interrupt = function(i) "interrupted")
    list(res = res, sent = sent, calls_after = calls_after)
  }, args = list(numeric = numeric))
}

test_that("an interrupt during the fixed-draw L-BFGS phase stops the fit", {
  # with the model's gradient: within the batch of fixed draws it was
  # evaluating; with numeric gradients one call per evaluation holds all
  # its shifted points, and the loop checks every 8 evaluations
  for (numeric in c(FALSE, TRUE)) local({
    rs <- interrupt_session()
    on.exit(rs$close(), add = TRUE)
    out <- interrupt_fixed_draws(rs, numeric)
    expect_true(out$sent)
    expect_identical(out$res, "interrupted")
    expect_lte(out$calls_after, if (numeric) 9 else 40)
    expect_session_usable(rs)
  })
})

test_that("an interrupt stops MCMC sampling as cleanly", {
  expect_interrupted_from_outside(function() {
    m <- bbvi_model(native_logjoint("bbvi:mvnormal", has_gradient = TRUE,
                                    data = list(0, diag(1))),
                    list(z = param()))
    res <- tryCatch(sample_mcmc(m, chains = 1, iter = 5e7, seed = 1,
                                progress = FALSE),
                    interrupt = function(i) "interrupted")
    list(res = res)
  })
})
