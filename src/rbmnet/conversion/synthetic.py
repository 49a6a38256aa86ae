"""`rbmnet_convert synthetic`: panoramic-like radiographs with per-tooth label maps (FDI numbers).

The embedded default dataset: it lets a new user run every stage with no download. An image is
built as an X-ray is: attenuating structures add up to a "density" map, which exposure turns into
brightness (1 - exp(-k * density)). So overlaps (tooth over bone, neighbouring teeth) come out
brighter, roots are hardly brighter than the bone around them, and restorations saturate. Each
image has its own exposure, contrast, blur and noise, so intensity alone does not separate teeth.

All geometry is in fractions of the image height/width, so any size works; every random choice
comes from the `rng` passed in, so the same seed gives byte-identical files.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from rbmnet.conversion.writer import (ConversionResult, finish_dataset, staged_dataset_dir,
                                      write_case)
from rbmnet.data.dataset_json import tooth_labels
from rbmnet.errors import RbmnetError
from rbmnet.parallel import map_cases
from rbmnet.paths import raw_root

SOURCE = "rbmnet.conversion.synthetic"  # recorded in dataset.json; the demo checks it before overwriting

MIN_SIZE = 32


@dataclass(frozen=True)
class ToothShape:
    width: float  # mesiodistal width, relative (the arch is scaled to fit)
    crown: float  # crown height, fraction of image height
    root: float  # root length, fraction of image height
    roots: int  # roots visible on a panoramic
    cusps: int  # cusps along the occlusal edge (0 = incisal edge)


# Position 1 (central incisor) .. 8 (third molar). A panoramic narrows the front teeth.
UPPER_TEETH = [ToothShape(1.00, 0.12, 0.17, 1, 0), ToothShape(0.80, 0.11, 0.16, 1, 0),
               ToothShape(0.90, 0.12, 0.21, 1, 1), ToothShape(0.92, 0.11, 0.16, 1, 2),
               ToothShape(0.92, 0.11, 0.16, 1, 2), ToothShape(1.35, 0.10, 0.14, 2, 3),
               ToothShape(1.25, 0.095, 0.13, 2, 3), ToothShape(1.10, 0.09, 0.12, 2, 2)]
LOWER_TEETH = [ToothShape(0.70, 0.11, 0.16, 1, 0), ToothShape(0.74, 0.11, 0.17, 1, 0),
               ToothShape(0.88, 0.12, 0.20, 1, 1), ToothShape(0.92, 0.11, 0.18, 1, 2),
               ToothShape(0.94, 0.11, 0.18, 1, 2), ToothShape(1.45, 0.10, 0.16, 2, 3),
               ToothShape(1.40, 0.095, 0.15, 2, 3), ToothShape(1.25, 0.09, 0.13, 2, 2)]
# Densities (arbitrary units, before exposure) of the materials.
DENTIN, ROOT_FACTOR, ENAMEL_EXTRA, PULP_DEFICIT, METAL = 0.9, 0.7, 0.9, 0.4, 5.0


@dataclass
class Canvas:
    """Coordinate grids and the maps the structures draw into."""
    height: int
    width: int
    rows: np.ndarray  # (H, 1) pixel row coordinates
    cols: np.ndarray  # (1, W)
    density: np.ndarray
    label: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> "Canvas":
        return cls(height, width, np.arange(height, dtype=np.float32)[:, None],
                   np.arange(width, dtype=np.float32)[None, :],
                   np.zeros((height, width), np.float32), np.zeros((height, width), np.uint8))


@dataclass(frozen=True)
class Arch:
    """Where the teeth sit: the occlusal curve y(x) = y0 - smile * ((x - xc) / half_span)^2."""
    center_x: float
    y0: float
    smile: float
    half_span: float
    opening: float  # vertical gap between upper and lower teeth (negative: overbite)

    def occlusal_y(self, x):
        return self.y0 - self.smile * ((x - self.center_x) / self.half_span) ** 2

    def occlusal_slope(self, x):
        return -2.0 * self.smile * (x - self.center_x) / self.half_span ** 2


def _soft(signed_distance, softness):
    """~1 inside (distance > 0), ~0 outside, with a smooth edge `softness` wide (same units)."""
    return 0.5 * (1.0 + np.tanh(signed_distance / max(softness, 1e-3)))


def _textured_noise(rng, shape, sigma):
    noise = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=3.0)
    return noise / (noise.std() + 1e-6)


def _random_arch(rng, height, width) -> Arch:
    return Arch(center_x=width * rng.uniform(0.47, 0.53), y0=height * rng.uniform(0.50, 0.56),
                smile=height * rng.uniform(0.04, 0.09), half_span=width * rng.uniform(0.35, 0.39),
                opening=height * rng.uniform(-0.01, 0.035))


def _line(y, curve_y, thickness):
    """A thin band along the curve y = curve_y(x), 1 on the curve."""
    return np.exp(-((y - curve_y) / thickness) ** 2)


def _wobble(rng, X, amplitude):
    """A smooth random function of X, so anatomical outlines are not perfect geometric curves."""
    frequencies = rng.uniform(1.0, 4.0, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    return amplitude * sum(np.sin(f * np.pi * X + p) for f, p in zip(frequencies, phases)) / 3


def _anatomy_density(rows, cols, height, width, arch: Arch, rng):
    """Smooth density of soft tissue, jaws, sinuses, airway, palate and spine on the grid rows x cols.

    Returns (density, bone). Geometry uses X = -1..1 across the image (0 at the arch centre) and
    Y = 0..1 down it; panoramics are left-right symmetric, so most shapes are functions of |X|.
    """
    X = (cols - arch.center_x) / (width * 0.5)
    Y = rows / height
    ax = np.abs(X)
    occlusal = arch.occlusal_y(cols) / height
    # soft tissue: cheeks, lips and tongue, densest in the middle; thinner at the sides and below the jaw
    density = 0.4 + 0.35 * np.exp(-(X / 0.75) ** 2) * np.exp(-((Y - 0.55) / 0.35) ** 2) + 0.2 * (1 - Y)
    density += 0.3 * _line(Y, occlusal, 0.08) * _soft(0.75 - ax, 0.05)  # lips and cheeks over the crowns
    # mandible: a U whose lower border rises to the gonial angles; the rami rise from there to the condyles
    angle = rng.uniform(0.76, 0.84)
    border = (rng.uniform(0.88, 0.95) - rng.uniform(0.18, 0.26) * np.clip(ax / angle, 0, 1.2) ** 2.5
              + _wobble(rng, X, 0.01))
    lower_crest = occlusal + arch.opening / 2 / height + rng.uniform(0.09, 0.12) + _wobble(rng, X, 0.01)
    body = _soft(Y - lower_crest, 0.01) * _soft(border - Y, 0.006) * _soft(angle - ax, 0.03)
    # ramus: its front edge slants forward towards the coronoid process, its back edge runs up to the
    # condyle; between the two processes its top dips into the sigmoid notch. Thinner than the body.
    ramus_front = angle - rng.uniform(0.17, 0.21) + 0.08 * np.clip(0.5 - Y, 0, 1)
    ramus_back = angle + 0.02 + 0.1 * np.clip(0.45 - Y, 0, 1) ** 1.5
    across = np.clip((ax - ramus_front) / (ramus_back - ramus_front), 0, 1)
    top = rng.uniform(0.1, 0.16) + rng.uniform(0.1, 0.16) * np.sin(np.pi * across) ** 2
    ramus = 0.75 * (_soft(ax - ramus_front, 0.02) * _soft(ramus_back - ax, 0.01) * _soft(Y - top, 0.02)
                    * _soft(border + 0.005 - Y, 0.006))
    mandible = np.maximum(body, ramus)
    # cortical bone: bright rims along the lower border and the back of the rami
    cortex = mandible * (_soft(Y - (border - 0.03), 0.006) + 0.5 * _soft(ax - (ramus_back - 0.02), 0.006))
    # pharyngeal airway: a dark band crossing each ramus on its way down
    pharynx = (0.3 * _line(ax, angle - 0.1 + 0.15 * (Y - 0.5), 0.025)
               * _soft(Y - 0.3, 0.05) * _soft(0.8 - Y, 0.05))
    # maxilla: from the alveolar crest above the upper teeth up into the midface, fading out sideways
    upper_crest = occlusal - arch.opening / 2 / height - rng.uniform(0.09, 0.12) + _wobble(rng, X, 0.01)
    maxilla = _soft(upper_crest - Y, 0.01) * np.exp(-(X / 0.7) ** 4)
    bone = rng.uniform(0.9, 1.2) * np.maximum(0.85 * maxilla, mandible)
    # mandibular canal: a dark tube through the body, from the ramus to below the premolars
    canal_y = border - rng.uniform(0.08, 0.11) + 0.05 * (ax - 0.5)
    canal = 0.2 * _line(Y, canal_y, 0.01) * _soft(ax - 0.3, 0.05) * body
    # maxillary sinuses (air: darker) with a bright curved floor above the molar roots
    floor_y = upper_crest - rng.uniform(0.05, 0.09)
    sinus = np.zeros_like(density)
    floor = np.zeros_like(density)
    for side in (-1, 1):
        cx, rx = side * rng.uniform(0.3, 0.4), rng.uniform(0.18, 0.24)
        lateral = np.clip(1 - ((X - cx) / rx) ** 2, 0, 1)
        bowl = floor_y - 0.08 + 0.08 * np.sqrt(lateral)
        roof = bowl - 0.2 * np.sqrt(lateral)
        sinus += _soft(bowl - Y, 0.015) * _soft(Y - roof, 0.04) * np.sqrt(lateral)
        floor += _line(Y, bowl, 0.006) * np.sqrt(lateral)
    # hard palate: a bright band; beneath it the air between palate and tongue, a dark band
    palate_y = upper_crest - rng.uniform(0.06, 0.1) + 0.12 * X ** 2
    palate = 0.5 * _line(Y, palate_y, 0.012) * _soft(0.55 - ax, 0.06)
    airway_y = palate_y + rng.uniform(0.03, 0.06)
    airway = rng.uniform(0.1, 0.3) * _line(Y, airway_y, 0.02) * _soft(0.5 - ax, 0.08)
    # nasal cavity (dark) and its septum (bright); zygomatic arches and orbit floors (bright curves)
    nasal = 0.25 * _soft(0.12 - ax, 0.03) * _soft(palate_y - 0.03 - Y, 0.03) * (1 - _line(X, 0, 0.02))
    zygoma = (0.35 * _line(Y, rng.uniform(0.2, 0.26) - 0.2 * (ax - 0.45) + 0.8 * (ax - 0.7) ** 2, 0.01)
              * _soft(ax - 0.45, 0.04) * _soft(0.9 - ax, 0.03))
    orbit_y = rng.uniform(0.06, 0.1) + 0.5 * (ax - 0.35) ** 2
    orbits = 0.25 * _line(Y, orbit_y, 0.01) * _soft(0.65 - ax, 0.05)
    # the cervical spine: blurred bright columns at both edges and a faint ghost in the middle
    spine = 0.45 * _soft(ax - rng.uniform(0.92, 0.98), 0.02) * _soft(Y - 0.25, 0.05)
    spine += rng.uniform(0.05, 0.2) * _soft(0.08 - ax, 0.03) * _soft(Y - 0.65, 0.04)
    density = (density + bone + 0.7 * cortex + 0.3 * floor + palate + zygoma + orbits + spine
               - canal - 0.2 * sinus - nasal - airway - pharynx)
    return density, bone


def _upsample2(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Repeat each coarse pixel 2x2 and crop to height x width (the final blur hides the blocks)."""
    return np.repeat(np.repeat(array, 2, axis=0), 2, axis=1)[:height, :width]


