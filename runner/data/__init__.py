"""THE place a train/val/test batch stream is made (loaders): a DataLoader over the adapter's
datasets, or the decoded-tensor cache (cache, batch_augment); the resumable, shardable sampler."""
