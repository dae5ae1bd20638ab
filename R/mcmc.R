#' MCMC on the same models as the variational fits
#'
#' Draws from the exact posterior of a [bbvi_model()] (or of a GLM given by a
#' formula) with the No-U-Turn sampler or adaptive random-walk Metropolis, so
#' that a variational fit can be checked against it (see [compare_fits()]).
#' The samplers run in C on the unconstrained scale (bounded parameters
#' transformed as in [param()], log-Jacobian included); draws are reported
#' on the constrained scale.
#'
#' **NUTS** (`method = "nuts"`, needs the gradient of the log-joint, which
#' may be `bbvi_model(gradient = "numeric")`) is the
#' multinomial No-U-Turn sampler as implemented in Stan (Hoffman and Gelman
#' 2014; Betancourt 2017): trajectories are doubled until the generalised
#' no-U-turn criterion fails (also checked across the two halves of every
#' subtree) or the tree depth reaches `max_treedepth`; the draw is taken
#' from the trajectory with probabilities proportional to exp(-H).
#' Warmup follows Stan: dual averaging of the step size towards an average
#' acceptance of `adapt_delta`, and a diagonal mass matrix estimated from
#' the draws of doubling windows (75 iterations of initial buffer, first
#' window 25, terminal buffer 50; scaled down for short warmups). A
#' transition whose energy error exceeds 1000 is *divergent*: it is counted
#' and reported, and usually means the posterior has regions the step size
#' cannot resolve.
#'
#' **RWM** (`method = "rwm"`, needs only log-joint values) is random-walk
#' Metropolis with a Gaussian proposal. During warmup its covariance is the
#' (regularised) sample covariance of the previous window's draws, on the
#' same window schedule, and its scale is tuned by dual averaging towards an
#' acceptance rate of 0.44 in one dimension and 0.234 from five dimensions
#' on; both are fixed after warmup, so the kept draws form a proper Markov
#' chain.
#'
#' Each chain starts from its own point drawn uniformly in
#' (-`init_radius`, `init_radius`) on the unconstrained scale (as Stan), or
#' from `init`.
#'
#' **Parallel chains.** Chains run in parallel under a parallel `future`
#' plan (e.g. `future::plan("multisession")`, `"multicore"`, `"cluster"`,
#' or a scheduler through `future.batchtools`; needs `future.apply`), one
#' after another otherwise. Every chain draws from its own L'Ecuyer-CMRG
#' stream ([parallel::nextRNGStream()]) derived from `seed` (or from R's
#' stream), so the draws are the same bit for bit whatever the plan and the
#' number of workers. Global variables that the model's functions use are
#' sent to the workers with them.
#'
#' @param x A [bbvi_model()] or a formula (see [bbvi()] for the GLM
#'   arguments, passed in `...`).
#' @param ... For the formula method, the GLM arguments of [bbvi()]
#'   (`data`, `family`, priors, `weights`, ...); otherwise must be empty.
#' @param method `"nuts"` (default; needs a gradient, a function or
#'   `"numeric"`) or `"rwm"`.
#' @param chains Number of chains.
#' @param iter Iterations per chain, warmup included.
#' @param warmup Warmup (adaptation) iterations per chain, discarded.
#' @param seed `NULL` to use R's random number stream (so [set.seed()] before
#'   the call reproduces the draws) or a number: the draws are then
#'   reproducible bit for bit and R's stream is left as it was.
#' @param max_treedepth Largest NUTS tree depth (at most 2^max_treedepth
#'   leapfrog steps per iteration).
#' @param adapt_delta Target average acceptance probability of NUTS.
#' @param init `NULL` for random starts, or a named list of parameter values
#'   on the constrained scale used by every chain.
#' @param init_radius Random starts are uniform in (-init_radius,
#'   init_radius) on the unconstrained scale.
#' @param progress Report each chain as it finishes.
#' @return An object of class `bbvi_mcmc`: the post-warmup draws as an
#'   iterations x chains x parameters array (`$draws`), per-iteration sampler
#'   values (`$sampler`: chain, iteration, `lp__`, `accept_stat__`,
#'   `treedepth__`, `n_leapfrog__`, `divergent__`, `energy__`), final step
#'   sizes (`$stepsize`) and inverse metrics per chain (`$inv_metric`: for
#'   NUTS the diagonal inverse metric, a vector; for RWM the adapted
#'   proposal covariance, a matrix, the proposal being
#'   N(current, stepsize^2 inv_metric) on the unconstrained scale), the number of divergent transitions
#'   (`$divergences`, after warmup), R-hat and ESS (`$diagnostics`, see
#'   [mcmc_diagnostics()]), and run times (`$time`, seconds). See
#'   [bbvi_mcmc-methods] for what to do with it.
#' @references Hoffman, M. D. and Gelman, A. (2014). The No-U-Turn sampler.
#'   *JMLR* 15, 1593-1623. Betancourt, M. (2017). A conceptual introduction
#'   to Hamiltonian Monte Carlo. arXiv:1701.02434. Haario, H., Saksman, E.
#'   and Tamminen, J. (2001). An adaptive Metropolis algorithm. *Bernoulli*
#'   7(2), 223-242.
#' @seealso [compare_fits()] to set a variational fit against the draws.
#' @examples
#' # Normal mean and sd, with gradient: NUTS
#' y <- c(1.2, 0.4, 2.1, 1.7, 0.9)
#' m <- bbvi_model(
#'   function(theta, data) sum(dnorm(data, theta$mu, theta$sigma, log = TRUE)) +
#'     dnorm(theta$mu, 0, 10, log = TRUE) + dexp(theta$sigma, 1, log = TRUE),
#'   parameters = list(mu = param(), sigma = param(lower = 0)), data = y,
#'   gradient = function(theta, data) {
#'     r <- data - theta$mu; s <- theta$sigma
#'     list(mu = sum(r) / s^2 - theta$mu / 100,
#'          sigma = -length(data) / s + sum(r^2) / s^3 - 1)
#'   })
#' mc <- sample_mcmc(m, chains = 2, iter = 400, seed = 1)
#' summary(mc)
#' # Without gradient: random-walk Metropolis
#' mc2 <- sample_mcmc(m, method = "rwm", chains = 2, iter = 1000, seed = 1)
#' coef(mc2)
#' @export
sample_mcmc <- function(x, ..., method = c("nuts", "rwm"), chains = 4,
                        iter = 2000, warmup = floor(iter / 2), seed = NULL) {
  UseMethod("sample_mcmc")
}

