#' Variational inference for generalized linear models
#'
#' Fits a gaussian (identity link), binomial (logit) or poisson (log)
#' regression given by a formula, with independent priors on the
#' coefficients, by variational inference. The log-joint and its gradient
#' are compiled: all draws of an iteration are evaluated at once, with one
#' matrix product for the linear predictors.
#'
#' **Paths.** Under a Gaussian q every linear predictor is itself Gaussian,
#' so the expected log-joint is a sum of one-dimensional integrals (closed
#' forms for gaussian and poisson, Gauss-Hermite quadrature for binomial and
#' for Student t / Cauchy priors). With `estimator = "auto"` (the default)
#' `bbvi()` uses these exact expectations and their exact gradients (the
#' reparameterization gradient without Monte Carlo noise) and maximises the
#' ELBO by variational Newton steps: the `"quadrature"` path, deterministic
#' and fast. `estimator = "reparam"` or `"score"` (or `path = "stochastic"`)
#' runs the black-box stochastic loop of [bbvi()] on the same compiled
#' log-joint instead, started from one Newton step from a least-squares
#' guess. `summary()` says which path ran.
#'
#' **Defaults as rstanarm.** The default priors are rstanarm's autoscaled
#' priors (see [priors]): the same call gives the same posterior as
#' `rstanarm::stan_glm()`. As there, the intercept prior applies to the
#' intercept with centred predictors; the fit is reported with the
#' intercept on the original scale. `method` defaults to `"fullrank"` for
#' models with at most 200 parameters (coefficients, and `sigma` for
#' gaussian) and to `"meanfield"` above that (with a message); the
#' stochastic path's `optimizer` defaults to Adam, as for [bbvi()].
#'
#' **Large data.** The model matrix is kept once (in the fit; not at all
#' with `keep_x = FALSE`) and never copied: centring is applied on the fly
#' and every pass over the rows (quadrature, log-density draws,
#' cross-products) works in blocks of rows and of at most 128 draws, so the
#' memory beyond X is a few vectors of length N and O(P^2), whatever the
#' number of draws. The log-likelihood's constant is computed once per fit.
#' Passes run on `getOption("bbvi.threads", 2)` OpenMP threads (when the
#' package was built with OpenMP); the rows are summed in chunks fixed by
#' N, so results are identical for any number of threads. For data that
#' only just fit in memory, give a numeric matrix ([bbvi.matrix()]): no
#' model frame or model matrix is built.
#'
#' **Minibatches (`subsample`).** With `subsample = B` a binomial or
#' poisson fit on the quadrature path works on blocks of B consecutive rows,
#' visited in a random order each epoch (a pass over the rows). A visit
#' replaces the block's share of the sums behind the Newton fixed point
#' (the expected Hessian and the working response, computed under the
#' current q) and moves q to the fixed point of the updated sums, scaled by
#' N / rows seen during the first epoch. Each block's share was computed at
#' the q of its last visit (stale sums, as in SAG) rather than rescaled
#' from one minibatch (as in Robbins-Monro stochastic VI, whose noise
#' would leave the means about sd / sqrt(epochs) from the full-data answer):
#' the sums converge to the full-data ones. When an epoch moves no mean by
#' more than 0.1 posterior sd, full-data Newton steps finish the fit, and it
#' converges when such a step is below `tol` posterior sds: the answer is
#' the full-data answer, in fewer passes over the rows (the fit's
#' `epochs`). Gaussian fits do not need it: their sufficient statistics
#' take one pass.
#'
#' The response follows [glm()]: for binomial a 0/1 vector, a logical, a
#' factor (first level = failure) or `cbind(successes, failures)`; for
#' poisson non-negative whole numbers.
#'
#' @param x A formula, as for [glm()].
#' @param data A data frame (or something [model.frame()] accepts).
#' @param family `gaussian()`, `binomial()` or `poisson()` (a family object,
#'   the function, or its name), with their canonical links.
#' @param prior Prior of every coefficient except the intercept: a
#'   [normal()], [student_t()] or [cauchy()] prior (bbvi's or rstanarm's;
#'   vector parameters give one per coefficient, in model-matrix order) or
#'   `NULL` for flat. Default `normal(0, 2.5, autoscale = TRUE)`.
#' @param prior_intercept Prior of the intercept with centred predictors,
#'   or `NULL`. Default `normal(0, 2.5, autoscale = TRUE)`, centred at
#'   `mean(y)` for gaussian models (as rstanarm's default).
#' @param prior_aux Prior of the gaussian residual sd `sigma` (half
#'   versions of normal, Student t and Cauchy; or [exponential()]), or
#'   `NULL` for flat on (0, Inf). Ignored for other families. Default
#'   `exponential(1, autoscale = TRUE)` (rate `1 / sd(y)`).
#' @param center `TRUE` (the default, as rstanarm) to put `prior_intercept`
#'   on the intercept with centred predictors; `FALSE` to put it on the
#'   intercept as written (the value at all predictors 0). The fit reports
#'   the intercept on the original scale either way.
#' @param method `"fullrank"` (the default up to 200 parameters) or
#'   `"meanfield"` (the default above).
#' @param optimizer For the stochastic path: `"adam"` (default) or
#'   `"adagrad"`.
#' @param weights,offset,subset,na.action As for [glm()]: prior weights,
#'   an offset added to the linear predictor, a subset of rows, and what to
#'   do with missing values.
#' @param path `"auto"`, `"quadrature"` or `"stochastic"` (see Paths).
#'   `"auto"` means quadrature unless an estimator is named.
#' @param nodes Gauss-Hermite nodes for the quadrature path.
#' @param subsample `NULL` (every pass over all rows) or the rows per
#'   minibatch, a whole number of at least 10 times the number of
#'   coefficients, for binomial and poisson fits on the quadrature path
#'   (see Minibatches).
#' @param init,init_sd For the stochastic path: a named list of starting
#'   values (constrained scale) and the starting sd; by default a Newton step
#'   from a least-squares guess and its Laplace sds.
#' @param keep_x `TRUE` (the default) to keep the model matrix in the fit;
#'   `FALSE` to drop it (as `x = FALSE` in [lm()]; bbvi's first argument is
#'   already called `x`): the fit object is then small, and the methods
#'   that need the model matrix of the fit's own data (`predict()`,
#'   `fitted()`, `log_lik()`, `loo()`, ...) rebuild it from the formula and
#'   the call's data, or say that they cannot.
#' @inheritParams bbvi
#' @details On the quadrature path `tol` (default 1e-4) bounds the last Newton step of every mean, in posterior sds, and of every log sd; `max_iter` defaults to 200 there.
#' @return An object of class `bbvi_glm_fit` (a `bbvi_fit`), with methods
#'   [predict()][predict.bbvi_glm_fit], [posterior_predict()], `fitted()`,
#'   `nobs()`, `formula()`, `family()` besides those of every fit.
#' @examples
#' fit <- bbvi(mpg ~ wt + factor(cyl), data = mtcars, seed = 1)
#' fit
#' logit <- bbvi(am ~ wt, data = mtcars, family = binomial(),
#'               method = "fullrank", seed = 1)
#' summary(logit)
#' head(predict(logit, type = "response"))
#' @export
bbvi.formula <- function(x, data = NULL, family = stats::gaussian(),
                         prior = normal(0, 2.5, autoscale = TRUE),
                         prior_intercept = normal(0, 2.5, autoscale = TRUE),
                         prior_aux = exponential(1, autoscale = TRUE),
                         weights = NULL, offset = NULL, subset = NULL,
                         na.action = stats::na.omit,
                         method = c("fullrank", "meanfield"),
                         estimator = c("auto", "score", "reparam"),
                         samples = NULL, max_iter = 10000, tol = NULL,
                         seed = NULL, progress = interactive(),
                         path = c("auto", "quadrature", "stochastic"),
                         nodes = 32, optimizer = c("adam", "adagrad"),
                         eta = NULL, window = 100, init = NULL, init_sd = NULL,
                         draws = 4000, center = TRUE, keep_x = TRUE,
                         subsample = NULL, ...) {
  call <- fit_call(match.call())
  check_dots_empty(...)
  check_flag(keep_x, "keep_x")
  # rstanarm centres the default intercept prior at mean(y) (gaussian)
  if (missing(prior_intercept) && is.list(prior_intercept)) prior_intercept$default <- TRUE
  check_flag(center, "center")
  setup <- glm_setup(x, data, family, prior, prior_intercept, prior_aux,
                     weights = weights, offset = offset, subset = subset,
                     na.action = na.action, call = call, center = center)
  glm_vi_args(setup, call, method_missing = missing(method),
              max_iter_missing = missing(max_iter))
}

