#' Declare a model parameter
#'
#' A parameter of a custom model: its length and its support. Bounded
#' parameters are mapped to the real line internally (log for one bound,
#' logit for two) with the log-Jacobian added, so the log-joint is written on
#' the natural scale and results are reported on it.
#'
#' @param dim Length of the parameter: a positive whole number.
#' @param lower,upper Bounds of the support, either one number or one per
#'   element (`-Inf`/`Inf` for none). `lower` must be below `upper`.
#' @param simplex If `TRUE`, the parameter is a vector of `dim` (at least 2)
#'   positive numbers that sum to 1, such as mixture weights or category
#'   probabilities. It is mapped to `dim - 1` unconstrained numbers by
#'   stick-breaking (with its log-Jacobian); the unconstrained point 0 is
#'   the uniform simplex. A simplex takes no `lower` or `upper`.
#' @param ordered If `TRUE`, the parameter is a strictly increasing vector,
#'   such as the component means of a mixture (ordering them removes the
#'   label switching that makes such posteriors multimodal). It is mapped
#'   as `theta[1] = zeta[1]`, `theta[k] = theta[k-1] + exp(zeta[k])`. With
#'   a finite `lower` (one number, the bound of every element) it is a
#'   positive-ordered vector above `lower`: `theta[1] = lower +
#'   exp(zeta[1])`. An ordered vector takes no finite `upper`.
#' @param integer `TRUE` for a discrete parameter taking the whole numbers
#'   `lower`, `lower + 1`, ..., `upper` (both bounds included, finite and
#'   whole, at most 1000 values per element). [bbvi()] fits it with a
#'   categorical q (a Bernoulli for \{0, 1\}) by the score-function
#'   gradient; [sample_mcmc()] cannot sample it. The log-joint receives its
#'   values as whole numbers stored as doubles.
#' @details
#' Results (draws, summaries, `init`) are always on the constrained scale,
#' with one column per element (`w[1]`, ..., `w[K]` for a simplex `w`);
#' an `init` for a simplex must sum to 1, one for an ordered vector must
#' be increasing. Marginal summaries of a simplex or an ordered vector are
#' computed from draws (its elements are not transforms of single
#' coordinates of q).
#' @return An object of class `bbvi_param`.
#' @examples
#' param()                      # a real number
#' param(lower = 0)             # a positive number, e.g. a scale
#' param(dim = 3, lower = 0, upper = 1)
#' param(dim = 3, simplex = TRUE)          # weights that sum to 1
#' param(dim = 2, ordered = TRUE)          # mixture means, mu[1] < mu[2]
#' param(dim = 4, ordered = TRUE, lower = 0)   # positive and increasing
#' param(lower = 1851, upper = 1962, integer = TRUE)   # a year
#' @export
param <- function(dim = 1, lower = -Inf, upper = Inf, integer = FALSE,
                  simplex = FALSE, ordered = FALSE) {
  if (!is.numeric(dim) || length(dim) != 1 || is.na(dim) || dim < 1 ||
      dim != round(dim) || !is.finite(dim) || dim > .Machine$integer.max) {
    abort_arg("dim", "a positive whole number", dim)
  }
  dim <- as.integer(dim)
  check_bound(lower, "lower", dim)
  check_bound(upper, "upper", dim)
  lower <- rep_len(as.double(lower), dim)
  upper <- rep_len(as.double(upper), dim)
  if (any(lower >= upper)) {
    bad <- which(lower >= upper)[1]
    cli::cli_abort(c(
      "{.arg lower} must be below {.arg upper}.",
      x = "Element {bad} has lower = {lower[bad]} and upper = {upper[bad]}."
    ), call = NULL)
  }
  p <- new_bbvi_param(dim, lower, upper)
  check_flag(integer, "integer")
  if (integer) {
    if (isTRUE(simplex) || isTRUE(ordered)) {
      cli::cli_abort("An {.arg integer} parameter cannot be a {.arg simplex} or {.arg ordered}.",
                     call = NULL)
    }
    check_integer_support(lower, upper)
    p$integer <- TRUE
  }
  vector_param(p, simplex, ordered)
}

# simplex / ordered: checked and recorded on the param. A simplex's
# elements have marginal support (0, 1), an ordered vector's (lower, Inf):
# that is what lower/upper keep, for printing and for checks of points.
vector_param <- function(p, simplex, ordered) {
  for (a in c("simplex", "ordered")) {
    v <- get(a)
    if (!is.logical(v) || length(v) != 1 || is.na(v)) abort_arg(a, "TRUE or FALSE", v)
  }
  if (simplex && ordered) {
    cli::cli_abort("A parameter cannot be both a {.arg simplex} and {.arg ordered}.",
                   call = NULL)
  }
  if (simplex) {
    if (p$dim < 2) {
      cli::cli_abort(c("A simplex needs {.arg dim} of at least 2.",
                       i = "A simplex of 1 is the constant 1: leave it out of the model."),
                     call = NULL)
    }
    if (any(is.finite(p$lower)) || any(is.finite(p$upper))) {
      cli::cli_abort(c("A simplex takes no {.arg lower} or {.arg upper}.",
                       i = "Its elements lie in (0, 1) and sum to 1 by construction."),
                     call = NULL)
    }
    p$lower <- rep(0, p$dim)
    p$upper <- rep(1, p$dim)
    p$simplex <- TRUE
  }
  if (ordered) {
    if (any(is.finite(p$upper))) {
      cli::cli_abort(c("An ordered vector takes no finite {.arg upper}.",
                       i = "Only a lower bound (one number for every element) is supported: a positive-ordered vector is {.code param(dim, ordered = TRUE, lower = 0)}."),
                     call = NULL)
    }
    if (length(unique(p$lower)) != 1) {
      cli::cli_abort(c("An ordered vector takes one {.arg lower} for all its elements.",
                       x = "It was given {length(unique(p$lower))} different values."),
                     call = NULL)
    }
    p$ordered <- TRUE
  }
  p
}

