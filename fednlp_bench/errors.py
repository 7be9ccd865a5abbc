"""The suite's user-facing errors, in one place.

Every error a user can cause (a bad config value, an unknown name, a broken data file or
plugin) derives from :class:`UserError`; the command line prints its message as one line
and exits with code 2. Each message names the bad value and what is allowed. Anything
else that escapes is a bug in the suite and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix; the message says what was wrong and what is allowed."""


class ConfigError(UserError):
    """A configuration value is invalid; the message names it and what is allowed."""


class DatasetError(UserError):
    """A dataset name, file or column is invalid; the message says what is allowed."""


class PartitionError(UserError):
    """Invalid partitioner parameters or inputs."""


class PluginError(UserError):
    """An algorithm (or other plugin) could not be found, loaded or behaved wrongly; the message names it."""


class SamplerError(UserError):
    """A client sampler is unknown or returned an invalid cohort."""


class ModelNotFound(UserError):
    """A model name or path cannot be resolved offline."""


class RecordError(UserError):
    """A result record does not follow the schema."""


class RunError(UserError):
    """The run cannot continue (e.g. every client of a round failed)."""
