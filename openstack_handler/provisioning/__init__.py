"""Provisioning: the one declarative definition of the resources (:mod:`.spec`) and how it is
applied with boto3 (:mod:`.aws`, :mod:`.camera`, :mod:`.serverless`), idempotently. The local
cloud, ``openstack-handler aws provision`` and the ``aws_resources`` role all apply this one."""
