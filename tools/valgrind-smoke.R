# Every C path of the VI core once, small and fast: both families, both
# estimators, both optimisers, per-draw / vectorized / compiled targets,
# bounded parameters, the error exits of the C loop. Used by
# tools/valgrind.sh before the test files (which cover the R side).
library(bbvi)
fast <- list(seed = 1, max_iter = 300, window = 50, draws = 200, samples = 4)
fit <- function(m, ...) suppressWarnings(do.call(bbvi, c(list(m), list(...), fast)))
y <- c(1.2, 0.4, 2.1, 1.7)
lj <- function(theta, data) sum(dnorm(data, theta$mu, theta$s, log = TRUE)) +
  dnorm(theta$mu, 0, 10, log = TRUE) + dexp(theta$s, 1, log = TRUE) +
  sum(dbeta(theta$p, 2, 2, log = TRUE))
gr <- function(theta, data) list(mu = sum(data - theta$mu) / theta$s^2 - theta$mu / 100,
                                 s = -length(data) / theta$s + sum((data - theta$mu)^2) / theta$s^3 - 1,
                                 p = 1 / theta$p - 1 / (1 - theta$p))
pars <- list(mu = param(), s = param(lower = 0), p = param(dim = 2, lower = 0, upper = 1))
m <- bbvi_model(lj, pars, data = y, gradient = gr)
ljv <- function(theta, data) vapply(seq_along(theta$mu), function(i)
  lj(list(mu = theta$mu[i], s = theta$s[i], p = theta$p[i, ]), data), 0)
mv <- bbvi_model(ljv, pars, data = y, vectorized = TRUE)
nat <- bbvi_model(native_logjoint("bbvi:mvnormal", has_gradient = TRUE,
                                  data = list(c(1, -1), diag(2))),
                  list(z = param(dim = 2)))
X <- cbind(1, c(-1, 0.5, 2, -0.3, 1)); yy <- c(0, 1, 1, 0, 1)
logi <- bbvi_model(native_logjoint("bbvi:logistic", has_gradient = TRUE),
                   list(b = param(dim = 2)), data = list(X, yy, 2.5))
for (meth in c("meanfield", "fullrank")) {
  for (est in c("score", "reparam")) {
    for (opt in c("adagrad", "adam")) {
      f <- fit(m, method = meth, estimator = est, optimizer = opt)
      invisible(list(coef(f), vcov(f), confint(f), summary(f), as.matrix(f, draws = 10),
                     as.matrix(f, psis = TRUE, draws = 10), elbo(f)))
    }
    invisible(fit(nat, method = meth, estimator = est))
    invisible(fit(logi, method = meth, estimator = est))
  }
  invisible(fit(mv, method = meth))
}
invisible(fit(m, progress = TRUE))
invisible(fit(m, init = list(mu = 1, s = 2, p = c(0.2, 0.7)), init_sd = 0.1))
# error exits from inside the C loop
bad <- list(
  bbvi_model(function(theta, data) NA_real_, list(a = param())),
  bbvi_model(function(theta, data) stop("inner"), list(a = param())),
  bbvi_model(function(theta, data) c(1, 2), list(a = param())),
  bbvi_model(function(theta, data) 0, list(a = param(dim = 2)),
             gradient = function(theta, data) 1),
  bbvi_model(function(theta, data) exp(theta$a^4), list(a = param()))
)
for (b in bad) try(fit(b), silent = TRUE)
cat("valgrind-smoke: done\n")
