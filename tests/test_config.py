import pytest

from fednlp_bench import config
from fednlp_bench.config import ConfigError


def test_preset_then_overrides():
    cfg = config.resolve("tc", "smoke", ["fl.rounds=7", "partition.alpha=0.5", "fl.client_lr=1e-3"])
    assert cfg.fl.rounds == 7
    assert cfg.partition.params == {"alpha": 0.5}
    assert cfg.fl.client_lr == pytest.approx(1e-3)
    assert cfg.preset == "smoke" and cfg.dataset == "bbc"


def test_top_level_options_override_preset():
    cfg = config.resolve("tc", "quick", [], **{"algorithm.name": "centralized", "seed": 3})
    assert cfg.algorithm.name == "centralized" and cfg.seed == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("fl.round=3", "did you mean 'rounds'"),
        ("fl.rounds=0", "fl.rounds must be >= 1"),
        ("fl.rounds=abc", "fl.rounds must be int"),
        ("fl.client_lr=-1", "fl.client_lr must be > 0.0"),
        ("fl.batch_size=2.5", "fl.batch_size must be int"),
        ("data.test_fraction=1.5", "data.test_fraction must be <= 0.9"),
        ("data.max_len=2", "data.max_len must be >= 8"),
        ("partition.n_clients=0", "partition.n_clients must be >= 1"),
        ("fl.clients_per_round=50", "must be <= partition.n_clients"),
        ("wandb=maybe", "wandb must be one of"),
        ("sed=1", "did you mean 'seed'"),
        ("seed=-1", "seed must be >= 0"),
        ("fl=3", "needs a sub-key"),
        ("fl.rounds", "expects KEY=VALUE"),
        ("fl.weight_decay=2", "fl.weight_decay must be <= 1.0"),
        ("progress=3", "progress must be bool"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config.resolve("tc", "smoke", [override])


def test_natural_partition_accepts_zero_clients_meaning_one_per_group():
    cfg = config.resolve("qa", "quick", ["partition.method=natural", "partition.n_clients=0"])
    assert cfg.partition.n_clients == 0
    with pytest.raises(ConfigError, match="or 0 with --partition natural"):
        config.resolve("qa", "quick", ["partition.method=uniform", "partition.n_clients=0"])


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'quick'"):
        config.resolve("tc", "quik")


def test_parse_value_types():
    assert config.parse_value("5") == 5
    assert config.parse_value("1e-3") == pytest.approx(1e-3)
    assert config.parse_value("null") is None
    assert config.parse_value("true") is True
    assert config.parse_value("bbc") == "bbc"
