"""The one exception type raised for bad partitioner input."""

from __future__ import annotations


class PartitionError(ValueError):
    """Bad partition request: unknown method or parameter, invalid value, or mismatched input.

    Messages are one line and name the bad value and what is allowed.
    """
