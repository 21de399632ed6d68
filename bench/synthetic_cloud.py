"""The local cloud with the synthetic function (bench/synthetic.py: a fixed latency, then the
result message), for the tests and benchmarks that measure where and when videos ran rather
than what they show; and S3 events for made-up keys (not URL-encoded: plain names only), sent
straight to its input queue."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localcloud.cloud import LocalCloud
from openstack_handler.provisioning.spec import ResourceSpec


@contextmanager
def synthetic_cloud(work: Path, *, prefix: str, slots: int,
                    latency_s: float) -> Iterator[LocalCloud]:
    """A started LocalCloud whose function waits *latency_s*, with *slots* environments."""
    gallery = work / "gallery.unused"  # the synthetic function reads no gallery
    gallery.write_bytes(b"")
    with LocalCloud(gallery=gallery, handler="bench.synthetic:fixed_latency",
                    resources=ResourceSpec(prefix=prefix, function_timeout_s=10),
                    concurrency=slots, work_dir=work / "cloud",
                    extra_environment={"SYNTHETIC_LATENCY_S": str(latency_s)}) as local:
        yield local


def send_video_events(cloud: LocalCloud, keys: list[str]) -> None:
    """One S3 ObjectCreated event per key on the input queue (no object is uploaded: the
    synthetic function reads none), ten to a batch."""
    sqs = cloud.session().client("sqs")
    bucket = cloud.provisioned.input_bucket
    for first in range(0, len(keys), 10):
        sqs.send_message_batch(QueueUrl=cloud.provisioned.input_queue_url, Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"Records": [{
                "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {
                    "key": key, "size": 1024, "eTag": hashlib.md5(key.encode()).hexdigest()}}}]})}
            for i, key in enumerate(keys[first:first + 10])])
