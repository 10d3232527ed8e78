"""The synthetic market: strikebench's embedded default data source.

SPX minute bars over real sessions (day archetypes, a two-factor variance
process, fat tails, U-shaped volume, scheduled and injected events), XSP =
SPX/10, VIX, VIX9D and the VIX futures curve, and option chains (SPXW dailies,
SPX AM monthlies, XSP dailies, VIX monthlies) priced on an arbitrage-free SSVI
surface with tick-rounded bid/ask. Deterministic from a seed; shaped by a
named YAML scenario. See docs/synthetic-market.md.
"""

from .scenario import ARCHETYPES, Scenario, ScenarioError, load_scenario, shipped_scenarios

__all__ = [
    "SyntheticMarket",
    "SYMBOLS",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "shipped_scenarios",
    "ARCHETYPES",
    "describe",
    "export",
]


def __getattr__(name):
    # the market (numpy/scipy-heavy) is imported on first use, so reading or validating a scenario stays cheap
    if name in ("SyntheticMarket", "SYMBOLS"):
        from . import market

        return getattr(market, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe(market, png_path=None, day=None):
    """Rich summary of ``market`` and a PNG plot; see :func:`strikebench.feeds.synthetic.describe.describe`."""
    from .describe import describe as _describe

    return _describe(market, png_path, day)


def export(market, out_dir, days=None, **kwargs):
    """Write bars and chains to Parquet; see :func:`strikebench.feeds.synthetic.export.export`."""
    from .export import export as _export

    # importing the submodule `export` binds it as this package's attribute `export`, over this function:
    # put the function back, so that a second `from strikebench.feeds.synthetic import export` is callable
    globals()["export"] = _export_function
    return _export(market, out_dir, days, **kwargs)


_export_function = export
