"""FACE: spectra of surprisal sequences and the four similarity metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import interpolate, signal
from scipy.fft import fft, fftfreq, fftshift

from entropykit.lm import ByteModel
from entropykit.lm.fourier import (
    FACE_METRICS,
    Spectrum,
    face,
    face_metrics,
    spectral_angle,
    spectral_overlap,
    surprisal_spectrum,
)
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig


def face_reference_spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FACE's fft_utils.FFTProcessor._fft (value='norm'), transcribed."""
    n = x.shape[-1]
    freq_x = fftshift(fftfreq(n))
    fft_res = fftshift(fft(x))
    sp = np.abs(fft_res)
    return freq_x[len(freq_x) // 2:], sp[len(sp) // 2:]


def face_reference_metrics(f1, p1, f2, p2):
    """FACE's metrics.py for one pair (interp1d with extrapolation onto linspace(0, .5, 1000))."""
    x = np.linspace(0, 0.5, 1000)
    y1 = interpolate.interp1d(f1, p1, fill_value="extrapolate")(x)
    y2 = interpolate.interp1d(f2, p2, fill_value="extrapolate")(x)
    a, b = np.abs(y1), np.abs(y2)
    so = np.trapezoid(np.amin([a, b], axis=0), x) / np.trapezoid(np.amax([a, b], axis=0), x)
    corr = np.corrcoef(y1, y2)[0, 1]
    from scipy.stats import spearmanr

    spear = spearmanr(y1, y2)[0]
    u1, u2 = y1 / np.linalg.norm(y1), y2 / np.linalg.norm(y2)
    sam = np.arccos(np.dot(u1, u2)) / np.pi
    return {"so": so, "corr": corr, "sam": sam, "spear": spear}


@pytest.mark.parametrize("n", [2, 3, 8, 17, 100, 257])
def test_fft_spectrum_matches_face_code(n: int) -> None:
    x = np.random.default_rng(n).gamma(2.0, 1.5, n)
    f_ref, p_ref = face_reference_spectrum(x)
    sp = surprisal_spectrum(x)
    np.testing.assert_allclose(sp.freq, f_ref, atol=1e-15)
    np.testing.assert_allclose(sp.power, p_ref, rtol=1e-12, atol=1e-12)


def test_periodogram_and_welch_are_scipys() -> None:
    x = np.random.default_rng(0).normal(size=300)
    f, p = signal.periodogram(x)
    sp = surprisal_spectrum(x, method="periodogram")
    np.testing.assert_allclose(sp.freq, f)
    np.testing.assert_allclose(sp.power, p)
    f, p = signal.welch(x, nperseg=64)
    sp = surprisal_spectrum(x, method="welch", nperseg=64)
    np.testing.assert_allclose(sp.power, p)


def test_preprocess_zscore_is_faces() -> None:
    x = np.random.default_rng(1).gamma(2.0, 1.0, 50)
    z = (x - x.mean()) / (x.std() + 1e-6)
    got = surprisal_spectrum(x, preprocess="zscore").power
    np.testing.assert_allclose(got, face_reference_spectrum(z)[1])
    lz = np.log(x + 1)
    lz = (lz - lz.mean()) / (lz.std() + 1e-6)
    got = surprisal_spectrum(x, preprocess="logzs").power
    np.testing.assert_allclose(got, face_reference_spectrum(lz)[1])


@pytest.mark.parametrize("seed", range(4))
def test_metrics_match_face_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = [rng.gamma(2.0, 1.0, int(rng.integers(20, 200))) for _ in range(3)]
    ys = [rng.gamma(2.0, 1.0, int(rng.integers(20, 200))) for _ in range(4)]
    got = face_metrics([surprisal_spectrum(x) for x in xs], [surprisal_spectrum(y) for y in ys])
    assert all(len(v) == 3 for v in got.values())  # pairs up to the shorter set, as FACE
    for i in range(3):
        ref = face_reference_metrics(*face_reference_spectrum(xs[i]), *face_reference_spectrum(ys[i]))
        for k in FACE_METRICS:
            assert got[k][i] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k


def test_hand_computed_overlap_and_angle() -> None:
    g = np.linspace(0, 0.5, 3)
    # trapz(min) = 0.25*(1+1)/2 + 0.25*(1+2)/2 = 0.625; trapz(max) = 0.25*(2+3)/2 + 0.25*(3+2)/2 = 1.25
    assert spectral_overlap(np.array([1.0, 1.0, 2.0]), np.array([2.0, 3.0, 2.0]), g) == pytest.approx(0.5)
    assert spectral_angle(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(0.25)


def test_periodic_and_stationary_sequences_are_separated() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(512)

    def periodic() -> np.ndarray:
        return 3 + 2 * np.sin(2 * np.pi * t / 8 + rng.uniform(0, 6)) + rng.normal(0, 0.3, t.size)

    def noise() -> np.ndarray:
        return 3 + rng.normal(0, 1.5, t.size)

    per = [surprisal_spectrum(periodic()) for _ in range(6)]
    per2 = [surprisal_spectrum(periodic()) for _ in range(6)]
    wht = [surprisal_spectrum(noise()) for _ in range(6)]
    same, diff = face_metrics(per, per2), face_metrics(per, wht)
    assert same["so"].mean() > diff["so"].mean() + 0.1
    assert same["sam"].mean() < diff["sam"].mean()
    # the mean (frequency 0) dominates raw spectra's correlation; FACE's z-score removes it
    zs = [[surprisal_spectrum(f(), preprocess="zscore") for _ in range(6)]
          for f in (periodic, periodic, noise)]
    assert face_metrics(zs[0], zs[1])["corr"].mean() > face_metrics(zs[0], zs[2])["corr"].mean() + 0.5
    peak = per[0].freq[1:][np.argmax(per[0].power[1:])]
    assert peak == pytest.approx(1 / 8)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 30), min_size=4, max_size=80), st.floats(0.1, 10))
