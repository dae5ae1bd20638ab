# Model definitions for bench/bench_custom.R: the posteriordb models in
# ../shared/posteriordb that are not plain GLMs, each as
#   - Stan code (posteriordb's model block, as described in each folder's README.md),
#   - a vectorized R log-joint on the constrained scale (no Jacobian: bbvi adds it),
#   - its gradient (same shape as theta),
#   - a map from a matrix of draws (constrained scale, bbvi's column names) to the
#     reference parameters (e.g. theta = mu + tau * theta_trans).
# Loaded with source(); defines `custom_models`, a named list.

stan_code <- list(
  eight_schools_centered = "
data { int<lower=0> J; real y[J]; real<lower=0> sigma[J]; }
parameters { real mu; real<lower=0> tau; real theta[J]; }
model {
  mu ~ normal(0, 5);
  tau ~ cauchy(0, 5);
  theta ~ normal(mu, tau);
  y ~ normal(theta, sigma);
}",
  eight_schools_noncentered = "
data { int<lower=0> J; real y[J]; real<lower=0> sigma[J]; }
parameters { vector[J] theta_trans; real mu; real<lower=0> tau; }
transformed parameters { vector[J] theta = theta_trans * tau + mu; }
model {
  theta_trans ~ normal(0, 1);
  y ~ normal(theta, sigma);
  mu ~ normal(0, 5);
  tau ~ cauchy(0, 5);
}",
  arK = "
data { int<lower=0> K; int<lower=0> T; real y[T]; }
parameters { real alpha; real beta[K]; real<lower=0> sigma; }
model {
  alpha ~ normal(0, 10);
  beta ~ normal(0, 10);
  sigma ~ cauchy(0, 2.5);
  for (t in (K + 1):T) {
    real mu = alpha;
    for (k in 1:K) mu += beta[k] * y[t - k];
    y[t] ~ normal(mu, sigma);
  }
}",
  arma11 = "
data { int<lower=1> T; real y[T]; }
parameters { real mu; real phi; real theta; real<lower=0> sigma; }
model {
  vector[T] nu;
  vector[T] err;
  nu[1] = mu + phi * mu;
  err[1] = y[1] - nu[1];
  for (t in 2:T) {
    nu[t] = mu + phi * y[t - 1] + theta * err[t - 1];
    err[t] = y[t] - nu[t];
  }
  mu ~ normal(0, 10);
  phi ~ normal(0, 2);
  theta ~ normal(0, 2);
  sigma ~ cauchy(0, 2.5);
  err ~ normal(0, sigma);
}",
  garch11 = "
data { int<lower=0> T; real y[T]; real<lower=0> sigma1; }
parameters {
  real mu;
  real<lower=0> alpha0;
  real<lower=0, upper=1> alpha1;
  real<lower=0, upper=(1 - alpha1)> beta1;
}
model {
  real sigma[T];
  sigma[1] = sigma1;
  for (t in 2:T)
    sigma[t] = sqrt(alpha0 + alpha1 * pow(y[t - 1] - mu, 2) + beta1 * pow(sigma[t - 1], 2));
  y ~ normal(mu, sigma);
}",
  gp_pois_regr = "
data { int<lower=1> N; real x[N]; int k[N]; }
parameters { real<lower=0> rho; real<lower=0> alpha; vector[N] f_tilde; }
transformed parameters {
  vector[N] f;
  {
    matrix[N, N] cov = cov_exp_quad(x, alpha, rho) + diag_matrix(rep_vector(1e-10, N));
    matrix[N, N] L_cov = cholesky_decompose(cov);
    f = L_cov * f_tilde;
  }
}
model {
  rho ~ gamma(25, 4);
  alpha ~ normal(0, 2);
  f_tilde ~ normal(0, 1);
  k ~ poisson_log(f);
}",
  low_dim_gauss_mix = "
data { int<lower=0> N; vector[N] y; }
parameters { ordered[2] mu; real<lower=0> sigma[2]; real<lower=0, upper=1> theta; }
model {
  sigma ~ normal(0, 2);
  mu ~ normal(0, 2);
  theta ~ beta(5, 5);
  for (n in 1:N)
    target += log_mix(theta, normal_lpdf(y[n] | mu[1], sigma[1]),
                      normal_lpdf(y[n] | mu[2], sigma[2]));
}"
)

