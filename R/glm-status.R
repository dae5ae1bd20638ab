# Why the quadrature path's Newton iterations stopped, and whether the
# posterior exists at all.
#
# With flat priors a binomial or poisson GLM has no proper posterior when
# the likelihood never decreases along some direction d of the flat
# coefficients (a recession direction): under perfect or quasi-complete
# separation, an all-0 or all-1 response, or a group of zero counts. The
# ELBO then increases without bound as q's mean moves along d and its scale
# grows, the Newton iterations chase it until the quadrature saturates, and
# the last iterate looks stationary. glm_recession() looks for such a
# direction among a few candidates (the recent drift of the Newton
# iterations, the whole path from the start, the coordinate axes of the flat
# coefficients) and checks it exactly against the data: a direction that
# passes proves that the posterior is improper. Failing to find one proves
# nothing, but the drift of a run-away fit is such a direction to rounding.
# glm_quad_status() runs it on the quadrature path (with the C side's stop
# code); glm_check_proper() on every fit, where a cheaper test along rays
# (does the log density keep rising?) backs it up.

# Called by glm_quad() with the result of C_glm_quad_fit: sets converged,
# stop_reason and stop_cause; warns (unless quiet) when the fit did not
# converge, naming the likely cause.
glm_quad_status <- function(res, model, quiet = FALSE) {
  tg <- model$target
  status <- res$status   # src/glm_quad.c: converged, max_iter, line_search, stalled
  rec <- if (!quiet) glm_recession(tg, res) else NULL
  if (!all(is.finite(res$mean)) || !all(is.finite(res$chol))) {
    cli::cli_abort(c("The quadrature fit diverged (non-finite variational parameters).",
                     if (!is.null(rec)) c(x = "{rec$cause}", i = "{rec$advice}")
                     else c(i = "With flat priors this happens when the data separate the classes or the posterior is improper; try proper priors.")),
                   call = NULL)
  }
  res$stop_cause <- NULL
  if (!is.null(rec)) {
    res$converged <- FALSE
    res$stop <- NA_character_
    res$stop_reason <- improper_reason(rec)
    res$stop_cause <- rec$kind
    if (!quiet) warn_improper(rec)
    return(res)
  }
  if (status == "line_search") {
    res$converged <- FALSE
    res$stop_reason <- "line search failed: no step along the Newton direction increases the ELBO, yet the Newton step is not small"
    if (!quiet) {
      cli::cli_warn(c(
        "The quadrature fit did not converge: the line search failed after {res$iterations} Newton iteration{?s}, {format(res$newton_step, digits = 2)} posterior sds from a stationary point.",
        i = "Flat priors on coefficients the data barely identify (near-separation, rare outcomes) can make the posterior nearly improper; give them a proper prior, e.g. {.code prior = normal(0, 2.5)}, or compare with {.code path = \"stochastic\"} or {.fn sample_mcmc}."),
        class = "bbvi_not_converged")
    }
    return(res)
  }
  if (status == "max_iter") {
    res$converged <- FALSE
    res$stop_reason <- "max_iter reached while still moving"
    if (!quiet) {
      cli::cli_warn(c("The quadrature fit did not converge in {res$iterations} Newton iterations.",
                      i = "Increase {.arg max_iter}; an improper posterior (flat priors, separation) also does this."),
                    class = "bbvi_not_converged")
    }
    return(res)
  }
  res$converged <- TRUE
  res$stop_reason <- "converged"
  res
}


improper_reason <- function(rec) {
  sprintf("no proper posterior (%s, flat priors): the ELBO increases without bound as coefficients grow",
          rec$label)
}

warn_improper <- function(rec) {
  cli::cli_warn(c(
    "The posterior is improper: with flat priors the likelihood keeps increasing as {.field {rec$names}} {?runs/run} off to infinity, so no fit is meaningful.",
    x = "{rec$cause}", i = "{rec$advice}"), class = "bbvi_improper_posterior", call = NULL)
}

