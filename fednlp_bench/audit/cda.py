"""Counterfactual data augmentation on the clients (``fairness.cda=true``).

Counterfactual data augmentation (Lu et al. 2020, "Gender bias in neural natural
language processing"; Zmigrod et al. 2019) adds, for every training example that
mentions a gendered term, a copy with the terms swapped (he <-> she, his <-> her,
Mr <-> Mrs..., the word pairs of :mod:`fednlp_bench.audit.counterfactual`) and the
same label, so the model sees both versions equally often; Gupta et al. 2022
("Mitigating gender bias in distilled language models via counterfactual role
reversal") use the same role reversal for language models.

In federated learning this is a purely local transformation: each client rewrites
its own rows and adds the copies to its own data, so nothing leaves a device and the
server needs no access to text. :func:`augment` does exactly that, client by client,
and returns the extended training data and client row lists; the test split is left
untouched.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fednlp_bench.audit.counterfactual import swap_gender
from fednlp_bench.audit.rows import append_rows
from fednlp_bench.batching import TokenizedData


def augment(task: Any, train_ds: Any, train: TokenizedData, client_rows: list[np.ndarray], tokenizer: Any,
            max_len: int, swap: Callable[[str], tuple[str, int]] = swap_gender
            ) -> tuple[TokenizedData, list[np.ndarray], dict[str, Any]]:
    """Each client appends gender-swapped copies of its own rows (``counterfactual_copies``).

    ``train_ds`` is the untokenized training split whose row ``i`` is row ``i`` of ``train``.
    Returns ``(train + copies, client rows with their copies, summary)``; a client's copies
    are built from its rows only.
    """
    if not task.supports("counterfactual_copies"):
        from fednlp_bench.errors import ConfigError

        raise ConfigError(f"fairness.cda needs the task capability 'counterfactual_copies', which task "
                          f"'{task.name}' does not declare (see docs/tasks.md)")
    out_rows = [np.asarray(r, dtype=np.int64) for r in client_rows]
    per_client = []
    for c, rows in enumerate(out_rows):
        copies, _ = task.counterfactual_copies(train_ds, rows, tokenizer, max_len, swap)
        if len(copies) == 0:
            per_client.append(0)
            continue
        start = len(train)
        train = append_rows(train, copies)
        out_rows[c] = np.concatenate([rows, np.arange(start, len(train), dtype=np.int64)])
        per_client.append(len(copies))
    n_orig = int(sum(len(r) for r in client_rows))
    summary = {"method": "gender term swap (counterfactual data augmentation, on each client)",
               "copies": int(sum(per_client)), "original_rows": n_orig,
               "clients_with_copies": int(sum(1 for n in per_client if n)), "n_clients": len(client_rows)}
    return train, out_rows, summary
