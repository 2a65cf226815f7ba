#!/usr/bin/env python3
"""Builds the example model repository `models/` and the expected-output fixtures.

Every version is trained on a fixed train/validation/test split with fixed seeds, exported with
skl2onnx (float32 input `[None, F]`, `zipmap=False`), checked with onnxruntime, and written as
`models/<name>/<version>/{model.onnx, model.toml, reference.csv}`. For every version the script also
writes `tests/fixtures/expected/<name>-<version>.json`: a fixed set of input rows and the outputs
onnxruntime computes for them in Python, which the gateway's tests compare against.

Run from the repository root: `python scripts/make_models.py`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn import datasets
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
EXPECTED = ROOT / "tests" / "fixtures" / "expected"
SEED = 20261120
INPUT_NAME = "float_input"
MAX_FILE_BYTES = 500 * 1024
EXPECTED_ROWS = 12


@dataclass
class Version:
    name: str
    version: str
    task: str
    estimator: object
    run: str
    description: str
    created_at: str
    params: dict = field(default_factory=dict)


def feature_name(raw: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", raw.lower()).strip("_")
    return name


def split(x: np.ndarray, y: np.ndarray, stratify: bool):
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, random_state=SEED, stratify=y if stratify else None
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=SEED, stratify=y_rest if stratify else None
    )
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def classification_scores(model, x, y) -> dict:
    predicted = model.predict(x)
    proba = model.predict_proba(x)
    scores = {
        "accuracy": accuracy_score(y, predicted),
        "f1_macro": f1_score(y, predicted, average="macro"),
    }
    if proba.shape[1] == 2:
        scores["roc_auc"] = roc_auc_score(y, proba[:, 1])
    else:
        scores["roc_auc"] = roc_auc_score(y, proba, multi_class="ovr")
    return {k: round(float(v), 6) for k, v in scores.items()}


def regression_scores(model, x, y) -> dict:
    predicted = model.predict(x)
    scores = {
        "r2": r2_score(y, predicted),
        "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "mae": mean_absolute_error(y, predicted),
    }
    return {k: round(float(v), 6) for k, v in scores.items()}


def toml_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_model_toml(path: Path, spec: Version, features, labels, validation, test, highlight):
    lines = [
        f"task = {toml_value(spec.task)}",
        f"created_at = {toml_value(spec.created_at)}",
        f"run = {toml_value(spec.run)}",
        f"description = {toml_value(spec.description)}",
    ]
    if labels is not None:
        lines.append(f"labels = {toml_value(labels)}")
    lines.append(f"features = {toml_value(features)}")
    lines.append(f"highlight = {toml_value(highlight)}")
    lines.append("")
    lines.append("[params]")
    for key, value in sorted(spec.params.items()):
        lines.append(f"{key} = {toml_value(str(value))}")
    lines.append("")
    lines.append("[metrics.validation]")
    for key, value in validation.items():
        lines.append(f"{key} = {toml_value(value)}")
    lines.append("")
    lines.append("[metrics.test]")
    for key, value in test.items():
        lines.append(f"{key} = {toml_value(value)}")
    path.write_text("\n".join(lines) + "\n")


def write_reference(path: Path, features, rows: np.ndarray):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(features)
        for row in rows:
            writer.writerow([np.format_float_positional(np.float32(v), unique=True, trim="-") for v in row])


def export(spec: Version, data, features, labels):
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data
    model = spec.estimator
    model.fit(x_train, y_train)
    if spec.task == "classification":
        validation = classification_scores(model, x_val, y_val)
        test = classification_scores(model, x_test, y_test)
        highlight = "accuracy"
        options = {id(model): {"zipmap": False}}
    else:
        validation = regression_scores(model, x_val, y_val)
        test = regression_scores(model, x_test, y_test)
        highlight = "r2"
        options = None
    onx = to_onnx(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(features)]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    directory = MODELS / spec.name / spec.version
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / "model.onnx"
    onnx_path.write_bytes(onx.SerializeToString())
    write_model_toml(directory / "model.toml", spec, features, labels, validation, test, highlight)
    write_reference(directory / "reference.csv", features, x_train.astype(np.float32))
    for item in directory.iterdir():
        size = item.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SystemExit(f"{item} is {size} bytes, over the {MAX_FILE_BYTES} limit")

    rows = x_test[:EXPECTED_ROWS].astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(None, {INPUT_NAME: rows})
    outputs = {}
    for name, value in zip(names, results):
        outputs[name] = {
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "data": value.reshape(-1).tolist(),
        }
    expected = {
        "model": spec.name,
        "version": spec.version,
        "input": INPUT_NAME,
        "rows": rows.tolist(),
        "outputs": outputs,
    }
    EXPECTED.mkdir(parents=True, exist_ok=True)
    (EXPECTED / f"{spec.name}-{spec.version}.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{spec.name}/{spec.version}: {spec.run}; validation {highlight}={validation[highlight]}")


def main():
    for name in ("iris", "breast_cancer", "diabetes"):
        shutil.rmtree(MODELS / name, ignore_errors=True)
    shutil.rmtree(EXPECTED, ignore_errors=True)

    iris = datasets.load_iris()
    iris_features = [feature_name(f.replace("(cm)", "")) for f in iris.feature_names]
    iris_data = split(iris.data, iris.target, stratify=True)
    iris_labels = [str(n) for n in iris.target_names]
    for spec in (
        Version("iris", "1", "classification", LogisticRegression(C=1.0, max_iter=500, random_state=SEED),
                "sklearn LogisticRegression C=1.0", "Multinomial logistic regression on the four iris measurements.",
                "2026-11-20T09:00:00Z", {"C": 1.0, "max_iter": 500}),
        Version("iris", "2", "classification",
                RandomForestClassifier(n_estimators=50, max_depth=5, random_state=SEED),
                "sklearn RandomForestClassifier n_estimators=50 max_depth=5", "Random forest of 50 trees.",
                "2026-11-21T09:00:00Z", {"n_estimators": 50, "max_depth": 5}),
        Version("iris", "3", "classification",
                MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=2000, random_state=SEED),
                "sklearn MLPClassifier hidden_layer_sizes=(16, 8)", "Small neural network (two hidden layers).",
                "2026-11-22T09:00:00Z", {"hidden_layer_sizes": "16,8", "max_iter": 2000}),
    ):
        export(spec, iris_data, iris_features, iris_labels)

    cancer = datasets.load_breast_cancer()
    cancer_features = [feature_name(f) for f in cancer.feature_names]
    cancer_data = split(cancer.data, cancer.target, stratify=True)
    cancer_labels = [str(n) for n in cancer.target_names]
    for spec in (
        Version("breast_cancer", "1", "classification",
                make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000, random_state=SEED)),
                "sklearn StandardScaler + LogisticRegression C=0.5", "Scaled logistic regression pipeline.",
                "2026-11-20T10:00:00Z", {"C": 0.5, "max_iter": 1000, "scaler": "standard"}),
        Version("breast_cancer", "2", "classification",
                GradientBoostingClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, random_state=SEED),
                "sklearn GradientBoostingClassifier n_estimators=100 max_depth=3", "Gradient-boosted trees.",
                "2026-11-21T10:00:00Z", {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1}),
    ):
        export(spec, cancer_data, cancer_features, cancer_labels)

    diabetes = datasets.load_diabetes()
    diabetes_features = [feature_name(f) for f in diabetes.feature_names]
    diabetes_data = split(diabetes.data, diabetes.target, stratify=False)
    for spec in (
        Version("diabetes", "1", "regression", Ridge(alpha=0.1),
                "sklearn Ridge alpha=0.1", "Linear ridge regression of disease progression.",
                "2026-11-20T11:00:00Z", {"alpha": 0.1}),
        Version("diabetes", "2", "regression",
                RandomForestRegressor(n_estimators=50, max_depth=6, random_state=SEED),
                "sklearn RandomForestRegressor n_estimators=50 max_depth=6", "Random forest regressor of 50 trees.",
                "2026-11-21T11:00:00Z", {"n_estimators": 50, "max_depth": 6}),
    ):
        export(spec, diabetes_data, diabetes_features, None)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