#' @export
sample_mcmc.default <- function(x, ..., method = c("nuts", "rwm"), chains = 4,
                                iter = 2000, warmup = floor(iter / 2),
                                seed = NULL) {
  cli::cli_abort(c("{.fn sample_mcmc} needs a formula or a model made by {.fn bbvi_model}.",
                   x = "Its first argument is {describe(x)}."))
}

#' @rdname sample_mcmc
#' @export
sample_mcmc.bbvi_model <- function(x, ..., method = c("nuts", "rwm"),
                                   chains = 4, iter = 2000,
                                   warmup = floor(iter / 2), seed = NULL,
                                   max_treedepth = 10, adapt_delta = 0.8,
                                   init = NULL, init_radius = 2,
                                   progress = interactive()) {
  call <- match.call()
  call[[1]] <- quote(sample_mcmc)
  check_dots_empty(...)
  disc <- integer_parameters(x)
  if (length(disc) > 0) {
    cli::cli_abort(c("{.fn sample_mcmc} cannot sample discrete parameters.",
                     x = "{.field {disc}} {?is an/are} integer parameter{?s} ({.code param(integer = TRUE)}).",
                     i = "Fit the model with {.fn bbvi}, which gives discrete parameters a categorical q, or sum them out of the log-joint and sample the rest."),
                   call = call("sample_mcmc"))
  }
  assert_model_ok(x, err_call = call("sample_mcmc"))
  mcmc_engine(x, r_target_spec(x, err_call = call("sample_mcmc")),
              method = method, chains = chains, iter = iter, warmup = warmup,
              seed = seed, max_treedepth = max_treedepth,
              adapt_delta = adapt_delta, init = init, init_radius = init_radius,
              progress = progress, call = call)
}

