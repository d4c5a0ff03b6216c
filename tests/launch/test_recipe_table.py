"""The paper recipes against their sources: one table, every hyperparameter, each value cited.

Each row of :data:`TABLE` is a recipe of ``launch/configs/`` (``mnist5k.py`` has its own table in
its module and tests); each entry is ``field: (value, source)``, the source naming the official
script and line (or argparse default) or the paper, or saying "ours" with the reason for a
deliberate difference (each is also in the recipe's docstring). :func:`test_recipe_matches_table`
compares every entry with ``get_config()``; entries whose name starts with ``_`` are derived values
(the method's default start, the lambda a 0 selects, T' in epochs). Beyond the values,
:data:`OFFICIAL_SCHEDULES` transcribes each official per-epoch schedule (learning rate, FAT's tau,
Dynamic AT's c_t, GAIRAT's lambda and start, AWP's warm-up) as a function of the 0-based epoch, and
:func:`test_schedules_match_the_official_functions` evaluates the library's schedule at every epoch
of the run against it: the 1-based ``epoch >= k`` conversions are where recipes slip.

Repositories (commits of the stored snapshots): yaodongyu/TRADES @6e8e11b; YisenWang/MART
@2d83e17; zjfheart/Friendly-Adversarial-Training @80a0640; zjfheart/Geometry-aware-Instance-
reweighted-Adversarial-Training @16813b5; csdongxian/AWP @a7acf5d; YisenWang/dynamic_adv_training
@470210e; locuslab/fast_adversarial @54f7287; tml-epfl/understanding-fast-adv-training @ceed494;
LIONS-EPFL/ELLE @0f16c0e; sunblaze-ucb/curriculum-adversarial-training-CAT @ab58b77;
liuchen11/AdversaryLossLandscape @7345678.
"""

import importlib
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import regularizers
from robust_jax.training import methods, schedules

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "launch" / "configs"
NOT_IN_TABLE = ("__init__", "common", "mnist5k", "gan")  # mnist5k.py: its own RECIPES table and
# tests; gan.py: GAN configs (robust_jax.games, tests/games)

INF = math.inf

# Sources, abbreviated.
TR = "TRADES train_trades_cifar10.py"
TRM = "TRADES train_trades_mnist.py"
TRL = "TRADES trades.py trades_loss"
MA = "MART train_wideresnet.py"
MAL = "MART mart.py mart_loss"
FA = "FAT FAT.py"
FAT_T = "FAT FAT_for_TRADES.py"
FAT_M = "FAT FAT_for_MART.py"
ES = "FAT earlystop.py"
GA = "GAIRAT GAIRAT.py"
GF = "GAIRAT GAIR_FAT.py"
AW = "AWP AT_AWP/train_cifar10.py"
AWT = "AWP trades_AWP/train_trades_cifar.py"
DT = "dynamic_adv_training train_models.py"
DTP = "Wang et al. 2019 (Dynamic AT), Sec. 5"
FS = "fast_adversarial CIFAR10/train_fgsm.py"
GR = "understanding-fast-adv-training"
GRS = GR + " sh/exps_diff_eps_cifar10.sh L48"
EL = "ELLE scripts/run_elle_cifar10.sh L81-82"
ELA = "ELLE scripts/run_elle-a_cifar10.sh L81-82"
ELP = "ELLE parser.py"
CA = "CAT advtrain_all.py"
PA = "AdversaryLossLandscape"


def _row(*rows, **fields):
  """A row from earlier rows (later ones win) and its own fields."""
  out = {}
  for r in rows:
    out.update(r)
  out.update(fields)
  return out


def _cifar_sgd(src_opt, src_bs, src_aug):
  """The CIFAR-10 rows' data and optimiser fields that every official script shares."""
  return dict(
      dataset=("cifar10", src_aug),
      augment=("crop_flip", src_aug),
      batch_size=(128, src_bs),
      optimizer=("sgd", src_opt),
      momentum=(0.9, src_opt),
      nesterov=(False, src_opt + " (no nesterov)"),
  )


TRADES_CIFAR = _row(
    _cifar_sgd(TR + " L153 optim.SGD; L26 --momentum 0.9", TR + " L16 --batch-size 128",
                 TR + " L59-62 RandomCrop(32, 4), RandomHorizontalFlip; L67 CIFAR10"),
    method=("trades", TR + " L81 trades_loss"),
    model=("wrn34_10", TR + " L152 WideResNet() (models/wideresnet.py L51 depth=34, "
                       "widen_factor=10)"),
    eps=(0.031, TR + " L30 --epsilon 0.031"),
    step_size=(0.007, TR + " L34 --step-size 0.007"),
    num_steps=(10, TR + " L32 --num-steps 10"),
    attack_start=("default", "the method's start"),
    _start=("normal", TRL + " L31 x + 0.001 randn"),
    attack_bn_mode=("eval", TRL + " L28 model.eval()"),
    beta=(6.0, TR + " L36 --beta 6.0"),
    num_epochs=(76, TR + " L20 --epochs 76"),
    learning_rate=(0.1, TR + " L24 --lr 0.1"),
    weight_decay=(2e-4, TR + " L22 --weight-decay 2e-4"),
    lr_schedule=("piecewise", TR + " L137-147 adjust_learning_rate"),
    lr_decay_epochs=((74,), TR + " L140 epoch >= 75, 1-based (L155); 90 and 100 never reached"),
    lr_decay_factors=((0.1,), TR + " L141 lr * 0.1"),
    weight_perturbation=("none", "TRADES has no weight perturbation"),
    eps_warmup_epochs=(0, TR + " (no eps warm-up)"),
)

FAT_WRN32 = _row(
    _cifar_sgd(FA + " L146 optim.SGD; L17 --momentum 0.9", FA + " L119 batch_size=128",
                 FA + " L108-109 RandomCrop(32, 4), RandomHorizontalFlip; L25 --dataset cifar10"),
    method=("fat", FA + " L56-58 earlystop(..., 'uniform_randominit', loss_fn='cent')"),
    model=("wrn32_10", FA + " L22 --net WRN_madry, L29-30 --depth 32 --width_factor 10"),
    eps=(0.031, FA + " L18 --epsilon 0.031"),
    step_size=(0.007, FA + " L20 --step_size 0.007"),
    num_steps=(10, FA + " L19 --num_steps 10"),
    attack_start=("default", "the method's start"),
    _start=("uniform", FA + " L58 uniform_randominit; " + ES + " L34-36 x + U(-eps, eps), clamped"),
    attack_bn_mode=("eval", ES + " L18 model.eval()"),
    num_epochs=(120, FA + " L14 --epochs 120"),
    learning_rate=(0.1, FA + " L16 --lr 0.1"),
    weight_decay=(2e-4, FA + " L15 --weight_decay 2e-4"),
    lr_schedule=("piecewise", FA + " L89-97 adjust_learning_rate(epoch + 1) (L173)"),
    lr_decay_epochs=((59, 89, 109), FA + " L92-96 epoch >= 60, 90, 110, 1-based"),
    lr_decay_factors=((0.1, 0.01, 0.005), FA + " L93-97 lr * 0.1, 0.01, 0.005"),
    fat_tau_boundaries=((50, 90), FA + " L77-87 adjust_tau(epoch + 1) (L174): <= 50, <= 90"),
    fat_tau_values=((0, 1, 2), FA + " L81-85 tau 0, 1, 2 (--dynamictau True, L28)"),
    weight_perturbation=("none", "FAT has no weight perturbation"),
    eps_warmup_epochs=(0, FA + " (no eps warm-up)"),
)

