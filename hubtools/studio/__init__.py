"""``hubtools studio``: train from the browser. A front end over the same runner the CLI uses, not a second
product: ``app`` (FastAPI routes, JSON API and pages), ``jobs`` (the SQLite queue and the worker that runs
each job as ``python -m hubtools --json ...`` child processes), ``uploads`` (photos streamed into the data
folder under a size cap), ``auth`` (the sign-in token printed once at start).
"""

from hubtools.studio.app import create_app

__all__ = ["create_app"]
