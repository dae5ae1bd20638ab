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
