"""The inner maximisation over weights: one mechanism for AWP, RWP, SAM and SAMPa.

A weight adversary returns a perturbation v (a pytree shaped like the parameters); the training step
takes the update gradient at w + v and applies it to w, so w is "restored" by construction:

  w_new = w - lr * grad L(w + v)                                  (plain SGD)

Every adversary is the same three choices, so there is one code path (:func:`_scale`):

=======  ==========================  ==========================  ============================
kind     direction d                 normalisation               radius
=======  ==========================  ==========================  ============================
awp      grad_w L_adv(w)             per layer, ||d_l|| + 1e-20  gamma * ||w_l||, ndim >= 2 only
rwp      N(0, I)                     per layer, ||d_l|| + 1e-20  gamma * ||w_l||, ndim >= 2 only
sam      grad_w L(w)                 global, ||d||_2 + 1e-12     rho, every leaf
sampa    grad L(y_t) (carried)       global, as sam              rho, every leaf
=======  ==========================  ==========================  ============================

v = radius * d / norm(d). Norms are Frobenius norms of whole leaves (per layer) or the global 2-norm
of the pytree, accumulated in float32.

* AWP (Wu, Xia and Wang, NeurIPS 2020, eq. 9 with one ascent step; the official ``AdvWeightPerturb``
  of csdongxian/AWP, ``utils_awp.py``): the caller computes ONE gradient of the training loss on the
  adversarial batch, with BatchNorm in train mode but its statistics NOT updated (the official code
  runs a proxy copy of the model). v_l = gamma ||w_l|| g_l / (||g_l|| + 1e-20) for conv and dense
  kernels, 0 for biases and BatchNorm scale/bias (the code perturbs state-dict entries named
  ``weight`` with dim > 1; here: leaves with ndim >= 2, :func:`is_perturbed_leaf`). One step of the
  paper's layer-wise projected ascent from v = 0 lands on the sphere of radius gamma ||w_l|| exactly
  there, so paper and code agree for K2 = 1. The official proxy takes an SGD step of lr 0.01 and
  normalises the difference; the lr cancels.
* RWP: the same per-layer radius in a Gaussian direction (a random control for AWP; no gradient,
  needs a key).
* SAM (Foret et al., ICLR 2021, eq. 2; google-research/sam ``dual_vector``): v = rho g / ||g||_2
  with the global norm over the whole pytree and every leaf perturbed. The official code divides by
  ||g|| with no epsilon (NaN for a zero gradient); here ||g|| + 1e-12, which changes nothing
  otherwise. The official code does not average g over devices (``--sync_perturbations`` is off:
  m-sharpness with m the per-device batch); the training step's SAM
  (:func:`robust_jax.weight_adversaries.sam`) offers that as ``sam_m``, and documents how the
  official weight decay enters the dual vector.
* SAMPa (Xie, Pethick and Cevher, NeurIPS 2024, Algorithm 1): see :class:`SampaState`.

References:
  Wu, Xia, Wang. Adversarial Weight Perturbation Helps Robust Generalization. NeurIPS 2020.
  Foret, Kleiner, Mobahi, Neyshabur. Sharpness-Aware Minimization. ICLR 2021.
  Xie, Pethick, Cevher. SAMPa: Sharpness-Aware Minimization Parallelized. NeurIPS 2024.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from robust_jax import validation

PERTURBATIONS = ("awp", "rwp", "sam")
LAYERWISE_EPS = 1e-20  # csdongxian/AWP, diff_in_weights
GLOBAL_EPS = 1e-12     # not in google-research/sam (which divides by ||g|| alone)

LeafFilter = Callable[[Any, jax.Array], bool]


def is_perturbed_leaf(path, leaf) -> bool:
  """Whether AWP/RWP perturb a parameter: kernels and embeddings (ndim >= 2), not biases or
  BatchNorm/LayerNorm scales (ndim < 2). ``path`` (a key path) is unused here; a custom filter with
  the same signature may use it."""
  del path
  return jnp.ndim(leaf) >= 2


def _norm(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32))))


def layer_norms(tree) -> Any:
  """The Frobenius norm of every leaf, float32 scalars in a pytree of the same structure."""
  return jax.tree.map(_norm, tree)


def global_norm(tree) -> jax.Array:
  """The 2-norm of the whole pytree (all leaves flattened and concatenated), float32."""
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def add(params, v) -> Any:
  """w + v, leaf by leaf, in the parameters' dtypes."""
  return jax.tree.map(lambda w, d: w + d.astype(w.dtype), params, v)


