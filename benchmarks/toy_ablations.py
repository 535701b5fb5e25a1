"""Ablations of the demo's toy runs: what each mechanism of PSA and of the single-stage network gets to work with.

On a finished ``toy_psa`` run folder (``wsss pipeline run pipelines/toy_psa.yaml --data D --out R``):

* ``seeds``: AffinityNet's training labels (the la/ha CRF labels on the stride-8 grid) against the ground truth:
  the share of foreground cells labelled with their class, labelled background, or ignored; background cells
  labelled background; and pair labels that contradict the ground truth (``pos_wrong``: a "same region" pair across
  an object boundary, ``neg_wrong``: a "different" pair inside one region).
* ``walk``: the random walk with its three parts separated: ``no walk`` (the CAM scores pooled to the grid and back,
  no step), ``oracle`` (the walk on ground-truth affinities: 1 inside a region, 0 across: what these CAMs allow
  at best) and ``learned`` (AffinityNet's affinities), for each (alpha, beta, logt) given; plus the mean affinity
  of ground-truth same-region and different-region pairs.

On a ``toy_single_stage`` run folder:

* ``mask-loss``: the share of train images whose self-supervised mask loss the per-image rule keeps (pseudo ground
  truth with exactly the image's classes plus background), for the trained network, on unaugmented images.

    python benchmarks/toy_ablations.py seeds --data D --run R [--split train]
    python benchmarks/toy_ablations.py walk --data D --run R --split val --alpha 0.5,1 --beta 8,16 --logt 0,2,8
    python benchmarks/toy_ablations.py mask-loss --data D --run R_SINGLE
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from wsss.artifacts.items import FORMATS
from wsss.data.prepared import open_dataset
from wsss.ops import IGNORE_INDEX
from wsss.ops.affinity import RADIUS, affinity_label_map, downsample_labels, pair_labels, pair_targets
from wsss.ops.confusion import ConfusionMatrix
from wsss.ops.crf import alpha_background_scores, labels_from_scores
from wsss.ops.random_walk import propagate_cams


def seed_quality(data, la_dir: Path, ha_dir: Path, split: str) -> dict:
    """Shares of ground-truth cells by their la/ha label (stride-8 grid) and counts of contradicting pair labels."""
    label = FORMATS["label"]
    n = dict(fg=0, bg=0, fg_right=0, fg_as_bg=0, fg_ignored=0, bg_right=0, pos_wrong=0, neg_wrong=0, pairs=0)
    for image_id in data.ids(split):
        gt = downsample_labels(data.read_mask(image_id))
        seeds = affinity_label_map(label.read(label.path(la_dir, image_id)), label.read(label.path(ha_dir, image_id)))
        fg, bg = (gt != IGNORE_INDEX) & (gt > 0), gt == 0
        n["fg"] += int(fg.sum())
        n["bg"] += int(bg.sum())
        n["fg_right"] += int((fg & (seeds == gt)).sum())
        n["fg_as_bg"] += int((fg & (seeds == 0)).sum())
        n["fg_ignored"] += int((fg & (seeds == IGNORE_INDEX)).sum())
        n["bg_right"] += int((bg & (seeds == 0)).sum())
        got, truth = pair_labels(seeds), pair_labels(gt)
        n["pairs"] += int(sum(v.sum() for v in got.values()))
        n["pos_wrong"] += int(((got["bg_pos"] + got["fg_pos"]) * truth["neg"]).sum())
        n["neg_wrong"] += int((got["neg"] * (truth["bg_pos"] + truth["fg_pos"])).sum())
    return n


def format_seeds(n: dict) -> str:
    fg, bg = max(n["fg"], 1), max(n["bg"], 1)
    wrong = (n["pos_wrong"] + n["neg_wrong"]) / max(n["pairs"], 1)
    return (f"foreground cells: {n['fg_right'] / fg:.2f} labelled with their class, {n['fg_as_bg'] / fg:.2f} "
            f"labelled background, {n['fg_ignored'] / fg:.2f} ignored; background cells labelled background: "
            f"{n['bg_right'] / bg:.2f}; pair labels: {n['pairs']}, of which contradicting the ground truth "
            f"{n['pos_wrong']} 'same' + {n['neg_wrong']} 'different' ({wrong:.3f})")


def oracle_affinity(gt: np.ndarray, radius: int = RADIUS) -> torch.Tensor:
    """(P, h', w') affinities from a ground-truth mask: 1 within a region (ignore counts as different), else 0."""
    grid = downsample_labels(gt)[None, None].float()
    src, tgt = (t[0, 0] for t in pair_targets(grid, radius))
    same = (src == tgt) & (src != IGNORE_INDEX)
    return same.float()


def learned_affinity(network, image: np.ndarray) -> torch.Tensor:
    from wsss.stages.aff_infer import image_affinity

    x = torch.as_tensor(network.normalization.apply(image)).float()
    return image_affinity(network, x, RADIUS)


def walk_ablation(data, run: Path, split: str, alphas, betas, logts) -> tuple[dict, tuple]:
    """mIoU of no walk / oracle / learned walks, and the mean learned affinity of same / different GT pairs."""
    from wsss.models.weights import load_network

    network = load_network(run / "aff_train" / "final.pt", model="aff").eval()
    cam = FORMATS["cam"]
    scores_by = {}
    same, diff = [], []
    for image_id in data.ids(split):
        image, gt = data.read_image(image_id), data.read_mask(image_id)
        cams, classes = cam.read(cam.path(run / f"cam_infer_{split}", image_id), image.shape[:2], data.num_classes)
        oracle, learned = oracle_affinity(gt), learned_affinity(network, image)
        truth = oracle > 0
        valid = _valid_pairs(gt)
        same.append(learned[truth & valid].numpy())
        diff.append(learned[~truth & valid].numpy())
        for alpha in alphas:
            scores = torch.from_numpy(alpha_background_scores(cams, alpha))
            variants = {(alpha, "no walk", "", ""): propagate_cams(scores, torch.zeros_like(oracle), 1.0, 0)}
            for logt in logts:
                variants[(alpha, "oracle", "", logt)] = propagate_cams(scores, oracle, 1.0, logt)
                for beta in betas:
                    variants[(alpha, "learned", beta, logt)] = propagate_cams(scores, learned, beta, logt)
            for key, walked in variants.items():
                scores_by.setdefault(key, ConfusionMatrix(data.num_classes + 1)).update(
                    gt, labels_from_scores(walked, classes))
    miou = {key: 100 * c.compute()["miou"] for key, c in scores_by.items()}
    return miou, (float(np.concatenate(same).mean()), float(np.concatenate(diff).mean()))


def _valid_pairs(gt: np.ndarray) -> torch.Tensor:
    grid = downsample_labels(gt)[None, None].float()
    src, tgt = (t[0, 0] for t in pair_targets(grid, RADIUS))
    return (src != IGNORE_INDEX) & (tgt != IGNORE_INDEX)


@torch.no_grad()
def mask_loss_kept(data, run: Path, split: str = "train") -> tuple[int, int]:
    """(images whose mask loss the per-image rule keeps, images) for the trained single-stage network."""
    from wsss.models.weights import load_network

    network = load_network(run / "single_train" / "final.pt").eval()
    kept = 0
    ids = data.ids(split)
    for image_id in ids:
        image = torch.as_tensor(network.normalization.apply(data.read_image(image_id)))[None].float()
        label = torch.from_numpy(data.label_vector(image_id))[None].float()
        kept += int(network(image, labels=label)["mask_loss"][0] > 0)
    return kept, len(ids)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["seeds", "walk", "mask-loss"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--alpha", type=_floats, default=[1.0])
    parser.add_argument("--beta", type=_floats, default=[8.0])
    parser.add_argument("--logt", type=lambda t: [int(v) for v in t.split(",")], default=[8])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = open_dataset(args.data)
    if args.what == "seeds":
        print(format_seeds(seed_quality(data, args.run / "crf_la_train", args.run / "crf_ha_train", args.split)))
    elif args.what == "mask-loss":
        kept, total = mask_loss_kept(data, args.run, args.split)
        print(f"mask loss kept by the per-image rule: {kept} of {total} {args.split} images")
    else:
        miou, (same, diff) = walk_ablation(data, args.run, args.split, args.alpha, args.beta, args.logt)
        print("alpha  walk     beta  logt  mIoU")
        for (alpha, kind, beta, logt), value in sorted(miou.items(), key=lambda kv: str(kv[0])):
            print(f"{alpha:<6g} {kind:<8} {beta!s:<5} {logt!s:<5} {value:.1f}")
        print(f"learned affinity: ground-truth same-region pairs {same:.3f}, different-region pairs {diff:.3f}")


if __name__ == "__main__":
    main()
