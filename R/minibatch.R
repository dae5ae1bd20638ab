# Custom models in minibatch form: bbvi_model(loglik =, logprior =, n =).
# The model is an ordinary bbvi_model whose log-joint (and gradient) is the
# log prior plus the log-likelihood summed over all n rows in chunks of
# rows; bbvi(model, subsample = B) fits it by minibatches (src/minibatch.c).

# The most values (rows x draws) one loglik call sees when the log-joint
# sums over all rows: memory stays bounded whatever n.
minibatch_chunk_cells <- 2^20

# Builds the model (called by bbvi_model() when loglik, logprior or n is
# given). `lj_given`: whether a logjoint was given too.
minibatch_model <- function(lj_given, parameters, data, gradient, vectorized,
                            factors, loglik, logprior, n) {
  if (lj_given) {
    cli::cli_abort(c("Give either {.arg logjoint} or {.arg loglik}, {.arg logprior} and {.arg n}, not both.",
                     i = "The minibatch form is {.code bbvi_model(loglik = function(theta, data, idx), logprior = function(theta), parameters, data, n)}."),
                   call = NULL)
  }
  if (!is.function(loglik)) abort_arg("loglik", "a function(theta, data, idx)", loglik)
  if (!is.function(logprior)) abort_arg("logprior", "a function(theta)", logprior)
  if (!is.numeric(n) || length(n) != 1 || is.na(n) || !is.finite(n) || n < 1 ||
      n != round(n) || n > .Machine$integer.max) {
    abort_arg("n", "the number of rows of the data: a positive whole number", n)
  }
  if (!is.null(factors)) {
    cli::cli_abort(c("{.arg factors} is not available in the minibatch form.",
                     i = "Its log-joint already has two terms: {.arg logprior} and the sum of {.arg loglik} over rows."),
                   call = NULL)
  }
  if (!is.null(gradient)) {
    ok <- is.list(gradient) && length(gradient) == 2 && !is.null(names(gradient)) &&
      setequal(names(gradient), c("loglik", "logprior")) &&
      all(vapply(gradient, is.function, logical(1)))
    if (!ok) {
      abort_arg("gradient", "NULL or list(loglik = function(theta, data, idx), logprior = function(theta)) in the minibatch form", gradient)
    }
  }
  check_parameters(parameters)
  if (any(vapply(parameters, function(p) isTRUE(p$integer), logical(1)))) {
    cli::cli_abort(c("The minibatch form takes no {.arg integer} parameters.",
                     i = "Write the model with {.arg logjoint} instead."), call = NULL)
  }
  n <- as.integer(n)
  parts <- list(loglik = loglik, logprior = logprior, gradient = gradient, n = n)
  sizes <- vapply(parameters, function(p) p$dim, integer(1))
  nms <- names(parameters)
  par_names <- scalar_names(parameters)
  # log p over all rows, in chunks of rows (checked values, named errors)
  logjoint <- function(theta, data) {
    S <- if (vectorized) nrow_draws(theta) else 1L
    val <- mb_tag(mb_value(mb_call("logprior", logprior(theta)), S, "logprior", vectorized))
    for (idx in mb_chunks(n, S)) {
      val <- val + mb_tag(mb_value(mb_call("loglik", loglik(theta, data, idx)), S, "loglik", vectorized))
    }
    val
  }
  grad_fn <- NULL
  if (!is.null(gradient)) {
    grad_fn <- function(theta, data) {
      S <- if (vectorized) nrow_draws(theta) else 1L
      g <- mb_tag(flatten_gradient(mb_call("gradient", gradient$logprior(theta)), S,
                                   sizes, nms, NULL, par_names))
      for (idx in mb_chunks(n, S)) {
        g <- g + mb_tag(flatten_gradient(mb_call("gradient", gradient$loglik(theta, data, idx)),
                                         S, sizes, nms, NULL, par_names))
      }
      g
    }
  }
  m <- new_bbvi_model(
    logjoint = logjoint, gradient = grad_fn, parameters = parameters,
    data = data, vectorized = vectorized, target = NULL,
    kind = paste0(if (vectorized) "R (vectorized)" else "R (per draw)",
                  ", minibatch form"),
    has_gradient = !is.null(gradient), class = "bbvi_minibatch_model")
  m$minibatch <- parts
  m
}