PREACT18_AT = _row(
    _cifar_sgd(AW + " L240 SGD(momentum=0.9, weight_decay=5e-4)", AW + " L133 --batch-size 128",
                 AW + " L191 Crop(32, 32), FlipLR() on 4-padded images (L205)"),
    method=("pgd_at", AW + " L329 attack_pgd"),
    model=("preact_resnet18", AW + " L130 --model PreActResNet18 (AT_AWP/preactresnet.py L29-30: "
                              "shortcut on relu(bn1(x)))"),
    eps=(8 / 255, AW + " L142 --epsilon 8, L213 / 255"),
    step_size=(2 / 255, AW + " L146 --pgd-alpha 2, L214 / 255"),
    num_steps=(10, AW + " L143 --attack-iters 10"),
    attack_start=("default", "the method's start"),
    _start=("uniform", AW + " attack_pgd: delta ~ U(-eps, eps), clamped"),
    attack_bn_mode=("train", AW + " L338 model.train() (the attack runs in train mode; docstring)"),
    num_epochs=(200, AW + " L136 --epochs 200"),
    learning_rate=(0.1, AW + " L138 --lr-max 0.1"),
    weight_decay=(5e-4, AW + " L240 weight_decay=5e-4 (hard-coded)"),
    lr_schedule=("piecewise", AW + " L261-267 lr_schedule, --lr-schedule piecewise (L137)"),
    lr_decay_epochs=((100, 150), AW + " L262-265 t / 200 < 0.5, < 0.75 (per iteration, L321; "
                                 "drops at the last iteration of epochs 99 and 149, docstring)"),
    lr_decay_factors=((0.1, 0.01), AW + " L265, L267 lr_max / 10, / 100"),
    weight_perturbation=("none", AW + " with AWP off (--awp-gamma <= 0, L169-170)"),
    eps_warmup_epochs=(0, AW + " (no eps warm-up)"),
)

FAST_AT = _row(
    _cifar_sgd(FS + " L75 SGD; L29 --momentum 0.9", FS + " L22 --batch-size 128",
                 "fast_adversarial CIFAR10/utils.py L24-25 RandomCrop(32, 4), "
                 "RandomHorizontalFlip"),
    eps=(8 / 255, FS + " L30 --epsilon 8, L68 / 255"),
    num_steps=(1, FS + " L117 one FGSM step"),
    step_size=(2 / 255, "unused by the one-step attack (its step: fgsm_step_factor * eps)"),
    attack_start=("default", "the method's start"),
    attack_bn_mode=("train", FS + " L73 model.train(), never eval while training"),
    weight_decay=(5e-4, FS + " L28 --weight-decay 5e-4"),
    lr_schedule=("cyclic", FS + " L87-88 CyclicLR(0, lr_max, up = down = lr_steps / 2)"),
    lr_decay_epochs=((), "cyclic: no decay epochs"),
    lr_decay_factors=((), "cyclic: no decay factors"),
    weight_perturbation=("none", "no weight perturbation"),
    eps_warmup_epochs=(0, "no eps warm-up on CIFAR-10"),
)

