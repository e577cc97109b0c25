"""The transfer room: everything uploads, exports and relays share, without I/O of its own.

* :mod:`.upload` — what an upload is made of (sources, the body's layout) and the meter every
  chunk passes on its way out (count, hash, progress, checks).
* :mod:`.export` — turning an export body into verified parts, and files written atomically.
* :mod:`.multipart` — split images both ways.
* :mod:`.threads` — hashing and writing on worker threads, beside the socket.
* :mod:`.progress` — paced progress reports.

The flavours' clients drive these pieces from ``_async/`` (and the generated ``_sync/``).
"""
