"""A benchmark session: every measurement of a run, the PyTorch comparison, the ratios, the files.

:func:`run` is what ``python -m launch.benchmark`` calls: :func:`run_benchmarks` measures the
training steps and the attacks of each model (:mod:`robust_jax.benchmarking.measure`), the PyTorch
comparison alternates JAX and PyTorch steps (:mod:`robust_jax.benchmarking.torch_worker`), the
foolbox comparison alternates the library's attacks and foolbox's on the same JAX model
(:mod:`robust_jax.benchmarking.foolbox_worker`), the ratios are derived from the same run
(:mod:`robust_jax.benchmarking.ratios`), the GAN training steps are timed when asked for
(:mod:`robust_jax.benchmarking.gans`, alternating the kinds) and BENCHMARKS.md is rendered from it
(:mod:`robust_jax.benchmarking.report`); :func:`rerender` rewrites the markdown from the JSON lines
of one or more earlier runs.
"""

from __future__ import annotations

import datetime
import json
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from robust_jax import models
from robust_jax.benchmarking import autoattack_official, compaction, foolbox_worker, gans
from robust_jax.benchmarking.measure import bench_attack, bench_train_step
from robust_jax.benchmarking.ratios import compute_ratios
from robust_jax.benchmarking.report import format_record, read_jsonl, render_markdown
from robust_jax.benchmarking.specs import (ALTERNATED_WHILE, LINEN_FAST_LABEL, LINEN_PLAIN_LABEL,
                                           TORCH_MODELS, spec_for)
from robust_jax.benchmarking.timing import loadavg, machine_info, matmul_gflops, time_calls
from robust_jax.benchmarking.torch_worker import torch_comparison


def run_benchmarks(*, model_names: Sequence[str], methods: Optional[Sequence[str]],
                   attack_names: Optional[Sequence[str]], batch: int, repeats: int, warmup: int,
                   options: Dict[str, Any], emit: Callable[[Dict[str, Any]], None] = lambda r: None
                   ) -> List[Dict[str, Any]]:
  """Runs the measurements; ``emit`` sees each record as soon as it exists.

  For each model: every method variant's training step (the ``standard`` one's final state, or
  the first, is what the attacks attack), then every attack alone, then, when both were measured,
  the pairs of :data:`ALTERNATED` timed back to back (:func:`alternate`): while-loop / unrolled
  PGD-10, and the plain-linen SmallCNN with and without :func:`robust_jax.models.fast`.

  Args:
    model_names: models of the registry.
    methods: method variants; None: each model's default subset.
    attack_names: attacks; None: each model's default subset (empty: none).
    batch: the batch size; 0: each model's default.
    repeats: the minimum number of timed calls per measurement.
    warmup: untimed calls after the first one.
    options: attack budgets (``apgd_iter``, ``aa_n_iter``, ``aa_n_queries``, ``fosc_c``).
    emit: called with each record.

  Returns:
    The records of the training steps and attacks (:func:`compute_ratios` derives the ratios
    from them).

  Raises:
    ValueError: for a model that is not in the registry.
  """
  records = []
  for m in model_names:
    if m not in models.MODELS:
      raise ValueError(f"unknown model {m!r}; valid: {sorted(models.MODELS)}")
    spec = spec_for(m)
    b = batch or spec.batch
    state = None
    for variant in (spec.methods if methods is None else methods):
      rec, st = bench_train_step(m, variant, batch=b, repeats=repeats, warmup=warmup)
      if variant == "standard" or state is None:
        state = st
      records.append(rec)
      emit(rec)
    todo = spec.attacks if attack_names is None else attack_names
    if todo and state is None:
      _, state = bench_train_step(m, "standard", batch=b, repeats=1, warmup=1)
    calls: Dict[str, Callable] = {}
    for a in todo:
      rec = bench_attack(m, a, state, batch=b, repeats=repeats, warmup=warmup, options=options,
                         calls=calls)
      if rec is not None:
        records.append(rec)
        emit(rec)
    for num, den, name, ideal in ALTERNATED:
      if num in calls and den in calls:
        rec = alternate(calls[num], calls[den], name=name, of=f"{num} / {den}", ideal=ideal,
                        model=m, batch=b)
        records.append(rec)
        emit(rec)
  return records


# Pairs of attack rows timed back to back: (numerator, denominator, label, ideal ratio).
ALTERNATED = (
    ("pgd10", "pgd10_unrolled", ALTERNATED_WHILE, "~1.0"),
    ("pgd10_linen_fast", "pgd10", LINEN_FAST_LABEL, "<= 1.2"),
    ("pgd10_linen", "pgd10_linen_fast", LINEN_PLAIN_LABEL, "> 1"),
)


