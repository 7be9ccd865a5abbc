"""Leaderboard builder and submissions, on synthetic records in tmp dirs."""
from __future__ import annotations

import argparse
import copy
import html
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from fednlp_bench.leaderboard import build, record_digest, submission_name, submit
from fednlp_bench.leaderboard.cli import register
from fednlp_bench.leaderboard.load import LoadedRecord
from fednlp_bench.leaderboard.overview import overview
from fednlp_bench.leaderboard.render_md import md_escape
from fednlp_bench.leaderboard.tables import client_fairness, make_tables, stat
from fednlp_bench.record import SCHEMA_VERSION, RecordError, validate

XSS_ALGO = "<script>alert(1)</script>"
XSS_DATASET = '"><img src=x onerror=alert(1)>'


def make_record(
    *,
    task: str = "tc",
    dataset: str = "20news",
    model: str = "minilm-l6",
    algorithm: str = "fedavg",
    seed: int = 0,
    method: str = "dirichlet_label",
    params: dict[str, Any] | None = None,
    n_clients: int = 4,
    primary: str = "accuracy",
    value: float = 0.8,
    secondary: dict[str, float] | None = None,
    per_client: list[float] | None = None,
    rounds: int = 3,
    hparams: dict[str, Any] | None = None,
    preset: str | None = "smoke",
    stats: dict[str, Any] | None = None,
    created: str = "2025-01-02T03:04:05+00:00",
    run_id: str | None = None,
) -> dict[str, Any]:
    """A valid schema-v1 record; centralized when ``algorithm == "centralized"``."""
    central = algorithm == "centralized"
    if central:
        method, params, n_clients, stats = "none", {}, 1, None
    params = {"alpha": 0.5} if params is None else params
    per_client = [value - 0.1, value, min(value + 0.1, 1.0), value] if per_client is None else per_client
    final = {primary: value, **(secondary if secondary is not None else {"macro_f1": value - 0.05})}
    if stats is None and not central:
        stats = {
            "label_names": ["a", "b", "c"],
            "label_counts": [[5, 1, 0], [0, 4, 4], [2, 2, 2], [0, 0, 9]][:n_clients] or [[1, 1, 1]],
            "mean_js": 0.25,
            "sizes": [6, 8, 6, 9][:n_clients],
        }
    partition: dict[str, Any] = {"method": method, "n_clients": n_clients, "params": params}
    if stats is not None:
        partition["stats"] = stats
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id or f"20250102T030405-{task}-{dataset}-{algorithm}-{method}-{seed}-{value}",
        "created": created,
        "task": task,
        "dataset": dataset,
        "model": model,
        "preset": preset,
        "seed": seed,
        "partition": partition,
        "algorithm": {"name": algorithm, "hparams": hparams or {}, "source": algorithm},
        "fl": {"rounds": rounds, "clients_per_round": 1 if central else 2, "local_epochs": 1,
               "local_steps": None, "batch_size": 8, "client_lr": 0.01, "weight_decay": 0.0,
               "sampler": "uniform", "eval_every": 1},
        "metrics": {
            "primary": primary,
            "initial": {primary: 0.1},
            "final": final,
            "per_round": [{"round": r, primary: value * r / rounds} for r in range(1, rounds + 1)],
            "per_client": {str(i): {primary: v, "n_test": 10} for i, v in enumerate(per_client)},
        },
        "cost": {"wall_seconds": 10.0 + seed, "client_compute_seconds": 6.0, "eval_seconds": 1.0,
                 "bytes_up": 3000 * rounds, "bytes_down": 6000 * rounds,
                 "bytes_up_per_round": 3000, "bytes_down_per_round": 6000},
        "provenance": {"git_commit": "0123456789abcdef0123", "git_dirty": False,
                       "packages": {"torch": "2.13.0", "transformers": "5.0.0"},
                       "device": "cpu", "python": "3.11.9", "platform": "linux"},
        "config": {"seed": seed},
    }
    return validate(record)


def write_record(directory: Path, record: dict[str, Any], name: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"{record['run_id']}.json")
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return path


def loaded(*records: dict[str, Any]) -> list[LoadedRecord]:
    return [LoadedRecord(Path(f"/r/{r['run_id']}.json"), r) for r in records]


def standard_records() -> list[dict[str, Any]]:
    """fedavg and fedprox on one partition over 3 seeds, plus a centralized reference."""
    out = []
    for seed, (a, p, c) in enumerate([(0.70, 0.75, 0.90), (0.80, 0.78, 0.92), (0.90, 0.81, 0.94)]):
        out.append(make_record(algorithm="fedavg", seed=seed, value=a))
        out.append(make_record(algorithm="fedprox", seed=seed, value=p, hparams={"mu": 0.01}))
        out.append(make_record(algorithm="centralized", seed=seed, value=c))
    return out


# --- statistics and grouping -------------------------------------------------------------


def test_stat_mean_and_sample_std():
    s = stat([0.7, 0.8, 0.9])
    assert s.n == 3 and s.mean == pytest.approx(0.8) and s.std == pytest.approx(0.1)
    one = stat([0.5, None])
    assert (one.mean, one.std, one.n) == (0.5, None, 1)
    assert stat([]).mean is None


