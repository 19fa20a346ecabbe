"""Service settings, read once from the environment (names are the upper-case field names)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.logs import LogFormat
from service.specs import ModelName


def checkout_model_repository() -> Path:
    """`triton_repo/` of the checkout this package runs from; an installed wheel has none beside it, so
    it must be given `MODEL_REPOSITORY` (the backend names the setting when the files are missing)."""
    return Path(__file__).resolve().parents[1] / "triton_repo"


# Images in flight per model that keep a GPU Triton fed: 2 batches per model instance (one running, the
# next already queued, so an instance never waits on the network) x max_batch_size 64 x 2 instances, as in
# triton_repo's _trt and _onnx configs (tests/triton/test_configs.py holds them to these numbers).
TRITON_IMAGES_IN_FLIGHT = 2 * 64 * 2


def triton_inflight_batches(max_batch: int) -> int:
    """MAX_INFLIGHT_BATCHES for BACKEND=triton when not set: TRITON_IMAGES_IN_FLIGHT in MAX_BATCH calls."""
    return -(-TRITON_IMAGES_IN_FLIGHT // max_batch)  # rounded up


class Settings(BaseSettings):
    """Every knob of the service; see the README's "Settings" table for the same list.

    Example: ``BACKEND=triton TRITON_URL=triton:8001 MAX_BATCH=32 uvicorn service.api.app:app``
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- serving ---
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    backend: Literal["onnx", "triton"] = "onnx"
    shutdown_grace_s: float = Field(20.0, gt=0, description="in-flight requests get this long on SIGTERM")
    log_format: LogFormat = Field("text", description="text, or json: one JSON object per line")
    access_log: bool = Field(False, description="one log line per HTTP request (with its request id)")

    # --- request defaults and limits ---
    default_model: ModelName = "short"
    preprocess: Literal["exact", "fast"] = Field(
        "fast", description="fast: DCT-scaled JPEG decode; exact: every pixel decoded (MediaPipe parity)"
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="upload size limit, bytes")
    max_pixels: int = Field(40_000_000, ge=1, description="decoded image size limit, pixels")
    max_batch_images: int = Field(32, ge=1, description="images per /detect/batch request")
    request_timeout_s: float = Field(10.0, gt=0, description="per-request deadline → 504")

    # --- HTTP bounds ---
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="request line and headers, bytes as received → 431"
    )
    max_url_bytes: int = Field(8 * 1024, ge=256, description="request target (path and query) → 414")
    upload_timeout_s: float = Field(30.0, gt=0, description="the whole body must arrive within this → 408")
    head_timeout_s: float = Field(
        10.0, gt=0, description="request line and headers must arrive within this of the first byte → 408"
    )
    max_connections: int = Field(512, ge=1, description="open connections per worker; past it, 503")
    upload_buffer_bytes: int = Field(
        0,
        ge=0,
        description="body bytes received by the requests in progress, per worker; past it, 429; "
        "0 = 16 × MAX_BODY_BYTES",
    )

    @model_validator(mode="after")
    def _upload_buffer_default(self) -> Settings:
        """0 leaves room for 16 uploads of the largest size; less than one could never take such an upload."""
        if self.upload_buffer_bytes == 0:
            self.upload_buffer_bytes = 16 * self.max_body_bytes
        elif self.upload_buffer_bytes < self.max_body_bytes:
            raise ValueError(
                f"UPLOAD_BUFFER_BYTES ({self.upload_buffer_bytes}) must be 0 or at least MAX_BODY_BYTES "
                f"({self.max_body_bytes})"
            )
        return self

    # --- micro-batching (per model) ---
    max_batch: int = Field(16, ge=1, le=256, description="images per backend call")
    max_wait_us: int = Field(1000, ge=0, description="how long a batch waits to fill")
    max_queue: int = Field(128, ge=1, description="queued images per model before 429")
    max_inflight_batches: int = Field(1, ge=1, description="concurrent backend calls per model")
    decode_threads: int = Field(
        0, ge=0, description="image-decoding threads per worker; 0 = 2 × cores / workers"
    )

    # --- admission and compute bounds ---
    decode_pixel_budget: int = Field(
        0,
        ge=0,
        description="pixels (from the headers) of images decoding or waiting to, per worker; past it, 429; "
        "0 = 2 × MAX_PIXELS × decode threads",
    )
    max_jpeg_scans: int = Field(100, ge=1, description="scans (SOS markers) a JPEG may have → 422")

    # --- embedded ONNX Runtime ---
    model_repository: Path = Field(
        default_factory=checkout_model_repository,
        description="Triton-layout folder holding blazeface_{model}_onnx/1/model.onnx",
    )
    ort_threads: int = Field(1, ge=1, description="intra-op threads per ONNX Runtime session")

    # --- Triton ---
    triton_url: str = "127.0.0.1:8001"
    triton_model_suffix: str = Field("_cpu", description="_trt (TensorRT plan), _onnx or _cpu")
    triton_timeout_s: float = Field(5.0, gt=0)
    triton_shared_memory: bool = False
    breaker_failures: int = Field(
        5, ge=0, description="consecutive failed Triton calls that open a model's circuit; 0 = no breaker"
    )
    breaker_reset_s: float = Field(
        2.0, gt=0, description="an open circuit fails calls at once this long, then lets one probe through"
    )

    # --- Triton sizing ---
    @model_validator(mode="after")
    def _triton_inflight_default(self) -> Settings:
        """With BACKEND=triton one call in flight per model leaves the GPU idle between batches; unless
        MAX_INFLIGHT_BATCHES is set (which always wins), keep TRITON_IMAGES_IN_FLIGHT images in flight."""
        if self.backend == "triton" and "max_inflight_batches" not in self.model_fields_set:
            self.max_inflight_batches = triton_inflight_batches(self.max_batch)
        return self

    # --- security ---
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated bearer keys; empty = auth off"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
