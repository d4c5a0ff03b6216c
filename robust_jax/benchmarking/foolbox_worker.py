"""The foolbox comparison: the library's attacks against foolbox's on the same JAX model and batch.

foolbox (3.3.4, with eagerpy) runs in its own virtual environment, so it never enters the library's;
:class:`FoolboxWorker` starts ``foolbox_script.py --worker`` there and reads one JSON line per
command, as :class:`~robust_jax.benchmarking.torch_worker.TorchWorker` does for PyTorch.

:func:`foolbox_comparison` trains Wong et al.'s MNIST network (``mnist_net``) for a few hundred
steps on MNIST-5k (:func:`trained_model`), so that the attacks face a real decision boundary,
exports its parameters, a test batch, the labels (the model's own predictions: every example starts
correctly classified) and the library's logits to an ``.npz`` (:func:`export_npz`). The worker
rebuilds the same network as a plain JAX function of those parameters
(:func:`~robust_jax.benchmarking.foolbox_script.mnist_net_logits`), wraps it in ``foolbox.JAXModel``
and reports the largest absolute difference between its logits and the library's (checked below
:data:`LOGITS_TOLERANCE`). Then, for each attack of
:data:`~robust_jax.benchmarking.foolbox_script.COMPARISONS` (hyperparameters set explicitly equal on
both sides), the rounds alternate: the library's attack (``robust_jax.attacks.make``, jitted, called
until its calls add up to ``min_time_s``), then foolbox's (the same), so that a load change on a
shared machine hits both alike. The record holds each side's median examples/s, the median of the
per-round ratios, and what each side achieved on the same inputs: robust accuracy for the
fixed-eps attacks, success rate and median distance (``inf`` counts as the largest) for the
minimum-norm ones, and the median per-example ratio of the two distances where both succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_jax import attacks, losses, models
from robust_jax.data import mnist5k
from robust_jax.benchmarking import foolbox_script
from robust_jax.benchmarking.foolbox_script import COMPARISONS, FOOLBOX_VERSION, MODEL
from robust_jax.benchmarking.timing import device_name, loadavg, time_calls

SCRIPT = foolbox_script.__file__
FOOLBOX_ATTACKS = tuple(COMPARISONS)
LOGITS_TOLERANCE = 1e-4  # largest |logits_foolbox - logits_library| accepted
TRAIN_STEPS = 300


def check_foolbox_python(python: str) -> None:
  """Raises ValueError, before anything is measured, unless ``python`` is an executable file.

  Args:
    python: the interpreter of foolbox's virtual environment (``--foolbox_python``).

  Example:
    >>> check_foolbox_python("/no/such/python")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --foolbox_python: '/no/such/python' does not exist ...
  """
  if not os.path.exists(python):
    raise ValueError(f"--foolbox_python: {python!r} does not exist (create foolbox's virtual "
                     f"environment: python3 -m venv /work/foolboxvenv && /work/foolboxvenv/bin/pip "
                     f"install foolbox=={FOOLBOX_VERSION} eagerpy==0.30.0 jax jaxlib)")
  if not (os.path.isfile(python) and os.access(python, os.X_OK)):
    raise ValueError(f"--foolbox_python: {python!r} is not an executable file")


def check_foolbox_attack_names(names: Sequence[str]) -> None:
  """Raises ValueError for a name that is not in :data:`FOOLBOX_ATTACKS` (listed)."""
  unknown = [n for n in names if n not in COMPARISONS]
  if unknown:
    raise ValueError(f"--foolbox_attacks: unknown {unknown}; valid: {list(FOOLBOX_ATTACKS)}")


def export_npz(path: str, variables: Mapping[str, Any], x, y, logits) -> None:
  """Writes the parameters (keys ``params/<layer>/<name>``), the batch, labels and logits.

  :func:`~robust_jax.benchmarking.foolbox_script.load_npz` reads it back (the tests check that
  :func:`~robust_jax.benchmarking.foolbox_script.mnist_net_logits` of the loaded parameters gives
  the library model's logits).
  """
  flat = flax.traverse_util.flatten_dict(dict(variables["params"]), sep="/")
  arrays = {f"params/{k}": np.asarray(v, np.float32) for k, v in flat.items()}
  np.savez(path, x=np.asarray(x, np.float32), y=np.asarray(y, np.int32),
           logits=np.asarray(logits, np.float32), **arrays)


def trained_model(steps: int = TRAIN_STEPS, batch: int = 128, seed: int = 0):
  """``(model, variables, test_images, test_labels)``: ``mnist_net`` trained on MNIST-5k.

  Adam (1e-3), cross-entropy, ``steps`` steps of ``batch`` training images (a few seconds on a CPU;
  about 95% test accuracy at 300 steps); deterministic for a ``seed``.
  """
  splits = mnist5k.load_mnist5k_splits()
  xs, ys = splits["train"]["image"], splits["train"]["label"]
  model = models.get_model(MODEL, num_classes=10)
  variables = model.init(jax.random.key(seed), jnp.zeros((1,) + xs.shape[1:]))
  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, opt_state, xb, yb):
    g = jax.grad(lambda p: jnp.mean(losses.cross_entropy(model.apply({"params": p}, xb), yb)))(
        params)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = variables["params"], tx.init(variables["params"])
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(xs), batch)
    params, opt_state = step(params, opt_state, xs[idx], ys[idx])
  return model, {"params": params}, splits["test"]["image"], splits["test"]["label"]


class FoolboxWorker:
  """A ``foolbox_script.py --worker`` subprocess attacking the model of ``npz``.

  Args:
    python: a Python with ``foolbox``, ``eagerpy`` and ``jax`` (checked by
      :func:`check_foolbox_python`).
    npz: the file :func:`export_npz` wrote.
    script: the worker script (default: :mod:`~robust_jax.benchmarking.foolbox_script`'s file).

  Raises:
    RuntimeError: if the worker exits before its first line (its stderr is passed through).
  """

  def __init__(self, python: str, *, npz: str, script: str = SCRIPT):
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    cmd = [python, script, "--worker", f"--npz={npz}"]
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=env)
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"{cmd} exited with code {self.proc.wait()}")
    self.info = json.loads(line)

  def run(self, name: str, min_time_s: float) -> Dict[str, Any]:
    """Calls foolbox's attack ``name`` until its calls add up to ``min_time_s``: ``times_s``,
    ``success`` (fraction) and ``distances`` (per example, None where no adversarial was found)."""
    self.proc.stdin.write(f"run {name} {min_time_s}\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"the foolbox worker died during {name!r} (code {self.proc.wait()})")
    return json.loads(line)

  def close(self):
    """Asks the worker to quit and waits for it (at most a minute)."""
    with contextlib.suppress(Exception):
      self.proc.stdin.write("quit\n")
      self.proc.stdin.flush()
    with contextlib.suppress(Exception):
      self.proc.wait(timeout=60)
    if self.proc.poll() is None:
      self.proc.kill()


def library_attack(name: str, model, variables) -> Callable:
  """The library's side of comparison ``name``: ``call(x, y, key) -> x_adv``, jitted.

  ``robust_jax.attacks.make(lib, **lib_kwargs, eps=eps)`` against ``model.apply(variables, .)``.
  """
  c = COMPARISONS[name]
  kwargs = dict(c["lib_kwargs"], **({} if c["eps"] is None else {"eps": c["eps"]}))
  attack = attacks.make(c["lib"], **kwargs)
  logits_fn = jax.tree_util.Partial(model.apply, variables)
  return jax.jit(lambda xx, yy, kk: attack(logits_fn, xx, yy, kk).x_adv)


def _summary(name: str, dist: np.ndarray, success: np.ndarray) -> Dict[str, Any]:
  """Robust accuracy (fixed eps) or success rate and median distance (minimum norm)."""
  if COMPARISONS[name]["eps"] is not None:
    return dict(robust_accuracy=round(1.0 - float(np.mean(success)), 4))
  med = float(np.median(dist))
  return dict(success=round(float(np.mean(success)), 4),
              median_norm=None if np.isinf(med) else round(med, 4))


def foolbox_comparison(python: str, *, names: Sequence[str] = FOOLBOX_ATTACKS, batch: int = 128,
                       rounds: int = 3, min_time_s: float = 1.0, train_steps: int = TRAIN_STEPS,
                       emit: Callable[[Dict[str, Any]], None] = lambda r: None
                       ) -> List[Dict[str, Any]]:
  """The library's and foolbox's attacks on the same model and batch, alternating, one session.

  Args:
    python: foolbox's Python (:func:`check_foolbox_python`).
    names: comparisons of :data:`FOOLBOX_ATTACKS`.
    batch: test images attacked (MNIST-5k test split, its first ``batch``).
    rounds: alternation rounds, >= 1.
    min_time_s: each side's attack is called until its calls add up to this (at least once) in
      each round.
    train_steps: training steps of the attacked model (:func:`trained_model`).
    emit: called with each record as soon as it exists.

  Returns:
    One ``kind="foolbox"`` record per attack: ``step_ms`` / ``examples_per_s`` are the library's
    (median over rounds of each round's median call), ``foolbox_step_ms`` /
    ``foolbox_examples_per_s`` foolbox's, ``foolbox_over_lib`` the median of the per-round ratios
    foolbox time / library time (> 1: the library is faster), ``compile_s`` the library's
    compilation, ``foolbox_first_call_s`` foolbox's first (tracing) call, ``lib_summary`` /
    ``foolbox_summary`` what each side achieved (:func:`_summary`), ``distance_ratio_median`` the
    median per-example foolbox / library distance where both succeeded, ``logits_max_abs_diff``
    the model parity, ``loadavg`` at the start and end of the measurement.

  Raises:
    ValueError: for a bad python path or attack name (before anything is measured).
    RuntimeError: if the worker's logits differ from the library's by more than
      :data:`LOGITS_TOLERANCE`.
  """
  check_foolbox_python(python)
  check_foolbox_attack_names(names)
  model, variables, xs, _ = trained_model(train_steps)
  x = jnp.asarray(xs[:batch])
  logits = model.apply(variables, x)
  y = jnp.argmax(logits, -1).astype(jnp.int32)
  key = jax.random.key(0)
  records = []
  with tempfile.TemporaryDirectory() as tmp:
    npz = os.path.join(tmp, "foolbox_model.npz")
    export_npz(npz, variables, x, y, logits)
    worker = FoolboxWorker(python, npz=npz)
    try:
      diff = worker.info["logits_max_abs_diff"]
      if not diff < LOGITS_TOLERANCE:
        raise RuntimeError(f"foolbox's model differs from the library's: max |logits diff| = "
                           f"{diff:g} >= {LOGITS_TOLERANCE:g}")
      for name in names:
        records.append(_compare(name, worker, model, variables, x, y, key, rounds=rounds,
                                min_time_s=min_time_s))
        records[-1].update(logits_max_abs_diff=diff, foolbox_version=worker.info["foolbox"],
                           eagerpy=worker.info["eagerpy"], foolbox_jax=worker.info["jax"],
                           clean_accuracy=worker.info["clean_accuracy"],
                           train_steps=train_steps)
        emit(records[-1])
    finally:
      worker.close()
  return records


def _compare(name, worker, model, variables, x, y, key, *, rounds, min_time_s):
  """One attack: compile the library's, warm foolbox's, then ``rounds`` alternated rounds."""
  c = COMPARISONS[name]
  load_start = loadavg()
  call = library_attack(name, model, variables)
  t0 = time.perf_counter()
  jax.block_until_ready(call(x, y, key))
  compile_s = time.perf_counter() - t0
  first = worker.run(name, 0.0)  # foolbox's tracing call, untimed
  lib_med, fb_med, per_round = [], [], []
  out = {}

  def lib_call():
    out["x_adv"] = call(x, y, key)
    return out["x_adv"]

  fb = {}
  for _ in range(rounds):
    time.sleep(0.2)
    lt = statistics.median(time_calls(lib_call, 1, min_time_s))
    time.sleep(0.2)
    fb = worker.run(name, min_time_s)
    ft = statistics.median(fb["times_s"])
    lib_med.append(lt)
    fb_med.append(ft)
    per_round.append(ft / lt)
  x_adv = np.asarray(out["x_adv"])
  lib_success = np.asarray(jnp.argmax(model.apply(variables, out["x_adv"]), -1) != y)
  lib_dist = foolbox_script.distances(x_adv, np.asarray(x), lib_success, c["norm"])
  fb_dist = np.array([np.inf if d is None else d for d in fb["distances"]])
  fb_success = np.isfinite(fb_dist)
  both = np.isfinite(lib_dist) & np.isfinite(fb_dist) & (lib_dist > 0)
  batch = int(x.shape[0])
  lt, ft = statistics.median(lib_med), statistics.median(fb_med)
  return dict(
      name=f"foolbox_cmp/{MODEL}/{name}/b{batch}", kind="foolbox", model=MODEL, batch=batch,
      method=name, attack=c["foolbox"], lib_attack=c["lib"], budget=c["budget"],
      note=c.get("note", ""), norm=c["norm"], eps=c["eps"],
      compile_s=round(max(compile_s - lt, 0.0), 3),
      step_ms=round(1e3 * lt, 2), examples_per_s=round(batch / lt, 2),
      foolbox_step_ms=round(1e3 * ft, 2), foolbox_examples_per_s=round(batch / ft, 2),
      foolbox_first_call_s=round(sum(first["times_s"]), 3),
      foolbox_over_lib=round(statistics.median(per_round), 3),
      per_round=[round(r, 3) for r in per_round], rounds=rounds, min_time_s=min_time_s,
      peak_mem_mb=None, device=device_name(),
      lib_summary=_summary(name, lib_dist, lib_success),
      foolbox_summary=_summary(name, fb_dist, fb_success),
      distance_ratio_median=(round(float(np.median(fb_dist[both] / lib_dist[both])), 4)
                             if both.any() else None),
      loadavg=[load_start, loadavg()])