def alternate(num_call, den_call, *, name: str, of: str, ideal: str, model: str, batch: int,
              rounds: int = 5) -> Dict[str, Any]:
  """``num_call`` / ``den_call`` timed back to back in ``rounds`` rounds (median of the per-round
  ratios), so that a load change on a shared machine hits both sides alike."""
  ratios = []
  for _ in range(rounds):
    n = statistics.median(time_calls(num_call, 1, 0.5))
    d = statistics.median(time_calls(den_call, 1, 0.5))
    ratios.append(n / d)
  return dict(name=name, kind="ratio", model=model, batch=batch,
              value=round(statistics.median(ratios), 3), ideal=ideal, note="", of=of,
              rounds=rounds, per_round=[round(r, 3) for r in ratios])


def run(*, model_names: Sequence[str], methods: Optional[Sequence[str]],
        attack_names: Optional[Sequence[str]], batch: int, repeats: int, warmup: int,
        options: Dict[str, Any], torch_python: str = "", torch_script: Optional[str] = None,
        torch_models: Sequence[str] = TORCH_MODELS, torch_rounds: int = 3, torch_steps: int = 3,
        json_lines: bool = False, markdown_path: Optional[str] = None, command: str = "",
        gan_kinds: Sequence[str] = (), gan_datasets: Sequence[str] = gans.GAN_DATASETS,
        gan_cpu: bool = False, gan_rounds: int = gans.DEFAULT_ROUNDS,
        gan_overrides: Optional[Dict[str, Any]] = None, foolbox_python: str = "",
        foolbox_attacks: Sequence[str] = foolbox_worker.FOOLBOX_ATTACKS, foolbox_batch: int = 128,
        foolbox_rounds: int = 3, foolbox_min_time_s: float = 1.0, aa_official_python: str = "",
        aa_official_workdir: str = "", aa_official_n: int = 100, aa_official_rounds: int = 1,
        compaction_models: Sequence[str] = ()
        ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
  """One benchmark session: the measurements, the PyTorch comparison, the ratios, the markdown.

  Prints each record as it is measured (one JSON line with ``json_lines``, else a readable line),
  then the ratios, then (``json_lines``) a final ``kind="meta"`` line that
  :func:`~robust_jax.benchmarking.report.read_jsonl` reads back.

  Args:
    model_names, methods, attack_names, batch, repeats, warmup, options: see
      :func:`run_benchmarks`.
    torch_python: a Python with ``torch``; non-empty adds the PyTorch comparison
      (:func:`~robust_jax.benchmarking.torch_worker.torch_comparison`) for each of
      ``torch_models``.
    torch_script: the path of ``launch/benchmark_torch.py`` (needed with ``torch_python``).
    torch_models: models of the comparison.
    torch_rounds: alternation rounds of the comparison.
    torch_steps: timed steps per implementation and round.
    json_lines: print JSON lines instead of readable ones.
    markdown_path: if given, BENCHMARKS.md is written there.
    command: the command line recorded in the meta and the markdown.
    gan_kinds: GAN kinds whose training steps are timed after the classifiers'
      (:func:`~robust_jax.benchmarking.gans.bench_gans`); empty: none.
    gan_datasets: their image sizes (``digits``, ``mnist5k``).
    gan_cpu: the reproduction's CPU-budget widths instead of the published ones.
    gan_rounds: alternation rounds of the GAN steps.
    gan_overrides: GAN config fields to set (the tests shrink the networks).
    foolbox_python: a Python with foolbox (its own virtual environment); non-empty adds the
      foolbox comparison (:func:`~robust_jax.benchmarking.foolbox_worker.foolbox_comparison`).
    foolbox_attacks: its attacks, from
      :data:`~robust_jax.benchmarking.foolbox_worker.FOOLBOX_ATTACKS`.
    foolbox_batch: the MNIST-5k test images both sides attack.
    foolbox_rounds: alternation rounds of the comparison.
    foolbox_min_time_s: each side's calls per round add up to at least this.
    aa_official_python: a Python with torch and fra31's ``autoattack``; with
      ``aa_official_workdir`` (a trained ``small_cnn``) adds AutoAttack standard against the
      official code (:func:`~robust_jax.benchmarking.autoattack_official.official_comparison`) on
      the first ``aa_official_n`` test images, ``aa_official_rounds`` alternated rounds.
    compaction_models: non-empty adds FAT's and Dynamic AT's steps with and without per-device
      compaction on 8 host devices and on 1 (:func:`~robust_jax.benchmarking.compaction.
      bench_compaction`, one worker process per device count).

  Returns:
    ``(records, meta)``: every record (ratios included) and the machine description.

  Raises:
    ValueError: for an unknown model, GAN kind or GAN dataset, ``torch_python`` without
      ``torch_script``, a ``foolbox_python`` that is not an executable file or an unknown
      foolbox attack (the GAN names and the foolbox arguments are checked before anything is
      measured).
  """
  if torch_python and not torch_script:
    raise ValueError("the PyTorch comparison needs torch_script (launch/benchmark_torch.py)")
  if bool(aa_official_python) != bool(aa_official_workdir):
    raise ValueError("the official AutoAttack comparison needs both --aa_official_python and "
                     "--aa_official_workdir (a trained small_cnn workdir)")
  if aa_official_python:
    autoattack_official.check_arguments(aa_official_python, aa_official_workdir, aa_official_n)
  if compaction_models:
    compaction.check_models(compaction_models)
  gans.check_gan_names(gan_kinds, gan_datasets)
  if foolbox_python:
    foolbox_worker.check_foolbox_python(foolbox_python)
    foolbox_worker.check_foolbox_attack_names(foolbox_attacks)
  t_start = time.perf_counter()
  meta = machine_info()
  meta["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  meta["command"] = command
  meta["matmul_gflops"] = round(matmul_gflops(), 1)

  def emit(rec):
    print(json.dumps(rec) if json_lines else format_record(rec), flush=True)

  records = run_benchmarks(
      model_names=model_names, methods=methods, attack_names=attack_names, batch=batch,
      repeats=repeats, warmup=warmup, emit=emit, options=options)
  if gan_kinds:
    records += gans.bench_gans(kinds=gan_kinds, datasets=gan_datasets, cpu=gan_cpu,
                               overrides=gan_overrides, rounds=gan_rounds, warmup=warmup, emit=emit)
  if torch_python:
    for m in torch_models:
      for rec in torch_comparison(torch_python, script=torch_script, rounds=torch_rounds,
                                  steps=torch_steps, model_name=m):
        records.append(rec)
        emit(rec)
        meta["torch"] = rec.get("torch") or meta.get("torch")
  if foolbox_python:
    fb = foolbox_worker.foolbox_comparison(
        foolbox_python, names=foolbox_attacks, batch=foolbox_batch, rounds=foolbox_rounds,
        min_time_s=foolbox_min_time_s, emit=emit)
    records += fb
    if fb:
      meta["foolbox"] = (f"{fb[0]['foolbox_version']} (eagerpy {fb[0]['eagerpy']}, jax "
                         f"{fb[0]['foolbox_jax']})")
  if compaction_models:
    rows, _ = compaction.bench_compaction(models=compaction_models, emit=emit)
    records += [r for r in rows if r["kind"] == "compaction_saving"]
  if aa_official_python:
    for rec in autoattack_official.official_comparison(
        aa_official_python, aa_official_workdir, n=aa_official_n, rounds=aa_official_rounds):
      records.append(rec)
      emit(rec)
  for rec in compute_ratios(records):
    records.append(rec)
    if json_lines:
      print(json.dumps(rec), flush=True)
    else:
      print(format_record(rec))
  meta["loadavg_end"] = loadavg()
  meta["wall_s"] = round(time.perf_counter() - t_start, 1)
  if json_lines:
    print(json.dumps(dict(meta, kind="meta")), flush=True)
  if markdown_path:
    with open(markdown_path, "w") as f:
      f.write(render_markdown(records, meta))
  return records, meta


def rerender(jsonl_paths: Union[str, Sequence[str]], markdown_path: str) -> str:
  """Measures nothing: writes BENCHMARKS.md to ``markdown_path`` from the JSON lines (with their
  final meta line) that earlier ``json_lines`` runs printed. Returns the markdown.

  Args:
    jsonl_paths: one path, or several (a sequence, or comma-separated): their records are
      concatenated; the machine and command are the first file's, and the header lists each further
      run's command, date and load (``meta["merged_runs"]``), e.g. a GAN-only run merged into a full
      one.
    markdown_path: where the markdown is written.
  """
  paths = [p for p in (jsonl_paths.split(",") if isinstance(jsonl_paths, str) else jsonl_paths)
           if p]
  records, meta = read_jsonl(paths[0])
  meta = dict(meta)
  for p in paths[1:]:
    more, more_meta = read_jsonl(p)
    records += more
    meta.setdefault("merged_runs", []).append(
        {k: more_meta.get(k) for k in ("date", "command", "loadavg", "loadavg_end", "wall_s")})
  md = render_markdown(records, meta)
  with open(markdown_path, "w") as f:
    f.write(md)
  return md
