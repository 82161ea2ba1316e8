"""LoadedModel: a model read back from its folder, predicting through its signature."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import FlavorError
from keel.registry.signature import Signature, to_model_input

if TYPE_CHECKING:
    import numpy as np

    from keel.registry.flavors.base import FlavorModel


@dataclass(frozen=True)
class LoadedModel:
    """A saved model, loaded: ``raw`` is the library object, ``predict`` checks the input.

    Inputs are checked against the signature (when the model has one) before the model sees
    them, so a missing column or a wrong type raises SignatureError rather than predicting
    nonsense.

    >>> model = load_model(Path("fraud-model"))
    >>> model.predict([{"amount": 12.5, "country": "FR"}])
    array([0])
    """

    flavor: str
    signature: Signature | None
    library_versions: dict[str, str]
    runtime: FlavorModel = field(repr=False)
    python_version: str | None = None

    @property
    def raw(self) -> Any:
        """The underlying library object (Booster, Pipeline, InferenceSession, function...)."""
        return self.runtime.raw

    @property
    def has_predict_proba(self) -> bool:
        return self.runtime.predict_proba is not None

    def prepare(self, data: object) -> Any:
        """The input as the model receives it: validated by the signature, or only converted
        (dict/records → DataFrame, lists → array) when there is no signature."""
        if self.signature is not None:
            return self.signature.validate_input(data)
        return to_model_input(data)

    def predict(self, data: object) -> np.ndarray:
        """Predictions for a DataFrame, dict of lists, list of records or numpy array."""
        import numpy as np

        return np.asarray(self.runtime.predict(self.prepare(data)))

    def predict_proba(self, data: object) -> np.ndarray:
        """Class probabilities, shape (rows, classes); FlavorError if the model has none."""
        import numpy as np

        if self.runtime.predict_proba is None:
            raise FlavorError(
                f"this {self.flavor} model does not support predict_proba: "
                f"{self.runtime.no_proba_reason}; use predict()"
            )
        return np.asarray(self.runtime.predict_proba(self.prepare(data)))
