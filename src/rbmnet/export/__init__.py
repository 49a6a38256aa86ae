"""Models that travel: a trained model as verified ONNX graphs (rbmnet_export) and as one archive file
(archive.py, rbmnet_install_model). See docs/export.md and docs/model_folder.md."""