T2 = 4.302653  # t(0.975, df=2) from a printed table


def test_rows_mean_ci_gap_baseline_rank_and_time_to_accuracy():
    (table,) = make_tables(loaded(*standard_records()))
    assert table.primary == "accuracy"
    assert table.reference is not None and table.reference.algorithm == "centralized"
    fedavg, fedprox = sorted(table.rows, key=lambda r: r.algorithm)
    # mean ± t(2) * s / sqrt(3): fedavg [0.7, 0.8, 0.9] -> s = 0.1
    assert fedavg.primary.mean == pytest.approx(0.8) and fedavg.primary.half == pytest.approx(T2 * 0.1 / math.sqrt(3))
    assert fedavg.primary.n == 3 and fedavg.seeds == [0, 1, 2]
    assert fedprox.primary.mean == pytest.approx(0.78)
    # gap paired with centralized [0.90, 0.92, 0.94]: fedavg d = [-0.2, -0.12, -0.04] (s = 0.08), not significant;
    # fedprox d = [-0.15, -0.14, -0.13] (s = 0.01), significant
    assert fedavg.gap.mean == pytest.approx(-0.12) and fedavg.gap.half == pytest.approx(T2 * 0.08 / math.sqrt(3))
    assert not fedavg.gap.significant
    assert fedprox.gap.mean == pytest.approx(-0.14) and fedprox.gap.half == pytest.approx(T2 * 0.01 / math.sqrt(3))
    assert fedprox.gap.significant
    # difference to FedAvg, paired: [0.05, -0.02, -0.09] -> mean -0.02, s = 0.07; not significant
    assert table.baseline is fedavg and fedavg.vs_baseline is None
    assert fedprox.vs_baseline.mean == pytest.approx(-0.02)
    assert fedprox.vs_baseline.half == pytest.approx(T2 * 0.07 / math.sqrt(3))
    # so the two share rank 1 although their means differ
    assert (fedavg.rank, fedprox.rank, fedavg.tied, fedprox.tied) == (1, 1, True, True)
    assert table.reference.rank is None
    assert fedavg.secondary["macro_f1"] == pytest.approx(0.75)
    assert fedavg.cost["wall_seconds"] == pytest.approx(11.0)
    assert fedprox.detail == "mu 0.01"
    assert [p.round for p in fedavg.curve] == [1, 2, 3] and fedavg.curve[-1].mean == pytest.approx(0.8)
    # time to 90% of the reference's 0.92 = 0.828 on the curve value * r / 3: only seed 2 (0.3, 0.6, 0.9)
    # gets there, at round 3, after 3 * (3000 + 6000) bytes
    assert table.tta_target == pytest.approx(0.9 * 0.92) and table.tta_split == "test"
    assert (fedavg.tta.reached, fedavg.tta.n, fedavg.tta.rounds, fedavg.tta.bytes) == (1, 3, 3.0, 27000.0)
    assert fedprox.tta.reached == 0


def test_significantly_worse_row_gets_a_lower_rank():
    recs = [make_record(algorithm="centralized", seed=s, value=0.95) for s in range(3)]
    recs += [make_record(algorithm="fedavg", seed=s, value=v) for s, v in enumerate([0.80, 0.84, 0.82])]
    recs += [make_record(algorithm="fedprox", seed=s, value=v, hparams={"mu": 0.1})
             for s, v in enumerate([0.81, 0.83, 0.82])]
    recs += [make_record(algorithm="fedadam", seed=s, value=v) for s, v in enumerate([0.60, 0.65, 0.62])]
    (table,) = make_tables(loaded(*recs))
    ranks = {r.algorithm: (r.rank, r.tied) for r in table.rows}
    assert ranks == {"fedavg": (1, True), "fedprox": (1, True), "fedadam": (3, False)}
    assert [r.algorithm for r in table.rows][-1] == "fedadam"
    adam = table.rows[-1]
    assert adam.vs_baseline.significant and adam.vs_baseline.mean == pytest.approx(-0.19666666)


def test_validation_curve_is_used_for_time_to_accuracy_when_present():
    ref = make_record(algorithm="centralized", value=0.9)
    ref["metrics"]["per_round"] += [{"round": r, "split": "val", "accuracy": v} for r, v in ((1, 0.5), (3, 0.8))]
    fl = make_record(value=0.85)
    fl["metrics"]["per_round"] = [{"round": r, "split": "val", "accuracy": v}
                                  for r, v in ((1, 0.6), (2, 0.72), (3, 0.75))]
    fl["metrics"]["per_round"] += [{"round": 1, "accuracy": 0.99}]  # a test row must not count
    (table,) = make_tables(loaded(ref, fl))
    # target: 90% of the reference's last validation value 0.8 = 0.72 -> round 2 on the validation curve
    assert table.tta_split == "val" and table.tta_target == pytest.approx(0.72)
    assert table.rows[0].tta.rounds == 2.0 and table.rows[0].curve_split == "val"


