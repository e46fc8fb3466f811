"""transport layer of spec_edge_cloud (see docs/architecture.md)."""
