# Independent tasks (MCMC chains, VI restarts) on any future backend, with
# results that do not depend on the backend or the number of workers.
#
# Every task gets its own L'Ecuyer-CMRG stream (parallel::nextRNGStream()),
# derived from `seed` (or from one draw of R's stream, so that set.seed()
# before the call reproduces it): the task runs with that stream as R's
# RNG, wherever it runs, and the caller's RNG kind and state are restored.
# Tasks go through future.apply when it is installed (in parallel under a
# parallel future plan), otherwise through lapply().

# n L'Ecuyer-CMRG seeds (integer vectors of length 7, .Random.seed format).
rng_streams <- function(n, seed = NULL) {
  base <- with_seed(seed, sample.int(.Machine$integer.max, 1L))
  s <- with_rng_state(NULL, {
    RNGkind("L'Ecuyer-CMRG")
    set.seed(base)
    get(".Random.seed", envir = globalenv())
  })
  out <- vector("list", n)
  for (k in seq_len(n)) {
    s <- parallel::nextRNGStream(s)
    out[[k]] <- s
  }
  out
}

# Evaluates expr with R's RNG set to `state` (a .Random.seed vector; NULL
# leaves it as it is), then restores the caller's RNG kind and state.
with_rng_state <- function(state, expr) {
  genv <- globalenv()
  kind <- RNGkind()
  old <- if (exists(".Random.seed", envir = genv, inherits = FALSE))
    get(".Random.seed", envir = genv, inherits = FALSE)
  on.exit({
    RNGkind(kind[1], kind[2], kind[3])
    if (is.null(old)) {
      if (exists(".Random.seed", envir = genv, inherits = FALSE)) rm(".Random.seed", envir = genv)
    } else assign(".Random.seed", old, envir = genv)
  })
  if (!is.null(state)) assign(".Random.seed", state, envir = genv)
  expr
}

# Runs fun(k, ...) for k in seq_len(n), task k with stream streams[[k]];
# in parallel under a parallel future plan (the arguments in `...` are
# sent to the workers; see carry_model_globals() for the user's functions).
run_tasks <- function(n, streams, fun, ...) {
  task <- function(k, ...) with_rng_state(streams[[k]], fun(k, ...))
  if (n > 1 && requireNamespace("future.apply", quietly = TRUE) &&
      !inherits(future::plan(), "sequential")) {
    return(future.apply::future_lapply(seq_len(n), task, ..., future.seed = NULL,
                                       future.packages = "bbvi"))
  }
  lapply(seq_len(n), task, ...)
}

# A user's function sent to another R process takes its environment along,
# but not the global environment: a variable it uses from there (a data
# set, a constant, a helper function defined at top level) is missing on a
# multisession or cluster worker. carry_globals() puts copies of those
# variables in a new environment between the function and its own, so
# that the function finds them wherever it runs (values as they are now;
# the function behaves the same).
carry_globals <- function(fn, depth = 0L) {
  if (!is.function(fn) || is.primitive(fn) || depth > 3L) return(fn)
  env <- environment(fn)
  if (is.null(env) || !requireNamespace("codetools", quietly = TRUE)) return(fn)
  nms <- tryCatch(codetools::findGlobals(fn), error = function(e) character())
  vals <- list()
  for (nm in nms) {
    where <- env_where(nm, env)
    if (!identical(where, globalenv())) next
    v <- get(nm, envir = where, inherits = FALSE)
    if (is.function(v)) v <- carry_globals(v, depth + 1L)
    vals[nm] <- list(v)
  }
  if (!length(vals)) return(fn)
  environment(fn) <- list2env(vals, parent = env)
  fn
}

env_where <- function(nm, env) {
  while (!identical(env, emptyenv())) {
    if (exists(nm, envir = env, inherits = FALSE)) return(env)
    env <- parent.env(env)
  }
  NULL
}

# The user functions of a bbvi_model (log-joint, gradient, minibatch
# pieces: every function it holds) with their globals carried.
carry_model_globals <- function(model) {
  if (!inherits(model, "bbvi_model")) return(model)
  for (nm in names(model)) {
    if (is.function(model[[nm]])) model[[nm]] <- carry_globals(model[[nm]])
  }
  model
}

# True when tasks would leave this R process.
parallel_plan <- function() {
  requireNamespace("future", quietly = TRUE) && !inherits(future::plan(), "sequential")
}
