"""Typed errors of wps-sam.

Library code raises these; only the CLI turns them into one-line messages and exit codes.
Every message names what is wrong and, where there is one, how to fix it.
"""


class WpsSamError(Exception):
    """Base class of every error that a user can cause and fix."""


class ConfigError(WpsSamError):
    """A configuration file, option or override has a bad key or value."""


class CheckpointError(WpsSamError):
    """A checkpoint is missing, unreadable, truncated, or of another architecture."""


class DataError(WpsSamError):
    """A data set, annotation file or image cannot be used."""


class TrainingError(WpsSamError):
    """Training cannot go on (for instance the loss stopped being finite)."""
