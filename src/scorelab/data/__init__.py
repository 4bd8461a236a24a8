"""LightningDataModules and offline data preparation."""

# Keys of a data config read by other groups, not passed to the DataModule.
DATA_META_KEYS = ("default_sigma_max",)