def _scale(direction, params, *, radius, per_layer: bool, leaf_filter: LeafFilter) -> Any:
  """THE mechanism: v = radius * d / (norm(d) + eps).

  per_layer: v_l = radius * ||w_l|| * d_l / (||d_l|| + 1e-20) on leaves passing ``leaf_filter``, 0
  on the others. Otherwise: v = radius * d / (||d||_2 + 1e-12) over the whole tree.
  """
  chex.assert_trees_all_equal_shapes(params, direction)
  if per_layer:
    def one(path, w, d):
      if not leaf_filter(path, w):
        return jnp.zeros_like(w)
      scale = radius * _norm(w) / (_norm(d) + LAYERWISE_EPS)
      return (scale * d.astype(jnp.float32)).astype(w.dtype)
    return jax.tree_util.tree_map_with_path(one, params, direction)
  scale = radius / (global_norm(direction) + GLOBAL_EPS)
  return jax.tree.map(lambda w, d: (scale * d.astype(jnp.float32)).astype(w.dtype), params,
                      direction)


def _gaussian_like(key: jax.Array, tree) -> Any:
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, max(len(leaves), 1))
  return jax.tree.unflatten(
      treedef, [jax.random.normal(k, jnp.shape(x), jnp.float32) for k, x in zip(keys, leaves)])


def perturbation(kind: str, params, ascent_grad=None, *, size, key: Optional[jax.Array] = None,
                 leaf_filter: LeafFilter = is_perturbed_leaf) -> Any:
  """The weight perturbation v of ``kind`` (pure and jittable; ``kind`` is static).

  Args:
    kind: ``"awp"``, ``"rwp"`` or ``"sam"`` (:data:`PERTURBATIONS`).
    params: the parameters w (a pytree of float arrays, e.g. a flax ``params`` dict).
    ascent_grad: the gradient of the training loss at w, same structure (awp, sam; unused by rwp).
      For AWP: the loss on the adversarial batch, BatchNorm statistics not updated.
    size: gamma >= 0 (awp, rwp: relative per-layer size, ||v_l|| = gamma ||w_l||; official 0.01 for
      AT-AWP, 0.005 for TRADES-AWP) or rho >= 0 (sam: ||v||_2 = rho; 0.05 in the SAM README).
    key: PRNG key, required by rwp.
    leaf_filter: ``(path, leaf) -> bool``, the leaves awp/rwp perturb (default
      :func:`is_perturbed_leaf`); sam perturbs every leaf.

  Returns:
    v, a pytree like ``params``. awp/rwp: ||v_l|| = gamma ||w_l|| on perturbed leaves (0 where
    g_l = 0), exactly 0 elsewhere. sam: ||v||_2 = rho (0 if g = 0).

  Raises:
    ValueError: an unknown kind (the valid ones are listed), a negative size (named gamma or rho),
      a missing gradient or key.

  Example:
    >>> w = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    >>> v = perturbation("awp", w, {"kernel": jnp.eye(2), "bias": jnp.ones((2,))}, size=0.01)
    >>> round(float(layer_norms(v)["kernel"]), 6), float(v["bias"].sum())  # gamma ||w||, 0
    (0.02, 0.0)
  """
  validation.check_choice("kind", kind, PERTURBATIONS)
  if kind in ("awp", "rwp"):
    validation.check_scalar("gamma (the relative AWP/RWP size)", size, low=0.0)
  else:
    validation.check_scalar("rho (the SAM radius)", size, low=0.0)
  if kind == "rwp":
    if key is None:
      raise ValueError("kind='rwp' draws a random direction and needs a PRNG key, got key=None")
    direction = _gaussian_like(key, params)
  else:
    if ascent_grad is None:
      raise ValueError(f"kind={kind!r} needs ascent_grad, the gradient of the loss at params")
    direction = ascent_grad
  return _scale(direction, params, radius=size, per_layer=kind != "sam", leaf_filter=leaf_filter)


class SampaState(NamedTuple):
  """SAMPa's carried state (Xie et al. 2024, Algorithm 1).

  SAMPa keeps an auxiliary sequence y_t next to the iterate x_t (the parameters):

    x~_t    = x_t + rho grad f(y_t) / ||grad f(y_t)||          (:func:`sampa_perturbation`)
    y_{t+1} = x_t - eta_t grad f(y_t)                           (:func:`sampa_lookahead`)
    x_{t+1} = x_t - eta_t [(1 - lam) grad f(x~_t) + lam grad f(y_{t+1})]   (:func:`sampa_combine`)

  Both points x~_t and y_{t+1} depend only on x_t and grad f(y_t), which is known from the previous
  step, so the two gradients of step t are independent: the training step computes them in ONE
  program and XLA is free to schedule them together (on two devices in the paper; here two
  independent subgraphs of one jitted step, or one ``vmap`` over the two stacked points). SAMPa thus
  costs two gradients per step like SAM, but without SAM's sequential dependency. y_{t+1} itself is
  never stored: only grad f(y_{t+1}), the next step's perturbation direction.

  Attributes:
    grad_y: grad f(y_t), a pytree like the parameters.

  Official code (LIONS-EPFL/SAMPa, ``train.py``) versus the paper, and the choice here:

  * The official rank 0 computes grad f(x~_t) on the *previous* minibatch; here the caller chooses
    the batches (the training step uses the current one for both gradients).
  * The official y-step is the SGD look-ahead y_{t+1} = x_t - lr (g + mu buf + wd x_t) (momentum
    buffer and weight decay included); the paper's is x_t - eta_t g. :func:`sampa_lookahead` follows
    the paper by default; ``momentum``, ``momentum_buffer`` and ``weight_decay`` give the official
    one.
  * The official code recovers grad f(y_t) as (aggregate - perturbed part) / lam from the previous
    all-reduce; here it is stored, so lam = 0 works and nothing is divided.
  * Weight decay: the official code moves the weights back to x_t before ``optimizer.step()``
    (``train.py`` lines 93-99), so the optimizer's coupled weight decay is wd * x_t, not wd * x~_t;
    the training step's SAMPa (:func:`robust_jax.weight_adversaries.sampa`) does the same.
  * Initialisation: the paper sets y_0 = x_0, which needs grad f(x_0) before the first step
    (``sampa_init(params, grad_at_init)``). Without it the state starts at 0: step 0 is then
    unperturbed (x~_0 = x_0) and its look-ahead is y_1 = x_0.
  """
  grad_y: Any