def _draw_anatomy(canvas: Canvas, arch: Arch, rng) -> None:
    """Smooth anatomy on a half-resolution grid (4x cheaper) plus full-resolution trabecular texture."""
    h, w = canvas.height, canvas.width
    coarse_rows = np.arange(0, h, 2, dtype=np.float32)[:, None] + 0.5  # centres of 2x2 blocks
    coarse_cols = np.arange(0, w, 2, dtype=np.float32)[None, :] + 0.5
    density, bone = _anatomy_density(coarse_rows, coarse_cols, h, w, arch, rng)
    # trabecular bone: fine blobs on a coarser mesh, only where there is bone
    soft = max(h / 256.0, 0.5)
    coarse_texture = 0.6 * _textured_noise(rng, density.shape, 1.25 * soft)
    trabecular = _textured_noise(rng, (h, w), 1.1 * soft) + _upsample2(coarse_texture, h, w)
    canvas.density += _upsample2(density, h, w) + 0.16 * _upsample2(bone, h, w) * np.tanh(trabecular)


def _tooth_masks(u, v, shape: ToothShape, half_width, crown, length, bend, cusp_depth):
    """Tooth geometry in tooth coordinates (u across, v from the occlusal edge to the apex).

    Returns: inside mask, normalised lateral distance r (0 centre .. 1 outline), crown mask,
    pulp mask, and the occlusal edge height at each u.
    """
    t_crown = np.clip(v / crown, 0, 1)
    # crown outline: widest at mid-crown, narrower at the occlusal edge and at the neck
    crown_profile = np.where(t_crown < 0.5, 1 - 0.22 * (1 - t_crown / 0.5) ** 2,
                             1 - 0.2 * ((t_crown - 0.5) / 0.5) ** 2)
    t_root = np.clip((v - crown) / (length - crown), 0, 1)
    center = bend * t_root ** 2 * half_width
    if shape.roots == 1:
        root_hw = 0.8 * half_width * (1 - t_root ** 1.6) ** 0.6
        r_root = np.abs(u - center) / np.maximum(root_hw, 1e-3)
    else:
        # a trunk that splits into two diverging roots
        spread = 0.42 * half_width * np.clip((t_root - 0.15) / 0.4, 0, 1) ** 0.7
        root_hw = np.where(t_root < 0.2, 0.8 * half_width, 0.42 * half_width * (1 - t_root ** 1.6) ** 0.6)
        nearest_root = np.minimum(np.abs(u - center - spread), np.abs(u - center + spread))
        r_root = nearest_root / np.maximum(root_hw, 1e-3)
        r_root = np.where(t_root < 0.2, np.abs(u - center) / (0.8 * half_width), r_root)
    r_crown = np.abs(u) / (half_width * crown_profile)
    # occlusal edge: cusps on premolars and molars, rounded corners on incisors
    if shape.cusps:
        edge = cusp_depth * crown * (0.5 - 0.5 * np.cos(2 * np.pi * shape.cusps * (u / (2 * half_width) + 0.5)))
    else:
        edge = 0.18 * crown * np.clip(np.abs(u) / half_width, 0, 1) ** 4
    in_crown = (v >= edge) & (v <= crown) & (r_crown <= 1)
    in_root = (v > crown) & (v <= length) & (r_root <= 1)
    r = np.where(v <= crown, r_crown, r_root)
    # pulp: a wide chamber in the crown, narrow canals down the roots
    pulp = ((v > 0.4 * crown) & (v < crown + 0.95 * (length - crown))
            & np.where(v <= crown + 0.1 * length, r < 0.28, r < 0.12))
    return in_crown | in_root, r, in_crown, pulp, edge


