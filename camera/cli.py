"""`python -m camera send ...`: the camera client's command line.

exit status: 0 every request was answered (and, with --expected, rightly); 1 some request
failed or was answered wrongly; 2 bad usage (arguments, an unreadable file, no credentials)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from camera.expected import ExpectedError, read_expected
from camera.frames import Frame, image_frames, video_frames
from camera.report import frame_line, summary
from camera.run import MAX_CAMERA_ID_CHARS, FrameResult, SendSettings, send_all
from camera.transport import AUTH_CHOICES, NoCredentials

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m camera", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    send = sub.add_parser(
        "send", help="send frames to a Function URL and report the answers",
        description="Send frames as the course's cameras did: POST {content (base64), "
                    "request_id, filename} to --url, and take each answer from the HTTP "
                    "response (one stage) or, with --response-queue, from that queue "
                    "(two stages: the URL only acknowledges). One line per frame, then the "
                    "workload generator's summary with latencies.",
        epilog="exit status: 0 every request answered (rightly, with --expected); 1 some "
               "failed or were wrong; 2 bad usage")
    send.add_argument("--url", required=True, help="the Function URL")
    send.add_argument("--response-queue", metavar="URL",
                      help="two stages: poll this SQS queue for each request's answer")
    source = send.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=Path, metavar="FILE",
                        help="send every --every-th frame of this video (PyAV)")
    source.add_argument("--images", type=Path, metavar="DIR", help="send every image in DIR")
    send.add_argument("--every", type=int, default=15, metavar="N",
                      help="with --video: every N-th frame, the first included (default: "
                           "%(default)s, as the course's Raspberry Pi)")
    send.add_argument("--expected", type=Path, metavar="CSV",
                      help="CSV Image,Results: count correct and wrong answers (Image is the "
                           "image's name without extension, or the video's)")
    send.add_argument("--concurrency", type=int, default=1, metavar="N",
                      help="senders at once, each one request at a time (default: %(default)s)")
    send.add_argument("--interval", type=float, default=0.0, metavar="S",
                      help="seconds each sender waits between its requests (the Pi: 0.5)")
    send.add_argument("--duration", type=float, metavar="S",
                      help="keep sending the frames over again until S seconds have passed")
    send.add_argument("--timeout", type=float, default=30.0, metavar="S",
                      help="how long to wait for one answer (default: %(default)s)")
    send.add_argument("--auth", choices=AUTH_CHOICES, default="auto",
                      help="AWS_IAM: sign with SigV4 (boto3's credentials); NONE: do not; auto "
                           "(the default): unsigned, and signed from then on if the URL's "
                           "first answer is Lambda's 403")
    send.add_argument("--region", help="region to sign for (default: from the URL, else "
                                       "boto3's)")
    send.add_argument("--s3-bucket", metavar="BUCKET",
                      help="the earliest camera's way: put each frame in BUCKET and GET "
                           "URL?bucket=&key=")
    send.add_argument("--camera-id", metavar="ID",
                      help="the camera the frames come from, sent with each frame and its "
                           "number in the stream (0, 1, 2, ...) so that the function may "
                           "confirm a borderline face by the frames before it (default: the "
                           "video's name with a suffix new on every run; --images: none, each "
                           "image judged alone, unless this is given)")
    send.add_argument("--no-camera-id", action="store_true",
                      help="send no camera id: every frame is judged alone")
    send.add_argument("--json-out", type=Path, metavar="FILE",
                      help="also write one JSON line per request here (timings included)")
    send.add_argument("--quiet", action="store_true", help="the summary only")
    return parser


class _Stderr:
    """Whatever sys.stderr is when a line is written (not the one at configure time, which a
    caller that swaps it, as pytest does, may have closed by then)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _frames(args: argparse.Namespace) -> list[Frame]:
    if args.video is not None:
        if not args.video.is_file():
            raise FileNotFoundError(f"no such video: {args.video}")
        return list(video_frames(args.video, every=args.every))
    if not args.images.is_dir():
        raise FileNotFoundError(f"no such folder: {args.images}")
    frames = list(image_frames(args.images))
    if not frames:
        raise FileNotFoundError(f"no images in {args.images}")
    return frames


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import boto3
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(_Stderr()))
    if args.camera_id is not None and args.no_camera_id:
        print("camera: --camera-id and --no-camera-id exclude each other", file=sys.stderr)
        return EXIT_USAGE
    if args.camera_id is not None and not (
            0 < len(args.camera_id) <= MAX_CAMERA_ID_CHARS and args.camera_id.isprintable()):
        print(f"camera: --camera-id must be 1 to {MAX_CAMERA_ID_CHARS} printable characters",
              file=sys.stderr)
        return EXIT_USAGE
    if args.concurrency < 1 or args.every < 1 or args.interval < 0 or args.timeout <= 0:
        print("camera: --concurrency and --every must be at least 1, --interval at least 0 and "
              "--timeout positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        frames = _frames(args)
        expected = read_expected(args.expected) if args.expected else None
    except (OSError, ValueError, ExpectedError) as exc:
        print(f"camera: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = SendSettings(url=args.url, response_queue_url=args.response_queue,
                            concurrency=args.concurrency, interval_s=args.interval,
                            timeout_s=args.timeout, auth=args.auth, duration_s=args.duration,
                            s3_bucket=args.s3_bucket, region=args.region,
                            track=not args.no_camera_id, camera_id=args.camera_id)
    session = boto3.session.Session()
    sqs = session.client("sqs") if args.response_queue else None
    s3 = session.client("s3") if args.s3_bucket else None
    lock = threading.Lock()
    json_out = args.json_out.open("w", encoding="utf-8") if args.json_out else None
    width = max(len(f.filename) for f in frames) + 2

    def on_result(result: FrameResult) -> None:
        with lock:
            if not args.quiet:
                print(frame_line(result, width), flush=True)
            if json_out is not None:
                json_out.write(json.dumps(result.to_json()) + "\n")

    try:
        report = send_all(frames, settings, expected=expected, sqs=sqs, s3=s3,
                          on_result=on_result)
    except NoCredentials as exc:
        print(f"camera: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if json_out is not None:
            json_out.close()
    print(summary(report), flush=True)
    return EXIT_OK if report.ok else EXIT_FAILED