# The most values a discrete parameter's element may take: its q has one
# probability per value (src/families_ext.c, BBVI_MAX_CATEGORIES).
max_integer_values <- 1000L

check_integer_support <- function(lower, upper) {
  for (arg in c("lower", "upper")) {
    x <- if (arg == "lower") lower else upper
    if (any(!is.finite(x)) || any(x != round(x)) || any(abs(x) > 1e9)) {
      cli::cli_abort(c("An integer parameter needs finite whole-number bounds.",
                       x = "{.arg {arg}} is {describe(x)}.",
                       i = "Give both {.arg lower} and {.arg upper}, e.g. {.code param(lower = 0, upper = 1, integer = TRUE)}."),
                     call = NULL)
    }
  }
  n <- upper - lower + 1
  if (any(n > max_integer_values)) {
    cli::cli_abort(c("An integer parameter can take at most {max_integer_values} values per element.",
                     x = "It has {max(n)} values ({.arg lower} {lower[which.max(n)]} to {.arg upper} {upper[which.max(n)]}).",
                     i = "Treat a parameter with that many values as continuous."),
                   call = NULL)
  }
  invisible(TRUE)
}

new_bbvi_param <- function(dim, lower, upper) {
  structure(list(dim = dim, lower = lower, upper = upper), class = "bbvi_param")
}

vector_label <- function(p) {
  if (isTRUE(p$simplex)) ", simplex" else if (isTRUE(p$ordered)) ", ordered" else ""
}

check_bound <- function(x, arg, dim) {
  if (!is.numeric(x) || !(length(x) %in% c(1L, dim)) || anyNA(x)) {
    want <- if (dim == 1) "one number" else sprintf("one number or %d numbers", dim)
    abort_arg(arg, paste(want, "(not NA)"), x)
  }
  if (arg == "lower" && any(x == Inf)) abort_arg(arg, "below Inf", x)
  if (arg == "upper" && any(x == -Inf)) abort_arg(arg, "above -Inf", x)
}

#' @export
print.bbvi_param <- function(x, ...) {
  cat(sprintf("<bbvi_param> dim %d, %ssupport %s%s\n", x$dim,
              if (isTRUE(x$integer)) "integer, " else "",
              paste(unique(sprintf("(%s, %s)", format(x$lower), format(x$upper))),
                    collapse = " "), vector_label(x)))
  invisible(x)
}