# glm_vi() with the fitting arguments of the calling method (bbvi.formula,
# bbvi.matrix), which share them.
glm_vi_args <- function(setup, call, method_missing, max_iter_missing,
                        env = parent.frame()) {
  args <- mget(c("method", "estimator", "samples", "max_iter", "tol", "seed",
                 "progress", "path", "nodes", "optimizer", "eta", "window",
                 "init", "init_sd", "draws", "keep_x", "subsample"), envir = env)
  # quote = TRUE: `call` is a call object, to be passed, not evaluated
  do.call(glm_vi, c(list(setup, call = call, method_missing = method_missing,
                         max_iter_missing = max_iter_missing), args), quote = TRUE)
}

# The fit from a GLM setup (glm_setup() or the matrix interface): the
# quadrature or the stochastic path, then the fit object.
glm_vi <- function(setup, call, method, method_missing, estimator, samples,
                   max_iter, max_iter_missing, tol, seed, progress, path,
                   nodes, optimizer, eta, window, init, init_sd, draws,
                   keep_x, subsample = NULL) {
  method <- match_arg(method, c("fullrank", "meanfield"), "method")
  estimator <- match_arg(estimator, c("auto", "score", "reparam"), "estimator")
  path <- match_arg(path, c("auto", "quadrature", "stochastic"), "path")
  optimizer <- match_arg(optimizer, c("adam", "adagrad"), "optimizer")
  if (path == "auto") path <- if (estimator == "auto") "quadrature" else "stochastic"
  if (path == "quadrature" && estimator == "score") {
    cli::cli_abort(c("{.code estimator = \"score\"} runs on the stochastic path.",
                     i = "Use {.code path = \"stochastic\"} or {.code path = \"auto\"}."),
                   call = NULL)
  }
  check_count(draws, "draws")
  check_count(nodes, "nodes", min = 2)
  model <- setup$model
  subsample <- check_subsample(subsample, model, path)
  info <- setup$info
  n_par <- length(model$par_names)
  if (method_missing && n_par > fullrank_max) {
    method <- "meanfield"
    cli::cli_inform(c("{n_par} parameters (> {fullrank_max}): using {.code method = \"meanfield\"}.",
                      i = "Pass {.code method = \"fullrank\"} for a full-rank q (cost grows as the square of the parameters)."))
  }
  with_seed(seed, {
    if (path == "quadrature") {
      res <- glm_quad(model, method, nodes = nodes,
                      max_iter = if (max_iter_missing) 200L else max_iter,
                      tol = if (is.null(tol)) 1e-4 else tol,
                      subsample = subsample)
    } else {
      estimator <- resolve_estimator(estimator, TRUE)
      if (is.null(init)) {
        st <- glm_quad(model, method, nodes = nodes, max_iter = 1L, tol = 1e-6,
                       quiet = TRUE)
        init_mean <- st$mean
        init_log_sd <- log(sqrt(rowSums(st$chol^2)))
        # precondition by the Newton step's q: its Cholesky factor for
        # full-rank (the problem the optimiser sees is then close to unit
        # scale and unit correlation), its sds for mean-field
        precond <- if (method == "fullrank") st$chol else diag(exp(init_log_sd), length(init_mean))
      } else {
        init_mean <- center_init(init_unconstrained(init, model), info)
        init_log_sd <- rep(0, length(init_mean))
        precond <- NULL
      }
      if (!is.null(init_sd)) {
        check_positive(init_sd, "init_sd")
        init_log_sd <- rep(log(init_sd), length(init_mean))
        precond <- diag(init_sd, length(init_mean))
      }
      res <- vi_engine(model, model$target, method = method,
                       estimator = estimator, samples = samples,
                       max_iter = max_iter, tol = tol, optimizer = optimizer,
                       eta = eta, window = window, init_mean = init_mean,
                       init_log_sd = init_log_sd, progress = progress,
                       precond = precond, shift = init_mean)
    }
    res <- glm_check_proper(model, res)
    fit <- new_bbvi_fit(model, res, call = call, draws = draws,
                        class = "bbvi_glm_fit",
                        extra = c(info, list(nodes = as.integer(nodes),
                                             epochs = res$epochs)))
    fit <- uncenter_fit(fit)
    if (!keep_x) fit$model$target["X"] <- list(NULL)
    fit
  })
}

