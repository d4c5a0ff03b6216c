"""GAN training steps: each kind of :mod:`robust_jax.games` timed as its trainer runs it.

What :func:`bench_gans` measures, for each kind of :data:`robust_jax.games.config.KINDS` and each
image size of :data:`GAN_IMAGE_SHAPES`: the compiled full training step (``n_critic`` critic
updates in a ``lax.fori_loop``, then one generator update) built exactly as
:func:`robust_jax.games.loop.train_and_evaluate` builds it (``step.make_train_step`` under
``parallel.jit_data_parallel``, state replicated and donated, batch sharded), compiled ahead of time
(``compile_s``) and called on one synthetic batch of the real shape ``[B, n_critic, H, W, C]``
(uniform images: the step's cost does not depend on them, and no data loading is timed).

The numbers of a record:

* ``step_ms``: median of the timed calls (``jax.block_until_ready``) of the full step.
* ``examples_per_s``: **real examples consumed per second**, ``B * n_critic / step time`` (each
  critic update takes a fresh real batch of B; the trainer's log counts ``B * (n_critic + 1)``, the
  generator's fake batch included).
* ``critic_update_ms``: one critic update, like for like across kinds: the same step compiled with
  ``n' = 1`` critic update (2 for a kind whose ``n_critic`` is 1) is timed in the same rounds, and
  ``critic_update_ms = (T(n_critic) - T(n')) / (n_critic - n')`` (median over the rounds);
  ``rest_ms = step_ms - n_critic * critic_update_ms`` is the generator update plus the step's fixed
  cost.

The contenders of one image size (every kind, full and reduced step) are timed alternately:
``rounds`` rounds, the order reversed every other round, each contender timed for at least
``min_time_s`` per round, so that a load change on a shared machine hits them alike. The ratios
(:func:`alternated_ratios`) are the medians of per-round ratios: one WGAN-GP step over one WGAN
step, and one WGAN-GP critic update over one WGAN critic update (the gradient penalty's double
backpropagation, without the generator update both share).

Example (ratios from per-round times; :func:`bench_gans` feeds it the measured ones):

>>> rounds = {"wgan": [(100.0, 15.0), (110.0, 16.0)], "wgan_gp": [(180.0, 30.0), (187.0, 32.0)]}
>>> [(r["name"], r["value"]) for r in alternated_ratios(rounds, dataset="digits", batch=64)]
[('WGAN-GP step / WGAN step, alternated', 1.75),
 ('WGAN-GP critic update / WGAN critic update, alternated', 2.0)]
>>> check_gan_names(["wgan", "wgan_pg"], ["digits"])
Traceback (most recent call last):
...
ValueError: unknown GAN kind 'wgan_pg'; valid kinds: vanilla, wgan, wgan_gp, sngan
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from robust_jax import parallel
from robust_jax.benchmarking.timing import (peak_memory_mb, record, reset_peak_memory,
                                            round_or_none, synthetic_batch, temp_mb, time_calls)
from robust_jax.games import config as games_config
from robust_jax.games import networks
from robust_jax.games import step as games_step

# The image sizes of the GAN configs' datasets (robust_jax.data: digits 8x8, MNIST-5k 28x28).
GAN_IMAGE_SHAPES: Dict[str, Tuple[int, int, int]] = {"digits": (8, 8, 1), "mnist5k": (28, 28, 1)}
GAN_DATASETS = tuple(GAN_IMAGE_SHAPES)
GAN_KINDS = tuple(games_config.KINDS)  # vanilla, wgan, wgan_gp, sngan
GAN_STEP_RATIO = "WGAN-GP step / WGAN step, alternated"
GAN_CRITIC_RATIO = "WGAN-GP critic update / WGAN critic update, alternated"
GAN_RATIOS = (GAN_STEP_RATIO, GAN_CRITIC_RATIO)
# What the ratios would be if time followed the passes counted (units of one critic forward on B
# images, C; the generator's forward G is about 4 C at the MNIST-5k widths and 15 C at the digits
# ones): a WGAN critic update is G + 6 C (forward and backward on 2B), the penalty adds 9 C (a
# forward and a backward to the interpolates, then the backward of both); the generator update is
# 3 G + 3 C in both.
GAN_IDEALS = {
    "digits": {GAN_STEP_RATIO: "~1.3", GAN_CRITIC_RATIO: "~1.4"},
    "mnist5k": {GAN_STEP_RATIO: "~1.7", GAN_CRITIC_RATIO: "~1.9"},
}
GAN_IDEAL_NOTE = ("counted passes: a critic update is G + 6 C for WGAN and G + 15 C with the "
                  "penalty (C: one critic forward on the batch; G, the generator's forward, is "
                  "about 4 C at MNIST-5k widths and 15 C at digits widths)")
DEFAULT_ROUNDS = 5
ROUND_MIN_TIME_S = 0.5


def check_gan_names(kinds: Sequence[str], datasets: Sequence[str]) -> None:
  """Raises a clear error for an unknown kind or dataset (before anything is built or compiled).

  Args:
    kinds: kinds of :data:`robust_jax.games.config.KINDS`.
    datasets: names of :data:`GAN_IMAGE_SHAPES`.

  Raises:
    ValueError: naming the first unknown kind or dataset and the valid ones.
  """
  for k in kinds:
    if k not in games_config.KINDS:
      raise ValueError(f"unknown GAN kind {k!r}; valid kinds: {', '.join(games_config.KINDS)}")
  for d in datasets:
    if d not in GAN_IMAGE_SHAPES:
      raise ValueError(f"unknown GAN dataset {d!r}; valid datasets: {', '.join(GAN_DATASETS)}")


def gan_config(kind: str, dataset: str, *, cpu: bool = False,
               overrides: Optional[Mapping[str, Any]] = None) -> ml_collections.ConfigDict:
  """The config the trainer would use: ``games.config.for_kind(kind, dataset=..., cpu=...)``.

  Args:
    kind: a kind of :data:`robust_jax.games.config.KINDS`.
    dataset: ``digits`` or ``mnist5k`` (the widths of ``for_kind`` for that dataset).
    cpu: the CPU-budget widths of the reproduction (``launch/configs/gan.py:<kind>,cpu``).
    overrides: config fields to set afterwards (the tests shrink ``dim``, ``latent_dim``,
      ``batch_size``).

  Returns:
    A validated config.

  Raises:
    ValueError: for an unknown kind or dataset, or a field out of range.
  """
  check_gan_names([kind], [dataset])
  c = games_config.for_kind(kind, dataset=dataset, cpu=cpu)
  for k, v in (overrides or {}).items():
    c[k] = v
  games_config.validate(c)
  return c


def reduced_n_critic(n_critic: int) -> int:
  """The second point of the critic-update fit: 1 critic update, or 2 when ``n_critic`` is 1."""
  return 1 if n_critic > 1 else 2


def gan_batch(config, image_shape: Sequence[int], seed: int = 0) -> Dict[str, jax.Array]:
  """A synthetic batch of the trainer's shape: ``{"image": float32 [B, n_critic, H, W, C]}`` in
  [0, 1] (uniform; what the trainer reshapes its ``B * n_critic`` real images to)."""
  x = synthetic_batch((int(config.n_critic),) + tuple(image_shape), int(config.batch_size), seed)
  return {"image": x["image"]}


def trainer_step(config, image_shape: Sequence[int], mesh) -> Callable:
  """``jit(step)`` as :func:`robust_jax.games.loop.train_and_evaluate` builds it: the kind's
  networks (``networks.build``), ``step.make_train_step``, ``parallel.jit_data_parallel`` (state
  replicated and donated, batch sharded over ``mesh``)."""
  generator, critic = networks.build(config, tuple(image_shape))
  return parallel.jit_data_parallel(games_step.make_train_step(config, generator, critic), mesh)


class GANContender:
  """One compiled GAN training step, its state and its batch: ``contender()`` runs one step.

  The state is donated to each call and replaced by the one it returns (as the trainer does), so
  calling the AOT-compiled step again also proves that it needs no second compilation.

  Attributes:
    config: the GAN config.
    image_shape: (H, W, C).
    compiled: the ahead-of-time compiled step.
    compile_s: trace + lower + compile seconds.
    state: the current (replicated) :class:`robust_jax.games.step.GANState`.
    batch: the sharded synthetic batch.
    metrics: the metrics of the last call (None before the first).
  """

  def __init__(self, config, image_shape: Sequence[int], *, mesh=None, seed: int = 0):
    """Builds the state and batch and compiles the step (``compile_s``).

    Args:
      config: a validated GAN config (:func:`gan_config`).
      image_shape: (H, W, C) of the images.
      mesh: the device mesh (default: ``parallel.make_mesh()``, every device, as the trainer).
      seed: the synthetic batch's seed.

    Raises:
      ValueError: if the batch size is not divisible by the number of devices.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_batch_size(int(config.batch_size), mesh)
    self.config, self.image_shape = config, tuple(image_shape)
    generator, critic = networks.build(config, self.image_shape)
    self.state = parallel.replicate(
        games_step.create(config, generator, critic, self.image_shape), mesh)
    self.batch = parallel.shard_batch(gan_batch(config, self.image_shape, seed), mesh)
    step = trainer_step(config, self.image_shape, mesh)
    t0 = time.perf_counter()
    self.compiled = step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.metrics = None

  def __call__(self):
    """One training step on the fixed batch; returns ``(state, metrics)``."""
    self.state, self.metrics = self.compiled(self.state, self.batch)
    return self.state, self.metrics

  def finite_metrics(self) -> bool:
    """Whether every scalar metric of the last call is finite."""
    m = jax.device_get(self.metrics or {})
    return all(np.isfinite(float(v)) for v in m.values() if np.ndim(v) == 0)


