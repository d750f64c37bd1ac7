# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY   := $(VENV)/bin/python
OUT  ?= runs/demo

.PHONY: demo test install clean

# The venv is (re)built when pyproject.toml changes. With no NVIDIA GPU, torch's CPU build goes in first so
# that pip does not pull a multi-GB CUDA build as a dependency.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	command -v nvidia-smi >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The main job on its embedded offline default: tokenizer + pretrain -> SFT -> GRPO (recipes/demo), each stage
# evaluated on the same 500 held-out problems; $(OUT)/results.json, $(OUT)/report.md, a table
# (2-core CPU, fp32: ~15 minutes measured, ~20 estimated on a 1.4x slower day; docs/pipeline.md).
# SEED=N reruns every stage with another seed; PRACTICE=rft (expert iteration), grpo, or rft,grpo picks the practice.
# TOOLS=1: the calculator demo (recipes/demo_tools, into runs/demo_tools; ~17.5 minutes measured): SFT teaches the
# calls, practice makes them.
DEMO_RECIPES := $(if $(TOOLS),--recipes recipes/demo_tools,)
DEMO_OUT := $(if $(TOOLS),$(if $(filter runs/demo,$(OUT)),runs/demo_tools,$(OUT)),$(OUT))
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m thinktrain pipeline --out $(DEMO_OUT) $(DEMO_RECIPES) $(if $(SEED),--seed $(SEED)) $(if $(PRACTICE),--practice $(PRACTICE))

# The whole suite, slow and real-data/real-model tests included (CI runs this).
test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) runs/tiny
