"""Pod sandboxes: the host-side pieces a pod needs before its containers run.

- namespaces: the pod's network, IPC and UTS namespaces, made by a thread of the daemon made
  for it (a short-lived forked child for a pod with a user namespace) and pinned by nsfs bind
  mounts (no pause process holds them); unpin, is_pinned, enter_netns.
- infra, pause: only for a pod that shares one PID namespace, its PID 1 (catatonit -P).
- cni: a CNI client (spec 1.0, 0.3/0.4 lists): loads the network list from the conf dir, runs
  ADD/DEL/CHECK of its plugins with prevResult, runtimeConfig and CNI_ARGS, caches results so
  DEL works after a restart, rolls back a failed ADD, parses the pod IPs; status() for the CRI
  NetworkReady condition.
- default_network: pycri's default bridge network (10-pycri-bridge.conflist) and loopback_up.
- masquerade: the default network's one-off subnet masquerade (a nat chain PYCRI-MASQ-<hash>
  and one POSTROUTING rule), made by cni_network instead of a nat chain per pod.
- cni_network: CniNetwork, the pod network of the sandbox service on top of cni.
- files: the pod's /etc/hostname, /etc/hosts and /etc/resolv.conf, written atomically.
- netstats: the interface counters of a pod's network namespace (stats and metrics).
- host: what the service asks of the host besides the network (pins, the infra process, the
  pod cgroup), behind narrow interfaces; fake: fakes of those and of the network, for unit tests.
- service, records: the sandbox service (what criserver calls), its typed records and table.

Nothing here depends on the gRPC layer: inputs are plain dataclasses.
"""
