"""Training: LoRA or full fine-tuning, and pretraining from scratch.

`train(config, run_dir)` trains with Adam and an L1 loss under a step schedule:

- lora: lr 1e-3, times 0.75 at 50%, 75% and 90% of the iterations (the paper's setting);
- full: lr 1e-4, halved at 50%, 80%, 90% and 95% (the paper's milestones; it gives no start lr,
  1e-4 is the usual fine-tuning rate for SwinIR-class models, half their from-scratch 2e-4);
- pretrain: re-initialised weights, bicubic data, lr 2e-4 on the full schedule.

RUN_DIR holds config.json (the resolved configuration), log.jsonl (one JSON object per line),
checkpoint.pt (trainable weights, optimizer, scheduler, RNG and degrader states, iteration;
replaced atomically), data.json (the training images it started on: --resume refuses changed data
without --resume-changed-data), rank_map.json for --rank-map and --rank-aware runs, and the outputs:
adapter.safetensors or model.safetensors, and the best one by validation PSNR as
adapter-best.safetensors / model-best.safetensors.

A resumed run replays exactly: the data order is a function of (seed, iteration) (see data.py)
and every random state is in the checkpoint, so on the CPU its losses equal an uninterrupted
run's bit for bit. Under torchrun (WORLD_SIZE > 1) each process trains on its slice of the
global batch with DistributedDataParallel (gloo on CPU, nccl on CUDA); rank 0 writes the files.

Modules: config (settings, resume rules, run folder), state (TrainState: checkpoints), loop
(Trainer: setup, step, run), callbacks (log, TensorBoard, progress bar), batches (the loader,
a worker's error carried whole), model (base model, adapters, rank maps, validation),
distributed (processes and devices), throughput (the benchmark), data_record (data.json),
step_stats (loss and timings of a logging interval), signals (Ctrl-C and SIGTERM), val_images
(--val-save-images pictures).
"""

from adaptsr.adapt.train.callbacks import Callback, Callbacks
from adaptsr.adapt.train.config import (
    DEFAULT_LR,
    MODES,
    RESUMABLE,
    TrainConfig,
    command_config,
    config_from_dict,
    read_config_file,
    resume_config,
)
from adaptsr.adapt.train.loop import Result, Trainer, train
from adaptsr.adapt.train.state import TrainState
from adaptsr.adapt.train.throughput import bench_defaults, bench_table, benchmark

__all__ = [
    "DEFAULT_LR",
    "MODES",
    "RESUMABLE",
    "Callback",
    "Callbacks",
    "Result",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "bench_defaults",
    "bench_table",
    "benchmark",
    "command_config",
    "config_from_dict",
    "read_config_file",
    "resume_config",
    "train",
]
