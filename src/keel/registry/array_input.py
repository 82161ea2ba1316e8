"""The fast input path of a numeric model: rows straight to one float64 matrix.

Checking a request against a model's signature builds a pandas DataFrame, and a scikit-learn
model fitted on a DataFrame then re-checks it column by column: about a millisecond for one row,
several times what the model's arithmetic costs. When every input column is a 64-bit integer,
float or boolean column, the same model gets the same numbers from a float64 matrix — and only
that is taken on trust: ``array_input`` builds the path only after the model has answered a set
of probe rows identically through both (bit for bit), and ``ArrayInput.matrix`` takes a request
only when every value is a plain Python number of a type the signature accepts for its column.
Anything else — a string, a None, a float in an integer column, an integer past 64 bits — gets
``None`` back and goes the checked way, which converts it or raises the signature's error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.registry.signature import ColumnSchema

if TYPE_CHECKING:
    import numpy as np

    from keel.registry.loaded import LoadedModel

# Per column dtype, the Python types whose values the checked path keeps as they are (an int
# in a float64 column widens exactly as float64(int) does); bool is not an int here.
_ACCEPTED: dict[str, frozenset[type]] = {
    "float64": frozenset({float, int}),
    "int64": frozenset({int}),
    "bool": frozenset({bool}),
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PROBE_ROWS = 16
# A scikit-learn estimator fitted on a DataFrame warns on every unnamed input; the matrix path
# gives it unnamed input on purpose, after checking the columns are the ones it was fitted on.
UNNAMED_INPUT_WARNING = "X does not have valid feature names"
_QUIET: tuple[Any, ...] | None = None


def quiet_unnamed_input() -> None:
    """Make sure the unnamed-input warning is ignored: a process-wide filter, checked before
    each matrix prediction rather than set once, because warning filters get reset (test
    runners, ``warnings.catch_warnings`` elsewhere) and ``catch_warnings`` itself is not
    thread-safe (the shadow thread predicts too)."""
    global _QUIET
    if _QUIET is None or _QUIET not in warnings.filters:
        warnings.filterwarnings("ignore", message=UNNAMED_INPUT_WARNING)
        _QUIET = warnings.filters[0]


@dataclass(frozen=True)
class ArrayInput:
    """Builds the input matrix of a model whose columns are all numeric.

    >>> fast = array_input(model)  # None when the model does not qualify
    >>> fast.matrix({"amount": [12.5], "count_1h": [3]})
    array([[12.5,  3. ]])
    """

    columns: tuple[str, ...]
    accepted: tuple[frozenset[type], ...]
    integer: tuple[bool, ...]

    def matrix(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray | None:
        """The rows as a (rows, columns) float64 matrix in signature order, or None when a
        value must go through the signature's checks (see the module's docstring)."""
        import numpy as np

        ordered = []
        for name, accepted, integer in zip(self.columns, self.accepted, self.integer, strict=True):
            values = columns.get(name)
            if values is None:
                return None
            for value in values:
                if type(value) not in accepted:
                    return None
                if integer and not _INT64_MIN <= value <= _INT64_MAX:
                    return None
            ordered.append(values)
        return np.array(ordered, dtype=np.float64).T


def array_input(model: LoadedModel, *, output: str = "predict_proba") -> ArrayInput | None:
    """The matrix path for ``model`` when its signature is all 64-bit numeric columns and the
    model's ``output`` ("predict" or "predict_proba") on probe rows is bit-for-bit the same
    through the matrix as through the checked DataFrame; else None."""
    signature = model.signature
    if signature is None or not isinstance(signature.inputs, ColumnSchema):
        return None
    specs = signature.inputs.columns
    if not specs or any(spec.dtype not in _ACCEPTED for spec in specs):
        return None
    fast = ArrayInput(
        columns=tuple(spec.name for spec in specs),
        accepted=tuple(_ACCEPTED[spec.dtype] for spec in specs),
        integer=tuple(spec.dtype == "int64" for spec in specs),
    )
    predict = getattr(model.runtime, output, None)
    if predict is None:
        return None
    return fast if _same_answers(model, fast, predict) else None


def _same_answers(model: LoadedModel, fast: ArrayInput, predict: Callable[[Any], Any]) -> bool:
    import numpy as np

    for rows in (_probe_columns(fast, 1, seed=0), _probe_columns(fast, _PROBE_ROWS, seed=1)):
        matrix = fast.matrix(rows)
        if matrix is None:
            return False
        try:
            checked = np.asarray(predict(model.prepare(rows)))
            quiet_unnamed_input()
            direct = np.asarray(predict(matrix))
        except Exception:  # a model that cannot take the matrix keeps the checked path
            return False
        if checked.shape != direct.shape or not np.array_equal(checked, direct, equal_nan=True):
            return False
    return True


def _probe_columns(fast: ArrayInput, count: int, *, seed: int) -> dict[str, list[Any]]:
    """``count`` rows of varied values of each column's type: zeros, small and large
    magnitudes, negatives — enough that a model reading columns by position differently from
    by name, or rounding differently, answers differently."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {}
    for name, accepted, integer in zip(fast.columns, fast.accepted, fast.integer, strict=True):
        if bool in accepted:
            rows[name] = [bool(v) for v in rng.integers(0, 2, count)]
        elif integer:
            rows[name] = [int(v) for v in rng.integers(-50, 1000, count)]
        else:
            rows[name] = [float(v) for v in rng.normal(0, 1, count) * 10.0 ** rng.integers(-2, 4)]
    return rows
