"""Parameter-efficient fine-tuning (fednlp_bench/peft_methods.py): what is trained, what is sent.

Expected parameter counts are computed by hand from MiniLM-L6's shape (6 layers, hidden 384,
12 heads, vocabulary 30,522), never read back from the code under test.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from fednlp_bench import algorithms, config, peft_methods, tasks
from fednlp_bench.config import ConfigError, ModelConfig
from fednlp_bench.engine import Simulator
from fednlp_bench.run import build_model, fl_trainer, make_partition, prepare, run

LAYERS, HIDDEN = 6, 384
BBC_LABELS = 5


def head_params(n_labels: int) -> int:
    return HIDDEN * n_labels + n_labels


def lora_params(r: int, n_targets_per_layer: int = 2, layers: int = LAYERS) -> int:
    return layers * n_targets_per_layer * r * (HIDDEN + HIDDEN)  # A: r x 384, B: 384 x r


def bitfit_params(model: torch.nn.Module) -> int:
    """Every bias of the plain HF model plus the classifier weight, counted on the unmodified model."""
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias")) + model.classifier.weight.numel()


#: method -> trainable parameters of the tc model on BBC (5 labels)
EXPECTED_TC = {
    "lora": lora_params(8) + head_params(BBC_LABELS),
    "ia3": LAYERS * (HIDDEN + HIDDEN + HIDDEN + 1536) + head_params(BBC_LABELS),  # key, value, attn-out in, ffn-out in
    "prompt": 10 * HIDDEN + head_params(BBC_LABELS),
    "prefix": 10 * LAYERS * 2 * HIDDEN + head_params(BBC_LABELS),
    "head": head_params(BBC_LABELS),
}


def simulator(cfg: config.RunConfig, model: torch.nn.Module | None = None) -> Simulator:
    """A Simulator built as ``fednlp-bench run`` builds it (no record)."""
    prep = prepare(cfg)
    part = make_partition(cfg, prep.task, prep.dsd)
    alg = algorithms.get(cfg.algorithm.name).from_params(cfg.algorithm.params)
    return fl_trainer(cfg, prep.task, model if model is not None else build_model(cfg, prep), prep.train, prep.test,
                      part.train, part.test, alg, pad_id=prep.pad_id)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("override,message", [
    ("model.peft=lorra", "model.peft must be one of full, lora, .*head, got 'lorra'"),
    ("model.lora_r=0", "model.lora_r must be >= 1, got 0"),
    ("model.lora_alpha=0", "model.lora_alpha must be a finite number > 0"),
    ("model.prefix_tokens=0", "model.prefix_tokens must be >= 1"),
    ("model.lora_targets=[]", "model.lora_targets must name at least one module"),
    ("model.ia3_feedforward=[intermediate.dense]", "subset of model.ia3_targets"),
])
def test_bad_peft_config_is_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        config.resolve("tc", "smoke", [override])


def test_model_shorthand_keeps_working():
    assert config.resolve("tc", "smoke", model="minilm-l6").model.name == "minilm-l6"
    assert config.resolve("tc", "smoke", ["model=some/hub-id"]).model.name == "some/hub-id"
    cfg = config.resolve("tc", "smoke", ["model.peft=lora", "model.lora_targets=query,key"])
    assert cfg.model.lora_targets == ["query", "key"] and cfg.model.name == "minilm-l6"


def test_cli_peft_option_and_bad_method(capsys):
    import json

    from fednlp_bench.cli import main

    assert main(["run", "--task", "tc", "--preset", "smoke", "--peft", "lora", "--model", "minilm-l6",
                 "--set", "model.lora_r=4", "--dry-run"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["name"] == "minilm-l6" and model["peft"] == "lora" and model["lora_r"] == 4
    assert main(["run", "--task", "tc", "--preset", "smoke", "--peft", "adapter", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.peft must be one of" in err[0] and "'adapter'" in err[0]


@pytest.mark.slow
def test_targets_matching_no_module_exit_2_in_one_line(tiny_overrides, tmp_path):
    args = [sys.executable, "-m", "fednlp_bench", "run", "--task", "tc", "--preset", "smoke"]
    for o in tiny_overrides("model.peft=lora", "model.lora_targets=querry", "threads=1"):
        args += ["--set", o]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if "querry" in ln]
    assert len(lines) == 1 and "matches no module" in lines[0] and "query" in lines[0]
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").glob("*.json"))


def test_target_names_are_checked_before_any_data_is_prepared(tmp_path):
    from fednlp_bench.run import validate_up_front

    cfg = config.resolve("tc", "smoke", ["model.peft=lora", "model.lora_targets=query,valu",
                                         f"results_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="model.lora_targets: 'valu' matches no module.*value"):
        validate_up_front(cfg)
    validate_up_front(config.resolve("s2s", "smoke", ["model.peft=ia3"]))  # key, value, output.dense exist
    validate_up_front(config.resolve("tc", "smoke", ["model.peft=lora", "model.lora_targets=all-linear"]))
    assert not any(tmp_path.iterdir())


def test_unknown_target_and_unadaptable_target_on_the_model():
    tc = tasks.get("tc")
    from fednlp_bench.models import resolve_model

    path = resolve_model("minilm-l6")
    with pytest.raises(ConfigError, match="model.lora_targets: 'querry' matches no module"):
        peft_methods.build_model(tc, path, {"label_names": ["a", "b"]}, ModelConfig(peft="lora", lora_targets=["querry"]))
    with pytest.raises(ConfigError, match="model.lora_targets: peft cannot adapt"):
        peft_methods.build_model(tc, path, {"label_names": ["a", "b"]}, ModelConfig(peft="lora", lora_targets=["LayerNorm"]))
    with pytest.raises(ConfigError, match="only modules of the task head"):
        peft_methods.build_model(tc, path, {"label_names": ["a", "b"]}, ModelConfig(peft="lora", lora_targets=["classifier"]))


# --------------------------------------------------------------------------- every method, end to end
@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora", "prefix", "prompt", "ia3", "bitfit", "head"])
def test_every_method_runs_on_tc_and_sends_only_its_trainable_vector(tiny_overrides, method):
    cfg = config.resolve("tc", "smoke", tiny_overrides(f"model.peft={method}", "fl.local_steps=1", "threads=1"))
    rec, _ = run(cfg)
    n = rec["cost"]["n_params"]
    if method == "full":
        assert n == rec["cost"]["n_params_total"] == 22_713_216 + head_params(BBC_LABELS)
    elif method == "bitfit":
        from transformers import AutoModelForSequenceClassification

        from fednlp_bench.models import resolve_model

        plain = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm-l6"), num_labels=BBC_LABELS)
        assert n == bitfit_params(plain)
    else:
        assert n == EXPECTED_TC[method]
        assert rec["cost"]["n_params_total"] == 22_713_216 + head_params(BBC_LABELS) + n - head_params(BBC_LABELS)
    assert rec["peft"]["method"] == method
    # 2 rounds x 2 clients, each sends and receives exactly the trainable vector in fp32
    assert rec["cost"]["bytes_up"] == rec["cost"]["bytes_down"] == 2 * 2 * n * 4
    assert 0.0 <= rec["metrics"]["final"]["accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("task,extra", [
    ("st", ["data.max_train=32", "data.max_test=16"]),
    ("qa", ["data.max_train=16", "data.max_test=8", "data.max_len=64"]),
    ("s2s", ["data.max_train=16", "data.max_test=8"]),
])
def test_lora_runs_on_st_qa_s2s(tmp_path, task, extra):
    cfg = config.resolve(task, "smoke", ["wandb=disabled", "progress=false", f"results_dir={tmp_path}", "threads=1",
                                         "fl.rounds=1", "fl.local_steps=1", "model.peft=lora", *extra])
    rec, _ = run(cfg)
    n = rec["cost"]["n_params"]
    n_out = {"qa": 2, "st": len(prepare(cfg).info.get("label_names", [])), "s2s": 0}[task]  # start/end; tags
    if task == "s2s":
        # LoRA on q/v of 6 encoder and 6 decoder self-attention layers; the decoder's cross-attention
        # (4 x (384 x 384 + 384) + LayerNorm per layer) and LM-head transform + bias are new weights: trained in full
        cross = LAYERS * (4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN)
        lm_head = HIDDEN * HIDDEN + HIDDEN + 2 * HIDDEN + 30_522
        assert n == lora_params(8, layers=2 * LAYERS) + cross + lm_head
        assert n < 0.08 * rec["cost"]["n_params_total"]
    else:
        assert n_out >= 2 and n == lora_params(8) + head_params(n_out)
    assert rec["cost"]["bytes_up"] == 2 * n * 4 and rec["peft"]["method"] == "lora"


# --------------------------------------------------------------------------- frozen weights
@pytest.mark.slow
def test_frozen_weights_never_change_never_copied_never_sent(tiny_overrides):
    cfg = config.resolve("tc", "smoke", tiny_overrides("model.peft=lora", "fl.local_steps=2", "threads=1"))
    sim = simulator(cfg)
    frozen = {n: p for n, p in sim.model.named_parameters() if not p.requires_grad}
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in frozen.items()}
    trainable = [p for p in sim.model.parameters() if p.requires_grad]
    assert sim.params.numel() == sum(p.numel() for p in trainable) == EXPECTED_TC["lora"]
    assert sum(p.numel() for p in frozen.values()) == 22_713_216  # the whole pretrained encoder
    sim.start_server()
    start = sim.global_params.clone()
    for r in (1, 2):
        sim.run_round(r)
    assert not torch.equal(sim.global_params, start)  # the adapters did train
    for n, p in frozen.items():
        ptr, value = before[n]
        assert p.data_ptr() == ptr, f"{n} was re-allocated"
        assert torch.equal(p, value), f"frozen {n} changed"
    # the adapters live in the flat buffer; no frozen tensor does
    lo, hi = sim.params.data_ptr(), sim.params.data_ptr() + sim.params.numel() * 4
    assert all(lo <= p.data_ptr() < hi for p in trainable)
    assert not any(lo <= p.data_ptr() < hi for p in frozen.values())
    assert sim.state.costs.bytes_up == 2 * 2 * EXPECTED_TC["lora"] * 4
    assert sim.row_sparse is None  # the frozen word embedding is not a row-sparse table


@pytest.mark.slow
def test_lora_and_full_take_the_same_engine_code_path(tiny_overrides):
    """No PEFT special case outside the model builder: the same lines of the package run.

    Every line of ``fednlp_bench`` except the model builder (``peft_methods.py``) executed while
    the simulator is built and trains is recorded for full fine-tuning and for LoRA with a large
    rank on every linear layer; the two sets must be equal. The exact row-sparse embedding path
    engages on a *trainable* embedding table (a property of the model, tests/test_sparse_rows.py);
    it is switched off here so that both runs take the dense client path.
    """
    import fednlp_bench

    package = str(Path(fednlp_bench.__file__).parent)
    builder = peft_methods.__file__

    def lines_of(cfg):
        seen = set()

        def tracer(frame, event, arg):
            name = frame.f_code.co_filename
            if name.startswith(package) and name != builder:
                seen.add((name, frame.f_lineno))
                return tracer
            return None

        prep = prepare(cfg)
        part = make_partition(cfg, prep.task, prep.dsd)
        model = build_model(cfg, prep)
        alg = algorithms.get(cfg.algorithm.name).from_params(cfg.algorithm.params)
        sys.settrace(tracer)
        try:
            sim = fl_trainer(cfg, prep.task, model, prep.train, prep.test, part.train, part.test, alg,
                             pad_id=prep.pad_id)
            sim.run_federated()
        finally:
            sys.settrace(None)
        return seen, sim

    common = ("fl.rounds=1", "fl.local_steps=1", "fl.sparse_embeddings=false", "threads=1", "algorithm.name=fedadam")
    full_lines, full_sim = lines_of(config.resolve("tc", "smoke", tiny_overrides(*common)))
    lora_lines, lora_sim = lines_of(config.resolve("tc", "smoke", tiny_overrides(
        *common, "model.peft=lora", "model.lora_r=64", "model.lora_targets=all-linear")))
    assert lora_sim.params.numel() < full_sim.params.numel() / 2
    assert len(full_lines) > 200  # the simulator, local training, optimiser, aggregation, evaluation ran
    assert full_lines == lora_lines, sorted(full_lines ^ lora_lines)[:10]


# --------------------------------------------------------------------------- algorithms and DP with LoRA
@pytest.mark.slow
@pytest.mark.parametrize("algorithm,vectors_down", [("fedadam", 1), ("scaffold", 2)])  # SCAFFOLD also sends c
def test_fedadam_and_scaffold_run_with_lora_on_the_trainable_vector(tiny_overrides, algorithm, vectors_down):
    cfg = config.resolve("tc", "smoke", tiny_overrides("model.peft=lora", "fl.local_steps=1", "threads=1",
                                                       f"algorithm.name={algorithm}"))
    sim = simulator(cfg)
    start = sim.global_params.clone()
    sim.run_federated()
    n = EXPECTED_TC["lora"]
    assert not torch.equal(sim.global_params, start)
    tensors = list(_tensors(sim.algorithm.state_dict()))  # FedAdam moments; SCAFFOLD c and every c_i
    assert tensors and all(t.numel() == n for t in tensors)
    assert sim.state.costs.bytes_down == 2 * 2 * n * 4 * vectors_down
    assert sim.state.per_round[-1]["round"] == 2


@pytest.mark.slow
def test_user_level_dp_runs_with_lora(tiny_overrides):
    cfg = config.resolve("tc", "smoke", tiny_overrides(
        "model.peft=lora", "fl.local_steps=1", "threads=1", "privacy.user_level=true", "privacy.user_noise=0.5"))
    rec, _ = run(cfg)
    user = rec["privacy"]["user_level"]
    assert rec["cost"]["n_params"] == EXPECTED_TC["lora"] and rec["peft"]["method"] == "lora"
    assert user["noise_multiplier"] == 0.5 and 0 < user["epsilon"] < float("inf")
    assert len(user["per_round"]) == 2


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


# --------------------------------------------------------------------------- prompt and prefix wiring
def _tiny_bert(layers: int = 1) -> BertModel:
    cfg = BertConfig(vocab_size=50, hidden_size=8, num_attention_heads=2, num_hidden_layers=layers,
                     intermediate_size=16, max_position_embeddings=32, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, attn_implementation="eager")
    torch.manual_seed(0)
    return BertModel(cfg).eval()


class _Wrapper(torch.nn.Module):
    """A task-model shape (``base_model`` + head) around a tiny BERT, for the hooks."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert
        self.config = bert.config
        self.classifier = torch.nn.Linear(8, 2)

    @property
    def base_model(self) -> BertModel:
        return self.bert

    def forward(self, **kw):
        return self.bert(**kw)


