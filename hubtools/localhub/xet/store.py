"""Where Xet uploads go: verified xorbs under ``<data>/xet/xorbs``, the short-lived CAS access tokens handed
out by the token endpoints, and the reassembly of a file a shard registers into one sha256 blob of the
ordinary blob store, owned by the repo the token was issued for.

A shard may use any stored xorb, as on the Hub (the client deduplicates against xorbs it uploaded before,
to any repo, under any account): what proves it holds the content is the verification hash of every term,
computed from the chunk hashes, which only the content gives and which this server never reveals. A xorb
hash or a file's sha256 alone gets nothing."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hubtools.localhub.blobs import private_dir
from hubtools.localhub.storage import Storage
from hubtools.localhub.xet.format import FileInfo, Xorb, XetFormatError, parse_xorb, verified_xorb
from hubtools.localhub.xet.hashing import file_hash, hash_to_hex, verification_hash

TOKEN_TTL_S = 3600


class XetRefused(Exception):
    """An upload the server refuses (status and one line for the client)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Grant:
    """What a CAS access token allows: ``write`` or ``read`` for one repo, on behalf of ``user``."""

    repo_type: str
    repo_id: str
    user: str | None
    scope: str
    expires: float


@dataclass
class XetStore:
    storage: Storage
    grants: dict[str, Grant] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.xorbs_dir = self.storage.data_dir / "xet" / "xorbs"
        private_dir(self.xorbs_dir.parent)
        private_dir(self.xorbs_dir)

    # ---- tokens ----------------------------------------------------------------------------------

    def issue(self, repo_type: str, repo_id: str, user: str | None, scope: str) -> tuple[str, int]:
        token = "xet_" + secrets.token_urlsafe(32)
        expires = int(time.time()) + TOKEN_TTL_S
        with self.lock:
            now = time.time()
            for stale in [key for key, grant in self.grants.items() if grant.expires < now]:
                del self.grants[stale]
            self.grants[token] = Grant(repo_type, repo_id, user, scope, expires)
        return token, expires

    def grant_for(self, authorization: str | None, scope: str) -> Grant:
        """The grant behind a CAS request's bearer token: 401 unknown or expired, 403 a read token writing."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self.lock:
            grant = self.grants.get(token)
        if grant is None or grant.expires < time.time():
            raise XetRefused(401, "Unknown or expired Xet token: ask the hub's xet token endpoint for a new one.")
        if scope == "write" and grant.scope != "write":
            raise XetRefused(403, "This Xet token is for reading; uploads need a xet-write-token.")
        return grant

    # ---- xorbs -----------------------------------------------------------------------------------

    def xorb_path(self, hex_hash: str) -> Path:
        return self.xorbs_dir / hex_hash[:2] / hex_hash

    def has_xorb(self, hex_hash: str) -> bool:
        return self.xorb_path(hex_hash).is_file()

    def put_xorb(self, hex_hash: str, body: bytes) -> bool:
        """Verify ``body`` hashes to ``hex_hash`` and keep it; True when it was new."""
        try:
            verified_xorb(body, hex_hash)
        except XetFormatError as error:
            raise XetRefused(400, str(error)) from None
        target = self.xorb_path(hex_hash)
        if target.is_file():
            return False
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(self.storage.blobs.durable_temp_file(body), target)
        return True

    def load_xorb(self, hex_hash: str) -> Xorb:
        return parse_xorb(self.xorb_path(hex_hash).read_bytes())

    # ---- files -----------------------------------------------------------------------------------

    def register_file(self, info: FileInfo, grant: Grant) -> str:
        """Reassemble a file a shard registers from its xorbs, check every hash the shard states, and keep it
        as a sha256 blob owned by the grant's repo. Returns the sha256."""
        name = hash_to_hex(info.file_hash)
        if info.verification is None or len(info.verification) != len(info.terms):
            raise XetRefused(400, f"File {name}: a shard upload needs one verification entry per term.")
        current: tuple[str, Xorb] | None = None  # one xorb in memory at a time (up to 64 MiB): terms run in order
        fd, temp_path = self.storage.blobs.new_temp_file()
        digest, chunk_list = hashlib.sha256(), []
        try:
            with os.fdopen(fd, "wb") as handle:
                for index, term in enumerate(info.terms):
                    xorb_name = hash_to_hex(term.xorb_hash)
                    if current is None or current[0] != xorb_name:
                        if not self.has_xorb(xorb_name):
                            raise XetRefused(400, f"File {name} uses xorb {xorb_name}, which was not uploaded.")
                        current = (xorb_name, self.load_xorb(xorb_name))
                    xorb = current[1]
                    if term.chunk_end > len(xorb.chunks):
                        raise XetRefused(400, f"File {name} asks for chunks past the end of xorb {xorb_name}.")
                    chunks = xorb.chunks[term.chunk_start:term.chunk_end]
                    hashes = xorb.chunk_hashes[term.chunk_start:term.chunk_end]
                    if sum(len(chunk) for chunk in chunks) != term.unpacked_bytes:
                        raise XetRefused(400, f"File {name}: a term's size does not match its chunks.")
                    if verification_hash(hashes) != info.verification[index]:
                        raise XetRefused(400, f"File {name}: a term's verification hash does not match.")
                    for chunk, chunk_hash in zip(chunks, hashes):
                        digest.update(chunk)
                        handle.write(chunk)
                        chunk_list.append((chunk_hash, len(chunk)))
                handle.flush()
                os.fsync(handle.fileno())
            if file_hash(chunk_list) != info.file_hash:
                raise XetRefused(400, f"File {name}: its chunks hash to {hash_to_hex(file_hash(chunk_list))}.")
            sha256 = digest.hexdigest()
            if info.sha256 is not None and hash_to_hex(info.sha256) != sha256:
                raise XetRefused(400, f"File {name}: its bytes have sha256 {sha256}, not the one the shard states.")
            self.storage.blobs.add_blob_for_repo(grant.repo_type, grant.repo_id, temp_path, sha256, verified=True)
            return sha256
        finally:
            if temp_path.exists():
                temp_path.unlink()
