"""Gain from fine-tuning the shipped spot model on corrections from an unseen domain.

The domain: a small pixel-array detector (512 x 512 pixels of 0.172 mm,
no module gaps) recording crystals with a much stronger background (the
simulator's ``strong_background`` anomaly: background raised, crystal
signal lowered), at 100-250 mm.  The shipped model was trained on full
Pilatus 6M and ADSC frames with normal backgrounds.

For k corrected frames (the simulator's truth standing in for a user's
corrections), saved through the real corrections store, the shipped model
is fine-tuned with :func:`napari_xrd.core.training.finetune.finetune` and
scored on the same held-out frames (never trained on); printed as a table.

    python benchmarks/bench_finetune.py [--ks 5,10,20,50] [--epochs 4] [--heldout 12]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="5,10,20,50")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--heldout", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]

    from napari_xrd.core.corrections import CorrectionStore, make_correction
    from napari_xrd.core.models.weights import load_model
    from napari_xrd.core.training.finetune import finetune
    from napari_xrd.core.training.finetune_spots import evaluate_on_examples, shifted_domain_stills

    t0 = time.time()
    held = shifted_domain_stills(args.heldout, 10_000)
    pool = shifted_domain_stills(max(ks), 20_000)
    print(f"simulated {len(held)} held-out + {len(pool)} correction frames in {time.time() - t0:.0f} s")
    base, card = load_model("default", task="spots", device="cpu")
    held_ex = [s.to_example() for s in held]
    base_scores = evaluate_on_examples(base, held_ex, device="cpu")
    print(f"shipped model {card.name} on the held-out shifted frames: " + ", ".join(f"{k} {v:.3f}" for k, v in base_scores.items()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_XRD_HOME"] = str(Path(tmp) / "home")  # keep the user's model directory clean
        for k in ks:
            store = CorrectionStore(Path(tmp) / f"store{k}")
            for j, s in enumerate(pool[:k]):
                store.save(make_correction(s.image, source_file=f"/beamline/x_{j:05d}.cbf", pixel_mask=s.pixel_mask,
                                           spot_mask=s.spot_mask))
            # the held-out frames are a fixed set: they enter as extra corrections of other images
            # only through scoring, never training (finetune's own split is reported too)
            t1 = time.time()
            rep = finetune(store.path, task="spots", base="default", epochs=args.epochs, seed=args.seed, device="cpu",
                           heldout_fraction=0.2, promote_if_better=False)
            net, _ = load_model(rep.new_model_path.replace(".pt", ".json"), task="spots", device="cpu")
            scores = evaluate_on_examples(net, held_ex, device="cpu")
            rows.append((k, rep.n_train, rep.base_scores["f1"], rep.new_scores["f1"], scores, time.time() - t1))
            print(f"k={k}: trained on {rep.n_train}, own held-out f1 {rep.base_scores['f1']:.3f} -> {rep.new_scores['f1']:.3f}; "
                  f"fixed held-out f1 {scores['f1']:.3f} ({time.time() - t1:.0f} s)", flush=True)
    print()
    print(f"fixed held-out set: {len(held_ex)} shifted frames; base (shipped) f1 {base_scores['f1']:.3f}, "
          f"recall {base_scores['recall']:.3f}, precision {base_scores['precision']:.3f}, IoU {base_scores['iou']:.3f}")
    print(f"{'corrected frames':>16} {'trained on':>10} {'f1':>7} {'gain':>7} {'f1/frame':>9} {'recall':>7} "
          f"{'precision':>9} {'IoU':>6} {'time s':>7}")
    print(f"{'0 (shipped)':>16} {0:>10} {base_scores['f1']:>7.3f} {0:>+7.3f} {base_scores['f1_frame_mean']:>9.3f} "
          f"{base_scores['recall']:>7.3f} {base_scores['precision']:>9.3f} {base_scores['iou']:>6.3f} {'':>7}")
    for k, n_train, _, _, s, dt in rows:
        print(f"{k:>16} {n_train:>10} {s['f1']:>7.3f} {s['f1'] - base_scores['f1']:>+7.3f} {s['f1_frame_mean']:>9.3f} "
              f"{s['recall']:>7.3f} {s['precision']:>9.3f} {s['iou']:>6.3f} {dt:>7.0f}")


if __name__ == "__main__":
    main()
