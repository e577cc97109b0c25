"""The transfer room: everything uploads, exports and relays share. No network I/O here (the
flavours' clients move the bytes, from ``_async/_bodies.py`` and its generated twin); the
local files of a transfer are read and written here.

* :mod:`.sources` — what create() is given (bytes, a path, a file object, chunks), opened,
  checked and read chunk by chunk.
* :mod:`.plan` — what an upload's body is made of (raw, or multipart for a split image),
  decided before anything is sent.
* :mod:`.meter` — what went through an upload's body: count, hash, progress, checks.
* :mod:`.rehash` — the hash of sources read again after sending, beside incusd's work.
* :mod:`.export` — an export body turned into verified parts.
* :mod:`.files` — files written atomically, under names that never leave their directory.
* :mod:`.relay` — an export re-framed as another server's upload.
* :mod:`.multipart` — split images both ways.
* :mod:`.threads` — hashing and writing on worker threads, beside the socket.
* :mod:`.reports` — paced progress reports.
"""
