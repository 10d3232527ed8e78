"""The ``tradier`` broker: the account at Tradier (sandbox or live) behind :class:`LiveBroker`.

YAML::

    broker: {name: tradier, account: ${TRADIER_ACCOUNT}, token: ${TRADIER_TOKEN}, environment: sandbox}

``environment: live`` reaches real money: ``strikebench trade`` then needs ``--live``. The HTTP client, the
order mapping and the reconciliation rules are in :mod:`strikebench.brokers.tradier_client` (docs/live.md,
"Tradier").
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from strikebench.api import BrokerPlugin, PluginParams

__all__ = ["TradierBroker", "TradierParams", "TOKEN_ENV", "ACCOUNT_ENV"]

#: the environment variables the README and every credential error name
TOKEN_ENV = "TRADIER_TOKEN"
ACCOUNT_ENV = "TRADIER_ACCOUNT"


class TradierParams(PluginParams):
    account: str = Field(description=f"Tradier account number (write ${{{ACCOUNT_ENV}}})")
    token: SecretStr = Field(description=f"API access token (write ${{{TOKEN_ENV}}}); never logged or printed")
    environment: Literal["sandbox", "live"] = Field(
        "sandbox", description="sandbox (paper, sandbox.tradier.com) or live (real money, api.tradier.com: "
                               "trading needs --live)")
    initial_cash: float = Field(100_000.0, gt=0, le=1e12,
                                description="the journal's starting cash (the account's own cash is what "
                                            "`broker check` and the session-end check report)")
    base_url: str | None = Field(None, description="another API host (a proxy; tests use a loopback server); "
                                                   "default by environment")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="per-request timeout")
    max_rate_wait_seconds: float = Field(65.0, ge=0, le=600,
                                         description="longest wait for a rate-limit window (HTTP 429) to reopen")
    duration: Literal["day", "gtc"] | None = Field(
        None, description="force every order's duration (default: the order's own time in force)")

    @field_validator("account")
    @classmethod
    def _account(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9]{3,32}", v):
            raise ValueError(f"a Tradier account number is letters and digits (set {ACCOUNT_ENV})")
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        t = v.get_secret_value()
        if not t.strip() or any(c.isspace() for c in t) or len(t) > 512:
            raise ValueError(f"the token is empty or holds spaces (set {TOKEN_ENV})")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v):
        if v is not None and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+/?", v):
            raise ValueError("expected http(s)://HOST[:PORT]")
        return v


class TradierBroker(BrokerPlugin):
    """Tradier brokerage (sandbox or live): multileg option orders tagged by client id, REST polling."""

    name = "tradier"
    Params = TradierParams
    live = True

    def trades_real_money(self) -> bool:
        return self.params.environment == "live"

    def api(self):
        from strikebench.brokers.tradier_client import TradierAPI

        p = self.params
        return TradierAPI(p.token.get_secret_value(), p.account, environment=p.environment, base_url=p.base_url,
                          timeout=p.timeout_seconds, max_rate_wait=p.max_rate_wait_seconds)

    def check(self, *, resolved, preview: bool = False) -> list:
        from strikebench.brokers.tradier_client import check_rows

        return check_rows(self, resolved, preview=preview)

    def connect(self, *, run_dir, market, fill_model, commission, underlying: str = "SPX"):
        from pathlib import Path

        from strikebench.brokers.tradier_client import TradierAccount

        return TradierAccount(self.api(), state_path=Path(run_dir) / "tradier_state.sqlite", commission=commission,
                              underlying=underlying, duration=self.params.duration)
