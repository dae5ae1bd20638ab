# Shared set-up of the custom-model benches (bench_custom.R,
# bench_numeric_nuts.R), sourced with `here` (the bench folder) set: a dev
# build first on the library path (BBVI_LIB), bbvi and jsonlite, the
# posteriordb folder (first argument, default ../shared/posteriordb), the
# model definitions (custom_models.R) and env_list().
lib <- Sys.getenv("BBVI_LIB")
if (nzchar(lib)) .libPaths(c(lib, .libPaths()))
suppressPackageStartupMessages({
  library(bbvi)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
pdb <- if (length(args)) args[1] else "../shared/posteriordb"
source(file.path(here, "custom_models.R"))

# A comma-separated environment variable as a character vector (default
# when unset)
env_list <- function(name, default) {
  v <- Sys.getenv(name)
  if (nzchar(v)) strsplit(v, ",")[[1]] else default
}

# Scalar parameters of each named model
model_dims <- function(names) {
  vapply(names, function(n) sum(vapply(custom_models[[n]]$params, function(p) {
    x <- unclass(p); if (!is.null(x$dim)) x$dim else 1 }, 0)), 0)
}

# Stan: compile once into a cache folder (rstan writes the .rds next to the
# .stan file and reuses it while the file is unchanged).
stan_cache <- Sys.getenv("BENCH_STAN_CACHE",
                         file.path(dirname(tempdir()), "bbvi_bench_stan"))
compile_stan <- function(name, code) {
  dir.create(stan_cache, showWarnings = FALSE, recursive = TRUE)
  f <- file.path(stan_cache, paste0(name, ".stan"))
  if (!file.exists(f) || !identical(paste(readLines(f), collapse = "\n"), code))
    writeLines(code, f)
  # Debian's r-cran-bh has no include/ folder: point rstan at the system Boost
  boost <- if (nzchar(system.file("include", package = "BH"))) NULL else "/usr/include"
  t <- system.time(sm <- tryCatch(
    suppressMessages(rstan::stan_model(file = f, model_name = name, auto_write = TRUE,
                                       boost_lib = boost)),
    error = function(e) e))[["elapsed"]]
  list(model = sm, time = t)
}