#' Variational inference for a GLM given as a numeric matrix
#'
#' The GLM of [bbvi.formula()] (same families, priors, paths and fit
#' object) from a prebuilt numeric design matrix and a response, as
#' [glm.fit()]: no model frame is built and `x` is never copied (it is
#' stored in the fit as it is, or not at all with `keep_x = FALSE`), so
#' this is the route for data that only just fit in memory. Memory at its
#' peak is `x` plus a few vectors of length `nrow(x)` and O(`ncol(x)`^2).
#'
#' With `intercept = TRUE` the first coefficient is `(Intercept)`, whose
#' column of ones is implied (not added to `x`); the other coefficients are
#' named by `colnames(x)` (or `x1`, `x2`, ...). As with formulas, the
#' intercept prior applies to the intercept with centred predictors
#' (`center = TRUE`), the centring being done on the fly.
#'
#' @param x A numeric matrix (double; an integer matrix is converted, which
#'   copies it), one row per observation, without an intercept column.
#' @param y The response, as for [bbvi.formula()]: numeric, 0/1, logical,
#'   factor or a two-column matrix of successes and failures (binomial),
#'   counts (poisson); no missing values.
#' @param intercept `TRUE` to add an intercept (not stored as a column).
#' @param weights,offset `NULL` or one number per row.
#' @inheritParams bbvi.formula
#' @return A `bbvi_glm_fit` (see [bbvi.formula()]); `formula()` is `NULL`
#'   and `predict(newdata =)` takes a matrix with the columns of `x`.
#' @examples
#' set.seed(1)
#' X <- matrix(rnorm(2000), 1000, 2, dimnames = list(NULL, c("a", "b")))
#' y <- rbinom(1000, 1, plogis(0.3 + X %*% c(1, -0.5)))
#' fit <- bbvi(X, y, family = binomial(), seed = 1)
#' coef(fit)
#' @export
bbvi.matrix <- function(x, y, family = stats::gaussian(), intercept = TRUE,
                        prior = normal(0, 2.5, autoscale = TRUE),
                        prior_intercept = normal(0, 2.5, autoscale = TRUE),
                        prior_aux = exponential(1, autoscale = TRUE),
                        weights = NULL, offset = NULL,
                        method = c("fullrank", "meanfield"),
                        estimator = c("auto", "score", "reparam"),
                        samples = NULL, max_iter = 10000, tol = NULL,
                        seed = NULL, progress = interactive(),
                        path = c("auto", "quadrature", "stochastic"),
                        nodes = 32, optimizer = c("adam", "adagrad"),
                        eta = NULL, window = 100, init = NULL, init_sd = NULL,
                        draws = 4000, center = TRUE, keep_x = TRUE,
                        subsample = NULL, ...) {
  call <- match.call()
  call[[1]] <- quote(bbvi)
  check_dots_empty(...)
  check_flag(keep_x, "keep_x")
  check_flag(intercept, "intercept")
  check_flag(center, "center")
  if (!is.numeric(x) || !is.matrix(x) || nrow(x) == 0 || ncol(x) + intercept == 0) {
    abort_arg("x", "a numeric matrix with at least one row", x)
  }
  if (!is.double(x)) storage.mode(x) <- "double"
  if (missing(prior_intercept) && is.list(prior_intercept)) prior_intercept$default <- TRUE
  family <- resolve_family(family)
  prior <- check_prior_arg(prior, "prior")
  prior_intercept <- check_prior_arg(prior_intercept, "prior_intercept")
  prior_aux <- check_prior_arg(prior_aux, "prior_aux", aux = TRUE)
  N <- nrow(x)
  nms <- colnames(x)
  if (is.null(nms)) nms <- if (ncol(x)) paste0("x", seq_len(ncol(x))) else character()
  if (anyNA(nms) || any(!nzchar(nms)) || anyDuplicated(c(if (intercept) "(Intercept)", nms))) {
    abort_arg("x", "a matrix whose column names are distinct, not empty and not \"(Intercept)\" when intercept = TRUE", x)
  }
  if (intercept) nms <- c("(Intercept)", nms)
  ny <- if (is.matrix(y)) nrow(y) else length(y)
  if (ny != N) {
    cli::cli_abort(c("{.arg y} must have one value per row of {.arg x} ({N}).",
                     x = "It has {ny}."), call = NULL)
  }
  if (anyNA(y)) cli::cli_abort("{.arg y} has missing values; drop those rows first.", call = NULL)
  resp <- glm_response(y, family, N)
  w <- if (is.null(weights)) rep(1, N) else weights
  off <- if (is.null(offset)) rep(0, N) else offset
  setup <- glm_build(x, intercept = intercept, nms = nms, has_int = intercept,
                     resp = resp, w = w, off = off, family = family,
                     prior = prior, prior_intercept = prior_intercept,
                     prior_aux = prior_aux, center = center)
  setup$info <- c(list(formula = NULL, terms = NULL, xlevels = NULL,
                       contrasts = NULL), setup$info,
                  list(na.action = NULL, row_names = rownames(x),
                       has_offset_arg = !is.null(offset)))
  glm_vi_args(setup, call, method_missing = missing(method),
              max_iter_missing = missing(max_iter))
}

