"""Training and evaluating the embedded model family: sim data in, checkpoints and model cards out.

Sits above sim, control and decoding (it runs the sim with a model in the loop and measures
speculative decoding) and below the CLI (commands/train.py).
"""
