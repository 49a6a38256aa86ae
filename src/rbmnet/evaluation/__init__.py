"""Metrics and their reports: segmentation overlap (segmentation_metrics), pretext reconstruction
quality (image_metrics, lpips_metric; these import torch and piq), and files on disk (reports)."""
