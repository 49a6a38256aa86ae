"""`rbmnet_convert supervisely`: the Supervisely JSON download of the public teeth dataset.

Layout (../shared/formats/supervisely_teeth.md): dataset folders anywhere below the project, each
with img/<file> and ann/<file>.json; an optional meta.json lists the class titles.

Rasterisation rules:
- polygons: `points.exterior` filled with skimage.draw.polygon, boundary pixels included (as
  Supervisely's own PNG export does); each `points.interior` ring is a hole cut out of that object
  only, so whatever an earlier object drew there stays;
- bitmaps: base64 of a zlib-compressed PNG whose nonzero (or alpha) pixels are the object, its
  top-left corner at `origin` [x, y]; parts outside the image are clipped;
- objects are drawn in file order, a later object over an earlier one where they overlap;
- other geometry types (points, lines, rectangles...) are skipped with a note;
- polygons with fewer than three points or with NaN / infinite coordinates enclose no area: they
  are skipped with a note naming the annotation file and the object;
- an image whose annotation has no drawable object goes to imagesUnlabeled (it is not an image of
  "no teeth", just an unannotated one); so does an image without an annotation file.

Class titles "1".."32" are Universal tooth numbers and are kept as label values (tooth_numbering
"universal"); `to_fdi` converts them to FDI numbers. Other titles become classes 1..N in the order of
meta.json (or sorted, without meta.json), with tooth_numbering null.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import polygon as fill_polygon

from rbmnet.conversion.writer import (ConversionResult, finish_dataset, refuse_existing,
                                      staged_dataset_dir, write_case)
from rbmnet.data.dataset_json import tooth_labels
from rbmnet.errors import RbmnetError
from rbmnet.parallel import map_cases
from rbmnet.io.images import is_image_file, read_image
from rbmnet.paths import raw_root

DRAWABLE_GEOMETRIES = ("polygon", "bitmap")
NOTES_SHOWN = 5  # polygons without area listed one by one; the rest are counted


@dataclass(frozen=True)
class SuperviselyItem:
    case: str
    image_path: Path
    annotation_path: Path | None


def universal_to_fdi(number: int) -> int:
    """Universal 1..8 -> 18..11, 9..16 -> 21..28, 17..24 -> 38..31, 25..32 -> 41..48."""
    if not 1 <= number <= 32:
        raise ValueError(f"not a Universal tooth number: {number}")
    if number <= 8:
        return 19 - number
    if number <= 16:
        return number + 12
    if number <= 24:
        return 55 - number
    return number + 16


def find_items(project_dir: Path) -> list[SuperviselyItem]:
    """Every image of every dataset folder (a folder holding img/ and ann/) below `project_dir`."""
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise RbmnetError(f"{project_dir}: not a folder")
    dataset_dirs = sorted(ann.parent for ann in project_dir.rglob("ann") if ann.is_dir())
    if not dataset_dirs:
        raise RbmnetError(f"{project_dir}: no ann/ folder found; expected a Supervisely project "
                          f"(<dataset>/img/<file> with <dataset>/ann/<file>.json)")
    prefix_cases = len(dataset_dirs) > 1  # dataset folders may reuse file names
    items = []
    for dataset_dir in dataset_dirs:
        images = {p.name: p for p in sorted((dataset_dir / "img").glob("*")) if is_image_file(p)}
        for annotation_path in sorted((dataset_dir / "ann").glob("*.json")):
            image_name = annotation_path.name[: -len(".json")]
            if image_name not in images:
                raise RbmnetError(f"{annotation_path}: annotation without image "
                                  f"(no {image_name} in {dataset_dir / 'img'})")
        for image_name, image_path in images.items():
            annotation_path = dataset_dir / "ann" / f"{image_name}.json"
            stem = Path(image_name).stem
            case = f"{dataset_dir.name}_{stem}" if prefix_cases else stem
            annotation = annotation_path if annotation_path.is_file() else None
            items.append(SuperviselyItem(case, image_path, annotation))
    seen: dict[str, Path] = {}
    for item in items:
        if item.case in seen:
            raise RbmnetError(f"{item.image_path}: case name '{item.case}' is used twice "
                              f"(also {seen[item.case]})")
        seen[item.case] = item.image_path
    return items


def read_json_object(path: Path) -> dict:
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RbmnetError(f"{path}: unreadable JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(content, dict):
        raise RbmnetError(f"{path}: expected a JSON object")
    return content


def read_annotation(path: Path) -> dict:
    annotation = read_json_object(path)
    if not isinstance(annotation.get("objects", []), list):
        raise RbmnetError(f"{path}: not a Supervisely annotation ('objects' must be a list)")
    return annotation


def drawable_objects(annotation: dict) -> list[dict]:
    return [o for o in annotation.get("objects", [])
            if isinstance(o, dict) and o.get("geometryType") in DRAWABLE_GEOMETRIES and not degenerate_polygon(o)]


def degenerate_polygon(obj: dict) -> str | None:
    """Why a polygon object encloses no area (fewer than 3 points, NaN coordinates), or None.

    Unparseable points are not judged here: drawing them raises the 'malformed' error.
    """
    if obj.get("geometryType") != "polygon":
        return None
    try:
        ring = np.asarray(obj["points"]["exterior"], dtype=float).reshape(-1, 2)
    except (KeyError, TypeError, ValueError):
        return None
    if len(ring) < 3:
        return f"fewer than 3 points ({len(ring)})"
    if not np.isfinite(ring).all():
        return "NaN or infinite coordinates"
    return None


def describe_object(obj: dict, index: int) -> str:
    """How a note names an object: its position in the file, class title and Supervisely id."""
    ident = f", id {obj['id']}" if obj.get("id") is not None else ""
    return f"object {index} (class '{obj.get('classTitle')}'{ident})"


def read_meta_titles(project_dir: Path) -> list[str] | None:
    """Class titles from meta.json, or None when there is none (meta.json is optional)."""
    path = next(iter(sorted(Path(project_dir).rglob("meta.json"))), None)
    if path is None:
        return None
    meta = read_json_object(path)
    return [str(c["title"]) for c in meta.get("classes", []) if isinstance(c, dict) and "title" in c] or None


def class_values(titles: list[str], to_fdi: bool) -> tuple[dict[str, int], str | None]:
    """Label value of each class title, and the tooth numbering they follow."""
    numeric = all(t.strip().isdigit() and 1 <= int(t) <= 32 for t in titles)
    if numeric:
        if to_fdi:
            return {t: universal_to_fdi(int(t)) for t in titles}, "FDI"
        return {t: int(t) for t in titles}, "universal"
    if to_fdi:
        raise RbmnetError(f"--to-fdi needs class titles '1'..'32' (Universal numbers); found {titles[:5]}")
    if len(titles) > 255:
        raise RbmnetError(f"{len(titles)} classes do not fit a uint8 label map")
    return {t: i for i, t in enumerate(titles, start=1)}, None


def polygon_mask(exterior, interiors, shape: tuple[int, int]) -> np.ndarray:
    """Filled exterior ring minus its holes; points are [x, y] = [column, row]."""
    mask = np.zeros(shape, dtype=bool)
    ring = np.asarray(exterior, dtype=float).reshape(-1, 2)
    rows, cols = fill_polygon(ring[:, 1], ring[:, 0], shape)
    mask[rows, cols] = True
    for hole in interiors or []:
        hole = np.asarray(hole, dtype=float).reshape(-1, 2)
        rows, cols = fill_polygon(hole[:, 1], hole[:, 0], shape)
        mask[rows, cols] = False
    return mask


def decode_bitmap(data: str) -> np.ndarray:
    """Supervisely bitmap string -> boolean mask of the object's bounding box."""
    with Image.open(io.BytesIO(zlib.decompress(base64.b64decode(data)))) as img:
        img.load()
        if "A" in img.getbands():
            return np.asarray(img.getchannel("A")) > 0
        array = np.asarray(img)
    return array.any(axis=-1) if array.ndim == 3 else array != 0


