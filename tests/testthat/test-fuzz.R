# Fuzz tests: malformed input to every exported function must give a result
# or an R error (a condition), never a crash or a hang. A crash takes the
# test process down; a hang is cut by a time limit (R_CheckUserInterrupt in
# the C loops checks it). Seeded, so a failure can be replayed.
#
# Two layers:
# * one bad argument at a time, the others valid: the error must be an rlang
#   error (cli::cli_abort, i.e. a message that says what was expected);
# * random combinations of bad arguments: any R condition is fine.
#
# By default each argument meets a seeded random part of the pool, so that
# the file runs in ~20 s (BBVI_FUZZ_SEED=n draws other parts); BBVI_FUZZ=full (e.g. tools/HARDENING.md) runs
# every pool value against every argument (a few minutes).

# BBVI_FUZZ_SEED=n shifts every seed, to explore other parts of the pool.
fuzz_seed <- function(s) s + as.integer(Sys.getenv("BBVI_FUZZ_SEED", "0"))
fuzz_full <- function() identical(Sys.getenv("BBVI_FUZZ"), "full")
fuzz_pick <- function(x, n) if (fuzz_full() || length(x) <= n) x else x[sample.int(length(x), n)]

fuzz_pool <- function() {
  list(
    NULL, NA, NA_real_, NA_integer_, NA_character_, NaN, Inf, -Inf,
    1e308, -1e308, 1e10, -1, 0, 0.5, 1L, TRUE, FALSE,
    "a", "", c("a", "b"), character(), numeric(), integer(), logical(),
    list(), list(1, "a"), list(a = NULL), c(1, NA), c(Inf, 1), 1:3,
    matrix(1:4, 2), matrix(numeric(), 0, 2), complex(real = 1, imaginary = 1),
    factor("a"), as.raw(1), data.frame(), data.frame(x = numeric()),
    data.frame(y = c(1, NA), x = c(NA, 2)), function(...) NULL,
    function(theta, data) stop("boom"), quote(x), y ~ x, ~ 1,
    new.env(), structure(list(), class = "bbvi_model"),
    structure(list(), class = "bbvi_fit"),
    structure(list(dim = -1), class = "bbvi_param"), Sys.Date()
  )
}

# Calls f with args under a time limit; returns "ok", "error" or
# "rlang_error" (the condition is attached).
# BBVI_FUZZ_TIMEOUT scales the limit for slow runs (valgrind, sanitizers).
fuzz_call <- function(f, args,
                      seconds = as.numeric(Sys.getenv("BBVI_FUZZ_TIMEOUT", "5"))) {
  setTimeLimit(elapsed = seconds, transient = TRUE)
  on.exit(setTimeLimit(elapsed = Inf))
  out <- tryCatch(
    suppressWarnings(suppressMessages(withVisible(do.call(f, args, quote = TRUE)))),
    error = function(e) e)
  setTimeLimit(elapsed = Inf)
  if (!inherits(out, "error")) return(structure("ok", value = out$value))
  if (grepl("time limit", conditionMessage(out))) {
    return(structure("timeout", condition = out))
  }
  structure(if (inherits(out, "rlang_error")) "rlang_error" else "error",
            condition = out)
}

fuzz_describe <- function(fname, args) {
  shown <- vapply(args, function(a) paste(utils::capture.output(utils::str(a, give.attr = FALSE))[1], collapse = ""),
                  character(1))
  sprintf("%s(%s)", fname, paste(names(args), "=", shown, collapse = ", "))
}

fuzz_model <- function() {
  bbvi_model(function(theta, data) stats::dnorm(theta$mu, 1, 1, log = TRUE),
             list(mu = param()),
             gradient = function(theta, data) 1 - theta$mu)
}

fuzz_data <- function() {
  data.frame(x = c(-1, -0.5, 0, 0.5, 1, 1.5, 2, -2),
             y = c(0.1, 0.3, 1.2, 0.8, 1.9, 2.2, 2.4, -1.1),
             b = c(0, 0, 1, 0, 1, 1, 1, 0))
}

fuzz_fit <- function() {
  suppressWarnings(bbvi(fuzz_model(), seed = 1, max_iter = 300, window = 50,
                        draws = 50))
}

fuzz_mcmc <- function() {
  suppressWarnings(sample_mcmc(fuzz_model(), chains = 1, iter = 60, seed = 1))
}

