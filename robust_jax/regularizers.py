"""Regularisers of fast (single-step) adversarial training against catastrophic overfitting.

* **GradAlign** (Andriushchenko and Flammarion, NeurIPS 2020):
  Omega = E_{eta ~ U([-eps, eps]^d)} [1 - cos(grad_x l(x), grad_x l(x + eta))], averaged over the
  batch, examples with a zero gradient dropped, x + eta not clipped (as the official ``train.py``).
  The regulariser is differentiated through the input gradients (double backprop). Paper versus
  official code: the paper's Omega depends on theta through both gradients, the official code detaches
  the first (the FGSM gradient at x); ``config.gradalign_detach_first`` picks the official behaviour
  (issue #3 of the repository: it "doesn't make a substantial difference"). Default lambda(eps), eps
  in 1/255 units: 0.02 * 10^(eps/8) (the CIFAR-10 scripts), capped at 2.0 as the ELLE
  re-implementation does for eps >= 16/255.
* **ELLE** (Abad Rocamora et al., ICLR 2024): the local linearity error of the loss,
  mean_i [l(x_c) - ((1 - a) l(x_a) + a l(x_b))]^2 with a ~ U[0, 1] and x_c = (1 - a) x_a + a x_b:
  three forward passes on one 3B batch and an ordinary backward, no double backprop. Two choices of
  the endpoints (``config.elle_endpoints``, :func:`elle_points`):

  - ``"random"`` (default): x_a, x_b ~ x + U(-eps, eps), independent, not clipped: the paper's
    definition and the official code (LIONS-EPFL/ELLE, ``core/utils/train.py``, ``Trainer.loss``,
    ``reg == 'ELLE'``: ``x_ab = x.repeat([2,1,1,1]) + eps * (2 * rand - 1)``);
  - ``"clean"``: x_a = x, x_b ~ x + U(-eps, eps): the lecture's form (seed 003, Eq. (21):
    ELLE(x^k, a) = (L(a_hat) - alpha L(a) - (1 - alpha) L(a_tilde))^2 with a_hat = alpha a +
    (1 - alpha) a_tilde). It is the formula above with alpha = 1 - a (same U[0, 1] law).

  Default lambda: the published 1000 for eps <= 8/255, 5000 up to 20/255, 10000 above
  (``scripts/run_elle_cifar10.sh``), on inputs of the published size; other inputs get that lambda
  transported along E_lin's eps^4 law (:func:`elle_lambda_fn`).
* **ELLE-A**: lambda starts at 0; after each step, with mu and sigma the mean and standard deviation
  of all earlier linearity errors, lambda <- lambda_max (4000) if there are more than 2 of them and
  the new error exceeds mu + s * sigma (s = 2), else lambda <- 0.99 * lambda.

**Lambda and the eps schedule.** The official codes fix lambda once, from the recipe's eps
(``--grad_align_cos_lambda`` and ``--lin_reg`` are command-line constants chosen per eps by the
scripts). So do these parts by default: they read ``config.eps`` when they are built. With
``config.reg_lambda_follows_schedule = True`` lambda is recomputed at every step from the scheduled
eps (:class:`~robust_jax.parts.StepInfo` ``eps``, which differs from ``config.eps`` under
``eps_warmup_epochs`` or ``periodic_eps``): GradAlign's lambda(eps_t) and, on inputs of the published
size, ELLE's table at eps_t. ELLE-A's lambda_max does not depend on eps (4000 for every eps), and
the transport of ELLE's lambda to other inputs (below) is a calibration to the recipe, always from
``config.eps``: lambda ~ eps_t^-4 would multiply the float32 rounding of E_lin (about 1e-7 of the
loss) without bound as eps_t -> 0, where periodic schedules start. In every case the regulariser
samples its points in the ball of the scheduled eps (the official scripts never schedule eps
together with a regulariser, so there is no official behaviour to follow there).

**Lambda on other inputs than the published ones.** The published ELLE lambdas were tuned on
CIFAR-10 (32x32x3 = 3072 inputs, :data:`PUBLISHED_INPUT_DIM`) for eps from 2/255 to 26/255. Why
they fail elsewhere, measured on the embedded digits (8x8x1 = 64 inputs, MLP 256-256, eps 0.2):

* E_lin is the square of a second-order Taylor remainder,
  e = -a (1 - a) (x_b - x_a)^T H (x_b - x_a) / 2 for a quadratic loss, so at a fixed network it
  grows as eps^4. Measured after standard training: E_lin(0.2) / E_lin(8/255) = 5.8e-3 / 3.7e-6 =
  1560, against (0.2 / (8/255))^4 = 1650 (local exponents 3.6 to 4.3 between 4/255 and 0.2).
* E_lin does not grow with the input dimension d: with fan-in scaled first layers each
  pre-activation sees a perturbation of variance (eps^2 / 3) sum_i w_i^2 ~ eps^2 / 3 whatever d.
  Measured on the digits and the same digits upsampled to 16x16 and 32x32 (d = 64, 256, 1024):
  E_lin(8/255) = 2.1e-7, 1.9e-7, 1.8e-7 at initialisation, 3.7e-6, 1.6e-6, 1.3e-6 after training.
* The published table is a tuning against CIFAR-10's catastrophic overfitting, not a scaling law:
  from 8/255 to 26/255 it multiplies lambda by 10 while E_lin grows by 110; above 20/255 it says
  10000, which the library used to extrapolate to any larger eps. At eps 0.2 that lambda makes the
  regulariser's gradient some 6000 times the cross-entropy's on a trained digits MLP (norms
  0.25 per unit lambda against 0.41), and training diverges at step 11 (E_lin 3e-5 at step 0,
  4.0 at step 8, 7e22 at step 10). ELLE at eps 0.2, the digits recipe shortened to 30 epochs,
  PGD-20 test accuracy (FGSM from zero without a regulariser: 50.4%): lambda 0.6 -> 49.6%,
  6 -> 50.1%, 60 -> 50.7%, 100 -> 47.6%, 300 -> 37.6%, 1000 -> 21.2%; in the full recipe 3000
  collapses to a constant output within 150 steps and 10000 diverges. ELLE-A, lambda_max 2.4 ->
  50.7%, 24 -> 51.8%, 240 -> 42.3%, 1000 -> 32.9%, 4000 -> 16.7%. (FGSM does not overfit
  catastrophically on the digits, so no lambda can do better than FGSM there.)
* At the calibration point itself the published lambda is fine on the digits: lambda = 1000 at
  eps 8/255 trains the MLP normally (adversarial loss 0.011 after 600 steps).

So, on inputs of another size than the published one, lambda is the paper's main calibration point
(:data:`ELLE_REFERENCE_EPS` = 8/255, lambda 1000) carried along E_lin's eps^4 law,
lambda(eps) = 1000 (8/255 / eps)^4 (:func:`elle_lambda_fn`), which gives a given curvature the
penalty it gets at 8/255; the input size only decides whether the published table applies, and
the eps is the recipe's (``config.eps``). For the digits at eps 0.2 that is 0.61 (ELLE-A's
lambda_max: 4000 (8/255 / eps)^4 = 2.4). Nothing is clipped. A lambda given explicitly
(``elle_lambda > 0``) is always used as it is.

Each is a :class:`Regularizer` part of the training step, built from its config fields by the
factories of :data:`REGULARIZERS` (``gradalign_part(eps=..., gradalign_lambda=...,
gradalign_detach_first=..., reg_lambda_follows_schedule=...)``, ``elle_part(...)``,
``elle_a_part(...)``).

References:
  Andriushchenko and Flammarion, "Understanding and improving fast adversarial training", NeurIPS
  2020 (tml-epfl/understanding-fast-adv-training, ``train.py``). Abad Rocamora, Liu, Chrysos, Olmos
  and Cevher, "Efficient local linearity regularization to overcome catastrophic overfitting", ICLR
  2024 (LIONS-EPFL/ELLE, ``core/utils/train.py``).

Example:

>>> import jax, jax.numpy as jnp
>>> # Logits (0, 40 + sum(x)) with label 0: the loss is 40 + sum(x) up to e^-40, linear in x.
>>> f = lambda x: jnp.stack([jnp.zeros(x.shape[0]), 40.0 + x.reshape(x.shape[0], -1).sum(1)], 1)
>>> x, y = jnp.full((4, 2, 2, 1), 0.5), jnp.zeros(4, jnp.int32)
>>> bool(local_linearity_error(f, x, y, jax.random.key(0), eps=0.1, endpoints="clean") < 1e-8)
True
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, NamedTuple, Tuple

import chex
import jax
import jax.numpy as jnp

from robust_jax import losses
from robust_jax.parts import EmptyState, Registry, require

ELLE_A_LAMBDA_MAX = 4000.0
"""ELLE-A's published lambda_max (``--lin_reg 4000``, ``--lambda_schedule onoff``, every eps)."""
ELLE_REFERENCE_EPS = 8.0 / 255.0
"""The eps of the paper's main calibration point (CIFAR-10, lambda 1000)."""
ELLE_REFERENCE_LAMBDA = 1000.0
"""The published ELLE lambda at :data:`ELLE_REFERENCE_EPS`."""
PUBLISHED_INPUT_DIM = 32 * 32 * 3
"""Inputs per example (32x32x3) of CIFAR-10, on which the published lambdas were tuned."""
ELLE_ENDPOINTS = ("random", "clean")
"""The values of ``config.elle_endpoints`` (:func:`elle_points`)."""


