"""Claim conformance: one test per step of each method, on tiny tensors."""

import math

import numpy as np
import pytest
import torch

from bgmfit.audio import normalise_loudness
from bgmfit.features.fusion import analyse, fit_length
from bgmfit.features.spectrum import compute_spectrum, mfcc
from bgmfit.index import CosineIndex
from bgmfit.metrics import cosine_distance_matrix
from bgmfit.models.components import ConvTower, FeedForwardBranch, MatchHead, ModulationSpectrum
from bgmfit.models.match_module import MatchModule
from bgmfit.models.mining import constraint_satisfaction, cosine_distances, mine_triplets, triplet_margin_loss
from tests.signals import harmonic_tone

SEGMENTS, COLUMNS = 10, 101


def _match(
    share: bool = False,
    head: str = "concat",
    agreement_columns: tuple[int, ...] = (),
    agreement_sizes: tuple[int, ...] | None = None,
) -> MatchModule:
    return MatchModule(
        COLUMNS, 16, 2, 3, 8, 12, share, 0.0, 1e-3, 0.0, head, agreement_columns, agreement_sizes
    )


# Method A, step 3a: a convolutional structure turns each fused matrix into a deep feature.
def test_conv_tower_slides_over_the_time_axis_into_a_deep_feature(rng):
    tower = ConvTower(COLUMNS, channels=16, depth=2, kernel_size=3, embed_dim=8, dropout=0.0).eval()
    fused = torch.from_numpy(rng.standard_normal((4, SEGMENTS, COLUMNS)).astype(np.float32))
    assert tower(fused).shape == (4, 8)
    assert isinstance(tower.convolutions[0], torch.nn.Conv1d) and tower.convolutions[0].in_channels == COLUMNS
    longer = torch.from_numpy(rng.standard_normal((4, 2 * SEGMENTS, COLUMNS)).astype(np.float32))
    assert tower(longer).shape == (4, 8)  # the kernel slides; the segment count is free


def test_towers_are_shared_only_when_asked():
    shared = _match(share=True)
    assert shared.foreground_tower is shared.bgm_tower
    separate = _match(share=False)
    assert separate.foreground_tower is not separate.bgm_tower


# Method A, steps 3b-3c: concatenation + fully connected layer, then a sigmoid fit in (0, 1).
def test_head_concatenates_deep_features_and_the_module_outputs_a_fit_in_0_1(rng):
    head = MatchHead(embed_dim=8, fused_dim=12, dropout=0.0)
    assert head.fuse[0].in_features == 16 and head.deep_fused(torch.ones(3, 8), torch.ones(3, 8)).shape == (
        3,
        12,
    )
    model = _match().eval()
    fused = torch.from_numpy(rng.standard_normal((5, 2, SEGMENTS, COLUMNS)).astype(np.float32) * 50)
    fit = model(fused[:, 0], fused[:, 1])
    assert fit.shape == (5,) and torch.all((fit > 0) & (fit < 1))
    assert torch.allclose(fit, torch.sigmoid(model.logit(fused[:, 0], fused[:, 1])))


def test_interaction_head_also_feeds_the_product_and_the_gap_of_the_deep_features(rng):
    head = MatchHead(embed_dim=8, fused_dim=12, dropout=0.0, terms="interactions")
    assert head.fuse[0].in_features == 32
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    expected = head.fuse(torch.cat([a, b, a * b, (a - b).abs()], dim=1))
    assert torch.allclose(head.deep_fused(a, b), expected)
    model = _match(head="interactions").eval()
    fused = torch.from_numpy(rng.standard_normal((5, 2, SEGMENTS, COLUMNS)).astype(np.float32))
    fit = model(fused[:, 0], fused[:, 1])
    assert fit.shape == (5,) and torch.all((fit > 0) & (fit < 1))
    with pytest.raises(ValueError, match="terms must be"):
        MatchHead(embed_dim=8, fused_dim=12, dropout=0.0, terms="bilinear")


def test_agreement_columns_pass_through_the_towers_and_reach_the_head_as_a_kernel_of_their_gap(rng):
    model = _match(head="interactions", agreement_columns=(3, 5)).eval()
    fused = torch.from_numpy(rng.standard_normal((4, SEGMENTS, COLUMNS)).astype(np.float32))
    deep = model.embed(fused, "bgm")
    assert deep.shape == (4, 8 + 2)
    assert torch.allclose(deep[:, 8:], fused[:, :, [3, 5]].mean(dim=1))
    head = model.head
    assert head.fuse[0].in_features == 4 * 8 + 2
    a, b = torch.randn(3, 10), torch.randn(3, 10)
    b[0, 8:] = a[0, 8:]  # row 0 agrees on both columns
    b[1:, 8:] = a[1:, 8:] + 1.0  # the others are 100 kernel widths apart
    width = head.log_width.exp()
    kernel = torch.exp(-(((a[:, 8:] - b[:, 8:]) / width) ** 2))
    assert torch.equal(kernel[0], torch.ones(2)) and torch.all(kernel[1:] < 1e-6)
    f, g = a[:, :8], b[:, :8]
    expected = head.fuse(torch.cat([f, g, f * g, (f - g).abs(), kernel], dim=1))
    assert torch.allclose(head.deep_fused(a, b), expected)
    fit = model(fused, fused.flip(0))
    assert fit.shape == (4,) and torch.all((fit > 0) & (fit < 1))


