library(testthat)
library(bbvi)

# Error-message snapshots are part of the tests: run them under R CMD check too.
Sys.setenv(NOT_CRAN = "true")
test_check("bbvi")
