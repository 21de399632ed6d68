"""``python -m openstack_handler``: the same as the ``openstack-handler`` console script."""

from openstack_handler.cli import main

raise SystemExit(main())