def _draw_tooth(canvas: Canvas, rng, fdi: int, shape: ToothShape, base_x, base_y, axis, half_width,
                restoration: str | None) -> None:
    """Draw one tooth whose occlusal centre is at (base_x, base_y) and whose root points along `axis`."""
    h = canvas.height
    crown = shape.crown * h * rng.uniform(0.9, 1.1)
    length = (shape.crown + shape.root) * h * rng.uniform(0.9, 1.1)
    ax, ay = float(axis[0]), float(axis[1])
    # bounding box of the tooth: from its occlusal centre to its apex, widened by its width
    margin = 1.5 * half_width + 2
    ys, xs = (base_y, base_y + ay * length), (base_x, base_x + ax * length)
    top, bottom = int(max(min(ys) - margin, 0)), int(min(max(ys) + margin, canvas.height - 1)) + 1
    left, right = int(max(min(xs) - margin, 0)), int(min(max(xs) + margin, canvas.width - 1)) + 1
    if bottom <= top or right <= left:
        return
    y = canvas.rows[top:bottom] - np.float32(base_y)
    x = canvas.cols[:, left:right] - np.float32(base_x)
    v = x * ax + y * ay  # along the tooth, crown edge 0 -> apex `length`
    u = x * ay - y * ax  # across the tooth
    inside, r, in_crown, pulp, edge = _tooth_masks(u, v, shape, half_width, crown, length,
                                                   bend=rng.uniform(-0.4, 0.4), cusp_depth=rng.uniform(0.06, 0.12))
    thickness = np.sqrt(np.clip(1 - r ** 2, 0, 1))  # a rounded body: dense centre, thin edges
    enamel = in_crown & ((r > 0.8 - 0.1 * v / crown) | (v - edge < 0.22 * crown * (1 - np.clip(r, 0, 1) ** 2)))
    enamel &= v < 0.92 * crown
    # roots are thinner than crowns in projection, so hardly denser than the bone around them
    body = DENTIN * (0.35 + 0.65 * thickness) * np.where(v <= crown, 1.0, ROOT_FACTOR)
    density = inside * body + enamel * ENAMEL_EXTRA * (0.4 + 0.6 * thickness)
    density -= (inside & pulp) * PULP_DEFICIT * thickness
    # periodontal ligament: a thin dark line around the root, inside the bone
    root_zone = (v > crown) & (v < length * 1.03)
    density -= 0.18 * (root_zone & (r > 1) & (r < 1.18))
    if restoration == "filling":
        cu, cv = rng.uniform(-0.4, 0.4) * half_width, rng.uniform(0.0, 0.25) * crown
        ru, rv = rng.uniform(0.3, 0.55) * half_width, rng.uniform(0.25, 0.45) * crown
        blob = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2
        density += METAL * (inside & (blob < 1))
    elif restoration == "crown":
        density += METAL * in_crown
    elif restoration == "root_canal":
        density += 0.7 * METAL * (inside & pulp & (v > crown * 0.6))
    canvas.density[top:bottom, left:right] += density
    canvas.label[top:bottom, left:right][inside] = fdi


