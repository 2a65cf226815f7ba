#!/usr/bin/env python3
"""Champion swap latency: how long after `PUT /admin/models/{m}/champion` the new version answers.

One client thread sends unversioned single-row v2 requests (`POST /v2/models/{m}/infer`) in a tight
loop over one keep-alive connection and records, for every request, when it was sent, when its
response arrived, its status and the `model_version` it names. Another thread (the swapper) issues
`PUT /admin/models/{m}/champion {"version": V}` on its own keep-alive connection, alternating
between two versions, `--swaps` times, `--gap-ms` apart; after each PUT it waits until the client
has seen the new version before the next gap starts.

For every swap, from the moment the PUT was sent (t_put):
  - put_rtt        the PUT's own round trip (until its response was read);
  - after_sent     until the first response naming the new version among requests sent at or after
                   t_put (requests already in flight at t_put are excluded);
  - after_returned until the first response naming the new version among requests sent at or after
                   the PUT's response was read.
Checks: every client response is 200 and names one of the two versions (`errors` counts the rest,
including connection failures); no request sent after the PUT returned, and no request sent after
a new-version response was received, is answered by the old version before the next PUT is sent
(`stale`). Both must be 0.

With `--client-port`, the client talks to another replica than the one the PUTs go to (replicas
sharing a database): the figures are then the time for a change made on one replica to be served
by another, and stale responses (the old version answering on the other replica after the PUT
returned) are expected until the change reaches it: they are reported, not counted as failures.

Standard library only. The admin token is read from the environment (ADMIN_TOKEN) so that it does
not appear on the command line. Exit status: 0 when every swap was observed and errors and stale are
0; 1 otherwise; 2 on bad arguments or when the gateway is not in the expected state.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time

BODY = (
    b'{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32",'
    b'"data":[[5.1,3.5,1.4,0.2]]}]}'
)


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


class Admin:
    """Admin API calls over one keep-alive connection."""

    def __init__(self, host, port, token, model):
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }
        self.model = model

    def call(self, method, path, body=None):
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data

    def show(self):
        status, data = self.call("GET", f"/admin/models/{self.model}")
        if status != 200:
            raise RuntimeError(f"GET /admin/models/{self.model} answered {status}: {data[:300]!r}")
        return json.loads(data)

    def promote(self, version):
        """Sends the PUT; returns (sent_ns, returned_ns, status, champion named in the answer)."""
        body = json.dumps({"version": version}).encode()
        sent = time.perf_counter_ns()
        status, data = self.call("PUT", f"/admin/models/{self.model}/champion", body)
        returned = time.perf_counter_ns()
        champion = None
        if status == 200:
            try:
                champion = json.loads(data).get("champion")
            except ValueError:
                pass
        return sent, returned, status, champion, data


class Client(threading.Thread):
    """Unversioned inference in a tight loop on one keep-alive connection."""

    def __init__(self, host, port, model, versions):
        super().__init__(name="client", daemon=True)
        self.host, self.port = host, port
        self.path = f"/v2/models/{model}/infer"
        self.versions = set(versions)
        self.headers = {"Content-Type": "application/json"}
        self.stop = threading.Event()
        # (sent_ns, received_ns, status, model_version) per request, in sending order.
        self.records = []
        self.errors = []  # (sent_ns, description)
        # Pacing for the swapper: (version, not_before_ns) to watch for, and the event it sets.
        self.expect = None
        self.seen = threading.Event()

    def run(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        records, errors = self.records, self.errors
        while not self.stop.is_set():
            sent = time.perf_counter_ns()
            try:
                conn.request("POST", self.path, body=BODY, headers=self.headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as e:
                errors.append((sent, f"connection: {e!r}"))
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                time.sleep(0.001)
                continue
            received = time.perf_counter_ns()
            version = None
            if response.status == 200:
                try:
                    version = json.loads(data).get("model_version")
                except ValueError:
                    pass
            records.append((sent, received, response.status, version))
            if response.status != 200:
                errors.append((sent, f"status {response.status}: {data[:200]!r}"))
            elif version not in self.versions:
                errors.append((sent, f"model_version {version!r}: {data[:200]!r}"))
            expect = self.expect
            if expect is not None and version == expect[0] and sent >= expect[1]:
                self.seen.set()
        conn.close()


def summarize(name, values_ns):
    values = [v / 1000.0 for v in values_ns]
    return (
        f"{name:<36} {len(values):>5} {min(values):>10.1f} {percentile(values, 50):>10.1f} "
        f"{percentile(values, 99):>10.1f} {max(values):>10.1f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--client-port",
        type=int,
        help="the client's gateway when it is another replica than the one swapped (default: --port)",
    )
    parser.add_argument("--model", default="iris")
    parser.add_argument("--versions", default="1,2", help="the two versions to alternate")
    parser.add_argument("--swaps", type=int, default=int(os.environ.get("SWAPS", "50")))
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause before each swap")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="client run before the first swap")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="longest wait for a new version")
    parser.add_argument("--verbose", action="store_true", help="print every swap")
    args = parser.parse_args()

    token = os.environ.get("ADMIN_TOKEN", "")
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    if not token or len(versions) != 2 or versions[0] == versions[1] or args.swaps < 1:
        print("swap_latency: needs ADMIN_TOKEN, two different --versions and --swaps >= 1",
              file=sys.stderr)
        return 2
    # Let a thread that finishes its I/O take the interpreter quickly from one that is computing.
    sys.setswitchinterval(0.0002)

    admin = Admin(args.host, args.port, token, args.model)
    try:
        report = admin.show()
    except (OSError, http.client.HTTPException, RuntimeError, ValueError) as e:
        print(f"swap_latency: {e}", file=sys.stderr)
        return 2
    states = {v["version"]: v["status"] for v in report.get("versions", [])}
    for version in versions:
        if states.get(version) != "ready":
            print(f"swap_latency: {args.model} version {version} is {states.get(version)!r}, "
                  "not ready", file=sys.stderr)
            return 2
    if report.get("shadows"):
        print(f"swap_latency: note: {args.model} has shadows "
              f"{[s['version'] for s in report['shadows']]}", file=sys.stderr)

    # Start from versions[1] so that the first measured swap goes to versions[0].
    if report.get("champion") != versions[1]:
        _, _, status, champion, data = admin.promote(versions[1])
        if status != 200 or champion != versions[1]:
            print(f"swap_latency: setting the champion to {versions[1]} answered {status}: "
                  f"{data[:300]!r}", file=sys.stderr)
            return 2
    start_champion = report.get("champion")

    client = Client(args.host, args.client_port or args.port, args.model, versions)
    client.start()
    time.sleep(args.warmup_s)
    warmup_requests = len(client.records)

    swaps = []  # (target, put_sent, put_returned)
    failures = []
    for i in range(args.swaps):
        target = versions[i % 2]
        time.sleep(args.gap_ms / 1000.0)
        client.seen.clear()
        sent, returned, status, champion, data = admin.promote(target)
        client.expect = (target, returned)
        swaps.append((target, sent, returned))
        if status != 200 or champion != target:
            failures.append(f"swap {i + 1}: PUT champion {target} answered {status}, champion "
                            f"{champion!r}: {data[:200]!r}")
            break
        if not client.seen.wait(args.timeout_s):
            failures.append(f"swap {i + 1}: no response from version {target} within "
                            f"{args.timeout_s}s after the PUT returned")
            break
        if not client.is_alive():
            failures.append("the client thread stopped")
            break
    time.sleep(args.gap_ms / 1000.0)
    client.stop.set()
    client.join(timeout=15)
    end_ns = time.perf_counter_ns()

    records = client.records
    # Only requests sent from the first PUT on count as "during the swaps".
    first_put = swaps[0][1] if swaps else end_ns
    during = [r for r in records if r[0] >= first_put]
    errors = [e for e in client.errors if e[0] >= first_put]
    early_errors = [e for e in client.errors if e[0] < first_put]

    put_rtt, after_sent, after_returned, visible_before_return = [], [], [], 0
    stale = []
    index = 0
    for n, (target, put_sent, put_returned) in enumerate(swaps):
        window_end = swaps[n + 1][1] if n + 1 < len(swaps) else end_ns
        put_rtt.append(put_returned - put_sent)
        while index < len(records) and records[index][0] < put_sent:
            index += 1
        first_sent = first_returned = None
        new_seen_at = None  # receive time of the first new-version response
        j = index
        while j < len(records) and records[j][0] < window_end:
            sent, received, status, version = records[j]
            if status == 200 and version == target:
                if first_sent is None:
                    first_sent = received
                    new_seen_at = received
                if first_returned is None and sent >= put_returned:
                    first_returned = received
            elif status == 200 and version != target and received < window_end:
                # (A request still in flight when the next PUT was sent may get the next version.)
                if sent >= put_returned or (new_seen_at is not None and sent >= new_seen_at):
                    stale.append((n + 1, target, version, (sent - put_sent) / 1000.0))
            j += 1
        if first_sent is not None:
            after_sent.append(first_sent - put_sent)
            if first_sent < put_returned:
                visible_before_return += 1
        if first_returned is not None:
            after_returned.append(first_returned - put_sent)
        if args.verbose:
            fmt = lambda v: "-" if v is None else f"{(v - put_sent) / 1000.0:.1f}"
            print(f"swap {n + 1:>3} -> {target}: put_rtt {(put_returned - put_sent) / 1000.0:.1f} µs"
                  f"  after_sent {fmt(first_sent)} µs  after_returned {fmt(first_returned)} µs")

    rtts = [(r[1] - r[0]) / 1000.0 for r in during] or [float("nan")]
    seconds = (end_ns - first_put) / 1e9 if swaps else float("nan")
    print(f"model {args.model}: {len(swaps)} swaps alternating {versions[0]} <-> {versions[1]} "
          f"(champion before the run: {start_champion}), {args.gap_ms:g} ms apart; "
          f"one client, one keep-alive connection")
    print(f"client: {warmup_requests} warm-up requests, then {len(during)} requests during the "
          f"swaps ({seconds:.2f} s, {len(during) / seconds:.0f} req/s); "
          f"request round trip p50 {percentile(rtts, 50):.1f} µs, p99 {percentile(rtts, 99):.1f} µs, "
          f"max {max(rtts):.1f} µs")
    print(f"errors during the swaps: {len(errors)} (non-200, other version or connection failure); "
          f"stale responses: {len(stale)}; new version visible before the PUT returned in "
          f"{visible_before_return} of {len(after_sent)} swaps")
    print()
    print(f"{'time from sending the PUT, µs':<36} {'n':>5} {'min':>10} {'p50':>10} {'p99':>10} "
          f"{'max':>10}")
    if put_rtt:
        print(summarize("PUT round trip", put_rtt))
    if after_sent:
        print(summarize("first new (sent after PUT sent)", after_sent))
    if after_returned:
        print(summarize("first new (sent after PUT returned)", after_returned))
    print(f"(p99 is nearest-rank: with fewer than 100 swaps, as here with {len(swaps)}, it is the "
          "maximum)" if len(swaps) < 100 else "(p99 is nearest-rank)")

    sys.stdout.flush()
    for sent, description in errors[:10]:
        print(f"error at +{(sent - first_put) / 1e3:.1f} µs: {description}", file=sys.stderr)
    for n, target, version, at in stale[:10]:
        print(f"stale: swap {n} to {target}: a request sent {at:.1f} µs after the PUT got version "
              f"{version}", file=sys.stderr)
    if early_errors:
        print(f"note: {len(early_errors)} errors during the warm-up, e.g. {early_errors[0][1]}",
              file=sys.stderr)
    for failure in failures:
        print(f"swap_latency: {failure}", file=sys.stderr)
    # On another replica the old version may still answer until the change reaches it: there,
    # stale responses measure the propagation and are reported, not failures.
    other_replica = args.client_port not in (None, args.port)
    ok = (
        not failures
        and not errors
        and (other_replica or not stale)
        and not early_errors
        and len(swaps) == args.swaps
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
