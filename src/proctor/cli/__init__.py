"""Layer 4: the ``proctor`` command line."""
