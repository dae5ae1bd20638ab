# Model definitions for bench/bench_custom.R (issue 9): the posteriordb
# posteriors that are not plain GLMs, each as
#   - an R log-joint for bbvi_model(vectorized = TRUE), with its gradient,
#     written on the constrained scale without the Jacobian (bbvi adds it),
#     i.e. the density of the Stan program's model block;
#   - the Stan program (rstan 2.21 syntax, as in posteriordb);
#   - converters from a fit's draws to the reference columns.
# Each entry: posterior (folder name), params (bbvi parameter list), logjoint,
# gradient, prep(d) (data for the R functions), stan, stan_data(d),
# bbvi_draws(M) and stan_draws(fit) (matrices with the reference's columns).
#
# Reparameterisations (each is exactly the Stan model's own transform, so the
# bbvi posterior on the unconstrained scale is the same as Stan's):
#   garch11: beta1 = (1 - alpha1) * beta1_frac, beta1_frac in (0, 1); the flat
#     prior on the triangle becomes density (1 - alpha1) in (alpha1,
#     beta1_frac): the log-joint adds log(1 - alpha1).
#   low_dim_gauss_mix: mu[2] = mu[1] + mu_gap, mu_gap > 0 (Jacobian 1; bbvi's
#     log transform of mu_gap is Stan's ordered transform).

# Vector parameters arrive as S x dim matrices; be safe for S = 1.
as_mat <- function(x, dim) if (is.matrix(x)) x else matrix(x, ncol = dim)

stan_cols <- function(fit, cols) {
  M <- as.matrix(fit)
  M[, cols, drop = FALSE]
}

# S copies of a data vector as the rows of an S x length matrix
rows_of <- function(x, S) matrix(x, S, length(x), byrow = TRUE)

custom_models <- list()

## eight schools, centred ----------------------------------------------------
custom_models$eight_schools_centered <- list(
  posterior = "eight_schools-eight_schools_centered",
  prep = function(d) list(y = d$y, sigma = d$sigma, J = d$J),
  params = list(mu = param(), tau = param(lower = 0), theta = param(dim = 8)),
  logjoint = function(p, d) {
    th <- as_mat(p$theta, d$J); S <- nrow(th)
    Y <- rows_of(d$y, S); Sg <- rows_of(d$sigma, S)
    dev <- th - p$mu
    -p$mu^2 / 50 - log1p((p$tau / 5)^2) - d$J * log(p$tau) -
      rowSums(dev^2) / (2 * p$tau^2) - rowSums((Y - th)^2 / (2 * Sg^2))
  },
  gradient = function(p, d) {
    th <- as_mat(p$theta, d$J); S <- nrow(th)
    Y <- rows_of(d$y, S); Sg <- rows_of(d$sigma, S)
    dev <- th - p$mu
    list(mu = -p$mu / 25 + rowSums(dev) / p$tau^2,
         tau = -2 * p$tau / (25 + p$tau^2) - d$J / p$tau + rowSums(dev^2) / p$tau^3,
         theta = -dev / p$tau^2 + (Y - th) / Sg^2)
  },
  stan = "
data { int<lower=0> J; real y[J]; real<lower=0> sigma[J]; }
parameters { real mu; real<lower=0> tau; real theta[J]; }
model {
  mu ~ normal(0, 5);
  tau ~ cauchy(0, 5);
  theta ~ normal(mu, tau);
  y ~ normal(theta, sigma);
}",
  stan_data = function(d) d[c("J", "y", "sigma")],
  bbvi_draws = function(M) M[, c(paste0("theta[", 1:8, "]"), "mu", "tau")],
  stan_draws = function(fit) stan_cols(fit, c(paste0("theta[", 1:8, "]"), "mu", "tau"))
)

