"""Built-in risk managers (filled in by the credit_vertical work)."""

from __future__ import annotations

from strikebench.hookspecs import hookimpl


@hookimpl
def register_risk_managers(register):
    pass
