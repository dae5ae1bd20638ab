#' A GLM whose rows are read in blocks: data larger than memory
#'
#' For data that do not fit in memory (a database table, a file-backed
#' matrix), `glm_blocks_model()` makes a [bbvi_model()] whose log-joint and
#' gradient make one pass over the rows per call, one block at a time: only
#' one block of rows is ever in memory. All S draws of an iteration share
#' that pass (the model is vectorized), so a fit costs one pass per
#' evaluation of the averaged ELBO, not one per draw. `dbi_blocks()` reads
#' the blocks from any DBI database (for example SQLite through RSQLite);
#' `matrix_blocks()` cuts an in-memory matrix into blocks (for tests, and
#' to check a database route against the in-memory fit).
#'
#' Fit with `bbvi(model)`: minibatch epochs over the blocks on the
#' quadrature path of formula GLMs (see Minibatches in [bbvi.formula()]):
#' each block's share of the Newton sums is replaced under the current q,
#' then full-data Newton steps finish the fit, so it takes a few passes over
#' the data (`fit$epochs`, typically 4 to 6) plus one or more for the
#' diagnostics' 1000 to 4000 draws (in passes of 1000), and gives the
#' in-memory quadrature answer. `path = "stochastic"` runs the black-box fit
#' on the model's log-joint instead (the fixed-draw path: 50 to 100
#' passes). The priors are used as written (no autoscaling: that would need
#' a pass over the data before the model exists); an intercept is a column
#' of ones among the predictors (e.g. `SELECT 1 AS intercept, x1, x2, y
#' FROM ...`).
#'
#' @param blocks A function `function(f)` that calls `f(x, y)` once per
#'   block of rows, in a fixed order: `x` a numeric matrix (rows x
#'   coefficients), `y` the responses of those rows. Made by `dbi_blocks()`
#'   or `matrix_blocks()`, or written by hand for another storage.
#' @param coef_names Names of the coefficients, one per column of `x`.
#' @param family `binomial()` (logit link, 0/1 responses) or `poisson()`
#'   (log link).
#' @param prior A [normal()] prior for every coefficient (vectors of
#'   locations and scales allowed); `NULL` for flat.
#' @return `glm_blocks_model()`: a `bbvi_model` with one vector parameter
#'   `beta`.
#' @examples
#' set.seed(1)
#' X <- cbind(intercept = 1, x = rnorm(500))
#' y <- rbinom(500, 1, plogis(X %*% c(-0.5, 1)))
#' m <- glm_blocks_model(matrix_blocks(X, y, block_rows = 100), colnames(X),
#'                       family = binomial(), prior = normal(0, 2.5))
#' fit <- bbvi(m, seed = 1)
#' coef(fit)
#' \donttest{
#' if (requireNamespace("RSQLite", quietly = TRUE)) {
#'   con <- DBI::dbConnect(RSQLite::SQLite(), ":memory:")
#'   DBI::dbWriteTable(con, "d", data.frame(X, y = y))
#'   m2 <- glm_blocks_model(
#'     dbi_blocks(con, "SELECT intercept, x, y FROM d", y = "y",
#'                x = c("intercept", "x"), block_rows = 100),
#'     c("intercept", "x"), family = binomial(), prior = normal(0, 2.5))
#'   coef(bbvi(m2, method = "fullrank", seed = 1))
#'   DBI::dbDisconnect(con)
#' }
#' }
#' @export
glm_blocks_model <- function(blocks, coef_names, family = stats::binomial(),
                             prior = normal(0, 2.5)) {
  if (!is.function(blocks)) abort_arg("blocks", "a function(f) calling f(x, y) per block", blocks)
  if (!is.character(coef_names) || length(coef_names) == 0 || anyNA(coef_names) ||
      anyDuplicated(coef_names)) {
    abort_arg("coef_names", "distinct coefficient names", coef_names)
  }
  if (is.character(family)) family <- get(family, mode = "function")()
  if (is.function(family)) family <- family()
  if (!inherits(family, "family") ||
      !(paste(family$family, family$link) %in% c("binomial logit", "poisson log"))) {
    abort_arg("family", "binomial() (logit link) or poisson() (log link)", family)
  }
  P <- length(coef_names)
  prior_fn <- block_prior(prior, P)
  loglik <- block_loglik(family$family)
  # One pass gives the value and the gradient of every draw; the gradient
  # call that follows at the same draws takes them from here. Many draws
  # at once (the diagnostics: 1000) ask for values only, so those passes
  # skip the gradient. Draws go through a block in groups small enough that
  # no temporary exceeds about 2^21 numbers (16 MB).
  last <- new.env(parent = emptyenv())
  pass <- function(theta, need_grad) {
    B <- theta$beta
    B <- if (is.matrix(B)) t(B) else matrix(B, nrow = P)   # P x S
    if (identical(B, last$B) && (!need_grad || !is.null(last$grad))) return(invisible())
    S <- ncol(B)
    with_grad <- need_grad || S <= 256L
    lp <- numeric(S)
    g <- if (with_grad) matrix(0, P, S) else NULL
    n_seen <- 0
    blocks(function(x, y) {
      x <- as.matrix(x)
      if (!is.numeric(x) || ncol(x) != P) {
        cli::cli_abort("A block has {ncol(x)} predictor column{?s}; {.arg coef_names} names {P}.",
                       call = NULL)
      }
      if (length(y) != nrow(x)) {
        cli::cli_abort("A block has {nrow(x)} rows of predictors but {length(y)} responses.",
                       call = NULL)
      }
      y <- as.double(y)
      step <- max(1L, floor(2^21 / max(1L, nrow(x))))
      for (s0 in seq(1L, S, by = step)) {
        j <- seq.int(s0, min(S, s0 + step - 1L))
        eta <- x %*% B[, j, drop = FALSE]
        ll <- loglik(eta, y, with_grad)
        lp[j] <<- lp[j] + colSums(ll$value)
        if (with_grad) g[, j] <<- g[, j] + crossprod(x, ll$d_eta)
      }
      n_seen <<- n_seen + nrow(x)
    })
    if (n_seen == 0) cli::cli_abort("{.arg blocks} gave no rows.", call = NULL)
    pr <- prior_fn(B)
    last$B <- B
    last$lp <- lp + pr$value
    last$grad <- if (with_grad) t(g + pr$grad) else NULL   # S x P
    invisible()
  }
  m <- bbvi_model(
    logjoint = function(theta, data) { pass(theta, FALSE); last$lp },
    parameters = list(beta = param(dim = P)),
    gradient = function(theta, data) {
      pass(theta, TRUE)
      g <- last$grad
      colnames(g) <- coef_names
      list(beta = if (nrow(g) == 1L) drop(g) else g)
    },
    vectorized = TRUE)
  m$glm_blocks <- list(blocks = blocks, family = family$family, prior = prior,
                       coef_names = coef_names)
  class(m) <- c("bbvi_glm_blocks_model", class(m))
  m
}

