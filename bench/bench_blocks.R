# Benchmark: a logistic regression on a table that is read in row blocks
# (glm_blocks_model() + dbi_blocks(), SQLite file on disk through RSQLite),
# against the in-memory matrix fit bbvi(X, y) of the same data, each in a
# child Rscript under /usr/bin/time -v (peak memory of that run alone).
#
#   Rscript bench/bench_blocks.R [N = 1e6] [block_rows = 1e5]
#   BBVI_LIB=<library> Rscript bench/bench_blocks.R 1e6
#
# The database is written once (N x 20 standard-normal predictors, y ~
# Bernoulli(logistic(-1 + X beta))) to a file in tempdir(); the blocks fit
# never holds more than block_rows rows. Reported: seconds, passes over the
# table (log-joint calls), peak resident memory of the child, the table's
# size on disk and in memory (N x 21 doubles), and the largest difference of
# the posterior means from the in-memory fit, in its posterior sds.
args <- commandArgs(trailingOnly = TRUE)
lib <- Sys.getenv("BBVI_LIB")

if (length(args) && args[1] == "--child") {
  if (nzchar(lib)) .libPaths(c(lib, .libPaths()))
  suppressPackageStartupMessages(library(bbvi))
  mode <- args[2]; db <- args[3]; block_rows <- as.numeric(args[4]); out <- args[5]
  con <- DBI::dbConnect(RSQLite::SQLite(), db)
  cols <- setdiff(DBI::dbListFields(con, "d"), "y")
  prior <- normal(0, c(10, rep(2.5, length(cols) - 1)))
  t0 <- proc.time()[["elapsed"]]
  if (mode == "blocks") {
    passes <- 0
    db_blocks <- dbi_blocks(con, paste("SELECT", paste(c(cols, "y"), collapse = ", "),
                                       "FROM d ORDER BY rowid"),
                            y = "y", x = cols, block_rows = block_rows)
    counted <- function(f) { passes <<- passes + 1; db_blocks(f) }
    m <- glm_blocks_model(counted, cols, family = binomial(), prior = prior)
    fit <- suppressWarnings(bbvi(m, method = "fullrank", seed = 1))
  } else {
    d <- DBI::dbGetQuery(con, "SELECT * FROM d ORDER BY rowid")
    X <- as.matrix(d[cols]); y <- d$y; rm(d)
    # the same priors as written; the GLM path puts the intercept's prior on
    # centred predictors (rstanarm's convention), a difference the data
    # (N rows) make negligible
    fit <- suppressWarnings(bbvi(X[, -1], y, family = binomial(), intercept = TRUE,
                                 prior = normal(0, 2.5), prior_intercept = normal(0, 10),
                                 seed = 1))
    passes <- NA
  }
  secs <- proc.time()[["elapsed"]] - t0
  DBI::dbDisconnect(con)
  saveRDS(list(seconds = secs, passes = passes, mean = coef(fit),
               sd = sqrt(diag(vcov(fit)))), out)
  quit(save = "no")
}

if (nzchar(lib)) .libPaths(c(lib, .libPaths()))
N <- if (length(args) >= 1) as.numeric(args[1]) else 1e6
block_rows <- if (length(args) >= 2) as.numeric(args[2]) else 1e5
p <- 20
db <- file.path(tempdir(), sprintf("bench_blocks_%g.sqlite", N))
con <- DBI::dbConnect(RSQLite::SQLite(), db)
set.seed(1)
beta <- seq(-0.5, 0.5, length.out = p)
for (s in seq(1, N, by = 1e5)) {
  n <- min(1e5, N - s + 1)
  X <- matrix(rnorm(n * p), n, p, dimnames = list(NULL, paste0("x", seq_len(p))))
  y <- rbinom(n, 1, plogis(-1 + drop(X %*% beta)))
  DBI::dbWriteTable(con, "d", data.frame(intercept = 1, X, y = y), append = s > 1)
}
DBI::dbDisconnect(con)
script <- normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1]))
run <- function(mode) {
  out <- tempfile(fileext = ".rds"); tv <- tempfile()
  system2("/usr/bin/time", c("-v", "-o", tv, "Rscript", script, "--child", mode, db,
                             format(block_rows, scientific = FALSE), out),
          env = if (nzchar(lib)) paste0("BBVI_LIB=", lib))
  tm <- readLines(tv)
  peak_kb <- as.numeric(sub(".*: ", "", grep("Maximum resident", tm, value = TRUE)))
  c(readRDS(out), peak_MB = peak_kb / 1024)
}
mem <- run("memory")
blk <- run("blocks")
size_mem <- N * (p + 2) * 8 / 2^20
tab <- data.frame(
  route = c("in memory: bbvi(X, y)", sprintf("blocks of %g rows: glm_blocks_model(dbi_blocks())", block_rows)),
  N = N, seconds = round(c(mem$seconds, blk$seconds), 1),
  passes = c(NA, blk$passes),
  peak_MB = round(c(mem$peak_MB, blk$peak_MB)),
  table_in_memory_MB = round(size_mem),
  db_file_MB = round(file.size(db) / 2^20),
  max_mean_diff_sd = c(0, signif(max(abs(blk$mean - mem$mean) / mem$sd), 2)),
  sd_ratio_range = c("1-1", sprintf("%.3f-%.3f", min(blk$sd / mem$sd), max(blk$sd / mem$sd))))
cat(sprintf("Machine: %s, %d cores; R %s; %s\n", Sys.info()[["nodename"]],
            parallel::detectCores(), getRversion(), format(Sys.time(), "%Y-%m-%d %H:%M UTC", tz = "UTC")))
print(tab, row.names = FALSE)
unlink(db)
