r"""PyTorch baseline: a PGD-10 adversarial-training step (TRADES' SmallCNN or robust_overfitting's
PreActResNet-18), eager, on CPU.

Optional and outside the core install: it needs only ``torch`` and ``numpy`` (never ``jax`` or
``robust_jax``) and runs in its own virtual environment::

  python3 -m venv /work/torchvenv && /work/torchvenv/bin/pip install torch==2.13.0 numpy
  /work/torchvenv/bin/python launch/benchmark_torch.py --steps=5 --rounds=3 [--channels_last]
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736 \
      /work/torchvenv/bin/python launch/benchmark_torch.py

The step is the structure of the official TRADES / MART / AT-AWP code: the model in ``eval()`` mode,
PGD-10 (uniform start, mean cross-entropy, ``torch.autograd.grad`` of the input, sign step,
projection onto the ball and [0, 1]), then ``train()`` mode and one SGD-momentum update on the
adversarial batch. The clean step is the same update on the natural batch.

``launch.benchmark --torch_python=...`` starts this script with ``--worker`` (one process per variant:
default / ``channels_last``, with and without the malloc tuning) and alternates its measurements with
the JAX ones in one session; it then reads one JSON line per command from stdout. Commands on stdin:
``at N`` and ``clean N`` (time N steps, print ``{"kind": ..., "times_s": [...]}``), ``quit``.
Standalone (no ``--worker``) it prints one JSON line with the medians.
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
  """``yaodongyu/TRADES`` ``models/small_cnn.py`` (312,202 parameters; dropout 0.5)."""

  def __init__(self, drop=0.5, num_labels=10):
    super().__init__()
    activ = nn.ReLU(True)
    self.feature_extractor = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 32, 3)), ("relu1", activ),
        ("conv2", nn.Conv2d(32, 32, 3)), ("relu2", activ),
        ("maxpool1", nn.MaxPool2d(2, 2)),
        ("conv3", nn.Conv2d(32, 64, 3)), ("relu3", activ),
        ("conv4", nn.Conv2d(64, 64, 3)), ("relu4", activ),
        ("maxpool2", nn.MaxPool2d(2, 2)),
    ]))
    self.classifier = nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(64 * 4 * 4, 200)), ("relu1", activ), ("drop", nn.Dropout(drop)),
        ("fc2", nn.Linear(200, 200)), ("relu2", activ),
        ("fc3", nn.Linear(200, num_labels)),
    ]))
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight)
        nn.init.constant_(m.bias, 0)
    nn.init.constant_(self.classifier.fc3.weight, 0)
    nn.init.constant_(self.classifier.fc3.bias, 0)

  def forward(self, x):
    # reshape, not the original .view: a channels_last feature map is not viewable as [B, 1024].
    return self.classifier(self.feature_extractor(x).reshape(x.shape[0], -1))


class PreActBlock(nn.Module):
  """``locuslab/robust_overfitting`` ``preactresnet.py`` block."""
  expansion = 1

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    return out + shortcut


class PreActResNet18(nn.Module):
  """``locuslab/robust_overfitting`` ``PreActResNet18`` (11,172,170 parameters with its final BN)."""

  def __init__(self, num_classes=10):
    super().__init__()
    self.in_planes = 64
    self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    self.layer1 = self._make_layer(64, 2, 1)
    self.layer2 = self._make_layer(128, 2, 2)
    self.layer3 = self._make_layer(256, 2, 2)
    self.layer4 = self._make_layer(512, 2, 2)
    self.bn = nn.BatchNorm2d(512)
    self.linear = nn.Linear(512, num_classes)

  def _make_layer(self, planes, num_blocks, stride):
    layers = []
    for s in [stride] + [1] * (num_blocks - 1):
      layers.append(PreActBlock(self.in_planes, planes, s))
      self.in_planes = planes
    return nn.Sequential(*layers)

  def forward(self, x):
    out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
    out = F.relu(self.bn(out))
    out = F.avg_pool2d(out, 4)
    return self.linear(out.reshape(out.size(0), -1))


# Per model: constructor, input shape (C, H, W), eps, step size (the benchmark's settings).
MODELS = {
    "small_cnn": (SmallCNN, (1, 28, 28), 0.3, 0.075),
    "preact_resnet18": (PreActResNet18, (3, 32, 32), 8 / 255, 2 / 255),
}


def pgd_linf(model, x, y, *, eps, step_size, num_steps):
  """PGD with a uniform start (the AT-AWP / robust_overfitting form), model already in eval mode."""
  x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0).detach()
  for _ in range(num_steps):
    x_adv.requires_grad_(True)
    loss = F.cross_entropy(model(x_adv), y)
    (grad,) = torch.autograd.grad(loss, [x_adv])
    x_adv = x_adv.detach() + step_size * grad.sign()
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
  return x_adv.detach()


class Bench:
  """The model, optimizer and a fixed synthetic batch (MNIST- or CIFAR-shaped)."""

  def __init__(self, *, batch, channels_last, model="small_cnn", num_steps=10, seed=0):
    torch.manual_seed(seed)
    ctor, shape, eps, step_size = MODELS[model]
    self.model = ctor()
    self.fmt = torch.channels_last if channels_last else torch.contiguous_format
    self.model = self.model.to(memory_format=self.fmt)
    self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    self.x = torch.rand(batch, *shape, generator=g).contiguous(memory_format=self.fmt)
    self.y = torch.randint(0, 10, (batch,), generator=g)
    self.eps, self.step_size, self.num_steps = eps, step_size, num_steps

  def update(self, x):
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(self.model(x), self.y)
    loss.backward()
    self.opt.step()
    return loss

  def at_step(self):
    self.model.eval()
    x_adv = pgd_linf(self.model, self.x, self.y, eps=self.eps, step_size=self.step_size,
                     num_steps=self.num_steps)
    return self.update(x_adv)

  def clean_step(self):
    return self.update(self.x)

  def time(self, kind, n):
    fn = self.at_step if kind == "at" else self.clean_step
    times = []
    for _ in range(n):
      t0 = time.perf_counter()
      fn().item()  # forces completion (eager CPU is synchronous anyway)
      times.append(time.perf_counter() - t0)
    return times


def _describe(args):
  return {"torch": torch.__version__, "threads": torch.get_num_threads(),
          "channels_last": bool(args.channels_last),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "batch": args.batch,
          "model": args.model}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--model", default="small_cnn", choices=sorted(MODELS))
  p.add_argument("--channels_last", action="store_true")
  p.add_argument("--steps", type=int, default=5, help="timed steps per round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--worker", action="store_true", help="serve 'at N' / 'clean N' on stdin")
  args = p.parse_args()
  bench = Bench(batch=args.batch, channels_last=args.channels_last, model=args.model)
  bench.time("at", args.warmup)
  bench.time("clean", args.warmup)
  if args.worker:
    print(json.dumps({"ready": True, **_describe(args)}), flush=True)
    for line in sys.stdin:
      parts = line.split()
      if not parts or parts[0] == "quit":
        break
      kind, n = parts[0], int(parts[1])
      print(json.dumps({"kind": kind, "times_s": bench.time(kind, n)}), flush=True)
    return
  at, clean = [], []
  for _ in range(args.rounds):
    at.append(statistics.median(bench.time("at", args.steps)))
    clean.append(statistics.median(bench.time("clean", args.steps)))
  print(json.dumps({**_describe(args), "at_step_ms": 1e3 * statistics.median(at),
                    "clean_step_ms": 1e3 * statistics.median(clean)}))


if __name__ == "__main__":
  main()
