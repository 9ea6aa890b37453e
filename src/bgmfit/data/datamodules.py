"""Lightning datamodules: graded pairs (method A) and style batches (method B).

Training samples are redrawn every epoch from a generator seeded by the seed
and the epoch number, so a resumed run sees the same data as an unbroken one.
Each training track is drawn as itself or one of its augmented copies
(``features.augment``), evenly; with ``two_views``, each training item also carries a second,
different copy of the same track, for the networks' instance term.
Validation uses every held-out track at once, as the evaluation ranks them.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bgmfit.data.pairs import all_pairs, sample_pairs
from bgmfit.data.store import FeatureStore
from bgmfit.data.triplets import style_batches
from bgmfit.errors import BgmfitError


class PairDataset(Dataset):
    """``(foreground fused, bgm fused, grade, foreground row)`` for fixed pairs of rows.

    The row groups a foreground's pairs, so that validation can rank its BGMs. With
    ``views`` (the second copy of each pair's two tracks, and their track rows), each item
    also has ``(foreground's second copy, bgm's second copy, foreground track, bgm track)``.
    """

    def __init__(
        self,
        fused: np.ndarray,
        pairs: np.ndarray,
        grades: np.ndarray,
        views: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.fused = torch.from_numpy(fused)
        self.pairs = pairs
        self.grades = torch.from_numpy(grades)
        self.views = views

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        foreground, bgm = self.pairs[index]
        item = (self.fused[foreground], self.fused[bgm], self.grades[index], foreground)
        if self.views is None:
            return item
        (fg_view, bgm_view), (fg_track, bgm_track) = self.views[0][index], self.views[1][index]
        return (*item, self.fused[fg_view], self.fused[bgm_view], fg_track, bgm_track)


class PairDataModule(L.LightningDataModule):
    """Balanced graded pairs from the ``features`` outputs; train on train works, validate on val works."""

    def __init__(self, store: FeatureStore, batch_size: int, seed: int, two_views: bool = False) -> None:
        super().__init__()
        self.store, self.batch_size, self.seed, self.two_views = store, batch_size, seed, two_views
        self.train_fused = store.training_inputs("fused")
        for split in ("train", "val"):
            if sample_pairs(store, split, np.random.default_rng(0))[0].size == 0:
                raise BgmfitError(
                    f"no foreground/BGM pairs in the {split} split; method A needs works with both a "
                    "foreground (or narration) and a bgm track in each split"
                )

    def _loader(self, split: str, rng: np.random.Generator, shuffle: bool) -> DataLoader:
        tracks, grades = sample_pairs(self.store, split, rng)
        views = None
        if self.two_views:
            first, second = self.store.two_views(tracks.ravel(), rng)
            pairs, views = first.reshape(tracks.shape), (second.reshape(tracks.shape), tracks)
        else:
            pairs = self.store.pick_copies(tracks.ravel(), rng).reshape(tracks.shape)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return DataLoader(
            PairDataset(self.train_fused, pairs, grades, views),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer else 0
        return self._loader("train", np.random.default_rng([self.seed, epoch]), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Every val foreground against every val BGM, as the evaluation ranks them, so
        # that checkpoint selection sees the same task as the test and far less noise.
        pairs, grades = all_pairs(self.store, "val")
        return DataLoader(PairDataset(self.store.fused, pairs, grades), batch_size=1024, shuffle=False)


class StyleBatchDataset(Dataset):
    """Each item is a whole batch: ``(features of its tracks, their style ids)``.

    With ``views`` (per batch: the second copy of each of its tracks, and the tracks' rows),
    an item also has ``(features of the second copies, track rows)``.
    """

    def __init__(
        self,
        features: np.ndarray,
        style_ids: np.ndarray,
        batches: list[np.ndarray],
        views: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.features = torch.from_numpy(features)
        self.style_ids = torch.from_numpy(style_ids)
        self.batches = batches
        self.views = views

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        rows = torch.from_numpy(self.batches[index])
        item = (self.features[rows], self.style_ids[rows])
        if self.views is None:
            return item
        second, tracks = (torch.from_numpy(a) for a in self.views[index])
        return (*item, self.features[second], tracks)


class TripletDataModule(L.LightningDataModule):
    """Style-balanced batches of catalogue music (BGM and music tracks) for in-batch mining.

    Parameters
    ----------
    store:
        The feature store.
    input_kind:
        ``mfcc_frames`` or ``fused``.
    styles_per_batch, tracks_per_style, batches_per_epoch, seed:
        See :class:`bgmfit.config.TrainTripletParams`.
    two_views:
        Also give each training track a second, different copy (see the module doc).
    """

    def __init__(
        self,
        store: FeatureStore,
        input_kind: str,
        styles_per_batch: int,
        tracks_per_style: int,
        batches_per_epoch: int,
        seed: int,
        two_views: bool = False,
    ) -> None:
        super().__init__()
        self.two_views = two_views
        self.features = store.inputs(input_kind)
        self.train_features = store.training_inputs(input_kind)
        self.style_names = sorted({t.style for t in store.tracks})
        self.style_ids = np.array([self.style_names.index(t.style) for t in store.tracks], dtype=np.int64)
        self.train_style_ids = np.concatenate([self.style_ids, self.style_ids[store.copies_track]])
        self.store = store
        self.shape = (styles_per_batch, tracks_per_style, batches_per_epoch)
        self.seed = seed

    def _batches(self, split: str, n_batches: int, rng: np.random.Generator) -> list[np.ndarray]:
        rows = self.store.music(split)
        styles = [self.store.tracks[i].style for i in rows]
        try:
            return style_batches(rows, styles, self.shape[0], self.shape[1], n_batches, rng)
        except ValueError as exc:
            raise BgmfitError(f"train_triplet: {split} split: {exc}") from None

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer else 0
        rng = np.random.default_rng([self.seed, epoch])
        tracks = self._batches("train", self.shape[2], rng)
        views = None
        if self.two_views:
            pairs = [self.store.two_views(b, rng) for b in tracks]
            batches = [first for first, _ in pairs]
            views = [(second, b) for (_, second), b in zip(pairs, tracks, strict=True)]
        else:
            batches = [self.store.pick_copies(b, rng) for b in tracks]
        # batch_size=None: each dataset item already is a batch.
        return DataLoader(
            StyleBatchDataset(self.train_features, self.train_style_ids, batches, views), batch_size=None
        )

    def val_dataloader(self) -> DataLoader:
        # One batch of the whole val catalogue, so that checkpoint selection ranks the
        # way the evaluation does (MAP@10 over every held-out track). Drawing a batch
        # first checks that the split has triplets at all.
        self._batches("val", 1, np.random.default_rng(0))
        return DataLoader(
            StyleBatchDataset(self.features, self.style_ids, [self.store.music("val")]), batch_size=None
        )