fuzz_glm_fit <- function() {
  suppressWarnings(bbvi(y ~ x, data = fuzz_data(), seed = 1, draws = 50))
}

# Valid arguments per entry point (fast settings), as list(f, args). Exports
# not listed here get pool values and defaults only (the random layer).
fuzz_cases <- function(fit, mc, gfit) {
  m <- fuzz_model()
  d <- fuzz_data()
  list(
    param = list(param, list(dim = 2, lower = 0, upper = 1)),
    bbvi_model = list(bbvi_model, list(
      logjoint = function(theta, data) 0, parameters = list(a = param()),
      data = NULL, gradient = NULL, vectorized = FALSE)),
    native_logjoint = list(native_logjoint, list(
      fn = "bbvi:mvnormal", data = list(0, diag(1)), has_gradient = TRUE,
      package = NULL)),
    bbvi = list(bbvi, list(
      x = m, method = "meanfield", estimator = "reparam", samples = 2,
      max_iter = 20, tol = 0.1, seed = 1, progress = FALSE,
      optimizer = "adagrad", eta = 0.5, window = 10, init = list(mu = 0),
      init_sd = 1, draws = 20, restarts = 1)),
    bbvi_formula = list(bbvi, list(
      x = y ~ x, data = d, family = "gaussian", prior = normal(0, 2.5),
      prior_intercept = normal(0, 10), prior_aux = exponential(1),
      weights = NULL, offset = NULL, subset = NULL, na.action = stats::na.omit,
      method = "meanfield", estimator = "auto", samples = 2, max_iter = 20,
      tol = 0.1, seed = 1, progress = FALSE, path = "auto", nodes = 4,
      optimizer = "adagrad", eta = 0.5, window = 10, init = NULL,
      init_sd = NULL, draws = 20)),
    sample_mcmc = list(sample_mcmc, list(
      x = m, method = "nuts", chains = 1, iter = 20, warmup = 10, seed = 1,
      max_treedepth = 3, adapt_delta = 0.8, init = NULL, init_radius = 2,
      progress = FALSE)),
    sample_mcmc_formula = list(sample_mcmc, list(
      x = b ~ x, data = d, family = stats::binomial(), prior = normal(),
      method = "rwm", chains = 1, iter = 20, seed = 1, progress = FALSE)),
    compare_fits = list(compare_fits, list(vi = fit, mc = mc, pars = NULL)),
    normal = list(normal, list(location = 0, scale = 1)),
    student_t = list(student_t, list(df = 3, location = 0, scale = 1)),
    cauchy = list(cauchy, list(location = 0, scale = 1)),
    exponential = list(exponential, list(rate = 1)),
    elbo = list(elbo, list(fit = fit)),
    elbo_gradients = list(elbo_gradients, list(
      fit = fit, estimator = "reparam", samples = 2, n = 3,
      control_variates = TRUE, lambda = NULL, seed = 1)),
    mcmc_diagnostics = list(mcmc_diagnostics, list(x = mc)),
    posterior_predict = list(posterior_predict, list(
      object = gfit, newdata = data.frame(x = 1:2), draws = 5, offset = NULL,
      trials = NULL)),
    vi_diagnostics = list(vi_diagnostics, list(fit = fit))
  )
}

test_that("one malformed argument at a time gives a clear (rlang) error or a result", {
  fit <- fuzz_fit()
  cases <- fuzz_cases(fit, fuzz_mcmc(), fuzz_glm_fit())
  pool <- fuzz_pool()
  unclear <- character()
  set.seed(fuzz_seed(1))
  for (cname in names(cases)) {
    f <- cases[[cname]][[1]]
    base <- cases[[cname]][[2]]
    for (arg in names(base)) {
      for (v in fuzz_pick(pool, 2)) {
        args <- base
        args[arg] <- list(v)
        res <- fuzz_call(f, args)
        expect_false(identical(as.character(res), "timeout"),
                     label = fuzz_describe(cname, args))
        if (identical(as.character(res), "error")) {
          unclear <- c(unclear, paste0(fuzz_describe(cname, args), ": ",
                                       conditionMessage(attr(res, "condition"))))
        }
      }
    }
  }
  expect_identical(unclear, character())
})

