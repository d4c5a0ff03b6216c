"""Bad model outputs and inputs get clear errors before anything is compiled (issue 15).

Every case here once gave silent wrong numbers or an unrelated error (a NumPy reduction, an
OverflowError, a JAX TypeError, an error about a step_size nobody passed). Each must now raise a
ValueError naming the argument and its valid range, from Python-level checks on shapes, dtypes and
concrete values (``jax.eval_shape`` for the model: nothing compiles, so the tests are quick), while
traced budgets still pass through.
"""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax import validation

W = jax.random.normal(jax.random.key(0), (64, 10))


def mlp(x):
  """An MLP-like model: it flattens whatever it is given (so NCHW images would be accepted)."""
  return x.reshape(x.shape[0], -1) @ W


X = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1), minval=0.1, maxval=0.9)
Y = jnp.array([0, 1, 2, 3])
KEY = jax.random.key(0)

# name -> attack(logits_fn, x, y, **overrides) with small budgets.
ATTACKS = {
    "fgsm": lambda f, x, y, **kw: attacks.fgsm(f, x, y, **{"eps": 0.1, **kw}),
    "pgd": lambda f, x, y, **kw: attacks.pgd(
        f, x, y, **{"eps": 0.1, "step_size": 0.05, "num_steps": 2, **kw}),
    "pgd_restarts": lambda f, x, y, **kw: attacks.pgd_restarts(
        f, x, y, **{"eps": 0.1, "step_size": 0.05, "num_steps": 2, "key": KEY, **kw}),
    "apgd": lambda f, x, y, **kw: attacks.apgd(f, x, y, **{"eps": 0.1, "n_iter": 2, "key": KEY,
                                                            **kw}),
    "square": lambda f, x, y, **kw: attacks.square(
        f, x, y, **{"eps": 0.1, "n_queries": 2, "key": KEY, **kw}),
    "fab": lambda f, x, y, **kw: attacks.fab(f, x, y, **{"eps": 0.1, "n_iter": 2, **kw}),
    "autoattack": lambda f, x, y, **kw: attacks.autoattack(
        f, x, y, **{"eps": 0.1, "key": KEY, "version": "custom", "attacks": ("apgd-ce",),
                    "n_iter": 2, **kw}),
}


# ------------------------------------------------------------------------------ model outputs


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("bad_fn,match", [
    (lambda x: mlp(x)[:1], r"logits_fn must return logits of shape \[B, C\] = \[4, C\].*\(1, 10\)"),
    (lambda x: mlp(x)[:, 0], r"logits_fn must return logits of shape \[B, C\].*\(4,\)"),
    (lambda x: mlp(x)[:, :1], r"C >= 2 classes"),
    (lambda x: jnp.argmax(mlp(x), -1)[:, None] * jnp.ones((1, 10), jnp.int32),
     "floating logits.*int32"),
    (lambda x: (mlp(x), mlp(x)), "one array of logits"),
])
def test_bad_model_output_is_named_before_compiling(name, bad_fn, match):
  with pytest.raises(ValueError, match=match):
    ATTACKS[name](bad_fn, X, Y)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_nchw_images_are_refused_with_the_layout(name):
  # An MLP takes (4, 1, 8, 8) without complaint; the attacks must not.
  x = X.transpose(0, 3, 1, 2)
  with pytest.raises(ValueError, match=r"channels-first \(NCHW\).*NHWC.*transpose\(0, 2, 3, 1\)"):
    ATTACKS[name](mlp, x, Y)


def test_a_model_that_cannot_take_the_input_gets_a_layout_message():
  x = jax.random.uniform(jax.random.key(2), (4, 8, 8, 3))  # 192 values, W takes 64
  match = r"cannot be applied to images of shape \(4, 8, 8, 3\).*NHWC"
  with pytest.raises(ValueError, match=match):
    attacks.pgd(mlp, x, Y, eps=0.1, step_size=0.05, num_steps=1)


