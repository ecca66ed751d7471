"""A small real model for the ``predict`` task: logistic regression on the iris data set."""

from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

FEATURE_NAMES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")


@dataclass(frozen=True)
class IrisModel:
    """A fitted classifier and the names of the classes it predicts."""

    classifier: LogisticRegression
    labels: tuple[str, ...]


_model: IrisModel | None = None
# The threads pool runs tasks concurrently; train once, not once per thread.
_model_lock = threading.Lock()


def get_model() -> IrisModel:
    """Return the iris model, training it on first use in this process."""
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                # Imported here, not at module level: importing scikit-learn
                # takes 1-2 s (fitting takes ~15 ms) and only this task needs it.
                from sklearn.datasets import load_iris
                from sklearn.linear_model import LogisticRegression

                iris = load_iris()  # bundled with scikit-learn: no download
                classifier = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
                _model = IrisModel(classifier, tuple(str(name) for name in iris.target_names))
    return _model


def validate_features(features: Any) -> list[float]:
    """Return ``features`` as four floats; raise ValueError if they are not four finite numbers."""
    if not isinstance(features, (list, tuple)):
        raise ValueError(f"features must be a list of {len(FEATURE_NAMES)} numbers, got {type(features).__name__}")
    if len(features) != len(FEATURE_NAMES):
        raise ValueError(
            f"features must have {len(FEATURE_NAMES)} values ({', '.join(FEATURE_NAMES)}), got {len(features)}"
        )
    for name, value in zip(FEATURE_NAMES, features):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"feature {name!r} must be a finite number, got {value!r}")
    return [float(value) for value in features]


def predict_iris(features: Any) -> dict[str, Any]:
    """Classify one flower: return its most likely species and the probability of each."""
    row = validate_features(features)
    model = get_model()
    probabilities = model.classifier.predict_proba([row])[0]
    by_label = {label: round(float(p), 6) for label, p in zip(model.labels, probabilities)}
    return {"label": max(by_label, key=by_label.__getitem__), "probabilities": by_label}
