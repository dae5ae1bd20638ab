# Benchmark: minibatch VI for a custom model (bbvi_model(loglik =,
# logprior =, n =)) against the full-data fit of the same model.
#
#   Rscript bench/bench_minibatch.R                    (N = 1e5 and 1e6)
#   BENCH_N=1e5 Rscript bench/bench_minibatch.R        (some N)
#
# Needs the installed bbvi. A logistic regression with p = 20 coefficients
# (intercept + 19 standard normal predictors, normal(0, 2.5) priors) written
# as a vectorized custom loglik with its gradient. For each N: the
# full-data fit (bbvi(model): mode search, then the fixed-draw L-BFGS path)
# and the minibatch fit (subsample = N / 100, i.e. 100 blocks), both
# mean-field, seed 1, with the diagnostics at 100 draws for both (each is a
# pass over all rows). Reported: seconds of the fit excluding diagnostics
# (mode + optimisation) and of the whole bbvi() call, epochs (minibatch:
# passes over the rows), row evaluations (rows x draws at which loglik and
# its gradient were evaluated; full data: N x the draws of every
# log-joint evaluation of the mode search and the optimisation), the
# largest |difference of means| in the full-data fit's posterior sds, and
# the range of the sd ratios (minibatch / full); and both fits against the
# same posterior's mean-field q computed exactly by the GLM quadrature path
# (bbvi(X, y, family = binomial(), intercept = FALSE, method = "meanfield")
# with the same normal(0, 2.5) priors, no autoscale): the reference that
# says which of the two is closer.
suppressPackageStartupMessages(library(bbvi))

Ns <- as.numeric(strsplit(Sys.getenv("BENCH_N", "1e5,1e6"), ",")[[1]])
p <- 20

logistic_model <- function(N, seed = 1) {
  set.seed(seed)
  X <- cbind(1, matrix(stats::rnorm(N * (p - 1)), N))
  beta <- c(-0.5, stats::rnorm(p - 1, 0, 0.5))
  y <- stats::rbinom(N, 1, stats::plogis(drop(X %*% beta)))
  asm <- function(B) if (is.matrix(B)) B else matrix(B, 1)
  bbvi_model(
    loglik = function(theta, data, idx) {
      eta <- data$X[idx, , drop = FALSE] %*% t(asm(theta$beta))
      colSums(data$y[idx] * eta - log1p(exp(eta)))
    },
    logprior = function(theta) rowSums(stats::dnorm(asm(theta$beta), 0, 2.5, log = TRUE)),
    gradient = list(
      loglik = function(theta, data, idx) {
        Xi <- data$X[idx, , drop = FALSE]
        r <- data$y[idx] - stats::plogis(Xi %*% t(asm(theta$beta)))
        list(beta = t(crossprod(Xi, r)))
      },
      logprior = function(theta) list(beta = -asm(theta$beta) / 2.5^2)),
    parameters = list(beta = param(p)), data = list(X = X, y = y), n = N,
    vectorized = TRUE)
}

# the exact mean-field optimum of the same posterior (GLM quadrature)
exact_fit <- function(m) {
  d <- m$data
  bbvi(d$X, d$y, family = stats::binomial(), intercept = FALSE, method = "meanfield",
       prior = normal(0, 2.5, autoscale = FALSE), seed = 1)
}
vs <- function(ref, f) {
  s0 <- sqrt(diag(vcov(ref)))
  r <- sqrt(diag(vcov(f))) / s0
  c(mean = max(abs(unname(coef(f)) - unname(coef(ref))) / s0), sd = max(abs(log(r))))
}

rows <- list()
options(bbvi.warn_diagnostics = FALSE)   # mean-field q warns on these posteriors; not the point here
for (N in Ns) {
  m <- logistic_model(N)
  t_full <- system.time(full <- bbvi(m, seed = 1, diagnostic_draws = 100))[["elapsed"]]
  t_mb <- system.time(mb <- bbvi(m, subsample = N / 100, seed = 1,
                                 diagnostic_draws = 100))[["elapsed"]]
  ev <- function(f, phases) sum(f$evals$logp[f$evals$phase %in% phases])
  secs <- function(f) sum(f$evals$seconds[f$evals$phase %in% c("mode", "optimisation")])
  s0 <- sqrt(diag(vcov(full)))
  ratio <- sqrt(diag(vcov(mb))) / s0
  ex <- exact_fit(m)
  e_full <- vs(ex, full)
  e_mb <- vs(ex, mb)
  rows[[length(rows) + 1]] <- data.frame(
    N = format(N, scientific = TRUE),
    path = c("full data", sprintf("subsample = %s", format(N / 100, big.mark = ","))),
    fit_s = c(secs(full), secs(mb)),
    total_s = c(t_full, t_mb),
    epochs = c(NA, mb$epochs),
    row_evals = c(N * ev(full, c("mode", "optimisation")), mb$minibatch$row_evals),
    max_mean_diff_sd = c(NA, max(abs(coef(mb) - coef(full)) / s0)),
    sd_ratio = c(NA, sprintf("%.4f-%.4f", min(ratio), max(ratio))),
    exact_mean_sd = c(e_full[["mean"]], e_mb[["mean"]]),
    exact_logsd = c(e_full[["sd"]], e_mb[["sd"]]),
    converged = c(full$converged, mb$converged))
  print(rows[[length(rows)]])
}
res <- do.call(rbind, rows)
cat("\n| N | path | fit s | total s | epochs | row evaluations | max mean diff (sd) | sd ratio | vs exact: mean (sd) | vs exact: max abs log sd ratio | converged |\n")
cat("|---|---|---|---|---|---|---|---|---|---|---|\n")
for (i in seq_len(nrow(res))) {
  r <- res[i, ]
  cat(sprintf("| %s | %s | %.1f | %.1f | %s | %s | %s | %s | %.2g | %.2g | %s |\n", r$N, r$path,
              r$fit_s, r$total_s, ifelse(is.na(r$epochs), "", r$epochs),
              format(r$row_evals, big.mark = ",", scientific = FALSE),
              ifelse(is.na(r$max_mean_diff_sd), "", format(signif(r$max_mean_diff_sd, 2))),
              ifelse(is.na(r$sd_ratio), "", r$sd_ratio), r$exact_mean_sd,
              r$exact_logsd, r$converged))
}
