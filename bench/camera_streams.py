"""What the camera tracks buy and risk: the course clips, bench/variants.py's variants and
first-frame re-encodings of test_5.mp4 (whose unenrolled boy is the face a wrong name would be
given to), each sent as a camera sends it (every 15th frame) and judged twice by the function's
own code: each frame alone, and as one camera's stream, with the real CameraTracks on a moto
server's table made by the one provisioning definition.

    .venv/bin/python -m bench.camera_streams --data ../shared/data/cse546-2023 \
        [--variants 100] [--test5 100] [--out bench/out/camera_streams.json]

Per set and way it counts frames, faces whose person is named, borderline faces confirmed,
and the faces named wrongly: the boy, or any face given a name that is not its clip's person.
Faces are labelled as bench/borderline.py labels them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TORCH_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.borderline import BYSTANDER_CLIP, DEFAULT_DATA, face_label

WAYS = ("alone", "camera")
SETS = ("course", "variants", "test5_first")


def judge_stream(recognizer: Any, tracks: Any, frames: list[bytes], source: str, expected: str,
                 *, camera: bool) -> Counter[str]:
    """One video's frames, in order; with *camera*, as one camera's stream (a fresh id)."""
    from PIL import Image

    from lambda_image.camera_tracks import CameraFrame, lookback
    from lambda_image.matching import UNKNOWN

    counts: Counter[str] = Counter(streams=1)
    camera_id = f"{source}-{uuid.uuid4().hex[:8]}" if camera else None
    named_once = False
    for sequence, data in enumerate(frames):
        frame = CameraFrame(camera_id, sequence) if camera_id else None
        result = recognizer.recognize_image(data, index=sequence,
                                            earlier=lookback(tracks, frame))
        if frame is not None:
            tracks.keep(frame, result.faces)
        width = Image.open(io.BytesIO(data)).width
        counts["frames"] += 1
        for i, face in enumerate(result.faces):
            label = face_label(source, face.nearest, expected,
                               (face.box[0] + face.box[2]) / 2 / width, largest=i == 0)
            counts["faces"] += 1
            counts[f"decision:{face.decision}"] += 1
            if face.name == UNKNOWN:
                continue
            if label == "true" and face.name == expected:
                counts["true_named"] += 1
                named_once = True
            else:
                counts["wrong_named"] += 1
                counts["bystander_named"] += label == "bystander"
                print(json.dumps({"named_wrongly": source, "label": label, "sequence": sequence,
                                  "camera": camera, **face.as_dict()}), file=sys.stderr)
    counts["streams_named"] += named_once
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.camera_streams")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--variants", type=int, default=100)
    parser.add_argument("--test5", type=int, default=100, help="first-frame copies of test_5")
    parser.add_argument("--seed", type=int, default=15, help="of the test_5 copies")
    parser.add_argument("--every", type=int, default=15, help="every Nth frame, as the Pi sent")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "camera_streams.json")
    args = parser.parse_args(argv)

    import boto3
    import structlog

    from bench.variants import course_expectations, make_source_variants, make_variants
    from camera.frames import video_frames
    from lambda_image.camera_tracks import CameraTracks
    from lambda_image.config import FunctionSettings
    from lambda_image.recognize import Recognizer
    from localcloud.moto_server import MotoServer
    from openstack_handler.provisioning.aws import provision
    from openstack_handler.provisioning.spec import ResourceSpec

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    recognizer = Recognizer.from_settings(FunctionSettings(gallery_path=args.data / "encoding"))
    expected = course_expectations(args.data)
    makers = {
        "course": lambda: [(args.data / "videos" / v, v, n) for v, n in sorted(expected.items())],
        "variants": lambda: [(v.path, v.source, v.expected_name) for v in make_variants(
            args.data, args.cache / "variants", args.variants)],
        "test5_first": lambda: [(v.path, v.source, v.expected_name) for v in make_source_variants(
            args.data, args.cache / f"test5-seed{args.seed}", BYSTANDER_CLIP, args.test5,
            seed=args.seed, max_offset_s=0.0)],
    }
    results: dict[str, Any] = {"every": args.every, "sets": {}}
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)
    with MotoServer() as moto:
        session = boto3.session.Session(region_name="us-east-1")
        ddb = session.client("dynamodb", endpoint_url=moto.url)
        provisioned = provision(_Endpoint(session, moto.url), ResourceSpec(prefix="streams"))
        tracks = CameraTracks(ddb, provisioned.camera_tracks_table)
        for name in args.sets:
            totals = {way: Counter() for way in WAYS}
            for path, source, person in makers[name]():
                frames = [f.data for f in video_frames(path, every=args.every)]
                for way in WAYS:
                    totals[way] += judge_stream(recognizer, tracks, frames, source, person,
                                                camera=way == "camera")
                print(f"{name}: {path.name}", file=sys.stderr, flush=True)
            results["sets"][name] = {way: dict(sorted(c.items())) for way, c in totals.items()}
            print(json.dumps({name: results["sets"][name]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(render(results))
    return 0


class _Endpoint:
    """A boto3 session whose clients all go to one endpoint (what provisioning is given)."""

    def __init__(self, session: Any, url: str) -> None:
        self._session, self._url = session, url

    def client(self, service_name: str, **kwargs: Any) -> Any:
        return self._session.client(service_name, endpoint_url=self._url, **kwargs)

    def resource(self, service_name: str, **kwargs: Any) -> Any:
        return self._session.resource(service_name, endpoint_url=self._url, **kwargs)


def render(results: dict[str, Any]) -> str:
    lines = [("| set | way | streams | frames | faces | person named (faces) | streams named | "
             "confirmed | unconfirmed | named wrongly | the boy named |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, ways in results["sets"].items():
        for way, c in ways.items():
            lines.append(
                f"| {name} | {way} | {c.get('streams', 0)} | {c.get('frames', 0)} | "
                f"{c.get('faces', 0)} | {c.get('true_named', 0)} | {c.get('streams_named', 0)} | "
                f"{c.get('decision:confirmed', 0)} | {c.get('decision:unconfirmed', 0)} | "
                f"{c.get('wrong_named', 0)} | {c.get('bystander_named', 0)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