# The same model on at most 100 rows spread over the data: what the check
# of the callbacks before a fit (assert_model_ok(): vectorization, gradient
# against finite differences, 2 D + 1 log-joint evaluations per point)
# evaluates, instead of passes over all rows.
mb_check_model <- function(model) {
  mb <- model$minibatch
  if (mb$n <= 100L) return(model)
  rows <- unique(as.integer(round(seq(1, mb$n, length.out = 100L))))
  gr <- mb$gradient
  minibatch_model(
    FALSE, model$parameters, model$data,
    if (!is.null(gr)) list(loglik = function(theta, data, idx) gr$loglik(theta, data, rows[idx]),
                           logprior = gr$logprior),
    model$vectorized, NULL,
    function(theta, data, idx) mb$loglik(theta, data, rows[idx]), mb$logprior,
    length(rows))
}

# Rows 1..n in chunks of at most minibatch_chunk_cells / S rows.
mb_chunks <- function(n, S) {
  size <- max(1L, as.integer(minibatch_chunk_cells %/% max(S, 1L)))
  starts <- seq.int(1L, n, by = size)
  lapply(starts, function(a) seq.int(a, min(n, a + size - 1L)))
}

# The user's function called: an error in it names it (`what`), with a
# class that the log-joint's own wrapper (abort_callback()) passes on as it
# is instead of naming the log-joint.
mb_call <- function(what, expr) {
  tryCatch(expr, error = function(e) {
    if (inherits(e, "bbvi_callback_error")) stop(e)
    cli::cli_abort(c("{.arg {what}} threw an error.", x = "{conditionMessage(e)}"),
                   call = NULL, parent = NA, class = "bbvi_callback_error")
  })
}

# An error of the checks below, passed on as it is (see mb_call()).
mb_tag <- function(expr) {
  tryCatch(expr, error = function(e) {
    class(e) <- unique(c("bbvi_callback_error", class(e)))
    stop(e)
  })
}

# A loglik or logprior value checked: S numbers (one per draw), not +Inf.
mb_value <- function(val, S, what, vectorized, call = NULL) {
  check_callback_value(val, S, what, vectorized, call)
  if (any(val == Inf, na.rm = TRUE)) {
    cli::cli_abort(c("{.arg {what}} returned +Inf.",
                     i = "A log density must be finite, or -Inf/NA outside the support."),
                   call = call)
  }
  as.double(val)
}

# `subsample` for a custom model: NULL, or rows per minibatch. NULL also
# when it covers every row (the full-data path).
check_subsample_model <- function(subsample, model) {
  if (is.null(subsample)) return(NULL)
  if (!inherits(model, "bbvi_minibatch_model")) {
    cli::cli_abort(c("{.arg subsample} needs a model in minibatch form.",
                     i = "Write it as {.code bbvi_model(loglik = function(theta, data, idx), logprior = function(theta), parameters, data, n)}."),
                   call = NULL)
  }
  n <- model$minibatch$n
  if (!is.numeric(subsample) || length(subsample) != 1 || is.na(subsample) ||
      !is.finite(subsample) || subsample != round(subsample) || subsample < 1) {
    abort_arg("subsample", "NULL or a whole number of rows per minibatch", subsample)
  }
  if (!isTRUE(model$has_gradient)) {
    cli::cli_abort(c("{.arg subsample} needs the gradients of {.arg loglik} and {.arg logprior}.",
                     i = "Give {.code gradient = list(loglik = function(theta, data, idx), logprior = function(theta))} to {.fn bbvi_model}, or fit all rows (drop {.arg subsample}).",
                     i = "Without gradients, minibatch estimates of the score gradient are too noisy to reach the full-data answer."),
                   call = NULL)
  }
  if (subsample >= n) return(NULL)
  as.integer(subsample)
}

