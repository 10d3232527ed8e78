"""Write a files-layout folder (docs/data-files.md) as Databento OPRA-style DBN files, zstd compressed.

Used by ``strikebench market export --format dbn`` (the synthetic market as Databento files) so that
the ``databento`` feed and ``data convert`` are tested, and benchmarked, on files made by the real
encoder: metadata by ``databento_dbn.Metadata.encode``, definitions by ``databento_dbn.InstrumentDefMsg``,
compression by ``databento_dbn.Transcoder``; the fixed-size quote and bar records are numpy arrays of
the DBN layout (:data:`strikebench.feeds.databento.CBBO_DTYPE`, checked against ``bytes(CBBOMsg(...))``
by the tests).

Per underlying and session: ``opra-pillar-<und>-YYYYMMDD.definition.dbn.zst`` (every contract quoted that
day, OCC raw symbols, one instrument id per contract for the whole export) and
``opra-pillar-<und>-YYYYMMDD.cbbo-1m.dbn.zst``
(one record per contract per snapshot minute, ``ts_recv`` = the bar's close, no bid = UNDEF_PRICE);
per symbol: ``<symbol>.ohlcv-1m.dbn.zst``; the settlements file is copied as is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from strikebench.feeds.databento import CBBO_DTYPE, OHLCV_DTYPE, PRICE_SCALE, UNDEF_PRICE
from strikebench.feeds.files import BAR_SCHEMA, CHAIN_OPTIONAL, CHAIN_SCHEMA, read_table, settlements_file

__all__ = ["files_to_dbn", "write_dbn"]

_NS_MIN = 60_000_000_000


def write_dbn(path: Path, metadata, records: bytes) -> None:
    """Metadata + records through databento_dbn's Transcoder to a zstd DBN file (``.part``, then renamed)."""
    import databento_dbn as dbn

    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        t = dbn.Transcoder(fh, dbn.Encoding.DBN, dbn.Compression.ZSTD)
        t.write(bytes(metadata.encode()) + bytes(records))
        t.flush()
        del t  # the zstd frame is finished when the transcoder is dropped
    os.replace(tmp, path)


def _fixed(x: np.ndarray) -> np.ndarray:
    out = np.full(x.shape, UNDEF_PRICE, dtype=np.int64)
    ok = np.isfinite(x)
    out[ok] = np.rint(x[ok] * PRICE_SCALE).astype(np.int64)
    return out


def _meta(schema, start: int, end: int, symbols: list[str], dataset: str = "OPRA.PILLAR"):
    import databento_dbn as dbn

    return dbn.Metadata(dataset=dataset, start=int(start), stype_in=dbn.SType.RAW_SYMBOL,
                        stype_out=dbn.SType.INSTRUMENT_ID, schema=schema, symbols=symbols, end=int(end))