#' Fit a GLM read in row blocks
#'
#' The fit of a [glm_blocks_model()]: minibatch epochs over the blocks on
#' the quadrature path (see Minibatches in [bbvi.formula()]), a few passes
#' over the data, with the in-memory answer; or the black-box fit of
#' [bbvi.bbvi_model()] on the model's log-joint.
#'
#' @param x A model made by `glm_blocks_model()`.
#' @param method `"fullrank"` (the default) or `"meanfield"`.
#' @param path `"minibatch"` (the default): epochs over the blocks on the
#'   quadrature path, a few passes over the data; `"stochastic"`: the
#'   black-box fit of [bbvi.bbvi_model()] on the model's log-joint (50 to 100
#'   passes), to which `...` goes.
#' @param tol,max_iter For `path = "minibatch"`: the fit converges when a
#'   full-data Newton step is below `tol` (default 1e-4) posterior sds;
#'   `max_iter` bounds the epochs (default 50).
#' @param nodes Gauss-Hermite nodes (binomial).
#' @param seed,draws,diagnostic_draws As for [bbvi()].
#' @param ... For `path = "stochastic"`: passed on to [bbvi.bbvi_model()].
#' @return A `bbvi_fit`; `fit$epochs` counts the passes over the blocks.
#' @examples
#' set.seed(1)
#' X <- cbind(intercept = 1, x = rnorm(2000))
#' y <- rbinom(2000, 1, plogis(X %*% c(-0.5, 1)))
#' m <- glm_blocks_model(matrix_blocks(X, y, block_rows = 500), colnames(X))
#' fit <- bbvi(m, seed = 1)
#' fit$epochs
#' @export
bbvi.bbvi_glm_blocks_model <- function(x, method = c("fullrank", "meanfield"),
                                       path = c("minibatch", "stochastic"),
                                       tol = NULL, max_iter = 50, seed = NULL,
                                       draws = 4000, diagnostic_draws = 4000,
                                       nodes = 32, ...) {
  call <- match.call()
  call[[1]] <- as.name("bbvi")
  method <- match_arg(method, c("fullrank", "meanfield"), "method")
  path <- match_arg(path, c("minibatch", "stochastic"), "path")
  if (path == "stochastic") {
    return(bbvi.bbvi_model(x, method = method, seed = seed, draws = draws,
                           diagnostic_draws = diagnostic_draws, tol = tol,
                           max_iter = if (missing(max_iter)) 10000 else max_iter, ...))
  }
  check_dots_empty(...)
  check_count(max_iter, "max_iter")
  if (!is.null(tol)) check_positive(tol, "tol")
  check_count(nodes, "nodes", min = 2)
  with_seed(seed, {
    t0 <- proc.time()[["elapsed"]]
    res <- glm_blocks_quad(x, method, tol = if (is.null(tol)) 1e-4 else tol,
                           max_epochs = max_iter, nodes = nodes)
    res$time <- proc.time()[["elapsed"]] - t0
    fit <- new_bbvi_fit(x, res, call = call, draws = draws,
                        diagnostic_draws = diagnostic_draws,
                        extra = list(epochs = res$iterations))
    if (!fit$converged) {
      cli::cli_warn(c("The minibatch fit did not converge in {res$iterations} epoch{?s}: the last full-data Newton step was {format(res$newton_step, digits = 2)} posterior sds.",
                      i = "Increase {.arg max_iter}, or give the coefficients proper priors."),
                    class = "bbvi_not_converged")
    }
    fit
  })
}

