"""The read side of a simplestreams image server, without I/O: the catalogue parsed into
Incus's models (``catalogue``), images found by fingerprint and alias (``lookup``), and an
image's files checked and verified as they download (``download``)."""
