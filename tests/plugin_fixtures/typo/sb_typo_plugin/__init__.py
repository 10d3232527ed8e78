"""A plugin with a misspelled hook name: pluggy would silently never call it."""

from __future__ import annotations

from strikebench.api import Strategy
from strikebench.hookspecs import hookimpl


class TypoStrategy(Strategy):
    """Never registered, because the hook below is misspelled (test fixture)."""

    name = "typo_strategy"


@hookimpl
def register_stratgies(register):  # sic: register_strategies
    register(TypoStrategy)
