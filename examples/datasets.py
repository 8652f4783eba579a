"""Example datasets: sklearn's bundled sets and a synthetic predictive-maintenance set.

CLI: python -m examples.datasets --out DIR [--rows N] [--seed S] [--drift]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes

MACHINE_TYPES = ("L", "M", "H")


def _identifier(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name.strip()).strip("_").lower()


def breast_cancer() -> pd.DataFrame:
    """569 rows, 30 numeric features (names as identifiers), target diagnosis benign/malignant."""
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.rename(columns=_identifier)
    names = np.asarray(bunch.target_names)  # index 0 = malignant, 1 = benign
    frame["diagnosis"] = names[bunch.target.to_numpy()]
    return frame


def diabetes() -> pd.DataFrame:
    """442 rows, 10 numeric features in original units, target progression (one year on)."""
    bunch = load_diabetes(as_frame=True, scaled=False)
    frame = bunch.data.rename(columns=_identifier)
    frame["progression"] = bunch.target.astype(np.float64)
    return frame


def predictive_maintenance(n_rows: int = 5000, seed: int = 7, drift: bool = False) -> pd.DataFrame:
    """Synthetic milling-machine telemetry with a plausible, noisy failure label.

    Failure modes (after the AI4I 2020 dataset's design): heat dissipation (small air/process
    temperature gap at low speed), power outside a safe band, overstrain (wear x torque above a
    per-type limit) and tool wear-out; 0.2% of labels are flipped. drift=True shifts the
    population: hotter air, more L machines, slower spindles, higher torque and worn tools.
    """
    rng = np.random.default_rng(seed)
    type_p = [0.7, 0.2, 0.1] if drift else [0.5, 0.3, 0.2]
    machine_type = rng.choice(MACHINE_TYPES, size=n_rows, p=type_p)
    air = rng.normal(303.0 if drift else 300.0, 2.0, n_rows)
    process = air + 10.0 + rng.normal(0.0, 1.0, n_rows)
    speed = rng.normal(1450.0 if drift else 1540.0, 170.0, n_rows).clip(1100, 2900)
    torque = (40.0 + (4.0 if drift else 0.0) - (speed - 1540.0) * 0.03
              + rng.normal(0.0, 8.0, n_rows)).clip(3.0, 80.0)
    wear_bonus = np.select([machine_type == "H", machine_type == "M"], [5, 3], 2)
    wear = rng.uniform(0, 200 if not drift else 260, n_rows).round() + wear_bonus
    power = torque * speed * 2 * np.pi / 60.0
    limit = np.select([machine_type == "H", machine_type == "M"], [13000, 12000], 11000)
    logit = (
        -6.0
        + 7.0 * ((process - air < 8.6) & (speed < 1380))
        + 7.0 * ((power < 3500) | (power > 9000))
        + 7.0 * (wear * torque > limit)
        + 3.0 * (wear > 200)
        + 0.6 * (air - 300.0) / 2.0
        + 0.3 * (machine_type == "L")
    )
    failure = (rng.uniform(size=n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    flip = rng.uniform(size=n_rows) < 0.002
    failure[flip] = 1 - failure[flip]
    frame = pd.DataFrame({
        "machine_type": pd.Series(machine_type, dtype=object),
        "air_temperature": air.round(1),
        "process_temperature": process.round(1),
        "rotational_speed": speed.round(),
        "torque": torque.round(1),
        "tool_wear": wear,
        "failure": failure,
    })
    # A few sensor dropouts so the imputers have work to do (well under max_null_fraction).
    frame.loc[rng.uniform(size=n_rows) < 0.01, "torque"] = np.nan
    frame.loc[rng.uniform(size=n_rows) < 0.01, "machine_type"] = None
    return frame


def main(argv: list[str] | None = None) -> None:
    """Write breast-cancer.csv, diabetes.csv and predictive-maintenance.csv to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=5000, help="predictive-maintenance rows")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drift", action="store_true",
                        help="also write predictive-maintenance-drift.csv")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    outputs = {
        "breast-cancer.csv": breast_cancer(),
        "diabetes.csv": diabetes(),
        "predictive-maintenance.csv": predictive_maintenance(args.rows, args.seed),
    }
    if args.drift:
        outputs["predictive-maintenance-drift.csv"] = predictive_maintenance(
            args.rows, args.seed + 1, drift=True)
    for name, frame in outputs.items():
        frame.to_csv(args.out / name, index=False)
        print(f"wrote {args.out / name} rows={len(frame)}")


if __name__ == "__main__":
    main()
