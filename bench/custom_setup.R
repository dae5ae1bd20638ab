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
