#!/usr/bin/env python3
"""Retrains a model on the labelled rows vigil exported and adds the result as the next version.

vigil runs this as its retraining command with one JSON event on stdin:

    {"event_id": "...", "model": "churn", "champion": "1", "labels_since_last": 500,
     "labels_total": 500, "export": "/abs/state/exports/churn/<event_id>.jsonl",
     "created_at": "2026-11-30T05:00:00.000Z"}

Only `event_id`, `model`, `champion` and `export` are used. The script

1. reads the champion's `<models>/<model>/<champion>/model.toml` (task, labels, features,
   highlight; `engine` and `threshold` are carried over);
2. reads every `*.jsonl` export in the directory of `export` (files in modification-time order,
   lines in file order), keeps one row per `(id, row)` (the last one read), and takes the features
   in the champion's `features` order, the target from `label` (a class name of the champion's
   `labels`, mapped to its index) or `value` (regressors); rows it cannot use are counted and
   skipped;
3. holds out a seeded 20% (stratified by class for classifiers) for the validation scores
   (accuracy, f1_macro and roc_auc; or r2, rmse and mae), and fits on the rest a standardised
   logistic regression (classifiers) or ridge regression (regressors). The standardisation is
   folded into the linear layer, so the ONNX file is a single `LinearClassifier` /
   `LinearRegressor` (small, and loadable by both engines). Classifiers always output all of the
   champion's classes: classes missing from the exports get probability ~0;
4. exports it like `scripts/make_models.py` (float32 input `[None, F]` named `float_input`,
   `zipmap=False`: int64 `label` + float32 `probabilities`), checks the file with onnxruntime
   against scikit-learn, writes `model.onnx`, `model.toml` and `reference.csv` (the fit rows, at
   most 10,000) into a hidden temporary directory of the model and renames it to
   `<models>/<model>/<highest numeric version + 1>`;
5. asks the gateway to load it: `POST {url}/admin/repository/rescan` with
   `Authorization: Bearer $VIGIL_ADMIN_TOKEN`.

Events are delivered at least once: when a version whose `run` names this event already exists,
nothing is trained again; the script only repeats the rescan.

Exit status: 0 the version is written (or already was) and the rescan answered 200 without
reporting it as failed; 1 nothing written (bad event, unreadable champion or exports, too few rows
or a single class, export check failed); 2 bad command line; 3 the version is written but the
rescan failed or reported the version as not ready. Every failure is one line on stderr.

Run: `.venv/bin/python scripts/retrain.py --models models < event.json`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import re
import shutil
import sys
import tomllib
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

SEED = 20261130
INPUT_NAME = "float_input"
VALIDATION_FRACTION = 0.2
MIN_ROWS = 20
MAX_REFERENCE_ROWS = 10_000
LOGISTIC_C = 1.0
RIDGE_ALPHA = 1.0
MAX_ITER = 1000
# Logit offset of classes the exports never showed: probability ~e^-50 relative to the others.
ABSENT_CLASS_LOGIT = -50.0
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_RESCAN = 3


class RetrainError(Exception):
    """A failure with the exit status it ends the script with."""

    def __init__(self, message: str, status: int = EXIT_FAILED):
        super().__init__(message)
        self.status = status


@dataclass
class Champion:
    """What the new version inherits from the champion's `model.toml`."""

    version: str
    task: str
    labels: list[str]
    features: list[str]
    highlight: str | None
    engine: str | None = None
    threshold: float | None = None


@dataclass
class Dataset:
    """Labelled rows ready to fit: `x` float32 [N, F]; `y` class indices (int) or values (float)."""

    x: object
    y: object
    files: int
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class Trained:
    """A trained, exported and checked version, not yet written."""

    onnx: bytes
    metrics: dict[str, float]
    highlight: str
    params: dict[str, str]
    reference: object
    fit_rows: int
    validation_rows: int


# ----------------------------------------------------------------------------------------- input