# ---- R log-joints -------------------------------------------------------------
# Vectorized: theta$x is a length-S vector for scalar parameters and an S x dim
# matrix for vector parameters; each log-joint returns S numbers, each gradient
# a list shaped like theta. Densities up to additive constants, on the
# constrained scale, without the Jacobian of bbvi's own transforms.

half_cauchy_lp <- function(x, s) -log1p((x / s)^2)
half_cauchy_gr <- function(x, s) -2 * x / (s^2 + x^2)
as_rows <- function(x, S) matrix(x, nrow = S)

custom_models <- list()

# eight schools, centred: mu ~ N(0, 5), tau ~ half-Cauchy(0, 5),
# theta_j ~ N(mu, tau), y_j ~ N(theta_j, sigma_j)
custom_models$eight_schools_centered <- list(
  posterior = "eight_schools-eight_schools_centered",
  stan = stan_code$eight_schools_centered,
  stan_data = function(d) d,
  data = function(d) d,
  parameters = list(mu = param(), tau = param(lower = 0), theta = param(dim = 8)),
  logjoint = function(theta, data) {
    S <- length(theta$mu); th <- as_rows(theta$theta, S)
    mu <- theta$mu; tau <- theta$tau
    y <- matrix(data$y, S, data$J, byrow = TRUE); sg <- matrix(data$sigma, S, data$J, byrow = TRUE)
    -mu^2 / 50 + half_cauchy_lp(tau, 5) -
      data$J * log(tau) - rowSums((th - mu)^2) / (2 * tau^2) -
      rowSums((y - th)^2 / (2 * sg^2))
  },
  gradient = function(theta, data) {
    S <- length(theta$mu); th <- as_rows(theta$theta, S)
    mu <- theta$mu; tau <- theta$tau
    y <- matrix(data$y, S, data$J, byrow = TRUE); sg <- matrix(data$sigma, S, data$J, byrow = TRUE)
    dev <- th - mu
    list(mu = -mu / 25 + rowSums(dev) / tau^2,
         tau = half_cauchy_gr(tau, 5) - data$J / tau + rowSums(dev^2) / tau^3,
         theta = -dev / tau^2 + (y - th) / sg^2)
  },
  # draws (bbvi's columns) -> reference columns
  to_ref = function(dr) cbind(dr[, sprintf("theta[%d]", 1:8)], mu = dr[, "mu"], tau = dr[, "tau"])
)

# eight schools, non-centred: theta_trans_j ~ N(0, 1), theta = mu + tau * theta_trans
custom_models$eight_schools_noncentered <- list(
  posterior = "eight_schools-eight_schools_noncentered",
  stan = stan_code$eight_schools_noncentered,
  stan_data = function(d) d,
  data = function(d) d,
  parameters = list(theta_trans = param(dim = 8), mu = param(), tau = param(lower = 0)),
  logjoint = function(theta, data) {
    S <- length(theta$mu); tt <- as_rows(theta$theta_trans, S)
    th <- theta$mu + theta$tau * tt
    y <- matrix(data$y, S, data$J, byrow = TRUE); sg <- matrix(data$sigma, S, data$J, byrow = TRUE)
    -0.5 * rowSums(tt^2) - rowSums((y - th)^2 / (2 * sg^2)) - theta$mu^2 / 50 +
      half_cauchy_lp(theta$tau, 5)
  },
  gradient = function(theta, data) {
    S <- length(theta$mu); tt <- as_rows(theta$theta_trans, S)
    th <- theta$mu + theta$tau * tt
    y <- matrix(data$y, S, data$J, byrow = TRUE); sg <- matrix(data$sigma, S, data$J, byrow = TRUE)
    r <- (y - th) / sg^2
    list(theta_trans = -tt + theta$tau * r,
         mu = rowSums(r) - theta$mu / 25,
         tau = rowSums(tt * r) + half_cauchy_gr(theta$tau, 5))
  },
  to_ref = function(dr) {
    th <- dr[, "mu"] + dr[, "tau"] * dr[, sprintf("theta_trans[%d]", 1:8), drop = FALSE]
    colnames(th) <- sprintf("theta[%d]", 1:8)
    cbind(th, mu = dr[, "mu"], tau = dr[, "tau"])
  }
)

