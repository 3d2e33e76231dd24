"""Datasets: the registry, the verified fetcher (cache -> mirror -> download) and small loaders."""
from .cifar import load_cifar10_subset
from .fetch import (CACHE_ENV, MIRROR_ENV, DataUnavailableError, cache_dir, fetch, get_dataset,
                    mirror_dir, sha256_of)
from .mnist import load_mnist5k
from .movielens import Ratings, load_movielens
from .registry import DATASETS, DataFile, Dataset

__all__ = ["CACHE_ENV", "MIRROR_ENV", "DATASETS", "DataFile", "Dataset", "DataUnavailableError",
           "Ratings", "cache_dir", "fetch", "get_dataset", "load_cifar10_subset", "load_mnist5k", "load_movielens", "mirror_dir", "sha256_of"]
