# A demo fit: a custom model with a bounded parameter, compared with its
# exact posterior. Run through tools/demo.sh (see README.md).
library(bbvi)
cat("bbvi", format(utils::packageVersion("bbvi")), "\n\n")

# Poisson counts with a Gamma(3, 1) prior on the rate: the posterior is
# Gamma(3 + sum(y), 1 + n), so we can check the variational answer.
y <- c(3, 5, 2, 6, 4, 4, 7, 1, 3, 5, 4, 2, 6, 3, 5)
model <- bbvi_model(
  logjoint = function(theta, data) {
    sum(dpois(data, theta$lambda, log = TRUE)) + dgamma(theta$lambda, 3, 1, log = TRUE)
  },
  parameters = list(lambda = param(lower = 0)),
  data = y
)
fit <- bbvi(model, seed = 1)          # score-function gradients: no derivatives needed
print(summary(fit))
# (k-hat looks at the far tail: a log-normal q has a lighter left tail than
# a Gamma posterior, so k-hat can be large while the summaries are accurate.)
a <- 3 + sum(y); b <- 1 + length(y)
cat(sprintf("\nexact posterior: mean %.4f, sd %.4f, 95%% interval (%.4f, %.4f)\n",
            a / b, sqrt(a) / b, qgamma(0.025, a, b), qgamma(0.975, a, b)))

# A correlated Gaussian: full-rank recovers the covariance, mean-field the
# reverse-KL optimum (sd = 1 / sqrt(precision_ii)).
Sigma <- matrix(c(1, 0.9, 0.9, 1), 2)
P <- solve(Sigma)
g <- bbvi_model(function(theta, data) -0.5 * sum(theta$z * (P %*% theta$z)),
                parameters = list(z = param(dim = 2)),
                gradient = function(theta, data) -drop(P %*% theta$z))
cat("\nfull-rank covariance:\n"); print(round(vcov(bbvi(g, method = "fullrank", seed = 1)), 3))
cat("mean-field sds:", round(sqrt(diag(vcov(bbvi(g, seed = 1)))), 3),
    " (reverse-KL optimum", round(1 / sqrt(diag(P)), 3), ")\n")

# A GLM through a formula, and NUTS on the same model for comparison.
data("Pima.tr", package = "MASS")
logit <- bbvi(type ~ glu + bmi + ped + age, data = Pima.tr, family = binomial(),
              method = "fullrank", seed = 1)
cat("\n"); print(summary(logit))
mc <- sample_mcmc(type ~ glu + bmi + ped + age, data = Pima.tr, family = binomial(),
                  chains = 4, iter = 1000, seed = 1)
cat("\nVI (full-rank) against NUTS, same model:\n")
print(compare_fits(logit, mc))