# AR(5): alpha, beta_k ~ N(0, 10), sigma ~ half-Cauchy(0, 2.5),
# y_t ~ N(alpha + sum_k beta_k y_{t-k}, sigma), t = K+1..T
custom_models$arK <- list(
  posterior = "arK-arK",
  stan = stan_code$arK,
  stan_data = function(d) d,
  data = function(d) {
    K <- d$K; T <- d$T
    X <- sapply(seq_len(K), function(k) d$y[(K + 1 - k):(T - k)])
    list(X = X, y = d$y[(K + 1):T], n = T - K)
  },
  parameters = list(alpha = param(), beta = param(dim = 5), sigma = param(lower = 0)),
  logjoint = function(theta, data) {
    S <- length(theta$alpha); b <- as_rows(theta$beta, S); sigma <- theta$sigma
    E <- matrix(data$y, S, data$n, byrow = TRUE) - theta$alpha - b %*% t(data$X)
    -data$n * log(sigma) - rowSums(E^2) / (2 * sigma^2) - theta$alpha^2 / 200 -
      rowSums(b^2) / 200 + half_cauchy_lp(sigma, 2.5)
  },
  gradient = function(theta, data) {
    S <- length(theta$alpha); b <- as_rows(theta$beta, S); sigma <- theta$sigma
    E <- matrix(data$y, S, data$n, byrow = TRUE) - theta$alpha - b %*% t(data$X)
    list(alpha = rowSums(E) / sigma^2 - theta$alpha / 100,
         beta = (E %*% data$X) / sigma^2 - b / 100,
         sigma = -data$n / sigma + rowSums(E^2) / sigma^3 + half_cauchy_gr(sigma, 2.5))
  },
  to_ref = function(dr) dr[, c("alpha", sprintf("beta[%d]", 1:5), "sigma")]
)

# ARMA(1,1): err_1 = y_1 - mu (1 + phi), err_t = y_t - mu - phi y_{t-1} - theta err_{t-1},
# err_t ~ N(0, sigma); mu ~ N(0, 10), phi, theta ~ N(0, 2), sigma ~ half-Cauchy(0, 2.5)
arma_err <- function(theta, y, grad = FALSE) {
  mu <- theta$mu; phi <- theta$phi; th <- theta$theta
  T <- length(y); S <- length(mu)
  e <- y[1] - mu * (1 + phi)
  sse <- e^2
  if (grad) { dmu <- -(1 + phi); dphi <- -mu; dth <- numeric(S)
    gmu <- e * dmu; gphi <- e * dphi; gth <- numeric(S) }
  for (t in 2:T) {
    if (grad) {
      dmu <- -1 - th * dmu
      dphi <- -y[t - 1] - th * dphi
      dth <- -e - th * dth
    }
    e <- y[t] - mu - phi * y[t - 1] - th * e
    sse <- sse + e^2
    if (grad) { gmu <- gmu + e * dmu; gphi <- gphi + e * dphi; gth <- gth + e * dth }
  }
  if (grad) list(sse = sse, gmu = gmu, gphi = gphi, gth = gth) else list(sse = sse)
}
custom_models$arma11 <- list(
  posterior = "arma-arma11",
  stan = stan_code$arma11,
  stan_data = function(d) d,
  data = function(d) d,
  parameters = list(mu = param(), phi = param(), theta = param(), sigma = param(lower = 0)),
  logjoint = function(theta, data) {
    r <- arma_err(theta, data$y); sigma <- theta$sigma
    -data$T * log(sigma) - r$sse / (2 * sigma^2) - theta$mu^2 / 200 - theta$phi^2 / 8 -
      theta$theta^2 / 8 + half_cauchy_lp(sigma, 2.5)
  },
  gradient = function(theta, data) {
    r <- arma_err(theta, data$y, grad = TRUE); s2 <- theta$sigma^2
    list(mu = -r$gmu / s2 - theta$mu / 100,
         phi = -r$gphi / s2 - theta$phi / 4,
         theta = -r$gth / s2 - theta$theta / 4,
         sigma = -data$T / theta$sigma + r$sse / theta$sigma^3 + half_cauchy_gr(theta$sigma, 2.5))
  },
  to_ref = function(dr) dr[, c("mu", "phi", "theta", "sigma")]
)

