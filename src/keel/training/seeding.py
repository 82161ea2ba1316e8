"""Determinism: seed every generator a trainer may use, record what else decides the result
(thread counts, PYTHONHASHSEED), and warn about settings known to make training
nondeterministic, so `keel reproduce` can rebuild a model bit for bit.

    rng = seed_everything(42)        # random, NumPy (global and the returned Generator), torch
    params = deterministic_params({"n_estimators": 200}, library="lightgbm", seed=42)
    check_determinism(model)         # warns NondeterminismWarning, returns the reasons
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np

_THREAD_VARIABLES = {
    "omp": "OMP_NUM_THREADS",
    "mkl": "MKL_NUM_THREADS",
    "openblas": "OPENBLAS_NUM_THREADS",
}
# Estimators whose random_state is unused with their default solver: no warning for them.
_RIDGE = ("auto", "svd", "cholesky", "lsqr", "sparse_cg", "lbfgs")
_SOLVERS_WITHOUT_RANDOMNESS = {
    "LogisticRegression": ("lbfgs", "newton-cg", "newton-cholesky"),
    "Ridge": _RIDGE,
    "RidgeClassifier": _RIDGE,
}


class NondeterminismWarning(UserWarning):
    """A trainer uses a setting known to give different models from the same data and seed."""


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's global generator and, when installed, PyTorch (with
    deterministic algorithms on); returns a NumPy Generator seeded with ``seed`` for code that
    takes one.

    >>> first = seed_everything(7).integers(0, 100)
    >>> bool(first == seed_everything(7).integers(0, 100))
    True
    """
    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise InvalidInputError(f"seed {seed!r} is not an integer in [0, 2**32); pass e.g. 0")
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        _seed_torch(seed)
    return np.random.default_rng(seed)


def _seed_torch(seed: int) -> None:
    import torch  # type: ignore[import-not-found,unused-ignore]  # optional, no stubs

    torch.manual_seed(seed)
    # warn_only: an operation without a deterministic kernel warns instead of failing a run.
    torch.use_deterministic_algorithms(True, warn_only=True)


def deterministic_params(
    params: Mapping[str, Any], *, library: str = "lightgbm", seed: int | None = None
) -> dict[str, Any]:
    """``params`` of a LightGBM or XGBoost model with the settings that make training
    repeatable added (the caller's own values win): the seed, one thread unless a count is
    given, and LightGBM's ``deterministic`` mode.

    >>> deterministic_params({"num_leaves": 15}, seed=3)["deterministic"]
    True
    """
    out = dict(params)
    if library == "lightgbm":
        out.setdefault("deterministic", True)
        # Deterministic mode needs a fixed histogram layout (LightGBM's documentation).
        if "force_col_wise" not in out:
            out.setdefault("force_row_wise", True)
        if "num_threads" not in out:
            out.setdefault("n_jobs", 1)
    elif library != "xgboost":
        raise InvalidInputError(f"library {library!r} is unknown; use 'lightgbm' or 'xgboost'")
    if seed is not None:
        out.setdefault("random_state", seed)
    return out


def thread_counts(model: Any = None) -> dict[str, Any]:
    """The thread settings a result may depend on: environment variables, the CPU count, the
    native thread pools loaded (threadpoolctl) and the model's own thread parameter."""
    out: dict[str, Any] = {key: os.environ.get(var) for key, var in _THREAD_VARIABLES.items()}
    out["cpu_count"] = os.cpu_count()
    out["python_hash_seed"] = os.environ.get("PYTHONHASHSEED")  # fixed at interpreter start
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # optional: the environment variables above still say a lot
        out["threadpools"] = []
    else:
        out["threadpools"] = sorted(
            (
                {
                    "api": str(pool.get("user_api")),
                    "library": str(pool.get("internal_api")),
                    "threads": int(pool.get("num_threads", 0)),
                }
                for pool in threadpool_info()
            ),
            key=lambda pool: (pool["api"], pool["library"]),
        )
    for library, threads in _model_threads(model).items():
        out[library] = threads
    return out


def _model_threads(model: Any) -> dict[str, Any]:
    params = _params(model)
    if _comes_from(model, "lightgbm"):
        return {"lightgbm": params.get("num_threads", params.get("n_jobs"))}
    if _comes_from(model, "xgboost"):
        return {"xgboost": params.get("nthread", params.get("n_jobs"))}
    if "n_jobs" in params:
        return {"sklearn": params.get("n_jobs")}
    return {}


def check_determinism(model: Any, *, warn: bool = True) -> list[str]:
    """Reasons ``model`` may not train the same way twice (empty when none is known); each
    is also warned as a NondeterminismWarning unless ``warn`` is False.

    >>> check_determinism(LGBMClassifier(n_jobs=4))  # doctest: +SKIP
    ['LGBMClassifier trains with n_jobs=4 without deterministic=True; ...']
    """
    reasons = _lightgbm(model) + _xgboost(model) + _sklearn(model)
    if warn:
        for reason in reasons:
            warnings.warn(NondeterminismWarning(reason), stacklevel=2)
    return reasons


def _lightgbm(model: Any) -> list[str]:
    if not _comes_from(model, "lightgbm"):
        return []
    params = _params(model)
    threads = params.get("num_threads", params.get("n_jobs"))
    if params.get("deterministic") or threads == 1:
        return []
    return [
        f"{type(model).__name__} trains with n_jobs={threads} without deterministic=True; multi-"
        "threaded histogram sums vary between runs — pass deterministic=True with "
        "force_row_wise=True, or n_jobs=1 (see keel.training.deterministic_params)"
    ]


def _xgboost(model: Any) -> list[str]:
    if not _comes_from(model, "xgboost"):
        return []
    params = _params(model)
    device = str(params.get("device") or "cpu")
    method = str(params.get("tree_method") or "")
    if device.startswith("cuda") or device == "gpu" or method.startswith("gpu"):
        return [
            f"{type(model).__name__} trains on the GPU ({device=}, {method=}); GPU "
            "histogram sums use atomic additions whose order varies — train on the CPU"
        ]
    return []


def _sklearn(model: Any) -> list[str]:
    get_params = getattr(model, "get_params", None)
    if not _comes_from(model, "sklearn") or not callable(get_params):
        return []
    params: dict[str, Any] = dict(get_params(deep=True))
    reasons = []
    for key, value in sorted(params.items()):
        if not key.endswith("random_state") or value is not None:
            continue
        prefix = key[: -len("random_state")].removesuffix("__")
        owner = params.get(prefix, model) if prefix else model
        solvers = _SOLVERS_WITHOUT_RANDOMNESS.get(type(owner).__name__)
        if solvers and _params(owner).get("solver") in solvers:
            continue
        reasons.append(
            f"{type(owner).__name__} has random_state=None: it draws a new seed on each fit — "
            "pass random_state=training.seed"
        )
    return reasons


def _params(model: Any) -> dict[str, Any]:
    get_params = getattr(model, "get_params", None)
    if not callable(get_params):
        return {}
    try:
        return dict(get_params(deep=False))
    except TypeError:  # an estimator whose get_params takes no deep argument
        return dict(get_params())


def _comes_from(model: Any, package: str) -> bool:
    return type(model).__module__.split(".")[0] == package
