"""The CPU Triton supervisor: nvidia-pytriton's real `tritonserver` binary run on this machine."""
