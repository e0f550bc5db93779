"""Datasets (conf/dataset/) and the seeded batch loaders the trainer iterates: sources (files
on disk), splits (stratified train/val/test), loaders (on-device and streaming), synthetic
shapes. Imports only config and errors."""

from __future__ import annotations

from trainrepro.data.builders import cifar10, cifar100, imagefolder, mnist, synthetic
from trainrepro.data.loader import DeviceLoader, StreamingLoader, augment_batch, make_loader
from trainrepro.data.splits import (
    Augment,
    DataSplits,
    FileImageSet,
    ImageSet,
    channel_stats,
    stratified_indices,
    stratified_split,
)

__all__ = [
    "Augment",
    "DataSplits",
    "DeviceLoader",
    "FileImageSet",
    "ImageSet",
    "StreamingLoader",
    "augment_batch",
    "channel_stats",
    "cifar10",
    "cifar100",
    "imagefolder",
    "make_loader",
    "mnist",
    "stratified_indices",
    "stratified_split",
    "synthetic",
]
