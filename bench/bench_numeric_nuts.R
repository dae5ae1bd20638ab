# NUTS in bbvi on the custom models of bench/custom_models.R (posteriordb),
# each written as a vectorized R log-joint, run with the model's own gradient
# and with central differences instead (bbvi_model(gradient = "numeric")):
# wall time, the smallest bulk-ESS over the reference parameters, ESS per
# second, and max |mean - ref mean| / ref sd.
#
#   BBVI_LIB=<library> Rscript bench/bench_numeric_nuts.R [path/to/posteriordb]
#
# Environment: BENCH_MODELS (comma-separated subset), BENCH_CHAINS (2),
# BENCH_ITER (1000, half warmup), BENCH_SEEDS ("1,2").
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "custom_setup.R"))
# gp_pois_regr's log-joint loops over draws in R: 27 evaluations per
# leapfrog step make it minutes; the others are vectorized
model_names <- env_list("BENCH_MODELS", c("eight_schools_noncentered", "arK", "arma11",
                                          "garch11", "low_dim_gauss_mix"))
chains <- as.integer(Sys.getenv("BENCH_CHAINS", "2"))
iter <- as.integer(Sys.getenv("BENCH_ITER", "1000"))
seeds <- as.integer(env_list("BENCH_SEEDS", c("1", "2")))

rows <- list()
for (name in model_names) {
  spec <- custom_models[[name]]
  d <- spec$prep(jsonlite::fromJSON(file.path(pdb, spec$posterior, "data.json")))
  ref <- utils::read.csv(file.path(pdb, spec$posterior, "reference.csv"))
  for (g in c("gradient", "numeric")) {
    m <- bbvi_model(spec$logjoint, spec$params, data = d, vectorized = TRUE,
                    gradient = if (g == "gradient") spec$gradient else "numeric")
    for (seed in seeds) {
      t <- system.time(mc <- suppressWarnings(
        sample_mcmc(m, chains = chains, iter = iter, seed = seed, progress = FALSE)))[["elapsed"]]
      D <- spec$bbvi_draws(as.matrix(mc))[, ref$parameter, drop = FALSE]
      ess <- min(mc$diagnostics[, "ess_bulk"])
      rows[[length(rows) + 1]] <- data.frame(
        model = name, gradient = g, seed = seed, seconds = round(t, 2),
        min_ess_bulk = round(ess), ess_per_s = round(ess / t),
        max_err = round(max(abs(colMeans(D) - ref$mean) / ref$sd), 3),
        divergences = mc$divergences)
    }
  }
}
tab <- do.call(rbind, rows)
cat(sprintf("Machine: %s, %d cores; R %s; bbvi %s; %s; %d chains x %d iterations\n",
            Sys.info()[["nodename"]], parallel::detectCores(), getRversion(),
            packageVersion("bbvi"), format(Sys.time(), "%Y-%m-%d %H:%M %Z"), chains, iter))
print(tab, row.names = FALSE)
# per model: median time and ESS/s of numeric relative to the gradient's
agg <- do.call(rbind, lapply(split(tab, tab$model), function(x) {
  med <- function(g, col) stats::median(x[x$gradient == g, col])
  data.frame(model = x$model[1],
             time_ratio = round(med("numeric", "seconds") / med("gradient", "seconds"), 2),
             ess_per_s_ratio = round(med("numeric", "ess_per_s") / med("gradient", "ess_per_s"), 2))
}))
cat("\nnumeric / gradient (medians over seeds):\n")
print(agg, row.names = FALSE)
