"""Built-in strategies."""

from __future__ import annotations

from strikebench.hookspecs import hookimpl


@hookimpl
def register_strategies(register):
    from strikebench.strategies.bwb_vix_hedge import BwbVixHedge
    from strikebench.strategies.credit_vertical import CreditVertical
    from strikebench.strategies.xsp_probe import XspProbe
    from strikebench.strategies.zero_dte import ZeroDte

    register(CreditVertical)
    register(BwbVixHedge)
    register(XspProbe)
    register(ZeroDte)
