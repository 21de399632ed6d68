"""openstack_handler: the OpenStack VM daemon that drives the recognition Lambda over S3/SQS.

Importing this package (or ``openstack_handler.cli``) must stay cheap: never torch, lambda_image or
moto. Submodules import boto3, structlog and tenacity only.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
