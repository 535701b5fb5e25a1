"""Artifacts on disk: manifests and output folders (:mod:`.manifest`), and the item format of each kind
(:mod:`.items`: ``cam`` npz, ``label`` png), each declared once with its reader, writer and validation."""
from wsss.artifacts.manifest import (ITEM_SUFFIX, MANIFEST, PARTIAL, Manifest, OutputDir, input_record,
                                     manifest_digest, read_manifest, write_json_atomic)

__all__ = ["ITEM_SUFFIX", "MANIFEST", "PARTIAL", "Manifest", "OutputDir", "input_record", "manifest_digest",
           "read_manifest", "write_json_atomic"]