# GARCH(1,1). The dependent bound 0 < beta1 < 1 - alpha1 is REPARAMETERISED:
# bbvi's parameter is gamma = beta1 / (1 - alpha1) in (0, 1) (as Stan does
# internally), and the log-joint adds the Jacobian log(1 - alpha1) of
# gamma -> beta1, so the posterior of (mu, alpha0, alpha1, beta1) is exactly
# the Stan model's (flat over the constrained region).
garch_terms <- function(theta, data, grad = FALSE) {
  mu <- theta$mu; a0 <- theta$alpha0; a1 <- theta$alpha1
  b1 <- (1 - a1) * theta$gamma
  y <- data$y; T <- length(y); S <- length(mu)
  v <- rep(data$sigma1^2, S)
  lp <- -0.5 * log(v) - 0.5 * (y[1] - mu)^2 / v
  if (grad) {
    dv_mu <- dv_a0 <- dv_a1 <- dv_b1 <- numeric(S)
    g_mu <- (y[1] - mu) / v; g_a0 <- g_a1 <- g_b1 <- numeric(S)
  }
  for (t in 2:T) {
    d2 <- (y[t - 1] - mu)^2
    if (grad) {
      dv_mu <- -2 * a1 * (y[t - 1] - mu) + b1 * dv_mu
      dv_a0 <- 1 + b1 * dv_a0
      dv_a1 <- d2 + b1 * dv_a1
      dv_b1 <- v + b1 * dv_b1
    }
    v <- a0 + a1 * d2 + b1 * v
    r2 <- (y[t] - mu)^2
    lp <- lp - 0.5 * log(v) - 0.5 * r2 / v
    if (grad) {
      dl_dv <- -0.5 / v + 0.5 * r2 / v^2
      g_mu <- g_mu + (y[t] - mu) / v + dl_dv * dv_mu
      g_a0 <- g_a0 + dl_dv * dv_a0
      g_a1 <- g_a1 + dl_dv * dv_a1
      g_b1 <- g_b1 + dl_dv * dv_b1
    }
  }
  lp <- lp + log1p(-a1)
  if (!grad) return(lp)
  list(mu = g_mu, alpha0 = g_a0,
       alpha1 = g_a1 - theta$gamma * g_b1 - 1 / (1 - a1),
       gamma = (1 - a1) * g_b1)
}
custom_models$garch11 <- list(
  posterior = "garch-garch11",
  stan = stan_code$garch11,
  stan_data = function(d) d,
  data = function(d) d,
  parameters = list(mu = param(), alpha0 = param(lower = 0),
                    alpha1 = param(lower = 0, upper = 1), gamma = param(lower = 0, upper = 1)),
  logjoint = function(theta, data) garch_terms(theta, data),
  gradient = function(theta, data) garch_terms(theta, data, grad = TRUE),
  to_ref = function(dr) cbind(mu = dr[, "mu"], alpha0 = dr[, "alpha0"], alpha1 = dr[, "alpha1"],
                              beta1 = (1 - dr[, "alpha1"]) * dr[, "gamma"])
)

# GP Poisson regression (whitened): rho ~ Gamma(25, 4), alpha ~ half-N(0, 2),
# f_tilde ~ N(0, 1), f = L f_tilde with L L' = alpha^2 exp(-d^2 / (2 rho^2)) + 1e-10 I,
# k_i ~ Poisson(exp(f_i)). Gradient through the Cholesky factor:
# dL = L Phi(L^-1 dC L^-T), Phi = lower triangle with half the diagonal.
gp_chol <- function(rho, alpha, D2) {
  K <- exp(-D2 / (2 * rho^2))
  C <- alpha^2 * K
  diag(C) <- diag(C) + 1e-10
  list(K = K, L = t(chol(C)))
}
gp_dchol <- function(L, dC) {
  Li <- forwardsolve(L, diag(nrow(L)))
  P <- Li %*% dC %*% t(Li)
  P[upper.tri(P)] <- 0
  diag(P) <- diag(P) / 2
  L %*% P
}
custom_models$gp_pois_regr <- list(
  posterior = "gp_pois_regr-gp_pois_regr",
  stan = stan_code$gp_pois_regr,
  stan_data = function(d) d[c("N", "x", "k")],
  data = function(d) list(N = d$N, k = d$k, D2 = outer(d$x, d$x, "-")^2, x = d$x),
  parameters = list(rho = param(lower = 0), alpha = param(lower = 0), f_tilde = param(dim = 11)),
  logjoint = function(theta, data) {
    S <- length(theta$rho); ft <- as_rows(theta$f_tilde, S)
    out <- numeric(S)
    for (s in seq_len(S)) {
      L <- tryCatch(gp_chol(theta$rho[s], theta$alpha[s], data$D2)$L, error = function(e) NULL)
      if (is.null(L)) { out[s] <- -Inf; next }
      f <- drop(L %*% ft[s, ])
      out[s] <- sum(data$k * f - exp(f))
    }
    out + dgamma(theta$rho, 25, 4, log = TRUE) - theta$alpha^2 / 8 - 0.5 * rowSums(ft^2)
  },
  gradient = function(theta, data) {
    S <- length(theta$rho); ft <- as_rows(theta$f_tilde, S)
    g_rho <- g_alpha <- numeric(S); g_ft <- -ft
    for (s in seq_len(S)) {
      rho <- theta$rho[s]; alpha <- theta$alpha[s]
      ch <- gp_chol(rho, alpha, data$D2); L <- ch$L
      f <- drop(L %*% ft[s, ])
      gf <- data$k - exp(f)
      g_ft[s, ] <- g_ft[s, ] + drop(crossprod(L, gf))
      dC_rho <- alpha^2 * ch$K * data$D2 / rho^3
      dC_alpha <- 2 * alpha * ch$K
      g_rho[s] <- sum(gf * (gp_dchol(L, dC_rho) %*% ft[s, ]))
      g_alpha[s] <- sum(gf * (gp_dchol(L, dC_alpha) %*% ft[s, ]))
    }
    list(rho = g_rho + 24 / theta$rho - 4, alpha = g_alpha - theta$alpha / 4, f_tilde = g_ft)
  },
  to_ref = NULL  # set below (needs the data)
)