# Every GLM fit (both paths): is the posterior proper? A direction proven
# by glm_recession() first; otherwise the test of the log density along
# rays: from the origin through q's mean, and along each flat-prior
# coordinate, a proper posterior falls once it is past its mass; an
# improper one keeps rising.
glm_check_proper <- function(model, res) {
  tg <- model$target
  flat <- tg$prior_type == prior_code[["flat"]]
  if (!any(flat) || tg$family == glm_family_code[["gaussian"]]) return(res)   # gaussian: not checked here
  # the quadrature path has checked already (glm_quad_status)
  if (startsWith(as.character(res$stop_reason %||% ""), "no proper posterior")) return(res)
  rec <- glm_recession(tg, res)
  if (!is.null(rec)) {
    res$converged <- FALSE
    res$stop <- NA_character_
    res$stop_reason <- improper_reason(rec)
    warn_improper(rec)
    return(res)
  }
  # no direction proven: the rays from the origin through q's mean and along
  # each flat coordinate far from 0; an improper posterior keeps rising
  P <- length(tg$prior_type)
  mu <- as.double(res$mean)
  sd <- if (is.null(res$q)) sqrt(rowSums(matrix(res$chol, length(mu))^2)) else
    q_marginals(q_from_c(res$q))$sd   # the stochastic path's q (R/q.R)
  # rays: the whole mean, and each flat coordinate that sits more than one
  # sd from 0 (doubling a coordinate near 0 moves it nowhere)
  dirs <- list(mu)
  for (j in which(flat[seq_len(P)] & abs(mu[seq_len(P)]) > sd[seq_len(P)])) {
    dirs[[length(dirs) + 1]] <- replace(numeric(length(mu)), j, mu[j])
  }
  pts <- do.call(cbind, lapply(dirs, function(d) cbind(mu + d, mu + 3 * d)))
  lp <- as.double(.Call(C_logdens, tg, as.double(model$lower), as.double(model$upper),
                        cbind(mu, pts), FALSE))
  lp0 <- lp[1]
  rising <- vapply(seq_along(dirs), function(k) {
    a <- lp[2 * k]; b <- lp[2 * k + 1]
    is.finite(a) && is.finite(b) && a >= lp0 - 1e-6 && b >= a - 1e-6
  }, logical(1))
  if (!any(rising)) return(res)
  res$converged <- FALSE
  res$stop <- NA_character_
  res$stop_reason <- "no proper posterior: the log density keeps rising along a direction of the coefficients"
  y <- tg$y / pmax(glm_tg_vec(tg, "trials"), 1)
  cause <- if (all(y == 0) || (tg$family == glm_family_code[["binomial"]] && all(y == 1)))
    sprintf("the response is all %d, so the intercept runs off to %sInf",
            if (all(y == 0)) 0L else 1L, if (all(y == 0)) "-" else "+")
  else if (tg$family == glm_family_code[["binomial"]]) "the predictors separate the 0s from the 1s (perfect or quasi-complete separation)"
  else "some coefficient can grow without bound (for instance a factor level with all-zero counts)"
  cli::cli_warn(c(
    "The posterior is improper: {cause}, and {cli::qty(sum(flat))}the prior{?s} on {.val {model$par_names[which(flat)]}} {?is/are} flat.",
    x = "The fit stopped at an arbitrary point (coefficients around {format(max(abs(mu)), digits = 3)}); it is not an answer.",
    i = "Use a proper prior (the defaults are weakly informative), or drop the separating predictor."),
    class = "bbvi_improper_posterior", call = NULL)
  res
}

