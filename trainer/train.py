"""Two-phase IICL training of the re-identification network.

Phase 1 (warm-up): IPAID frozen; L_reid = CE (label smoothing) + triplet + ArcFace.
Phase 2 (joint): everything trainable; L_reid + lambda_illum * L_illum + lambda_IICL * L_IICL, where L_IICL pulls
f(I) and f(R x L') together for relit variants I' of each image.
Checkpoints after every epoch (resume continues where it stopped); evaluation with engine.metrics.
"""

from __future__ import annotations

import copy
import json
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from engine.metrics import reid_protocol
from engine.resources import resources_dir

from .data import ImageCache, PKSampler, Sample, augment_batch, center_batch
from .losses import batch_hard_triplet, iicl_loss
from .models import ReIDNet, build_model
from .models.ipaid import ipaid_losses
from .relight import relight

ProgressFn = Callable[[dict], None]


def default_config_path() -> Path:
    return resources_dir() / "config" / "train.yaml"


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The default config, overlaid by a user's YAML file and then by explicit overrides."""
    config = yaml.safe_load(default_config_path().read_text())
    if path:
        config = deep_merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return deep_merge(config, overrides or {})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    out_dir: Path
    epochs: dict[str, int]
    seconds: float
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    images_per_second: float = 0.0