#' Define a custom model by its log-joint density
#'
#' @param logjoint The log-joint density log p(x, theta) up to a constant:
#'   either an R function `function(theta, data)` returning one number
#'   (`vectorized = FALSE`) or one number per draw (`vectorized = TRUE`), or
#'   a compiled function made with [native_logjoint()]. `theta` is a named
#'   list with one element per parameter, on the constrained scale.
#'   Values `NA`, `NaN` and `-Inf` mean "outside the support": such a draw is
#'   left out of that iteration's ELBO estimate, and its gradient term
#'   pushes q back inside (as if log p fell 10 nats below the worst draw
#'   inside; see Details). `+Inf` is an error. Declare every bound you can
#'   with [param()]: a bound that depends on another parameter, written as
#'   `-Inf` in the log-joint, is not enforced on q, whose Gaussian tails
#'   always cross it; the fit keeps its draws outside rare and warns
#'   (PSIS), and fails to converge when many fall outside. Reparameterise
#'   for an exact fit (`b = (1 - a) * u`, `u` in (0, 1), with `log(1 - a)`
#'   added to the log-joint).
#' @param parameters A named list of [param()] entries.
#' @param data Anything; passed unchanged as the second argument of
#'   `logjoint` and `gradient`.
#' @param gradient Optional R function `function(theta, data)` returning the
#'   gradient of `logjoint` with respect to `theta`: a list shaped like
#'   `theta`, or one numeric vector in the order of `parameters`. With
#'   `vectorized = TRUE` each element carries all draws (a length-S vector for
#'   a scalar parameter, an S x dim matrix otherwise). Doubles in these
#'   shapes, with every parameter, are read as they are; other values
#'   (integers, discrete parameters left out) are converted, which costs
#'   tens of microseconds per call. It enables the
#'   reparameterization estimator and NUTS. When the gradient's computation
#'   gives log p on the way (a recursion, a Cholesky factor), return it too,
#'   as the attribute `"logjoint"` of the value (one number per draw, the
#'   same as `logjoint` returns): the fit then calls `logjoint` only where it
#'   needs no gradient, e.g. in the diagnostics. [check_gradient()] checks
#'   the attribute against `logjoint`. Ignored for a model with `factors`.
#'
#'   Or the string `"numeric"`: bbvi takes the gradient itself by central
#'   differences of `logjoint` on the unconstrained scale (bounds and
#'   Jacobians included), with steps of 1e-4 of q's starting sd per
#'   coordinate (the Laplace sd from the mode search, or `init_sd`). Each
#'   gradient costs 2D + 1 log-joint evaluations per draw (D unconstrained
#'   coordinates); with `vectorized = TRUE` they come in one call per
#'   iteration (in batches of at most 4e6 / D points). The reparameterization
#'   estimator and the fixed-draw path then serve a model without a written
#'   gradient: worth it when `logjoint` is smooth (twice differentiable:
#'   no `abs()`, `round()` or branches inside the support), cheap, and D is
#'   at most a few dozen; otherwise leave `gradient` NULL (the score
#'   estimator). A side of a difference where the log-joint is not finite
#'   (a bound written as `-Inf`) is left out: the derivative is one-sided
#'   there. NUTS ([sample_mcmc()]) takes them too, with steps in units of
#'   its adapted metric (2D + 1 evaluations per leapfrog step, one call of a
#'   vectorized log-joint). Not with `factors`, integer parameters or the
#'   minibatch form; [check_gradient()] has nothing to check.
#' @param vectorized If `TRUE`, `logjoint` (and `gradient`) receive all S
#'   draws of an iteration at once: scalar parameters as length-S vectors,
#'   others as S x dim matrices. One R call per iteration instead of S.
#' @param factors Optional: how the log-joint factorises, as a named list
#'   with one element per term (factor) of the log-joint, the names of the
#'   parameters that term depends on, e.g. `list(lik = c("mu", "tau"),
#'   prior_mu = "mu", prior_tau = "tau")`. Every parameter must be in at
#'   least one factor. `logjoint` then returns one value per factor, in the
#'   order of `factors` (a numeric vector of length F per draw, or an S x F
#'   matrix with `vectorized = TRUE`; names or column names, if given, must
#'   be the factors' names, in any order): the log-joint is their sum. With
#'   the score estimator, q is then a product with one block per parameter
#'   and each block's gradient uses only the factors that touch it (its
#'   Markov blanket), the Rao-Blackwellization of Ranganath, Gerrish and
#'   Blei (2014); the fit reports the variance reduction it measured (see
#'   `fit$diagnostics$rao_blackwell`). The same holds for the score-gradient
#'   blocks (discrete, Gamma, Beta) of a model whose gradient gives the
#'   Gaussian blocks their pathwise gradient. A Gaussian-only model with a
#'   gradient takes the pathwise gradient throughout, where the factors are
#'   only summed. Not available for a compiled log-joint.
#' @param loglik,logprior,n The minibatch form, instead of `logjoint`:
#'   `loglik(theta, data, idx)` returns the log-likelihood summed over the
#'   rows `idx` (an increasing integer vector) of the data (one number, or
#'   one per draw with `vectorized = TRUE`), `logprior(theta)` the log
#'   prior, and `n` is the number of rows. `theta` is as for `logjoint`.
#'   The log-joint is `logprior(theta)` plus `loglik` over rows `1:n`,
#'   summed over chunks of rows (at most 2^20 rows x draws per call), so
#'   the model works with every path of [bbvi()], [sample_mcmc()] and
#'   [check_gradient()]; `bbvi(model, subsample = B)` fits it by minibatches
#'   of B rows. Its `gradient` is then `NULL` or
#'   `list(loglik = function(theta, data, idx), logprior = function(theta))`,
#'   each returning what a `gradient` returns; `subsample` needs it.
#'   Not with `factors` or integer parameters.
#' @details
#' A draw at which the log-joint is not finite contributes nothing to that
#' iteration's gradient and ELBO estimate. An iteration in which every draw is
#' non-finite is skipped; ten in a row count as a divergence, handled like a
#' non-finite step: the fit restarts from the last good point with a step ten
#' times smaller, and after five restarts it stops with an error.
#' @return An object of class `bbvi_model`.
#' @examples
#' # Normal mean with known sd 1 and a normal(0, 10) prior
#' y <- c(1.2, 0.4, 2.1, 1.7)
#' m <- bbvi_model(
#'   function(theta, data) sum(dnorm(data, theta$mu, 1, log = TRUE)) +
#'     dnorm(theta$mu, 0, 10, log = TRUE),
#'   parameters = list(mu = param()), data = y)
#' m
#'
#' # The same model with its two factors named: one value per factor
#' m2 <- bbvi_model(
#'   function(theta, data) c(lik = sum(dnorm(data, theta$mu, 1, log = TRUE)),
#'                           prior = dnorm(theta$mu, 0, 10, log = TRUE)),
#'   parameters = list(mu = param()), data = y,
#'   factors = list(lik = "mu", prior = "mu"))
#'
#' # Minibatch form: the log-likelihood of rows `idx`, the prior, n rows
#' m3 <- bbvi_model(
#'   loglik = function(theta, data, idx) sum(dnorm(data[idx], theta$mu, 1, log = TRUE)),
#'   logprior = function(theta) dnorm(theta$mu, 0, 10, log = TRUE),
#'   gradient = list(loglik = function(theta, data, idx) list(mu = sum(data[idx] - theta$mu)),
#'                   logprior = function(theta) list(mu = -theta$mu / 100)),
#'   parameters = list(mu = param()), data = y, n = length(y))
#' @export
bbvi_model <- function(logjoint, parameters, data = NULL, gradient = NULL,
                       vectorized = FALSE, factors = NULL, loglik = NULL,
                       logprior = NULL, n = NULL) {
  if (!is.logical(vectorized) || length(vectorized) != 1 || is.na(vectorized)) {
    abort_arg("vectorized", "TRUE or FALSE", vectorized)
  }
  if (!is.null(loglik) || !is.null(logprior) || !is.null(n)) {
    # the minibatch form (R/minibatch.R)
    return(minibatch_model(!missing(logjoint) && !is.null(logjoint), parameters,
                           data, gradient, vectorized, factors, loglik,
                           logprior, n))
  }
  if (missing(logjoint)) {
    cli::cli_abort(c("{.arg logjoint} is missing.",
                     i = "Give {.arg logjoint}, or {.arg loglik}, {.arg logprior} and {.arg n} for the minibatch form."),
                   call = NULL)
  }
  check_parameters(parameters)
  factors <- check_factors(factors, parameters)
  if (inherits(logjoint, "bbvi_native_logjoint")) {
    if (!is.null(factors)) {
      cli::cli_abort(c("{.arg factors} is not available for a compiled log-joint.",
                       i = "A compiled log-joint returns one number; write it as an R function to give {.arg factors}."),
                     call = NULL)
    }
    if (identical(gradient, "numeric") && isTRUE(logjoint$has_gradient)) {
      cli::cli_abort(c("{.code gradient = \"numeric\"} is for a compiled log-joint without its own gradient.",
                       i = "This one was made with {.code has_gradient = TRUE}: leave {.arg gradient} NULL to use it."),
                     call = NULL)
    }
    if (!is.null(gradient) && !identical(gradient, "numeric")) {
      cli::cli_abort(c("{.arg gradient} must be NULL or {.val numeric} for a compiled log-joint.",
                       i = "Use {.code native_logjoint(has_gradient = TRUE)} for its own gradient."),
                     call = NULL)
    }
    if (is.null(data)) data <- logjoint$data
    if (is.character(logjoint$name) && startsWith(logjoint$name, "bbvi:")) {
      data <- check_example_data(logjoint$name, data,
                                 sum(vapply(parameters, `[[`, integer(1), "dim")))
    }
    target <- list(type = "native", fn = logjoint$address, data = data,
                   has_grad = logjoint$has_gradient,
                   fd_gradient = identical(gradient, "numeric"))
    kind <- "compiled"
  } else {
    if (!is.function(logjoint)) {
      abort_arg("logjoint", "a function(theta, data) or a native_logjoint()",
                logjoint)
    }
    if (!is.null(gradient) && !is.function(gradient) && !identical(gradient, "numeric")) {
      abort_arg("gradient", "NULL, a function(theta, data), or \"numeric\"", gradient)
    }
    target <- NULL  # built per fit by r_target_spec(), which knows S
    kind <- if (vectorized) "R (vectorized)" else "R (per draw)"
  }
  numeric_gradient <- identical(gradient, "numeric")
  if (numeric_gradient && any(vapply(parameters, function(p) isTRUE(p$integer), TRUE))) {
    cli::cli_abort(c("{.code gradient = \"numeric\"} needs every parameter continuous.",
                     x = "{.field {names(parameters)[vapply(parameters, function(p) isTRUE(p$integer), TRUE)]}} {?is/are} {.code integer = TRUE}: a finite difference would hand the log-joint values between the whole numbers.",
                     i = "Leave {.arg gradient} NULL (the score estimator), or give a gradient function for the continuous parameters."),
                   call = NULL)
  }
  if (numeric_gradient && !is.null(factors)) {
    cli::cli_abort(c("{.code gradient = \"numeric\"} cannot be combined with {.arg factors}.",
                     i = "{.arg factors} serve the score estimator, which needs no gradient: leave {.arg gradient} NULL."),
                   call = NULL)
  }
  model <- new_bbvi_model(
    logjoint = logjoint, gradient = if (!numeric_gradient) gradient, parameters = parameters,
    data = data, vectorized = vectorized, target = target, kind = kind,
    has_gradient = numeric_gradient || (if (is.null(target)) !is.null(gradient) else isTRUE(target$has_grad)),
    factors = factors
  )
  model$numeric_gradient <- numeric_gradient
  model
}

