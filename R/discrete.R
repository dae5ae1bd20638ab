# Non-Gaussian families of q for custom models: Gamma (positive), Beta
# (unit interval) and categorical (integer parameters). They live on the
# constrained scale (src/families_ext.c): their coordinates get the
# identity transform in C, with the param's declared bounds kept in the
# model's `parameters` for checks and printing.

natural_families <- c("gamma", "beta", "categorical")

# The family of each parameter (a named character vector, in parameter
# order): "gaussian", or "gamma" / "beta" as `families` asks, or
# "categorical" for an integer parameter.
resolve_families <- function(model, families = NULL, call = NULL) {
  pars <- model$parameters
  out <- stats::setNames(rep("gaussian", length(pars)), names(pars))
  out[integer_parameters(model)] <- "categorical"
  if (is.null(families)) return(out)
  if (is.character(families)) families <- as.list(families)
  if (!is.list(families) || length(families) == 0 || is.null(names(families)) ||
      any(names(families) == "") || anyDuplicated(names(families))) {
    abort_arg("families", "a named list such as list(lambda = \"gamma\", p = \"beta\")",
              families, call = call)
  }
  unknown <- setdiff(names(families), names(pars))
  if (length(unknown) > 0) {
    cli::cli_abort(c("The names of {.arg families} must be parameters of the model.",
                     x = "Not parameters: {.val {unknown}}.",
                     i = "The parameters are {.val {names(pars)}}."), call = call)
  }
  for (nm in names(families)) {
    f <- families[[nm]]
    if (!is.character(f) || length(f) != 1 || is.na(f) ||
        !(f %in% c("gaussian", "gamma", "beta") || startsWith(f, "given:"))) {
      cli::cli_abort(c("{.arg families} must give {.val gamma}, {.val beta}, {.val gaussian} or {.val given:<name>} for each parameter it names.",
                       x = "{.field {nm}} is {describe(f)}."), call = call)
    }
    p <- pars[[nm]]
    if (startsWith(f, "given:")) {
      check_given(nm, sub("^given:", "", f), pars, call)
      out[[nm]] <- f
      next
    }
    if (isTRUE(p$integer)) {
      cli::cli_abort(c("{.field {nm}} is an integer parameter: its q is categorical.",
                       i = "Leave it out of {.arg families}."), call = call)
    }
    if (f != "gaussian" && (isTRUE(p$simplex) || isTRUE(p$ordered))) {
      cli::cli_abort(c("A simplex or ordered parameter cannot take a {f} q.",
                       x = "{.field {nm}} is one; leave it out of {.arg families}."), call = call)
    }
    need <- switch(f, gamma = c(0, Inf), beta = c(0, 1), NULL)
    if (!is.null(need) && (any(p$lower != need[1]) || any(p$upper != need[2]))) {
      cli::cli_abort(c("A {f} q needs a parameter declared with {.code param(lower = {need[1]}, upper = {need[2]})}.",
                       x = "{.field {nm}} has support ({p$lower[1]}, {p$upper[1]})."), call = call)
    }
    out[[nm]] <- f
  }
  given <- out[startsWith(out, "given:")]
  dup <- sub("^given:", "", given)
  if (anyDuplicated(dup)) {
    cli::cli_abort(c("Each integer parameter can condition one parameter's q only.",
                     x = "{.val {unique(dup[duplicated(dup)])}} is named by more than one {.val given:} family."),
                   call = call)
  }
  out
}

