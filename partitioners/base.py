"""Partitioner base class: parameters, spec/hash, validated split and the train/test contract.

A method subclasses :class:`Partitioner` and implements two hooks:

* ``_split(inputs, rng) -> (parts, plan)``: partition the train rows and return a *plan*,
  the client-level distribution the partition realises (client sizes, per-client class
  shares, group -> client map...);
* ``_apply_plan(plan, inputs, train_inputs, rng) -> parts``: partition other rows (the test split) so that
  each client's test set follows the same distribution as its train set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar

import numpy as np
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.inputs import Inputs, validate
from fednlp_bench.partitioners.partition import Partition

from fednlp_bench import hparams
from fednlp_bench.hparams import Checked

ArrayLike = Any


class PartitionerParams(Checked):
    """Base of partitioner parameter dataclasses: declared ranges raise :class:`PartitionError`.

    Set ``_prefix = "<method>: "`` so messages name the method (``quantity: beta=0.0 ...``).
    """

    _error = PartitionError
    _style = "assign"


@dataclasses.dataclass(frozen=True)
class NoParams(PartitionerParams):
    """Parameters of a method that has none."""


class Partitioner:
    """Split rows into ``n_clients`` clients; deterministic given ``seed``.

    Subclasses set ``name``, ``Params`` (a frozen dataclass whose ``__post_init__`` raises
    :class:`PartitionError` on bad values), ``requires`` (input arrays that must be given)
    and implement ``_split`` and ``_apply_plan``.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    requires: ClassVar[tuple[str, ...]] = ()
    #: bump when the algorithm changes so cached partitions are invalidated
    version: ClassVar[int] = 1
    #: whether ``n_clients=0`` means "as many clients as the data define" (natural)
    auto_clients: ClassVar[bool] = False

    def __init__(self, n_clients: int | None, seed: int = 0, **params: Any) -> None:
        if n_clients is None and self.auto_clients:
            n_clients = 0
        if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)):
            raise PartitionError(f"n_clients must be an int >= 1, got {n_clients!r}")
        low = 0 if self.auto_clients else 1
        if n_clients < low:
            extra = " (0 = as many as groups)" if self.auto_clients else ""
            raise PartitionError(f"n_clients must be >= {max(low, 1)}{extra}, got {n_clients}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise PartitionError(f"seed must be a non-negative int, got {seed!r}")
        self.n_clients = int(n_clients)
        self.seed = int(seed)
        self.params = self._make_params(params)

    @classmethod
    def _make_params(cls, params: dict[str, Any]) -> Any:
        """The method's ``Params`` from user values (coerced so that equal specs hash equally: 1 -> 1.0)."""
        return hparams.build(cls.Params, params, owner=f"partition method '{cls.name}'", prefix=f"{cls.name}: ",
                             error=PartitionError, style="assign")

    # ------------------------------------------------------------------ spec
    def spec(self) -> dict[str, Any]:
        """JSON-able description: name, params, n_clients, seed (and algorithm version)."""
        return {
            "name": self.name,
            "params": dataclasses.asdict(self.params),
            "n_clients": self.n_clients,
            "seed": self.seed,
            "version": self.version,
        }

    def spec_hash(self) -> str:
        """Stable sha256 hex digest of the canonical JSON :meth:`spec` (cache key)."""
        text = json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.params).items())
        sep = ", " if params else ""
        return f"{type(self).__name__}(n_clients={self.n_clients}, seed={self.seed}{sep}{params})"

    # ----------------------------------------------------------------- split
    def _rng(self, stream: int) -> np.random.Generator:
        # stream 0: train (== default_rng(seed)); stream 1: test
        if stream == 0:
            return np.random.default_rng(self.seed)
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(stream,)))

    def prepare(
        self,
        labels: ArrayLike | None = None,
        groups: ArrayLike | None = None,
        features: ArrayLike | None = None,
        n_rows: int | None = None,
    ) -> Inputs:
        """Validate the inputs of a train split (also checks n_clients against the rows)."""
        inputs = validate(self.name, self.requires, labels, groups, features, n_rows)
        if self.n_clients > inputs.n_rows:
            raise PartitionError(
                f"{self.name}: n_clients={self.n_clients} exceeds the number of rows ({inputs.n_rows})"
            )
        return inputs

    def split(
        self,
        labels: ArrayLike | None = None,
        groups: ArrayLike | None = None,
        features: ArrayLike | None = None,
        n_rows: int | None = None,
    ) -> list[np.ndarray]:
        """Partition rows: one sorted int64 index array per client; every row in exactly one client."""
        parts, _ = self._split(self.prepare(labels, groups, features, n_rows), self._rng(0))
        return parts

    def split_train_test(
        self,
        train_labels: ArrayLike | None = None,
        test_labels: ArrayLike | None = None,
        *,
        train_groups: ArrayLike | None = None,
        test_groups: ArrayLike | None = None,
        train_features: ArrayLike | None = None,
        test_features: ArrayLike | None = None,
        train_rows: int | None = None,
        test_rows: int | None = None,
    ) -> Partition:
        """Partition train rows, then test rows following each client's train distribution.

        ``train`` equals :meth:`split` on the train arrays. The test split reuses the plan
        of the train split (see each method for what is kept). With no test input at all,
        ``Partition.test`` is ``[]``.
        """
        inputs = self.prepare(train_labels, train_groups, train_features, train_rows)
        train, plan = self._split(inputs, self._rng(0))
        test: list[np.ndarray] = []
        if any(x is not None for x in (test_labels, test_groups, test_features, test_rows)):
            test_inputs = validate(self.name, self.requires, test_labels, test_groups, test_features, test_rows)
            test = self._apply_plan(plan, test_inputs, inputs, self._rng(1))
        return Partition(train=train, test=test, spec=self.spec())

    # ----------------------------------------------------------------- hooks
    def _split(self, inputs: Inputs, rng: np.random.Generator) -> tuple[list[np.ndarray], Any]:
        raise NotImplementedError

    def _apply_plan(self, plan: Any, inputs: Inputs, train: Inputs, rng: np.random.Generator) -> list[np.ndarray]:
        raise NotImplementedError