def test_dp_rows_are_a_separate_unranked_table_with_epsilon_mia_and_flip_rate(tmp_path):
    plain = make_record(seed=0, value=0.8)
    plain["metrics"]["counterfactual"] = {"flip_rate": 0.02, "mean_abs_delta_prob": 0.01, "n_affected": 50}
    private = []
    for seed, (eps, auc) in enumerate([(7.5, 0.52), (8.5, 0.54)]):
        rec = make_record(seed=seed, value=0.5)
        rec["privacy"] = {"user_level": {"noise_multiplier": 1.2, "clip": 1.0, "epsilon": eps, "delta": 0.1},
                          "sample_level": None}
        rec["audit"] = {"example": {"auc": auc}}
        private.append(rec)
    tables = make_tables(loaded(plain, *private))
    assert len(tables) == 2
    fedavg_t, dp_t = tables  # non-DP first
    assert not fedavg_t.dp and dp_t.dp and dp_t.key.setup_dict["privacy"] == "user-level DP"
    (dp,) = dp_t.rows
    (fedavg,) = fedavg_t.rows
    assert "DP user σ=1.2 C=1" in dp.detail and dp.primary.n == 2 and dp.rank is None
    assert dp.probes["epsilon"] == pytest.approx(8.0) and dp.probes["mia_auc"] == pytest.approx(0.53)
    assert fedavg.probes["epsilon"] is None and fedavg.probes["flip_rate"] == pytest.approx(0.02)
    results = tmp_path / "results"
    for i, rec in enumerate([plain, *private]):
        write_record(results, rec, f"r{i}.json")
    build([results], tmp_path / "board")
    md = (tmp_path / "board" / "README.md").read_text()
    assert "user 8" in md and "0.5300" in md and "0.0200" in md and "privacy-utility" in md
    assert any(p.name.startswith("privacy-") for p in (tmp_path / "board" / "plots").iterdir())


def test_canary_inversion_column_shows_the_best_methods_digit_accuracy(tmp_path):
    recs = []
    for seed, methods in enumerate([{"greedy": {"per_digit_accuracy": 0.5}, "beam": {"per_digit_accuracy": 0.625}},
                                    {"relaxed_onehot": {"per_digit_accuracy": 0.225, "reconstruction_rate": 0.0}},
                                    {"greedy": {"per_digit_accuracy": "0.9"}, "beam": ["not", "a", "method"]}]):
        rec = make_record(seed=seed, value=0.5)
        rec["audit"] = {"canary_inversion": {"methods": methods}}
        recs.append(rec)
    plain = make_record(seed=0, value=0.5)
    plain["algorithm"]["name"] = "fedprox"
    (table,) = make_tables(loaded(*recs, plain))
    inverted = next(r for r in table.rows if r.algorithm == "fedavg")
    # per seed the best method: 0.625 and 0.225; the third seed has no numeric value and is left out
    assert inverted.probes["canary_digits"] == pytest.approx((0.625 + 0.225) / 2)
    assert next(r for r in table.rows if r.algorithm == "fedprox").probes["canary_digits"] is None
    results = tmp_path / "results"
    for i, rec in enumerate([*recs, plain]):
        write_record(results, rec, f"r{i}.json")
    build([results], tmp_path / "board")
    md = (tmp_path / "board" / "README.md").read_text()
    assert "Canary digits" in md and "0.4250" in md


def test_table_key_separates_every_setting_that_changes_the_experiment():
    base = make_record(seed=0)
    variants = {"rounds": ("fl", "rounds", 5), "clients": ("fl", "clients_per_round", 3),
                "epochs": ("fl", "local_epochs", 2), "steps": ("fl", "local_steps", 10),
                "batch": ("fl", "batch_size", 4), "lr": ("fl", "client_lr", 0.1), "n_train": ("fl", "n_train", 77),
                "n_test": ("fl", "n_test", 55), "setting": ("fl", "setting", "continual"),
                "sampler": ("fl", "sampler", "activity"), "dropout": ("fl", "dropout", 0.2),
                "optimizer": ("fl", "client_optimizer", "sgd"), "momentum": ("fl", "client_momentum", 0.9),
                "aggregator": ("fl", "aggregator", "median")}
    recs = [base]
    for i, (name, (section, key, value)) in enumerate(variants.items(), start=1):
        rec = copy.deepcopy(base)
        rec[section][key] = value
        rec["run_id"] = f"v-{name}"
        recs.append(rec)
    extra = {"preset": lambda r: r.update(preset="quick"),
             "max_len": lambda r: r.update(config={"data": {"max_len": 32}}),
             "peft": lambda r: r.update(peft={"method": "lora", "params": {"r": 8}}),
             "track": lambda r: r.update(track={"name": "tc", "version": 1}),
             "model": lambda r: r.update(model="bert")}
    for name, fn in extra.items():
        rec = copy.deepcopy(base)
        fn(rec)
        rec["run_id"] = f"x-{name}"
        recs.append(rec)
    tables = make_tables(loaded(*recs))
    assert len(tables) == 1 + len(variants) + len(extra)
    assert all(len(t.rows) == 1 and t.rows[0].primary.n == 1 for t in tables)


