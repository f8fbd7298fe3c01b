"""Containers: their records, their rootfs, and the runtime handlers that run and watch them."""
