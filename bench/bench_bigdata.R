# Benchmark: large-N logistic regression (p = 20) with the lean GLM path,
# and MCMC chains sequential against parallel.
#
#   Rscript bench/bench_bigdata.R              (from the package root)
#   BENCH_N=1e5,1e6 BENCH_MCMC=0 Rscript bench/bench_bigdata.R   (some N, no chains)
#   BENCH_N=0 Rscript bench/bench_bigdata.R                       (chains only)
#
# Needs the installed bbvi, /usr/bin/time (GNU time) for peak memory and
# future + future.apply for the parallel chains. Every measurement runs in a
# child Rscript so that its peak resident memory (`/usr/bin/time -v`) is
# that run's alone. The child builds X (N x 20, standard normal, column by
# column: no second copy) and y ~ Bernoulli(logistic(X beta)), then fits
# bbvi(X, y, family = binomial()) (the matrix interface; at the smaller N
# also the formula interface on a data frame), and the matrix interface with
# subsample = N / 100 ("minibatch": epochs over 100 row blocks; vs_full_sd
# is its largest distance from the full-data fit's means, in posterior sds,
# and passes its epochs against the full-data path's Newton iterations).
# Reported: seconds of the fit
# (the bbvi() call: setup, quadrature path, draws and diagnostics; quad_s
# is the quadrature path alone, child_cpu_s the CPU seconds (user + system,
# all threads) of the whole child run, data generation included, and
# diag_draws the number of full-data
# log-density evaluations of the diagnostics), rows per second, peak RSS of the child above the RSS of a child that only loads
# bbvi, that excess as a multiple of the size of X (the data set itself
# included: the goal is below 2), the fit object's size, and the largest
# error of the posterior means against the true coefficients in posterior
# sds (a sanity check: about N(0, 1) each).
#
# Chains: sample_mcmc() on a logistic GLM (N = 5000, p = 20), 2 chains of
# 2000 iterations, under plan(sequential) and plan(multisession, workers =
# 2); the draws must be identical; the speed-up is the ratio of wall times.
args <- commandArgs(trailingOnly = TRUE)

child <- function(N, mode) {
  suppressPackageStartupMessages(library(bbvi))
  p <- 20
  if (mode == "baseline") {
    cat(sprintf("RESULT %s\n", paste(0, 0, 0, 0, 0, 0, 0, sep = ",")))
    return(invisible())
  }
  set.seed(1)
  X <- matrix(0, N, p, dimnames = list(NULL, paste0("x", seq_len(p))))
  for (j in seq_len(p)) X[, j] <- stats::rnorm(N)
  beta <- seq(-0.5, 0.5, length.out = p)
  y <- stats::rbinom(N, 1, stats::plogis(-1 + drop(X %*% beta)))
  x_mb <- as.numeric(utils::object.size(X)) / 2^20
  if (mode == "formula") {
    d <- data.frame(y = y, X)
    rm(X); invisible(gc())
    t0 <- proc.time()[["elapsed"]]
    fit <- bbvi(y ~ ., data = d, family = binomial(), seed = 1)
  } else {
    t0 <- proc.time()[["elapsed"]]
    fit <- bbvi(X, y, family = binomial(), seed = 1,
                subsample = if (mode == "minibatch") N / 100)
  }
  secs <- proc.time()[["elapsed"]] - t0
  vs_full <- NA
  if (mode == "minibatch") {   # against the full-data fit, after the clock
    full <- bbvi(X, y, family = binomial(), seed = 1)
    vs_full <- max(abs(coef(fit) - coef(full)) / sqrt(diag(vcov(full))))
  }
  fit_mb <- as.numeric(utils::object.size(fit)) / 2^20
  sd <- sqrt(diag(vcov(fit)))
  err <- max(abs(coef(fit) - c(-1, beta)) / sd)
  cat(sprintf("RESULT %s\n", paste(secs, x_mb, fit_mb, err, fit$converged, fit$time,
                                   fit$diagnostics$n_draws,
                                   if (is.null(fit$epochs)) fit$iterations else fit$epochs,
                                   vs_full, sep = ",")))
}

