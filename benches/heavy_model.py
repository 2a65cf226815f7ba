#!/usr/bin/env python3
"""Writes the heavy model of the batching benchmark into a model repository: a scikit-learn
MLP (30 -> 512 -> 512 -> 2 by default, seeded) trained on the breast-cancer data, exported with
skl2onnx (`zipmap=False`), twice: `heavy_plain/1` and `heavy_batched/1`, the second with a
`[batching]` table (max_rows, max_queue_delay_us from the arguments). HIDDEN, comma-separated,
sets the hidden layers instead (e.g. sixteen layers of 16: a model whose cost is mostly ONNX
Runtime's fixed cost per node and call, not its work per row).

Usage: heavy_model.py REPOSITORY MAX_ROWS MAX_QUEUE_DELAY_US [HIDDEN]
"""

import sys
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    repository, max_rows, delay = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    hidden = tuple(int(n) for n in (sys.argv[4] if len(sys.argv) > 4 else "512,512").split(","))
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=hidden, max_iter=200, random_state=20261130),
    )
    model.fit(x, y)
    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    for name, batching in [
        ("heavy_plain", ""),
        ("heavy_batched", f"\n[batching]\nmax_rows = {max_rows}\nmax_queue_delay_us = {delay}\n"),
    ]:
        version = repository / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        (version / "model.onnx").write_bytes(onx.SerializeToString())
        (version / "model.toml").write_text(
            'task = "classification"\nlabels = ["malignant", "benign"]\n' + batching
        )
    print(f"training accuracy {model.score(x, y):.3f}; {len(onx.SerializeToString())} bytes")


if __name__ == "__main__":
    main()
