"""The course baseline: a peer-style handler, for the side-by-side end-to-end numbers.

What the course implementations typically did, on purpose without our changes: one loop that
receives ONE message, deletes it at once (before any work is done), invokes the function
synchronously, then polls the output queue until a result arrives, writes it to a file and deletes
that message; then the next. No concurrency, no de-duplication, no heartbeat.

    python -m bench.baseline --config daemon.toml [--max-idle 30]

It reads the same TOML the daemon does (queue URLs, function name, results dir) and the same
boto3 endpoint variables, and runs until SIGTERM or *max_idle* seconds without a message.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import boto3


def handle_one(sqs: Any, lam: Any, settings: dict[str, Any], results: Path) -> bool:
    """One peer-style iteration; False if the input queue had nothing."""
    got = sqs.receive_message(QueueUrl=settings["input_queue_url"], MaxNumberOfMessages=1,
                              WaitTimeSeconds=1).get("Messages", [])
    if not got:
        return False
    message = got[0]
    sqs.delete_message(QueueUrl=settings["input_queue_url"],
                       ReceiptHandle=message["ReceiptHandle"])
    body = json.loads(message["Body"])
    if "Records" not in body:  # s3:TestEvent
        return True
    lam.invoke(FunctionName=settings["function_name"], InvocationType="RequestResponse",
               Payload=json.dumps(body).encode())["Payload"].read()
    while True:  # the answer comes back on the output queue
        out = sqs.receive_message(QueueUrl=settings["output_queue_url"], MaxNumberOfMessages=1,
                                  WaitTimeSeconds=1).get("Messages", [])
        if out:
            break
    result = json.loads(out[0]["Body"])
    path = results / (result["key"].rsplit(".", 1)[0] + ".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.get("csv") or "")
    sqs.delete_message(QueueUrl=settings["output_queue_url"],
                       ReceiptHandle=out[0]["ReceiptHandle"])
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.baseline")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--max-idle", type=float, default=300.0)
    args = parser.parse_args(argv)
    settings = tomllib.loads(args.config.read_text())
    session = boto3.session.Session(region_name=settings.get("region", "us-east-1"))
    sqs, lam = session.client("sqs"), session.client("lambda")
    results = Path(settings["results_dir"])
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    idle_since = time.monotonic()
    print("baseline.ready", flush=True)
    while not stopping and time.monotonic() - idle_since < args.max_idle:
        if handle_one(sqs, lam, settings, results):
            idle_since = time.monotonic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
