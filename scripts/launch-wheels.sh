#!/usr/bin/env bash
# Test set-up (`make test` runs it): install the ROS 2 launch wheels (launch, launch_ros, launch_pytest,
# launch_testing, ...; not on the package registries) from ../shared/wheels into .venv, with their registry
# dependencies pinned in requirements/launch.txt, so tests/test_ros_launch_*.py run the real launch files.
# Where the folder is absent (a fresh clone alone) it does nothing and those tests skip, saying why.
# LAUNCH_WHEELS=DIR names another folder. Safe to re-run: a stamp skips an unchanged install.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${LAUNCH_WHEELS:-../shared/wheels}
if ! compgen -G "$wheels/launch-*.whl" >/dev/null; then
  echo "[launch-wheels] no launch wheels in $wheels: the real-launch tests will skip"
  exit 0
fi
stamp=.venv/.launch-wheels
want=$( (cat requirements/launch.txt; sha256sum "$wheels"/*.whl) | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[launch-wheels] installing the launch wheels of $wheels into .venv"
.venv/bin/python -m pip install --quiet -r requirements/launch.txt
.venv/bin/python -m pip install --quiet --no-deps "$wheels"/*.whl
echo "$want" > "$stamp"
