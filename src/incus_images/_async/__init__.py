"""The hand-written async source. ``_sync/`` is generated from it: edit only here."""