#' @rdname sample_mcmc
#' @param data,family,prior,prior_intercept,prior_aux,weights,offset,subset,na.action,center
#'   The GLM, as for [bbvi()] with a formula: same defaults (rstanarm's
#'   autoscaled priors, the intercept prior on centred predictors), so that
#'   a VI fit and MCMC target the same posterior.
#' @examples
#' # A GLM through a formula
#' d <- data.frame(x = c(-1, -0.5, 0, 0.5, 1, 1.5), y = c(0, 0, 1, 0, 1, 1))
#' mc3 <- sample_mcmc(y ~ x, data = d, family = binomial(), chains = 2,
#'                    iter = 500, seed = 1)
#' mc3
#' @export
sample_mcmc.formula <- function(x, data = NULL, family = stats::gaussian(),
                                prior = normal(0, 2.5, autoscale = TRUE),
                                prior_intercept = normal(0, 2.5, autoscale = TRUE),
                                prior_aux = exponential(1, autoscale = TRUE),
                                weights = NULL, offset = NULL, subset = NULL,
                                na.action = stats::na.omit, center = TRUE, ...,
                                method = c("nuts", "rwm"), chains = 4,
                                iter = 2000, warmup = floor(iter / 2),
                                seed = NULL, max_treedepth = 10,
                                adapt_delta = 0.8, init = NULL,
                                init_radius = 2, progress = interactive()) {
  call <- match.call()
  call[[1]] <- quote(sample_mcmc)
  check_dots_empty(...)
  check_flag(center, "center")
  # as bbvi(): rstanarm centres the default intercept prior at mean(y)
  if (missing(prior_intercept) && is.list(prior_intercept)) prior_intercept$default <- TRUE
  setup <- glm_setup(x, data, family, prior, prior_intercept, prior_aux,
                     weights = weights, offset = offset, subset = subset,
                     na.action = na.action, call = call, center = center)
  if (!is.null(init) && !is.null(setup$info$xbar)) {
    # the chains run on the centred scale: move the user's start there
    nms <- names(setup$model$parameters)
    init <- as.list(stats::setNames(center_init(unlist(init[nms]), setup$info), nms))
  }
  mc <- mcmc_engine(setup$model, setup$model$target, method = method,
                    chains = chains, iter = iter, warmup = warmup, seed = seed,
                    max_treedepth = max_treedepth, adapt_delta = adapt_delta,
                    init = init, init_radius = init_radius, progress = progress,
                    call = call, class = "bbvi_glm_mcmc", extra = setup$info)
  uncenter_mcmc(mc)
}

# Draws of the centred-scale intercept back to the original scale, as
# uncenter_fit() does for VI fits.
uncenter_mcmc <- function(mc) {
  if (is.null(mc$xbar)) return(mc)
  b <- names(mc$xbar)
  for (k in seq_len(dim(mc$draws)[2])) {
    mc$draws[, k, "(Intercept)"] <- mc$draws[, k, "(Intercept)"] -
      drop(matrix(mc$draws[, k, b], ncol = length(b)) %*% mc$xbar)
  }
  mc$diagnostics <- mcmc_diagnostics(mc$draws)
  rownames(mc$diagnostics) <- mc$par_names
  mc
}

# family(), formula() and nobs() are stats generics: import them so that
# their methods register when only base is attached (R CMD check loads the
# namespace that way).
#' @importFrom stats family formula nobs
#' @rdname bbvi_mcmc-methods
#' @export
nobs.bbvi_glm_mcmc <- function(object, ...) object$nobs

#' @rdname bbvi_mcmc-methods
#' @export
formula.bbvi_glm_mcmc <- function(x, ...) x$formula

#' @rdname bbvi_mcmc-methods
#' @export
family.bbvi_glm_mcmc <- function(object, ...) object$family

