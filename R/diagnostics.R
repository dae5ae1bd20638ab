# Convergence diagnostics of Vehtari, Gelman, Simpson, Carpenter and Buerkner
# (2021): rank-normalised split-R-hat, bulk-ESS and tail-ESS. The
# definitions follow the posterior package (version 1.4) line by line, so the
# numbers agree with posterior::rhat(), ess_bulk() and ess_tail(); the tests
# check that.

#' Convergence diagnostics for MCMC draws
#'
#' Rank-normalised split-R-hat, bulk effective sample size and tail effective
#' sample size (Vehtari et al. 2021), per parameter. They agree with
#' `posterior::rhat()`, `posterior::ess_bulk()` and `posterior::ess_tail()`.
#'
#' R-hat is the larger of the split-R-hat of the rank-normalised draws (bulk)
#' and of the rank-normalised absolute deviations from the median (tails);
#' values above 1.01 suggest the chains have not mixed. Bulk-ESS is the
#' effective sample size of the rank-normalised draws, tail-ESS the smaller
#' of the effective sample sizes of the indicators of the 5% and 95%
#' quantiles. Both use split chains and Geyer's initial monotone sequence.
#'
#' @param x A [sample_mcmc()] result, an iterations x chains x parameters
#'   array, an iterations x chains matrix (one parameter), or a vector (one
#'   chain of one parameter).
#' @return A data frame with columns `parameter`, `rhat`, `ess_bulk`,
#'   `ess_tail`; a quantity that cannot be computed (constant or non-finite
#'   draws, fewer than 4 iterations) is `NA`.
#' @references Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and
#'   Buerkner, P.-C. (2021). Rank-normalization, folding, and localization:
#'   an improved R-hat for assessing convergence of MCMC. *Bayesian
#'   Analysis* 16(2), 667-718.
#' @examples
#' set.seed(1)
#' x <- array(rnorm(400 * 4 * 2), c(400, 4, 2),
#'            dimnames = list(NULL, NULL, c("a", "b")))
#' mcmc_diagnostics(x)
#' @export
mcmc_diagnostics <- function(x) {
  if (inherits(x, "bbvi_mcmc")) x <- x$draws
  if (is.numeric(x) && is.null(dim(x))) x <- matrix(x, ncol = 1)
  if (is.numeric(x) && length(dim(x)) == 2) {
    x <- array(x, c(dim(x), 1L), dimnames = list(NULL, NULL, "x"))
  }
  if (!is.numeric(x) || length(dim(x)) != 3 || any(dim(x) == 0)) {
    abort_arg("x", "a bbvi_mcmc, or draws as an iterations x chains (x parameters) array", x)
  }
  nms <- dimnames(x)[[3]]
  if (is.null(nms)) nms <- sprintf("V%d", seq_len(dim(x)[3]))
  res <- vapply(seq_len(dim(x)[3]), function(k) {
    m <- matrix(x[, , k], nrow = dim(x)[1])
    c(diag_rhat(m), diag_ess_bulk(m), diag_ess_tail(m))
  }, numeric(3))
  data.frame(parameter = nms, rhat = res[1, ], ess_bulk = res[2, ],
             ess_tail = res[3, ], row.names = NULL)
}

# All helpers take an iterations x chains matrix.

diag_rhat <- function(x) {
  max(rhat_raw(z_scale(split_chains(x))),
      rhat_raw(z_scale(split_chains(abs(x - stats::median(x))))))
}

diag_ess_bulk <- function(x) ess_raw(z_scale(split_chains(x)))

diag_ess_tail <- function(x) {
  min(diag_ess_quantile(x, 0.05), diag_ess_quantile(x, 0.95))
}

diag_ess_quantile <- function(x, prob) {
  if (na_case(x)) return(NA_real_)
  ess_raw(split_chains(x <= stats::quantile(x, prob, names = FALSE)))
}

# Effective sample size of the mean (no rank normalisation), split chains.
diag_ess_mean <- function(x) ess_raw(split_chains(x))

na_case <- function(x) {
  anyNA(x) || any(!is.finite(x)) || abs(max(x) - min(x)) < .Machine$double.eps
}

split_chains <- function(x) {
  x <- as.matrix(x)
  n <- nrow(x)
  if (n == 1L) return(x)
  half <- n / 2
  cbind(x[seq_len(floor(half)), , drop = FALSE],
        x[ceiling(half + 1):n, , drop = FALSE])
}

z_scale <- function(x) {
  r <- rank(x, ties.method = "average")
  z <- stats::qnorm((r - 3 / 8) / (length(r) - 2 * 3 / 8 + 1))
  z[is.na(x)] <- NA
  array(z, dim = dim(x))
}

rhat_raw <- function(x) {
  x <- as.matrix(x)
  if (na_case(x)) return(NA_real_)
  n <- nrow(x)
  chain_mean <- colMeans(x)
  chain_var <- apply(x, 2, stats::var)
  var_between <- n * stats::var(chain_mean)
  var_within <- mean(chain_var)
  sqrt((var_between / var_within + n - 1) / n)
}

autocovariance <- function(x) {
  N <- length(x)
  varx <- stats::var(x)
  if (varx == 0) return(rep(0, N))
  M2 <- 2 * stats::nextn(N)
  yc <- c(x - mean(x), rep.int(0, M2 - N))
  ac <- Re(stats::fft(abs(stats::fft(yc))^2, inverse = TRUE)[seq_len(N)])
  ac / ac[1] * varx * (N - 1) / N
}

# ESS with Geyer's initial monotone sequence, over the columns (chains) of x.
ess_raw <- function(x) {
  x <- as.matrix(x)
  nchains <- ncol(x)
  n <- nrow(x)
  if (n < 3L || na_case(x)) return(NA_real_)
  acov_means <- rowMeans(apply(x, 2, autocovariance))
  mean_var <- acov_means[1] * n / (n - 1)
  var_plus <- mean_var * (n - 1) / n
  if (nchains > 1) var_plus <- var_plus + stats::var(colMeans(x))
  rho <- rep.int(0, n)
  t <- 0
  rho_even <- 1
  rho[1] <- rho_even
  rho_odd <- 1 - (mean_var - acov_means[2]) / var_plus
  rho[2] <- rho_odd
  while (t < n - 5 && !is.nan(rho_even + rho_odd) && rho_even + rho_odd > 0) {
    t <- t + 2
    rho_even <- 1 - (mean_var - acov_means[t + 1]) / var_plus
    rho_odd <- 1 - (mean_var - acov_means[t + 2]) / var_plus
    if (rho_even + rho_odd >= 0) {
      rho[t + 1] <- rho_even
      rho[t + 2] <- rho_odd
    }
  }
  max_t <- t
  if (rho_even > 0) rho[max_t + 1] <- rho_even
  t <- 0
  while (t <= max_t - 4) {
    t <- t + 2
    if (rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]) {
      rho[t + 1] <- (rho[t - 1] + rho[t]) / 2
      rho[t + 2] <- rho[t + 1]
    }
  }
  ess <- nchains * n
  # rho[1:max_t], as posterior writes it (max_t = 0 gives rho[1])
  tau <- -1 + 2 * sum(rho[1:max_t]) + rho[max_t + 1]
  ess / max(tau, 1 / log10(ess))
}