# Formula fits use method = "fullrank" up to this many parameters (see
# ?bbvi.formula).
fullrank_max <- 200L

# The call as the user would write it: bbvi(formula = ..., ...), so that
# update() and getCall() work (match.call() gives bbvi.formula(x = ...)).
fit_call <- function(call) {
  call[[1]] <- quote(bbvi)
  names(call)[names(call) == "x"] <- "formula"
  call
}

# ---- centred predictors ---------------------------------------------------

# As rstanarm, the model is fitted with centred predictors (the intercept
# prior is on the intercept at the predictors' means) and reported on the
# original scale: (Intercept) = alpha - sum(xbar * beta). This linear map
# has unit Jacobian, so q stays Gaussian (its covariance is mapped) and the
# importance ratios (k-hat) computed on the centred scale are unchanged.
center_matrix <- function(nms, xbar) {
  A <- diag(length(nms))
  dimnames(A) <- list(nms, nms)
  A["(Intercept)", names(xbar)] <- -xbar
  A
}

uncenter_fit <- function(fit) {
  if (is.null(fit$xbar)) return(fit)
  A <- center_matrix(fit$par_names, fit$xbar)
  fit$mean_unc <- stats::setNames(drop(A %*% fit$mean_unc), fit$par_names)
  S <- A %*% tcrossprod(fit$chol_unc) %*% t(A)
  L <- tryCatch(t(chol(S)), error = function(e) A %*% fit$chol_unc)
  dimnames(L) <- list(fit$par_names, fit$par_names)
  fit$chol_unc <- L
  b <- names(fit$xbar)
  fit$draws[, "(Intercept)"] <- fit$draws[, "(Intercept)"] -
    drop(fit$draws[, b, drop = FALSE] %*% fit$xbar)
  fit
}

# A user's init (original scale) on the centred scale.
center_init <- function(init_mean, info) {
  if (is.null(info$xbar)) return(init_mean)
  nms <- c(info$coef_names, if (info$family$family == "gaussian") "sigma")
  names(init_mean) <- nms
  init_mean[["(Intercept)"]] <- init_mean[["(Intercept)"]] +
    sum(info$xbar * init_mean[names(info$xbar)])
  unname(init_mean)
}

# ---- setup shared with sample_mcmc() --------------------------------------

# Turns the glm()-style arguments into a compiled model and what predict()
# needs. `weights`, `offset` and `subset` are taken as expressions from
# `call` when it has them (evaluated in `data`, then the formula's
# environment, as glm() does), otherwise as values.
glm_setup <- function(formula, data, family, prior, prior_intercept, prior_aux,
                      weights = NULL, offset = NULL, subset = NULL,
                      na.action = stats::na.omit, call = NULL, center = FALSE) {
  if (!inherits(formula, "formula")) abort_arg("formula", "a formula", formula)
  family <- resolve_family(family)
  prior <- check_prior_arg(prior, "prior")
  prior_intercept <- check_prior_arg(prior_intercept, "prior_intercept")
  prior_aux <- check_prior_arg(prior_aux, "prior_aux", aux = TRUE)
  fr <- glm_frame(formula, data, weights = weights, offset = offset,
                  subset = subset, na.action = na.action, call = call)
  mt <- fr$terms
  X <- fr$X
  N <- nrow(X)
  resp <- glm_response(stats::model.response(fr$mf, "any"), family, N)
  nms <- colnames(X)
  has_int <- attr(mt, "intercept") == 1 && "(Intercept)" %in% nms
  out <- glm_build(X, intercept = FALSE, nms = nms, has_int = has_int,
                   resp = resp, w = fr$w, off = fr$off, family = family,
                   prior = prior, prior_intercept = prior_intercept,
                   prior_aux = prior_aux, center = center)
  fr$X <- NULL   # X lives in the target only
  out$info <- c(list(formula = formula, terms = mt,
                     xlevels = stats::.getXlevels(mt, fr$mf),
                     contrasts = attr(X, "contrasts")),
                out$info,
                list(na.action = attr(fr$mf, "na.action"),
                     row_names = fr$row_names,
                     has_offset_arg = !is.null(call) && !is.null(call$offset) ||
                       (is.null(call) && !is.null(offset))))
  out
}

