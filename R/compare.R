#' Compare two posterior approximations parameter by parameter
#'
#' Sets a variational fit (from [bbvi()]) against MCMC draws (from
#' [sample_mcmc()]) of the same model: means, sds and quantiles side by side,
#' the difference of means in units of the reference sd, and the ratio of
#' sds. Any two fits with the same parameter names can be compared (two VI
#' fits, two MCMC runs); the second is the reference.
#'
#' Summaries of a `bbvi_fit` are exact under q (see [bbvi_fit-methods]);
#' those of a `bbvi_mcmc` come from its post-warmup draws. `z` is
#' `(vi_mean - mcmc_mean) / mcmc_sd`: values beyond about 0.1-0.2 in
#' absolute size mean the approximation is visibly off-centre. `sd_ratio` is
#' `vi_sd / mcmc_sd`; mean-field VI typically gives values below 1 on
#' correlated posteriors.
#'
#' @param vi A `bbvi_fit` or `bbvi_mcmc`: the approximation to check.
#' @param mc A `bbvi_fit` or `bbvi_mcmc`: the reference (usually MCMC).
#' @param pars Parameter names: for `compare_fits()` those to compare (all
#'   by default), for `plot()` those to draw (by default all; with more than
#'   9, the first 9 and a message saying so).
#' @return A data frame of class `bbvi_comparison`, one row per parameter,
#'   with columns `parameter`, `vi_mean`, `mcmc_mean`, `vi_sd`, `mcmc_sd`,
#'   `vi_q2.5`, `mcmc_q2.5`, `vi_q50`, `mcmc_q50`, `vi_q97.5`, `mcmc_q97.5`,
#'   `z` and `sd_ratio`. Its `plot()` method overlays the marginal densities
#'   (from each object's draws).
#' @examples
#' y <- c(1.2, 0.4, 2.1, 1.7, 0.9)
#' m <- bbvi_model(
#'   function(theta, data) sum(dnorm(data, theta$mu, 1, log = TRUE)) +
#'     dnorm(theta$mu, 0, 10, log = TRUE),
#'   parameters = list(mu = param()), data = y,
#'   gradient = function(theta, data) sum(data - theta$mu) - theta$mu / 100)
#' fit <- bbvi(m, seed = 1)
#' mc <- sample_mcmc(m, chains = 2, iter = 1000, seed = 1)
#' cmp <- compare_fits(fit, mc)
#' cmp
#' plot(cmp)
#' @export
compare_fits <- function(vi, mc, pars = NULL) {
  ok_class <- function(x) inherits(x, "bbvi_fit") || inherits(x, "bbvi_mcmc")
  if (!ok_class(vi)) abort_arg("vi", "a bbvi_fit or bbvi_mcmc", vi)
  if (!ok_class(mc)) abort_arg("mc", "a bbvi_fit or bbvi_mcmc", mc)
  if (!setequal(vi$par_names, mc$par_names)) {
    only_vi <- setdiff(vi$par_names, mc$par_names)
    only_mc <- setdiff(mc$par_names, vi$par_names)
    cli::cli_abort(c("{.arg vi} and {.arg mc} must have the same parameters.",
                     x = "Only in {.arg vi}: {.val {only_vi}}.",
                     x = "Only in {.arg mc}: {.val {only_mc}}."), call = NULL)
  }
  nms <- if (is.null(pars)) mc$par_names else pars
  if (!is.character(nms) || length(nms) == 0 || !all(nms %in% mc$par_names)) {
    abort_arg("pars", "names of the fits' parameters", pars)
  }
  a <- summary(vi)$table[nms, , drop = FALSE]
  b <- summary(mc)$table[nms, , drop = FALSE]
  out <- data.frame(
    parameter = nms,
    vi_mean = a[, "mean"], mcmc_mean = b[, "mean"],
    vi_sd = a[, "sd"], mcmc_sd = b[, "sd"],
    vi_q2.5 = a[, "2.5%"], mcmc_q2.5 = b[, "2.5%"],
    vi_q50 = a[, "50%"], mcmc_q50 = b[, "50%"],
    vi_q97.5 = a[, "97.5%"], mcmc_q97.5 = b[, "97.5%"],
    row.names = NULL)
  out$z <- (out$vi_mean - out$mcmc_mean) / out$mcmc_sd
  out$sd_ratio <- out$vi_sd / out$mcmc_sd
  attr(out, "labels") <- c(fit_label(vi), fit_label(mc))
  # Monte Carlo error of z from the reference's own MCMC error (0 for a VI
  # reference, whose summaries are exact under q)
  attr(out, "z_mcse") <- if ("mcse_mean" %in% colnames(b)) {
    unname(b[, "mcse_mean"] / b[, "sd"])
  } else rep(0, length(nms))
  attr(out, "draws") <- list(fit_draws(vi)[, nms, drop = FALSE],
                             fit_draws(mc)[, nms, drop = FALSE])
  class(out) <- c("bbvi_comparison", "data.frame")
  out
}

