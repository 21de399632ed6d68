"""The Lambda service's API errors (not function errors), as Lambda answers them: each carries
the HTTP status and the AWS error type that boto3 raises as ``client.exceptions.<type>``."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An API error (not a function error): carries the HTTP status and the AWS error type."""

    status = 500
    error_type = "ServiceException"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ResourceNotFound(ServiceError):
    """No such function (or qualifier)."""

    status = 404
    error_type = "ResourceNotFoundException"


class InvalidRequestContent(ServiceError):
    """The payload is not JSON."""

    status = 400
    error_type = "InvalidRequestContentException"


class InvalidParameterValue(ServiceError):
    """A header or parameter has a value the API does not accept."""

    status = 400
    error_type = "InvalidParameterValueException"


class RequestTooLarge(ServiceError):
    """The payload is over Lambda's size limit for the invocation type."""

    status = 413
    error_type = "RequestTooLargeException"


class TooManyRequests(ServiceError):
    """All workers busy: like a function at its reserved concurrency."""

    status = 429
    error_type = "TooManyRequestsException"


class ResourceConflict(ServiceError):
    """The resource already exists, or another operation is in progress."""

    status = 409
    error_type = "ResourceConflictException"


class ResourceInUse(ServiceError):
    """The operation conflicts with the resource's state (e.g. a mapping being deleted)."""

    status = 400
    error_type = "ResourceInUseException"


class PreconditionFailed(ServiceError):
    """The RevisionId given is not the resource's current one."""

    status = 412
    error_type = "PreconditionFailedException"


class MissingAuthenticationToken(ServiceError):
    """The request is not signed (no Authorization header)."""

    status = 403
    error_type = "MissingAuthenticationTokenException"


class UnrecognizedClient(ServiceError):
    """The request is signed with an access key this service does not know."""

    status = 403
    error_type = "UnrecognizedClientException"


class InvalidSignature(ServiceError):
    """The signature does not match the request, or is malformed or expired."""

    status = 403
    error_type = "InvalidSignatureException"