# The model frame and what comes out of it: the model matrix, weights and
# offset (checked). Also rebuilds the model matrix of a fit made with
# keep_x = FALSE (glm_model_matrix()).
glm_frame <- function(formula, data, weights = NULL, offset = NULL,
                      subset = NULL, na.action = stats::na.omit, call = NULL) {
  mf <- quote(stats::model.frame(formula = formula, data = data,
                                 drop.unused.levels = TRUE))
  for (a in c("subset", "weights", "offset")) {
    if (!is.null(call) && !is.null(call[[a]])) mf[[a]] <- call[[a]]
    else {
      val <- switch(a, subset = subset, weights = weights, offset = offset)
      if (!is.null(val)) mf[[a]] <- val
    }
  }
  if (is.character(na.action) && length(na.action) == 1 && !is.na(na.action) &&
      nzchar(na.action)) {
    na.action <- get0(na.action, mode = "function")
  }
  if (!is.function(na.action)) abort_arg("na.action", "a function such as na.omit", na.action)
  mf$na.action <- na.action
  if (is.null(data)) data <- environment(formula)
  env <- list2env(list(formula = formula, data = data), parent = environment(formula))
  mf <- tryCatch(eval(mf, env), error = function(e) {
    cli::cli_abort(c("Could not build the model frame from {.arg formula} and {.arg data}.",
                     x = "{conditionMessage(e)}"), call = NULL)
  })
  mt <- attr(mf, "terms")
  N <- nrow(mf)
  if (N == 0) cli::cli_abort("No observations left (after {.arg subset} and {.arg na.action}).", call = NULL)
  X <- stats::model.matrix(mt, mf)
  if (ncol(X) == 0) cli::cli_abort("{.arg formula} has no coefficients.", call = NULL)
  if (!is.double(X)) storage.mode(X) <- "double"
  # model.matrix() turns the frame's (compact, integer) row names into N
  # strings, as large as a few columns of X: keep the frame's instead
  if (!is.null(rownames(X))) dimnames(X) <- list(NULL, colnames(X))
  w <- stats::model.weights(mf)
  if (is.null(w)) w <- rep(1, N)
  off <- stats::model.offset(mf)
  if (is.null(off)) off <- rep(0, N)
  list(mf = mf, terms = mt, X = X, w = w, off = off,
       row_names = attr(mf, "row.names"))
}

# The compiled model from a numeric model matrix X (N x k, double) and the
# response: shared by the formula and the matrix interfaces. `intercept =
# TRUE` means the first coefficient, `(Intercept)`, is an intercept whose
# column of ones is not stored in X (the matrix interface: the user's X is
# kept as it is, never copied). `nms` names all coefficients. With centred
# predictors the column means are subtracted on the fly by the C kernels
# (`xbar` in the target), so the design is never copied either.
glm_build <- function(X, intercept, nms, has_int, resp, w, off, family,
                      prior, prior_intercept, prior_aux, center) {
  N <- nrow(X)
  if (!is.numeric(w) || length(w) != N || anyNA(w) || any(!is.finite(w)) || any(w < 0)) {
    abort_arg("weights", "non-negative finite numbers, one per observation", w)
  }
  if (!is.numeric(off) || length(off) != N || any(!is.finite(off))) {
    abort_arg("offset", "finite numbers, one per observation", off)
  }
  P <- length(nms)
  is_int <- nms == "(Intercept)" & has_int
  if (!is.null(prior_intercept) && has_int &&
      (length(prior_intercept$location) > 1 || length(prior_intercept$scale) > 1)) {
    cli::cli_abort("{.arg prior_intercept} must have scalar parameters.", call = NULL)
  }
  cs <- glm_colstats(X, intercept, nms)
  specified <- list(prior = prior, prior_intercept = prior_intercept,
                    prior_aux = if (family$family == "gaussian") prior_aux)
  adjusted <- adjust_priors(prior, prior_intercept, prior_aux, NULL, is_int,
                            resp$y, family$family, xsd = cs$sd[!is_int])
  xbar <- NULL
  xbar_full <- NULL
  if (center && has_int && any(!is_int)) {
    xbar <- stats::setNames(cs$mean[!is_int], nms[!is_int])
    xbar_full <- ifelse(is_int, 0, cs$mean)
  }
  start <- glm_start(X, intercept, xbar_full, nms, resp, w, off, family$family)
  pr <- expand_prior(adjusted$prior, sum(!is_int), "prior", nms[!is_int])
  pri <- expand_prior(adjusted$prior_intercept, sum(is_int), "prior_intercept", "(Intercept)")
  ptype <- integer(P); ppar <- matrix(0, 3, P)
  ptype[!is_int] <- pr$type; ppar[, !is_int] <- pr$par
  ptype[is_int] <- pri$type; ppar[, is_int] <- pri$par
  gaussian_fam <- family$family == "gaussian"
  aux <- aux_prior_spec(if (gaussian_fam) adjusted$prior_aux else NULL)

  if (gaussian_fam && "sigma" %in% nms) {
    cli::cli_abort("A gaussian model cannot have a coefficient named {.val sigma}; rename that column.",
                   call = NULL)
  }
  parameters <- stats::setNames(rep(list(param()), P), nms)
  if (gaussian_fam) parameters$sigma <- param(lower = 0)
  fam_code <- glm_family_code[[family$family]]
  y <- as.double(resp$y); trials <- as.double(resp$trials)
  w <- as.double(w); off <- as.double(off)
  # all-1 weights and trials and an all-0 offset are left out of the
  # target (C reads NULL as those): fewer N-vectors stored in the fit
  target <- list(type = "glm", family = fam_code, X = X,
                 intercept = as.integer(intercept), xbar = xbar_full,
                 names = nms, y = y,
                 trials = if (family$family == "binomial" && any(trials != 1)) trials,
                 weights = if (any(w != 1)) w, offset = if (any(off != 0)) off,
                 prior_type = as.integer(ptype), prior_par = as.double(ppar),
                 aux_type = as.integer(aux$type), aux_par = as.double(aux$par),
                 llconst = glm_llconst(fam_code, y, trials, w),
                 threads = glm_threads(), init = start(ptype, ppar))
  model <- new_bbvi_model(logjoint = NULL, gradient = NULL, parameters = parameters,
                          data = NULL, vectorized = FALSE, target = target,
                          kind = "compiled GLM", has_gradient = TRUE,
                          class = "bbvi_glm_model")
  info <- list(family = family,
               prior = lapply(adjusted, unscale_flag),
               prior_specified = specified, xbar = xbar,
               nobs = N, coef_names = nms, y = resp$y, trials = resp$trials,
               weights = w, offset = off)
  list(model = model, info = info)
}

