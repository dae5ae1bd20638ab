# q objects: the variational distribution on the unconstrained scale, one
# class per family, with the generics that every fit method goes through
# (drawing, log density, marginal moments and quantiles, covariance). None
# of them forms anything of size D x D except q_vcov() (asked for) and the
# full-rank family (which is D x D by nature).
#
#   q_gauss_mf(mean, sd)        diagonal Gaussian
#   q_gauss_fr(mean, chol)      Gaussian with a lower Cholesky factor
#   q_gauss_lr(mean, B, d)      covariance B B' + diag(d^2), B of D x rank
#   q_gamma(shape, rate)        independent Gammas   } on the constrained
#   q_beta(a, b)                independent Betas    } (natural) scale,
#   q_categorical(lower, probs) independent discrete } see src/families_ext.c
#   q_product(parts)            independent blocks over consecutive
#                               coordinates, each one of the above

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
         gamma = q_gamma(x$shape, x$rate),
         beta = q_beta(x$a, x$b),
         categorical = q_categorical(x$lower, x$probs),
         given = q_given(x$g_first, x$lower, x$probs, x$cond_mean, x$cond_sd),
         blocks = q_product(lapply(x$blocks, function(b) q_from_c(b$q))),
         cli::cli_abort("internal error: unknown family {.val {x$family}}."))
}

q_dim <- function(q) length(q$mean)

# ---- generics ---------------------------------------------------------------

# n draws: list(zeta = D x n, log_q = n). Standard normal draws are taken
# from R's stream, q_n_base() per draw (D, or D + rank for low-rank), draw
# by draw, so that the first n of N > n draws from one seed are the n draws
# from it; q_from_base() maps them (a q_n_base x n matrix) to q.
q_draw <- function(q, n) {
  q_from_base(q, matrix(stats::rnorm(q_n_base(q) * n), q_n_base(q), n))
}
q_n_base <- function(q) UseMethod("q_n_base")
q_from_base <- function(q, eps) UseMethod("q_from_base")
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

q_n_base.q_gauss_mf <- function(q) q_dim(q)

q_from_base.q_gauss_mf <- function(q, eps) {
  list(zeta = q$mean + q$sd * eps,
       log_q = -0.5 * colSums(eps^2) - q_dim(q) * half_log_2pi - sum(log(q$sd)))
}

q_log_density.q_gauss_mf <- function(q, zeta) {
  e <- (zeta - q$mean) / q$sd
  -0.5 * colSums(e^2) - length(q$mean) * half_log_2pi - sum(log(q$sd))
}

q_marginals.q_gauss_mf <- function(q) list(mean = q$mean, sd = q$sd)
q_vcov.q_gauss_mf <- function(q) diag(q$sd^2, q_dim(q))
q_chol.q_gauss_mf <- function(q) diag(q$sd, q_dim(q))

# ---- full-rank --------------------------------------------------------------------

q_n_base.q_gauss_fr <- function(q) q_dim(q)

q_from_base.q_gauss_fr <- function(q, eps) {
  list(zeta = q$mean + q$chol %*% eps,
       log_q = -0.5 * colSums(eps^2) - q_dim(q) * half_log_2pi - sum(log(diag(q$chol))))
}

q_log_density.q_gauss_fr <- function(q, zeta) {
  e <- forwardsolve(q$chol, zeta - q$mean)
  -0.5 * colSums(e^2) - q_dim(q) * half_log_2pi - sum(log(diag(q$chol)))
}

q_marginals.q_gauss_fr <- function(q) list(mean = q$mean, sd = sqrt(rowSums(q$chol^2)))
q_vcov.q_gauss_fr <- function(q) tcrossprod(q$chol)
q_chol.q_gauss_fr <- function(q) q$chol

# ---- low-rank plus diagonal -------------------------------------------------------

q_n_base.q_gauss_lr <- function(q) q_dim(q) + ncol(q$B)

