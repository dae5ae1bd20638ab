# NUTS in bbvi against rstan's NUTS on two posteriordb linear regressions:
# effective sample size per second. Run from the package root with bbvi
# installed:
#   Rscript bench/bench_mcmc.R [path/to/posteriordb] [reps]
# Needs rstan (bench only; not a package dependency), jsonlite, posterior.
# Both samplers: 4 chains run one after another, 2000 iterations of which
# 1000 warmup, adapt_delta 0.8, max tree depth 10, diagonal metric. Wall time
# is warmup + sampling of all chains; rstan's compile time is reported
# separately and excluded. ESS is the smallest bulk-ESS over the parameters
# (posterior::ess_bulk for both). Each sampler is run `reps` times with
# different seeds; the table shows medians over reps.
suppressPackageStartupMessages({
  library(bbvi)
  library(rstan)
})
args <- commandArgs(trailingOnly = TRUE)
pdb <- if (length(args) >= 1) args[1] else "../shared/posteriordb"
reps <- if (length(args) >= 2) as.integer(args[2]) else 3L
rstan_options(auto_write = FALSE)
# Debian's r-cran-bh is a virtual package: Boost lives in /usr/include
boost <- if (nzchar(system.file("include", package = "BH"))) NULL else "/usr/include"

options(mc.cores = 1)

read_json <- function(name) jsonlite::fromJSON(file.path(pdb, name, "data.json"))
reference <- function(name) utils::read.csv(file.path(pdb, name, "reference.csv"))

models <- list(
  kidiq = list(
    posterior = "kidiq-kidscore_interaction",
    data = function() {
      d <- read_json("kidiq-kidscore_interaction")
      list(stan = d[c("N", "kid_score", "mom_hs", "mom_iq")],
           df = data.frame(kid_score = d$kid_score, mom_hs = d$mom_hs, mom_iq = d$mom_iq))
    },
    formula = kid_score ~ mom_hs * mom_iq,
    args = list(prior = NULL, prior_intercept = NULL, prior_aux = cauchy(0, 2.5)),
    stan = "
data { int<lower=0> N; vector[N] kid_score; vector[N] mom_hs; vector[N] mom_iq; }
transformed data { vector[N] inter = mom_hs .* mom_iq; }
parameters { vector[4] beta; real<lower=0> sigma; }
model {
  sigma ~ cauchy(0, 2.5);
  kid_score ~ normal(beta[1] + beta[2] * mom_hs + beta[3] * mom_iq + beta[4] * inter, sigma);
}"),
  earnings = list(
    posterior = "earnings-logearn_interaction_z",
    data = function() {
      d <- read_json("earnings-logearn_interaction_z")
      z <- (d$height - mean(d$height)) / sd(d$height)
      list(stan = d[c("N", "earn", "height", "male")],
           df = data.frame(log_earn = log(d$earn), z = z, male = d$male))
    },
    formula = log_earn ~ z * male,
    args = list(prior = NULL, prior_intercept = NULL, prior_aux = NULL),
    stan = "
data { int<lower=0> N; vector[N] earn; vector[N] height; vector[N] male; }
transformed data {
  vector[N] log_earn = log(earn);
  vector[N] z = (height - mean(height)) / sd(height);
  vector[N] inter = z .* male;
}
parameters { vector[4] beta; real<lower=0> sigma; }
model { log_earn ~ normal(beta[1] + beta[2] * z + beta[3] * male + beta[4] * inter, sigma); }")
)

min_ess <- function(arr) {   # iterations x chains x parameters
  min(apply(arr, 3, posterior::ess_bulk))
}
max_z <- function(arr, ref) {   # largest |mean error| in reference sds
  m <- apply(arr, 3, mean)
  max(abs(m - ref$mean) / ref$sd)
}

rows <- list()
for (nm in names(models)) {
  mdl <- models[[nm]]
  dat <- mdl$data()
  ref <- reference(mdl$posterior)
  compile <- system.time(sm <- stan_model(model_code = mdl$stan, model_name = nm,
                                                  boost_lib = boost))[["elapsed"]]
  res <- lapply(seq_len(reps), function(r) {
    mc <- do.call(sample_mcmc, c(list(mdl$formula, data = dat$df), mdl$args,
                                 list(chains = 4, iter = 2000, seed = r)))
    a <- unname(as.array(mc))
    t_st <- system.time(fit <- sampling(sm, data = dat$stan, chains = 4, iter = 2000,
                                        warmup = 1000, seed = r, refresh = 0,
                                        cores = 1))[["elapsed"]]
    b <- as.array(fit)[, , c(sprintf("beta[%d]", 1:4), "sigma"), drop = FALSE]
    sp <- get_sampler_params(fit, inc_warmup = FALSE)
    rbind(
      data.frame(sampler = "bbvi NUTS", time = mc$time, ess = min_ess(a),
                 z = max_z(a, ref), div = mc$divergences,
                 leapfrog = mean(mc$sampler$n_leapfrog__)),
      data.frame(sampler = "rstan NUTS", time = t_st, ess = min_ess(b),
                 z = max_z(b, ref),
                 div = sum(vapply(sp, function(s) sum(s[, "divergent__"]), 0)),
                 leapfrog = mean(unlist(lapply(sp, function(s) s[, "n_leapfrog__"])))))
  })
  res <- do.call(rbind, res)
  for (s in c("bbvi NUTS", "rstan NUTS")) {
    x <- res[res$sampler == s, ]
    rows[[length(rows) + 1]] <- data.frame(
      model = mdl$posterior, sampler = s,
      wall_s = median(x$time), min_bulk_ess = median(x$ess),
      ess_per_s = median(x$ess / x$time),
      leapfrog_per_iter = median(x$leapfrog),
      max_abs_z_vs_ref = max(x$z), divergences = sum(x$div),
      rstan_compile_s = if (s == "rstan NUTS") compile else NA)
  }
}
tab <- do.call(rbind, rows)
tab$ratio_bbvi_over_rstan <- NA
for (m in unique(tab$model)) {
  i <- tab$model == m
  tab$ratio_bbvi_over_rstan[i & tab$sampler == "bbvi NUTS"] <-
    tab$ess_per_s[i & tab$sampler == "bbvi NUTS"] / tab$ess_per_s[i & tab$sampler == "rstan NUTS"]
}
cat(sprintf("Machine: %s, %d cores; R %s; rstan %s; %s\n", Sys.info()[["nodename"]],
            parallel::detectCores(), getRversion(), packageVersion("rstan"), format(Sys.Date())))
cat(sprintf("reps = %d (medians; max |z| and divergences over all reps)\n\n", reps))
print(format(tab, digits = 3), row.names = FALSE)