def bitmap_mask(bitmap: dict, shape: tuple[int, int]) -> np.ndarray:
    """The decoded bitmap placed with its top-left corner at origin [x, y], clipped to `shape`."""
    small = decode_bitmap(bitmap["data"])
    x, y = (int(round(v)) for v in bitmap["origin"])
    mask = np.zeros(shape, dtype=bool)
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + small.shape[0], shape[0]), min(x + small.shape[1], shape[1])
    if bottom > top and right > left:
        mask[top:bottom, left:right] = small[top - y:bottom - y, left - x:right - x]
    return mask


def rasterise_annotation(annotation: dict, values: dict[str, int], shape: tuple[int, int],
                         where: str = "annotation") -> np.ndarray:
    """uint8 label map of one annotation; later objects are drawn over earlier ones."""
    label = np.zeros(shape, dtype=np.uint8)
    for index, obj in enumerate(drawable_objects(annotation)):
        title = str(obj.get("classTitle"))
        if title not in values:
            raise RbmnetError(f"{where}: object {index} has class '{title}', not a known class")
        try:
            if obj["geometryType"] == "polygon":
                mask = polygon_mask(obj["points"]["exterior"], obj["points"].get("interior"), shape)
            else:
                mask = bitmap_mask(obj["bitmap"], shape)
        except (KeyError, TypeError, ValueError, OSError, zlib.error, Image.DecompressionBombError) as exc:
            raise RbmnetError(f"{where}: object {index} ({obj['geometryType']}) is malformed "
                              f"({exc.__class__.__name__}: {exc})") from None
        label[mask] = values[title]
    return label


