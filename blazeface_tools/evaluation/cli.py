"""`blazeface eval jitter|ap`: the paper's measurements from the command line.

    blazeface eval jitter tests/data/photos --models short full back --shifts 1..8
    blazeface eval ap --annotations tests/data/eval/labels.txt --images tests/data/eval/images \
        --models short full back --preprocess exact fast

`add_eval_commands(subparsers)` registers them on the main parser; each sets `run(args) -> int`.
`run_jitter`/`run_ap` return JSON-ready reports and `jitter_markdown`/`ap_markdown` print them, for
`loadtest/eval_report.py` and other callers.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blazeface_tools.evaluation.ap import EvalConfig, SizeBuckets, detect_annotated, evaluate
from blazeface_tools.evaluation.jitter import POINT_NAMES, JitterConfig, measure_jitter, reduction
from blazeface_tools.evaluation.wider import read_annotations
from service.specs import MODELS as SPECS

if TYPE_CHECKING:
    from service.pipeline import Detector

MODELS = tuple(SPECS)
PREPROCESS = ("exact", "fast")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def parse_shifts(tokens: Sequence[str]) -> tuple[int, ...]:
    """`["1..8"]`, `["1", "2", "4"]` or `["1,2,4"]` → sorted unique positive magnitudes."""
    values: set[int] = set()
    for token in tokens:
        for part in token.split(","):
            lo, sep, hi = part.partition("..")
            try:
                span = range(int(lo), int(hi) + 1) if sep else range(int(lo), int(lo) + 1)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad shift {part!r}: use N, N,M or A..B") from None
            values.update(span)
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("shifts must be positive integers")
    return tuple(sorted(values))


def expand_photos(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders → their image files (not recursive), sorted by name."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(path)
    return out


def _detector(threads: int) -> Detector:
    from service.pipeline import Detector  # loads ONNX Runtime: only when a command runs

    return Detector(threads=threads)


def _num(value: float, digits: int = 4) -> float | None:
    return None if math.isnan(value) else round(value, digits)


# -- jitter ---------------------------------------------------------------------------------------------


def run_jitter(
    detector: Detector, photos: Sequence[Path], models: Sequence[str], config: JitterConfig
) -> dict[str, Any]:
    loaded = [(p.name, p.read_bytes()) for p in photos]
    report: dict[str, Any] = {
        "definition": (
            "RMS over box corners and six keypoints of the Euclidean displacement between detections "
            "on an image and on copies whose content is shifted (then shifted back), / inter-ocular "
            "distance of the reference face; faces paired one-to-one by IoU >= min_iou"
        ),
        "points": list(POINT_NAMES),
        "config": {
            "shift_magnitudes_input_px": list(config.shifts),
            "directions": [list(d) for d in config.directions],
            "fill": config.fill,
            "preprocess": config.preprocess,
            "min_iou": config.min_iou,
            "min_score": config.min_score,
            "photos": [name for name, _ in loaded],
        },
        "models": {},
    }
    for model in models:
        result = measure_jitter(detector, loaded, model, ("blend", "nms"), config)
        blend, nms = result["blend"]["all"], result["nms"]["all"]
        report["models"][model] = {
            "blend": blend.as_dict(),
            "nms": nms.as_dict(),
            "reduction": _num(reduction(blend.rms, nms.rms)),
            "reduction_box": _num(reduction(blend.rms_box, nms.rms_box)),
            "reduction_keypoints": _num(reduction(blend.rms_keypoints, nms.rms_keypoints)),
            "per_photo": {
                name: {s: _num(result[s][name].rms, 5) for s in ("blend", "nms")}
                | {"faces": result["blend"][name].reference_faces, "pairs": result["blend"][name].pairs}
                for name, _ in loaded
            },
        }
        # The pooled RMS leans on the hardest faces; the median photo says what is typical.
        per_photo = [reduction(result["blend"][n].rms, result["nms"][n].rms) for n, _ in loaded]
        finite = [r for r in per_photo if not math.isnan(r)]
        report["models"][model]["median_photo_reduction"] = (
            _num(float(statistics.median(finite))) if finite else None
        )
    return report


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def jitter_markdown(report: dict[str, Any]) -> str:
    lines = [
        "| model | suppression | jitter (RMS / IOD) | box corners | keypoints | pairs | missed |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, res in report["models"].items():
        for s in ("blend", "nms"):
            r = res[s]
            lines.append(
                f"| {model} | {s} | {_f(r['rms'])} | {_f(r['rms_box'])} | {_f(r['rms_keypoints'])} "
                f"| {r['pairs']} | {r['missed']} |"
            )
        lines.append(
            f"| {model} | reduction, 1 − blend/nms | **{_pct(res['reduction'])}** "
            f"| {_pct(res['reduction_box'])} | {_pct(res['reduction_keypoints'])} | | |"
        )
    return "\n".join(lines)


def _run_jitter_command(args: argparse.Namespace) -> int:
    photos = expand_photos(args.photos)
    config = JitterConfig(
        shifts=parse_shifts(args.shifts),
        min_iou=args.min_iou,
        fill=args.fill,
        preprocess=args.preprocess,
        min_score=args.min_score,
    )
    report = run_jitter(_detector(args.threads), photos, args.models, config)
    print(jitter_markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# -- AP -------------------------------------------------------------------------------------------------


def run_ap(
    detector: Detector,
    annotations_path: Path,
    images_dir: Path,
    models: Sequence[str],
    preprocess: Sequence[str] = ("exact",),
    config: EvalConfig | None = None,
    min_score: float | None = None,
    subsets: dict[str, str] | None = None,
) -> dict[str, Any]:
    """AP per model × preprocess (× subset: a name → file-name prefix, e.g. {"original": "dlib/"})."""
    config = config or EvalConfig()
    annotations = read_annotations(annotations_path)
    subsets = {"all images": ""} | (subsets or {})
    report: dict[str, Any] = {
        "definition": (
            f"VOC AP at IoU >= {config.iou_threshold} ({config.interpolation}-points interpolation), "
            "greedy by score, each ground truth matched once, duplicates are false positives; buckets by "
            "ground-truth box height, faces of other buckets are ignore regions"
        ),
        "config": {
            "annotations": str(annotations_path),
            "iou_threshold": config.iou_threshold,
            "interpolation": config.interpolation,
            "buckets": config.buckets.describe(),
            "min_score": min_score if min_score is not None else _default_thresholds(),
            "suppression": "blend",
            "box_mapping": "none: detector boxes compared as they come",
            "images": len(annotations),
            "faces": sum(len(a.faces) for a in annotations),
        },
        "results": {},
    }
    for model in models:
        for mode in preprocess:
            images = detect_annotated(
                detector, annotations, images_dir, model=model, preprocess=mode, min_score=min_score
            )
            for subset, prefix in subsets.items():
                chosen = [im for im in images if im.name.startswith(prefix)]
                buckets = evaluate(chosen, config)
                report["results"].setdefault(subset, {}).setdefault(model, {})[mode] = {
                    bucket: result.as_dict() for bucket, result in buckets.items()
                }
    return report


def _default_thresholds() -> str:
    thresholds = ", ".join(f"{name} {spec.decoder.min_score_thresh:g}" for name, spec in SPECS.items())
    return f"model default ({thresholds})"


def ap_markdown(report: dict[str, Any]) -> str:
    blocks: list[str] = []
    buckets = ["all", *SizeBuckets.NAMES]
    described = report["config"]["buckets"]
    header = " | ".join(f"{b} ({described[b]})" if b in described else b for b in buckets)
    for subset, per_model in report["results"].items():
        lines = [f"**{subset}** — AP, (true positives / faces, false positives)", ""]
        lines += [f"| model | preprocess | {header} |", "|---|---|" + "---|" * len(buckets)]
        for model, per_mode in per_model.items():
            for mode, res in per_mode.items():
                cells = [
                    "–"
                    if res[b]["ap"] is None
                    else f"{res[b]['ap']:.3f} ({res[b]['true_positives']}/{res[b]['num_gt']}, "
                    f"{res[b]['false_positives']} FP)"
                    for b in buckets
                ]
                lines.append(f"| {model} | {mode} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _run_ap_command(args: argparse.Namespace) -> int:
    config = EvalConfig(
        iou_threshold=args.iou,
        buckets=SizeBuckets(easy_min=args.easy_min, hard_max=args.hard_max),
        interpolation=args.interpolation,
    )
    report = run_ap(
        _detector(args.threads),
        Path(args.annotations),
        Path(args.images),
        args.models,
        args.preprocess,
        config,
        min_score=args.min_score,
    )
    print(ap_markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# -- video --------------------------------------------------------------------------------------------


def run_video(
    detector: Detector, photos: Sequence[Path], models: Sequence[str], frames: int, noise: float
) -> dict[str, Any]:
    """Video-mode jitter per photo and model, raw tracker vs One-Euro smoothing."""
    from blazeface_tools.evaluation.video import video_jitter

    rows = []
    for path in photos:
        for model in models:
            result = video_jitter(detector, path.read_bytes(), model=model, frames=frames, noise_sigma=noise)
            rows.append(
                {"photo": path.name, "model": model, **result.__dict__, "reduction": result.reduction}
            )
    return {"frames": frames, "noise_sigma": noise, "rows": rows}


def video_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"{report['frames']} frames of a still photo, Gaussian noise σ = {report['noise_sigma']:g} "
        "per frame; jitter = RMS about each track's mean / inter-ocular distance",
        "",
        "| photo | model | tracks | raw | smoothed | reduction |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['photo']} | {row['model']} | {row['tracks']} | {row['raw']:.4f} | "
            f"{row['smoothed']:.4f} | {100 * row['reduction']:.0f} % |"
        )
    return "\n".join(lines)


def _run_video_command(args: argparse.Namespace) -> int:
    report = run_video(
        _detector(args.threads), expand_photos(args.photos), args.models, args.frames, args.noise
    )
    print(video_markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# -- registration ---------------------------------------------------------------------------------------


def add_eval_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `eval jitter`, `eval ap` and `eval video` to the main parser's subcommands."""
    evaluation = subparsers.add_parser("eval", help="measure jitter and average precision (paper §3)")
    commands = evaluation.add_subparsers(dest="eval_command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models", "--model", nargs="+", choices=MODELS, default=list(MODELS))
    common.add_argument("--min-score", type=float, default=None, help="default: the model's own")
    common.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    common.add_argument("--json", metavar="FILE", help="also write the report as JSON")

    jitter = commands.add_parser(
        "jitter", parents=[common], help="RMS / inter-ocular distance under small shifts, blend vs nms"
    )
    jitter.add_argument("photos", nargs="+", help="image files or folders of them")
    jitter.add_argument(
        "--shifts",
        nargs="+",
        default=["1..8"],
        help="shift magnitudes in model-input pixels: N, N,M or A..B (default 1..8)",
    )
    jitter.add_argument("--preprocess", choices=PREPROCESS, default="exact")
    jitter.add_argument("--min-iou", type=float, default=0.5, help="pairing threshold (default 0.5)")
    jitter.add_argument("--fill", choices=["edge", "constant"], default="edge")
    jitter.set_defaults(run=_run_jitter_command)

    ap = commands.add_parser("ap", parents=[common], help="VOC average precision on WIDER-format labels")
    ap.add_argument("--annotations", required=True, help="WIDER FACE format annotation file")
    ap.add_argument("--images", required=True, help="folder the annotation file names are relative to")
    ap.add_argument("--preprocess", nargs="+", choices=PREPROCESS, default=["exact"])
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--interpolation", choices=["all", "11point"], default="all")
    ap.add_argument("--easy-min", type=float, default=50.0, help="easy: face height >= this (px)")
    ap.add_argument("--hard-max", type=float, default=25.0, help="hard: face height < this (px)")
    ap.set_defaults(run=_run_ap_command)

    video = commands.add_parser(
        "video", parents=[common], help="video-mode jitter of tracked faces, with and without smoothing"
    )
    video.add_argument("photos", nargs="+", help="image files or folders of them (each becomes a still clip)")
    video.add_argument("--frames", type=int, default=60)
    video.add_argument("--noise", type=float, default=4.0, help="per-frame Gaussian noise σ, grey levels")
    video.set_defaults(run=_run_video_command)
