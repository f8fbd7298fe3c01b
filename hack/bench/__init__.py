"""pycri measured side by side with containerd + runc (hack/bench-vs-containerd.sh)."""
