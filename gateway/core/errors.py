"""The gateway's one error tree and its OpenAI-style rendering.

Every error a client can see is a ``GatewayError``; one middleware (``gateway.app``) renders it as
``{"error": {"message", "type", "param", "code"}}`` with the status and headers the error carries.
Third-party exceptions are translated where they are caught (``raise ... from exc``).

    GatewayError                      500 api_error (never raised on purpose)
    ├── InvalidRequest                400 invalid_request_error
    │   ├── BodyTooLarge              413
    │   ├── UnsupportedMediaType      415
    │   ├── RequestTimeout            408 request_timeout (the client sent too slowly; closes)
    │   └── HeadersTooLarge           431 request_header_fields_too_large
    ├── AuthenticationFailed          401 authentication_error / invalid_api_key
    ├── PermissionDenied              403 permission_error
    ├── NotFound                      404 not_found_error
    │   └── ModelNotFound             404 invalid_request_error / model_not_found
    ├── MethodNotAllowed              405
    ├── RateLimited                   429 rate_limit_exceeded (Retry-After)
    │   └── BudgetExceeded            429 insufficient_quota
    ├── UpstreamFailed                502 / 503 / 504: every deployment failed
    │   └── UpstreamRateLimited       429 upstream_rate_limited: every deployment rate limited
    ├── UpstreamRejected              the provider's 4xx, passed on
    └── ServiceUnavailable            503 (draining, nothing configured)

``UpstreamFailure`` is not shown to clients: it describes one failed attempt at one deployment and
drives failover; when every attempt failed, ``UpstreamFailed`` summarises them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error rendered to a client."""

    status: int = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    attempts: int = 0  # upstream calls made before the error (failover's errors set it)
    closes_connection: ClassVar[bool] = False
    """The connection cannot carry another request after this answer (its body is unread)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI error object for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class BodyTooLarge(InvalidRequest):
    status = 413
    default_code = "request_too_large"


class UnsupportedMediaType(InvalidRequest):
    status = 415


class RequestTimeout(InvalidRequest):
    status = 408
    default_code = "request_timeout"
    closes_connection = True


class HeadersTooLarge(InvalidRequest):
    status = 431
    default_code = "request_header_fields_too_large"
    closes_connection = True


class AuthenticationFailed(GatewayError):
    status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    error_type = "permission_error"


class NotFound(GatewayError):
    status = 404
    error_type = "not_found_error"


class ModelNotFound(NotFound):
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class MethodNotAllowed(InvalidRequest):
    status = 405


class RateLimited(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        merged = dict(headers or {})
        merged["Retry-After"] = str(max(1, round(retry_after_s + 0.499)))
        super().__init__(message, code=code, headers=merged)
        self.retry_after_s = retry_after_s


class BudgetExceeded(RateLimited):
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServiceUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"


class FailureKind(enum.Enum):
    """Why one attempt at one deployment failed."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    ERROR_IN_BODY = "error_in_body"
    BAD_RESPONSE = "bad_response"
    EMPTY_STREAM = "empty_stream"
    CLIENT_ERROR = "client_error"
    CIRCUIT_OPEN = "circuit_open"
    UNSUPPORTED = "unsupported"  # this provider cannot express the request; another may


class UpstreamFailure(Exception):
    """One failed attempt at one deployment; drives failover, never shown as is."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.body = body

    @property
    def retryable(self) -> bool:
        """Whether another deployment may succeed where this one failed.

        A 4xx other than 408/409/429 means the request itself is wrong: every deployment
        would refuse it, so it goes back to the client instead of around the group.
        """
        return self.kind is not FailureKind.CLIENT_ERROR


class UpstreamFailed(GatewayError):
    """Every candidate deployment failed; the status says how."""

    status = 502
    error_type = "upstream_error"

    def __init__(self, message: str, *, status: int, code: str, attempts: int = 0,
                 deployments: tuple[str, ...] = ()) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.attempts = attempts
        self.deployments = deployments
        """The deployments that were called and failed, for the ledger."""


class UpstreamRateLimited(UpstreamFailed):
    """Every deployment is rate limited: a 429, so clients and SDKs back off for the shortest
    rest among them (``Retry-After``) instead of retrying a 503 at once."""

    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float, attempts: int = 0,
                 deployments: tuple[str, ...] = ()) -> None:
        super().__init__(message, status=429, code="upstream_rate_limited", attempts=attempts,
                         deployments=deployments)
        self.headers["Retry-After"] = str(max(1, round(retry_after_s + 0.499)))
        self.retry_after_s = retry_after_s


class UpstreamRejected(GatewayError):
    """The provider refused the request itself (a 4xx): passed on with the provider's words."""

    error_type = "invalid_request_error"

    def __init__(
        self, message: str, *, status: int, param: str | None, code: str | None, attempts: int = 1,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        self.attempts = attempts
