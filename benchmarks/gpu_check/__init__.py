"""The GPU validation run: `make gpu-check` (python3 -m benchmarks.gpu_check --out DIR).

One command, at most --budget seconds (default 480) on one CUDA GPU, everything written into
one folder (--out, default $OUT, else gpu-check-out):

1. kernels (kernel_checks): the fused LoRA kernels compiled for the GPU, fp32 / fp16 / bf16,
   both backward designs, against fp64 (and the eager path's own error in that dtype);
   torch.library.opcheck of every custom op and dtype; a CUDA graph capture of a LoRA layer's
   forward and backward.
2. layers (layer_timing): per layer shape (benchmarks/lora_layers.py's cases) and rank, forward
   + backward of fused (both designs), eager LoRA, the floor, full fine-tuning, and one
   low-rank pass over x and dY.
3. end to end (training_timing): steps/s and peak memory, batch 8 of 64x64 LR, bf16 autocast,
   for SAFMN, SwinIR-light, SwinIR-M and EDSR-baseline: LoRA fused / eager / fused + compile /
   fused + CUDA graphs and full fine-tuning eager / compiled; Real-ESRGAN and bicubic
   degradations/s against what a step consumes; and a short `adapt train --compile
   --cuda-graphs` run.
4. budgets (projections): projected wall time of the paper's 100k LoRA and 500k full
   fine-tuning iterations.

Then the issue's targets are checked; failures (errors, skipped work, missed targets with their
ratio) are printed first, then written with every table to DIR/report.md (report) with the raw
numbers in DIR/results.json and one log per stage. Exit code 1 when anything failed. `run`
orders the stages and gives each its share of the budget.

`--device cpu --quick` runs every stage tiny on the CPU (the Triton interpreter, aot_eager
instead of inductor) so that the check's logic is tested without a GPU
(tests/test_gpu_check.py).

It lives under benchmarks/, outside the installed package: it spans every layer and prepares
its own environment (environment). The GPU machine has torch and Triton but not spandrel, and
no network: `make gpu-check-bundle` (run where the package index is reachable) downloads
spandrel and its small pure-Python dependencies into .whl/ (gitignored; carry it with the
tree), and the check unpacks whatever is missing from there into DIR/site (a wheel unpacked is
installed), beside a view of this working tree as the `adaptsr` package (symlinks: nothing is
built or installed).
"""