class Trainer:
    def __init__(
        self,
        config: dict,
        train: Sequence[Sample],
        out_dir: str | Path,
        val: Sequence[Sample] = (),
        init_from: str | Path | None = None,
    ):
        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        t = config["training"]
        seed_everything(t["seed"])
        self.label_mode = config["data"]["label"]
        self.classes = sorted({s.label(self.label_mode) for s in train})
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.input_size = tuple(config["model"]["input_size"])
        self.train_samples, self.val_samples = list(train), list(val)
        self.device = torch.device(t.get("device") or "cpu")
        self.augment = config["data"].get("augment", "light")
        self.train_cache = ImageCache(self.train_samples, self.input_size)
        self.val_cache = ImageCache(self.val_samples, self.input_size) if self.val_samples else None
        self.labels = torch.tensor([self.class_index[s.label(self.label_mode)] for s in self.train_samples])
        self.model: ReIDNet = build_model(config, len(self.classes))
        if init_from:
            self._init_from(init_from)
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=t["learning_rate"], weight_decay=t["weight_decay"]
        )
        self.rng = np.random.default_rng(t["seed"])
        self.relight_gen = torch.Generator(device=self.device).manual_seed(t["seed"])
        self.sampler = PKSampler(
            self.labels.tolist(), [s.encounter or s.path for s in self.train_samples], t["P"], t["K"], t["seed"]
        )
        self.state = {"phase": "phase1", "epoch": 0, "elapsed": 0.0, "images": 0, "history": [], "best": None}

    def _param_groups(self) -> list[dict]:
        """A pretrained backbone can learn slower than the new layers (``backbone_lr_mult``), so a small data set
        adapts ImageNet features instead of overwriting them."""
        mult = self.config["training"].get("backbone_lr_mult", 1.0)
        backbone = list(self.model.backbone.parameters())
        ids = {id(p) for p in backbone}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        return [{"params": backbone, "lr_mult": mult}, {"params": rest, "lr_mult": 1.0}]

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _init_from(self, path) -> None:
        """Start from another model's weights (fine-tuning); classifier heads that do not fit are left new."""
        state = torch.load(path, map_location="cpu", weights_only=False)["model"]
        own = self.model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.model.load_state_dict(usable, strict=False)

    def save(self, name: str) -> Path:
        path = self.out_dir / name
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "state": self.state,
                "config": self.config,
                "classes": self.classes,
                "rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "relight_rng": self.relight_gen.get_state(),
                "sampler_rng": self.sampler.rng.getstate(),
            },
            tmp,
        )
        tmp.replace(path)  # atomic: a kill mid-save leaves the previous checkpoint intact
        return path

    def resume(self) -> bool:
        path = self.out_dir / "last.pt"
        if not path.is_file():
            return False
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt["classes"] != self.classes:
            raise ValueError(f"{path}: checkpoint was trained on other classes; use another --out")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = ckpt["state"]
        self.rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        self.relight_gen.set_state(ckpt["relight_rng"])
        self.sampler.rng.setstate(ckpt["sampler_rng"])
        return True

    # -- one step ---------------------------------------------------------------------------------------------
    def _reid_loss(self, feature, bn_feature, labels) -> tuple[torch.Tensor, dict]:
        losses = self.config["training"]["losses"]
        ce = F.cross_entropy(
            self.model.classifier(bn_feature), labels, label_smoothing=losses["cross_entropy"]["label_smoothing"]
        )
        tri = batch_hard_triplet(feature, labels, losses["triplet"]["margin"])
        total = losses["cross_entropy"]["weight"] * ce + losses["triplet"]["weight"] * tri
        parts = {"ce": ce.item(), "triplet": tri.item()}
        if losses["arcface"]["enabled"]:
            arc = F.cross_entropy(self.model.arcface(feature, labels), labels)
            total = total + losses["arcface"]["weight"] * arc
            parts["arcface"] = arc.item()
        return total, parts

    def step(self, indices: list[int], phase: str) -> dict:
        cfg, model = self.config, self.model
        images = augment_batch(self.train_cache, indices, self.input_size, self.rng, strength=self.augment)
        images, labels = images.to(self.device, non_blocking=True), self.labels[indices].to(self.device)
        feature, bn_feature, parts = model.features(images, return_parts=True)
        loss, logs = self._reid_loss(feature, bn_feature, labels)
        if phase == "phase2" and parts is not None:
            lp = cfg["illumination_module"]["loss_params"]
            il = ipaid_losses(images, parts)
            identity = batch_hard_triplet(feature, labels, cfg["training"]["losses"]["triplet"]["margin"])
            illum = (
                lp["lambda_recon"] * il["recon"]
                + lp["lambda_smooth"] * il["smooth"]
                + lp["lambda_edge"] * il["edge"]
                + lp["lambda_identity"] * identity
                + lp.get("lambda_sparsity", 0.0) * il["sparsity"]
            )
            loss = loss + cfg["training"]["phases"]["phase2"]["illumination_weight"] * illum
            logs["illum"] = illum.item()
            ic = cfg["training"]["losses"]["iicl"]
            if ic["enabled"]:
                iicl = torch.zeros(())
                for _ in range(ic["variants"]):
                    relit = relight(
                        parts["reflectance"].detach(),
                        parts["light"].detach(),
                        self.relight_gen,
                        ic["gamma"],
                        ic["scale"],
                        ic["local_strength"],
                    )
                    iicl = iicl + iicl_loss(bn_feature, model.features(relit)[1], ic["loss"])
                iicl = iicl / ic["variants"]
                loss = loss + ic["weight"] * iicl
                logs["iicl"] = iicl.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        self.optimizer.step()
        logs["loss"] = loss.item()
        return logs

    # -- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, cache: ImageCache, batch: int = 64, transform=None) -> np.ndarray:
        self.model.eval()
        out = []
        for i in range(0, len(cache), batch):
            x = center_batch(cache, range(i, min(i + batch, len(cache))), self.input_size).to(self.device)
            out.append(self.model(transform(x) if transform else x).cpu().numpy())
        self._train_mode()
        return np.concatenate(out)

    def _train_mode(self) -> None:
        """Train mode, except a frozen backbone, whose batch-norm statistics stay ImageNet's."""
        self.model.train()
        if self.config["training"].get("freeze_backbone"):
            self.model.backbone.eval()

    def evaluate(self) -> dict | None:
        if self.val_cache is None:
            return None
        emb = self.embed(self.val_cache)
        s = self.val_samples
        return reid_protocol(emb, [x.individual for x in s], [x.encounter for x in s], [x.viewpoint for x in s])

    # -- the loop ---------------------------------------------------------------------------------------------
    def _set_phase(self, phase: str) -> None:
        if self.config["training"].get("freeze_backbone"):  # frozen backbone: only the head learns
            for p in self.model.backbone.parameters():
                p.requires_grad_(False)
        self._train_mode()
        frozen = phase == "phase1" and self.config["training"]["phases"]["phase1"].get("freeze_illumination", True)
        if self.model.ipaid is not None:
            for p in self.model.ipaid.parameters():
                p.requires_grad_(not frozen)

    def _lr(self, phase: str, epoch: int, epochs: int, budget_share: float | None) -> float:
        base = self.config["training"]["learning_rate"]
        if phase == "phase1":
            return base * min(1.0, (epoch + 1) / max(1, epochs))  # linear warm-up
        progress = budget_share if budget_share is not None else epoch / max(1, epochs)
        return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def fit(
        self, progress: ProgressFn | None = None, cancel: threading.Event | None = None, budget_s: float | None = None
    ) -> TrainResult:
        """Both phases; within ``budget_s`` seconds when given, else the config's time_budget_minutes."""
        t = self.config["training"]
        budget = budget_s or (t.get("time_budget_minutes") or 0) * 60 or None
        phases = t["phases"]
        planned = {"phase1": phases["phase1"]["epochs"], "phase2": phases["phase2"]["epochs"]}
        total_planned = sum(planned.values())
        eval_every = self.config["data"].get("eval_every", 5)
        started = time.time() - self.state["elapsed"]
        for phase in ("phase1", "phase2"):
            if phase == "phase1" and self.state["phase"] == "phase2":
                continue
            if self.state["phase"] != phase:
                self.state.update(phase=phase, epoch=0)
            self._set_phase(phase)
            # Under a time budget each phase gets its share of it, in proportion to its planned epochs.
            phase_end = None
            if budget:
                before = planned["phase1"] if phase == "phase2" else 0
                phase_end = budget * (before + planned[phase]) / total_planned
            while self.state["epoch"] < planned[phase]:
                elapsed = time.time() - started
                if phase_end is not None and elapsed >= phase_end and self.state["epoch"] > 0:
                    break
                share = elapsed / budget if budget and phase == "phase2" else None
                lr = self._lr(phase, self.state["epoch"], planned[phase], share)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_mult", 1.0)
                sums: dict[str, float] = {}
                n_done = 0
                for n, batch in enumerate(self.sampler, 1):
                    # The budget is checked per batch: one CPU epoch with IPAID and IICL can outlast a whole
                    # short budget (81 s for 52 photos seen in the app's Train dialog).
                    if phase_end is not None and n > 1 and time.time() - started >= phase_end:
                        break
                    if cancel is not None and cancel.is_set():
                        self.state["elapsed"] = time.time() - started
                        self.save("last.pt")
                        return self._result(started)
                    for k, v in self.step(batch, phase).items():
                        sums[k] = sums.get(k, 0.0) + v
                    n_done = n
                    self.state["images"] += len(batch)
                    if progress:
                        progress(
                            {
                                "phase": phase,
                                "epoch": self.state["epoch"] + 1,
                                "epochs": planned[phase],
                                "batch": n,
                                "batches": len(self.sampler),
                                "loss": sums["loss"] / n,
                                "elapsed_s": round(time.time() - started, 1),
                                "budget_s": budget,
                            }
                        )
                n_done = max(n_done, 1)
                self.state["epoch"] += 1
                self.state["elapsed"] = time.time() - started
                record = {
                    "phase": phase,
                    "epoch": self.state["epoch"],
                    "lr": lr,
                    "elapsed_s": round(self.state["elapsed"], 1),
                    **{k: round(v / n_done, 4) for k, v in sums.items()},
                }
                if self.val_cache is not None and self.state["epoch"] % eval_every == 0:
                    record["eval"] = self.evaluate()
                    r1 = record["eval"]["across_encounters"]["rank1"]
                    if self.state["best"] is None or r1 > self.state["best"]["rank1"]:
                        self.state["best"] = {"rank1": r1, "phase": phase, "epoch": self.state["epoch"]}
                        self.save("best.pt")
                self.state["history"].append(record)
                if progress:
                    progress({"epoch_done": record})
                self.save("last.pt")
        return self._result(started)

    def _result(self, started: float) -> TrainResult:
        seconds = time.time() - started
        epochs = {p: sum(1 for h in self.state["history"] if h["phase"] == p) for p in ("phase1", "phase2")}
        result = TrainResult(
            self.out_dir,
            epochs,
            seconds,
            self.state["history"],
            self.state["best"],
            self.state["images"] / max(seconds, 1e-9),
        )
        (self.out_dir / "history.json").write_text(json.dumps(self.state["history"], indent=1))
        return result
