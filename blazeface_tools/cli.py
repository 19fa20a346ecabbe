"""`blazeface`: the command line (client, server, evaluations).

blazeface detect photo.jpg other.png --url http://127.0.0.1:8000 --model full
blazeface serve
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from blazeface_tools.evaluation.cli import add_eval_commands


def _detect(args: argparse.Namespace) -> int:
    try:
        from blazeface_tools.client import ApiError, BlazefaceClient
    except ImportError:  # httpx is the `client` extra; `serve` and `eval` do not need it
        print("blazeface detect needs the extra: pip install 'blazeface-serve[client]'", file=sys.stderr)
        return 2
    status = 0
    with BlazefaceClient(args.url, api_key=args.api_key) as client:
        for photo in args.photos:
            try:
                result = client.detect(Path(photo).read_bytes(), model=args.model, min_score=args.min_score)
            except ApiError as exc:
                print(f"{photo}: {exc}", file=sys.stderr)
                status = 1
                continue
            except OSError as exc:
                print(f"{photo}: {exc.strerror or exc}", file=sys.stderr)
                status = 1
                continue
            if args.json:
                print(json.dumps({"file": photo, **result}))
                continue
            print(f"{photo}: {len(result['faces'])} face(s), {result['timing_ms']['total']:.1f} ms")
            for face in result["faces"]:
                box = face["box"]
                print(
                    f"  score {face['score']:.3f}  box ({box['x1']:.0f}, {box['y1']:.0f})–"
                    f"({box['x2']:.0f}, {box['y2']:.0f})  roll {face['roll_degrees']:+.1f}°"
                )
    return status


def _serve(args: argparse.Namespace) -> int:
    from service.__main__ import main as serve

    serve()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blazeface", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser("detect", help="send photos to a running service")
    detect.add_argument("photos", nargs="+")
    detect.add_argument("--url", default=os.environ.get("BLAZEFACE_URL", "http://127.0.0.1:8000"))
    detect.add_argument("--model", choices=["short", "full"], default=None)
    detect.add_argument("--min-score", type=float, default=None)
    detect.add_argument("--api-key", default=os.environ.get("BLAZEFACE_API_KEY"))
    detect.add_argument("--json", action="store_true", help="one JSON document per photo")
    detect.set_defaults(run=_detect)

    serve = commands.add_parser("serve", help="run the HTTP service (settings from the environment)")
    serve.set_defaults(run=_serve)

    add_eval_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
