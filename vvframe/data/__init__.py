"""Audio reading, list formats, datasets and shards: what the components that read data share."""
