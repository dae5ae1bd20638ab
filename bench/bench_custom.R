# Custom models (issue 9): the posteriordb posteriors that are not plain GLMs,
# fitted by bbvi from vectorized R log-joints (with and without a gradient)
# and by Stan (rstan::vb mean-field and full-rank at their defaults,
# rstan::sampling 4 chains x 1000 iterations run one after another), in the
# same run, against posteriordb's reference means and sds.
#
# Usage (from the package root):
#   mkdir -p /tmp/lib9b && R CMD INSTALL -l /tmp/lib9b .
#   BBVI_LIB=/tmp/lib9b Rscript bench/bench_custom.R [path/to/posteriordb]
# Environment:
#   BBVI_LIB            library holding the bbvi under test (put first)
#   BENCH_MODELS        comma-separated subset of the model names below
#   BENCH_STAN=0        bbvi rows only (no rstan)
#   BENCH_STAN_CACHE    folder for the compiled Stan models (rstan auto_write);
#                       default a folder in tempdir()
#   BENCH_OUT           also write the table as CSV to this file
#   BENCH_REPS          timing repetitions of each bbvi and vb call (default 3;
#                       same seed, so the same fit; wall_s is the median; the
#                       machine is shared, single runs are noisy). NUTS: once.
#
# Model definitions (Stan code, R log-joints, gradients, the map from a fit's
# parameters to the reference's) are in bench/custom_models.R. Two models are
# reparameterised for bbvi, which has no dependent bounds or ordered vectors:
# garch11 (gamma = beta1 / (1 - alpha1) in (0, 1), Jacobian log(1 - alpha1)
# in the log-joint) and low_dim_gauss_mix (delta = mu[2] - mu[1] > 0,
# Jacobian 1). Both give exactly the Stan model's posterior.
#
# Columns:
#   wall_s     elapsed seconds of the fitting call (bbvi(): everything it
#              does, diagnostics included; vb()/sampling() on the compiled
#              model; Stan's compile time excluded)
#   loop_s     bbvi only: fit$time, the stochastic loop alone (first rep)
#   logp, grad log-density and gradient evaluations. bbvi: fit$evals (mode
#              search + optimisation). vb: gradients = iterations x
#              grad_samples (1), adaptation included (50 per eta tried);
#              log densities = elbo_samples (100) x ELBO evaluations (one
#              per eval_elbo = 100 iterations, one per eta tried and the
#              initial one of the adaptation); both read from vb's console
#              output; vb's 1000 PSIS draws are not counted. sampling: grad
#              = sum of n_leapfrog__ over all iterations (warmup included) of
#              the 4 chains; logp = "" (each leapfrog step is one gradient
#              with its log density).
#   max_err    max over reference parameters of |mean - ref mean| / ref sd
#   sd_lo, sd_hi  smallest and largest sd / ref sd
#   khat       bbvi: fit$diagnostics$khat (from fit$diagnostics$n_draws draws,
#              which depend on a time budget, so on the machine's load: see
#              the note column); vb: its PSIS pareto k; NUTS: -
#   converged  bbvi: fit$converged; vb: "ELBO CONVERGED" printed; NUTS:
#              max R-hat < 1.01 and no divergent transitions
#   warned     any R warning during the call
#   accurate   max_err <= 0.1 and all sds within 10% of the reference
#   silent_bad inaccurate, converged = TRUE and no warning (a fit that lies)
lib <- Sys.getenv("BBVI_LIB")
if (nzchar(lib)) .libPaths(c(lib, .libPaths()))
suppressPackageStartupMessages(library(bbvi))

args <- commandArgs(trailingOnly = TRUE)
pdb <- if (length(args) >= 1) args[1] else "../shared/posteriordb"
script_dir <- local({
  f <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  if (length(f)) dirname(normalizePath(f[1])) else "bench"
})
source(file.path(script_dir, "custom_models.R"))

use_stan <- Sys.getenv("BENCH_STAN", "1") != "0"
if (use_stan) {
  use_stan <- requireNamespace("rstan", quietly = TRUE)
  if (!use_stan) message("rstan not available: bbvi rows only")
}
if (use_stan) {
  suppressPackageStartupMessages(library(rstan))
  rstan_options(auto_write = TRUE)
  options(mc.cores = 1)
  # Debian's r-cran-bh ships no include/ folder: point rstan at the system Boost
  boost <- if (nzchar(system.file("include", package = "BH"))) NULL else "/usr/include"
  stan_dir <- Sys.getenv("BENCH_STAN_CACHE", file.path(tempdir(), "stan"))
  dir.create(stan_dir, showWarnings = FALSE, recursive = TRUE)
}

