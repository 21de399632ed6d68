"""The OpenStack side: who this VM is in its cloud (:mod:`.identity`) and the heartbeat the
daemon writes to its server's metadata (:mod:`.cloud_status`), through openstacksdk."""
