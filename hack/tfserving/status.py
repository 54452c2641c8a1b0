"""TF-style Status (code + message) with TF Serving's mappings to HTTP and gRPC status codes.

HTTP mapping follows ToHTTPStatusCode in tensorflow_serving/model_servers/http_server.cc.
"""
from __future__ import annotations

# tensorflow.error.Code numbers (same as gRPC status codes).
CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

HTTP = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A non-OK tensorflow::Status."""

    def __init__(self, code: str, message: str):
        assert code in CODES and code != "OK", code
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:            # absl::Status::ToString()
        return f"{self.code}: {self.message}"

    @property
    def http_status(self) -> int:
        return HTTP[self.code]

    def grpc_code(self):
        import grpc
        return getattr(grpc.StatusCode, self.code)


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)
