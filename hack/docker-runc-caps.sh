#!/bin/bash
# runc for dockerd on machines whose capability bounding set is smaller than the kernel's:
# hack/docker.sh registers it as dockerd's default runtime when it finds such a set.
#
# Why: on these VMs CAP_SYS_RESOURCE is missing from every process's bounding set (CapBnd in
# /proc/self/status; the VM's init drops it). `docker run --privileged`, which kind uses for
# every node, asks for all capabilities, and runc fails with "unable to apply caps: operation
# not permitted". This wrapper removes from the bundle's config.json, before `create` or `run`,
# and from the process file of `exec --process FILE` (docker exec), the capabilities that this
# process's bounding set does not hold (no container here can have them anyway), then execs runc
# with the same arguments. Anything else passes through untouched.
set -euo pipefail

RUNC=${PYCRI_DOCKER_RUNC:-/usr/sbin/runc}

cmd= bundle= process=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    create | run | exec) [ -n "$cmd" ] || cmd=${args[i]} ;;
    --bundle | -b) bundle=${args[i + 1]:-} ;;
    --bundle=*) bundle=${args[i]#--bundle=} ;;
    --process | -p) process=${args[i + 1]:-} ;;
    --process=*) process=${args[i]#--process=} ;;
  esac
done
file= filter=
case $cmd in
  create | run)
    # runc's default bundle is the working directory
    file=${bundle:-.}/config.json
    filter='if .process.capabilities then .process.capabilities |= (CAPS) else . end' ;;
  exec)
    file=$process
    filter='if .capabilities then .capabilities |= (CAPS) else . end' ;;
esac

if [ -n "$file" ] && [ -f "$file" ]; then
  bnd=$((16#$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)))
  last=$(cat /proc/sys/kernel/cap_last_cap)
  missing=()
  # capability names in the kernel's order (linux/capability.h), 0..40
  names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
    CHECKPOINT_RESTORE)
  for ((c = 0; c <= last && c < ${#names[@]}; c++)); do
    (((bnd >> c) & 1)) || missing+=("CAP_${names[c]}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    drop=$(printf '"%s",' "${missing[@]}")
    tmp=$file.caps.$$
    caps='with_entries(.value |= (. // [] | map(select(. as $c | $drop | index($c) | not))))'
    jq --argjson drop "[${drop%,}]" "${filter/CAPS/$caps}" "$file" >"$tmp"
    mv -f "$tmp" "$file"
  fi
fi
exec "$RUNC" "$@"