def gradalign_lambda_fn(eps) -> jax.Array:
  """The published lambda(eps) of GradAlign's CIFAR-10 scripts, capped at 2.0.

  Args:
    eps: the linf radius in [0, 1] pixel units (a float or a traced scalar).

  Returns:
    min(0.02 * 10^(255 eps / 8), 2.0): 0.2 at 8/255 (``sh/exps_diff_eps_cifar10.sh``), 2.0 from
    16/255 on (the cap of the LIONS-EPFL/ELLE re-implementation). Omega = 1 - cos is in [0, 2]
    whatever the input size and eps, so this lambda needs no transport to other inputs.
  """
  return jnp.minimum(0.02 * 10.0 ** (eps * 255.0 / 8.0), 2.0)


def _published_elle_lambda(eps):
  e = eps * 255.0
  if isinstance(e, (int, float)):  # a Python number: a Python float, also inside a jit trace
    return 1000.0 if e <= 8.0 + 1e-6 else 5000.0 if e <= 20.0 + 1e-6 else 10000.0
  return jnp.where(e <= 8.0 + 1e-6, 1000.0, jnp.where(e <= 20.0 + 1e-6, 5000.0, 10000.0))


def elle_transport(eps: float, input_dim: int = PUBLISHED_INPUT_DIM) -> float:
  """The factor that carries ELLE's calibration at 8/255 to ``eps`` on inputs of another size.

  Args:
    eps: the recipe's linf radius in (0, 1] units (a Python float: the factor is computed once).
    input_dim: inputs per example (H * W * C), a Python int.

  Returns:
    1.0 for ``input_dim ==`` :data:`PUBLISHED_INPUT_DIM` (the published lambdas apply as they are);
    otherwise (ELLE_REFERENCE_EPS / eps)^4, E_lin's eps^4 law. The module docstring gives the
    reasoning and the measurements.
  """
  if input_dim == PUBLISHED_INPUT_DIM:
    return 1.0
  return (ELLE_REFERENCE_EPS / eps) ** 4