def test_prefix_enters_attention_as_extra_keys_and_values():
    """Hand-computed attention of a 1-layer BERT over [prefix keys; token keys] vs the hooked model."""
    bert = _tiny_bert()
    model = _Wrapper(bert)
    peft_methods.apply(model, None, ModelConfig(peft="prefix", prefix_tokens=3))
    with torch.no_grad():
        model.peft_prefix.embedding.weight.normal_()
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).last_hidden_state
        # reference, written out: embeddings at positions 0..4, one attention layer, FFN
        emb = bert.embeddings(input_ids=ids)
        att = bert.encoder.layer[0].attention
        kv = model.peft_prefix.embedding.weight.view(3, 2, 8)  # (prefix token, key|value, hidden)
        q = att.self.query(emb)
        k = torch.cat([kv[:, 0].expand(2, 3, 8), att.self.key(emb)], 1)
        v = torch.cat([kv[:, 1].expand(2, 3, 8), att.self.value(emb)], 1)
        heads = lambda x: x.view(2, x.shape[1], 2, 4).transpose(1, 2)  # noqa: E731
        scores = heads(q) @ heads(k).transpose(-1, -2) / 2.0  # sqrt(head_dim 4)
        keep = torch.cat([torch.ones(2, 3), mask.float()], 1)[:, None, None, :]
        probs = scores.masked_fill(keep == 0, float("-inf")).softmax(-1)
        ctx = (probs @ heads(v)).transpose(1, 2).reshape(2, 5, 8)
        h = att.output(ctx, emb)
        layer = bert.encoder.layer[0]
        want = layer.output(layer.intermediate(h), h)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_prompt_is_prepended_to_the_input_and_removed_from_the_output():
    bert = _tiny_bert(layers=2)
    model = _Wrapper(bert)
    peft_methods.apply(model, None, ModelConfig(peft="prompt", prefix_tokens=2, prompt_init="random"))
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    tt = torch.tensor([[0, 0, 1], [0, 1, 0]])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=tt)
        prompt = model.peft_prompt.embedding.weight
        embeds = torch.cat([prompt.expand(2, 2, 8), bert.embeddings.word_embeddings(ids)], 1)
        handles = list(bert._forward_pre_hooks), list(bert._forward_hooks)
        bert._forward_pre_hooks.clear(), bert._forward_hooks.clear()
        ref = bert(inputs_embeds=embeds, attention_mask=torch.cat([torch.ones(2, 2, dtype=torch.long), mask], 1),
                   token_type_ids=torch.cat([torch.zeros(2, 2, dtype=torch.long), tt], 1))
    assert handles[0] and handles[1]
    assert out.last_hidden_state.shape == (2, 3, 8)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state[:, 2:])
    torch.testing.assert_close(out.pooler_output, bert.pooler(ref.last_hidden_state[:, 2:]))


