"""The local cloud's Lambda service: what boto3's Lambda client reaches through
``AWS_ENDPOINT_URL_LAMBDA``, with Lambda's own contracts.

- :mod:`~localcloud.awslambda.spec`: the functions it serves (one JSON spec file).
- :mod:`~localcloud.awslambda.api`: the HTTP face (Invoke's REST contract, GetFunction, ...).
- :mod:`~localcloud.awslambda.service`: function lookup and the one invocation dispatch point.
- :mod:`~localcloud.awslambda.pool`, :mod:`~localcloud.awslambda.worker`: warm worker processes
  per function (concurrency, timeout, memory), the "execution environments".
- :mod:`~localcloud.awslambda.faults`: fault injection for the reliability tests.
- :mod:`~localcloud.awslambda.endpoint`: the service as a process
  (``python -m localcloud.awslambda.endpoint``) and ``LambdaEndpoint``, which manages one.

Nothing here runs on import: worker processes import :mod:`~localcloud.awslambda.worker` and must
not pay for boto3 or the HTTP layer.
"""
