"""A trained network as two plain files: its weights, and the config that rebuilds it.

A folder written by :func:`save_network` holds ``network.json`` (which network,
its constructor arguments, a format number and the weights' hash) and
``weights.pt`` (a ``state_dict``: tensors only, read with ``weights_only=True``).
Neither names a Python class, so a registered version outlives the move or
rename of any class; only the network's key (``match``, ``triplet``), its
arguments and its parameter names are the contract.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import lightning as L
import torch

from bgmfit.errors import BgmfitError
from bgmfit.files import read_json, write_json
from bgmfit.models.match_module import MatchModule
from bgmfit.models.triplet_module import TripletModule

FORMAT = 1
CONFIG, WEIGHTS = "network.json", "weights.pt"
#: The class that rebuilds each network today. Renaming or moving one changes only this line.
BUILDERS: dict[str, type[L.LightningModule]] = {"match": MatchModule, "triplet": TripletModule}

_RETRAIN = "retrain it (dvc repro) so that a version this bgmfit can load replaces it"


def weights_sha256(module: torch.nn.Module, config: dict) -> str:
    """sha256 over the network's config and every tensor of its ``state_dict`` (name, dtype, shape, bytes).

    Two trainings that end in the same weights have the same hash, whatever run logged them.
    """
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def network_config(key: str, module: L.LightningModule) -> dict:
    """What rebuilds ``module``: its key and the constructor arguments Lightning saved."""
    if key not in BUILDERS:
        raise ValueError(f"unknown network {key!r}; expected one of {', '.join(BUILDERS)}")
    hparams = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(module.hparams).items()}
    return {"network": key, "hparams": hparams}


def save_network(key: str, module: L.LightningModule, folder: Path) -> str:
    """Write ``module`` to ``folder`` as ``network.json`` + ``weights.pt``; return its weights' hash."""
    config = network_config(key, module)
    sha = weights_sha256(module, config)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, folder / WEIGHTS)
    write_json(folder / CONFIG, {"format": FORMAT, **config, "weights_sha256": sha})
    return sha


def load_network(folder: Path, source: str | None = None) -> L.LightningModule:
    """Rebuild the network saved in ``folder``, on the CPU, in eval mode.

    Parameters
    ----------
    source:
        How to name the network in errors (e.g. ``models:/bgmfit-match/3``); the folder by default.

    Raises
    ------
    BgmfitError
        When the files are missing or torn, or were written by a bgmfit whose network took
        other arguments or parameters: a one-line message that says to retrain.
    """
    source = source or str(folder)
    config = read_json(folder / CONFIG, f"{source} is not a saved bgmfit network; {_RETRAIN}")
    if config.get("format") != FORMAT or config.get("network") not in BUILDERS:
        raise BgmfitError(
            f"{source}: network format {config.get('format')!r} of {config.get('network')!r} is not one "
            f"this bgmfit reads (format {FORMAT} of {', '.join(BUILDERS)}); {_RETRAIN}"
        )
    try:
        module = BUILDERS[config["network"]](**config["hparams"])
    except (TypeError, ValueError) as exc:
        raise BgmfitError(f"{source}: its settings no longer build the network ({exc}); {_RETRAIN}") from None
    try:
        state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
        raise BgmfitError(f"{source}: {WEIGHTS} is not readable ({exc}); {_RETRAIN}") from None
    mismatch = state_mismatch(module, state)
    if mismatch:
        raise BgmfitError(f"{source}: its weights no longer fit the network ({mismatch}); {_RETRAIN}")
    module.load_state_dict(state)
    return module.eval()


def state_mismatch(
    module: torch.nn.Module, state: dict[str, torch.Tensor], where: str = "saved"
) -> str | None:
    """The first parameter whose shape differs between ``state`` (``where``) and ``module``; else ``None``."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    if not differing:
        return None
    name = differing[0]
    return f"{name}: {found.get(name, 'absent')} {where}, {expected.get(name, 'absent')} now"