# A direction along which the likelihood never decreases while every prior
# is flat, among a few candidates; NULL when none is found. Otherwise a list:
# kind ("all_zero", "all_one", "separation", "zero_counts"), the names of the coefficients that run away (up to 3),
# cause and advice (sentences for the user).
glm_recession <- function(tg, res) {
  fam <- names(glm_family_code)[match(tg$family, glm_family_code)]
  if (fam == "gaussian") return(NULL)
  P <- length(tg$prior_type)
  flat <- tg$prior_type == prior_code[["flat"]]
  if (!any(flat)) return(NULL)
  trials <- glm_tg_vec(tg, "trials")
  use <- glm_tg_vec(tg, "weights") > 0 & (fam == "poisson" | trials > 0)
  if (!any(use)) return(NULL)
  y <- tg$y[use]
  n <- trials[use]
  cands <- list(res$drift[seq_len(P)], res$mean[seq_len(P)] - tg$init[seq_len(P)])
  for (j in which(flat)) {
    e <- numeric(P)
    e[j] <- 1
    cands <- c(cands, list(e, -e))
  }
  for (d in cands) {
    if (length(d) != P || !all(is.finite(d))) next
    d[!flat] <- 0
    if (!any(d != 0)) next
    s <- drop(glm_linpred(tg, d))[use]
    big <- max(abs(s))
    if (!is.finite(big) || big == 0) next
    tol <- 1e-6 * big
    ok <- if (fam == "binomial") {
      ifelse(y <= 0, s <= tol, ifelse(y >= n, s >= -tol, abs(s) <= tol))
    } else {
      ifelse(y <= 0, s <= tol, abs(s) <= tol)
    }
    if (!all(ok)) next
    return(recession_report(fam, d, s, tol, y, n, tg$names))
  }
  NULL
}

recession_report <- function(fam, d, s, tol, y, n, nms) {
  # the coefficients that carry the direction, largest first
  rel <- abs(d) / max(abs(d))
  idx <- which(rel > 1e-3)
  idx <- idx[order(-rel[idx])]
  shown <- utils::head(idx, 3)
  coefs <- paste0("`", nms[shown], "`", collapse = ", ")
  if (length(idx) > 3) coefs <- paste(coefs, "and", length(idx) - 3, "more")
  comb <- if (length(idx) == 1) coefs else paste("a linear combination of", coefs)
  # which of the flat priors are involved
  int <- nms[idx] == "(Intercept)"
  flatp <- sprintf("flat priors (%s)", paste(c(if (any(!int)) "`prior = NULL`",
                                              if (any(int)) "`prior_intercept = NULL`"),
                                            collapse = ", "))
  if (fam == "binomial" && all(y <= 0)) {
    kind <- "all_zero"
    cause <- sprintf("The response is all 0 (no successes in %d observations): with %s the success probability is pushed to 0.", length(y), flatp)
  } else if (fam == "binomial" && all(y >= n)) {
    kind <- "all_one"
    cause <- sprintf("The response is all 1 (no failures in %d observations): with %s the success probability is pushed to 1.", length(y), flatp)
  } else if (fam == "poisson" && all(y <= 0)) {
    kind <- "all_zero"
    cause <- sprintf("The response is all 0 (every count of %d observations): with %s the rate is pushed to 0.", length(y), flatp)
  } else if (fam == "poisson") {
    kind <- "zero_counts"
    cause <- sprintf("The %d observations whose linear predictor moves with %s all have count 0 (e.g. a factor level with only zeros): with %s their rate is pushed to 0.",
                     sum(abs(s) > tol), coefs, flatp)
  } else {
    # the drift direction of a run-away fit leaves the observations that pin
    # it (eta bounded while the others diverge) at the boundary to rounding:
    # perfect and quasi-complete separation are told apart only roughly
    nb <- sum(abs(s) <= tol)
    kind <- "separation"
    how <- if (nb == 0) "Perfect separation" else
      sprintf("Perfect or quasi-complete separation (%d observation%s on or near the boundary)",
              nb, if (nb == 1) "" else "s")
    cause <- sprintf("%s: %s separates the 0s from the 1s of the response; with %s the fitted probabilities are pushed to 0 and 1.",
                     how, comb, flatp)
  }
  advice <- switch(kind,
    all_zero = , all_one = "Give the coefficients a proper prior, e.g. the defaults `prior = normal(0, 2.5)` and `prior_intercept = normal(0, 10)`: the data alone cannot bound them.",
    zero_counts = "Give the coefficients a proper prior, e.g. the default `prior = normal(0, 2.5)`, or merge the all-zero group with another.",
    "Give the coefficients a proper prior, e.g. the default `prior = normal(0, 2.5)`: it keeps the separating coefficients finite and the fit meaningful.")
  label <- c(all_zero = "all-0 response", all_one = "all-1 response",
             zero_counts = "a group of zero counts", separation = "separation")[[kind]]
  list(kind = kind, label = label, names = nms[shown], cause = cause, advice = advice)
}