# The targets the C loop calls: one block's log-likelihood (its rows in
# `env$idx`, set by C before each call) and the log prior, both with their
# gradients, with the checks and error messages of the user's functions.
mb_target_specs <- function(model, err_call) {
  mb <- model$minibatch
  data <- model$data
  vectorized <- model$vectorized
  sizes <- model$sizes
  nms <- names(model$parameters)
  par_names <- model$par_names
  env <- new.env(parent = emptyenv())
  guard <- function(what, expr) {
    tryCatch(expr, error = function(e) abort_callback(what, e, err_call))
  }
  value <- function(val, theta, what) {
    mb_value(val, if (vectorized) nrow_draws(theta) else 1L, what, vectorized, err_call)
  }
  grad <- function(g, theta) {
    S <- if (vectorized) nrow_draws(theta) else 1L
    flatten_gradient(g, S, sizes, nms, err_call, par_names)
  }
  blk_fn <- function(theta) value(guard("loglik", mb$loglik(theta, data, env$idx)), theta, "loglik")
  blk_gr <- function(theta) grad(guard("gradient", mb$gradient$loglik(theta, data, env$idx)), theta)
  pr_fn <- function(theta) value(guard("logprior", mb$logprior(theta)), theta, "logprior")
  pr_gr <- function(theta) grad(guard("gradient", mb$gradient$logprior(theta)), theta)
  base <- list(type = "r", vectorized = vectorized, sizes = as.integer(sizes),
               names = nms, rho = environment(), layout = transform_layout(model))
  list(block = c(list(fn_call = as.call(list(blk_fn, NULL)),
                      gr_call = as.call(list(blk_gr, NULL))), base),
       prior = c(list(fn_call = as.call(list(pr_fn, NULL)),
                      gr_call = as.call(list(pr_gr, NULL))), base),
       env = env)
}