def test_gap_only_against_a_reference_with_the_identical_setup():
    fl = make_record(value=0.8)
    fl["fl"]["n_test"] = 300
    smoke_ref = make_record(algorithm="centralized", value=0.9)
    smoke_ref["fl"]["n_test"] = 100  # a smaller test set: not the same setup
    (table, ref_only) = make_tables(loaded(fl, smoke_ref))
    assert table.reference is None and table.rows[0].gap is None
    assert ref_only.rows == [] and ref_only.reference is not None
    same_ref = make_record(algorithm="centralized", value=0.9, run_id="same")
    same_ref["fl"]["n_test"] = 300
    same_ref["fl"]["clients_per_round"] = 1  # client sampling does not apply to centralized runs
    (table,) = [t for t in make_tables(loaded(fl, same_ref)) if t.rows]
    assert table.rows[0].gap.mean == pytest.approx(-0.1)


def test_a_track_reference_tuned_to_its_own_client_lr_is_the_reference_off_tracks_it_is_not():
    """A track tunes the centralized reference's lr on validation; off a track, the lr must match."""
    fl = make_record(value=0.8)
    fl["fl"]["client_lr"] = 3e-4
    ref = make_record(algorithm="centralized", value=0.9, run_id="ref")
    ref["fl"]["client_lr"] = 1e-4
    ref["fl"]["clients_per_round"] = 1
    (table,) = [t for t in make_tables(loaded(fl, ref)) if t.rows]
    assert table.reference is None and table.rows[0].gap is None  # no track: another lr, no gap
    for rec in (fl, ref):
        rec["track"] = {"name": "tc", "version": 2}
    (table,) = [t for t in make_tables(loaded(fl, ref)) if t.rows]
    assert table.reference is not None and table.rows[0].gap.mean == pytest.approx(-0.1)
    other = copy.deepcopy(ref)
    other["track"] = {"name": "tc", "version": 1}  # another track version never serves as the reference
    other["run_id"] = "other"
    (table,) = [t for t in make_tables(loaded(fl, other)) if t.rows]
    assert table.reference is None


def test_rows_split_by_plugin_version_and_by_peft():
    """provenance.plugin as fednlp_bench.registry writes it: a package's version or a file's
    SHA-256 makes a row of its own; the same file bytes under another path are the same code."""
    def plugin(rec, **ident):
        rec["provenance"]["plugin"] = ident
        return rec

    ep = {"source": "entry-point", "distribution": "feddyn-plugin", "target": "feddyn_plugin:FedDyn"}
    a = plugin(make_record(algorithm="feddyn"), **ep, version="0.1.0")
    b = plugin(make_record(algorithm="feddyn", seed=1, run_id="b"), **ep, version="0.2.0")
    c = plugin(make_record(algorithm="feddyn", seed=0, run_id="c"), source="file", path="a/x.py", sha256="ab" * 32)
    d = plugin(make_record(algorithm="feddyn", seed=1, run_id="d"), source="file", path="b/x.py", sha256="ab" * 32)
    e = plugin(make_record(algorithm="feddyn", seed=0, run_id="e"), source="file", path="a/x.py", sha256="cd" * 32)
    (table,) = make_tables(loaded(a, b, c, d, e))
    assert sorted((r.detail, r.seeds) for r in table.rows) == [
        ("file x.py sha256 abababababab", [0, 1]), ("file x.py sha256 cdcdcdcdcdcd", [0]),
        ("package feddyn-plugin 0.1.0", [0]), ("package feddyn-plugin 0.2.0", [1])]
    lora = make_record(run_id="lora")
    lora["peft"] = {"method": "lora", "params": {"r": 8}}
    assert len(make_tables(loaded(make_record(), lora))) == 2


def test_grouping_by_task_dataset_partition_model_with_reference_in_every_table():
    recs = [
        make_record(algorithm="fedavg", params={"alpha": 0.1}),
        make_record(algorithm="fedavg", params={"alpha": 1.0}),
        make_record(algorithm="fedavg", params={"alpha": 1.0, "seed": 7}, seed=1),  # seed key ignored
        make_record(algorithm="fedavg", method="uniform", params={}),
        make_record(algorithm="fedavg", n_clients=3),
        make_record(algorithm="fedavg", model="bert-base"),
        make_record(algorithm="fedavg", dataset="agnews"),
        make_record(algorithm="centralized", value=0.9),
        make_record(task="st", dataset="wikiner", algorithm="fedavg", primary="f1"),
    ]
    tables = make_tables(loaded(*recs))
    assert len(tables) == 7, [t.title for t in tables]
    assert [t.key.task for t in tables][-1] == "st"  # tc first
    by_title = {t.title: t for t in tables}
    alpha1 = by_title["tc / 20news / dirichlet_label(alpha=1), 4 clients / minilm-l6"]
    assert alpha1.rows[0].seeds == [0, 1]
    with_ref = [t for t in tables if t.key.task == "tc" and t.key.dataset == "20news" and t.key.model == "minilm-l6"]
    assert len(with_ref) == 4
    assert all(t.reference and t.reference.primary.mean == pytest.approx(0.9) for t in with_ref)
    others = [t for t in tables if t not in with_ref]
    assert all(t.reference is None for t in others)
    st = next(t for t in tables if t.key.task == "st")
    assert st.primary == "f1"


