"""One flavour of the client: ``_async/`` is the hand-written source, ``_sync/`` its generated
blocking twin. Edit ``_async/`` only."""