# A gradient the model computes itself (a function, or compiled), as
# opposed to none or central differences of log p (`gradient = "numeric"`,
# 2D + 1 log-joint evaluations per draw): the mode search, the low-rank
# start and NUTS need this one.
exact_gradient <- function(model) {
  isTRUE(model$has_gradient) && !isTRUE(model$numeric_gradient)
}

new_bbvi_model <- function(logjoint, gradient, parameters, data, vectorized,
                           target, kind, has_gradient, class = character(),
                           factors = NULL) {
  sizes <- vapply(parameters, function(p) p$dim, integer(1))
  structure(list(
    logjoint = logjoint, gradient = gradient, parameters = parameters,
    data = data, vectorized = vectorized, target = target, kind = kind,
    has_gradient = has_gradient, sizes = sizes,
    unc_sizes = vapply(parameters, function(p) as.integer(param_unc_size(p)), integer(1)),
    lower = unlist(lapply(parameters, `[[`, "lower"), use.names = FALSE),
    upper = unlist(lapply(parameters, `[[`, "upper"), use.names = FALSE),
    par_names = scalar_names(parameters),
    factors = factors
  ), class = c(class, "bbvi_model"))
}

# `factors`: NULL, or a named list of parameter names per factor. Returned
# as a named list of character vectors (duplicates within a factor dropped).
check_factors <- function(factors, parameters) {
  if (is.null(factors)) return(NULL)
  nms <- names(factors)
  if (!is.list(factors) || length(factors) == 0 || is.null(nms) ||
      anyNA(nms) || any(nms == "") || anyDuplicated(nms)) {
    abort_arg("factors", "a non-empty named list (distinct names), one element per factor of the log-joint", factors)
  }
  ok <- vapply(factors, function(f) is.character(f) && length(f) > 0 && !anyNA(f),
               logical(1))
  if (!all(ok)) {
    bad <- nms[!ok]
    cli::cli_abort(c("Every element of {.arg factors} must name the parameters of its factor (a non-empty character vector).",
                     x = "Not so for {.field {bad}}."), call = NULL)
  }
  pars <- names(parameters)
  unknown <- setdiff(unlist(factors, use.names = FALSE), pars)
  if (length(unknown)) {
    where <- nms[vapply(factors, function(f) any(f %in% unknown), logical(1))]
    cli::cli_abort(c("{.arg factors} names parameters that the model does not have.",
                     x = "Unknown: {.val {unknown}} (in {.field {where}}).",
                     i = "The parameters are {.val {pars}}."), call = NULL)
  }
  unused <- setdiff(pars, unlist(factors, use.names = FALSE))
  if (length(unused)) {
    cli::cli_abort(c("Every parameter must be in at least one of {.arg factors}.",
                     x = "In none: {.val {unused}}.",
                     i = "Add the factors (a prior, say) that involve them."), call = NULL)
  }
  lapply(factors, unique)
}

