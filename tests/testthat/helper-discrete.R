# Models with discrete latent variables and their exact posteriors (by
# enumeration), shared by the tests and bench/bench_discrete.R (which
# sources this file) and mirrored in the vignette "Discrete latent
# variables".

# ---- the coal-mining change point -------------------------------------------

# Yearly counts of British coal-mining disasters, 1851-1962, from the dates
# in boot::coal (191 disasters; boot is one of R's recommended packages).
coal_counts <- function() {
  years <- 1851:1962
  as.integer(table(factor(floor(boot::coal$date), levels = years)))
}

# y_t ~ Poisson(lambda[1]) for years before the switch year s, Poisson(lambda[2])
# from s on; s uniform over 1851..1962, lambda[k] ~ Exponential(1).
# Given s the rates are conjugate, so p(s | y) is exact by enumeration and
# lambda | y is a mixture of 112 Gamma distributions.
change_point_data <- function(y = coal_counts(), first = 1851L) {
  n <- length(y)
  list(y = y, first = first, n = n, cy = c(0, cumsum(y)), total = sum(y),
       const = -sum(lgamma(y + 1)) - log(n))
}

# the two regimes' sufficient statistics at switch years s (any length)
change_point_stats <- function(d, s) {
  n1 <- s - d$first
  A <- d$cy[n1 + 1]
  list(n1 = n1, A = A, n2 = d$n - n1, B = d$total - A)
}

# log p(y, s, lambda), vectorized over draws: s of length S, lambda S x 2
change_point_logjoint <- function(theta, data) {
  lam <- matrix(theta$lambda, ncol = 2)
  st <- change_point_stats(data, theta$s)
  st$A * log(lam[, 1]) - (st$n1 + 1) * lam[, 1] +
    st$B * log(lam[, 2]) - (st$n2 + 1) * lam[, 2] + data$const
}

# the gradient with respect to the continuous parameter only
change_point_gradient <- function(theta, data) {
  lam <- matrix(theta$lambda, ncol = 2)
  st <- change_point_stats(data, theta$s)
  list(lambda = cbind(st$A / lam[, 1] - (st$n1 + 1), st$B / lam[, 2] - (st$n2 + 1)))
}

change_point_model <- function(d = change_point_data(), gradient = TRUE) {
  bbvi_model(change_point_logjoint,
             parameters = list(s = param(lower = d$first, upper = d$first + d$n - 1L,
                                         integer = TRUE),
                               lambda = param(dim = 2, lower = 0)),
             data = d, vectorized = TRUE,
             gradient = if (gradient) change_point_gradient)
}

# The switch year summed out: log p(y, lambda) = logsumexp over s. A model
# for NUTS (sample_mcmc), which cannot sample s itself.
change_point_marginal_model <- function(d = change_point_data()) {
  s_all <- d$first + seq_len(d$n) - 1L
  st <- change_point_stats(d, s_all)
  terms <- function(lam) {   # S x n: log p(y, s, lambda) for every s
    outer(log(lam[, 1]), st$A) - outer(lam[, 1], st$n1 + 1) +
      outer(log(lam[, 2]), st$B) - outer(lam[, 2], st$n2 + 1) + d$const
  }
  lse_rows <- function(m) {
    mx <- apply(m, 1, max)
    mx + log(rowSums(exp(m - mx)))
  }
  bbvi_model(
    function(theta, data) lse_rows(terms(matrix(theta$lambda, ncol = 2))),
    parameters = list(lambda = param(dim = 2, lower = 0)),
    gradient = function(theta, data) {
      lam <- matrix(theta$lambda, ncol = 2)
      m <- terms(lam)
      w <- exp(m - lse_rows(m))            # p(s | lambda, y), S x n
      cbind(drop(w %*% st$A) / lam[, 1] - drop(w %*% (st$n1 + 1)),
            drop(w %*% st$B) / lam[, 2] - drop(w %*% (st$n2 + 1)))
    },
    vectorized = TRUE)
}

