import json

import pytest

from fednlp_bench import record
from fednlp_bench.io_utils import atomic_write, atomic_write_json


def minimal():
    return {
        "schema_version": 1, "run_id": "r", "created": "2026-01-01T00:00:00+00:00", "task": "tc",
        "dataset": "bbc", "model": "minilm-l6", "preset": None, "seed": 0,
        "partition": {"method": "uniform", "n_clients": 2, "params": {}},
        "algorithm": {"name": "fedavg", "hparams": {}},
        "fl": {"rounds": 1, "clients_per_round": 1, "batch_size": 8, "client_lr": 1e-4},
        "metrics": {"primary": "accuracy", "final": {"accuracy": 0.5}, "per_round": [], "per_client": {}},
        "cost": {"wall_seconds": 1.0, "client_compute_seconds": 0.5, "bytes_up": 1, "bytes_down": 1},
        "provenance": {"git_commit": None, "packages": {}, "device": "cpu"},
        "config": {},
    }


def test_valid_record_passes():
    assert record.problems(minimal()) == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda r: r.pop("task"), "missing field 'task'"),
        (lambda r: r["fl"].update(rounds="3"), "'fl.rounds' must be int"),
        (lambda r: r["metrics"]["final"].update(accuracy=float("nan")), "finite number"),
        (lambda r: r["metrics"].update(primary="f1"), "primary metric 'f1'"),
        (lambda r: r.update(seed=True), "'seed' must be int"),
    ],
)
def test_invalid_records_are_named(mutate, message):
    rec = minimal()
    mutate(rec)
    with pytest.raises(record.RecordError, match=message):
        record.validate(rec)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_json(path, {"a": 1})

    def boom(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_cpu_device_names_the_model_and_the_kernels_instruction_set(monkeypatch):
    """Float results can differ between CPUs, so a record's device must tell two CPUs apart:
    the model from /proc/cpuinfo, the vector ISA torch dispatches to, and the thread count."""
    import platform
    from pathlib import Path

    import torch

    from fednlp_bench import provenance

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        want = " ".join(names[0].split()) if names else platform.machine()
    else:
        want = platform.processor() or platform.machine()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    desc = provenance.device_description(torch.device("cpu"))
    assert desc == f"cpu:{want} {torch.backends.cpu.get_cpu_capability()} x3 threads"
