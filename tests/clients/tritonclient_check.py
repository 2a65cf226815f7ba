#!/usr/bin/env python3
"""Drives a running vigil with tritonclient's HTTP client, unchanged and with its defaults
(binary tensors in and out), and checks every answer against the onnxruntime fixtures.

Usage: tritonclient_check.py HOST:PORT FIXTURES_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    url, fixtures = sys.argv[1], Path(sys.argv[2])
    client = httpclient.InferenceServerClient(url)
    assert client.is_server_live()
    assert client.is_server_ready()
    index = client.get_model_repository_index()
    assert len(index) == 7 and all(v["state"] == "READY" for v in index), index
    checked = 0
    for path in sorted(fixtures.glob("*.json")):
        fixture = json.loads(path.read_text())
        model, version = fixture["model"], fixture["version"]
        assert client.is_model_ready(model, version)
        metadata = client.get_model_metadata(model, version)
        assert metadata["platform"] == "onnx_onnxv1", metadata
        rows = np.asarray(fixture["rows"], dtype=np.float32)
        tensor = httpclient.InferInput(fixture["input"], list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)  # binary_data=True by default
        for outputs in (None, [httpclient.InferRequestedOutput(n, binary_data=False) for n in fixture["outputs"]]):
            result = client.infer(model, [tensor], model_version=version, outputs=outputs, request_id=f"{model}-{version}")
            response = result.get_response()
            assert response["model_version"] == version, response
            assert response["id"] == f"{model}-{version}", response
            for name, expected in fixture["outputs"].items():
                got = result.as_numpy(name)
                want = np.asarray(expected["data"]).reshape(expected["shape"])
                assert list(got.shape) == expected["shape"], (name, got.shape)
                if expected["dtype"] == "int64":
                    assert got.dtype == np.int64 and np.array_equal(got, want), (model, version, name)
                else:
                    assert np.allclose(got, want, rtol=1e-5, atol=1e-5), (model, version, name)
            checked += 1
    try:
        client.infer("nope", [tensor])
        raise AssertionError("unknown model must fail")
    except InferenceServerException as error:
        assert "unknown model" in str(error), error
    print(f"tritonclient: {checked} inferences matched the fixtures")


if __name__ == "__main__":
    main()