# Threads for the compiled GLM's passes over the rows (OpenMP, when the
# package was built with it): option `bbvi.threads`, default 2 (what CRAN
# allows). The row chunks are fixed by N, so the results are the same
# whatever the number of threads.
glm_threads <- function() {
  n <- getOption("bbvi.threads", 2L)
  if (!is.numeric(n) || length(n) != 1 || is.na(n) || n < 1) {
    cli::cli_abort("Option {.code bbvi.threads} must be a positive whole number.", call = NULL)
  }
  as.integer(n)
}

# The log-likelihood's constant (fixed by the data): computed once per fit
# and handed to C, which would otherwise recompute it on every call (3N
# lgamma calls for binomial). Exactly 0 for 0/1 responses.
glm_llconst <- function(fam_code, y, trials, w) {
  switch(names(glm_family_code)[match(fam_code, glm_family_code)],
    gaussian = -0.5 * log(2 * pi) * sum(w),
    binomial = {
      k <- trials != 1
      if (any(k)) sum(w[k] * lchoose(trials[k], y[k])) else 0
    },
    poisson = -sum(w * lgamma(y + 1)))
}

# Column statistics of the design in one C pass per stored column: checks
# for non-finite values and zero-variance columns; means (centring) and sds
# (autoscaled priors) for all coefficients, 0 and 1 for an implicit
# intercept.
glm_colstats <- function(X, intercept, nms) {
  cs <- .Call(C_glm_colstats, X)
  if (intercept) {
    cs <- list(finite = c(TRUE, cs$finite), mean = c(0, cs$mean),
               sd = c(1, cs$sd), constant = c(FALSE, cs$constant))
  }
  if (!all(cs$finite)) {
    bad <- nms[!cs$finite]
    cli::cli_abort(c("The model matrix has non-finite values (Inf or NaN).",
                     x = "{cli::qty(length(bad))}In column{?s} {.val {bad}}.",
                     i = "Missing values (NA) are handled by {.arg na.action}."), call = NULL)
  }
  const <- if (nrow(X) > 1) cs$constant & nms != "(Intercept)" else logical(length(nms))
  # without an intercept, one constant column plays its part; only further
  # constant columns are collinear with it
  covers <- "the intercept"
  if (!intercept && !"(Intercept)" %in% nms && any(const)) {
    covers <- sprintf("column \"%s\"", nms[which(const)[1]])
    const[which(const)[1]] <- FALSE
  }
  if (any(const)) {
    bad <- nms[const]
    cli::cli_abort(c("{cli::qty(length(bad))}Column{?s} {.val {bad}} of the model matrix {?has/have} zero variance.",
                     i = "{cli::qty(length(bad))}Drop {?it/them} ({covers} already covers a constant)."),
                   call = NULL)
  }
  cs$sd[cs$constant | !is.finite(cs$sd)] <- 1
  cs
}

# The design (as fitted: intercept column, centring) times B (P x K), in
# row blocks through C; `tg` is a GLM target.
glm_linpred <- function(tg, B) {
  .Call(C_glm_linpred, tg$X, isTRUE(as.logical(tg$intercept)), tg$xbar,
        as.double(B))
}

# The target's N-vectors, filling in what was left out (all-1 weights and
# trials, all-0 offset).
glm_tg_vec <- function(tg, what) {
  v <- tg[[what]]
  if (!is.null(v)) return(v)
  N <- length(tg$y)
  switch(what, weights = rep(1, N), offset = rep(0, N),
         trials = if (tg$family == glm_family_code[["binomial"]]) rep(1, N) else numeric(N))
}

