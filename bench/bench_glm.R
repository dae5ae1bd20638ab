# Benchmark: bbvi's formula GLMs against Stan's ADVI (rstan::vb, meanfield and
# fullrank, default settings) and NUTS, in one run.
#
#   Rscript bench/bench_glm.R [path/to/shared/posteriordb]   (from the package root)
#
# Needs the installed bbvi, rstan, MASS and jsonlite. Reports for each case
# and method: wall time (s), max |mean error| in reference-sd units and the
# median sd ratio (fit / reference). References: posteriordb's NUTS draws for
# the posteriordb cases; a NUTS run here for Pima.tr and the synthetic
# logistic regression. Stan's compile time is excluded and reported apart.
# Set BENCH_QUICK=1 to skip the N = 100,000 NUTS reference (that case is
# then scored against the Laplace approximation at glm()'s estimate);
# BENCH_CASES=a,b to run only some cases.
suppressPackageStartupMessages({
  library(bbvi); library(rstan); library(MASS); library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
pdb <- if (length(args)) args[1] else "../shared/posteriordb"
quick <- nzchar(Sys.getenv("BENCH_QUICK"))
rstan_options(auto_write = TRUE)
options(mc.cores = 2)

stan_code <- "
data {
  int<lower=0> N; int<lower=1> P; int<lower=0, upper=2> family;
  matrix[N, P] X; vector[N] y; int yi[N]; int trials[N]; vector[N] off;
  int ptype[P]; matrix[3, P] ppar; int atype; vector[3] apar;
}
parameters { vector[P] beta; real<lower=0> sigma[family == 0 ? 1 : 0]; }
model {
  vector[N] eta = X * beta + off;
  for (j in 1:P) {
    if (ptype[j] == 1) beta[j] ~ normal(ppar[1, j], ppar[2, j]);
    else if (ptype[j] == 2) beta[j] ~ student_t(ppar[3, j], ppar[1, j], ppar[2, j]);
  }
  if (family == 0) {
    if (atype == 1) sigma[1] ~ normal(apar[1], apar[2]);
    else if (atype == 2) sigma[1] ~ student_t(apar[3], apar[1], apar[2]);
    else if (atype == 3) sigma[1] ~ exponential(apar[1]);
    y ~ normal(eta, sigma[1]);
  } else if (family == 1) {
    yi ~ binomial_logit(trials, eta);
  } else {
    yi ~ poisson_log(eta);
  }
}
"
t_compile <- system.time(sm <- stan_model(model_code = stan_code))[["elapsed"]]
cat(sprintf("Stan model compile time: %.1f s (excluded below)\n", t_compile))

# Stan data from the same spec bbvi builds, so the two fit the same posterior.
stan_data <- function(spec) {
  t <- spec$model$target
  N <- nrow(t$X); P <- ncol(t$X)
  list(N = N, P = P, family = t$family, X = unname(t$X), y = t$y,
       yi = as.integer(round(t$y)),
       trials = as.integer(round(bbvi:::glm_tg_vec(t, "trials"))),
       off = bbvi:::glm_tg_vec(t, "offset"), ptype = t$prior_type, ppar = matrix(t$prior_par, 3, P),
       atype = t$aux_type, apar = t$aux_par)
}
stan_summ <- function(draws, P, gaussian) {
  m <- cbind(draws$beta, if (gaussian) draws$sigma)
  list(mean = colMeans(m), sd = apply(m, 2, sd))
}
run_stan <- function(how, sd, P, gaussian, nuts_iter = 2000, chains = 4) {
  t <- system.time(fit <- suppressWarnings(suppressMessages(switch(how,
    meanfield = vb(sm, data = sd, algorithm = "meanfield", seed = 1, refresh = 0),
    fullrank = vb(sm, data = sd, algorithm = "fullrank", seed = 1, refresh = 0),
    nuts = sampling(sm, data = sd, seed = 1, refresh = 0, iter = nuts_iter,
                    chains = chains)))))[["elapsed"]]
  s <- stan_summ(rstan::extract(fit), P, gaussian)
  c(s, time = t)
}
bbvi_summ <- function(fit) {
  mom <- bbvi:::marginal_moments(fit)
  list(mean = unname(mom$mean), sd = unname(mom$sd), time = fit$time_total)
}
run_bbvi <- function(cs, method) {
  t <- system.time(fit <- bbvi(cs$formula, data = cs$data, family = cs$family,
                               prior = cs$prior, prior_intercept = cs$prior_intercept,
                               prior_aux = cs$prior_aux, method = method, seed = 1))[["elapsed"]]
  fit$time_total <- t
  bbvi_summ(fit)
}
score <- function(s, ref) {
  c(time = s$time, max_err = max(abs(s$mean - ref$mean) / ref$sd),
    med_sd_ratio = median(s$sd / ref$sd))
}

# ---- cases ---------------------------------------------------------------
rd <- function(name) fromJSON(file.path(pdb, name, "data.json"))
refcsv <- function(name) {
  r <- read.csv(file.path(pdb, name, "reference.csv"))
  list(mean = r$mean, sd = r$sd)
}
cases <- list()
d <- rd("kidiq-kidscore_interaction")
cases$kidiq <- list(formula = kid_score ~ mom_hs * mom_iq, data = as.data.frame(d[c("kid_score", "mom_hs", "mom_iq")]),
  family = gaussian(), prior = NULL, prior_intercept = NULL, prior_aux = cauchy(0, 2.5),
  ref = refcsv("kidiq-kidscore_interaction"))
d <- rd("earnings-logearn_interaction_z")
dd <- data.frame(earn = d$earn, male = d$male, z = (d$height - mean(d$height)) / sd(d$height))
cases$earnings <- list(formula = log(earn) ~ z * male, data = dd, family = gaussian(),
  prior = NULL, prior_intercept = NULL, prior_aux = NULL, ref = refcsv("earnings-logearn_interaction_z"))
d <- rd("mesquite-logmesquite_logvash")
cases$mesquite <- list(formula = log(weight) ~ log(diam1 * diam2 * canopy_height) + log(diam1 * diam2) +
  log(diam1 / diam2) + log(total_height) + group, data = as.data.frame(d[c("weight", "diam1", "diam2", "canopy_height", "total_height", "group")]),
  family = gaussian(), prior = NULL, prior_intercept = NULL, prior_aux = NULL,
  ref = refcsv("mesquite-logmesquite_logvash"))
for (nm in c("sblrc", "sblri")) {
  d <- rd(paste0(nm, "-blr")); X <- d$X; colnames(X) <- paste0("x", 1:5)
  cases[[nm]] <- list(formula = y ~ 0 + x1 + x2 + x3 + x4 + x5, data = data.frame(y = d$y, X),
    family = gaussian(), prior = normal(0, 10), prior_intercept = NULL, prior_aux = normal(0, 10),
    ref = refcsv(paste0(nm, "-blr")))
}
d <- rd("kilpisjarvi_mod-kilpisjarvi")
cases$kilpisjarvi <- list(formula = y ~ x, data = data.frame(x = d$x, y = d$y), family = gaussian(),
  prior = normal(d$pmubeta, d$psbeta), prior_intercept = normal(d$pmualpha, d$psalpha),
  prior_aux = NULL, ref = refcsv("kilpisjarvi_mod-kilpisjarvi"))
d <- rd("diamonds-diamonds")
Xc <- scale(d$X[, -1], center = TRUE, scale = FALSE)
dd <- data.frame(Y = d$Y); dd$Xc <- unname(Xc)
r <- refcsv("diamonds-diamonds")   # b[1..24], Intercept, sigma -> (Intercept) first
cases$diamonds <- list(formula = Y ~ Xc, data = dd, family = gaussian(),
  prior = normal(0, 1), prior_intercept = student_t(3, 8, 10), prior_aux = student_t(3, 0, 10),
  ref = list(mean = r$mean[c(25, 1:24, 26)], sd = r$sd[c(25, 1:24, 26)]))
pima <- MASS::Pima.tr
cases$pima <- list(formula = type ~ ., data = pima, family = binomial(), prior = normal(0, 2.5),
  prior_intercept = normal(0, 10), prior_aux = NULL, ref = NULL)
set.seed(2024)
N <- 1e5; P <- 50
Xs <- matrix(rnorm(N * P), N, P)
ys <- rbinom(N, 1, plogis(-0.5 + Xs %*% rnorm(P, 0, 0.2)))
cases$logistic_1e5x50 <- list(formula = y ~ ., data = data.frame(y = ys, Xs), family = binomial(),
  prior = normal(0, 2.5), prior_intercept = normal(0, 10), prior_aux = NULL, ref = NULL,
  nuts_iter = 600, chains = 2)

# BENCH_CASES=pima,logistic_1e5x50 runs only those cases
only <- strsplit(Sys.getenv("BENCH_CASES"), ",")[[1]]
if (length(only)) cases <- cases[names(cases) %in% only]
# Without a NUTS run, the N = 100,000 case is scored against the Laplace
# approximation at glm()'s estimate (the priors are negligible there, and the
# posterior is close to Gaussian): a reference that is not bbvi's own.
laplace_ref <- function(cs) {
  g <- stats::glm(cs$formula, data = cs$data, family = cs$family)
  list(mean = unname(coef(g)), sd = unname(sqrt(diag(vcov(g)))))
}

rows <- list()
for (nm in names(cases)) {
  cs <- cases[[nm]]
  setup <- bbvi:::glm_setup(cs$formula, cs$data, cs$family, cs$prior, cs$prior_intercept, cs$prior_aux)
  sd <- stan_data(setup)
  P <- ncol(setup$model$target$X); gaussian <- cs$family$family == "gaussian"
  cat(sprintf("\n== %s (N = %d, parameters = %d)\n", nm, nrow(sd$X), P + gaussian))
  res <- list()
  res$bbvi_meanfield <- run_bbvi(cs, "meanfield")
  res$bbvi_fullrank <- run_bbvi(cs, "fullrank")
  res["advi_meanfield"] <- list(tryCatch(run_stan("meanfield", sd, P, gaussian), error = function(e) NULL))
  res["advi_fullrank"] <- list(tryCatch(run_stan("fullrank", sd, P, gaussian), error = function(e) NULL))
  skip_nuts <- quick && nm == "logistic_1e5x50"
  if (!skip_nuts) {
    res$nuts <- run_stan("nuts", sd, P, gaussian, nuts_iter = if (is.null(cs$nuts_iter)) 2000 else cs$nuts_iter,
                         chains = if (is.null(cs$chains)) 4 else cs$chains)
  }
  ref <- if (!is.null(cs$ref)) cs$ref else res$nuts
  if (is.null(ref)) ref <- laplace_ref(cs)   # BENCH_QUICK only: no NUTS reference
  for (m in names(res)) {
    if (is.null(res[[m]])) {   # the fit stopped with an error: keep it as a row
      rows[[length(rows) + 1]] <- data.frame(case = nm, method = m, time = NA, max_err = NA, med_sd_ratio = NA)
      next
    }
    sc <- score(res[[m]], ref)
    rows[[length(rows) + 1]] <- data.frame(case = nm, method = m, time = sc[["time"]],
      max_err = sc[["max_err"]], med_sd_ratio = sc[["med_sd_ratio"]])
  }
  print(do.call(rbind, rows[(length(rows) - length(res) + 1):length(rows)]), digits = 3, row.names = FALSE)
}
tab <- do.call(rbind, rows)
cat("\n== All cases (time in s; max_err = max |mean - ref mean| / ref sd; med_sd_ratio = median sd / ref sd)\n")
print(tab, digits = 3, row.names = FALSE)

cat("\n== Time vs N (p = 20, logistic, bbvi default = meanfield quadrature; total wall time of bbvi())\n")
Ns <- c(1e3, 1e4, 1e5, 1e6)
sc <- data.frame()
for (n in Ns) {
  set.seed(1)
  X <- matrix(rnorm(n * 20), n, 20)
  y <- rbinom(n, 1, plogis(X %*% rnorm(20, 0, 0.3)))
  dat <- data.frame(y = y, X)
  t <- system.time(f <- bbvi(y ~ ., dat, family = binomial()))[["elapsed"]]
  sc <- rbind(sc, data.frame(N = n, time = t, fit_time = f$time, iterations = f$iterations,
                             us_per_obs = 1e6 * t / n))
}
print(sc, digits = 3, row.names = FALSE)
cat(sprintf("\nMachine: %s, %d cores, R %s, %s; %s\n", Sys.info()[["nodename"]],
            parallel::detectCores(), getRversion(), La_library(), format(Sys.time())))
