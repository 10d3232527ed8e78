"""Built-in commission and fee schedules.

``cboe_retail`` (the default) charges per option contract traded:

* a broker commission (default $0.65, a typical retail rate),
* the exchange fee of the product (defaults approximate Cboe's customer fees:
  SPX/SPXW $0.60, XSP $0.00, VIX $0.25; equity ETF options $0.00), and
* regulatory fees (ORF + OCC clearing, default $0.03).

Nothing is charged on cash settlement at expiry. Change any figure in YAML:
``broker: {commission: {name: cboe_retail, params: {per_contract: 0.50}}}``.
"""

from __future__ import annotations

from pydantic import Field

from strikebench.api import CommissionModel, PluginParams
from strikebench.hookspecs import hookimpl
from strikebench.options.orders import Order

__all__ = ["CboeRetail", "ZeroCommission"]


class CboeRetailParams(PluginParams):
    per_contract: float = Field(0.65, ge=0, description="broker commission per contract, dollars")
    exchange_fees: dict[str, float] = Field(
        default_factory=lambda: {"SPX": 0.60, "SPXW": 0.60, "XSP": 0.0, "VIX": 0.25},
        description="exchange fee per contract by root, dollars (roots not listed: 0)")
    regulatory: float = Field(0.03, ge=0, description="ORF + OCC fees per contract, dollars")


class CboeRetail(CommissionModel):
    """Retail-style schedule: commission + exchange fee + regulatory fees per contract."""

    name = "cboe_retail"
    Params = CboeRetailParams

    def fees(self, order: Order, quantity: int) -> float:
        """Dollars charged for filling ``quantity`` combos of ``order``, rounded to the cent."""
        p = self.params
        total = 0.0
        for leg in order.legs:
            contracts = abs(leg.ratio) * quantity
            total += contracts * (p.per_contract + p.exchange_fees.get(leg.contract.root, 0.0) + p.regulatory)
        return round(total, 2)


class ZeroCommission(CommissionModel):
    """No commissions or fees (for comparisons and hand-checked tests)."""

    name = "zero"

    def fees(self, order: Order, quantity: int) -> float:
        return 0.0


@hookimpl
def register_commissions(register):
    register(CboeRetail)
    register(ZeroCommission)
