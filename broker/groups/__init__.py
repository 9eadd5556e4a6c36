"""Consumer groups: pure membership and assignment state, and the coordinator around it."""