## eight schools, non-centred ------------------------------------------------
custom_models$eight_schools_noncentered <- list(
  posterior = "eight_schools-eight_schools_noncentered",
  prep = function(d) list(y = d$y, sigma = d$sigma, J = d$J),
  params = list(mu = param(), tau = param(lower = 0), theta_trans = param(dim = 8)),
  logjoint = function(p, d) {
    tt <- as_mat(p$theta_trans, d$J); S <- nrow(tt)
    Y <- rows_of(d$y, S); Sg <- rows_of(d$sigma, S)
    r <- Y - p$mu - p$tau * tt
    -rowSums(tt^2) / 2 - p$mu^2 / 50 - log1p((p$tau / 5)^2) - rowSums(r^2 / (2 * Sg^2))
  },
  gradient = function(p, d) {
    tt <- as_mat(p$theta_trans, d$J); S <- nrow(tt)
    Y <- rows_of(d$y, S); Sg <- rows_of(d$sigma, S)
    r <- (Y - p$mu - p$tau * tt) / Sg^2
    list(mu = -p$mu / 25 + rowSums(r),
         tau = -2 * p$tau / (25 + p$tau^2) + rowSums(r * tt),
         theta_trans = -tt + p$tau * r)
  },
  stan = "
data { int<lower=0> J; real y[J]; real<lower=0> sigma[J]; }
parameters { vector[J] theta_trans; real mu; real<lower=0> tau; }
transformed parameters { vector[J] theta = mu + tau * theta_trans; }
model {
  theta_trans ~ normal(0, 1);
  y ~ normal(theta, sigma);
  mu ~ normal(0, 5);
  tau ~ cauchy(0, 5);
}",
  stan_data = function(d) d[c("J", "y", "sigma")],
  bbvi_draws = function(M) {
    tt <- M[, paste0("theta_trans[", 1:8, "]")]
    th <- M[, "mu"] + M[, "tau"] * tt
    colnames(th) <- paste0("theta[", 1:8, "]")
    cbind(th, mu = M[, "mu"], tau = M[, "tau"])
  },
  stan_draws = function(fit) stan_cols(fit, c(paste0("theta[", 1:8, "]"), "mu", "tau"))
)

## arK: AR(5) -------------------------------------------------------------------
custom_models$arK <- list(
  posterior = "arK-arK",
  prep = function(d) {
    K <- d$K; T <- d$T; y <- d$y
    X <- sapply(1:K, function(k) y[(K + 1 - k):(T - k)])  # X[t, k] = y[t - k]
    list(K = K, yy = y[(K + 1):T], X = X, n = T - K)
  },
  params = list(alpha = param(), beta = param(dim = 5), sigma = param(lower = 0)),
  logjoint = function(p, d) {
    B <- as_mat(p$beta, d$K); S <- nrow(B)
    R <- matrix(d$yy, S, d$n, byrow = TRUE) - p$alpha - B %*% t(d$X)
    -p$alpha^2 / 200 - rowSums(B^2) / 200 - log1p((p$sigma / 2.5)^2) -
      d$n * log(p$sigma) - rowSums(R^2) / (2 * p$sigma^2)
  },
  gradient = function(p, d) {
    B <- as_mat(p$beta, d$K); S <- nrow(B)
    R <- matrix(d$yy, S, d$n, byrow = TRUE) - p$alpha - B %*% t(d$X)
    s2 <- p$sigma^2
    list(alpha = -p$alpha / 100 + rowSums(R) / s2,
         beta = -B / 100 + (R %*% d$X) / s2,
         sigma = -2 * p$sigma / (6.25 + s2) - d$n / p$sigma + rowSums(R^2) / p$sigma^3)
  },
  stan = "
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
  stan_data = function(d) d[c("K", "T", "y")],
  bbvi_draws = function(M) M[, c("alpha", paste0("beta[", 1:5, "]"), "sigma")],
  stan_draws = function(fit) stan_cols(fit, c("alpha", paste0("beta[", 1:5, "]"), "sigma"))
)

## arma11 -------------------------------------------------------------------------
# err_1 = y_1 - mu (1 + phi); err_t = y_t - mu - phi y_{t-1} - theta err_{t-1};
# the gradient by forward sensitivities of err_t, vectorized over draws
# (one pass over t with length-S vectors).
arma_err <- function(p, y, grad = FALSE) {
  # returns sum(err^2) and, with grad, sum(err * d err / d(mu, phi, theta))
  T <- length(y)
  e <- y[1] - p$mu * (1 + p$phi)
  ss <- e^2
  if (grad) {
    dm <- -(1 + p$phi); dp <- -p$mu; dt <- 0 * p$mu
    sm <- e * dm; sp <- e * dp; st <- 0 * p$mu
  }
  for (t in 2:T) {
    if (grad) {
      dm <- -1 - p$theta * dm
      dp <- -y[t - 1] - p$theta * dp
      dt <- -e - p$theta * dt
    }
    e <- y[t] - p$mu - p$phi * y[t - 1] - p$theta * e
    ss <- ss + e^2
    if (grad) {
      sm <- sm + e * dm; sp <- sp + e * dp; st <- st + e * dt
    }
  }
  if (grad) list(ss = ss, sm = sm, sp = sp, st = st) else ss
}
custom_models$arma11 <- list(
  posterior = "arma-arma11",
  prep = function(d) list(y = d$y, T = d$T),
  params = list(mu = param(), phi = param(), theta = param(), sigma = param(lower = 0)),
  logjoint = function(p, d) {
    ss <- arma_err(p, d$y)
    -p$mu^2 / 200 - p$phi^2 / 8 - p$theta^2 / 8 - log1p((p$sigma / 2.5)^2) -
      d$T * log(p$sigma) - ss / (2 * p$sigma^2)
  },
  gradient = function(p, d) {
    g <- arma_err(p, d$y, grad = TRUE)
    s2 <- p$sigma^2
    list(mu = -p$mu / 100 - g$sm / s2,
         phi = -p$phi / 4 - g$sp / s2,
         theta = -p$theta / 4 - g$st / s2,
         sigma = -2 * p$sigma / (6.25 + s2) - d$T / p$sigma + g$ss / p$sigma^3)
  },
  stan = "
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
  stan_data = function(d) d[c("T", "y")],
  bbvi_draws = function(M) M[, c("mu", "phi", "theta", "sigma")],
  stan_draws = function(fit) stan_cols(fit, c("mu", "phi", "theta", "sigma"))
)

