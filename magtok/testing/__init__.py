"""Test/benchmark support: access to the peer implementation (magvit2-pytorch 0.5.1)."""

from magtok.testing.peer import (  # noqa: F401
    PEER_VERSION,
    build_peer_tokenizer,
    import_peer,
    patch_peer_time_padding,
    peer_available,
    peer_dir,
    peer_time_paddings,
)
