#' Black-box variational inference
#'
#' Fits a Gaussian approximation q to a posterior by maximising the evidence
#' lower bound (ELBO) with stochastic gradients, either for a custom model
#' made by [bbvi_model()] or for a generalized linear model given by a
#' formula (see the formula method).
#'
#' q lives on the unconstrained scale (bounded parameters are transformed,
#' see [param()]). `"meanfield"` is a diagonal Gaussian, `"fullrank"` a
#' Gaussian with a full Cholesky factor, `"lowrank"` a Gaussian with
#' covariance B B' + diag(d^2), B of `rank` columns: it captures the main
#' directions of posterior correlation at a cost linear in the number of
#' parameters (O(D rank^2) per iteration; nothing D x D is formed), where
#' full-rank costs O(D^2) memory and O(D^3) time. The ELBO is
#' E_q log p(x, z) - E_q log q(z) = log p(x) - KL(q || p(z | x)): q is
#' mode-seeking and tends to understate posterior spread, the more so for
#' mean-field on correlated posteriors.
#'
#' **Gradients.** `"score"` is the score-function estimator of Ranganath,
#' Gerrish and Blei (2014), E_q\[grad log q (log p - log q)\], with one
#' control variate per variational parameter (fitted leaving the current draw
#' out, so the estimate stays unbiased); it needs only log-joint values.
#' `"reparam"` differentiates through z = mu + L eps and needs the gradient
#' of the log-joint; it is far less noisy. `"auto"` picks `"reparam"` when a
#' gradient is available, including central differences of the log-joint
#' (`bbvi_model(gradient = "numeric")`): for a smooth log-joint of a few
#' dozen parameters without a written gradient these usually cost far less
#' than the score estimator's thousands of iterations (eight schools,
#' centred: 40-70 fixed-draw evaluations against 4,000-5,000 score
#' iterations, bench/README.md).
#'
#' **Start.** A custom model's fit starts at the posterior mode on the
#' unconstrained scale with the curvature there (a Laplace approximation,
#' see `start`), and the stochastic phase works in that Gaussian's
#' coordinates. Formula fits start from a Newton step on the exact ELBO.
#'
#' **Steps.** Adam (the default; Kingma and Ba 2015) or AdaGrad as in
#' Ranganath et al. (2014) (step `eta` / sqrt(sum of squared gradients) per
#' coordinate). AdaGrad's steps only shrink, so a burst of large early
#' gradients (common with the score estimator far from the optimum) can
#' stall it far from the answer; Adam's normalisation forgets them.
#'
#' **Stopping.** Every `window` iterations the variational parameters are
#' averaged over the window. *Phase 1 (optimising):* a window passes when,
#' against the previous window and the window four back, no marginal mean of
#' q moved by more than 0.25 of its sd and no log sd by more than 0.25; the
#' windowed ELBO did not rise by more than 3 Monte Carlo standard errors;
#' the window-mean gradient is zero within its standard error (a Student-t
#' test, Bonferroni over all variational parameters); and the window's ELBO is neither more
#' than 0.5 nats (beyond Monte Carlo error) below the best window's nor ten
#' times noisier (an exploding q passes every test measured in its own sds
#' and Monte Carlo error, but not these). Two passes in a row start
#' *phase 2 (averaging):* the variational parameters are averaged over the
#' following windows until the standard error of that average (batch means
#' over at least four batches that grow with the averaging span, allowing
#' for the correlation between batches and the few batches it is estimated
#' from) is below `tol` (0.02; 0.05 for score fits) posterior sds for every mean and `tol` for
#' every log sd (with more than 100 parameters, for all but the 0.5% of
#' means and log sds with the largest estimated error: the largest of
#' thousands of noisy error estimates measures their noise, not the fit). The returned q is that average. When averaging would take
#' too long, or when the iterates keep moving while the ELBO no longer
#' rises (noise wandering along a ridge), the step size is cut; score fits
#' make only the second kind of cut (a smaller step does not make an
#' average of noisy iterates more precise, only slower to measure).
#' Mean-field score fits from the mode also turn the gradient averaged over
#' the averaging span into a distance to the optimum through log p's
#' Hessian at the mode (a Newton step): more than 1 q-sd, and beyond 2.6
#' standard errors, and the fit has not converged (along a flat, curved
#' valley of the ELBO the means crawl, and their average looks settled
#' far from the optimum); at `max_iter` its `stop_reason` says so, and its
#' warning gives the distance. A fit that
#' reaches `max_iter` first has `converged = FALSE`, a `stop_reason`, and
#' warns. A non-finite step restarts from the last window's point with a
#' step ten times smaller (at most five times). A Gaussian q whose sd for
#' some coordinate passes 1e10 times its starting scale (the Laplace sd, or
#' `init_sd`) is running away along a direction the log-joint does not
#' bound, as in an improper posterior: the fit stops there with
#' `converged = FALSE`, `stop_reason` "q's sd grew without bound", and a
#' warning that names the coordinate (the fixed-draw path hands such a q
#' over to the stochastic path first, whose steps leave the other
#' coordinates in place). Steps that an early, astronomically large
#' gradient has frozen (a start where log p explodes: the step-size rule's
#' running mean square more than 1e6 times the last window's, for four
#' windows in a row) end the fit with `converged = FALSE` and `stop_reason`
#' "the steps froze ...": frozen iterates would pass every test on their
#' moves.
#'
#' @param x A [bbvi_model()] or a formula.
#' @param ... Passed on to methods.
#' @return An object of class `bbvi_fit`. For a [bbvi_model()], its
#'   `evals` is a data frame of the log-density and gradient evaluations
#'   and the seconds of each phase: `checks` (the model's callbacks checked
#'   before the fit: a vectorized log-joint at several draws at once and
#'   one by one, the gradient against finite differences), `mode` (the
#'   mode search and the curvature there), `optimisation` and
#'   `diagnostics` (the draws behind the PSIS check).
#' @references Ranganath, R., Gerrish, S. and Blei, D. M. (2014). Black box
#'   variational inference. AISTATS.
#' @export
bbvi <- function(x, ...) {
  if (missing(x)) {
    # bbvi(formula = y ~ x, ...) or bbvi(model = m, ...), as API.md writes
    # them: the same call with that argument in first place, its other
    # arguments left unevaluated (weights = w may name a column of data)
    mc <- match.call(expand.dots = TRUE)
    hit <- intersect(c("formula", "model"), names(mc))
    if (length(hit) == 1) {
      names(mc)[names(mc) == hit] <- "x"
      return(eval(mc, parent.frame()))
    }
    cli::cli_abort("{.fn bbvi} needs a formula or a model made by {.fn bbvi_model} as its first argument.")
  }
  UseMethod("bbvi")
}

#' @export
bbvi.default <- function(x, ...) {
  cli::cli_abort(c("{.fn bbvi} needs a formula or a model made by {.fn bbvi_model}.",
                   x = "Its first argument is {describe(x)}."))
}

