"""AutoAttack: APGD-CE, APGD-T, FAB-T and Square, each on the points still robust.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020; the protocol of ``fra31/auto-attack`` ``autoattack.py``
(``run_standard_evaluation``):

* Clean accuracy first; misclassified points count as non-robust and are never attacked.
* The attacks run in order, each only on the points no earlier attack broke, and each starts from
  the clean input (auto-attack#85). A point is broken by an attack when the attack's point is
  misclassified (and, for FAB, within eps: FAB is a minimum-norm attack).
* The reported robust accuracy is the per-point worst case over all attacks, i.e. the accuracy after
  the last one (auto-attack#45).

Versions (``version``):

* ``"standard"``: APGD-CE (100 iterations, 1 restart), APGD-T (9 targets, 100 iterations, 1 restart
  each), FAB-T (9 targets, 100 iterations), Square (5,000 queries, p_init 0.8). Each stage runs the
  algorithm of ``fra31/auto-attack`` by default: APGD ``variant="official"`` (``autopgd_base.py``'s
  Condition 1 and checkpoints; ``apgd_variant="paper"`` for the paper's), Square
  ``variant="autoattack"`` (``square.py``'s one window per batch; ``square_variant=
  "square_attack"`` for ``max-andr/square-attack``'s per-example windows with re-drawn signs). On
  the digits MLP of tests/conftest.py (359 test points, 3 keys) the standard version left 276
  points robust at eps 0.05 and 87 at eps 0.1 with either APGD variant and either Square (APGD-T
  leaves nothing to FAB-T and Square there; measured with the earlier power-of-two padding, see
  :func:`_bucket`).
* ``"plus"``: APGD-CE and APGD-DLR with 5 restarts, untargeted FAB with 5 restarts, Square, APGD-T
  and FAB-T (9 targets).
* ``"rand"`` (for randomised defences): APGD-CE and APGD-DLR, 1 restart each, with EOT: every
  iteration's gradient is the mean over ``eot_iter`` = 20 stochastic passes of ``logits_fn(x, key)``
  (``set_version('rand')``; :func:`robust_jax.attacks.apgd` with ``randomized=True``). As the
  official code, the clean and final checks are single stochastic passes (the robust accuracy is a
  random variable), ``check_randomized`` is not run, and the loss and prediction at an iterate are
  those of its last pass (the official code averages the gradient only).
* ``"custom"``: the attacks named in ``attacks`` (any of :data:`ATTACKS`), in that order.

Norms: ``"linf"``; ``"l2"`` (the same composition; Square is ``square.py``'s L2 branch,
``square_variant="autoattack"`` only); ``"l1"`` (Croce and Hein, "Mind the box", ICML 2021):
``set_version('standard')`` at commit a392200 runs APGD-CE with 5 restarts and ``use_largereps``
(eps x 3, 2, 1 for 30/30/40% of the iterations), APGD-T with 5 targets, 1 restart and
``use_largereps``, FAB-T with 9 targets and 1 restart, and Square (5,000 queries, p_init 0.8),
all with the L1 norm: APGD-L1 (:func:`robust_jax.attacks.apgd`, ``norm="l1"``), FAB-L1
(:func:`robust_jax.attacks.fab`, ``norm="l1"``) and ``square.py``'s L1 branch
(:func:`robust_jax.attacks.square`, ``norm="l1"``, ``square_variant="autoattack"`` only).
``version="custom"`` gives ``"apgd-ce"``/``"apgd-t"`` the same L1 settings. ``version="plus"``
with ``norm="l1"`` is ``set_version('plus')`` as coded, which does not change the L1 settings:
5 restarts for APGD-CE, APGD-DLR and FAB, APGD-T with 9 targets, no ``use_largereps`` (the
official code prints that this combination should be checked). The abstract of "Mind the box"
names l1-APGD and the l1 Square Attack as the ensemble; FAB-T is in it as coded (the paper's
composition was not checked against the code here: the code is followed).

``n_target_classes`` defaults to min(9, C - 1). The budgets (``n_iter``, ``n_queries``,
``n_restarts``) can be overridden, e.g. for tests.

Why host-side gathering between attacks, not masks alone: every attack is one jitted program over a
fixed batch of ``batch_size`` points with an ``active`` mask (the attacks' own per-example while
loops). Between attacks the still-robust points are gathered on the host and packed into
batches of ``batch_size``, the last one padded with inactive points to the next of four sizes per
octave (:func:`_bucket`). So each attack compiles once
per batch size, whatever number of points survive (no shape-dependent recompilation, unlike
gathering to the exact survivor count), and no compute is spent on points already broken (unlike
running every attack over the whole batch with a mask), except on the padding of the last batch. The
per-attack while loops also exit as soon as all their active points are broken.

Checks (warnings, as AutoAttack's ``checks.py``): logits that look like probabilities; Square
breaking points that all gradient-based attacks missed (a sign of gradient masking); a final
re-evaluation that disagrees with an attack's verdict (a non-deterministic model). The final verdict
is always the re-evaluation: a point is non-robust only if its returned ``x_adv`` is misclassified
and lies in the eps-ball and the box.

tests/attacks/test_l1_autoattack.py checks the L1 standard composition (the attacks made, their
settings, that its robust accuracy is at most each stage's alone) and FAB-L1 and Square-L1 against
transcriptions of the official code.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable, Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import validation
from robust_jax.attacks import _apgd
from robust_jax.attacks import _factory
from robust_jax.attacks import _square
from robust_jax.attacks._loop import as_pytree_fn

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
# AutoAttack's stage names and the names of robust_jax.attacks.make.
_FACTORY_NAMES = {"apgd-ce": "apgd_ce", "apgd-dlr": "apgd_dlr", "apgd-t": "apgd_t", "fab": "fab",
                  "fab-t": "fab_t", "square": "square"}
VERSIONS = ("standard", "plus", "rand", "custom")
NORMS = ("linf", "l2", "l1")
# autoattack.py ``set_version`` at commit a392200: the attacks of each version (the same for every
# norm; the L1 standard version differs in its settings, :func:`_stage_hyperparameters`).
_VERSION_ATTACKS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
# What robust_jax implements of each attack: every stage in every norm, as the official code.
_NORMS_OF = {a: NORMS for a in ATTACKS}
RAND_EOT_ITER = 20  # set_version('rand'): self.apgd.eot_iter = 20
_GRADIENT_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")


@flax.struct.dataclass
class AutoAttackResult:
  """What :func:`autoattack` returns.

  Attributes:
    x_adv: [B, ...] the adversarial point for broken points, ``x`` for robust and
      clean-misclassified ones; always in the eps-ball and in [0, 1].
    robust: bool [B], correctly classified at ``x`` and at every attack's point (the worst case).
    broken_by: int32 [B], ``attack_names[broken_by]`` broke the point: 0 (``"clean"``) for points
      misclassified without attack, s >= 1 for the s-th attack, -1 for robust points.
    clean_correct: bool [B].
    robust_accuracy: float32 [S + 1], the accuracy after the clean evaluation and after each of the
      S attacks (cumulative: the last entry is the robust accuracy to report).
    seconds: float32 [S + 1], wall-clock seconds of the clean evaluation and of each attack.
    attack_names: ``("clean", *attacks)``.
  """
  x_adv: jax.Array
  robust: jax.Array
  broken_by: jax.Array
  clean_correct: jax.Array
  robust_accuracy: jax.Array
  seconds: jax.Array
  attack_names: tuple = flax.struct.field(pytree_node=False, default=())


def _predict(logits_fn, x):
  return jnp.argmax(logits_fn(x), axis=-1)


_predict_jit = jax.jit(_predict)


def _logits(logits_fn, x):
  return logits_fn(x)


_logits_jit = jax.jit(_logits)


def _logits_rand(logits_fn, x, key):
  return logits_fn(x, key)


_logits_rand_jit = jax.jit(_logits_rand)


def _with_probe_key(logits_fn, x):
  """A randomised ``logits_fn(x, key)`` with a fixed key: for shape checks only."""
  return logits_fn(x, jax.random.key(0))


def _max_dist(a, b, norm):
  d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)).reshape(a.shape[0], -1)
  if norm == "linf":
    return np.abs(d).max(axis=1) if d.shape[1] else np.zeros(a.shape[0])
  if norm == "l1":
    return np.abs(d).sum(axis=1)
  return np.sqrt((d * d).sum(axis=1))


def version_attacks(version: str) -> tuple[str, ...]:
  """The attacks ``autoattack.py``'s ``set_version(version)`` runs, in order (any norm).

  Example:
    >>> version_attacks("standard"), version_attacks("rand")
    (('apgd-ce', 'apgd-t', 'fab-t', 'square'), ('apgd-ce', 'apgd-dlr'))
  """
  validation.check_choice("version", version, tuple(_VERSION_ATTACKS))
  return _VERSION_ATTACKS[version]


def _stage_hyperparameters(name, *, version, eps, norm, n_iter, n_restarts, n_target_classes,
                           n_queries, apgd_variant, square_variant, eot_iter=None,
                           num_classes=None) -> dict:
  """The hyperparameters AutoAttack sets for the stage ``name`` (for ``attacks.make``).

  As ``set_version``: APGD-CE 1 restart (5 in ``"plus"``; 5 and ``use_largereps`` in the L1
  standard version, and in ``"custom"`` with ``norm="l1"``), APGD-T 9 targets (5 and
  ``use_largereps`` likewise), FAB-T 9 targets, FAB-T and Square in ``norm``; ``"rand"``: 1
  restart and ``eot_iter=20`` on a randomised model. ``n_target_classes=None`` is
  resolved with ``num_classes`` (left None without it). Every other hyperparameter keeps the
  attack's default (APGD's rho and momentum 0.75, FAB's alpha_max 0.1, eta 1.05, beta 0.9,
  Square's p_init 0.8 and margin loss), and each attack stops an example as soon as it is broken
  (``early_stop``: the broken set is the same).
  """
  if name == "square":
    out = dict(eps=eps, n_queries=n_queries, variant=square_variant)
    if norm != "linf":
      out["norm"] = norm
    return out
  # set_version('standard') for L1; 'plus' keeps the constructor's settings (autoattack.py).
  l1_standard = norm == "l1" and version in ("standard", "custom")
  if n_restarts is None:
    n_restarts = 5 if version == "plus" and name in ("apgd-ce", "apgd-dlr", "fab") else 1
    if l1_standard and name in ("apgd-ce", "apgd-dlr"):
      n_restarts = 5  # set_version('standard'), L1: self.apgd.n_restarts = 5
  hyperparameters = dict(eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts)
  if name.startswith("apgd"):
    hyperparameters["variant"] = apgd_variant
    if l1_standard:
      hyperparameters["use_largereps"] = True
    if version == "rand":
      hyperparameters["eot_iter"] = RAND_EOT_ITER if eot_iter is None else eot_iter
      hyperparameters["randomized"] = True
  if name in ("apgd-t", "fab-t"):
    top = 5 if (l1_standard and name == "apgd-t") else 9
    if n_target_classes is None and num_classes is not None:
      n_target_classes = min(top, num_classes - 1)
    hyperparameters["n_target_classes"] = n_target_classes
  return hyperparameters


def stage_settings(*, eps, norm="linf", version="standard", attacks=None, n_iter=100,
                   n_restarts=None, n_target_classes=None, n_queries=5000,
                   apgd_variant="official", square_variant="autoattack", num_classes=None,
                   eot_iter=None, **_ignored) -> dict:
  """Every hyperparameter of every stage :func:`autoattack` runs, defaults included.

  What an evaluation record needs to say which algorithm ran with which budgets
  (:func:`robust_jax.evaluation.evaluate` stores it).

  Args:
    eps, norm, version, attacks, n_iter, n_restarts, n_target_classes, n_queries, apgd_variant,
      square_variant, eot_iter: as :func:`autoattack`.
    num_classes: C, to resolve the default ``n_target_classes`` min(9, C - 1) (APGD-T of the L1
      versions: min(5, C - 1)); None leaves it None.

  Returns:
    ``{stage: {"attack": factory name, **hyperparameters}}`` in the order the stages run.

  Example:
    >>> s = stage_settings(eps=8 / 255, num_classes=10)
    >>> list(s), s["apgd-t"]["variant"], s["apgd-t"]["n_target_classes"], s["square"]["variant"]
    (['apgd-ce', 'apgd-t', 'fab-t', 'square'], 'official', 9, 'autoattack')
  """
  names = check_hyperparameters(eps=eps, norm=norm, version=version, attacks=attacks,
                                n_iter=n_iter, n_restarts=n_restarts, n_queries=n_queries,
                                apgd_variant=apgd_variant, square_variant=square_variant,
                                eot_iter=eot_iter)
  out = {}
  for name in names:
    factory_name = _FACTORY_NAMES[name]
    bound = _stage_hyperparameters(
        name, version=version, eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts,
        n_target_classes=n_target_classes, n_queries=n_queries, apgd_variant=apgd_variant,
        square_variant=square_variant, eot_iter=eot_iter, num_classes=num_classes)
    made = _factory.make(factory_name, **bound)
    out[name] = {"attack": factory_name, **_factory.hyperparameter_defaults(factory_name),
                 **made.hyperparameters}
  return out


def check_hyperparameters(*, eps, norm="linf", version="standard", attacks=None, n_iter=100,
                          n_restarts=None, n_queries=5000, apgd_variant="official",
                          square_variant="autoattack", eot_iter=None, **_unchecked
                          ) -> tuple[str, ...]:
  """Raises ValueError naming the first bad hyperparameter of :func:`autoattack` (no data needed).

  Returns:
    The names of the attacks to run, in order.
  """
  validation.check_choice("norm", norm, NORMS)
  validation.check_choice("version", version, VERSIONS)
  validation.check_choice("apgd_variant", apgd_variant, _apgd.VARIANTS)
  validation.check_choice("square_variant", square_variant, _square.VARIANTS)
  if version == "custom":
    if not attacks:
      raise ValueError(f"version='custom' needs attacks=(...), names from {ATTACKS}")
    names = tuple(attacks)
  else:
    if attacks is not None:
      raise ValueError("attacks is only used with version='custom'")
    names = _VERSION_ATTACKS[version]
  for a in names:
    validation.check_choice("attacks", a, ATTACKS)
  missing = [a for a in names if norm not in _NORMS_OF[a]]
  if missing:
    have = tuple(a for a in names if norm in _NORMS_OF[a])
    raise ValueError(
        f"version={version!r} with norm={norm!r} runs {names} (fra31/auto-attack set_version), but "
        f"robust_jax has no {norm} version of {tuple(missing)}; nothing is substituted. Run "
        f"version='custom' with attacks={have} for the other stages")
  if norm == "l1" and apgd_variant != "official":
    raise ValueError("norm='l1' runs APGD-L1 as coded in autopgd_base.py: apgd_variant must be "
                     f"'official', got {apgd_variant!r}")
  if norm in ("l2", "l1") and "square" in names and square_variant != "autoattack":
    raise ValueError(f"Square for norm={norm!r} is fra31/auto-attack's square.py {norm.upper()} "
                     f"branch: square_variant must be 'autoattack', got {square_variant!r}")
  if version != "rand" and eot_iter is not None:
    raise ValueError("eot_iter is only used with version='rand' (a randomised logits_fn(x, key))")
  if eot_iter is not None:
    validation.check_scalar("eot_iter", eot_iter, low=1, integer=True)
  validation.check_eps(eps, norm, low_open=True)
  validation.check_scalar("n_iter", n_iter, low=2 if norm == "l1" and version != "rand" else 1,
                          integer=True)
  validation.check_scalar("n_queries", n_queries, low=0, integer=True)
  if n_restarts is not None:
    validation.check_scalar("n_restarts", n_restarts, low=1, integer=True)
  return names


_MIN_BUCKET = 32


def _bucket(m: int, batch_size: int, multiple: int = 1) -> int:
  """The padded size of a chunk of ``m`` points: the next of 32, 40, 48, 56, 64, 80, 96, 112, 128,
  160, ... (four sizes per octave, 2^k x {1, 1.25, 1.5, 1.75}; at least :data:`_MIN_BUCKET`, a
  multiple of ``multiple``), at most ``batch_size``. Later stages attack only the points still
  robust: padding them to the full batch made every stage cost as much as the first, and padding to
  the next power of two still left up to half of a batch idle (on 100 points of a robust MNIST
  CNN, 76 survivors were padded to 100: 24% of every APGD-T, FAB-T and Square batch); quarter
  octaves bound the padding to 25% of the lower power of two (76 -> 80) and the compilations to four
  shapes per octave per attack. The padded size is the batch the attack's random draws are made
  for (as the official code's ``bs``), so a result for a fixed key depends on it.

  >>> [_bucket(m, 1000) for m in (1, 33, 76, 95, 500, 513, 1000)]
  [32, 40, 80, 96, 512, 640, 1000]
  """
  if m <= _MIN_BUCKET:
    size = _MIN_BUCKET
  else:
    step = 1 << max((m - 1).bit_length() - 3, 0)  # a quarter of the power of two below m
    size = -(-m // step) * step
  size = -(-size // multiple) * multiple
  return max(min(size, batch_size), m)


def autoattack(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    key: jax.Array,
    norm: str = "linf",
    version: str = "standard",
    attacks: Optional[Sequence[str]] = None,
    n_iter: int = 100,
    n_restarts: Optional[int] = None,
    n_target_classes: Optional[int] = None,
    n_queries: int = 5000,
    batch_size: Optional[int] = None,
    sharding=None,
    apgd_variant: str = "official",
    square_variant: str = "autoattack",
    eot_iter: Optional[int] = None,
    verbose: bool = False,
) -> AutoAttackResult:
  """Runs AutoAttack and returns the per-point worst case (not jittable: it orchestrates attacks).

  Args:
    logits_fn: ``x -> logits`` [B, C] of a deterministic model (eval mode), mapping [0, 1] inputs
      to logits (normalisation inside); for ``version="rand"`` a randomised model
      ``(x, key) -> logits`` [B, C], called with a fresh PRNG key for every forward pass. Each
      attack is compiled once per ``logits_fn`` object and batch size.
    x: float32 images [N, H, W, C] in [0, 1] (NumPy or JAX).
    y: int32 labels [N].
    eps: the radius, > 0 (8/255 for CIFAR-10 linf).
    key: PRNG key; attack ``a`` uses ``fold_in(key, ATTACKS.index(a))``, folded again per batch.
    norm: ``"linf"``, ``"l2"`` or ``"l1"``. ``"l1"`` with ``version="standard"``: the official L1
      standard version (APGD-CE with 5 restarts and ``use_largereps``, APGD-T with 5 targets and
      ``use_largereps``, FAB-T with 9 targets, Square, all L1; the module docstring).
    version: ``"standard"``, ``"plus"``, ``"rand"`` (APGD-CE and APGD-DLR, 1 restart, EOT over
      ``eot_iter`` = 20 passes of a randomised ``logits_fn(x, key)``) or ``"custom"`` (with
      ``attacks``).
    attacks: the attacks to run for ``version="custom"``, names from :data:`ATTACKS`.
    n_iter: iterations of APGD and FAB per run (100).
    n_restarts: restarts per run; default 1, in ``"plus"`` 5 for APGD-CE, APGD-DLR and FAB, and
      5 for APGD-CE (and APGD-DLR) in the L1 standard version.
    n_target_classes: targets of APGD-T and FAB-T; default min(9, C - 1) (APGD-T with
      ``norm="l1"``: min(5, C - 1), as the official L1 standard version).
    n_queries: Square's queries (5,000).
    batch_size: points per attack call; default N (one batch).
    sharding: optional ``jax.sharding.Sharding`` to place each batch with (data parallelism).
    apgd_variant: ``"official"`` (default: ``autopgd_base.py``, what "AutoAttack (standard)"
      means) or ``"paper"`` (:func:`robust_jax.attacks.apgd`).
    square_variant: ``"autoattack"`` (default: ``square.py``) or ``"square_attack"``
      (``max-andr/square-attack``; :func:`robust_jax.attacks.square`).
    eot_iter: ``version="rand"`` only: gradient passes averaged per APGD iterate (default 20).
    verbose: print the robust accuracy and time after each attack, as AutoAttack does.

  Returns:
    An :class:`AutoAttackResult`. With ``version="rand"`` a point is broken when one stochastic
    forward pass at the attack's point misclassifies it (the official check), so the robust
    accuracy is itself a random variable: average several keys.

  Raises:
    ValueError: on a bad argument (named, with its valid range).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.eye(4)
    >>> logits_fn = lambda x: 10.0 * x.reshape(x.shape[0], -1) @ w
    >>> x = jnp.array([[0.9, 0.1, 0.1, 0.1], [0.9, 0.8, 0.1, 0.1]]).reshape(2, 2, 2, 1)
    >>> r = autoattack(logits_fn, x, jnp.array([0, 0]), eps=0.1, key=jax.random.key(0),
    ...                version="custom", attacks=("apgd-ce",), n_iter=10)  # APGD-CE alone: quick
    >>> r.robust.tolist(), r.broken_by.tolist(), r.attack_names
    ([True, False], [-1, 1], ('clean', 'apgd-ce'))
  """
  names = check_hyperparameters(eps=eps, norm=norm, version=version, attacks=attacks,
                                n_iter=n_iter, n_restarts=n_restarts, n_queries=n_queries,
                                apgd_variant=apgd_variant, square_variant=square_variant,
                                eot_iter=eot_iter)
  validation.check_images("x", x)
  validation.check_key(key, needed_by="AutoAttack")
  x_np = np.asarray(x, np.float32)
  n = x_np.shape[0]
  randomized = version == "rand"
  logits_fn = as_pytree_fn(logits_fn)
  spec = jax.ShapeDtypeStruct(x_np.shape, jnp.float32)
  if randomized:
    try:
      jax.eval_shape(logits_fn, spec, jax.random.key(0))
    except TypeError as e:
      raise ValueError("version='rand' attacks a randomised model: logits_fn must be "
                       f"logits_fn(x, key) (a fresh PRNG key per forward pass); it failed: {e}"
                       ) from e
    probe_fn = jax.tree_util.Partial(_with_probe_key, logits_fn)
  else:
    probe_fn = logits_fn
  # The whole batch's shape (abstract: no FLOPs), so that logits [1, C] for a batch are refused.
  num_classes = validation.num_classes(probe_fn, spec)
  validation.check_labels("y", y, n, num_classes)
  y_np = np.asarray(y, np.int32)
  user_targets = n_target_classes
  if n_target_classes is None:
    n_target_classes = min(9, num_classes - 1)
  validation.check_scalar("n_target_classes", n_target_classes, low=1, high=num_classes - 1,
                          integer=True)
  if any(a in ("apgd-t", "fab-t") for a in names) and num_classes < 4:
    raise ValueError(f"APGD-T and FAB-T need at least 4 classes (the logits have {num_classes}); "
                     "use version='custom' without them")
  if "apgd-dlr" in names and num_classes < 3:
    raise ValueError(f"APGD-DLR needs at least 3 classes (the logits have {num_classes})")
  bs = n if batch_size is None else int(batch_size)
  validation.check_scalar("batch_size", bs, low=1, integer=True)
  bs = max(min(bs, n), 1)

  def put(a):
    return jax.device_put(a, sharding) if sharding is not None else jnp.asarray(a)

  # Devices the batch is split over: a padded chunk stays divisible by them.
  shards = int(getattr(getattr(sharding, "mesh", None), "size", 1) or 1)

  def chunks(indices, source=x_np):
    for start in range(0, len(indices), bs):
      sel = indices[start:start + bs]
      size = _bucket(len(sel), bs, shards)
      pad = size - len(sel)
      idx = np.concatenate([sel, np.full(pad, sel[0], sel.dtype)]) if pad else sel
      active = np.arange(size) < len(sel)
      yield start // bs, sel, put(source[idx]), put(y_np[idx]), put(active)

  # Clean evaluation.
  t0 = time.perf_counter()
  pred = np.empty(n, np.int32)
  probs_like = True
  clean_key = jax.random.fold_in(key, len(ATTACKS))  # randomised model: its clean passes
  for c, sel, xb, _, _ in chunks(np.arange(n)):
    if randomized:
      logits = np.asarray(_logits_rand_jit(logits_fn, xb, jax.random.fold_in(clean_key, c)))
    else:
      logits = np.asarray(_logits_jit(logits_fn, xb))
    pred[sel] = logits.argmax(-1)[:len(sel)]
    lv = logits[:len(sel)]
    if not np.isfinite(lv).all():  # on the logits already fetched: no extra device work
      bad = int((~np.isfinite(lv).all(-1)).sum())
      raise ValueError(f"logits_fn returned non-finite logits (NaN or inf) for {bad} of "
                       f"{len(sel)} clean examples; AutoAttack refuses to count them")
    probs_like &= bool(lv.min() >= 0 and lv.max() <= 1 and np.allclose(lv.sum(-1), 1, atol=1e-4))
  if probs_like and n:
    warnings.warn("autoattack: the model's outputs look like probabilities; AutoAttack expects "
                  "logits (DLR and the margins are computed on them)")
  clean_correct = pred == y_np
  robust = clean_correct.copy()
  broken_by = np.where(clean_correct, -1, 0).astype(np.int32)
  x_adv = x_np.copy()
  seconds = [time.perf_counter() - t0]
  accuracy = [float(robust.mean()) if n else 0.0]
  if verbose:
    print(f"autoattack: clean accuracy {100 * accuracy[0]:.2f}% ({seconds[0]:.1f} s)")

  for stage, name in enumerate(names, start=1):
    t0 = time.perf_counter()
    stage_key = jax.random.fold_in(key, ATTACKS.index(name))
    attack = _factory.make(_FACTORY_NAMES[name], **_stage_hyperparameters(
        name, version=version, eps=eps, norm=norm, n_iter=n_iter, n_restarts=n_restarts,
        n_target_classes=user_targets, n_queries=n_queries, apgd_variant=apgd_variant,
        square_variant=square_variant, eot_iter=eot_iter, num_classes=num_classes))
    todo = np.flatnonzero(robust)
    for c, sel, xb, yb, active in chunks(todo):
      r = attack(logits_fn, xb, yb, jax.random.fold_in(stage_key, c), active=active)
      broken = active & r.misclassified
      if name.startswith("fab"):  # a minimum-norm attack: only a point within eps breaks
        broken = broken & (r.distance <= eps)
      broken = np.asarray(broken)[:len(sel)]
      hit = sel[broken]
      x_adv[hit] = np.asarray(r.x_adv)[:len(sel)][broken]
      robust[hit] = False
      broken_by[hit] = stage
    seconds.append(time.perf_counter() - t0)
    accuracy.append(float(robust.mean()))
    if verbose:
      print(f"autoattack: after {name}: robust accuracy {100 * accuracy[-1]:.2f}% "
            f"({seconds[-1]:.1f} s)")

  # Trust nothing: re-evaluate every returned point and check the ball and the box.
  attacked = np.flatnonzero(broken_by > 0)
  if attacked.size:
    if randomized:
      # The official verdict is the attack's own stochastic pass at its point (``rand``: one
      # forward after each attack); a second pass would be a new draw, so only the ball and the
      # box are re-checked.
      pred_adv = np.full(attacked.size, -1, np.int32)
    else:
      pred_adv = np.empty(attacked.size, np.int32)
      for _, sel, xb, _, _ in chunks(attacked, x_adv):
        pos = np.searchsorted(attacked, sel)
        pred_adv[pos] = np.asarray(_predict_jit(logits_fn, xb))[:len(sel)]
    dist = _max_dist(x_adv[attacked], x_np[attacked], norm)
    ok = ((pred_adv != y_np[attacked]) & (dist <= eps * (1 + 1e-5) + 1e-6)
          & (x_adv[attacked].reshape(attacked.size, -1).min(1) >= 0)
          & (x_adv[attacked].reshape(attacked.size, -1).max(1) <= 1))
    if not ok.all():
      bad = attacked[~ok]
      warnings.warn(f"autoattack: {bad.size} point(s) reported broken are correctly classified or "
                    "outside the ball on re-evaluation (a non-deterministic model?); they are "
                    "counted as robust")
      robust[bad] = True
      broken_by[bad] = -1
      x_adv[bad] = x_np[bad]
      accuracy[-1] = float(robust.mean())
  if "square" in names and n:
    by_square = int((broken_by == names.index("square") + 1).sum())
    if any(a in _GRADIENT_ATTACKS for a in names[:names.index("square")]) and by_square > 0.002 * n:
      warnings.warn(f"autoattack: Square broke {by_square} point(s) that the gradient-based "
                    "attacks did not; this suggests gradient masking (AutoAttack's checks.py)")
  return AutoAttackResult(
      x_adv=jnp.asarray(x_adv), robust=jnp.asarray(robust), broken_by=jnp.asarray(broken_by),
      clean_correct=jnp.asarray(clean_correct),
      robust_accuracy=jnp.asarray(accuracy, jnp.float32),
      seconds=jnp.asarray(seconds, jnp.float32), attack_names=("clean",) + names)

