"""Errors a user can act on: one line, what is wrong and where, and an exit code.

The CLI prints ``str(error)`` for any :class:`StrikebenchError` and exits with
``error.exit_code``; it never shows a traceback for these.
"""

from __future__ import annotations


class StrikebenchError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1


class ConfigError(StrikebenchError):
    """A configuration (YAML, scenario, CSV calendar...) is malformed or invalid."""

    exit_code = 2


class PluginError(StrikebenchError):
    """A plugin failed to load, collides with another or implements an unknown hook."""

    exit_code = 3


class DataError(StrikebenchError):
    """A data file or a quote is unusable."""

    exit_code = 4


class BrokerError(StrikebenchError):
    """A broker refused or garbled a request."""

    exit_code = 5