# A conditional Gaussian q for b given the integer parameter g ("given:g"):
# b continuous and unbounded (q's mixture marginals are on b's own scale),
# g integer with the same dim, the two declared next to each other (the
# block covers both parameters' coordinates, see src/families_ext.c).
check_given <- function(nm, g, pars, call) {
  p <- pars[[nm]]
  if (!(g %in% names(pars))) {
    cli::cli_abort(c("{.val given:{g}} for {.field {nm}} names no parameter of the model.",
                     i = "The parameters are {.val {names(pars)}}."), call = call)
  }
  if (!isTRUE(pars[[g]]$integer)) {
    cli::cli_abort(c("{.val given:{g}} needs {.field {g}} to be an integer parameter.",
                     i = "Declare it with {.code param(integer = TRUE)} and finite bounds."), call = call)
  }
  what <- if (isTRUE(p$integer)) "an integer parameter" else if (isTRUE(p$simplex)) "a simplex" else
    if (isTRUE(p$ordered)) "an ordered vector" else if (any(is.finite(p$lower)) || any(is.finite(p$upper))) "bounded"
  if (!is.null(what)) {
    cli::cli_abort(c("{.val given:{g}} is for an unbounded continuous parameter.",
                     x = "{.field {nm}} is {what}."), call = call)
  }
  if (pars[[g]]$dim != p$dim) {
    cli::cli_abort(c("{.val given:{g}} needs {.field {g}} and {.field {nm}} of the same dim.",
                     x = "{.field {g}} has dim {pars[[g]]$dim}, {.field {nm}} dim {p$dim}."), call = call)
  }
  if (abs(match(g, names(pars)) - match(nm, names(pars))) != 1) {
    cli::cli_abort(c("{.val given:{g}} needs {.field {g}} and {.field {nm}} declared next to each other in {.arg parameters}.",
                     i = "Their q is one block over both parameters' coordinates."), call = call)
  }
  invisible()
}

#' The blocks of a product q
#'
#' One block per parameter, in parameter order: Gaussian parameters take
#' `method` (`"meanfield"`, `"fullrank"`, `"lowrank"` with rank
#' `min(rank, dim)`), the others their family from `families` (see
#' [bbvi()]), integer parameters a categorical block with their support.
#' What `src/qblocks.c` reads as `control$blocks`.
#' @param model A `bbvi_model`.
#' @param method The Gaussian blocks' family.
#' @param families `NULL`, the user's `families` list, or the output of
#'   `resolve_families()`.
#' @param rank For low-rank Gaussian blocks; `NULL` means 10.
#' @return A list of `list(family, rank, dim)` (plus `lower`, `n_values`
#'   for categorical blocks).
#' @noRd
q_blocks_for <- function(model, method, families = NULL, rank = NULL) {
  fams <- if (is.character(families) && !is.null(names(families)) &&
              setequal(names(families), names(model$parameters)) &&
              all(families %in% c("gaussian", natural_families) | startsWith(families, "given:"))) {
    families[names(model$parameters)]
  } else resolve_families(model, families)
  sizes <- if (is.null(model$unc_sizes)) model$sizes else model$unc_sizes
  Map(function(p, f, dim) {
    dim <- as.integer(dim)
    if (f == "gaussian") {
      r <- if (method == "lowrank") as.integer(min(if (is.null(rank)) 10L else rank, dim)) else 0L
      return(list(family = method, rank = r, dim = dim))
    }
    b <- list(family = f, rank = 0L, dim = dim)
    if (f == "categorical") {
      b$lower <- as.integer(p$lower)
      b$n_values <- as.integer(p$upper - p$lower + 1)
    }
    b
  }, model$parameters, fams, sizes) -> blocks
  # a "given:g" parameter and g make one conditional block, where the
  # first of the two is
  for (nm in names(fams)[startsWith(fams, "given:")]) {
    g <- sub("^given:", "", fams[[nm]])
    pg <- model$parameters[[g]]
    first <- min(match(c(g, nm), names(blocks)))
    blocks[[first]] <- list(family = "given", rank = 0L, dim = 2L * as.integer(pg$dim),
                            lower = as.integer(pg$lower),
                            n_values = as.integer(pg$upper - pg$lower + 1),
                            g_first = as.integer(match(g, names(blocks)) == first))
    blocks[[setdiff(c(g, nm), names(blocks)[first])]] <- NULL
  }
  unname(blocks)
}

# One flag per scalar parameter: is it discrete (param(integer = TRUE))?
integer_coords <- function(model) {
  if (is.null(model$parameters)) return(logical(0))   # GLMs
  rep(vapply(model$parameters, function(p) isTRUE(p$integer), logical(1)),
      model$sizes)
}

# One flag per scalar parameter: does its q live on the natural scale?
natural_coords <- function(model, fams) {
  rep(fams != "gaussian", model$sizes)
}

