"""NeuronStats against a direct float64 computation; Chan merge; save/load."""

from __future__ import annotations

import torch

from interp.stats import NeuronStats, load_stats, save_stats


def _reference(x: torch.Tensor, threshold: float):
    x = x.double()
    return x.mean(0), x.var(0, unbiased=True), (x.abs() > threshold).double().mean(0), x.max(0).values


def test_streaming_matches_direct_computation():
    torch.manual_seed(0)
    chunks = [torch.randn(n, 16) * 3 + 100 for n in (1, 7, 50, 3)]  # large offset tests numerical care
    stats = NeuronStats.empty([5], 16, threshold=101.0)
    for chunk in chunks:
        stats.update(0, chunk)
    mean, var, freq, maximum = _reference(torch.cat(chunks), 101.0)
    assert stats.count.tolist() == [61.0]
    torch.testing.assert_close(stats.mean[0], mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(stats.var[0], var, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats.freq[0], freq)
    torch.testing.assert_close(stats.max[0], maximum.double())


def test_bfloat16_batch_counts_like_its_float32_conversion():
    """A bfloat16 batch gives the statistics of its exact float32 conversion: the threshold is compared in float32,
    not rounded to bfloat16 (0.1 is 0.10009765625 there; activations in between are above it)."""
    torch.manual_seed(2)
    x = (torch.randn(300, 32) * 0.2).bfloat16()
    x[:5] = 0.1000976562  # the bfloat16 value of 0.1: above the float32 threshold, equal to the rounded one
    low, full = NeuronStats.empty([0], 32, 0.1), NeuronStats.empty([0], 32, 0.1)
    low.update(0, x)
    full.update(0, x.float())
    for name in ("count", "mean", "m2", "active", "max"):
        torch.testing.assert_close(getattr(low, name), getattr(full, name), rtol=0, atol=0)
    assert torch.equal(low.active[0], (x.float().abs() > 0.1).double().sum(0))
    assert low.active[0, 0] >= 5


def test_merge_equals_sequential_updates():
    """Merging shards (processes, machines) gives what one process feeding the same batches gets."""
    torch.manual_seed(1)
    data = torch.randn(200, 8) + 5
    sequential, a, b = (NeuronStats.empty([0, 1], 8, 0.5) for _ in range(3))
    for slot in (0, 1):
        for shard, chunk in ((a, data[:37]), (b, data[37:])):
            sequential.update(slot, chunk * (slot + 1))
            shard.update(slot, chunk * (slot + 1))
    merged = a.merge(b)
    for name in ("count", "mean", "m2", "active", "max"):
        torch.testing.assert_close(getattr(merged, name), getattr(sequential, name), rtol=1e-13, atol=1e-12)
    # Different batchings agree to float32 rounding of the within-batch deviations (documented).
    one_batch = NeuronStats.empty([0], 8, 0.5)
    one_batch.update(0, data)
    torch.testing.assert_close(one_batch.m2[0], merged.m2[0], rtol=1e-6, atol=1e-9)


def test_memory_does_not_grow_with_tokens():
    stats = NeuronStats.empty([0], 4, 0.1)
    sizes = []
    for _ in range(3):
        stats.update(0, torch.randn(1000, 4))
        sizes.append(sum(t.numel() for t in (stats.count, stats.mean, stats.m2, stats.active, stats.max)))
    assert sizes[0] == sizes[-1]


def test_save_load_roundtrip(tmp_path):
    stats = NeuronStats.empty([2, 4], 3, 0.25)
    stats.update(1, torch.tensor([[1.0, -2.0, 0.1], [3.0, 0.0, 0.3]]))
    save_stats(tmp_path / "s.safetensors", {"base": stats})
    loaded = load_stats(tmp_path / "s.safetensors")["base"]
    assert loaded.layers == [2, 4] and loaded.threshold == 0.25
    torch.testing.assert_close(loaded.mean, stats.mean)
    torch.testing.assert_close(loaded.max, stats.max)
