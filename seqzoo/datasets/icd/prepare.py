"""MIMIC-III raw tables -> the CAML layout that :mod:`seqzoo.datasets.icd.reader` reads.

Run on your own copy of MIMIC-III v1.4 (credentialed access through PhysioNet; nothing is
downloaded here)::

    seqzoo data prepare mimic3 --mimic_dir /path/to/mimic-iii-1.4 --out data/mimic3 \
        [--splits_dir /path/to/caml/mimicdata/mimic3] [--version 50]

``mimic_dir`` holds ``NOTEEVENTS.csv``, ``DIAGNOSES_ICD.csv`` and ``PROCEDURES_ICD.csv``
(plain or ``.csv.gz``). The steps follow CAML's ``dataproc`` (Mullenbach et al. 2018), which
TransICD reuses:

1. **Codes.** ``ICD9_CODE`` is read as text (leading zeros matter) and the dot re-inserted:
   diagnoses after 3 characters, after 4 for E codes (``E8889`` -> ``E888.9``, ``4019`` ->
   ``401.9``, ``V5861`` -> ``V58.61``); procedures after 2 (``3893`` -> ``38.93``). Codes are
   ``D``/``P``-agnostic strings, diagnoses and procedures pooled, kept once per admission.
2. **Notes.** ``CATEGORY == "Discharge summary"`` rows, concatenated per ``HADM_ID`` in file
   order (addenda after the report); text lower-cased, punctuation stripped (tokens are the
   ``\\w+`` runs), tokens made only of digits dropped.
3. **Labelled notes.** Admissions that have both a discharge summary and at least one code.
4. **Top-50.** Codes counted over all labelled notes (one count per admission), the 50 most
   frequent kept (ties broken by code, so the list is deterministic); for version ``50``
   notes keep only those codes and notes left without one are dropped (as CAML does).
5. **Splits.** With ``splits_dir``, the fixed id lists ``{train,dev,test}_<version>_hadm_ids.csv``
   (CAML's files, one ``HADM_ID`` per line); admissions in no list are dropped and counted.
   Without it, a split by patient (``SUBJECT_ID``), 80/10/10 with ``seed``, so no patient
   crosses splits.

Output (written atomically): ``{train,dev,test}_<version>.csv`` (``HADM_ID, TEXT, LABELS,
length``, ``SUBJECT_ID``) and, for top-50, ``TOP_50_CODES.csv``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from seqzoo.datasets.base import atomic_dir, read_csv_checked, register_prepare
from seqzoo.datasets.icd.reader import SPLIT_FILES
from seqzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")


def reformat_code(code: str, is_diagnosis: bool) -> str:
    """Re-insert the dot MIMIC strips: diagnoses after 3 characters (4 for E codes), procedures after 2."""
    code = "".join(str(code).strip().split("."))
    if is_diagnosis:
        cut = 4 if code.startswith("E") else 3
    else:
        cut = 2
    return code[:cut] + "." + code[cut:] if len(code) > cut else code


def clean_text(text: str) -> str:
    """Lower-case ``\\w+`` tokens, numeric-only tokens dropped, joined by single spaces."""
    return " ".join(t.lower() for t in _WORD.findall(str(text)) if not t.isnumeric())


def _table(mimic_dir: Path, name: str) -> Path:
    for candidate in (mimic_dir / f"{name}.csv", mimic_dir / f"{name}.csv.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"MIMIC-III table {name}.csv(.gz) not found in {mimic_dir} -- --mimic_dir must be the folder "
                    "with NOTEEVENTS.csv, DIAGNOSES_ICD.csv and PROCEDURES_ICD.csv")


def read_codes(mimic_dir: str | os.PathLike) -> dict[str, list[str]]:
    """``HADM_ID -> codes`` from DIAGNOSES_ICD and PROCEDURES_ICD, dots re-inserted, each once, in file order."""
    mimic_dir = Path(mimic_dir)
    codes: dict[str, dict[str, None]] = {}
    for name, is_diagnosis in (("DIAGNOSES_ICD", True), ("PROCEDURES_ICD", False)):
        path = _table(mimic_dir, name)
        frame = read_csv_checked(path, required=("HADM_ID", "ICD9_CODE"), what=f"MIMIC-III {name}", dtype=str,
                                 keep_default_na=False)
        for hadm, code in zip(frame["HADM_ID"], frame["ICD9_CODE"]):
            hadm, code = hadm.strip(), code.strip()
            if hadm and code:
                codes.setdefault(hadm, {})[reformat_code(code, is_diagnosis)] = None
    return {h: list(c) for h, c in codes.items()}


def read_discharge_summaries(mimic_dir: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """``HADM_ID -> cleaned text`` (discharge summaries concatenated in file order) and ``HADM_ID -> SUBJECT_ID``."""
    path = _table(Path(mimic_dir), "NOTEEVENTS")
    frame = read_csv_checked(path, required=("SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT"),
                             what="MIMIC-III NOTEEVENTS", dtype=str, keep_default_na=False)
    frame = frame[(frame["CATEGORY"].str.strip() == "Discharge summary") & (frame["HADM_ID"].str.strip() != "")]
    texts: dict[str, list[str]] = {}
    subjects: dict[str, str] = {}
    for subject, hadm, text in zip(frame["SUBJECT_ID"], frame["HADM_ID"], frame["TEXT"]):
        hadm = hadm.strip()
        cleaned = clean_text(text)
        if cleaned:
            texts.setdefault(hadm, []).append(cleaned)
            subjects[hadm] = subject.strip()
    return {h: " ".join(parts) for h, parts in texts.items()}, subjects


def top_codes(codes: dict[str, list[str]], k: int = 50) -> list[str]:
    """The ``k`` codes on most admissions (ties by code)."""
    counts = Counter(c for cs in codes.values() for c in cs)
    return [c for c, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]]


def read_split_ids(splits_dir: str | os.PathLike, version: str) -> dict[str, list[str]]:
    """CAML's fixed lists ``{train,dev,test}_<version>_hadm_ids.csv`` (one id per line)."""
    out = {}
    for split, stem in SPLIT_FILES.items():
        path = Path(splits_dir) / f"{stem}_{version}_hadm_ids.csv"
        if not path.is_file():
            raise DataError(f"split id list not found: {path}")
        ids = [line.strip().split(",")[0] for line in path.read_text().splitlines() if line.strip()]
        out[split] = [i for i in ids if i.upper() != "HADM_ID"]
    seen: dict[str, str] = {}
    for split, ids in out.items():
        for i in ids:
            if i in seen and seen[i] != split:
                raise DataError(f"{splits_dir}: HADM_ID {i} is in both the {seen[i]} and {split} id lists")
            seen[i] = split
    return out