TABLE = {
    "cifar10_trades_wrn34": TRADES_CIFAR,

    "cifar10_mart_wrn34": _row(
        TRADES_CIFAR,
        _cifar_sgd(MA + " L171 optim.SGD; L31 --momentum 0.9", MA + " L21 --batch-size 128",
                     MA + " L71-72 RandomCrop(32, 4), RandomHorizontalFlip"),
        method=("mart", MA + " L92 mart_loss"),
        model=("wrn34_10", MA + " L169 WideResNet() (depth 34, widen 10: TRADES' file)"),
        eps=(0.031, MA + " L35 --epsilon 0.031"),
        step_size=(0.007, MA + " L39 --step-size 0.007"),
        num_steps=(10, MA + " L37 --num-steps 10"),
        _start=("normal", MAL + " L20 x + 0.001 randn"),
        attack_bn_mode=("eval", MAL + " L17 model.eval()"),
        beta=(6.0, MA + " L41 --beta 6.0"),
        num_epochs=(90, MA + " L25 --epochs 90"),
        learning_rate=(0.1, MA + " L29 --lr 0.1"),
        weight_decay=(7e-4, MA + " L27 --weight-decay 7e-4"),
        lr_schedule=("piecewise", MA + " L110-117 adjust_learning_rate (1-based, L176)"),
        lr_decay_epochs=((74, 89), MA + " L116, L114 epoch >= 75, >= 90 (>= 100 never reached)"),
        lr_decay_factors=((0.1, 0.01), MA + " L117, L115 lr * 0.1, * 0.01"),
        weight_perturbation=("none", "MART has no weight perturbation"),
    ),

    "cifar10_trades_awp_wrn34": _row(
        TRADES_CIFAR,
        _cifar_sgd(AWT + " L275 optim.SGD; L35 --momentum 0.9", AWT + " L20 --batch-size 128",
                     AWT + " L86-87 RandomCrop(32, 4), RandomHorizontalFlip"),
        model=("wrn34_10", AWT + " L19 --arch WideResNet34"),
        eps=(8 / 255, AWT + " L41 --epsilon 8, L66 / 255"),
        step_size=(2 / 255, AWT + " L45 --step-size 2, L67 / 255"),
        num_steps=(10, AWT + " L43 --num-steps 10"),
        _start=("normal", AWT + " L110 x + 0.001 randn"),
        attack_bn_mode=("eval", AWT + " L107 model.eval()"),
        beta=(6.0, AWT + " L47 --beta 6.0"),
        num_epochs=(200, AWT + " L24 --epochs 200"),
        learning_rate=(0.1, AWT + " L33 --lr 0.1"),
        weight_decay=(5e-4, AWT + " L31 --weight-decay 5e-4"),
        lr_schedule=("piecewise", AWT + " L260-266 adjust_learning_rate (1-based, L294)"),
        lr_decay_epochs=((99, 149), AWT + " L263, L265 epoch >= 100, >= 150, 1-based"),
        lr_decay_factors=((0.1, 0.01), AWT + " L264, L266 lr * 0.1, * 0.01"),
        weight_perturbation=("awp", AWT + " TradesAWP (L179-205)"),
        awp_gamma=(0.005, AWT + " L60 --awp-gamma 0.005"),
        awp_warmup=(9, AWT + " L62 --awp-warmup 10, L179 epoch >= 10, 1-based"),
    ),

    "cifar10_fat_wrn32": FAT_WRN32,

    "cifar10_gairat_wrn32": _row(
        FAT_WRN32,
        _cifar_sgd(GA + " L70 optim.SGD; L15 --momentum 0.9", GA + " L208 batch_size=128",
                     GA + " L198-199 RandomCrop(32, 4), RandomHorizontalFlip"),
        method=("gairat", GA + " L132 GA_PGD (kappa), GAIR weights"),
        model=("wrn32_10", GA + " L20 --net WRN, L66 Wide_ResNet_Madry, L23-24 depth 32 width 10"),
        eps=(0.031, GA + " L16 --epsilon 0.031"),
        step_size=(0.007, GA + " L18 --step-size 0.007"),
        num_steps=(10, GA + " L17 --num-steps 10"),
        _start=("uniform", GA + " L132 category='Madry', rand_init=True"),
        attack_bn_mode=("eval", "GAIRAT attack_generator.py L21 GA_PGD: model.eval()"),
        num_epochs=(120, GA + " L13 --epochs 120"),
        learning_rate=(0.1, GA + " L29 --lr-max 0.1"),
        weight_decay=(2e-4, GA + " L14 --weight-decay 2e-4"),
        lr_schedule=("piecewise", GA + " L75-86 lr_schedule(epoch + 1) (L135)"),
        lr_decay_epochs=((59, 89, 109), GA + " L79-85 t / 120 < 0.5, 0.75, 11/12, t 1-based"),
        lr_decay_factors=((0.1, 0.01, 0.005), GA + " L82-86 lr_max / 10, / 100, / 200"),
        gairat_lambda=(-1.0, GA + " L32 --Lambda -1.0, L34 --Lambda_schedule fixed"),
        gairat_begin_epoch=(59, GA + " L36 --begin_epoch 60, L141 (epoch + 1) >= begin_epoch"),
        fat_tau_boundaries=((0,), "unused (no early stop)"),
        fat_tau_values=((0, 0), "unused (no early stop)"),
        weight_perturbation=("none", "GAIRAT has no weight perturbation"),
    ),

    "cifar10_gair_fat_wrn32": _row(
        FAT_WRN32,
        _cifar_sgd(GF + " L80 optim.SGD; L16 --momentum 0.9", GF + " L229 batch_size=128",
                     GF + " L219 RandomCrop(32, 4), RandomHorizontalFlip"),
        method=("gair_fat", GF + " L142 GA_earlystop, GAIR weights"),
        model=("wrn32_10", GF + " L21 --net WRN, L76 Wide_ResNet_Madry, L27-28 depth 32 width 10"),
        eps=(0.031, GF + " L17 --epsilon 0.031"),
        step_size=(0.007, GF + " L19 --step-size 0.007"),
        num_steps=(10, GF + " L18 --num-steps 10"),
        _start=("uniform", GF + " L142 type='fat' (GAIRAT earlystop.py: uniform start)"),
        num_epochs=(120, GF + " L14 --epochs 120"),
        learning_rate=(0.1, GF + " L33 --lr-max 0.1"),
        weight_decay=(2e-4, GF + " L15 --weight-decay 2e-4"),
        lr_schedule=("piecewise", GF + " L85-96 lr_schedule(epoch + 1) (L146)"),
        lr_decay_epochs=((59, 89, 109), GF + " L89-95 t / 120 < 0.5, 0.75, 11/12, t 1-based"),
        lr_decay_factors=((0.1, 0.01, 0.005), GF + " L92-96 lr_max / 10, / 100, / 200"),
        fat_tau_boundaries=((40, 70), GF + " L172-181 adjust_tau(epoch + 1) (L271): <= 40, <= 70"),
        fat_tau_values=((0, 3, 6), GF + " L176-180 tau 0, 3, 6"),
        gairat_lambda=(0.0, GF + " L36 --Lambda 0.0, L38 --Lambda_schedule fixed"),
        gairat_begin_epoch=(59, GF + " L40 --begin_epoch 60, L152 (epoch + 1) >= begin_epoch"),
    ),

    "cifar10_fat_trades_wrn34": _row(
        TRADES_CIFAR,
        _cifar_sgd(FAT_T + " L152 optim.SGD; L17 --momentum 0.9", FAT_T + " L130 batch_size=128",
                     FAT_T + " L119-120 RandomCrop(32, 4), RandomHorizontalFlip"),
        method=("fat_trades", FAT_T + " L66-68 earlystop(..., loss_fn='kl'), TRADES_loss (L48)"),
        model=("wrn34_10", FAT_T + " L22 --net WRN, L29-30 --depth 34 --width_factor 10"),
        eps=(0.031, FAT_T + " L18 --epsilon 0.031"),
        step_size=(0.007, FAT_T + " L20 --step_size 0.007"),
        num_steps=(10, FAT_T + " L19 --num_steps 10"),
        _start=("normal", FAT_T + " L68 normal_distribution_randominit (" + ES + " L31-33)"),
        attack_bn_mode=("eval", ES + " L18 model.eval()"),
        beta=(6.0, FAT_T + " L24 --beta 6.0"),
        num_epochs=(85, FAT_T + " L14 --epochs 85"),
        learning_rate=(0.1, FAT_T + " L16 --lr 0.1"),
        weight_decay=(2e-4, FAT_T + " L15 --weight_decay 2e-4"),
        lr_schedule=("piecewise", FAT_T + " L103-109 adjust_learning_rate(epoch + 1) (L181)"),
        lr_decay_epochs=((74,), FAT_T + " L106 epoch >= 75, 1-based (>= 90 never reached)"),
        lr_decay_factors=((0.1,), FAT_T + " L107 lr * 0.1"),
        fat_tau_boundaries=((30, 50, 70), FAT_T + " L90-100 adjust_tau(epoch + 1): <= 30, 50, 70"),
        fat_tau_values=((0, 1, 2, 3), FAT_T + " L94-100 tau 0, 1, 2, 3"),
    ),

    "cifar10_fat_mart_wrn34": _row(
        TRADES_CIFAR,
        _cifar_sgd(FAT_M + " L159 optim.SGD; L17 --momentum 0.9", FAT_M + " L137 batch_size=128",
                     FAT_M + " L126-127 RandomCrop(32, 4), RandomHorizontalFlip"),
        method=("fat_mart", FAT_M + " L71-73 earlystop(..., loss_fn='cent'), MART_loss (L48)"),
        model=("wrn34_10", FAT_M + " L22 --net WRN, L29-30 --depth 34 --width_factor 10"),
        eps=(0.031, FAT_M + " L18 --epsilon 0.031"),
        step_size=(0.007, FAT_M + " L20 --step_size 0.007"),
        num_steps=(10, FAT_M + " L19 --num_steps 10"),
        _start=("normal", FAT_M + " L73 normal_distribution_randominit"),
        attack_bn_mode=("eval", ES + " L18 model.eval()"),
        beta=(6.0, FAT_M + " L24 --beta 6.0"),
        num_epochs=(90, FAT_M + " L14 --epochs 90"),
        learning_rate=(0.1, FAT_M + " L16 --lr 0.1"),
        weight_decay=(2e-4, FAT_M + " L15 --weight_decay 2e-4"),
        lr_schedule=("piecewise", FAT_M + " L110-116 adjust_learning_rate(epoch + 1) (L189)"),
        lr_decay_epochs=((59, 89), FAT_M + " L113, L115 epoch >= 60, >= 90, 1-based"),
        lr_decay_factors=((0.1, 0.01), FAT_M + " L114, L116 lr * 0.1, * 0.01"),
        fat_tau_boundaries=((20, 40, 60, 80), FAT_M + " L95-107 adjust_tau(epoch + 1): <= 20, "
                                              "40, 60, 80"),
        fat_tau_values=((0, 1, 2, 3, 4), FAT_M + " L99-107 tau 0, 1, 2, 3, 4"),
    ),

    "cifar10_pgd_at_preact18": PREACT18_AT,

    "cifar10_awp_at_preact18": _row(
        PREACT18_AT,
        weight_perturbation=("awp", AW + " AdvWeightPerturb (L340-362)"),
        awp_gamma=(0.01, AW + " L162 --awp-gamma 0.01"),
        awp_warmup=(0, AW + " L163 --awp-warmup 0, L340 epoch >= awp_warmup, 0-based (L307)"),
    ),

    "cifar10_pas_preact18": _row(
        PREACT18_AT,
        _cifar_sgd(PA + " run/train_normal.py L46 --optim sgd momentum 0.9",
                     PA + " run/train_normal.py L26 --batch_size 128",
                     PA + " util/dataset.py L23-24 RandomCrop(32, 4), RandomHorizontalFlip"),
        method=("pgd_at", PA + " README L55 --attack name=pgd (PGD10)"),
        model=("preact_resnet18", "ours: the official CIFAR10_ResNet at width 8 is not in the "
                                  "registry (docstring)"),
        eps=(8 / 255, PA + " --attack_threshold_schedule ... max=8 (the cap; docstring)"),
        step_size=(2 / 255, PA + " README L55 step_size=2 (255ths)"),
        num_steps=(10, PA + " README L55 iter_num=10"),
        attack_start=("uniform_step", PA + " util/attack.py L95-96 x + U(-step, step), clipped"),
        _start=("uniform_step", PA + " util/attack.py L95 (torch.rand * 2 - 1) * step_size"),
        attack_bn_mode=("eval", PA + " util/train.py L47 model.eval() around the attack"),
        num_epochs=(200, PA + " run/train_normal.py L28 --epoch_num 200"),
        learning_rate=(0.1, PA + " run/train_normal.py L46 lr 1e-1"),
        weight_decay=(1e-4, PA + " run/train_normal.py L46 weight_decay 1e-4"),
        lr_schedule=("periodic_cosine", "ours: a cosine restarted each period (official "
                                        "cycle_jump sequences; docstring)"),
        lr_decay_epochs=((), "periodic_cosine: no decay epochs"),
        lr_decay_factors=((), "periodic_cosine: no decay factors"),
        periodic_eps=("cycle_cos", PA + " --attack_threshold_schedule name=cycle_cos (docstring)"),
        periodic_eps_max=(16 / 255, PA + " eps_max=16 (the _max16_ checkpoints; docstring)"),
        periodic_bounds=((0, 100, 150, 200), PA + " ckpt_list=0:100:150:200 (docstring)"),
        attack_step_follows_eps=(True, PA + " util/attack.py L73-80 adjust_threshold"),
        weight_perturbation=("none", "no weight perturbation"),
    ),

    "cifar10_fgsm_at_preact18": _row(
        FAST_AT,
        method=("fgsm_at", FS + " L105-118 FGSM from a random start"),
        model=("preact_resnet18_fast", "fast_adversarial CIFAR10/preact_resnet.py L24 "
                                       "shortcut(x): the raw block input"),
        _start=("uniform", FS + " L107-110 delta ~ U(-eps, eps), clamped"),
        fgsm_step_factor=(1.25, FS + " L31 --alpha 10 = 1.25 * 8"),
        num_epochs=(15, FS + " L24 --epochs 15"),
        learning_rate=(0.2, FS + " L27 --lr-max 0.2"),
        lr_peak_fraction=(0.5, FS + " L88 step_size_up = lr_steps / 2"),
        co_guard=("rollback", FS + " L36 --early-stop (README L49), L130-140"),
        co_guard_steps=(5, FS + " L133 attack_pgd(..., 5, 1)"),
        co_guard_drop=(0.2, FS + " L137 robust_acc - prev < -0.2"),
    ),

    "cifar10_gradalign_preact18": _row(
        FAST_AT,
        _cifar_sgd(GR + " train.py L94 SGD(momentum=0.9)", GR + " train.py L23 --batch_size 128",
                     GR + " data.py L12-14 RandomCrop(32, 4), RandomHorizontalFlip"),
        method=("gradalign", GRS + " --grad_align_cos_lambda=0.200"),
        model=("preact_resnet18_gradalign", GR + " models.py L115 raw-input shortcut, no final "
                                            "BN-ReLU; train.py initialize_weights"),
        eps=(8 / 255, GRS + " --eps=8"),
        _start=("none", GRS + " --attack_init=zero (train.py L143-144)"),
        fgsm_step_factor=(1.0, GR + " train.py L169 clamp(1.25 eps sign(g), -eps, eps) from 0"),
        gradalign_lambda=(0.0, "0 selects the published lambda(eps) (below)"),
        _gradalign_lambda=(0.2, GRS + " --grad_align_cos_lambda=0.200 at --eps=8"),
        gradalign_detach_first=(True, GR + " train.py L160-162: the FGSM gradient at x (zero "
                                      "init) is grad.detach()ed; only grad2 (L193) is double "
                                      "backpropagated"),
        attack_bn_mode=("train", GR + " train.py L91 model.train()"),
        num_epochs=(30, GRS + " --epochs=30"),
        learning_rate=(0.3, GRS + " --lr_max=0.30"),
        weight_decay=(5e-4, GR + " train.py L39 --weight_decay 5e-4"),
        lr_schedule=("cyclic", GR + " utils.py L335 np.interp(t, [0, 2/5 E, E], [0, lr_max, 0])"),
        lr_peak_fraction=(0.4, GR + " utils.py L335 n_epochs * 2 // 5 = 12 of 30"),
        co_guard=("off", GR + " train.py: no rollback (--eval_early_stopped_model only evaluates)"),
    ),

    "cifar10_elle_preact18": _row(
        FAST_AT,
        _cifar_sgd("ELLE core/utils/train.py L92-93 SGD(momentum=0.9, nesterov=--nesterov)",
                     EL + " --batch-size 128",
                     "ELLE core/data/cifar10.py L28 RandomCrop(32, 4), RandomHorizontalFlip"),
        method=("elle", EL + " --reg 'ELLE' --lambda_schedule 'constant'"),
        model=("preact_resnet18", EL + " --model 'preact-resnet18' (core/models/preact_resnet.py: "
                                  "robust_overfitting's)"),
        eps=(8 / 255, EL + " --attack-eps 8/255"),
        _start=("none", ELP + " L54 --input_noise_rate 0: FGSM from x"),
        fgsm_step_factor=(1.0, EL + " --attack-step 8/255 = eps"),
        elle_lambda=(0.0, "0 selects the published lambda(eps) (below)"),
        _elle_lambda=(1000.0, EL + " --lin_reg 1000 at 8/255"),
        attack_bn_mode=("train", "ELLE core/utils/train.py L137 model.train()"),
        num_epochs=(30, EL + " --epochs 30"),
        learning_rate=(0.2, EL + " --lr 0.2"),
        weight_decay=(5e-4, ELP + " L34 --weight-decay 5e-4"),
        nesterov=(False, ELP + " L36 --nesterov False"),
        lr_schedule=("cyclic", "ELLE core/utils/train.py L124-125 --scheduler GradAlign on CIFAR: "
                               "CyclicLR(0, lr, up = down = lr_steps / 2)"),
        lr_peak_fraction=(0.5, "ELLE core/utils/train.py L125 step_size_up = lr_steps / 2"),
        co_guard=("off", "ELLE: no catastrophic-overfitting rollback"),
    ),

    "cifar10_cat_resnet18": _row(
        _cifar_sgd(CA + " L198 optim.Adam(lr=1e-4) (--sgd off)", "CAT config.json L4 "
                     "training_batch_size 200", CA + " L77-78 RandomCrop(32, 4), "
                     "RandomHorizontalFlip"),
        optimizer=("adam", CA + " L198 optim.Adam(net.parameters(), lr=1e-4)"),
        momentum=(0.9, "unused by Adam (the base config's value)"),
        nesterov=(False, "unused by Adam"),
        batch_size=(200, "CAT config.json L4 training_batch_size 200"),
        method=("cat", CA + " --method cat (regularLoss, L284-310)"),
        model=("resnet18", "ours: ResNet50 (--net resnet50, L182) is not in the registry; "
                           "the same family (docstring)"),
        eps=(0.032, CA + " L203 epsilon 0.032 (cifar10)"),
        step_size=(0.008, "unused by CAT's chunks (their base step: cat_step_factor * eps)"),
        num_steps=(10, "unused by CAT's chunks (k: cat_steps_values)"),
        cat_step_factor=(2.0, CA + " L203 step_size 0.064 = 2 * 0.032, L205 one step of it"),
        cat_steps_values=((0, 1, 2, 3, 4, 5, 6, 7), CA + " L166 k = 0 at the start, L60 max_k 7"),
        cat_steps_boundaries=((37, 75, 112, 150, 187, 224, 262), "ours: one stage per 299 / 8 "
                              "epochs (official: k += 1 at validation plateaus, L337-387)"),
        attack_start=("default", "the method's start"),
        _start=("uniform", "CAT PGDAttack.py L55 perturb_true: x + U(-eps, eps) (L205 rand=True)"),
        attack_bn_mode=("eval", "ours: the official chunks attack in train mode, each its own "
                                "batch; refused here (docstring)"),
        num_epochs=(299, CA + " L543-544 epoch from 1 while < 300"),
        learning_rate=(1e-4, CA + " L198 lr=1e-4"),
        weight_decay=(0.0, CA + " L198 Adam without weight decay"),
        lr_schedule=("constant", CA + " L545 scheduler.step() commented out"),
        lr_decay_epochs=((), "constant"),
        lr_decay_factors=((), "constant"),
        validation_fraction=(0.02, CA + " L88 valid_size = 0.02"),
        weight_perturbation=("none", "CAT has no weight perturbation"),
        eps_warmup_epochs=(0, "CAT: no eps warm-up"),
    ),

    "cifar10_dart_wrn32": _row(
        _cifar_sgd(DT + " L52 SGD(lr=0.01, decay=1e-4, momentum=0.9)",
                     DT + " L205-206 -b 128",
                     "ours: crop + flip; official ImageDataGenerator(rotation 10, shifts 0.2, "
                     "flip), L64-68 (docstring)"),
        dataset=("cifar10", DT + " L205 -d cifar-10"),
        method=("dart", DT + " L120 attack.perturb(..., fosc) (pgd_attack.py LinfPGDAttack)"),
        model=("wrn32_10", "dynamic_adv_training models.py L46 WideResNet(depth=5): 2 + 6 * 5 = 32 "
                           "layers, width 10"),
        eps=(0.031, DT + " L205-206 -p 0.031"),
        step_size=(0.031 / 4, DT + " L80 eps_iter=epsilon/4"),
        num_steps=(10, DT + " L81 nb_iter=10"),
        attack_start=("default", "the method's start"),
        _start=("uniform", DT + " L82 random_start=True (pgd_attack.py: x + U(-eps, eps))"),
        attack_bn_mode=("eval", "pgd_attack.py sess.run without the Keras learning phase "
                                "(inference)"),
        fosc_c_max=(0.5, DT + " L205-206 -fm 0.5"),
        fosc_t_prime_fraction=(100 / 120, DT + " L205 -t 100 of -e 120"),
        _t_prime_epochs=(100.0, DT + " L205 -t 100 (dynamic_epoch)"),
        fosc_reference=("natural", DTP + " eq. (3): from x^0 (the paper, default); the code's "
                                   "start is an option"),
        dart_official_reweight=(False, "the paper has no reweighting (default); the code's "
                                       "(L121-127) is an option"),
        num_epochs=(120, DT + " L205 -e 120"),
        learning_rate=(0.01, DT + " L52 lr=0.01"),
        weight_decay=(4e-3, "dynamic_adv_training resnet.py L81 kernel l2(2e-3): 2e-3 * sum w^2 "
                            "is 4e-3 * w in the gradient"),
        lr_schedule=("piecewise", DT + " L97-104 (ep + 1) == 60, == 100: lr / 10"),
        lr_decay_epochs=((59, 99), DT + " L97, L101 (ep + 1) == 60, 100, ep 0-based"),
        lr_decay_factors=((0.1, 0.01), DT + " L99, L103 lr / 10 twice"),
        weight_perturbation=("none", "no weight perturbation"),
        eps_warmup_epochs=(0, "no eps warm-up"),
    ),

    "mnist_dart_cnn4": dict(
        method=("dart", DTP + " (Algorithm 1)"),
        dataset=("mnist", DTP + " (Table 1)"),
        augment=("none", DT + " L62 ImageDataGenerator() for mnist"),
        model=("cnn4", "dynamic_adv_training models.py L27-43 (the 4-layer CNN)"),
        eps=(0.3, "dynamic_adv_training logger.py L10 EPSILONS mnist 0.3"),
        step_size=(0.075, DT + " L80 eps_iter=epsilon/4"),
        num_steps=(10, DT + " L81 nb_iter=10"),
        attack_start=("default", "the method's start"),
        _start=("uniform", DT + " L82 random_start=True"),
        attack_bn_mode=("eval", "pgd_attack.py: Keras inference mode"),
        fosc_c_max=(0.5, DTP + ": c_max = 0.5"),
        fosc_t_prime_fraction=(0.8, DTP + ": T' = 0.8 T (as quoted in seed-methods.md section 1; "
                                    "the code's -t 100 is CIFAR-10's)"),
        _t_prime_epochs=(40.0, DTP + ": 0.8 * 50"),
        fosc_reference=("natural", DTP + " eq. (3)"),
        dart_official_reweight=(False, "the paper has no reweighting"),
        num_epochs=(50, DTP + ": 50 epochs for MNIST"),
        batch_size=(128, DT + " L28 batch_size=128"),
        optimizer=("sgd", DTP + ": SGD with momentum 0.9"),
        momentum=(0.9, DTP + ": momentum 0.9"),
        nesterov=(False, DT + " L52 SGD without nesterov"),
        learning_rate=(0.01, DTP + ": initial learning rate 0.01"),
        weight_decay=(0.0, "ours: the paper's 'weight decay 1e-4' is Keras SGD(decay=1e-4), a "
                           "learning-rate decay (" + DT + " L52); the MNIST model (models.py "
                           "L27-43) has no regulariser (docstring)"),
        lr_schedule=("piecewise", DTP + ": divided by 10 at the 20th and 40th epoch"),
        lr_decay_epochs=((19, 39), DTP + ": the 20th and 40th (1-based) epoch"),
        lr_decay_factors=((0.1, 0.01), DTP + ": divided by 10 twice"),
        weight_perturbation=("none", "no weight perturbation"),
        eps_warmup_epochs=(0, "no eps warm-up"),
    ),

    "mnist_trades_smallcnn": dict(
        method=("trades", TRM + " trades_loss"),
        dataset=("mnist", TRM + " L57 datasets.MNIST"),
        augment=("none", TRM + " L58 transforms.ToTensor() only"),
        model=("small_cnn", TRM + " L147 SmallCNN()"),
        eps=(0.3, TRM + " L28 --epsilon 0.3"),
        step_size=(0.01, TRM + " L32 --step-size 0.01"),
        num_steps=(40, TRM + " L30 --num-steps 40"),
        attack_start=("default", "the method's start"),
        _start=("normal", TRL + " L31 x + 0.001 randn"),
        attack_bn_mode=("eval", TRL + " L28 model.eval()"),
        beta=(1.0, TRM + " L34 --beta 1.0 (the paper's Table 5 uses 6; docstring)"),
        num_epochs=(100, TRM + " L20 --epochs 100"),
        batch_size=(128, TRM + " L16 --batch-size 128"),
        optimizer=("sgd", TRM + " L148 optim.SGD"),
        momentum=(0.9, TRM + " L24 --momentum 0.9"),
        nesterov=(False, TRM + " L148 (no nesterov)"),
        learning_rate=(0.01, TRM + " L22 --lr 0.01"),
        weight_decay=(0.0, TRM + " L148 optim.SGD without weight_decay"),
        lr_schedule=("piecewise", TRM + " L133-140 adjust_learning_rate (1-based, L150)"),
        lr_decay_epochs=((54, 74, 89), TRM + " L135-139 epoch >= 55, 75, 90, 1-based"),
        lr_decay_factors=((0.1, 0.01, 0.001), TRM + " L136-140 lr * 0.1, 0.01, 0.001"),
        weight_perturbation=("none", "no weight perturbation"),
        eps_warmup_epochs=(0, "no eps warm-up"),
    ),

    "digits": dict(
        method=("pgd_at", "ours: the embedded default (digits.py docstring)"),
        dataset=("digits", "ours: scikit-learn's 8x8 digits"),
        augment=("none", "ours"),
        model=("mlp", "ours"),
        eps=(0.2, "ours: 0.3 leaves little to learn at 8x8 (docstring)"),
        step_size=(0.05, "ours: eps / 4"),
        num_steps=(10, "ours: PGD-10"),
        attack_start=("default", "the method's start"),
        _start=("uniform", "Madry et al. 2018: x + U(-eps, eps)"),
        attack_bn_mode=("eval", "the base config's (the MLP has no BatchNorm)"),
        num_epochs=(60, "ours"),
        batch_size=(64, "ours"),
        optimizer=("sgd", "ours"),
        momentum=(0.9, "ours"),
        nesterov=(False, "ours"),
        learning_rate=(0.1, "ours"),
        weight_decay=(5e-4, "ours"),
        lr_schedule=("piecewise", "ours"),
        lr_decay_epochs=((40, 55), "ours"),
        lr_decay_factors=((0.1, 0.01), "ours"),
        fat_tau_boundaries=((20, 40), "ours: FAT.py's (50, 90) of 120 scaled to 60 epochs"),
        fat_tau_values=((0, 1, 2), FA + " L81-85 tau 0, 1, 2"),
        gairat_begin_epoch=(30, "ours: GAIRAT.py's begin_epoch 60 of 120 scaled to 60"),
        weight_perturbation=("none", "ours"),
        eps_warmup_epochs=(0, "ours"),
    ),
}