## garch11 ------------------------------------------------------------------------
# beta1 = (1 - alpha1) * beta1_frac (see the header). s2_t = s_t^2.
garch_lp <- function(p, d, grad = FALSE) {
  y <- d$y; T <- length(y); S <- length(p$mu)
  a0 <- p$alpha0; a1 <- p$alpha1; b1 <- (1 - a1) * p$beta1_frac
  s2 <- rep(d$sigma1^2, S)
  e <- y[1] - p$mu
  lp <- -0.5 * log(s2) - e^2 / (2 * s2) + log1p(-a1)
  if (grad) {
    gmu <- e / s2
    d0 <- d1 <- db <- dm <- rep(0, S)            # d s2_t / d(alpha0, alpha1, beta1, mu)
    g0 <- g1 <- gb <- rep(0, S)
  }
  for (t in 2:T) {
    ep <- y[t - 1] - p$mu
    if (grad) {
      d0 <- 1 + b1 * d0
      d1 <- ep^2 + b1 * d1
      db <- s2 + b1 * db
      dm <- -2 * a1 * ep + b1 * dm
    }
    s2 <- a0 + a1 * ep^2 + b1 * s2
    e <- y[t] - p$mu
    lp <- lp - 0.5 * log(s2) - e^2 / (2 * s2)
    if (grad) {
      gs <- -0.5 / s2 + e^2 / (2 * s2^2)         # d lp / d s2_t
      gmu <- gmu + e / s2 + gs * dm
      g0 <- g0 + gs * d0; g1 <- g1 + gs * d1; gb <- gb + gs * db
    }
  }
  if (!grad) return(lp)
  # log p comes with the gradient (attribute "logjoint", see ?bbvi_model):
  # the fit then runs the recursion once per gradient evaluation
  structure(list(mu = gmu, alpha0 = g0,
                 alpha1 = g1 - gb * p$beta1_frac - 1 / (1 - a1),
                 beta1_frac = gb * (1 - a1)),
            logjoint = lp)
}
custom_models$garch11 <- list(
  posterior = "garch-garch11",
  prep = function(d) list(y = d$y, sigma1 = d$sigma1),
  params = list(mu = param(), alpha0 = param(lower = 0),
                alpha1 = param(lower = 0, upper = 1),
                beta1_frac = param(lower = 0, upper = 1)),
  logjoint = function(p, d) garch_lp(p, d),
  gradient = function(p, d) garch_lp(p, d, grad = TRUE),
  stan = "
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
  stan_data = function(d) d[c("T", "y", "sigma1")],
  bbvi_draws = function(M) cbind(mu = M[, "mu"], alpha0 = M[, "alpha0"], alpha1 = M[, "alpha1"],
                                 beta1 = (1 - M[, "alpha1"]) * M[, "beta1_frac"]),
  stan_draws = function(fit) stan_cols(fit, c("mu", "alpha0", "alpha1", "beta1"))
)