def alternated_ratios(round_ms: Mapping[str, Sequence[Tuple[float, float]]], *, dataset: str,
                      batch: int) -> List[Dict[str, Any]]:
  """WGAN-GP over WGAN from per-round times of one alternated session (median of per-round ratios).

  Args:
    round_ms: ``kind -> [(step ms, critic update ms) per round]``; without both ``wgan`` and
      ``wgan_gp`` there is no ratio.
    dataset: the image size's name (the records' ``model``).
    batch: the batch size.

  Returns:
    ``kind="ratio"`` records named :data:`GAN_STEP_RATIO` and :data:`GAN_CRITIC_RATIO` (the latter
    only where every per-round WGAN critic update is positive), with ``value``, ``per_round``,
    ``rounds``, ``ideal`` (:data:`GAN_IDEALS`) and ``note``.
  """
  if "wgan" not in round_ms or "wgan_gp" not in round_ms:
    return []
  out = []
  for name, i in ((GAN_STEP_RATIO, 0), (GAN_CRITIC_RATIO, 1)):
    den = [r[i] for r in round_ms["wgan"]]
    if any(d <= 0 for d in den):
      continue  # a noisy fit (critic update <= 0): no meaningful ratio
    per_round = [g[i] / d for g, d in zip(round_ms["wgan_gp"], den)]
    out.append(dict(name=name, kind="ratio", model=dataset, batch=batch,
                    value=round(statistics.median(per_round), 3),
                    ideal=GAN_IDEALS.get(dataset, {}).get(name, ""), note=GAN_IDEAL_NOTE,
                    of="wgan_gp / wgan", rounds=len(per_round),
                    per_round=[round(r, 3) for r in per_round]))
  return out