change_point_exact <- function(d = change_point_data()) {
  s_all <- d$first + seq_len(d$n) - 1L
  st <- change_point_stats(d, s_all)
  lw <- lgamma(st$A + 1) - (st$A + 1) * log(st$n1 + 1) +
    lgamma(st$B + 1) - (st$B + 1) * log(st$n2 + 1)
  p <- exp(lw - max(lw))
  p <- p / sum(p)
  # lambda_k | s, y ~ Gamma(shape, rate): mix the first two moments over s
  mix <- function(shape, rate) {
    m1 <- sum(p * shape / rate)
    m2 <- sum(p * shape * (shape + 1) / rate^2)
    c(mean = m1, sd = sqrt(m2 - m1^2))
  }
  l1 <- mix(st$A + 1, st$n1 + 1)
  l2 <- mix(st$B + 1, st$n2 + 1)
  ms <- sum(p * s_all)
  list(years = s_all, prob = p, mode = s_all[which.max(p)], p_mode = max(p),
       mean = c(s = ms, `lambda[1]` = l1[["mean"]], `lambda[2]` = l2[["mean"]]),
       sd = c(s = sqrt(sum(p * (s_all - ms)^2)), `lambda[1]` = l1[["sd"]],
              `lambda[2]` = l2[["sd"]]))
}

# q's probability of value v for each named scalar parameter (from
# probabilities(), one row per value)
q_prob <- function(fit, names, v) {
  pr <- probabilities(fit, names)
  vapply(names, function(nm) {
    sum(pr$probability[pr$parameter == nm & pr$value == v])
  }, numeric(1))
}

# ---- a two-component mixture with latent 0/1 assignments --------------------

# y_i ~ N(mu[1 + z_i], 1), z_i ~ Bernoulli(1/2), mu[k] ~ N(m0[k], tau^2).
# Each z_i is its own parameter (z1, ..., zN), so that the log-joint
# factorises: factor lik_i touches z_i and mu only.
mixture_data <- function(N = 12, seed = 3, m0 = c(-2, 2), tau = 1.5) {
  set.seed(seed)
  z <- stats::rbinom(N, 1, 0.5)
  y <- stats::rnorm(N, c(-1.2, 1.2)[1 + z], 1)
  list(y = y, N = N, m0 = m0, tau = tau)
}

mixture_model <- function(d = mixture_data(), factors = FALSE) {
  N <- d$N
  znames <- paste0("z", seq_len(N))
  pars <- c(stats::setNames(lapply(znames, function(i) param(lower = 0, upper = 1, integer = TRUE)), znames),
            list(mu = param(dim = 2)))
  # S x (N + 1): one column per observation, then the prior of mu
  per_factor <- function(theta, data) {
    mu <- matrix(theta$mu, ncol = 2)
    Z <- vapply(znames, function(nm) as.double(theta[[nm]]), numeric(nrow(mu)))
    Z <- matrix(Z, nrow = nrow(mu))
    Y <- matrix(data$y, nrow(mu), N, byrow = TRUE)
    M <- mu[, 1] * (1 - Z) + mu[, 2] * Z
    lik <- stats::dnorm(Y, M, 1, log = TRUE) + log(0.5)
    prior <- stats::dnorm(mu[, 1], d$m0[1], d$tau, log = TRUE) +
      stats::dnorm(mu[, 2], d$m0[2], d$tau, log = TRUE)
    unname(cbind(lik, prior))
  }
  if (factors) {
    fac <- c(stats::setNames(lapply(znames, function(nm) c(nm, "mu")), paste0("lik", seq_len(N))),
             list(prior_mu = "mu"))
    return(bbvi_model(function(theta, data) per_factor(theta, data),
                      parameters = pars, data = d, vectorized = TRUE, factors = fac))
  }
  bbvi_model(function(theta, data) rowSums(per_factor(theta, data)),
             parameters = pars, data = d, vectorized = TRUE)
}

