"""The model file: a calibrated classifier, what it needs to score a candidate, and its content hash.

Layout (one file, ``*.sbm``)::

    b"STRIKEBENCH-MODEL\\n"  8-byte little-endian manifest length  manifest (JSON)
    8-byte little-endian payload length  payload (pickle of the fitted estimator)
    32-byte SHA-256 of everything before it

The manifest says which features the model reads (in order), which context providers make them,
the expected loss and gain per point of credit the gate weighs, the span of the data it learned
from (``trained``: first decision day .. last label's close, which `ml compare` refuses to test on)
and its out-of-sample figures. The trailing SHA-256 is the model's identity: ``model_hash`` (its first
16 hex digits) is written with every decision the gate scores; any changed byte fails the check on
load (one line, exit 4). A pickle runs code when loaded: load only model files you made or trust
(the hash proves the file is whole, not who made it).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from strikebench.errors import DataError

__all__ = ["MAGIC", "ModelFile", "save_model", "load_model", "BaseRate"]

MAGIC = b"STRIKEBENCH-MODEL\n"
FORMAT = 1
_MAX_BYTES = 512 * 1024 * 1024


class EmptyColumnsToZero:
    """A transformer: columns with no value at all in the fitted rows become 0 (constant, never split on).

    Gradient-boosted trees take NaN as "missing" natively, but scikit-learn's binning fails on a column with
    no value in a fit (VIX3M on the synthetic market; realized vol in the first weeks of a calibration fold)."""

    def fit(self, X, y=None):
        self.empty_ = np.isnan(np.asarray(X, dtype=np.float64)).all(axis=0)
        return self

    def transform(self, X):
        X = np.array(X, dtype=np.float64, copy=True)
        X[:, self.empty_] = 0.0
        return X

    def fit_transform(self, X, y=None):
        return self.fit(X, y).transform(X)

    def get_params(self, deep=True):
        return {}

    def set_params(self, **params):
        return self


class BaseRate:
    """The training stop rate for every row: the baseline a model must beat (and a known probability for tests)."""

    def __init__(self, p: float):
        self.p = float(p)
        self.classes_ = np.array([0, 1])

    def fit(self, X, y):
        self.p = float(np.mean(y))
        return self

    def predict_proba(self, X):
        n = len(X)
        return np.column_stack([np.full(n, 1.0 - self.p), np.full(n, self.p)])


@dataclass
class ModelFile:
    estimator: object
    manifest: dict
    digest: str  # full SHA-256 hex of the file's content

    @property
    def model_hash(self) -> str:
        return self.digest[:16]

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    def p_stop(self, rows: np.ndarray) -> np.ndarray:
        """P(stop) of each row, on one thread: a few rows at a time, OpenMP's thread start-up (and its spinning
        on a busy machine: seconds a call) costs far more than the trees."""
        X = np.asarray(rows, dtype=np.float64)
        controller = _controller()
        if controller is None:
            return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=np.float64)
        with controller.limit(limits=1):
            return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=np.float64)


_CONTROLLER = []


def _controller():
    """One threadpoolctl controller for the process (finding the thread pools once costs milliseconds)."""
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ModuleNotFoundError:  # scikit-learn brings it; a bare BaseRate model does not need it
            _CONTROLLER.append(None)
        else:
            _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def model_bytes(estimator, manifest: dict) -> bytes:
    manifest = {**manifest, "format": FORMAT}
    head = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    payload = pickle.dumps(estimator, protocol=5)
    body = MAGIC + struct.pack("<Q", len(head)) + head + struct.pack("<Q", len(payload)) + payload
    return body + hashlib.sha256(body).digest()


def save_model(estimator, manifest: dict, folder) -> Path:
    """Write the model file into ``folder`` as ``model-<hash16>.sbm`` (whole or not at all); returns its path."""
    import os

    data = model_bytes(estimator, manifest)
    digest = data[-32:].hex()
    folder = Path(folder)
    path = folder / f"model-{digest[:16]}.sbm"
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def load_model(path) -> ModelFile:
    """Read and verify a model file; one line (DataError) for anything that is not a whole one."""
    from strikebench.userfiles import check_file

    p = Path(path)
    st = check_file(p, what="model file", error=DataError, nonempty=True)
    if st.st_size > _MAX_BYTES:
        raise DataError(f"{path}: {st.st_size:,} bytes, larger than a model file may be ({_MAX_BYTES:,})")
    data = p.read_bytes()
    if not data.startswith(MAGIC):
        raise DataError(f"{path}: not a strikebench model file (make one with `strikebench ml train CONFIG.yaml`)")
    body, tail = data[:-32], data[-32:]
    if len(data) < len(MAGIC) + 48 or hashlib.sha256(body).digest() != tail:
        raise DataError(f"{path}: the model file's content does not match its SHA-256 (damaged or tampered with); "
                        f"retrain or restore it")
    try:
        pos = len(MAGIC)
        (n,) = struct.unpack_from("<Q", body, pos)
        manifest = json.loads(body[pos + 8:pos + 8 + n])
        pos += 8 + n
        (m,) = struct.unpack_from("<Q", body, pos)
        payload = body[pos + 8:pos + 8 + m]
        if pos + 8 + m != len(body):
            raise ValueError("trailing bytes")
    except (struct.error, ValueError) as exc:
        raise DataError(f"{path}: malformed model file ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: model file format {manifest.get('format')!r}; this strikebench reads {FORMAT}")
    try:
        estimator = pickle.loads(payload)
    except ModuleNotFoundError as exc:
        raise DataError(f"{path}: the model needs the Python package '{exc.name}' (pip install 'strikebench[ml]')") \
            from None
    except Exception as exc:
        raise DataError(f"{path}: the model cannot be loaded ({type(exc).__name__}: {exc})") from None
    if not hasattr(estimator, "predict_proba"):
        raise DataError(f"{path}: the stored object is not a classifier")
    return ModelFile(estimator, manifest, tail.hex())