def test_partitions_ordered_by_heterogeneity_and_tc_first():
    recs = []
    for alpha, js in ((0.1, 0.6), (10.0, 0.05), (1.0, 0.3)):
        rec = make_record(params={"alpha": alpha}, run_id=f"a{alpha}")
        rec["partition"]["stats"]["mean_js"] = js
        recs.append(rec)
    recs.append(make_record(task="qa", primary="f1", run_id="qa"))
    tables = make_tables(loaded(*recs))
    assert [t.partition_label.split(",")[0] for t in tables[:3]] == [
        "dirichlet_label(alpha=10)", "dirichlet_label(alpha=1)", "dirichlet_label(alpha=0.1)"]
    assert tables[-1].key.task == "qa"
    (tc, qa) = overview(tables)
    assert tc.task == "tc" and [t.heterogeneity for t in tc.matrices[0].tables] == [0.05, 0.3, 0.6]


def test_reference_without_fl_runs_gets_its_own_table():
    (table,) = make_tables(loaded(make_record(algorithm="centralized", value=0.9)))
    assert table.rows == [] and table.reference.algorithm == "centralized"
    assert table.key.partition_method == "none"


def test_same_seed_twice_keeps_newest_and_lists_the_other_as_superseded():
    old = make_record(seed=0, value=0.5, created="2025-01-01T00:00:00+00:00", run_id="a")
    new = make_record(seed=0, value=0.7, created="2025-02-01T00:00:00+00:00", run_id="b")
    superseded: list = []
    (table,) = make_tables(loaded(old, new), superseded=superseded)
    assert table.rows[0].primary.mean == pytest.approx(0.7) and table.rows[0].primary.n == 1
    assert superseded == [(Path("/r/a.json"), Path("/r/b.json"))]


def test_fairness_mean_std_worst10():
    vals = [0.1 * i for i in range(1, 11)]
    rec = make_record(per_client=vals)
    f = client_fairness(rec, "accuracy")
    mean = sum(vals) / 10
    assert f.mean == pytest.approx(mean)
    assert f.std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / 10))
    assert f.worst10 == pytest.approx(0.1)  # ceil(0.1 * 10) = 1 client
    f11 = client_fairness(make_record(per_client=vals + [0.05]), "accuracy")
    assert f11.worst10 == pytest.approx((0.05 + 0.1) / 2)  # ceil(1.1) = 2 clients
    # averaged over seeds in the row
    (table,) = make_tables(loaded(make_record(seed=0, per_client=[0.0, 1.0]),
                                  make_record(seed=1, per_client=[0.5, 0.5])))
    row = table.rows[0]
    assert row.fairness.mean == pytest.approx(0.5)
    assert row.fairness.std == pytest.approx(0.25)
    assert row.fairness.worst10 == pytest.approx(0.25)
    empty = make_record()
    empty["metrics"]["per_client"] = {}
    assert client_fairness(empty, "accuracy").mean is None


def test_primary_metric_map_matches_the_task_adapters():
    from fednlp_bench import tasks
    from fednlp_bench.record_checks import TASK_PRIMARY

    assert sorted(TASK_PRIMARY) == tasks.available()
    for name, metric in TASK_PRIMARY.items():
        assert tasks.get(name).primary_metric == metric


# --- build -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build of the standard records plus junk files and an XSS record."""
    root = tmp_path_factory.mktemp("lb")
    results = root / "out" / "results"
    for rec in standard_records():
        write_record(results, rec)
    xss = make_record(algorithm=XSS_ALGO, dataset=XSS_DATASET, value=0.6, hparams={"k": "a|b"})
    write_record(results, xss, "xss.json")
    write_record(results, make_record(algorithm="centralized", dataset=XSS_DATASET, value=0.7), "xss-ref.json")
    (results / "broken.json").write_text("{not json", encoding="utf-8")
    bad_version = make_record()
    bad_version["schema_version"] = 99
    write_record(results, bad_version, "future.json")
    missing = make_record(seed=9)
    del missing["metrics"]
    write_record(results, missing, "missing.json")
    (results / "nan.json").write_text(json.dumps(make_record(seed=8)).replace("0.8,", "NaN,", 1))
    (results / ".hidden.json").write_text("{}")
    out = root / "out"
    report = build([results], out)
    return root, out, report


def test_build_skips_and_reports_invalid_records(built):
    _, out, report = built
    reasons = {p.path.name: p.reason for p in report.skipped}
    assert set(reasons) == {"broken.json", "future.json", "missing.json", "nan.json"}
    assert "malformed JSON" in reasons["broken.json"]
    assert "schema_version 99 is not supported" in reasons["future.json"]
    assert "missing field 'metrics'" in reasons["missing.json"]
    assert "NaN" in reasons["nan.json"]
    assert report.n_records == 11 and report.n_tables == 2 and not report.ok
    page = (out / "index.html").read_text()
    readme = (out / "README.md").read_text()
    for name in reasons:
        assert name in page and name in readme
    assert "4 file(s) skipped" in page


