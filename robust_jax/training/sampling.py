"""Which training batches a method sees: the pipeline's shuffled epochs, or batches drawn from the
class distribution its weighting carries (CFOL-AT).

:func:`train_batches_for` returns a function with the signature of
:func:`robust_jax.data.pipeline.train_batches`. For a weighting with a ``class_distribution``
(:class:`robust_jax.weighting.Weighting`) it is :func:`robust_jax.data.class_sampler.train_batches`
reading the distribution from the *current* train state before every batch, so the batch of step t
follows the adversary's update of step t - 1; for every other method it is the pipeline's function
itself (the data order and the trajectories unchanged).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np

from robust_jax.data import class_sampler, pipeline


def train_batches_for(bundle: Any, current_state: Callable[[], Any]) -> Callable:
  """The training-batch function of a method's bundle.

  Args:
    bundle: :class:`robust_jax.training.methods.Bundle`.
    current_state: returns the loop's current train state (e.g. ``lambda: state``, read lazily).

  Returns:
    ``pipeline.train_batches`` or CFOL's class-sampled equivalent (same keyword arguments).
  """
  distribution = bundle.weighting.class_distribution
  if distribution is None:
    return pipeline.train_batches

  def class_probs() -> np.ndarray:
    return np.asarray(jax.device_get(distribution(current_state().parts.weighting)))

  return functools.partial(class_sampler.train_batches, class_probs=class_probs)
