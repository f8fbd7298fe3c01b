"""Moved to pycri.kernel.mountinfo (the one mountinfo reader); re-exported until
runtime/rootfs/__init__.py and runtime/rootfs/cgroupfs.py import it from there."""
from pycri.kernel.mountinfo import MountInfo, mount_containing, parse_mountinfo, read_mountinfo  # noqa: F401
