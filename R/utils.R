# Errors that name the argument and say what was expected.
abort_arg <- function(arg, expected, value, call = NULL) {
  cli::cli_abort(c("{.arg {arg}} must be {expected}.",
                   x = "It is {describe(value)}."), call = call)
}

describe <- function(x) {
  if (is.null(x)) return("NULL")
  if (is.function(x)) return("a function")
  cls <- if (is.object(x)) class(x)[1] else typeof(x)
  n <- length(x)
  if (n == 1 && is.atomic(x) && !is.object(x)) {
    if (is.na(x)) return(sprintf("NA (%s)", typeof(x)))
    if (is.character(x)) return(sprintf("the string \"%s\"", x))
    if (is.logical(x)) return(as.character(x))
    if (is.numeric(x)) return(sprintf("the number %s", format(x, digits = 6)))
  }
  if (n == 0) return(sprintf("an empty %s", cls))
  sprintf("%s %s of length %d", article(cls), cls, n)
}

article <- function(word) if (grepl("^[aeiouAEIOU]", word)) "an" else "a"

check_count <- function(x, arg, min = 1, allow_null = FALSE,
                        max = .Machine$integer.max) {
  if (allow_null && is.null(x)) return(invisible(x))
  if (!is.numeric(x) || length(x) != 1 || is.na(x) || !is.finite(x) ||
      x != round(x) || x < min || x > max) {
    expected <- if (is.numeric(x) && length(x) == 1 && isTRUE(x > max))
      sprintf("a whole number between %d and %s", min, format(max, big.mark = ","))
    else sprintf("a whole number >= %d", min)
    abort_arg(arg, expected, x)
  }
  invisible(x)
}

check_positive <- function(x, arg, allow_null = FALSE) {
  if (allow_null && is.null(x)) return(invisible(x))
  if (!is.numeric(x) || length(x) != 1 || is.na(x) || !is.finite(x) || x <= 0) {
    abort_arg(arg, "a positive number", x)
  }
  invisible(x)
}

check_flag <- function(x, arg) {
  if (!is.logical(x) || length(x) != 1 || is.na(x)) abort_arg(arg, "TRUE or FALSE", x)
  invisible(x)
}

# Run expr with R's RNG seeded, then put the user's RNG state back.
with_seed <- function(seed, expr) {
  if (is.null(seed)) return(expr)
  if (!is.numeric(seed) || length(seed) != 1 || is.na(seed) ||
      abs(seed) > .Machine$integer.max) {
    abort_arg("seed", "NULL or one number", seed)
  }
  genv <- globalenv()
  old <- if (exists(".Random.seed", envir = genv, inherits = FALSE))
    get(".Random.seed", envir = genv, inherits = FALSE)
  on.exit(if (is.null(old)) rm(".Random.seed", envir = genv)
          else assign(".Random.seed", old, envir = genv))
  set.seed(seed)
  expr
}

# A warning from a fit, formatted without cli: cli's formatting costs
# milliseconds per warning, more than a whole fit of a small model. The
# lines are the message and its "i"/"x" bullets, as diag_message() writes
# them (R/psis.R).
warn_lines <- function(...) warning(paste(c(...), collapse = "\n"), call. = FALSE)

# The same for a message during a fit (cli_inform() costs as much).
inform_lines <- function(...) message(paste(c(...), collapse = "\n"))
