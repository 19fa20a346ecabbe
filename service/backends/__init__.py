"""Inference backends: raw uint8 NHWC batches in, raw BlazeFace tensors out."""
