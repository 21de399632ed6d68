"""The daemon's exception hierarchy: narrow classes that callers can act on."""

from __future__ import annotations


class HandlerError(Exception):
    """Base class of every error the daemon raises on purpose."""


class ConfigError(HandlerError):
    """The settings file or the environment overrides are missing or invalid."""


class RetryableError(HandlerError):
    """A transient failure: the message stays on its queue and is redelivered (logged at info)."""


class InvokeUnavailable(RetryableError):
    """Invoke kept failing with throttling, 5xx or connection errors after our own retries."""


class TargetRefused(InvokeUnavailable):
    """The endpoint refused the call itself (403: it does not know our key, or the signature is
    wrong): the function did not run, and retrying with the same key will not help; the target
    is out of the rotation until a dry run passes."""


class InvokeFailed(HandlerError):
    """lambda:Invoke itself was rejected (not found, access denied, bad request, read timeout)."""


class InvokeInterrupted(InvokeFailed):
    """The request reached Lambda but no complete answer came back (read timeout, connection
    closed): the function may have run, so it is never resent; the target counts as down."""


class FunctionFailed(HandlerError):
    """The function ran and raised: the invoke response carried ``FunctionError``."""

    def __init__(self, error_type: str, message: str, *, function_error: str = "Unhandled",
                 report: object | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.function_error = function_error
        #: the invocation's REPORT (an InvocationReport), when Lambda sent its log tail
        self.report = report


class InvalidEvent(HandlerError):
    """An input message or record is not an S3 event the daemon can process."""


class InvalidResult(HandlerError):
    """An output-queue message is not a result the daemon can write to disk."""


class InvalidKey(InvalidResult):
    """An object key leaves no usable path once unsafe components are neutralised."""