# Minibatch epochs over the blocks (see ?bbvi.formula, Minibatches): each
# block's share of the Newton sums (src/glm_quad.c, glm_quad_sums) under the
# current q replaces its last one, and q moves to the fixed point of the
# sums and the normal prior (in the first epoch, of the rows read so far);
# once an epoch moves no mean by more than 0.1 sd, passes at a fixed q give
# full-data Newton steps, until one is below tol sds. The blocks come in
# their fixed order (a database query reads them in sequence).
glm_blocks_quad <- function(model, method, tol, max_epochs, nodes) {
  gb <- model$glm_blocks
  P <- length(gb$coef_names)
  pr <- if (is.null(gb$prior)) list(prec = rep(0, P), rhs = rep(0, P), loc = rep(0, P), sc = rep(Inf, P)) else {
    loc <- rep_len(as.double(gb$prior$location), P)
    sc <- rep_len(as.double(gb$prior$scale), P)
    list(prec = 1 / sc^2, rhs = loc / sc^2, loc = loc, sc = sc)
  }
  control <- quad_control(method, nodes)
  fam_code <- glm_family_code[[gb$family]]
  spec_for <- function(x, y) {
    list(type = "glm", family = fam_code, X = x, intercept = 0L, xbar = NULL,
         names = gb$coef_names, y = as.double(y), prior_type = integer(P),
         prior_par = rep(c(0, 1, 1), P), aux_type = prior_code[["flat"]], aux_par = c(0, 1, 1),
         llconst = 0, threads = glm_threads())
  }
  st <- new.env(parent = emptyenv())
  st$A <- matrix(0, P, P); st$c <- numeric(P); st$ell <- 0
  st$parts <- list(); st$rows <- 0
  st$mu <- pr$loc * is.finite(pr$sc)
  st$L <- matrix(0, P, P)   # a point mass: the first block's Newton step
  # q from the sums (scaled), the prior and the family of q
  solve_q <- function(scale) {
    Lam <- scale * st$A + diag(pr$prec, P)
    R <- glm_chol_ridge(Lam)
    mu <- drop(backsolve(R, forwardsolve(t(R), scale * st$c + pr$rhs)))
    Sigma <- if (method == "fullrank") chol2inv(R) else diag(1 / diag(Lam), P)
    list(mu = mu, L = t(glm_chol_ridge(Sigma)))
  }
  elbo <- function() {
    s2 <- rowSums(st$L^2)
    lp <- if (is.null(gb$prior)) 0 else
      sum(-0.5 * ((st$mu - pr$loc)^2 + s2) / pr$sc^2 - log(pr$sc) - 0.5 * log(2 * pi))
    st$ell + lp + sum(log(diag(st$L))) + 0.5 * P * (1 + log(2 * pi))
  }
  epoch <- 0L
  frozen <- FALSE
  converged <- FALSE
  step <- NA_real_
  trace <- numeric()
  while (epoch < max_epochs) {
    mu0 <- st$mu
    k <- 0L
    gb$blocks(function(x, y) {
      k <<- k + 1L
      x <- as.matrix(x)
      if (!is.numeric(x) || ncol(x) != P || length(y) != nrow(x)) {
        cli::cli_abort("A block has {ncol(x)} predictor column{?s} and {length(y)} responses for {nrow(x)} rows; {.arg coef_names} names {P}.",
                       call = NULL)
      }
      storage.mode(x) <- "double"
      s <- .Call(C_glm_quad_sums, spec_for(x, y), control, st$mu, st$L)
      old <- if (k <= length(st$parts)) st$parts[[k]]
      if (is.null(old)) {
        st$rows <- st$rows + nrow(x)
        old <- list(A = 0, c = 0, ell = 0)
      }
      st$A <- st$A + s$A - old$A
      st$c <- st$c + s$c - old$c
      st$ell <- st$ell + s$ell - old$ell
      st$parts[[k]] <- s
      if (!frozen) {
        # in the first epoch the sums cover the rows read so far: q is the
        # posterior given them (the total is not known before the end)
        q <- solve_q(1)
        st$mu <- q$mu
        st$L <- q$L
      }
    })
    epoch <- epoch + 1L
    if (k == 0L) cli::cli_abort("{.arg blocks} gave no rows.", call = NULL)
    trace <- c(trace, elbo())
    if (frozen) {
      q <- solve_q(1)
      sd_new <- sqrt(rowSums(q$L^2))
      step <- max(abs(q$mu - st$mu) / sd_new,
                  0.5 * abs(log(sd_new^2 / rowSums(st$L^2))))
      st$mu <- q$mu
      st$L <- q$L
      if (step < tol) { converged <- TRUE; break }
    } else {
      moved <- max(abs(st$mu - mu0) / sqrt(rowSums(st$L^2)))
      frozen <- epoch >= 2L && moved < 0.1
    }
  }
  list(mean = st$mu, chol = st$L, lambda = quad_lambda(st$mu, st$L, method),
       elbo = trace, converged = converged, iterations = epoch,
       newton_step = step, time = NA_real_, restarts = 0L, dropped_draws = 0,
       control = list(samples = NA_integer_, nodes = as.integer(nodes)),
       method = method, estimator = "reparam", optimizer = "newton",
       path = "quadrature, minibatches (the blocks)",
       stop_reason = if (converged) "converged" else
         sprintf("%d epochs without a full-data Newton step below tol", epoch))
}

