# bench/bench_scale.R: how VI scales with the number of parameters D.
#
# Mean-field at D = 1e3, 1e4, 1e5 and low-rank (rank 10) at D = 1e3, 1e4 on
# two vectorized targets with gradients and known marginal sds:
#   indep:  independent normals, sds from 0.1 to 10 (log-spaced);
#   factor: N(0, W W' + 0.25 I), W of 5 columns (a five-factor model), log
#           density and gradient by Woodbury in O(S D k).
# Each case runs in its own Rscript child under /usr/bin/time -v, so the peak
# memory (maximum resident set size) is that of one fit. Columns: wall
# seconds of the bbvi() call (mode search, stochastic phase, diagnostics),
# seconds of the stochastic phase alone, iterations, converged, peak memory
# and the fit object's size (MB), and the fitted marginal sds against the
# true ones: median and largest |sd / true sd - 1|.
#
# Usage: Rscript bench/bench_scale.R [lib]   (lib: where bbvi is installed;
#        default: the usual library path)
#        BBVI_SCALE_ADAM=1 Rscript bench/bench_scale.R [lib]: instead, the
#        stochastic path (optimizer = "adam"), mean-field on indep at
#        D = 1e3, 1e4, 1e5

args <- commandArgs(trailingOnly = TRUE)

make_target <- function(kind, D) {
  set.seed(20261127)
  if (kind == "indep") {
    mu <- seq(-1, 1, length.out = D)
    s <- exp(seq(log(0.1), log(10), length.out = D))
    lj <- function(theta, data) {
      X <- theta$x
      Z <- (X - rep(data$mu, each = nrow(X))) / rep(data$s, each = nrow(X))
      -0.5 * rowSums(Z^2)
    }
    gr <- function(theta, data) {
      X <- theta$x
      list(x = -(X - rep(data$mu, each = nrow(X))) / rep(data$s^2, each = nrow(X)))
    }
    return(list(data = list(mu = mu, s = s), lj = lj, gr = gr, sd = s))
  }
  k <- 5
  W <- matrix(stats::rnorm(D * k), D, k)
  psi2 <- 0.25
  Minv <- solve(diag(k) + crossprod(W) / psi2)
  sigma_inv_x <- function(X, data) {   # S x D rows times Sigma^-1
    X / data$psi2 - ((X %*% data$W) %*% data$Minv) %*% t(data$W) / data$psi2^2
  }
  lj <- function(theta, data) -0.5 * rowSums(theta$x * sigma_inv_x(theta$x, data))
  gr <- function(theta, data) list(x = -sigma_inv_x(theta$x, data))
  list(data = list(W = W, psi2 = psi2, Minv = Minv), lj = lj, gr = gr,
       sd = sqrt(rowSums(W^2) + psi2))
}

run_child <- function(method, kind, D, rank, optimizer = "auto") {
  suppressPackageStartupMessages(library(bbvi))
  tg <- make_target(kind, D)
  m <- bbvi_model(tg$lj, parameters = list(x = param(dim = D)), data = tg$data,
                  gradient = tg$gr, vectorized = TRUE)
  t0 <- proc.time()[["elapsed"]]
  fit <- suppressWarnings(bbvi(m, method = method,
                               rank = if (method == "lowrank") rank,
                               optimizer = optimizer, seed = 1, progress = FALSE))
  wall <- proc.time()[["elapsed"]] - t0
  sd_hat <- summary(fit)$table[, "sd"]
  err <- abs(sd_hat / tg$sd - 1)
  cat(sprintf("RESULT %s,%s,%d,%d,%.1f,%.1f,%d,%s,%.2f,%.3f,%.3f,%.3f\n",
              method, kind, D, if (method == "lowrank") rank else 0L, wall,
              fit$time, fit$iterations, fit$converged,
              as.numeric(utils::object.size(fit)) / 2^20,
              stats::median(err), max(err), stats::median(sd_hat / tg$sd)))
}

if (length(args) >= 1 && args[1] == "child") {
  run_child(args[2], args[3], as.integer(args[4]), as.integer(args[5]), args[6])
  quit(save = "no")
}

lib <- if (length(args) >= 1) args[1] else ""
script <- normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
cases <- rbind(
  expand.grid(method = "meanfield", kind = c("indep", "factor"), D = c(1e3, 1e4, 1e5),
              rank = 0L, stringsAsFactors = FALSE),
  expand.grid(method = "lowrank", kind = c("indep", "factor"), D = c(1e3, 1e4),
              rank = 10L, stringsAsFactors = FALSE))
cases$optimizer <- "auto"
if (Sys.getenv("BBVI_SCALE_ADAM") == "1") {
  cases <- data.frame(method = "meanfield", kind = "indep", D = c(1e3, 1e4, 1e5),
                      rank = 0L, optimizer = "adam", stringsAsFactors = FALSE)
}
rows <- list()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  env <- if (nzchar(lib)) paste0("R_LIBS=", lib) else character()
  out <- suppressWarnings(system2("/usr/bin/time",
    c("-v", file.path(R.home("bin"), "Rscript"), script, "child", cs$method, cs$kind,
      format(cs$D, scientific = FALSE), cs$rank, cs$optimizer),
    stdout = TRUE, stderr = TRUE, env = env))
  res <- grep("^RESULT ", out, value = TRUE)
  rss <- as.numeric(sub(".*: ", "", grep("Maximum resident set size", out, value = TRUE)))
  if (length(res) != 1) {
    cat(out, sep = "\n")
    next
  }
  f <- strsplit(sub("^RESULT ", "", res), ",")[[1]]
  rows[[length(rows) + 1]] <- data.frame(
    method = f[1], target = f[2], D = as.integer(f[3]), rank = as.integer(f[4]),
    wall_s = as.numeric(f[5]), vi_s = as.numeric(f[6]), iter = as.integer(f[7]),
    converged = f[8], peak_MB = round(rss / 1024), fit_MB = as.numeric(f[9]),
    sd_err_median = as.numeric(f[10]), sd_err_max = as.numeric(f[11]),
    sd_ratio_median = as.numeric(f[12]))
  print(rows[[length(rows)]], row.names = FALSE)
}
tab <- do.call(rbind, rows)
cat(sprintf("\n%s, R %s, %s\n", format(Sys.time(), "%Y-%m-%d %H:%M %Z"),
            getRversion(), utils::sessionInfo()$running))
print(tab, row.names = FALSE)
