"""Image classification data in the two public layouts vision papers use.

* **ImageFolder** (torchvision's layout): ``root/{train,val,test}/<class>/<image>``, or a
  single pool ``root/<class>/<image>`` that is split here. Class indices follow the sorted
  class folder names of the training split.
* **CIFAR-style pickled batches**: ``data_batch_*`` (or ``train``) and ``test_batch`` (or
  ``test``), each a pickle of ``{b"data": uint8 (N, C*H*W) channels-first rows,
  b"labels" | b"fine_labels": [N ints]}``, plus ``batches.meta`` (or ``meta``) with the
  label names. A ``val_batch`` is used when present. ``cifar-10-batches-py/`` inside
  ``root`` is found too. The image shape is (3, 32, 32) for 3,072 values, else read from
  the meta's ``image_shape`` or inferred as a square grey or RGB image.

Splits: a validation split missing on disk is carved from train, stratified by class with
a fixed seed; a single ImageFolder pool is split 70/10/20 the same way. Images are scaled
to [0, 1] and normalised per channel with the training split's mean and std.

``seqzoo data prepare sklearn-digits`` writes the real 1,797 8x8 handwritten digits that
ship with scikit-learn into ImageFolder PNGs with a fixed stratified 70/10/20 split;
``seqzoo data synth vision`` writes oriented-bar images (the class is the bar's
orientation; position, colour and noise vary) as CIFAR-style batches.
"""

from seqzoo.datasets.vision.reader import (
    SPLITS,
    IMAGE_SUFFIXES,
    Format,
    ImageSet,
    detect_format,
    read_image_folder,
    write_image_folder,
    CIFAR_FILES,
    read_cifar_batches,
    write_cifar_batches,
    stratified_split,
    resize_images,
)
from seqzoo.datasets.vision.datamodule import (
    ImageDataset,
    VisionDataModule,
)
from seqzoo.datasets.vision.synthetic import (
    BAR_ORIENTATIONS,
    synth_vision,
)
from seqzoo.datasets.vision.prepare import (
    prepare_sklearn_digits,
)

__all__ = [
    "SPLITS",
    "IMAGE_SUFFIXES",
    "Format",
    "ImageSet",
    "detect_format",
    "read_image_folder",
    "write_image_folder",
    "CIFAR_FILES",
    "read_cifar_batches",
    "write_cifar_batches",
    "stratified_split",
    "resize_images",
    "ImageDataset",
    "VisionDataModule",
    "BAR_ORIENTATIONS",
    "synth_vision",
    "prepare_sklearn_digits",
]
