"""Part groupings of Pascal-Part: which raw part names of the release make which part class.

The official release (Chen et al., CVPR 2014) names up to 24 parts per VOC class (its ``part2ind.m``);
numbered instances (``engine_1``, ``window_12``, ``cleftside_2``) match by their stem (``engine``).
Papers merge these names into coarser classes. A grouping maps, per VOC class, group names to the raw
stems that feed them, and optionally names

* a ``rest`` group: the object's pixels covered by no annotated part (the tvmonitor frame; the bicycle
  body beyond saddle, handlebar and chain wheel); the group may also take raw parts, or none;
* ``whole``: the class is converted as one group, ``"<class> whole"``, the object mask (boat, chair,
  diningtable, sofa and train in the 58-class version), whatever parts its objects carry.

Classes absent from a grouping are not converted. Category names are ``"<class> <group>"`` in the
order of the tables (classes, then their groups, then the rest group when it takes no raw part).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

_VEHICLE = (
    "frontside", "leftside", "rightside", "backside", "roofside", "leftmirror", "rightmirror",
    "fliplate", "bliplate", "door", "wheel", "headlight", "window",
)  # fmt: skip
_CAT = (
    "head", "leye", "reye", "lear", "rear", "nose", "torso", "neck", "lfleg", "lfpa", "rfleg", "rfpa",
    "lbleg", "lbpa", "rbleg", "rbpa", "tail",
)  # fmt: skip
_LEGS = ("lfuleg", "lflleg", "rfuleg", "rflleg", "lbuleg", "lblleg", "rbuleg", "rblleg")
_COW = ("head", "leye", "reye", "lear", "rear", "muzzle", "lhorn", "rhorn", "torso", "neck", *_LEGS, "tail")
_HOOVES = ("lfho", "rfho", "lbho", "rbho")

# The raw part stems of the release per VOC class (part2ind.m order); boat, chair, diningtable and
# sofa carry silhouettes only.
# fmt: off
RAW_PARTS: dict[str, tuple[str, ...]] = {
    "aeroplane": ("body", "stern", "lwing", "rwing", "tail", "engine", "wheel"),
    "bicycle": ("fwheel", "bwheel", "saddle", "handlebar", "chainwheel", "headlight"),
    "bird": ("head", "leye", "reye", "beak", "torso", "neck", "lwing", "rwing", "lleg", "lfoot", "rleg",
             "rfoot", "tail"),
    "boat": (),
    "bottle": ("cap", "body"),
    "bus": _VEHICLE,
    "car": _VEHICLE,
    "cat": _CAT,
    "chair": (),
    "cow": _COW,
    "diningtable": (),
    "dog": (*_CAT, "muzzle"),
    "horse": (*(p for p in _COW if not p.endswith("horn")), *_HOOVES),
    "motorbike": ("fwheel", "bwheel", "handlebar", "saddle", "headlight"),
    "person": ("head", "leye", "reye", "lear", "rear", "lebrow", "rebrow", "nose", "mouth", "hair", "torso",
               "neck", "llarm", "luarm", "lhand", "rlarm", "ruarm", "rhand", "llleg", "luleg", "lfoot",
               "rlleg", "ruleg", "rfoot"),
    "pottedplant": ("pot", "plant"),
    "sheep": _COW,
    "sofa": (),
    "train": ("head", "hfrontside", "hleftside", "hrightside", "hbackside", "hroofside", "headlight",
              "coach", "cfrontside", "cleftside", "crightside", "cbackside", "croofside"),
    "tvmonitor": ("screen",),
}
# fmt: on


@dataclass(frozen=True)
class ClassGroups:
    """How the raw parts of one VOC class become part classes.

    ``groups``: group name -> raw stems, in category order. ``rest``: the group (in ``groups`` or not)
    that also takes the object's pixels covered by no part. ``whole``: one :data:`WHOLE` group, the
    object mask, instead of any part.
    """

    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rest: str | None = None
    whole: bool = False


Grouping = Mapping[str, ClassGroups]  # VOC class -> its groups, in category order
WHOLE = "whole"  # the group name of a ``whole`` class

_SILHOUETTE = ClassGroups(whole=True)
_HEAD = ("head", "leye", "reye", "lear", "rear")
_PERSON_6 = {  # in Pascal-Person-Part's order
    "head": (*_HEAD, "lebrow", "rebrow", "nose", "mouth", "hair", "neck"),
    "torso": ("torso",),
    "upper arm": ("luarm", "ruarm"),
    "lower arm": ("llarm", "rlarm", "lhand", "rhand"),
    "upper leg": ("luleg", "ruleg"),
    "lower leg": ("llleg", "rlleg", "lfoot", "rfoot"),
}
_CAT_LEGS = ("lfleg", "lfpa", "rfleg", "rfpa", "lbleg", "lbpa", "rbleg", "rbpa")

# BSANet (Zhao et al., ICCV 2019), GMNet (Michieli et al., ECCV 2020), FLOAT (Singh et al., CVPR 2022):
# 57 part classes (+ background).
PASCAL_PART_58: Grouping = {
    "aeroplane": ClassGroups(
        {
            "body": ("body",),
            "stern": ("stern", "tail"),
            "wing": ("lwing", "rwing"),
            "engine": ("engine",),
            "wheel": ("wheel",),
        }
    ),
    "bicycle": ClassGroups(
        {"wheel": ("fwheel", "bwheel"), "body": ("saddle", "handlebar", "chainwheel", "headlight")}, "body"
    ),
    "bird": ClassGroups(
        {
            "head": ("head", "leye", "reye", "beak"),
            "wing": ("lwing", "rwing"),
            "leg": ("lleg", "lfoot", "rleg", "rfoot"),
            "torso": ("torso", "neck", "tail"),
        },
        "torso",
    ),
    "boat": _SILHOUETTE,
    "bottle": ClassGroups({"cap": ("cap",), "body": ("body",)}, "body"),
    "bus": ClassGroups(
        {
            "window": ("window",),
            "wheel": ("wheel",),
            "body": tuple(p for p in _VEHICLE if p not in ("window", "wheel")),
        },
        "body",
    ),
    "car": ClassGroups(
        {
            "window": ("window",),
            "wheel": ("wheel",),
            "light": ("headlight",),
            "plate": ("fliplate", "bliplate"),
            "body": (
                "frontside",
                "leftside",
                "rightside",
                "backside",
                "roofside",
                "leftmirror",
                "rightmirror",
                "door",
            ),
        },
        "body",
    ),
    "cat": ClassGroups(
        {"head": (*_HEAD, "nose"), "leg": _CAT_LEGS, "tail": ("tail",), "torso": ("torso", "neck")}, "torso"
    ),
    "chair": _SILHOUETTE,
    "cow": ClassGroups(
        {
            "head": (*_HEAD, "muzzle", "lhorn", "rhorn"),
            "leg": _LEGS,
            "tail": ("tail",),
            "torso": ("torso", "neck"),
        },
        "torso",
    ),
    "diningtable": _SILHOUETTE,
    "dog": ClassGroups(
        {
            "head": (*_HEAD, "nose", "muzzle"),
            "leg": _CAT_LEGS,
            "tail": ("tail",),
            "torso": ("torso", "neck"),
        },
        "torso",
    ),
    "horse": ClassGroups(
        {
            "head": (*_HEAD, "muzzle"),
            "leg": (*_LEGS, *_HOOVES),
            "tail": ("tail",),
            "torso": ("torso", "neck"),
        },
        "torso",
    ),
    "motorbike": ClassGroups(
        {"wheel": ("fwheel", "bwheel"), "body": ("handlebar", "saddle", "headlight")}, "body"
    ),
    "person": ClassGroups(_PERSON_6),
    "pottedplant": ClassGroups({"pot": ("pot",), "plant": ("plant",)}),
    "sheep": ClassGroups(
        {
            "head": (*_HEAD, "muzzle", "lhorn", "rhorn"),
            "leg": _LEGS,
            "torso": ("torso", "neck", "tail"),
        },
        "torso",
    ),
    "sofa": _SILHOUETTE,
    "train": _SILHOUETTE,
    "tvmonitor": ClassGroups({"screen": ("screen",)}, "frame"),
}


def _ov(*groups: str | tuple[str, tuple[str, ...]]) -> ClassGroups:
    """OV-PARTS shorthand: a bare name is its own raw stem; (name, stems) merges stems."""
    return ClassGroups(dict(g if isinstance(g, tuple) else (g, (g,)) for g in groups))


# fmt: off
_WHEELS = ("wheel", ("fwheel", "bwheel"))
_EYE, _EAR, _HORN = ("eye", ("leye", "reye")), ("ear", ("lear", "rear")), ("horn", ("lhorn", "rhorn"))
_PAW = ("paw", ("lfpa", "rfpa", "lbpa", "rbpa"))
_VEHICLE_116 = _ov("wheel", "headlight", ("front", ("frontside",)), ("side", ("leftside", "rightside")),
                   ("back", ("backside",)), ("roof", ("roofside",)), ("mirror", ("leftmirror", "rightmirror")),
                   ("license plate", ("fliplate", "bliplate")), "door", "window")

# OV-PARTS (Wei et al., NeurIPS 2023): 116 part classes; the classes and their order are those of
# OV-PARTS' register_pascal_part_116.py, so category id k is OV-PARTS' label k. Which raw stems feed
# each class is not in that repository (it ships converted label maps); the merges here follow the
# names (left/right, front/back and numbered instances merged). The train's front/side/back/roof take
# the coach's sides as well as the head's: inferred, not verified.
PASCAL_PART_116: Grouping = {
    "aeroplane": _ov("body", "stern", ("wing", ("lwing", "rwing")), "tail", "engine", "wheel"),
    "bicycle": _ov(_WHEELS, "saddle", "handlebar", "chainwheel", "headlight"),
    "bird": _ov(("wing", ("lwing", "rwing")), "tail", "head", _EYE, "beak", "torso", "neck",
                ("leg", ("lleg", "rleg")), ("foot", ("lfoot", "rfoot"))),
    "bottle": _ov("body", "cap"),
    "bus": _VEHICLE_116,
    "car": _VEHICLE_116,
    "cat": _ov("tail", "head", _EYE, "torso", "neck", ("leg", ("lfleg", "rfleg", "lbleg", "rbleg")), "nose",
               _PAW, _EAR),
    "cow": _ov("tail", "head", _EYE, "torso", "neck", ("leg", _LEGS), _EAR, "muzzle", _HORN),
    "dog": _ov("tail", "head", _EYE, "torso", "neck", ("leg", ("lfleg", "rfleg", "lbleg", "rbleg")), "nose",
               _PAW, _EAR, "muzzle"),
    "horse": _ov("tail", "head", _EYE, "torso", "neck", ("leg", _LEGS), _EAR, "muzzle", ("hoof", _HOOVES)),
    "motorbike": _ov(_WHEELS, "saddle", "handlebar", "headlight"),
    "person": _ov("head", _EYE, "torso", "neck", ("leg", ("llleg", "luleg", "rlleg", "ruleg")),
                  ("foot", ("lfoot", "rfoot")), "nose", _EAR, ("eyebrow", ("lebrow", "rebrow")), "mouth",
                  "hair", ("lower arm", ("llarm", "rlarm")), ("upper arm", ("luarm", "ruarm")),
                  ("hand", ("lhand", "rhand"))),
    "pottedplant": _ov("pot", "plant"),
    "sheep": _ov("tail", "head", _EYE, "torso", "neck", ("leg", _LEGS), _EAR, "muzzle", _HORN),
    "train": _ov("headlight", "head", ("front", ("hfrontside", "cfrontside")),
                 ("side", ("hleftside", "hrightside", "cleftside", "crightside")),
                 ("back", ("hbackside", "cbackside")), ("roof", ("hroofside", "croofside")), "coach"),
    "tvmonitor": _ov("screen"),
}
# fmt: on

# Pascal-Person-Part (Chen et al., CVPR 2014): the person's six parts, in the benchmark's order.
PERSON_PART_6: Grouping = {"person": ClassGroups(_PERSON_6)}

# Every raw stem its own class (193 part classes).
RAW: Grouping = {c: _ov(*stems) for c, stems in RAW_PARTS.items() if stems}

GROUPINGS: dict[str, Grouping] = {
    "pascal-part-58": PASCAL_PART_58,
    "pascal-part-116": PASCAL_PART_116,
    "person-part-6": PERSON_PART_6,
    "raw": RAW,
}

_NUMBERED = re.compile(r"_\d+$")


def part_group(table: ClassGroups, part_name: str) -> str | None:
    """The group of raw part ``part_name`` (``window_12`` matches stem ``window``), or None."""
    stem = _NUMBERED.sub("", part_name)
    return next((group for group, stems in table.groups.items() if stem in stems), None)