#' @rdname bbvi
#' @param method `"meanfield"`, `"fullrank"` or `"lowrank"`. Mean-field and
#'   low-rank fits scale to hundreds of thousands of parameters (the fit
#'   object is O(D)); full-rank is limited to 46,340.
#' @param rank For `method = "lowrank"`: the number of columns of B; `NULL`
#'   means `min(10, D)`.
#' @param estimator `"auto"`, `"score"` or `"reparam"`.
#' @param samples Monte Carlo draws per iteration; `NULL` picks 10 for
#'   `"reparam"` and 50 for `"score"` on the stochastic path, and for a custom model's
#'   fixed-draw path (`optimizer = "lbfgs"`) the number of fixed draws:
#'   30 for mean-field, and at least twice the number of parameters, plus 2,
#'   for full-rank (fewer would leave directions that no draw sees).
#' @param max_iter Most iterations.
#' @param tol Convergence tolerance in posterior-sd units (see Details);
#'   `NULL` means 0.02, and 0.05 for the score estimator (its noisier
#'   gradients need about (0.05 / 0.02)^2 = 6 times the iterations for
#'   0.02; give `tol = 0.02` to pay for it). The fit keeps the value used
#'   as `fit$tol`.
#' @param seed `NULL` to use R's random number stream (so [set.seed()] before
#'   the call reproduces the fit) or a number: the fit is then reproducible
#'   and R's stream is left as it was.
#' @param progress Show a progress bar (cli); on by default in interactive
#'   sessions. An interrupt (Ctrl-C / Esc) stops the fit cleanly.
#' @param optimizer `"auto"` (default), `"lbfgs"`, `"adam"` or `"adagrad"`.
#'   `"lbfgs"` is the fixed-draw path: the ELBO averaged over one fixed set
#'   of `samples` draws (antithetic, and balanced so that the average is
#'   exact for a Gaussian posterior) is a deterministic function of q's
#'   parameters, maximised by L-BFGS with the reparameterization gradient
#'   (a sample-average approximation, as in DADVI, Giordano, Ingram and
#'   Broderick 2024). It needs the model's gradient. Started at the mode it
#'   converges in tens of iterations where the stochastic path needs
#'   thousands. Fixing the draws makes the answer depend on them, so the
#'   path solves again from its answer with a fresh set of draws, doubling
#'   their number (at most twice) while two answers differ by more than
#'   2.5 sqrt(2) `tol` (q-sds for means, log sds); answers that still differ
#'   are reported as not converged. The runs are in `fit$fixed_draws`. How
#'   far q is from the posterior is measured with fresh draws by the
#'   diagnostics (see [vi_diagnostics()]). `"adam"` and
#'   `"adagrad"` are the stochastic path (Monte Carlo gradients, a step-size
#'   rule and the windowed convergence rule). `"auto"` takes `"lbfgs"` when
#'   the estimator is `"reparam"` and `"adam"` otherwise (measured in
#'   `bench/bench_custom.R` and `bench/bench_trust.R`: as accurate as the
#'   stochastic path, or more, with 5 to 40 times fewer evaluations, also
#'   from `init` when there is no mode). A fixed draw where the log-joint
#'   is -Inf (a bound that depends on another parameter, such as
#'   `b < 1 - a`, written as -Inf), among the starting draws or those of a
#'   check, sends the fit to the stochastic path, whose gradient gives such
#'   draws a score-function term as if log p dropped 10 nats at the edge of
#'   the support: q stays (mostly) inside, and the diagnostics warn about
#'   the draws that are not. With `estimator = "auto"`, a fit started at
#'   the mode goes on there with the score estimator instead when q is
#'   mean-field with at most 20 coordinates (with its quadratic control
#'   variate, see `control_variates`) or full-rank with at most 10: near
#'   such an edge it needs several times fewer iterations;
#'   `fit$estimator` says which one ran.
#' @param eta Base step size; `NULL` means 0.05 for Adam and 0.5 for AdaGrad
#'   (for mean-field and low-rank fits of more than 2,000 variational
#'   parameters K started at the mode, 0.05 sqrt(2000 / K): Adam's jitter
#'   would otherwise cost the ELBO about K eta^2 / 2).
#' @param window Iterations per convergence window; `NULL` means 50 when
#'   the fit starts at the mode (q is then close to the answer from the
#'   first iteration: measured on the cases of `bench/bench_trust.R`, half
#'   the evaluations of 100 for the same accuracy), 25 for a custom
#'   model's score fit started at the mode (half the iterations, measured
#'   in `bench/bench_custom.R` and `bench/bench_trust.R`), and 100
#'   otherwise.
#' @param init Optional starting point: a named list of parameter values on
#'   the constrained scale (default: 0 on the unconstrained scale; a simplex
#'   must sum to 1, an ordered vector must increase).
#' @param init_sd Starting sd of q on the unconstrained scale: one number,
#'   or one per unconstrained coordinate (one per scalar parameter, but
#'   `K - 1` for a simplex of `K`). It is also the scale the optimiser works
#'   in: each coordinate is divided by its `init_sd`, so that giving rough
#'   posterior sds for parameters of very different scales (say 1000 and
#'   0.001) makes the steps fit each of them.
#' @param start `"mode"` (default): find the posterior mode on the
#'   unconstrained scale (L-BFGS from `init`, with the model's gradient or
#'   finite differences) and the curvature there, and start q at that
#'   Gaussian (Laplace approximation; mean-field uses the diagonal of the
#'   curvature). The stochastic phase then works in the coordinates of that
#'   Gaussian, so that parameters of very different scales, and strong
#'   correlations (full-rank), do not slow it down. When there is no usable
#'   mode (the density grows without bound, as in a funnel; an improper
#'   posterior; curvature that is not positive) the fit says so and falls
#'   back to `"init"`: q starts at `init` with sds `init_sd`.
#' @param diagnostic_draws Most of the stored draws the diagnostics (PSIS,
#'   the KL estimate, the ELBO) use: the first 1000, then 2000, then all of
#'   them, stopping where the draws so far pass, or fail, clearly; decided
#'   by the draws alone, never the clock,
#'   so that the same seed gives the same diagnostics on any machine (see
#'   [vi_diagnostics()]).
#' @param draws Number of draws from q kept in the fit for summaries and
#'   diagnostics (see [vi_diagnostics()]).
#' @param control_variates For `estimator = "score"`: use the control
#'   variates (default): a baseline per variational parameter and, for
#'   mean-field q started at the mode with up to 20 parameters, a second
#'   one built from the quadratic approximation of log p at the mode (its
#'   expectation under q is known, so the gradient stays unbiased). The
#'   second removes the noise that the posterior correlations, which
#'   mean-field q leaves out, put into the score gradient; it costs about
#'   2 D^2 more log-density evaluations at the mode when the model has no
#'   gradient. `FALSE` gives the plain score-function estimator, for
#'   comparison.
#' @param restarts Number of fits from dispersed starting points: `init`
#'   plus and minus u, u uniform(-2, 2) on the unconstrained scale, in
#'   antithetic pairs so that both sides of the start are explored. With a
#'   mode start, each runs its own mode search, and restarts that end far
#'   apart warn of several modes. They run through the
#'   `future` framework (`future.apply`), so they run in parallel under
#'   e.g. `future::plan("multisession")` or on any cluster backend; the fit
#'   with the best final ELBO among those that converged (among all, if
#'   none did) is returned, with a table of all of them in
#'   `fit$restart_summary`. Each pair of restarts draws from its own
#'   L'Ecuyer-CMRG stream derived from `seed` (or R's stream), so the
#'   result does not depend on the plan or the number of workers; global
#'   variables used by the model's functions are sent to the workers.
#' @param families Non-Gaussian q for some parameters: a named list such as
#'   `list(lambda = "gamma", p = "beta")`. `"gamma"` is for a parameter
#'   declared `param(lower = 0)` (shape and rate fitted), `"beta"` for
#'   `param(lower = 0, upper = 1)`; both live on the parameter's own scale
#'   (no transform, no Jacobian), so conjugate models come out exact.
#'   Integer parameters (`param(integer = TRUE)`) always get a categorical
#'   q (one probability per value; see [probabilities()]). With any of
#'   these, q is a product of one block per parameter (Gaussian parameters
#'   take `method`), fitted on the stochastic path: the non-Gaussian blocks
#'   by the score gradient with control variates, the Gaussian ones by the
#'   reparameterization gradient when the model has a gradient (which may
#'   leave out the integer parameters), else by the score gradient too.
#'   `"given:g"` for a continuous, unbounded parameter `b` declared next
#'   to an integer parameter `g` of the same dim gives `b` a conditional
#'   Gaussian q: one Gaussian per value of each `g[j]`, `q(g, b) = prod_j
#'   q(g_j) N(b_j; m[j, g_j], s[j, g_j]^2)` (e.g. spike-and-slab
#'   selection, where `b[j]` given `g[j] = 0` is its prior and given
#'   `g[j] = 1` is fitted to the data); summaries show `b`'s marginal, a
#'   mixture. Not with `factors`.
#'   A model with integer parameters starts from `init` (categorical q
#'   nearly uniform, centred on `init` when given); otherwise Gamma and Beta
#'   blocks start from the Laplace approximation by moment matching.
#' @param enumerate For integer parameters: compute the gradient of each
#'   one's probabilities by evaluating the log-joint at every value it can
#'   take, at the other parameters' draws (exact in that parameter; costs
#'   its number of values times `samples` more evaluations per iteration,
#'   one batch of `samples` draws per value when the log-joint is
#'   vectorized, one call per draw and value otherwise: vectorize the
#'   log-joint of a model with many values). With `factors`, each value's
#'   log-joint is only the factors that touch the parameter, and integer
#'   parameters that share no factor take their values together: one
#'   batch of `samples` evaluations per value for all of them (the
#'   Rao-Blackwellized estimator made exact in each discrete parameter).
#'   These evaluations count in `fit$evals$logp`, and `fit$evals$enumerated`
#'   says how many of them they are. `FALSE` uses the score
#'   gradient alone, which is cheaper per iteration but lets values that q
#'   draws rarely stay rare: on the coal-mining change point it ends with
#'   the mode's probability about twice the optimum's.
#' @param subsample For a model in minibatch form ([bbvi_model()] with
#'   `loglik`, `logprior` and `n`, and their gradients): `NULL` fits all
#'   rows on every evaluation (the paths above); a whole number B is the
#'   rows per minibatch. q is then moved by Newton (natural-gradient) steps
#'   on stale per-minibatch sums of the expected gradient and curvature
#'   (SAG-style, as the GLM minibatches; see `src/minibatch.c`), over one
#'   fixed, balanced set of `samples` draws (at least twice the number of
#'   parameters, plus 2; the curvature comes from gradients at antithetic
#'   pairs). When an epoch moves no mean by more than 0.1 sd, full passes
#'   at a fixed q take Newton steps until one is below `tol` sds: the
#'   answer is the fixed-draw full-data answer. `max_iter` bounds the
#'   epochs (at most 100). `method` must be `"meanfield"` or `"fullrank"`.
#'   The fit records `fit$epochs` and `fit$minibatch` (row evaluations,
#'   blocks, ...); its diagnostics use only 100 draws from q (each is a
#'   pass over all rows, in chunks), reported in
#'   `fit$minibatch$diagnostic_draws`. A draw where `loglik` or `logprior`
#'   is not finite makes q step back halfway to where it was, up to 30
#'   times in a row, then the fit stops with an error. q starts at `init`
#'   (`start`, `optimizer`, `eta`, `window` and `progress` do not apply).
#'   Before any fit of such a model, its callbacks are checked (gradient
#'   against finite differences) on 100 rows spread over the data.
#' @examples
#' y <- c(1.2, 0.4, 2.1, 1.7)
#' m <- bbvi_model(
#'   function(theta, data) sum(dnorm(data, theta$mu, 1, log = TRUE)) +
#'     dnorm(theta$mu, 0, 10, log = TRUE),
#'   parameters = list(mu = param()), data = y)
#' fit <- bbvi(m, seed = 1)
#' summary(fit)
#' @export
bbvi.bbvi_model <- function(x, method = c("meanfield", "fullrank", "lowrank"),
                            rank = NULL,
                            estimator = c("auto", "score", "reparam"),
                            samples = NULL, max_iter = 10000, tol = NULL,
                            seed = NULL, progress = interactive(),
                            optimizer = c("auto", "lbfgs", "adam", "adagrad"),
                            eta = NULL, window = NULL, init = NULL, init_sd = 1,
                            draws = 4000, restarts = 1,
                            control_variates = TRUE, start = c("mode", "init"),
                            diagnostic_draws = 4000, families = NULL,
                            enumerate = TRUE, subsample = NULL, ...) {
  call <- match.call()
  call[[1]] <- as.name("bbvi")
  check_dots_empty(...)
  if (!is.list(x) || !is.character(x$par_names) || length(x$par_names) == 0 ||
      !is.list(x$parameters)) {
    abort_arg("x", "a model made by {.fn bbvi_model}", x)
  }
  check_flag(progress, "progress")
  method <- match_arg(method, c("meanfield", "fullrank", "lowrank"), "method")
  estimator <- match_arg(estimator, c("auto", "score", "reparam"), "estimator")
  optimizer <- match_arg(optimizer, c("auto", "lbfgs", "adam", "adagrad"), "optimizer")
  subsample <- check_subsample_model(subsample, x)
  if (!is.null(subsample)) {
    # minibatch VI (R/minibatch.R): its own Newton-type loop over blocks
    if (!is.null(families) || restarts != 1 || estimator == "score") {
      cli::cli_abort("With {.arg subsample}, {.arg families}, {.arg restarts} and {.code estimator = \"score\"} are not available.",
                     call = call("bbvi"))
    }
    return(bbvi_minibatch(x, subsample, method, samples, max_iter, tol, seed,
                          init, init_sd, draws, diagnostic_draws, call))
  }
  auto_estimator <- estimator == "auto"
  estimator <- resolve_estimator(estimator, x$has_gradient)
  fams <- resolve_families(x, families, call = call("bbvi"))
  if (any(fams != "gaussian")) {
    if (optimizer == "lbfgs") {
      cli::cli_abort(c("{.code optimizer = \"lbfgs\"} (fixed draws) is for Gaussian q only.",
                       i = "This fit has {.val {unique(fams[fams != 'gaussian'])}} blocks; use {.code optimizer = \"adam\"}."),
                     call = call("bbvi"))
    }
    return(bbvi_natural(x, fams, call = call, method = method, rank = rank,
                        estimator = estimator, samples = samples,
                        max_iter = max_iter, tol = tol, seed = seed,
                        progress = progress,
                        optimizer = if (optimizer == "auto") "adam" else optimizer,
                        eta = eta, window = window, init = init,
                        init_sd = init_sd, draws = draws, restarts = restarts,
                        control_variates = control_variates,
                        start_at = match_arg(start, c("mode", "init"), "start"),
                        diagnostic_draws = diagnostic_draws,
                        enumerate = check_flag(enumerate, "enumerate")))
  }
  if (optimizer == "lbfgs" && estimator != "reparam") {
    cli::cli_abort(c("{.code optimizer = \"lbfgs\"} needs the reparameterization estimator, and so the model's gradient.",
                     i = "Give {.arg gradient} to {.fn bbvi_model}, or use {.code optimizer = \"adam\"}."),
                   call = call("bbvi"))
  }
  init_mean <- init_unconstrained(init, x)
  init_sd <- check_init_sd(init_sd, length(init_mean))
  start_at <- match_arg(start, c("mode", "init"), "start")
  rank <- resolve_rank(rank, method, length(init_mean))
  check_dimension(length(init_mean), method, rank)
  # a user's gradient is checked against finite differences before any fit
  # (a model in minibatch form: on 100 of its rows)
  checks <- assert_model_ok(if (inherits(x, "bbvi_minibatch_model")) mb_check_model(x) else x,
                            err_call = call("bbvi"))
  # factors + the score estimator: Rao-Blackwellized, q one block per parameter
  rb <- rb_applies(x, estimator)
  if (rb && method != "meanfield") {
    cli::cli_abort(c("With {.arg factors} and the score estimator, {.arg method} must be {.val meanfield}.",
                     i = "The Rao-Blackwellized gradient needs q to be a product with one block per parameter."),
                   call = call("bbvi"))
  }
  # score fits of mean-field q from the mode get the quadratic control
  # variate (src/estimators.c), which needs log p's whole Hessian there
  quadratic_cv <- estimator == "score" && method == "meanfield" && !rb &&
    isTRUE(control_variates) && length(init_mean) <= score_quadratic_max_dim
  # restart k starts at init + u (k odd) or init - u (k even), with u drawn
  # from the pair's seed: antithetic pairs cover both sides of the start,
  # so that modes on either side are found (independent draws all land on
  # one side of a symmetric pair of modes 1 time in 2^(restarts - 1))
  fit_one <- function(seed, dispersed, side = 1) {
    with_seed(seed, {
      begin <- init_mean
      if (dispersed) begin <- begin + side * stats::runif(length(begin), -2, 2)
      spec <- r_target_spec(x, err_call = call("bbvi"))
      # the fixed-draw path takes mean-field and full-rank q (its balanced
      # draws are one standard normal per coordinate)
      fixed_draws <- method != "lowrank" && (optimizer == "lbfgs" ||
        (optimizer == "auto" && estimator == "reparam"))
      t0 <- proc.time()[["elapsed"]]
      st <- if (start_at == "mode") laplace_start(x, spec, begin, method, quiet = dispersed, rank = rank,
                                                  quadratic_cv = quadratic_cv, precise = !fixed_draws)
      st$time <- proc.time()[["elapsed"]] - t0
      if (!isTRUE(st$laplace)) {
        # q starts at init, or where the mode search found log p finite
        # when it is not at init
        if (!is.null(st$finite_start)) begin <- st$finite_start
        st <- list(mean = begin, precond = if (all(init_sd == 1)) NULL else init_sd,
                   evals = st$evals, laplace = FALSE, time = st$time)
      }
      res <- NULL
      if (fixed_draws) {
        precond <- if (is.null(st$precond)) init_sd else st$precond
        res <- saa_engine(x, spec, method = method, samples = samples,
                          max_iter = max_iter, tol = tol, precond = precond,
                          shift = st$mean, hessian = st$hessian)
        # a fixed draw outside the support (log p = -Inf) breaks the
        # deterministic objective; the stochastic path's gradient weighs
        # such draws (src/estimators.c) and holds q inside
        # so does a q whose sd runs away (an improper posterior): L-BFGS
        # takes long steps along it, and the other coordinates' answers are
        # noise by the time it stops; the stochastic path stops there too,
        # with the proper coordinates in place, and says so
        runaway <- identical(res$stop, "unbounded")
        if (runaway || res$status %in% c("no_finite_start", "no_finite_check")) {
          if (optimizer == "lbfgs") {
            inform_lines(if (runaway) "The fixed-draw path left: q's sd grew without bound." else
                           sprintf("The fixed-draw path left: the log-joint is not finite at some of q's %s draws.",
                                   if (res$status == "no_finite_start") "starting" else "checking"),
                         "i Continuing on the stochastic path (Adam).")
          }
          spent <- c(logp = res$n_logp, gradient = res$n_grad)
          st$evals <- if (is.null(st$evals)) spent else st$evals + spent
          res <- NULL
        }
      }
      est <- estimator
      quad <- quadratic_cv
      if (is.null(res) && fixed_draws && auto_estimator && score_takes_over(method, st, rb, control_variates)) {
        # the fixed-draw path left (draws outside the support): with
        # estimator = "auto", a small q from the mode goes on with the
        # score estimator (for mean-field with its quadratic control
        # variate), which weighs draws outside as calmly as inside
        # (garch11 with its bound written as -Inf, mean-field: 425-600
        # iterations and 0.2-0.3 s, against 4,000-4,800 and 3 s for the
        # reparameterization gradient, whose outside-the-support term is
        # noisy; full-rank: 225-350 and 0.1-0.2 s against 2,400-2,900 and
        # 1.6-1.9 s)
        est <- "score"
        quad <- method == "meanfield"
      }
      if (is.null(res)) {
        opt <- if (optimizer %in% c("auto", "lbfgs")) "adam" else optimizer
        res <- vi_engine(x, spec,
                         method = method, rank = rank, estimator = est, samples = samples,
                         max_iter = max_iter, tol = tol, optimizer = opt,
                         eta = if (is.null(eta)) default_eta(opt, method, st$laplace, length(st$mean), rank) else eta,
                         init_mean = st$mean,
                         window = if (!is.null(window)) window else
                           default_window(st$laplace, method, est),
                         init_log_sd = log(init_sd),
                         precond = st$precond, shift = st$mean, init_B = st$init_B,
                         progress = progress && !dispersed,
                         control_variates = control_variates,
                         blocks = if (rb) q_blocks_for(x, method, NULL),
                         par_sizes = if (rb) model_unc_sizes(x),
                         noise_cuts = est != "score",
                         quadratic = if (quad && isTRUE(st$laplace)) st$hessian,
                         adam_b2 = if (est == "score" && isTRUE(st$laplace)) score_adam_b2)
      }
      t0 <- proc.time()[["elapsed"]]
      fit <- new_bbvi_fit(x, res, call = call, draws = draws,
                          diagnostic_draws = diagnostic_draws,
                          extra = list(start = if (st$laplace) "mode" else "init",
                                       fixed_draws = res$saa,
                                       q_blocks = res$control$blocks))
      # the quadratic control variate's ingredients, for elbo_gradients()
      if (quad && isTRUE(st$laplace) && is.null(res$saa)) {
        fit$quadratic_cv <- list(mode = st$mean, hessian = st$hessian)
      }
      fit$control_variates <- isTRUE(control_variates)   # for print()
      finish_custom_fit(fit, rb, st, res, t0, checks)
    })
  }
  fit_with_restarts(restarts, seed, fit_one)
}