# The parameters each factor touches, as C reads them: factor f's are
# factor_pars[factor_start[f] + 1 .. factor_start[f + 1]] (0-based
# parameter indices, increasing). O(incidences), not n_par x F.
factor_index <- function(model) {
  pars <- names(model$parameters)
  idx <- lapply(model$factors, function(f) sort(match(f, pars)) - 1L)
  list(factor_start = as.integer(c(0L, cumsum(lengths(idx)))),
       factor_pars = as.integer(unlist(idx, use.names = FALSE)))
}

check_parameters <- function(parameters) {
  if (!is.list(parameters) || length(parameters) == 0 ||
      is.null(names(parameters)) || any(names(parameters) == "") ||
      anyDuplicated(names(parameters))) {
    abort_arg("parameters", "a non-empty list of param() entries with unique names",
              parameters)
  }
  is_param <- vapply(parameters, inherits, logical(1), "bbvi_param")
  if (!all(is_param)) {
    bad <- names(parameters)[!is_param][1]
    cli::cli_abort(c("Every element of {.arg parameters} must be made by {.fn param}.",
                     x = "{.field {bad}} is not."), call = NULL)
  }
  # a scalar named like an element of a vector parameter (`beta[1]` next to
  # a `beta` of length 2) would make two columns of the results alike
  sn <- scalar_names(parameters)
  if (anyDuplicated(sn)) {
    dup <- unique(sn[duplicated(sn)])
    cli::cli_abort(c("The scalar parameters must have distinct names.",
                     x = "{.field {dup}} names both a parameter and an element of a vector parameter.",
                     i = "Rename the parameter {.field {dup}}."), call = NULL)
  }
}

# One name per scalar: "mu", "beta[1]", "beta[2]", ...
scalar_names <- function(parameters) {
  unlist(Map(function(nm, p) {
    if (p$dim == 1) nm else sprintf("%s[%d]", nm, seq_len(p$dim))
  }, names(parameters), parameters), use.names = FALSE)
}

#' @export
print.bbvi_model <- function(x, ...) {
  cat("<bbvi_model>", length(x$par_names), "scalar parameter(s);",
      "log-joint:", x$kind, if (isTRUE(x$numeric_gradient)) "with numeric gradient (central differences)" else
        if (x$has_gradient) "with gradient" else "without gradient",
      "\n")
  for (nm in names(x$parameters)) {
    p <- x$parameters[[nm]]
    cat(sprintf("  %-12s dim %d  %ssupport %s%s\n", nm, p$dim,
                if (isTRUE(p$integer)) "integer, " else "",
                paste(unique(sprintf("(%s, %s)", format(p$lower), format(p$upper))),
                      collapse = " "), vector_label(p)))
  }
  if (!is.null(x$factors)) {
    f <- x$factors
    shown <- utils::head(f, 5)   # a model with many local factors: the first few
    cat(sprintf("  %d factors: %s%s\n", length(f),
                paste(sprintf("%s (%s)", names(shown),
                              vapply(shown, paste, character(1), collapse = ", ")),
                      collapse = "; "),
                if (length(f) > 5) sprintf("; ... and %d more", length(f) - 5) else ""))
  }
  invisible(x)
}

