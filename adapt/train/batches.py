"""The training batches, with a data-loader worker's UserError carried to the main process.

PyTorch re-raises a worker's exception from its formatted traceback: the type survives, the
one-line message does not. So a worker does not raise a UserError: it hands it back as a
`LoaderFailure` in place of the batch, and the main process raises it again, message intact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, default_collate

from adaptsr.adapt.data import BatchPlan, CropDataset, collate_mixed, loader
from adaptsr.core.errors import UserError


@dataclass(frozen=True)
class LoaderFailure:
    """A UserError met while loading an item (an image unreadable since the scan, say)."""

    message: str

    def error(self) -> UserError:
        return UserError(self.message)


class _Guarded(Dataset):
    """`dataset`, with a UserError of an item returned as a LoaderFailure."""

    def __init__(self, dataset: CropDataset):
        self.dataset = dataset
        self.mixed = dataset.mixed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        try:
            return self.dataset[key]
        except UserError as e:
            return LoaderFailure(str(e))


def _collate(collate: Callable[[list], dict]) -> Callable[[list], dict | LoaderFailure]:
    """`collate`, or the batch's first failure in place of the batch."""

    def run(items: list) -> dict | LoaderFailure:
        for item in items:
            if isinstance(item, LoaderFailure):
                return item
        return collate(items)

    return run


def training_batches(
    dataset: CropDataset, plan: BatchPlan, workers: int, pin: bool
) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of `plan`, loaded by `workers` processes; a UserError of any of them is
    raised here with its own message."""
    collate = _collate(collate_mixed if dataset.mixed else default_collate)
    for batch in loader(_Guarded(dataset), plan, workers, pin, collate=collate):
        if isinstance(batch, LoaderFailure):
            raise batch.error()
        yield batch
