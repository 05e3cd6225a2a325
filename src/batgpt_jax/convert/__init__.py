"""Checkpoint conversion between our orbax checkpoints and Hugging Face safetensors layouts.

One module per external layout (qwen2, llama, batgpt); `orbax_to_hf` and `hf_to_orbax` move the
tensors one at a time; `layouts.py` picks the layout for a config; `command.py` is the
`batgpt convert` CLI. Importing the package loads nothing else: `convert --help` needs no JAX.
"""