#' A compiled log-joint density
#'
#' Wraps a C function so that [bbvi_model()] can call it without going
#' through R. The function must have the signature
#' \preformatted{double f(int dim, const double *theta, double *grad, void *data)}
#' It returns log p(x, theta) at `theta` (length `dim`, the parameters in the
#' order of `parameters`, on the constrained scale). When `grad` is not
#' `NULL` it must also write the gradient there (only asked for when
#' `has_gradient = TRUE`). `data` is the R object given as `data` (to
#' [bbvi_model()] or here), passed as a `SEXP` cast to `void *`; read it with
#' R's C API and do not allocate R objects or raise R errors inside `f`.
#'
#' Compile the function into a shared library (`R CMD SHLIB f.c`), load it
#' with [dyn.load()], and pass its name, or the result of
#' [getNativeSymbolInfo()]. The package also ships two examples, named
#' `"bbvi:mvnormal"` (`data = list(mean, precision)`) and `"bbvi:logistic"`
#' (`data = list(X, y, prior_scale)`, a logistic regression with independent
#' normal(0, prior_scale) priors).
#'
#' @param fn A symbol name (character), a `NativeSymbolInfo`, or an external
#'   pointer to the function.
#' @param data Default data passed to the function (see above).
#' @param has_gradient Whether the function fills `grad`.
#' @param package Passed to [getNativeSymbolInfo()] when `fn` is a name.
#' @return An object of class `bbvi_native_logjoint`.
#' @examples
#' lj <- native_logjoint("bbvi:mvnormal", has_gradient = TRUE,
#'                       data = list(c(0, 1), diag(2)))
#' m <- bbvi_model(lj, list(z = param(dim = 2)))
#' @export
native_logjoint <- function(fn, data = NULL, has_gradient = FALSE, package = NULL) {
  if (!is.logical(has_gradient) || length(has_gradient) != 1 || is.na(has_gradient)) {
    abort_arg("has_gradient", "TRUE or FALSE", has_gradient)
  }
  if (is.character(fn) && length(fn) == 1 && !is.na(fn) && startsWith(fn, "bbvi:")) {
    examples <- c("bbvi:mvnormal", "bbvi:logistic")
    if (!fn %in% examples) abort_arg("fn", paste("one of", paste0('"', examples, '"', collapse = ", ")), fn)
    address <- .Call(C_native_example, sub("^bbvi:", "", fn))
  } else if (is.character(fn) && length(fn) == 1 && !is.na(fn)) {
    info <- tryCatch(
      if (is.null(package)) getNativeSymbolInfo(fn) else getNativeSymbolInfo(fn, package),
      error = function(e) NULL)
    if (is.null(info)) {
      cli::cli_abort(c("{.arg fn}: no loaded compiled function called {.val {fn}}.",
                       i = "Load its library with {.fn dyn.load} first."), call = NULL)
    }
    address <- info$address
  } else if (inherits(fn, "NativeSymbolInfo")) {
    address <- fn$address
  } else if (typeof(fn) == "externalptr") {
    address <- fn
  } else {
    abort_arg("fn", "a symbol name, a NativeSymbolInfo or an external pointer", fn)
  }
  structure(list(address = address, data = data, has_gradient = has_gradient,
                 name = if (is.character(fn)) fn else NULL, package = package),
            class = "bbvi_native_logjoint")
}

# The compiled examples read their data with REAL() and no checks of their
# own (a compiled log-joint cannot raise R errors): check the shapes here and
# pass doubles.
check_example_data <- function(name, data, D) {
  num <- function(x, n) is.numeric(x) && length(x) == n && !anyNA(x)
  if (name == "bbvi:mvnormal") {
    if (!is.list(data) || length(data) != 2 || !num(data[[1]], D) ||
        !num(data[[2]], D * D)) {
      abort_arg("data", sprintf("list(mean, precision) for \"bbvi:mvnormal\": a mean of length %d and a %d x %d precision matrix", D, D, D), data)
    }
    return(list(as.double(data[[1]]), matrix(as.double(data[[2]]), D, D)))
  }
  # bbvi:logistic: list(X (n x D), y (n), prior_scale)
  ok <- is.list(data) && length(data) == 3 && is.matrix(data[[1]]) &&
    is.numeric(data[[1]]) && ncol(data[[1]]) == D && !anyNA(data[[1]]) &&
    num(data[[2]], nrow(data[[1]])) && num(data[[3]], 1) && data[[3]] > 0
  if (!ok) {
    abort_arg("data", sprintf("list(X, y, prior_scale) for \"bbvi:logistic\": an n x %d numeric matrix, n responses and a positive number", D), data)
  }
  X <- data[[1]]
  storage.mode(X) <- "double"
  list(X, as.double(data[[2]]), as.double(data[[3]]))
}

#' @export
print.bbvi_native_logjoint <- function(x, ...) {
  cat("<bbvi_native_logjoint>", if (is.null(x$name)) "<pointer>" else x$name,
      if (x$has_gradient) "(with gradient)" else "(no gradient)", "\n")
  invisible(x)
}

# ---- the target spec handed to C -----------------------------------------