# The upper Cholesky factor of a symmetric matrix, with the smallest ridge
# that makes it positive definite (the first blocks of a flat-prior fit).
glm_chol_ridge <- function(A) {
  R <- tryCatch(chol(A), error = function(e) NULL)
  r <- 1e-10 * max(1, abs(diag(A)))
  while (is.null(R)) {
    R <- tryCatch(chol(A + diag(r, nrow(A))), error = function(e) NULL)
    r <- r * 10
  }
  R
}

# lambda in the layout of the variational families (see families.c)
quad_lambda <- function(mu, L, method) {
  if (method == "meanfield") return(c(mu, log(diag(L))))
  low <- L[lower.tri(L, diag = TRUE)]
  dg <- which(row(L)[lower.tri(L, diag = TRUE)] == col(L)[lower.tri(L, diag = TRUE)])
  low[dg] <- log(low[dg])
  c(mu, low)
}

# Log-likelihood of each row and draw (up to the data's constant), and its
# derivative in the linear predictor.
block_loglik <- function(family) {
  switch(family,
    binomial = function(eta, y, with_grad) {
      list(value = y * eta - log1pexp(eta),
           d_eta = if (with_grad) y - stats::plogis(eta))
    },
    poisson = function(eta, y, with_grad) {
      mu <- exp(eta)
      list(value = y * eta - mu, d_eta = if (with_grad) y - mu)
    })
}