def convert_item(item: SuperviselyItem, dataset_dir: Path, values: dict[str, int]) -> str:
    """Write one image (and its label map); returns the split it went to. Runs in a worker."""
    image = read_image(item.image_path)
    annotation = read_annotation(item.annotation_path) if item.annotation_path else {}
    if not drawable_objects(annotation):
        write_case(dataset_dir, "unlabeled", item.case, image)
        return "unlabeled"
    size = annotation.get("size", {})
    expected = (size.get("height"), size.get("width"))
    if None not in expected and tuple(expected) != image.shape:
        raise RbmnetError(f"{item.annotation_path}: size {expected[1]}x{expected[0]} differs from image "
                          f"{item.image_path.name} size {image.shape[1]}x{image.shape[0]}")
    label = rasterise_annotation(annotation, values, image.shape, where=str(item.annotation_path))
    write_case(dataset_dir, "train", item.case, image, label)
    return "train"


def convert_supervisely(project_dir: Path, name: str, to_fdi: bool = False, num_processes: int = 1,
                        overwrite: bool = False, progress: bool = True) -> ConversionResult:
    refuse_existing(name, overwrite)
    items = find_items(project_dir)
    titles, skipped, degenerate = _survey_annotations(items, read_meta_titles(project_dir))
    values, numbering = class_values(titles, to_fdi) if titles else ({}, None)
    with staged_dataset_dir(name, overwrite) as dataset_dir:
        splits = list(map_cases(functools.partial(convert_item, dataset_dir=dataset_dir, values=values), items,
                                num_processes, f"converting {name}", progress))
        if "train" not in splits:
            raise RbmnetError(f"{project_dir}: no annotation holds a polygon or bitmap object")
        labels = tooth_labels(numbering) if numbering else {"background": 0, **values}
        content = finish_dataset(dataset_dir, name, labels, numbering,
                                 description=f"converted from the Supervisely project {project_dir}",
                                 source=str(Path(project_dir).absolute()))
    notes = degenerate[:NOTES_SHOWN]
    if len(degenerate) > NOTES_SHOWN:
        notes.append(f"{len(degenerate) - NOTES_SHOWN} more polygon(s) without area were skipped")
    unlabeled = [item for item, split in zip(items, splits) if split == "unlabeled"]
    if unlabeled:
        shown = ", ".join(item.image_path.name for item in unlabeled[:5])
        shown += " ..." if len(unlabeled) > 5 else ""
        notes.append(f"{len(unlabeled)} image(s) without annotated objects went to imagesUnlabeled: {shown}")
    if skipped:
        notes.append(f"{skipped} object(s) of other geometry types than polygon/bitmap were skipped")
    if numbering:
        origin = " (converted from Universal)" if to_fdi else ""
        notes.append(f"label values are {numbering} tooth numbers{origin}")
    else:
        notes.append("class titles are not tooth numbers: labels are classes 1..N (see dataset.json)")
    return ConversionResult(raw_root() / name, content, notes)


def _survey_annotations(items: list[SuperviselyItem],
                        meta_titles: list[str] | None) -> tuple[list[str], int, list[str]]:
    """Class titles to map (meta.json's, else those used), the count of objects of other geometry
    types, and one note per polygon without area (the workers that draw skip them silently)."""
    used: set[str] = set()
    skipped, degenerate = 0, []
    for item in items:
        if item.annotation_path is None:
            continue
        annotation = read_annotation(item.annotation_path)
        for index, obj in enumerate(annotation.get("objects", [])):
            problem = degenerate_polygon(obj) if isinstance(obj, dict) else None
            if problem:
                degenerate.append(f"{item.annotation_path}: {describe_object(obj, index)} is a polygon with "
                                  f"{problem}; skipped")
            elif not (isinstance(obj, dict) and obj.get("geometryType") in DRAWABLE_GEOMETRIES):
                skipped += 1
        used |= {str(o.get("classTitle")) for o in drawable_objects(annotation)}
    if meta_titles is None:
        titles = sorted(used, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t))
        return titles, skipped, degenerate
    unknown = sorted(used - set(meta_titles))
    if unknown:
        raise RbmnetError(f"class title(s) {unknown} used in annotations are not in meta.json")
    return meta_titles, skipped, degenerate