# Minibatch VI (src/minibatch.c); returns what vi_engine() returns, plus
# `minibatch` (epochs, row evaluations, ...).
minibatch_engine <- function(model, subsample, method, samples, max_iter, tol,
                             init_mean, init_sd, err_call) {
  D <- length(init_mean)
  M <- if (is.null(samples)) max(30L, 2L * D + 2L) else samples
  check_count(M, "samples")
  if (M < 2L * D + 2L) {
    cli::cli_abort(c("{.arg samples} must be at least {2L * D + 2L} (twice the number of parameters, plus 2) with {.arg subsample}.",
                     i = "The minibatch path estimates q's curvature from gradients at antithetic pairs of draws: fewer leave directions unseen."),
                   call = err_call)
  }
  M <- as.integer(M + M %% 2L)
  if (is.null(tol)) tol <- 0.02
  check_positive(tol, "tol")
  check_count(max_iter, "max_iter")
  n <- model$minibatch$n
  # a random partition of the rows (the data may be sorted), each block's
  # rows in increasing order
  perm <- sample.int(n)
  nb <- ceiling(n / subsample)
  blk <- rep(seq_len(nb), length.out = n)
  rows <- unlist(lapply(split(perm, blk), sort), use.names = FALSE)
  start <- c(0L, cumsum(tabulate(blk, nb)))
  mem <- as.double(nb) * D * D * 8
  if (mem > 2^31) {
    cli::cli_abort(c("{.arg subsample} = {subsample} makes {nb} minibatches, whose curvature sums need {format(mem / 2^30, digits = 3)} GB for {D} parameters.",
                     i = "Use a larger {.arg subsample}."), call = err_call)
  }
  specs <- mb_target_specs(model, err_call)
  control <- list(family = method, samples = M, rows = as.integer(rows),
                  start = as.integer(start), init_mean = as.double(init_mean),
                  init_sd = as.double(init_sd),
                  max_epochs = as.integer(min(max_iter, 100L)),
                  tol = as.double(tol), max_step = 2, blk_env = specs$env)
  t0 <- proc.time()[["elapsed"]]
  out <- .Call(C_vi_minibatch, specs$block, specs$prior, as.double(model$lower),
               as.double(model$upper), control)
  res <- out[[1]]
  st <- out[[2]]
  res$time <- proc.time()[["elapsed"]] - t0
  if (res$status == "no_finite") {
    cli::cli_abort(c(
      "{.arg loglik} or {.arg logprior} was not finite (NA, NaN or -Inf) at some of q's draws, even after 30 steps back.",
      i = "Check that they return finite values inside the parameters' support, and the declared bounds."),
      call = err_call)
  }
  res$minibatch <- list(batch = as.integer(subsample), blocks = as.integer(nb),
                        epochs = as.integer(st[1]), row_evals = st[2],
                        prior_evals = st[3], backoffs = as.integer(st[4]),
                        newton_step = st[5], samples = M)
  res$epochs <- res$minibatch$epochs
  # evaluations in units of full-data log-joint evaluations (draw-passes)
  res$n_logp <- res$n_grad <- st[2] / n
  res$control <- list(samples = M, tol = tol)
  res$method <- method
  res$estimator <- "reparam"
  res$optimizer <- "newton"
  res$restarts <- 0L
  res$dropped_draws <- 0
  res$stop_reason <- if (isTRUE(res$converged)) "converged" else
    sprintf("%d epochs reached with the last full-data Newton step at %s sds (tol %s)",
            res$epochs, format(signif(res$minibatch$newton_step, 2)), format(tol))
  res$path <- sprintf("minibatch (%s rows, %d blocks, %d fixed draws)",
                      format(subsample, big.mark = ","), nb, M)
  if (!isTRUE(res$converged)) {
    cli::cli_warn(c("The minibatch fit did not converge: {res$stop_reason}.",
                    i = "Increase {.arg max_iter} (epochs, at most 100) or {.arg tol}."))
  }
  res
}

# Diagnostics of a minibatch fit: each draw's log-joint is a pass over all
# rows, so only this many draws (in chunked calls) judge q.
minibatch_diag_draws <- 100L

# bbvi(model, subsample = B) for a model in minibatch form.
bbvi_minibatch <- function(x, subsample, method, samples, max_iter, tol, seed,
                           init, init_sd, draws, diagnostic_draws, call) {
  if (!method %in% c("meanfield", "fullrank")) {
    cli::cli_abort("With {.arg subsample}, {.arg method} must be {.val meanfield} or {.val fullrank}.",
                   call = call("bbvi"))
  }
  init_mean <- init_unconstrained(init, x)
  init_sd <- check_init_sd(init_sd, length(init_mean))
  check_dimension(length(init_mean), method)
  check_count(diagnostic_draws, "diagnostic_draws")
  checks <- assert_model_ok(mb_check_model(x), err_call = call("bbvi"))
  with_seed(seed, {
    res <- minibatch_engine(x, subsample, method, samples, max_iter, tol,
                            init_mean, init_sd, err_call = call("bbvi"))
    t0 <- proc.time()[["elapsed"]]
    n_diag <- min(diagnostic_draws, minibatch_diag_draws)
    fit <- new_bbvi_fit(x, res, call = call, draws = draws,
                        diagnostic_draws = n_diag,
                        extra = list(start = "init", minibatch = res$minibatch,
                                     epochs = res$epochs))
    fit$minibatch$diagnostic_draws <- fit$diagnostics$n_draws
    st <- list(evals = c(logp = 0, gradient = 0), time = 0)
    fit$evals <- fit_evals(st, res, fit$diagnostics$n_draws,
                           proc.time()[["elapsed"]] - t0, checks)
    fit
  })
}