# The fast-AT ELLE-A row: ELLE's row with the onoff schedule.
TABLE["cifar10_elle_a_preact18"] = _row(
    TABLE["cifar10_elle_preact18"],
    method=("elle_a", ELA + " --lambda_schedule 'onoff'"),
    elle_lambda=(4000.0, ELA + " --lin_reg 4000 (lambda_max)"),
    elle_a_sensitivity=(2.0, ELP + " L77 --sensitivity 2"),
    elle_a_decay=(0.99, ELP + " L76 --decay_rate 0.99"),
)
del TABLE["cifar10_elle_a_preact18"]["_elle_lambda"]

# Fields every row must hold, and those its method (or weight perturbation) adds.
COMMON = ("method", "dataset", "model", "augment", "eps", "step_size", "num_steps", "attack_start",
          "_start", "attack_bn_mode", "num_epochs", "batch_size", "optimizer", "learning_rate",
          "momentum", "nesterov", "weight_decay", "lr_schedule", "lr_decay_epochs",
          "lr_decay_factors", "weight_perturbation", "eps_warmup_epochs")
BY_METHOD = {
    "trades": ("beta",), "mart": ("beta",),
    "fat_trades": ("beta", "fat_tau_boundaries", "fat_tau_values"),
    "fat_mart": ("beta", "fat_tau_boundaries", "fat_tau_values"),
    "fat": ("fat_tau_boundaries", "fat_tau_values"),
    "gairat": ("gairat_lambda", "gairat_begin_epoch"),
    "gair_fat": ("fat_tau_boundaries", "fat_tau_values", "gairat_lambda", "gairat_begin_epoch"),
    "dart": ("fosc_c_max", "fosc_t_prime_fraction", "_t_prime_epochs", "fosc_reference",
             "dart_official_reweight"),
    "fgsm_at": ("fgsm_step_factor", "lr_peak_fraction", "co_guard"),
    "gradalign": ("fgsm_step_factor", "lr_peak_fraction", "co_guard", "gradalign_lambda",
                  "_gradalign_lambda", "gradalign_detach_first"),
    "elle": ("fgsm_step_factor", "lr_peak_fraction", "co_guard", "elle_lambda", "_elle_lambda"),
    "elle_a": ("fgsm_step_factor", "lr_peak_fraction", "co_guard", "elle_lambda",
               "elle_a_sensitivity", "elle_a_decay"),
    "cat": ("cat_step_factor", "cat_steps_boundaries", "cat_steps_values", "validation_fraction"),
}
BY_WEIGHT_PERTURBATION = {"awp": ("awp_gamma", "awp_warmup")}
PERIODIC = ("periodic_eps", "periodic_eps_max", "periodic_bounds", "attack_step_follows_eps")


