"""The pipe that tells a helper process its server is gone.

The server keeps the write end of a pipe; a helper process it forked (the
development HTTP front, the ``--reload`` watcher) blocks reading the other
end, which reads EOF the moment the server exits, however it exits.
"""

from __future__ import annotations

import os

__all__ = ["wait_for_eof"]


def wait_for_eof(fd: int) -> None:
    """Block until ``fd`` reads EOF (or fails): the writer is gone."""
    while True:
        try:
            if not os.read(fd, 1):
                return
        except InterruptedError:
            continue
        except OSError:
            return