def test_build_writes_overview_tables_plots_and_links(built):
    _, out, report = built
    readme = (out / "README.md").read_text()
    page = (out / "index.html").read_text()
    # the overview comes first, then the tables
    assert readme.index("## Overview") < readme.index("## Tables") < readme.index("### tc / 20news")
    assert page.index('id="overview"') < page.index('id="tables"') < page.index('class="board"')
    table = readme.split("### tc / 20news")[1]
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| *ref* | centralized")  # reference first
    assert lines[2].startswith("| 1= | fedavg | 0.8000 ± 0.2484 | 3 | baseline | -0.1200 ± 0.1987 | 3 (1/3) |")
    assert lines[3].startswith("| 1= | fedprox<br>mu 0.01 | 0.7800 ± 0.0745 | 3 | -0.0200 ± 0.1739 | "
                               "-0.1400 ± 0.0248 \\* | not reached |")
    assert "[seed 0](results/" in lines[2]
    assert "Provenance: commit 0123456789; torch 2.13.0; transformers 5.0.0; device cpu; date 2025-01-02." in table
    assert "Seeds: 0, 1, 2." in table and "preset smoke" in table
    assert "<code>fednlp-bench verify results/" in table
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len([p for p in pngs if p.startswith("curve-")]) == 2
    assert len([p for p in pngs if p.startswith("partition-")]) == 2
    for name in pngs:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in page and f"plots/{name}" in readme
    assert 'href="results/' in page
    assert sorted(p.name for p in report.written if p.suffix != ".png") == ["README.md", "index.html"]


def test_html_and_markdown_escape_record_strings(built):
    _, out, _ = built
    page = (out / "index.html").read_text()
    readme = (out / "README.md").read_text()
    for raw in (XSS_ALGO, XSS_DATASET, "<img src=x", "<script>alert", "onerror=alert(1)>"):
        assert raw not in page and raw not in readme
    assert html.escape(XSS_ALGO) in page
    assert html.escape(XSS_DATASET, quote=True) in page
    assert f'data-dataset="{html.escape(XSS_DATASET, quote=True)}"' in page
    assert f'<option value="{html.escape(XSS_DATASET, quote=True)}">' in page
    assert page.count("<script>") == 1  # only our own script
    script = page.split("<script>")[1].split("</script>")[0]
    assert "alert" not in script and "20news" not in script
    assert "Content-Security-Policy" in page
    assert md_escape(XSS_ALGO) in readme and "k a\\|b" in readme


def test_md_escape():
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert md_escape("x\ny") == "x y"
    assert md_escape("it's") == "it&#x27;s"
    assert md_escape("[a](javascript:x)") == "\\[a\\](javascript:x)"


def test_build_is_deterministic(tmp_path):
    results = tmp_path / "results"
    for rec in reversed(standard_records()):
        write_record(results, rec)
    build([results], tmp_path / "a")
    build([results], tmp_path / "b")

    def snapshot(d: Path) -> dict[str, bytes]:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 4
    assert a == b
    build([results], tmp_path / "a")  # rebuild in place: same bytes, no stray files
    assert snapshot(tmp_path / "a") == a