# The model as C sees it for a fit with these families: the identity
# transform (no bounds) at natural-scale coordinates. `fams` is kept as
# model$families for the fit methods.
model_for_families <- function(model, fams) {
  nat <- natural_coords(model, fams)
  model$families <- fams
  if (!any(nat)) return(model)
  model$lower[nat] <- -Inf
  model$upper[nat] <- Inf
  model
}

# A natural-scale coordinate's starting mean and sd, from a Gaussian start
# (mean m, sd s) on the declared transform's scale: a Gamma whose log has
# mean m and sd about s (shape 1 / s^2 + 1/2 matches trigamma(shape) = s^2
# closely; the lognormal's own moments would give shape 0.58 at s = 1, a
# density infinite at 0 whose draws near 0 swamp the first score
# gradients), Beta by the delta method, categorical centred at the rounded
# value with an sd of the number of values (nearly uniform).
natural_start <- function(model, fams, m, s) {
  nat <- natural_coords(model, fams)
  fam <- rep(fams, model$sizes)
  theta <- .Call(C_constrain, as.double(m), as.double(model$lower), as.double(model$upper))
  mean <- theta
  sd <- s
  g <- fam == "gamma"
  shape <- 1 / s[g]^2 + 0.5
  mean[g] <- shape * exp(m[g] - digamma(shape))
  sd[g] <- mean[g] / sqrt(shape)
  b <- fam == "beta"
  sd[b] <- pmin(theta[b] * (1 - theta[b]) * s[b], 0.5 * sqrt(theta[b] * (1 - theta[b])))
  k <- fam == "categorical"
  mean[k] <- round(theta[k])
  sd[k] <- model$upper[k] - model$lower[k] + 1
  list(mean = mean[nat], sd = sd[nat], nat = nat)
}

#' Probabilities of a discrete parameter
#'
#' For a fit with integer parameters (`param(integer = TRUE)`), q gives each
#' of them a categorical distribution: its probability for every value from
#' `lower` to `upper`. [summary()] shows their mean, sd and mode; this gives
#' the whole distribution.
#'
#' @param fit A `bbvi_fit`.
#' @param par Names of scalar parameters (e.g. `"s"` or `"z[3]"`), or of
#'   whole integer parameters; `NULL` for all discrete ones.
#' @return A data frame with columns `parameter`, `value` and `probability`,
#'   one row per value of each discrete scalar parameter.
#' @examples
#' set.seed(1)
#' y <- c(rpois(30, 4), rpois(20, 1))
#' m <- bbvi_model(function(theta, data) {
#'   s <- theta$s
#'   sum(dpois(data[1:s], theta$r1, log = TRUE)) +
#'     sum(dpois(data[-(1:s)], theta$r2, log = TRUE)) +
#'     dexp(theta$r1, log = TRUE) + dexp(theta$r2, log = TRUE)
#' }, list(s = param(lower = 1, upper = 49, integer = TRUE),
#'         r1 = param(lower = 0), r2 = param(lower = 0)), data = y)
#' fit <- bbvi(m, families = list(r1 = "gamma", r2 = "gamma"), seed = 1)
#' p <- probabilities(fit, "s")
#' p[which.max(p$probability), ]
#' @export
probabilities <- function(fit, par = NULL) {
  if (!inherits(fit, "bbvi_fit")) abort_arg("fit", "a bbvi_fit", fit)
  tabs <- discrete_tables(fit)
  if (length(tabs) == 0) {
    cli::cli_abort("The fit has no discrete (integer) parameters.", call = NULL)
  }
  if (!is.null(par)) {
    scal <- names(tabs)
    base <- sub("\\[[0-9]+\\]$", "", scal)
    if (!is.character(par) || !all(par %in% c(scal, base))) {
      abort_arg("par", sprintf("names of discrete parameters (%s)",
                               paste(unique(c(base, scal)), collapse = ", ")), par)
    }
    tabs <- tabs[scal %in% par | base %in% par]
  }
  out <- do.call(rbind, unname(tabs))
  rownames(out) <- NULL
  out
}