def test_an_agreement_profile_reaches_the_head_as_a_kernel_of_its_cosine_gap(rng):
    # Column 3 alone, then columns 10..13 as one profile (as the 24 key correlations).
    model = _match(head="interactions", agreement_columns=(3, 10, 11, 12, 13), agreement_sizes=(1, 4)).eval()
    fused = torch.from_numpy(rng.standard_normal((4, SEGMENTS, COLUMNS)).astype(np.float32))
    assert torch.allclose(model.embed(fused, "bgm")[:, 8:], fused[:, :, [3, 10, 11, 12, 13]].mean(dim=1))
    head = model.head
    assert head.fuse[0].in_features == 4 * 8 + 2 and head.log_width.shape == (2,)
    a, b = torch.randn(3, 13), torch.randn(3, 13)
    b[:, 8] = a[:, 8]  # the scalar agrees in every row
    b[0, 9:] = 3.0 * a[0, 9:]  # row 0: the same profile, louder
    b[1, 9:] = -a[1, 9:]  # row 1: the opposite profile
    kernels = head.agreement_kernels(a, b)
    assert torch.equal(kernels[:, 0], torch.ones(3))
    gap = 1.0 - torch.nn.functional.cosine_similarity(a[2, 9:], b[2, 9:], dim=0)
    assert torch.allclose(
        kernels[:, 1],
        torch.exp(
            -((torch.stack([torch.tensor(0.0), torch.tensor(2.0), gap]) / head.log_width[1].exp()) ** 2)
        ),
        atol=1e-5,
    )
    assert kernels[0, 1] > 0.999 and kernels[1, 1] < 1e-6
    f, g = a[:, :8], b[:, :8]
    assert torch.allclose(
        head.deep_fused(a, b), head.fuse(torch.cat([f, g, f * g, (f - g).abs(), kernels], dim=1))
    )
    with pytest.raises(ValueError, match="agreement_sizes"):
        _match(agreement_columns=(3, 10, 11), agreement_sizes=(1, 4))


def test_embed_exposes_each_side_tower(rng):
    model = _match().eval()
    fused = torch.from_numpy(rng.standard_normal((2, SEGMENTS, COLUMNS)).astype(np.float32))
    assert torch.equal(model.embed(fused, "bgm"), model.bgm_tower(fused))
    with pytest.raises(ValueError, match="side must be"):
        model.embed(fused, "left")


# Method B, step 1: frame the audio, MFCC per frame, concatenate the first N frames.
def test_method_b_feature_is_the_first_n_mfcc_frames(features_params):
    y = harmonic_tone(220.0, seconds=features_params.clip_seconds)
    frames = analyse(y, features_params).mfcc_frames
    # What the features see: the analysed length, at the analysed loudness.
    analysed = normalise_loudness(
        fit_length(y, features_params), features_params.sample_rate, features_params.loudness_lufs
    )
    spec = compute_spectrum(
        analysed,
        features_params.sample_rate,
        features_params.n_fft,
        features_params.hop_length,
        features_params.n_mels,
    )
    expected = mfcc(spec, features_params.frames_n_mfcc)[: features_params.frames_n]
    np.testing.assert_allclose(frames, expected, rtol=1e-5)
    branch = FeedForwardBranch(frames.size, 32, 8, 0.0)
    assert branch.layers[1].in_features == features_params.frames_n * features_params.frames_n_mfcc


# Method B, step 2: one feed-forward branch, shared by anchor, positive and negative.
def test_branch_output_is_unit_length(rng):
    branch = FeedForwardBranch(40, 16, 8, 0.0)
    out = branch(torch.from_numpy(rng.standard_normal((6, 4, 10)).astype(np.float32)))
    assert out.shape == (6, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(6))


