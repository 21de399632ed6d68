"""Named process exit codes (sysexits.h where one fits), for systemd's RestartPreventExitStatus=."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit status of ``openstack-handler``."""

    OK = 0  #: clean run, or a graceful stop after SIGTERM/SIGINT with all in-flight work finished
    FAILURE = 1  #: an unexpected error escaped the outermost loop
    USAGE = 2  #: bad command line (argparse's own convention)
    #: EX_UNAVAILABLE: a queue or the state DB could not be reached at startup; ``status``: a
    #: queue's depths could not be read; ``check-config --connect``: a queue or the function
    UNAVAILABLE = 69
    SOFTWARE = 70  #: EX_SOFTWARE: a worker thread died unexpectedly
    TEMPFAIL = 75  #: EX_TEMPFAIL: stopped, but the grace period expired with invocations in flight
    CONFIG_ERROR = 78  #: EX_CONFIG: the settings are invalid; restarting will not help
    INTERRUPTED = 130  #: a second SIGTERM/SIGINT: hard exit without waiting (128 + SIGINT)