# A data frame (parameter, value, probability) per discrete scalar, from q.
discrete_tables <- function(fit) {
  q <- fit_q(fit)
  parts <- if (inherits(q, "q_product")) q$parts else list(q)
  start <- if (inherits(q, "q_product")) q$start else 1L
  out <- list()
  for (j in seq_along(parts)) {
    p <- parts[[j]]
    if (!inherits(p, c("q_categorical", "q_given"))) next
    off <- if (inherits(p, "q_given") && !p$g_first) length(p$probs) else 0L
    for (d in seq_along(p$probs)) {
      nm <- fit$par_names[start[j] + off + d - 1L]
      pr <- p$probs[[d]]
      out[[nm]] <- data.frame(parameter = nm, value = p$lower[d] + seq_along(pr) - 1L,
                              probability = pr, stringsAsFactors = FALSE)
    }
  }
  out
}

# Mean, sd, mode and the mode's probability of each discrete scalar.
discrete_summary <- function(fit) {
  tabs <- discrete_tables(fit)
  if (length(tabs) == 0) return(NULL)
  t(vapply(tabs, function(t) {
    m <- sum(t$value * t$probability)
    k <- which.max(t$probability)
    c(mean = m, sd = sqrt(max(sum((t$value - m)^2 * t$probability), 0)),
      mode = t$value[k], `P(mode)` = t$probability[k])
  }, numeric(4)))
}

# bbvi() for a custom model with non-Gaussian blocks (see `families` in
# ?bbvi): always the stochastic path, with a product q of one block per
# parameter. The Gaussian blocks work in the coordinates of their start
# (a diagonal preconditioner: the Laplace sds, or init_sd); the natural
# ones take scale 1 and shift 0, which their families ignore.
bbvi_natural <- function(x, fams, call, method, rank, estimator, samples,
                         max_iter, tol, seed, progress, optimizer, eta, window,
                         init, init_sd, draws, restarts, control_variates,
                         start_at, diagnostic_draws, enumerate = TRUE) {
  err_call <- call("bbvi")
  xc <- model_for_families(x, fams)
  D <- length(x$par_names)
  disc <- integer_coords(x)
  has_cat <- any(disc)
  # integer entries of init: their own start; the rest as for any fit
  init_cat <- NULL
  if (!is.null(init) && has_cat && is.list(init)) {
    ints <- integer_parameters(x)
    if (setequal(names(init), names(x$parameters))) {
      init_cat <- unlist(init[names(x$parameters)], use.names = FALSE)[disc]
      ok <- is.numeric(init_cat) && length(init_cat) == sum(disc) && !anyNA(init_cat) &&
        all(init_cat == round(init_cat)) && all(init_cat >= x$lower[disc]) &&
        all(init_cat <= x$upper[disc])
      if (!ok) abort_arg("init", "whole numbers within the bounds for the integer parameters", init)
      for (nm in ints) {
        p <- x$parameters[[nm]]
        init[[nm]] <- (p$lower + p$upper) / 2
      }
    }
  }
  begin0 <- init_unconstrained(init, x)
  if (!is.numeric(init_sd) || !(length(init_sd) %in% c(1L, D)) ||
      anyNA(init_sd) || any(!is.finite(init_sd)) || any(init_sd <= 0)) {
    abort_arg("init_sd", sprintf("one positive number or %d of them", D), init_sd)
  }
  init_sd <- rep_len(as.double(init_sd), D)
  rank <- resolve_rank(rank, method, D)
  blocks <- q_blocks_for(xc, method, fams, rank = if (method == "lowrank") rank)
  gauss <- !natural_coords(x, fams)
  given <- any(startsWith(fams, "given:"))
  # the estimator: "reparam" (the model has a gradient) is the mixed one
  # when some block is Gaussian (or conditionally Gaussian); the natural
  # blocks take the score gradient
  if (estimator == "reparam" && !any(gauss) && !given) estimator <- "score"
  checks <- assert_model_ok(x, err_call = err_call)
  # factors: the Rao-Blackwellized weights for the score entries (all of
  # them, or those of the natural blocks next to pathwise Gaussian ones)
  rb <- !is.null(x$factors)
  if (rb && given) {
    cli::cli_abort(c("A {.val given:} family cannot be combined with {.arg factors} yet.",
                     i = "The Rao-Blackwellized gradient needs one block per parameter; fit without {.arg factors}."),
                   call = err_call)
  }
  if (rb && any(gauss) && method != "meanfield") {
    cli::cli_abort(c("With {.arg factors} and the score estimator, {.arg method} must be {.val meanfield}.",
                     i = "The Rao-Blackwellized gradient needs q to be a product with one block per parameter."),
                   call = err_call)
  }
  fit_one <- function(seed, dispersed, side = 1) {
    with_seed(seed, {
      begin <- begin0
      if (dispersed) begin <- begin + side * stats::runif(length(begin), -2, 2)
      spec <- r_target_spec(xc, err_call = err_call)
      t0 <- proc.time()[["elapsed"]]
      st <- list(laplace = FALSE)
      # the mode on the declared scale (log / logit for Gamma and Beta
      # parameters); not with discrete parameters, which have no curvature
      if (start_at == "mode" && !has_cat) {
        st <- laplace_start(x, spec, begin, "meanfield", quiet = dispersed)
        if (is.null(st)) st <- list(laplace = FALSE)
      }
      st$time <- proc.time()[["elapsed"]] - t0
      m <- if (isTRUE(st$laplace)) st$mean else begin
      s <- if (isTRUE(st$laplace)) st$precond else init_sd
      ns <- natural_start(x, fams, m, s)
      mean_c <- m
      mean_c[ns$nat] <- ns$mean
      if (!is.null(init_cat)) mean_c[disc] <- init_cat
      precond <- ifelse(ns$nat, 1, s)
      shift <- ifelse(ns$nat, 0, m)
      lsd_z <- numeric(D)
      lsd_z[ns$nat] <- log(ns$sd)
      res <- vi_engine(xc, spec, method = method, rank = rank, estimator = estimator,
                       samples = if (is.null(samples)) 50L else samples,
                       max_iter = max_iter, tol = tol, optimizer = optimizer,
                       eta = if (is.null(eta)) default_eta(optimizer, method, st$laplace, D, rank) else eta,
                       init_mean = mean_c,
                       window = if (!is.null(window)) window else if (isTRUE(st$laplace)) 50L else 100L,
                       init_log_sd = lsd_z, init_log_sd_z = lsd_z,
                       precond = precond, shift = shift, blocks = blocks,
                       progress = progress && !dispersed,
                       control_variates = control_variates,
                       enumerate = enumerate && has_cat,
                       par_sizes = if (rb) model_unc_sizes(x))
      res$method <- method
      if (estimator == "reparam") res$estimator <- "mixed"
      t0 <- proc.time()[["elapsed"]]
      fit <- new_bbvi_fit(xc, res, call = call, draws = draws,
                          diagnostic_draws = diagnostic_draws,
                          extra = list(start = if (isTRUE(st$laplace)) "mode" else "init",
                                       families = fams, q_blocks = blocks,
                                       enumerated = enumerate && has_cat))
      fit$control_variates <- isTRUE(control_variates)   # for print()
      finish_custom_fit(fit, rb, st, res, t0, checks)
    })
  }
  fit_with_restarts(restarts, seed, fit_one)
}

