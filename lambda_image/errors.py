"""The function's exceptions: permanent input errors versus configuration problems."""

from __future__ import annotations


class RecognitionError(Exception):
    """Base class of the function's own errors."""


class InvalidInput(RecognitionError):
    """The input file itself is unusable; retrying cannot help (reported, never raised to Lambda)."""

    #: the HTTP status a Function URL answers for it (a 4xx: the caller's input, never a 500)
    http_status = 400


class InvalidVideo(InvalidInput):
    """The file is not a decodable video (empty, truncated, not a media container, no frames)."""


class NotAVideo(InvalidVideo):
    """The file is a still image (JPEG, PNG, a one-frame GIF, …): stills go to the frame path."""


class InvalidImage(InvalidInput):
    """A single-frame request whose content is not a decodable image."""


class ImageTooLarge(InvalidImage):
    """An image with more pixels (or bytes) than the function decodes."""


class InvalidRequest(InvalidInput):
    """A request body that does not follow the contract (missing fields, bad base64, bad JSON)."""


class MethodNotAllowed(InvalidRequest):
    """A Function URL request with a method other than GET (S3 reference) or POST (the frame)."""

    http_status = 405


class ObjectNotFound(InvalidRequest):
    """The S3 object (or bucket) a request names does not exist."""

    http_status = 404


class ObjectForbidden(InvalidRequest):
    """The function may not read the S3 object a request names."""

    http_status = 403


class ConfigError(RecognitionError):
    """The function's configuration is missing or inconsistent (e.g. no GALLERY_PATH)."""


class GalleryError(ConfigError):
    """The gallery file cannot be read or has an unknown format."""


class WeightsError(ConfigError):
    """Model weights are missing locally; the function never downloads them."""


class InfrastructureError(RecognitionError):
    """A cloud dependency did not do its part; raised so that the invocation is retried."""
