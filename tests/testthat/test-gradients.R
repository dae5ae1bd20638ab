test_that("gradient estimators are unbiased and control variates cut the variance", {
  case <- gaussian2_case()
  fit <- bbvi(case$model, method = "fullrank", seed = 4)
  # away from the optimum, where the gradient is not zero
  lam <- fit$lambda + c(0.5, -0.5, rep(0.2, 3))
  exact_mu_grad <- drop(case$precision %*% (case$mean - lam[1:2]))
  sc <- elbo_gradients(fit, "score", samples = 20, n = 400, lambda = lam, seed = 1)
  nocv <- elbo_gradients(fit, "score", samples = 20, n = 400, lambda = lam,
                         control_variates = FALSE, seed = 1)
  rp <- elbo_gradients(fit, "reparam", samples = 20, n = 400, lambda = lam, seed = 1)
  expect_equal(colnames(sc$grad), c("mu[z[1]]", "mu[z[2]]", "L[z[1],z[1]]",
                                    "L[z[2],z[1]]", "L[z[2],z[2]]"))
  for (g in list(sc$grad, nocv$grad, rp$grad)) {
    m <- colMeans(g[, 1:2]); se <- apply(g[, 1:2], 2, sd) / sqrt(nrow(g))
    expect_true(all(abs(m - exact_mu_grad) < 4 * se))
  }
  v_sc <- apply(sc$grad, 2, var); v_no <- apply(nocv$grad, 2, var)
  v_rp <- apply(rp$grad, 2, var)
  expect_true(all(v_sc < v_no / 100))
  expect_true(all(v_rp[1:2] < v_sc[1:2]))
  expect_snapshot(error = TRUE, elbo_gradients(fit, lambda = 1:2))
})
