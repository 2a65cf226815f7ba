#!/usr/bin/env python3
"""Drives a running vigil with tritonclient's gRPC client, unchanged and with its defaults
(tensors in raw_input_contents, answers in raw_output_contents), and checks every answer against
the onnxruntime fixtures, the status codes of its errors, and the admin token on the repository
calls.

Usage: tritonclient_grpc_check.py HOST:PORT FIXTURES_DIR ADMIN_TOKEN NO_ADMIN_HOST:PORT

HOST:PORT is the gRPC address of a gateway started with ADMIN_TOKEN; NO_ADMIN_HOST:PORT that of
a gateway started without an admin token (its repository calls are refused).
"""

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def expect_error(call, status, *fragments):
    """Runs `call`, which must fail with gRPC `status` and a message holding every fragment."""
    try:
        answer = call()
    except InferenceServerException as error:
        assert error.status() == f"StatusCode.{status}", (status, error.status(), str(error))
        for fragment in fragments:
            assert fragment in error.message(), (status, fragment, str(error))
        return error
    raise AssertionError(f"expected {status} {fragments}, got an answer: {answer}")


def tensor(name, rows, datatype):
    """An input with tritonclient's defaults: raw_input_contents."""
    rows = np.asarray(rows)
    value = grpcclient.InferInput(name, list(rows.shape), datatype)
    value.set_data_from_numpy(rows)
    return value


def check_outputs(result, fixture, where):
    """The model's outputs in `result` equal the fixture's: INT64 exactly, floats within 1e-5."""
    for name, expected in fixture["outputs"].items():
        got = result.as_numpy(name)
        assert got is not None, (where, name, result.get_response())
        want = np.asarray(expected["data"]).reshape(expected["shape"])
        assert list(got.shape) == expected["shape"], (where, name, got.shape)
        if expected["dtype"] == "int64":
            assert got.dtype == np.int64 and np.array_equal(got, want), (where, name, got)
        else:
            assert got.dtype == np.float32, (where, name, got.dtype)
            assert np.allclose(got, want, rtol=1e-5, atol=1e-5), (where, name, got)


