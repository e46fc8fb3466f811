# The two commands of the README: `make demo` (closed-loop demo) and `make test` (the suite).
# Both install what they need first (scripts/setup.sh, a no-op when already done).
export MUJOCO_GL ?= egl
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test bench
setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/spec-edge-cloud demo $(ARGS)

# The test set-up adds the ROS 2 launch wheels of ../shared/wheels where they exist (never setup.sh).
test: setup
	./scripts/launch-wheels.sh
	.venv/bin/python -m pytest -q tests $(ARGS)