# Whether the score estimator takes over from a fixed-draw path that left
# (see bbvi()), started at the mode: mean-field q with its quadratic
# control variate (the mode search measured the whole Hessian) up to
# score_quadratic_max_dim coordinates, and full-rank q up to
# score_fullrank_max_dim, where its baseline alone keeps the noise low
# (bench_custom.R's full-rank score fits of up to 10 parameters from the
# mode: 175-700 iterations).
score_takes_over <- function(method, st, rb, control_variates) {
  if (rb || !isTRUE(control_variates) || !isTRUE(st$laplace)) return(FALSE)
  D <- length(st$mean)
  (method == "meanfield" && is.matrix(st$hessian) && D <= score_quadratic_max_dim) ||
    (method == "fullrank" && D <= score_fullrank_max_dim)
}
score_fullrank_max_dim <- 10L

# Largest mean-field model whose whole Hessian the mode search measures
# (D^2 doubles; factorised once, D^3 / 3 flops) for the fixed-draw path
mf_hessian_max_dim <- 500L
# Largest mean-field score fit with the quadratic control variate: without
# a gradient its Hessian costs about 2 D^2 log-density evaluations (800 at
# D = 20, the price of 16 iterations of 50 draws), and each draw's
# quadratic D^2 / 2 flops
score_quadratic_max_dim <- 20L

