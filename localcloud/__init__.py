"""The embedded local cloud: moto server for S3/SQS/DynamoDB plus our own Lambda-invoke endpoint.

`LocalCloud` is imported lazily: worker processes import `localcloud.awslambda.worker` and must not
pay for boto3 and the provisioning code they never use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LambdaEndpoint", "LocalCloud", "MotoServer", "run_local_up"]

_LAZY = {"LocalCloud": "localcloud.cloud", "run_local_up": "localcloud.cloud",
         "LambdaEndpoint": "localcloud.awslambda.endpoint", "MotoServer": "localcloud.moto_server"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'localcloud' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