# Exact by enumerating the 2^N assignments; mu is conjugate given z.
mixture_exact <- function(d = mixture_data()) {
  N <- d$N
  Z <- as.matrix(expand.grid(rep(list(0:1), N)))
  lw <- numeric(nrow(Z))
  mom <- matrix(0, nrow(Z), 4)   # E[mu1], E[mu2], E[mu1^2], E[mu2^2] given z
  for (k in 1:2) {
    in_k <- if (k == 1) 1 - Z else Z
    n_k <- rowSums(in_k)
    s_k <- drop(in_k %*% d$y)
    ss_k <- drop(in_k %*% d$y^2)
    prec <- 1 / d$tau^2 + n_k
    m <- (d$m0[k] / d$tau^2 + s_k) / prec
    lw <- lw - n_k / 2 * log(2 * pi) - 0.5 * log(d$tau^2 * prec) -
      0.5 * (ss_k + d$m0[k]^2 / d$tau^2 - prec * m^2)
    mom[, k] <- m
    mom[, k + 2] <- m^2 + 1 / prec
  }
  p <- exp(lw - max(lw))
  p <- p / sum(p)
  Emu <- colSums(p * mom[, 1:2])
  list(p_z = stats::setNames(colSums(p * Z), paste0("z", seq_len(N))),
       mean = c(`mu[1]` = Emu[1], `mu[2]` = Emu[2]),
       sd = sqrt(colSums(p * mom[, 3:4]) - Emu^2))
}

# ---- spike-and-slab variable selection, p = 8 -----------------------------------

# y = X (g * b) + e, e ~ N(0, 1); g_j ~ Bernoulli(1/2), b_j ~ N(0, tau^2).
spike_slab_data <- function(n = 40, seed = 5, tau = 1,
                            beta = c(1.5, 0, 0, -1, 0, 0.6, 0, 0)) {
  set.seed(seed)
  X <- matrix(stats::rnorm(n * length(beta)), n)
  y <- drop(X %*% beta) + stats::rnorm(n)
  list(X = X, y = y, tau = tau, p = length(beta))
}

spike_slab_model <- function(d = spike_slab_data()) {
  p <- d$p
  bbvi_model(
    function(theta, data) {
      g <- matrix(theta$g, ncol = p)
      b <- matrix(theta$b, ncol = p)
      r <- matrix(data$y, nrow(b), length(data$y), byrow = TRUE) - tcrossprod(g * b, data$X)
      -0.5 * rowSums(r^2) - 0.5 * rowSums(b^2) / data$tau^2 + p * log(0.5)
    },
    parameters = list(g = param(dim = p, lower = 0, upper = 1, integer = TRUE),
                      b = param(dim = p)),
    gradient = function(theta, data) {
      g <- matrix(theta$g, ncol = p)
      b <- matrix(theta$b, ncol = p)
      r <- matrix(data$y, nrow(b), length(data$y), byrow = TRUE) - tcrossprod(g * b, data$X)
      list(b = g * (r %*% data$X) - b / data$tau^2)
    },
    data = d, vectorized = TRUE)
}

# Exact by enumerating the 2^p inclusion patterns: y | g ~ N(0, I + tau^2 X_g X_g').
spike_slab_exact <- function(d = spike_slab_data()) {
  G <- as.matrix(expand.grid(rep(list(0:1), d$p)))
  n <- length(d$y)
  lw <- numeric(nrow(G))
  Eb <- matrix(0, nrow(G), d$p)
  Eb2 <- matrix(d$tau^2, nrow(G), d$p)   # E[b^2 | g]: the prior's where g_j = 0
  for (r in seq_len(nrow(G))) {
    on <- which(G[r, ] == 1)
    Xg <- d$X[, on, drop = FALSE]
    L <- chol(diag(n) + d$tau^2 * tcrossprod(Xg))
    v <- backsolve(L, d$y, transpose = TRUE)
    lw[r] <- -sum(log(diag(L))) - 0.5 * sum(v^2)
    if (length(on)) {
      prec <- diag(length(on)) / d$tau^2 + crossprod(Xg)
      Eb[r, on] <- solve(prec, crossprod(Xg, d$y))
      Eb2[r, on] <- diag(solve(prec)) + Eb[r, on]^2
    }
  }
  w <- exp(lw - max(lw))
  w <- w / sum(w)
  list(inclusion = stats::setNames(colSums(w * G), sprintf("g[%d]", seq_len(d$p))),
       mean_beta = stats::setNames(colSums(w * Eb), sprintf("b[%d]", seq_len(d$p))),
       sd_beta = stats::setNames(sqrt(colSums(w * Eb2) - colSums(w * Eb)^2),
                                 sprintf("b[%d]", seq_len(d$p))))
}
