"""Partition replication: pure leader and follower state, and the fetcher that applies it."""
