# Discrete latent variables against their exact posteriors (enumeration):
# the coal-mining change point (categorical q for the switch year), a
# two-component mixture with latent 0/1 assignments (with and without
# Rao-Blackwellization), and spike-and-slab variable selection with p = 8
# (mean-field q, and q(b | g) with one Gaussian per value of g).
# For the change point, NUTS on the model with the switch year summed out is
# the peer.
#
# Usage (from the package root, with bbvi installed):
#   BENCH_SEEDS=1,2,3 Rscript bench/bench_discrete.R
suppressPackageStartupMessages(library(bbvi, lib.loc = Sys.getenv("BBVI_LIB", unset = .libPaths()[1])))
source("tests/testthat/helper-discrete.R")
seeds <- as.integer(strsplit(Sys.getenv("BENCH_SEEDS", "1,2,3"), ",")[[1]])

timed <- function(expr) {
  warned <- FALSE
  t0 <- proc.time()[["elapsed"]]
  val <- withCallingHandlers(expr, warning = function(w) {
    warned <<- TRUE
    invokeRestart("muffleWarning")
  })
  list(value = val, time = proc.time()[["elapsed"]] - t0, warned = warned)
}

fmt <- function(x, d = 3) formatC(x, digits = d, format = "fg", flag = "#")
rows <- list()
add <- function(...) rows[[length(rows) + 1L]] <<- data.frame(..., check.names = FALSE)

# ---- change point ------------------------------------------------------------
d <- change_point_data()
ex <- change_point_exact(d)
cont <- c("lambda[1]", "lambda[2]")
for (seed in seeds) {
  for (fam in c("gaussian", "gamma")) {
    r <- timed(bbvi(change_point_model(d), seed = seed,
                    families = if (fam == "gamma") list(lambda = "gamma")))
    f <- r$value
    cf <- coef(f)
    sdv <- sqrt(diag(vcov(f)))
    add(model = "change point", q = paste("categorical +", fam), seed = seed,
        time_s = r$time,
        err_mean_sd = max(abs(cf[c("s", cont)] - ex$mean) / ex$sd),
        sd_ratio_min = min(sdv[c("s", cont)] / ex$sd),
        p_mode_err = abs(q_prob(f, "s", ex$mode) - ex$p_mode),
        incl_err = NA, rb_ratio = NA, rb_ratio_z = NA, enum_ratio_z = NA,
        converged = f$converged, warned = r$warned)
  }
  r <- timed(sample_mcmc(change_point_marginal_model(d), seed = seed))
  s <- summary(r$value)$table
  add(model = "change point", q = "NUTS (s summed out)", seed = seed,
      time_s = r$time,
      err_mean_sd = max(abs(s[cont, "mean"] - ex$mean[cont]) / ex$sd[cont]),
      sd_ratio_min = min(s[cont, "sd"] / ex$sd[cont]),
      p_mode_err = NA, incl_err = NA, rb_ratio = NA, rb_ratio_z = NA,
      enum_ratio_z = NA, converged = TRUE, warned = r$warned)
}

# ---- mixture with latent assignments -----------------------------------------------
dm <- mixture_data()
exm <- mixture_exact(dm)
for (seed in seeds) {
  for (rb in c(FALSE, TRUE)) {
    r <- timed(bbvi(mixture_model(dm, factors = rb), seed = seed))
    f <- r$value
    cf <- coef(f)
    sdv <- sqrt(diag(vcov(f)))
    mu <- c("mu[1]", "mu[2]")
    # plain and Rao-Blackwellized gradient variance at the RB fit's q, from
    # the same 1000 draws: in total, and over the assignments' logits (the
    # first N entries of lambda; mu's weight is the plain one either way);
    # enum: the fit's own estimator for the logits, each assignment's two
    # values enumerated through its likelihood factor
    if (rb) {
      v <- bbvi:::rb_gradient_variance(f, draws = 1000, seed = seed)
      pc <- v$per_coordinate[seq_len(dm$N), ]
    }
    add(model = "mixture N = 12", q = if (rb) "categorical + gaussian, RB" else "categorical + gaussian",
        seed = seed, time_s = r$time,
        err_mean_sd = max(abs(cf[mu] - exm$mean) / exm$sd),
        sd_ratio_min = min(sdv[mu] / exm$sd),
        p_mode_err = NA,
        incl_err = max(abs(q_prob(f, names(exm$p_z), 1) - exm$p_z)),
        rb_ratio = if (rb) v$ratio else NA,
        rb_ratio_z = if (rb) sum(pc$var_plain) / sum(pc$var_rb) else NA,
        enum_ratio_z = if (rb) sum(pc$var_plain) / sum(pc$var_enum) else NA,
        converged = f$converged, warned = r$warned)
  }
}

# the variance ratio grows with the number of assignments: N = 50 (no
# exact answer by enumeration at this size; the variances only)
dm50 <- mixture_data(N = 50)
for (seed in seeds) {
  r <- timed(bbvi(mixture_model(dm50, factors = TRUE), seed = seed))
  v <- bbvi:::rb_gradient_variance(r$value, draws = 1000, seed = seed)
  pc <- v$per_coordinate[seq_len(dm50$N), ]
  add(model = "mixture N = 50", q = "categorical + gaussian, RB", seed = seed,
      time_s = r$time, err_mean_sd = NA, sd_ratio_min = NA, p_mode_err = NA,
      incl_err = NA, rb_ratio = v$ratio,
      rb_ratio_z = sum(pc$var_plain) / sum(pc$var_rb),
      enum_ratio_z = sum(pc$var_plain) / sum(pc$var_enum),
      converged = r$value$converged, warned = r$warned)
}

# ---- spike and slab ------------------------------------------------------------------
ds <- spike_slab_data()
exs <- spike_slab_exact(ds)
bnames <- names(exs$mean_beta)
for (seed in seeds) {
  # mean-field q(g) q(b), and q(g) q(b | g): one Gaussian per value of g_j
  for (given in c(FALSE, TRUE)) {
    r <- timed(bbvi(spike_slab_model(ds), seed = seed,
                    families = if (given) list(b = "given:g")))
    f <- r$value
    sdv <- sqrt(diag(vcov(f)))[bnames]
    add(model = "spike-and-slab p = 8",
        q = if (given) "bernoulli + gaussian given g" else "bernoulli + gaussian",
        seed = seed, time_s = r$time,
        err_mean_sd = max(abs(coef(f)[bnames] - exs$mean_beta) / exs$sd_beta),
        sd_ratio_min = min(sdv / exs$sd_beta), p_mode_err = NA,
        incl_err = max(abs(q_prob(f, names(exs$inclusion), 1) - exs$inclusion)),
        rb_ratio = NA, rb_ratio_z = NA, enum_ratio_z = NA, converged = f$converged,
        warned = r$warned)
  }
}

tab <- do.call(rbind, rows)
num <- vapply(tab, is.numeric, logical(1)) & names(tab) != "seed"
tab[num] <- lapply(tab[num], function(x) ifelse(is.na(x), "", fmt(x)))
cat(sprintf("R %s, %s, %s\n\n", getRversion(), Sys.info()[["machine"]], format(Sys.time(), "%Y-%m-%d")))
cat("| ", paste(names(tab), collapse = " | "), " |\n", sep = "")
cat("|", strrep("---|", ncol(tab)), "\n", sep = "")
for (i in seq_len(nrow(tab))) cat("| ", paste(unlist(tab[i, ]), collapse = " | "), " |\n", sep = "")
