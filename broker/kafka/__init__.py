"""Kafka wire-protocol listener: unmodified Kafka clients against the same core."""
