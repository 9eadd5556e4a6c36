"""The broker process: partition logs, replication, the gRPC services, wiring."""