# The deterministic start: the mode of log p on the unconstrained scale and
# the curvature there (src/mode.c). Returns list(mean, precond, evals,
# laplace = TRUE), precond a lower triangular matrix for full-rank and a
# vector of per-coordinate scales (the diagonal Hessian's) otherwise, or list(evals, laplace = FALSE) (with a message) when
# there is no usable mode. `precise`: the mode to 1e-4 sd; FALSE stops at
# the 1e-2 sd the result is judged by, enough for a start that the
# fixed-draw path's L-BFGS goes on from.
laplace_start <- function(model, spec, init, method, quiet = FALSE, rank = 0L,
                          quadratic_cv = FALSE, precise = TRUE) {
  D <- length(init)
  if (!exact_gradient(model) && D > 1000L) {
    # each finite-difference gradient costs 2D + 1 log-joint evaluations
    if (!quiet) {
      inform_lines(sprintf("No mode search for %d parameters without a gradient.", D),
                   "i Starting q at `init`; give `gradient` to `bbvi_model()` for a start at the mode.")
    }
    return(NULL)
  }
  # the full Hessian from log-density values costs 2 D^2 evaluations; from
  # gradients it costs what the diagonal does, and a mean-field fit on
  # the fixed-draw path takes it as L-BFGS's starting inverse Hessian
  # (src/saa.c), so it is measured whole whenever it fits in memory; only
  # full-rank needs it positive definite
  full <- if (method == "fullrank" && (exact_gradient(model) || D <= 100)) 1L else
    if (method == "meanfield" && (quadratic_cv ||
                                  exact_gradient(model) && D <= mf_hessian_max_dim ||
                                  isTRUE(model$numeric_gradient) && D <= 100)) 2L else 0L
  ctl <- list(init = as.double(init), full = full, maxit = 1000L,
              grad_tol = 1e-2, inner_tol = if (precise) 1e-4 else 1e-2)
  res <- .Call(C_find_mode, spec, as.double(model$lower), as.double(model$upper), ctl)
  evals <- c(logp = res$n_logp, gradient = res$n_grad)
  moved <- NULL
  if (res$status == "no_finite_start") {
    # log p is -Inf (or NA) at init: a region the log-joint may rule out,
    # such as alpha + beta >= 1 with both declared in (0, 1) and the
    # default init at 0.5 each. Search near init for a finite point and
    # start the mode search there; without it q would start with about
    # half its draws outside and could drift out of the support.
    fs <- finite_start(spec, model, init)
    evals <- evals + c(logp = fs$n, gradient = 0)
    if (!is.null(fs$point)) {
      moved <- fs$point
      ctl$init <- as.double(moved)
      res <- .Call(C_find_mode, spec, as.double(model$lower), as.double(model$upper), ctl)
      evals <- evals + c(logp = res$n_logp, gradient = res$n_grad)
      if (!quiet && res$status == "ok") {
        inform_lines("The log-joint is not finite at `init`; the mode search started from a nearby point where it is.",
                     "i Give `init` inside the region where `logjoint` is finite to choose the start.")
      }
    }
  }
  if (res$status != "ok") {
    if (!quiet) {
      why <- switch(res$status,
        not_converged = "the optimiser found no point where the gradient vanishes (the density may grow without bound, as in a funnel, or the posterior may be improper)",
        not_concave = "the curvature at the optimum is not positive in every direction (a saddle, a flat direction, or an improper posterior)",
        no_finite_start = "the log density is not finite at the starting point")
      where <- if (is.null(moved)) "`init`" else "a point near `init` where the log density is finite"
      # a funnel without a gradient: the score estimator's stochastic path
      # from init is slow there, the fixed-draw path on central differences
      # is not (eight schools centred: 0.02-0.03 s against 0.3-0.4 s)
      inform_lines(sprintf("No usable posterior mode: %s.", why),
                   sprintf("i Starting q at %s with sd `init_sd` instead.", where),
                   if (res$status == "not_converged") numeric_gradient_hint(model, "score", D))
    }
    return(list(evals = evals, laplace = FALSE, finite_start = moved))
  }
  H <- res$neg_hessian
  precond <- if (full == 1L) {
    t(chol(chol2inv(chol(H))))
  } else {
    1 / sqrt(if (is.matrix(H)) diag(H) else H)
  }
  out <- list(mean = res$mode, precond = precond, evals = evals, laplace = TRUE,
              hessian = if (full == 2L) H)
  if (method == "lowrank") {
    lr <- lowrank_start(spec, model, res$mode, precond, rank)
    out$init_B <- lr$B
    out$evals <- out$evals + c(logp = lr$n, gradient = lr$n)
  }
  out
}