def read_event(text: str) -> dict:
    try:
        event = json.loads(text)
    except json.JSONDecodeError as error:
        raise RetrainError(f"the event on stdin is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise RetrainError("the event on stdin is not a JSON object")
    for key in ("event_id", "model", "champion", "export"):
        value = event.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and key == "champion":
            event[key] = str(value)
        elif not isinstance(value, str) or not value:
            raise RetrainError(f"the event has no `{key}` string")
    for key in ("model", "champion"):
        if not NAME.match(event[key]):
            raise RetrainError(f"the event's `{key}` {event[key]!r} is not a valid name")
    return event


def read_champion(models: Path, model: str, version: str) -> Champion:
    path = models / model / version / "model.toml"
    try:
        meta = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RetrainError(f"no champion metadata at {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise RetrainError(f"cannot read {path}: {error}") from None
    task = meta.get("task")
    if task not in ("classification", "regression"):
        raise RetrainError(f"{path}: task must be classification or regression, not {task!r}")
    labels = [str(label) for label in meta.get("labels", [])]
    if task == "classification" and len(labels) < 2:
        raise RetrainError(f"{path}: a classifier needs `labels` (at least two class names) to map the exports' class names")
    if len(set(labels)) != len(labels):
        raise RetrainError(f"{path}: `labels` has duplicates")
    features = [str(feature) for feature in meta.get("features", [])]
    if not features:
        raise RetrainError(f"{path}: `features` is needed to order the exports' named features")
    highlight = meta.get("highlight")
    threshold = meta.get("threshold")
    return Champion(
        version=version,
        task=task,
        labels=labels,
        features=features,
        highlight=str(highlight) if highlight is not None else None,
        engine=str(meta["engine"]) if "engine" in meta else None,
        threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
    )


def export_files(export: Path) -> list[Path]:
    """Every export of the model so far, oldest first (modification time, then name)."""
    if not export.is_file():
        raise RetrainError(f"the event's export {export} does not exist")
    files = [p for p in export.parent.glob("*.jsonl") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def read_rows(files: list[Path], champion: Champion) -> Dataset:
    """The labelled rows of `files`, one per (id, row), the last read winning."""
    import numpy as np

    latest: dict[tuple, dict] = {}
    skipped: dict[str, int] = {}

    def skip(reason: str):
        skipped[reason] = skipped.get(reason, 0) + 1

    for path in files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise RetrainError(f"cannot read export {path}: {error}") from None
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skip("not JSON")
                continue
            if not isinstance(record, dict) or "id" not in record:
                skip("no id")
                continue
            key = (json.dumps(record.get("id")), json.dumps(record.get("row", 0)))
            latest.pop(key, None)  # re-insert so the dict keeps last-write order
            latest[key] = record

    index = {name: i for i, name in enumerate(champion.labels)}
    xs, ys = [], []
    for record in latest.values():
        features = record.get("features")
        if not isinstance(features, dict):
            skip("no features")
            continue
        try:
            row = [float(features[name]) for name in champion.features]
        except KeyError:
            skip("missing feature")
            continue
        except (TypeError, ValueError):
            skip("non-numeric feature")
            continue
        if not all(math.isfinite(v) for v in row):
            skip("non-finite feature")
            continue
        if champion.task == "classification":
            label = record.get("label")
            if label is None:
                skip("no label")
                continue
            if str(label) not in index:
                skip("label not in the champion's labels")
                continue
            ys.append(index[str(label)])
        else:
            value = record.get("value")
            try:
                value = float(value)
            except (TypeError, ValueError):
                skip("no numeric value")
                continue
            if not math.isfinite(value):
                skip("non-finite value")
                continue
            ys.append(value)
        xs.append(row)

    x = np.asarray(xs, dtype=np.float32).reshape(-1, len(champion.features))
    y = np.asarray(ys, dtype=np.int64 if champion.task == "classification" else np.float64)
    return Dataset(x=x, y=y, files=len(files), skipped=skipped)


# -------------------------------------------------------------------------------------- training


def split(data: Dataset, labels: list[str] | None):
    import numpy as np
    from sklearn.model_selection import train_test_split

    n = len(data.y)
    if n < MIN_ROWS:
        raise RetrainError(f"only {n} usable labelled rows; need at least {MIN_ROWS}")
    stratify = None
    classification = labels is not None
    if classification:
        counts = np.bincount(data.y)
        present = np.flatnonzero(counts)
        if len(present) < 2:
            raise RetrainError(
                f"all {n} usable labelled rows have the same class ({labels[present[0]]!r}); need at least two classes"
            )
        if counts[present].min() >= 2:
            stratify = data.y
    try:
        x_fit, x_val, y_fit, y_val = train_test_split(
            data.x, data.y, test_size=VALIDATION_FRACTION, random_state=SEED, stratify=stratify
        )
    except ValueError:
        # More classes than validation rows: stratification is impossible, split at random.
        x_fit, x_val, y_fit, y_val = train_test_split(
            data.x, data.y, test_size=VALIDATION_FRACTION, random_state=SEED
        )
    if classification and len(np.unique(y_fit)) < 2:
        raise RetrainError("the fit part of the rows has a single class; need more labelled rows of the rarer class")
    return x_fit, x_val, y_fit, y_val


def fold_classifier(scaler, fitted, n_classes: int):
    """A LogisticRegression on raw inputs equal to `scaler` then `fitted`, with all `n_classes`."""
    import numpy as np

    present = fitted.classes_.astype(np.int64)
    coef = fitted.coef_ / scaler.scale_
    intercept = fitted.intercept_ - coef @ scaler.mean_
    model = copy.deepcopy(fitted)
    if n_classes == 2:
        model.classes_ = np.arange(2)
        model.coef_, model.intercept_ = coef, intercept
        return model
    # Multinomial softmax over every class of the champion.
    if len(present) == 2:
        # A binary fit: sigmoid(w·x + b) = softmax over logits (−(w·x + b)/2, (w·x + b)/2).
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    full_coef = np.zeros((n_classes, coef.shape[1]))
    full_intercept = np.full(n_classes, ABSENT_CLASS_LOGIT)
    full_coef[present] = coef
    full_intercept[present] = intercept
    model.classes_ = np.arange(n_classes)
    model.coef_, model.intercept_ = full_coef, full_intercept
    return model


def fold_regressor(scaler, fitted):
    import numpy as np

    model = copy.deepcopy(fitted)
    model.coef_ = fitted.coef_ / scaler.scale_
    model.intercept_ = float(fitted.intercept_ - model.coef_ @ scaler.mean_)
    model.coef_ = np.asarray(model.coef_, dtype=np.float64)
    return model


def to_onnx_bytes(model, n_features: int, classification: bool) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}} if classification else None,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


def run_onnx(onnx: bytes, x):
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, {INPUT_NAME: np.asarray(x, dtype=np.float32)})
    return dict(zip(names, outputs))


