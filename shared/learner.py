"""The ML operations the pipeline stages call, behind one object so the heavy imports load on first use.

The stages take a learner from their Context: this real one in the app, or one that caches these
same real results in the model-based tests (which replay the same data and specs many times).
"""
from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from shared.onnx_export import ParityReport
    from shared.settings import Settings
    from shared.spec import TrainingSpec
    from shared.training import TrainResult


class Learner:
    """scikit-learn training, skl2onnx export with its parity gate, onnxruntime evaluation."""

    def fit(self, frame: pd.DataFrame, spec: TrainingSpec, extra: pd.DataFrame | None) -> TrainResult:
        """Split, fit, score on the holdout. Raises DataRejected / ModelRejected."""
        from shared.training import train

        return train(frame, spec, extra=extra)

    def pipeline_bytes(self, pipeline: Any) -> bytes:
        from shared.training import pipeline_to_bytes

        return pipeline_to_bytes(pipeline)

    def load_pipeline(self, data: bytes) -> Any:
        from shared.training import pipeline_from_bytes

        return pipeline_from_bytes(data)

    def frame_bytes(self, frame: pd.DataFrame) -> bytes:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()

    def read_frame(self, data: bytes) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data))

    def export(self, pipeline: Any, spec: TrainingSpec, holdout: pd.DataFrame) -> bytes:
        """ONNX bytes of the fitted pipeline. Raises ModelRejected when conversion is refused."""
        from shared.onnx_export import export_onnx

        return export_onnx(pipeline, spec, holdout.head(5))

    def parity(self, pipeline: Any, onnx_bytes: bytes, holdout: pd.DataFrame, spec: TrainingSpec,
               settings: Settings) -> ParityReport:
        from shared.onnx_export import parity_check
        from shared.settings import Need

        settings.require(Need.VALIDATION)  # a bad parity setting must not pass as its default
        return parity_check(pipeline, onnx_bytes, holdout, spec, max_abs_diff=settings.parity_max_abs_diff,
                            min_label_agreement=settings.parity_min_label_agreement)

    def onnx_facts(self, onnx_bytes: bytes) -> dict[str, Any]:
        from shared.onnx_export import onnx_facts

        return onnx_facts(onnx_bytes)

    def evaluate(self, onnx_bytes: bytes, frame: pd.DataFrame, spec: TrainingSpec,
                 classes: list[Any] | None) -> dict[str, float]:
        """Holdout metrics of an ONNX model on a frame in `spec`'s prepared form."""
        from shared.onnx_export import run_onnx
        from shared.training import compute_metrics, target_array

        labels, proba = run_onnx(onnx_bytes, frame, spec)
        return compute_metrics(spec.task, target_array(frame, spec), labels, proba, classes)

    def output_profile(self, onnx_bytes: bytes, frame: pd.DataFrame, spec: TrainingSpec,
                       classes: list[Any] | None) -> dict[str, Any]:
        """The model's outputs on a frame, profiled: what monitoring compares live outputs with."""
        from shared.monitoring.drift import holdout_output_profile
        from shared.onnx_export import run_onnx

        labels, proba = run_onnx(onnx_bytes, frame, spec)
        return holdout_output_profile(spec.task, labels, proba, classes)

    def holdout_charts(self, onnx_bytes: bytes, frame: pd.DataFrame, spec: TrainingSpec,
                       classes: list[Any] | None) -> bytes:
        """JSON of the model's holdout charts (confusion matrix and ROC, or predicted vs actual and residuals)."""
        from shared.holdout_charts import holdout_charts
        from shared.onnx_export import run_onnx
        from shared.training import target_array

        labels, proba = run_onnx(onnx_bytes, frame, spec)
        charts = holdout_charts(spec.task, target_array(frame, spec), labels, proba, classes)
        return json.dumps(charts, sort_keys=True, separators=(",", ":")).encode()

    def latency(self, onnx_bytes: bytes, frame: pd.DataFrame, spec: TrainingSpec) -> dict[str, float]:
        from shared.onnx_export import measure_latency

        return measure_latency(onnx_bytes, frame.head(1), spec)

    def frame_for_spec(self, frame: pd.DataFrame, spec: TrainingSpec) -> tuple[pd.DataFrame | None, list[str]]:
        """`frame` in `spec`'s prepared form, or (None, the columns it lacks)."""
        from shared.training import frame_for_spec

        return frame_for_spec(frame, spec)

    def rows_not_trained_on(self, frame: pd.DataFrame, data: pd.DataFrame, holdout: pd.DataFrame,
                            columns: list[str]) -> pd.Series:
        from shared.training import rows_not_trained_on

        return rows_not_trained_on(frame, data, holdout, columns)

    def library_versions(self) -> dict[str, str]:
        from shared.training import library_versions

        return library_versions()
