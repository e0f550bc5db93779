# trainrepro — `make install`, then `make demo` / `make test` / `make bench`.
# Every target depends on the install, so on a fresh machine `make demo` does the whole set-up.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# Real data for tests, benchmarks and quick reproductions: ../shared/data when it exists,
# unless TRAINREPRO_DATA is already set.
ifneq ($(wildcard ../shared/data),)
export TRAINREPRO_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install test demo bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

test: install
	$(PY) -m pytest -q

# About a minute on 2 CPU cores: LeNet-5 on the built-in synthetic shapes (noisy enough that
# the curve does not saturate in the first epoch).
demo: install
	rm -rf results/demo
	$(PY) -m trainrepro model=lenet5 dataset=synthetic dataset.noise=0.7 normalization=bn \
		optimizer=sgd optimizer.lr=0.05 schedule=cosine epochs=20 batch_size=64 device=cpu \
		hydra.run.dir=results/demo/run
	$(PY) scripts/plot_curves.py results/demo/run --out results/demo/curves \
		--title "LeNet-5 on synthetic shapes (make demo)"

# Throughput of the on-device data path against a torchvision DataLoader pipeline.
bench: install
	$(PY) -m trainrepro.bench

lint: install
	$(PY) -m ruff check trainrepro scripts tests

clean:
	rm -rf $(VENV) results/demo runs outputs multirun