# ---- q(g, b) = prod_j q(g_j) N(b_j; m_{j,g_j}, s_{j,g_j}^2) ("given:g") --------
#
# One block over g's p coordinates and b's p (g first when g_first, as in
# src/families_ext.c); base draws p for g (categorical, as q_categorical)
# then p for b. cond_mean, cond_sd: per coordinate, one entry per value.

q_given <- function(g_first, lower, probs, cond_mean, cond_sd) {
  qg <- q_categorical(lower, probs)
  cm <- lapply(cond_mean, as.double)
  cs <- lapply(cond_sd, as.double)
  bm <- vapply(seq_along(probs), function(j) sum(qg$probs[[j]] * cm[[j]]), numeric(1))
  structure(list(family = "given", g_first = isTRUE(g_first), g = qg,
                 cond_mean = cm, cond_sd = cs, lower = qg$lower, probs = qg$probs,
                 mean = if (isTRUE(g_first)) c(qg$mean, bm) else c(bm, qg$mean)),
            class = c("q_given", "bbvi_q"))
}

# the rows of g and of b in the block
given_rows <- function(q) {
  p <- length(q$probs)
  if (q$g_first) list(g = seq_len(p), b = p + seq_len(p)) else list(g = p + seq_len(p), b = seq_len(p))
}

