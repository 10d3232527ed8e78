"""A rich summary of a generated market and a PNG plot (SPX with VIX, an IV smile, the term structure)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .scenario import ARCHETYPES

__all__ = ["describe", "summary_stats"]


def summary_stats(market) -> dict:
    """The figures :func:`describe` prints, as a dict (also used by tests and the docs)."""
    d = market.daily()
    r = np.log(d.spx_close).diff().dropna().to_numpy()
    vix = d.vix.to_numpy()
    rv30 = np.array([r[i:i + 21].std(ddof=1) * np.sqrt(252) * 100 for i in range(len(r) - 20)])
    ar = np.abs(r - r.mean())
    acf = [float(np.corrcoef(ar[:-k], ar[k:])[0, 1]) for k in range(1, 11)] if len(r) > 30 else []
    dev = r - r.mean()
    kurt = float(np.mean(dev ** 4) / np.mean(dev ** 2) ** 2) if len(r) > 3 else float("nan")
    return {
        "sessions": len(d),
        "spx_first_open": float(d.spx_open.iloc[0]),
        "spx_last_close": float(d.spx_close.iloc[-1]),
        "spx_return_pct": float(100 * (d.spx_close.iloc[-1] / d.spx_open.iloc[0] - 1)),
        "realized_vol_pct": float(r.std(ddof=1) * np.sqrt(252) * 100) if len(r) > 1 else float("nan"),
        "kurtosis": kurt,                      # Pearson (a normal has 3)
        "excess_kurtosis": kurt - 3.0,         # Pearson - 3 (a normal has 0)
        "abs_return_acf_1_10": float(np.mean(acf)) if acf else float("nan"),
        "vix_mean": float(vix.mean()),
        "vix_min": float(vix.min()),
        "vix_max": float(vix.max()),
        "corr_dvix_return": float(np.corrcoef(np.diff(vix), r)[0, 1]) if len(r) > 2 else float("nan"),
        "vix_above_realized_30d": float(np.mean(vix[: len(rv30)] > rv30)) if len(rv30) else float("nan"),
        "vix9d_below_vix": float(np.mean(d.vix9d < d.vix)),
        "futures_contango": float(np.mean(d.vx1 > d.vix)),
        "archetypes": {a: int((d.archetype == a).sum()) for a in ARCHETYPES},
        "event_days": {k: int(d.events.str.contains(k).sum()) for k in ("fomc", "cpi", "nfp")},
        "injected_events": [f"{e.session} {e.label} {e.move_pct:+.2f}%" for e in market.events().itertuples()
                            if e.kind in ("injected", "episode")],
    }


def _day(market, day) -> pd.Timestamp:
    sessions = market.sessions()
    if day is None:
        return pd.Timestamp(sessions[len(sessions) // 2])
    ts = pd.Timestamp(day).normalize()
    i = sessions.searchsorted(ts)
    if i >= len(sessions):
        raise ValueError(f"{ts.date()} is after the market's last session {sessions[-1].date()}")
    return pd.Timestamp(sessions[i])


def describe(market, png_path: str | Path | None = None, day=None):
    """Summary of ``market`` as a rich renderable; writes the plot to ``png_path`` when given.

    ``day`` picks the session of the smile and term-structure panels (default: the
    middle session); the chain is the one at 10:00 New York time.
    """
    st = summary_stats(market)
    sc = market.scenario
    head = Table(title=f"Synthetic market  seed={market.seed}  scenario={sc.name}  "
                       f"{market.start} .. {market.end}", show_header=False, title_justify="left")
    head.add_column("figure")
    head.add_column("value", justify="right")
    head.add_row("sessions", f"{st['sessions']}")
    head.add_row("SPX first open -> last close",
                 f"{st['spx_first_open']:,.2f} -> {st['spx_last_close']:,.2f} ({st['spx_return_pct']:+.1f}%)")
    head.add_row("realized vol (close-to-close, ann.)", f"{st['realized_vol_pct']:.1f}%")
    head.add_row("VIX mean [min, max]", f"{st['vix_mean']:.1f} [{st['vix_min']:.1f}, {st['vix_max']:.1f}]")
    head.add_row("implied - realized (VIX mean - realized vol)", f"{st['vix_mean'] - st['realized_vol_pct']:+.1f} pts")
    head.add_row("days VIX > next-30-day realized vol", f"{100 * st['vix_above_realized_30d']:.0f}%")
    head.add_row("daily-return excess kurtosis (normal: 0)", f"{st['excess_kurtosis']:.2f}")
    head.add_row("|return| autocorrelation, lags 1-10", f"{st['abs_return_acf_1_10']:+.3f}")
    head.add_row("corr(dVIX, SPX return)", f"{st['corr_dvix_return']:+.2f}")
    head.add_row("days VIX9D < VIX", f"{100 * st['vix9d_below_vix']:.0f}%")
    head.add_row("days VIX futures in contango (VX1 > VIX)", f"{100 * st['futures_contango']:.0f}%")

    arch = Table(title="Day archetypes", title_justify="left")
    arch.add_column("archetype")
    arch.add_column("days", justify="right")
    arch.add_column("share", justify="right")
    for a, n in st["archetypes"].items():
        arch.add_row(a, str(n), f"{100 * n / max(st['sessions'], 1):.0f}%")

    ev = Table(title="Events", title_justify="left")
    ev.add_column("event")
    ev.add_column("days", justify="right")
    for k, n in st["event_days"].items():
        ev.add_row(k.upper(), str(n))
    for line in st["injected_events"]:
        ev.add_row(line, "1")
    parts = [head, arch, ev]
    if market.path.ignored_events:
        parts.append(Text("ignored: " + "; ".join(market.path.ignored_events), style="yellow"))
    if png_path is not None:
        path = plot(market, png_path, day)
        parts.append(Text(f"plot written to {path}"))
    return Group(*parts)


def plot(market, png_path, day=None) -> Path:
    """SPX close with VIX; IV smiles at 10:00 of ``day``; ATM term structure with VIX9D/VIX."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = market.daily()
    when = _day(market, day)
    at = pd.Timestamp(dt.datetime.combine(when.date(), dt.time(10, 0)), tz="America/New_York")
    snap = market.snapshot("SPX", at)
    df = snap.to_pandas()
    spot = snap.underlying_price

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    ax.plot(d.index, d.spx_close, color="tab:blue", lw=1.2, label="SPX close")
    ax.set_ylabel("SPX")
    ax2 = ax.twinx()
    ax2.plot(d.index, d.vix, color="tab:red", lw=1.0, label="VIX")
    ax2.set_ylabel("VIX")
    ax.axvline(when, color="grey", ls=":", lw=1)
    ax.set_title(f"SPX and VIX (seed {market.seed}, {market.scenario.name})")
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")

    ax = axes[1]
    exps = sorted(df.expiry.unique())
    dtes = [(pd.Timestamp(e) - when).days for e in exps]
    for target in (0, 7, 30):
        j = int(np.argmin(np.abs(np.array(dtes) - target)))
        e = exps[j]
        g = df[(df.expiry == e) & (df.root == ("SPX" if target == 30 and (df[(df.expiry == e)].root == "SPX").any() else "SPXW"))]
        otm = g[(g.is_call & (g.strike >= spot)) | (~g.is_call & (g.strike < spot))].sort_values("strike")
        otm = otm[np.abs(otm.delta) > 0.02]
        ax.plot(otm.strike, 100 * otm.iv, lw=1.2, label=f"{dtes[j]} DTE")
    ax.axvline(spot, color="grey", ls=":", lw=1)
    ax.set_xlabel("strike")
    ax.set_ylabel("implied vol (%)")
    ax.set_title(f"SPX smiles {when.date()} 10:00")
    ax.legend()

    ax = axes[2]
    atm = []
    for e, dte in zip(exps, dtes):
        g = df[(df.expiry == e)]
        i = (g.strike - spot).abs().idxmin()
        atm.append((max(dte, 0.25), 100 * g.loc[i, "iv"]))
    atm = np.array(atm)
    ax.plot(atm[:, 0], atm[:, 1], "o-", ms=3, lw=1, label="ATM IV")
    row = d.loc[when]
    ax.scatter([9, 30], [row.vix9d, row.vix], color="tab:red", zorder=3, label="VIX9D, VIX (close)")
    ax.set_xlabel("calendar days to expiry")
    ax.set_ylabel("implied vol (%)")
    ax.set_title("term structure")
    ax.legend()
    fig.tight_layout()
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
