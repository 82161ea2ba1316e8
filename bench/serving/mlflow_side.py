"""MLflow's side of the serving benchmark (runs in .bench/mlflow-venv): a scikit-learn logistic
regression on 20 features, logged as an MLflow model, for `mlflow models serve`.

    python mlflow_side.py FOLDER   -> prints JSON {"model": PATH, "body": {...}} on stdout
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    folder = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    columns = [f"f{i:02d}" for i in range(20)]
    x = pd.DataFrame(rng.normal(size=(5000, 20)), columns=columns)
    y = (x["f00"] + 0.5 * x["f01"] + rng.normal(size=5000) > 0).astype(int)
    model = LogisticRegression(max_iter=300).fit(x, y)
    path = folder / "model"
    if not path.exists():
        mlflow.sklearn.save_model(model, str(path), input_example=x.head(2))
    row = x.head(1)
    body = {"dataframe_split": {"columns": columns, "data": row.values.tolist()}}
    print(json.dumps({"model": str(path), "body": body}))


if __name__ == "__main__":
    main()
