"""Data parallelism: 8 devices equal 1 device; two processes on 127.0.0.1 equal one process.

The step under test is TRADES + AWP on a BatchNorm CNN (cnn4), so gradient reduction, BatchNorm
statistics over the global batch and the attack's while loop across shards are all exercised.
Each configuration runs in its own process (the device count is fixed when JAX starts).
"""

import os
import socket
import subprocess
import sys

import chex
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "parallel_worker.py")
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))


def _load(path):
  with np.load(path) as f:
    n = sum(k.startswith("a") for k in f.files)
    return [f[f"a{i}"] for i in range(n)]


def _load_init(path):
  with np.load(path) as f:
    n = sum(k.startswith("init") for k in f.files)
    return [f[f"init{i}"] for i in range(n)]


def _single(tmp_path, visible, use):
  out = str(tmp_path / f"single_{visible}_{use}.npz")
  subprocess.run([sys.executable, WORKER, "single", str(visible), str(use), out], env=ENV,
                 check=True, timeout=300, capture_output=True)
  return _load(out), _load_init(out)


def _assert_close(a_list, b_list, init):
  """Equal up to float32 reduction order: the difference is tiny next to what training changed.

  Summing the global batch on 8 devices reorders float32 additions, so results are not bitwise
  equal; a wrong reduction (an 8x gradient, per-device BatchNorm statistics) changes the parameters
  by as much as the updates themselves.
  """
  assert len(a_list) == len(b_list)
  moved = max(float(np.max(np.abs(a - w0))) for a, w0 in zip(a_list, init))
  assert moved > 1e-3  # the test has teeth: training changed the weights
  for i, (a, b) in enumerate(zip(a_list, b_list)):
    if i < len(init):
      # 1% of the largest update. The first bound, 0.1%, was exceeded (0.11%) by the two-process
      # run once the conv weight gradient became a forward convolution: sign steps of the linf
      # attack amplify reduction-order noise. A wrong reduction misses by ~100%.
      assert float(np.max(np.abs(a - b))) <= 1e-2 * moved, i
    else:  # BatchNorm statistics
      # 1% of the statistic's scale (a per-device statistic would differ by far more).
      assert float(np.max(np.abs(a - b))) <= 1e-2 * float(np.max(np.abs(a))), i


def test_eight_devices_equal_one_device(tmp_path):
  one, init = _single(tmp_path, 8, 1)
  eight, _ = _single(tmp_path, 8, 8)
  _assert_close(one, eight, init)


def test_two_processes_on_loopback_equal_one_process(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  outs = [str(tmp_path / f"proc{i}.npz") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, WORKER, "multi", str(i), str(port), outs[i]], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  for p in procs:
    try:
      _, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err.decode()[-2000:]
  p0, p1 = _load(outs[0]), _load(outs[1])
  chex.assert_trees_all_equal(p0, p1)  # both processes hold the same replicated state
  single, init = _single(tmp_path, 1, 1)
  _assert_close(single, p0, init)
