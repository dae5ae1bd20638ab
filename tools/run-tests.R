# Runs the installed bbvi's testthat suite (optionally only the files whose
# names match a filter) and prints one totals line; used by the sanitizer
# and valgrind scripts. Usage: Rscript tools/run-tests.R TESTDIR [FILTER],
# or source() it and call run_bbvi_tests().
run_bbvi_tests <- function(dir, filter = "") {
  res <- testthat::test_dir(dir, package = "bbvi", load_package = "installed",
                            stop_on_failure = FALSE,
                            filter = if (nzchar(filter)) filter else NULL,
                            reporter = "summary")
  df <- as.data.frame(res)
  cat(sprintf("\nTESTS: %d passed, %d failed, %d errors, %d skipped\n",
              sum(df$passed), sum(df$failed), sum(df$error), sum(df$skipped)))
}
args <- commandArgs(trailingOnly = TRUE)
if (length(args)) run_bbvi_tests(args[1], if (length(args) > 1) args[2] else "")