def classification_metrics(y, proba, n_classes: int) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    predicted = proba.argmax(axis=1)
    scores = {
        "accuracy": accuracy_score(y, predicted),
        "f1_macro": f1_score(y, predicted, average="macro"),
    }
    present = np.unique(y)
    if n_classes == 2 and len(present) == 2:
        scores["roc_auc"] = roc_auc_score(y, proba[:, 1])
    elif n_classes > 2 and len(present) == n_classes:
        scores["roc_auc"] = roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(n_classes))
    return {k: round(float(v), 6) for k, v in scores.items()}


def regression_metrics(y, predicted) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    scores = {
        "r2": r2_score(y, predicted),
        "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "mae": mean_absolute_error(y, predicted),
    }
    return {k: round(float(v), 6) for k, v in scores.items()}


def train(champion: Champion, data: Dataset) -> Trained:
    """Fits, exports and checks a new version on `data` (no files written)."""
    # Library warnings (convergence, undefined metrics) would spread over many stderr lines.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _train(champion, data)


def _train(champion: Champion, data: Dataset) -> Trained:
    import numpy as np
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    classification = champion.task == "classification"
    x_fit, x_val, y_fit, y_val = split(data, champion.labels if classification else None)
    scaler = StandardScaler().fit(x_fit.astype(np.float64))
    x_scaled = scaler.transform(x_fit.astype(np.float64))
    n_features = len(champion.features)
    if classification:
        n_classes = len(champion.labels)
        fitted = LogisticRegression(C=LOGISTIC_C, max_iter=MAX_ITER).fit(x_scaled, y_fit)
        model = fold_classifier(scaler, fitted, n_classes)
        onnx = to_onnx_bytes(model, n_features, classification=True)
        outputs = run_onnx(onnx, x_val)
        label, proba = outputs.get("label"), outputs.get("probabilities")
        if label is None or proba is None or label.dtype != np.int64 or proba.shape != (len(x_val), n_classes):
            raise RetrainError("the exported classifier lacks int64 `label` / float32 `probabilities` [N, classes]")
        expected = np.zeros((len(x_val), n_classes))
        expected[:, fitted.classes_] = fitted.predict_proba(scaler.transform(x_val.astype(np.float64)))
        gap = float(np.abs(proba - expected).max())
        if gap > 1e-3:
            raise RetrainError(f"the exported classifier differs from scikit-learn by {gap:.3g} in probability")
        metrics = classification_metrics(y_val, proba, n_classes)
        default_highlight = "accuracy"
        params = {
            "estimator": "LogisticRegression",
            "C": str(LOGISTIC_C),
            "max_iter": str(MAX_ITER),
            "scaler": "standard (folded into the linear layer)",
            "classes_seen": ",".join(champion.labels[i] for i in fitted.classes_),
        }
    else:
        fitted = Ridge(alpha=RIDGE_ALPHA).fit(x_scaled, y_fit)
        model = fold_regressor(scaler, fitted)
        onnx = to_onnx_bytes(model, n_features, classification=False)
        outputs = run_onnx(onnx, x_val)
        values = [v for v in outputs.values() if v.dtype == np.float32]
        if len(values) != 1:
            raise RetrainError("the exported regressor does not have exactly one float32 output")
        predicted = values[0].reshape(-1).astype(np.float64)
        expected = fitted.predict(scaler.transform(x_val.astype(np.float64)))
        gap = float(np.abs(predicted - expected).max() / max(1.0, float(np.abs(expected).max())))
        if gap > 1e-4:
            raise RetrainError(f"the exported regressor differs from scikit-learn by {gap:.3g} (relative)")
        metrics = regression_metrics(y_val, predicted)
        default_highlight = "rmse"
        params = {
            "estimator": "Ridge",
            "alpha": str(RIDGE_ALPHA),
            "scaler": "standard (folded into the linear layer)",
        }
    highlight = champion.highlight if champion.highlight in metrics else default_highlight
    reference = x_fit
    if len(reference) > MAX_REFERENCE_ROWS:
        keep = np.sort(np.random.default_rng(SEED).choice(len(reference), MAX_REFERENCE_ROWS, replace=False))
        reference = reference[keep]
    params.update({"seed": str(SEED), "validation_fraction": str(VALIDATION_FRACTION)})
    return Trained(
        onnx=onnx,
        metrics=metrics,
        highlight=highlight,
        params=params,
        reference=reference,
        fit_rows=len(x_fit),
        validation_rows=len(x_val),
    )


