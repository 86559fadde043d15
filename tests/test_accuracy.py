"""Top-1 accuracy on a user's labelled images (``--images``), for real weights: a tiny seeded ViT saved as a
user's checkpoint, and a dozen images each filed under the class the model itself predicts at its own size,
so that its native accuracy is 1.0 by construction. Half the classes are named by index, half by synset."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from harness.accuracy import labelled_images, top1_accuracy
from harness.case.work import RunOptions
from harness.cli import main
from harness.image_tree import INDEX, ImageTreeError, class_indices, read_image_tree
from harness.runtime.items import run_options
from harness.runtime.run_start import StartRefused, describe_start, start_run_folder
from harness.spec.matrix import MatrixError, load_matrix
from tests.test_cli import harness, records

MODEL, NATIVE, TARGET = 'vit_tiny_patch16_224', 32, 48


def matrix_text(checkpoint: Path | str, paths: str = 'create', synthesized_too: bool = False) -> str:
    """The tiny model from ``checkpoint`` (and from a synthesized checkpoint too) at 48x48, along ``paths``."""
    return (f'name: accuracy\nmodels: [{{name: {MODEL}, depth: 1, img_size: {NATIVE}}}]\n'
            f'origins: [{{file: {checkpoint}}}{", timm" if synthesized_too else ""}]\nsizes: [{TARGET}]\n'
            f'paths: [{paths}]\n')


@dataclass(frozen=True)
class Labelled:
    checkpoint: Path
    tree: Path
    labels: dict[Path, int]   # each image's class: the model's own prediction at its native size


def timm_model(checkpoint: Path, size: int) -> torch.nn.Module:
    """The checkpoint built by timm at ``size``, as a user builds it (not through the harness); custom_load off:
    older releases' default tag for the model is an .npz release."""
    return timm.create_model(MODEL, pretrained=True, depth=1, img_size=size, pretrained_cfg_overlay={
        'file': str(checkpoint), 'input_size': (3, NATIVE, NATIVE), 'custom_load': False}).eval()


@torch.no_grad()
def predictions(model: torch.nn.Module, size: int, files: list[Path]) -> list[int]:
    """Top-1 classes of ``files`` preprocessed by timm's eval transform for the model's config at ``size``."""
    config = {**resolve_data_config(model=model), 'input_size': (3, size, size)}
    transform = create_transform(**config)
    batch = torch.stack([transform(Image.open(f).convert('RGB')) for f in files])
    return model(batch).argmax(-1).tolist()