# The model matrix of a GLM fit on the original (uncentred) scale, with an
# explicit intercept column: from the fit when it kept it; for a formula fit
# made with keep_x = FALSE rebuilt from the formula and the data of the
# call, as lm's model.matrix() does.
glm_model_matrix <- function(object) {
  tg <- object$model$target
  X <- tg$X
  if (is.null(X)) {
    if (is.null(object$terms)) {
      cli::cli_abort(c("This fit was made with {.code keep_x = FALSE} from a matrix: it keeps no model matrix.",
                       i = "Refit with {.code keep_x = TRUE}, or pass {.arg newdata}."), call = NULL)
    }
    cl <- object$call
    env <- environment(object$formula) %||% parent.frame()
    data <- if (is.null(cl$data)) NULL else eval(cl$data, env)
    na <- if (is.null(cl$na.action)) stats::na.omit else eval(cl$na.action, env)
    X <- tryCatch(
      glm_frame(object$formula, data, na.action = na, call = cl)$X,
      error = function(e) {
        cli::cli_abort(c("This fit was made with {.code keep_x = FALSE} and its model matrix could not be rebuilt from the call's data.",
                         x = "{conditionMessage(e)}",
                         i = "Refit with {.code keep_x = TRUE}, or pass {.arg newdata}."), call = NULL)
      })
    if (nrow(X) != object$nobs) {
      cli::cli_abort(c("This fit was made with {.code keep_x = FALSE} and the data of its call have changed ({nrow(X)} rows, the fit {object$nobs}).",
                       i = "Refit with {.code keep_x = TRUE}, or pass {.arg newdata}."), call = NULL)
    }
    return(X)
  }
  if (isTRUE(as.logical(tg$intercept))) {
    X <- cbind(1, X)
    colnames(X) <- object$coef_names
  }
  X
}

unscale_flag <- function(p) {
  if (!is.null(p)) {
    p$autoscale <- FALSE
    p$default <- NULL
  }
  p
}

resolve_family <- function(family) {
  fam <- family
  if (is.character(fam) && length(fam) == 1 && !is.na(fam)) {
    f <- tryCatch(get(fam, mode = "function", envir = asNamespace("stats")),
                  error = function(e) NULL)
    if (is.null(f)) {
      cli::cli_abort(c("{.arg family} must be gaussian, binomial or poisson.",
                       x = "It is {.val {fam}}."), call = NULL)
    }
    fam <- f
  }
  if (is.function(fam)) fam <- tryCatch(fam(), error = function(e) NULL)
  if (!inherits(fam, "family")) {
    abort_arg("family", "a family object such as binomial(), or its name", family)
  }
  links <- c(gaussian = "identity", binomial = "logit", poisson = "log")
  if (!(fam$family %in% names(links))) {
    cli::cli_abort(c("{.arg family} must be gaussian, binomial or poisson.",
                     x = "It is {.val {fam$family}}."), call = NULL)
  }
  if (fam$link != links[[fam$family]]) {
    cli::cli_abort(c("{.arg family}: only the {.val {links[[fam$family]]}} link is available for {fam$family}.",
                     x = "The link is {.val {fam$link}}."), call = NULL)
  }
  fam
}

glm_response <- function(y, family, N) {
  bad <- function(expected) {
    cli::cli_abort(c("The response must be {expected} for the {family$family} family.",
                     x = "It is {describe(y)}."), call = NULL)
  }
  if (is.null(y)) cli::cli_abort("{.arg formula} has no response (left-hand side).", call = NULL)
  trials <- NULL
  if (family$family == "gaussian") {
    if (!is.numeric(y) || is.matrix(y) && ncol(y) != 1) bad("a numeric vector")
    y <- as.vector(y)
  } else if (family$family == "binomial") {
    expected <- "0/1, logical, a factor, or cbind(successes, failures)"
    if (is.factor(y)) {
      y <- as.numeric(y != levels(y)[1])
    } else if (is.logical(y)) {
      y <- as.numeric(y)
    } else if (is.matrix(y)) {
      if (ncol(y) != 2 || !is.numeric(y) || any(!is.finite(y)) || any(y < 0) ||
          any(y != round(y))) bad(expected)
      trials <- y[, 1] + y[, 2]
      y <- y[, 1]
    } else if (is.numeric(y)) {
      if (any(!is.finite(y)) || any(!(y %in% c(0, 1)))) bad(expected)
    } else bad(expected)
    y <- as.vector(y)
  } else {
    if (!is.numeric(y) || is.matrix(y) || any(!is.finite(y)) || any(y < 0) ||
        any(y != round(y))) bad("non-negative whole numbers")
    y <- as.vector(y)
  }
  if (any(!is.finite(y))) {
    cli::cli_abort(c("The response has non-finite values (Inf or NaN).",
                     i = "Missing values (NA) are handled by {.arg na.action}."), call = NULL)
  }
  if (is.null(trials)) trials <- if (family$family == "binomial") rep(1, N) else numeric(N)
  list(y = y, trials = trials)
}

