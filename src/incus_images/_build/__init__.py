"""Making images from local files: a reproducible image tarball, generated while it is read.

    build.py      ImageBuild: what the caller asked for, checked; its parts as streams
    metadata.py   metadata.yaml from the arguments, checked before anything is sent
    tree.py       the root file system as tar members: walked sorted, every file kind
    tarstream.py  tar members as a stream of bytes chunks (PAX format)
    compress.py   none, gzip (a fixed header) or xz, streamed

The only I/O here reads the tree; whoever consumes a stream decides where it runs (a worker
thread in the async flavour).
"""