# A point near `init` (unconstrained) where log p is finite: the best of
# batches of normal draws around it, at sds 0.5, 1 and 2 (64 draws each,
# one target call per batch). R's stream gives the draws, so a seeded fit
# finds the same point. list(point = NULL) when no draw is finite.
finite_start <- function(spec, model, init, n = 64L) {
  D <- length(init)
  lo <- as.double(model$lower)
  up <- as.double(model$upper)
  used <- 0
  for (sd in c(0.5, 1, 2)) {
    Z <- init + sd * matrix(stats::rnorm(D * n), D, n)
    lp <- .Call(C_logdens, spec, lo, up, Z, FALSE)
    used <- used + n
    if (any(is.finite(lp))) {
      lp[!is.finite(lp)] <- -Inf
      return(list(point = Z[, which.max(lp)], n = used))
    }
  }
  list(point = NULL, n = used)
}

# A low-rank q's starting B: the directions of largest posterior variance
# at the mode, in the coordinates of the diagonal start (z = (zeta - mode) /
# s, where the precision H_z has a unit diagonal). They are the eigenvectors
# of H_z with the smallest eigenvalues mu, found by subspace iteration on
# alpha I - H_z with Hessian-vector products from central differences of
# the gradient (two batched gradient calls per iteration, O(D rank) memory);
# B = V sqrt(1 / mu - 1) makes B B' + I match H_z^-1 along them. Started at
# B near 0 instead (a stationary point of the ELBO), the stochastic phase
# finds these directions only slowly. NULL when the model has no gradient.
lowrank_start <- function(spec, model, mode, s, rank, iters = 30L, extra = 5L) {
  if (!exact_gradient(model)) return(list(B = NULL, n = 0))
  D <- length(mode)
  lo <- as.double(model$lower)
  up <- as.double(model$upper)
  h <- 1e-3
  n <- 0
  hv <- function(V) {   # H_z V by central differences, V: D x m
    Zp <- mode + s * (h * V)
    Zm <- mode - s * (h * V)
    gp <- attr(.Call(C_logdens, spec, lo, up, Zp, TRUE), "gradient")
    gm <- attr(.Call(C_logdens, spec, lo, up, Zm, TRUE), "gradient")
    n <<- n + 2 * ncol(V)
    -s * (gp - gm) / (2 * h)
  }
  m <- min(D, rank + extra)
  # the largest eigenvalue of H_z bounds the shift alpha (power iteration)
  v <- matrix(stats::rnorm(D), D, 1)
  lam <- NA_real_
  for (i in 1:15) {
    v <- v / sqrt(sum(v^2))
    w <- hv(v)
    lam <- sum(v * w)
    v <- w
  }
  if (!is.finite(lam) || lam <= 0 || any(!is.finite(v))) return(list(B = NULL, n = n))
  alpha <- 1.5 * lam
  Q <- qr.Q(qr(matrix(stats::rnorm(D * m), D, m)))
  for (i in seq_len(iters)) {
    AQ <- alpha * Q - hv(Q)
    if (any(!is.finite(AQ))) return(list(B = NULL, n = n))
    Q <- qr.Q(qr(AQ))
  }
  AQ <- alpha * Q - hv(Q)
  e <- eigen(crossprod(Q, AQ), symmetric = TRUE)
  mu <- alpha - e$values[seq_len(rank)]
  V <- Q %*% e$vectors[, seq_len(rank), drop = FALSE]
  # mu >= 1 means no more variance than the diagonal start has: no column
  sc <- sqrt(pmin(pmax(1 / pmax(mu, 1e-8) - 1, 0), 1e6))
  list(B = V * rep(sc, each = D), n = n)
}

# Evaluations of log p and of its gradient, and seconds, by phase: the
# model checks before the fit (assert_model_ok()), the mode search, the
# optimisation and the diagnostics.
fit_evals <- function(start, res, diag_draws, diag_time,
                      checks = c(logp = 0, gradient = 0, seconds = 0)) {
  mode <- if (is.null(start$evals)) c(logp = 0, gradient = 0) else start$evals
  data.frame(phase = c("checks", "mode", "optimisation", "diagnostics"),
             logp = c(checks[["logp"]], mode[["logp"]], res$n_logp, diag_draws),
             gradient = c(checks[["gradient"]], mode[["gradient"]], res$n_grad, 0),
             # of logp, those at enumerated values of discrete parameters
             enumerated = c(0, 0, if (is.null(res$n_logp_enum)) 0 else res$n_logp_enum, 0),
             seconds = c(checks[["seconds"]], start$time, res$time, diag_time))
}

# Several independent fits through future.apply; the best final ELBO wins.
fit_with_restarts <- function(restarts, seed, fit_one) {
  check_count(restarts, "restarts")
  if (restarts == 1) return(fit_one(seed, FALSE))
  if (!requireNamespace("future.apply", quietly = TRUE)) {
    cli::cli_abort(c("{.arg restarts} > 1 needs the {.pkg future.apply} package.",
                     i = "Install it with {.code install.packages(\"future.apply\")}."),
                   call = NULL)
  }
  # one L'Ecuyer-CMRG stream per antithetic pair of restarts, derived from
  # `seed` (or R's stream): the same fits whatever the future backend, the
  # number of workers and the order they finish in (see R/parallel.R)
  pairs <- ceiling(restarts / 2)
  streams <- rng_streams(pairs, seed)
  pair <- rep(seq_len(pairs), each = 2)[seq_len(restarts)]
  sides <- rep(c(1, -1), length.out = restarts)
  if (parallel_plan()) fit_one <- carry_fit_globals(fit_one)
  task <- function(k, fit_one, pair, sides) {
    with_rng_state(streams[[pair[k]]], fit_one(NULL, TRUE, side = sides[k]))
  }
  fits <- future.apply::future_lapply(seq_len(restarts), task, fit_one = fit_one,
                                      pair = pair, sides = sides,
                                      future.seed = NULL, future.packages = "bbvi")
  seeds <- pair
  elbos <- vapply(fits, function(f) f$diagnostics$elbo, numeric(1))
  best <- best_restart(elbos, vapply(fits, function(f) isTRUE(f$converged), logical(1)))
  fit <- fits[[best]]
  fit$restart_summary <- data.frame(
    restart = seq_len(restarts), stream = seeds, elbo = elbos,
    elbo_mcse = vapply(fits, function(f) f$diagnostics$elbo_mcse, numeric(1)),
    khat = vapply(fits, function(f) f$diagnostics$khat, numeric(1)),
    kl_hat = vapply(fits, function(f) f$diagnostics$kl_hat, numeric(1)),
    converged = vapply(fits, function(f) f$converged, logical(1)),
    iterations = vapply(fits, function(f) f$iterations, numeric(1)),
    best = seq_len(restarts) == best)
  # fits that landed elsewhere: the posterior has several modes (or a
  # ridge), and q describes one of them. Importance sampling from q cannot
  # see a mode that q never reaches; restarts can.
  sd_best <- q_marginals(fit_q(fit))$sd
  apart <- vapply(fits, function(f) max(abs(f$mean_unc - fit$mean_unc) / sd_best), numeric(1))
  fit$restart_summary$distance <- apart
  n_apart <- sum(apart > 3)
  if (n_apart > 0 && diag_warning_on()) {
    warn_lines(
      sprintf("%d of %d restarts ended more than 3 q-sds away from the best one: the posterior may have several modes, and q describes one of them.",
              n_apart, restarts),
      "i See `fit$restart_summary`; check with `sample_mcmc()`, or compare the restarts' ELBOs (the best is kept).")
  }
  fit
}

