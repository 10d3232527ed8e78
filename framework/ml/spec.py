"""The ``ml:`` section of a run config, as typed models (validated with the rest of the config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MLConfig", "MLWindows", "MLModel"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MLWindows(_Strict):
    """Walk-forward windows over the dataset's decision sessions (the walk-forward's own window rule)."""

    mode: Literal["rolling", "anchored"] = Field("rolling", description="rolling: a fixed-length training span "
                                                 "that moves; anchored: from the first session, growing")
    train_sessions: int = Field(60, ge=2, le=5000, description="sessions of decisions a window trains on")
    test_sessions: int = Field(20, ge=1, le=5000, description="sessions of decisions it is tested on, right after")
    min_train_rows: int = Field(30, ge=2, description="a window with fewer usable training rows is skipped")


class MLModel(_Strict):
    """The classifier: gradient-boosted trees, calibrated."""

    kind: Literal["hgb", "lightgbm", "xgboost"] = Field(
        "hgb", description="hgb: scikit-learn's HistGradientBoostingClassifier; lightgbm / xgboost when installed")
    max_iter: int = Field(200, ge=1, le=10000, description="boosting rounds")
    learning_rate: float = Field(0.05, gt=0, le=1, description="shrinkage per round")
    max_depth: int | None = Field(3, ge=1, le=64, description="tree depth (None: unlimited)")
    min_samples_leaf: int = Field(10, ge=1, description="least rows per leaf")
    calibration: Literal["sigmoid", "isotonic", "none"] = Field(
        "sigmoid", description="probability calibration (cross-validated within the training span)")
    calibration_folds: int = Field(3, ge=2, le=20, description="folds of the calibration")


class MLConfig(_Strict):
    """``ml:``: what ``strikebench ml train`` learns and where it writes."""

    dataset: str = Field(description="the Parquet file of `strikebench ml dataset` (relative to the config file)")
    output: str = Field("models", description="folder of the report and the model file (relative to the config file)")
    label: Literal["stop"] = Field("stop", description="what is predicted: the trade hits its stop")
    counterfactual: bool = Field(True, description="train on candidates that were not entered too (their "
                                                   "simulated outcomes); false: entered trades only")
    windows: MLWindows = Field(default_factory=MLWindows)
    model: MLModel = Field(default_factory=MLModel)
    seed: int = Field(0, ge=0, description="random seed of the model (same seed, same data: same model file)")
    importance_repeats: int = Field(5, ge=1, le=100, description="permutation-importance repeats per window")

    @model_validator(mode="after")
    def _names(self):
        if not self.dataset.strip():
            raise ValueError("ml.dataset is empty")
        return self
