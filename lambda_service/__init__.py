"""The local cloud's Lambda service: what boto3's Lambda client reaches through
``AWS_ENDPOINT_URL_LAMBDA``, with Lambda's own contracts.

- :mod:`~lambda_service.spec`: the functions it serves (one JSON spec file).
- :mod:`~lambda_service.api`: the HTTP face (Invoke's REST contract, GetFunction, ...).
- :mod:`~lambda_service.service`: function lookup and the one invocation dispatch point.
- :mod:`~lambda_service.pool`, :mod:`~lambda_service.worker`: warm worker processes
  per function (concurrency, timeout, memory), the "execution environments".
- :mod:`~lambda_service.faults`: fault injection for the reliability tests.
- :mod:`~lambda_service.endpoint`: the service as a process
  (``python -m lambda_service.endpoint``) and ``LambdaEndpoint``, which manages one.

Nothing here runs on import: worker processes import :mod:`~lambda_service.worker` and must
not pay for boto3 or the HTTP layer.
"""
