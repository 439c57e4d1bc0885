"""Sentinel-2 data path: payload codecs, shard writing (``satclip shards``), transforms and the stream."""
