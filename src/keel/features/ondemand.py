"""On-demand feature views: one Python function over request fields and batch features, run
vectorized offline and on a single row online, with a check that both paths agree.

The function contract: it takes a mapping column name -> 1-D numpy array (each input feature
under its feature name, each request field under its name), all of one length, and returns a
mapping output name -> array-like of that length (a pandas DataFrame also works; extra columns
are ignored). Offline it is called once on the whole table; online once per entity row with
length-1 arrays. Inputs arrive as Arrow's ``to_numpy`` gives them: floats with NULL as NaN;
integers in their dtype, or float64 with NaN when the array holds a NULL; bool, or an object
array with None when it holds a NULL; strings and bytes as object arrays with None; timestamps
as ``datetime64[us]`` in UTC and dates as ``datetime64[D]``, NULL as NaT. Outputs are cast to
their declared dtypes; NaN, NaT and None become NULL, naive datetimes are read as UTC.

    @on_demand_feature_view(inputs=["user_stats:amount_sum_7d"],
                            request=[RequestField("amount", "float64")],
                            outputs=[Field("amount_ratio", "float64")], owner="risk-team")
    def amount_ratio(columns):
        return {"amount_ratio": columns["amount"] / (columns["amount_sum_7d"] + 1.0)}

The function must treat each row on its own: one that looks across rows (``x.mean()``,
``len(x)``) gives other values offline than online, which `check_parity` catches. How a NULL
arrives depends on the input's dtype, which Keel takes from the batch views
(`OnDemandFeatureView.with_input_dtypes`). The version hashes the function's own source, not
the helpers it calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import InvalidInputError, KeelError
from keel.features.definitions import Field, _check_dtype, _check_name
from keel.features.ondemand_values import (
    _ONLINE_IN,
    _any,
    _cast_column,
    _cast_value,
    _result_columns,
)

# Re-exported: the parity check lived here first and callers still import it from this module.
# parity.py imports this module only inside its functions, so there is no import cycle.
from keel.features.parity import ParityMismatch, ParityReport, check_parity, synthetic_table

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "OnDemandFeatureView",
    "OnDemandFunction",
    "ParityMismatch",
    "ParityReport",
    "RequestField",
    "check_parity",
    "compute_offline",
    "compute_online",
    "on_demand_feature_view",
    "split_ref",
    "synthetic_table",
]

OnDemandFunction = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class RequestField:
    """A value the caller passes with each request (not stored), e.g. a transaction amount.

    >>> RequestField("amount", "float64").dtype
    'float64'
    """

    name: str
    dtype: str
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("request field", self.name)
        _check_dtype(f"request field {self.name!r}", self.dtype)


def split_ref(ref: object, where: str) -> tuple[str, str | None]:
    """``"view:feature"`` -> (view, feature); ``"view"`` -> (view, None)."""
    if not isinstance(ref, str) or not ref or ref.count(":") > 1 or ref.startswith(":"):
        raise InvalidInputError(f"{where} has feature ref {ref!r}; write 'view:feature' or 'view'")
    view, _, feature = ref.partition(":")
    if ref.endswith(":"):
        raise InvalidInputError(f"{where} has feature ref {ref!r}; name the feature after ':'")
    return view, feature or None


@dataclass(frozen=True, eq=False)
class OnDemandFeatureView:
    """Features computed at request time by ``function`` from batch ``inputs`` ("view:feature")
    and ``request`` fields; see the module docstring for the function contract.

    >>> OnDemandFeatureView("ratio", inputs=["user_stats:amount_sum_7d"],
    ...     request=[RequestField("amount", "float64")], outputs=[Field("ratio", "float64")],
    ...     function=ratio, owner="risk-team")  # doctest: +SKIP
    """

    name: str
    _: KW_ONLY
    inputs: Sequence[str]
    outputs: Sequence[Field]
    function: OnDemandFunction
    request: Sequence[RequestField] = ()
    owner: str | None = None
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    # Column dtypes known so far (request fields; inputs once `with_input_dtypes` binds them)
    # and the per-column converters of the one-row path, built once here for its speed.
    _dtypes: dict[str, str] = field(init=False, repr=False, default_factory=dict)
    _online_in: tuple[tuple[str, Callable[[Any], Any]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        where = f"on-demand feature view {_check_name('on-demand feature view', self.name)!r}"
        if not callable(self.function):
            raise InvalidInputError(f"{where} has function {self.function!r}; pass a function")
        for attr in ("inputs", "outputs", "request"):
            value = getattr(self, attr)
            if isinstance(value, str | Field | RequestField):
                raise InvalidInputError(f"{where}: pass {attr} as a list, e.g. [{value!r}]")
            object.__setattr__(self, attr, tuple(value))
        object.__setattr__(self, "tags", dict(self.tags))
        if any(split_ref(ref, where)[1] is None for ref in self.inputs):
            raise InvalidInputError(f"{where} has inputs {self.inputs}; write 'view:feature'")
        if any(not isinstance(r, RequestField) for r in self.request):
            raise InvalidInputError(f"{where}: request takes RequestField(name, dtype) values")
        if not self.outputs or any(not isinstance(o, Field) for o in self.outputs):
            raise InvalidInputError(f"{where} needs outputs=[Field(name, dtype), ...]")
        if any(o.default is not None for o in self.outputs):
            raise InvalidInputError(
                f"{where}: an output has a default; on-demand outputs have none, so return "
                "the value for NULL inputs from the function"
            )
        _unique(where, "receives column", self.columns)
        _unique(where, "declares output", self.output_names)
        clash = sorted(set(self.columns) & set(self.output_names))
        if clash:
            raise InvalidInputError(f"{where}: output {clash[0]!r} is also an input; rename it")
        object.__setattr__(self, "_dtypes", {r.name: r.dtype for r in self.request})
        self._compile()

    @property
    def input_refs(self) -> tuple[tuple[str, str], ...]:
        """(view, feature) of each input, in declared order."""
        return tuple((v, str(f)) for v, f in (split_ref(r, self.name) for r in self.inputs))

    @property
    def columns(self) -> tuple[str, ...]:
        """The names the function receives: input feature names, then request field names."""
        return tuple(f for _, f in self.input_refs) + tuple(r.name for r in self.request)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def input_dtypes(self) -> dict[str, str]:
        """The dtype of each column whose dtype is known (request fields always are)."""
        return dict(self._dtypes)

    def with_input_dtypes(self, dtypes: Mapping[str, str]) -> OnDemandFeatureView:
        """A copy that knows its inputs' dtypes, so a NULL reaches the function online as it
        does offline (without it a NULL input arrives online as float NaN). `select_features`
        and `keel features apply` do this.

        >>> ratio.with_input_dtypes({"amount_sum_7d": "float64"})  # doctest: +SKIP
        """
        import copy

        known = set(self.columns) - {r.name for r in self.request}
        for name, dtype in dtypes.items():
            if name not in known:
                raise InvalidInputError(
                    f"on-demand feature view {self.name!r} has no input {name!r}; "
                    f"its inputs are {sorted(known)}"
                )
            _check_dtype(f"input {name!r} of on-demand feature view {self.name!r}", dtype)
        bound = copy.copy(self)
        object.__setattr__(bound, "_dtypes", {**self._dtypes, **dtypes})
        bound._compile()
        return bound

    def _compile(self) -> None:
        converters = tuple((c, _ONLINE_IN.get(self._dtypes.get(c, ""), _any)) for c in self.columns)
        object.__setattr__(self, "_online_in", converters)


def _unique(where: str, what: str, names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            # The function gets its columns by name, so two inputs may not share a feature name.
            raise InvalidInputError(f"{where} {what} {name!r} twice; rename one")
        seen.add(name)


def on_demand_feature_view(
    name: str | None = None,
    *,
    inputs: Sequence[str],
    outputs: Sequence[Field],
    request: Sequence[RequestField] = (),
    owner: str | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
) -> Callable[[OnDemandFunction], OnDemandFeatureView]:
    """Make the decorated function an `OnDemandFeatureView` (named after it by default).

    >>> @on_demand_feature_view(inputs=["user_stats:amount_sum_7d"],
    ...                         outputs=[Field("doubled", "float64")], owner="risk-team")
    ... def doubled(columns):
    ...     return {"doubled": columns["amount_sum_7d"] * 2}
    >>> doubled.output_names
    ('doubled',)
    """

    def wrap(function: OnDemandFunction) -> OnDemandFeatureView:
        return OnDemandFeatureView(
            name or str(getattr(function, "__name__", "")),
            inputs=inputs,
            outputs=outputs,
            function=function,
            request=request,
            owner=owner,
            description=description,
            tags=tags or {},
        )

    return wrap


# --- the two paths ------------------------------------------------------------------------------


def _call(view: OnDemandFeatureView, arrays: dict[str, Any], how: str) -> Any:
    try:
        return view.function(arrays)
    except KeelError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"on-demand feature view {view.name!r} failed {how}: {type(exc).__name__}: {exc}; "
            "fix its function (NULL inputs arrive as NaN, NaT or None)"
        ) from exc


def compute_offline(view: OnDemandFeatureView, table: pa.Table) -> pa.Table:
    """The outputs of ``view`` for every row of ``table`` (which has a column per input feature
    and request field), by one vectorized call; cast to the declared dtypes.

    >>> compute_offline(ratio, training_set).column_names  # doctest: +SKIP
    ['ratio']
    """
    import pyarrow as pa

    from keel.features.offline.frames import arrow_type

    missing = [c for c in view.columns if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"on-demand feature view {view.name!r} needs columns {missing}, which the table "
            f"does not have (it has {table.column_names}); add the input features and request "
            "fields"
        )
    outputs = [pa.field(o.name, arrow_type(o.dtype)) for o in view.outputs]
    if table.num_rows == 0:
        return pa.schema(outputs).empty_table()
    arrays = {}
    for name in view.columns:
        column = table.column(name)
        dtype = view._dtypes.get(name)
        try:
            column = column.cast(arrow_type(dtype)) if dtype else column
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInputError(
                f"column {name!r} ({column.type}) of the table cannot be read as {dtype!r} for "
                f"on-demand feature view {view.name!r} ({exc}); pass {dtype} values"
            ) from exc
        arrays[name] = column.to_numpy()
    result = _call(view, arrays, f"on {table.num_rows} rows")
    columns = _result_columns(view, result, table.num_rows)
    cast = [_cast_column(view, out, columns[out.name]) for out in view.outputs]
    return pa.table(cast, schema=pa.schema(outputs))


def compute_online(view: OnDemandFeatureView, values: Mapping[str, Any]) -> dict[str, Any]:
    """The outputs of ``view`` for one row: ``values`` maps each input feature and request
    field to a Python value (None for NULL).

    >>> compute_online(ratio, {"amount_sum_7d": 120.0, "amount": 30.0})  # doctest: +SKIP
    {'ratio': 0.2479...}
    """
    try:
        arrays = {name: convert(values[name]) for name, convert in view._online_in}
    except KeyError:
        missing = [c for c in view.columns if c not in values]
        raise InvalidInputError(
            f"on-demand feature view {view.name!r} needs values for {missing}; pass every "
            "input feature and request field"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(
            f"on-demand feature view {view.name!r} got an input it cannot read ({exc}); pass "
            f"values of the declared dtypes {view._dtypes}"
        ) from exc
    result = _call(view, arrays, "on one row")
    row = {}
    for out in view.outputs:
        value = result.get(out.name) if type(result) is dict else None
        if type(value) is not np.ndarray or value.shape != (1,):  # the checked, slower path
            value = _result_columns(view, result, 1)[out.name]
        row[out.name] = _cast_value(view, out, value[0])
    return row
