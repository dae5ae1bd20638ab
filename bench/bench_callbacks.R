# Cost per call of the R callbacks of a custom model: the user's function
# alone, bbvi's R wrapper around it (spec$fn_call / spec$gr_call, what
# check_gradient() calls), and one evaluation of the log density by the C
# side (.Call(C_logdens), what a fit does per batch of draws, plus building
# the target from its spec: 2-3 us with a compiled target). The model: a = param(lower = 0),
# z = param(dim = 10), vectorized, with a trivial log-joint and gradient, so
# that what is measured is bbvi's overhead. "C overhead" is the C_logdens
# time minus the user's calls it makes.
#
#   R CMD INSTALL . && Rscript bench/bench_callbacks.R
#   R_LIBS=/other/lib Rscript bench/bench_callbacks.R    # another build
#
# With BENCH_FITS (model names of bench/custom_models.R), also the time of
# default bbvi() fits (mean-field, seeds 1 and 2, best of 3) of those
# posteriordb models, from the package root:
#   BENCH_FITS=gp_pois_regr,arK,garch11,eight_schools_noncentered \
#     Rscript bench/bench_callbacks.R ../shared/posteriordb
suppressPackageStartupMessages(library(bbvi))
N <- as.integer(Sys.getenv("BBVI_BENCH_CALLS", "20000"))
ns <- asNamespace("bbvi")

lj <- function(p, d) -rowSums(p$z^2) / 2 - p$a^2
gr_list <- function(p, d) list(a = -2 * p$a, z = -p$z)
gradients <- list(
  "list" = gr_list,
  "list + \"logjoint\"" = function(p, d) structure(gr_list(p, d), logjoint = lj(p, d)),
  "S x D matrix" = function(p, d) cbind(-2 * p$a, -p$z),
  "list, other order" = function(p, d) list(z = -p$z, a = -2 * p$a),
  # not read in C: through the R checks (flatten_gradient())
  "list, integer z" = function(p, d) list(a = -2 * p$a, z = `storage.mode<-`(-round(p$z), "integer")))
pars <- list(a = param(lower = 0), z = param(dim = 10))

# microseconds per call: the fastest of 5 runs of N calls
per_call <- function(f) {
  min(vapply(1:5, function(r) system.time(for (i in seq_len(N)) f())[["elapsed"]],
             numeric(1))) / N * 1e6
}

rows <- list()
for (S in c(1L, 30L)) {
  set.seed(1)
  Z <- matrix(rnorm(11 * S), 11, S)
  th <- list(a = exp(Z[1, ]), z = t(Z[-1, , drop = FALSE]))
  m <- bbvi_model(lj, pars, gradient = gr_list, vectorized = TRUE)
  spec <- ns$r_target_spec(m)
  lo <- as.double(m$lower)
  up <- as.double(m$upper)
  t_lj <- per_call(function() lj(th, NULL))
  t_c <- per_call(function() .Call(ns$C_logdens, spec, lo, up, Z, FALSE))
  rows[[length(rows) + 1]] <- data.frame(
    S = S, call = "logjoint", user = t_lj,
    wrapper = per_call(function() spec$fn_call[[1]](th)),
    C_logdens = t_c, C_overhead = t_c - t_lj)
  for (nm in names(gradients)) {
    m <- bbvi_model(lj, pars, gradient = gradients[[nm]], vectorized = TRUE)
    spec <- ns$r_target_spec(m)
    t_gr <- per_call(function() gradients[[nm]](th, NULL))
    t_c <- per_call(function() .Call(ns$C_logdens, spec, lo, up, Z, TRUE))
    spared <- grepl("logjoint", nm)   # the attribute spares the log-joint call
    rows[[length(rows) + 1]] <- data.frame(
      S = S, call = paste("gradient:", nm), user = t_gr,
      wrapper = per_call(function() spec$gr_call[[1]](th)),
      C_logdens = t_c, C_overhead = t_c - t_gr - if (spared) 0 else t_lj)
  }
}
tab <- do.call(rbind, rows)
num <- vapply(tab, is.numeric, logical(1)) & names(tab) != "S"
tab[num] <- lapply(tab[num], function(x) sprintf("%.1f", x))
cat(sprintf("bbvi %s, %s, N = %d calls (us per call)\n\n",
            utils::packageVersion("bbvi"), R.version.string, N))
cat("| S | call | user | R wrapper | C_logdens | C overhead |\n|---|---|---|---|---|---|\n")
cat(sprintf("| %s |\n", apply(tab, 1, paste, collapse = " | ")), sep = "")

fits <- strsplit(Sys.getenv("BENCH_FITS"), ",")[[1]]
if (length(fits)) {
  args <- commandArgs(trailingOnly = TRUE)
  pdb <- if (length(args)) args[1] else "../shared/posteriordb"
  source("bench/custom_models.R")
  cat("\n| model | seed | s per fit | mode-search gradients | fixed-draw evaluations | mean[1:3] |\n|---|---|---|---|---|---|\n")
  for (nm in fits) {
    cm <- custom_models[[nm]]
    d <- cm$prep(jsonlite::fromJSON(file.path(pdb, cm$posterior, "data.json")))
    m <- bbvi_model(cm$logjoint, cm$params, data = d, gradient = cm$gradient, vectorized = TRUE)
    for (seed in 1:2) {
      t <- Inf
      for (r in 1:3) {
        t <- min(t, system.time(fit <- suppressWarnings(bbvi(m, seed = seed, progress = FALSE)))[["elapsed"]])
      }
      cat(sprintf("| %s | %d | %.3f | %d | %s | %s |\n", nm, seed, t, as.integer(fit$evals$gradient[2]),
                  paste(fit$fixed_draws$evaluations, collapse = "+"),
                  paste(signif(utils::head(fit$mean, 3), 4), collapse = ", ")))
    }
  }
}
