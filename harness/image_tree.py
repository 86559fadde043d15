"""A user's labelled images (``harness run --images DIR``): an ImageFolder-style tree, one folder per class.

A folder is named by its class index (``0``, ``207``) or by its ImageNet synset (``n01440764``); a synset
becomes an index with timm's own ImageNet info, in the ImageNet subset that the model's class count names
(``timm.data.infer_imagenet_subset``: 1000 classes are ImageNet-1k, 21843 Google's ImageNet-21k, ...). Which
index a folder means thus depends on the model, so reading the tree (:func:`read_image_tree`, with neither
torch nor timm: a bad tree is answered at once) and labelling it for a class count (:func:`class_indices`)
are separate steps.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')   # timm's own image folder reader's; other files are ignored
INDEX, SYNSET = re.compile(r'[0-9]+'), re.compile(r'n[0-9]{8}')
LAYOUT = 'DIR/<class index or ImageNet synset>/<image>, e.g. DIR/207/a.jpg or DIR/n01440764/b.png'


class ImageTreeError(ValueError):
    """A tree that cannot be labelled images; ``str()`` names the folder or file and what was expected."""


@dataclass(frozen=True)
class ImageTree:
    root: Path
    folders: tuple[tuple[str, tuple[Path, ...]], ...]   # (class folder name, its images), both sorted
    sha256: str   # of every image's path below the root and size: the image set --resume must find again


def read_image_tree(root: Path) -> ImageTree:
    """The tree at ``root``, or :class:`ImageTreeError`: a missing folder, no class folders, a class folder
    without images, a folder named neither by class index nor by synset, an image outside a class folder."""
    if not root.exists():
        raise ImageTreeError(f'{root} does not exist; expected a folder of class folders, {LAYOUT}')
    if not root.is_dir():
        raise ImageTreeError(f'{root} is a file; expected a folder of class folders, {LAYOUT}')
    folders = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith('.'):
            continue
        if entry.is_file() and _is_image(entry):
            raise ImageTreeError(f'{entry} is an image outside a class folder; expected {LAYOUT}')
        if not entry.is_dir():
            continue
        if not (INDEX.fullmatch(entry.name) or SYNSET.fullmatch(entry.name)):
            raise ImageTreeError(f'{entry}: folder name {entry.name!r} is neither a class index (0, 207) nor an '
                                 f'ImageNet synset (n01440764)')
        images = tuple(sorted(p for p in entry.rglob('*') if _is_image(p) and p.is_file()))
        if not images:
            raise ImageTreeError(f'{entry} holds no images ({", ".join(IMAGE_SUFFIXES)}); expected {LAYOUT}')
        folders.append((entry.name, images))
    if not folders:
        raise ImageTreeError(f'{root} holds no class folders; expected {LAYOUT}')
    return ImageTree(root, tuple(folders), _digest(root, folders))


def check_readable(tree: ImageTree) -> None:
    """:class:`ImageTreeError` for the first image PIL cannot identify. Only headers are read: decoding every
    image of a large set would take minutes before the first case."""
    from PIL import Image
    for _, images in tree.folders:
        for image in images:
            try:
                with Image.open(image):
                    pass
            except OSError as e:   # PIL's UnidentifiedImageError is one
                raise ImageTreeError(f'{image} cannot be read as an image ({e})') from None


def class_indices(tree: ImageTree, num_classes: int) -> dict[str, int]:
    """Each class folder's index among a model's ``num_classes`` classes, or :class:`ImageTreeError`: a synset
    that is not one of the model's ImageNet classes, an index beyond them, a model without a classifier."""
    if num_classes < 1:
        raise ImageTreeError(f'{tree.root}: the model has no classifier (num_classes {num_classes}), so no top-1 '
                             f'accuracy')
    synsets = [name for name, _ in tree.folders if SYNSET.fullmatch(name)]
    indices = _synset_indices(tree, synsets, num_classes) if synsets else {}
    for name, _ in tree.folders:
        if INDEX.fullmatch(name):
            indices[name] = int(name)
            if int(name) >= num_classes:
                raise ImageTreeError(f'{tree.root / name}: class index {int(name)} is beyond the model\'s '
                                     f'{num_classes} classes (0-{num_classes - 1})')
    return indices


def _synset_indices(tree: ImageTree, synsets: list[str], num_classes: int) -> dict[str, int]:
    from timm.data import ImageNetInfo, infer_imagenet_subset
    subset = infer_imagenet_subset({'num_classes': num_classes})
    if subset is None:
        raise ImageTreeError(f'{tree.root / synsets[0]}: a folder named by ImageNet synset needs a model whose '
                             f'classes are an ImageNet subset timm knows, and {num_classes} classes are none; name '
                             f'the folders by class index')
    index = {synset: i for i, synset in enumerate(ImageNetInfo(subset).label_names())}
    unknown = [synset for synset in synsets if synset not in index]
    if unknown:
        more = f' (and {len(unknown) - 1} more folders)' if len(unknown) > 1 else ''
        raise ImageTreeError(f'{tree.root / unknown[0]}: {unknown[0]} is not one of timm\'s {subset} synsets, the '
                             f'classes of a model with {num_classes} classes{more}')
    return {synset: index[synset] for synset in synsets}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith('.')


def _digest(root: Path, folders: list[tuple[str, tuple[Path, ...]]]) -> str:
    lines = (f'{image.relative_to(root).as_posix()}\t{image.stat().st_size}\n'
             for _, images in folders for image in images)
    return hashlib.sha256(''.join(lines).encode()).hexdigest()
