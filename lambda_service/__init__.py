"""Our Lambda service: what boto3's Lambda client reaches through ``AWS_ENDPOINT_URL_LAMBDA``,
with Lambda's own contracts. A package of its own so that it can run where the daemon runs (a
handler VM, as the private function service) as well as inside the local cloud, which starts it.

- :mod:`~lambda_service.spec`: the functions it serves (one JSON spec file).
- :mod:`~lambda_service.api`: the HTTP face (Invoke's REST contract, GetFunction, ...);
  :mod:`~lambda_service.control`: the control plane (URLs, permissions, event sources, async).
- :mod:`~lambda_service.service`: function lookup and the one invocation dispatch point.
- :mod:`~lambda_service.pool`, :mod:`~lambda_service.worker`: warm worker processes
  per function (concurrency, timeout, memory), the "execution environments";
  :mod:`~lambda_service.environment`, :mod:`~lambda_service.runtime_api`,
  :mod:`~lambda_service.image`: the same environments running a container image.
- :mod:`~lambda_service.faults`: fault injection for the reliability tests.
- :mod:`~lambda_service.endpoint`: the service as a process
  (``python -m lambda_service.endpoint``) and ``LambdaEndpoint``, which manages one.
- :mod:`~lambda_service.net`: the HTTP plumbing it shares with the local cloud's servers.

It imports nothing of ours above it: functions are loaded by handler name or run from an image.
Nothing here runs on import: worker processes import :mod:`~lambda_service.worker` and must
not pay for boto3 or the HTTP layer.
"""