# --------------------------------------------------------------------------------------- writing


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value) -> str:
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else toml_string(key)


def model_toml(champion: Champion, trained: Trained, event: dict, data: Dataset) -> str:
    created_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    noun = "logistic regression" if champion.task == "classification" else "ridge regression"
    description = (
        f"Standardised {noun} retrained on {len(data.y)} labelled rows from {data.files} "
        f"export(s) ({trained.fit_rows} fit, {trained.validation_rows} validation); "
        f"champion was version {champion.version}."
    )
    lines = [
        f"task = {toml_value(champion.task)}",
        f"created_at = {toml_value(created_at)}",
        f"run = {toml_value(run_name(event['event_id']))}",
        f"description = {toml_value(description)}",
    ]
    if champion.task == "classification":
        lines.append(f"labels = {toml_value(champion.labels)}")
    lines.append(f"features = {toml_value(champion.features)}")
    lines.append(f"highlight = {toml_value(trained.highlight)}")
    if champion.engine is not None:
        lines.append(f"engine = {toml_value(champion.engine)}")
    if champion.threshold is not None:
        lines.append(f"threshold = {toml_value(champion.threshold)}")
    lines += ["", "[params]"]
    for key, value in sorted(trained.params.items()):
        lines.append(f"{toml_key(key)} = {toml_value(value)}")
    lines += ["", "[metrics.validation]"]
    for key, value in trained.metrics.items():
        lines.append(f"{toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def run_name(event_id: str) -> str:
    return f"scripts/retrain.py from event {event_id}"


def write_reference(path: Path, features: list[str], rows):
    import numpy as np

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(features)
        for row in rows:
            writer.writerow([np.format_float_positional(np.float32(v), unique=True, trim="-") for v in row])


def numeric_versions(model_dir: Path) -> list[int]:
    return [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]


def version_of_event(model_dir: Path, event_id: str) -> str | None:
    """The version an earlier delivery of this event already wrote, if any."""
    wanted = run_name(event_id)
    for path in sorted(model_dir.iterdir()):
        if not path.is_dir() or not NAME.match(path.name):
            continue
        try:
            meta = tomllib.loads((path / "model.toml").read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if meta.get("run") == wanted:
            return path.name
    return None


def fsync_path(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_version(model_dir: Path, files: dict[str, bytes | str], reference_writer) -> str:
    """Writes `files` into a hidden temporary directory and renames it to the next version."""
    # Hidden: the gateway's scan skips names starting with a dot.
    temp = model_dir / f".retrain-{os.getpid()}-{datetime.now(timezone.utc).strftime('%H%M%S%f')}"
    temp.mkdir()
    try:
        for name, content in files.items():
            target = temp / name
            if isinstance(content, str):
                target.write_text(content)
            else:
                target.write_bytes(content)
        reference_writer(temp / "reference.csv")
        for item in temp.iterdir():
            fsync_path(item)
        fsync_path(temp)
        for _ in range(20):
            version = str(max(numeric_versions(model_dir), default=0) + 1)
            target = model_dir / version
            if target.exists():
                continue
            try:
                os.rename(temp, target)
            except OSError:
                if target.exists():
                    continue  # another writer took this number meanwhile
                raise
            fsync_path(model_dir)
            return version
        raise RetrainError(f"could not claim a new version directory in {model_dir}")
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


# ---------------------------------------------------------------------------------------- rescan


def rescan(url: str, token: str | None, timeout: float) -> dict:
    endpoint = url.rstrip("/") + "/admin/repository/rescan"
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(endpoint, data=b"", method="POST", headers=headers)
    # A direct connection: the gateway is not reached through http_proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace").strip().replace("\n", " ")[:300]
        raise RetrainError(f"rescan at {endpoint} answered {error.code}: {detail}", EXIT_RESCAN) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise RetrainError(f"rescan at {endpoint} failed: {reason}", EXIT_RESCAN) from None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise RetrainError(f"rescan at {endpoint} answered non-JSON: {body[:200]!r}", EXIT_RESCAN) from None


def check_rescan(answer: dict, model: str, version: str):
    for item in answer.get("found", []) if isinstance(answer, dict) else []:
        if item.get("model") == model and str(item.get("version")) == version and item.get("status") != "ready":
            reason = item.get("reason", "no reason given")
            raise RetrainError(f"the gateway found {model}/{version} but it is {item.get('status')}: {reason}", EXIT_RESCAN)


# ------------------------------------------------------------------------------------------ main


def retrain(event: dict, models: Path) -> tuple[str, str]:
    """Writes the event's new version (or finds the one already written); returns (version, summary)."""
    model_dir = models / event["model"]
    if not model_dir.is_dir():
        raise RetrainError(f"no model directory {model_dir}")
    done = version_of_event(model_dir, event["event_id"])
    if done is not None:
        return done, f"{event['model']}/{done} was already written from event {event['event_id']}"
    champion = read_champion(models, event["model"], event["champion"])
    data = read_rows(export_files(Path(event["export"])), champion)
    if data.skipped:
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(data.skipped.items()))
        print(f"retrain.py: skipped rows: {detail}", file=sys.stderr)
    trained = train(champion, data)
    files = {"model.onnx": trained.onnx, "model.toml": model_toml(champion, trained, event, data)}
    version = write_version(
        model_dir, files, lambda path: write_reference(path, champion.features, trained.reference)
    )
    scores = ", ".join(f"{k}={v}" for k, v in trained.metrics.items())
    summary = (
        f"{event['model']}/{version} written from event {event['event_id']}: {scores} on "
        f"{trained.validation_rows} validation rows; fit on {trained.fit_rows} rows "
        f"({len(data.y)} labelled rows in {data.files} export(s)); highlight {trained.highlight}"
    )
    return version, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="models", help="the model repository (default: models)")
    parser.add_argument(
        "--url",
        default=os.environ.get("VIGIL_URL", "http://127.0.0.1:8080"),
        help="the gateway (default: $VIGIL_URL or http://127.0.0.1:8080)",
    )
    parser.add_argument("--token", default=None, help="admin token (default: $VIGIL_ADMIN_TOKEN)")
    parser.add_argument("--timeout", type=float, default=120.0, help="rescan timeout in seconds (default: 120)")
    args = parser.parse_args(argv)
    token = args.token if args.token is not None else os.environ.get("VIGIL_ADMIN_TOKEN")
    try:
        event = read_event(sys.stdin.read())
        version, summary = retrain(event, Path(args.models).resolve())
        print(summary, flush=True)
        answer = rescan(args.url, token, args.timeout)
        print(f"rescan: {json.dumps(answer, separators=(',', ':'))}", flush=True)
        check_rescan(answer, event["model"], version)
    except RetrainError as error:
        print(f"retrain.py: {error}", file=sys.stderr)
        return error.status
    except Exception as error:  # noqa: BLE001 - every failure is one line and a non-zero status
        print(f"retrain.py: {type(error).__name__}: {error}".replace("\n", " "), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
