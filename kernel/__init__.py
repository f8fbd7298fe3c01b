"""The one place pycri talks to the kernel: a Syscall protocol, the real Linux calls, a recording fake.

Imports only the standard library (ctypes, os), so that the per-container runtime
process starts fast.
"""