@pytest.fixture(scope='module')
def labelled(tmp_path_factory) -> Labelled:
    from harness.checkpoints.synthesize import seeded_model
    root = tmp_path_factory.mktemp('accuracy')
    checkpoint = root / 'tiny.pth'
    torch.save(seeded_model(MODEL, {'depth': 1, 'img_size': NATIVE}, seed=5).state_dict(), checkpoint)
    drawn = root / 'drawn'
    drawn.mkdir()
    generator = torch.Generator().manual_seed(0)
    files = []
    for i in range(12):   # smooth colour fields, 40x52: timm's transform resizes and crops them
        field = F.interpolate(torch.rand(1, 3, 3, 4, generator=generator), size=(40, 52), mode='bicubic')
        files.append(drawn / f'{i}.png')
        Image.fromarray((field[0].clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()).save(files[-1])
    classes = predictions(timm_model(checkpoint, NATIVE), NATIVE, files)
    synsets = ImageNetInfo().label_names()
    names = {c: str(c) if rank % 2 else synsets[c] for rank, c in enumerate(sorted(set(classes)))}
    assert len(names) >= 4, 'the seeded model should tell the images apart'
    tree, labels = root / 'tree', {}
    for file, c in zip(files, classes):
        labels[tree / names[c] / file.name] = c
        (tree / names[c]).mkdir(parents=True, exist_ok=True)
        shutil.copy(file, tree / names[c] / file.name)
    (tree / 'README.txt').write_text('not an image: ignored')
    return Labelled(checkpoint, tree, labels)


def accuracy_of(model: torch.nn.Module, size: int, labelled: Labelled) -> float:
    files = sorted(labelled.labels)
    return sum(p == labelled.labels[f] for p, f in zip(predictions(model, size, files), files)) / len(files)


def test_synset_folders_are_labelled_with_timms_imagenet_info(labelled, monkeypatch):
    """A wrong synset table (timm's reversed) loses exactly the images filed under synsets."""
    tree, native = read_image_tree(labelled.tree), timm_model(labelled.checkpoint, NATIVE)
    assert top1_accuracy(native, (NATIVE, NATIVE), labelled_images(tree, 1000), torch.device('cpu')) == 1.0
    by_index = sum(len(images) for name, images in tree.folders if INDEX.fullmatch(name))
    assert 0 < by_index < 12
    monkeypatch.setattr(ImageNetInfo, 'label_names', lambda self: self._synsets[::-1])
    wrong = top1_accuracy(native, (NATIVE, NATIVE), labelled_images(tree, 1000), torch.device('cpu'))
    assert wrong == by_index / 12


def test_preprocessing_follows_the_models_own_data_config(labelled):
    """The labels were the model's predictions with its crop_pct (0.9): another crop_pct loses some."""
    images, native = labelled_images(read_image_tree(labelled.tree), 1000), timm_model(labelled.checkpoint, NATIVE)
    assert native.pretrained_cfg['crop_pct'] == 0.9
    native.pretrained_cfg = {**native.pretrained_cfg, 'crop_pct': 0.5}
    assert top1_accuracy(native, (NATIVE, NATIVE), images, torch.device('cpu')) < 1


def tree_of(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        Image.new('RGB', (4, 4)).save(root / name / 'a.png')
    return root


def test_synsets_map_within_the_models_imagenet_subset(tmp_path):
    tree = read_image_tree(tree_of(tmp_path / 'mixed', 'n01440764', 'n15075141', '3'))
    assert class_indices(tree, 1000) == {'n01440764': 0, 'n15075141': 999, '3': 3}
    in21k = ImageNetInfo('imagenet-21k-goog').label_names()
    assert class_indices(tree, 21843) == {'n01440764': in21k.index('n01440764'), 'n15075141':
                                          in21k.index('n15075141'), '3': 3}
    with pytest.raises(ImageTreeError, match=r"n01440764: .*10 classes are none; name the folders by class index"):
        class_indices(tree, 10)
    indices = read_image_tree(tree_of(tmp_path / 'indices', '0', '3'))
    with pytest.raises(ImageTreeError, match=r"/3: class index 3 is beyond the model's 3 classes \(0-2\)"):
        class_indices(indices, 3)
    with pytest.raises(ImageTreeError, match=r"the model has no classifier \(num_classes 0\)"):
        class_indices(indices, 0)


# --- bad trees: one line, exit 2, before any case runs --------------------------------------------------------

def bad_trees(root: Path) -> list[tuple[Path, str]]:
    """(tree, what its one-line error says) for each way a tree's layout can be wrong."""
    (root / 'a-file').write_text('')
    (root / 'empty').mkdir()
    named = root / 'named'
    (named / 'cats').mkdir(parents=True)
    Image.new('RGB', (4, 4)).save(named / 'cats' / 'a.png')
    imageless = root / 'imageless'
    (imageless / '7').mkdir(parents=True)
    (imageless / '7' / 'notes.txt').write_text('')
    loose = root / 'loose'
    loose.mkdir()
    Image.new('RGB', (4, 4)).save(loose / 'a.jpg')
    return [(root / 'nowhere', f'{root / "nowhere"} does not exist; expected a folder of class folders'),
            (root / 'a-file', f'{root / "a-file"} is a file'),
            (root / 'empty', f'{root / "empty"} holds no class folders'),
            (named, f"{named / 'cats'}: folder name 'cats' is neither a class index (0, 207) nor an ImageNet synset"),
            (imageless, f'{imageless / "7"} holds no images (.png, .jpg, .jpeg)'),
            (loose, f'{loose / "a.jpg"} is an image outside a class folder')]


def test_bad_trees_are_one_line_errors_before_timm_is_imported(write_matrix, tmp_path):
    matrix = write_matrix(matrix_text('tiny.pth'))
    cases = bad_trees(tmp_path)
    script = ('import json, sys; from harness.cli import main\n'
              'for argv in json.loads(sys.argv[1]):\n'
              '    assert main(argv) == 2\n'
              'print(sorted({"timm", "torch"} & set(sys.modules)))')
    argvs = [['run', str(matrix), '--images', str(tree), '--out', str(tmp_path / 'out')] for tree, _ in cases]
    done = subprocess.run([sys.executable, '-c', script, json.dumps(argvs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(cases)
    for line, (_, expected) in zip(lines, cases):
        assert line.startswith(f'error: --images: {expected}'), line
    with pytest.raises(MatrixError, match=r"images: .*/named/cats: folder name 'cats' is neither"):
        load_matrix(write_matrix(matrix_text('tiny.pth') + 'images: named\n'))


def start_run(matrix_path: Path, images: Path | None, out: Path, resume: bool = False) -> None:
    """What `harness run --images IMAGES --no-timing` settles before its first case (harness.runtime.run_start),
    here."""
    matrix = load_matrix(matrix_path, known_models=timm.list_models())
    options = RunOptions(device=torch.device('cpu'), cache_dir=out / 'cache', out_dir=out,
                         timing=matrix.timing.for_run('cpu', enabled=False))
    start = describe_start(matrix, options, images=images and str(images), argv=[], shard=None)
    start_run_folder(out, start, resume=resume)


def test_labels_that_fit_no_model_or_unreadable_images_stop_the_start(labelled, write_matrix, tmp_path):
    matrix = write_matrix(matrix_text(labelled.checkpoint))
    checkpoint = 'vit_tiny_patch16_224-file=tiny'
    for name, file, expected in (
            ('n99999999', 'a.png', "n99999999 is not one of timm's imagenet-1k synsets, the classes of a model with "
                                   "1000 classes"),
            ('1000', 'a.png', "class index 1000 is beyond the model's 1000 classes (0-999)"),
            ('5', 'broken.jpg', 'cannot be read as an image')):
        tree = tmp_path / f'tree-{name}'
        shutil.copytree(labelled.tree, tree)
        (tree / name).mkdir(exist_ok=True)
        if file == 'broken.jpg':
            (tree / name / file).write_bytes(b'not a jpeg')
        else:
            Image.new('RGB', (4, 4)).save(tree / name / file)
        with pytest.raises(StartRefused) as refused:
            start_run(matrix, tree, tmp_path / 'out')
        message = str(refused.value)
        assert message.startswith('--images: ') and expected in message and '\n' not in message, message
        if file != 'broken.jpg':
            assert message.startswith(f'--images: {checkpoint}: {tree / name}: ')
    assert not (tmp_path / 'out' / 'run.json').exists()


def test_images_for_synthesized_weights_only_are_warned_about(labelled, write_matrix, tmp_path, caplog):
    text = matrix_text(labelled.checkpoint).replace(f'{{file: {labelled.checkpoint}}}', 'timm')
    (tmp_path / 'out').mkdir()
    start_run(write_matrix(text), labelled.tree, tmp_path / 'out')
    assert '--images: no case has real weights (hub or file), so none records accuracy' in caplog.text


def test_resume_refuses_another_image_set(labelled, write_matrix, tmp_path):
    matrix, tree, out = write_matrix(matrix_text(labelled.checkpoint)), tmp_path / 'tree', tmp_path / 'out'
    shutil.copytree(labelled.tree, tree)
    out.mkdir()
    start_run(matrix, tree, out)
    run = json.loads((out / 'run.json').read_text())
    assert run['images'] == str(tree) and run['images_sha256'] == read_image_tree(tree).sha256
    start_run(matrix, tree, out, resume=True)   # the same images: resumes
    image = next(tree.rglob('*.png'))
    image.write_bytes(image.read_bytes() + b'\0')   # one image changed: another image set
    with pytest.raises(StartRefused, match=r'cannot --resume a different run: labelled images \(sha256 of their '
                                           r'paths and sizes\) was [0-9a-f]{64}, now [0-9a-f]{64}'):
        start_run(matrix, tree, out, resume=True)
    with pytest.raises(StartRefused, match=r'labelled images .* was [0-9a-f]{64}, now unrecorded'):
        start_run(matrix, None, out, resume=True)


def test_the_command_lines_images_win_over_the_matrixs(labelled, write_matrix, known_models, tmp_path):
    shutil.copytree(labelled.tree, tmp_path / 'val')
    matrix = load_matrix(write_matrix(matrix_text(labelled.checkpoint) + 'images: val\n'), known_models)
    assert matrix.images == str(tmp_path / 'val')

    def options(flag: str | None) -> RunOptions:
        config = SimpleNamespace(getoption=lambda name: {'--harness-images': flag, '--harness-out': str(tmp_path),
                                                         '--harness-device': 'cpu'}.get(name),
                                 pluginmanager=SimpleNamespace(getplugin=lambda name: None))
        return run_options(config, matrix)
    assert options(None).images == tmp_path / 'val'
    assert options(str(labelled.tree)).images == labelled.tree


def test_accuracy_at_native_and_target_size_for_real_weights_only(labelled, write_matrix, tmp_path, cache_dir,
                                                                   capsys):
    """`--images` through the command line, its workers and the report: the native accuracy is 1.0 by
    construction, each target's is what timm's own transforms and models give, synthesized weights get none."""
    with pytest.raises(SystemExit):
        main(['run', '--help'])
    assert '--images DIR' in capsys.readouterr().out
    out = tmp_path / 'out'
    done = harness('run', write_matrix(matrix_text(labelled.checkpoint, 'create, set_input_size', True)),
                   '--images', labelled.tree, '--out', out, '--cache', cache_dir, '--no-timing')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {(r['origin'], r['path']): r for r in records(out)}
    native = timm_model(labelled.checkpoint, NATIVE)
    resized = copy.deepcopy(native)
    resized.set_input_size(img_size=TARGET)
    expected = {'create': accuracy_of(timm_model(labelled.checkpoint, TARGET), TARGET, labelled),
                'set_input_size': accuracy_of(resized, TARGET, labelled)}
    for path, want in expected.items():
        result = results['file=tiny', path]
        assert result['accuracy_top1_native'] == 1.0 and result['accuracy_images'] == 12
        assert 0 <= result['accuracy_top1'] < 1 and result['accuracy_top1'] == want   # resizing moved some
        synthesized = results['timm', path]   # accuracy means nothing for synthesized weights: none recorded
        assert [synthesized[f] for f in ('accuracy_top1_native', 'accuracy_top1', 'accuracy_images')] == [None] * 3
        assert synthesized['status'] == result['status'] == 'passed' and synthesized['drift_cosine'] is not None
    assert json.loads((out / 'run.json').read_text())['images_sha256'] == read_image_tree(labelled.tree).sha256

    lines = (out / 'report.md').read_text().split('## Drift and fidelity')[1].splitlines()
    header = ' '.join(next(line for line in lines if line.startswith('| model ')).split())
    assert '| drift top-1 agreement (recorded) | top-1 native | top-1 | labelled images |' in header
    create = ' '.join(next(line for line in lines if 'file=tiny' in line and '| create ' in line).split())
    assert f'| 1.0000 | {expected["create"]:.4f} | 12 |' in create
    synthesized = ' '.join(next(line for line in lines if '| timm ' in line and '| create ' in line).split())
    assert '| — | — | — |' in synthesized