def elle_lambda_fn(eps, input_dim: int = PUBLISHED_INPUT_DIM) -> jax.Array:
  """ELLE's default lambda for ``eps`` on inputs of ``input_dim`` values per example.

  Args:
    eps: the linf radius in (0, 1] units; a traced scalar only on inputs of the published size.
    input_dim: inputs per example (H * W * C), a Python int.

  Returns:
    On inputs of the published size (3072): the published table of ``scripts/run_elle_cifar10.sh``,
    1000 for eps <= 8/255, 5000 for eps <= 20/255 and 10000 above (published up to 26/255). On other
    inputs: 1000 * (8/255 / eps)^4, the paper's main calibration point carried along E_lin's eps^4
    law (:func:`elle_transport`; 0.61 for the digits at eps 0.2).

  Example:
    >>> float(elle_lambda_fn(8 / 255)), round(float(elle_lambda_fn(0.2, 64)), 2)
    (1000.0, 0.61)
  """
  if input_dim == PUBLISHED_INPUT_DIM:
    return _published_elle_lambda(eps)
  return ELLE_REFERENCE_LAMBDA * elle_transport(eps, input_dim)


def elle_a_lambda_max_fn(eps: float, input_dim: int = PUBLISHED_INPUT_DIM) -> float:
  """ELLE-A's default lambda_max: :data:`ELLE_A_LAMBDA_MAX` times :func:`elle_transport`.

  Args:
    eps: the recipe's linf radius in (0, 1] units (a Python float).
    input_dim: inputs per example (H * W * C), a Python int.

  Returns:
    4000 on inputs of the published size (every eps, as the scripts); 4000 (8/255 / eps)^4 on others
    (2.4 for the digits at eps 0.2).
  """
  return ELLE_A_LAMBDA_MAX * elle_transport(eps, input_dim)


