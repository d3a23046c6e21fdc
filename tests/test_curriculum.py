"""SortaGrad in qnet.data.BatchLoader: epoch 1 shortest first, later epochs shuffled as usual."""

from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut

from qnet.data import AsrDataset, BatchLoader


def cuts_of(durations):
    return CutSet.from_cuts([dummy_cut(i, duration=d) for i, d in enumerate(durations)])


def batch_durations(loader, epoch):
    sampler = loader._sampler_for(epoch, fresh=True)
    sampler.set_epoch(epoch)
    return [[c.duration for c in batch] for batch in sampler]


def test_sorta_grad_first_epoch_shortest_first():
    durations = [float(1 + (7 * i) % 13) for i in range(40)]
    loader = BatchLoader(cuts_of(durations), AsrDataset(tokenizer=None), max_duration=20.0, shuffle=True,
                         num_buckets=4, seed=3, sorta_grad=True)
    first = [d for batch in batch_durations(loader, 1) for d in batch]
    assert first == sorted(durations)
    assert loader.count_batches(1) == len(batch_durations(loader, 1))
    later = [d for batch in batch_durations(loader, 2) for d in batch]
    assert sorted(later) == sorted(durations) and later != sorted(durations)
    plain = BatchLoader(cuts_of(durations), AsrDataset(tokenizer=None), max_duration=20.0, shuffle=True,
                        num_buckets=4, seed=3)
    assert [d for b in batch_durations(plain, 1) for d in b] != sorted(durations)
