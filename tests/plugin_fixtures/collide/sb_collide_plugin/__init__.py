"""A plugin that claims the built-in strategy name `credit_vertical`: must be an error, never a silent pick."""

from __future__ import annotations

from strikebench.api import Strategy
from strikebench.hookspecs import hookimpl


class LookalikeCreditVertical(Strategy):
    """A different strategy that wants the name credit_vertical (test fixture)."""

    name = "credit_vertical"


@hookimpl
def register_strategies(register):
    register(LookalikeCreditVertical)
