"""Built-in brokers."""

from __future__ import annotations

from pydantic import Field

from strikebench.api import BrokerPlugin, PluginParams
from strikebench.hookspecs import hookimpl

__all__ = ["BacktestBroker"]


class BacktestParams(PluginParams):
    initial_cash: float = Field(100_000.0, gt=0, le=1e12, description="starting cash, dollars (at most a trillion)")


class BacktestBroker(BrokerPlugin):
    """Simulated fills by the configured fill model against chain quotes; cash settlement at expiry."""

    name = "backtest"
    Params = BacktestParams


@hookimpl
def register_brokers(register):
    register(BacktestBroker)
    from strikebench.brokers.paper import PaperBroker  # the live-runtime broker (strikebench.live)

    register(PaperBroker)
    from strikebench.brokers.ibkr import IBKRBroker  # TWS / IB Gateway (ib_async is imported on connect)

    register(IBKRBroker)
    from strikebench.brokers.tradier import TradierBroker  # Tradier sandbox / live (strikebench.live)

    register(TradierBroker)