# ---- The official per-epoch schedules, as functions of the 0-based epoch e. ----

def _steps(base, e1, pairs, chained=False):
  """``lr = base; if e1 >= k: lr = base * f`` for each (k, f) (an if chain, the last match wins);
  ``chained=True`` is an if/elif chain from the largest k (MART)."""
  lr = base
  for k, f in (sorted(pairs, reverse=True) if chained else pairs):
    if e1 >= k:
      lr = base * f
      if chained:
        break
  return lr


def _gairat_lr(e, epochs=120, lr_max=0.1):
  """GAIRAT.py L76-86 ``lr_schedule(epoch + 1)`` for >= 110 epochs."""
  t = e + 1
  if t / epochs < 0.5:
    return lr_max
  if t / epochs < 0.75:
    return lr_max / 10.0
  if t / epochs < 11 / 12:
    return lr_max / 100.0
  return lr_max / 200.0


def _robust_overfitting_lr(e, n_iter=390, epochs=200, lr_max=0.1):
  """AT_AWP/train_cifar10.py L261-267 at the first iteration of epoch e: lr_schedule(e + 1 / n)."""
  t = e + 1 / n_iter
  if t / epochs < 0.5:
    return lr_max
  if t / epochs < 0.75:
    return lr_max / 10.0
  return lr_max / 100.0