# Adam's step size when none is given: 0.05 (0.5 for AdaGrad), except for a
# mean-field or low-rank fit of many variational parameters K that starts at
# the mode. Adam moves every coordinate by about eta per step whatever its
# gradient, so its iterates jitter around the optimum and the ELBO loses
# about K eta^2 / 2: 50 nats at K = 2e4 with eta = 0.05, which the
# convergence rule sees as progress each time it cuts the step. Started at
# the mode, q is close to the answer and 0.05 sqrt(2000 / K) keeps that loss
# near 1 nat (measured at D = 1e4: 1,500 iterations instead of 3,750).
default_eta <- function(optimizer, method, laplace, D, rank = 0L) {
  if (optimizer == "adagrad") return(0.5)
  K <- D * (if (method == "lowrank") rank + 2 else 2)
  if (!isTRUE(laplace) || method == "fullrank" || K <= 2000) return(0.05)
  0.05 * sqrt(2000 / K)
}

# The convergence window when none is given: 100 iterations from `init`,
# 50 from the mode, and 25 for the score estimator from the mode. There q
# starts at the Laplace approximation, close to the answer for a
# near-Gaussian posterior, and most of the fit is the averaging phase, whose
# error the window does not change; the shorter window halves the minimum
# of 6 windows (bench_custom.R's score rows of garch11, arma11 and the
# mixture: 150-400 iterations instead of 300-600, errors against the
# reference within their Monte Carlo error).
# A drift along the ridge of a correlated Gaussian under mean-field is
# caught by the averaging error's batches, which grow with the span
# (src/vi.c, var_of_mean()), not by the window length. The gradient (reparam) path
# keeps 50: it was not measured with 25.
default_window <- function(laplace, method, estimator) {
  if (!isTRUE(laplace)) return(100L)
  if (estimator == "score") 25L else 50L
}

# Adam's second-moment decay for score fits from the mode: 0.99 (a memory
# of about 100 iterations) instead of Adam's 0.999 (1000). The score
# gradient is heavy-tailed: one extreme draw (a large tau in the eight
# schools) inflates the running mean square, and with a memory of 1000
# iterations every step stays small long after it, so that the iterates
# freeze away from the optimum and their window averages look converged.
# Measured on bench_custom.R's eight schools (non-centred, full-rank, 10
# seeds, against fits at tol = 0.004): with 0.999, 925-10,000 iterations
# (one not converged, one 6,175) and means up to 0.33 q-sds off; with
# 0.99, 800-1,200 and at most 0.11; two fits at tol = 0.004 with 0.999
# disagreed by 0.45 q-sds. Against the reference draws the eight schools'
# errors stay those of the Gaussian optimum itself (0.10-0.24 sd at tol =
# 0.004 either way); gp_pois_regr's full-rank fits came from 0.55 and 0.26
# sd to 0.17 and 0.15; garch11, arK, arma11 and the mixture kept their
# iterations (within one window) and errors. Fits from
# `init` keep 0.999: on the correlated 2-D Gaussian of test-bbvi.R's ridge
# test, 0.99 was no better over 30 seeds (mean error 0.043 q-sds against
# 0.040) and stopped its seed 12 at 0.11 instead of 0.075.
score_adam_b2 <- 0.99

# Which restart to keep: the best ELBO among the converged fits (among all
# when none converged). An unconverged fit's ELBO belongs to a q still
# moving, or to a runaway sd whose entropy inflates it.
best_restart <- function(elbos, converged) {
  pool <- if (any(converged)) which(converged) else seq_along(elbos)
  pool[which.max(elbos[pool])]
}

# fit_one() closes over the model it fits: a copy of the function whose
# environment puts that model, with the globals of its user functions
# carried along (carry_model_globals()), in front of its own, for workers
# in other processes.
carry_fit_globals <- function(fit_one) {
  fenv <- environment(fit_one)
  e <- new.env(parent = fenv)
  for (nm in ls(fenv)) {
    if (bindingIsActive(nm, fenv)) next
    val <- tryCatch(get(nm, envir = fenv, inherits = FALSE), error = function(err) NULL)
    if (inherits(val, "bbvi_model")) assign(nm, carry_model_globals(val), envir = e)
  }
  environment(fit_one) <- e
  fit_one
}

resolve_estimator <- function(estimator, has_gradient) {
  if (estimator == "auto") return(if (has_gradient) "reparam" else "score")
  if (estimator == "reparam" && !has_gradient) {
    cli::cli_abort(c("{.code estimator = \"reparam\"} needs the gradient of the log-joint.",
                     i = "Give {.arg gradient} to {.fn bbvi_model}, or use {.code estimator = \"score\"}."),
                   call = NULL)
  }
  estimator
}

match_arg <- function(x, choices, arg) {
  if (identical(x, choices)) return(choices[1])
  if (!is.character(x) || length(x) != 1 || is.na(x) || !(x %in% choices)) {
    abort_arg(arg, paste0("one of ", paste0('"', choices, '"', collapse = ", ")), x)
  }
  x
}

check_dots_empty <- function(...) {
  if (...length() > 0) {
    nms <- names(list(...))
    nms <- if (is.null(nms)) rep("", ...length()) else nms
    shown <- ifelse(nms == "", "<unnamed>", nms)
    cli::cli_abort(c("Unknown argument{?s}: {.arg {shown}}."), call = NULL)
  }
}

init_unconstrained <- function(init, model) {
  D <- length(model$par_names)
  if (is.null(init)) return(numeric(n_unconstrained(model)))
  if (!is.list(init) || is.null(names(init)) ||
      !setequal(names(init), names(model$parameters))) {
    abort_arg("init", "a named list with one element per parameter", init)
  }
  theta <- unlist(init[names(model$parameters)], use.names = FALSE)
  if (!is.numeric(theta) || length(theta) != D || anyNA(theta) ||
      any(theta <= model$lower) || any(theta >= model$upper)) {
    abort_arg("init", "inside each parameter's support, with the declared dims", init)
  }
  if (has_vector_transform(model)) {
    why <- vector_support_problem(model, theta)
    if (!is.null(why)) {
      cli::cli_abort(c("{.arg init} is outside a parameter's support.", x = "{why}"),
                     call = NULL)
    }
    return(as.double(unconstrain_theta(model, theta)))
  }
  as.double(unconstrain(theta, model$lower, model$upper))
}

unconstrain <- function(theta, lower, upper) {
  z <- theta
  lo <- is.finite(lower) & !is.finite(upper)
  up <- !is.finite(lower) & is.finite(upper)
  both <- is.finite(lower) & is.finite(upper)
  z[lo] <- log(theta[lo] - lower[lo])
  z[up] <- log(upper[up] - theta[up])
  z[both] <- stats::qlogis((theta[both] - lower[both]) / (upper[both] - lower[both]))
  z
}

# A full-rank q's D x D Cholesky factor must fit an R matrix; the other
# families need only their lambda (D (rank + 2) numbers) to be indexable.
check_dimension <- function(D, method = "fullrank", rank = 1L) {
  if (method == "fullrank" && D > 46340L) {
    cli::cli_abort(c("A full-rank variational fit can have at most 46,340 scalar parameters.",
                     x = "This model has {D}.",
                     i = "Use {.code method = \"meanfield\"} or {.code method = \"lowrank\"}."),
                   call = NULL)
  }
  K <- as.double(D) * (if (method == "lowrank") rank + 2 else 2)
  if (K > .Machine$integer.max) {
    cli::cli_abort(c("Too many variational parameters: {format(K, big.mark = \",\")}.",
                     x = "This model has {D} scalar parameters."), call = NULL)
  }
}

# The rank of a low-rank q: NULL means min(10, D).
resolve_rank <- function(rank, method, D) {
  if (method != "lowrank") {
    if (!is.null(rank)) {
      cli::cli_abort("{.arg rank} is for {.code method = \"lowrank\"}.", call = NULL)
    }
    return(0L)
  }
  if (is.null(rank)) return(as.integer(min(10L, D)))
  check_count(rank, "rank", max = D)
  as.integer(rank)
}

