"""Harmonic Raman: channel forms match the MD spectra, and MD and harmonic peaks agree at low T."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from ionraman.harmonic import channel_intensities, harmonic_spectrum
from ionraman.raman import PolarizabilitySeries, compute_spectrum


class PairPolarizability:
    """A smooth bond-polarizability model for tests: α = Σ_pairs a∥(r) r̂r̂ + a⊥(r)(I − r̂r̂), cutoff 3.2 Å."""

    rc = 3.2

    def predict(self, frames):
        out = []
        for a in frames:
            i, j, D = neighbor_list("ijD", a, self.rc)
            r = np.linalg.norm(D, axis=1)
            u = D / r[:, None]
            fc = (1 - r / self.rc) ** 2
            par = (1.0 + 0.8 * (r - 2.5)) * fc
            perp = (0.3 + 0.1 * (r - 2.5)) * fc
            uu = np.einsum("ki,kj->kij", u, u)
            alpha = np.einsum("k,kij->ij", par, uu) + np.einsum("k,kij->ij", perp, np.eye(3)[None] - uu)
            out.append(0.5 * alpha)
        return np.array(out)


def test_channel_forms_match_md_spectrum():
    """A single tensor modulated as A s(t): by Parseval the MD channel integrals are c(A)·var(s)."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(3, 3))
    A = A + A.T
    n, dt = 4096, 2.0
    t = np.arange(n) * dt
    w = 2 * np.pi * 2.99792458e-5 * 400.0  # 400 cm⁻¹ in rad/fs
    alpha = 50 * np.eye(3) + np.cos(w * t)[:, None, None] * A
    series = PolarizabilitySeries(time_fs=t, alpha_A3=alpha)
    geo = ["VV", "VH", "unpolarized", "isotropic", "anisotropic", "x(zy)-x"]
    spec = compute_spectrum(series, geo, representation="classical", n_segments=1, window=None)
    ci = channel_intensities(A, geo)
    for name in geo:
        area = spec.integrate(name)
        assert area == pytest.approx(ci[name] * np.var(np.cos(w * t)), rel=1e-6), name
    assert ci["x(zy)-x"] == pytest.approx(A[2, 1] ** 2)


@pytest.fixture(scope="module")
def hcp_cu():
    return bulk("Cu", "hcp", a=2.55, c=4.16) * (2, 2, 2)


def test_harmonic_lines_have_classical_areas(hcp_cu):
    h = harmonic_spectrum(hcp_cu, EMT(), PairPolarizability(), temperature_K=30, representation="classical",
                          fwhm_cm1=2.0, max_frequency_cm1=600, resolution_cm1=0.25)
    f = h.modes.frequencies_cm1
    assert (np.sort(f)[:3] < 5).all() and np.sort(f)[3] > 20  # three acoustic modes at Γ
    active = [r for r in h.line_table if r.get("anisotropic_A6", 0) > 1e-12]
    assert active, "hcp has a Raman-active E2g optical mode"
    # the spectrum's area equals the sum of line areas (Lorentzian tails cut at the grid ends aside)
    total = sum(r["anisotropic_A6"] for r in h.line_table if "anisotropic_A6" in r)
    assert h.spectrum.integrate("anisotropic") == pytest.approx(total, rel=0.02)
    assert h.spectrum.metadata["method"] == "harmonic"


def test_md_and_harmonic_peaks_agree_at_low_temperature(hcp_cu, tmp_path):
    from ionraman.forcefields import ForceField
    from ionraman.md import MDConfig, run_md
    from ionraman.trajectory import read_h5md

    T = 20.0
    harm = harmonic_spectrum(hcp_cu, EMT(), PairPolarizability(), temperature_K=T, representation="classical",
                             fwhm_cm1=3.0, max_frequency_cm1=400, resolution_cm1=0.5)
    from ionraman.harmonic import relax_for_phonons

    relaxed = relax_for_phonons(hcp_cu, EMT())
    ff = ForceField(name="emt", calculator=EMT(), version="ase EMT", cutoff_A=5.0)
    cfg = MDConfig(temperature_K=T, time_ps=8.0, timestep_fs=4.0, equilibrate_ps=0.5, sample_every=2, seed=1)
    run_md(relaxed, ff, cfg, tmp_path / "cu.h5")
    traj = read_h5md(tmp_path / "cu.h5")
    frames = [traj.atoms(k) for k in range(traj.n_frames)]
    alpha = PairPolarizability().predict(frames)
    series = PolarizabilitySeries(time_fs=traj.time_fs, alpha_A3=alpha, temperature_K=T)
    md = compute_spectrum(series, "anisotropic", representation="classical", n_segments=4, max_frequency_cm1=400)
    res = md.metadata["frequency_resolution_cm1"]
    f_md = md.frequency_cm1[np.argmax(md.channel("anisotropic") * (md.frequency_cm1 > 20))]
    f_h = harm.spectrum.frequency_cm1[np.argmax(harm.spectrum.channel("anisotropic"))]
    assert abs(f_md - f_h) <= 1.5 * res, (f_md, f_h, res)
    # and one plot with both
    out = tmp_path / "both.png"
    md.plot(out, others=[harm.spectrum], labels=["MD", "harmonic"], channel="anisotropic")
    assert out.stat().st_size > 2000


def test_mode_symmetry_labels_from_phonopy():
    h = harmonic_spectrum(bulk("Cu", "hcp", a=2.55, c=4.16), EMT(), PairPolarizability(), temperature_K=30)
    rows = {r["label"]: r for r in h.line_table if r["label"]}
    # hcp (P6₃/mmc): the Raman-active optical mode is E2g; B1g is silent
    assert rows["E2g"]["anisotropic_A6"] > 1e-9
    assert rows["B1g"]["anisotropic_A6"] < 1e-20
