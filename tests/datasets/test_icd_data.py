"""ICD data: the CAML reader's errors and stated handling, the MIMIC-III preprocessor on tiny
raw tables written here, the synthetic generator (determinism, negations not coded), the DataModule."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from seqzoo.datasets.icd import IcdDataModule, Vocabulary, clean_text, prepare_mimic3, read_caml, reformat_code
from seqzoo.datasets.icd.reader import UNK_ID, encode_split, read_notes
from seqzoo.errors import ConfigError, DataError


def write_caml(root, rows_by_split, version="50", codes=None):
    root.mkdir(parents=True, exist_ok=True)
    for stem, rows in rows_by_split.items():
        pd.DataFrame(rows, columns=["HADM_ID", "TEXT", "LABELS"]).to_csv(root / f"{stem}_{version}.csv", index=False)
    if codes is not None:
        (root / f"TOP_{version}_CODES.csv").write_text("\n".join(codes) + "\n")
    return root


GOOD = {
    "train": [(1, "chest pain and hypertension", "401.9;428.0"), (2, "heart failure noted", "428.0"),
              (3, "hypertension again", "401.9")],
    "dev": [(4, "hypertension", "401.9")],
    "test": [(5, "failure of heart", "428.0")],
}


# -- reader ----------------------------------------------------------------------------------
def test_reads_splits_and_label_set(tmp_path):
    splits, labels = read_caml(write_caml(tmp_path / "d", GOOD))
    assert labels == ["401.9", "428.0"]
    assert splits["train"].codes[0] == ["401.9", "428.0"]
    assert splits["val"].words[0] == ["hypertension"]


def test_missing_column_names_file_and_column(tmp_path):
    root = tmp_path / "d"
    write_caml(root, GOOD)
    pd.DataFrame({"HADM_ID": [1], "TEXT": ["x"]}).to_csv(root / "dev_50.csv", index=False)
    with pytest.raises(DataError, match=r"dev_50.csv: missing column\(s\) 'LABELS'"):
        read_caml(root)


def test_empty_text_is_an_error_naming_the_line(tmp_path):
    rows = dict(GOOD, test=[(5, "failure", "428.0"), (6, "   ", "401.9")])
    with pytest.raises(DataError, match=r"test_50.csv, line 3, column 'TEXT': empty note"):
        read_caml(write_caml(tmp_path / "d", rows))


def test_label_outside_the_label_set(tmp_path):
    rows = dict(GOOD, dev=[(4, "hypertension", "401.9;999.9")])
    with pytest.raises(DataError, match=r"dev_50.csv, line 2, column 'LABELS': code\(s\) 999.9 not in the label set"):
        read_caml(write_caml(tmp_path / "d", rows, codes=["401.9", "428.0"]))


def test_missing_split_file(tmp_path):
    root = write_caml(tmp_path / "d", GOOD)
    (root / "test_50.csv").unlink()
    with pytest.raises(DataError, match="ICD test split not found"):
        read_caml(root)


def test_truncation_is_logged_and_unknown_words_map_to_unk(tmp_path, caplog):
    root = write_caml(tmp_path / "d", GOOD)
    notes = read_notes(root / "train_50.csv")
    vocab = Vocabulary.build(notes.words, size=10, min_df=2)
    assert vocab.itos[2:] == ["hypertension"]  # the only word in >= 2 training notes
    with caplog.at_level(logging.WARNING):
        ids, targets = encode_split(notes, vocab, ["401.9", "428.0"], max_len=3, where="train")
    assert "1 of 3 notes longer than max_len=3" in caplog.text
    assert [len(x) for x in ids] == [3, 3, 2]
    assert ids[0].tolist() == [UNK_ID, UNK_ID, UNK_ID] and ids[2].tolist() == [2, UNK_ID]
    np.testing.assert_array_equal(targets, [[1, 1], [0, 1], [1, 0]])


def test_vocabulary_from_train_only_and_capped(tmp_path):
    root = write_caml(tmp_path / "d", GOOD)
    dm = IcdDataModule(str(root), n_classes=2, vocab_size=4, min_df=1, max_len=50)
    assert dm.dims == {"vocab_size": 4, "n_classes": 2, "seq_len": 50}  # before any data is read
    dm.setup("fit")
    assert len(dm.vocab) == 4 and "hypertension" in dm.vocab.stoi
    assert "of" not in dm.vocab.stoi  # only in the test split
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == batch["mask"].shape
    assert bool((batch["tokens"][~batch["mask"]] == 0).all())
    np.testing.assert_array_equal(dm.train_label_counts(), [2, 2])


def test_n_classes_must_match_the_data(tmp_path):
    dm = IcdDataModule(str(write_caml(tmp_path / "d", GOOD)), n_classes=50)
    with pytest.raises(ConfigError, match="the data has 2 codes but data.n_classes is 50"):
        dm.setup("fit")


def test_missing_data_says_where_mimic_goes(tmp_path):
    with pytest.raises(DataError, match="seqzoo data prepare mimic3"):
        IcdDataModule(str(tmp_path / "none")).prepare_data()


# -- MIMIC-III preprocessor ------------------------------------------------------------------
def test_dot_reinsertion_rules():
    assert reformat_code("4019", True) == "401.9"
    assert reformat_code("E8889", True) == "E888.9"
    assert reformat_code("E849", True) == "E849"
    assert reformat_code("V5861", True) == "V58.61"
    assert reformat_code("0389", True) == "038.9"
    assert reformat_code("401", True) == "401"
    assert reformat_code("3893", False) == "38.93"
    assert reformat_code("966", False) == "96.6"


def test_text_cleaning():
    assert clean_text("Pt is 65 y/o; BP 120/80, Hx: CHF-exac. 2nd") == "pt is y o bp hx chf exac 2nd"


def _mimic_tables(root, n_admissions=60):
    """Admission h has diagnoses from a fixed pool; code 'd<j>' frequency decreases with j."""
    root.mkdir()
    notes, diags, procs = [], [], []
    pool = [f"{400 + j}{j % 10}" for j in range(55)]  # 55 distinct diagnosis codes, e.g. 4000 -> 400.0
    for h in range(n_admissions):
        hadm, subject = str(1000 + h), str(h // 2)
        notes.append((subject, hadm, "Discharge summary", f"Admission {h}: Pt had CHF. Dose 40mg!"))
        notes.append((subject, hadm, "Discharge summary", "ADDENDUM follow-up 2 weeks"))
        notes.append((subject, hadm, "Radiology", "should not appear"))
        for j in range(55):
            if h % (j + 1) == 0 or j == 0:
                diags.append((subject, hadm, pool[j]))
        procs.append((subject, hadm, "3893"))
        if h % 7 == 0:
            diags.append((subject, hadm, "E8889"))
    notes.append(("99", "", "Discharge summary", "no admission id"))
    pd.DataFrame(notes, columns=["SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT"]).to_csv(root / "NOTEEVENTS.csv",
                                                                                     index=False)
    pd.DataFrame(diags, columns=["SUBJECT_ID", "HADM_ID", "ICD9_CODE"]).to_csv(root / "DIAGNOSES_ICD.csv",
                                                                             index=False)
    pd.DataFrame(procs, columns=["SUBJECT_ID", "HADM_ID", "ICD9_CODE"]).to_csv(root / "PROCEDURES_ICD.csv",
                                                                             index=False)
    return root


def test_preprocessor_top50_and_patient_split(tmp_path):
    mimic = _mimic_tables(tmp_path / "mimic")
    out = prepare_mimic3(out=str(tmp_path / "caml"), mimic_dir=str(mimic))
    top = (out / "TOP_50_CODES.csv").read_text().split()
    assert len(top) == 50
    assert top[:2] == ["38.93", "400.0"]  # on every admission; ties by code
    assert "E888.9" in top and "454.4" not in top  # E888.9 on 9 of 60; 454.4 (j = 54) on 2
    splits, labels = read_caml(out)
    assert sorted(labels) == sorted(top)
    train = pd.read_csv(out / "train_50.csv", dtype=str)
    assert train["TEXT"].iloc[0].startswith("admission pt had chf dose 40mg addendum follow up weeks")
    assert "radiology" not in " ".join(train["TEXT"]) and "should" not in " ".join(train["TEXT"])
    subjects = {s: set(pd.read_csv(out / f"{s}_50.csv", dtype=str)["SUBJECT_ID"]) for s in ("train", "dev", "test")}
    assert not (subjects["train"] & subjects["dev"]) and not (subjects["train"] & subjects["test"])
    assert sum(len(n) for n in splits.values()) == 60


def test_preprocessor_fixed_split_lists(tmp_path, caplog):
    mimic = _mimic_tables(tmp_path / "mimic")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_full_hadm_ids.csv").write_text("\n".join(str(1000 + h) for h in range(40)) + "\n")
    (lists / "dev_full_hadm_ids.csv").write_text("1040\n1041\n99999\n")
    (lists / "test_full_hadm_ids.csv").write_text("1050\n1051\n1052\n")
    with caplog.at_level(logging.WARNING):
        out = prepare_mimic3(out=str(tmp_path / "caml"), mimic_dir=str(mimic), splits_dir=str(lists), version="full")
    assert "1 admission(s) in the split id lists" in caplog.text and "15 labelled admission(s)" in caplog.text
    splits, labels = read_caml(out, version="full")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [40, 2, 3]
    assert splits["val"].hadm_ids == ["1040", "1041"]
    assert "E888.9" in labels and "38.93" in labels and len(labels) == 57


def test_preprocessor_missing_table(tmp_path):
    mimic = _mimic_tables(tmp_path / "mimic")
    (mimic / "PROCEDURES_ICD.csv").unlink()
    with pytest.raises(DataError, match="PROCEDURES_ICD.csv"):
        prepare_mimic3(out=str(tmp_path / "caml"), mimic_dir=str(mimic))
    assert not (tmp_path / "caml").exists()


# -- synthetic -------------------------------------------------------------------------------
SMALL = dict(n_train=30, n_val=6, n_test=6, n_codes=12, min_len=300, max_len=700, seed=3)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    pytest.importorskip("simple_icd_10_cm")
    from seqzoo.datasets.icd import synth_icd

    return synth_icd(out=str(tmp_path_factory.mktemp("icd") / "a"), **SMALL)


def test_synthetic_is_deterministic(synth_dir, tmp_path):
    from seqzoo.datasets.icd import synth_icd

    again = synth_icd(out=str(tmp_path / "b"), **SMALL)
    for name in ("train_12.csv", "dev_12.csv", "test_12.csv", "TOP_12_CODES.csv", "codes.csv"):
        assert (synth_dir / name).read_bytes() == (again / name).read_bytes(), name


def test_synthetic_format_lengths_and_real_codes(synth_dir):
    import simple_icd_10_cm as cm

    splits, labels = read_caml(synth_dir, version="12")
    assert len(labels) == 12 and all(cm.is_leaf(c) for c in labels)
    lengths = [len(w) for n in splits.values() for w in n.words]
    assert min(lengths) >= 300 and max(lengths) <= 700
    assert all(codes for n in splits.values() for codes in n.codes)


def test_negated_evidence_is_not_labelled(synth_dir):
    """Negated and ruled-out mentions carry a negation cue and the code's key word, and their code
    is never among the note's labels; asserted and confirmed ones always are."""
    codes = pd.read_csv(synth_dir / "codes.csv", dtype=str)
    key_of = dict(zip(codes["code"], codes["key_word"]))
    notes = pd.read_csv(synth_dir / "train_12.csv", dtype=str, keep_default_na=False).set_index("HADM_ID")
    mentions = pd.read_csv(synth_dir / "mentions_train_12.csv", dtype={"HADM_ID": str})
    cues = ("no history of", "denies any", "negative for", "no evidence of", "ruled out", "considered but excluded")
    kinds = set()
    for hadm, code, kind, first, last in mentions.itertuples(index=False):
        words = notes.loc[hadm, "TEXT"].split()
        labels = set(notes.loc[hadm, "LABELS"].split(";"))
        span = " ".join(words[first:last])
        kinds.add(kind)
        if kind == "negated":
            assert key_of[code] in span.split() and any(c in span for c in cues), span
            assert code not in labels, (hadm, code, span)
        elif kind == "ruled_out":
            assert span.endswith("ruled out") and code not in labels
        elif kind in ("asserted", "confirmed"):
            assert code in labels, (hadm, code, span)
        if kind in ("asserted", "bound"):
            assert key_of[code] in span.split(), span
    assert {"asserted", "negated", "bound", "confirmed", "ruled_out"} <= kinds
    # every label has a positive mention
    positive = mentions[mentions["kind"].isin(["asserted", "confirmed"])].groupby("HADM_ID")["code"].apply(set)
    for hadm, row in notes.iterrows():
        assert set(row["LABELS"].split(";")) == positive[hadm]
