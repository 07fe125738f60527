"""The service layer: thin gRPC servicers translating proto messages to operations."""
