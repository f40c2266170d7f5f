"""Measured spectra: readers, the shared preprocessing pipeline and the comparison with simulation."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ionraman.errors import InputError
from ionraman.experiment import (
    ComparisonResult,
    Preprocessing,
    bose_reduce,
    broadening_kernel,
    compare,
    estimate_noise,
    instrument_broadening,
    read_spectrum,
    voigt_fwhm,
    whitaker_hayes_despike,
)
from ionraman.fingerprint import low_frequency_fraction
from ionraman.raman import RamanSpectrum, bose_einstein, laser_factor, lorentzian_broadened_lines, trapezoid_weights

DATA = Path(__file__).resolve().parent / "data" / "experiment"
T = 300.0


def lor(x, x0, fwhm):
    g = 0.5 * fwhm
    return g * g / ((x - x0) ** 2 + g * g)


def known_reduced(f):
    """χ''(ν̃): a Lorentzian central peak and three Lorentzian bands (arbitrary units)."""
    return 1000 * lor(f, 0, 20) + 600 * lor(f, 150, 10) + 400 * lor(f, 230, 12) + 300 * lor(f, 330, 14)


def baseline_poly(f):
    return 100 + 0.05 * f + 1e-5 * f**2


SPIKE_IDX = [73, 231, 458, 611, 818]  # 231 (ν̃ = 233) sits on the flank of the 230 cm⁻¹ band
SPIKE_AMP = [800.0, 1500.0, 400.0, 2500.0, 1000.0]
NOISE = 2.0


def synthetic_measurement(seed=1):
    f = np.arange(2.0, 1501.0, 1.0)
    chi = known_reduced(f)
    stokes = (bose_einstein(f, T) + 1.0) * chi
    spikes = np.zeros_like(f)
    spikes[SPIKE_IDX] = SPIKE_AMP
    rng = np.random.default_rng(seed)
    counts = stokes + baseline_poly(f) + spikes + rng.normal(0.0, NOISE, f.size)
    meas = RamanSpectrum(f, {"intensity": counts}, {}, T, "stokes", {"origin": "measured", "source": "synthetic.txt"})
    return f, chi, meas


PIPE = Preprocessing(notch_cm1=10.0, omega_max_cm1=1000.0, baseline="arpls", baseline_params={"lam": 1e9})


# =========================================================================== the synthetic measurement


@pytest.mark.parametrize("seed", [1, 2])
def test_pipeline_recovers_known_reduced_spectrum(seed):
    f, chi, meas = synthetic_measurement(seed)
    out = PIPE.apply(meas)
    pre = out.metadata["preprocessing"]
    assert out.representation == "reduced"
    # every spike found, nothing else touched
    assert pre["n_spikes"] == {"intensity": 5}
    assert pre["n_points_replaced"] == {"intensity": 5}
    assert pre["steps"] == ["despike", "crop", "baseline (arpls)", "bose reduction (T = 300 K)", "normalize (area)"]
    g = out.frequency_cm1
    assert g[0] == 10.0 and g[-1] == 1000.0
    # the recovered χ'' against the known one, both normalised to unit area on 10–1000 cm⁻¹
    truth = np.interp(g, f, chi)
    truth /= trapezoid_weights(g, 10, 1000) @ truth
    y = out.channel("intensity")
    rel_l2 = np.linalg.norm(y - truth) / np.linalg.norm(truth)
    assert rel_l2 < 0.05
    assert abs(trapezoid_weights(g, 10, 1000) @ y - 1.0) < 1e-12
    # the spikes are gone: no point deviates by more than 3 % of the maximum
    assert np.max(np.abs(y - truth)) < 0.03 * truth.max()
    # the baseline that was removed is the polynomial one within a few counts
    bl = pre["baseline"]
    assert np.max(np.abs(bl["baseline"]["intensity"] - baseline_poly(bl["frequency_cm1"]))) < 5.0
    # F_LF within ±0.02 of the true value
    true_spec = RamanSpectrum(f, {"intensity": chi}, {}, T, "reduced")
    F_true = low_frequency_fraction(true_spec, "intensity", None, 100, 10, 1000).value
    F = low_frequency_fraction(out, "intensity", None, 100, 10, 1000).value
    assert F_true == pytest.approx(0.2292, abs=1e-3)
    assert abs(F - F_true) < 0.02
    # the noise estimated from the Savitzky–Golay residual is the injected σ (before reduction)
    assert pre["noise_estimate"]["intensity"]["median_sigma"] == pytest.approx(NOISE, rel=0.15)


def test_despiking_alone():
    f, chi, meas = synthetic_measurement(3)
    y = meas.channel("intensity")
    fixed, mask, n = whitaker_hayes_despike(y, threshold=7, window=3)
    assert n == 5
    assert np.array_equal(np.flatnonzero(mask), SPIKE_IDX)
    clean = y.copy()
    clean[SPIKE_IDX] -= SPIKE_AMP
    # replaced by the mean of the non-spike neighbours: within a few noise σ (the flank spike within 3 %)
    for i in SPIKE_IDX:
        assert abs(fixed[i] - clean[i]) < max(5 * NOISE, 0.03 * clean[i])
    # narrow intense bands without spikes are left alone, even noise-free (the plain |z| > 7 rule would flag them)
    smooth = (bose_einstein(f, T) + 1.0) * chi + baseline_poly(f)
    assert whitaker_hayes_despike(smooth)[2] == 0
    # a spike on the first and on the last point
    flat = 100 + np.random.default_rng(0).normal(0, 1, 300)
    flat[0] += 400
    flat[-1] += 400
    out, mask, n = whitaker_hayes_despike(flat)
    assert n == 2 and mask[0] and mask[-1] and abs(out[0] - 100) < 5


def test_noise_estimate_of_white_noise():
    x = np.linspace(0, 1000, 2001)
    y = 500 * lor(x, 400, 30) + np.random.default_rng(5).normal(0, 3.0, x.size)
    sig = estimate_noise(y)
    assert np.median(sig) == pytest.approx(3.0, rel=0.1)


# =========================================================================== Bose reduction


def test_bose_reduction_inverts_bose_weighting_exactly():
    f = np.linspace(1.0, 900.0, 900)
    chi = known_reduced(f)
    n1 = bose_einstein(f, T) + 1.0
    stokes = RamanSpectrum(f, {"intensity": chi * n1}, {"intensity": 0.01 * chi * n1}, T, "stokes")
    red = bose_reduce(stokes)
    assert red.representation == "reduced"
    np.testing.assert_allclose(red.channel("intensity"), chi, rtol=1e-12, atol=0)
    np.testing.assert_allclose(red.error("intensity"), 0.01 * chi, rtol=1e-12)
    # the pipeline with only this step does the same, for a measured and for a simulated spectrum
    only = Preprocessing(despike=False, estimate_noise=False, notch_cm1=None, normalize="none")
    for origin in ("measured", "simulated"):
        out = only.apply(stokes, origin=origin)
        np.testing.assert_allclose(out.channel("intensity"), chi, rtol=1e-12, atol=0)
    # with a laser: I_S = (n+1)·L·χ'' and the laser factor divided out; kept with laser_factor=False
    L = laser_factor(f, 532.0)
    las = RamanSpectrum(f, {"intensity": chi * n1 * L}, {}, T, "stokes", {"laser_wavelength_nm": 532.0})
    np.testing.assert_allclose(bose_reduce(las).channel("intensity"), chi, rtol=1e-12)
    keep = Preprocessing(despike=False, estimate_noise=False, notch_cm1=None, normalize="none", laser_factor=False)
    np.testing.assert_allclose(keep.apply(las).channel("intensity"), chi * L, rtol=1e-12)
    # a reduced spectrum is left as it is; a missing temperature is an InputError
    assert bose_reduce(red) is red
    with pytest.raises(InputError, match="temperature"):
        bose_reduce(RamanSpectrum(f, {"intensity": chi}, {}, float("nan"), "stokes"))
    assert bose_reduce(RamanSpectrum(f, {"intensity": chi * n1}, {}, float("nan"), "stokes"), 300.0).temperature_K == 300.0


# =========================================================================== readers


def test_wavelength_input_converts_to_raman_shift():
    expected = 1e7 / 532.0 - 1e7 / 545.07
    assert expected == pytest.approx(450.725, abs=1e-3)
    s = read_spectrum(DATA / "wavelength_nm.csv", laser_wavelength_nm=532)
    f, y = s.frequency_cm1, s.channel("intensity")
    assert s.metadata["x_unit"] == "nm" and s.metadata["x_unit_from"] == "header"
    assert f[np.argmax(y)] == pytest.approx(expected, abs=1e-9)
    assert np.all(np.diff(f) > 0)
    assert f[0] == pytest.approx(1e7 / 532 - 1e7 / 540.0)
    assert s.representation == "stokes" and s.metadata["laser_wavelength_nm"] == 532.0
    # the laser wavelength from the header line "# excitation 532 nm"
    s2 = read_spectrum(DATA / "wavelength_nm.csv")
    assert s2.metadata["laser_wavelength_from"] == "header"
    np.testing.assert_allclose(s2.frequency_cm1, f)
    # 785 nm excitation moves every shift
    s3 = read_spectrum(DATA / "wavelength_nm.csv", laser_wavelength_nm=785.0)
    assert s3.frequency_cm1[0] == pytest.approx(1e7 / 785 - 1e7 / 540.0)


def test_wavelength_without_laser_is_an_input_error(tmp_path):
    p = tmp_path / "lambda.txt"
    p.write_text("Wavelength (nm)\tCounts\n540.0\t1\n541.0\t2\n542.0\t3\n")
    with pytest.raises(InputError, match=r"lambda\.txt.*laser_wavelength_nm"):
        read_spectrum(p)
    s = read_spectrum(p, x_unit="nm", laser_wavelength_nm=532)
    assert s.frequency_cm1[0] == pytest.approx(1e7 / 532 - 1e7 / 540)
    # explicit cm-1 overrides the header
    assert read_spectrum(p, x_unit="cm-1").frequency_cm1[0] == 540.0


@pytest.mark.parametrize(
    "name, delimiter, decimal_comma, unit_from",
    [
        ("comma_header.csv", "comma", False, "header"),
        ("semicolon_decimal_comma.csv", "semicolon", True, "header"),
        ("tab_wire_export.txt", "tab", False, "assumed"),
        ("whitespace_labspec.txt", "whitespace", False, "assumed"),
    ],
)
def test_delimiter_and_header_sniffing(name, delimiter, decimal_comma, unit_from):
    s = read_spectrum(DATA / name, temperature_K=295)
    x = np.arange(40.0, 400.1, 4.0)
    expected = np.round(200 + 1000 * lor(x, 150, 10) + 300 * lor(x, 60, 30) + 0.5 * x, 1)
    np.testing.assert_allclose(s.frequency_cm1, x)
    np.testing.assert_allclose(s.channel("intensity"), expected, atol=1e-9)
    m = s.metadata
    assert (m["delimiter"], m["decimal_comma"], m["x_unit"], m["x_unit_from"]) == (delimiter, decimal_comma, "cm-1", unit_from)
    assert m["origin"] == "measured" and m["format"] == "text" and m["source"].endswith(name)
    assert s.representation == "stokes" and s.temperature_K == 295.0
    assert bool(m["warnings"]) == (unit_from == "assumed")


def test_labspec_header_gives_the_laser_but_not_the_x_unit():
    m = read_spectrum(DATA / "whitespace_labspec.txt").metadata
    assert m["laser_wavelength_nm"] == 532.17 and m["laser_wavelength_from"] == "header"
    assert m["x_unit"] == "cm-1"  # "Laser (nm)" does not make x a wavelength


def test_multi_column_selection_and_error_column(tmp_path):
    p = tmp_path / "multi.tsv"
    rows = "\n".join(f"{x}\t{2 * x}\t{3 * x}\t{0.1 * x}" for x in (10.0, 20.0, 30.0, 40.0))
    p.write_text("shift\tsampleA\tsampleB\tsampleB_err\n" + rows + "\n")
    with pytest.raises(InputError, match=r"multi\.tsv.*column="):
        read_spectrum(p)
    a = read_spectrum(p, column="sampleA")
    np.testing.assert_allclose(a.channel("intensity"), [20, 40, 60, 80])
    b = read_spectrum(p, column=2, error_column="sampleB_err")
    np.testing.assert_allclose(b.channel("intensity"), [30, 60, 90, 120])
    np.testing.assert_allclose(b.error("intensity"), [1, 2, 3, 4])
    assert b.metadata["column"] == "sampleB" and b.metadata["error_column"] == "sampleB_err"
    with pytest.raises(InputError, match="no column named 'nope'"):
        read_spectrum(p, column="nope")
    with pytest.raises(InputError, match="out of range"):
        read_spectrum(p, column=4)
    q = tmp_path / "with_err.csv"
    q.write_text("shift,counts,sigma\n1,5,0.5\n2,6,0.6\n3,7,0.7\n")
    np.testing.assert_allclose(read_spectrum(q).error("intensity"), [0.5, 0.6, 0.7])


def test_sorting_duplicates_and_antistokes(tmp_path):
    p = tmp_path / "as.csv"
    p.write_text("# both sides of the laser line\n30,3\n20,2\n10,1\n10,1\n-10,0.5\n-20,0.25\n")
    s = read_spectrum(p, temperature_K=300)
    np.testing.assert_allclose(s.frequency_cm1, [-20, -10, 10, 20, 30])
    np.testing.assert_allclose(s.channel("intensity"), [0.25, 0.5, 1, 2, 3])
    m = s.metadata
    assert m["n_duplicates_dropped"] == 1 and m["n_antistokes_points"] == 2 and m["antistokes"]
    assert any("anti-Stokes" in w for w in m["warnings"])
    # the notch removes them
    out = Preprocessing(despike=False, estimate_noise=False, notch_cm1=10, normalize="none").apply(s)
    np.testing.assert_allclose(out.frequency_cm1, [10, 20, 30])


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "empty"),
        ("# only a comment\n\n", "empty"),
        ("100\n101\n102\n", "one column"),
        ("Raman shift\nno numbers here\nat all\n", "no numeric rows"),
        ("100,1\n101,nan\n102,3\n", r"line 2, field 2.*not a finite number"),
        ("100\t1\n101\tNaN\n", r"line 2, field 2"),
        ("1,1\n2,1\n3,1\n2,1\n1,1\n", r"line 4.*not monotonic"),
        ("1,2\n3,4,5\n6,7\n", r"line 2 has 3 fields instead of 2"),
        ("x,y\n1,2\nfoo,3\n", r"line 3, field 1: 'foo' is not a number"),
        ("1,5\n", "only 1 numeric row"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, content, match):
    p = tmp_path / "broken_spectrum.csv"
    p.write_text(content)
    with pytest.raises(InputError, match=match) as exc:
        read_spectrum(p)
    assert "broken_spectrum.csv" in str(exc.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match="nothere.txt: no such file"):
        read_spectrum(tmp_path / "nothere.txt")
    b = tmp_path / "blob.dat"
    b.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(InputError, match="blob.dat: is a binary file"):
        read_spectrum(b)
    with pytest.raises(InputError, match="x_unit"):
        read_spectrum(DATA / "comma_header.csv", x_unit="eV")


def test_simulated_csv_goes_through_the_same_entry_point(tmp_path):
    f = np.arange(0.0, 500.0, 1.0)
    sim = RamanSpectrum(
        f, {"VV": lor(f, 0, 20), "unpolarized": 2 * lor(f, 0, 20)}, {"unpolarized": 0.01 + 0 * f}, 450.0, "classical",
        {"method": "md", "n_segments": 4},
    )
    p = sim.to_csv(tmp_path / "spectrum.csv")
    s = read_spectrum(p, temperature_K=300)
    assert s.representation == "classical" and s.temperature_K == 450.0  # the stored temperature wins
    assert s.channel_names == ["VV", "unpolarized"]
    assert s.metadata["origin"] == "simulated" and s.metadata["method"] == "md"
    np.testing.assert_allclose(s.channel("unpolarized"), 2 * lor(f, 0, 20), rtol=1e-11)
    one = read_spectrum(p, column="unpolarized")
    assert one.channel_names == ["unpolarized"] and "unpolarized" in one.errors
    with pytest.raises(InputError, match="always the Raman shift"):
        read_spectrum(p, x_unit="nm")


def test_spc_reader():
    pytest.importorskip("spc_io")
    s = read_spectrum(DATA / "raman_shift.spc", temperature_K=300)
    x = np.arange(40.0, 400.1, 4.0)
    expected = np.round(200 + 1000 * lor(x, 150, 10) + 300 * lor(x, 60, 30) + 0.5 * x, 1)
    np.testing.assert_allclose(s.frequency_cm1, x)
    np.testing.assert_allclose(s.channel("intensity"), expected, rtol=1e-6)  # stored as float32
    m = s.metadata
    assert (m["format"], m["spc_xtype"], m["x_unit"], m["x_unit_from"]) == ("spc", "XRAMANS", "cm-1", "file")


def test_spc_with_wavelength_axis_and_several_subfiles(tmp_path):
    spc_io = pytest.importorskip("spc_io")
    from spc_io.low_level.headers.fxytype import Fxtype

    lam = np.linspace(540.0, 550.0, 101)
    spc = spc_io.SPC(xarray=lam)
    spc.add_subfile(yarray=np.exp(-0.5 * ((lam - 545.0) / 0.5) ** 2))
    spc.add_subfile(yarray=3 * np.exp(-0.5 * ((lam - 545.0) / 0.5) ** 2))
    raw = spc.to_spc_raw()
    raw.main_header.fxtype = Fxtype("XNMETR")
    p = tmp_path / "two.spc"
    p.write_bytes(raw.to_bytes())
    with pytest.raises(InputError, match=r"two\.spc: holds 2 spectra"):
        read_spectrum(p, laser_wavelength_nm=532)
    s = read_spectrum(p, laser_wavelength_nm=532, column="mean")
    assert s.frequency_cm1[0] == pytest.approx(1e7 / 532 - 1e7 / 540, rel=1e-6)
    assert s.channel("intensity").max() == pytest.approx(2.0, rel=1e-6)
    assert read_spectrum(p, laser_wavelength_nm=532, column=1).channel("intensity").max() == pytest.approx(3.0, rel=1e-6)
    bad = tmp_path / "bad.spc"
    bad.write_bytes(b"not an spc file at all")
    with pytest.raises(InputError, match=r"bad\.spc: not a readable \.spc file"):
        read_spectrum(bad)


def test_wdf_reader_adapter_and_missing_package(tmp_path, monkeypatch):
    p = tmp_path / "map.wdf"
    p.write_bytes(b"WDF1")

    class Unit:
        name = "RamanShift"

    class FakeReader:  # the attributes renishawWiRE.WDFReader exposes
        def __init__(self, path):
            self.xdata = np.linspace(500.0, 20.0, 25).astype(np.float32)  # WiRE stores x descending
            self.spectra = np.stack([np.linspace(1, 25, 25), np.linspace(3, 75, 25)]).reshape(1, 2, 25)
            self.xlist_unit = Unit()
            self.laser_length = 785.0
            self.title = "test map"

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "renishawWiRE", types.SimpleNamespace(WDFReader=FakeReader))
    with pytest.raises(InputError, match=r"map\.wdf: holds 2 spectra"):
        read_spectrum(p)
    s = read_spectrum(p, column=1)
    assert s.frequency_cm1[0] == pytest.approx(20.0) and s.channel("intensity")[0] == pytest.approx(75.0)
    assert s.metadata["laser_wavelength_nm"] == 785.0 and s.metadata["laser_wavelength_from"] == "file"
    assert s.metadata["format"] == "wdf" and s.metadata["x_unit_from"] == "file"
    monkeypatch.setitem(sys.modules, "renishawWiRE", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"map\.wdf: reading Renishaw \.wdf files needs the package renishawWiRE"):
        read_spectrum(p)


# =========================================================================== simulation through the same pipeline


def simulated_classical():
    f = np.arange(0.0, 1200.0, 1.0)
    icl = 1500 * lor(f, 0, 30) + 400 * lor(f, 150, 10) + 250 * lor(f, 230, 12) + 200 * lor(f, 330, 14)
    err = 0.02 * icl + 0.1
    return RamanSpectrum(f, {"unpolarized": icl}, {"unpolarized": err}, T, "classical", {"method": "md", "source": "md.csv"})


def test_classical_and_stokes_simulations_give_the_same_FLF(tmp_path):
    cl = simulated_classical()
    st = cl.as_representation("stokes")
    pipe = Preprocessing(
        notch_cm1=10, omega_max_cm1=900, broadening="gaussian", broadening_fwhm_cm1=3.0,
        baseline="arpls", baseline_params={"lam": 1e9}, smoothing_window=7, step_cm1=2.0,
    )
    a, b = pipe.apply(cl), pipe.apply(st)
    assert a.representation == b.representation == "reduced"
    assert "alignment (classical → stokes)" in a.metadata["preprocessing"]["steps"]
    Fa = low_frequency_fraction(a, "unpolarized", None, 100, 10, 900).value
    Fb = low_frequency_fraction(b, "unpolarized", None, 100, 10, 900).value
    assert abs(Fa - Fb) < 1e-3
    np.testing.assert_allclose(a.frequency_cm1, np.arange(10.0, 900.1, 2.0))
    # the measured-like Stokes spectrum written as a plain two-column file and read back as a measurement
    p = tmp_path / "measured_like.txt"
    np.savetxt(p, np.column_stack([st.frequency_cm1[1:], st.channel("unpolarized")[1:]]), header="Raman shift (cm-1)  counts")
    meas = read_spectrum(p, temperature_K=T)
    no_broadening = Preprocessing(notch_cm1=10, omega_max_cm1=900, baseline="arpls", baseline_params={"lam": 1e9})
    c = no_broadening.apply(cl)
    d = no_broadening.apply(meas)
    assert d.metadata["preprocessing"]["n_spikes"] == {"intensity": 0}
    Fc = low_frequency_fraction(c, "unpolarized", None, 100, 10, 900).value
    Fd = low_frequency_fraction(d, "intensity", None, 100, 10, 900).value
    assert abs(Fc - Fd) < 1e-3


def test_segments_and_errors_are_carried_through():
    cl = simulated_classical()
    rng = np.random.default_rng(2)
    segs = cl.channel("unpolarized") * (1 + 0.05 * rng.standard_normal((6, cl.frequency_cm1.size)))
    with_segs = RamanSpectrum(
        cl.frequency_cm1, {"unpolarized": segs.mean(axis=0)}, {"unpolarized": segs.std(axis=0, ddof=1) / math.sqrt(6)},
        T, "classical", {"method": "md", "overlap_variance_factor": 1.0}, {"unpolarized": segs},
    )
    pipe = Preprocessing(notch_cm1=10, omega_max_cm1=900, broadening="lorentzian", broadening_fwhm_cm1=2.0, step_cm1=1.0)
    out = pipe.apply(with_segs)
    assert out.segment_spectra["unpolarized"].shape == (6, out.frequency_cm1.size)
    np.testing.assert_allclose(out.segment_spectra["unpolarized"].mean(axis=0), out.channel("unpolarized"), rtol=1e-10)
    r = low_frequency_fraction(out, "unpolarized", None, 100, 10, 900)
    assert r.error_method.startswith("jackknife over 6") and 0 < r.error < 0.05
    assert np.isfinite(out.error("unpolarized")).all()


# =========================================================================== instrument broadening


def test_broadening_conserves_area_and_gives_the_voigt_width():
    grid = np.arange(0.0, 800.0, 0.05)
    fl, fg = 4.0, 6.0
    lines = lorentzian_broadened_lines([400.0], [1.0], grid, fl)
    spec = RamanSpectrum(grid, {"I": lines}, {"I": np.full(grid.size, 1e-3)}, T, "stokes")
    out = instrument_broadening(spec, fg, "gaussian")
    area_in = np.trapezoid(lines, grid)
    area_out = np.trapezoid(out.channel("I"), out.frequency_cm1)
    assert abs(area_out / area_in - 1.0) < 1e-3

    def fwhm(x, y):
        i = int(np.argmax(y))
        half = 0.5 * y[i]
        left = np.interp(half, y[: i + 1], x[: i + 1])
        right = np.interp(half, y[i:][::-1], x[i:][::-1])
        return right - left

    assert fwhm(grid, lines) == pytest.approx(fl, rel=1e-3)
    expected = voigt_fwhm(fl, fg)
    assert expected == pytest.approx(0.5346 * 4 + math.sqrt(0.2166 * 16 + 36))
    assert fwhm(out.frequency_cm1, out.channel("I")) == pytest.approx(expected, rel=0.02)
    # Lorentzian ⊗ Lorentzian is a Lorentzian of summed widths
    out_l = instrument_broadening(spec, 3.0, "lorentzian")
    assert fwhm(out_l.frequency_cm1, out_l.channel("I")) == pytest.approx(fl + 3.0, rel=0.02)
    assert abs(np.trapezoid(out_l.channel("I"), grid) / area_in - 1.0) < 1e-3
    # errors: σ_out² = Σ k_j² σ² for independent points
    k = broadening_kernel(fg, 0.05, "gaussian")
    assert out.error("I")[8000] == pytest.approx(1e-3 * math.sqrt(np.sum(k * k)), rel=1e-9)
    assert k.sum() == pytest.approx(1.0) and k.size % 2 == 1


def test_broadening_of_a_non_uniform_grid_and_narrow_kernels():
    f = np.concatenate([np.arange(0, 100, 0.5), np.arange(100, 600, 1.0)])
    y = 1000 * lor(f, 300, 8) + 50 * lor(f, 0, 40)
    s = RamanSpectrum(f, {"I": y}, {}, T, "stokes")
    out = instrument_broadening(s, 0.2, "gaussian")  # kernel narrower than the grid step
    assert np.allclose(np.diff(out.frequency_cm1), 0.5)
    area = trapezoid_weights(f, 0, 599) @ y
    assert trapezoid_weights(out.frequency_cm1, 0, 599) @ out.channel("I") == pytest.approx(area, rel=1e-3)


# =========================================================================== comparison


def test_compare_measurement_with_simulation(tmp_path):
    f, chi, meas = synthetic_measurement(4)
    fs = np.arange(1.0, 1200.0, 1.0)
    sim = RamanSpectrum(fs, {"unpolarized": (bose_einstein(fs, T) + 1) * known_reduced(fs)}, {}, T, "stokes", {"method": "md"})
    res = compare(meas, sim, PIPE, cutoff_cm1=100, n_bootstrap=24)
    assert isinstance(res, ComparisonResult)
    assert res.experiment.representation == res.simulation.representation == "reduced"
    assert (res.omega_min_cm1, res.omega_max_cm1) == (10.0, 1000.0)
    d = res.to_dict()
    json.dumps(d)
    assert set(d) >= {"experiment", "simulation", "cutoff_cm1", "pipeline"}
    assert d["cutoff_cm1"] == 100.0 and d["pipeline"]["baseline"] == "arpls"
    Fe, Fs = d["experiment"]["F_LF"], d["simulation"]["F_LF"]
    assert Fs == pytest.approx(0.2292, abs=0.01)
    assert abs(Fe - Fs) < 0.02
    assert d["experiment"]["n_spikes_removed"] == 5
    assert d["experiment"]["error_method"].startswith("parametric bootstrap over 24")
    assert 1e-5 < d["experiment"]["F_LF_err"] < 0.01
    assert d["simulation"]["channel"] == "unpolarized" and d["experiment"]["channel"] == "intensity"
    assert Preprocessing.from_dict(d["pipeline"]) == PIPE
    png = res.plot(tmp_path / "compare.png")
    assert png.stat().st_size > 10_000
    # first-order propagation of the estimated noise instead of the bootstrap
    res0 = compare(meas, sim, PIPE, n_bootstrap=0)
    assert res0.experiment_flf.error_method == "propagated per-frequency errors"
    assert 0 < res0.experiment_flf.error < 0.01


def test_compare_from_files(tmp_path):
    f, chi, meas = synthetic_measurement(5)
    p = tmp_path / "measured.csv"
    np.savetxt(p, np.column_stack([f, meas.channel("intensity")]), delimiter=",", header="Raman shift (cm-1),counts")
    sim = simulated_classical()
    sp = sim.to_csv(tmp_path / "spectrum.csv")
    res = compare(p, sp, {"baseline": "arpls", "baseline_params": {"lam": 1e9}, "omega_max_cm1": 900}, temperature_K=300, n_bootstrap=0)
    assert res.experiment.metadata["source"] == str(p)
    assert res.simulation_channel == "unpolarized"
    assert not [w for w in res.warnings if "measured at" in w]
    with pytest.raises(InputError, match="temperature"):
        compare(p, sp, n_bootstrap=0)
    hot = RamanSpectrum(sim.frequency_cm1, sim.channels, sim.errors, 600.0, "classical", sim.metadata)
    res2 = compare(p, hot, temperature_K=300, n_bootstrap=0)
    assert any("600 K" in w for w in res2.warnings)
    with pytest.raises(InputError, match="cutoff_cm1"):
        compare(p, sp, temperature_K=300, cutoff_cm1=5000, n_bootstrap=0)
    # a finer simulation grid: the point-based baseline differs unless both are resampled to one grid
    fine_f = np.arange(0.0, 1200.0, 0.5)
    fine = RamanSpectrum(fine_f, {"unpolarized": np.interp(fine_f, sim.frequency_cm1, sim.channel("unpolarized"))}, {}, T, "classical")
    opts = {"baseline": "arpls", "baseline_params": {"lam": 1e9}, "omega_max_cm1": 900}
    assert any("different grid steps" in w for w in compare(p, fine, opts, temperature_K=300, n_bootstrap=0).warnings)
    same = compare(p, fine, {**opts, "step_cm1": 1.0}, temperature_K=300, n_bootstrap=0)
    assert not any("different grid steps" in w for w in same.warnings)
    assert "resample" in same.experiment.metadata["preprocessing"]["steps"]
    np.testing.assert_allclose(same.experiment.frequency_cm1, same.simulation.frequency_cm1)


# =========================================================================== configuration


def test_pipeline_config_round_trip_and_validation():
    p = Preprocessing(baseline="asls", baseline_params={"lam": 1e6, "p": 0.01}, grid_cm1=[10, 20, 30, 40], normalize="max")
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Preprocessing.from_dict(d) == p and p.grid_cm1 == (10.0, 20.0, 30.0, 40.0)
    assert Preprocessing.from_dict(None) == Preprocessing()
    for bad, match in [
        ({"baseline": "magic"}, "not a pybaselines method"),
        ({"normalize": "sum"}, "normalize"),
        ({"broadening": "gaussian"}, "broadening_fwhm_cm1"),
        ({"broadening": "voigt", "broadening_fwhm_cm1": 2}, "broadening"),
        ({"smoothing_window": 4}, "smoothing_window"),
        ({"omega_min_cm1": 500, "omega_max_cm1": 100}, "crop range is empty"),
        ({"grid_cm1": [1, 2, 3], "step_cm1": 1}, "either grid_cm1 or step_cm1"),
        ({"despike_threshold": -1}, "despike_threshold"),
        ({"colour": "red"}, "unknown option 'colour'"),
    ]:
        with pytest.raises(InputError, match=match):
            Preprocessing.from_dict(bad)
    f, chi, meas = synthetic_measurement(1)
    with pytest.raises(InputError, match="rejected baseline_params"):
        Preprocessing(baseline="arpls", baseline_params={"lambda_": 3}).apply(meas)
    with pytest.raises(InputError, match="representation of the spectrum is unknown"):
        Preprocessing().apply(RamanSpectrum(f, {"i": chi}, {}, T, "unknown"))