# Two-component normal mixture with ordered means. bbvi has no ordered type,
# so it is REPARAMETERISED: mu1 free, delta = mu2 - mu1 > 0 (Jacobian 1; bbvi's
# log transform of delta is Stan's mu_2 = u_1 + exp(u_2)).
# mu_k ~ N(0, 2), sigma_k ~ half-N(0, 2), theta ~ Beta(5, 5).
mix_terms <- function(theta, data, grad = FALSE) {
  S <- length(theta$mu1); sg <- as_rows(theta$sigma, S)
  m1 <- theta$mu1; m2 <- theta$mu1 + theta$delta; w <- theta$theta
  Y <- matrix(data$y, S, data$N, byrow = TRUE)
  z1 <- (Y - m1) / sg[, 1]; z2 <- (Y - m2) / sg[, 2]
  la <- log(w) - log(sg[, 1]) - 0.5 * z1^2
  lb <- log1p(-w) - log(sg[, 2]) - 0.5 * z2^2
  mx <- pmax(la, lb)
  lse <- mx + log(exp(la - mx) + exp(lb - mx))
  prior <- -(m1^2 + m2^2) / 8 - rowSums(sg^2) / 8 + 4 * log(w) + 4 * log1p(-w)
  if (!grad) return(rowSums(lse) + prior)
  r1 <- exp(la - lse); r2 <- 1 - r1
  g1 <- rowSums(r1 * z1) / sg[, 1] - m1 / 4
  g2 <- rowSums(r2 * z2) / sg[, 2] - m2 / 4
  gs <- cbind(rowSums(r1 * (z1^2 - 1)) / sg[, 1], rowSums(r2 * (z2^2 - 1)) / sg[, 2]) - sg / 4
  gw <- rowSums(r1) / w - rowSums(r2) / (1 - w) + 4 / w - 4 / (1 - w)
  list(mu1 = g1 + g2, delta = g2, sigma = gs, theta = gw)
}
custom_models$low_dim_gauss_mix <- list(
  posterior = "low_dim_gauss_mix-low_dim_gauss_mix",
  stan = stan_code$low_dim_gauss_mix,
  stan_data = function(d) d,
  data = function(d) d,
  parameters = list(mu1 = param(), delta = param(lower = 0), sigma = param(dim = 2, lower = 0),
                    theta = param(lower = 0, upper = 1)),
  logjoint = function(theta, data) mix_terms(theta, data),
  gradient = function(theta, data) mix_terms(theta, data, grad = TRUE),
  to_ref = function(dr) cbind("mu[1]" = dr[, "mu1"], "mu[2]" = dr[, "mu1"] + dr[, "delta"],
                              dr[, c("sigma[1]", "sigma[2]")], theta = dr[, "theta"])
)

# gp: f = L(alpha, rho) f_tilde per draw
gp_to_ref <- function(D2) function(dr) {
  ft <- dr[, sprintf("f_tilde[%d]", 1:11), drop = FALSE]
  f <- t(vapply(seq_len(nrow(dr)), function(i) {
    drop(gp_chol(dr[i, "rho"], dr[i, "alpha"], D2)$L %*% ft[i, ])
  }, numeric(11)))
  colnames(f) <- sprintf("f[%d]", 1:11)
  cbind(rho = dr[, "rho"], alpha = dr[, "alpha"], f)
}
