#!/usr/bin/env python3
"""Builds the fixtures of the feedback-loop end-to-end test (labels → retraining → promotion).

- `tests/fixtures/feedback/stream.csv`: 3,000 seeded rows of a synthetic binary churn problem
  (scikit-learn `make_classification`: 6 informative and 2 redundant features, one cluster per
  class, 4% of labels flipped, then an affine change of scale per feature so the features are
  not already standardised), header `f0,...,f7,label`, `label` being `stays` or `churns`.
- `tests/fixtures/models/churn/1/`: a deliberately weak champion: a standardised logistic
  regression fitted on only 40 rows of the same distribution, all taken from the top quarter of
  `f1` (a biased sample), exported like `scripts/make_models.py` (float32 `[None, 8]` input
  `float_input`, `zipmap=False`: int64 `label`, float32 `probabilities`). Its validation and test
  scores are measured on unbiased held-out rows of the same distribution (not in stream.csv).

The script then checks the loop with onnxruntime: the champion's accuracy on stream.csv, and the
accuracy on stream.csv rows 1000-2999 of the version `scripts/retrain.py` trains on an export
made of rows 0-499 labelled with the truth (what the gateway writes after 500 labels).

Run from anywhere: `.venv/bin/python scripts/make_feedback_fixtures.py` (writes and checks), or
with `--check` to compute and print both accuracies without writing anything.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
STREAM = ROOT / "tests" / "fixtures" / "feedback" / "stream.csv"
CHAMPION = ROOT / "tests" / "fixtures" / "models" / "churn" / "1"
SEED = 20261132
INPUT_NAME = "float_input"
FEATURES = [f"f{i}" for i in range(8)]
LABELS = ["stays", "churns"]
STREAM_ROWS = 3000
# Per-feature affine change of scale applied to make_classification's output.
SCALES = np.array([1.0, 12.0, 0.2, 150.0, 3.0, 0.5, 40.0, 7.0])
OFFSETS = np.array([0.0, 50.0, 1.0, 600.0, -2.0, 0.0, 200.0, 10.0])
CHAMPION_ROWS = 40
BIAS_FEATURE = 1
EXPORT_ROWS = 500
EVAL_FROM = 1000
CREATED_AT = "2026-11-29T09:00:00Z"
MAX_FILE_BYTES = 500 * 1024


def load_retrain():
    """scripts/retrain.py as a module (its training and writing functions)."""
    if "retrain" in sys.modules:
        return sys.modules["retrain"]
    spec = importlib.util.spec_from_file_location("retrain", ROOT / "scripts" / "retrain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["retrain"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def data():
    """(stream x, stream y), (pool x, pool y): float32 features, int64 class indices."""
    x, y = make_classification(
        n_samples=2 * STREAM_ROWS,
        n_features=8,
        n_informative=6,
        n_redundant=2,
        n_clusters_per_class=1,
        class_sep=1.0,
        flip_y=0.04,
        random_state=SEED,
    )
    x = (x * SCALES + OFFSETS).astype(np.float32)
    y = y.astype(np.int64)
    return (x[:STREAM_ROWS], y[:STREAM_ROWS]), (x[STREAM_ROWS:], y[STREAM_ROWS:])


def scores(model, x, y) -> dict:
    proba = model.predict_proba(x)
    predicted = proba.argmax(axis=1)
    values = {
        "accuracy": accuracy_score(y, predicted),
        "f1_macro": f1_score(y, predicted, average="macro"),
        "roc_auc": roc_auc_score(y, proba[:, 1]),
    }
    return {k: round(float(v), 6) for k, v in values.items()}


def champion(pool):
    """The weak champion, its ONNX bytes, training rows and held-out scores."""
    x, y = pool
    cut = np.quantile(x[:, BIAS_FEATURE], 0.75)
    biased = np.flatnonzero(x[:, BIAS_FEATURE] > cut)
    train = biased[:CHAMPION_ROWS]
    rest = np.setdiff1d(np.arange(len(y)), train)
    validation, test = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model.fit(x[train], y[train])
    onx = to_onnx(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURES)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return {
        "onnx": onx.SerializeToString(),
        "train_x": x[train],
        "validation": scores(model, x[validation], y[validation]),
        "test": scores(model, x[test], y[test]),
    }


def onnx_accuracy(onnx: bytes, x, y) -> float:
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {INPUT_NAME: x.astype(np.float32)})))
    assert outputs["label"].dtype == np.int64 and outputs["probabilities"].shape == (len(x), 2)
    return float((outputs["label"] == y).mean())


def export_lines(stream, onnx: bytes, rows: range) -> list[str]:
    """Export lines as the gateway writes them: rows labelled with the truth, champion predictions."""
    x, y = stream
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    label, proba = session.run(None, {INPUT_NAME: x[rows.start : rows.stop]})
    lines = []
    for offset, i in enumerate(rows):
        record = {
            "id": f"req-{i}",
            "row": 0,
            "time": f"2026-11-30T05:{(i // 60) % 60:02d}:{i % 60:02d}.000Z",
            "version": "1",
            "features": {name: float(v) for name, v in zip(FEATURES, x[i])},
            "label": LABELS[y[i]],
            "prediction": {"label": LABELS[label[offset]], "confidence": float(proba[offset].max())},
        }
        lines.append(json.dumps(record))
    return lines


def retrained_accuracy(stream, champion_onnx: bytes) -> tuple[float, dict]:
    """Accuracy on rows EVAL_FROM.. of the version retrain.py trains on rows 0..EXPORT_ROWS."""
    retrain = load_retrain()
    with tempfile.TemporaryDirectory() as temp:
        export = Path(temp) / "event-1.jsonl"
        export.write_text("\n".join(export_lines(stream, champion_onnx, range(EXPORT_ROWS))) + "\n")
        meta = retrain.Champion(
            version="1", task="classification", labels=LABELS, features=FEATURES, highlight="accuracy"
        )
        rows = retrain.read_rows(retrain.export_files(export), meta)
        trained = retrain.train(meta, rows)
    x, y = stream
    return onnx_accuracy(trained.onnx, x[EVAL_FROM:], y[EVAL_FROM:]), trained.metrics


def fmt(value) -> str:
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


def write(stream, result):
    x, y = stream
    STREAM.parent.mkdir(parents=True, exist_ok=True)
    with STREAM.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(FEATURES + ["label"])
        for row, label in zip(x, y):
            writer.writerow([fmt(v) for v in row] + [LABELS[label]])

    retrain = load_retrain()
    shutil.rmtree(CHAMPION, ignore_errors=True)
    CHAMPION.mkdir(parents=True)
    (CHAMPION / "model.onnx").write_bytes(result["onnx"])
    lines = [
        'task = "classification"',
        f'created_at = "{CREATED_AT}"',
        'run = "sklearn StandardScaler + LogisticRegression C=1.0 on 40 biased rows (scripts/make_feedback_fixtures.py)"',
        'description = "Test fixture: a deliberately weak churn champion, fitted on 40 rows from the top quarter of f1."',
        f"labels = {retrain.toml_value(LABELS)}",
        f"features = {retrain.toml_value(FEATURES)}",
        'highlight = "accuracy"',
        "",
        "[params]",
        'C = "1.0"',
        f'bias = "{CHAMPION_ROWS} rows with f{BIAS_FEATURE} above its 75th percentile"',
        'max_iter = "1000"',
        'scaler = "standard"',
        "",
        "[metrics.validation]",
        *[f"{k} = {v!r}" for k, v in result["validation"].items()],
        "",
        "[metrics.test]",
        *[f"{k} = {v!r}" for k, v in result["test"].items()],
    ]
    (CHAMPION / "model.toml").write_text("\n".join(lines) + "\n")
    retrain.write_reference(CHAMPION / "reference.csv", FEATURES, result["train_x"])
    for item in [STREAM, *CHAMPION.iterdir()]:
        if item.stat().st_size > MAX_FILE_BYTES:
            raise SystemExit(f"{item} is {item.stat().st_size} bytes, over the {MAX_FILE_BYTES} limit")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="print both accuracies, write nothing")
    args = parser.parse_args()

    stream, pool = data()
    result = champion(pool)
    champion_accuracy = onnx_accuracy(result["onnx"], *stream)
    retrained, validation = retrained_accuracy(stream, result["onnx"])
    if not args.check:
        write(stream, result)
        print(f"wrote {STREAM.relative_to(ROOT)} and {CHAMPION.relative_to(ROOT)}/")
    print(f"stream: {len(stream[1])} rows, {int(stream[1].sum())} churns")
    print(f"champion churn/1: accuracy on stream.csv = {champion_accuracy:.4f} "
          f"(held-out validation {result['validation']['accuracy']})")
    print(f"retrained on rows 0-{EXPORT_ROWS - 1}: accuracy on rows {EVAL_FROM}-{STREAM_ROWS - 1} = "
          f"{retrained:.4f} (its validation {validation})")
    if not (0.65 <= champion_accuracy <= 0.75 and retrained >= 0.88):
        print("out of the intended ranges (champion 0.65-0.75, retrained >= 0.88)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