# The R callbacks wrap the user's functions so that an error inside them, or a
# result of the wrong type or length, stops with a message that names them.
#
# C (src/targets.c) calls the user's function through `lj_call` / `gr_user_call`
# (the error handling only) and takes a result of the common plain shapes
# as it is (see r_eval there); anything else goes through `fn_value_call` /
# `gr_value_call`, the checks below, which build the same value or the
# error. `fn_call` / `gr_call` chain both, for R-side callers.
r_target_spec <- function(model, err_call = NULL) {
  if (!is.null(model$target)) {
    spec <- model$target
    # an external pointer does not survive serialisation (e.g. to a parallel
    # worker): look a named compiled function up again where we run
    if (identical(spec$type, "native") && inherits(model$logjoint, "bbvi_native_logjoint") &&
        is.character(model$logjoint$name)) {
      spec$fn <- native_logjoint(model$logjoint$name, package = model$logjoint$package)$address
    }
    spec$layout <- transform_layout(model)
    return(spec)
  }
  logjoint <- model$logjoint
  gradient <- model$gradient
  data <- model$data
  vectorized <- model$vectorized
  D <- length(model$par_names)
  sizes <- model$sizes
  nms <- names(model$parameters)
  par_names <- model$par_names
  factors <- model$factors
  discrete <- integer_parameters(model)
  n_draws <- function(theta) if (vectorized) nrow_draws(theta) else 1L
  # The user's functions are called under a calling handler, cheaper per
  # call than tryCatch(): on an error it keeps the condition in
  # `caught` and unwinds to the function below (`return()` in the promise
  # `unwind`, as tryCatch() itself exits), which returns `caught`; the
  # caller then raises the error naming the function (rethrow()), as
  # tryCatch()'s handler did, on an unwound stack. (R signals a C stack
  # overflow to exiting handlers only: that one error reaches the user as
  # R's own, not named.)
  caught <- new.env(parent = emptyenv())
  lj_user <- function(theta, unwind = return(caught)) {
    withCallingHandlers(logjoint(theta, data), error = function(e) {
      caught$error <- e
      unwind
    })
  }
  rethrow <- function(what) {
    e <- caught$error
    caught$error <- NULL
    abort_callback(what, e, err_call)
  }
  lj_rethrow <- function() rethrow("logjoint")
  gr_rethrow <- function() rethrow("gradient")
  # for R-side callers: the value, or the error raised
  checked <- function(val, rethrow_fn) if (identical(val, caught)) rethrow_fn() else val
  fn_value <- function(val, n) {
    if (is.null(factors)) {
      check_callback_value(val, n, "logjoint", vectorized, err_call)
    } else {
      val <- factor_values(val, n, names(factors), vectorized, err_call)
    }
    if (any(val == Inf, na.rm = TRUE)) {
      cli::cli_abort(c("{.arg logjoint} returned +Inf.",
                       i = "A log density must be finite or -Inf/NA outside the support."),
                     call = err_call)
    }
    as.double(val)
  }
  fn <- function(theta) fn_value(checked(lj_user(theta), lj_rethrow), n_draws(theta))
  gr <- gr_user <- gr_value <- NULL
  if (!is.null(gradient)) {
    gr_user <- function(theta, unwind = return(caught)) {
      withCallingHandlers(gradient(theta, data), error = function(e) {
        caught$error <- e
        unwind
      })
    }
    gr_value <- function(g, n) {
      lp <- attr(g, "logjoint", exact = TRUE)
      out <- flatten_gradient(g, n, sizes, nms, err_call, par_names, optional = discrete)
      # log p given with the gradient spares the separate logjoint call;
      # a factorised model still needs its per-factor values from logjoint
      if (!is.null(lp) && is.null(factors)) {
        check_callback_value(lp, n, "gradient's \"logjoint\" attribute", vectorized, err_call)
        lp <- as.double(lp)
        if (any(lp == Inf, na.rm = TRUE)) {
          cli::cli_abort(c("The {.val logjoint} attribute of {.arg gradient}'s value is +Inf.",
                           i = "A log density must be finite or -Inf/NA outside the support."),
                         call = err_call)
        }
        attr(out, "logjoint") <- lp
      }
      out
    }
    gr <- function(theta) gr_value(checked(gr_user(theta), gr_rethrow), n_draws(theta))
  }
  call_of <- function(f, nargs) if (!is.null(f)) as.call(c(list(f), vector("list", nargs)))
  c(list(type = "r", fn_call = call_of(fn, 1), gr_call = call_of(gr, 1),
         lj_call = call_of(lj_user, 1), fn_value_call = call_of(fn_value, 2),
         gr_user_call = call_of(gr_user, 1), gr_value_call = call_of(gr_value, 2),
         caught = caught, lj_rethrow_call = call_of(lj_rethrow, 0),
         gr_rethrow_call = call_of(gr_rethrow, 0),
         vectorized = vectorized, sizes = as.integer(sizes), names = nms,
         par_names = par_names, rho = environment(), layout = transform_layout(model),
         fd_gradient = isTRUE(model$numeric_gradient)),
    if (!is.null(factors)) factor_index(model))
}

# The R function behind a spec's log-joint, one value per draw (the sum of
# the factors' values for a factorised model): for checks that call it.
spec_logjoint_fn <- function(spec) {
  fn <- spec$fn_call[[1]]
  if (is.null(spec$factor_start)) return(fn)
  F <- length(spec$factor_start) - 1L
  function(theta) rowSums(matrix(fn(theta), ncol = F))
}

# What a factorised log-joint returned, checked and put in factor order:
# F values for one draw, or an n x F matrix (n draws; a vector of n when
# F = 1). Returned as the n x F values column by column, as C reads them.
factor_values <- function(val, n, fnames, vectorized, call) {
  F <- length(fnames)
  shape <- if (vectorized) sprintf("a %d x %d matrix (draws x factors)", n, F) else
    sprintf("%d numbers, one per factor", F)
  ok_type <- is.numeric(val) || (is.logical(val) && all(is.na(val)))
  ok_shape <- if (vectorized) {
    (is.matrix(val) && nrow(val) == n && ncol(val) == F) ||
      (F == 1 && !is.matrix(val) && length(val) == n)
  } else {
    length(val) == F && (!is.matrix(val) || min(dim(val)) == 1)
  }
  if (!ok_type || !ok_shape) {
    got <- if (is.matrix(val)) sprintf("a %d x %d %s matrix", nrow(val), ncol(val), typeof(val)) else describe(val)
    cli::cli_abort(c(
      "With {.arg factors}, {.arg logjoint} must return {shape}.",
      x = "It returned {got}.",
      i = "The factors are {.val {fnames}}, in this order."), call = call)
  }
  given <- if (vectorized && is.matrix(val)) colnames(val) else if (!vectorized) names(val)
  if (!is.null(given)) {
    if (anyDuplicated(given) || !setequal(given, fnames) || length(given) != F) {
      cli::cli_abort(c(
        "The names of what {.arg logjoint} returned must be the names of {.arg factors}.",
        x = "It returned {.val {given}}.",
        i = "Expected {.val {fnames}} (in any order), or no names for the order of {.arg factors}."),
        call = call)
    }
    val <- if (vectorized) val[, fnames, drop = FALSE] else val[fnames]
  }
  as.double(val)
}

