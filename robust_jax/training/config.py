"""The training configuration: every field with its default, and its validation.

Recipes (``launch/configs/*.py``) start from :func:`base_config` and override fields; every field is
overridable from the command line (``--config.method=trades --config.beta=6``). The defaults are the
embedded digits recipe's. :func:`validate` runs before anything is compiled and names the bad field
and its valid range.
"""

from __future__ import annotations

import ml_collections

from robust_jax.data import label_noise as label_noise_lib
from robust_jax.training import methods


def base_config() -> ml_collections.ConfigDict:
  """All fields, with defaults (a small digits run)."""
  c = ml_collections.ConfigDict()
  # Data and model.
  c.dataset = "digits"          # digits | mnist | cifar10 | cifar100 | svhn_cropped
  c.data_dir = ""               # tfds data_dir holding prepared datasets ("" = tfds default)
  c.validation_fraction = 0.1   # carved out of the training split, for model selection
  c.augment = "none"            # none | crop_flip (pad-4 random crop + horizontal flip)
  # Label noise on the training split (robust_jax/data/label_noise.py; Zhu et al. 2021): exactly
  # round(rate * n) labels corrupted, chosen by label_noise_seed (independent of config.seed).
  c.label_noise = "none"        # none | symmetric (uniform over the other classes) | pair (y+1 mod C)
  c.label_noise_rate = 0.0
  c.label_noise_seed = 0
  c.model = "mlp"
  c.dtype = "float32"           # compute dtype: float32 | bfloat16 (parameters stay float32)
  c.remat = False               # rematerialise the residual blocks (memory for wide networks)
  # Method.
  c.method = "pgd_at"
  c.eps = 0.3
  c.step_size = 0.075
  c.num_steps = 10
  c.norm = "linf"
  c.attack_start = "default"    # default (the method's) | none | uniform | normal | uniform_step |
                                # radial (l2 only) | uniform_unclamped (Wong's MNIST, linf)
  c.attack_bn_mode = "eval"     # eval (running statistics) | train (batch statistics, AT-AWP code)
  c.eps_warmup_epochs = 0
  c.beta = 6.0                  # TRADES / MART / FAT-TRADES / FAT-MART trade-off
  c.alp_weight = 0.5            # ALP / CLP pairing weight (lambda)
  c.mma_margin = float("inf")   # MMA: inf = the seed's formula; finite = hinge on the margin
  c.fosc_c_max = 0.5            # Dynamic AT
  c.fosc_t_prime_fraction = 0.8  # T' = fraction * num_epochs (paper: 0.8 T)
  c.fosc_reference = "natural"  # natural (paper) | start (official code)
  c.dart_official_reweight = False  # official DAT code weights CE by CE(x_adv) from epoch 1
  # Early-stopping methods (Dynamic AT, FAT and its variants): how many times the attack loop may
  # halve its batch as examples stop, so that stopped examples stop costing time (0 = never).
  # Used with attack_bn_mode="eval" on a single device; the trajectories are unchanged.
  c.attack_compaction = 3
  c.fat_tau_boundaries = (0,)   # 0-based epochs at which the next tau starts
  c.fat_tau_values = (0, 0)     # tau per interval (len(boundaries) + 1 values)
  c.cat_steps_boundaries = ()   # CAT curriculum: epochs at which K grows
  c.cat_steps_values = (10,)
  # CAT (method "cat"): chunk j of the k + 1 chunks takes j steps of (base / j) U(1, 10 / j), with
  # base = cat_step_factor * eps (official: 2 eps). k follows cat_steps_boundaries / _values.
  c.cat_step_factor = 2.0
  c.gairat_lambda = -1.0
  c.gairat_begin_epoch = 0      # reweighting from this 0-based epoch on
  c.fgsm_step_factor = 1.25     # FGSM-AT step = factor * eps (Wong et al.); 1.0 for zero init
  c.gradalign_lambda = 0.0      # 0 = the published lambda(eps)
  c.gradalign_detach_first = False  # True = official code (no backprop through grad at x)
  c.elle_lambda = 0.0           # 0 = the published lambda(eps)
  c.elle_a_sensitivity = 2.0
  c.elle_a_decay = 0.99
  c.elle_endpoints = "random"   # random (paper, official code: x_a, x_b ~ x + U) | clean (x_a = x)
  # GradAlign / ELLE / ELLE-A: False = lambda fixed from config.eps (official codes); True = lambda
  # recomputed each step from the scheduled eps (eps_warmup_epochs, periodic_eps).
  c.reg_lambda_follows_schedule = False
  c.periodic_eps = ""           # "" | cycle_cos | cycle_linear (Liu et al. 2020)
  c.periodic_eps_max = 0.0      # ramp target above eps, capped at eps
  c.periodic_bounds = ()        # period boundaries in epochs, e.g. (0, 100, 150, 200)
  # Budget "fixed": rescale the step with the scheduled eps_t, step * eps_t / (eps + 1e-6), as Liu
  # et al.'s PGD.adjust_threshold (with attack_start="uniform_step": the start within +-step_t).
  c.attack_step_follows_eps = False
  # Weight adversary.
  c.weight_perturbation = "none"  # none | awp | rwp | sam | sampa
  c.awp_gamma = 0.01
  c.awp_warmup = 0
  c.sam_rho = 0.05
  # SAM's weight decay: official (google-research/sam: the L2 term is in the loss, so the ascent
  # direction is grad L(w) + weight_decay * w and the decay is taken at w + v) | paper (L2 outside
  # the max, Foret et al. eq. 1: ascent from grad L(w) alone, decay at w).
  c.sam_weight_decay = "official"
  c.sam_m = 0                   # SAM m-sharpness: examples per perturbation (0 = the whole batch)
  c.sampa_lambda = 0.2
  # BiSAM (weight_perturbation="bisam" or method "bisam"; Xie et al. 2024): SAM whose ascent
  # maximises a smooth lower bound of the 0-1 loss; rho is sam_rho (official 0.05).
  c.bisam_lower_bound_kind = "log"  # log (official bisam_log) | tanh
  c.bisam_mu = 1.0
  c.bisam_alpha = 0.1           # tanh slope
  # DDi (method "ddi" or weight_perturbation="ddi"; Latorre et al. 2023): the min-norm element of
  # the convex hull of the gradients at K restarts of the attack is the update direction.
  c.ddi_maximisers = 10         # K (official num_of_attacks)
  c.ddi_qp_iterations = 1000    # accelerated projected gradient on the simplex
  c.ddi_normalize = False       # official normalize_danskin
  # CFOL-AT (method "cfol"; Pethick et al. 2023): batches drawn from p = gamma u + (1 - gamma)
  # softmax(w), w updated from the misclassified adversarial examples (Exp3).
  c.cfol_eta = 5e-6             # official class_sampler_lr (CIFAR-10 command)
  c.cfol_gamma = 0.5
  c.cfol_num_classes = 10       # the dataset's number of classes (checked by the sampler)
  # Optimisation.
  c.batch_size = 128
  c.num_epochs = 10
  c.optimizer = "sgd"           # sgd | adam
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 5e-4
  c.lr_schedule = "piecewise"   # constant | piecewise | cosine | cyclic | periodic_cosine
  c.lr_decay_epochs = (5, 8)
  c.lr_decay_factors = (0.1, 0.01)
  c.lr_peak_fraction = 0.4
  c.seed = 0
  # Evaluation and model selection (on the validation split, never the test set).
  c.select_attack_steps = 10
  c.select_step_size = 0.0      # 0 = eps / 4
  c.eval_batch_size = 500
  c.test_attack_steps = 20
  # Fast-AT catastrophic-overfitting guard (Wong et al. 2020).
  c.co_guard = "off"            # off | stop | rollback
  c.co_guard_steps = 5
  c.co_guard_drop = 0.2
  # Bookkeeping.
  # Per-step diagnostics: FOSC, loss and correctness at x_adv (the FOSC histograms) and clean-batch
  # accuracy. They cost one more input-gradient pass (K + 1 for PGD-K) and one forward per step,
  # about 10% of a PGD-10 step; False does exactly the reference PyTorch loops' work.
  c.train_diagnostics = True
  c.checkpoint_every_steps = 0  # 0 = only at the end of each epoch
  c.keep_checkpoints = 2
  c.log_every_steps = 0         # 0 = once per epoch
  c.progress = True
  # Resume policy (robust_jax/training/resume.py). restart: when the workdir holds checkpoints of
  # which none restores, move them aside (to <workdir>/abandoned-<time>/) and start from scratch
  # instead of stopping with an error; a restorable checkpoint is resumed either way.
  c.restart = False
  # Fields whose change on resume is accepted although it alters the trajectory, e.g.
  # ("weight_decay",); each accepted change is recorded in metrics.jsonl and the checkpoints.
  c.allow_config_change = ()
  # Multi-host (jax.distributed); automatic on TPU/SLURM when left empty.
  c.coordinator_address = ""
  c.num_processes = 0
  c.process_id = -1
  return c


