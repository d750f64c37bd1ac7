# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY   := $(VENV)/bin/python
OUT  ?= runs/demo

.PHONY: demo test test-fast install lock clean

# The set-up installs the lock (requirements/), the exact versions CI tested, transitive ones included; pyproject.toml
# keeps ranges for users who `pip install` the package. requirements/cpu.txt (universal): torch's CPU build is what
# pip finds first for `torch==2.13.0` on these machines, PyPI's build elsewhere. requirements/gpu.txt (adds vLLM) only
# where nvidia-smi exists and Python is CPython 3.11 on x86-64, the one target it is resolved for. pip, not uv,
# installs: pip reads this machine's configuration (where its CPU torch wheel lies). The lock used is written into .venv/.installed (tests/test_lock.py).
GPU_LOCK_FITS := $(shell command -v nvidia-smi >/dev/null 2>&1 && python3 -c 'import platform, sys; \
	sys.exit(not (sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64"))' 2>/dev/null && echo yes)
LOCK ?= $(if $(GPU_LOCK_FITS),requirements/gpu.txt,requirements/cpu.txt)
PIP_VERSION := 26.3
UV_VERSION  := 0.13.9

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	echo $(LOCK) > $@

install: $(VENV)/.installed

# The main job on its embedded offline default: tokenizer + pretrain -> SFT on 500 worked solutions (to its best on
# validation) -> expert iteration on exercises with only an answer key (recipes/demo), each stage evaluated on the
# same 500 held-out problems; $(OUT)/results.json, $(OUT)/report.md, a table (2-core AVX-512 EPYC, fp32: 17.5-18.5 minutes on 3 seeds;
# docs/pipeline.md). SEED=N reruns every stage with another seed; PRACTICE=grpo, rft (the default) or rft,grpo
# picks the practice.
# TOOLS=1: the calculator demo (recipes/demo_tools, into runs/demo_tools, GRPO unless PRACTICE says; ~17.5 minutes
# measured when the world had 8,000 worked solutions): SFT teaches the calls, practice makes them.
DEMO_RECIPES := $(if $(TOOLS),--recipes recipes/demo_tools,)
DEMO_OUT := $(if $(TOOLS),$(if $(filter runs/demo,$(OUT)),runs/demo_tools,$(OUT)),$(OUT))
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m thinktrain pipeline --out $(DEMO_OUT) $(DEMO_RECIPES) $(if $(SEED),--seed $(SEED)) $(if $(PRACTICE),--practice $(PRACTICE),$(if $(TOOLS),--practice grpo))

# The whole suite, slow and real-data/real-model tests included (CI runs this).
test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The inner loop while developing: unit tests and the quick integration ones (not `slow`): ~760 tests in about a minute.
test-fast: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

# Re-resolve the locks after a change to pyproject.toml, keeping every pin that still fits; UPGRADE=1 moves every
# package to its newest release within pyproject's ranges. Then `make test` (a fresh venv: rm -r .venv first).
# The CPU lock is resolved against torch's CPU build (requirements/constraints-cpu.in), which the resolver must see:
# pip's find-links on these machines; elsewhere LOCK_ARGS="--extra-index-url <PyTorch's CPU wheel index>".
UV := $(VENV)/bin/uv
LOCK_FLAGS = $(if $(UPGRADE),--upgrade) $(LOCK_ARGS) --quiet --custom-compile-command "make lock"
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(UV) pip compile pyproject.toml --extra dev --universal -c requirements/constraints-cpu.in $(LOCK_FLAGS) \
		$(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)) -o requirements/cpu.txt
	sed -i 's/^torch==\([0-9.]*\)+cpu/torch==\1/' requirements/cpu.txt
	! grep -q '^nvidia-' requirements/cpu.txt || { echo "lock: requirements/cpu.txt pulled CUDA libraries: the resolver did not see torch's CPU build" >&2; exit 1; }
	$(UV) pip compile pyproject.toml --extra dev --extra vllm --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 -c requirements/constraints-gpu.in $(LOCK_FLAGS) -o requirements/gpu.txt

clean:
	rm -rf $(OUT) runs/tiny
