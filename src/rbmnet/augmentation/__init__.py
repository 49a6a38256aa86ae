"""Training-time augmentation, declared once: `declaration.declare_augmentation` turns the plan's
augmentation section into an ordered list of transforms with their parameters; the worker path
(training/augmentation.py, batchgenerators) and the device path (training/device_augmentation.py,
torch) execute that declaration and read nothing else."""