FIELDS_THAT_MUST_MATCH_ON_RESUME = ("dataset", "model", "method", "eps", "norm", "num_steps",
                                    "batch_size", "seed", "weight_perturbation", "optimizer")

# The fields a resumed run may change freely: they leave the parameters' trajectory alone (logging,
# checkpointing, evaluation budgets and model selection's attack, addresses, the resume switches).
# Every other field must match the checkpoint unless listed in allow_config_change; num_epochs may
# change when the schedule does not depend on it (robust_jax/training/resume.py).
FIELDS_FREE_ON_RESUME = ("data_dir", "progress", "log_every_steps", "checkpoint_every_steps",
                         "keep_checkpoints", "train_diagnostics", "eval_batch_size",
                         "select_attack_steps", "select_step_size", "test_attack_steps",
                         "coordinator_address", "num_processes", "process_id", "restart",
                         "allow_config_change", "remat")


def _check(ok: bool, msg: str):
  if not ok:
    raise ValueError(msg)


def validate(c: ml_collections.ConfigDict, *, num_devices: int = 1) -> None:
  """Raises ValueError naming the first bad field and its valid range; compiles nothing.

  The run-level fields (data, optimisation, schedules, bookkeeping) are checked here; every part's
  fields are checked by the part itself (:func:`robust_jax.training.methods.check_all_parts` builds
  every registered part, whichever the method uses), and the method's bundle is built once, which
  also checks that its parts compose.
  """
  methods.get_method(c.method)
  # linf: at eps >= 1 the ball holds the whole box [0, 1] (the attacks refuse it too); l2: the
  # attacks check eps against the box diameter sqrt(D) once the image shape is known.
  if c.norm == "linf":
    _check(0.0 < c.eps < 1.0, f"config.eps must be in (0, 1) for config.norm='linf', got {c.eps}")
  else:
    _check(c.eps > 0.0, f"config.eps must be > 0, got {c.eps}")
  _check(isinstance(c.num_epochs, int) and c.num_epochs >= 1,
         f"config.num_epochs must be an integer >= 1, got {c.num_epochs}")
  _check(isinstance(c.batch_size, int) and c.batch_size >= 1,
         f"config.batch_size must be an integer >= 1, got {c.batch_size}")
  _check(c.batch_size % num_devices == 0,
         f"config.batch_size={c.batch_size} must be divisible by the number of devices "
         f"({num_devices})")
  _check(c.eval_batch_size >= 1, f"config.eval_batch_size must be >= 1, got {c.eval_batch_size}")
  _check(c.learning_rate > 0, f"config.learning_rate must be > 0, got {c.learning_rate}")
  _check(c.weight_decay >= 0, f"config.weight_decay must be >= 0, got {c.weight_decay}")
  _check(c.optimizer in ("sgd", "adam"),
         f"config.optimizer must be 'sgd' or 'adam', got {c.optimizer!r}")
  _check(c.dtype in ("float32", "bfloat16"),
         f"config.dtype must be 'float32' or 'bfloat16', got {c.dtype!r}")
  _check(isinstance(c.get("remat", False), bool),
         f"config.remat must be True or False, got {c.get('remat')!r}")
  if c.get("remat", False):
    from robust_jax import models  # pylint: disable=import-outside-toplevel
    _check(models.supports_remat(c.model),
           f"config.remat=True needs a model with residual blocks ({models.REMAT_MODELS}), got "
           f"config.model={c.model!r}")
  _check(c.co_guard in ("off", "stop", "rollback"),
         f"config.co_guard must be one of ('off', 'stop', 'rollback'), got {c.co_guard!r}")
  _check(c.periodic_eps in ("", "cycle_cos", "cycle_linear"),
         f"config.periodic_eps must be '', 'cycle_cos' or 'cycle_linear', got {c.periodic_eps!r}")
  if c.periodic_eps:
    _check(len(c.periodic_bounds) >= 2,
           "config.periodic_bounds needs at least two epochs (e.g. (0, num_epochs))")
  _check(0.0 <= c.validation_fraction < 1.0,
         f"config.validation_fraction must be in [0, 1), got {c.validation_fraction}")
  try:
    label_noise_lib.check(c.label_noise, c.label_noise_rate, c.label_noise_seed)
  except ValueError as e:
    raise ValueError(f"config.{e}") from None
  methods.check_all_parts(c)
  methods.build(c)
