#!/usr/bin/env python3
"""Replays a labelled CSV through a vigil gateway: predictions first, then the true labels.

Each chunk of rows is sent to `POST /v1/models/{model}:predict` as objects keyed by the CSV's
feature columns, with a request id (`X-Request-Id: <prefix>-<chunk>`); then the chunk's labels go
to `POST /v1/models/{model}/feedback` as one batch (`{"items": [{"id", "row", "label"}]}`, or
`"value"` with `--regression`). After every chunk it prints the labels sent so far, the champion
and the shadows, so the retraining trigger and promotion on evidence can be watched live.

The label column is `label` unless `--target` names another; every other column is a feature.
Only the standard library is used.

Run: `python3 scripts/replay_labels.py --model churn --csv tests/fixtures/feedback/stream.csv`
(token from `--token` or `$VIGIL_ADMIN_TOKEN`, which the feedback API accepts too).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(url: str, token: str, body: object | None = None, request_id: str | None = None) -> dict:
    """One JSON request; raises SystemExit with the gateway's error on a non-2xx answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    if request_id is not None:
        request.add_header("X-Request-Id", request_id)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{url}: {error.code} {error.read().decode(errors='replace')}") from None
    except urllib.error.URLError as error:
        raise SystemExit(f"{url}: {error.reason}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway")
    parser.add_argument("--model", required=True)
    parser.add_argument("--csv", required=True, help="features and the true label per row")
    parser.add_argument("--target", default="label", help="the label column (default: label)")
    parser.add_argument("--regression", action="store_true", help="the target is a number")
    parser.add_argument("--chunk", type=int, default=50, help="rows per request (default: 50)")
    parser.add_argument("--prefix", default="replay", help="request id prefix (default: replay)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between chunks (default: 0)")
    parser.add_argument("--token", default=os.environ.get("VIGIL_ADMIN_TOKEN"))
    args = parser.parse_args()
    if not args.token:
        parser.error("--token or $VIGIL_ADMIN_TOKEN is required")
    if args.chunk < 1:
        parser.error("--chunk must be at least 1")

    with open(args.csv, newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows or args.target not in rows[0]:
        raise SystemExit(f"{args.csv}: no rows, or no `{args.target}` column")
    features = [name for name in rows[0] if name != args.target]

    base = args.url.rstrip("/")
    sent = 0
    for start in range(0, len(rows), args.chunk):
        chunk = rows[start : start + args.chunk]
        request_id = f"{args.prefix}-{start // args.chunk}"
        instances = [{name: float(row[name]) for name in features} for row in chunk]
        call(f"{base}/v1/models/{args.model}:predict", args.token, {"instances": instances}, request_id)
        kind = "value" if args.regression else "label"
        items = [
            {"id": request_id, "row": index, kind: float(row[args.target]) if args.regression else row[args.target]}
            for index, row in enumerate(chunk)
        ]
        answer = call(f"{base}/v1/models/{args.model}/feedback", args.token, {"items": items})
        errors = [r["error"] for r in answer["results"] if r["status"] == "error"]
        if errors:
            print(f"{len(errors)} labels refused, first: {errors[0]}", file=sys.stderr)
        sent += len(chunk)
        model = call(f"{base}/admin/models/{args.model}", args.token)
        shadows = ",".join(s["version"] for s in model.get("shadows", [])) or "-"
        print(f"labels {sent:>6}  champion {model['champion']}  shadows {shadows}", flush=True)
        time.sleep(args.pause)
    return 0


if __name__ == "__main__":
    sys.exit(main())
