"""The demos: the local cloud wired to the daemon and the camera client, on one machine.

``local up`` (:mod:`.local_up`), ``local demo`` (:mod:`.video`), ``local camera-demo``
(:mod:`.camera`) and ``local demo --serverless`` (:mod:`.serverless`). They run the daemon as a
process through its config file, as an operator would, and read its results from disk.
"""
