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

# Training speed, as ratios measured within one run (README, Benchmark): fp32 against
# channels_last / bf16 / both per model, the trainer against a bare loop, the on-device data
# path against a DataLoader. A few minutes on 2 CPU cores. More: BENCH_ARGS="--threads 1
# --variants fp32,bf16+cl,compile,compile+bf16+cl --out bench.json" (python -m trainrepro.bench -h).
BENCH_ARGS ?=
bench: install
	$(PY) -m trainrepro.bench $(BENCH_ARGS)

lint: install
	$(PY) -m ruff check trainrepro scripts tests

# Paper reproductions: `make reproduce-<paper> [PROFILE=quick]` runs `trainrepro reproduce <paper>
# --profile $(PROFILE)`: the paper's runs as declared in trainrepro/reproduce/papers/<paper>.py
# (presets of conf/experiment/<paper>/, seeds, and the jobs/threads each profile uses), through
# the restartable runner (a run whose summary.json says completed or diverged is kept, one with
# a checkpoint is resumed, any other is started afresh; each logs to runs/<name>/<run>.log),
# then results/<paper>[-quick]/REPORT.md and results/README.md. PROFILE=full: the paper's scale
# on one GPU, runs/<paper>/ -> results/<paper>/; PROFILE=quick: conf/profile/<paper>_quick.yaml
# on 2 CPU cores, runs/<paper>-quick/ -> results/<paper>-quick/. JOBS=n / THREADS=n override
# the profile's; OVERRIDES="key=value ..." are added to every run (precision=fp32 on a CPU
# without bf16 units); `trainrepro reproduce <paper> --profile quick --dry-run` lists the runs.
PROFILE ?= full
PAPERS := $(notdir $(wildcard conf/experiment/*))
REPRODUCE := $(addprefix reproduce-,$(PAPERS))

.PHONY: $(REPRODUCE)
$(REPRODUCE): reproduce-%: install
	@case "$(PROFILE)" in full|quick) ;; *) echo "PROFILE=$(PROFILE): use full or quick"; exit 2;; esac
	$(PY) -m trainrepro reproduce $* --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS) )$(if $(THREADS),--threads $(THREADS)) $(OVERRIDES)

clean:
	rm -rf $(VENV) results/demo runs outputs multirun
