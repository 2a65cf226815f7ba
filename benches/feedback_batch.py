#!/usr/bin/env python3
"""Latency of 1,000-item feedback batches against a running vigil gateway.

Each round sends one inference of `--rows` rows to `POST /v2/models/{model}/versions/{version}/infer`
with its own request id, then one feedback batch labelling every row of it
(`POST /v1/models/{model}/feedback`, `{"items": [{"id", "row", "label"}, ...]}`), and times the
feedback call alone (request sent → whole answer read, on a kept-alive connection). The input
rows and labels come from the version's metadata (input name and width; class count from the
`probabilities` output), so any classifier works. Every batch must answer 200 with every item
`accepted`; anything else stops the run with the answer.

Prints the number of batches and the feedback latency p50, p90, p99, max and mean in
milliseconds, and one line `RESULT p50_ms=… p99_ms=…` for scripts.

Run: `python3 benches/feedback_batch.py --port 8080 --token $VIGIL_ADMIN_TOKEN`
(Python standard library only).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import time


def request(conn: http.client.HTTPConnection, path: str, body: object, headers: dict) -> tuple[int, dict]:
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read() or b"{}")


def metadata(conn: http.client.HTTPConnection, model: str, version: str) -> tuple[str, int, int]:
    conn.request("GET", f"/v2/models/{model}/versions/{version}")
    answer = conn.getresponse()
    meta = json.loads(answer.read())
    if answer.status != 200:
        raise SystemExit(f"metadata of {model} v{version}: {answer.status} {meta}")
    tensor = meta["inputs"][0]
    width = tensor["shape"][-1]
    probabilities = [o for o in meta["outputs"] if len(o["shape"]) == 2]
    if not probabilities or width < 1:
        raise SystemExit(f"{model} v{version} is not a classifier with a fixed input width: {meta}")
    return tensor["name"], width, probabilities[0]["shape"][-1]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True, help="feedback or admin token")
    parser.add_argument("--model", default="iris")
    parser.add_argument("--version", default="1")
    parser.add_argument("--rows", type=int, default=1000, help="items per batch (default: 1000)")
    parser.add_argument("--batches", type=int, default=200, help="batches to time (default: 200)")
    parser.add_argument("--prefix", default=f"batch{random.randrange(1 << 32):08x}")
    args = parser.parse_args()

    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
    name, width, classes = metadata(conn, args.model, args.version)
    rng = random.Random(7)
    json_headers = {"Content-Type": "application/json"}
    feedback_headers = {**json_headers, "Authorization": f"Bearer {args.token}"}
    latencies = []
    for batch in range(args.batches):
        request_id = f"{args.prefix}-{batch}"
        rows = [[rng.uniform(0.0, 8.0) for _ in range(width)] for _ in range(args.rows)]
        body = {"id": request_id, "inputs": [{"name": name, "shape": [args.rows, width], "datatype": "FP32", "data": rows}]}
        status, answer = request(conn, f"/v2/models/{args.model}/versions/{args.version}/infer", body, json_headers)
        if status != 200:
            raise SystemExit(f"inference {request_id}: {status} {answer}")
        items = [{"id": request_id, "row": row, "label": row % classes} for row in range(args.rows)]
        started = time.perf_counter()
        status, answer = request(conn, f"/v1/models/{args.model}/feedback", {"items": items}, feedback_headers)
        latencies.append((time.perf_counter() - started) * 1000.0)
        if status != 200 or answer.get("counts", {}).get("accepted") != args.rows:
            raise SystemExit(f"feedback {request_id}: {status} {json.dumps(answer)[:500]}")
    latencies.sort()
    p50, p90, p99 = (percentile(latencies, q) for q in (0.5, 0.9, 0.99))
    print(
        f"{args.batches} batches of {args.rows} items: feedback latency p50 {p50:.1f} ms, "
        f"p90 {p90:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms, "
        f"mean {statistics.fmean(latencies):.1f} ms"
    )
    print(f"RESULT p50_ms={p50:.2f} p99_ms={p99:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
