"""The web console: `raftka console` (server.py), its JSON API and its pages (static/)."""
