r"""The foolbox side of the foolbox comparison: a standalone worker (numpy, jax, foolbox, eagerpy).

This file runs in foolbox's own virtual environment, as a script (never as part of the package):

  /work/foolboxvenv/bin/python robust_jax/benchmarking/foolbox_script.py --worker --npz=model.npz

It imports only numpy and jax at module level (foolbox and eagerpy inside :func:`worker`), so the
library's process can import it too: :data:`COMPARISONS` (the attacks both sides run, with their
hyperparameters set explicitly equal), :func:`load_npz` and :func:`mnist_net_logits` (the model the
worker attacks, a pure function of the exported parameters) are shared by both sides, and the tests
check the round trip without foolbox.

The protocol (:class:`robust_jax.benchmarking.foolbox_worker.FoolboxWorker` speaks it): the first
stdout line is a JSON object (versions, the largest absolute difference between this worker's
logits and the library's on the batch, the clean accuracy); then each stdin line ``run ATTACK
MIN_TIME_S`` calls the attack until its calls add up to ``MIN_TIME_S`` (at least once) and answers
one JSON line with the seconds of each call and what the last call did (robust accuracy, or the
per-example distances of a minimum-norm attack); ``quit`` ends the worker.

Example (no foolbox needed):

>>> sorted(COMPARISONS)[:3]
['cw_l2', 'ddn', 'deepfool_l2']
>>> COMPARISONS["linf_pgd10"]["foolbox"], COMPARISONS["linf_pgd10"]["lib"]
('LinfPGD', 'pgd')
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np

FOOLBOX_VERSION = "3.3.4"  # the version the comparison was written against
MODEL = "mnist_net"  # Wong et al.'s MNIST network (robust_jax.models.MNISTNet)

# Each attack both sides run. ``foolbox``: the class name in ``foolbox.attacks`` and its keyword
# arguments (every one that matters set explicitly, defaults included); ``eps``: foolbox's
# ``epsilons`` (None: a minimum-norm attack, run unbounded); ``lib``: the name of
# ``robust_jax.attacks.make`` and its hyperparameters (``eps`` is added from ``eps``); ``norm``: the
# norm of the distances reported. The library's defaults that differ from foolbox's are overridden
# on the library's side (``quantize=False`` for DDN, ``initial_radius="linearised"`` for FMN,
# ``start="uniform"`` for PGD, ``final_eval=False`` for PGD's K gradients); foolbox's that differ
# from the library's (PGD's 40/50 steps and relative step, FMN's 100 steps, CW's 10,000) on
# foolbox's. ``note``: what still differs between the two implementations (BENCHMARKS.md lists it).
COMPARISONS: Mapping[str, Dict[str, Any]] = {
    "fgsm": dict(
        foolbox="FGSM", foolbox_kwargs=dict(random_start=False), eps=0.1,
        lib="fgsm", lib_kwargs=dict(norm="linf", start="none"), norm="linf",
        budget="eps 0.1, step eps, no random start"),
    "linf_pgd10": dict(
        foolbox="LinfPGD", foolbox_kwargs=dict(steps=10, abs_stepsize=0.025, random_start=True),
        eps=0.1, lib="pgd",
        lib_kwargs=dict(norm="linf", num_steps=10, step_size=0.025, start="uniform",
                        final_eval=False),
        norm="linf", budget="eps 0.1, 10 steps of 0.025, uniform start"),
    "l2_pgd10": dict(
        foolbox="L2PGD", foolbox_kwargs=dict(steps=10, abs_stepsize=0.5, random_start=True),
        eps=2.0, lib="pgd",
        lib_kwargs=dict(norm="l2", num_steps=10, step_size=0.5, start="uniform",
                        final_eval=False),
        norm="l2", budget="eps 2.0, 10 steps of 0.5, uniform start in the ball",
        note="the library projects exactly onto the l2 ball intersected with the box (a 40-step "
             "bisection per step); foolbox rescales to the ball, then clips to the box"),
    "cw_l2": dict(
        foolbox="L2CarliniWagnerAttack",
        foolbox_kwargs=dict(binary_search_steps=5, steps=100, stepsize=0.01, confidence=0.0,
                            initial_const=1e-2, abort_early=True),
        eps=None, lib="cw_l2",
        lib_kwargs=dict(binary_search_steps=5, max_iterations=100, learning_rate=0.01,
                        confidence=0.0, initial_const=1e-2, abort_early=True),
        norm="l2", budget="5 binary search steps x 100 Adam steps of 0.01, c0 0.01, abort early",
        note="foolbox aborts early on the loss summed over the batch, the library per example "
             "(neither aborts within 100 steps here). Adam differs: the library follows the "
             "official code's TF1 Adam (epsilon added to sqrt(v) before bias correction), "
             "foolbox the bias-corrected form; with tanh-saturated pixels (MNIST's 0 background) "
             "TF1's epsilon shrinks their steps, the likely reason the library finds fewer "
             "adversarials in 100 steps (the distances agree where both succeed)"),
    "ddn": dict(
        foolbox="DDNAttack", foolbox_kwargs=dict(init_epsilon=1.0, steps=100, gamma=0.05),
        eps=None, lib="ddn", lib_kwargs=dict(steps=100, gamma=0.05, init_norm=1.0, quantize=False),
        norm="l2", budget="100 steps, gamma 0.05, initial norm 1, no quantisation",
        note="the library's default quantisation to 256 levels is off (foolbox has none)"),
    "fmn_l2": dict(
        foolbox="L2FMNAttack", foolbox_kwargs=dict(steps=100, max_stepsize=1.0, gamma=0.05),
        eps=None, lib="fmn",
        lib_kwargs=dict(norm="l2", steps=100, max_stepsize=1.0, gamma=0.05,
                        initial_radius="none"),
        norm="l2", budget="100 steps, step 1 -> 0.01, gamma 0.05",
        note="foolbox 3.3.4's L2FMNAttack never projects (its `project` scales by "
             "`minimum(1, norms / norms)` = 1, so the radius is ignored): plain normalised-"
             "gradient steps keeping the smallest adversarial, hence its larger norms. The library "
             "runs its default initial_radius='none' (its 'linearised', foolbox's rule on paper, "
             "finds far fewer adversarials in l2)"),
    "fmn_linf": dict(
        foolbox="LInfFMNAttack", foolbox_kwargs=dict(steps=100, max_stepsize=1.0, gamma=0.05),
        eps=None, lib="fmn",
        lib_kwargs=dict(norm="linf", steps=100, max_stepsize=1.0, gamma=0.05,
                        initial_radius="linearised"),
        norm="linf", budget="100 steps, step 1 -> 0.01, gamma 0.05",
        note="foolbox's radius before the first adversarial point is the library's "
             "initial_radius='linearised' (set), not its default 'none'"),
    "deepfool_l2": dict(
        foolbox="L2DeepFoolAttack",
        foolbox_kwargs=dict(steps=50, candidates=10, overshoot=0.02, loss="logits"),
        eps=None, lib="deepfool",
        lib_kwargs=dict(norm="l2", max_iter=50, candidates=10, overshoot=0.02),
        norm="l2", budget="50 steps, 10 candidates, overshoot 0.02",
        note="foolbox stops when the whole batch is adversarial and runs one forward and backward "
             "pass per candidate class; the library stops per example and takes the candidates' "
             "gradients from one forward pass (vmapped VJP)"),
    "deepfool_linf": dict(
        foolbox="LinfDeepFoolAttack",
        foolbox_kwargs=dict(steps=50, candidates=10, overshoot=0.02, loss="logits"),
        eps=None, lib="deepfool",
        lib_kwargs=dict(norm="linf", max_iter=50, candidates=10, overshoot=0.02),
        norm="linf", budget="50 steps, 10 candidates, overshoot 0.02", note="as deepfool l2"),
}


def load_npz(path: str):
  """``(params, x, y, logits)`` from the file the library's process wrote.

  ``params`` is the nested dict of the model's parameters (the file's keys ``params/<layer>/<name>``
  split on ``/``), ``x`` float32 [B, 28, 28, 1] in [0, 1], ``y`` int32 [B] (the model's own
  predictions), ``logits`` the library's float32 [B, 10] at ``x``.
  """
  with np.load(path) as f:
    params: Dict[str, Any] = {}
    for key in f.files:
      if key.startswith("params/"):
        node = params
        *parents, leaf = key.split("/")[1:]
        for p in parents:
          node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(f[key])
    return params, jnp.asarray(f["x"]), jnp.asarray(f["y"]), jnp.asarray(f["logits"])


def mnist_net_logits(params: Mapping[str, Any], x: jax.Array) -> jax.Array:
  """Wong et al.'s MNIST network in plain JAX: the forward pass of ``robust_jax.models.MNISTNet``.

  ``conv16(4x4, stride 2, pad 1) -> ReLU -> conv32(4x4, stride 2, pad 1) -> ReLU -> flatten (NHWC)
  -> dense100 -> ReLU -> dense10``, with the library's parameter layout (HWIO kernels).

  Args:
    params: ``{"conv1", "conv2", "fc1", "fc2"}``, each ``{"kernel", "bias"}``.
    x: float32 NHWC images [B, 28, 28, 1].

  Returns:
    float32 logits [B, 10].
  """
  h = x
  for name in ("conv1", "conv2"):
    h = jax.lax.conv_general_dilated(h, params[name]["kernel"], (2, 2), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + params[name]["bias"])
  h = h.reshape(h.shape[0], -1)
  h = jax.nn.relu(h @ params["fc1"]["kernel"] + params["fc1"]["bias"])
  return h @ params["fc2"]["kernel"] + params["fc2"]["bias"]


def distances(x_adv: np.ndarray, x: np.ndarray, success: np.ndarray, norm: str) -> np.ndarray:
  """Per-example ``norm`` of ``x_adv - x``, ``inf`` where ``success`` is False (float64 [B])."""
  d = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
  n = np.abs(d).max(1) if norm == "linf" else np.sqrt((d * d).sum(1))
  return np.where(np.asarray(success, bool), n, np.inf)


def worker(npz: str) -> None:  # pragma: no cover  (needs foolbox; run by the benchmark)
  """The stdin/stdout loop of the module docstring, attacking :func:`mnist_net_logits` through
  ``foolbox.JAXModel`` (its forward jitted: what a foolbox user passes, and foolbox's fastest)."""
  import eagerpy  # pylint: disable=g-import-not-at-top
  import foolbox  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top

  params, x, y, ref = load_npz(npz)
  logits_fn = jax.jit(lambda z: mnist_net_logits(params, z))
  fmodel = foolbox.JAXModel(logits_fn, bounds=(0.0, 1.0))
  logits = logits_fn(x)
  info = dict(foolbox=foolbox.__version__, eagerpy=eagerpy.__version__, jax=jax.__version__,
              jaxlib=jaxlib.__version__, python=sys.version.split()[0],
              logits_max_abs_diff=float(jnp.max(jnp.abs(logits - ref))),
              clean_accuracy=float(foolbox.utils.accuracy(fmodel, x, y)))
  print(json.dumps(info), flush=True)
  built = {}
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
      break
    name, min_time_s = cmd[1], float(cmd[2])
    c = COMPARISONS[name]
    if name not in built:
      built[name] = getattr(foolbox.attacks, c["foolbox"])(**c["foolbox_kwargs"])
    attack, times, out = built[name], [], None
    while not times or sum(times) < min_time_s:
      t0 = time.perf_counter()
      out = attack(fmodel, x, y, epsilons=c["eps"])
      jax.block_until_ready(out[0].raw if hasattr(out[0], "raw") else out[0])
      times.append(time.perf_counter() - t0)
    raw, _, success = out
    success = np.asarray(success)
    d = distances(np.asarray(raw), np.asarray(x), success, c["norm"])
    print(json.dumps(dict(times_s=times, success=float(success.mean()),
                          distances=[None if math.isinf(v) else v for v in d.tolist()])),
          flush=True)


def main(argv=None) -> None:  # pragma: no cover
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--worker", action="store_true", help="Serve the stdin protocol.")
  parser.add_argument("--npz", required=True, help="Parameters, batch and reference logits.")
  args = parser.parse_args(argv)
  if not args.worker:
    parser.error("only --worker is supported")
  worker(args.npz)


if __name__ == "__main__":
  main()
