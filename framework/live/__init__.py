"""The live runtime: a live clock, a live broker, idempotent orders, reconciliation, guardrails.

See docs/live.md. ``broker_api`` is what every live broker implements (``paper``
today; Tradier and IBKR next); ``runtime`` drives the same :class:`Engine` the
backtest uses, bar by bar on a :mod:`clock`, with a broker adapter in place of
the backtest broker.
"""
