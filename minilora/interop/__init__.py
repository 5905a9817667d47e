"""Files in the PyTorch ecosystem's formats: PEFT adapter directories and GPT-2 checkpoints
that transformers and peft load (NumPy and safetensors only, no torch).

Stands on the core and work/.
"""
