# transforms.R: the map between a model's parameters on the constrained
# (user) scale, theta, and the unconstrained scale, zeta, where q and the
# samplers live. Scalars map coordinate by coordinate (identity, log,
# logit); a simplex (stick-breaking, K - 1 coordinates for K) and an ordered
# vector (cumulative sums of exponentials) map as a whole. src/transforms.c
# does the work; everything in R that goes from zeta to theta or back goes
# through constrain_draws() / unconstrain_theta().

# Transform kinds, numbered as src/transforms.c numbers them.
transform_kind <- function(p) {
  if (isTRUE(p$simplex)) 1L else if (isTRUE(p$ordered)) 2L else 0L
}

# A parameter's length on the unconstrained scale.
param_unc_size <- function(p) if (isTRUE(p$simplex)) p$dim - 1L else p$dim

# The model behind x: a model itself, or a fit (VI or MCMC) of one.
layout_model <- function(x) if (!is.null(x$parameters)) x else x$model

# The layout C reads: NULL when every parameter maps coordinate by
# coordinate (then C takes lower/upper alone, as it always has), else an
# integer 3 x n_par matrix of kind, theta length and zeta length.
transform_layout <- function(x) {
  params <- layout_model(x)$parameters
  if (is.null(params)) return(NULL)
  kinds <- vapply(params, transform_kind, integer(1))
  if (all(kinds == 0L)) return(NULL)
  tdim <- vapply(params, function(p) as.integer(p$dim), integer(1))
  zdim <- vapply(params, param_unc_size, integer(1))
  unname(rbind(kinds, tdim, zdim))
}

has_vector_transform <- function(x) !is.null(transform_layout(x))

# Coordinates of zeta (the dimension of q and of the samplers).
n_unconstrained <- function(x) {
  m <- layout_model(x)
  if (is.null(m$unc_sizes)) length(m$lower) else sum(m$unc_sizes)
}

# For each coordinate of theta, the coordinate of zeta it is a transform of
# on its own; NA inside a simplex or an ordered vector, whose marginals
# are not transformed marginals of q.
elementwise_index <- function(x) {
  params <- layout_model(x)$parameters
  lay <- transform_layout(x)
  if (is.null(lay)) return(seq_along(layout_model(x)$lower))
  z0 <- cumsum(c(0L, lay[3, ]))[seq_len(ncol(lay))]
  unlist(Map(function(k, n, z) if (k == 0L) z + seq_len(n) else rep(NA_integer_, n),
             lay[1, ], lay[2, ], z0), use.names = FALSE)
}

# Names of the coordinates of zeta: the scalar names where theta and zeta
# match coordinate by coordinate, `w_unc[k]` inside a simplex or an ordered
# vector `w`.
unc_names <- function(x) {
  m <- layout_model(x)
  if (!has_vector_transform(m)) return(m$par_names)
  unlist(Map(function(nm, p) {
    if (transform_kind(p) == 0L) {
      if (p$dim == 1) nm else sprintf("%s[%d]", nm, seq_len(p$dim))
    } else {
      sprintf("%s_unc[%d]", nm, seq_len(param_unc_size(p)))
    }
  }, names(m$parameters), m$parameters), use.names = FALSE)
}

# zeta (D_zeta x n, or one draw as a vector) -> theta (D_theta x n).
constrain_draws <- function(model, zeta) {
  .Call(C_transform_draws, as.double(zeta), as.double(model$lower),
        as.double(model$upper), transform_layout(model), FALSE)
}

# theta (D_theta x n, or one point as a vector) -> zeta (D_zeta x n).
unconstrain_theta <- function(model, theta) {
  .Call(C_transform_draws, as.double(theta), as.double(model$lower),
        as.double(model$upper), transform_layout(model), TRUE)
}

# A point on the constrained scale (flat, in parameter order) checked
# against the shapes of simplexes and ordered vectors: NULL if fine, else
# the message for an error about `arg`.
vector_support_problem <- function(model, theta) {
  m <- layout_model(model)
  at <- 0L
  for (nm in names(m$parameters)) {
    p <- m$parameters[[nm]]
    x <- theta[at + seq_len(p$dim)]
    at <- at + p$dim
    if (isTRUE(p$simplex)) {
      if (any(x <= 0) || abs(sum(x) - 1) > 1e-8 * p$dim) {
        return(sprintf("`%s` is a simplex: its %d elements must be positive and sum to 1 (they sum to %s).",
                       nm, p$dim, format(sum(x), digits = 10)))
      }
    } else if (isTRUE(p$ordered) && p$dim > 1 && any(diff(x) <= 0)) {
      return(sprintf("`%s` is ordered: its elements must be strictly increasing (element %d is not above element %d).",
                     nm, which(diff(x) <= 0)[1] + 1L, which(diff(x) <= 0)[1]))
    }
  }
  NULL
}