# The engine under every MCMC run: validates, runs the chains through C (in
# parallel under a parallel future plan), assembles the bbvi_mcmc object.
mcmc_engine <- function(model, spec, method, chains, iter, warmup, seed,
                        max_treedepth, adapt_delta, init, init_radius,
                        progress, call, class = character(), extra = list()) {
  method <- match_arg(method, c("nuts", "rwm"), "method")
  if (method == "nuts" && !isTRUE(model$has_gradient)) {
    cli::cli_abort(c("{.code method = \"nuts\"} needs the gradient of the log-joint.",
                     i = "Give {.arg gradient} to {.fn bbvi_model} (a function, or {.val numeric} for central differences), or use {.code method = \"rwm\"}."),
                   call = NULL)
  }
  check_count(chains, "chains")
  check_count(iter, "iter", min = 2)
  check_count(warmup, "warmup", min = 0)
  if (warmup >= iter) abort_arg("warmup", sprintf("below `iter` (%d)", iter), warmup)
  check_count(max_treedepth, "max_treedepth")
  if (max_treedepth > 30) abort_arg("max_treedepth", "at most 30", max_treedepth)
  if (!is.numeric(adapt_delta) || length(adapt_delta) != 1 || is.na(adapt_delta) ||
      adapt_delta <= 0 || adapt_delta >= 1) {
    abort_arg("adapt_delta", "a number strictly between 0 and 1", adapt_delta)
  }
  check_positive(init_radius, "init_radius")
  check_flag(progress, "progress")
  init_unc <- if (is.null(init)) NULL else init_unconstrained(init, model)
  control <- list(method = method, iter = as.integer(iter),
                  warmup = as.integer(warmup),
                  max_depth = as.integer(max_treedepth),
                  delta = as.double(adapt_delta), init = init_unc,
                  init_radius = as.double(init_radius), stepsize = 1)
  lower <- as.double(model$lower)
  upper <- as.double(model$upper)
  # one L'Ecuyer-CMRG stream per chain: the same draws whatever the future
  # plan and the number of workers (see R/parallel.R)
  streams <- rng_streams(chains, seed)
  if (parallel_plan()) model <- carry_model_globals(model)
  res <- run_tasks(chains, streams, mcmc_chain, model = model, lower = lower,
                   upper = upper, control = control, chains = chains,
                   progress = progress)
  times <- vapply(res, `[[`, numeric(1), "time")
  new_bbvi_mcmc(model, res, method = method, iter = iter, warmup = warmup,
                max_treedepth = max_treedepth, adapt_delta = adapt_delta,
                times = times, call = call, class = class, extra = extra)
}

# One chain, wherever it runs: the target is rebuilt there (a compiled
# log-joint's address does not survive serialisation).
mcmc_chain <- function(k, model, lower, upper, control, chains, progress) {
  spec <- r_target_spec(model, err_call = call("sample_mcmc"))
  start <- proc.time()[["elapsed"]]
  res <- tryCatch(
    .Call(C_mcmc_sample, spec, lower, upper, control),
    error = function(e) {
      if (inherits(e, "rlang_error")) stop(e)
      cli::cli_abort(c("Chain {k} failed.", x = "{conditionMessage(e)}"),
                     call = NULL)
    })
  res$time <- proc.time()[["elapsed"]] - start
  if (progress) cli::cli_inform("Chain {k}/{chains} finished in {round(res$time, 2)} s.")
  res
}

new_bbvi_mcmc <- function(model, res, method, iter, warmup, max_treedepth,
                          adapt_delta, times, call, class = character(),
                          extra = list()) {
  nms <- model$par_names
  D <- length(nms)
  chains <- length(res)
  n <- iter - warmup
  draws <- array(NA_real_, c(n, chains, D),
                 dimnames = list(iteration = NULL, chain = NULL, parameter = nms))
  for (k in seq_len(chains)) draws[, k, ] <- t(res[[k]]$draws)
  col <- function(what) unlist(lapply(res, `[[`, what), use.names = FALSE)
  sampler <- data.frame(
    chain = rep(seq_len(chains), each = n), iteration = rep(seq_len(n), chains),
    lp__ = col("lp"), accept_stat__ = col("accept_stat"),
    treedepth__ = col("treedepth"), n_leapfrog__ = col("n_leapfrog"),
    divergent__ = col("divergent"), energy__ = col("energy"))
  unms <- unc_names(model)   # the metric is on zeta's coordinates
  metric <- lapply(res, function(r) {
    m <- r$inv_metric
    if (is.matrix(m)) dimnames(m) <- list(unms, unms) else names(m) <- unms
    m
  })
  diagn <- mcmc_diagnostics(draws)
  rownames(diagn) <- nms
  out <- c(list(
    call = call, model = model, method = method, par_names = nms,
    lower = model$lower, upper = model$upper,
    chains = chains, iter = iter, warmup = warmup,
    max_treedepth = max_treedepth, adapt_delta = adapt_delta,
    draws = draws, sampler = sampler,
    stepsize = vapply(res, `[[`, numeric(1), "stepsize"),
    inv_metric = metric,
    divergences = sum(sampler$divergent__),
    warmup_divergences = sum(vapply(res, `[[`, integer(1), "warmup_divergent")),
    max_treedepth_hits = if (method == "nuts") sum(sampler$treedepth__ >= max_treedepth) else 0L,
    diagnostics = diagn,
    inits = do.call(cbind, lapply(res, `[[`, "init")),
    time = sum(times), time_chains = times
  ), extra)
  out <- structure(out, class = c(class, "bbvi_mcmc"))
  warn_mcmc(out)
  out
}

