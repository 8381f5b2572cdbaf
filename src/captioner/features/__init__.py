"""Image features: a streaming, sharded store on disk and the extraction that fills it."""

from captioner.features.extract import ExtractionReport, extract_features, update_features
from captioner.features.sharded import update_shard_features
from captioner.features.store import (
    STORE_DTYPE,
    FeatureCacheError,
    FeatureStore,
    ShardWriter,
    default_cache_dir,
    default_cache_root,
    source_fingerprint,
)

__all__ = [
    "STORE_DTYPE",
    "ExtractionReport",
    "FeatureCacheError",
    "FeatureStore",
    "ShardWriter",
    "default_cache_dir",
    "default_cache_root",
    "extract_features",
    "source_fingerprint",
    "update_features",
    "update_shard_features",
]