def _draw_teeth(canvas: Canvas, arch: Arch, rng) -> None:
    missing_rate = rng.uniform(0.0, 0.15)  # some mouths keep all teeth, some lost several
    for jaw, shapes, quadrants in (("upper", UPPER_TEETH, (1, 2)), ("lower", LOWER_TEETH, (4, 3))):
        scale = arch.half_span / sum(s.width for s in shapes)
        for side, quadrant in zip((-1, 1), quadrants):  # patient's right is on the image's left
            offset = 0.0
            for position, shape in enumerate(shapes, start=1):
                width = shape.width * scale * rng.uniform(0.93, 1.07)
                center_x = arch.center_x + side * (offset + width / 2)
                offset += width * rng.uniform(0.97, 1.03)
                p_missing = 0.45 if position == 8 else missing_rate
                if rng.random() < p_missing:
                    continue
                slope = arch.occlusal_slope(center_x)
                normal = np.array([slope, -1.0]) / np.hypot(slope, 1.0)  # points up, away from the bite
                tilt = np.deg2rad(rng.normal(0, 4) + side * (3 if position >= 6 else 0))
                axis = np.array([normal[0] * np.cos(tilt) - normal[1] * np.sin(tilt),
                                 normal[0] * np.sin(tilt) + normal[1] * np.cos(tilt)])
                base_y = arch.occlusal_y(center_x) - arch.opening / 2
                if jaw == "lower":
                    axis = -axis
                    base_y = arch.occlusal_y(center_x) + arch.opening / 2
                base_y += rng.normal(0, 0.006) * canvas.height  # teeth do not line up perfectly
                odds = [0.10, 0.03, 0.04, 0.83] if position >= 4 else [0.03, 0.02, 0.02, 0.93]
                restoration = rng.choice(["filling", "crown", "root_canal", None], p=odds)
                _draw_tooth(canvas, rng, quadrant * 10 + position, shape, center_x, base_y, axis,
                            half_width=0.5 * width * rng.uniform(0.96, 1.04), restoration=restoration)