test_that("random malformed calls to every export return or raise an R error", {
  fit <- fuzz_fit()
  cases <- fuzz_cases(fit, fuzz_mcmc(), fuzz_glm_fit())
  pool <- fuzz_pool()
  set.seed(fuzz_seed(20240605))
  exports <- sort(getNamespaceExports("bbvi"))
  n_calls <- 0L
  start <- proc.time()[["elapsed"]]
  for (fname in exports) {
    f <- getExportedValue("bbvi", fname)
    if (!is.function(f)) next
    fmls <- setdiff(names(formals(f)), "...")
    base <- if (fname %in% names(cases)) cases[[fname]][[2]]
    for (i in seq_len(if (fuzz_full()) 100 else 6)) {
      args <- if (is.null(base)) list() else base
      if (length(fmls) > 0) {
        k <- sample.int(length(fmls), 1)
        for (a in sample(fmls, k)) args[a] <- list(pool[[sample.int(length(pool), 1)]])
      }
      res <- fuzz_call(f, args)
      n_calls <- n_calls + 1L
      expect_true(as.character(res) %in% c("ok", "error", "rlang_error"),
                  label = fuzz_describe(fname, args))
    }
  }
  expect_gt(n_calls, 40)
  if (!fuzz_full()) expect_lt(proc.time()[["elapsed"]] - start,
            12 * as.numeric(Sys.getenv("BBVI_FUZZ_TIMEOUT", "5")))
})

test_that("fit methods survive malformed arguments", {
  fit <- fuzz_fit()
  mc <- fuzz_mcmc()
  gfit <- fuzz_glm_fit()
  pool <- fuzz_pool()
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  calls <- list(
    confint = function(v) confint(fit, level = v),
    confint_parm = function(v) confint(fit, parm = v),
    as.matrix = function(v) as.matrix(fit, draws = v),
    as.matrix_psis = function(v) as.matrix(fit, psis = v),
    plot = function(v) plot(fit, pars = v),
    mcmc_confint = function(v) confint(mc, level = v),
    mcmc_plot = function(v) plot(mc, pars = v),
    predict_newdata = function(v) predict(gfit, newdata = v),
    predict_type = function(v) predict(gfit, type = v),
    predict_offset = function(v) predict(gfit, offset = v),
    posterior_predict_newdata = function(v) posterior_predict(gfit, newdata = v, draws = 5),
    posterior_predict_trials = function(v) posterior_predict(gfit, draws = 5, trials = v)
  )
  unclear <- character()
  set.seed(fuzz_seed(2))
  for (nm in names(calls)) {
    for (v in fuzz_pick(pool, 4)) {
      res <- fuzz_call(calls[[nm]], list(v))
      if (identical(as.character(res), "error")) {
        unclear <- c(unclear, paste0(nm, "(", fuzz_describe("", list(v = v)), "): ",
                                     conditionMessage(attr(res, "condition"))))
      }
    }
  }
  expect_identical(unclear, character())
  # the methods on a broken fit object give R errors, not crashes
  broken <- fit
  broken$chol_unc <- matrix(NA_real_, 0, 0)
  broken$lower <- numeric()
  for (g in list(coef, vcov, summary, confint, function(x) as.matrix(x, draws = 5), print)) {
    res <- fuzz_call(function(x) utils::capture.output(g(x)), list(broken))
    expect_true(as.character(res) %in% c("ok", "error", "rlang_error"))
  }
})

