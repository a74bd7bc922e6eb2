"""Datasets behind one entry point: digits, Fashion-MNIST, image folders, latent folders (a registry of named
datasets: `fpdm.data.datasets.DATASETS`)."""

from fpdm.data.datasets import DATASETS, ImageDataset, load_dataset

__all__ = ["DATASETS", "ImageDataset", "load_dataset"]