def patient_split(hadm_ids: list[str], subjects: dict[str, str], seed: int,
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, list[str]]:
    """Admissions split by patient: every admission of one SUBJECT_ID lands in one split."""
    patients = sorted({subjects[h] for h in hadm_ids})
    order = np.random.default_rng(seed).permutation(len(patients))
    n_train = int(round(fractions[0] * len(patients)))
    n_val = int(round(fractions[1] * len(patients)))
    where = {}
    for rank, idx in enumerate(order):
        where[patients[idx]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return {s: [h for h in hadm_ids if where[subjects[h]] == s] for s in SPLIT_FILES}


@register_prepare("mimic3")
def prepare_mimic3(out: str, mimic_dir: str, splits_dir: str | None = None, version: str = "50",
                   seed: int = 0) -> Path:
    """MIMIC-III raw tables (your own copy) -> CAML-format train/dev/test CSVs.

    Args:
        out: output folder.
        mimic_dir: folder with NOTEEVENTS.csv, DIAGNOSES_ICD.csv, PROCEDURES_ICD.csv (.csv.gz also read).
        splits_dir: folder with CAML's {train,dev,test}_<version>_hadm_ids.csv; None splits by patient.
        version: "50" (top-50 codes) or "full" (all codes).
        seed: seed of the patient split when no id lists are given.
    """
    if version not in ("50", "full"):
        raise ConfigError(f"version must be '50' or 'full', got {version!r}")
    mimic_dir_path = Path(mimic_dir)
    if not mimic_dir_path.is_dir():
        raise DataError(f"MIMIC-III folder not found: {mimic_dir_path}")
    codes = read_codes(mimic_dir_path)
    texts, subjects = read_discharge_summaries(mimic_dir_path)
    labelled = [h for h in texts if codes.get(h)]
    if not labelled:
        raise DataError(f"{mimic_dir_path}: no admission has both a discharge summary and a code")
    labelled_codes = {h: codes[h] for h in labelled}
    if version == "50":
        top = top_codes(labelled_codes, 50)
        keep = set(top)
        labelled_codes = {h: [c for c in cs if c in keep] for h, cs in labelled_codes.items()}
        labelled_codes = {h: cs for h, cs in labelled_codes.items() if cs}
        labelled = [h for h in labelled if h in labelled_codes]
    if splits_dir is not None:
        ids = read_split_ids(splits_dir, version)
        present = set(labelled)
        missing = sum(1 for s in ids.values() for h in s if h not in present)
        if missing:
            log.warning("%d admission(s) in the split id lists have no labelled discharge summary", missing)
        listed = {h for s in ids.values() for h in s}
        dropped = sum(1 for h in labelled if h not in listed)
        if dropped:
            log.warning("%d labelled admission(s) are in no split id list and were left out", dropped)
        splits = {s: [h for h in hs if h in present] for s, hs in ids.items()}
    else:
        splits = patient_split(labelled, subjects, seed)
    with atomic_dir(out) as tmp:
        for split, stem in SPLIT_FILES.items():
            rows = splits[split]
            if not rows:
                raise DataError(f"the {split} split is empty after preprocessing")
            frame = pd.DataFrame({
                "SUBJECT_ID": [subjects[h] for h in rows],
                "HADM_ID": rows,
                "TEXT": [texts[h] for h in rows],
                "LABELS": [";".join(labelled_codes[h]) for h in rows],
                "length": [len(texts[h].split()) for h in rows],
            })
            frame.to_csv(tmp / f"{stem}_{version}.csv", index=False)
        if version == "50":
            (tmp / "TOP_50_CODES.csv").write_text("\n".join(top) + "\n")
    return Path(out)
