"""One error format for the whole API, with stable machine-readable codes.

Every error answer is ``{"error": {"code": ..., "message": ..., "fields": {...}}}``; ``fields``
maps a parameter's path (``email``, ``items.3.phone``) to its messages.
"""

from enum import StrEnum

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ErrorCode(StrEnum):
    INVALID = "invalid"
    PARSE_ERROR = "parse_error"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTHENTICATION_FAILED = "authentication_failed"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    THROTTLED = "throttled"
    CONFLICT = "conflict"
    ILLEGAL_TRANSITION = "illegal_transition"
    SERVER_ERROR = "server_error"


_BY_CLASS = {
    exceptions.ValidationError: ErrorCode.INVALID,
    exceptions.ParseError: ErrorCode.PARSE_ERROR,
    exceptions.NotAuthenticated: ErrorCode.NOT_AUTHENTICATED,
    exceptions.AuthenticationFailed: ErrorCode.AUTHENTICATION_FAILED,
    exceptions.PermissionDenied: ErrorCode.PERMISSION_DENIED,
    exceptions.NotFound: ErrorCode.NOT_FOUND,
    exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    exceptions.NotAcceptable: ErrorCode.NOT_ACCEPTABLE,
    exceptions.UnsupportedMediaType: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    exceptions.Throttled: ErrorCode.THROTTLED,
}


class ApiError(exceptions.APIException):
    """Raise from services' callers with a stable code: ``ApiError(ErrorCode.CONFLICT, "...", 409)``."""

    def __init__(self, code: ErrorCode, message: str, http_status: int = status.HTTP_400_BAD_REQUEST, fields=None):
        super().__init__(detail=message, code=code)
        self.status_code = http_status
        self.error_code = code
        self.fields = fields or {}


def _flatten(detail, path: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            out.update(_flatten(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            out[path or "non_field_errors"] = [str(item) for item in detail]
        else:
            for index, value in enumerate(detail):
                out.update(_flatten(value, f"{path}.{index}" if path else str(index)))
    else:
        out[path or "non_field_errors"] = [str(detail)]
    return out


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ApiError):
        body = {"code": str(exc.error_code), "message": str(exc.detail), "fields": exc.fields}
    elif isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first = next(iter(fields.items()))
        body = {"code": str(ErrorCode.INVALID), "message": f"{first[0]}: {first[1][0]}", "fields": fields}
    else:
        code = next((c for klass, c in _BY_CLASS.items() if isinstance(exc, klass)), ErrorCode.SERVER_ERROR)
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        body = {"code": str(code), "message": str(detail), "fields": {}}
    return Response({"error": body}, status=response.status_code, headers=_retry_headers(response))


def _retry_headers(response) -> dict[str, str]:
    return {key: response[key] for key in ("Retry-After", "WWW-Authenticate", "Allow") if key in response}
