"""LightningDataModules and offline data preparation."""
