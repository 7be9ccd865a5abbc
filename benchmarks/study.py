"""Multi-seed studies of the trustworthy-FL agenda: run a grid of settings x seeds, then tables with CIs.

    python benchmarks/study.py run sampling --results results/sampling --jobs 2
    python benchmarks/study.py table sampling --results results/sampling

Studies (``STUDIES``):

* ``lm`` - next-word prediction on the quick preset: centralized, FedAvg IID, FedAvg natural;
* ``sampling`` - uniform vs activity client sampling x static vs continual setting on the lm
  task with natural clients (House of Commons speakers, ~590 clients), the shape of the
  device-selection study of Dupuy et al. (ICASSP 2022, "Learnings from federated learning in
  the real world");
* ``sampling_tc`` - the same grid on text classification (healthtweets, natural: 16 agencies);
* ``canary_tc`` / ``canary_lm`` - canary extraction by model inversion for repetition counts
  1, 4, 16 and, at 16, with user-level DP, sample-level DP and dropout 0.3;
* ``fairness_tc`` / ``fairness_lm`` - counterfactual data augmentation off and on;
* ``fairness_tc_cue`` - the same on a copy of BBC News whose training labels correlate with gender
  by construction (:func:`gender_cue_data`): a controlled check that CDA removes a bias that
  is there, which BBC's topic labels, with almost no gender signal, cannot show.

Every run is ``fednlp-bench run`` in a subprocess (``--set threads=1``, ``--jobs`` at a time),
its record in ``<results>/<setting>/seed<k>/``; a setting/seed that already has a record is
skipped, so an interrupted study resumes. Tables are read from the records only: mean and
95% t-interval over seeds per setting, and for the pairs in ``Study.pairs`` the per-seed
difference (same seed = same data, partition and cohort RNG), mean and 95% t-interval.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

BIN = Path(sys.executable).parent / "fednlp-bench"
Metric = Callable[[dict], float | None]


def _get(path: str) -> Metric:
    """A metric read from a record by a dotted path (``metrics.final.accuracy``)."""
    def read(rec: dict) -> float | None:
        node: Any = rec
        for part in path.split("."):
            if not isinstance(node, dict) or node.get(part) is None:
                return None
            node = node[part]
        return float(node) if isinstance(node, (int, float)) else None

    return read


@dataclass(frozen=True)
class Study:
    base: list[str]
    settings: dict[str, list[str]]
    metrics: dict[str, str]
    seeds: tuple[int, ...] = (0, 1, 2)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    data: Callable[[Path], list[str]] | None = None  # writes the study's data under results, returns run options


# The gender cue of fairness_tc_cue: a sentence put before every article. In training it says "He" for
# sport and politics and "She" for business, entertainment and tech with probability CUE_P (the
# opposite otherwise); in test it is drawn 50/50 whatever the label. A model that reads the cue gains
# on training data, loses on test, and changes its answer when the probe swaps he <-> she.
CUE_CLASSES = ("politics", "sports")
CUE_P = 0.9
CUE = "{} wrote this report."


def gender_cue_data(results: Path) -> list[str]:
    """BBC News with a gender cue correlated with the label in train only: ``<results>/data/{train,test}.jsonl``.

    Split 80/20 and cue drawn with seed 0, so every seed and setting of the study sees the same files.
    """
    from fednlp_bench.tasks.text_classification import _bbc

    texts, labels, _ = _bbc()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    n_test = len(texts) // 5
    out = results / "data"
    out.mkdir(parents=True, exist_ok=True)
    for split, idx in (("test", order[:n_test]), ("train", order[n_test:])):
        lines = []
        for i in np.sort(idx):
            if split == "train":
                male = (labels[i] in CUE_CLASSES) == (rng.random() < CUE_P)
            else:
                male = rng.random() < 0.5
            lines.append(json.dumps({"text": f"{CUE.format('He' if male else 'She')} {texts[i]}",
                                     "label": labels[i]}))
        tmp = out / f".{split}.jsonl.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(out / f"{split}.jsonl")
    return ["--dataset", str(out)]


_SAMPLING_LM = ["--task", "lm", "--preset", "quick", "--partition", "natural", "--set", "partition.n_clients=0",
                "--set", "data.max_len=24", "--set", "data.max_test=300", "--set", "data.max_val=300",
                "--set", "fl.rounds=10", "--set", "fl.clients_per_round=5", "--set", "fl.local_steps=2",
                "--set", "fl.eval_every=10"]
_CONTINUAL = ["--set", "fl.continual=true", "--set", "fl.arrival_per_round=3", "--set", "fl.storage_cap=15"]
_SAMPLING_SETTINGS = {
    "uniform-static": ["--set", "fl.sampler=uniform"],
    "activity-static": ["--set", "fl.sampler=activity"],
    "uniform-continual": ["--set", "fl.sampler=uniform", *_CONTINUAL],
    "activity-continual": ["--set", "fl.sampler=activity", *_CONTINUAL],
}
_TC_CONTINUAL = {"fl.arrival_per_round=3": "fl.arrival_per_round=30", "fl.storage_cap=15": "fl.storage_cap=150"}
_SAMPLING_PAIRS = [("activity-static", "uniform-static"), ("activity-continual", "uniform-continual")]
# 10 rounds of 16 local steps: at 5 rounds of 4 steps the undefended model reconstructed no secret (per-digit
# accuracy 0.125 at 1, 4 and 16 copies), so there was no memorisation for a defence to remove
_CANARY_LM = ["--task", "lm", "--preset", "quick", "--set", "data.max_train=1000", "--set", "partition.n_clients=10",
              "--set", "fl.clients_per_round=5", "--set", "fl.rounds=10", "--set", "fl.local_steps=16",
              "--set", "fl.batch_size=16", "--set", "data.max_len=24", "--set", "data.max_test=200",
              "--set", "fl.eval_every=5"]
_FAIRNESS_LM = ["--task", "lm", "--preset", "quick", "--set", "data.max_len=24", "--set", "data.max_test=300",
                "--set", "data.max_val=300",
                "--set", "fl.rounds=10", "--set", "fl.clients_per_round=5", "--set", "fl.local_steps=2",
                "--set", "fl.eval_every=10"]
# healthtweets has 16 labels: the 10 canaries share one prefix with 10 distinct labels, so (prefix, label)
# names exactly one canary and the model must read the digits to tell them apart
_CANARY_TC = ["--task", "tc", "--preset", "quick", "--dataset", "healthtweets", "--set", "data.max_train=1000",
              "--set", "data.max_len=48", "--set", "data.max_test=300"]
_FAIRNESS_TC = ["--task", "tc", "--preset", "quick"]
_INVERT = ["--set", "privacy.canary_attack=invert", "--set", "privacy.canary_count=10"]
_CANARY_SETTINGS = {
    "copies 1": ["--set", "privacy.canaries=1"],
    "copies 4": ["--set", "privacy.canaries=4"],
    "copies 16": ["--set", "privacy.canaries=16"],
    "copies 16, user DP eps 8": ["--set", "privacy.canaries=16", "--set", "privacy.user_level=true",
                                 "--set", "privacy.user_target_epsilon=8"],
    "copies 16, sample DP sigma 1": ["--set", "privacy.canaries=16", "--set", "privacy.sample_level=true",
                                     "--set", "privacy.sample_noise=1.0"],
    "copies 16, dropout 0.3": ["--set", "privacy.canaries=16", "--set", "privacy.model_dropout=0.3"],
}
_LM_INVERSION = {"greedy exact": "audit.canary_inversion.methods.greedy.reconstruction_rate",
                 "greedy digit acc": "audit.canary_inversion.methods.greedy.per_digit_accuracy",
                 "beam exact": "audit.canary_inversion.methods.beam.reconstruction_rate",
                 "beam digit acc": "audit.canary_inversion.methods.beam.per_digit_accuracy",
                 "free greedy exact": "audit.canary_inversion.methods.greedy_free.reconstruction_rate",
                 "accuracy": "metrics.final.accuracy"}
_TC_INVERSION = {"exact": "audit.canary_inversion.methods.relaxed_onehot.reconstruction_rate",
                 "digit acc": "audit.canary_inversion.methods.relaxed_onehot.per_digit_accuracy",
                 "accuracy": "metrics.final.accuracy"}
_FAIRNESS = {"cda off": [], "cda on": ["--set", "fairness.cda=true"]}
_INTRINSIC = ["--set", "fairness.intrinsic=true"]

STUDIES: dict[str, Study] = {
    "lm": Study(["--task", "lm", "--preset", "quick"],
                {"centralized": ["--algorithm", "centralized"], "FedAvg IID (100 clients)": [],
                 "FedAvg natural (speakers)": ["--partition", "natural", "--set", "partition.n_clients=0"]},
                {"accuracy": "metrics.final.accuracy", "acc. no OOV/EOS": "metrics.final.accuracy_no_oov_no_eos",
                 "perplexity": "metrics.final.perplexity", "untrained val acc.": "metrics.initial.accuracy"},
                seeds=(0,)),
    "sampling": Study(_SAMPLING_LM, _SAMPLING_SETTINGS,
                      {"accuracy": "metrics.final.accuracy", "perplexity": "metrics.final.perplexity",
                       "client mean acc": "metrics.fairness.mean"}, pairs=_SAMPLING_PAIRS),
    "sampling_tc": Study(["--task", "tc", "--preset", "quick", "--dataset", "healthtweets", "--partition", "natural",
                          "--set", "partition.n_clients=0", "--set", "data.max_train=2000", "--set", "data.max_len=48",
                          "--set", "fl.clients_per_round=4", "--set", "fl.local_steps=4", "--set", "fl.eval_every=5"],
                         {k: [_TC_CONTINUAL.get(x, x) for x in v] for k, v in _SAMPLING_SETTINGS.items()},
                         {"accuracy": "metrics.final.accuracy", "client mean acc": "metrics.fairness.mean"},
                         pairs=_SAMPLING_PAIRS),
    "canary_lm": Study([*_CANARY_LM, *_INVERT], _CANARY_SETTINGS, _LM_INVERSION, seeds=(0,)),
    "canary_tc": Study([*_CANARY_TC, *_INVERT], _CANARY_SETTINGS, _TC_INVERSION, seeds=(0,)),
    "fairness_tc": Study([*_FAIRNESS_TC, *_INTRINSIC, "--set", "fairness.sensitivity=true"], _FAIRNESS,
                         {"accuracy": "metrics.final.accuracy", "flip rate": "metrics.counterfactual.flip_rate",
                          "mean |dp|": "metrics.counterfactual.mean_abs_delta_prob",
                          "pred. sensitivity": "metrics.prediction_sensitivity.accumulated",
                          "SEAT |d|": "metrics.intrinsic_bias.mean_abs_effect_size"},
                         pairs=[("cda on", "cda off")]),
    "fairness_tc_cue": Study([*_FAIRNESS_TC, *_INTRINSIC, "--set", "fairness.sensitivity=true"], _FAIRNESS,
                             {"accuracy": "metrics.final.accuracy", "flip rate": "metrics.counterfactual.flip_rate",
                              "mean |dp|": "metrics.counterfactual.mean_abs_delta_prob",
                              "pred. sensitivity": "metrics.prediction_sensitivity.accumulated",
                              "SEAT |d|": "metrics.intrinsic_bias.mean_abs_effect_size"},
                             pairs=[("cda on", "cda off")], data=gender_cue_data),
    "fairness_lm": Study([*_FAIRNESS_LM, *_INTRINSIC], _FAIRNESS,
                         {"accuracy": "metrics.final.accuracy", "perplexity": "metrics.final.perplexity",
                          "|LL gap|": "metrics.counterfactual.mean_abs_ll_gap",
                          "male pref.": "metrics.counterfactual.male_preference_rate",
                          "SEAT |d|": "metrics.intrinsic_bias.mean_abs_effect_size"},
                         pairs=[("cda on", "cda off")]),
}


def slug(setting: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in setting).strip("_")


def run_one(study: Study, setting: str, seed: int, results: Path, data: list[str]) -> tuple[str, int, float, int]:
    out = results / slug(setting) / f"seed{seed}"
    if any(out.glob("*.json")):
        return setting, seed, 0.0, 0
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN), "run", *study.base, *data, *study.settings[setting], "--seed", str(seed),
           "--results-dir", str(out), "--set", "threads=1", "--wandb", "disabled", "--no-progress"]
    t0 = time.perf_counter()
    with open(out / "run.log", "w") as log:
        rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return setting, seed, time.perf_counter() - t0, rc


def run(name: str, results: Path, jobs: int, seeds: tuple[int, ...] | None,
        settings: list[str] | None = None) -> int:
    study = STUDIES[name]
    unknown = sorted(set(settings or []) - set(study.settings))
    if unknown:
        raise SystemExit(f"study {name} has no setting {unknown[0]!r} (settings: {', '.join(study.settings)})")
    todo = [(s, k) for k in (seeds or study.seeds) for s in study.settings if not settings or s in settings]
    failed = 0
    data = study.data(results) if study.data else []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for setting, seed, secs, rc in pool.map(lambda a: run_one(study, a[0], a[1], results, data), todo):
            print(f"{name}: {setting} seed {seed}: {'ok' if rc == 0 else f'FAILED (rc {rc})'} in {secs:.0f} s",
                  flush=True)
            failed += rc != 0
    return 1 if failed else table(name, results)


def interval(values: list[float]) -> str:
    """``mean ± half-width`` of the 95% t-interval (just the value for one seed)."""
    from scipy.stats import t

    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.4f}"
    half = t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.4f} ± {half:.4f}"


def load(results: Path, setting: str) -> dict[int, dict]:
    recs = {}
    for p in sorted((results / slug(setting)).glob("seed*/*.json")):
        rec = json.loads(p.read_text())
        recs[int(rec["seed"])] = rec
    return recs


def table(name: str, results: Path) -> int:
    study = STUDIES[name]
    recs = {s: load(results, s) for s in study.settings}
    cols = list(study.metrics)
    print(f"\n{name}: mean ± 95% t-interval over seeds ({results})\n")
    print("| setting | seeds | " + " | ".join(cols) + " | wall s (mean) |")
    print("|---|---:|" + "---:|" * len(cols) + "---:|")
    for s, by_seed in recs.items():
        vals = [interval([_get(study.metrics[c])(r) for r in by_seed.values()]) for c in cols]
        wall = np.mean([r["cost"]["wall_seconds"] for r in by_seed.values()]) if by_seed else float("nan")
        print(f"| {s} | {len(by_seed)} | " + " | ".join(vals) + f" | {wall:.0f} |")
    for a, b in study.pairs:
        common = sorted(set(recs[a]) & set(recs[b]))
        diffs = []
        for c in cols:
            f = _get(study.metrics[c])
            pairs = [(f(recs[a][k]), f(recs[b][k])) for k in common]
            diffs.append(interval([x - y for x, y in pairs if x is not None and y is not None]))
        print(f"| {a} minus {b} (paired) | {len(common)} | " + " | ".join(diffs) + " | |")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("run", "table"))
    ap.add_argument("study", choices=sorted(STUDIES))
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="*")
    ap.add_argument("--settings", nargs="*", help="run only these settings (default: all)")
    args = ap.parse_args(argv)
    if args.action == "run":
        return run(args.study, args.results, args.jobs, tuple(args.seeds) if args.seeds else None, args.settings)
    return table(args.study, args.results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
