"""Containers: their records, their rootfs, and the OCI runtime handlers that run them under conmon."""
