from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from ase.spacegroup import crystal

from ionraman.defects import Substitution, apply_defects, formal_charges, parse_substitution, parse_vacancies
from ionraman.errors import InputError


@pytest.fixture(scope="module")
def na3sbs4_222():
    # cubic Na3SbS4 (I-43m): Na 6b, Sb 2a, S 8c — enough for composition tests
    a = crystal(["Na", "Sb", "S"], basis=[(0, 0.5, 0.5), (0, 0, 0), (0.18, 0.18, 0.18)], spacegroup=217,
                cellpar=[7.17] * 3 + [90] * 3)
    return a * (2, 2, 2)


def _charge(atoms, oxi):
    return sum(oxi[s] for s in atoms.get_chemical_symbols())


def test_w_doping_gives_na46sb14w2s64_and_is_neutral(na3sbs4_222):
    r = apply_defects(na3sbs4_222, substitutions=[parse_substitution("Sb:W:0.125")], mobile_ion="Na", seed=1)
    assert Counter(r.atoms.get_chemical_symbols()) == {"Na": 46, "Sb": 14, "W": 2, "S": 64}
    assert r.describe()["formula"] == "Na46Sb14W2S64"
    assert r.oxidation_states == {"Na": 1, "Sb": 5, "S": -2, "W": 6}
    assert _charge(r.atoms, r.oxidation_states) == 0 and r.net_charge == 0
    assert r.vacancies == {"Na": 2} and r.substitutions == {"Sb->W": 2}
    # every remaining atom sits on an original site
    orig = na3sbs4_222.get_positions()
    d = np.linalg.norm(r.atoms.get_positions()[:, None] - orig[None], axis=2).min(axis=1)
    assert d.max() < 1e-9


def test_seed_reproducible_and_different_seeds_differ(na3sbs4_222):
    sub = [Substitution("Sb", "W", 0.125)]
    a = apply_defects(na3sbs4_222, substitutions=sub, mobile_ion="Na", seed=3).atoms
    b = apply_defects(na3sbs4_222, substitutions=sub, mobile_ion="Na", seed=3).atoms
    c = apply_defects(na3sbs4_222, substitutions=sub, mobile_ion="Na", seed=4).atoms
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not (len(a) == len(c) and np.array_equal(a.positions, c.positions) and a.get_chemical_symbols() == c.get_chemical_symbols())


def test_lower_valent_dopant_gets_interstitial(na3sbs4_222):
    r = apply_defects(na3sbs4_222, substitutions=[parse_substitution("Sb:Sn4+:1")], mobile_ion="Na", seed=0)
    assert r.interstitials == {"Na": 1}
    assert Counter(r.atoms.get_chemical_symbols())["Na"] == 49
    assert _charge(r.atoms, r.oxidation_states) == 0
    # the interstitial sits in a void, not on top of an atom
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", r.atoms, 1.5)
    assert len(d) == 0


def test_vacancy_count_and_fraction(na3sbs4_222):
    assert Counter(apply_defects(na3sbs4_222, vacancies={"Na": 2}).atoms.get_chemical_symbols())["Na"] == 46
    assert Counter(apply_defects(na3sbs4_222, vacancies=parse_vacancies("Na:0.125")).atoms.get_chemical_symbols())["Na"] == 42


def test_formal_charges_from_pymatgen(na3sbs4_222):
    assert formal_charges(na3sbs4_222) == {"Na": 1, "Sb": 5, "S": -2}


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(vacancies={"Na": 49}), "only 48 such sites"),
        (dict(vacancies={"Na": 0.03}), "not a whole number"),
        (dict(vacancies={"Li": 1}), "no Li atoms"),
        (dict(substitutions=[Substitution("Sb", "He", 1)], mobile_ion="Na"), "no known common oxidation state"),
        (dict(substitutions=[Substitution("Sb", "W", 0.1)], mobile_ion="Na"), "not a whole number"),
        (dict(substitutions=[Substitution("Sb", "W", 1)]), "needs the mobile ion"),
    ],
)
def test_impossible_requests(na3sbs4_222, kwargs, msg):
    with pytest.raises(InputError, match=msg):
        apply_defects(na3sbs4_222, **kwargs)


@pytest.mark.parametrize("text,msg", [("Na", "ELEMENT:AMOUNT"), ("Xx:1", "not an element"), ("Na:two", "not a number")])
def test_parse_vacancies_errors(text, msg):
    with pytest.raises(InputError, match=msg):
        parse_vacancies(text)


def test_parse_substitution():
    s = parse_substitution("Sb:W6+:2")
    assert (s.host, s.dopant, s.amount, s.dopant_oxidation) == ("Sb", "W", 2.0, 6)
    with pytest.raises(InputError, match="HOST:DOPANT:AMOUNT"):
        parse_substitution("Sb:W")