def test_methods_train_exactly_their_parameters():
    """Names and counts on the real tc model (the head is trained under every method)."""
    from fednlp_bench.models import resolve_model

    path, tc = resolve_model("minilm-l6"), tasks.get("tc")
    info = {"label_names": [str(i) for i in range(BBC_LABELS)]}
    for method, expected in EXPECTED_TC.items():
        model = peft_methods.build_model(tc, path, info, ModelConfig(peft=method))
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected, method
        assert {"classifier.weight", "classifier.bias"} <= set(names), method
        assert not any("word_embeddings" in n or "pooler" in n for n in names), method
    # Li & Liang's reparameterisation: embedding, Linear(384, 384), Linear(384, 6 layers x 2 x 384)
    model = peft_methods.build_model(tc, path, info, ModelConfig(peft="prefix", prefix_projection=True))
    projected = 10 * HIDDEN + HIDDEN * HIDDEN + HIDDEN + HIDDEN * 2 * LAYERS * HIDDEN + 2 * LAYERS * HIDDEN
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == projected + head_params(BBC_LABELS)
    ids = torch.tensor([[101, 2023, 2003, 102]])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (1, BBC_LABELS) and torch.isfinite(logits).all()
    model = peft_methods.build_model(tc, path, info, ModelConfig(peft="lora", train_modules=["pooler"]))
    extra = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "pooler" in n)
    assert extra == HIDDEN * HIDDEN + HIDDEN


