"""The Hub's naming rules, in one place for the client side (config, publish, hackathon, studio) and the
local hub (``localhub.naming``): a repo id is ``namespace/name``, each part of letters, digits, ``-``, ``_``
and ``.``, starting and ending with a letter or digit, at most 96 characters, without ``--`` or ``..``
(huggingface_hub's ``validate_repo_id`` and the Hub's own checks); a repo name does not end in ``.git``.
"""

from __future__ import annotations

import re

DEFAULT_BRANCH = "main"
NAME_RULES = ("letters, digits, '-', '_' and '.', start and end with a letter or digit, at most 96 characters, "
              "no '--' or '..'")
_NAME_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


def is_valid_name_part(part: object) -> bool:
    """A namespace or a repo name the Hub accepts."""
    return isinstance(part, str) and bool(_NAME_PART.match(part)) and "--" not in part and ".." not in part


def is_valid_repo_id(repo_id: object) -> bool:
    """``namespace/name`` with both parts valid and a name that does not end in ``.git``."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        return False
    namespace, name = repo_id.split("/")
    return is_valid_name_part(namespace) and is_valid_name_part(name) and not name.endswith(".git")
