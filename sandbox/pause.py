"""The pod's infra process: PID 1 of the PID namespace a pod's containers share.

Only pods that share a PID namespace get one. It reaps the orphans the namespace hands
it and exits on SIGTERM or SIGINT; when it exits the kernel ends every process of the
namespace. Run as `<python> -IS pause.py` inside `unshare --pid --fork` (standard
library only, so it starts fast and stays small).
"""
import os
import signal
import sys


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
