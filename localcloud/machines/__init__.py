"""Debian machines under systemd-nspawn: the local stand-ins for a handler VM and the OpenStack host.

Apart from the local cloud's AWS services (moto, the Lambda service): those run as plain
processes; these need root, debootstrap and systemd-container.

- :mod:`localcloud.machines.nspawn`: cached roots, network namespaces, booted machines.
- :mod:`localcloud.machines.openstack`: Debian's OpenStack in such a machine.
- :mod:`localcloud.machines.roots`: the roots the tests boot, built before them (``make roots``).
"""
