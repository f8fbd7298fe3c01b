"""The one exception the runtime raises for a failure it reports to the user (exit status 1)."""
from __future__ import annotations


class RuntimeFailure(Exception):
    """A failure with a message for stderr/--log; `create`/`exec` prefix it like runc does."""


class ContainerNotExist(RuntimeFailure):
    def __init__(self, container_id: str = "") -> None:
        super().__init__("container does not exist")
        self.container_id = container_id