def test_reproduce_lists_commands_a_reader_can_type(tmp_path):
    """A stored command is shown with ``fednlp-bench`` for the entry point and a packaged track's name
    for its path; a suite worker's command (it reads its cells on stdin) is not shown at all."""
    results = tmp_path / "results"
    commands = {
        0: ["/home/u/repo/fednlp_bench/__main__.py", "suite", "--track", "/home/u/repo/fednlp_bench/tracks/tc.yaml",
            "--algorithm", "fedavg", "--cell", "7", "--threads", "1"],
        1: ["/home/u/repo/fednlp_bench/__main__.py", "suite", "--track", "/home/u/repo/fednlp_bench/tracks/tc.yaml",
            "--results-dir", "/tmp/r", "--worker", "--threads", "1", "--no-progress", "--no-overview"],
        2: ["/venv/bin/fednlp-bench", "suite", "--track", "my/tracks/tc.yaml", "--algorithm", "fedavg",
            "--partition", "iid", "--seeds", "2"],
    }
    for rec in standard_records():
        rec["provenance"]["command"] = commands[rec["seed"]]
        write_record(results, rec)
    build([results], tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    shown = [ln.split("<code>")[1].split("</code>")[0] for ln in
             readme.split("<summary>Reproduce")[1].split("</details>")[0].splitlines()
             if ln.startswith("- fedavg: <code>") and "verify" not in ln]
    assert shown == ["fednlp-bench suite --track tc --algorithm fedavg --cell 7 --threads 1",
                                "fednlp-bench suite --track my/tracks/tc.yaml --algorithm fedavg --partition iid "
                                "--seeds 2"]
    assert "--worker" not in readme


def test_stale_plots_removed_and_missing_stats_handled(tmp_path):
    results = tmp_path / "results"
    rec = make_record(stats={})
    rec["metrics"]["per_round"] = []
    write_record(results, rec)
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    stale = out / "plots" / "curve-old-0123456789.png"
    stale.write_bytes(b"x")
    keep = out / "plots" / "logo.png"
    keep.write_bytes(b"x")
    report = build([results], out)
    assert report.ok and report.n_tables == 1
    assert not stale.exists() and keep.exists()
    assert "<img" not in (out / "index.html").read_text()


def test_build_with_no_results(tmp_path):
    report = build([tmp_path / "nowhere"], tmp_path / "out")
    assert report.n_records == 0 and "not found" in report.skipped[0].reason
    assert "No results yet" in (tmp_path / "out" / "index.html").read_text()
    assert "No results yet" in (tmp_path / "out" / "README.md").read_text()


def test_duplicate_run_id_across_dirs_is_skipped(tmp_path):
    rec = make_record()
    write_record(tmp_path / "a", rec)
    write_record(tmp_path / "b", rec, "copy.json")
    report = build([tmp_path / "a", tmp_path / "b", tmp_path / "a"], tmp_path / "out")
    assert report.n_records == 1
    assert len(report.skipped) == 1 and "duplicate run_id" in report.skipped[0].reason


# --- submit ------------------------------------------------------------------------------


def test_submit_copies_under_content_addressed_name(tmp_path):
    rec = make_record(dataset="org/data set")
    src = write_record(tmp_path, rec, "run.json")
    target = submit(src, tmp_path / "results")
    digest = record_digest(rec)
    assert target.name == f"tc-org_data_set-fedavg-{digest[:16]}.json" == submission_name(rec)
    assert target.parent == tmp_path / "results"
    assert json.loads(target.read_text()) == rec
    assert [p.name for p in (tmp_path / "results").iterdir()] == [target.name]
    # key order does not change the digest
    assert record_digest(json.loads(json.dumps(rec, sort_keys=False))) == digest


def test_submit_rejects_duplicates(tmp_path):
    rec = make_record()
    src = write_record(tmp_path, rec, "run.json")
    target = submit(src, tmp_path / "results")
    with pytest.raises(RecordError, match="duplicate of .*" + target.name):
        submit(src, tmp_path / "results")
    # same content under another name in the results dir is still a duplicate
    renamed = target.with_name("renamed.json")
    target.rename(renamed)
    with pytest.raises(RecordError, match="duplicate of .*renamed.json"):
        submit(src, tmp_path / "results")
    # same run id, different content
    changed = copy.deepcopy(rec)
    changed["metrics"]["final"]["accuracy"] = 0.1
    src2 = write_record(tmp_path, changed, "run2.json")
    with pytest.raises(RecordError, match="run_id .* already submitted"):
        submit(src2, tmp_path / "results")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["renamed.json"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda text: text[:-5], "malformed JSON"),
        (lambda text: text.replace('"schema_version": 1', '"schema_version": 2'), "schema_version 2 is not supported"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "task"}), "missing field 'task'"),
        (lambda text: "[1, 2]", "must be a JSON object"),
        (lambda text: text.replace('"seed": 0', '"seed": "zero"'), "field 'seed' must be int"),
    ],
    ids=["truncated", "version", "missing", "not-object", "type"],
)
def test_submit_rejects_invalid_records_naming_file_and_problem(tmp_path, mutate, message):
    src = tmp_path / "bad-run.json"
    src.write_text(mutate(json.dumps(make_record(), indent=1)), encoding="utf-8")
    with pytest.raises(RecordError) as info:
        submit(src, tmp_path / "results")
    assert str(src) in str(info.value) and message in str(info.value)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_submit_missing_file(tmp_path):
    with pytest.raises(RecordError, match="nope.json: cannot read file"):
        submit(tmp_path / "nope.json", tmp_path / "results")


def test_submit_is_atomic(tmp_path, monkeypatch):
    src = write_record(tmp_path, make_record(), "run.json")
    results = tmp_path / "results"
    results.mkdir()

    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        submit(src, results)
    assert list(results.iterdir()) == []  # no partial file, no temp file
    monkeypatch.undo()
    assert submit(src, results).exists()


# --- CLI ---------------------------------------------------------------------------------


def test_cli_register_leaderboard_and_submit(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="fednlp-bench")
    register(parser.add_subparsers(dest="command", required=True))
    src = write_record(tmp_path, make_record(), "run.json")
    results = tmp_path / "results"
    args = parser.parse_args(["submit", str(src), "--results-dir", str(results)])
    assert args.func(args) == 0
    assert "submitted:" in capsys.readouterr().out
    with pytest.raises(RecordError, match="duplicate"):
        args.func(args)
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "junk.json").write_text("nope")
    out = tmp_path / "site"
    args = parser.parse_args(["leaderboard", "--results", str(results), "--results", str(tmp_path / "extra"),
                              "--out", str(out)])
    assert args.results == [results, tmp_path / "extra"]
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "1 records, 1 tables, 1 skipped" in captured.out and "junk.json" in captured.err
    assert (out / "index.html").exists() and (out / "README.md").exists()
    args = parser.parse_args(["leaderboard", "--results", str(tmp_path / "extra"), "--out", str(out), "--strict"])
    assert args.func(args) == 1
    defaults = parser.parse_args(["leaderboard"])
    assert defaults.results is None and defaults.out == Path("leaderboard")
    assert parser.parse_args(["submit", "x.json"]).results_dir == Path("leaderboard/results")