warn_mcmc <- function(x) {
  if (x$divergences > 0) {
    cli::cli_warn(c(
      "{x$divergences} of {nrow(x$sampler)} transitions after warmup were divergent.",
      i = "The draws may be biased. Try a larger {.arg adapt_delta} or reparameterise the model."))
  }
  rh <- x$diagnostics$rhat
  if (any(rh > 1.05, na.rm = TRUE)) {
    bad <- x$par_names[which(rh > 1.05)]
    cli::cli_warn(c(
      "R-hat above 1.05 for {length(bad)} parameter{?s}: the chains have not mixed.",
      i = "Run more iterations; see {.code summary(mc)}."))
  }
  invisible(x)
}

#' Methods for MCMC results
#'
#' `coef()` gives posterior means and `vcov()` the posterior covariance of the
#' post-warmup draws (constrained scale); `confint()` equal-tailed intervals
#' from their quantiles; `as.matrix()` all post-warmup draws (chains stacked,
#' one named column per scalar parameter) and `as.array()` the iterations x
#' chains x parameters array; `summary()` a table of mean, sd, quantiles,
#' R-hat, bulk-ESS and tail-ESS, with the sampler's divergences, step sizes
#' and tree depths; `plot()` trace plots and marginal densities by chain.
#'
#' @param object,x A `bbvi_mcmc` from [sample_mcmc()].
#' @param ... Unused.
#' @name bbvi_mcmc-methods
#' @return See the description.
#' @examples
#' m <- bbvi_model(function(theta, data) dnorm(theta$mu, 1, 2, log = TRUE),
#'                 list(mu = param()),
#'                 gradient = function(theta, data) -(theta$mu - 1) / 4)
#' mc <- sample_mcmc(m, chains = 2, iter = 500, seed = 1)
#' mc
#' coef(mc); vcov(mc); confint(mc)
#' dim(as.matrix(mc))
#' summary(mc)
#' plot(mc)
NULL

#' @rdname bbvi_mcmc-methods
#' @export
as.matrix.bbvi_mcmc <- function(x, ...) {
  d <- dim(x$draws)
  out <- matrix(x$draws, d[1] * d[2], d[3])
  colnames(out) <- x$par_names
  out
}

#' @rdname bbvi_mcmc-methods
#' @export
as.array.bbvi_mcmc <- function(x, ...) x$draws

#' @rdname bbvi_mcmc-methods
#' @export
coef.bbvi_mcmc <- function(object, ...) colMeans(as.matrix(object))

#' @rdname bbvi_mcmc-methods
#' @export
vcov.bbvi_mcmc <- function(object, ...) stats::cov(as.matrix(object))

#' @rdname bbvi_mcmc-methods
#' @param parm Parameters (names or indices); all by default.
#' @param level Probability of the interval.
#' @export
confint.bbvi_mcmc <- function(object, parm, level = 0.95, ...) {
  if (!is.numeric(level) || length(level) != 1 || is.na(level) ||
      level <= 0 || level >= 1) {
    abort_arg("level", "a probability strictly between 0 and 1", level)
  }
  a <- (1 - level) / 2
  q <- draw_quantiles(as.matrix(object), c(a, 1 - a))
  if (!missing(parm)) q <- q[select_parm(object, parm), , drop = FALSE]
  q
}

