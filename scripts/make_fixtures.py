#!/usr/bin/env python3
"""Builds the test-only model repository `tests/fixtures/models/`.

`iris_slow/1` and `iris_failing/1` take the iris input (float32 [N, 4]) and give the iris outputs
(`label` int64 [N], `probabilities` float32 [N, 3]) from a fixed linear layer, so they can be
deployed as shadows of the bundled iris versions:

- `iris_slow`: also runs a chain of 256x256 matrix products in an ONNX `Loop` whose start depends on
  the input (so it cannot be folded away at load), so each call takes milliseconds of real compute
  while the file stays small;
- `iris_failing`: reshapes its input to `[k, -1]` with `k = 3` whenever the first feature of the
  first row is above 100, which ONNX Runtime refuses; ordinary iris rows run fine.

Run from the repository root: `python scripts/make_fixtures.py`.
"""

from pathlib import Path
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "models"
IRIS = ROOT / "models" / "iris" / "1"
OPSET = [helper.make_opsetid("", 17)]

TRIPS = 20
WEIGHTS = np.array(
    [[0.4, 0.1, -0.5], [1.0, -0.3, -0.7], [-1.5, 0.2, 1.3], [-0.7, -0.6, 1.3]], dtype=np.float32
)


def head(nodes, initializers, source="x"):
    """Linear layer + softmax + argmax on `source` -> probabilities, label."""
    initializers.append(numpy_helper.from_array(WEIGHTS, "w"))
    nodes += [
        helper.make_node("MatMul", [source, "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label_2d"], axis=1, keepdims=0),
        helper.make_node("Identity", ["label_2d"], ["label"]),
    ]


def io():
    inputs = [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, ["N", 4])]
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
    ]
    return inputs, outputs


def slow_model():
    nodes, inits = [], []
    rng = np.random.default_rng(7)
    inits.append(numpy_helper.from_array((rng.standard_normal((256, 256)) / 16).astype(np.float32), "m"))
    inits.append(numpy_helper.from_array(np.array(TRIPS, dtype=np.int64), "trips"))
    inits.append(numpy_helper.from_array(np.array(True), "cond"))
    inits.append(numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero"))
    inits.append(numpy_helper.from_array(np.ones((), dtype=np.float32), "one_f"))
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["v_in", "m"], ["vm"]),
            helper.make_node("Tanh", ["vm"], ["v_out"]),
        ],
        "busy_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [256, 256]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [256, 256]),
        ],
    )
    nodes += [
        # scale = sum(input) * 0 + 1: always 1, but only known at run time.
        helper.make_node("ReduceSum", ["float_input"], ["input_sum"], keepdims=0),
        helper.make_node("Mul", ["input_sum", "zero"], ["input_zero"]),
        helper.make_node("Add", ["input_zero", "one_f"], ["scale"]),
        helper.make_node("Mul", ["m", "scale"], ["v0"]),
        helper.make_node("Loop", ["trips", "cond", "v0"], ["busy"], body=body),
        helper.make_node("ReduceSum", ["busy"], ["busy_sum"], keepdims=0),
        # busy_sum * 0 keeps the work in the graph without changing the result.
        helper.make_node("Mul", ["busy_sum", "zero"], ["nothing"]),
        helper.make_node("Add", ["float_input", "nothing"], ["x"]),
    ]
    head(nodes, inits)
    inputs, outputs = io()
    return helper.make_model(helper.make_graph(nodes, "iris_slow", inputs, outputs, inits), opset_imports=OPSET)


def failing_model():
    nodes, inits = [], []
    inits += [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_idx"),
        numpy_helper.from_array(np.array(100.0, dtype=np.float32), "limit"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
    ]
    nodes += [
        helper.make_node("Gather", ["float_input", "zero_idx"], ["first_row"], axis=0),
        helper.make_node("Gather", ["first_row", "zero_idx"], ["first_value"], axis=0),
        helper.make_node("Greater", ["first_value", "limit"], ["too_big"]),
        helper.make_node("Cast", ["too_big"], ["too_big_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["too_big_int", "two"], ["twice"]),
        helper.make_node("Add", ["twice", "one"], ["k_scalar"]),
        helper.make_node("Reshape", ["k_scalar", "one"], ["k"]),
        helper.make_node("Shape", ["float_input"], ["input_shape"]),
        helper.make_node("Concat", ["k", "minus_one"], ["odd_shape"], axis=0),
        helper.make_node("Reshape", ["float_input", "odd_shape"], ["reshaped"]),
        helper.make_node("Reshape", ["reshaped", "input_shape"], ["x"]),
    ]
    head(nodes, inits)
    inputs, outputs = io()
    return helper.make_model(helper.make_graph(nodes, "iris_failing", inputs, outputs, inits), opset_imports=OPSET)


def write(name, model, description):
    onnx.checker.check_model(model)
    directory = OUT / name / "1"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    toml = (IRIS / "model.toml").read_text()
    toml = toml.replace(
        toml.split("\n")[3], f'description = "{description}"'
    )
    (directory / "model.toml").write_text(toml)
    shutil.copy(IRIS / "reference.csv", directory / "reference.csv")


def main():
    # Only this script's models: scripts/make_feedback_fixtures.py writes others here.
    for name in ("iris_slow", "iris_failing"):
        shutil.rmtree(OUT / name, ignore_errors=True)
    write("iris_slow", slow_model(), "Test fixture: iris outputs after milliseconds of busy work per call.")
    write("iris_failing", failing_model(), "Test fixture: iris outputs; fails when the first feature exceeds 100.")


if __name__ == "__main__":
    main()
