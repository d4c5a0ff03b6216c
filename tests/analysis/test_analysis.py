"""The analyses: FOSC histograms, filter normalisation, landscapes, Hessian eigenpairs, similarity,
the robust gap and the figures (tiny models; independent references)."""

import json
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robust_jax
from robust_jax import attacks
from robust_jax.analysis import (adversarial, fosc_tracking, gap, hessian, landscape, plots,
                                 reports, similarity)
from robust_jax import losses

EPS, STEP, K = 0.1, 0.03, 3
ATTACK = dict(eps=EPS, step_size=STEP, num_steps=K)


class TinyNet(nn.Module):
  """Dense -> BatchNorm -> ReLU -> Dense on 4x4x1 images, 3 classes."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x)))
    return nn.Dense(3)(x)


@pytest.fixture(scope="module")
def tiny():
  model = TinyNet()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
  rng = np.random.default_rng(0)
  batches = [{"image": rng.uniform(size=(8, 4, 4, 1)).astype(np.float32),
              "label": rng.integers(0, 3, size=8).astype(np.int32)} for _ in range(2)]
  batches[1]["mask"] = np.arange(8) < 5  # a padded last batch
  return model, variables["params"], variables["batch_stats"], batches


# ------------------------------------------------------------------------------------ FOSC tracking


def test_fosc_histogram_counts_every_example_and_quantiles_match_numpy():
  rng = np.random.default_rng(1)
  values = np.concatenate([rng.lognormal(-2.0, 1.5, size=997), [-0.3, 0.0, 1e6]]).astype(np.float32)
  counts = np.asarray(fosc_tracking.fosc_histogram(jnp.asarray(values)))
  assert counts.shape == (len(fosc_tracking.DEFAULT_EDGES) - 1,)
  assert counts.sum() == len(values)
  np.testing.assert_array_equal(
      counts, np.histogram(np.clip(values, 0, fosc_tracking.DEFAULT_EDGES[-1] * 0.999),
                           fosc_tracking.DEFAULT_EDGES)[0])
  masked = fosc_tracking.fosc_histogram(jnp.asarray(values), mask=jnp.arange(1000) < 10)
  assert float(jnp.sum(masked)) == 10.0
  jitted = jax.jit(fosc_tracking.fosc_histogram)(jnp.asarray(values))
  np.testing.assert_array_equal(np.asarray(jitted), counts)

  qs = fosc_tracking.QUANTILES
  np.testing.assert_allclose(fosc_tracking.fosc_quantiles(values, qs), np.quantile(values, qs),
                             rtol=1e-5)
  summary = fosc_tracking.summarize_fosc(values)
  assert sum(summary["fosc_hist"]) == len(values)
  np.testing.assert_allclose([summary[fosc_tracking.quantile_key(q)] for q in qs],
                             np.quantile(values.astype(np.float64), qs), rtol=1e-6)
  # From binned counts the quantiles are exact to within the bin that holds them.
  edges = fosc_tracking.DEFAULT_EDGES
  approx = fosc_tracking.quantiles_from_histogram(counts, edges, qs)
  for a, exact in zip(approx, np.quantile(values, qs)):
    i = np.searchsorted(edges, exact, side="right") - 1
    assert edges[i] - 1e-12 <= a <= edges[i + 1] + 1e-12


def test_fosc_bins_and_epoch_summary():
  np.testing.assert_allclose(fosc_tracking.fosc_bin_edges(kind="linear", high=1.0, num_bins=4),
                             [0, 0.25, 0.5, 0.75, 1.0])
  edges = fosc_tracking.fosc_bin_edges(low=1e-3, high=1e1, bins_per_decade=2)
  assert edges[0] == 0 and len(edges) == 10 and np.all(np.diff(edges) > 0)
  with pytest.raises(ValueError, match="kind"):
    fosc_tracking.fosc_bin_edges(kind="cubic")
  rec = fosc_tracking.epoch_summary([0, 2, 2, 0], [0.0, 1.0, 2.0, 3.0, 4.0])
  assert rec["fosc_q50"] == pytest.approx(2.0) and rec["fosc_q25"] == pytest.approx(1.5)
  assert json.loads(json.dumps(rec)) == rec


def test_fosc_distribution_matches_pgd(tiny):
  model, params, bs, batches = tiny
  logits_fn = adversarial.make_logits_fn(model.apply, params, bs)
  key = jax.random.key(3)
  values = fosc_tracking.fosc_distribution(logits_fn, batches, key=key, **ATTACK)
  assert values.shape == (8 + 5,)
  ref = attacks.pgd(logits_fn, jnp.asarray(batches[1]["image"]), jnp.asarray(batches[1]["label"]),
                    start="uniform", key=jax.random.fold_in(key, 1), **ATTACK).fosc
  np.testing.assert_allclose(values[8:], np.asarray(ref)[:5], rtol=1e-6)


# ------------------------------------------------------------------------- landscape


def test_filter_normalisation_matches_filter_norms():
  key = jax.random.key(0)
  params = {"conv": {"kernel": jax.random.normal(key, (3, 3, 2, 4)), "bias": jnp.arange(4.0) - 1},
            "dense": {"kernel": jax.random.normal(jax.random.fold_in(key, 1), (5, 3))},
            "bn": {"scale": jnp.array([0.5, -2.0, 3.0])}}
  d = landscape.filter_normalized_direction(jax.random.key(1), params)
  for name, axes in (("conv", (0, 1, 2)), ("dense", (0,))):
    w, v = params[name]["kernel"], d[name]["kernel"]
    np.testing.assert_allclose(jnp.sqrt(jnp.sum(v * v, axis=axes)),
                               jnp.sqrt(jnp.sum(w * w, axis=axes)), rtol=1e-5)
    assert not np.allclose(v, w)
  np.testing.assert_array_equal(d["conv"]["bias"], 0.0)
  np.testing.assert_array_equal(d["bn"]["scale"], 0.0)
  e = landscape.filter_normalized_direction(jax.random.key(1), params, one_dim="elementwise")
  np.testing.assert_allclose(jnp.abs(e["bn"]["scale"]), jnp.abs(params["bn"]["scale"]), rtol=1e-5)
  np.testing.assert_allclose(jnp.abs(e["conv"]["bias"]), jnp.abs(params["conv"]["bias"]),
                             rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(e["conv"]["kernel"], d["conv"]["kernel"])
  with pytest.raises(ValueError, match="one_dim"):
    landscape.filter_normalize(d, params, one_dim="copy")


def test_landscape_at_zero_is_the_adversarial_loss_of_the_model(tiny):
  model, params, bs, batches = tiny
  key = jax.random.key(7)
  metrics_at = adversarial.adversarial_metrics_fn(model.apply, bs, batches, key=key, **ATTACK)
  d = landscape.filter_normalized_direction(jax.random.key(1), params)
  alphas = np.array([-0.5, 0.0, 0.5], np.float32)
  curve = landscape.loss_landscape_1d(metrics_at, params, d, alphas)
  assert curve["loss"].shape == (3,) and curve["robust_acc"].shape == (3,)

  # Independent reference: PGD on each batch with fold_in(key, i), CE at x_adv over real examples.
  logits_fn = adversarial.make_logits_fn(model.apply, params, bs)
  ce, correct = [], []
  for i, b in enumerate(batches):
    x, y = jnp.asarray(b["image"]), jnp.asarray(b["label"])
    res = attacks.pgd(logits_fn, x, y, start="uniform", key=jax.random.fold_in(key, i), **ATTACK)
    logits = logits_fn(res.x_adv)
    m = np.asarray(b.get("mask", np.ones(8, bool)))
    ce.append(np.asarray(losses.cross_entropy(logits, y))[m])
    correct.append(np.asarray(jnp.argmax(logits, -1) == y)[m])
  np.testing.assert_allclose(curve["loss"][1], np.concatenate(ce).mean(), rtol=1e-5)
  np.testing.assert_allclose(curve["robust_acc"][1], np.concatenate(correct).mean(), rtol=1e-6)
  assert not np.isclose(curve["loss"][0], curve["loss"][1])

  # The scalar builder on a 2-D grid gives the same values at (0, 0) and (-0.5, 0).
  loss_at = adversarial.adversarial_loss_fn(model.apply, bs, batches, key=key, **ATTACK)
  d2 = landscape.filter_normalized_direction(jax.random.key(2), params)
  grid = landscape.loss_landscape_2d(loss_at, params, d, d2, [-0.5, 0.0], [0.0, 0.5], batch_size=2)
  assert grid.shape == (2, 2)
  np.testing.assert_allclose(grid[1, 0], curve["loss"][1], rtol=1e-5)
  np.testing.assert_allclose(grid[0, 0], curve["loss"][0], rtol=1e-5)


# ---------------------------------------------------------------------------------- Hessian


def _spd(eigs, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigs), len(eigs))))
  return (q * np.asarray(eigs)) @ q.T, q


def test_hessian_recovers_known_spectrum_of_a_quadratic():
  eigs = np.array([10.0, 7.0, 4.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01])
  a, q = _spd(eigs)
  a = jnp.asarray(a, jnp.float32)
  f = lambda x: 0.5 * x @ a @ x
  x0 = jnp.asarray(np.random.default_rng(1).normal(size=12), jnp.float32)
  v = jnp.ones(12)
  np.testing.assert_allclose(hessian.hvp(f, x0, v), a @ v, rtol=1e-5)
  res = hessian.top_hessian_eigenpairs(f, x0, k=3, key=jax.random.key(0), max_iters=300, tol=1e-9)
  np.testing.assert_allclose(res.eigenvalues, eigs[:3], rtol=1e-3)
  for i in range(3):
    assert abs(float(jnp.dot(res.eigenvectors[i], q[:, i]))) > 0.999
  assert np.all(np.asarray(res.num_iters) <= 300)
  with pytest.raises(ValueError, match="k must be"):
    hessian.top_hessian_eigenpairs(f, x0, k=13, key=jax.random.key(0))


def test_hessian_of_a_pytree_parameterised_quadratic():
  eigs = np.array([5.0, 3.0, 1.0, 0.5, 0.25, 0.1, 0.05])
  a, _ = _spd(eigs, seed=2)
  a = jnp.asarray(a, jnp.float32)
  params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros((3,))}

  def f(p):
    x = jnp.concatenate([p["b"], p["w"].reshape(-1)])  # an order unlike ravel_pytree's
    return 0.5 * x @ a @ x

  res = hessian.top_hessian_eigenpairs(f, params, k=2, key=jax.random.key(1), max_iters=300,
                                       tol=1e-9)
  np.testing.assert_allclose(res.eigenvalues, eigs[:2], rtol=1e-3)
  assert res.eigenvectors["w"].shape == (2, 2, 2) and res.eigenvectors["b"].shape == (2, 3)
  u = hessian.eigenvector(res, 0)
  norm = jnp.sqrt(jnp.sum(u["w"] ** 2) + jnp.sum(u["b"] ** 2))
  np.testing.assert_allclose(norm, 1.0, rtol=1e-5)
  hu = hessian.hvp(f, params, u)  # H u = lambda u
  np.testing.assert_allclose(hu["w"], eigs[0] * u["w"], atol=1e-3)


def test_hessian_of_fixed_adversarial_examples_is_symmetric_and_finite(tiny):
  model, params, bs, batches = tiny
  adv = adversarial.adversarial_examples(model.apply, params, bs, batches, key=jax.random.key(0),
                                         **ATTACK)
  assert np.all(np.abs(np.asarray(adv["image"]) - np.stack([b["image"] for b in batches]))
                <= EPS + 1e-6)
  loss_fn = adversarial.fixed_examples_loss_fn(model.apply, bs, adv)
  res = hessian.top_hessian_eigenpairs(loss_fn, params, k=2, key=jax.random.key(0), max_iters=30)
  assert np.all(np.isfinite(res.eigenvalues))
  assert abs(float(res.eigenvalues[0])) >= abs(float(res.eigenvalues[1])) * 0.99


# ------------------------------------------------------------------------------- similarity


def test_similarity_is_one_at_zero_and_a_cosine(tiny):
  model, params, bs, batches = tiny
  v = similarity.random_unit_direction(jax.random.key(4), params)
  norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(v)))
  np.testing.assert_allclose(norm, 1.0, rtol=1e-5)
  out = similarity.perturbation_similarity(model.apply, params, bs, batches, v, [0.0, 3.0],
                                           key=jax.random.key(5), **ATTACK)
  assert out["cosine"][0] == pytest.approx(1.0, abs=1e-6)
  assert -1.0 - 1e-6 <= out["cosine"][1] <= 1.0 + 1e-6
  assert out["robust_error"][0] == pytest.approx(out["robust_error_minus"][0])
  a = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
  b = jnp.array([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
  np.testing.assert_allclose(similarity.cosine_per_example(a, b), [0.0, 1.0, 0.0, 1.0], atol=1e-6)


# -------------------------------------------------------------------------- gap and figures


def _records(epochs=4, with_hist=True, c=None):
  rng = np.random.default_rng(0)
  recs = []
  for e in range(epochs):
    train = {"kind": "train", "step": e, "epoch": e, "adv_acc": 0.3 + 0.1 * e, "clean_acc": 0.8}
    if with_hist:
      counts = fosc_tracking.fosc_histogram(jnp.asarray(rng.lognormal(-1 - e / 2, 0.5, size=64)))
      train.update(fosc_tracking.epoch_summary(np.asarray(counts)))
      if c is not None:
        train["fosc_c"] = c * (1 - e / epochs)
    recs.append(train)
    recs.append({"kind": "eval", "step": e, "split": "validation", "epoch": e,
                 "robust_acc": 0.3 + 0.02 * e, "clean_acc": 0.7})
  recs.append({"kind": "eval", "step": epochs, "split": "test", "robust_acc": 0.2})
  return recs


def test_robust_generalization_gap():
  g = gap.robust_generalization_gap(_records())
  assert g["epochs"] == [0, 1, 2, 3] and g["train_source"] == "train"
  np.testing.assert_allclose(g["gap"], [0.0, 0.08, 0.16, 0.24], atol=1e-9)
  assert g["best_epoch"] == 3
  co = _records() + [{"kind": "co_guard", "epoch": e, "train_pgd_acc": 0.5} for e in range(4)]
  g2 = gap.robust_generalization_gap(co)
  assert g2["train_source"] == "co_guard" and g2["train_robust_acc"] == [0.5] * 4
  with pytest.raises(ValueError, match="co_guard"):
    gap.robust_generalization_gap(_records(), train_source="co_guard")


def _check_written(png):
  assert os.path.getsize(png) > 0
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(plots.json_path(png)) as f:
    return json.load(f)


def test_every_plot_writes_a_png_and_its_json(tmp_path):
  out = str(tmp_path)
  alphas = np.linspace(-1, 1, 5)
  plots.plot_landscape_1d(alphas, {"AT": alphas ** 2, "AWP": 0.5 * alphas ** 2}, f"{out}/l1.png",
                          accuracies={"AT": 1 - alphas ** 2})
  assert _check_written(f"{out}/l1.png")["curves"]["AWP"][0] == pytest.approx(0.5)
  grid = np.add.outer(alphas ** 2, alphas ** 2)
  plots.plot_landscape_2d(alphas, alphas, grid, f"{out}/l2.png")
  assert np.allclose(_check_written(f"{out}/l2.png")["grid"], grid)
  plots.plot_hessian_spectrum({"eps=0.1": [5, 3, 1], "eps=0.3": [9, 4, 2]}, f"{out}/h.png")
  assert _check_written(f"{out}/h.png")["eigenvalues"]["eps=0.3"] == [9, 4, 2]
  sim = {"eigenvector": {"alphas": [0, 0.1], "cosine": [1.0, 0.4], "robust_error": [0.1, 0.3]},
         "random": {"alphas": [0, 0.1], "cosine": [1.0, 0.95], "robust_error": [0.1, 0.1]}}
  plots.plot_similarity(sim, f"{out}/s.png")
  assert _check_written(f"{out}/s.png")["random"]["cosine"] == [1.0, 0.95]
  plots.plot_robust_gap({"AT": gap.robust_generalization_gap(_records())}, f"{out}/g.png")
  assert len(_check_written(f"{out}/g.png")["AT"]["gap"]) == 4
  runs = {"PGD-AT": _records(), "Dynamic AT": _records(5, c=0.5)}
  fosc_tracking.plot_fosc_over_epochs(runs, f"{out}/f.png")
  data = _check_written(f"{out}/f.png")
  assert data["Dynamic AT"]["epochs"] == [0, 1, 2, 3, 4] and "fosc_c" in data["Dynamic AT"]
  assert all(sum(c) == 64 for c in data["PGD-AT"]["counts"])
  fosc_tracking.plot_fosc_distributions({"a": np.ones(5), "b": np.full(5, 0.01)}, f"{out}/d.png")
  assert _check_written(f"{out}/d.png")["b"]["n"] == 5
  metrics = tmp_path / "run" / "metrics.jsonl"
  metrics.parent.mkdir()
  metrics.write_text("".join(json.dumps(r) + "\n" for r in _records()))
  assert fosc_tracking.has_fosc_histograms(str(metrics))
  fosc_tracking.plot_fosc_over_epochs(str(metrics.parent), f"{out}/f1.png")
  _check_written(f"{out}/f1.png")
  with pytest.raises(ValueError, match="fosc_hist"):
    fosc_tracking.plot_fosc_over_epochs(_records(with_hist=False), f"{out}/none.png")


# -------------------------------------------------------------------- checkpoint -> analyses


def test_load_trained_and_reports(tmp_path, tiny):
  from robust_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from robust_jax import models  # pylint: disable=g-import-not-at-top
  from robust_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.model, config.eps, config.step_size, config.num_steps = "mlp", EPS, STEP, 2
  model = models.get_model("mlp", num_classes=10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  workdir = tmp_path / "run"
  with ckpt_lib.CheckpointManager(str(workdir / "checkpoints"), max_to_keep=2) as mngr:
    mngr.save(5, {"step": jnp.asarray(5), "params": params, "batch_stats": {}},
              metadata={"config": config.to_dict(), "num_classes": 10, "epoch": 1,
                        "image_shape": [8, 8, 1], "steps_per_epoch": 5}, metric=0.5)
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
  tm = reports.load_trained(str(workdir))
  assert tm.workdir == str(workdir) and tm.config.eps == EPS
  chex.assert_trees_all_equal(tm.params, params)
  batches = reports.analysis_batches(tm.config, split="test", num_examples=20, batch_size=16)
  assert len(batches) == 2 and int(batches[1]["mask"].sum()) == 4
  out = str(tmp_path / "analysis")
  r = reports.fosc_report({"m": tm}, batches, out, split="test", seed=3)
  assert sum(r["final"]["m"]["fosc_hist"]) == 20 and "epochs" in r
  _check_written(f"{out}/fosc_over_epochs.png")
  # Every artifact records what it shows (issue 15): split, examples, seed, attack, checkpoint.
  with open(f"{out}/fosc_distribution.json") as f:
    settings = json.load(f)["settings"]
  assert settings["split"] == "test" and settings["num_examples"] == 20 and settings["seed"] == 3
  assert settings["library_version"] == robust_jax.__version__
  m = settings["models"]["m"]
  assert m["checkpoint_step"] == 5 and m["epoch"] == 1
  assert m["attack"] == {"eps": EPS, "step_size": STEP, "num_steps": 2, "norm": "linf",
                         "start": "uniform"}
  line = reports.settings_line(settings)
  for part in ("test split", "20 examples", "PGD-2 linf eps 0.1", "seed 3", "checkpoint step 5",
               f"robust_jax {robust_jax.__version__}"):
    assert part in line
  r = reports.gap_report({"m": str(workdir)}, out)
  assert r["m"]["epochs"] == [0, 1, 2, 3]
  with open(f"{out}/robust_gap.json") as f:
    assert json.load(f)["settings"]["split"] == "validation"


@pytest.mark.parametrize("kw,match", [
    (dict(num_points=1), "num_points must be an odd integer >= 3.*alpha = 0"),
    (dict(num_points=20), "num_points must be an odd integer >= 3.*try 21"),
    (dict(span=-1.0), r"span must be in \(0, inf\).*reverse the axis"),
    (dict(span=0.0), r"span must be in \(0, inf\)"),
    (dict(dims=3), "dims must be one of"),
])
def test_landscape_grid_must_hold_the_model_itself(tiny, tmp_path, kw, match):
  grid = {"dims": 1, "num_points": 5, "span": 1.0, **kw}
  with pytest.raises(ValueError, match=match):
    reports.check_landscape_grid(**grid)
  with pytest.raises(ValueError, match=match):  # before any model or data is touched
    reports.landscape_report({}, [], str(tmp_path), **grid)
  alphas = np.linspace(-1.0, 1.0, 5)
  assert 0.0 in alphas and np.all(np.diff(alphas) > 0)