## gp_pois_regr -------------------------------------------------------------------
# f = L f_tilde, L = chol(alpha^2 exp(-D2 / (2 rho^2)) + 1e-10 I). The gradient
# through the Cholesky factor: dL = L Phi(L^-1 dC L^-T) (Phi: lower triangle,
# half the diagonal). One Cholesky per draw (N = 11).
gp_chol <- function(rho, alpha, D2) {
  K <- exp(-D2 / (2 * rho^2))
  C <- alpha^2 * K
  diag(C) <- diag(C) + 1e-10
  list(L = t(chol(C)), K = K)
}
gp_dL <- function(L, dC) {
  Li_dC <- forwardsolve(L, dC)
  M <- t(forwardsolve(L, t(Li_dC)))           # L^-1 dC L^-T
  M[upper.tri(M)] <- 0
  diag(M) <- diag(M) / 2
  L %*% M
}
custom_models$gp_pois_regr <- list(
  posterior = "gp_pois_regr-gp_pois_regr",
  prep = function(d) list(N = d$N, k = d$k, D2 = outer(d$x, d$x, "-")^2),
  params = list(rho = param(lower = 0), alpha = param(lower = 0), f_tilde = param(dim = 11)),
  logjoint = function(p, d) {
    ft <- as_mat(p$f_tilde, d$N); S <- nrow(ft)
    ll <- numeric(S)
    for (s in seq_len(S)) {
      f <- drop(gp_chol(p$rho[s], p$alpha[s], d$D2)$L %*% ft[s, ])
      ll[s] <- sum(d$k * f - exp(f))
    }
    24 * log(p$rho) - 4 * p$rho - p$alpha^2 / 8 - rowSums(ft^2) / 2 + ll
  },
  gradient = function(p, d) {
    ft <- as_mat(p$f_tilde, d$N); S <- nrow(ft)
    g_rho <- g_alpha <- ll <- numeric(S); g_ft <- matrix(0, S, d$N)
    for (s in seq_len(S)) {
      rho <- p$rho[s]; alpha <- p$alpha[s]; v <- ft[s, ]
      ch <- gp_chol(rho, alpha, d$D2); L <- ch$L
      f <- drop(L %*% v)
      ll[s] <- sum(d$k * f - exp(f))
      gf <- d$k - exp(f)
      g_ft[s, ] <- drop(crossprod(L, gf))
      dC_rho <- alpha^2 * ch$K * d$D2 / rho^3
      dC_alpha <- 2 * alpha * ch$K
      g_rho[s] <- sum(gf * (gp_dL(L, dC_rho) %*% v))
      g_alpha[s] <- sum(gf * (gp_dL(L, dC_alpha) %*% v))
    }
    # log p too (one Cholesky per draw instead of two; see ?bbvi_model)
    structure(list(rho = 24 / p$rho - 4 + g_rho, alpha = -p$alpha / 4 + g_alpha, f_tilde = g_ft - ft),
              logjoint = 24 * log(p$rho) - 4 * p$rho - p$alpha^2 / 8 - rowSums(ft^2) / 2 + ll)
  },
  stan = "
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
  stan_data = function(d) d[c("N", "x", "k")],
  bbvi_draws = function(M) {
    D2 <- outer(seq(-10, 10, by = 2), seq(-10, 10, by = 2), "-")^2
    ft <- M[, paste0("f_tilde[", 1:11, "]")]
    f <- t(vapply(seq_len(nrow(M)), function(s)
      drop(gp_chol(M[s, "rho"], M[s, "alpha"], D2)$L %*% ft[s, ]), numeric(11)))
    colnames(f) <- paste0("f[", 1:11, "]")
    cbind(rho = M[, "rho"], alpha = M[, "alpha"], f)
  },
  stan_draws = function(fit) stan_cols(fit, c("rho", "alpha", paste0("f[", 1:11, "]")))
)

