# q objects: the variational distribution on the unconstrained scale, one
# class per family, with the generics that every fit method goes through
# (drawing, log density, marginal moments and quantiles, covariance). None
# of them forms anything of size D x D except q_vcov() (asked for) and the
# full-rank family (which is D x D by nature).
#
#   q_gauss_mf(mean, sd)        diagonal Gaussian
#   q_gauss_fr(mean, chol)      Gaussian with a lower Cholesky factor
#   q_gauss_lr(mean, B, d)      covariance B B' + diag(d^2), B of D x rank

q_gauss_mf <- function(mean, sd) {
  structure(list(family = "meanfield", mean = as.double(mean), sd = as.double(sd)),
            class = c("q_gauss_mf", "bbvi_q"))
}

q_gauss_fr <- function(mean, chol) {
  chol <- matrix(as.double(chol), length(mean), length(mean))
  structure(list(family = "fullrank", mean = as.double(mean), chol = chol),
            class = c("q_gauss_fr", "bbvi_q"))
}

q_gauss_lr <- function(mean, B, d) {
  B <- matrix(as.double(B), nrow = length(mean))
  structure(list(family = "lowrank", mean = as.double(mean), B = B,
                 d = as.double(d)),
            class = c("q_gauss_lr", "bbvi_q"))
}

# From what the C side's to_sexp() returns.
q_from_c <- function(x) {
  switch(x$family,
         meanfield = q_gauss_mf(x$mean, x$sd),
         fullrank = q_gauss_fr(x$mean, x$chol),
         lowrank = q_gauss_lr(x$mean, x$B, x$d),
         cli::cli_abort("internal error: unknown family {.val {x$family}}."))
}

q_dim <- function(q) length(q$mean)

# ---- generics ---------------------------------------------------------------

# n draws: list(zeta = D x n, log_q = n). Standard normal draws are taken
# from R's stream, D per draw (D + rank for low-rank), draw by draw, so that
# the first n of N > n draws from one seed are the n draws from it.
q_draw <- function(q, n) UseMethod("q_draw")
# log q at the columns of zeta (D x n)
q_log_density <- function(q, zeta) UseMethod("q_log_density")
# list(mean, sd) of the marginals, O(D)
q_marginals <- function(q) UseMethod("q_marginals")
# D x length(p) marginal quantiles (Gaussian marginals for every family here)
q_quantile <- function(q, p) UseMethod("q_quantile")
# the dense D x D covariance
q_vcov <- function(q) UseMethod("q_vcov")
# a D x D lower Cholesky factor of the covariance (for code that needs one)
q_chol <- function(q) UseMethod("q_chol")

q_quantile.bbvi_q <- function(q, p) {
  m <- q_marginals(q)
  vapply(p, function(pj) m$mean + m$sd * stats::qnorm(pj), numeric(q_dim(q)))
}

half_log_2pi <- 0.5 * log(2 * pi)

# ---- mean-field ---------------------------------------------------------------

q_draw.q_gauss_mf <- function(q, n) {
  D <- q_dim(q)
  eps <- matrix(stats::rnorm(D * n), D, n)
  list(zeta = q$mean + q$sd * eps,
       log_q = -0.5 * colSums(eps^2) - D * half_log_2pi - sum(log(q$sd)))
}

q_log_density.q_gauss_mf <- function(q, zeta) {
  e <- (zeta - q$mean) / q$sd
  -0.5 * colSums(e^2) - length(q$mean) * half_log_2pi - sum(log(q$sd))
}

q_marginals.q_gauss_mf <- function(q) list(mean = q$mean, sd = q$sd)
q_vcov.q_gauss_mf <- function(q) diag(q$sd^2, q_dim(q))
q_chol.q_gauss_mf <- function(q) diag(q$sd, q_dim(q))

# ---- full-rank --------------------------------------------------------------------

q_draw.q_gauss_fr <- function(q, n) {
  D <- q_dim(q)
  eps <- matrix(stats::rnorm(D * n), D, n)
  list(zeta = q$mean + q$chol %*% eps,
       log_q = -0.5 * colSums(eps^2) - D * half_log_2pi - sum(log(diag(q$chol))))
}

q_log_density.q_gauss_fr <- function(q, zeta) {
  e <- forwardsolve(q$chol, zeta - q$mean)
  -0.5 * colSums(e^2) - q_dim(q) * half_log_2pi - sum(log(diag(q$chol)))
}

q_marginals.q_gauss_fr <- function(q) list(mean = q$mean, sd = sqrt(rowSums(q$chol^2)))
q_vcov.q_gauss_fr <- function(q) tcrossprod(q$chol)
q_chol.q_gauss_fr <- function(q) q$chol

# ---- low-rank plus diagonal -------------------------------------------------------

q_draw.q_gauss_lr <- function(q, n) {
  D <- q_dim(q)
  r <- ncol(q$B)
  # one column of D + r normals per draw: n draws are a prefix of more
  eps <- matrix(stats::rnorm((D + r) * n), D + r, n)
  zeta <- q$mean + q$B %*% eps[D + seq_len(r), , drop = FALSE] +
    q$d * eps[seq_len(D), , drop = FALSE]
  list(zeta = zeta, log_q = q_log_density(q, zeta))
}

# Woodbury and the determinant lemma: Sigma = B B' + D2, C = I + B' D2^-1 B,
# x' Sigma^-1 x = x' D2^-1 x - |Lc^-1 B' D2^-1 x|^2 with C = Lc Lc',
# log|Sigma| = sum log d^2 + log|C|: O(D r^2), nothing D x D.
q_log_density.q_gauss_lr <- function(q, zeta) {
  x <- zeta - q$mean
  Bd <- q$B / q$d^2
  Lc <- t(chol(diag(ncol(q$B)) + crossprod(q$B, Bd)))
  u <- forwardsolve(Lc, crossprod(Bd, x))
  quad <- colSums(x^2 / q$d^2) - colSums(u^2)
  logdet <- 2 * sum(log(q$d)) + 2 * sum(log(diag(Lc)))
  -0.5 * quad - q_dim(q) * half_log_2pi - 0.5 * logdet
}

q_marginals.q_gauss_lr <- function(q) {
  list(mean = q$mean, sd = sqrt(rowSums(q$B^2) + q$d^2))
}
q_vcov.q_gauss_lr <- function(q) tcrossprod(q$B) + diag(q$d^2, q_dim(q))
q_chol.q_gauss_lr <- function(q) t(chol(q_vcov(q)))

# ---- the fit's q -------------------------------------------------------------------

# A fit that keeps a dense Cholesky factor (full-rank, and every GLM fit,
# whose code maps it when it un-centres the predictors) is described by
# mean_unc and chol_unc; the others by their q object.
fit_q <- function(fit) {
  if (!is.null(fit$chol_unc)) return(q_gauss_fr(fit$mean_unc, fit$chol_unc))
  if (is.null(fit$q)) cli::cli_abort("internal error: the fit has no q.")
  fit$q
}
