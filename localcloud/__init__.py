"""The embedded local cloud: the moto server for S3/SQS/DynamoDB, our Lambda service started
beside it and provisioned by the one definition (:class:`~localcloud.cloud.LocalCloud`), and the
machines the system tiers boot (:mod:`localcloud.machines`). Test-and-demo infrastructure: it
uses the Lambda service and provisioning, and nothing here is deployed.

Nothing is imported here: the moto process imports :mod:`localcloud.moto_main` and must not pay
for boto3 and the provisioning code it never uses.
"""