def test_nhwc_is_not_mistaken_for_nchw():
  validation.check_layout("x", (2, 32, 32, 3))
  validation.check_layout("x", (2, 28, 28, 1))
  validation.check_layout("x", (2, 3, 3, 4))  # a tiny 4-channel image: ambiguous, accepted
  validation.check_layout("x", (2, 64))


# ------------------------------------------------------------------------------------ inputs


@pytest.mark.parametrize("name", list(ATTACKS))
def test_batch_size_zero(name):
  with pytest.raises(ValueError, match=r"x must hold at least one example \(batch size >= 1\)"):
    ATTACKS[name](mlp, X[:0], Y[:0])


@pytest.mark.parametrize("make,match", [
    (lambda: attacks.pgd(mlp, X, Y, eps=0.1, step_size=0.05, num_steps=2**31),
     r"num_steps must be at most 2\*\*31 - 1"),
    (lambda: attacks.apgd(mlp, X, Y, eps=0.1, n_iter=2**31, key=KEY), r"n_iter must be at most"),
    (lambda: attacks.square(mlp, X, Y, eps=0.1, n_queries=2**40, key=KEY),
     r"n_queries must be at most"),
    (lambda: attacks.make("pgd", eps=0.1, step_size=0.05, num_steps=2**31),
     r"num_steps must be at most"),
])
def test_budgets_beyond_int32(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_fgsm_eps_zero_names_eps_not_step_size():
  for make in (lambda: attacks.fgsm(mlp, X, Y, eps=0.0), lambda: attacks.make("fgsm", eps=0.0)):
    with pytest.raises(ValueError, match=r"eps must be > 0 for fgsm") as info:
      make()
    assert "step_size must" not in str(info.value)


@pytest.mark.parametrize("key", [0, 3.0, np.int32(1), jnp.zeros((3,), jnp.float32), "seed"])
@pytest.mark.parametrize("name", ["pgd_restarts", "apgd", "square", "autoattack"])
def test_a_key_that_is_not_a_prng_key(name, key):
  with pytest.raises(ValueError, match=r"key must be a PRNG key \(jax.random.key\(seed\)\)"):
    ATTACKS[name](mlp, X, Y, key=key)


def test_a_key_that_is_not_a_prng_key_for_pgd_with_a_random_start():
  with pytest.raises(ValueError, match=r"key must be a PRNG key.*key=jax.random.key\(0\)"):
    attacks.pgd(mlp, X, Y, eps=0.1, step_size=0.05, num_steps=1, start="uniform", key=0)
  validation.check_key_type(jax.random.key(0))
  validation.check_key_type(jax.random.PRNGKey(0))  # raw uint32 key data: accepted


def test_bfloat16_images_are_float_images():
  xb = X.astype(jnp.bfloat16)
  validation.check_images("x", xb)
  validation.check_images("x", np.asarray(X).astype(ml_dtypes.bfloat16))
  validation.check_attack_inputs(mlp, xb, Y)


def test_the_real_range_is_shown():
  x = np.asarray(X).copy()
  x[0, 0, 0, 0] = np.float32(1 + 1e-6)
  with pytest.raises(ValueError, match=r"x must be in \[0, 1\], got values in \[.*, 1\.00000") as e:
    attacks.pgd(mlp, x, Y, eps=0.1, step_size=0.05, num_steps=1)
  assert not str(e.value).endswith(", 1]")
  x[0, 0, 0, 0] = np.float32(-1e-7)
  with pytest.raises(ValueError, match=r"got values in \[-1(\.0*\d*)?e-07, "):
    attacks.pgd(mlp, x, Y, eps=0.1, step_size=0.05, num_steps=1)
  with pytest.raises(ValueError, match="x contains inf"):
    attacks.pgd(mlp, X.at[0, 0, 0, 0].set(jnp.inf), Y, eps=0.1, step_size=0.05, num_steps=1)


# ---------------------------------------------------------------- eps, targets, kappa


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("eps", [1.0, 2.0])
def test_linf_eps_must_be_below_one(name, eps):
  with pytest.raises(ValueError, match=r"eps must be in .0, 1\) for norm='linf'.*whole box"):
    ATTACKS[name](mlp, X, Y, eps=eps)


@pytest.mark.parametrize("name,kw", [
    ("fgsm", dict(eps=1.5)), ("pgd", dict(eps=2.0, step_size=0.1, num_steps=1)),
    ("apgd_ce", dict(eps=1.0)),
    ("square", dict(eps=1.0)), ("autoattack", dict(eps=1.0)), ("cw_inf", dict(eps=1.0)),
    ("fab", dict(eps=1.0)), ("beta", dict(eps=1.0, step_size=0.1, num_steps=1)),
])
def test_make_refuses_linf_eps_above_the_box(name, kw):
  with pytest.raises(ValueError, match=r"eps must be in .0, 1\) for norm='linf'"):
    attacks.make(name, **kw)


def test_l2_eps_must_be_below_the_box_diameter():
  # 8 * 8 * 1 values in [0, 1]: the box's l2 diameter is 8.
  with pytest.raises(ValueError, match=r"eps must be in \[0, sqrt\(D\) = 8\) for norm='l2'"):
    attacks.pgd(mlp, X, Y, eps=8.0, step_size=0.5, num_steps=1, norm="l2")
  with pytest.raises(ValueError, match=r"sqrt\(D\) = 8"):
    attacks.apgd(mlp, X, Y, eps=9.0, n_iter=2, norm="l2", key=KEY)


def test_traced_eps_and_budgets_still_pass_through():
  # Inside a jit the values are tracers: the value checks are skipped, nothing is refused.
  @jax.jit
  def run(eps, k):
    validation.check_eps(eps, "linf")
    validation.check_scalar("num_steps", k, low=0, integer=True)
    return attacks.pgd(mlp, X, Y, eps=eps, step_size=0.05, num_steps=k).x_adv

  assert run(0.1, 1).shape == X.shape


@pytest.mark.parametrize("make", [
    lambda t: attacks.pgd(mlp, X, Y, eps=0.1, step_size=0.05, num_steps=1, loss="cw", target=t),
    lambda t: attacks.fgsm(mlp, X, Y, eps=0.1, loss="cw", target=t),
    lambda t: attacks.apgd(mlp, X, Y, eps=0.1, n_iter=2, key=KEY, loss="ce", target=t),
    lambda t: attacks.make("pgd", eps=0.1, step_size=0.05, num_steps=1, loss="cw")(
        mlp, X, Y, None, target=t),
])
def test_target_equal_to_y_is_refused(make):
  with pytest.raises(ValueError, match=r"target must differ from y.*2 of 4 examples"):
    make(Y.at[2:].set(jnp.array([5, 6])))


@pytest.mark.parametrize("make", [
    lambda: attacks.pgd(mlp, X, Y, eps=0.1, step_size=0.05, num_steps=1, loss="cw", kappa=-1.0),
    lambda: attacks.fgsm(mlp, X, Y, eps=0.1, loss="cw", kappa=-0.5),
    lambda: attacks.cw_inf(mlp, X, Y, eps=0.1, kappa=-1.0, key=KEY),
    lambda: attacks.make("pgd", eps=0.1, step_size=0.05, num_steps=1, kappa=-2.0),
    lambda: attacks.make("cw_inf", eps=0.1, kappa=-2.0),
])
def test_negative_kappa_is_refused(make):
  with pytest.raises(ValueError, match=r"kappa must be in \[0.0, inf\)"):
    make()


def test_autoattack_refuses_nan_logits():
  with pytest.raises(ValueError, match=r"non-finite logits \(NaN or inf\) for 4 of 4 clean"):
    ATTACKS["autoattack"](lambda x: mlp(x) * jnp.nan, X, Y)
