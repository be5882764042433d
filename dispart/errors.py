"""Errors raised for bad user input. They always name the offending file, field or class."""


class DispartError(Exception):
    """Base class of every error dispart raises on purpose."""


class DataError(DispartError):
    """A data file, folder or manifest entry cannot be used (the message names it)."""


class ConfigError(DispartError):
    """A configuration value or override is invalid (the message names the field)."""


class RunDirError(DispartError):
    """A run folder is missing, incomplete or incompatible with the request."""
