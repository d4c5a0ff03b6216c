#!/usr/bin/env bash
# One entry point for the README's two commands. Idempotent: creates .venv on first use and
# re-installs only when requirements.txt or setup.cfg change.
#   bash run.sh demo   # train PGD-AT on the embedded digits, then evaluate it (a few minutes, CPU)
#   bash run.sh test   # the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.installed-$(cat requirements.txt setup.cfg | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q -U pip
  "$VENV/bin/pip" install -q -r requirements.txt -e ".[dev]"
  rm -f "$VENV"/.installed-*; touch "$STAMP"
fi
export PATH="$PWD/$VENV/bin:$PATH"
cmd=${1:-demo}; shift || true
case "$cmd" in
  demo)
    WORKDIR=${WORKDIR:-runs/digits_pgd_at}
    python -m launch.train --config=launch/configs/digits.py --workdir="$WORKDIR" "$@"
    python -m launch.eval --workdir="$WORKDIR"
    ;;
  test)
    # Two passes (tests/conftest.py): the suite under XLA:CPU's optimisation level 0, then the tests
    # marked xla_default under the default level (exit status 5: the arguments selected none).
    # Extra arguments go to pytest; without a path among them it collects tests/ (setup.cfg).
    python -m pytest -n 2 "$@"
    echo "== the tests marked xla_default, under XLA's default optimisation level"
    ROBUST_JAX_TEST_XLA_OPT=default python -m pytest -n 2 -m xla_default "$@" || [ $? -eq 5 ]
    ;;
  *) echo "usage: bash run.sh [demo|test] [extra args]" >&2; exit 2 ;;
esac