# Names of the model's integer (discrete) parameters.
integer_parameters <- function(model) {
  names(model$parameters)[vapply(model$parameters, function(p) isTRUE(p$integer), logical(1))]
}

# One flag per scalar parameter: is it discrete?
integer_coords <- function(model) {
  rep(vapply(model$parameters, function(p) isTRUE(p$integer), logical(1)), model$sizes)
}

nrow_draws <- function(theta) {
  x <- theta[[1]]
  if (is.matrix(x)) nrow(x) else length(x)
}

abort_callback <- function(what, e, call) {
  # a model in minibatch form: the error already names loglik or logprior
  if (inherits(e, "bbvi_callback_error")) stop(e)
  cli::cli_abort(c("{.arg {what}} threw an error.", x = "{conditionMessage(e)}"),
                 call = call, parent = NA)
}

check_callback_value <- function(val, n, what, vectorized, call) {
  if (!(is.numeric(val) || (is.logical(val) && all(is.na(val)))) ||
      length(val) != n) {
    if (vectorized) {
      cli::cli_abort(c(
        "With {.code vectorized = TRUE}, {.arg {what}} gets {n} draws at once and must return {n} numbers, one per draw.",
        x = "It returned {describe(val)}.",
        i = "{.arg theta} holds each scalar parameter as a vector of length {n} (a parameter of length k as a {n} x k matrix). Sum over the data for each draw (e.g. with {.fn colSums} or {.fn vapply}), or use {.code vectorized = FALSE}."),
        call = call)
    }
    cli::cli_abort(c("{.arg {what}} must return a single number.",
                     x = "It returned {describe(val)}."), call = call)
  }
}

# A gradient in theta's shape (or a flat vector) -> n x D matrix (n draws).
# Names, when given, must be the parameters' names exactly: a named list
# with exactly `nms` (any order) is put in their order; a named vector (one
# draw) or a matrix with column names must carry the scalar names
# `par_names` (any order). Other names are an error naming them; no names
# means the order of `parameters`.
#
# `optional`: names of parameters (the discrete ones) whose entries a list
# may leave out (given by name, or an unnamed list of the others in order):
# their gradient is taken as 0, which no estimator uses.
flatten_gradient <- function(g, n, sizes, nms, call, par_names = NULL,
                             optional = character()) {
  D <- sum(sizes)
  bad <- function() {
    cli::cli_abort(c("{.arg gradient} must return a list shaped like {.arg theta}, or {D * n} numbers.",
                     x = "It returned {describe(g)}."), call = call)
  }
  if (is.list(g) && length(optional) > 0 && length(g) < length(sizes)) {
    rest <- setdiff(nms, optional)
    if (is.null(names(g))) {
      if (length(g) != length(rest)) bad()
      names(g) <- rest
    }
    fill <- setdiff(optional, names(g))
    zero <- lapply(sizes[match(fill, nms)], function(sz) numeric(n * sz))
    g <- c(g, stats::setNames(zero, fill))
  }
  if (is.list(g)) {
    if (length(g) != length(sizes)) bad()
    if (!is.null(names(g))) g <- g[match_gradient_names(names(g), nms, "parameter", call)]
    parts <- Map(function(x, sz) {
      if (!is.numeric(x) || length(x) != n * sz) bad()
      matrix(as.double(x), nrow = n)
    }, g, sizes)
    do.call(cbind, unname(parts))
  } else {
    if (!is.numeric(g) || length(g) != n * D) bad()
    if (is.null(par_names)) par_names <- seq_len(D)
    if (is.matrix(g) && nrow(g) == n && ncol(g) == D) {
      if (!is.null(colnames(g))) {
        g <- g[, match_gradient_names(colnames(g), par_names, "scalar parameter", call), drop = FALSE]
      }
      return(matrix(as.double(g), nrow = n))
    }
    if (n == 1 && !is.null(names(g))) {
      g <- g[match_gradient_names(names(g), par_names, "scalar parameter", call)]
    }
    matrix(as.double(g), nrow = n)
  }
}

# The positions of `expected` in `given`, or an error naming what is wrong.
match_gradient_names <- function(given, expected, what, call) {
  if (!anyDuplicated(given) && setequal(given, expected) &&
      length(given) == length(expected)) {
    return(match(expected, given))
  }
  missing <- setdiff(expected, given)
  extra <- setdiff(given, expected)
  dup <- unique(given[duplicated(given)])
  cli::cli_abort(c(
    "The names of what {.arg gradient} returned must be the {what} names.",
    x = if (length(missing)) "Missing: {.val {missing}}.",
    x = if (length(extra)) "Not {what}s: {.val {extra}}.",
    x = if (length(dup)) "Repeated: {.val {dup}}.",
    i = "Expected {.val {expected}} (in any order), or no names for the order of {.arg parameters}."
  ), call = call)
}