def _expose(canvas: Canvas, rng) -> np.ndarray:
    """Density -> 8-bit radiograph with per-image exposure, contrast, blur and noise."""
    h, w = canvas.height, canvas.width
    scale = max(h / 256.0, 0.25)
    density = gaussian_filter(canvas.density, rng.uniform(0.5, 1.3) * scale)
    # uneven exposure across the image (panoramic machines sweep around the head)
    gradient = (1 + rng.uniform(-0.15, 0.15) * (canvas.cols / w - 0.5)
                + rng.uniform(-0.1, 0.1) * (canvas.rows / h - 0.5))
    image = 1 - np.exp(-rng.uniform(0.45, 0.75) * density * gradient)
    image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.6)
    low, high = rng.uniform(0.0, 0.15), rng.uniform(0.75, 1.0)  # often low contrast
    image = low + (high - low) * image
    image += rng.uniform(0.008, 0.025) * _textured_noise(rng, image.shape, 0.6 * scale)  # correlated grain
    image += rng.uniform(0.004, 0.015) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def generate_synthetic_case(rng: np.random.Generator, height: int = 256,
                            width: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """One panoramic-like radiograph (uint8 HxW) and its label map (uint8 FDI numbers, 0 background)."""
    _check_size(height, width)
    canvas = Canvas.empty(height, width)
    arch = _random_arch(rng, height, width)
    _draw_anatomy(canvas, arch, rng)
    _draw_teeth(canvas, arch, rng)
    return _expose(canvas, rng), canvas.label


def _check_size(height: int, width: int) -> None:
    if height < MIN_SIZE or width < MIN_SIZE:
        raise RbmnetError(f"synthetic images need at least {MIN_SIZE}x{MIN_SIZE} pixels, got {width}x{height}")


SPLIT_CODES = {"train": 0, "unlabeled": 1, "test": 2}
CASE_PREFIXES = {"train": "synthetic", "unlabeled": "synthetic_unlabeled", "test": "synthetic_test"}


def _write_one(job: tuple[str, int], dataset_dir, seed: int, height: int, width: int) -> None:
    split, index = job
    # one generator per case: a case does not change when the counts of other cases do
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    image, label = generate_synthetic_case(rng, height, width)
    write_case(dataset_dir, split, f"{CASE_PREFIXES[split]}_{index:04d}", image,
               label if split != "unlabeled" else None)


def write_synthetic_dataset(name: str = "Teeth", num_labeled: int = 40, num_unlabeled: int = 40,
                            num_test: int = 10, height: int = 256, width: int = 512, seed: int = 0,
                            overwrite: bool = False, num_processes: int = 1,
                            progress: bool = True) -> ConversionResult:
    """Write rbmnet_raw/<name>; test cases get labelsTs/ too, so predictions on them can be scored."""
    if num_labeled < 1 or num_unlabeled < 0 or num_test < 0:
        raise RbmnetError("synthetic dataset needs --num-labeled >= 1 and non-negative other counts")
    _check_size(height, width)
    jobs = ([("train", i) for i in range(num_labeled)] + [("unlabeled", i) for i in range(num_unlabeled)]
            + [("test", i) for i in range(num_test)])
    with staged_dataset_dir(name, overwrite) as dataset_dir:
        write_one = functools.partial(_write_one, dataset_dir=dataset_dir, seed=seed, height=height, width=width)
        list(map_cases(write_one, jobs, num_processes, f"generating {name}", progress))
        description = f"synthetic panoramic-like radiographs, seed {seed}, {width}x{height}"
        content = finish_dataset(dataset_dir, name, tooth_labels("FDI"), "FDI", description=description,
                                 source=SOURCE)
    notes = [f"synthetic data, seed {seed}: not real radiographs"]
    return ConversionResult(raw_root() / name, content, notes)
