"""Convert MediaPipe's BlazeFace `.tflite` files into ONNX (our own small converter).

Why our own: `tflite2onnx` and `tf2onnx` handle only the short-range model and only at batch 1; both fail
on the full-range one, whose 1×1-conv weights are stored sparse (`DENSIFY`) and fp16 (`DEQUANTIZE`)
(ARCHITECTURE.md §5). BlazeFace needs only a handful of operators, so this converter knows exactly those and
refuses anything else with a `ConversionError` that names the operator.

What the ONNX model looks like:

- input `image`: uint8 NHWC `[batch, S, S, 3]`, RGB; the graph casts it to float and maps 0..255 onto
  -1..1 the way MediaPipe's `ImageToTensorCalculator` does for these models (`output_tensor_float_range
  {min: -1 max: 1}` → `value * 2/255 - 1`), so clients ship 4× fewer bytes than float input;
- the model's own outputs, every anchor's regressors `[batch, A, 16]` and logit `[batch, A, 1]` (TFLite
  calls them `regressors`/`classificators` in the short model and `Identity`/`Identity_1` in the full
  one; we tell them apart by their last dimension), stay inside as `raw_regressors` and `raw_logits`;
- a tail selects each image's K best candidates (K = `ModelSpec.top_k`), so a batch returns K×72 bytes
  per image instead of A×68: outputs `scores` float32 `[batch, K]` (MediaPipe's score, the sigmoid of the
  logit clipped to ±score_clipping_thresh; best first), `anchor_indices` int32 `[batch, K]` and
  `regressors` float32 `[batch, K, 16]` (those anchors' rows). Anchor decoding stays in Python
  (`service/decoding/`). Every tail operator is in TensorRT's ONNX parser support matrix (TopK with an
  initializer K, GatherElements rather than GatherND);
- opset 17, IR version 8 (readable by the ONNX Runtime in Triton and by TensorRT's parser).

Inside, activations are NCHW (ONNX's layout); constants are folded at conversion time (`DEQUANTIZE`
fp16 → fp32, `DENSIFY` → dense), so the graph has no trace of either operator.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

from blazeface_tools.weights import densify as densify_module
from blazeface_tools.weights.densify import CsrLevel, DenseLevel, Level, SparsityError, densify
from service.backends.base import ModelOutputs

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "image"
BATCH_DIM = "batch"
# The TFLite outputs' names inside the graph, by the size of their last dimension: 16 box/keypoint
# coordinates, 1 class logit. `with_raw_outputs` exposes them.
RAW_REGRESSORS, RAW_LOGITS = "raw_regressors", "raw_logits"
RAW_NAMES: dict[int, str] = {16: RAW_REGRESSORS, 1: RAW_LOGITS}
# The graph's outputs: the service's names (one source for every backend).
SCORES, ANCHOR_INDICES, REGRESSORS = ModelOutputs._fields
# MediaPipe's GetValueRangeTransformation(0, 255, -1, 1): value * scale + offset, computed in float32.
NORM_SCALE = np.float32(2.0 / 255.0)
NORM_OFFSET = np.float32(-1.0)
CONVERTER_VERSION = "1"

_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)
# Where an NHWC axis lands in NCHW.
_AXIS_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_ACT = tflite.ActivationFunctionType
_NUMPY_TYPES: dict[int, np.dtype] = {
    tflite.TensorType.FLOAT32: np.dtype("<f4"),
    tflite.TensorType.FLOAT16: np.dtype("<f2"),
    tflite.TensorType.INT32: np.dtype("<i4"),
    tflite.TensorType.INT64: np.dtype("<i8"),
    tflite.TensorType.UINT8: np.dtype("u1"),
    tflite.TensorType.INT8: np.dtype("i1"),
}


def converter_sha256() -> str:
    """One digest of the converter's sources, stamped into every model: editing the converter makes
    every built model stale without a version bump."""
    digest = hashlib.sha256()
    for source in (Path(__file__), Path(densify_module.__file__)):
        digest.update(source.read_bytes())
    return digest.hexdigest()


class ConversionError(Exception):
    """The `.tflite` file uses something this converter does not handle, or is malformed."""


def convert(tflite_bytes: bytes, *, top_k: int, score_clip: float, source: str = "") -> onnx.ModelProto:
    """Convert a BlazeFace `.tflite` flatbuffer to a checked ONNX model returning `top_k` candidates per
    image, scored on logits clipped to ±`score_clip` (see the module docstring)."""
    model = _Converter(tflite_bytes).run(top_k, score_clip)
    model.doc_string = (
        f"BlazeFace converted from {source or 'a .tflite file'} by blazeface_tools.weights.tflite_to_onnx. "
        "Input: uint8 RGB NHWC; normalised in-graph to [-1, 1] as MediaPipe does."
    )
    helper.set_model_props(
        model,
        {
            "source": source,
            "source_sha256": hashlib.sha256(tflite_bytes).hexdigest(),
            "converter_version": CONVERTER_VERSION,
            "converter_sha256": converter_sha256(),
            **selection_stamps(top_k, score_clip),
            "normalisation": "x * 2/255 - 1 (MediaPipe ImageToTensorCalculator, float range -1..1)",
        },
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the converted model fails onnx.checker: {exc}") from exc
    return model


def selection_stamps(top_k: int, score_clip: float) -> dict[str, str]:
    """The stamps that name a model's candidate selection: a build compares them with specs.py."""
    return {"top_k": str(top_k), "score_clipping_thresh": str(score_clip)}


