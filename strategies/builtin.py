"""Built-in strategies."""

from __future__ import annotations

from strikebench.hookspecs import hookimpl


@hookimpl
def register_strategies(register):
    from strikebench.strategies.credit_vertical import CreditVertical

    register(CreditVertical)