def test_build_survives_odd_but_valid_records(tmp_path):
    odd = make_record(params={"alpha": [0.1, {"x": None}]}, hparams={"mu": {"nested": True}},
                      stats={"label_counts": [[1, 2], [3]], "label_names": ["a", "b"]}, preset=None)
    odd["metrics"]["per_round"] = [{"round": 1, "split": "test"}, {"round": 2}]
    odd["metrics"]["per_client"] = {"0": {"n_test": 3}, "2": {"accuracy": 0.5}}
    odd["metrics"]["final"]["loss"] = 12345.5
    odd["cost"] = {"wall_seconds": 1, "client_compute_seconds": 0, "bytes_up": 0, "bytes_down": 0}
    odd["provenance"] = {"git_commit": None, "packages": {}, "device": ""}
    write_record(tmp_path / "results", validate(odd))
    report = build([tmp_path / "results"], tmp_path / "out")
    assert report.ok and report.n_tables == 1, report.summary()
    assert any("unusable partition.stats" in w for w in report.warnings)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| 1 | fedavg<br>mu {&quot;nested&quot;:true} | 0.8000 | 1 |" in readme
    assert "| 0.5000 | 0.0000 | 0.5000 |" in readme  # fairness from the one usable client
    assert "12345.50" in readme


def test_strict_checks_reject_out_of_range_and_ill_typed_fields():
    from fednlp_bench.record_checks import strict_problems

    assert strict_problems(make_record()) == []
    cases = [
        (lambda r: r["metrics"]["per_round"].append({"round": 4, "accuracy": "high"}), "must be a finite number"),
        (lambda r: r["metrics"]["per_client"].update({"9": "bad"}), "metrics.per_client.9 must be an object"),
        (lambda r: r["metrics"]["final"].update(huge=1e300), "metrics.final.huge must be in"),
        (lambda r: r["partition"]["stats"].update(label_names="ab"), "partition.stats.label_names must be a list"),
        (lambda r: r["partition"]["stats"].update(mean_js=-0.1), "partition.stats.mean_js must be in"),
        (lambda r: r["fl"].update(client_lr=0.0), "fl.client_lr must be > 0"),
        (lambda r: r.update(created="2025-01-02T03:04:05"), "created must carry a timezone"),
        (lambda r: r.update(created="yesterday"), "created must be an ISO-8601 time"),
        (lambda r: r["provenance"].update(git_commit="not-hex!"), "provenance.git_commit must be a hexadecimal"),
        (lambda r: r.update(track={"name": "tc", "version": True}), "track.version must be a string or an integer"),
        (lambda r: r.update(peft={"method": "lo\u200bra", "params": {}}), "peft.method contains"),
        (lambda r: r.update(tuning={"space": [1], "chosen": {}}), "tuning.space must be an object"),
        (lambda r: r["cost"].update(n_params_total=-1), "cost.n_params_total must be in"),
        (lambda r: r["provenance"].update(plugin={"sha256": 5}), "provenance.plugin.sha256 must be null or a string"),
        (lambda r: r["metrics"]["per_round"].append({"round": 5, "split": "va\u202el"}), "split contains"),
    ]
    for mutate, message in cases:
        rec = make_record()
        mutate(rec)
        found = strict_problems(rec)
        assert any(message in p for p in found), (message, found)


def test_every_committed_record_passes_the_strict_checks():
    """Real runs (the committed leaderboard and the smoke records) are never refused by the checks."""
    from fednlp_bench.leaderboard.load import read_raw

    root = Path(__file__).resolve().parent.parent
    paths = sorted((root / "leaderboard" / "results").glob("*.json")) + sorted(
        (root / "tests" / "data" / "records").glob("*.json"))
    assert len(paths) >= 2
    for path in paths:
        record, reason = read_raw(path)
        assert reason is None, (path.name, reason)


def test_new_record_fields_are_presented(tmp_path):
    rec = make_record()
    rec["tuning"] = {"space": {"server_lr": [0.1, 0.01, 0.001], "tau": [1e-3, 1e-6]},
                     "chosen": {"server_lr": 0.01, "tau": 1e-3}, "scores": [], "protocol": 1}
    rec["peft"] = {"method": "lora", "params": {"r": 8}}
    rec["cost"].update(n_params=150_000, n_params_total=22_700_000)
    rec["track"] = {"name": "tc", "version": 2}
    rec["fl"]["n_val"] = 50
    rec["provenance"]["plugin"] = {"source": "entry-point", "distribution": "feddyn-plugin", "version": "0.1.0",
                                   "target": "feddyn_plugin:FedDyn"}
    dp = make_record(seed=1, run_id="dp")
    dp["privacy"] = {"user_level": {"noise_multiplier": 1.0, "clip": 1.0, "epsilon": 8.0, "delta": 0.001}}
    results = tmp_path / "results"
    write_record(results, rec)
    write_record(results, dp)
    report = build([results], tmp_path / "site", plots=False)
    assert report.ok, report.summary()
    md = (tmp_path / "site" / "README.md").read_text()
    for text in ("tuned on validation (protocol 1): server\\_lr=0.01, tau=0.001 from 6 candidates",
                 "150.0k / 22.7M", "peft lora r=8", "track tc v2", "n\\_val 50", "package feddyn-plugin 0.1.0",
                 "user 8 (δ 0.001)"):
        assert text in md, text
