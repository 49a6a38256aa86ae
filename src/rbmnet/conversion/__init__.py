"""Converters that bring data into rbmnet_raw/<Name>/ (see docs/architecture.md): `rbmnet_convert`."""
from rbmnet.conversion.folder import convert_folder
from rbmnet.conversion.supervisely import convert_supervisely
from rbmnet.conversion.synthetic import generate_synthetic_case, write_synthetic_dataset
from rbmnet.conversion.writer import ConversionResult, detect_tooth_numbering

__all__ = ["ConversionResult", "convert_folder", "convert_supervisely", "detect_tooth_numbering",
           "generate_synthetic_case", "write_synthetic_dataset"]