def convert_file(src: Path, dst: Path, *, top_k: int, score_clip: float, source: str = "") -> onnx.ModelProto:
    """Convert `src` (.tflite) and write the ONNX model to `dst` atomically (parent dirs created)."""
    model = convert(src.read_bytes(), top_k=top_k, score_clip=score_clip, source=source or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")  # unique: parallel builds never collide
    tmp.write_bytes(model.SerializeToString())
    # Readers (Triton, the embedded backend) never see a half-written file.
    tmp.replace(dst)
    return model


def with_raw_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` that also outputs every anchor's `raw_regressors` and `raw_logits` (the tail's
    inputs): for the conversion tests against LiteRT and for counting candidates past K."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for name, coords in ((RAW_REGRESSORS, 16), (RAW_LOGITS, 1)):
        exposed.graph.output.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM, None, coords])
        )
    return exposed


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite/TensorFlow SAME padding for one spatial dim: (before, after), the odd pixel at the end."""
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class _Converter:
    def __init__(self, data: bytes) -> None:
        self.data = data
        # Bytes 4..8 of every TFLite flatbuffer are its file identifier.
        if data[4:8] != b"TFL3":
            raise ConversionError("not a TFLite model (no TFL3 file identifier)")
        try:
            self.model = tflite.Model.GetRootAsModel(data, 0)
            if self.model.SubgraphsLength() != 1:
                raise ConversionError(f"expected one subgraph, found {self.model.SubgraphsLength()}")
            self.graph = self.model.Subgraphs(0)
        except (IndexError, ValueError) as exc:  # flatbuffers' errors on a file that is not a model
            raise ConversionError(f"not a readable TFLite model: {exc}") from exc
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.consts: dict[int, np.ndarray] = {}  # folded constants, TFLite layout
        self.names: dict[int, str] = {}  # tensor index → ONNX value name
        self.nchw: set[int] = set()  # rank-4 activations held as NCHW in ONNX
        self.outputs: dict[int, str] = {}
        self._uid = 0

    # ---- tensors -------------------------------------------------------------------------------
    def shape(self, idx: int) -> list[int]:
        return [int(d) for d in self.graph.Tensors(idx).ShapeAsNumpy()]

    def tensor_name(self, idx: int) -> str:
        return self.graph.Tensors(idx).Name().decode()

    def const(self, idx: int) -> np.ndarray | None:
        """The tensor's constant value (densified), or None when it is computed at run time."""
        if idx in self.consts:
            return self.consts[idx]
        tensor = self.graph.Tensors(idx)
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer.Offset() > 1:  # large models keep data outside the flatbuffer, at an absolute offset
            raw = self.data[buffer.Offset() : buffer.Offset() + buffer.Size()]
        elif buffer.DataLength():
            raw = buffer.DataAsNumpy().tobytes()
        else:
            return None
        dtype = _NUMPY_TYPES.get(tensor.Type())
        if dtype is None:
            raise ConversionError(f"tensor {self.tensor_name(idx)!r} has unsupported type {tensor.Type()}")
        values = np.frombuffer(raw, dtype=dtype)
        sparsity = tensor.Sparsity()
        if sparsity is not None:
            try:
                array = densify(values, self.shape(idx), *_read_sparsity(sparsity))
            except SparsityError as exc:
                raise ConversionError(f"tensor {self.tensor_name(idx)!r}: {exc}") from exc
        else:
            array = values.reshape(self.shape(idx))
        self.consts[idx] = array
        return array

    def weight(self, idx: int) -> np.ndarray:
        value = self.const(idx)
        if value is None:
            raise ConversionError(f"tensor {self.tensor_name(idx)!r} must be constant (weights, pads)")
        return value

    def value(self, idx: int) -> str:
        """ONNX name of a run-time tensor (an activation)."""
        if idx not in self.names:
            raise ConversionError(f"tensor {self.tensor_name(idx)!r} is used before it is produced")
        return self.names[idx]

    def initializer(self, array: np.ndarray, hint: str) -> str:
        self._uid += 1
        name = f"{hint}_{self._uid}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def produce(self, idx: int, *, nchw: bool) -> str:
        """Name the ONNX value that will hold TFLite tensor `idx` and record its layout."""
        name = self.outputs.get(idx, f"t{idx}")
        self.names[idx] = name
        if nchw:
            self.nchw.add(idx)
        return name

    def activation(self, x: str, act: int, out: str) -> str:
        """Apply a fused activation (not NONE); `x` is the pre-activation value, `out` the final name."""
        if act == _ACT.RELU:
            return self.node("Relu", [x], out)
        bounds = {_ACT.RELU6: (0.0, 6.0), _ACT.RELU_N1_TO_1: (-1.0, 1.0)}.get(act)
        if bounds is None:
            raise ConversionError(f"fused activation {act} is not supported")
        lo = self.initializer(np.array(bounds[0], np.float32), "clip_lo")
        hi = self.initializer(np.array(bounds[1], np.float32), "clip_hi")
        return self.node("Clip", [x, lo, hi], out)

    def with_activation(self, op_type: str, inputs: list[str], out: str, act: int, **attrs: object) -> None:
        if act == _ACT.NONE:
            self.node(op_type, inputs, out, **attrs)
        else:
            self.activation(self.node(op_type, inputs, f"{out}_preact", **attrs), act, out)

    # ---- graph ---------------------------------------------------------------------------------
    def run(self, top_k: int, score_clip: float) -> onnx.ModelProto:
        graph = self.graph
        if graph.InputsLength() != 1:
            raise ConversionError(f"expected one input, found {graph.InputsLength()}")
        in_idx = int(graph.Inputs(0))
        in_shape = self.shape(in_idx)
        if len(in_shape) != 4 or graph.Tensors(in_idx).Type() != tflite.TensorType.FLOAT32:
            raise ConversionError(f"expected a float32 NHWC input, found shape {in_shape}")

        for i in range(graph.OutputsLength()):
            idx = int(graph.Outputs(i))
            shape = self.shape(idx)
            name = RAW_NAMES.get(shape[-1]) if len(shape) == 3 else None
            if name is None or name in self.outputs.values():
                raise ConversionError(f"cannot tell which output {self.tensor_name(idx)!r} {shape} is")
            self.outputs[idx] = name
        if sorted(self.outputs.values()) != sorted(RAW_NAMES.values()):
            raise ConversionError(f"expected outputs {sorted(RAW_NAMES.values())}")

        x = self.node("Cast", [INPUT_NAME], "image_float", to=TensorProto.FLOAT)
        x = self.node("Mul", [x, self.initializer(NORM_SCALE, "norm_scale")], "image_scaled")
        x = self.node("Add", [x, self.initializer(NORM_OFFSET, "norm_offset")], "image_normalised")
        self.node("Transpose", [x], self.produce(in_idx, nchw=True), perm=list(_NHWC_TO_NCHW))

        handlers: dict[str, Callable[[int, tflite.Operator], None]] = {
            "DEQUANTIZE": self.op_dequantize,
            "DENSIFY": self.op_densify,
            "CONV_2D": self.op_conv,
            "DEPTHWISE_CONV_2D": self.op_depthwise_conv,
            "RELU": self.op_relu,
            "ADD": self.op_add,
            "PAD": self.op_pad,
            "MAX_POOL_2D": self.op_max_pool,
            "RESHAPE": self.op_reshape,
            "CONCATENATION": self.op_concatenation,
            "RESIZE_BILINEAR": self.op_resize_bilinear,
            "DEPTH_TO_SPACE": self.op_depth_to_space,
        }
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            # Codes above 127 live only in BuiltinCode; older files only fill DeprecatedBuiltinCode.
            name = _OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            handler = handlers.get(name)
            if handler is None:
                raise ConversionError(
                    f"operator #{i} {name} is not supported; this converter handles {', '.join(handlers)}"
                )
            handler(i, op)

        anchors = set()
        for idx, name in self.outputs.items():
            if self.names.get(idx) != name or idx in self.nchw:
                raise ConversionError(f"output {self.tensor_name(idx)!r} is not produced as a rank-3 tensor")
            anchors.add(self.shape(idx)[1])
        (num_anchors,) = anchors
        if not 1 <= top_k <= num_anchors:
            raise ConversionError(f"top_k {top_k} must be between 1 and the model's {num_anchors} anchors")
        self.candidates(top_k, score_clip)
        outputs = [
            helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, [BATCH_DIM, top_k]),
            helper.make_tensor_value_info(ANCHOR_INDICES, TensorProto.INT32, [BATCH_DIM, top_k]),
            helper.make_tensor_value_info(REGRESSORS, TensorProto.FLOAT, [BATCH_DIM, top_k, 16]),
        ]
        image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [BATCH_DIM, *in_shape[1:]])
        onnx_graph = helper.make_graph(self.nodes, "blazeface", [image], outputs, self.initializers)
        return helper.make_model(
            onnx_graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="blazeface-serve",
            producer_version=CONVERTER_VERSION,
        )

    def candidates(self, top_k: int, score_clip: float) -> None:
        """The tail: each image's `top_k` best anchors by MediaPipe's score, their scores and regressors.

        TopK ranks the clipped logits (the sigmoid is monotonic, and logits do not tie where float32
        sigmoids round to one value), so the sigmoid runs on K values only."""
        lo, hi = (self.initializer(np.array(b, np.float32), "score_clip") for b in (-score_clip, score_clip))
        axis2 = self.initializer(np.array([2], np.int64), "axes")
        x = self.node("Clip", [RAW_LOGITS, lo, hi], "clipped_logits")
        x = self.node("Squeeze", [x, axis2], "anchor_logits")
        k = self.initializer(np.array([top_k], np.int64), "top_k")
        top = helper.make_node("TopK", [x, k], ["top_logits", "top_indices"], name="top_k", axis=1)
        self.nodes.append(top)  # largest and sorted by default: best first
        self.node("Sigmoid", ["top_logits"], SCORES)
        indices = self.node("Cast", ["top_indices"], ANCHOR_INDICES, to=TensorProto.INT32)
        # GatherElements wants indices shaped like its output: (B, K) → (B, K, 1) → (B, K, 16).
        cells = self.node("Unsqueeze", [indices, axis2], "top_rows")
        cells = self.node(
            "Expand", [cells, self.initializer(np.array([1, 1, 16], np.int64), "shape")], "top_cells"
        )
        self.node("GatherElements", [RAW_REGRESSORS, cells], REGRESSORS, axis=1)

    # ---- operators -----------------------------------------------------------------------------
    @staticmethod
    def io(op: tflite.Operator) -> tuple[list[int], int]:
        inputs = [int(i) for i in op.InputsAsNumpy()]
        if op.OutputsLength() != 1:
            raise ConversionError(f"expected one output per operator, found {op.OutputsLength()}")
        return inputs, int(op.Outputs(0))

    @staticmethod
    def options(op: tflite.Operator, cls: type) -> object:
        table = op.BuiltinOptions()
        opts = cls()
        if table is not None:
            opts.Init(table.Bytes, table.Pos)
        return opts

    def op_dequantize(self, i: int, op: tflite.Operator) -> None:
        (src,), dst = self.io(op)
        value = self.const(src)
        if value is None or value.dtype != np.float16:
            raise ConversionError(f"operator #{i} DEQUANTIZE: only constant fp16 → fp32 is supported")
        self.consts[dst] = value.astype(np.float32)

    def op_densify(self, i: int, op: tflite.Operator) -> None:
        # `const` already densified the sparse input: the operator is an identity on constants.
        (src,), dst = self.io(op)
        value = self.const(src)
        if value is None:
            raise ConversionError(f"operator #{i} DENSIFY: input is not a constant")
        self.consts[dst] = value

    def _pads(
        self,
        op_padding: int,
        in_hw: list[int],
        kernel: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
    ) -> list[int]:
        if op_padding == tflite.Padding.VALID:
            return [0, 0, 0, 0]
        (top, bottom), (left, right) = (
            same_pads(in_hw[d], kernel[d], stride[d], dilation[d]) for d in range(2)
        )
        return [top, left, bottom, right]

    def _conv(self, i: int, op: tflite.Operator, depthwise: bool) -> None:
        inputs, dst = self.io(op)
        x_idx, w_idx = inputs[0], inputs[1]
        if x_idx not in self.nchw:
            raise ConversionError(f"operator #{i}: convolution input must be a rank-4 activation")
        opts = self.options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        w = self.weight(w_idx).astype(np.float32)
        in_c = self.shape(x_idx)[3]
        if depthwise:
            # TFLite [1, KH, KW, C·M] → ONNX grouped conv [C·M, 1, KH, KW], one group per input channel:
            # output channel c·M + m reads input channel c in both.
            kernel = (w.shape[1], w.shape[2])
            w_onnx = w.transpose(3, 0, 1, 2)
            group = in_c
            if w.shape[3] % in_c:
                raise ConversionError(f"operator #{i}: depthwise channels {w.shape[3]} vs input {in_c}")
        else:
            # TFLite OHWI → ONNX OIHW.
            kernel = (w.shape[1], w.shape[2])
            w_onnx = w.transpose(0, 3, 1, 2)
            if in_c % w.shape[3]:
                raise ConversionError(f"operator #{i}: filter depth {w.shape[3]} does not divide {in_c}")
            group = in_c // w.shape[3]
        stride = (opts.StrideH(), opts.StrideW())
        dilation = (opts.DilationHFactor(), opts.DilationWFactor())
        pads = self._pads(opts.Padding(), self.shape(x_idx)[1:3], kernel, stride, dilation)
        args = [self.value(x_idx), self.initializer(w_onnx, "weight")]
        if len(inputs) > 2 and inputs[2] >= 0:
            args.append(self.initializer(self.weight(inputs[2]).astype(np.float32), "bias"))
        out = self.produce(dst, nchw=True)
        self.with_activation(
            "Conv",
            args,
            out,
            opts.FusedActivationFunction(),
            kernel_shape=list(kernel),
            strides=list(stride),
            dilations=list(dilation),
            pads=pads,
            group=group,
        )

    def op_conv(self, i: int, op: tflite.Operator) -> None:
        self._conv(i, op, depthwise=False)

    def op_depthwise_conv(self, i: int, op: tflite.Operator) -> None:
        self._conv(i, op, depthwise=True)

    def op_relu(self, i: int, op: tflite.Operator) -> None:
        (src,), dst = self.io(op)
        self.node("Relu", [self.value(src)], self.produce(dst, nchw=src in self.nchw))

    def _operand(self, idx: int, nchw: bool) -> str:
        """An ADD operand: an activation, or a constant laid out to broadcast against NCHW."""
        value = self.const(idx)
        if value is None:
            if (idx in self.nchw) != nchw:
                raise ConversionError(f"tensor {self.tensor_name(idx)!r}: mixed layouts in one operator")
            return self.value(idx)
        value = value.astype(np.float32)
        if nchw:
            value = value.reshape((1,) * (4 - value.ndim) + value.shape).transpose(_NHWC_TO_NCHW)
        return self.initializer(value, "const")

    def op_add(self, i: int, op: tflite.Operator) -> None:
        inputs, dst = self.io(op)
        live = [idx for idx in inputs if self.const(idx) is None]
        if not live:
            raise ConversionError(f"operator #{i} ADD of two constants is not supported")
        nchw = live[0] in self.nchw
        opts = self.options(op, tflite.AddOptions)
        args = [self._operand(idx, nchw) for idx in inputs]
        self.with_activation("Add", args, self.produce(dst, nchw=nchw), opts.FusedActivationFunction())

    def op_pad(self, i: int, op: tflite.Operator) -> None:
        inputs, dst = self.io(op)
        if len(inputs) != 2:
            raise ConversionError(
                f"operator #{i} PAD: expected 2 inputs (no constant value), got {len(inputs)}"
            )
        pads = self.weight(inputs[1]).astype(np.int64).reshape(-1, 2)
        nchw = inputs[0] in self.nchw
        if nchw:
            pads = pads[list(_NHWC_TO_NCHW)]
        # ONNX wants all the "before" amounts, then all the "after" ones.
        onnx_pads = self.initializer(np.concatenate([pads[:, 0], pads[:, 1]]), "pads")
        self.node("Pad", [self.value(inputs[0]), onnx_pads], self.produce(dst, nchw=nchw), mode="constant")

    def op_max_pool(self, i: int, op: tflite.Operator) -> None:
        (src,), dst = self.io(op)
        opts = self.options(op, tflite.Pool2DOptions)
        kernel = (opts.FilterHeight(), opts.FilterWidth())
        stride = (opts.StrideH(), opts.StrideW())
        # ONNX MaxPool ignores padded cells, as TFLite's SAME pooling does.
        pads = self._pads(opts.Padding(), self.shape(src)[1:3], kernel, stride, (1, 1))
        out = self.produce(dst, nchw=True)
        self.with_activation(
            "MaxPool",
            [self.value(src)],
            out,
            opts.FusedActivationFunction(),
            kernel_shape=list(kernel),
            strides=list(stride),
            pads=pads,
        )

    def op_reshape(self, i: int, op: tflite.Operator) -> None:
        inputs, dst = self.io(op)
        src = inputs[0]
        in_shape, out_shape = self.shape(src), self.shape(dst)
        if in_shape[0] != out_shape[0] or np.prod(in_shape) != np.prod(out_shape):
            raise ConversionError(f"operator #{i} RESHAPE {in_shape} → {out_shape} must keep the batch dim")
        x = self.value(src)
        if src in self.nchw:
            # Flatten in TFLite's NHWC order: the anchor order of the outputs depends on it.
            x = self.node("Transpose", [x], f"t{dst}_nhwc", perm=list(_NCHW_TO_NHWC))
        # The output tensor's static shape is authoritative; the batch dimension stays free.
        shape = self.initializer(np.array([-1, *out_shape[1:]], np.int64), "shape")
        if len(out_shape) == 4:
            y = self.node("Reshape", [x, shape], f"t{dst}_reshaped")
            self.node("Transpose", [y], self.produce(dst, nchw=True), perm=list(_NHWC_TO_NCHW))
        else:
            self.node("Reshape", [x, shape], self.produce(dst, nchw=False))

    def op_concatenation(self, i: int, op: tflite.Operator) -> None:
        inputs, dst = self.io(op)
        opts = self.options(op, tflite.ConcatenationOptions)
        nchw = inputs[0] in self.nchw
        rank = len(self.shape(dst))
        axis = opts.Axis() % rank
        if nchw:
            axis = _AXIS_TO_NCHW[axis]
        args = [self._operand(idx, nchw) for idx in inputs]
        out = self.produce(dst, nchw=nchw)
        self.with_activation("Concat", args, out, opts.FusedActivationFunction(), axis=axis)

    def op_resize_bilinear(self, i: int, op: tflite.Operator) -> None:
        inputs, dst = self.io(op)
        src = inputs[0]
        opts = self.options(op, tflite.ResizeBilinearOptions)
        if opts.AlignCorners() and opts.HalfPixelCenters():
            raise ConversionError(f"operator #{i} RESIZE_BILINEAR: align_corners with half_pixel_centers")
        # TFLite's three coordinate mappings are ONNX's align_corners, half_pixel and asymmetric.
        mode = "asymmetric"
        if opts.AlignCorners():
            mode = "align_corners"
        elif opts.HalfPixelCenters():
            mode = "half_pixel"
        (in_h, in_w), (out_h, out_w) = self.shape(src)[1:3], self.shape(dst)[1:3]
        scales = np.array([1.0, 1.0, out_h / in_h, out_w / in_w], np.float32)
        # Scales (not sizes) keep the batch dimension free; they must reproduce the sizes exactly.
        if int(np.floor(in_h * scales[2])) != out_h or int(np.floor(in_w * scales[3])) != out_w:
            raise ConversionError(f"operator #{i} RESIZE_BILINEAR: {in_h}x{in_w} → {out_h}x{out_w}")
        self.node(
            "Resize",
            [self.value(src), "", self.initializer(scales, "scales")],
            self.produce(dst, nchw=True),
            mode="linear",
            coordinate_transformation_mode=mode,
        )

    def op_depth_to_space(self, i: int, op: tflite.Operator) -> None:
        (src,), dst = self.io(op)
        opts = self.options(op, tflite.DepthToSpaceOptions)
        # TFLite's channel order (block row, block column, channel) is ONNX's DCR mode.
        self.node(
            "DepthToSpace",
            [self.value(src)],
            self.produce(dst, nchw=True),
            blocksize=opts.BlockSize(),
            mode="DCR",
        )


def _read_sparsity(sparsity: tflite.SparsityParameters) -> tuple[list[int], list[int], list[Level]]:
    """Flatbuffer `SparsityParameters` → (traversal_order, block_map, levels) for `densify`."""
    vector_types = {
        tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
        tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
        tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
    }

    def read_vector(kind: int, table: object) -> np.ndarray:
        cls = vector_types.get(kind)
        if cls is None or table is None:
            raise ConversionError(f"sparse index vector of unsupported kind {kind}")
        vector = cls()
        vector.Init(table.Bytes, table.Pos)  # type: ignore[attr-defined]
        return np.asarray(vector.ValuesAsNumpy(), dtype=np.int64)

    order = [] if sparsity.TraversalOrderIsNone() else sparsity.TraversalOrderAsNumpy().tolist()
    block_map = [] if sparsity.BlockMapIsNone() else sparsity.BlockMapAsNumpy().tolist()
    levels: list[Level] = []
    for d in range(sparsity.DimMetadataLength()):
        meta = sparsity.DimMetadata(d)
        if meta.Format() == tflite.DimensionType.DENSE:
            levels.append(DenseLevel(int(meta.DenseSize())))
        else:
            segments = read_vector(meta.ArraySegmentsType(), meta.ArraySegments())
            indices = read_vector(meta.ArrayIndicesType(), meta.ArrayIndices())
            levels.append(CsrLevel(segments, indices))
    return order, block_map, levels
