"""Inference backends: raw uint8 NHWC batches in, each image's best candidates out (`ModelOutputs`)."""