def bench_gans(*, kinds: Sequence[str], datasets: Sequence[str] = GAN_DATASETS, cpu: bool = False,
               overrides: Optional[Mapping[str, Any]] = None, rounds: int = DEFAULT_ROUNDS,
               warmup: int = 1, min_time_s: float = ROUND_MIN_TIME_S,
               emit: Callable[[Dict[str, Any]], None] = lambda r: None) -> List[Dict[str, Any]]:
  """Times every kind's full training step on every image size, alternately (module docstring).

  Per image size: each kind's full step and reduced step (:func:`reduced_n_critic` critic updates)
  are compiled (``peak_mem_mb``: the peak from that kind's compile through its warm-up, every
  earlier contender still alive), run ``1 + warmup`` times untimed, then timed in ``rounds``
  alternating rounds; the records follow, then the WGAN-GP / WGAN ratios.

  Args:
    kinds: kinds of :data:`robust_jax.games.config.KINDS`.
    datasets: names of :data:`GAN_IMAGE_SHAPES`.
    cpu: the reproduction's CPU-budget widths instead of the published ones.
    overrides: config fields set on every config (:func:`gan_config`).
    rounds: alternation rounds, >= 1.
    warmup: untimed calls after the first one.
    min_time_s: each contender is called until its calls of a round add up to this.
    emit: called with each record as soon as it exists.

  Returns:
    ``kind="gan"`` records (``model`` = the dataset, ``method`` = the kind, ``,cpu`` with ``cpu``;
    ``gan_kind``, ``n_critic``, ``critic_update_ms``, ``rest_ms``, ``reduced_n_critic``,
    ``reduced_step_ms``, ``image_shape``, ``dim``, ``latent_dim``, ``xla_temp_mb``,
    ``finite_metrics``, ``rounds``, ``round_min_time_s``) and the ratio records of
    :func:`alternated_ratios`.

  Raises:
    ValueError: for an unknown kind or dataset (before anything is compiled), or ``rounds < 1``.
  """
  check_gan_names(kinds, datasets)
  if rounds < 1:
    raise ValueError(f"rounds must be >= 1, got {rounds}")
  out = []
  for dataset in datasets:
    shape = GAN_IMAGE_SHAPES[dataset]
    contenders: List[Tuple[str, GANContender, GANContender]] = []
    peaks = {}
    for kind in kinds:
      config = gan_config(kind, dataset, cpu=cpu, overrides=overrides)
      reduced = config.copy_and_resolve_references()
      reduced.n_critic = reduced_n_critic(int(config.n_critic))
      reset_peak_memory()
      full, red = GANContender(config, shape), GANContender(reduced, shape)
      for c in (full, red):
        time_calls(c, 1 + warmup)
      peaks[kind] = peak_memory_mb()
      contenders.append((kind, full, red))
    times = {kind: ([], []) for kind, _, _ in contenders}
    round_ms = {kind: [] for kind, _, _ in contenders}
    for r in range(rounds):
      order = contenders if r % 2 == 0 else contenders[::-1]
      this_round = {}
      for kind, full, red in order:
        # Alternate the full and the reduced step too (reduced first in the reversed rounds).
        pair = (full, red) if r % 2 == 0 else (red, full)
        got = {id(c): time_calls(c, 1, min_time_s) for c in pair}
        tf, tr = got[id(full)], got[id(red)]
        times[kind][0].extend(tf)
        times[kind][1].extend(tr)
        this_round[kind] = (statistics.median(tf), statistics.median(tr))
      for kind, full, red in contenders:
        f_s, r_s = this_round[kind]
        n, n_red = int(full.config.n_critic), int(red.config.n_critic)
        critic_s = (f_s - r_s) / (n - n_red)
        round_ms[kind].append((1e3 * f_s, 1e3 * critic_s))
    for kind, full, red in contenders:
      n = int(full.config.n_critic)
      step_s = statistics.median(times[kind][0])
      critic_ms = statistics.median(c for _, c in round_ms[kind])
      b = int(full.config.batch_size)
      rec = record(
          kind="gan", model=dataset, batch=b, method=kind + (",cpu" if cpu else ""),
          compile_s=full.compile_s, times=times[kind][0], gan_kind=kind, n_critic=n,
          examples_per_s=round(b * n / step_s, 2), critic_update_ms=round(critic_ms, 3),
          rest_ms=round(1e3 * step_s - n * critic_ms, 3),
          reduced_n_critic=int(red.config.n_critic),
          reduced_step_ms=round(1e3 * statistics.median(times[kind][1]), 3),
          image_shape=list(shape), dim=int(full.config.dim),
          latent_dim=int(full.config.latent_dim), xla_temp_mb=round_or_none(temp_mb(full.compiled)),
          peak_mem_mb=round(peaks[kind], 1), finite_metrics=full.finite_metrics(), rounds=rounds,
          round_min_time_s=min_time_s)
      out.append(rec)
      emit(rec)
    batch = int(contenders[0][1].config.batch_size) if contenders else 0
    for rec in alternated_ratios(round_ms, dataset=dataset, batch=batch):
      out.append(rec)
      emit(rec)
  return out


__all__ = [
    "DEFAULT_ROUNDS", "GANContender", "GAN_CRITIC_RATIO", "GAN_DATASETS", "GAN_IDEALS",
    "GAN_IMAGE_SHAPES", "GAN_KINDS", "GAN_RATIOS", "GAN_STEP_RATIO", "ROUND_MIN_TIME_S",
    "alternated_ratios", "bench_gans", "check_gan_names", "gan_batch", "gan_config",
    "reduced_n_critic", "trainer_step",
]