# A starting point on the unconstrained scale, as a function of the priors:
# one weighted least-squares fit on a transformed response (as glm()'s
# mustart), normal priors acting as ridge terms; log of the residual sd for
# gaussian. Also checks for aliased columns. The weighted cross-product is
# accumulated over blocks of rows in C (no N x P temporaries).
glm_start <- function(X, intercept, xbar, nms, resp, w, off, family) {
  P <- length(nms)
  y <- resp$y; n <- resp$trials
  if (family == "gaussian") {
    z <- y - off; wt <- w
  } else if (family == "binomial") {
    p <- (y + 0.5) / (n + 1)
    z <- stats::qlogis(p) - off; wt <- w * pmax(n, 1) * p * (1 - p)
  } else {
    z <- log(y + 0.5) - off; wt <- w * (y + 0.5)
  }
  cp <- .Call(C_glm_wcross, X, intercept, xbar, as.double(wt), as.double(wt * z))
  A <- cp$A
  # aliased columns: pivoted Cholesky of the scaled cross-product
  sc <- sqrt(diag(A))
  sc[!(sc > 0)] <- 1
  ch <- suppressWarnings(chol(A / outer(sc, sc), pivot = TRUE, tol = 1e-11))
  r <- attr(ch, "rank")
  if (r < P) {
    piv <- attr(ch, "pivot")
    bad <- nms[sort(piv[(r + 1):P])]
    cli::cli_abort(c("The model matrix is rank deficient: {.val {bad}} {cli::qty(length(bad))}{?is a linear combination/are linear combinations} of other columns (aliased).",
                     i = "{cli::qty(length(bad))}Drop or recode {?that term/those terms}; the coefficients are not identified."),
                   call = NULL)
  }
  b <- cp$b
  function(ptype, ppar) {
    rid <- ifelse(ptype == prior_code[["normal"]], 1 / ppar[2, ]^2, 0) + 1e-10 * diag(A)
    beta <- tryCatch(solve(A + diag(rid, length(rid)), b),
                     error = function(e) numeric(P))
    if (family == "gaussian") {
      fitted <- .Call(C_glm_linpred, X, intercept, xbar, as.double(beta))
      rss <- sum(w * (z - fitted)^2)
      s <- sqrt(rss / max(sum(w) - P, 1))
      if (!is.finite(s) || s <= 0) s <- max(stats::sd(z), 1e-3, na.rm = TRUE)
      beta <- c(beta, log(s))
    }
    as.double(beta)
  }
}

# The deterministic quadrature path; returns what vi_engine() returns.
glm_quad <- function(model, method, nodes = 32, max_iter = 200, tol = 1e-6,
                     quiet = FALSE, subsample = NULL) {
  check_count(max_iter, "max_iter")
  check_positive(tol, "tol")
  control <- c(quad_control(method, nodes),
               list(max_iter = as.integer(max_iter), tol = as.double(tol),
                    init_mean = model$target$init))
  start <- proc.time()[["elapsed"]]
  if (is.null(subsample)) {
    res <- .Call(C_glm_quad_fit, model$target, control)
  } else {
    res <- glm_minibatch(model, control, subsample, max_iter)
  }
  res$time <- proc.time()[["elapsed"]] - start
  res$restarts <- 0L
  res$dropped_draws <- 0
  res$control <- list(samples = NA_integer_, nodes = as.integer(nodes))
  res$method <- method
  res$estimator <- "reparam"
  res$optimizer <- "newton"
  res$path <- if (is.null(subsample)) "quadrature" else
    sprintf("quadrature, minibatches of %s rows", format(subsample, big.mark = ","))
  glm_quad_status(res, model, quiet)   # R/glm-status.R: stop reason, warnings
}

# The quadrature rules of q's family for src/glm_quad.c: `nodes`
# Gauss-Hermite nodes for N(0, 1), and shorter rules for predictors with
# small sds.
quad_control <- function(method, nodes) {
  gh <- gauss_hermite(nodes)
  gh2 <- gauss_hermite(min(nodes, 10L))
  gh3 <- gauss_hermite(min(nodes, 5L))
  list(family = method, gh_x = sqrt(2) * gh$x, gh_w = gh$w / sqrt(pi),
       gh_x2 = sqrt(2) * gh2$x, gh_w2 = gh2$w / sqrt(pi),
       gh_x3 = sqrt(2) * gh3$x, gh_w3 = gh3$w / sqrt(pi))
}

# Minibatch epochs (src/glm_quad.c, glm_incr_fit), then, if they did not
# converge within max_iter epochs, the full-data Newton iterations from
# where they ended: the answer is the full-data fixed point either way.
glm_minibatch <- function(model, control, subsample, max_iter) {
  control$batch <- as.integer(subsample)
  control$max_epochs <- as.integer(min(max_iter, 50L))
  out <- .Call(C_glm_incr_fit, model$target, control)
  res <- out[[1]]
  res$epochs <- out[[2]]
  if (!isTRUE(res$converged)) {
    control$init_mean <- res$mean
    full <- .Call(C_glm_quad_fit, model$target, control)
    full$epochs <- res$epochs + full$iterations
    full$elbo <- c(res$elbo, full$elbo)
    full$iterations <- res$iterations + full$iterations
    res <- full
  }
  res
}

# `subsample`: NULL, or rows per minibatch for a binomial or poisson fit on
# the quadrature path (at least 10 per coefficient, so that a block's
# expected Hessian is not singular); B >= N is the full-data path.
check_subsample <- function(subsample, model, path) {
  if (is.null(subsample)) return(NULL)
  tg <- model$target
  N <- length(tg$y)
  P <- length(tg$names)
  if (!is.numeric(subsample) || length(subsample) != 1 || is.na(subsample) ||
      subsample != round(subsample) || subsample < 10 * P) {
    abort_arg("subsample", sprintf("NULL or a whole number of rows, at least 10 per coefficient (%d)", 10L * P), subsample)
  }
  if (path != "quadrature") {
    cli::cli_abort(c("{.arg subsample} works on the quadrature path.",
                     i = "Drop {.arg estimator} and {.arg path}, or {.arg subsample}."), call = NULL)
  }
  if (tg$family == glm_family_code[["gaussian"]]) {
    cli::cli_inform(c("A gaussian GLM needs no minibatches: its sufficient statistics take one pass over the rows.",
                      i = "Fitting on all rows."))
    return(NULL)
  }
  if (subsample >= N) return(NULL)
  as.integer(subsample)
}
