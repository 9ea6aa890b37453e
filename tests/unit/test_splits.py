import random

from bgmfit.data.splits import assign_splits


def _works(n_per_style: int) -> dict[str, str]:
    return {f"{style}-{i}": style for style in ("chorale", "reel", "mass") for i in range(n_per_style)}


def test_every_work_gets_exactly_one_split_in_each_style():
    works = _works(20)
    splits = assign_splits(works, 0.15, 0.15, seed=7)
    assert set(splits) == set(works)
    for style in ("chorale", "reel", "mass"):
        counts = {
            s: sum(1 for w, sp in splits.items() if works[w] == style and sp == s)
            for s in ("train", "val", "test")
        }
        assert counts == {"train": 14, "val": 3, "test": 3}


def test_split_is_deterministic_and_independent_of_input_order():
    works = _works(12)
    shuffled = list(works.items())
    random.Random(3).shuffle(shuffled)
    assert assign_splits(works, 0.2, 0.2, seed=1) == assign_splits(dict(shuffled), 0.2, 0.2, seed=1)
    assert assign_splits(works, 0.2, 0.2, seed=1) != assign_splits(works, 0.2, 0.2, seed=2)


def test_small_styles_still_reach_every_split_and_keep_training_work():
    splits = assign_splits({"a": "x", "b": "x", "c": "x"}, 0.15, 0.15, seed=0)
    assert sorted(splits.values()) == ["test", "train", "val"]
    assert assign_splits({"a": "x"}, 0.3, 0.3, seed=0) == {"a": "train"}
