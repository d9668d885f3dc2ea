"""Example handler modules (load one with ``--handlers examples.<module>``)."""
