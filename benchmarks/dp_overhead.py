"""Step time and memory of sample-level DP-SGD vs non-DP training, side by side in one run.

One optimiser step (gradient + noise + AdamW) of full fine-tuning of the
packaged MiniLM (``minilm-l6``, sequence classification on BBC News) on the
same batch, for:

* ``nondp``        plain mini-batch gradient (the baseline every ratio is to);
* ``ghost``        ours: book-keeping ghost clipping (fednlp_bench.privacy.per_sample.GhostClipper);
* ``vmap``         ours, generic fallback: torch.func vmap(grad) per-example gradients;
* ``naive``        per-example Python loop (batch of 1, clip, sum);
* ``opacus-hooks`` / ``opacus-ghost``  Opacus 1.6 (only if ``opacus`` is importable).

Methods run interleaved (round robin) for ``--reps`` rounds after one warm-up
step each; the table shows the median and the median of the per-rep ratios to
non-DP. Peak memory: on CUDA the allocator's peak per method; on CPU the peak
RSS increase during one step (after a warm-up step) of a fresh subprocess per
method (``--no-memory`` skips it).

Usage::

    python benchmarks/dp_overhead.py --batch 16 --seq 128 --reps 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

ALL = ("nondp", "ghost", "vmap", "naive", "opacus-hooks", "opacus-ghost")


def load_batch(batch: int, seq: int, dataset: str, device: torch.device):
    from fednlp_bench import tasks
    from fednlp_bench.models import load_tokenizer

    ds = tasks.get("tc").load(dataset)["train"]
    tok = load_tokenizer("minilm-l6")
    texts = ds.data.column("text").to_pylist()[:batch]
    labels = ds.data.column("label").to_numpy()[:batch]
    enc = tok(texts, truncation=True, max_length=seq, padding=True, return_tensors="pt")
    n_labels = len(ds.features["label"].names)
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
           "labels": torch.as_tensor(labels, dtype=torch.long)}
    return {k: v.to(device) for k, v in out.items()}, n_labels


def build_model(n_labels: int, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    from fednlp_bench.models import resolve_model

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm-l6"), num_labels=n_labels)
    return model.to(device).train()


def make_step(method: str, batch: dict, n_labels: int, device: torch.device, clip: float, sigma: float) -> Callable[[], None]:
    """Build a fresh model for ``method`` and return its one-step closure."""
    from fednlp_bench.local import flatten_model
    from fednlp_bench.privacy.dp_sgd import DPSGD, SampleDPParams, noise_generator
    from fednlp_bench.privacy.per_sample import per_example_loss, reference_clipped_sum

    model = build_model(n_labels, device)
    if method.startswith("opacus"):
        return _opacus_step(method, model, batch, clip, sigma)
    _, grads = flatten_model(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    gen = noise_generator(0, 1, 0, device)
    if method == "nondp":
        def step() -> None:
            grads.zero_()
            model(**batch).loss.backward()
            optimizer.step()
    elif method in ("ghost", "vmap"):
        dp = DPSGD(model, SampleDPParams(clip=clip, noise_multiplier=sigma, method=method))

        def step() -> None:
            dp.gradient(batch, grads, gen)
            optimizer.step()
    elif method == "naive":
        noise = torch.empty_like(grads)

        def step() -> None:
            reference_clipped_sum(model, per_example_loss, batch, clip)
            torch.randn(grads.shape, generator=gen, out=noise)
            grads.add_(noise, alpha=sigma * clip).div_(len(batch["labels"]))
            optimizer.step()
    else:
        raise SystemExit(f"unknown method {method!r} (choose from {', '.join(ALL)})")
    return step


def _opacus_step(method: str, model, batch: dict, clip: float, sigma: float) -> Callable[[], None]:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    n, t = batch["input_ids"].shape
    # Opacus needs every embedding lookup batched: BERT's default (1, T) position ids break its hooks
    inputs["position_ids"] = torch.arange(t, device=batch["input_ids"].device).expand(n, t).contiguous()
    inputs["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    data = DataLoader(TensorDataset(torch.arange(n)), batch_size=n)  # only sizes matter; we feed the batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    engine = PrivacyEngine(accountant="rdp")
    mode = "hooks" if method == "opacus-hooks" else "ghost"
    criterion = torch.nn.CrossEntropyLoss()
    if mode == "ghost":
        model, optimizer, criterion, _ = engine.make_private(
            module=model, optimizer=optimizer, data_loader=data, criterion=criterion, noise_multiplier=sigma,
            max_grad_norm=clip, poisson_sampling=False, grad_sample_mode="ghost")
    else:
        model, optimizer, _ = engine.make_private(
            module=model, optimizer=optimizer, data_loader=data, noise_multiplier=sigma, max_grad_norm=clip,
            poisson_sampling=False, grad_sample_mode="hooks")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(**inputs).logits, batch["labels"])
        loss.backward()
        optimizer.step()

    return step


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_probe(args) -> None:
    """Subprocess mode: peak RSS growth during one step of one method (after a warm-up step), as JSON.

    The RSS high-water mark is reset after set-up and warm-up (``/proc/self/clear_refs``,
    Linux >= 4.0), so data loading, model construction and optimiser state do not count.
    """
    import gc

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    batch, n_labels = load_batch(args.batch, args.seq, args.dataset, device)
    step = make_step(args.memory_probe, batch, n_labels, device, args.clip, args.sigma)
    step()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _status_kib("VmRSS")
    step()
    peak = _status_kib("VmHWM")
    print(json.dumps({"method": args.memory_probe, "peak_extra_mb": (peak - base) / 1024}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--dataset", default="bbc")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="skip the timing, print peak memory only")
    ap.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_probe:
        return memory_probe(args)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    if any(m.startswith("opacus") for m in methods):
        try:
            import opacus  # noqa: F401
        except ImportError:
            print("opacus not installed: skipping opacus-hooks/opacus-ghost", file=sys.stderr)
            methods = [m for m in methods if not m.startswith("opacus")]
    batch, n_labels = load_batch(args.batch, args.seq, args.dataset, device)
    n_tokens = int(batch["attention_mask"].sum())
    steps: dict[str, Callable[[], None]] = {}
    errors: dict[str, str] = {}
    for m in [] if args.memory_only else methods:
        try:
            steps[m] = make_step(m, batch, n_labels, device, args.clip, args.sigma)
            steps[m]()  # warm-up
        except Exception as exc:  # noqa: BLE001 - a peer that fails on this model is reported, not fatal
            errors[m] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}"
            steps.pop(m, None)
    times: dict[str, list[float]] = {m: [] for m in steps}
    peak_gpu: dict[str, float] = {}
    for _ in range(args.reps):
        for m, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peak_gpu[m] = torch.cuda.max_memory_allocated() / 2**20
            times[m].append(time.perf_counter() - t0)
    memory: dict[str, float] = dict(peak_gpu)
    if device.type == "cpu" and not args.no_memory:
        for m in methods if args.memory_only else steps:
            cmd = [sys.executable, __file__, "--memory-probe", m, "--batch", str(args.batch), "--seq", str(args.seq),
                   "--dataset", args.dataset, "--threads", str(args.threads), "--device", "cpu"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if lines:
                memory[m] = json.loads(lines[-1])["peak_extra_mb"]
    base = statistics.median(times["nondp"]) if "nondp" in times else None
    print(f"# dp_overhead: MiniLM-L6 full fine-tuning, batch {args.batch} x {batch['input_ids'].shape[1]} tokens "
          f"({n_tokens} non-pad), {device.type}, {args.threads} threads, {args.reps} interleaved reps, "
          f"torch {torch.__version__}")
    mem_label = "peak GPU MiB" if device.type == "cuda" else "peak RSS +MiB"
    print(f"{'method':<14} {'median s':>9} {'min s':>8} {'x non-DP':>9} {mem_label:>14}")
    if args.memory_only:
        times = {m: [float("nan")] for m in methods}
    for m, ts in times.items():
        med = statistics.median(ts)
        # median of per-rep ratios: each rep runs every method back to back, so load drifts cancel
        ratio = f"{statistics.median(t / b for t, b in zip(ts, times['nondp'])):.2f}" if base else "-"
        mem = f"{memory[m]:.0f}" if m in memory else "-"
        print(f"{m:<14} {med:>9.3f} {min(ts):>8.3f} {ratio:>9} {mem:>14}")
    for m, err in errors.items():
        print(f"{m:<14} failed: {err}")


if __name__ == "__main__":
    main()
