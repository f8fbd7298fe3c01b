"""CRI v1 protobuf (k8s.io/cri-api) and its generated Python stubs; see UPSTREAM."""