# The engine under every VI fit: validates the tuning values, runs the C
# loop, turns its status into R errors and warnings. `precond` and `shift`
# define the preconditioner zeta = shift + precond z: the optimiser works on
# z. precond is a vector of per-coordinate scales (any family), or a lower
# triangular matrix (full-rank; for the other families only its diagonal
# is used, and it must be diagonal). `blocks`, for method = "blocks": q as
# a product, a list of list(family, rank, dim) over consecutive coordinates
# (see src/qblocks.c). `spec` is the target as
# C reads it (see r_target_spec() and the GLM code).
vi_engine <- function(model, spec, method, estimator, samples, max_iter, tol,
                      optimizer, eta, window, init_mean, init_log_sd,
                      progress = FALSE, control_variates = TRUE,
                      precond = NULL, shift = NULL, rank = NULL,
                      blocks = NULL, init_B = NULL, init_log_sd_z = NULL,
                      enumerate = FALSE, par_sizes = NULL,
                      noise_cuts = TRUE, adam_b2 = NULL, quadratic = NULL) {
  if (is.null(samples)) samples <- if (estimator == "reparam") 10L else 50L
  check_count(samples, "samples")
  check_count(max_iter, "max_iter")
  check_count(window, "window", min = 5)
  # the score estimator's averaging error falls as 1 / sqrt(draws) like
  # any other's, but its gradient noise is far larger: an honest 0.02 took
  # 6,000-10,000 iterations on correlated posteriors, 0.05 takes 6 times fewer
  if (is.null(tol)) tol <- if (estimator == "score") 0.05 else 0.02
  check_positive(tol, "tol")
  if (is.null(eta)) eta <- if (optimizer == "adagrad") 0.5 else 0.05
  check_positive(eta, "eta")
  check_flag(progress, "progress")
  D <- n_unconstrained(model)
  rank <- if (method == "lowrank") resolve_rank(rank, method, D) else 0L
  check_dimension(D, method, rank)
  check_flag(control_variates, "control_variates")
  if (is.matrix(precond) && method != "fullrank") precond <- diag(precond)
  control <- list(control_variates = as.integer(control_variates),
                  precond = if (is.matrix(precond)) as.double(precond),
                  precond_diag = if (!is.null(precond) && !is.matrix(precond)) as.double(precond),
                  shift = if (!is.null(precond)) as.double(shift),
                  family = method, rank = as.integer(rank),
                  blocks = blocks,
                  par_sizes = if (!is.null(par_sizes)) as.integer(par_sizes),
                  init_B = if (!is.null(init_B) && method == "lowrank" && !is.null(precond)) as.double(init_B),
                  estimator = estimator, optimizer = optimizer,
                  samples = as.integer(samples), max_iter = as.integer(max_iter),
                  tol = as.double(tol), eta = as.double(eta),
                  window = as.integer(window), passes = 2L, max_restarts = 5L,
                  init_mean = as.double(init_mean),
                  init_log_sd = as.double(init_log_sd),
                  init_log_sd_z = if (!is.null(init_log_sd_z)) as.double(init_log_sd_z),
                  enumerate = as.integer(enumerate),
                  noise_cuts = as.integer(isTRUE(noise_cuts)),
                  adam_b2 = if (!is.null(adam_b2)) as.double(adam_b2),
                  # the score estimator's quadratic control variate: log p's
                  # negative Hessian at `shift`, the mode (src/estimators.c)
                  quadratic = if (is.matrix(quadratic) && !is.null(shift)) as.double(quadratic),
                  progress = progress,
                  progress_config = list(
                    name = "bbvi",
                    format = "VI {cli::pb_bar} {cli::pb_current}/{cli::pb_total} iterations | {cli::pb_status} | {cli::pb_elapsed}",
                    clear = TRUE))
  start <- proc.time()[["elapsed"]]
  res <- .Call(C_vi_fit, spec, as.double(model$lower), as.double(model$upper),
               control)
  res$time <- proc.time()[["elapsed"]] - start
  if (res$status == "no_finite") {
    cli::cli_abort(c(
      "The log-joint was not finite (NA, NaN or -Inf) at any draw.",
      i = "Check that {.arg logjoint} returns a finite number inside the parameters' support, and the declared bounds.",
      i = "A bound that depends on another parameter (say b < 1 - a) cannot be declared with {.fn param}; returning -Inf outside it lets q drift out: reparameterise (b = (1 - a) * u with u in (0, 1), adding log(1 - a) to the log-joint).",
      i = "Far from the posterior, log p may also overflow (exp() of a large linear predictor is Inf): start at the mode (the default), or give {.arg init} and {.arg init_sd} nearer the posterior."),
      call = NULL)
  }
  if (res$status == "diverged") {
    cli::cli_abort(c(
      "The optimisation diverged: the variational parameters became non-finite {res$restarts - 1} times, even with smaller steps.",
      i = "Try a smaller {.arg eta}, another {.arg init}, or check the model's scale."),
      call = NULL)
  }
  res$control <- control[setdiff(names(control), "progress_config")]
  res$stop_reason <- stop_reasons[[res$stop]]
  res$method <- method
  res$rank <- if (method == "lowrank") rank
  res$estimator <- estimator
  res$optimizer <- optimizer
  if (identical(res$stop, "unbounded")) {
    warn_unbounded(model, res)
  } else if (identical(res$stop, "max_iter_far")) {
    warn_lines(
      sprintf("The variational fit did not converge in %d iterations: q's means crawl along a flat valley of the ELBO.", res$iterations),
      sprintf("x The averaged gradient, through log p's curvature at the mode, puts the optimum about %s q-sds away.",
              format(signif(res$dist_left, 2))),
      "i Mean-field q moves slowly along such valleys (strongly dependent parameters): try `method = \"fullrank\"`, or give `gradient` to `bbvi_model()` (a function, or \"numeric\" for central differences).")
  } else if (identical(res$stop, "frozen")) {
    warn_lines(
      sprintf("The variational fit did not converge: after %d iterations %s.", res$iterations, res$stop_reason),
      "x q started where the log-joint explodes (draws far out, where log p is astronomically low), and its answer is where the steps froze.",
      "i Start at the mode (`start = \"mode\"`, the default), or give `init` and `init_sd` nearer the posterior.")
  } else if (!res$converged) {
    warn_lines(
      sprintf("The variational fit did not converge in %d iterations: %s.", res$iterations, res$stop_reason),
      "i Increase `max_iter` (or `tol`), or check `plot(fit)`.",
      numeric_gradient_hint(model, estimator, length(res$mean)))
  }
  res
}

# For a score fit of a model without a gradient that ran long: the
# fixed-draw path on central differences usually needs far fewer
# evaluations when the log-joint is smooth and D small (bench_custom.R)
numeric_gradient_hint <- function(model, estimator, D) {
  if (estimator != "score" || isTRUE(model$has_gradient) || !is.function(model$logjoint) ||
      D > 100 || inherits(model, "bbvi_minibatch_model") || !is.null(model$factors) ||
      length(integer_parameters(model)) > 0) return(NULL)
  "i Without a gradient function, `bbvi_model(..., gradient = \"numeric\")` takes central differences of a smooth log-joint (2D + 1 evaluations per draw) and fits on the fixed-draw path, usually in far fewer evaluations."
}

# The warning of a run stopped because q's sd ran away (stop "unbounded",
# src/vi.c bbvi_q_unbounded): the ELBO grew without limit along one
# coordinate, which an improper posterior does.
warn_unbounded <- function(model, res) {
  warn_lines(
    sprintf("The variational fit stopped after %d %s: q's sd for `%s` passed %s times its starting scale and was still growing.",
            res$iterations, if (identical(res$optimizer, "lbfgs")) "L-BFGS evaluations" else "iterations",
            unc_names(model)[res$unbounded], format(unbounded_sd_factor)),
    "x The ELBO rises without limit along it: the posterior looks improper (a parameter the log-joint does not depend on, or one the likelihood leaves free under a flat prior).",
    "i Give it a proper prior, or drop it; if its posterior is merely that much wider than where the fit started, give `init_sd` near its scale with `start = \"init\"`.")
}
# src/bbvi.h BBVI_SD_UNBOUNDED
unbounded_sd_factor <- 1e10

