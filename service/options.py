"""Detection options: one pydantic model, validated the same way wherever they come from.

    RequestOptions    every option, its bounds and its default; None (JSON null) = the service default
    ├── QueryOptions  as sent in a query string (/detect, /detect/batch); other keys are ignored
    │   └── StreamOptions   plus the video-mode options of /stream
    └── DetectOptions the resolved options the engine runs with: every default filled in

The HTTP request models (JSON body, multipart form) derive from `RequestOptions` too
(`service/api/schemas.py`). Validating any of them raises `InvalidOption` (→ 422 problem+json), with
one message per field that names it and its bounds, so an invalid value gets the same answer whatever
the transport, and never an echo of what was sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from service.decoding import Suppression
from service.errors import InvalidOption
from service.imaging import Preprocess
from service.specs import MODELS, ModelName, ModelSpec

if TYPE_CHECKING:
    ModelChoice = ModelName
else:  # validated, and listed in the schema, as exactly the keys of MODELS
    ModelChoice = Literal[tuple(MODELS)]

# Unknown option names are echoed back only up to this length: a client may send a key of any size, and
# an error message (logged, shown in a browser) should not carry it.
_MAX_NAME_CHARS = 32
# An error names at most this many of the problems pydantic found (a form may have a thousand fields).
_MAX_EXPLAINED = 5
# The bounds pydantic keeps in a field's metadata (annotated_types.Ge and the like), in words.
_BOUND_WORDS = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "below"}


class RequestOptions(BaseModel):
    """The options of one detection request. None, or leaving an option out, means the default:

    model and preprocess: the service's DEFAULT_MODEL and PREPROCESS settings; min_score: the model's
    own MediaPipe threshold (0.5 short, 0.6 full, 0.65 back); max_faces: no cap; suppression: blend.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelChoice | None = Field(
        None, description="short (≤2 m), full range or back (rear camera); default: DEFAULT_MODEL"
    )
    min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="default: the model's (0.5 short, 0.6 full, 0.65 back)",
    )
    max_faces: int | None = Field(None, ge=1, le=1000, description="the best ones; default: no cap")
    suppression: Suppression | None = Field(None, description="blend (paper §3, the default) or plain nms")
    preprocess: Preprocess | None = Field(
        None, description="exact or fast (DCT-scaled JPEG decode); default: PREPROCESS"
    )

    @model_validator(mode="wrap")
    @classmethod
    def _invalid_option(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # Anything but ValueError leaves pydantic as it is, so even FastAPI's own query parsing gets
        # InvalidOption and its 422 problem, not a RequestValidationError with pydantic's wording.
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)[:_MAX_EXPLAINED]
            more = exc.error_count() - len(errors)
            explained = [cls._explain(error) for error in errors] + ([f"and {more} more"] if more else [])
            raise InvalidOption("; ".join(explained)) from None

    @classmethod
    def _explain(cls, error: ErrorDetails) -> str:
        if not error["loc"]:
            return "expected an object of options"
        name = str(error["loc"][0])
        if error["type"] == "extra_forbidden":
            shown = repr(name) if len(name) <= _MAX_NAME_CHARS else f"({len(name)} characters)"
            return f"unknown option {shown}"
        if error["type"] == "missing":
            return f"{name} is required"
        return f"{name} must be {_expected(cls.model_fields[name])}"

    def given(self) -> dict[str, Any]:
        """The detection options this request set, a null included (it asks for the service default)."""
        return self.model_dump(include=self.model_fields_set & RequestOptions.model_fields.keys())


def refuse_repeated(
    pairs: Iterable[tuple[str, Any]], where: str, options: type[RequestOptions] = RequestOptions
) -> None:
    """Refuse an option of `options` given more than once in a query string or form: which value was
    meant would be a guess. Other repeated keys are the option model's to judge (ignored in a query,
    refused in a form)."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in options.model_fields:
            if name in seen:
                raise InvalidOption(f"{name} is given more than once in the {where}")
            seen.add(name)


class QueryOptions(RequestOptions):
    """Options in a query string, which may also carry keys for others (cache busters, tracing)."""

    model_config = ConfigDict(extra="ignore")


class StreamOptions(QueryOptions):
    """`/stream`'s query: the detection options plus video mode's own."""

    smooth: bool = Field(False, description="One-Euro smoothing of boxes and keypoints")
    fps: float = Field(30.0, gt=0, le=1000, description="frame rate for the smoothing filter")


class DetectOptions(RequestOptions):
    """Resolved options: what the engine runs with. Python callers build it directly, e.g.
    ``DetectOptions(model="full", min_score=0.7, max_faces=5)``; its defaults are short and fast."""

    model: ModelChoice = "short"
    suppression: Suppression = Suppression.BLEND
    preprocess: Preprocess = Preprocess.FAST

    @classmethod
    def resolve(cls, given: Mapping[str, Any], model: str, preprocess: str) -> DetectOptions:
        """`given` (options as `RequestOptions.given()` returns them) over the service defaults."""
        chosen = {name: value for name, value in given.items() if value is not None}
        return cls.model_validate({"model": model, "preprocess": preprocess, **chosen})

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]

    @property
    def score_threshold(self) -> float:
        return self.spec.decoder.min_score_thresh if self.min_score is None else self.min_score


def _expected(field: FieldInfo) -> str:
    """What a field accepts, in words, from its type and bounds: "an integer, at least 1 and at most 1000"."""
    args = get_args(field.annotation)
    kind = next(arg for arg in args if arg is not type(None)) if type(None) in args else field.annotation
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(get_args(kind))
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "one of " + ", ".join(str(member.value) for member in kind)
    noun = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "a string")
    bounds = [
        f"{words} {getattr(item, attr)}"
        for item in field.metadata
        for attr, words in _BOUND_WORDS.items()
        if getattr(item, attr, None) is not None
    ]
    return f"{noun}, {' and '.join(bounds)}" if bounds else noun
