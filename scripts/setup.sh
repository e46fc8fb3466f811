#!/usr/bin/env bash
# Create .venv and install every pinned dependency (requirements/) plus this package, from scratch.
# Safe to re-run: it does nothing when the installed pins already match (stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed
want=$(cat requirements/*.txt setup.py setup.cfg | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating .venv and installing pinned dependencies (a few minutes on a fresh machine)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip==25.3"
.venv/bin/python -m pip install --quiet -r requirements/main.txt
.venv/bin/python -m pip install --quiet --no-deps -r requirements/no-deps.txt
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
# ros2_ws/src/spec_edge_cloud -> repository root, made here (ignored by git) so tree walkers never loop.
mkdir -p ros2_ws/src
[ -L ros2_ws/src/spec_edge_cloud ] || ln -s ../.. ros2_ws/src/spec_edge_cloud
echo "$want" > "$stamp"
echo "[setup] done"
