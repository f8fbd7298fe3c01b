"""The container process's own attributes, applied in the container just before execve:
rlimits, oom_score_adj, no_new_privs, capabilities, user and groups, cwd, umask, fds,
the console, and the lookup of args[0] in the container's PATH (setup)."""
