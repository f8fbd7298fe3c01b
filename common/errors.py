"""Domain errors. Each layer raises these; criserver maps them to gRPC status codes in one place."""
from __future__ import annotations

import errno

# the disk (or the user's quota) is full: ResourceExhausted, never an internal error
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class PycriError(Exception):
    """Base of every error pycri reports to a client. The message is shown to the user."""


class InvalidArgument(PycriError):
    """The request is malformed (missing field, bad reference, bad value)."""


class NotFound(PycriError):
    """The named object (pod, container, image, manifest) does not exist."""


class AlreadyExists(PycriError):
    """An object with the same identity already exists."""


class FailedPrecondition(PycriError):
    """The object is in a state that does not allow the operation."""


class Unavailable(PycriError):
    """A service pycri depends on (a registry, a network plugin) could not be reached."""


class ResourceExhausted(PycriError):
    """A limit was reached: the disk or a quota is full (ENOSPC, EDQUOT), or content is larger
    than pycri accepts (an oversized manifest, a layer that unpacks past its limit)."""


class PermissionDenied(PycriError):
    """Credentials were refused."""


class DataLoss(PycriError):
    """Content did not match its digest or was otherwise corrupt or unsafe."""


class Unimplemented(PycriError):
    """The operation is not supported by pycri (yet)."""


class DeadlineExceeded(PycriError):
    """The operation did not finish in the time it was given."""


class Cancelled(PycriError):
    """The client gave up on the call (cancelled it, or its deadline passed): the work stops."""


class RuntimeFailed(PycriError):
    """The OCI runtime or the container monitor failed; the message is theirs."""
