"""openstack_handler: the hybrid cloud's own side, in rooms (README, "Architecture").

- :mod:`.cli`: the ``openstack-handler`` command, thin, at the top;
- :mod:`.demos`: the local cloud wired to the daemon and the camera client;
- :mod:`.daemon`: what runs on the VM under systemd;
- :mod:`.provisioning`: the one resource definition and how it is applied;
- :mod:`.private_cloud`: the OpenStack side (identity, heartbeat);
- :mod:`.logs`: the one structlog setup of our processes.

Importing this package (or ``openstack_handler.cli``) must stay cheap: never torch, lambda_image or
moto.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