def _dat_lr(e):
  """train_models.py L97-104: lr / 10 when (ep + 1) == 60 and == 100 (the Keras per-iteration
  decay=1e-4 left out, docstring)."""
  lr = 0.01
  for ep in range(e + 1):
    if ep + 1 in (60, 100):
      lr /= 10.0
  return lr


OFFICIAL_SCHEDULES = {
    "cifar10_trades_wrn34": dict(
        lr=lambda e: _steps(0.1, e + 1, [(75, 0.1), (90, 0.01), (100, 0.001)])),
    "cifar10_mart_wrn34": dict(
        lr=lambda e: _steps(0.1, e + 1, [(75, 0.1), (90, 0.01), (100, 0.001)], chained=True)),
    "cifar10_trades_awp_wrn34": dict(
        lr=lambda e: _steps(0.1, e + 1, [(100, 0.1), (150, 0.01)]),
        awp_on=lambda e: e + 1 >= 10),
    "mnist_trades_smallcnn": dict(
        lr=lambda e: _steps(0.01, e + 1, [(55, 0.1), (75, 0.01), (90, 0.001)])),
    "cifar10_fat_wrn32": dict(
        lr=lambda e: _steps(0.1, e + 1, [(60, 0.1), (90, 0.01), (110, 0.005)]),
        tau=lambda e: 0 if e + 1 <= 50 else 1 if e + 1 <= 90 else 2),
    "cifar10_fat_trades_wrn34": dict(
        lr=lambda e: _steps(0.1, e + 1, [(75, 0.1), (90, 0.01)]),
        tau=lambda e: 0 if e + 1 <= 30 else 1 if e + 1 <= 50 else 2 if e + 1 <= 70 else 3),
    "cifar10_fat_mart_wrn34": dict(
        lr=lambda e: _steps(0.1, e + 1, [(60, 0.1), (90, 0.01)]),
        tau=lambda e: [0, 1, 2, 3, 4][sum(e + 1 > b for b in (20, 40, 60, 80))]),
    "cifar10_gairat_wrn32": dict(
        lr=_gairat_lr,
        # adjust_Lambda(epoch + 1) 'fixed' (L177-179) and (epoch + 1) >= begin_epoch (L141).
        gairat_lambda=lambda e: -1.0 if e + 1 >= 60 else INF),
    "cifar10_gair_fat_wrn32": dict(
        lr=_gairat_lr,
        tau=lambda e: 0 if e + 1 <= 40 else 3 if e + 1 <= 70 else 6,
        gairat_lambda=lambda e: 0.0 if e + 1 >= 60 else INF),
    "cifar10_pgd_at_preact18": dict(lr=_robust_overfitting_lr),
    "cifar10_awp_at_preact18": dict(lr=_robust_overfitting_lr, awp_on=lambda e: e >= 0),
    "cifar10_dart_wrn32": dict(
        lr=_dat_lr,
        # train_models.py L107-108: fosc = max(fosc_max - fosc_max * ep / dynamic_epoch, 0).
        fosc_c=lambda e: max(0.5 - 0.5 * e / 100.0, 0.0)),
    "mnist_dart_cnn4": dict(
        lr=lambda e: 0.01 * (0.1 if e + 1 >= 20 else 1.0) * (0.1 if e + 1 >= 40 else 1.0),
        fosc_c=lambda e: max(0.5 - 0.5 * e / 40.0, 0.0)),
    "cifar10_cat_resnet18": dict(lr=lambda e: 1e-4),
}


