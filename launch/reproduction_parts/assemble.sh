#!/bin/bash
# Rebuilds the root REPRODUCTION.md from its parts:
#   runs/reproduce_mnist5k/REPRODUCTION.md   python -m launch.reproduce --suite=mnist5k ... [--finished_only]
#   mnist5k_reading.md, co_reading.md,       hand-written from the generated numbers (this folder)
#   new_systems.md
#   gans.md                                  python -m launch.reproduce_gans --out=runs/gans: when
#                                            runs/gans/gans.md exists, gans.md is rewritten from it
#                                            (copy its images to reproduction/gans/ too)
#   digits.md                                python -m launch.reproduce (the 2026-11-23 run)
set -euo pipefail
cd "$(dirname "$0")/../.."
P=launch/reproduction_parts
if [ ! -f runs/reproduce_mnist5k/REPRODUCTION.md ]; then
  echo "assemble.sh: runs/reproduce_mnist5k/REPRODUCTION.md is missing; render it from the archive first:" >&2
  echo "  python -m launch.reproduce --suite=mnist5k --out=runs/reproduce_mnist5k --archive=reproduction/mnist5k --report_only" >&2
  exit 1
fi
if [ -f runs/gans/gans.md ]; then
  sed -e 's#(curves.png)#(reproduction/gans/curves.png)#' \
      -e 's#(\([a-z_]*\)/samples/\(step_[0-9]*\.png\))#(reproduction/gans/\1_\2)#g' \
      runs/gans/gans.md > $P/gans.md
fi
{
  echo "<!-- Generated parts: MNIST-5k (python -m launch.reproduce --suite=mnist5k --out=runs/reproduce_mnist5k --archive=reproduction/mnist5k --seeds=0,1,2, re-rendered with --report_only), GANs (python -m launch.reproduce_gans --out=runs/gans; images copied to reproduction/gans/), digits (python -m launch.reproduce). The new-systems table is transcribed from its JSON. Rebuilt by launch/reproduction_parts/assemble.sh. -->"
  echo
  echo "Contents: [MNIST-5k (28x28)](#reproducing-the-seeds-claims-on-real-28x28-images-mnist-5k) · [GANs](#gans-lecture-003-vanilla-wgan-wgan-gp-sn-gan) · [the other systems on the digits](#the-seeds-other-systems-measured-on-the-digits) · [digits (8x8)](#reproducing-the-seeds-claims-at-small-scale-digits-8x8)"
  echo
  cat runs/reproduce_mnist5k/REPRODUCTION.md
  echo
  cat $P/mnist5k_reading.md
  echo
  cat $P/co_reading.md
  echo; echo "---"; echo
  cat $P/gans.md
  echo; echo "---"; echo
  cat $P/new_systems.md
  echo; echo "---"; echo
  cat $P/digits.md
} > REPRODUCTION.md
