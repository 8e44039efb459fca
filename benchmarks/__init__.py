"""Development benchmarks and the GPU check, outside the installed package: run them from the
repository root with `python -m benchmarks.<name>`.

- lora_layers: forward + backward time of the LoRA kernels per layer shape (needs a GPU);
- roofline_table: the kernels' cost-model bounds per layer shape (no GPU needed);
- gpu_check: the GPU validation run behind `make gpu-check` (kernels, layers, training steps,
  the paper's budgets), one report.
"""
