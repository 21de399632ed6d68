"""`python -m sampledata build --out DIR`: build the demo set and print where its parts are."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sampledata.demo_set import build_demo_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sampledata")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the demo gallery, student records and clips")
    build.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    demo = build_demo_set(args.out)
    print(json.dumps({"videos": str(demo.videos), "gallery": str(demo.gallery),
                      "students": str(demo.students), "expected": str(demo.expected)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
