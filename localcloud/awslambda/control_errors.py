"""The control plane's API errors beyond those of the Invoke path (service.py): what
Function URL configs, permissions and event source mappings answer, as Lambda does."""

from __future__ import annotations

from localcloud.awslambda.service import ServiceError


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
