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

# Smith et al. 2018, "Don't Decay the Learning Rate, Increase the Batch Size": every preset of
# conf/experiment/smith18/ over several seeds, then the figures and table.md. PROFILE=full: the
# paper's scale on one GPU, runs/smith18/ -> results/smith18/. PROFILE=quick: the same schedules
# scaled down by conf/profile/smith18_quick.yaml (the one place that says how) for 2 CPU cores,
# under 45 minutes, runs/smith18-quick/ -> results/smith18-quick/. Restartable: a run whose
# summary.json says completed or diverged is kept, one with a checkpoint is resumed, any other
# is started afresh; each run logs to runs/<profile>/<preset>/seed<k>.log.
PROFILE ?= full
SMITH18_PRESETS := $(sort $(basename $(notdir $(filter-out %/_base.yaml,\
	$(wildcard conf/experiment/smith18/*.yaml)))))
ifeq ($(PROFILE),quick)
SMITH18_NAME := smith18-quick
SMITH18_ARGS := profile=smith18_quick
# Longest first; two single-threaded runs at a time use both cores best.
SMITH18_RUNS := $(foreach s,0 1,momentum_decay_lr:$(s)) \
	$(foreach p,momentum_hybrid momentum_increase_batch,$(foreach s,0 1,$(p):$(s))) \
	fig5_increase_batch:0 fig5_increased_lr:0 fig5_increased_momentum:0
SMITH18_JOBS := 2
SMITH18_THREADS := 1
else
SMITH18_NAME := smith18
SMITH18_ARGS :=
SMITH18_RUNS := $(foreach p,$(SMITH18_PRESETS),$(foreach s,0 1 2,$(p):$(s)))
SMITH18_JOBS := 1
SMITH18_THREADS :=
endif

# One line per run for scripts/run_experiments.py: "<run dir> <overrides>".
# $(call smith18_line,<preset>:<seed>)
smith18_line = "runs/$(SMITH18_NAME)/$(word 1,$(subst :, ,$(1)))/seed$(word 2,$(subst :, ,$(1))) \
	+experiment=smith18/$(word 1,$(subst :, ,$(1))) $(SMITH18_ARGS) seed=$(word 2,$(subst :, ,$(1)))"
RUNNER = $(PY) scripts/run_experiments.py --jobs $(1) $(if $(2),--threads $(2))

.PHONY: reproduce-smith18
reproduce-smith18: install
	@case "$(PROFILE)" in full|quick) ;; *) echo "PROFILE=$(PROFILE): use full or quick"; exit 2;; esac
	@printf '%s\n' $(foreach r,$(SMITH18_RUNS),$(call smith18_line,$(r))) \
		| $(call RUNNER,$(SMITH18_JOBS),$(SMITH18_THREADS))
	$(PY) scripts/smith18_report.py runs/$(SMITH18_NAME) --out results/$(SMITH18_NAME)


# Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond" (RAdam): the
# presets of conf/experiment/radam/ over the lr grid and seeds, then the figures and table.md.
# PROFILE=full: the paper's CIFAR-10 scale on one GPU (SGD, Adam, RAdam and Adam with warmup
# W = 100/200/500/1000 at every lr, Adam-2k and Adam-eps at lr 0.1; 3 seeds), runs/radam/ ->
# results/radam/. PROFILE=quick: conf/profile/radam_quick.yaml on 2 CPU cores (Adam and RAdam
# over the grid with 2 seeds; SGD, Adam with warmup, Adam-2k, Adam-eps at lr 0.1 with 1 seed),
# runs/radam-quick/ -> results/radam-quick/, 42 min on 2 CPU cores (measured). Restartable.
RADAM_GRID := 0.1 0.03 0.01 0.003
ifeq ($(PROFILE),quick)
RADAM_NAME := radam-quick
RADAM_ARGS := profile=radam_quick
RADAM_RUNS := $(foreach p,adam radam,$(foreach l,$(RADAM_GRID),$(foreach s,0 1,$(p):$(l):$(s)))) \
	$(foreach p,sgd adam_warmup adam_2k adam_eps,$(p):0.1:0)
RADAM_JOBS := 2
RADAM_THREADS := 1
else
RADAM_NAME := radam
RADAM_ARGS :=
RADAM_SEEDS := 0 1 2
RADAM_RUNS := $(foreach p,sgd adam radam,$(foreach l,$(RADAM_GRID),$(foreach s,$(RADAM_SEEDS),$(p):$(l):$(s)))) \
	$(foreach w,100 200 500 1000,$(foreach l,$(RADAM_GRID),$(foreach s,$(RADAM_SEEDS),adam_warmup:$(l):$(s):$(w)))) \
	$(foreach p,adam_2k adam_eps,$(foreach s,$(RADAM_SEEDS),$(p):0.1:$(s)))
RADAM_JOBS := 1
RADAM_THREADS :=
endif

# $(call radam_line,<preset>:<lr>:<seed>[:<warmup steps>])
radam_field = $(word $(2),$(subst :, ,$(1)))
radam_line = "runs/$(RADAM_NAME)/$(call radam_field,$(1),1)$(if $(call radam_field,$(1),4),_w$(call radam_field,$(1),4))/lr$(call radam_field,$(1),2)/seed$(call radam_field,$(1),3) \
	+experiment=radam/$(call radam_field,$(1),1) $(RADAM_ARGS) optimizer.lr=$(call radam_field,$(1),2) \
	seed=$(call radam_field,$(1),3)$(if $(call radam_field,$(1),4), schedule.warmup_steps=$(call radam_field,$(1),4))"

.PHONY: reproduce-radam
reproduce-radam: install
	@case "$(PROFILE)" in full|quick) ;; *) echo "PROFILE=$(PROFILE): use full or quick"; exit 2;; esac
	@printf '%s\n' $(foreach r,$(RADAM_RUNS),$(call radam_line,$(r))) \
		| $(call RUNNER,$(RADAM_JOBS),$(RADAM_THREADS))
	$(PY) scripts/radam_report.py runs/$(RADAM_NAME) --out results/$(RADAM_NAME)

clean:
	rm -rf $(VENV) results/demo runs outputs multirun