def files_to_dbn(src, out, fmt: str = "parquet") -> dict:
    """Convert the files layout at ``src`` to DBN files in ``out``; returns counts."""
    import databento_dbn as dbn

    from strikebench.options.contracts import OptionContract

    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"definitions": 0, "quotes": 0, "bars": 0}
    ids: dict[tuple, int] = {}
    for und_dir in sorted((src / "chains").iterdir()):
        for p in sorted(und_dir.glob(f"*.{fmt}")):
            day = pd.Timestamp(p.stem).date()
            t = read_table(p, CHAIN_SCHEMA, fmt, what="chain file", optional=CHAIN_OPTIONAL)
            root = t.column("root").to_numpy(zero_copy_only=False)
            exp = t.column("expiry").to_numpy(zero_copy_only=False).astype("datetime64[D]")
            strike = t.column("strike").to_numpy()
            call = t.column("right").to_numpy(zero_copy_only=False) == "C"
            # one integer key per row (hashing 3 M rows of a real session; no MultiIndex)
            root_codes, root_names = pd.factorize(root)
            keys = ((root_codes.astype(np.int64) << 55) | (exp.view(np.int64) << 38) | (call.astype(np.int64) << 37)
                    | np.rint(strike * 1000).astype(np.int64))
            codes, uniq = pd.factorize(keys)
            first = np.empty(len(uniq), dtype=np.int64)
            first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
            iid = np.empty(len(uniq), dtype=np.int64)
            defs = []
            lo = pd.Timestamp(day).tz_localize("America/New_York").value
            hi = pd.Timestamp(day + pd.Timedelta(days=1)).tz_localize("America/New_York").value
            for k, i in enumerate(first):
                key = (str(root[i]), exp[i].item(), float(strike[i]), bool(call[i]))
                iid[k] = ids.setdefault(key, len(ids) + 1)
                occ = OptionContract.make(key[0], key[1], key[2], "C" if key[3] else "P").occ_symbol
                defs.append(bytes(dbn.InstrumentDefMsg(
                    publisher_id=1, instrument_id=int(iid[k]), ts_event=lo, ts_recv=lo,
                    min_price_increment=50_000_000, display_factor=PRICE_SCALE, raw_symbol=occ, asset=key[0],
                    security_type="OOF", instrument_class=dbn.InstrumentClass.CALL if key[3] else dbn.InstrumentClass.PUT,
                    security_update_action=dbn.SecurityUpdateAction.ADD,
                    expiration=pd.Timestamp(key[1]).tz_localize("America/New_York").value,
                    strike_price=int(round(key[2] * PRICE_SCALE)), underlying=und_dir.name)))
            stem = f"opra-pillar-{und_dir.name.lower()}-{day:%Y%m%d}"
            write_dbn(out / f"{stem}.definition.dbn.zst", _meta(dbn.Schema.DEFINITION, lo, hi, [f"{und_dir.name}.OPT"]),
                      b"".join(defs))
            ts = t.column("timestamp").to_numpy().astype(np.int64) + _NS_MIN
            rec = np.zeros(len(t), dtype=CBBO_DTYPE)
            rec["length"] = CBBO_DTYPE.itemsize // 4
            rec["rtype"] = 0xC1
            rec["publisher_id"] = 1
            rec["instrument_id"] = iid[codes]
            rec["ts_event"] = ts
            rec["ts_recv"] = ts
            rec["price"] = UNDEF_PRICE
            rec["side"] = ord("N")
            bid = t.column("bid").to_numpy(zero_copy_only=False).astype(np.float64)
            rec["bid_px"] = _fixed(np.where(bid > 0, bid, np.nan))
            rec["ask_px"] = _fixed(t.column("ask").to_numpy(zero_copy_only=False).astype(np.float64))
            write_dbn(out / f"{stem}.cbbo-1m.dbn.zst", _meta(dbn.Schema.CBBO_1M, lo, hi, [f"{und_dir.name}.OPT"]),
                      rec.tobytes())
            counts["definitions"] += len(defs)
            counts["quotes"] += len(rec)
    for p in sorted((src / "bars").glob(f"*.{fmt}")):
        t = read_table(p, BAR_SCHEMA, fmt, what="bars file")
        ts = t.column("timestamp").to_numpy().astype(np.int64)
        rec = np.zeros(len(t), dtype=OHLCV_DTYPE)
        rec["length"] = OHLCV_DTYPE.itemsize // 4
        rec["rtype"] = 0x21
        rec["publisher_id"] = 1
        rec["instrument_id"] = 1
        rec["ts_event"] = ts
        for c in ("open", "high", "low", "close"):
            rec[c] = _fixed(t.column(c).to_numpy())
        rec["volume"] = np.rint(t.column("volume").to_numpy()).astype(np.uint64)
        sym = p.stem.upper()
        end = int(ts[-1]) + _NS_MIN if len(ts) else 0
        write_dbn(out / f"{sym.lower()}.ohlcv-1m.dbn.zst",
                  _meta(dbn.Schema.OHLCV_1M, int(ts[0]) if len(ts) else 0, end, [sym], dataset="XCBO.INDEX"),
                  rec.tobytes())
        counts["bars"] += len(rec)
    sp = settlements_file(src, fmt)
    if sp.exists():
        shutil.copyfile(sp, out / sp.name)
    return counts
