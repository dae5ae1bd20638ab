# Paired timing of bbvi's default fit against Stan's ADVI (rstan::vb, same
# method, its defaults) on custom models of bench/custom_models.R: the two
# calls alternate, round after round (the first of each pair alternating
# too), so that both see the same state of a shared machine. A ratio within
# about 10% of 1 in bench_custom.R (smallest of 5 calls each, taken minutes
# apart) is within that machine's noise; the per-round ratios here say
# where the tie lies.
#
#   BBVI_LIB=<library> BENCH_STAN_CACHE=<folder> Rscript bench/bench_paired.R [posteriordb]
#
# Environment: BENCH_MODELS (default gp_pois_regr), BENCH_METHODS
# (meanfield), BENCH_ROUNDS (15), BENCH_SEED (1); the bbvi call is the
# default one with the model's gradient (estimator "auto").
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "custom_setup.R"))
suppressPackageStartupMessages(library(rstan))
rstan_options(auto_write = TRUE)
options(mc.cores = 1)

model_names <- env_list("BENCH_MODELS", "gp_pois_regr")
methods <- env_list("BENCH_METHODS", "meanfield")
rounds <- as.integer(Sys.getenv("BENCH_ROUNDS", "15"))
seed <- as.integer(Sys.getenv("BENCH_SEED", "1"))

elapsed <- function(expr) {
  t0 <- proc.time()[["elapsed"]]
  suppressWarnings(suppressMessages(capture.output(force(expr))))
  proc.time()[["elapsed"]] - t0
}

rows <- list()
for (name in model_names) {
  spec <- custom_models[[name]]
  raw <- jsonlite::fromJSON(file.path(pdb, spec$posterior, "data.json"))
  d <- spec$prep(raw)
  m <- bbvi_model(spec$logjoint, spec$params, data = d, gradient = spec$gradient,
                  vectorized = TRUE)
  sm <- compile_stan(name, spec$stan)$model
  sdat <- spec$stan_data(raw)
  for (method in methods) {
    bbvi_call <- function() elapsed(bbvi(m, method = method, seed = seed, progress = FALSE))
    advi_call <- function() elapsed(rstan::vb(sm, data = sdat, algorithm = method, seed = 1))
    bbvi_call(); advi_call()   # warm-up, not counted
    tb <- ta <- numeric(rounds)
    for (k in seq_len(rounds)) {
      if (k %% 2 == 1) { tb[k] <- bbvi_call(); ta[k] <- advi_call() }
      else { ta[k] <- advi_call(); tb[k] <- bbvi_call() }
    }
    r <- tb / ta
    rows[[length(rows) + 1]] <- data.frame(
      model = name, method = method, rounds = rounds,
      bbvi_median_s = round(stats::median(tb), 3), advi_median_s = round(stats::median(ta), 3),
      ratio_median = round(stats::median(r), 2),
      ratio_q25 = round(unname(stats::quantile(r, 0.25)), 2),
      ratio_q75 = round(unname(stats::quantile(r, 0.75)), 2),
      bbvi_faster = sum(r <= 1))
  }
}
cat(sprintf("Machine: %s, %d cores; R %s; bbvi %s; rstan %s; %s\n",
            Sys.info()[["nodename"]], parallel::detectCores(), getRversion(),
            packageVersion("bbvi"), packageVersion("rstan"), format(Sys.time(), "%Y-%m-%d %H:%M %Z")))
print(do.call(rbind, rows), row.names = FALSE)
