"""Reading the two Xet objects a client uploads: a xorb (chunks, each behind an 8-byte header, compressed
with nothing, LZ4 frames, or byte grouping + LZ4; an optional footer after them) and a shard (a header, the
file infos with their terms, verification entries and sha256, then the xorb infos). Only what the server
needs is read: bad input raises ``XetFormatError`` with one line saying what is wrong."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import lz4.frame

from hubtools.localhub.xet.hashing import HASH_BYTES, chunk_hash, hash_to_hex, xorb_hash

CHUNK_HEADER_BYTES = 8
MAX_CHUNK_BYTES = 128 * 1024
MAX_XORB_BYTES = 64 * 1024 * 1024
XORB_FOOTER_IDENT = b"XETBLOB"
SHARD_TAG = b"HFRepoMetaData\x00" + bytes([85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209,
                                           74, 169])
SHARD_VERSION = 2
ENTRY_BYTES = 48
BOOKEND = b"\xff" * HASH_BYTES
FLAG_WITH_VERIFICATION = 1 << 31
FLAG_WITH_METADATA_EXT = 1 << 30
COMPRESSION_NONE, COMPRESSION_LZ4, COMPRESSION_BG4_LZ4 = 0, 1, 2


class XetFormatError(ValueError):
    """A xorb or shard that is not what the specification says (the message is for the client)."""


@dataclass(frozen=True)
class Xorb:
    hash: bytes
    chunks: list[bytes]  # uncompressed
    chunk_hashes: list[bytes]


@dataclass(frozen=True)
class Term:
    xorb_hash: bytes
    unpacked_bytes: int
    chunk_start: int
    chunk_end: int  # exclusive


@dataclass(frozen=True)
class FileInfo:
    file_hash: bytes
    terms: list[Term]
    verification: list[bytes] | None
    sha256: bytes | None


def _ungroup4(grouped: bytes) -> bytes:
    """Undo byte grouping: the first quarter holds bytes 0, 4, 8..., the next bytes 1, 5, 9..., and so on."""
    size = len(grouped)
    out = bytearray(size)
    start = 0
    for lane in range(4):
        count = len(range(lane, size, 4))
        out[lane::4] = grouped[start:start + count]
        start += count
    return bytes(out)


def decompress_chunk(scheme: int, data: bytes, size: int) -> bytes:
    try:
        if scheme == COMPRESSION_NONE:
            raw = data
        elif scheme == COMPRESSION_LZ4:
            raw = lz4.frame.decompress(data)
        elif scheme == COMPRESSION_BG4_LZ4:
            raw = _ungroup4(lz4.frame.decompress(data))
        else:
            raise XetFormatError(f"Unknown chunk compression scheme {scheme}.")
    except RuntimeError as error:
        raise XetFormatError(f"A chunk does not decompress: {error}.") from None
    if len(raw) != size:
        raise XetFormatError(f"A chunk decompresses to {len(raw)} bytes, its header says {size}.")
    return raw


def parse_xorb(body: bytes) -> Xorb:
    """The chunks of a serialized xorb, each hashed; the footer (if any) is skipped, the hash computed."""
    if len(body) > MAX_XORB_BYTES:
        raise XetFormatError(f"A xorb is at most {MAX_XORB_BYTES} bytes serialized.")
    chunks, hashes, offset = [], [], 0
    while offset < len(body):
        if body.startswith(XORB_FOOTER_IDENT, offset):
            break
        if offset + CHUNK_HEADER_BYTES > len(body):
            raise XetFormatError("A xorb ends inside a chunk header.")
        version = body[offset]
        compressed = int.from_bytes(body[offset + 1:offset + 4], "little")
        scheme = body[offset + 4]
        size = int.from_bytes(body[offset + 5:offset + 8], "little")
        if version != 0:
            raise XetFormatError(f"Unknown chunk header version {version}.")
        if size > MAX_CHUNK_BYTES or compressed > MAX_CHUNK_BYTES + 1024:
            raise XetFormatError(f"A chunk is at most {MAX_CHUNK_BYTES} bytes.")
        start = offset + CHUNK_HEADER_BYTES
        if start + compressed > len(body):
            raise XetFormatError("A xorb ends inside a chunk.")
        raw = decompress_chunk(scheme, body[start:start + compressed], size)
        chunks.append(raw)
        hashes.append(chunk_hash(raw))
        offset = start + compressed
    if not chunks:
        raise XetFormatError("A xorb holds at least one chunk.")
    return Xorb(xorb_hash(list(zip(hashes, (len(c) for c in chunks)))), chunks, hashes)


def verified_xorb(body: bytes, hex_hash: str) -> Xorb:
    """The xorb ``body`` parsed, checked to hash to the name ``hex_hash`` it is stored or uploaded under."""
    xorb = parse_xorb(body)
    if hash_to_hex(xorb.hash) != hex_hash:
        raise XetFormatError(f"The xorb's chunks hash to {hash_to_hex(xorb.hash)}, not {hex_hash}.")
    return xorb


def _read(body: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size > len(body):
        raise XetFormatError(f"The shard ends inside {what}.")
    return body[offset:offset + size]


def parse_shard_files(body: bytes) -> list[FileInfo]:
    """The file infos of an uploaded shard (the xorb infos after them are not needed here)."""
    header = _read(body, 0, 48, "its header")
    if header[:32] != SHARD_TAG:
        raise XetFormatError("Not a Xet shard (wrong header tag).")
    version = int.from_bytes(header[32:40], "little")
    if version != SHARD_VERSION:
        raise XetFormatError(f"Shard header version {version} is not supported (expected {SHARD_VERSION}).")
    files, offset = [], 48
    while True:
        entry = _read(body, offset, ENTRY_BYTES, "a file header")
        offset += ENTRY_BYTES
        if entry[:HASH_BYTES] == BOOKEND:
            return files
        flags, count = struct.unpack_from("<II", entry, HASH_BYTES)
        if count == 0 or count > len(body) // ENTRY_BYTES:
            raise XetFormatError(f"File {hash_to_hex(entry[:HASH_BYTES])} has an impossible term count {count}.")
        terms = []
        for _ in range(count):
            raw = _read(body, offset, ENTRY_BYTES, "a file term")
            offset += ENTRY_BYTES
            _flags, unpacked, start, end = struct.unpack_from("<IIII", raw, HASH_BYTES)
            if end <= start:
                raise XetFormatError("A file term has an empty chunk range.")
            terms.append(Term(raw[:HASH_BYTES], unpacked, start, end))
        verification = None
        if flags & FLAG_WITH_VERIFICATION:
            verification = []
            for _ in range(count):
                verification.append(_read(body, offset, ENTRY_BYTES, "a verification entry")[:HASH_BYTES])
                offset += ENTRY_BYTES
        sha256 = None
        if flags & FLAG_WITH_METADATA_EXT:
            sha256 = _read(body, offset, ENTRY_BYTES, "a file's sha256 entry")[:HASH_BYTES]
            offset += ENTRY_BYTES
        files.append(FileInfo(entry[:HASH_BYTES], terms, verification, sha256))