def check_server(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata.name == "vigil", metadata
    assert "model_repository" in metadata.extensions, metadata
    index = client.get_model_repository_index().models
    assert len(index) == 7 and all(entry.state == "READY" for entry in index), index


def check_fixtures(client, fixtures):
    """Every fixture, with default outputs and with each fixture output asked for by name."""
    checked = 0
    for path in sorted(fixtures.glob("*.json")):
        fixture = json.loads(path.read_text())
        model, version = fixture["model"], fixture["version"]
        assert client.is_model_ready(model, version), (model, version)
        metadata = client.get_model_metadata(model, version)
        assert metadata.platform == "onnx_onnxv1", metadata
        assert list(metadata.versions) == [version], metadata
        inputs = {i.name: i.datatype for i in metadata.inputs}
        assert inputs.get(fixture["input"]) == "FP32", metadata
        served = {o.name for o in metadata.outputs}
        assert set(fixture["outputs"]) <= served, metadata
        rows = tensor(fixture["input"], np.asarray(fixture["rows"], dtype=np.float32), "FP32")
        asked = [grpcclient.InferRequestedOutput(name) for name in fixture["outputs"]]
        for outputs in (None, asked):
            request_id = f"{model}-{version}-{'all' if outputs is None else 'asked'}"
            result = client.infer(
                model, [rows], model_version=version, outputs=outputs, request_id=request_id
            )
            response = result.get_response()
            assert response.model_name == model, response.model_name
            assert response.model_version == version, response.model_version
            assert response.id == request_id, response.id
            names = [o.name for o in response.outputs]
            if outputs is None:
                assert set(fixture["outputs"]) <= set(names), names
            else:
                assert names == list(fixture["outputs"]), names
            check_outputs(result, fixture, (model, version, request_id))
            checked += 1
    return checked


def check_errors(client, fixtures):
    """Refusals and their status codes, and conversions the gateway makes (as over REST)."""
    iris = json.loads((fixtures / "iris-1.json").read_text())
    rows = tensor("float_input", np.asarray(iris["rows"], dtype=np.float32), "FP32")
    expect_error(lambda: client.infer("nope", [rows]), "NOT_FOUND", "unknown model `nope`")
    expect_error(
        lambda: client.infer("iris", [rows], model_version="9"),
        "NOT_FOUND",
        "model `iris` has no version `9`",
    )
    expect_error(lambda: client.get_model_metadata("nope"), "NOT_FOUND", "unknown model")
    wrong_name = tensor("x", np.asarray(iris["rows"], dtype=np.float32), "FP32")
    expect_error(
        lambda: client.infer("iris", [wrong_name]),
        "INVALID_ARGUMENT",
        "inputs[0].name",
        "no input `x`",
    )
    three = tensor("float_input", np.ones((1, 3), dtype=np.float32), "FP32")
    expect_error(
        lambda: client.infer("iris", [three]),
        "INVALID_ARGUMENT",
        "inputs[0].shape",
        "expects shape [-1, 4]",
    )
    expect_error(
        lambda: client.infer("iris", [rows], outputs=[grpcclient.InferRequestedOutput("nope")]),
        "INVALID_ARGUMENT",
        "outputs[0].name",
        "no output `nope`",
    )
    # FP64 for an FP32 input is converted, as over REST: the fixture rows answer as in FP32 ...
    fp64 = tensor("float_input", np.asarray(iris["rows"], dtype=np.float64), "FP64")
    result = client.infer("iris", [fp64], model_version="1")
    check_outputs(result, iris, ("iris", "1", "FP64"))
    # ... but not a value FP32 cannot hold, nor text.
    expect_error(
        lambda: client.infer("iris", [tensor("float_input", np.full((1, 4), 1e300), "FP64")]),
        "INVALID_ARGUMENT",
        "inputs[0].data",
        "cannot be converted from FP64 to FP32",
    )
    text = np.array([[b"a"] * 4], dtype=np.object_)
    expect_error(
        lambda: client.infer("iris", [tensor("float_input", text, "BYTES")]),
        "INVALID_ARGUMENT",
        "cannot be converted from BYTES to FP32",
    )


def check_repository(client, token):
    """Load/unload: the admin token in `authorization` metadata."""
    auth = {"authorization": f"Bearer {token}"}
    wrong = {"authorization": "Bearer wrong"}
    for call in (client.load_model, client.unload_model):
        expect_error(lambda: call("iris"), "UNAUTHENTICATED", "missing `Authorization")
        expect_error(lambda: call("iris", headers=wrong), "UNAUTHENTICATED", "wrong admin token")
    # tritonclient's unload_model names no version: all of iris, champion included, is refused.
    expect_error(
        lambda: client.unload_model("iris", headers=auth),
        "FAILED_PRECONDITION",
        "would unload its champion",
    )
    # Load without a version retries the versions not ready: none here, so nothing changes.
    client.load_model("iris", headers=auth)
    expect_error(
        lambda: client.load_model("iris", config="{}", headers=auth),
        "INVALID_ARGUMENT",
        "parameters.config",
        "not supported",
    )
    expect_error(lambda: client.load_model("nope", headers=auth), "NOT_FOUND", "unknown model")
    index = client.get_model_repository_index().models
    assert len(index) == 7 and all(entry.state == "READY" for entry in index), index


def check_admin_disabled(client, token):
    """A gateway without an admin token refuses repository changes, token or not."""
    for headers in (None, {"authorization": f"Bearer {token}"}):
        for call in (client.load_model, client.unload_model):
            expect_error(
                lambda: call("iris", headers=headers), "PERMISSION_DENIED", "admin API disabled"
            )
    index = client.get_model_repository_index().models
    assert len(index) == 7 and all(entry.state == "READY" for entry in index), index


def main() -> None:
    url, fixtures, token, no_admin_url = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    client = grpcclient.InferenceServerClient(url)
    check_server(client)
    checked = check_fixtures(client, fixtures)
    check_errors(client, fixtures)
    check_repository(client, token)
    check_admin_disabled(grpcclient.InferenceServerClient(no_admin_url), token)
    print(f"tritonclient grpc: {checked} inferences matched the fixtures")


if __name__ == "__main__":
    main()
