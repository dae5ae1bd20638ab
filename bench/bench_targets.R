# Cost per iteration of the target kinds: an R function called per draw, an
# R function called once per iteration for all draws (vectorized), and a
# compiled C function (native_logjoint), on a 10-dim Gaussian and on a
# logistic regression (N = 1000, p = 10). Same seeds, same draws, same
# iteration count (convergence switched off), in one run.
#
#   R CMD INSTALL . && Rscript bench/bench_targets.R
suppressPackageStartupMessages(library(bbvi))
set.seed(1)
iters <- as.integer(Sys.getenv("BBVI_BENCH_ITERS", "1000"))

# ---- 10-dim Gaussian --------------------------------------------------------
D <- 10
A <- matrix(rnorm(D * D), D); Sigma <- crossprod(A) / D + diag(D)
P <- solve(Sigma); mu <- seq(-1, 1, length.out = D)
gauss <- list(
  per_draw = bbvi_model(
    function(theta, data) { d <- theta$z - mu; -0.5 * sum(d * (P %*% d)) },
    list(z = param(dim = D)),
    gradient = function(theta, data) -drop(P %*% (theta$z - mu))),
  vectorized = bbvi_model(
    function(theta, data) { d <- sweep(theta$z, 2, mu); -0.5 * rowSums((d %*% P) * d) },
    list(z = param(dim = D)),
    gradient = function(theta, data) -sweep(theta$z, 2, mu) %*% P,
    vectorized = TRUE),
  compiled = bbvi_model(
    native_logjoint("bbvi:mvnormal", data = list(mu, P), has_gradient = TRUE),
    list(z = param(dim = D))))

# ---- logistic regression, N = 1000, p = 10 ----------------------------------
N <- 1000; p <- 10
X <- cbind(1, matrix(rnorm(N * (p - 1)), N))
beta <- rnorm(p, 0, 0.5)
y <- rbinom(N, 1, plogis(drop(X %*% beta)))
scale <- 2.5
log1pexp <- function(x) ifelse(x > 35, x, log1p(exp(pmin(x, 35))))
logit <- list(
  per_draw = bbvi_model(
    function(theta, data) {
      eta <- drop(X %*% theta$beta)
      sum(y * eta - log1pexp(eta)) - 0.5 * sum(theta$beta^2) / scale^2
    },
    list(beta = param(dim = p)),
    gradient = function(theta, data) {
      eta <- drop(X %*% theta$beta)
      drop(crossprod(X, y - plogis(eta))) - theta$beta / scale^2
    }),
  vectorized = bbvi_model(
    function(theta, data) {
      eta <- X %*% t(theta$beta)                      # N x S
      colSums(y * eta - log1pexp(eta)) - 0.5 * rowSums(theta$beta^2) / scale^2
    },
    list(beta = param(dim = p)),
    gradient = function(theta, data) {
      eta <- X %*% t(theta$beta)
      t(crossprod(X, y - plogis(eta))) - theta$beta / scale^2   # S x p
    },
    vectorized = TRUE),
  compiled = bbvi_model(
    native_logjoint("bbvi:logistic", data = list(X, as.double(y), scale),
                    has_gradient = TRUE),
    list(beta = param(dim = p))))

run <- function(model, estimator) {
  # tol tiny and a window as long as the run: exactly `iters` iterations
  t0 <- proc.time()[["elapsed"]]
  fit <- suppressWarnings(bbvi(model, estimator = estimator, max_iter = iters,
                               window = iters, tol = 1e-12, seed = 1, draws = 10))
  el <- proc.time()[["elapsed"]] - t0
  c(seconds = el, iters_per_s = fit$iterations / el,
    us_per_iter = 1e6 * el / fit$iterations)
}

rows <- list()
for (case in c("gaussian10", "logistic1000x10")) {
  models <- if (case == "gaussian10") gauss else logit
  for (est in c("reparam", "score")) {
    res <- lapply(models, run, estimator = est)
    base <- res$compiled[["us_per_iter"]]
    for (kind in names(models)) {
      rows[[length(rows) + 1]] <- data.frame(
        case = case, estimator = est,
        samples = if (est == "reparam") 10L else 50L,
        target = kind,
        iters_per_s = round(res[[kind]][["iters_per_s"]]),
        us_per_iter = round(res[[kind]][["us_per_iter"]], 1),
        us_per_draw = round(res[[kind]][["us_per_iter"]] / if (est == "reparam") 10 else 50, 2),
        vs_compiled = round(res[[kind]][["us_per_iter"]] / base, 2))
    }
  }
}
tab <- do.call(rbind, rows)
cat(sprintf("bbvi target benchmark: %d iterations per fit; %s; %s\n", iters,
            R.version.string, format(Sys.time(), "%Y-%m-%d")))
print(tab, row.names = FALSE)