def test_modulation_front_gives_each_coefficients_spectrum_wherever_the_pattern_starts():
    frames, coefficients = 64, 3
    t = torch.arange(frames, dtype=torch.float32)
    series = torch.stack(
        [torch.cos(2 * math.pi * 8 * t / frames), 2 + 0 * t, torch.cos(2 * math.pi * 5 * t / frames)], 1
    )
    out = ModulationSpectrum()(series[None])
    assert out.shape == (1, frames // 2 + 1, coefficients)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 2.0, 0.0]), atol=1e-5, rtol=0)  # row 0: the mean
    assert out[0, 1:, 0].argmax() + 1 == 8 and out[0, 1:, 2].argmax() + 1 == 5
    assert torch.all(out[0, 1:, 1].abs() < 1e-5)  # a constant has no modulation
    shifted = ModulationSpectrum()(series.roll(11, dims=0)[None])
    torch.testing.assert_close(shifted, out, atol=1e-4, rtol=0)
    branch = FeedForwardBranch(frames * coefficients, 16, 8, 0.0, modulation_frames=frames)
    assert branch.layers[1].in_features == (frames // 2 + 1) * coefficients and branch.in_features == 192
    assert branch(series[None]).shape == (1, 8)


def test_timbre_statistics_join_the_style_at_their_weight_and_survive_a_save(rng, tmp_path):
    from bgmfit.models.export import load_network, save_network
    from bgmfit.models.triplet_module import TripletModule

    frames, coefficients, weight = 12, 4, 0.05
    network = TripletModule(
        frames * coefficients,
        16,
        8,
        0.0,
        0.2,
        "semi-hard",
        1e-3,
        0.0,
        frames,
        timbre_weight=weight,
        timbre_columns=coefficients,
    ).eval()
    training = rng.standard_normal((30, frames, coefficients)).astype(np.float32) + 3.0
    network.fit_timbre_centre(training)
    assert torch.allclose(network.timbre_centre[:coefficients], torch.from_numpy(training.mean(axis=(0, 1))))
    queries = torch.from_numpy(rng.standard_normal((5, frames, coefficients)).astype(np.float32))
    with torch.no_grad():
        embedding, style = network(queries), network.branch(queries)
    assert embedding.shape == (5, 8 + 2 * coefficients)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(5))
    # cosine similarity = (style's + weight * timbre statistics') / (1 + weight)
    stats = torch.cat([queries.mean(1), queries.std(1, correction=0)], 1) - network.timbre_centre
    timbre = stats / stats.norm(dim=1, keepdim=True)
    expected = (style @ style.T + weight * timbre @ timbre.T) / (1 + weight)
    torch.testing.assert_close(embedding @ embedding.T, expected, atol=1e-5, rtol=0)
    save_network("triplet", network, tmp_path / "net")
    again = load_network(tmp_path / "net", "test").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(queries), embedding)
    # Without the term a network saves neither its arguments nor its buffer, as every version before it.
    plain = TripletModule(frames * coefficients, 16, 8, 0.0, 0.2, "semi-hard", 1e-3, 0.0, frames).eval()
    assert not any("timbre" in k for k in [*plain.hparams, *plain.state_dict()])
    save_network("triplet", plain, tmp_path / "plain")
    assert load_network(tmp_path / "plain", "test").hparams == plain.hparams
    assert plain(queries).shape == (5, 8)


def test_mining_picks_semi_hard_and_hard_negatives_by_hand():
    # Items 0,1 are style A; 2,3 are style B. Distances from anchor 0: p=1 at 0.3, n=2 at 0.2, n=3 at 0.4.
    d = torch.tensor([[0.0, 0.3, 0.2, 0.4], [0.3, 0.0, 0.9, 0.8], [0.2, 0.9, 0.0, 0.5], [0.4, 0.8, 0.5, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    a, p, n = mine_triplets(d, labels, margin=0.2, strategy="hard")
    first = (a == 0).nonzero().item()
    assert (p[first].item(), n[first].item()) == (1, 2)  # nearest negative
    a, p, n = mine_triplets(d, labels, margin=0.2, strategy="semi-hard")
    first = (a == 0).nonzero().item()
    assert n[first].item() == 3  # nearest negative that is farther than the positive
    loss = triplet_margin_loss(d, a, p, n, margin=0.2)
    assert loss.item() == pytest.approx(
        np.mean(
            [
                max(0, d[x, y] - d[x, z] + 0.2)
                for x, y, z in zip(a.tolist(), p.tolist(), n.tolist(), strict=True)
            ]
        )
    )


def test_constraint_satisfaction_counts_triplets_that_hold():
    d = torch.tensor([[0.0, 0.3, 0.2, 0.4], [0.3, 0.0, 0.9, 0.8], [0.2, 0.9, 0.0, 0.5], [0.4, 0.8, 0.5, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # (a,p,n): (0,1,2) no, (0,1,3) yes, (1,0,2) yes, (1,0,3) yes,
    #          (2,3,0) no, (2,3,1) yes, (3,2,0) no, (3,2,1) yes -> 5 of 8
    assert constraint_satisfaction(d, labels).item() == pytest.approx(5 / 8)
    e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    torch.testing.assert_close(cosine_distances(e), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


# Method B, step 4: cosine distances, sorted ascending, first K.
def test_recommendation_sorts_cosine_distance_ascending_and_keeps_k():
    # The catalogue index's exact search, as /similar and /recommend (method triplet) use it.
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    target = unit(np.array([[1.0, 0.0]]))
    candidates = unit(np.array([[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0], [1.0, 1.0]]))
    rows, distances = CosineIndex(candidates).search(target, 3)
    assert rows[0].tolist() == [1, 3, 0]
    assert np.all(np.diff(distances[0]) >= 0)
    np.testing.assert_allclose(
        distances[0], cosine_distance_matrix(target, candidates)[0, rows[0]], atol=1e-6
    )
    assert CosineIndex(candidates).search(target, 10)[0].shape == (1, 4)