test_that("model callbacks returning odd things give clear errors or fits", {
  odd <- list(
    NULL, NA, NA_real_, list(1), "1", c(1, 2), numeric(), matrix(0, 1, 1),
    matrix(0, 2, 2), Inf, -Inf, NaN, 1e308, -1e308, rep(0, 1e5), TRUE,
    complex(real = 1), factor("a"), function() 0, quote(x),
    structure(0, class = "weird")
  )
  fast <- list(seed = 1, max_iter = 40, window = 10, draws = 20, samples = 3)
  unclear <- character()
  set.seed(fuzz_seed(3))
  for (i in if (fuzz_full()) seq_along(odd) else c(1, 4, sample(seq_along(odd)[-c(1, 4)], 4))) {
    v <- odd[[i]]
    models <- list(
      lj = bbvi_model(function(theta, data) v, list(a = param())),
      lj_vec = bbvi_model(function(theta, data) v, list(a = param(dim = 2)),
                          vectorized = TRUE),
      gr = bbvi_model(function(theta, data) 0, list(a = param(dim = 2)),
                      gradient = function(theta, data) v),
      gr_vec = bbvi_model(function(theta, data) rep(0, nrow(theta$a)),
                          list(a = param(dim = 2)), vectorized = TRUE,
                          gradient = function(theta, data) v),
      # central differences: the odd value met in a batch of 2D + 1 points
      # per draw
      lj_num = bbvi_model(function(theta, data) v, list(a = param(dim = 2)),
                          vectorized = TRUE, gradient = "numeric")
    )
    for (nm in names(models)) {
      res <- fuzz_call(function() do.call(bbvi, c(list(models[[nm]]), fast)), list())
      expect_true(as.character(res) %in% c("ok", "error", "rlang_error"),
                  label = paste(nm, i))
      if (identical(as.character(res), "error")) {
        unclear <- c(unclear, paste0(nm, " #", i, ": ",
                                     conditionMessage(attr(res, "condition"))))
      }
    }
  }
  expect_identical(unclear, character())

  # errors, warnings and messages inside the callbacks
  err <- bbvi_model(function(theta, data) stop("inner"), list(a = param()))
  expect_error(bbvi(err, seed = 1), class = "rlang_error")
  warn <- bbvi_model(function(theta, data) { warning("careful"); -theta$a^2 },
                     list(a = param()))
  n_warn <- 0
  fit <- withCallingHandlers(
    bbvi(warn, seed = 1, max_iter = 20, window = 10, draws = 20, samples = 2),
    warning = function(w) {
      n_warn <<- n_warn + 1
      invokeRestart("muffleWarning")
    })
  expect_gt(n_warn, 10)
  expect_s3_class(fit, "bbvi_fit")
  op <- options(warn = 2)
  on.exit(options(op))
  expect_error(bbvi(warn, seed = 1, max_iter = 20, window = 10, draws = 20),
               class = "rlang_error")
})

test_that("parameter dimensions at the edges give fits or clear errors", {
  fast <- list(seed = 1, max_iter = 40, window = 10, draws = 20, samples = 2)
  expect_error(param(dim = 0), class = "rlang_error")
  expect_error(param(dim = 1e308), class = "rlang_error")
  expect_error(param(dim = 2^31), class = "rlang_error")
  expect_error(bbvi_model(function(theta, data) 0, list()), class = "rlang_error")
  # a moderately large dimension works
  big <- bbvi_model(function(theta, data) -0.5 * sum(theta$b^2),
                    list(b = param(dim = 300)),
                    gradient = function(theta, data) -theta$b)
  fit <- suppressWarnings(do.call(bbvi, c(list(big), fast)))
  expect_length(coef(fit), 300)
  # beyond what a D x D Cholesky factor can hold: a clear error, no overflow
  huge <- bbvi_model(function(theta, data) 0, list(b = param(dim = 50000)))
  expect_error(do.call(bbvi, c(list(huge, method = "fullrank"), fast)),
               class = "rlang_error")
  # mean-field needs nothing D x D: no cap
  fit <- suppressWarnings(do.call(bbvi, c(list(huge), fast)))
  expect_length(coef(fit), 50000)
  expect_null(fit$chol_unc)
})

test_that("the compiled examples check their data instead of crashing", {
  fast <- list(seed = 1, max_iter = 400, window = 50, draws = 20)
  bad_data <- list(NULL, list(), list(1), list("a", "b"), list(c(0, 0), diag(3)),
                   list(0, matrix(1:4, 2)), list(NA, 1), 1:3)
  for (d in bad_data) {
    expect_error(
      bbvi_model(native_logjoint("bbvi:mvnormal", has_gradient = TRUE, data = d),
                 list(z = param())),
      class = "rlang_error")
    expect_error(
      bbvi_model(native_logjoint("bbvi:logistic", has_gradient = TRUE),
                 list(z = param()), data = d),
      class = "rlang_error")
  }
  # integer data are fine (converted), and the fit runs
  m <- bbvi_model(native_logjoint("bbvi:mvnormal", has_gradient = TRUE,
                                  data = list(1L, matrix(1L))),
                  list(z = param()))
  fit <- suppressWarnings(do.call(bbvi, c(list(m), fast)))
  expect_equal(unname(coef(fit)), 1, tolerance = 0.2)
  expect_error(native_logjoint("bbvi:nope"), class = "rlang_error")
  expect_error(native_logjoint(NA_character_), class = "rlang_error")
})