# the draws a fit keeps (a bbvi_fit's fixed set; all post-warmup MCMC draws)
fit_draws <- function(x) if (inherits(x, "bbvi_fit")) fit_own_draws(x) else as.matrix(x)

fit_label <- function(x) {
  if (inherits(x, "bbvi_mcmc")) toupper(x$method) else sprintf("VI (%s)", x$method)
}

#' @rdname compare_fits
#' @param x A `bbvi_comparison`.
#' @param digits Significant digits of the numbers printed.
#' @param ... Unused.
#' @details `print()` shows the means, sds, `z` and `sd_ratio` (the columns
#'   that fit in 80 characters) and the Monte Carlo error of `z` that comes
#'   from the reference's draws; the quantiles are in the data frame
#'   (`as.data.frame(x)`).
#' @export
print.bbvi_comparison <- function(x, digits = 3, ...) {
  check_digits(digits)
  lab <- attr(x, "labels")
  cat(sprintf("%s against %s (the reference)\n", lab[1], lab[2]))
  cat(sprintf("z = (mean - reference mean) / reference sd; sd_ratio = sd / reference sd\n"))
  zse <- attr(x, "z_mcse")
  if (!is.null(zse) && any(zse > 0, na.rm = TRUE)) {
    cat(sprintf("Monte Carlo error of z from the reference draws: up to %s\n",
                format(signif(max(zse, na.rm = TRUE), 2))))
  }
  cat("\n")
  tab <- as.matrix(as.data.frame(unclass(x)[c("vi_mean", "mcmc_mean", "vi_sd",
                                              "mcmc_sd", "z", "sd_ratio")]))
  rownames(tab) <- x$parameter
  colnames(tab) <- c("mean", "ref_mean", "sd", "ref_sd", "z", "sd_ratio")
  # z and sd_ratio to two decimals: their Monte Carlo error is rarely below 0.01
  print_table(tab, digits, fixed = c(z = 2L, sd_ratio = 2L))
  invisible(x)
}

#' @rdname compare_fits
#' @export
plot.bbvi_comparison <- function(x, pars = NULL, ...) {
  check_dots_empty(...)
  nms <- default_pars(x$parameter, 9L, pars)
  if (!is.character(nms) || !all(nms %in% x$parameter)) {
    abort_arg("pars", "names of the compared parameters", pars)
  }
  dr <- attr(x, "draws")
  lab <- attr(x, "labels")
  cols <- c("#D55E00", "#0072B2")
  k <- length(nms)
  nc <- min(3, k)
  old <- graphics::par(mfrow = c(ceiling(k / nc), nc), mar = c(4, 4, 2, 1))
  on.exit(graphics::par(old))
  for (nm in nms) {
    d <- lapply(dr, function(m) stats::density(m[, nm]))
    xl <- range(d[[1]]$x, d[[2]]$x)
    yl <- c(0, max(d[[1]]$y, d[[2]]$y))
    graphics::plot(d[[2]], xlim = xl, ylim = yl, col = cols[2], lwd = 2,
                   main = nm, xlab = nm, ylab = "density")
    graphics::lines(d[[1]], col = cols[1], lwd = 2, lty = 2)
    if (nm == nms[1]) {
      graphics::legend("topright", legend = lab, col = cols, lty = c(2, 1),
                       lwd = 2, bty = "n", cex = 0.8)
    }
  }
  invisible(x)
}