@pytest.mark.slow
def test_sample_level_dp_with_lora_uses_ghost_and_ia3_falls_back_to_vmap(tiny_overrides):
    base = ("fl.rounds=1", "fl.local_steps=1", "threads=1", "privacy.sample_level=true", "privacy.sample_noise=0.5")
    lora, _ = run(config.resolve("tc", "smoke", tiny_overrides("model.peft=lora", *base)))
    assert lora["privacy"]["sample_level"]["method"] == "ghost"
    assert lora["privacy"]["sample_level"]["method_fallback"] is None
    ia3, _ = run(config.resolve("tc", "smoke", tiny_overrides("model.peft=ia3", *base)))
    assert ia3["privacy"]["sample_level"]["method"] == "vmap"
    assert "ia3_l" in ia3["privacy"]["sample_level"]["method_fallback"]


def test_leaderboard_keeps_full_and_lora_apart():
    from test_leaderboard import make_record

    from fednlp_bench.leaderboard.keys import setup_chips
    from fednlp_bench.leaderboard.load import LoadedRecord
    from fednlp_bench.leaderboard.tables import make_tables

    full = make_record(value=0.8)
    lora = make_record(value=0.7)
    lora["peft"] = {"method": "lora", "params": {"lora_r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0,
                                                 "lora_targets": ["query", "value"]}}
    tables = make_tables([LoadedRecord(Path(f"/r/{i}.json"), r) for i, r in enumerate((full, lora))])
    # the method is part of the experiment's setup: full and LoRA runs never share a row (nor a table)
    assert len(tables) == 2 and all(len(t.rows) == 1 for t in tables)
    chips = [" ".join(setup_chips(t.key.setup_dict)) for t in tables]
    assert sum("peft lora" in c and "lora_r=8" in c for c in chips) == 1, chips


def test_record_carries_method_and_params():
    cfg = ModelConfig(peft="lora", lora_r=4)
    model = _Wrapper(_tiny_bert())
    tc_like = type("T", (), {"head_modules": ("classifier",)})()
    peft_methods.apply(model, tc_like, cfg)
    d = peft_methods.describe(model, cfg)
    assert d["method"] == "lora" and d["params"]["lora_r"] == 4 and d["params"]["lora_targets"] == ["query", "value"]
    assert d["n_trainable"] == 1 * 2 * 4 * (8 + 8) + (8 * 2 + 2)
    assert d["n_total"] == sum(p.numel() for p in model.parameters())
    assert np.isclose(d["trainable_fraction"], d["n_trainable"] / d["n_total"])