chains_child <- function(plan) {
  suppressPackageStartupMessages(library(bbvi))
  set.seed(2)
  N <- 5000; p <- 20
  X <- matrix(stats::rnorm(N * p), N, p, dimnames = list(NULL, paste0("x", seq_len(p))))
  d <- data.frame(y = stats::rbinom(N, 1, stats::plogis(X %*% seq(-0.5, 0.5, length.out = p))), X)
  if (plan == "multisession") future::plan("multisession", workers = 2)
  else future::plan("sequential")
  # start the workers and load bbvi there before the clock (a one-off
  # cost per session)
  invisible(future.apply::future_lapply(1:2, function(i) requireNamespace("bbvi")))
  t0 <- proc.time()[["elapsed"]]
  mc <- sample_mcmc(y ~ ., data = d, family = binomial(), chains = 2,
                    iter = 2000, seed = 1)
  secs <- proc.time()[["elapsed"]] - t0
  saveRDS(mc$draws, sprintf("%s/bbvi-bench-draws-%s.rds", tempdir_shared, plan))
  cat(sprintf("RESULT %s\n", secs))
}

tempdir_shared <- Sys.getenv("BENCH_TMP", "/tmp")

if (length(args) >= 2 && args[1] == "--child") {
  child(as.numeric(args[2]), args[3])
  quit(save = "no")
}
if (length(args) >= 2 && args[1] == "--chains") {
  chains_child(args[2])
  quit(save = "no")
}

run_child <- function(child_args) {
  script <- normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
  out <- system2("/usr/bin/time", c("-v", file.path(R.home("bin"), "Rscript"), script,
                                   child_args),
                 stdout = TRUE, stderr = TRUE)
  res <- grep("^RESULT ", out, value = TRUE)
  rss <- as.numeric(sub(".*: ", "", grep("Maximum resident set size", out, value = TRUE)))
  cpu <- sum(as.numeric(sub(".*: ", "", grep("(User|System) time \\(seconds\\)", out, value = TRUE))))
  if (!length(res)) {
    cat(out, sep = "\n")
    stop("the child run failed")
  }
  list(values = strsplit(sub("^RESULT ", "", res), ",")[[1]], rss_mb = rss / 1024,
       cpu = cpu)
}

Ns <- as.numeric(strsplit(Sys.getenv("BENCH_N", "1e5,1e6,1e7"), ",")[[1]])
Ns <- Ns[Ns > 0]   # BENCH_N=0: chains only
base <- run_child(c("--child", "0", "baseline"))$rss_mb
cat(sprintf("bbvi %s; %s; %s; R %s\n", utils::packageVersion("bbvi"),
            Sys.info()[["nodename"]], format(Sys.time(), "%Y-%m-%d %H:%M %Z"),
            getRversion()))
cat(sprintf("baseline RSS of a child that loads bbvi: %.0f MB\n\n", base))
rows <- list()
for (N in Ns) {
  for (mode in c("matrix", "minibatch", if (N <= 1e6) "formula")) {
    r <- run_child(c("--child", format(N, scientific = FALSE), mode))
    v <- r$values
    secs <- as.numeric(v[1]); x_mb <- as.numeric(v[2])
    rows[[length(rows) + 1]] <- data.frame(
      N = format(N, big.mark = ",", scientific = FALSE), interface = mode,
      seconds = round(secs, 1), quad_s = round(as.numeric(v[6]), 1),
      child_cpu_s = round(r$cpu, 1),
      diag_draws = as.integer(v[7]), rows_per_s = format(round(N / secs), big.mark = ","),
      X_MB = round(x_mb), peak_above_base_MB = round(r$rss_mb - base),
      peak_over_X = round((r$rss_mb - base) / x_mb, 2),
      fit_MB = round(as.numeric(v[3]), 1), max_err_sd = round(as.numeric(v[4]), 2),
      passes = as.integer(v[8]), vs_full_sd = signif(as.numeric(v[9]), 2),
      converged = v[5])
    print(rows[[length(rows)]], row.names = FALSE)
  }
}
if (length(rows)) {
  cat("\nLogistic regression, p = 20, bbvi(..., family = binomial()) defaults:\n")
  print(do.call(rbind, rows), row.names = FALSE)
}

if (!identical(Sys.getenv("BENCH_MCMC"), "0")) {
  s <- as.numeric(run_child(c("--chains", "sequential"))$values[1])
  m <- as.numeric(run_child(c("--chains", "multisession"))$values[1])
  same <- identical(readRDS(file.path(tempdir_shared, "bbvi-bench-draws-sequential.rds")),
                    readRDS(file.path(tempdir_shared, "bbvi-bench-draws-multisession.rds")))
  cat(sprintf("\nsample_mcmc, logistic N = 5000, p = 20, 2 chains x 2000 iterations:\n  sequential %.1f s, multisession (2 workers) %.1f s, speed-up %.2f; identical draws: %s\n",
              s, m, s / m, same))
}