def _input_grad(logits_fn, x, y):
  return jax.grad(lambda xx: jnp.sum(losses.cross_entropy(logits_fn(xx), y)))(x)


def gradalign(logits_fn, x, y, key, *, eps, detach_first: bool = False) -> jax.Array:
  """GradAlign's Omega (batch mean of 1 - cos), differentiable w.r.t. whatever logits_fn closes over.

  Args:
    logits_fn: ``x -> logits`` [B, C].
    x: images [B, ...]; y: int32 labels [B].
    key: PRNG key for eta.
    eps: the linf radius of eta.
    detach_first: stop the gradient through grad_x l(x) (the official code).

  Returns:
    Scalar 1 - mean_i cos_i over examples whose two gradients are both non-zero.
  """
  chex.assert_shape(y, (x.shape[0],))
  eta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  g1 = _input_grad(logits_fn, x, y)
  if detach_first:
    g1 = jax.lax.stop_gradient(g1)
  g2 = _input_grad(logits_fn, x + eta, y)
  g1, g2 = g1.reshape(g1.shape[0], -1), g2.reshape(g2.shape[0], -1)
  sq1, sq2 = jnp.sum(g1 * g1, axis=1), jnp.sum(g2 * g2, axis=1)
  valid = (sq1 > 0) & (sq2 > 0)
  # The square roots see 1 for dropped examples: the gradient of a norm at 0 is NaN, and a NaN in
  # the unused branch of a where still poisons the backward pass.
  n1, n2 = jnp.sqrt(jnp.where(valid, sq1, 1.0)), jnp.sqrt(jnp.where(valid, sq2, 1.0))
  cos = jnp.sum(g1 * g2, axis=1) / (n1 * n2)
  count = jnp.maximum(jnp.sum(valid), 1)
  return 1.0 - jnp.sum(jnp.where(valid, cos, 0.0)) / count


