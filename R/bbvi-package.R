#' bbvi: black-box variational inference with a compiled core
#'
#' Fit Gaussian variational approximations to posteriors of custom models
#' ([bbvi_model()]) and GLMs (a formula), with the optimisation loop in C.
#' Start with [bbvi()].
#'
#' @name bbvi-package
#' @docType package
#' @keywords internal
#' @useDynLib bbvi, .registration = TRUE, .fixes = "C_"
#' @importFrom cli cli_progress_bar
NULL

# The C code calls cli's C progress API (R_GetCCallable("cli", ...)), which
# needs cli's DLL loaded: importing from cli loads it with bbvi.
