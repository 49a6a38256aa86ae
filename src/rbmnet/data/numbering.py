"""Tooth numberings (FDI, Universal) as one internal form: (quadrant, position).

quadrant 1..4 in the patient's frame as FDI counts them (1 upper right, 2 upper left, 3 lower left,
4 lower right); position 1..8 from the midline (1 central incisor .. 8 third molar). Everything
downstream (numbering heads, flips, charts, wrong-side checks) works on this form, so FDI and
Universal differ only in the two functions that translate to and from it.

A left-right flip of a radiograph swaps the patient's sides: quadrant 1 <-> 2 and 3 <-> 4 with the
position unchanged. FDI primary teeth (quadrants 5..8, positions 1..5) swap 5 <-> 6 and 7 <-> 8; they
have no Universal number here (Universal's primary letters are not label values).
"""
from __future__ import annotations

from dataclasses import dataclass

from rbmnet.errors import RbmnetError

PERMANENT_QUADRANTS = (1, 2, 3, 4)
POSITIONS = tuple(range(1, 9))
PRIMARY_POSITIONS = tuple(range(1, 6))
# left-right flip of the image = the patient's other side
CONTRALATERAL_QUADRANT = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7}


@dataclass(frozen=True)
class ToothNumbering:
    name: str  # as dataset.json's tooth_numbering says it

    def to_quadrant_position(self, number: int) -> tuple[int, int]:
        raise NotImplementedError

    def from_quadrant_position(self, quadrant: int, position: int) -> int:
        raise NotImplementedError

    def numbers(self) -> list[int]:
        """Every valid tooth number (permanent and, where the numbering has them, primary)."""
        raise NotImplementedError

    def is_valid(self, number: int) -> bool:
        return int(number) in set(self.numbers())

    def contralateral(self, number: int) -> int:
        """The same tooth on the patient's other side (what a left-right flip turns it into)."""
        quadrant, position = self.to_quadrant_position(number)
        return self.from_quadrant_position(CONTRALATERAL_QUADRANT[quadrant], position)


class FDI(ToothNumbering):
    """Two digits: quadrant then position (11..18, 21..28, 31..38, 41..48; primary 51..55 .. 81..85)."""

    def to_quadrant_position(self, number: int) -> tuple[int, int]:
        if not self.is_valid(number):
            raise RbmnetError(f"{number} is not an FDI tooth number")
        return divmod(int(number), 10)

    def from_quadrant_position(self, quadrant: int, position: int) -> int:
        number = 10 * int(quadrant) + int(position)
        if not self.is_valid(number):
            raise RbmnetError(f"quadrant {quadrant}, position {position} is not an FDI tooth")
        return number

    def numbers(self) -> list[int]:
        permanent = [10 * q + p for q in PERMANENT_QUADRANTS for p in POSITIONS]
        primary = [10 * q + p for q in (5, 6, 7, 8) for p in PRIMARY_POSITIONS]
        return permanent + primary


class Universal(ToothNumbering):
    """1..32 clockwise as seen by the dentist: 1 upper right third molar .. 16 upper left third molar,
    17 lower left third molar .. 32 lower right third molar."""

    def to_quadrant_position(self, number: int) -> tuple[int, int]:
        number = int(number)
        if not 1 <= number <= 32:
            raise RbmnetError(f"{number} is not a Universal tooth number (1..32)")
        if number <= 8:
            return 1, 9 - number
        if number <= 16:
            return 2, number - 8
        if number <= 24:
            return 3, 25 - number
        return 4, number - 24

    def from_quadrant_position(self, quadrant: int, position: int) -> int:
        if quadrant not in PERMANENT_QUADRANTS or position not in POSITIONS:
            raise RbmnetError(f"quadrant {quadrant}, position {position} is not a Universal tooth")
        return {1: 9 - position, 2: 8 + position, 3: 25 - position, 4: 24 + position}[quadrant]

    def numbers(self) -> list[int]:
        return list(range(1, 33))


NUMBERINGS: dict[str, ToothNumbering] = {"FDI": FDI("FDI"), "universal": Universal("universal")}


def numbering_of(dataset_json: dict) -> ToothNumbering | None:
    """dataset.json's tooth_numbering as an object; None when the dataset declares none."""
    name = dataset_json.get("tooth_numbering")
    if name is None:
        return None
    if name not in NUMBERINGS:
        raise RbmnetError(f"dataset.json: unknown tooth_numbering '{name}' (known: {', '.join(NUMBERINGS)})")
    return NUMBERINGS[name]


def tooth_numbers(dataset_json: dict) -> list[int]:
    """The foreground label values of dataset.json, ascending."""
    return sorted(int(v) for v in dataset_json["labels"].values() if int(v) != 0)