def elle_points(x, key, *, eps,
                endpoints: str = "random") -> Tuple[jax.Array, jax.Array, jax.Array]:
  """The endpoints and the interpolation weight of ELLE's linearity error.

  Args:
    x: clean images [B, ...].
    key: PRNG key; split into (k_a, k_b, k_alpha), so the default draws x_a, x_b and a exactly as
      before the ``endpoints`` option existed (``"clean"`` leaves k_a unused).
    eps: the linf radius (a float or a traced scalar).
    endpoints: ``"random"``, x_a and x_b independent in x + U(-eps, eps) (the paper and the official
      code); ``"clean"``, x_a = x and x_b in x + U(-eps, eps) (the lecture, seed 003, Eq. (21)).
      Neither is clipped to [0, 1], as the official code.

  Returns:
    ``(x_a, x_b, a)``: x_a and x_b of the shape and dtype of x, a ~ U[0, 1] of shape [B, 1, ...]
    (broadcastable against x). The interpolated point is x_c = (1 - a) x_a + a x_b.
  """
  if endpoints not in ELLE_ENDPOINTS:
    raise ValueError(f"endpoints must be one of {ELLE_ENDPOINTS}, got {endpoints!r}")
  ka, kb, kalpha = jax.random.split(key, 3)
  if endpoints == "random":
    x_a = x + jax.random.uniform(ka, x.shape, x.dtype, -1.0, 1.0) * eps
  else:
    x_a = x
  x_b = x + jax.random.uniform(kb, x.shape, x.dtype, -1.0, 1.0) * eps
  a = jax.random.uniform(kalpha, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
  return x_a, x_b, a


def linearity_errors(logits_fn, x, y, key, *, eps, endpoints: str = "random") -> jax.Array:
  """Per-example ELLE errors e_i = l(x_c) - ((1 - a) l(x_a) + a l(x_b)) (one forward on 3B inputs).

  Args:
    logits_fn: ``x -> logits`` [N, C]; called once on the concatenation [x_a; x_b; x_c].
    x: clean images [B, ...]; y: int32 labels [B].
    key: PRNG key (:func:`elle_points`).
    eps: the linf radius of the endpoints.
    endpoints: ``"random"`` (paper, official code) or ``"clean"`` (lecture): :func:`elle_points`.

  Returns:
    float32 [B]: e_i with l the per-example cross-entropy. For a loss quadratic in x with Hessian H,
    e_i = -a_i (1 - a_i) (x_b - x_a)^T H (x_b - x_a) / 2 exactly; for a linear one, 0.
  """
  chex.assert_shape(y, (x.shape[0],))
  b = x.shape[0]
  x_a, x_b, a = elle_points(x, key, eps=eps, endpoints=endpoints)
  x_c = (1 - a) * x_a + a * x_b
  l = losses.cross_entropy(logits_fn(jnp.concatenate([x_a, x_b, x_c])), jnp.tile(y, 3))
  l_a, l_b, l_c = l[:b], l[b:2 * b], l[2 * b:]
  a = a.reshape(b)
  return l_c - ((1 - a) * l_a + a * l_b)


def local_linearity_error(logits_fn, x, y, key, *, eps, endpoints: str = "random") -> jax.Array:
  """ELLE's linearity error E_lin = mean_i e_i^2 (:func:`linearity_errors`), the official MSE.

  Args:
    logits_fn, x, y, key, eps, endpoints: as :func:`linearity_errors`.

  Returns:
    The float32 scalar mean_i [l(x_c) - ((1 - a) l(x_a) + a l(x_b))]^2 (``torch.nn.MSELoss`` of the
    official code); 0 for a loss linear in x.
  """
  return jnp.mean(linearity_errors(logits_fn, x, y, key, eps=eps, endpoints=endpoints) ** 2)


class Regularizer(NamedTuple):
  """A regulariser part of the training step (:mod:`robust_jax.parts`).

  Attributes:
    init: ``() -> state``, the state carried between steps (a NamedTuple).
    apply: ``(loss, logits_fn, x, y, key, state, info) -> (loss + lambda * Omega, metrics)``, where
      ``logits_fn`` is the model in train mode at the parameters being differentiated, ``x`` the
      clean batch, ``info`` the step's :class:`~robust_jax.parts.StepInfo`; ``metrics`` is
      a dict of float32 scalars (logged, and handed to ``update``).
    update: ``(state, metrics) -> state``, after the step, with that step's metrics.
  """
  init: Callable[[], Any]
  apply: Callable[..., Tuple[jax.Array, Dict[str, jax.Array]]]
  update: Callable[[Any, Dict[str, jax.Array]], Any]


def _no_update(state, metrics):
  del metrics
  return state


def none() -> Regularizer:
  """No regulariser: the loss is returned unchanged."""
  def apply(loss, logits_fn, x, y, key, state, info):
    del logits_fn, x, y, key, state, info
    return loss, {}
  return Regularizer(init=EmptyState, apply=apply, update=_no_update)


def _check_lambda(name, value, eps):
  require(value >= 0, name, "must be >= 0 (0 = the published lambda(eps))", value)
  require(eps > 0, "eps", "must be > 0 (the regularisers' lambda is a function of it)", eps)


def _check_follows(follows):
  require(isinstance(follows, bool), "reg_lambda_follows_schedule", "must be True or False",
          follows)


def _check_endpoints(endpoints):
  require(endpoints in ELLE_ENDPOINTS, "elle_endpoints", f"must be one of {ELLE_ENDPOINTS}",
          endpoints)


def gradalign_part(*, eps: float, gradalign_lambda: float = 0.0,
                   gradalign_detach_first: bool = False,
                   reg_lambda_follows_schedule: bool = False) -> Regularizer:
  """GradAlign (Andriushchenko and Flammarion 2020): ``loss + lambda * Omega`` (:func:`gradalign`).

  Args:
    eps: the recipe's eps (``config.eps``); the published lambda is computed from it once.
    gradalign_lambda: lambda >= 0, used as it is; 0 = :func:`gradalign_lambda_fn` (0.2 at 8/255).
    gradalign_detach_first: no backprop through grad_x l(x) (the official code).
    reg_lambda_follows_schedule: False (official: ``--grad_align_cos_lambda`` is a constant):
      lambda(eps) of the recipe; True: lambda(eps_t) of each step's scheduled eps. Omega samples
      eta in the ball of the scheduled eps either way.

  Returns:
    A :class:`Regularizer` whose metrics are ``gradalign`` (Omega) and ``reg_lambda``.

  Raises:
    ValueError: a negative lambda, eps <= 0 or a non-boolean switch (named ``config.<field>`` by
      :func:`robust_jax.parts.bind`).
  """
  _check_lambda("gradalign_lambda", gradalign_lambda, eps)
  _check_follows(reg_lambda_follows_schedule)
  fixed = gradalign_lambda or float(gradalign_lambda_fn(eps))
  follows = reg_lambda_follows_schedule and not gradalign_lambda

  def apply(loss, logits_fn, x, y, key, state, info):
    del state
    lam = gradalign_lambda_fn(info.eps) if follows else fixed
    omega = gradalign(logits_fn, x, y, key, eps=info.eps, detach_first=gradalign_detach_first)
    return loss + lam * omega, {"gradalign": omega, "reg_lambda": jnp.asarray(lam, jnp.float32)}

  return Regularizer(init=EmptyState, apply=apply, update=_no_update)


def elle_part(*, eps: float, elle_lambda: float = 0.0, elle_endpoints: str = "random",
              reg_lambda_follows_schedule: bool = False) -> Regularizer:
  """ELLE (Abad Rocamora et al. 2024): ``loss + lambda * E_lin`` (:func:`local_linearity_error`).

  Args:
    eps: the recipe's eps (``config.eps``); the default lambda is computed from it.
    elle_lambda: lambda >= 0, used as it is; 0 = :func:`elle_lambda_fn` of eps and of the input size
      (the published table on 32x32x3 inputs, 1000 (8/255 / eps)^4 on others).
    elle_endpoints: ``"random"`` (paper, official code) or ``"clean"`` (lecture), as
      :func:`elle_points`.
    reg_lambda_follows_schedule: False (official: ``--lin_reg`` is a constant): lambda of the
      recipe's eps; True: on inputs of the published size, the table at each step's scheduled eps
      (on other inputs lambda stays calibrated to the recipe's eps; see the module docstring). The
      points are sampled in the ball of the scheduled eps either way.

  Returns:
    A :class:`Regularizer` whose metrics are ``lin_err`` (E_lin) and ``reg_lambda`` (the lambda
    that multiplied it).

  Raises:
    ValueError: a negative lambda, eps <= 0, a non-boolean switch or unknown endpoints.
  """
  _check_lambda("elle_lambda", elle_lambda, eps)
  _check_follows(reg_lambda_follows_schedule)
  _check_endpoints(elle_endpoints)

  def apply(loss, logits_fn, x, y, key, state, info):
    del state
    input_dim = math.prod(x.shape[1:])
    if elle_lambda:
      lam = elle_lambda
    elif input_dim == PUBLISHED_INPUT_DIM and reg_lambda_follows_schedule:
      lam = elle_lambda_fn(info.eps)
    else:
      lam = float(elle_lambda_fn(eps, input_dim))
    err = local_linearity_error(logits_fn, x, y, key, eps=info.eps, endpoints=elle_endpoints)
    return loss + lam * err, {"lin_err": err, "reg_lambda": jnp.asarray(lam, jnp.float32)}

  return Regularizer(init=EmptyState, apply=apply, update=_no_update)


class ElleAState(NamedTuple):
  """ELLE-A's carried state: its lambda and Welford statistics of past linearity errors.

  Attributes:
    lam: float32 scalar, the lambda of the next step on the published scale (0 at the start,
      lambda_max after a spike); on inputs of another size than the published one the step
      multiplies it by :func:`elle_transport` of the recipe's eps (when lambda_max is the default).
    count: float32 scalar, the number of errors seen.
    mean: float32 scalar, their mean.
    m2: float32 scalar, the sum of squared deviations (variance = m2 / count).
  """
  lam: jax.Array
  count: jax.Array
  mean: jax.Array
  m2: jax.Array


def elle_a_part(*, eps: float, elle_lambda: float = 0.0, elle_a_sensitivity: float = 2.0,
                elle_a_decay: float = 0.99, elle_endpoints: str = "random") -> Regularizer:
  """ELLE-A: ELLE with lambda switched on at spikes of the linearity error and decayed otherwise.

  After each step with error e, with mu and sigma the mean and standard deviation of all earlier
  errors: lambda <- lambda_max if more than 2 were seen and e > mu + s * sigma, else
  lambda <- decay * lambda (LIONS-EPFL/ELLE, ``core/utils/train.py``, ``lambda_schedule ==
  'onoff'``). The spike test is scale-free, so the transport of lambda_max does not change it.
  lambda_max does not depend on eps (4000 for every eps in the scripts), so
  ``config.reg_lambda_follows_schedule`` has nothing to change here.

  Args:
    eps: the recipe's eps (``config.eps``), for the transport of the default lambda_max.
    elle_lambda: lambda_max >= 0, used as it is; 0 = :data:`ELLE_A_LAMBDA_MAX` (4000) on 32x32x3
      inputs, times :func:`elle_transport` on others (:func:`elle_a_lambda_max_fn`).
    elle_a_sensitivity: s >= 0 (paper: 2).
    elle_a_decay: the decay in [0, 1] (paper: 0.99).
    elle_endpoints: ``"random"`` (paper, official code) or ``"clean"`` (lecture), as
      :func:`elle_points`.

  Returns:
    A :class:`Regularizer` with state :class:`ElleAState`; metrics ``lin_err`` and ``reg_lambda``
    (the lambda that multiplied this step's error).

  Raises:
    ValueError: a bad lambda, sensitivity, decay, eps or endpoints.
  """
  _check_lambda("elle_lambda", elle_lambda, eps)
  require(elle_a_sensitivity >= 0, "elle_a_sensitivity", "must be >= 0", elle_a_sensitivity)
  require(0 <= elle_a_decay <= 1, "elle_a_decay", "must be in [0, 1]", elle_a_decay)
  _check_endpoints(elle_endpoints)
  lam_max = elle_lambda or ELLE_A_LAMBDA_MAX

  def init():
    # Four distinct buffers: the train state is donated, and one buffer twice is an XLA error.
    z = lambda: jnp.zeros((), jnp.float32)
    return ElleAState(lam=z(), count=z(), mean=z(), m2=z())

  def apply(loss, logits_fn, x, y, key, state, info):
    scale = 1.0 if elle_lambda else elle_transport(eps, math.prod(x.shape[1:]))
    lam = state.lam * scale
    err = local_linearity_error(logits_fn, x, y, key, eps=info.eps, endpoints=elle_endpoints)
    return loss + lam * err, {"lin_err": err, "reg_lambda": jnp.asarray(lam, jnp.float32)}

  def update(state, metrics):
    err = jax.lax.stop_gradient(metrics["lin_err"])
    n, mean, m2 = state.count, state.mean, state.m2
    std = jnp.sqrt(jnp.where(n > 1, m2 / jnp.maximum(n, 1), 0.0))
    spike = (n > 2) & (err > mean + elle_a_sensitivity * std)
    lam = jnp.where(spike, lam_max, elle_a_decay * state.lam)
    n1 = n + 1
    delta = err - mean
    mean1 = mean + delta / n1
    return ElleAState(lam=lam, count=n1, mean=mean1, m2=m2 + delta * (err - mean1))

  return Regularizer(init=init, apply=apply, update=update)


REGULARIZERS = Registry("regularizer")
"""The regulariser parts by name (the ``regularizer`` column of the method table)."""
REGULARIZERS.register("none", none)
REGULARIZERS.register("gradalign", gradalign_part)
REGULARIZERS.register("elle", elle_part)
REGULARIZERS.register("elle_a", elle_a_part)

# The published lambdas under their historical names (on the published input size).
gradalign_lambda = gradalign_lambda_fn
elle_lambda = elle_lambda_fn
