"""Graceful pre-emption: SIGTERM / SIGINT finish the current step, save, and exit with a known code.

Clusters pre-empt jobs with SIGTERM (SLURM, Kubernetes) some seconds before SIGKILL; Ctrl-C sends
SIGINT. While :class:`PreemptionGuard` is active (``train_and_evaluate`` holds one around its
training), the first of these signals only sets a flag: the loop finishes the step it is in, writes
a checkpoint at that step (a mid-epoch one if the epoch is not over; resuming from it is bit-exact),
logs one line naming the checkpoint, and raises :class:`Preempted`, a ``SystemExit`` whose code is
:data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL`` of ``sysexits.h``: "temporary failure, retry"), so a
job script can requeue on 75 and treat any other non-zero code as a failure::

  python -m launch.train ... ; [ $? -eq 75 ] && sbatch --dependency=singleton job.sh

A second signal while the first is being handled exits at once with the signal's default action
(exit status 128 + signal number: 143 for SIGTERM, 130 for SIGINT); orbax writes every checkpoint
into a temporary directory and renames it when complete, so an interrupted save never leaves a
checkpoint that looks whole.

Several processes (``jax.distributed``): a signal seen by any process stops all of them at the same
step (:meth:`PreemptionGuard.should_stop` agrees on the flag with one small all-gather per step).

Example:

>>> import os, signal
>>> with PreemptionGuard() as guard:
...   os.kill(os.getpid(), signal.SIGTERM)   # delivered at once (to this, the main thread)
...   guard.requested, guard.signal_name
(True, 'SIGTERM')
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Optional

from absl import logging
import jax
import numpy as np

EXIT_PREEMPTED = 75
"""Exit code of a pre-empted trainer that saved its checkpoint (``EX_TEMPFAIL``): rerun to resume."""

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
  """Raised by the training loop after it saved a checkpoint on SIGTERM / SIGINT.

  A ``SystemExit`` (code :data:`EXIT_PREEMPTED`), so an uncaught one ends the process with that
  code and ``except Exception`` blocks do not swallow it.

  Attributes:
    step: the step of the checkpoint written.
    checkpoint: the directory of that checkpoint.
    signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
  """

  def __init__(self, message: str, *, step: int, checkpoint: str, signal_name: str):
    super().__init__(EXIT_PREEMPTED)
    self.message = message
    self.step = step
    self.checkpoint = checkpoint
    self.signal_name = signal_name

  def __str__(self) -> str:
    return self.message


class PreemptionGuard:
  """A context manager that turns the first SIGTERM / SIGINT into a flag, the second into an exit.

  Installs its handlers on entry and puts the previous ones back on exit. Outside the main thread
  (where Python cannot install signal handlers) it does nothing and :attr:`requested` stays False.

  Attributes:
    requested: whether a signal arrived.
    signal_name: the first signal's name, or None.
  """

  def __init__(self):
    self.requested = False
    self.signal_name: Optional[str] = None
    self._previous = {}
    self._active = False

  def __enter__(self) -> "PreemptionGuard":
    if threading.current_thread() is not threading.main_thread():
      logging.warning("train_and_evaluate runs outside the main thread: SIGTERM / SIGINT will not "
                      "save a checkpoint before the process ends.")
      return self
    for sig in _SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    self._active = True
    return self

  def __exit__(self, *exc) -> None:
    if self._active:
      for sig, handler in self._previous.items():
        signal.signal(sig, handler)
      self._active = False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    name = signal.Signals(signum).name
    if self.requested:
      # The second signal: the default action now (the process ends with 128 + signum).
      logging.warning("%s again while saving the pre-emption checkpoint: exiting at once.", name)
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.requested = True
    self.signal_name = name
    logging.warning("%s received: finishing the current step, then saving a checkpoint and "
                    "exiting with code %d (send it again to exit at once).", name, EXIT_PREEMPTED)

  def should_stop(self) -> bool:
    """Whether to stop now: this process's flag, agreed across processes when there are several."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    if np.any(flags) and not self.requested:
      self.requested, self.signal_name = True, "SIGTERM (another process)"
    return bool(np.any(flags))