# ---- Helpers. ----

def _recipes():
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in NOT_IN_TABLE)


def _config(name):
  return importlib.import_module(f"launch.configs.{name}").get_config()


def _derived(name, c, field):
  if field == "_start":
    return methods.get_method(c.method).start if c.attack_start == "default" else c.attack_start
  if field == "_gradalign_lambda":
    return float(regularizers.gradalign_lambda_fn(c.eps))
  if field == "_elle_lambda":
    return float(regularizers.elle_lambda_fn(c.eps))
  if field == "_t_prime_epochs":
    return c.fosc_t_prime_fraction * c.num_epochs
  raise KeyError(f"{name}: unknown derived field {field}")


def _same(got, want):
  if isinstance(want, tuple):
    return isinstance(got, (tuple, list)) and len(got) == len(want) and all(
        _same(g, w) for g, w in zip(got, want))
  if isinstance(want, float):
    return isinstance(got, (int, float)) and got == pytest.approx(want, rel=1e-6, abs=1e-12)
  return type(got) is type(want) and got == want


# ---- Tests. ----

def test_every_recipe_has_a_row():
  assert sorted(TABLE) == _recipes()


@pytest.mark.parametrize("name", sorted(TABLE))
def test_row_is_complete_and_cited(name):
  row = TABLE[name]
  c = _config(name)
  need = set(COMMON) | set(BY_METHOD.get(c.method, ()))
  need |= set(BY_WEIGHT_PERTURBATION.get(c.weight_perturbation, ()))
  if c.periodic_eps:
    need |= set(PERIODIC)
  missing = sorted(need - set(row))
  assert not missing, f"{name}: the table lacks {missing}"
  for field, entry in row.items():
    assert isinstance(entry, tuple) and len(entry) == 2, (name, field)
    assert isinstance(entry[1], str) and len(entry[1]) >= 4, f"{name}.{field}: no source"
    if not field.startswith("_"):
      assert field in c, f"{name}: {field} is not a config field"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_recipe_matches_table(name):
  c = _config(name)
  wrong = []
  for field, (want, source) in TABLE[name].items():
    got = _derived(name, c, field) if field.startswith("_") else c[field]
    if not _same(got, want):
      wrong.append(f"{field}: recipe {got!r}, table {want!r} ({source})")
  assert not wrong, f"{name}:\n  " + "\n  ".join(wrong)


