"""Model bundles: manifest (format, hashes, preprocessing) and the onnxruntime-backed scorer."""
from dfscan.model.manifest import BUNDLE_FORMAT, Manifest, load_manifest, write_bundle

__all__ = ["BUNDLE_FORMAT", "Manifest", "load_manifest", "write_bundle"]
