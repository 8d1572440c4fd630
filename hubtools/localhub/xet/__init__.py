"""Xet storage spoken by the local hub: the token endpoints, the CAS upload API (xorbs and shards) and the
formats and hashes behind them, following the published Xet protocol specification. Every file a shard
registers is reassembled from its xorbs into one sha256 blob of the ordinary blob store, so downloads,
fsck, gc and backup see what an LFS upload would have made."""