log1pexp <- function(x) pmax(x, 0) + log1p(exp(-abs(x)))

# A normal (or flat) prior on every coefficient: value (length S) and
# gradient (P x S) at the P x S draws B.
block_prior <- function(prior, P) {
  if (is.null(prior)) {
    return(function(B) list(value = numeric(ncol(B)), grad = matrix(0, P, ncol(B))))
  }
  if (!inherits(prior, "bbvi_prior") && !is.list(prior) || !identical(prior$dist, "normal") ||
      is.null(prior$scale)) {
    abort_arg("prior", "a normal() prior with a scale, or NULL", prior)
  }
  loc <- rep_len(as.double(prior$location), P)
  sc <- rep_len(as.double(prior$scale), P)
  function(B) {
    z <- (B - loc) / sc
    list(value = -0.5 * colSums(z^2) - sum(log(sc)) - P * 0.5 * log(2 * pi),
         grad = -z / sc)
  }
}

#' @rdname glm_blocks_model
#' @param con A DBI connection.
#' @param query The SQL query that returns the predictors and the response,
#'   in a fixed order (every pass runs it again).
#' @param y,x Names of the response column and of the predictor columns in
#'   the query's result.
#' @param block_rows Rows per block.
#' @return `dbi_blocks()`, `matrix_blocks()`: a `blocks` function.
#' @export
dbi_blocks <- function(con, query, y, x, block_rows = 100000) {
  if (!requireNamespace("DBI", quietly = TRUE)) {
    cli::cli_abort("{.fn dbi_blocks} needs the {.pkg DBI} package.", call = NULL)
  }
  if (!is.character(query) || length(query) != 1) abort_arg("query", "one SQL string", query)
  if (!is.character(y) || length(y) != 1) abort_arg("y", "the name of one column", y)
  if (!is.character(x) || length(x) == 0) abort_arg("x", "names of predictor columns", x)
  check_count(block_rows, "block_rows")
  force(con)
  function(f) {
    res <- DBI::dbSendQuery(con, query)
    on.exit(DBI::dbClearResult(res))
    repeat {
      d <- DBI::dbFetch(res, n = block_rows)
      if (nrow(d) == 0) break
      f(as.matrix(d[, x, drop = FALSE]), d[[y]])
      if (DBI::dbHasCompleted(res)) break
    }
  }
}

#' @rdname glm_blocks_model
#' @export
matrix_blocks <- function(x, y, block_rows = 100000) {
  if (!is.matrix(x) || !is.numeric(x)) abort_arg("x", "a numeric matrix", x)
  if (!is.numeric(y) || length(y) != nrow(x)) {
    abort_arg("y", sprintf("%d numbers (one per row of x)", nrow(x)), y)
  }
  check_count(block_rows, "block_rows")
  function(f) {
    for (s in seq(1L, nrow(x), by = block_rows)) {
      i <- seq.int(s, min(nrow(x), s + block_rows - 1L))
      f(x[i, , drop = FALSE], y[i])
    }
  }
}
