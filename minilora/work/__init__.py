"""Putting the model to work: data, tasks, the training loop, fine-tuning, the shipped base model.

Stands on the core (engine, model, LoRA); imports nothing from paper/, interop/,
teach/ or the command line.
"""
