"""convnet-io: safe saving and loading of convnet models.

    import convnet_io
    convnet_io.save("mnist.h5", model)            # HDF5 (NPZ for a .npz path or without h5py)
    model = convnet_io.load("mnist.h5")           # a convnet_core.Model
    parts = convnet_io.load("mnist.h5", parts=True)   # layer, params, state, ... as NumPy

Writes are atomic; loading checks everything and raises `ModelFormatError` for any bad
file; models saved by ConvNet-NumPy (weights.json + weights.hdf5) load converted. Also:
`Checkpoint` / `load_checkpoint` for training, PyTorch state dicts, and ONNX export.
"""

__version__ = "0.1.0"

from .checkpoint import Checkpoint, load_checkpoint
from .errors import ModelFormatError
from .format import FORMAT_VERSION, SavedModel, load, save
from .onnx_export import export_onnx
from .torch_convert import from_torch_state_dict, to_torch_state_dict

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "ModelFormatError",
    "SavedModel",
    "__version__",
    "export_onnx",
    "from_torch_state_dict",
    "load",
    "load_checkpoint",
    "save",
    "to_torch_state_dict",
]
