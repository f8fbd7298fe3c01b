"""Work run in a thread of its own, while the caller does something else (RunPodSandbox makes the
pod cgroup beside the namespace pins, and starts the infra process and brings `lo` up beside the
CNI ADD) or waits for it (a thread made to change namespaces, which ends with its work:
sandbox/namespaces.py pins a pod's namespaces from one, and sandbox/default_network.py enters a
pod's network namespace from one to bring `lo` up)."""
from __future__ import annotations

import threading
from collections.abc import Callable


class InBackground:
    """`work` run in a thread of its own while the caller does something else; `wait` returns
    what it raised (None when it returned), after which everything it set is visible."""

    def __init__(self, work: Callable[[], None], name: str) -> None:
        self._work = work
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by wait()
            self._error = exc

    def wait(self) -> BaseException | None:
        self._thread.join()
        return self._error