def sampa_init(params, grad_at_init=None) -> SampaState:
  """The initial :class:`SampaState`: grad f(y_0) = ``grad_at_init`` (the paper's y_0 = x_0 when it
  is grad f(x_0)) or zeros (no perturbation at step 0)."""
  if grad_at_init is None:
    grad_at_init = jax.tree.map(jnp.zeros_like, params)
  return SampaState(grad_y=grad_at_init)


def sampa_perturbation(params, state: SampaState, *, rho) -> Any:
  """SAMPa's v_t = rho grad f(y_t) / ||grad f(y_t)||, so x~_t = x_t + v_t (:func:`add`).

  This is :func:`perturbation` ``("sam", ...)`` with the carried gradient as the direction.

  Args:
    params: x_t. state: the :class:`SampaState` holding grad f(y_t). rho: the radius >= 0 (official
      default 0.1).

  Returns:
    v_t, a pytree like ``params`` with global norm rho (0 while grad f(y_t) = 0).
  """
  return perturbation("sam", params, state.grad_y, size=rho)


def sampa_lookahead(params, state: SampaState, *, lr, momentum=0.0, momentum_buffer=None,
                    weight_decay=0.0) -> Any:
  """SAMPa's auxiliary point y_{t+1} = x_t - lr (grad f(y_t) + momentum * buf + weight_decay * x_t).

  Args:
    params: x_t. state: holds grad f(y_t).
    lr: eta_t >= 0, the learning rate of step t.
    momentum: mu >= 0; with ``momentum_buffer`` the official look-ahead (PyTorch SGD's buffer, or
      the ``trace`` of ``optax.sgd``'s state).
    momentum_buffer: the optimizer's momentum buffer (a pytree like ``params``) or None.
    weight_decay: coupled weight decay >= 0 (official: 5e-4).

  Returns:
    y_{t+1}, a pytree like ``params``. Defaults give the paper's x_t - eta_t grad f(y_t).
  """
  validation.check_scalar("lr", lr, low=0.0)
  validation.check_scalar("momentum", momentum, low=0.0)
  validation.check_scalar("weight_decay", weight_decay, low=0.0)
  step = state.grad_y
  if momentum_buffer is not None:
    step = jax.tree.map(lambda g, b: g + momentum * b, step, momentum_buffer)
  step = jax.tree.map(lambda g, w: g + weight_decay * w, step, params)
  return jax.tree.map(lambda w, g: (w - lr * g).astype(w.dtype), params, step)


def sampa_combine(grad_tilde, grad_y_next, *, lam) -> Tuple[Any, SampaState]:
  """SAMPa's update direction and next state.

  Args:
    grad_tilde: grad f(x~_t), the gradient at x_t + :func:`sampa_perturbation`.
    grad_y_next: grad f(y_{t+1}), the gradient at :func:`sampa_lookahead`.
    lam: lambda in [0, 1] (official ``--og`` 0.2); 0 is SAM with the previous step's direction.

  Returns:
    ``(direction, state)``: (1 - lam) grad f(x~_t) + lam grad f(y_{t+1}), to be fed to the optimizer
    at x_t, and ``SampaState(grad_y=grad_y_next)`` for step t + 1.

  Example (inside a jitted step; ``loss_fn(params) -> scalar``):

    v = sampa_perturbation(params, s, rho=rho)
    y_next = sampa_lookahead(params, s, lr=lr)
    g_tilde = jax.grad(loss_fn)(add(params, v))     # independent of the next line:
    g_y = jax.grad(loss_fn)(y_next)                 # one program, scheduled together
    g, s = sampa_combine(g_tilde, g_y, lam=lam)
    updates, opt_state = tx.update(g, opt_state, params)
  """
  validation.check_scalar("lam", lam, low=0.0, high=1.0)
  direction = jax.tree.map(lambda a, b: (1.0 - lam) * a + lam * b, grad_tilde, grad_y_next)
  return direction, SampaState(grad_y=grad_y_next)
