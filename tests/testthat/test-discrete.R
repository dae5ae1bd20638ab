# Discrete latent variables against exact posteriors by enumeration (the
# models and their exact answers: helper-discrete.R). Mean-field q cannot
# represent how assignments and parameters depend on each other, so on the
# mixture and the spike-and-slab model a fit must be either accurate or say
# that it is not: the package's promise is that it never lies.

test_that("the coal-mining change point: q's switch year and rates against the exact posterior", {
  d <- change_point_data()
  ex <- change_point_exact(d)
  for (seed in 1:2) {
    fit <- bbvi(change_point_model(d), seed = seed)
    expect_true(fit$converged)
    # the issue's goals: the mean within 0.1 sd and the mode's probability
    # within 0.05 (the ELBO's optimum is close to exact here: measured
    # 0.01 sd and 0.016)
    expect_lt(max(abs(coef(fit) - ex$mean) / ex$sd), 0.1)
    expect_lt(abs(q_prob(fit, "s", ex$mode) - ex$p_mode), 0.05)
    expect_identical(fit$diagnostics$verdict, "ok")
    # integer draws of s, within its support
    s <- as.matrix(fit, draws = 200)[, "s"]
    expect_true(all(s == round(s)) && all(s >= 1851 & s <= 1962))
  }
})

test_that("a mixture with latent assignments: accurate or warned, and Rao-Blackwellized", {
  dm <- mixture_data()
  exm <- mixture_exact(dm)
  for (seed in 1:2) {
    fit <- suppressWarnings(bbvi(mixture_model(dm, factors = TRUE), seed = seed))
    err <- max(abs(q_prob(fit, names(exm$p_z), 1) - exm$p_z))
    expect_true(err <= 0.05 || !identical(fit$diagnostics$verdict, "ok"))
    # the assignments' gradient entries: the Rao-Blackwellized weights
    # (one likelihood factor each) cut their variance (measured 2.6x from
    # 1000 draws; the estimate of the ratio is good to about 10%)
    rb <- fit$diagnostics$rao_blackwell
    pc <- rb$per_coordinate[seq_len(dm$N), ]
    expect_gt(sum(pc$var_plain) / sum(pc$var_rb), 1.5)
    # the fit's own estimator for them: each assignment's values enumerated
    # through its likelihood factor (measured 10x at seed 1; the estimate of
    # the ratio is good to about 10-20%)
    expect_true(isTRUE(fit$enumerated))
    expect_gt(sum(pc$var_plain) / sum(pc$var_enum), 5)
    # the means of mu, touched by every factor, keep the plain weight
    expect_gt(rb$ratio, 0.8)
  }
})

test_that("spike-and-slab selection: clear effects found; the rest accurate or warned", {
  ds <- spike_slab_data()
  exs <- spike_slab_exact(ds)
  fit <- suppressWarnings(bbvi(spike_slab_model(ds), seed = 1))
  incl <- q_prob(fit, names(exs$inclusion), 1)
  strong <- exs$inclusion > 0.95
  expect_true(all(incl[strong] > 0.9))
  err <- max(abs(incl - exs$inclusion))
  expect_true(err <= 0.05 || !identical(fit$diagnostics$verdict, "ok"))
})

test_that("spike-and-slab with q(b | g) (families = list(b = \"given:g\")): inclusion probabilities within 0.05 of exact", {
  ds <- spike_slab_data()
  exs <- spike_slab_exact(ds)
  for (seed in 1:3) {
    fit <- suppressWarnings(bbvi(spike_slab_model(ds), families = list(b = "given:g"),
                                 seed = seed))
    expect_true(fit$converged)
    # the issue's goal. Measured: 0.026 to 0.030 over these seeds (mean-field
    # q(b) alone: 0.2). What is left is q's independence across
    # coordinates (the predictors are correlated), not Monte Carlo error:
    # the seeds' answers agree to about 0.004
    incl <- q_prob(fit, names(exs$inclusion), 1)
    expect_lt(max(abs(incl - exs$inclusion)), 0.05)
    # posterior means of b: measured within 0.017; b's posterior sds are
    # 0.15 (included) to 0.9 (null)
    expect_lt(max(abs(coef(fit)[sprintf("b[%d]", 1:8)] - exs$mean_beta)), 0.05)
  }
})

