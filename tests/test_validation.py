"""Bad input is rejected up front with one clear line; caches survive corruption; fuzzing."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fednlp_bench import partitioners
from fednlp_bench import config, record
from fednlp_bench.algorithms import PluginError
from fednlp_bench.config import ConfigError
from fednlp_bench.run import new_run_id, validate_up_front
from fednlp_bench.sampling import SamplerError

# (overrides, top-level options, error type, text the message must contain)
BAD = [
    (["fl.rounds=0"], {}, ConfigError, "fl.rounds must be >= 1, got 0"),
    (["fl.rounds=1.5"], {}, ConfigError, "fl.rounds must be int"),
    (["fl.clients_per_round=0"], {}, ConfigError, "fl.clients_per_round must be >= 1"),
    (["fl.local_epochs=-1"], {}, ConfigError, "fl.local_epochs must be >= 1"),
    (["fl.local_steps=0"], {}, ConfigError, "fl.local_steps must be >= 1"),
    (["fl.batch_size=0"], {}, ConfigError, "fl.batch_size must be >= 1"),
    (["fl.client_lr=0"], {}, ConfigError, "fl.client_lr must be > 0.0"),
    (["fl.client_lr=100"], {}, ConfigError, "fl.client_lr must be <= 10.0"),
    (["fl.eval_every=0"], {}, ConfigError, "fl.eval_every must be >= 1"),
    (["fl.checkpoint_every=0"], {}, ConfigError, "fl.checkpoint_every must be >= 1"),
    (["fl.sampler=random"], {}, SamplerError, "unknown client sampler 'random'"),
    (["fl.lr=0.1"], {}, ConfigError, "unknown config key 'fl.lr'"),
    (["data.max_len=100000"], {}, ConfigError, "data.max_len must be <= 8192"),
    (["data.max_train=0"], {}, ConfigError, "data.max_train must be >= 1"),
    (["data.test_fraction=0"], {}, ConfigError, "data.test_fraction must be > 0.0"),
    (["data.maxlen=5"], {}, ConfigError, "did you mean 'max_len'"),
    (["partition.n_clients=-3"], {}, ConfigError, "partition.n_clients must be >= 1"),
    (["threads=0"], {}, ConfigError, "threads must be >= 1"),
    (["resume=yes please"], {}, ConfigError, "resume must be bool"),
    (["device=tpu"], {}, None, None),  # checked when the device is picked (see test below)
    ([], {"partition.method": "dirichlet"}, partitioners.PartitionError, "dirichlet"),
    (["partition.alpha=0"], {"partition.method": "dirichlet_label"}, partitioners.PartitionError, "alpha"),
    (["partition.beta=-1"], {"partition.method": "quantity"}, partitioners.PartitionError, "beta"),
    (["partition.gamma=1"], {"partition.method": "uniform"}, partitioners.PartitionError, "has no parameter 'gamma'"),
    ([], {"algorithm.name": "fedsgd"}, PluginError, "unknown algorithm 'fedsgd'"),
    ([], {"algorithm.name": "missing_file.py:Algo"}, PluginError, "does not exist"),
    (["algorithm.mu=0.1"], {"algorithm.name": "fedavg"}, ConfigError, "has no hyper-parameter 'mu'"),
    (["algorithm.lr=1"], {"algorithm.name": "centralized"}, ConfigError, "takes no hyper-parameters"),
    (["wandb=on"], {}, ConfigError, "wandb must be one of offline, online, disabled"),
    (["seed=abc"], {}, ConfigError, "seed must be int"),
]


@pytest.mark.parametrize("overrides, top, error, message", [b for b in BAD if b[2] is not None])
def test_bad_config_is_one_clear_line(overrides, top, error, message):
    with pytest.raises(error) as info:
        cfg = config.resolve("tc", "smoke", overrides, **top)
        validate_up_front(cfg)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_at_least_25_bad_configs():
    assert sum(1 for b in BAD if b[2] is not None) >= 25


def test_bad_device_is_clear():
    from fednlp_bench.engine import RunError
    from fednlp_bench.world import pick_device

    with pytest.raises(RunError, match="device must be auto, cpu, cuda"):
        pick_device("tpu")


def test_run_ids_are_unique():
    cfg = config.resolve("tc", "smoke", [])
    ids = {new_run_id(cfg) for _ in range(2000)}
    assert len(ids) == 2000


def test_corrupt_feature_cache_is_rebuilt(tmp_path, monkeypatch):
    from fednlp_bench import tasks
    from fednlp_bench.models import load_tokenizer

    monkeypatch.setenv("FEDNLP_BENCH_CACHE", str(tmp_path))
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"sentence number {i},{i % 2}\n" for i in range(20)))
    tc = tasks.get("tc")
    dsd = tc.load(str(tmp_path / "d.csv"))
    tok = load_tokenizer("minilm-l6")
    first = tc.featurize(dsd["train"], tok, 32, "k")
    (path,) = (tmp_path / "features").glob("*.npz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\x00" * 64  # flip bytes: the zip CRC no longer matches
    path.write_bytes(bytes(raw))
    again = tc.featurize(dsd["train"], tok, 32, "k")
    assert np.array_equal(again.ragged["input_ids"].values, first.ragged["input_ids"].values)


def test_corrupt_dataset_cache_is_rebuilt(tmp_path, monkeypatch):
    from fednlp_bench import tasks

    monkeypatch.setenv("FEDNLP_BENCH_CACHE", str(tmp_path))
    tc = tasks.get("tc")
    first = tc.load("bbc")["test"]["text"][:5]  # read now: the Arrow files are memory-mapped
    (cached,) = (tmp_path / "datasets").iterdir()
    for arrow in cached.rglob("*.arrow"):
        arrow.write_bytes(b"garbage")
    again = tc.load("bbc")
    assert again["test"]["text"][:5] == first
    assert not [p for p in (tmp_path / "datasets").iterdir() if p.name.startswith(".")]  # no temp dirs left


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_validator_never_crashes_on_arbitrary_json(value):
    found = record.problems(value)
    assert isinstance(found, list) and all(isinstance(p, str) for p in found)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["task", "fl", "metrics", "cost", "partition", "seed", "provenance"]), json_values)
def test_validator_rejects_or_accepts_mutations_without_crashing(key, value):
    from test_record import minimal

    rec = minimal()
    rec[key] = value
    found = record.problems(rec)
    assert isinstance(found, list)
    if found:
        with pytest.raises(record.RecordError):
            record.validate(rec)
    json.dumps(rec, default=str)