reps <- as.integer(Sys.getenv("BENCH_REPS", "3"))
which_models <- Sys.getenv("BENCH_MODELS")
model_names <- if (nzchar(which_models)) strsplit(which_models, ",")[[1]] else names(custom_models)

# ---- helpers -----------------------------------------------------------------

# Run f(), timing it, recording warnings and messages (muffled) and errors.
run_captured <- function(f, time_limit = Inf) {
  warns <- character(); msgs <- character(); err <- NA_character_
  out <- NULL
  setTimeLimit(elapsed = time_limit, transient = TRUE)
  on.exit(setTimeLimit(elapsed = Inf))
  t <- system.time(out <- tryCatch(
    withCallingHandlers(f(),
      warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
      message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") }),
    error = function(e) { err <<- conditionMessage(e); NULL }))[["elapsed"]]
  setTimeLimit(elapsed = Inf)
  list(value = out, time = t, warnings = warns, messages = msgs, error = err)
}

accuracy <- function(dr, ref) {
  dr <- dr[, ref$parameter, drop = FALSE]
  m <- colMeans(dr); s <- apply(dr, 2, stats::sd)
  ratio <- s / ref$sd
  c(max_err = max(abs(m - ref$mean) / ref$sd), sd_lo = min(ratio), sd_hi = max(ratio))
}

one_line <- function(x) {
  x <- gsub("[\r\n|]+", " ", paste(unique(x), collapse = "; "))
  x <- gsub("\\s+", " ", x)
  if (nchar(x) > 160) paste0(substr(x, 1, 157), "...") else x
}

# median wall time over `reps` runs of f (the first run's record given)
rep_time <- function(first, f) {
  if (reps <= 1 || is.null(first$value)) return(first$time)
  more <- vapply(seq_len(reps - 1), function(i) {
    utils::capture.output(t <- run_captured(f)$time)
    t
  }, numeric(1))
  stats::median(c(first$time, more))
}

row <- function(model, D, fit, wall, logp, grad, acc, khat, converged, warned, note,
                loop = NA) {
  data.frame(model = model, D = D, fit = fit, wall_s = wall, loop_s = loop, logp = logp, grad = grad,
             max_err = acc[["max_err"]], sd_lo = acc[["sd_lo"]], sd_hi = acc[["sd_hi"]],
             khat = khat, converged = converged, warned = warned, note = note,
             stringsAsFactors = FALSE)
}
na_acc <- c(max_err = NA, sd_lo = NA, sd_hi = NA)

# vb's evaluations, read from its console output (see the header)
vb_evals <- function(out) {
  ad <- regmatches(out, regexpr("Iteration:\\s*[0-9]+ / [0-9]+ .*\\(Adaptation\\)", out))
  ad_iter <- if (length(ad)) max(as.numeric(sub("Iteration:\\s*([0-9]+) /.*", "\\1", ad))) else 0
  n_trials <- ad_iter / 50
  tab <- grep("^Chain 1:\\s+[0-9]+\\s+-?[0-9.eE+-]+\\s+[0-9.]+", out, value = TRUE)
  iters <- if (length(tab)) as.numeric(sub("^Chain 1:\\s+([0-9]+).*", "\\1", tab)) else 0
  c(logp = 100 * (length(tab) + (if (ad_iter > 0) n_trials + 1 else 0)),
    grad = max(c(0, iters)) + ad_iter)
}

# ---- the runs ----------------------------------------------------------------
rows <- list()
for (nm in model_names) {
  cm <- custom_models[[nm]]
  if (is.null(cm)) stop("unknown model ", nm)
  d <- jsonlite::fromJSON(file.path(pdb, cm$posterior, "data.json"))
  ref <- utils::read.csv(file.path(pdb, cm$posterior, "reference.csv"))
  dat <- cm$data(d)
  to_ref <- if (nm == "gp_pois_regr") gp_to_ref(dat$D2) else cm$to_ref
  D <- sum(vapply(cm$parameters, function(p) p$dim, integer(1)))
  cat(sprintf("== %s (%d parameters)\n", nm, D))

  models <- list(
    grad = bbvi_model(cm$logjoint, cm$parameters, data = dat, gradient = cm$gradient,
                      vectorized = TRUE),
    score = bbvi_model(cm$logjoint, cm$parameters, data = dat, vectorized = TRUE))
  for (cfg in list(c("meanfield", "grad"), c("fullrank", "grad"),
                   c("meanfield", "score"), c("fullrank", "score"))) {
    est <- if (cfg[2] == "grad") "reparam" else "score"
    label <- sprintf("bbvi %s %s", if (cfg[1] == "meanfield") "mf" else "fr", cfg[2])
    f_fit <- function() bbvi(models[[cfg[2]]], method = cfg[1], estimator = est,
                             seed = 1, progress = FALSE)
    r <- run_captured(f_fit, time_limit = 600)
    fit <- r$value
    r$time <- rep_time(r, f_fit)
    if (is.null(fit)) {
      rows[[length(rows) + 1]] <- row(nm, D, label, r$time, NA, NA, na_acc, NA, NA,
                                      length(r$warnings) > 0,
                                      one_line(c(paste("ERROR:", r$error), r$warnings)))
    } else {
      set.seed(2)
      dr <- to_ref(as.matrix(fit, draws = 20000))
      ev <- colSums(fit$evals[fit$evals$phase %in% c("mode", "optimisation"), c("logp", "gradient")])
      note <- one_line(c(sprintf("start %s, %d iter, S %d, k-hat from %d draws, %s", fit$start,
                                 fit$iterations, fit$samples, fit$diagnostics$n_draws,
                                 fit$stop_reason), r$warnings, r$messages))
      rows[[length(rows) + 1]] <- row(nm, D, label, r$time, ev[["logp"]], ev[["gradient"]],
                                      accuracy(dr, ref), fit$diagnostics$khat,
                                      isTRUE(fit$converged), length(r$warnings) > 0, note,
                                      loop = fit$time)
    }
    print(rows[[length(rows)]][, 1:13], row.names = FALSE)
  }

  if (use_stan) {
    f <- file.path(stan_dir, paste0(nm, ".stan"))
    if (!file.exists(f) || !identical(readLines(f), strsplit(cm$stan, "\n")[[1]])) {
      writeLines(cm$stan, f)
    }
    ct <- system.time(sm <- tryCatch(stan_model(file = f, model_name = nm, boost_lib = boost),
                                     error = function(e) e))[["elapsed"]]
    cat(sprintf("   Stan model ready in %.1f s (compile or cache; excluded)\n", ct))
    if (inherits(sm, "error")) {
      cat("   Stan compile failed:", conditionMessage(sm), "\n")
    } else {
      sd_ <- cm$stan_data(d)
      for (alg in c("meanfield", "fullrank")) {
        label <- sprintf("ADVI %s", if (alg == "meanfield") "mf" else "fr")
        out <- character()
        f_vb <- function() vb(sm, data = sd_, algorithm = alg, seed = 1)
        out <- utils::capture.output(r <- run_captured(f_vb, time_limit = 900))
        fit <- r$value
        r$time <- rep_time(r, f_vb)
        ev <- vb_evals(out)
        conv <- any(grepl("ELBO CONVERGED", out))
        if (is.null(fit) || !inherits(fit, "stanfit") || fit@mode != 0L) {
          rows[[length(rows) + 1]] <- row(nm, D, label, r$time, ev[["logp"]], ev[["grad"]],
                                          na_acc, NA, FALSE, length(r$warnings) > 0,
                                          one_line(c(paste("ERROR:", r$error), r$warnings)))
        } else {
          dr <- as.matrix(fit)
          k <- fit@sim$diagnostics$psis$pareto_k
          rows[[length(rows) + 1]] <- row(nm, D, label, r$time, ev[["logp"]], ev[["grad"]],
                                          accuracy(dr, ref), if (is.null(k)) NA else k, conv,
                                          length(r$warnings) > 0, one_line(r$warnings))
        }
        print(rows[[length(rows)]][, 1:13], row.names = FALSE)
      }
      out <- utils::capture.output(
        r <- run_captured(function() sampling(sm, data = sd_, chains = 4, iter = 1000,
                                              seed = 1, cores = 1, refresh = 0),
                          time_limit = 1800))
      fit <- r$value
      if (is.null(fit) || !inherits(fit, "stanfit") || fit@mode != 0L) {
        rows[[length(rows) + 1]] <- row(nm, D, "NUTS", r$time, NA, NA, na_acc, NA, FALSE,
                                        length(r$warnings) > 0,
                                        one_line(c(paste("ERROR:", r$error), r$warnings)))
      } else {
        sp <- get_sampler_params(fit, inc_warmup = TRUE)
        leap <- sum(vapply(sp, function(x) sum(x[, "n_leapfrog__"]), numeric(1)))
        div <- sum(vapply(get_sampler_params(fit, inc_warmup = FALSE),
                          function(x) sum(x[, "divergent__"]), numeric(1)))
        rhat <- max(summary(fit)$summary[, "Rhat"], na.rm = TRUE)
        rows[[length(rows) + 1]] <- row(nm, D, "NUTS", r$time, NA, leap,
                                        accuracy(as.matrix(fit), ref), NA,
                                        rhat < 1.01 && div == 0, length(r$warnings) > 0,
                                        one_line(c(sprintf("max Rhat %.3f, %d divergent", rhat, div),
                                                   r$warnings)))
      }
      print(rows[[length(rows)]][, 1:13], row.names = FALSE)
    }
  }
}

# ---- the table and the goals ---------------------------------------------------
tab <- do.call(rbind, rows)
tab$accurate <- !is.na(tab$max_err) & tab$max_err <= 0.1 & tab$sd_lo >= 0.9 & tab$sd_hi <= 1.1
tab$silent_bad <- !tab$accurate & tab$converged %in% TRUE & !tab$warned
if (nzchar(Sys.getenv("BENCH_OUT"))) utils::write.csv(tab, Sys.getenv("BENCH_OUT"), row.names = FALSE)

fmt <- function(x, d) ifelse(is.na(x), "-", formatC(x, format = "fg", digits = d, flag = "#"))
cat("\n| model | D | fit | wall s | loop s | logp evals | grad evals | max err (ref sd) | sd ratio (min-max) | k-hat | converged | warned | accurate | note |\n")
cat("|---|---|---|---:|---:|---:|---:|---:|---|---:|---|---|---|---|\n")
for (i in seq_len(nrow(tab))) {
  t <- tab[i, ]
  cat(sprintf("| %s | %d | %s | %.3g | %s | %s | %s | %s | %s | %s | %s | %s | %s%s | %s |\n",
              t$model, t$D, t$fit, t$wall_s, fmt(t$loop_s, 2),
              ifelse(is.na(t$logp), "-", format(t$logp, big.mark = ",")),
              ifelse(is.na(t$grad), "-", format(t$grad, big.mark = ",")),
              fmt(t$max_err, 2),
              ifelse(is.na(t$sd_lo), "-", sprintf("%.2f-%.2f", t$sd_lo, t$sd_hi)),
              fmt(t$khat, 2), t$converged, t$warned, t$accurate,
              if (t$silent_bad) " **SILENT**" else "", t$note))
}

# Goals (issue 9)
med <- function(x) stats::median(x, na.rm = TRUE)
get <- function(fit_label, col) {
  v <- tab[tab$fit == fit_label, c("model", col)]
  stats::setNames(v[[col]], v$model)
}
cat("\nGoals:\n")
b_mf <- get("bbvi mf grad", "wall_s")
if (use_stan) {
  a_mf <- get("ADVI mf", "wall_s")
  common <- intersect(names(b_mf), names(a_mf))
  ratio <- b_mf[common] / a_mf[common]
  cat(sprintf("  time, bbvi default (mf, gradient) / ADVI mf default: median %.3f (per model: %s); goal <= 1\n",
              med(ratio), paste(sprintf("%s %.2f", common, ratio), collapse = ", ")))
  s_mf <- get("bbvi mf score", "wall_s")
  small <- intersect(common, unique(tab$model[tab$D <= 10]))
  rs <- s_mf[small] / a_mf[small]
  cat(sprintf("  time, bbvi mf score / ADVI mf, models with D <= 10: median %.3f, max %.3f (%s); goal <= 3\n",
              med(rs), max(rs, na.rm = TRUE), paste(sprintf("%s %.2f", small, rs), collapse = ", ")))
}
ev_def <- get("bbvi mf grad", "logp") + get("bbvi mf grad", "grad")
cat(sprintf("  evaluations, bbvi default (log p + gradient): median %s (log p only: median %s); goal median <= 2,000\n",
            format(med(ev_def), big.mark = ","), format(med(get("bbvi mf grad", "logp")), big.mark = ",")))
fr <- tab[tab$fit == "bbvi fr grad", ]
cat(sprintf("  full-rank with gradient: accurate on %d of %d models (median max_err %.3f); inaccurate without a warning or converged = FALSE: %s\n",
            sum(fr$accurate), nrow(fr), med(fr$max_err),
            if (any(fr$silent_bad)) paste(fr$model[fr$silent_bad], collapse = ", ") else "none"))
bb <- tab[grepl("^bbvi", tab$fit), ]
cat(sprintf("  all bbvi fits: %d of %d accurate; silent inaccurate fits: %s\n",
            sum(bb$accurate), nrow(bb),
            if (any(bb$silent_bad)) paste(bb$model[bb$silent_bad], bb$fit[bb$silent_bad], collapse = "; ") else "none"))
cat(sprintf("  R %s, bbvi %s%s, %s, nproc %s\n", getRversion(), utils::packageVersion("bbvi"),
            if (use_stan) paste0(", rstan ", utils::packageVersion("rstan")) else "",
            format(Sys.time(), "%Y-%m-%d %H:%M %Z"), parallel::detectCores()))
