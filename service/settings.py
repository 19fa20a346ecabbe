"""Service settings, read once from the environment (names are the upper-case field names)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def checkout_model_repository() -> Path:
    """`triton_repo/` of the checkout this package runs from; an installed wheel has none beside it, so
    it must be given `MODEL_REPOSITORY` (the backend names the setting when the files are missing)."""
    return Path(__file__).resolve().parents[1] / "triton_repo"


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

    # --- request defaults and limits ---
    default_model: Literal["short", "full"] = "short"
    preprocess: Literal["exact", "fast"] = Field(
        "fast", description="fast: DCT-scaled JPEG decode; exact: every pixel decoded (MediaPipe parity)"
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="upload size limit, bytes")
    max_pixels: int = Field(40_000_000, ge=1, description="decoded image size limit, pixels")
    max_batch_images: int = Field(32, ge=1, description="images per /detect/batch request")
    request_timeout_s: float = Field(10.0, gt=0, description="per-request deadline → 504")

    # --- micro-batching (per model) ---
    max_batch: int = Field(16, ge=1, le=256, description="images per backend call")
    max_wait_us: int = Field(1000, ge=0, description="how long a batch waits to fill")
    max_queue: int = Field(128, ge=1, description="queued images per model before 429")
    max_inflight_batches: int = Field(1, ge=1, description="concurrent backend calls per model")
    decode_threads: int = Field(
        0, ge=0, description="image-decoding threads per worker; 0 = 2 × cores / workers"
    )

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