def _library_schedule(c, kind, epochs, steps_per_epoch=390):
  if kind == "lr":
    fn = schedules.learning_rate(
        kind=c.lr_schedule, base_lr=c.learning_rate, num_epochs=c.num_epochs,
        steps_per_epoch=steps_per_epoch, decay_epochs=tuple(c.lr_decay_epochs),
        decay_factors=tuple(c.lr_decay_factors), peak_epoch_fraction=c.lr_peak_fraction,
        restart_epochs=tuple(c.periodic_bounds[1:-1]) if c.periodic_bounds else ())
    return np.asarray(jax.vmap(fn)(jnp.asarray(epochs * steps_per_epoch)))
  if kind == "tau":
    return np.asarray(jax.vmap(lambda e: schedules.piecewise_by_epoch(
        e, boundaries=tuple(c.fat_tau_boundaries), values=tuple(c.fat_tau_values),
        dtype=jnp.int32))(jnp.asarray(epochs)))
  if kind == "fosc_c":
    return np.asarray(schedules.dynamic_c(jnp.asarray(epochs, jnp.float32), c_max=c.fosc_c_max,
                                          t_prime=c.fosc_t_prime_fraction * c.num_epochs))
  if kind == "gairat_lambda":  # robust_jax.weighting.gairat
    return np.where(epochs >= c.gairat_begin_epoch, c.gairat_lambda, INF)
  if kind == "awp_on":  # robust_jax.weight_adversaries: info.epoch >= awp_warmup
    return epochs >= c.awp_warmup
  raise KeyError(kind)


@pytest.mark.parametrize("name", sorted(OFFICIAL_SCHEDULES))
def test_schedules_match_the_official_functions(name):
  c = _config(name)
  epochs = np.arange(c.num_epochs)
  for kind, official in OFFICIAL_SCHEDULES[name].items():
    got = _library_schedule(c, kind, epochs)
    want = np.asarray([official(int(e)) for e in epochs])
    if want.dtype == bool or kind == "tau":
      np.testing.assert_array_equal(got, want, err_msg=f"{name}: {kind}")
    else:  # float32 in the library: c_t to float32 rounding of values <= 0.5
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 if kind == "fosc_c" else 1e-9,
                                 err_msg=f"{name}: {kind}")


@pytest.mark.parametrize("name,up_fraction", [
    ("cifar10_fgsm_at_preact18", 0.5),   # train_fgsm.py L87-88 CyclicLR, up = down = total / 2
    ("cifar10_elle_preact18", 0.5),      # ELLE core/utils/train.py L124-125, the same
    ("cifar10_elle_a_preact18", 0.5),
    ("cifar10_gradalign_preact18", 0.4),  # utils.py L335 np.interp(t, [0, 12, 30], [0, lr, 0])
])
def test_cyclic_schedules_match_the_official_per_iteration_ones(name, up_fraction):
  # Per iteration: lr(s) = lr_max * s / up until the peak, then linearly to 0 at the end. The
  # official schedules read lr at iteration s or s + 1 (GradAlign: t = (i + 1) / n); the library's
  # is the same line, so they agree to one iteration's increment.
  c = _config(name)
  spe = 97  # any steps per epoch
  total = c.num_epochs * spe
  up = up_fraction * total
  s = np.arange(total)
  want = np.where(s <= up, c.learning_rate * s / up, c.learning_rate * (total - s) / (total - up))
  fn = schedules.learning_rate(kind=c.lr_schedule, base_lr=c.learning_rate,
                               num_epochs=c.num_epochs, steps_per_epoch=spe,
                               peak_epoch_fraction=c.lr_peak_fraction)
  got = np.asarray(jax.vmap(fn)(jnp.asarray(s)))
  np.testing.assert_allclose(got, want, rtol=0, atol=1.01 * c.learning_rate / up)
