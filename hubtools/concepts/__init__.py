"""Concept image sets: prepare a folder or Hub dataset of photos for training, push and pull them.

    from hubtools.concepts import prepare_concept, load_prepared_concept, push_concept, PreparedConcept
"""

from hubtools.concepts.hub import push_concept
from hubtools.concepts.manifest import ManifestEntry, PreparedConcept, load_prepared_concept
from hubtools.concepts.prepare import ConceptNotUsableError, prepare_concept

__all__ = [
    "ConceptNotUsableError",
    "ManifestEntry",
    "PreparedConcept",
    "load_prepared_concept",
    "prepare_concept",
    "push_concept",
]
