"""The CRI gRPC server: RuntimeService and ImageService, translating CRI messages to domain calls."""