test_that("q(b | g): summaries show b's mixture; draws take g, then b given g", {
  ds <- spike_slab_data()
  fit <- suppressWarnings(bbvi(spike_slab_model(ds), families = list(b = "given:g"),
                               seed = 1, enumerate = FALSE))
  # g and b make one block: q is that block
  qg <- bbvi:::fit_q(fit)
  expect_s3_class(qg, "q_given")
  # coef: b's mixture mean; sd by the law of total variance
  p1 <- vapply(qg$probs, `[`, numeric(1), 2)
  m <- vapply(seq_len(8), function(j) sum(qg$probs[[j]] * qg$cond_mean[[j]]), numeric(1))
  expect_equal(unname(coef(fit)[9:16]), m)
  expect_equal(unname(coef(fit)[1:8]), p1)
  expect_equal(probabilities(fit, "g[2]")$probability, qg$probs[[2]])
  mom <- bbvi:::marginal_moments(fit)
  v <- vapply(seq_len(8), function(j) sum(qg$probs[[j]] * (qg$cond_sd[[j]]^2 + qg$cond_mean[[j]]^2)), numeric(1)) - m^2
  expect_equal(unname(mom$sd[9:16]), sqrt(v))
  # draws: means within 5 Monte Carlo standard errors; given g_j = 0, a
  # null coordinate's b_j follows its own Gaussian (the prior's here)
  dr <- as.matrix(fit, draws = 4000)
  expect_true(all(abs(colMeans(dr) - coef(fit)) < 5 * mom$sd / sqrt(4000) + 1e-12))
  off <- dr[, "g[2]"] == 0
  expect_lt(abs(mean(dr[off, "b[2]"]) - qg$cond_mean[[2]][1]),
            5 * qg$cond_sd[[2]][1] / sqrt(sum(off)))
  # relative se of a normal sample's sd: 1 / sqrt(2 n)
  expect_equal(stats::sd(dr[off, "b[2]"]), qg$cond_sd[[2]][1], tolerance = 5 / sqrt(2 * sum(off)))
  # quantiles of the mixture, and the printed summary names both families
  ci <- confint(fit)["b[2]", ]
  expect_lt(abs(mean(dr[, "b[2]"] <= ci[[1]]) - 0.025), 5 * sqrt(0.025 * 0.975 / 4000))
  expect_output(print(fit), "given:g \\(b\\)")
  # gradient draws name the block's variational parameters
  g <- elbo_gradients(fit, "reparam", n = 3, seed = 1)
  expect_identical(colnames(g$grad)[c(1, 9, 10, 25)],
                   c("logit[g[1]=1]", "m[b[1]|g[1]=0]", "m[b[1]|g[1]=1]", "log_s[b[1]|g[1]=0]"))
  expect_length(colnames(g$grad), length(fit$lambda))
})

test_that("q(b | g) is also fitted by the score gradient alone and with b declared first", {
  ds <- spike_slab_data(n = 30, seed = 2, beta = c(1.5, 0, -1))
  exs <- spike_slab_exact(ds)
  m <- spike_slab_model(ds)
  # b then g: the same model with the parameters declared the other way round
  m2 <- bbvi_model(m$logjoint, parameters = m$parameters[c("b", "g")], data = ds,
                   vectorized = TRUE)
  for (mod in list(m, m2)) {
    fit <- suppressWarnings(bbvi(mod, families = list(b = "given:g"), seed = 1,
                                 estimator = "score"))
    incl <- q_prob(fit, names(exs$inclusion), 1)
    expect_lt(max(abs(incl - exs$inclusion)), 0.05)
  }
})

test_that("enumeration through the factors: the same gradient as enumerating with the whole log-joint, at 2 evaluations per draw instead of 2N", {
  dm <- mixture_data()
  fit <- suppressWarnings(bbvi(mixture_model(dm, factors = TRUE), seed = 1))
  grads <- function(model) {
    spec <- bbvi:::r_target_spec(model)
    D <- length(model$par_names)
    ctl <- list(family = "blocks", rank = 0L, blocks = fit$q_blocks, estimator = "score",
                samples = 20L, lambda = fit$lambda, n = 5L, control_variates = 1L,
                enumerate = 1L, par_sizes = bbvi:::model_unc_sizes(model))
    set.seed(4)
    .Call(bbvi:::C_grad_samples, spec, rep(-Inf, D), rep(Inf, D), ctl)$grad
  }
  # the same draws: the assignments' entries agree to rounding (the other
  # factors cancel out of each value's difference)
  z <- seq_len(dm$N)
  expect_equal(grads(mixture_model(dm, factors = TRUE))[z, ],
               grads(mixture_model(dm))[z, ], tolerance = 1e-10)
  # evaluations per iteration: 50 draws + 2 values x 50 (one group: no two
  # assignments share a factor)
  ev <- fit$evals
  expect_equal(ev$logp[ev$phase == "optimisation"], 150 * fit$iterations)
})

test_that("fit$evals says how many evaluations were at enumerated values", {
  # k in 0..4 with weights exp(-|k - 2|), mu ~ N(0, 1): enumeration takes
  # 5 values x `samples` draws per iteration, on top of the draws themselves
  m <- bbvi_model(function(theta, data) -abs(theta$k - 2) - 0.5 * theta$mu^2,
                  parameters = list(k = param(lower = 0, upper = 4, integer = TRUE),
                                    mu = param()),
                  vectorized = TRUE)
  fit <- suppressWarnings(bbvi(m, seed = 1, samples = 20))
  ev <- fit$evals[fit$evals$phase == "optimisation", ]
  expect_equal(ev$enumerated, 5 * 20 * fit$iterations)
  expect_equal(ev$logp - ev$enumerated, 20 * fit$iterations)
  expect_output(print(fit), "of them at enumerated values")
  fit0 <- suppressWarnings(bbvi(m, seed = 1, samples = 20, enumerate = FALSE))
  expect_true(all(fit0$evals$enumerated == 0))
  expect_no_match(paste(capture.output(print(fit0)), collapse = "\n"), "enumerated values")
})
