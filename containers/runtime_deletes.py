"""Deleting a container from its runtime once it has exited, as containerd deletes a task when
it exits, instead of when the container is removed: the runtime's delete command (a process
of its own, ~10-20 ms) then no longer runs inside RemoveContainer.

`start` runs the delete on a small pool of worker threads; `wait` waits for one under way
(StopContainer returns once the container is stopped and gone from its runtime, as with
containerd); `finish` (remove) waits for it too and runs the delete itself unless one has
succeeded (none was started: pycri restarted since the exit, or it failed). A delete of a
container the runtime no longer has is fine, so a delete that runs twice does no harm.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

log = structlog.get_logger("containers")

WORKERS = 2
WAIT_SECONDS = 120.0  # longer than a runtime command may take (OciCli's timeout is 60 s)


class RuntimeDeletes:
    def __init__(self, workers: int = WORKERS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runtime-delete")
        self._lock = threading.Lock()
        self._pending: dict[str, Future[None]] = {}  # container id -> its delete under way
        self._done: set[str] = set()  # ids whose delete succeeded (until `finish` or `forget`)

    def start(self, container_id: str, delete: Callable[[], None]) -> None:
        """Run `delete` for the container in the background (once: not again while one is
        under way or after one succeeded)."""
        with self._lock:
            if container_id in self._pending or container_id in self._done:
                return
            self._pending[container_id] = self._executor.submit(self._run, container_id, delete)

    def wait(self, container_id: str) -> None:
        """Wait for the container's delete under way, if any (its failure is logged, not raised)."""
        with self._lock:
            future = self._pending.get(container_id)
        if future is not None:
            try:
                future.result(timeout=WAIT_SECONDS)
            except Exception:  # (_run logs a failed delete; a timeout leaves it to `finish`)
                pass

    def finish(self, container_id: str, delete: Callable[[], None]) -> None:
        """Make sure the container is deleted from its runtime: wait for a delete under way,
        and run `delete` here unless one has succeeded (its failure is raised)."""
        self.wait(container_id)
        with self._lock:
            done = container_id in self._done
            self._done.discard(container_id)
        if not done:
            delete()

    def _run(self, container_id: str, delete: Callable[[], None]) -> None:
        ok = False
        try:
            delete()
            ok = True
        except Exception as exc:  # remove runs it again, and reports a failure then
            log.warning("deleting an exited container from its runtime failed", container_id=container_id,
                        error=str(exc))
        finally:
            with self._lock:
                self._pending.pop(container_id, None)
                if ok:
                    self._done.add(container_id)
