"""What the ``pymoult`` command promises the programs that run it: its exit statuses, and the
line with which ``pymoult run`` announces where it listens. ``pymoult.cli`` and ``pymoult.demo``
share them from here (and ``pymoult.cli`` still gives them under the same names)."""

__all__ = ["FAILED", "USAGE_ERROR", "UNREACHABLE", "SPLIT", "INTERRUPTED", "LISTENING"]

#: A pushed script raised, or an update did not apply (or was not reverted); a rollout that
#: halted with every application back on the old version.
FAILED = 1
#: Bad usage: an option, an address, an unreadable script or token file.
USAGE_ERROR = 2
#: The listener could not be reached, or refused the request.
UNREACHABLE = 3
#: A rollout after which the applications are not all on one version.
SPLIT = 4
#: Stopped by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130
#: The line ``pymoult run`` writes to stderr once the application runs (then the address).
LISTENING = "pymoult: listening on "
