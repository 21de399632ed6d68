"""The daemon: what runs on the handler VM under systemd (``openstack-handler run``).

Consumer, receiver, invoker, deleter and drainer around one state store and one results store;
settings, status and redrive for the operator. boto3, structlog and tenacity only: never torch,
the function or the local cloud; it reaches the function and the queues through AWS APIs alone.
"""
