"""The service's error tree; the API maps it to RFC 9457 problem+json in one handler.

    ServiceError                       status  when
    ├── InputError                      4xx    the request is at fault
    │   ├── ImageDecodeError            400    empty, truncated or undecodable image
    │   ├── UnsupportedMediaType        415    not an image type we decode
    │   ├── PayloadTooLarge             413    body over the byte limit
    │   ├── ImageTooLarge               413    pixels over the limit (found from the header)
    │   ├── BatchTooLarge               413    more images than the batch queue ever holds at once
    │   ├── ImageTooComplex             422    a JPEG of more scans than the limit (found from the header)
    │   ├── InvalidOption               422    bad query/JSON option
    │   ├── Unauthorized                401    missing or wrong API key
    │   ├── Forbidden                   403    a WebSocket handshake from an Origin not allowed
    │   └── UploadTimeout               408    the body did not arrive within UPLOAD_TIMEOUT_S
    ├── Overloaded                      429    batch queue or decode budget full (carries Retry-After)
    ├── BackendUnavailable              503    backend down, not ready or circuit open
    └── DeadlineExceeded                504    request deadline passed before a result

Library errors (onnxruntime, tritonclient, OpenCV) are translated into these at the module that calls
the library, always `raise ... from exc`, so nothing else needs to know them.
"""

from __future__ import annotations


class ServiceError(Exception):
    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class InputError(ServiceError):
    status = 400
    title = "Bad request"
    slug = "bad-request"


class ImageDecodeError(InputError):
    status = 400
    title = "Image could not be decoded"
    slug = "image-decode"


class UnsupportedMediaType(InputError):
    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class PayloadTooLarge(InputError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class ImageTooLarge(InputError):
    status = 413
    title = "Image has too many pixels"
    slug = "image-too-large"


class BatchTooLarge(InputError):
    """Not retryable: the request could never be admitted, however idle the server (unlike Overloaded)."""

    status = 413
    title = "Batch too large"
    slug = "batch-too-large"


class ImageTooComplex(InputError):
    """A valid image we refuse to decode for its cost: a JPEG whose scans each take a pass over every
    pixel. 422, not 400: nothing in it is malformed."""

    status = 422
    title = "Image too costly to decode"
    slug = "image-too-complex"


class InvalidOption(InputError):
    status = 422
    title = "Invalid option"
    slug = "invalid-option"


class Unauthorized(InputError):
    status = 401
    title = "Unauthorized"
    slug = "unauthorized"


class Forbidden(InputError):
    """The handshake's `Origin` may not open `/stream`."""

    status = 403
    title = "Forbidden"
    slug = "forbidden"


class UploadTimeout(InputError):
    status = 408
    title = "Upload too slow"
    slug = "upload-timeout"


class Overloaded(ServiceError):
    status = 429
    title = "Too many requests queued"
    slug = "overloaded"

    def __init__(self, detail: str = "", retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class BackendUnavailable(ServiceError):
    status = 503
    title = "Inference backend unavailable"
    slug = "backend-unavailable"


class DeadlineExceeded(ServiceError):
    status = 504
    title = "Deadline exceeded"
    slug = "deadline-exceeded"
