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
#' Fit with `bbvi(model, method = "fullrank")`: the model has a gradient, so
#' the fit takes the fixed-draw path, about 50 to 100 passes over the data
#' (mode search, L-BFGS, and the diagnostics' 1000 to 4000 draws in passes
#' of 1000). The priors are used as written (no autoscaling: that would need
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
#' fit <- bbvi(m, method = "fullrank", seed = 1)
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
  bbvi_model(
    logjoint = function(theta, data) { pass(theta, FALSE); last$lp },
    parameters = list(beta = param(dim = P)),
    gradient = function(theta, data) {
      pass(theta, TRUE)
      g <- last$grad
      colnames(g) <- coef_names
      list(beta = if (nrow(g) == 1L) drop(g) else g)
    },
    vectorized = TRUE)
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
