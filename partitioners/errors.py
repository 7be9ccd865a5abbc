"""The one exception type raised for bad partitioner input."""

from __future__ import annotations

from fednlp_bench.errors import PartitionError  # noqa: F401 - re-exported


