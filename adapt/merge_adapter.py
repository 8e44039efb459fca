"""Folding an adapter file into its base model: a plain checkpoint of the base architecture,
which loads anywhere the base model does."""

from __future__ import annotations

from dataclasses import dataclass

from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.lora import merge_lora
from adaptsr.adapt.lora_report import lora_report
from adaptsr.adapt.models import CHECKPOINT_SUFFIXES, load_model, save_model
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_not_input, check_writable


@dataclass(frozen=True)
class MergeSummary:
    out: str
    sites: int  # adapters folded
    parameters: int  # adapter parameters folded
    percent: float  # of the base model's parameters

    def text(self) -> str:
        return (
            f"merged {self.sites} adapters ({self.parameters:,} parameters, "
            f"{self.percent:.2f}% of the base) into {self.out}"
        )


def merge_adapter_file(model: str, adapter: str, out: str, force: bool = False) -> MergeSummary:
    """Load `model`, apply `adapter`, fold it into the weights and save the result as `out`."""
    check_not_input(out, [model, adapter], "--out")
    check_writable(out, force)
    if not out.lower().endswith(CHECKPOINT_SUFFIXES):  # checked before any work
        raise UserError(f"{out}: choose a {' or '.join(CHECKPOINT_SUFFIXES)} file name")
    net = load_model(model)
    AdapterFile.read(adapter).apply(net)
    report = lora_report(net)
    merge_lora(net)
    save_model(net, out, force=force)
    return MergeSummary(out, len(report["sites"]), report["total"], report["percent"])
