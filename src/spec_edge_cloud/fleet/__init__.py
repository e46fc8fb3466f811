"""Verifier replicas on Ray behind one front (docs/fleet.md); nothing here is imported without --replicas."""