## low_dim_gauss_mix ----------------------------------------------------------------
# mu[2] = mu1 + mu_gap, mu_gap > 0 (see the header).
gmix <- function(p, d, grad = FALSE) {
  sg <- as_mat(p$sigma, 2); S <- nrow(sg); N <- length(d$y)
  mu1 <- p$mu1; mu2 <- p$mu1 + p$mu_gap; th <- p$theta
  Y <- matrix(d$y, S, N, byrow = TRUE)
  z1 <- (Y - mu1) / sg[, 1]; z2 <- (Y - mu2) / sg[, 2]
  l1 <- log(th) - log(sg[, 1]) - z1^2 / 2
  l2 <- log1p(-th) - log(sg[, 2]) - z2^2 / 2
  m <- pmax(l1, l2)
  ll <- m + log(exp(l1 - m) + exp(l2 - m))
  lp <- -mu1^2 / 8 - mu2^2 / 8 - rowSums(sg^2) / 8 + 4 * log(th) + 4 * log1p(-th) + rowSums(ll)
  if (!grad) return(lp)
  w1 <- exp(l1 - ll); w2 <- 1 - w1
  g1 <- rowSums(w1 * z1) / sg[, 1] - mu1 / 4
  g2 <- rowSums(w2 * z2) / sg[, 2] - mu2 / 4
  list(mu1 = g1 + g2, mu_gap = g2,
       sigma = cbind(rowSums(w1 * (z1^2 - 1)) / sg[, 1],
                     rowSums(w2 * (z2^2 - 1)) / sg[, 2]) - sg / 4,
       theta = rowSums(w1) / th - rowSums(w2) / (1 - th) + 4 / th - 4 / (1 - th))
}
custom_models$low_dim_gauss_mix <- list(
  posterior = "low_dim_gauss_mix-low_dim_gauss_mix",
  prep = function(d) list(y = d$y),
  params = list(mu1 = param(), mu_gap = param(lower = 0), sigma = param(dim = 2, lower = 0),
                theta = param(lower = 0, upper = 1)),
  logjoint = function(p, d) gmix(p, d),
  gradient = function(p, d) gmix(p, d, grad = TRUE),
  stan = "
data { int<lower=0> N; vector[N] y; }
parameters { ordered[2] mu; real<lower=0> sigma[2]; real<lower=0, upper=1> theta; }
model {
  sigma ~ normal(0, 2);
  mu ~ normal(0, 2);
  theta ~ beta(5, 5);
  for (n in 1:N)
    target += log_mix(theta, normal_lpdf(y[n] | mu[1], sigma[1]),
                      normal_lpdf(y[n] | mu[2], sigma[2]));
}",
  stan_data = function(d) d[c("N", "y")],
  bbvi_draws = function(M) cbind(`mu[1]` = M[, "mu1"], `mu[2]` = M[, "mu1"] + M[, "mu_gap"],
                                 `sigma[1]` = M[, "sigma[1]"], `sigma[2]` = M[, "sigma[2]"],
                                 theta = M[, "theta"]),
  stan_draws = function(fit) stan_cols(fit, c("mu[1]", "mu[2]", "sigma[1]", "sigma[2]", "theta"))
)

## garch11 with the dependent bound as "outside the support" --------------------
# The other route the package documents: declare beta1 in (0, 1) and return
# -Inf where alpha1 + beta1 >= 1 (the gradient is NA there). Same posterior
# as garch11; Stan rows are not repeated for it (stan_same_as).
garch_inf_lp <- function(p, d, grad = FALSE) {
  S <- length(p$mu); ok <- p$alpha1 + p$beta1 < 1
  frac <- p$beta1 / (1 - p$alpha1)
  sub <- function(x) x[ok]
  q <- list(mu = sub(p$mu), alpha0 = sub(p$alpha0), alpha1 = sub(p$alpha1),
            beta1_frac = sub(frac))
  if (!grad) {
    out <- rep(-Inf, S)
    if (any(ok)) out[ok] <- garch_lp(q, d) - log1p(-q$alpha1)
    return(out)
  }
  g <- list(mu = rep(NA_real_, S), alpha0 = rep(NA_real_, S),
            alpha1 = rep(NA_real_, S), beta1 = rep(NA_real_, S))
  lp <- rep(-Inf, S)
  if (any(ok)) {
    a1 <- q$alpha1; fr <- q$beta1_frac
    h <- garch_lp(q, d, grad = TRUE)         # gradient in (alpha1, beta1_frac), with log(1 - alpha1)
    gb <- h$beta1_frac / (1 - a1)            # d lp / d beta1
    g$mu[ok] <- h$mu; g$alpha0[ok] <- h$alpha0
    g$alpha1[ok] <- h$alpha1 + gb * fr + 1 / (1 - a1)
    g$beta1[ok] <- gb
    lp[ok] <- attr(h, "logjoint") - log1p(-a1)
  }
  structure(g, logjoint = lp)
}
custom_models$garch11_inf <- list(
  posterior = "garch-garch11",
  prep = custom_models$garch11$prep,
  params = list(mu = param(), alpha0 = param(lower = 0),
                alpha1 = param(lower = 0, upper = 1), beta1 = param(lower = 0, upper = 1)),
  logjoint = function(p, d) garch_inf_lp(p, d),
  gradient = function(p, d) garch_inf_lp(p, d, grad = TRUE),
  stan_same_as = "garch11",
  bbvi_draws = function(M) M[, c("mu", "alpha0", "alpha1", "beta1")]
)
