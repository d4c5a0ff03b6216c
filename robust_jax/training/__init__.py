"""The outer minimisation, composed: the method registry, the training step, its loop and restore.

Modules:
  config      every field with its default, and ``validate`` (run-level checks; parts check theirs)
  methods     the method table: each method a bundle of parts; ``build(config) -> Bundle``
  adversary   the input adversary part: attack loss, start, stop rule, budget schedule, core
  schedules   learning rate, c_t, tau, K, eps warm-up and periodic eps: pure functions of the step
  state       the train state (a registered dataclass pytree, checkpointed whole)
  step        ``make_train_step``: the step that only calls the parts; ``make_eval_step``
  loop        ``train_and_evaluate(config, workdir)``: epochs, evaluation, checkpoints, resume
  restore     ``load_trained`` / ``load_classifier``: the one restore path; the resume policy
  resume      which config changes a resume accepts; best-checkpoint fallback, ``restart``
  preemption  SIGTERM / SIGINT: finish the step, save, exit with code 75
  workdir_lock  one trainer per workdir (``train.lock``: host, pid, stale-lock detection)

Nothing here imports :mod:`robust_jax.analysis` (tests/test_architecture.py checks the graph).
"""
