"""The service's exception tree, each class with its HTTP status and a stable code.

    ServiceError                 500 internal_error
      ├ InvalidRequest           400 invalid_request   (param names the offending field)
      ├ Unauthorized             401 unauthorized
      ├ Forbidden                403 forbidden         (a key of the wrong tier, a Host or Origin not allowed)
      ├ ModelNotFound            404 model_not_found
      ├ Cancelled                499 cancelled
      ├ InsufficientMemory       507 insufficient_memory
      ├ InsufficientStorage      507 insufficient_storage (not enough free disk for a pull)
      ├ Overloaded               503 overloaded        (+ Retry-After)
      ├ ShuttingDown             503 shutting_down     (+ Retry-After)
      ├ ModelLoadFailed          503 model_load_failed
      ├ UpstreamUnavailable      502 upstream_unavailable (the Hub or a remote backend could not be reached)
      ├ UpstreamError            502 upstream_error    (a remote backend failed or answered malformed output)
      ├ UpstreamRejected         4xx upstream_rejected (a remote backend refused the request: its status, its message)
      ├ UpstreamTimeout          504 upstream_timeout  (a remote backend did not answer within its read timeout)
      └ GenerationFailed         500 generation_failed

Pure Python: the HTTP layer renders these per protocol (app/api/errors.py).
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(ServiceError):
    status_code = 400
    code = "invalid_request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"

    def __init__(self, name: str, *, param: str | None = "model") -> None:
        super().__init__(f"model '{name}' not found", param=param)
        self.name = name


class Cancelled(ServiceError):
    status_code = 499
    code = "cancelled"


class InsufficientMemory(ServiceError):
    status_code = 507
    code = "insufficient_memory"


class InsufficientStorage(ServiceError):
    status_code = 507
    code = "insufficient_storage"


class Overloaded(ServiceError):
    status_code = 503
    code = "overloaded"
    retry_after = 1


class ShuttingDown(ServiceError):
    status_code = 503
    code = "shutting_down"
    retry_after = 5


class ModelLoadFailed(ServiceError):
    status_code = 503
    code = "model_load_failed"


class UpstreamUnavailable(ServiceError):
    status_code = 502
    code = "upstream_unavailable"


class GenerationFailed(ServiceError):
    status_code = 500
    code = "generation_failed"


class UpstreamError(ServiceError):
    status_code = 502
    code = "upstream_error"


class UpstreamRejected(ServiceError):
    """A remote backend's own 4xx, relayed with its status (the client can fix the request)."""

    status_code = 400
    code = "upstream_rejected"

    def __init__(self, message: str, *, status: int = 400, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.status_code = status


class UpstreamTimeout(ServiceError):
    status_code = 504
    code = "upstream_timeout"
