# plot(fit, plotfun): rstanarm-style plots through bayesplot (ggplot2), with
# base-graphics fallbacks when bayesplot is not installed. Called from
# plot.bbvi_fit() and plot.bbvi_mcmc() when `plotfun` is given.
plot_dispatch <- function(x, plotfun, pars = NULL, ...) {
  is_mcmc <- inherits(x, "bbvi_mcmc")
  choices <- c("areas", "intervals", "dens", "hist", if (is_mcmc) "trace" else "elbo")
  plotfun <- match_arg(plotfun, choices, "plotfun")
  if (plotfun == "elbo") {
    check_dots_empty(...)
    return(plot_elbo_trace(x))
  }
  arr <- as.array(x)
  nms <- dimnames(arr)[[3]]
  if (is.null(pars)) pars <- nms
  if (!is.character(pars) || length(pars) == 0 || !all(pars %in% nms)) {
    abort_arg("pars", "names of the fit's parameters", pars)
  }
  if (requireNamespace("bayesplot", quietly = TRUE)) {
    fun <- get(paste0("mcmc_", plotfun), envir = asNamespace("bayesplot"))
    return(fun(arr, pars = pars, ...))
  }
  check_dots_empty(...)
  m <- matrix(arr[, , pars, drop = FALSE], ncol = length(pars),
              dimnames = list(NULL, pars))
  if (plotfun %in% c("areas", "intervals")) {
    q <- t(apply(m, 2, stats::quantile, probs = c(0.05, 0.25, 0.5, 0.75, 0.95)))
    k <- length(pars)
    graphics::plot(range(q), c(0.5, k + 0.5), type = "n", yaxt = "n",
                   xlab = "value", ylab = "", main = "50% and 90% intervals")
    graphics::axis(2, at = k:1, labels = pars, las = 1)
    graphics::segments(q[, 1], k:1, q[, 5], k:1)
    graphics::segments(q[, 2], k:1, q[, 4], k:1, lwd = 4)
    graphics::points(q[, 3], k:1, pch = 19)
  } else if (plotfun == "trace") {
    old <- graphics::par(mfrow = grDevices::n2mfrow(length(pars)))
    on.exit(graphics::par(old))
    for (p in pars) graphics::matplot(arr[, , p], type = "l", lty = 1, main = p,
                                      xlab = "iteration", ylab = p)
  } else {
    old <- graphics::par(mfrow = grDevices::n2mfrow(length(pars)))
    on.exit(graphics::par(old))
    for (p in pars) {
      if (plotfun == "dens") graphics::plot(stats::density(m[, p]), main = p, xlab = p)
      else graphics::hist(m[, p], main = p, xlab = p)
    }
  }
  invisible(x)
}

plot_elbo_trace <- function(x) {
  tr <- elbo(x)
  keep <- is.finite(tr$elbo)
  graphics::plot(tr$iteration[keep], tr$elbo[keep], type = "l", col = "grey40",
                 xlab = "iteration", ylab = "ELBO", main = "ELBO trace")
  w <- min(100L, max(1L, sum(keep) %/% 10L))
  if (sum(keep) > w) {
    sm <- stats::filter(tr$elbo[keep], rep(1 / w, w), sides = 1)
    graphics::lines(tr$iteration[keep], sm, col = "red", lwd = 2)
  }
  invisible(x)
}

# The parameters a default plot shows: all of them up to `max` (what fits on
# one page), else the first `max` with a message saying which and how to
# ask for the others; never a silent cut.
default_pars <- function(all, max, pars = NULL) {
  if (!is.null(pars) || length(all) <= max) return(pars %||% all)
  shown <- all[seq_len(max)]
  example <- sprintf('pars = c("%s")', all[max + 1L])
  cli::cli_inform(c(
    "Showing {max} of {length(all)} parameters: {.val {shown}}.",
    i = "Choose others with {.arg pars}, e.g. {.code {example}}."))
  shown
}