# The fixed-draw path (src/saa.c): L-BFGS on the ELBO averaged over one
# balanced set of draws, started at q = N(shift, precond precond'). Fixing
# the draws makes the answer depend on them: the path re-solves from its
# answer with a fresh set, and with twice as many draws while the two
# answers differ by more than `agree` (q-sds for means, log sds, plus the
# distance the re-solve still estimated it had to go), up to
# `max_doublings` times. Returns what vi_engine() returns;
# status "no_finite_start": some starting draw had a non-finite log density,
# "no_finite_check": some draw of a checking run did (the caller falls back
# to the stochastic path in both cases).
saa_engine <- function(model, spec, method, samples, max_iter, tol, precond,
                       shift, hessian = NULL, max_doublings = 2L) {
  D <- length(shift)
  if (is.null(samples)) samples <- if (method == "fullrank") max(30L, 2L * D + 2L) else 30L
  check_count(samples, "samples", min = 2)
  check_count(max_iter, "max_iter")
  if (is.null(tol)) tol <- 0.02
  check_positive(tol, "tol")
  samples <- as.integer(samples + samples %% 2L)   # antithetic pairs
  if (method == "fullrank" && samples <= D) {
    cli::cli_abort(c("{.arg samples} must exceed the number of parameters ({D}) for a full-rank fit with {.code optimizer = \"lbfgs\"}.",
                     i = "With fewer fixed draws some directions of q are seen by no draw, and their variance grows without bound."),
                   call = call("bbvi"))
  }
  agree <- saa_agreement(tol)
  start <- proc.time()[["elapsed"]]
  # precond: a matrix (full-rank) or per-coordinate scales (mean-field; a
  # diagonal matrix is taken as its diagonal), as in vi_engine()
  solve <- function(M, P, s, prev = NULL) {
    if (is.matrix(P) && method != "fullrank") P <- diag(P)
    control <- list(family = method, rank = 0L, samples = as.integer(M),
                    whiten = as.integer(M >= 2L * D),
                    precond = if (is.matrix(P)) as.double(P),
                    precond_diag = if (!is.matrix(P)) as.double(P),
                    shift = as.double(s),
                    maxit = as.integer(min(max_iter, 1e6)),
                    # converged: gradient below tol and L-BFGS's next step
                    # (its estimate of the distance left) below tol / 4
                    grad_tol = as.double(tol), step_tol = 0.25 * as.double(tol),
                    # mean-field: the Laplace Hessian as L-BFGS's H0
                    hessian = if (method == "meanfield" && is.matrix(hessian)) hessian)
    if (!is.null(prev) && method == "meanfield") {
      # L-BFGS goes on with the earlier run's curvature pairs (src/saa.c),
      # moved into this run's coordinates (means in units of P, log sds
      # shifted only): a check then sees at once how far its own optimum
      # is (full-rank checks start afresh: their pairs would need the
      # triangular change of basis)
      control$memory <- attr(prev, "lbfgs_memory")
      control$memory_scale <- c(prev$control$precond_diag / P, rep(1, D))
    }
    r <- .Call(C_vi_saa, spec, as.double(model$lower), as.double(model$upper), control)
    r$control <- control
    r
  }
  res <- solve(samples, precond, shift)
  runs <- list(res)
  M <- samples
  moved <- NA_real_
  outside <- NULL   # a checking run that met draws outside the support
  if (res$status == "ok" && isTRUE(res$converged)) {
    repeat {
      # the same problem from the answer, with fresh draws (twice as many
      # after a disagreement): the first run's answer is q = N(mean, L L')
      q <- q_from_c(res$q)
      nxt <- solve(M, if (method == "fullrank") q$chol else q_marginals(q)$sd, res$mean,
                   prev = res)
      if (nxt$status != "ok") {
        outside <- nxt
        break
      }
      runs[[length(runs) + 1L]] <- nxt
      moved <- saa_distance(res, nxt, attr(nxt, "lbfgs_step"))
      res <- nxt
      if (!isTRUE(nxt$converged) || moved <= agree || M >= samples * 2^max_doublings) break
      M <- 2L * M
    }
  }
  spent <- if (is.null(outside)) runs else c(runs, list(outside))
  res$n_logp <- sum(vapply(spent, function(r) r$n_logp, 0))
  res$n_grad <- sum(vapply(spent, function(r) r$n_grad, 0))
  # fresh draws outside the support (a dependent bound written as -Inf)
  # after an answer whose own draws were all inside: the answer sits
  # against the edge its fixed draws happened to miss. The caller hands
  # over to the stochastic path, whose gradient weighs draws outside.
  if (!is.null(outside)) {
    res$status <- "no_finite_check"
    return(res)
  }
  res$iterations <- sum(vapply(runs, function(r) r$iterations, 0L))
  res$elbo <- unlist(lapply(runs, function(r) r$elbo))
  res$saa <- data.frame(draws = vapply(runs, function(r) r$control$samples, 0L),
                        evaluations = vapply(runs, function(r) r$iterations, 0L),
                        moved = c(NA, vapply(seq_along(runs)[-1], function(k)
                          saa_distance(runs[[k - 1]], runs[[k]], attr(runs[[k]], "lbfgs_step")), 0)))
  stable <- !is.na(moved) && moved <= agree
  res$converged <- isTRUE(res$converged) && stable
  res$time <- proc.time()[["elapsed"]] - start
  res$method <- method
  res$estimator <- "reparam"
  res$optimizer <- "lbfgs"
  res$path <- sprintf("fixed draws (%s), L-BFGS",
                      paste(unique(res$saa$draws), collapse = ", "))
  res$stop_reason <- if (res$converged) "converged" else if (identical(res$stop, "unbounded"))
    stop_reasons[["unbounded"]] else if (!isTRUE(runs[[length(runs)]]$converged))
    sprintf("L-BFGS stopped with the ELBO's gradient at %s (tol %s)",
            format(signif(res$grad_max, 2)), format(tol)) else
    sprintf("answers from independent sets of %d fixed draws still differ by %s q-sds (more than %s)",
            M, format(signif(moved, 2)), format(signif(agree, 2)))
  # a runaway sd (stop "unbounded") is the caller's: it hands over to the
  # stochastic path
  if (res$status == "ok" && !res$converged && !identical(res$stop, "unbounded")) {
    warn_lines(
      sprintf("The variational fit did not converge (%d L-BFGS evaluations): %s.", res$iterations, res$stop_reason),
      "i Increase `max_iter` or `samples`, or try `optimizer = \"adam\"`.")
  }
  res
}

# Why a VI run stopped, by the stop names its C loop returns (src/vi.c,
# bbvi_vi_result).
stop_reasons <- c(
  converged = "converged",
  max_iter_moving = "max_iter reached while still moving",
  max_iter_noisy = "max_iter reached while averaging (Monte Carlo error above tol)",
  outside = "max_iter reached with q's draws outside the support (the log-joint is -Inf or NA at many of them)",
  unbounded = "q's sd grew without bound (the posterior looks improper)",
  frozen = "the steps froze: an earlier gradient, far larger than any since, left them a thousand times too short to move",
  max_iter_far = "max_iter reached while q's means crawl along a flat valley of the ELBO, far from its optimum")

# `init_sd`: one positive number or one per unconstrained coordinate;
# returned as D numbers.
check_init_sd <- function(init_sd, D) {
  if (!is.numeric(init_sd) || !(length(init_sd) %in% c(1L, D)) ||
      anyNA(init_sd) || any(!is.finite(init_sd)) || any(init_sd <= 0)) {
    abort_arg("init_sd", sprintf("one positive number or %d of them", D), init_sd)
  }
  rep_len(as.double(init_sd), D)
}

# How far two fixed-draw answers may be apart: the stochastic path's Monte
# Carlo tolerance for one answer is tol; two independent answers differ by
# sqrt(2) times each one's error, and 2.5 such standard errors is the bar.
saa_agreement <- function(tol) 2.5 * sqrt(2) * tol

# Largest change between two Gaussian answers, over coordinates: of the
# mean in units of the second's sd, and of the log sd.
# `left`: L-BFGS's estimate of how far b still was from its own optimum
# when it stopped (its last quasi-Newton step, in the same units), added
# so that a check run that stops at once, its carried curvature saying the
# optimum is near, does not count as 0 apart.
saa_distance <- function(a, b, left = 0) {
  sd_a <- q_marginals(q_from_c(a$q))$sd
  sd_b <- q_marginals(q_from_c(b$q))$sd
  if (is.null(left) || !is.finite(left)) left <- 0
  max(abs(a$mean - b$mean) / sd_b, abs(log(sd_a / sd_b))) + left
}
