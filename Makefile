# Set-up and everyday commands. `make test` and `make sample` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed on its own, first: the CPU wheel 2.13.0 on machines without a GPU.
# On a CUDA machine use e.g. `make venv TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: venv test test-fast sample sample-tasks train-tiny clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

# The main job (Ray Data, embedded local Ray) on the bundled sample manifest with the tiny random model.
sample: venv
	$(BIN)/m3ddm-ray outpaint --config configs/tiny-cpu.yaml --manifest tests/data/sample_manifest.jsonl --output outputs/sample

# The same job on a manifest mixing the three tasks: outpaint, inpaint (a logo mask), extend (docs/tasks.md).
sample-tasks: venv
	$(BIN)/m3ddm-ray outpaint --config configs/tiny-cpu.yaml --manifest tests/data/tasks_manifest.jsonl --output outputs/sample-tasks

# Reproduce the small trained UNet of tests/data/trained (~50 min on a 2-core CPU to itself; docs/training.md).
train-tiny: venv
	$(BIN)/m3ddm-ray train --config configs/train-tiny-cpu.yaml --data tests/data/train_tiny.jsonl --output outputs/train-tiny

clean:
	rm -rf $(VENV) outputs .pytest_cache
