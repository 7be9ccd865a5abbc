"""The `make bench-privacy` table: utility, privacy guarantee, practical leakage and cost of
each run in a results directory (quick preset, tc), one row per record.

    python benchmarks/privacy_table.py results/privacy

Columns: the setting (FedAvg, DP-FedAvg with user-level epsilon, sample-level DP-SGD), final
accuracy, epsilon at delta (user level: per client; sample level: per example), membership
inference ROC-AUC of the loss-threshold attack (example level; client level when some client
was never sampled) and of offline LiRA with its TPR at 1% FPR, canary rank among the
candidates and exposure in bits (max = log2(candidates + 1)), the counterfactual flip rate
and wall time. Every figure is read from the records; nothing is recomputed here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def setting(rec: dict) -> str:
    priv = rec.get("privacy") or {}
    cfg = rec["config"]["privacy"]
    alg = rec["algorithm"]["name"]
    parts = []
    if priv.get("user_level"):
        parts.append(f"DP-{alg} (user, sigma={priv['user_level']['noise_multiplier']:.2f}, C={cfg['user_clip']:g})")
    if priv.get("sample_level"):
        parts.append(f"{alg} + DP-SGD (sample, sigma={cfg['sample_noise']:g}, C={cfg['sample_clip']:g})")
    return " + ".join(parts) or alg


def epsilon(rec: dict) -> str:
    priv = rec.get("privacy") or {}
    out = []
    for level in ("user_level", "sample_level"):
        p = priv.get(level)
        if p:
            eps = p.get("epsilon")
            out.append(f"{'user' if level == 'user_level' else 'sample'} {_f(eps, '{:.2f}') if eps is not None else 'inf'}"
                       f" (delta {p.get('delta'):.1e})")
    return "; ".join(out) or "inf (no DP)"


def row(rec: dict) -> list[str]:
    m = rec["metrics"]
    audit = rec.get("audit") or {}
    ex = (audit.get("example") or {})
    cl = audit.get("client") or {}
    lira = audit.get("lira") or {}
    can = audit.get("canary") or {}
    cf = m.get("counterfactual") or {}
    prim = m["primary"]
    return [
        setting(rec),
        f"{_f(m['initial'].get(prim))} -> {_f(m['final'].get(prim))}",
        epsilon(rec),
        _f(ex.get("auc")),
        # with few clients the client-level AUC rests on a handful of pairs: show how many
        f"{_f(cl.get('auc'))} ({cl['n_members']} vs {cl['n_nonmembers']})" if cl.get("auc") is not None else "-",
        _f(lira.get("auc")),
        _f(lira.get("tpr_at_0.01_fpr")),
        f"{can['rank']:g}/{can['n_candidates'] + 1}, {can['exposure']:.2f} of {can['max_exposure']:.2f} bits"
        if can else "-",
        _f(cf.get("flip_rate")),
        f"{rec['cost']['wall_seconds']:.0f}",
    ]


HEADER = ["setting", "accuracy (untrained -> final)", "epsilon", "MIA AUC (loss)", "client MIA AUC (members vs non)",
          "LiRA AUC", "LiRA TPR@1%FPR", "canary rank, exposure", "gender flip rate", "wall s"]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(f"usage: privacy_table.py RESULTS_DIR (got {' '.join(argv) or 'nothing'})", file=sys.stderr)
        return 2
    recs = [json.loads(p.read_text()) for p in sorted(Path(argv[0]).glob("*.json"))]
    recs = [r for r in recs if r.get("task") == "tc"]
    if not recs:
        print(f"no tc result records in {argv[0]}", file=sys.stderr)
        return 2
    rows = [row(r) for r in recs]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
