"""The Xet hashes (keyed blake3): chunk, xorb (a merkle root over chunk hashes and sizes), file, and the
term verification hash a shard carries; and the hash <-> string form the CAS API uses in its paths."""

from __future__ import annotations

from collections.abc import Sequence

from blake3 import blake3

HASH_BYTES = 32
DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16,
                  155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])
INTERNAL_NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83,
                           111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63])
VERIFICATION_KEY = bytes([127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243, 164, 205, 38,
                          213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195])
FILE_KEY = bytes(HASH_BYTES)
MEAN_BRANCHING = 4  # a merkle node closes after a child whose hash is 0 mod 4: 2 to 9 children
MAX_GROUP = 2 * MEAN_BRANCHING + 1


def hash_to_hex(raw: bytes) -> str:
    """The CAS string form: each 8-byte word as a little-endian u64 in 16 hex digits (not plain bytes.hex())."""
    return "".join(raw[i:i + 8][::-1].hex() for i in range(0, HASH_BYTES, 8))


def hex_to_hash(text: str) -> bytes:
    """Inverse of ``hash_to_hex``; ValueError unless 64 hex digits."""
    if len(text) != 2 * HASH_BYTES:
        raise ValueError("a Xet hash is 64 hex digits")
    raw = bytes.fromhex(text)
    return b"".join(raw[i:i + 8][::-1] for i in range(0, HASH_BYTES, 8))


def keyed(key: bytes, data: bytes) -> bytes:
    return blake3(data, key=key).digest()


def chunk_hash(data: bytes) -> bytes:
    return keyed(DATA_KEY, data)


def _natural_cut(raw: bytes) -> bool:
    return int.from_bytes(raw[24:32], "little") % MEAN_BRANCHING == 0


def _next_cut(nodes: Sequence[tuple[bytes, int]]) -> int:
    if len(nodes) <= 2:
        return len(nodes)
    end = min(MAX_GROUP, len(nodes))
    for index in range(2, end):
        if _natural_cut(nodes[index][0]):
            return index + 1
    return end


def _merge(nodes: Sequence[tuple[bytes, int]]) -> tuple[bytes, int]:
    text = "".join(f"{hash_to_hex(raw)} : {size}\n" for raw, size in nodes)
    return keyed(INTERNAL_NODE_KEY, text.encode()), sum(size for _, size in nodes)


def merkle_root(chunks: Sequence[tuple[bytes, int]]) -> bytes:
    """The aggregated hash of (chunk hash, chunk size) pairs: levels of merged groups until one is left."""
    if not chunks:
        return bytes(HASH_BYTES)
    level = list(chunks)
    while len(level) > 1:
        merged, start = [], 0
        while start < len(level):
            cut = start + _next_cut(level[start:start + MAX_GROUP])
            merged.append(_merge(level[start:cut]))
            start = cut
        level = merged
    return level[0][0]


def xorb_hash(chunks: Sequence[tuple[bytes, int]]) -> bytes:
    return merkle_root(chunks)


def file_hash(chunks: Sequence[tuple[bytes, int]]) -> bytes:
    if not chunks:
        return bytes(HASH_BYTES)
    return keyed(FILE_KEY, merkle_root(chunks))


def verification_hash(chunk_hashes: Sequence[bytes]) -> bytes:
    """What a shard's verification entry holds for a term: the term's chunk hashes, concatenated, keyed."""
    return keyed(VERIFICATION_KEY, b"".join(chunk_hashes))
