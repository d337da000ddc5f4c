"""3-D volumes on an exact voxel-to-RAS grid: reading, checking, attenuation, label maps and frames."""

from .attenuation import hu_to_attenuation, mra_to_attenuation, to_attenuation
from .fingerprint import volume_fingerprint
from .grid import Volume, VolumeError
from .labels import label_values, masked_attenuation, structure_mask, structure_volumes
from .readers import LabelGridWarning, load_labelmap, load_volume, volume_from_array

__all__ = [
    "LabelGridWarning",
    "Volume",
    "VolumeError",
    "hu_to_attenuation",
    "label_values",
    "load_labelmap",
    "load_volume",
    "masked_attenuation",
    "mra_to_attenuation",
    "structure_mask",
    "structure_volumes",
    "to_attenuation",
    "volume_fingerprint",
    "volume_from_array",
]
