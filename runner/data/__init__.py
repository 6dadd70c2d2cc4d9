"""THE place a train/val/test batch stream is made, above the resolvers:
- loaders: the adapter's datasets, the DataLoader or the cache, seeded streams
- splits: the val split (which train samples are held out) and `check_val_split`
- cache: the decoded-tensor cache (`data.cache`), on the host or the device
- batch_augment: augmentation of a cached batch on its device
- collate: how a batch is collated (`[data] collate`, an adapter's `collate_fn`)
- sampler: the resumable, shardable random sampler"""
