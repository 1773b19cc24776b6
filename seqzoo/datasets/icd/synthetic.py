"""Synthetic discharge summaries built from real ICD-10-CM codes (templated, not clinical text).

``seqzoo data synth icd --out DIR`` writes the CAML layout (``{train,dev,test}_<K>.csv`` with
``HADM_ID, TEXT, LABELS``, ``TOP_<K>_CODES.csv``, ``codes.csv`` with each code's
description and key word, and ``mentions_<split>_<K>.csv``: every mention's code, kind --
asserted / negated / bound / confirmed / ruled_out -- and word span, the ground truth for
checking explanations). The notes are **templated**: sentences from fixed templates filled with word
lists. What is real is the code set: ``K`` billable ICD-10-CM 2026 codes with their official
descriptions and inclusion terms from the ``simple-icd-10-cm`` package (MIT).

Construction of one note (all draws from ``numpy.random.default_rng(seed)``):

* **Length** uniform in ``[min_len, max_len]`` words (within one filler sentence) (default 300-2,500, the span of MIMIC-III
  discharge summaries), reached with section headers and filler sentences (vitals,
  medications, exam, course, instructions) whose words never belong to a code's evidence.
* **Codes.** ``1 + Poisson(mean_codes - 1)`` distinct codes drawn with Zipf weights
  ``p_k ~ (k + 1)^(-zipf_a)`` over the code list, so a few codes are common and most are rare
  (the long tail LDAM is meant for).
* **Evidence.** Each assigned code gets 1-2 mentions at random places: a positive template
  ("diagnosed with ...", "imaging consistent with ...") around a paraphrase of the code --
  its cleaned description, one of its inclusion terms, or a reordered subset of its content
  words with simple synonym swaps, always keeping the code's key word (a word no other
  chosen code uses).
* **Negations.** ``1 + Poisson(1)`` codes that are *not* assigned appear in negated
  templates ("no history of ...", "denies ...", "... was ruled out"); they must not be coded.
  The post-negated forms ("... was ruled out") need right context.
* **Long-range binding.** With probability ``binding_prob`` an assigned code is introduced
  only as "problem <ordinal> concern for <paraphrase>" near the start, and settled at the end
  of the note ("problem <ordinal> confirmed"); a distractor is introduced the same way and
  settled as "problem <ordinal> ruled out". The label depends on words ~1-2k tokens apart.

The same ``seed`` gives the same files byte for byte.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import atomic_dir, register_synth
from seqzoo.datasets.icd.reader import write_split
from seqzoo.errors import ConfigError

_WORD = re.compile(r"[a-z]+")
STOPWORDS = frozenset(
    "a an and as at by due for from in into is its nos not of on or other others part site specified the to "
    "type unspecified with without elsewhere classified than more less same who which any all".split()
)
SYNONYMS = {
    "acute": "sudden", "chronic": "longstanding", "disease": "illness", "disorder": "condition",
    "failure": "insufficiency", "infection": "infectious process", "pain": "discomfort",
    "neoplasm": "tumor", "malignant": "cancerous", "hemorrhage": "bleeding", "fracture": "break",
    "bilateral": "both sides", "left": "left sided", "right": "right sided", "syndrome": "complex",
}
ORDINALS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
POSITIVE = (
    "patient was diagnosed with {p} during this admission",
    "{p} was noted and treated by the primary team",
    "assessment and plan notable for {p}",
    "imaging and labs were consistent with {p}",
    "treated for {p} with good response",
    "discharge diagnosis includes {p}",
    "history significant for {p} requiring ongoing care",
    "consultant confirmed {p} and recommended follow up",
)
NEGATIVE_PRE = (
    "no history of {p}",
    "patient denies any {p}",
    "negative for {p}",
    "no evidence of {p} on workup",
)
NEGATIVE_POST = (
    "{p} was ruled out",
    "{p} was considered but excluded",
)
SECTIONS = (
    "chief complaint", "history of present illness", "past medical history", "social history",
    "medications on admission", "physical exam", "pertinent results", "brief hospital course",
    "discharge medications", "discharge disposition", "discharge condition", "discharge instructions",
    "followup instructions",
)
FILLER = (
    "patient is a {age} year old {sex} who presented to the emergency department",
    "vital signs were stable on arrival with {vital}",
    "patient was started on {med} and tolerated it well",
    "continued home dose of {med} throughout the stay",
    "labs were notable for a {lab} within normal limits",
    "patient ambulated with {helper} and was seen by physical therapy",
    "on exam the patient was alert and oriented with a {exam}",
    "the patient lives with {family} and is independent in daily activities",
    "diet was advanced as tolerated and the patient was {mood}",
    "nursing reported an uneventful night with adequate sleep",
    "case management arranged services with {helper} at home",
    "patient was instructed to take {med} as prescribed and to call with questions",
    "follow up with the primary care provider in {weeks} weeks",
    "the patient remained hemodynamically stable and afebrile",
    "telemetry was reviewed and showed sinus rhythm without events",
    "pain was controlled with oral {med} as needed",
    "the family was updated at the bedside and agreed with the plan",
    "discharged home in good condition with {helper}",
)
SLOTS = {
    "age": ("elderly", "middle aged", "young", "sixty", "seventy", "forty", "eighty"),
    "sex": ("man", "woman", "gentleman", "lady"),
    "vital": ("normal blood pressure", "regular heart rate", "good oxygen saturation on room air",
              "normal temperature"),
    "med": ("acetaminophen", "metoprolol", "lisinopril", "atorvastatin", "pantoprazole", "heparin",
            "furosemide", "docusate", "senna", "amlodipine", "levothyroxine", "ondansetron"),
    "lab": ("sodium", "potassium", "creatinine", "hemoglobin", "white count", "platelet count", "lactate"),
    "helper": ("a walker", "a cane", "visiting nurse services", "his daughter", "her son", "home services"),
    "exam": ("soft abdomen", "clear chest", "regular rhythm", "supple neck", "intact sensation"),
    "family": ("his wife", "her husband", "family", "a roommate"),
    "mood": ("comfortable", "in good spirits", "eager to go home"),
    "weeks": ("one", "two", "three", "four"),
}


def clean_words(text: str) -> list[str]:
    """Lower-case alphabetic words (the form CAML's preprocessing leaves; numbers dropped)."""
    return _WORD.findall(text.lower())


def code_phrases(code: str) -> tuple[list[str], list[list[str]]]:
    """(description words, inclusion terms as word lists) of an ICD-10-CM code."""
    import simple_icd_10_cm as cm

    description = clean_words(cm.get_description(code))
    inclusions = [words for term in cm.get_inclusion_term(code) if (words := clean_words(term))]
    return description, inclusions


def _filler_vocabulary() -> set[str]:
    words = set()
    for text in (*FILLER, *SECTIONS, *POSITIVE, *NEGATIVE_PRE, *NEGATIVE_POST):
        words.update(clean_words(text.replace("{p}", "")))
    for values in SLOTS.values():
        for v in values:
            words.update(clean_words(v))
    words.update(ORDINALS)
    words.update(["problem", "concern", "confirmed", "ruled", "out"])
    return words


def choose_codes(n_codes: int, seed: int) -> list[tuple[str, str]]:
    """``n_codes`` billable codes (chapters A-N and R) that have inclusion terms and a key word of
    their own: (code, key word), in a seeded order."""
    import simple_icd_10_cm as cm

    avoid = _filler_vocabulary() | STOPWORDS | set(SYNONYMS.values())
    candidates = sorted(c for c in cm.get_all_codes(True)
                        if c[0] in "ABCDEFGHIJKLMNR" and cm.is_leaf(c) and cm.get_inclusion_term(c))
    order = np.random.default_rng(seed).permutation(len(candidates))
    chosen: list[tuple[str, str]] = []
    used: set[str] = set()
    chosen_keys: set[str] = set()
    for idx in order:
        code = candidates[idx]
        description, inclusions = code_phrases(code)
        content = [w for w in description if w not in STOPWORDS]
        if not 2 <= len(content) <= 8:
            continue
        words = set(content) | {w for term in inclusions for w in term}
        keys = [w for w in content if len(w) >= 5 and w not in avoid and w not in used
                and all(w in term for term in inclusions)]
        if not keys or words & chosen_keys:
            continue
        chosen.append((code, keys[0]))
        chosen_keys.add(keys[0])
        used |= words
        if len(chosen) == n_codes:
            return chosen
    raise ConfigError(f"could only find {len(chosen)} distinct ICD-10-CM codes; ask for fewer than {n_codes}")


def paraphrase(code: str, key: str, rng: np.random.Generator) -> list[str]:
    """A mention of the code: description, inclusion term, or reordered content words with synonyms."""
    description, inclusions = code_phrases(code)
    kind = rng.integers(3)
    if kind == 1 and inclusions:
        return list(inclusions[rng.integers(len(inclusions))])
    if kind == 2:
        content = [w for w in description if w not in STOPWORDS and w != key]
        keep = [w for w in content if rng.random() < 0.6]
        words = [key, *keep]
        rng.shuffle(words)
        out: list[str] = []
        for w in words:
            out += SYNONYMS[w].split() if w in SYNONYMS and w != key and rng.random() < 0.5 else [w]
        return out
    return [w for w in description if w != "unspecified"] or description


def _fill(template: str, rng: np.random.Generator, phrase: list[str] | None = None) -> list[str]:
    def slot(match: re.Match) -> str:
        name = match.group(1)
        if name == "p":
            return " ".join(phrase or [])
        values = SLOTS[name]
        return values[rng.integers(len(values))]

    return re.sub(r"\{(\w+)\}", slot, template).split()


Mention = tuple[str, str, int, int]  # (code, kind, first word, one past the last word)


def make_note(codes: list[tuple[str, str]], weights: np.ndarray, rng: np.random.Generator, min_len: int,
              max_len: int, mean_codes: float, binding_prob: float) -> tuple[str, list[str], list[Mention]]:
    """One templated note, its codes, and where each code is mentioned: kinds ``asserted``,
    ``negated``, ``bound`` (the "problem <n> concern for" sentence) and ``confirmed`` /
    ``ruled_out`` (the sentence that settles it)."""
    n_codes = len(codes)
    target = int(rng.integers(min(min_len + 20, max_len), max_len + 1))
    n_assigned = min(n_codes, 1 + int(rng.poisson(max(mean_codes - 1.0, 0.0))))
    assigned = list(rng.choice(n_codes, size=n_assigned, replace=False, p=weights))
    others = [k for k in range(n_codes) if k not in set(assigned)]
    n_negated = min(len(others), 1 + int(rng.poisson(1.0)))
    negated = list(rng.choice(others, size=n_negated, replace=False)) if n_negated else []

    Tagged = tuple[list[str], tuple[str, str] | None]
    mentions: list[Tagged] = []  # sentences placed anywhere in the body
    opening: list[Tagged] = []  # "problem <n> concern for ..." near the start
    closing: list[Tagged] = []  # settled in the last section
    ordinals = list(rng.permutation(len(ORDINALS)))
    for k in assigned:
        code, key = codes[k]
        if rng.random() < binding_prob and ordinals:
            ordinal = ORDINALS[ordinals.pop()]
            opening.append((["problem", ordinal, "concern", "for", *paraphrase(code, key, rng)], (code, "bound")))
            closing.append((["problem", ordinal, "confirmed"], (code, "confirmed")))
            continue
        for _ in range(1 + int(rng.random() < 0.5)):
            template = POSITIVE[rng.integers(len(POSITIVE))]
            mentions.append((_fill(template, rng, paraphrase(code, key, rng)), (code, "asserted")))
    for k in negated:
        code, key = codes[k]
        if rng.random() < binding_prob and ordinals:
            ordinal = ORDINALS[ordinals.pop()]
            opening.append((["problem", ordinal, "concern", "for", *paraphrase(code, key, rng)], (code, "bound")))
            closing.append((["problem", ordinal, "ruled", "out"], (code, "ruled_out")))
            continue
        pool = NEGATIVE_PRE if rng.random() < 0.7 else NEGATIVE_POST
        mentions.append((_fill(pool[rng.integers(len(pool))], rng, paraphrase(code, key, rng)), (code, "negated")))

    length = sum(len(w) for w, _ in (*mentions, *opening, *closing)) + sum(len(s.split()) for s in SECTIONS)
    body: list[Tagged] = []
    while True:  # filler up to the target; the longest filler sentence has < 20 words
        sentence = _fill(FILLER[rng.integers(len(FILLER))], rng)
        if length + len(sentence) > target:
            break
        body.append((sentence, None))
        length += len(sentence)
    for item in mentions:
        body.insert(int(rng.integers(len(body) + 1)), item)
    # sections split the body evenly; openings go into the first section, closings into the last
    cuts = np.linspace(0, len(body), len(SECTIONS) + 1).astype(int)
    words: list[str] = []
    where: list[Mention] = []
    for s, name in enumerate(SECTIONS):
        words += name.split()
        part = body[cuts[s]:cuts[s + 1]]
        if s == 0:
            part = opening + part
        if s == len(SECTIONS) - 1:
            part = part + closing
        for sentence, tag in part:
            if tag is not None:
                where.append((tag[0], tag[1], len(words), len(words) + len(sentence)))
            words += sentence
    labels = [codes[k][0] for k in sorted(assigned)]
    return " ".join(words), labels, where


@register_synth("icd")
def synth_icd(out: str, n_train: int = 800, n_val: int = 200, n_test: int = 200, n_codes: int = 50,
              min_len: int = 300, max_len: int = 2500, mean_codes: float = 3.0, zipf_a: float = 1.1,
              binding_prob: float = 0.25, seed: int = 0) -> Path:
    """Templated discharge summaries labelled with real ICD-10-CM codes (CAML layout).

    Args:
        out: output folder.
        n_train: training notes.
        n_val: validation notes (the ``dev`` file).
        n_test: test notes.
        n_codes: size of the label set K (files are named ``*_<K>.csv``).
        min_len: shortest note in words.
        max_len: longest note in words.
        mean_codes: mean number of codes per note (at least one).
        zipf_a: exponent of the Zipf law of code frequencies (0 = uniform).
        binding_prob: chance that a code's evidence is split into a start/end pair.
        seed: random seed; the same seed writes the same files.
    """
    if n_codes < 2:
        raise ConfigError(f"n_codes must be >= 2, got {n_codes}")
    if not 50 <= min_len <= max_len:
        raise ConfigError(f"need 50 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if min(n_train, n_val, n_test) < 1:
        raise ConfigError("n_train, n_val and n_test must be >= 1")
    codes = choose_codes(n_codes, seed)
    weights = (np.arange(n_codes) + 1.0) ** (-zipf_a)
    weights /= weights.sum()
    rng = np.random.default_rng(seed + 1)
    version = str(n_codes)
    with atomic_dir(out) as tmp:
        start = 100000
        for stem, count in (("train", n_train), ("dev", n_val), ("test", n_test)):
            notes = [make_note(codes, weights, rng, min_len, max_len, mean_codes, binding_prob) for _ in range(count)]
            ids = [str(start + i) for i in range(count)]
            start += count
            write_split(tmp / f"{stem}_{version}.csv", ids, [n[0] for n in notes], [n[1] for n in notes])
            rows = [f"{hadm},{code},{kind},{first},{last}"
                    for hadm, note in zip(ids, notes) for code, kind, first, last in note[2]]
            (tmp / f"mentions_{stem}_{version}.csv").write_text("\n".join(["HADM_ID,code,kind,start,end", *rows]) + "\n")
        (tmp / f"TOP_{version}_CODES.csv").write_text("\n".join(c for c, _ in codes) + "\n")
        import simple_icd_10_cm as cm

        lines = ["code,key_word,description"]
        lines += [f'{c},{k},"{cm.get_description(c)}"' for c, k in codes]
        (tmp / "codes.csv").write_text("\n".join(lines) + "\n")
    return Path(out)