draw_quantiles <- function(draws, probs) {
  q <- t(apply(draws, 2, stats::quantile, probs = probs, names = FALSE))
  if (length(probs) == 1) q <- t(q)
  dimnames(q) <- list(colnames(draws), percent_labels(probs))
  q
}

#' @rdname bbvi_mcmc-methods
#' @export
summary.bbvi_mcmc <- function(object, ...) {
  check_dots_empty(...)
  dr <- as.matrix(object)
  sds <- apply(dr, 2, stats::sd)
  # Monte Carlo standard error of the mean: sd / sqrt(ESS of the mean)
  ess_mean <- vapply(seq_len(dim(object$draws)[3]), function(k) {
    diag_ess_mean(matrix(object$draws[, , k], nrow = dim(object$draws)[1]))
  }, numeric(1))
  tab <- cbind(mean = colMeans(dr), sd = sds,
               draw_quantiles(dr, c(0.025, 0.5, 0.975)),
               mcse_mean = sds / sqrt(ess_mean),
               rhat = object$diagnostics$rhat,
               ess_bulk = object$diagnostics$ess_bulk,
               ess_tail = object$diagnostics$ess_tail)
  structure(list(table = tab, fit = object), class = "summary.bbvi_mcmc")
}

#' @rdname bbvi_mcmc-methods
#' @export
print.summary.bbvi_mcmc <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  check_digits(digits)
  print_mcmc_header(x$fit)
  cat("\n")
  # two blocks, as rstanarm's summary, so that each fits in 80 columns
  est <- c("mean", "sd", "2.5%", "50%", "97.5%")
  cat("Estimates:\n")
  print_table(x$table[, est, drop = FALSE], digits)
  cat("\nMCMC diagnostics:\n")
  print_table(x$table[, setdiff(colnames(x$table), est), drop = FALSE], digits,
              integer = c("ess_bulk", "ess_tail"), fixed = c(rhat = 3L))
  cat("\nmcse_mean: Monte Carlo standard error of the mean; R-hat and ESS as in\n",
      "the posterior package (rank-normalised, split chains).\n", sep = "")
  invisible(x)
}

print_mcmc_header <- function(x) {
  say(sprintf("MCMC (bbvi): %s", if (x$method == "nuts")
    "No-U-Turn sampler, diagonal metric" else "adaptive random-walk Metropolis"))
  say_call(x$call)
  say(sprintf("%d chain%s x %d iterations (%d warmup); %d draws kept; %s",
              x$chains, if (x$chains == 1) "" else "s", x$iter, x$warmup,
              x$chains * (x$iter - x$warmup), format_seconds(x$time)))
  acc <- mean(x$sampler$accept_stat__)
  if (x$method == "nuts") {
    say(sprintf("Step size %s; mean tree depth %.1f (max %d reached %d times); mean accept %.2f",
                paste(format(x$stepsize, digits = 3), collapse = ", "),
                mean(x$sampler$treedepth__), x$max_treedepth,
                x$max_treedepth_hits, acc))
    say(sprintf("Divergent transitions: %d after warmup (%d during warmup)",
                x$divergences, x$warmup_divergences))
  } else {
    say(sprintf("Proposal scale %s; mean acceptance %.2f",
                paste(format(x$stepsize, digits = 3), collapse = ", "), acc))
  }
}

#' @rdname bbvi_mcmc-methods
#' @param digits Significant digits of every number in the table.
#' @details `print()` is compact, as rstanarm's: the posterior median and
#'   MAD_SD (1.4826 times the median absolute deviation) of each parameter,
#'   and the worst R-hat and smallest ESS; `summary()` adds means, sds,
#'   quantiles, the Monte Carlo standard error of each mean, R-hat and ESS.
#' @export
print.bbvi_mcmc <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  check_digits(digits)
  print_mcmc_header(x)
  dr <- as.matrix(x)
  tab <- cbind(Median = apply(dr, 2, stats::median), MAD_SD = apply(dr, 2, stats::mad))
  cat("\n")
  print_compact(tab, digits)
  print_mcmc_convergence(x)
  invisible(x)
}

