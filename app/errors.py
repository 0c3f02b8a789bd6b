"""The service's exception tree, each class with its HTTP status and a stable code.

    ServiceError                 500 internal_error
      ├ InvalidRequest           400 invalid_request   (param names the offending field)
      ├ Unauthorized             401 unauthorized
      ├ ModelNotFound            404 model_not_found
      ├ Cancelled                499 cancelled
      ├ InsufficientMemory       507 insufficient_memory
      ├ Overloaded               503 overloaded        (+ Retry-After)
      ├ ShuttingDown             503 shutting_down     (+ Retry-After)
      ├ ModelLoadFailed          503 model_load_failed
      ├ UpstreamUnavailable      502 upstream_unavailable (the Hub could not be reached)
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
