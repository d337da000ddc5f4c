"""3-D volumes on an exact voxel-to-RAS grid: reading, checking, attenuation, label maps and frames."""

from .attenuation import hu_to_attenuation, mra_to_attenuation, to_attenuation
from .grid import Volume, VolumeError, load_labelmap, load_volume, volume_from_array
from .labels import label_values, masked_attenuation, structure_mask, structure_volumes

__all__ = [
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
    "volume_from_array",
]