print_mcmc_convergence <- function(x) {
  dg <- x$diagnostics
  if (all(is.na(dg$rhat))) return(invisible())
  worst <- which.max(dg$rhat)
  least <- which.min(dg$ess_bulk)
  cat(sprintf("\nLargest R-hat %s (%s); smallest bulk-ESS %s (%s)%s\n",
              formatC(dg$rhat[worst], digits = 3, format = "f"), x$par_names[worst],
              format(round(dg$ess_bulk[least])), x$par_names[least],
              if (dg$rhat[worst] > 1.01) ": not converged, see summary()" else ""))
}

#' @rdname bbvi_mcmc-methods
#' @param plotfun `NULL` for traces and densities, or `"areas"`,
#'   `"intervals"`, `"dens"`, `"hist"`, `"trace"` (bayesplot's `mcmc_` plots,
#'   all parameters unless `pars` says otherwise).
#' @param pars Parameters to show (names). By default all of them; the
#'   default plot (a trace and densities by chain per parameter) fits 4 on a
#'   page and, with more, shows the first 4 and says so in a message.
#' @export
plot.bbvi_mcmc <- function(x, plotfun = NULL, pars = NULL, ...) {
  if (!is.null(plotfun)) return(plot_dispatch(x, plotfun, pars, ...))
  check_dots_empty(...)
  nms <- default_pars(x$par_names, 4L, pars)
  if (!is.character(nms) || length(nms) == 0 || !all(nms %in% x$par_names)) {
    abort_arg("pars", "names of the parameters", pars)
  }
  old <- graphics::par(mfrow = c(length(nms), 2), mar = c(4, 4, 2, 1))
  on.exit(graphics::par(old))
  cols <- grDevices::hcl.colors(x$chains, "Dark 3", alpha = 0.7)
  for (nm in nms) {
    v <- x$draws[, , nm, drop = FALSE]
    graphics::matplot(matrix(v, ncol = x$chains), type = "l", lty = 1, col = cols,
                      xlab = "iteration (after warmup)", ylab = nm,
                      main = sprintf("%s: trace", nm))
    dens <- lapply(seq_len(x$chains), function(k) stats::density(v[, k, 1]))
    yl <- c(0, max(vapply(dens, function(d) max(d$y), numeric(1))))
    xl <- range(vapply(dens, function(d) range(d$x), numeric(2)))
    graphics::plot(NA, xlim = xl, ylim = yl, xlab = nm, ylab = "density",
                   main = sprintf("%s: by chain", nm))
    for (k in seq_along(dens)) graphics::lines(dens[[k]], col = cols[k])
  }
  invisible(x)
}

#' @rdname bbvi_mcmc-methods
#' @details `posterior::as_draws_array()` (and `as_draws()`,
#'   `as_draws_matrix()`, `as_draws_df()`) keep the chains, so
#'   `posterior::summarise_draws()` and `bayesplot` work directly;
#'   `coda::as.mcmc()` gives an `mcmc.list`, one element per chain.
#' @exportS3Method posterior::as_draws_array
as_draws_array.bbvi_mcmc <- function(x, ...) {
  need_pkg("posterior")
  a <- x$draws
  dimnames(a) <- list(iteration = NULL, chain = NULL, variable = x$par_names)
  posterior::as_draws_array(a)
}

#' @rdname bbvi_mcmc-methods
#' @exportS3Method posterior::as_draws
as_draws.bbvi_mcmc <- function(x, ...) as_draws_array.bbvi_mcmc(x, ...)

#' @rdname bbvi_mcmc-methods
#' @exportS3Method posterior::as_draws_matrix
as_draws_matrix.bbvi_mcmc <- function(x, ...) {
  posterior::as_draws_matrix(as_draws_array.bbvi_mcmc(x))
}

#' @rdname bbvi_mcmc-methods
#' @exportS3Method posterior::as_draws_df
as_draws_df.bbvi_mcmc <- function(x, ...) {
  posterior::as_draws_df(as_draws_array.bbvi_mcmc(x))
}

#' @rdname bbvi_mcmc-methods
#' @exportS3Method coda::as.mcmc
as.mcmc.bbvi_mcmc <- function(x, ...) {
  need_pkg("coda")
  coda::mcmc.list(lapply(seq_len(x$chains), function(k) {
    m <- matrix(x$draws[, k, ], ncol = length(x$par_names))
    colnames(m) <- x$par_names
    coda::mcmc(m, start = x$warmup + 1)
  }))
}