def test_metrics_invariant_to_common_scale(xs: list[float], c: float) -> None:
    x = np.asarray(xs) + 0.5
    y = x[::-1].copy() + np.linspace(0, 1, x.size)
    a = face_metrics([surprisal_spectrum(x)], [surprisal_spectrum(y)])
    b = face_metrics([surprisal_spectrum(c * x)], [surprisal_spectrum(c * y)])
    for k in ("so", "sam"):
        assert a[k][0] == pytest.approx(b[k][0], rel=1e-7, abs=1e-9)
    assert 0 <= a["so"][0] <= 1 + 1e-12 and 0 <= a["sam"][0] <= 1


def test_face_on_texts_and_png() -> None:
    torch.manual_seed(0)
    m = ByteModel(ByteGPT(ByteGPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16)))
    r = face(["the cat sat on the mat " * 3, "a b c d e f g"], ["the dog sat " * 4, "x y z w v u"], m)
    assert set(r.summary) == set(FACE_METRICS) and len(r.metrics["so"]) == 2
    assert r.to_dict()["pairs"] == 2
    pytest.importorskip("matplotlib")
    assert r.plot_png()[:4] == b"\x89PNG"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="surprisal must have at least 2"):
        surprisal_spectrum([1.0])
    with pytest.raises(ValueError, match="surprisal must be finite"):
        surprisal_spectrum([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="method must be"):
        surprisal_spectrum([1.0, 2.0], method="dct")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spectra_a must not be empty"):
        face_metrics([], [surprisal_spectrum([1.0, 2.0, 3.0, 4.0])])
    with pytest.raises(TypeError, match=r"spectra_b\[0\] must be a Spectrum"):
        face_metrics([surprisal_spectrum([1.0, 2.0, 3.0, 4.0])], [np.zeros(3)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="texts_a must be a non-empty"):
        face("abc", ["abc"], None)
    assert isinstance(surprisal_spectrum([1.0, 2.0]), Spectrum)


def test_lm_exports_are_the_functions_not_their_modules() -> None:
    import entropykit.lm as lm
    import entropykit.lm.fourier
    import entropykit.lm.loglik_vectors  # noqa: F401 - importing a submodule sets a package attribute
    from entropykit.lm import compress_prompt, fit_power_law, model_map

    assert lm.face is face and callable(model_map) and callable(compress_prompt) and callable(fit_power_law)
    assert lm.detect.__name__ == "entropykit.detect"  # a sibling part re-exported whole stays a module