q_n_base.q_given <- function(q) q_dim(q)

q_from_base.q_given <- function(q, eps) {
  p <- length(q$probs)
  r <- given_rows(q)
  g <- q_from_base(q$g, eps[seq_len(p), , drop = FALSE])
  zeta <- matrix(0, 2 * p, ncol(eps))
  zeta[r$g, ] <- g$zeta
  log_q <- g$log_q
  for (j in seq_len(p)) {
    k <- g$zeta[j, ] - q$lower[j] + 1
    e <- eps[p + j, ]
    zeta[r$b[j], ] <- q$cond_mean[[j]][k] + q$cond_sd[[j]][k] * e
    log_q <- log_q - 0.5 * e^2 - half_log_2pi - log(q$cond_sd[[j]][k])
  }
  list(zeta = zeta, log_q = log_q)
}

q_log_density.q_given <- function(q, zeta) {
  zeta <- matrix(zeta, q_dim(q))
  r <- given_rows(q)
  out <- q_log_density(q$g, zeta[r$g, , drop = FALSE])
  for (j in seq_along(q$probs)) {
    k <- zeta[r$g[j], ] - q$lower[j] + 1
    ok <- k >= 1 & k <= length(q$probs[[j]]) & k == round(k)
    k[!ok] <- 1
    out <- out + ifelse(ok, stats::dnorm(zeta[r$b[j], ], q$cond_mean[[j]][k],
                                         q$cond_sd[[j]][k], log = TRUE), -Inf)
  }
  out
}

# b's marginal is a mixture: mean and sd by the law of total variance
given_b_moments <- function(q) {
  m <- vapply(seq_along(q$probs), function(j) sum(q$probs[[j]] * q$cond_mean[[j]]), numeric(1))
  v <- vapply(seq_along(q$probs), function(j) {
    sum(q$probs[[j]] * (q$cond_sd[[j]]^2 + q$cond_mean[[j]]^2))
  }, numeric(1)) - m^2
  list(mean = m, sd = sqrt(pmax(v, 0)))
}

q_marginals.q_given <- function(q) {
  r <- given_rows(q)
  mg <- q_marginals(q$g)
  mb <- given_b_moments(q)
  mean <- sd <- numeric(q_dim(q))
  mean[r$g] <- mg$mean; sd[r$g] <- mg$sd
  mean[r$b] <- mb$mean; sd[r$b] <- mb$sd
  list(mean = mean, sd = sd)
}

# g's as the categorical's; b's by solving the mixture's CDF
q_quantile.q_given <- function(q, p) {
  r <- given_rows(q)
  out <- matrix(0, q_dim(q), length(p))
  out[r$g, ] <- q_quantile(q$g, p)
  for (j in seq_along(q$probs)) {
    w <- q$probs[[j]]; m <- q$cond_mean[[j]]; s <- q$cond_sd[[j]]
    use <- w > 0
    lo <- min(m[use] - 40 * s[use]); hi <- max(m[use] + 40 * s[use])
    cdf <- function(x) sum(w * stats::pnorm(x, m, s))
    out[r$b[j], ] <- vapply(p, function(pj) {
      stats::uniroot(function(x) cdf(x) - pj, c(lo, hi), tol = 1e-10)$root
    }, numeric(1))
  }
  out
}

# Cov(g_j, b_j) = E[g_j b_j] - E[g_j] E[b_j]; other pairs independent
q_vcov.q_given <- function(q) {
  r <- given_rows(q)
  mq <- q_marginals.q_given(q)
  V <- diag(mq$sd^2, q_dim(q))
  for (j in seq_along(q$probs)) {
    v <- q$lower[j] + seq_along(q$probs[[j]]) - 1
    cv <- sum(q$probs[[j]] * v * q$cond_mean[[j]]) - mq$mean[r$g[j]] * mq$mean[r$b[j]]
    V[r$g[j], r$b[j]] <- V[r$b[j], r$g[j]] <- cv
  }
  V
}
# as the other non-Gaussian families: the marginal sds only
q_chol.q_given <- function(q) diag(q_marginals.q_given(q)$sd, q_dim(q))
