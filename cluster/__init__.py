"""Cluster metadata (KRaft-style): a pure image/delta model, the controller, and Raft wiring."""