# a draw's base normals: D for d * e2, then rank for B e1
q_from_base.q_gauss_lr <- function(q, eps) {
  D <- q_dim(q)
  zeta <- q$mean + q$B %*% eps[D + seq_len(ncol(q$B)), , drop = FALSE] +
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

# ---- a product of blocks ----------------------------------------------------------

q_product <- function(parts) {
  dims <- vapply(parts, function(p) length(p$mean), integer(1))
  structure(list(family = "blocks", parts = parts,
                 mean = unlist(lapply(parts, `[[`, "mean")),
                 start = cumsum(c(1L, dims))[seq_along(dims)], dims = dims),
            class = c("q_product", "bbvi_q"))
}

q_rows <- function(q, j) seq(q$start[j], length.out = q$dims[j])

q_n_base.q_product <- function(q) sum(vapply(q$parts, function(p) q_n_base(p), numeric(1)))

# each draw's base normals are the blocks' in block order (as in C)
q_from_base.q_product <- function(q, eps) {
  nb <- vapply(q$parts, function(p) q_n_base(p), numeric(1))
  e0 <- cumsum(c(0, nb))
  zeta <- matrix(0, q_dim(q), ncol(eps))
  log_q <- numeric(ncol(eps))
  for (j in seq_along(q$parts)) {
    one <- q_from_base(q$parts[[j]], eps[e0[j] + seq_len(nb[j]), , drop = FALSE])
    zeta[q_rows(q, j), ] <- one$zeta
    log_q <- log_q + one$log_q
  }
  list(zeta = zeta, log_q = log_q)
}

q_log_density.q_product <- function(q, zeta) {
  out <- 0
  for (j in seq_along(q$parts)) {
    out <- out + q_log_density(q$parts[[j]], zeta[q_rows(q, j), , drop = FALSE])
  }
  out
}

q_marginals.q_product <- function(q) {
  m <- lapply(q$parts, function(p) q_marginals(p))
  list(mean = unlist(lapply(m, `[[`, "mean")), sd = unlist(lapply(m, `[[`, "sd")))
}

block_diag <- function(q, f) {
  out <- matrix(0, q_dim(q), q_dim(q))
  for (j in seq_along(q$parts)) out[q_rows(q, j), q_rows(q, j)] <- f(q$parts[[j]])
  out
}
q_vcov.q_product <- function(q) block_diag(q, q_vcov)
q_chol.q_product <- function(q) block_diag(q, q_chol)

# ---- natural-scale families: Gamma, Beta, categorical ---------------------------
#
# A base draw e becomes u = Phi(e) and then the marginal's inverse CDF, as
# in C (src/families_ext.c): the small tail of Phi on the log scale, so the
# same base draws give the same points on both sides.

q_gamma <- function(shape, rate) {
  structure(list(family = "gamma", mean = as.double(shape / rate),
                 shape = as.double(shape), rate = as.double(rate)),
            class = c("q_gamma", "bbvi_q"))
}

q_beta <- function(a, b) {
  structure(list(family = "beta", mean = as.double(a / (a + b)),
                 a = as.double(a), b = as.double(b)),
            class = c("q_beta", "bbvi_q"))
}

# lower: the first value of each coordinate; probs: one vector of
# probabilities per coordinate, for lower, lower + 1, ...
q_categorical <- function(lower, probs) {
  probs <- lapply(probs, as.double)
  mean <- vapply(seq_along(probs), function(d) {
    sum((lower[d] + seq_along(probs[[d]]) - 1) * probs[[d]])
  }, numeric(1))
  structure(list(family = "categorical", mean = mean, lower = as.integer(lower),
                 probs = probs),
            class = c("q_categorical", "bbvi_q"))
}

# quantile function qf(p, log.p = TRUE, lower.tail) at the base draws eps,
# elementwise (eps recycled over the rows = coordinates)
natural_from_base <- function(eps, qf) {
  z <- eps
  neg <- eps <= 0
  lt <- stats::pnorm(eps, lower.tail = FALSE, log.p = TRUE)
  lt[neg] <- stats::pnorm(eps[neg], log.p = TRUE)
  z[neg] <- qf(lt[neg], which(neg), TRUE)
  z[!neg] <- qf(lt[!neg], which(!neg), FALSE)
  z
}

q_n_base.q_gamma <- function(q) q_dim(q)
q_n_base.q_beta <- function(q) q_dim(q)
q_n_base.q_categorical <- function(q) q_dim(q)

q_from_base.q_gamma <- function(q, eps) {
  inverse_cdf_draws(q, eps, function(lp, j, lower) {
    stats::qgamma(lp, q$shape[j], q$rate[j], lower.tail = lower, log.p = TRUE)
  })
}

q_from_base.q_beta <- function(q, eps) {
  inverse_cdf_draws(q, eps, function(lp, j, lower) {
    stats::qbeta(lp, q$a[j], q$b[j], lower.tail = lower, log.p = TRUE)
  })
}

# z (D x n) from base normals through a continuous family's inverse CDF
# qfun(log p, coordinate, lower tail), with log q at z
inverse_cdf_draws <- function(q, eps, qfun) {
  D <- q_dim(q)
  z <- natural_from_base(eps, function(lp, i, lower) qfun(lp, (i - 1L) %% D + 1L, lower))
  z <- matrix(z, D)
  list(zeta = z, log_q = q_log_density(q, z))
}

# the smallest c with F(c) >= Phi(e), or from the upper tail for e > 0 (as
# in C, with the cumulative sums taken in the same order)
q_from_base.q_categorical <- function(q, eps) {
  D <- q_dim(q)
  z <- matrix(0, D, ncol(eps))
  for (d in seq_len(D)) {
    p <- q$probs[[d]]
    n <- length(p)
    Fc <- cumsum(p)[-n]
    Tc <- rev(cumsum(rev(p)))[-1]
    e <- eps[d, ]
    lt <- ifelse(e <= 0, stats::pnorm(e, log.p = TRUE),
                 stats::pnorm(e, lower.tail = FALSE, log.p = TRUE))
    u <- exp(lt)
    k <- ifelse(e <= 0,
                vapply(u, function(x) sum(Fc < x), numeric(1)),
                vapply(u, function(x) sum(Tc > x), numeric(1)))
    z[d, ] <- q$lower[d] + k
  }
  list(zeta = z, log_q = q_log_density(q, z))
}

q_log_density.q_gamma <- function(q, zeta) {
  colSums(matrix(stats::dgamma(zeta, q$shape, q$rate, log = TRUE), q_dim(q)))
}
q_log_density.q_beta <- function(q, zeta) {
  colSums(matrix(stats::dbeta(zeta, q$a, q$b, log = TRUE), q_dim(q)))
}
q_log_density.q_categorical <- function(q, zeta) {
  zeta <- matrix(zeta, q_dim(q))
  out <- numeric(ncol(zeta))
  for (d in seq_len(q_dim(q))) {
    k <- zeta[d, ] - q$lower[d] + 1
    ok <- k >= 1 & k <= length(q$probs[[d]]) & k == round(k)
    out <- out + ifelse(ok, log(q$probs[[d]][ifelse(ok, k, 1)]), -Inf)
  }
  out
}

q_marginals.q_gamma <- function(q) list(mean = q$mean, sd = sqrt(q$shape) / q$rate)
q_marginals.q_beta <- function(q) {
  n <- q$a + q$b
  list(mean = q$mean, sd = sqrt(q$a * q$b / (n^2 * (n + 1))))
}
q_marginals.q_categorical <- function(q) {
  sd <- vapply(seq_len(q_dim(q)), function(d) {
    v <- seq_along(q$probs[[d]]) - 1
    sqrt(max(sum(v^2 * q$probs[[d]]) - sum(v * q$probs[[d]])^2, 0))
  }, numeric(1))
  list(mean = q$mean, sd = sd)
}

# exact quantiles (D x length(p))
q_quantile.q_gamma <- function(q, p) {
  vapply(p, function(pj) stats::qgamma(pj, q$shape, q$rate), numeric(q_dim(q)))
}
q_quantile.q_beta <- function(q, p) {
  vapply(p, function(pj) stats::qbeta(pj, q$a, q$b), numeric(q_dim(q)))
}
# the smallest value whose CDF reaches p
q_quantile.q_categorical <- function(q, p) {
  out <- vapply(p, function(pj) vapply(seq_len(q_dim(q)), function(d) {
    Fc <- cumsum(q$probs[[d]])
    q$lower[d] + min(which(Fc >= pj - 1e-12)) - 1
  }, numeric(1)), numeric(q_dim(q)))
  matrix(out, q_dim(q))
}

q_vcov.q_gamma <- function(q) diag(q_marginals(q)$sd^2, q_dim(q))
q_vcov.q_beta <- q_vcov.q_gamma
q_vcov.q_categorical <- q_vcov.q_gamma
q_chol.q_gamma <- function(q) diag(q_marginals(q)$sd, q_dim(q))
q_chol.q_beta <- q_chol.q_gamma
q_chol.q_categorical <- q_chol.q_gamma

# block by block: a family with exact non-Gaussian quantiles keeps them
q_quantile.q_product <- function(q, p) {
  out <- matrix(0, q_dim(q), length(p))
  for (j in seq_along(q$parts)) {
    out[q_rows(q, j), ] <- matrix(q_quantile(q$parts[[j]], p), ncol = length(p))
  }
  out
}
